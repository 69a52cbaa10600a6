//! Two parallel actions finishing at the same moment, reported by two writers with their own
//! SQLite connections on real threads: the stage advances exactly once (one dispatch of the next
//! stage, one stage SUCCEEDED event), and every write stays conditional.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use penstock_app::advance::Engine;
use penstock_app::control::{Control, StartOptions};
use penstock_app::ports::{BusError, Envelope, EventBus, RandomIds, SystemClock};
use penstock_app::repo::Repository;
use penstock_app::store::{Item, ItemKey, ItemStore, Page, Query, StoreError, Write};
use penstock_core::engine::{ActionJob, Effect, EventKind, Input};
use penstock_local::sqlite_store::SqliteStore;

/// Keeps what was published; the test counts effects from `apply`, not these.
#[derive(Default)]
struct RecordingBus(Mutex<Vec<Envelope>>);

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        self.0.lock().unwrap().extend(envelopes);
        Ok(())
    }
}

/// A SQLite store whose first read of the runtime document waits for the other writer's, so
/// both writers really start from the same version (without it, one usually finishes first).
struct GatedStore {
    inner: SqliteStore,
    gate: Option<Arc<std::sync::Barrier>>,
    passed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl ItemStore for GatedStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, StoreError> {
        let item = self.inner.get(key).await?;
        if key.sk == "STATE"
            && !self.passed.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Some(gate) = self.gate.clone()
        {
            tokio::task::spawn_blocking(move || gate.wait())
                .await
                .unwrap();
        }
        Ok(item)
    }
    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        self.inner.transact(writes).await
    }
    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.inner.query(query).await
    }
}

fn engine(path: &std::path::Path) -> Engine {
    gated_engine(path, None)
}

fn gated_engine(path: &std::path::Path, gate: Option<Arc<std::sync::Barrier>>) -> Engine {
    let store = GatedStore {
        inner: SqliteStore::open(path).expect("open store"),
        gate,
        passed: std::sync::atomic::AtomicBool::new(false),
    };
    Engine::new(
        Repository::new(Arc::new(store)),
        Arc::new(RecordingBus::default()),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    )
}

fn declaration() -> penstock_core::model::PipelineDeclaration {
    let action = |name: &str, category: &str, provider: &str, inputs: &[&str], outputs: &[&str]| {
        serde_json::json!({
            "name": name,
            "actionTypeId": {"category": category, "owner": "AWS", "provider": provider, "version": "1"},
            "configuration": {"BucketName": "b", "Extract": "true", "S3Bucket": "b", "S3ObjectKey": "k"},
            "inputArtifacts": inputs.iter().map(|n| serde_json::json!({"name": n})).collect::<Vec<_>>(),
            "outputArtifacts": outputs.iter().map(|n| serde_json::json!({"name": n})).collect::<Vec<_>>(),
        })
    };
    serde_json::from_value(serde_json::json!({
        "name": "race",
        "roleArn": "arn:aws:iam::111111111111:role/R",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [action("Get", "Source", "S3", &[], &["Src"])]},
            {"name": "Build", "actions": [
                action("Left", "Build", "CodeBuild", &["Src"], &[]),
                action("Right", "Build", "CodeBuild", &["Src"], &[])
            ]},
            {"name": "Deploy", "actions": [action("Ship", "Deploy", "S3", &["Src"], &[])]}
        ]
    }))
    .expect("declaration")
}

fn jobs(effects: &[Effect]) -> Vec<ActionJob> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch(job) => Some(job.clone()),
            _ => None,
        })
        .collect()
}

fn succeeded(job: &ActionJob, outputs: &[&str]) -> Input {
    Input::ActionSucceeded {
        execution_id: job.execution_id.clone(),
        stage: job.stage.clone(),
        action: job.action.clone(),
        attempt: job.attempt,
        output_artifacts: outputs
            .iter()
            .map(|name| penstock_core::engine::ArtifactRef {
                name: name.to_string(),
                location: format!("local:{name}"),
                revision_id: None,
                revision_summary: None,
            })
            .collect(),
        output_variables: Default::default(),
        external: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_actions_finishing_together_advance_the_stage_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let first = engine(&path);
    let control = Control::new(first.clone());
    control
        .create_pipeline(declaration(), Vec::new())
        .await
        .unwrap();

    for round in 0..15 {
        // One execution at a time: each round's execution finishes before the next starts.
        let id = control
            .start_execution("race", StartOptions::default())
            .await
            .unwrap();
        let runtime = first.repo.load_runtime("race").await.unwrap();
        let source_job = runtime
            .value
            .state
            .unclaimed_jobs()
            .into_iter()
            .find(|j| j.execution_id == id && j.stage == "Source")
            .expect("source dispatched");
        let applied = first
            .apply("race", succeeded(&source_job, &["Src"]))
            .await
            .unwrap();
        let builds = jobs(&applied.effects);
        assert_eq!(
            builds.len(),
            2,
            "round {round}: both build actions dispatched"
        );

        // Two writers, two connections, two threads, both reading the same version before
        // either writes.
        let gate = Arc::new(std::sync::Barrier::new(2));
        let mut handles = Vec::new();
        for job in builds {
            let writer = gated_engine(&path, Some(gate.clone()));
            handles.push(tokio::spawn(async move {
                writer.apply("race", succeeded(&job, &[])).await.unwrap()
            }));
        }
        let mut effects = Vec::new();
        for handle in handles {
            effects.extend(handle.await.unwrap().effects);
        }
        let deploys: Vec<_> = jobs(&effects)
            .into_iter()
            .filter(|j| j.stage == "Deploy")
            .collect();
        assert_eq!(
            deploys.len(),
            1,
            "round {round}: Deploy dispatched once: {deploys:?}"
        );
        let build_succeeded = effects
            .iter()
            .filter(|e| match e {
                Effect::Publish(change) => {
                    change.kind == EventKind::Stage
                        && change.detail["stage"] == "Build"
                        && change.detail["state"] == "SUCCEEDED"
                }
                _ => false,
            })
            .count();
        assert_eq!(build_succeeded, 1, "round {round}: Build SUCCEEDED once");

        // Finish the execution so the next round starts from a free pipeline.
        first
            .apply("race", succeeded(&deploys[0], &[]))
            .await
            .unwrap();
        let execution = control.get_execution("race", &id).await.unwrap();
        assert_eq!(
            execution.status,
            penstock_core::engine::ExecutionStatus::Succeeded,
            "round {round}"
        );
    }
}
