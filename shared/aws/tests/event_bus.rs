//! The EventBridge bus on moto: batches of at most ten, failed entries sent again, the size
//! limit, and what subscribers receive (internal envelopes, CodePipeline-shaped details).

use std::collections::BTreeSet;

use penstock_app::ports::{BusError, BusMessage, Envelope, EventBus, PUBLIC_EVENT_SOURCE};
use penstock_aws::AwsClients;
use penstock_aws::bus::{EventBridgeBus, MAX_ENTRY_BYTES, decode_internal_event};
use penstock_aws::testing::{BusTap, CallCounter, FailEventEntries, sdk_config, unique_name};
use penstock_core::engine::{EventKind, StateChange, Timestamp};
use serde_json::json;

fn cancelled(n: usize) -> Envelope {
    Envelope {
        id: format!("internal-{n:02}"),
        message: BusMessage::ActionCancelled {
            execution_id: format!("e{n}"),
            stage: "Build".into(),
            action: "Compile".into(),
            attempt: 1,
        },
    }
}

fn state_change(n: usize) -> Envelope {
    Envelope {
        id: format!("public-{n:02}"),
        message: BusMessage::StateChange {
            pipeline: "demo".into(),
            execution_id: format!("e{n}"),
            change: StateChange {
                kind: EventKind::Stage,
                time: Timestamp(1_700_000_000_000 + n as i64),
                detail: json!({"pipeline": "demo", "execution-id": format!("e{n}"), "stage": "Build", "state": "STARTED", "version": 1}),
            },
        },
    }
}

struct Setup {
    bus: EventBridgeBus,
    tap: BusTap,
    counter: CallCounter,
    faults: FailEventEntries,
}

async fn setup() -> Setup {
    let config = sdk_config().await;
    let counter = CallCounter::new();
    let faults = FailEventEntries::new();
    let clients = AwsClients::with_interceptors(&config, vec![counter.shared(), faults.shared()]);
    let name = unique_name("bus");
    let tap = BusTap::new(
        &config,
        &name,
        true,
        &[json!({"source": ["penstock", PUBLIC_EVENT_SOURCE]})],
    )
    .await
    .expect("bus, rule and queue");
    Setup {
        bus: EventBridgeBus::new(clients.eventbridge, &name),
        tap,
        counter,
        faults,
    }
}

#[tokio::test]
async fn events_go_in_batches_of_ten_and_failed_entries_are_sent_again() {
    let setup = setup().await;
    let envelopes: Vec<Envelope> = (0..23)
        .map(|n| {
            if n % 2 == 0 {
                cancelled(n)
            } else {
                state_change(n)
            }
        })
        .collect();
    setup.faults.arm(3);
    setup.bus.publish(envelopes.clone()).await.expect("publish");
    assert_eq!(setup.faults.failed(), 3, "three entries failed once");
    // 3 batches (10, 10, 3), and one more request for the three failed entries.
    assert_eq!(setup.counter.executions("EventBridge", "PutEvents"), 4);

    let events = setup.tap.drain().await.expect("drain");
    assert_eq!(
        events.len(),
        23,
        "each event delivered exactly once: {events:#?}"
    );
    let mut internal = BTreeSet::new();
    let mut public = BTreeSet::new();
    for event in &events {
        if event["source"] == "penstock" {
            let envelope = decode_internal_event(event).expect("an internal event decodes");
            assert!(envelopes.contains(&envelope));
            internal.insert(envelope.id);
        } else {
            assert_eq!(event["source"], PUBLIC_EVENT_SOURCE);
            assert_eq!(
                event["detail-type"],
                "CodePipeline Stage Execution State Change"
            );
            assert_eq!(event["detail"]["state"], "STARTED");
            assert!(
                event["detail"].get("id").is_none(),
                "the public detail keeps CodePipeline's shape"
            );
            public.insert(
                event["detail"]["execution-id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    assert_eq!(internal.len(), 12);
    assert_eq!(public.len(), 11);
}

#[tokio::test]
async fn entries_failing_every_time_are_reported_partial() {
    let setup = setup().await;
    setup.faults.arm(1000);
    let error = setup
        .bus
        .publish(vec![cancelled(1), cancelled(2)])
        .await
        .expect_err("every attempt fails");
    assert!(
        matches!(
            error,
            BusError::Partial {
                failed: 2,
                total: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(setup.tap.drain().await.expect("drain").len(), 0);
}

#[tokio::test]
async fn an_entry_over_256_kb_is_refused_before_anything_is_sent() {
    let setup = setup().await;
    let mut big = state_change(1);
    if let BusMessage::StateChange { change, .. } = &mut big.message {
        change.detail = json!({"blob": "x".repeat(MAX_ENTRY_BYTES)});
    }
    let error = setup
        .bus
        .publish(vec![cancelled(0), big])
        .await
        .expect_err("too big");
    match error {
        BusError::Invalid(message) => assert!(message.contains("public-01"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(setup.counter.executions("EventBridge", "PutEvents"), 0);
    assert_eq!(setup.tap.drain().await.expect("drain").len(), 0);
}

#[tokio::test]
async fn a_missing_bus_is_a_refusal_not_a_silent_loss() {
    let config = sdk_config().await;
    let bus = EventBridgeBus::new(AwsClients::new(&config).eventbridge, unique_name("nobus"));
    assert!(bus.publish(vec![cancelled(1)]).await.is_err());
}
