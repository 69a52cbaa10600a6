//! The event bus on EventBridge: one custom bus, `PutEvents` in batches, failed entries retried.
//!
//! Two kinds of entries go on the bus:
//! - internal messages (`source` [`INTERNAL_EVENT_SOURCE`]): the `detail` is the whole
//!   [`Envelope`] as JSON (`{"id": ..., "message": ...}`), so a consumer gets back exactly what was
//!   published, id included, and can recognise redeliveries;
//! - CodePipeline-compatible state changes (`source` [`PUBLIC_EVENT_SOURCE`]): the `detail` is
//!   CodePipeline's own `detail` shape, untouched, and the entry's `time` is the change's time.
//!
//! Limits kept here, as EventBridge enforces them: at most 10 entries per request, at most
//! 256 KB per entry and per request (sizes computed as EventBridge documents it).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use penstock_app::ports::{
    BusError, BusMessage, Envelope, EventBus, INTERNAL_EVENT_SOURCE, PUBLIC_EVENT_SOURCE,
};
use serde_json::Value;
use tracing::{debug, warn};

use crate::sdk_error::{ErrorKind, describe, kind};

/// Most entries one `PutEvents` request may carry.
pub const MAX_ENTRIES_PER_REQUEST: usize = 10;
/// Most bytes one entry, and one request, may weigh (256 KB).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// How often failed entries are sent again before the publish is reported failed.
const ENTRY_ATTEMPTS: u32 = 4;
/// The first pause before sending failed entries again; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Entry error codes that may succeed when sent again.
const RETRYABLE_ENTRY_CODES: &[&str] = &[
    "InternalFailure",
    "InternalException",
    "ThrottlingException",
    "ServiceUnavailable",
];

/// An [`EventBus`] on one EventBridge bus (name or ARN).
#[derive(Clone, Debug)]
pub struct EventBridgeBus {
    client: Client,
    bus: String,
}

/// One entry ready to send, with what it weighs.
#[derive(Clone, Debug)]
struct Prepared {
    entry: PutEventsRequestEntry,
    bytes: usize,
    id: String,
}

impl EventBridgeBus {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }

    fn prepare(&self, envelope: &Envelope) -> Result<Prepared, BusError> {
        let (detail, time) = match &envelope.message {
            BusMessage::StateChange { change, .. } => (
                serde_json::to_string(&change.detail),
                Some(aws_smithy_types::DateTime::from_millis(change.time.0)),
            ),
            _ => (serde_json::to_string(envelope), None),
        };
        let detail = detail.map_err(|e| {
            BusError::Invalid(format!("event {} cannot be encoded: {e}", envelope.id))
        })?;
        let source = envelope.message.source();
        let detail_type = envelope.message.detail_type();
        let bytes = entry_size(source, detail_type, &detail, time.is_some());
        if bytes > MAX_ENTRY_BYTES {
            return Err(BusError::Invalid(format!(
                "event {} ({detail_type}) weighs {bytes} bytes, over EventBridge's {MAX_ENTRY_BYTES}-byte limit",
                envelope.id
            )));
        }
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(source)
            .detail_type(detail_type)
            .detail(detail)
            .set_time(time)
            .build();
        Ok(Prepared {
            entry,
            bytes,
            id: envelope.id.clone(),
        })
    }

    /// Send one batch, sending failed entries again with backoff.
    async fn send_batch(&self, mut pending: Vec<Prepared>) -> Result<(), BusError> {
        let total = pending.len();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ENTRY_ATTEMPTS {
            let output = self
                .client
                .put_events()
                .set_entries(Some(pending.iter().map(|p| p.entry.clone()).collect()))
                .send()
                .await
                .map_err(|e| match kind(&e) {
                    ErrorKind::Construction => BusError::Invalid(describe(&e)),
                    ErrorKind::Service(code) if code == "ValidationException" => {
                        BusError::Invalid(describe(&e))
                    }
                    _ => BusError::Unavailable(describe(&e)),
                })?;
            if output.failed_entry_count() == 0 {
                return Ok(());
            }
            let results = output.entries();
            let mut failed = Vec::new();
            let mut permanent = Vec::new();
            for (index, prepared) in pending.into_iter().enumerate() {
                // A missing result counts as failed: sending an event twice is harmless,
                // losing it is not.
                let code = match results.get(index) {
                    Some(result) => match result.error_code() {
                        None => continue,
                        Some(code) => code.to_string(),
                    },
                    None => "MissingResult".to_string(),
                };
                if RETRYABLE_ENTRY_CODES.contains(&code.as_str()) || code == "MissingResult" {
                    failed.push((prepared, code));
                } else {
                    let message = results
                        .get(index)
                        .and_then(|r| r.error_message())
                        .unwrap_or_default()
                        .to_string();
                    permanent.push(format!("{}: {code} {message}", prepared.id));
                }
            }
            if !permanent.is_empty() {
                return Err(BusError::Invalid(format!(
                    "EventBridge refused {} of {total} events: {}",
                    permanent.len(),
                    permanent.join("; ")
                )));
            }
            if failed.is_empty() {
                return Ok(());
            }
            let codes: Vec<String> = failed.iter().map(|(_, code)| code.clone()).collect();
            if attempt == ENTRY_ATTEMPTS {
                return Err(BusError::Partial {
                    failed: failed.len(),
                    total,
                    reason: format!(
                        "entries failed {ENTRY_ATTEMPTS} times: {}",
                        codes.join(", ")
                    ),
                });
            }
            debug!(failed = failed.len(), total, attempt, codes = ?codes, "sending failed events again");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            pending = failed.into_iter().map(|(prepared, _)| prepared).collect();
        }
        Ok(())
    }
}

/// An entry's size as EventBridge counts it: UTF-8 bytes of source, detail-type and detail,
/// plus 14 bytes for a time (no resources are sent).
fn entry_size(source: &str, detail_type: &str, detail: &str, has_time: bool) -> usize {
    source.len() + detail_type.len() + detail.len() + if has_time { 14 } else { 0 }
}

/// Group entries into requests of at most [`MAX_ENTRIES_PER_REQUEST`] entries and
/// [`MAX_ENTRY_BYTES`] bytes, keeping their order.
fn batches(prepared: Vec<Prepared>) -> Vec<Vec<Prepared>> {
    let mut batches: Vec<Vec<Prepared>> = Vec::new();
    let mut bytes = 0;
    for entry in prepared {
        let fits = batches.last().is_some_and(|batch| {
            batch.len() < MAX_ENTRIES_PER_REQUEST && bytes + entry.bytes <= MAX_ENTRY_BYTES
        });
        if !fits {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += entry.bytes;
        if let Some(batch) = batches.last_mut() {
            batch.push(entry);
        }
    }
    batches
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        // Refuse the whole publish before sending anything when one event can never go.
        let prepared = envelopes
            .iter()
            .map(|envelope| self.prepare(envelope))
            .collect::<Result<Vec<_>, _>>()?;
        let total = prepared.len();
        let mut sent = 0;
        for batch in batches(prepared) {
            let size = batch.len();
            if let Err(error) = self.send_batch(batch).await {
                warn!(bus = %self.bus, error = %error, sent, total, "publishing events failed");
                return Err(match error {
                    BusError::Partial { failed, reason, .. } => BusError::Partial {
                        failed: failed + (total - sent - size),
                        total,
                        reason,
                    },
                    other => other,
                });
            }
            sent += size;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a Penstock event: source {0:?}")]
    ForeignSource(String),
    #[error("the event has no {0}")]
    Missing(&'static str),
    #[error("the event's detail is not a Penstock message: {0}")]
    Detail(String),
    #[error("detail-type {detail_type:?} does not match its message ({expected:?})")]
    Mismatch {
        detail_type: String,
        expected: &'static str,
    },
}

/// The envelope an internal EventBridge event carries (as Lambda receives it, directly or as
/// an SQS message body).
pub fn decode_internal_event(event: &Value) -> Result<Envelope, DecodeError> {
    let source = event
        .get("source")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Missing("source"))?;
    if source != INTERNAL_EVENT_SOURCE {
        return Err(DecodeError::ForeignSource(source.to_string()));
    }
    let detail_type = event
        .get("detail-type")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Missing("detail-type"))?;
    let detail = event.get("detail").ok_or(DecodeError::Missing("detail"))?;
    let envelope: Envelope =
        serde_json::from_value(detail.clone()).map_err(|e| DecodeError::Detail(e.to_string()))?;
    let expected = envelope.message.detail_type();
    if expected != detail_type {
        return Err(DecodeError::Mismatch {
            detail_type: detail_type.to_string(),
            expected,
        });
    }
    Ok(envelope)
}

/// Whether an event is one of the public state changes.
pub fn is_public_event(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some(PUBLIC_EVENT_SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(id: usize, bytes: usize) -> Prepared {
        Prepared {
            entry: PutEventsRequestEntry::builder().build(),
            bytes,
            id: id.to_string(),
        }
    }

    fn shape(batches: &[Vec<Prepared>]) -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| b.iter().map(|p| p.id.clone()).collect())
            .collect()
    }

    #[test]
    fn batches_hold_at_most_ten_entries_in_order() {
        let entries = (0..23).map(|i| prepared(i, 100)).collect();
        let batches = batches(entries);
        let lengths: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(lengths, vec![10, 10, 3]);
        assert_eq!(shape(&batches)[2], vec!["20", "21", "22"]);
    }

    #[test]
    fn batches_stay_under_the_request_size() {
        let big = MAX_ENTRY_BYTES / 2;
        let entries = vec![
            prepared(0, big),
            prepared(1, big),
            prepared(2, 1),
            prepared(3, MAX_ENTRY_BYTES),
            prepared(4, 1),
        ];
        assert_eq!(
            shape(&batches(entries)),
            vec![vec!["0", "1"], vec!["2"], vec!["3"], vec!["4"]]
        );
    }

    #[test]
    fn entry_size_counts_time_and_utf8_bytes() {
        assert_eq!(entry_size("ab", "c", "é", false), 5);
        assert_eq!(entry_size("ab", "c", "é", true), 19);
    }
}
