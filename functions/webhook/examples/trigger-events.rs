//! Prints every `(source, detail-type)` the webhook function turns into pipeline starts, as JSON,
//! for checks outside Rust (the infrastructure test matches the template's trigger rules and the
//! scheduled-start input against this list).

use penstock_webhook::aws_events::TRIGGER_EVENT_TYPES;

fn main() {
    let events: Vec<serde_json::Value> = TRIGGER_EVENT_TYPES
        .iter()
        .map(|(source, detail_type)| {
            serde_json::json!({ "source": source, "detail-type": detail_type })
        })
        .collect();
    println!("{}", serde_json::Value::Array(events));
}
