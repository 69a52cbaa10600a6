//! Prints every `(source, detail-type)` pair Penstock publishes, as JSON, for checks outside Rust
//! (the infrastructure test matches the template's event rules against this list).

use penstock_app::ports::BusMessage;

fn main() {
    let events: Vec<serde_json::Value> = BusMessage::published_event_types()
        .into_iter()
        .map(|(source, detail_type)| {
            serde_json::json!({ "source": source, "detail-type": detail_type })
        })
        .collect();
    println!("{}", serde_json::Value::Array(events));
}
