//! The store conformance suite on DynamoDB (moto), plus what only DynamoDB can get wrong:
//! throttling mapped and retried, two writers racing on one pipeline's runtime document.

use std::sync::Arc;

use penstock_app::store::{Expect, ItemKey, ItemStore, StoreError};
use penstock_aws::AwsClients;
use penstock_aws::dynamo::DynamoStore;
use penstock_aws::testing::{ThrottleDynamoDb, sdk_config, unique_name};
use serde_json::json;

/// A fresh table on moto (one per test: cases run in parallel, possibly in many processes).
async fn store_on_moto() -> DynamoStore {
    let clients = AwsClients::new(&sdk_config().await);
    let table = unique_name("conformance");
    DynamoStore::create_table(&clients.dynamodb, &table)
        .await
        .expect("create the table");
    DynamoStore::new(clients.dynamodb, table)
}

penstock_app::item_store_conformance_tests!(store_on_moto().await);

#[tokio::test]
async fn a_throttled_write_is_retried_by_the_sdk_and_succeeds() {
    let throttle = ThrottleDynamoDb::new("PutItem");
    let clients = AwsClients::with_interceptors(&sdk_config().await, vec![throttle.shared()]);
    let table = unique_name("throttle");
    DynamoStore::create_table(&clients.dynamodb, &table)
        .await
        .expect("table");
    let store = DynamoStore::new(clients.dynamodb, table);
    let key = ItemKey::new("p", "s");
    throttle.arm(2);
    let version = store
        .put(key.clone(), Expect::Absent, json!({"n": 1}), None, None)
        .await
        .expect("the put succeeds on the third attempt");
    assert_eq!(version, 1);
    assert_eq!(throttle.injected(), 2);
    let item = store.get(&key).await.expect("get").expect("item");
    assert_eq!(item.body, json!({"n": 1}));
}

#[tokio::test]
async fn throttling_past_the_retries_is_reported_as_throttled_and_changes_nothing() {
    let throttle = ThrottleDynamoDb::new("TransactWriteItems");
    let clients = AwsClients::with_interceptors(&sdk_config().await, vec![throttle.shared()]);
    let table = unique_name("throttled");
    DynamoStore::create_table(&clients.dynamodb, &table)
        .await
        .expect("table");
    let store = DynamoStore::new(clients.dynamodb, table);
    throttle.arm(100);
    let writes = vec![
        penstock_app::store::Write::Put {
            key: ItemKey::new("p", "a"),
            expect: Expect::Absent,
            body: json!({}),
            index: None,
            expires_at: None,
        },
        penstock_app::store::Write::Put {
            key: ItemKey::new("p", "b"),
            expect: Expect::Absent,
            body: json!({}),
            index: None,
            expires_at: None,
        },
    ];
    let error = store.transact(writes).await.expect_err("throttled");
    assert!(matches!(error, StoreError::Throttled(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(throttle.injected(), 3, "the SDK tried three times");
    throttle.arm(0);
    assert_eq!(store.get(&ItemKey::new("p", "a")).await.expect("get"), None);
}

#[tokio::test]
async fn an_item_too_large_is_invalid_not_retryable() {
    let store = store_on_moto().await;
    // Random text: compression cannot bring a megabyte of it under DynamoDB's 400 KB.
    let blob: String = (0..32 * 1024)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let body = json!({ "blob": blob });
    let error = store
        .put(ItemKey::new("p", "big"), Expect::Absent, body, None, None)
        .await
        .expect_err("over 400 KB");
    assert!(matches!(error, StoreError::Invalid(_)), "{error:?}");
}

#[tokio::test]
async fn a_missing_table_is_unavailable() {
    let clients = AwsClients::new(&sdk_config().await);
    let store = DynamoStore::new(clients.dynamodb, unique_name("missing"));
    let error = store
        .get(&ItemKey::new("p", "s"))
        .await
        .expect_err("no table");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn two_stores_with_the_same_view_of_an_item_never_both_win() {
    // Two independent clients, as two Lambda instances would have, both holding the item at
    // the same version and both writing on it. The writes go one after the other, alternating
    // who is first: moto checks a condition and writes in two steps without a lock, so truly
    // simultaneous requests can both pass on moto (seen about once in fifteen runs), which
    // DynamoDB never allows. What this checks is Penstock's part: every write is conditional
    // on the version read, and a lost race is a `Conflict` that changes nothing.
    let first = Arc::new(store_on_moto().await);
    let second = Arc::new(DynamoStore::new(
        AwsClients::new(&sdk_config().await).dynamodb,
        first.table(),
    ));
    let key = ItemKey::new("PIPELINE#race", "STATE");
    first
        .put(
            key.clone(),
            Expect::Absent,
            json!({"writer": "none"}),
            None,
            None,
        )
        .await
        .expect("seed");
    for round in 1..=20u64 {
        let seen_a = first
            .get(&key)
            .await
            .expect("get a")
            .expect("item a")
            .version;
        let seen_b = second
            .get(&key)
            .await
            .expect("get b")
            .expect("item b")
            .version;
        assert_eq!(
            (seen_a, seen_b),
            (round, round),
            "both see the same version"
        );
        let (winner, loser, winner_name) = if round % 2 == 0 {
            (&first, &second, "a")
        } else {
            (&second, &first, "b")
        };
        let won = winner
            .put(
                key.clone(),
                Expect::Version(round),
                json!({"writer": winner_name}),
                None,
                None,
            )
            .await;
        let lost = loser
            .put(
                key.clone(),
                Expect::Version(round),
                json!({"writer": "late"}),
                None,
                None,
            )
            .await;
        assert_eq!(
            won.as_ref().ok(),
            Some(&(round + 1)),
            "round {round}: {won:?}"
        );
        assert!(
            matches!(lost, Err(StoreError::Conflict { .. })),
            "round {round}: the late writer sees a conflict: {lost:?}"
        );
        let item = second.get(&key).await.expect("get").expect("item");
        assert_eq!(item.version, round + 1);
        assert_eq!(
            item.body,
            json!({"writer": winner_name}),
            "the late write changed nothing"
        );
    }
}
