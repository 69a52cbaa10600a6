//! Benchmark: what Penstock itself costs per action lifecycle (dispatch, claim, run, report,
//! advance), with actions that do nothing, so only orchestration is measured.
//!
//! Two figures:
//! - the pure engine: `apply` on an in-memory state, per action lifecycle;
//! - the embedded default: the real runner (SQLite store, outbox, local bus, dispatcher with
//!   claims, encrypted artifacts for the source) running a pipeline of many no-op actions.
//!
//! Run with `cargo bench -p penstock-local --bench lifecycle` (add `-- --quick` for a short run).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use penstock_app::control::StartOptions;
use penstock_app::ports::{ActionProvider, JobContext, ProviderOutcome, ProviderRegistry};
use penstock_core::engine::{
    self, ActionJob, Effect, ExecutionStatus, Input, PipelineState, StartRequest, Timestamp,
    Trigger, TriggerType,
};
use penstock_core::model::{ActionTypeId, PipelineDeclaration};
use penstock_local::runtime::{DataDir, Runner};

const STAGES: usize = 10;
const ACTIONS_PER_STAGE: usize = 5;

/// A pipeline: a source stage, then `stages - 1` stages of `actions` parallel no-op actions.
fn declaration(name: &str, stages: usize, actions: usize) -> PipelineDeclaration {
    let noop = |name: String, category: &str, outputs: &[&str]| {
        serde_json::json!({
            "name": name,
            "actionTypeId": {"category": category, "owner": "Custom", "provider": "Noop", "version": "1"},
            "outputArtifacts": outputs.iter().map(|n| serde_json::json!({"name": n})).collect::<Vec<_>>(),
        })
    };
    let mut stage_list = vec![serde_json::json!({
        "name": "Source",
        "actions": [noop("Get".into(), "Source", &["Src"])]
    })];
    for s in 1..stages {
        stage_list.push(serde_json::json!({
            "name": format!("Stage{s}"),
            "actions": (0..actions).map(|a| noop(format!("Noop{a}"), "Test", &[])).collect::<Vec<_>>()
        }));
    }
    serde_json::from_value(serde_json::json!({
        "name": name,
        "roleArn": "arn:aws:iam::111111111111:role/Bench",
        "artifactStore": {"type": "S3", "location": "bench-artifacts"},
        "pipelineType": "V2",
        "executionMode": "QUEUED",
        "stages": stage_list
    }))
    .expect("bench declaration")
}

fn dispatched(effects: &[Effect]) -> Vec<ActionJob> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch(job) => Some(job.clone()),
            _ => None,
        })
        .collect()
}

/// Run one execution through the pure engine; returns the number of action lifecycles.
fn engine_execution(state: &mut PipelineState, id: &str, now: Timestamp) -> usize {
    let mut pending = dispatched(
        &engine::apply(
            state,
            Input::Start(StartRequest {
                execution_id: id.to_string(),
                trigger: Trigger {
                    trigger_type: TriggerType::StartPipelineExecution,
                    trigger_detail: "bench".into(),
                },
                variables: BTreeMap::new(),
                source_revisions: Vec::new(),
            }),
            now,
        )
        .expect("start"),
    );
    let mut lifecycles = 0;
    while let Some(job) = pending.pop() {
        lifecycles += 1;
        let outputs = job
            .output_artifacts
            .iter()
            .map(|name| engine::ArtifactRef {
                name: name.clone(),
                location: format!("local:{name}"),
                revision_id: None,
                revision_summary: None,
            })
            .collect();
        let effects = engine::apply(
            state,
            Input::ActionSucceeded {
                execution_id: job.execution_id.clone(),
                stage: job.stage.clone(),
                action: job.action.clone(),
                attempt: job.attempt,
                output_artifacts: outputs,
                output_variables: BTreeMap::new(),
                external: Default::default(),
            },
            now,
        )
        .expect("success");
        pending.extend(dispatched(&effects));
    }
    lifecycles
}

fn bench_engine(rounds: usize) {
    let mut state = PipelineState::new(declaration("bench", STAGES, ACTIONS_PER_STAGE));
    let now = Timestamp(1_700_000_000_000);
    // Warm up.
    engine_execution(&mut state, "00000000-0000-4000-8000-000000000000", now);
    let started = Instant::now();
    let mut lifecycles = 0;
    for round in 0..rounds {
        let id = format!("00000000-0000-4000-8000-{round:012}");
        lifecycles += engine_execution(&mut state, &id, now);
    }
    let elapsed = started.elapsed();
    println!(
        "engine (pure, in memory): {lifecycles} action lifecycles in {:.1} ms: {:.1} µs per action lifecycle",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / lifecycles as f64
    );
}

/// Succeeds at once; a source leaves its (empty) output directory as the artifact.
struct Noop;

#[async_trait]
impl ActionProvider for Noop {
    async fn run(&self, _ctx: &JobContext) -> ProviderOutcome {
        ProviderOutcome::Succeeded {
            output_variables: BTreeMap::new(),
            revisions: BTreeMap::new(),
            external: Default::default(),
        }
    }
}

struct NoopProviders(Arc<dyn ActionProvider>);

impl ProviderRegistry for NoopProviders {
    fn provider_for(&self, _type_id: &ActionTypeId) -> Option<Arc<dyn ActionProvider>> {
        Some(self.0.clone())
    }
}

async fn bench_embedded(rounds: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut runner = Runner::open_with(DataDir::new(dir.path()), |_, _| {
        Arc::new(NoopProviders(Arc::new(Noop)))
    })
    .expect("runner");
    let _tasks = runner.start();
    let name = "bench";
    runner
        .control
        .create_pipeline(declaration(name, STAGES, ACTIONS_PER_STAGE), Vec::new())
        .await
        .expect("create");
    let actions_per_execution = 1 + (STAGES - 1) * ACTIONS_PER_STAGE;
    let mut times = Vec::new();
    for round in 0..=rounds {
        let mut changes = runner.changes.subscribe();
        let started = Instant::now();
        let id = runner
            .control
            .start_execution(name, StartOptions::default())
            .await
            .expect("start");
        // Wait for the execution's final pipeline event.
        loop {
            let change = tokio::time::timeout(Duration::from_secs(60), changes.recv())
                .await
                .expect("execution finishes within a minute")
                .expect("event stream");
            if change.execution_id == id
                && change.change.kind == engine::EventKind::Pipeline
                && change.change.detail["state"] != "STARTED"
            {
                break;
            }
        }
        let elapsed = started.elapsed();
        let execution = runner.control.get_execution(name, &id).await.expect("get");
        assert_eq!(execution.status, ExecutionStatus::Succeeded);
        if round > 0 {
            times.push(elapsed);
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let total: Duration = times.iter().sum();
    let mean = total / times.len() as u32;
    println!(
        "embedded default (SQLite, {STAGES} stages, {actions_per_execution} no-op actions): median {:.1} ms per execution, {:.2} ms per action lifecycle (mean {:.1} ms per execution over {} runs)",
        median.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3 / actions_per_execution as f64,
        mean.as_secs_f64() * 1e3,
        times.len()
    );
    let three = declaration("bench-three", 3, 1);
    runner
        .control
        .create_pipeline(three, Vec::new())
        .await
        .expect("create");
    let mut changes = runner.changes.subscribe();
    let started = Instant::now();
    let id = runner
        .control
        .start_execution("bench-three", StartOptions::default())
        .await
        .expect("start");
    loop {
        let change = changes.recv().await.expect("event stream");
        if change.execution_id == id
            && change.change.kind == engine::EventKind::Pipeline
            && change.change.detail["state"] != "STARTED"
        {
            break;
        }
    }
    println!(
        "embedded default: a no-op 3-stage pipeline end to end in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (engine_rounds, embedded_rounds) = if quick { (20, 3) } else { (200, 20) };
    bench_engine(engine_rounds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench_embedded(embedded_rounds));
}
