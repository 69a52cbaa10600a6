//! The local scheduler on real SQLite state, with the times given by the test: rates count from
//! when a schedule is first seen, crons fire at their UTC times, each firing starts once, and
//! changed or removed tags take effect.

use penstock_app::control::{Control, StartOptions};
use penstock_app::intake::Intake;
use penstock_core::engine::{Timestamp, TriggerType};
use penstock_core::model::Tag;
use penstock_local::runtime::{DataDir, LocalParts};
use penstock_local::scheduler::LocalScheduler;
use serde_json::json;

const MINUTE: i64 = 60_000;

fn at(text: &str) -> Timestamp {
    penstock_core::triggers::parse_event_time(text).expect("time")
}

async fn create(control: &Control, name: &str, schedule: Option<&str>) {
    let text = json!({"pipeline": {
        "name": name,
        "roleArn": "arn:aws:iam::111111111111:role/p",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [{
                "name": "Code",
                "actionTypeId": {"category": "Source", "owner": "Custom", "provider": "LocalGit", "version": "1"},
                "configuration": {"RepositoryPath": "/nonexistent", "BranchName": "main"},
                "outputArtifacts": [{"name": "Src"}]
            }]},
            {"name": "Approve", "actions": [{
                "name": "Approve",
                "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"}
            }]}
        ]
    }})
    .to_string();
    let validated = penstock_core::validate::parse_and_validate(&text).expect("valid");
    let tags = schedule
        .map(|s| {
            vec![Tag {
                key: "penstock:schedule".into(),
                value: s.into(),
            }]
        })
        .unwrap_or_default();
    control
        .create_pipeline(validated.declaration, tags)
        .await
        .expect("create");
}

async fn count(control: &Control, name: &str) -> usize {
    control
        .list_executions(name, None, 100)
        .await
        .expect("list")
        .0
        .len()
}

#[tokio::test]
async fn rates_and_crons_fire_once_per_firing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = LocalParts::open(DataDir::new(dir.path())).expect("data dir");
    let control = parts.detached_control();
    create(&control, "every-five", Some("rate(5 minutes)")).await;
    create(&control, "at-ten", Some("cron(0 10 * * ? *)")).await;
    create(&control, "broken", Some("cron(0 10 * * *)")).await;
    create(&control, "unscheduled", None).await;
    let mut scheduler = LocalScheduler::new(Intake::new(control.clone()));

    let t0 = at("2026-03-04T09:58:00Z");
    assert!(scheduler.tick(t0).await.expect("tick").is_empty());
    assert_eq!(scheduler.next_due(), Some(at("2026-03-04T10:00:00Z")));
    assert!(
        scheduler
            .tick(Timestamp(t0.0 + 4 * MINUTE - 1))
            .await
            .expect("tick")
            .len()
            == 1
    );
    // 10:00 came before 10:03: only the cron fired.
    assert_eq!(count(&control, "at-ten").await, 1);
    assert_eq!(count(&control, "every-five").await, 0);

    let reports = scheduler
        .tick(Timestamp(t0.0 + 5 * MINUTE))
        .await
        .expect("tick");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].started[0].pipeline, "every-five");
    // The same instant again starts nothing.
    assert!(
        scheduler
            .tick(Timestamp(t0.0 + 5 * MINUTE))
            .await
            .expect("tick")
            .is_empty()
    );
    // Firings missed while nothing ticked are not made up for: one start, then the next slot.
    scheduler
        .tick(Timestamp(t0.0 + 17 * MINUTE))
        .await
        .expect("tick");
    assert_eq!(count(&control, "every-five").await, 2);
    assert_eq!(scheduler.next_due(), Some(Timestamp(t0.0 + 20 * MINUTE)));

    let executions = control
        .list_executions("every-five", None, 10)
        .await
        .expect("list")
        .0;
    assert!(
        executions
            .iter()
            .all(|e| e.trigger.trigger_type == TriggerType::CloudWatchEvent
                && e.trigger.trigger_detail == "rate(5 minutes)")
    );
    assert_eq!(count(&control, "broken").await, 0);
    assert_eq!(count(&control, "unscheduled").await, 0);

    // A second scheduler over the same state (a restarted serve) firing the same instant does
    // not start it again.
    let mut other = LocalScheduler::new(Intake::new(control.clone()));
    other.tick(at("2026-03-04T09:00:00Z")).await.expect("tick");
    other.tick(at("2026-03-04T10:00:00Z")).await.expect("tick");
    assert_eq!(count(&control, "at-ten").await, 1);
    let _ = control
        .start_execution("unscheduled", StartOptions::default())
        .await
        .expect("manual start still works");
}
