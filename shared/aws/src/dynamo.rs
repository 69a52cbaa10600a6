//! The state store on DynamoDB: one on-demand table, optimistic locking by a `version`
//! attribute and condition expressions, `TransactWriteItems` for writes that change together,
//! TTL on expiring items.
//!
//! Table layout (see ARCHITECTURE.md for the items stored in it):
//!
//! | attribute | type | role |
//! |---|---|---|
//! | `pk` | S | partition key |
//! | `sk` | S | sort key |
//! | `version` | N | 1 on create, +1 on every write; every write is conditioned on it |
//! | `body` | S | the item as JSON text, when that is at most [`COMPRESS_ABOVE`] bytes |
//! | `bodyz` | B | the item as deflate-compressed JSON text, when it is larger |
//! | `gsi1pk`, `gsi1sk` | S | the key of the one global secondary index `gsi1` (all attributes projected), present only on indexed items |
//! | `expires_at` | N | epoch seconds; the table's TTL attribute |
//!
//! DynamoDB bills writes per started kilobyte of the whole item (twice inside a transaction, and
//! once more for the index copy), and a pipeline's runtime document is several kilobytes of
//! repetitive JSON: compressed it is a third to a fifth of that, so large bodies are stored
//! compressed. Reads accept both forms, so items written either way stay readable.
//!
//! DynamoDB deletes expired items lazily (within days), so every read here hides items whose
//! `expires_at` has passed, and a write expecting "absent" succeeds over an expired item: the
//! same rule as the other stores ([`penstock_app::store::is_live`]).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use aws_smithy_runtime_api::client::result::SdkError;
use penstock_app::store::{
    Expect, IndexName, Item, ItemKey, ItemStore, Page, Query, StoreError, Write, is_live,
    validate_query, validate_transaction,
};
use serde_json::Value;

use crate::sdk_error::{ErrorKind, describe, kind};

/// The name of the global secondary index.
pub const GSI1: &str = "gsi1";
/// The TTL attribute.
pub const EXPIRES_AT: &str = "expires_at";

/// Bodies whose JSON text is longer than this are stored compressed (`bodyz`): below one
/// kilobyte compression cannot lower the billed units.
pub const COMPRESS_ABOVE: usize = 1000;

/// The largest body a compressed attribute may inflate to: far above DynamoDB's 400 KB item
/// limit, so only a corrupt attribute reaches it.
const INFLATED_MAX: u64 = 16 * 1024 * 1024;

/// How many items one internal `Query` request asks for at most: a page of the port may need
/// several requests when expired items or items outside a prefix are skipped.
const QUERY_BATCH_MAX: i32 = 1000;

/// The current time in epoch seconds.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An [`ItemStore`] on one DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    clock: Clock,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            clock: std::sync::Arc::new(system_seconds),
        }
    }

    /// A store whose notion of "now" (epoch seconds, for expiry) comes from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Create the table with the layout this store expects (on-demand, `gsi1`, TTL on
    /// `expires_at`). Infrastructure templates create the same; tests and `penstock` tooling
    /// use this.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
        let string_attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))
        };
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(GSI1)
            .key_schema(key("gsi1pk", KeyType::Hash)?)
            .key_schema(key("gsi1sk", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute("pk")?)
            .attribute_definitions(string_attribute("sk")?)
            .attribute_definitions(string_attribute("gsi1pk")?)
            .attribute_definitions(string_attribute("gsi1sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(index)
            .send()
            .await
            .map_err(|e| map_error(&e, None))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(EXPIRES_AT)
                    .build()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| map_error(&e, None))?;
        Ok(())
    }

    async fn put_one(
        &self,
        key: &ItemKey,
        expect: Expect,
        body: &Value,
        index: Option<&ItemKey>,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        let (version, item) = item_attributes(key, expect, body, index, expires_at)?;
        let condition = condition_for(expect, (self.clock)());
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(Some(condition.values))
            .send()
            .await
            .map_err(|e| map_error(&e, Some(key)))?;
        Ok(version)
    }

    async fn delete_one(&self, key: &ItemKey, version: u64) -> Result<u64, StoreError> {
        let condition = condition_for(Expect::Version(version), (self.clock)());
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(Some(condition.values))
            .send()
            .await
            .map_err(|e| map_error(&e, Some(key)))?;
        Ok(0)
    }

    async fn transact_many(&self, writes: &[Write]) -> Result<Vec<u64>, StoreError> {
        let now = (self.clock)();
        let mut items = Vec::with_capacity(writes.len());
        let mut versions = Vec::with_capacity(writes.len());
        for write in writes {
            let invalid =
                |e: aws_sdk_dynamodb::error::BuildError| StoreError::Invalid(e.to_string());
            let item = match write {
                Write::Put {
                    key,
                    expect,
                    body,
                    index,
                    expires_at,
                } => {
                    let (version, attributes) =
                        item_attributes(key, *expect, body, index.as_ref(), *expires_at)?;
                    versions.push(version);
                    let condition = condition_for(*expect, now);
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&self.table)
                                .set_item(Some(attributes))
                                .condition_expression(condition.expression)
                                .set_expression_attribute_names(Some(condition.names))
                                .set_expression_attribute_values(Some(condition.values))
                                .build()
                                .map_err(invalid)?,
                        )
                        .build()
                }
                Write::Delete { key, version } => {
                    versions.push(0);
                    let condition = condition_for(Expect::Version(*version), now);
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.table)
                                .set_key(Some(key_attributes(key)))
                                .condition_expression(condition.expression)
                                .set_expression_attribute_names(Some(condition.names))
                                .set_expression_attribute_values(Some(condition.values))
                                .build()
                                .map_err(invalid)?,
                        )
                        .build()
                }
                Write::Check { key, expect } => {
                    versions.push(0);
                    let condition = condition_for(*expect, now);
                    TransactWriteItem::builder()
                        .condition_check(
                            ConditionCheck::builder()
                                .table_name(&self.table)
                                .set_key(Some(key_attributes(key)))
                                .condition_expression(condition.expression)
                                .set_expression_attribute_names(Some(condition.names))
                                .set_expression_attribute_values(Some(condition.values))
                                .build()
                                .map_err(invalid)?,
                        )
                        .build()
                }
            };
            items.push(item);
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(versions),
            Err(error) => Err(map_transaction_error(&error, writes)),
        }
    }
}

/// A condition expression with its placeholders.
struct Condition {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// The condition that makes a write hold only when `expect` does. An expired item counts as
/// absent (a comparison with a missing `expires_at` is false, so items without expiry are
/// never expired).
fn condition_for(expect: Expect, now: i64) -> Condition {
    let mut names = HashMap::from([
        ("#pk".to_string(), "pk".to_string()),
        ("#exp".to_string(), EXPIRES_AT.to_string()),
    ]);
    let mut values = HashMap::from([(":now".to_string(), AttributeValue::N(now.to_string()))]);
    let expression = match expect {
        Expect::Absent => "attribute_not_exists(#pk) OR #exp < :now".to_string(),
        Expect::Version(version) => {
            names.insert("#v".into(), "version".into());
            values.insert(":v".into(), AttributeValue::N(version.to_string()));
            "attribute_exists(#pk) AND #v = :v AND (attribute_not_exists(#exp) OR #exp >= :now)"
                .to_string()
        }
    };
    Condition {
        expression,
        names,
        values,
    }
}

fn key_attributes(key: &ItemKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(key.pk.clone())),
        ("sk".to_string(), AttributeValue::S(key.sk.clone())),
    ])
}

/// The attributes of a put and the version it writes.
fn item_attributes(
    key: &ItemKey,
    expect: Expect,
    body: &Value,
    index: Option<&ItemKey>,
    expires_at: Option<i64>,
) -> Result<(u64, HashMap<String, AttributeValue>), StoreError> {
    let version = match expect {
        Expect::Absent => 1,
        Expect::Version(version) => version + 1,
    };
    let text = serde_json::to_string(body)
        .map_err(|e| StoreError::Invalid(format!("item {}/{}: {e}", key.pk, key.sk)))?;
    let mut item = key_attributes(key);
    item.insert("version".into(), AttributeValue::N(version.to_string()));
    if text.len() > COMPRESS_ABOVE {
        item.insert("bodyz".into(), AttributeValue::B(deflate(&text).into()));
    } else {
        item.insert("body".into(), AttributeValue::S(text));
    }
    if let Some(index) = index {
        item.insert("gsi1pk".into(), AttributeValue::S(index.pk.clone()));
        item.insert("gsi1sk".into(), AttributeValue::S(index.sk.clone()));
    }
    if let Some(at) = expires_at {
        item.insert(EXPIRES_AT.into(), AttributeValue::N(at.to_string()));
    }
    Ok((version, item))
}

fn deflate(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text.as_bytes());
    encoder.finish().unwrap_or_default()
}

fn inflate(compressed: &[u8]) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(compressed)
        .take(INFLATED_MAX)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn string_attribute<'a>(
    attributes: &'a HashMap<String, AttributeValue>,
    name: &str,
) -> Result<&'a str, StoreError> {
    match attributes.get(name) {
        Some(AttributeValue::S(text)) => Ok(text),
        _ => Err(StoreError::Unavailable(format!(
            "a stored item has no string attribute {name}"
        ))),
    }
}

fn number_attribute<T: std::str::FromStr>(
    attributes: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<Option<T>, StoreError> {
    match attributes.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(text)) => text.parse().map(Some).map_err(|_| {
            StoreError::Unavailable(format!("a stored item's {name} is not a number: {text}"))
        }),
        Some(_) => Err(StoreError::Unavailable(format!(
            "a stored item's {name} is not a number"
        ))),
    }
}

fn parse_item(attributes: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let key = ItemKey::new(
        string_attribute(attributes, "pk")?,
        string_attribute(attributes, "sk")?,
    );
    let version = number_attribute::<u64>(attributes, "version")?.ok_or_else(|| {
        StoreError::Unavailable(format!("item {}/{} has no version", key.pk, key.sk))
    })?;
    let text = match attributes.get("bodyz") {
        Some(AttributeValue::B(compressed)) => inflate(compressed.as_ref()).map_err(|e| {
            StoreError::Unavailable(format!(
                "item {}/{} has a compressed body that does not inflate: {e}",
                key.pk, key.sk
            ))
        })?,
        _ => string_attribute(attributes, "body")?.to_string(),
    };
    let body = serde_json::from_str(&text).map_err(|e| {
        StoreError::Unavailable(format!(
            "item {}/{} has a body that is not JSON: {e}",
            key.pk, key.sk
        ))
    })?;
    let index = match (attributes.get("gsi1pk"), attributes.get("gsi1sk")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => {
            Some(ItemKey::new(pk.clone(), sk.clone()))
        }
        _ => None,
    };
    Ok(Item {
        key,
        version,
        body,
        index,
        expires_at: number_attribute(attributes, EXPIRES_AT)?,
    })
}

/// Map a single-item write or read error. `ConditionalCheckFailed` is a conflict on `key`.
fn map_error<E, R>(error: &SdkError<E, R>, key: Option<&ItemKey>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (kind(error), key) {
        (ErrorKind::Service(code), Some(key)) if code == "ConditionalCheckFailedException" => {
            StoreError::Conflict {
                pk: key.pk.clone(),
                sk: key.sk.clone(),
            }
        }
        (ErrorKind::Throttled, _) => StoreError::Throttled(describe(error)),
        (ErrorKind::Service(code), _) if code == "ValidationException" => {
            StoreError::Invalid(describe(error))
        }
        (ErrorKind::Construction, _) => StoreError::Invalid(describe(error)),
        // The table is missing or the item is in another transaction: retrying can help
        // (after a deploy, after the other transaction), so these are not refusals.
        _ => StoreError::Unavailable(describe(error)),
    }
}

/// Map a `TransactWriteItems` error: the cancellation reasons come in the order of the
/// writes, so the first `ConditionalCheckFailed` names the conflicting key.
fn map_transaction_error<R: std::fmt::Debug>(
    error: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
    writes: &[Write],
) -> StoreError {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    if let Some(TransactWriteItemsError::TransactionCanceledException(canceled)) =
        error.as_service_error()
    {
        let reasons = canceled.cancellation_reasons();
        let failed = reasons
            .iter()
            .position(|reason| reason.code() == Some("ConditionalCheckFailed"));
        if let Some(position) = failed
            && let Some(write) = writes.get(position)
        {
            let key = write.key();
            return StoreError::Conflict {
                pk: key.pk.clone(),
                sk: key.sk.clone(),
            };
        }
        let codes: Vec<&str> = reasons.iter().filter_map(|reason| reason.code()).collect();
        if codes
            .iter()
            .any(|code| *code == "ThrottlingError" || *code == "ProvisionedThroughputExceeded")
        {
            return StoreError::Throttled(describe(error));
        }
        if codes.contains(&"ValidationError") {
            return StoreError::Invalid(describe(error));
        }
        // `TransactionConflict`: another transaction holds an item; nothing was decided.
        return StoreError::Unavailable(describe(error));
    }
    map_error(error, None)
}

/// Whether a sort key still belongs to the query's range, and whether the range has ended
/// (so no later key can match).
fn in_range(query: &Query, sk: &str) -> (bool, bool) {
    let Some(prefix) = query.sk_prefix.as_deref() else {
        return (true, false);
    };
    if sk.starts_with(prefix) {
        return (true, false);
    }
    let ended = if query.descending {
        sk < prefix
    } else {
        sk > prefix
    };
    (false, ended)
}

#[async_trait]
impl ItemStore for DynamoStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_error(&e, None))?;
        let Some(attributes) = output.item() else {
            return Ok(None);
        };
        let item = parse_item(attributes)?;
        Ok(is_live(item.expires_at, (self.clock)()).then_some(item))
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        validate_transaction(&writes)?;
        // A lone put or delete is a plain conditional write: half the cost of a transaction.
        match writes.as_slice() {
            [
                Write::Put {
                    key,
                    expect,
                    body,
                    index,
                    expires_at,
                },
            ] => Ok(vec![
                self.put_one(key, *expect, body, index.as_ref(), *expires_at)
                    .await?,
            ]),
            [Write::Delete { key, version }] => Ok(vec![self.delete_one(key, *version).await?]),
            _ => self.transact_many(&writes).await,
        }
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        validate_query(query)?;
        let now = (self.clock)();
        let (pk_name, sk_name) = match query.index {
            IndexName::Primary => ("pk", "sk"),
            IndexName::Gsi1 => ("gsi1pk", "gsi1sk"),
        };
        let mut names = HashMap::from([
            ("#pk".to_string(), pk_name.to_string()),
            ("#sk".to_string(), sk_name.to_string()),
        ]);
        let mut values = HashMap::from([(":pk".to_string(), AttributeValue::S(query.pk.clone()))]);
        // A key condition takes one sort-key clause: `after` when resuming (the prefix is then
        // checked here, in sort order), else the prefix.
        let key_condition = match (&query.after, &query.sk_prefix) {
            (Some(after), _) => {
                values.insert(":after".into(), AttributeValue::S(after.clone()));
                if query.descending {
                    "#pk = :pk AND #sk < :after"
                } else {
                    "#pk = :pk AND #sk > :after"
                }
            }
            (None, Some(prefix)) => {
                values.insert(":prefix".into(), AttributeValue::S(prefix.clone()));
                "#pk = :pk AND begins_with(#sk, :prefix)"
            }
            (None, None) => {
                names.remove("#sk");
                "#pk = :pk"
            }
        };
        // One more item than the page holds tells whether there is a next page.
        let wanted = query.limit.saturating_add(1);
        let mut found: Vec<(String, Item)> = Vec::new();
        let mut start_key = None;
        'requests: loop {
            let batch = i32::try_from(wanted - found.len())
                .unwrap_or(QUERY_BATCH_MAX)
                .clamp(1, QUERY_BATCH_MAX);
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key_condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(!query.descending)
                .limit(batch)
                .set_exclusive_start_key(start_key.take());
            request = match query.index {
                IndexName::Primary => request.consistent_read(true),
                // Global secondary indexes are eventually consistent; none of their readers
                // (listings, the sweeper) needs more.
                IndexName::Gsi1 => request.index_name(GSI1),
            };
            let output = request.send().await.map_err(|e| map_error(&e, None))?;
            for attributes in output.items() {
                let item = parse_item(attributes)?;
                let sk = match query.index {
                    IndexName::Primary => item.key.sk.clone(),
                    IndexName::Gsi1 => match &item.index {
                        Some(index) => index.sk.clone(),
                        None => continue,
                    },
                };
                let (matches, ended) = in_range(query, &sk);
                if ended {
                    break 'requests;
                }
                if matches && is_live(item.expires_at, now) {
                    found.push((sk, item));
                    if found.len() >= wanted {
                        break 'requests;
                    }
                }
            }
            match output.last_evaluated_key() {
                Some(last) if !last.is_empty() => start_key = Some(last.clone()),
                _ => break,
            }
        }
        let next = if found.len() > query.limit {
            found.truncate(query.limit);
            found.last().map(|(sk, _)| sk.clone())
        } else {
            None
        };
        Ok(Page {
            items: found.into_iter().map(|(_, item)| item).collect(),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(prefix: Option<&str>, descending: bool) -> Query {
        Query {
            index: IndexName::Primary,
            pk: "p".into(),
            sk_prefix: prefix.map(str::to_string),
            after: None,
            limit: 10,
            descending,
        }
    }

    #[test]
    fn a_prefix_range_ends_on_the_far_side_only() {
        let ascending = query(Some("item-"), false);
        assert_eq!(in_range(&ascending, "item-03"), (true, false));
        assert_eq!(in_range(&ascending, "a-before"), (false, false));
        assert_eq!(in_range(&ascending, "iten"), (false, true));
        let descending = query(Some("item-"), true);
        assert_eq!(in_range(&descending, "iten"), (false, false));
        assert_eq!(in_range(&descending, "itel"), (false, true));
        assert_eq!(in_range(&query(None, false), "anything"), (true, false));
    }

    #[test]
    fn conditions_treat_expired_items_as_absent() {
        let absent = condition_for(Expect::Absent, 100);
        assert_eq!(
            absent.expression,
            "attribute_not_exists(#pk) OR #exp < :now"
        );
        assert_eq!(absent.values[":now"], AttributeValue::N("100".into()));
        let version = condition_for(Expect::Version(7), 100);
        assert!(version.expression.contains("#v = :v"));
        assert!(version.expression.contains("#exp >= :now"));
        assert_eq!(version.values[":v"], AttributeValue::N("7".into()));
    }

    #[test]
    fn large_bodies_are_stored_compressed_and_read_back() {
        let key = ItemKey::new("PIPELINE#a", "STATE");
        let stages: Vec<Value> = (0..40)
            .map(|n| serde_json::json!({"name": format!("Stage{n}"), "status": "Succeeded"}))
            .collect();
        let body = serde_json::json!({ "stages": stages });
        let text_len = body.to_string().len();
        assert!(text_len > COMPRESS_ABOVE);
        let (_, attributes) =
            item_attributes(&key, Expect::Absent, &body, None, None).expect("attributes");
        assert!(!attributes.contains_key("body"));
        let Some(AttributeValue::B(compressed)) = attributes.get("bodyz") else {
            panic!("no compressed body: {attributes:?}");
        };
        assert!(compressed.as_ref().len() * 3 < text_len);
        assert_eq!(parse_item(&attributes).expect("parse").body, body);
    }

    #[test]
    fn a_corrupt_compressed_body_is_an_error_not_a_panic() {
        let mut attributes = key_attributes(&ItemKey::new("PIPELINE#a", "STATE"));
        attributes.insert("version".into(), AttributeValue::N("1".into()));
        attributes.insert(
            "bodyz".into(),
            AttributeValue::B(vec![0xff, 0x00, 0x13].into()),
        );
        let error = parse_item(&attributes).expect_err("corrupt");
        assert!(error.to_string().contains("does not inflate"), "{error}");
    }

    #[test]
    fn items_round_trip_through_attributes() {
        let key = ItemKey::new("PIPELINE#a", "STATE");
        let index = ItemKey::new("ACTIVE", "a");
        let body = serde_json::json!({"n": 1, "text": "é"});
        let (version, attributes) =
            item_attributes(&key, Expect::Version(4), &body, Some(&index), Some(99))
                .expect("attributes");
        assert_eq!(version, 5);
        let item = parse_item(&attributes).expect("parse");
        assert_eq!(
            item,
            Item {
                key,
                version: 5,
                body,
                index: Some(index),
                expires_at: Some(99),
            }
        );
    }
}
