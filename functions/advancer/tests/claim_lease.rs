//! The sweep's lease on dispatch claims, over the in-memory store: a dispatcher invocation that
//! claimed an attempt and vanished (Lambda timed it out, or it ran out of memory) holds the
//! attempt only until the lease ends; then the attempt fails as interrupted and the action runs
//! again as a new attempt. Before that, the sweep leaves the claim alone.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use penstock_advancer::{Advancer, DISPATCH_LEASE_MS};
use penstock_app::advance::Engine;
use penstock_app::control::Control;
use penstock_app::memory_store::MemoryStore;
use penstock_app::ports::{BusError, BusMessage, Clock, Envelope, EventBus, RandomIds};
use penstock_app::repo::{Claim, Repository};
use penstock_core::engine::{ActionJob, ActionStatus, Timestamp};
use penstock_core::model::PipelineDeclaration;
use serde_json::json;

#[derive(Default)]
struct CollectingBus(Mutex<Vec<Envelope>>);

#[async_trait]
impl EventBus for CollectingBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        if let Ok(mut published) = self.0.lock() {
            published.extend(envelopes);
        }
        Ok(())
    }
}

impl CollectingBus {
    fn scheduled(&self) -> Vec<ActionJob> {
        self.0
            .lock()
            .map(|published| {
                published
                    .iter()
                    .filter_map(|envelope| match &envelope.message {
                        BusMessage::ActionScheduled(job) => Some(job.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A clock the test moves.
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn a_claim_outliving_its_lease_is_interrupted_and_the_action_retried() {
    let bus = Arc::new(CollectingBus::default());
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let engine = Engine::new(
        Repository::new(Arc::new(MemoryStore::new())),
        bus.clone(),
        clock.clone(),
        Arc::new(RandomIds),
    );
    let control = Control::new(engine.clone());
    let declaration: PipelineDeclaration = serde_json::from_value(json!({
        "name": "lease",
        "roleArn": "arn:aws:iam::123456789012:role/penstock",
        "artifactStore": { "type": "S3", "location": "artifacts" },
        "stages": [
            { "name": "Source", "actions": [{
                "name": "Get",
                "actionTypeId": { "category": "Source", "owner": "AWS", "provider": "S3", "version": "1" },
                "configuration": { "S3Bucket": "sources", "S3ObjectKey": "app.zip" },
                "outputArtifacts": [{ "name": "Src" }]
            }]},
            { "name": "Deploy", "actions": [{
                "name": "Site",
                "actionTypeId": { "category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1" },
                "configuration": { "BucketName": "site", "Extract": "true" },
                "inputArtifacts": [{ "name": "Src" }]
            }]}
        ]
    }))
    .expect("declaration");
    control
        .create_pipeline(declaration, Vec::new())
        .await
        .expect("create");
    let id = control
        .start_execution("lease", Default::default())
        .await
        .expect("start");
    let first = bus.scheduled();
    assert_eq!(first.len(), 1, "{first:?}");
    let job = first[0].clone();
    // A dispatcher claims the attempt, then its invocation ends without a word.
    let claimed_at = clock.now();
    assert!(
        engine
            .repo
            .claim_attempt(
                &job.action_execution_id,
                &Claim {
                    owner: "dispatcher-1f2e".into(),
                    claimed_at,
                    pipeline: job.pipeline_name.clone(),
                    execution_id: job.execution_id.clone(),
                    stage: job.stage.clone(),
                    action: job.action.clone(),
                    attempt: job.attempt,
                },
            )
            .await
            .expect("claim")
    );
    let advancer = Advancer::new(engine.clone(), None);
    let attempt_status = || async {
        let execution = control
            .get_execution("lease", &id)
            .await
            .expect("execution");
        let action = &execution.stages[0].actions[0];
        (action.attempt, action.status)
    };

    // Within the lease the claim may still be running somewhere: nothing changes.
    clock
        .0
        .store(claimed_at.0 + DISPATCH_LEASE_MS, Ordering::SeqCst);
    let report = advancer.sweep().await.expect("sweep");
    assert_eq!(report["interrupted"], 0, "{report}");
    assert_eq!(
        attempt_status().await,
        (job.attempt, ActionStatus::InProgress)
    );
    assert_eq!(bus.scheduled().len(), 1);

    // Past it, the owner is gone: the attempt fails as interrupted and a new one is scheduled.
    clock
        .0
        .store(claimed_at.0 + DISPATCH_LEASE_MS + 1, Ordering::SeqCst);
    let report = advancer.sweep().await.expect("sweep");
    assert_eq!(report["interrupted"], 1, "{report}");
    assert_eq!(
        attempt_status().await,
        (job.attempt + 1, ActionStatus::InProgress)
    );
    let scheduled = bus.scheduled();
    assert_eq!(scheduled.len(), 2, "{scheduled:?}");
    assert_eq!(scheduled[1].attempt, job.attempt + 1);
    assert_eq!(scheduled[1].action, job.action);

    // The next sweep finds the new attempt unclaimed but young: it neither interrupts nor
    // reschedules it.
    let report = advancer.sweep().await.expect("sweep");
    assert_eq!(report["interrupted"], 0, "{report}");
    assert_eq!(bus.scheduled().len(), 2);
}
