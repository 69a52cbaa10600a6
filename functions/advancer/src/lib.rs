//! The advancer: applies the engine inputs that arrive as EventBridge events (trigger intake,
//! other functions), runs the sweeper when the schedule fires, and reports commit statuses to
//! GitHub from the CodePipeline-compatible state-change events of executions that build a
//! GitHub commit.
//!
//! The rules routing events here are [`event_patterns`]; infrastructure must route exactly
//! these (its template is checked against them).

use penstock_app::advance::Engine;
use penstock_app::ports::{BusMessage, ENGINE_INPUT, INTERNAL_EVENT_SOURCE};
use std::sync::Arc;

use async_trait::async_trait;
use penstock_app::ports::Clock;
use penstock_app::ports::PUBLIC_EVENT_SOURCE;
use penstock_app::repo::Claim;
use penstock_app::sweep::{ForeignClaim, SweepHooks, SweepSettings, Sweeper};
use penstock_aws::HandlerError;
use penstock_aws::bus::{decode_internal_event, is_public_event};
use penstock_core::engine::{ActionJob, EventKind};
use penstock_local::commit_status::CommitStatuses;
use serde_json::{Value, json};
use tracing::info;

/// An outbox older than this is taken as lost and published again. Well above a publish's
/// duration, so a writer still publishing is not raced.
pub const STALE_OUTBOX_MS: i64 = 30_000;
/// An in-progress attempt unclaimed this long is scheduled again (EventBridge retries its own
/// deliveries for up to a day, so this only catches publishes that never happened).
pub const UNCLAIMED_ATTEMPT_MS: i64 = 60_000;
/// How long a dispatcher may hold a claim without reporting: Lambda ends every invocation
/// within 15 minutes, so a claim older than that plus a margin belongs to an invocation that is
/// gone (timed out, out of memory, crashed).
pub const DISPATCH_LEASE_MS: i64 = (15 * 60 + 60) * 1000;
/// Overrides [`DISPATCH_LEASE_MS`] in seconds (never below the dispatcher's own timeout).
pub const DISPATCH_LEASE_VAR: &str = "PENSTOCK_DISPATCH_LEASE_SECONDS";

/// The lease from the environment, or the default.
pub fn dispatch_lease_from_env() -> i64 {
    std::env::var(DISPATCH_LEASE_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|seconds| *seconds > 0)
        .map_or(DISPATCH_LEASE_MS, |seconds| seconds.saturating_mul(1000))
}

/// Claims on AWS: a claim younger than the lease may still be running in another function
/// instance, so the sweep waits; an older one was left by an invocation that no longer runs,
/// so its attempt is failed as interrupted and the action retried as a new attempt.
pub struct ClaimLease {
    pub clock: Arc<dyn Clock>,
    pub lease_ms: i64,
}

#[async_trait]
impl SweepHooks for ClaimLease {
    async fn foreign_claim(&self, job: &ActionJob, claim: &Claim) -> ForeignClaim {
        let held = self.clock.now().0 - claim.claimed_at.0;
        if held > self.lease_ms {
            tracing::warn!(
                pipeline = %job.pipeline_name,
                action = %job.action,
                attempt = job.attempt,
                owner = %claim.owner,
                held_ms = held,
                "a claim outlived its lease; the attempt is interrupted"
            );
            ForeignClaim::Interrupted
        } else {
            ForeignClaim::Wait
        }
    }
}

/// The claim owner name of the sweeper (it claims nothing; every claim is foreign to it).
pub const SWEEPER_OWNER: &str = "sweeper";

/// The sweep schedule's event, as EventBridge Scheduler sends it (the input the
/// infrastructure template sets on the schedule).
pub const SWEEP_SOURCE: &str = "penstock.scheduler";
pub const SWEEP_DETAIL_TYPE: &str = "Penstock Sweep";
/// The sweep schedule's event when it comes from an EventBridge scheduled rule instead.
pub const SCHEDULED_RULE_SOURCE: &str = "aws.events";
pub const SCHEDULED_RULE_DETAIL_TYPE: &str = "Scheduled Event";

/// The event patterns of the rules that target the advancer, by rule role: engine inputs, and
/// the state changes commit statuses follow (an execution's start, resumption and end, and a
/// source action's success, which names the commit of an execution started without one).
pub fn event_patterns() -> Vec<(&'static str, Value)> {
    vec![
        (
            "EngineInputs",
            json!({ "source": [INTERNAL_EVENT_SOURCE], "detail-type": [ENGINE_INPUT] }),
        ),
        (
            "ExecutionStateChanges",
            json!({
                "source": [PUBLIC_EVENT_SOURCE],
                "detail-type": [EventKind::Pipeline.detail_type()],
                "detail": {"state": ["STARTED", "RESUMED", "SUCCEEDED", "FAILED", "STOPPED", "SUPERSEDED", "CANCELED"]},
            }),
        ),
        (
            "SourceActionSucceeded",
            json!({
                "source": [PUBLIC_EVENT_SOURCE],
                "detail-type": [EventKind::Action.detail_type()],
                "detail": {"state": ["SUCCEEDED"], "type": {"category": ["Source"]}},
            }),
        ),
    ]
}

/// The advancer's use cases.
#[derive(Clone)]
pub struct Advancer {
    pub engine: Engine,
    pub sweeper: Sweeper,
    /// How long dispatch claims are held before the sweep takes their owner as gone.
    pub lease_ms: i64,
    /// Reports commit statuses to GitHub; `None` (no token configured) ignores state changes.
    pub commit_statuses: Option<CommitStatuses>,
}

impl Advancer {
    pub fn new(
        engine: Engine,
        providers: Option<std::sync::Arc<dyn penstock_app::ports::ProviderRegistry>>,
    ) -> Self {
        let sweeper = Sweeper {
            engine: engine.clone(),
            owner: SWEEPER_OWNER.to_string(),
            providers,
            settings: SweepSettings {
                stale_outbox_ms: STALE_OUTBOX_MS,
                unclaimed_attempt_ms: UNCLAIMED_ATTEMPT_MS,
            },
        };
        Self {
            engine,
            sweeper,
            lease_ms: DISPATCH_LEASE_MS,
            commit_statuses: None,
        }
    }

    /// Handle one invocation: a direct EventBridge event or an SQS batch of them.
    pub async fn handle(&self, payload: Value) -> Result<Value, HandlerError> {
        penstock_aws::handler::for_each_event(payload, |event| self.handle_event(event)).await
    }

    /// Handle one EventBridge event.
    pub async fn handle_event(&self, event: Value) -> Result<Value, HandlerError> {
        if is_schedule(&event) {
            return self.sweep().await;
        }
        if is_public_event(&event) {
            return Ok(self.report_commit_status(&event).await);
        }
        let envelope =
            decode_internal_event(&event).map_err(|e| HandlerError::rejected(e.to_string()))?;
        match envelope.message {
            BusMessage::EngineInput { pipeline, input } => {
                let applied = self.engine.apply(&pipeline, input).await?;
                info!(pipeline, event_id = %envelope.id, effects = applied.effects.len(), "engine input applied");
                Ok(json!({ "effects": applied.effects.len(), "version": applied.version }))
            }
            other => Err(HandlerError::rejected(format!(
                "the advancer does not handle {} events",
                other.detail_type()
            ))),
        }
    }

    /// Report the commit statuses a state-change event calls for. Statuses are informative: a
    /// malformed event, an unreadable execution or a refused post is logged and the event
    /// counts as handled, so it never fails the invocation nor holds up anything else.
    pub async fn report_commit_status(&self, event: &Value) -> Value {
        let Some(statuses) = &self.commit_statuses else {
            return json!({ "commitStatuses": "off" });
        };
        let detail_type = event.get("detail-type").and_then(Value::as_str);
        let kind = [EventKind::Pipeline, EventKind::Stage, EventKind::Action]
            .into_iter()
            .find(|kind| Some(kind.detail_type()) == detail_type);
        let detail = event.get("detail").unwrap_or(&Value::Null);
        let field = |name: &str| detail.get(name).and_then(Value::as_str);
        let (Some(kind), Some(pipeline), Some(execution_id)) =
            (kind, field("pipeline"), field("execution-id"))
        else {
            tracing::warn!(
                detail_type,
                "a state-change event without its type, pipeline or execution id"
            );
            return json!({ "commitStatuses": "ignored" });
        };
        let reported = statuses.report(pipeline, execution_id, kind, detail).await;
        if reported.posted + reported.failed + reported.outdated > 0 {
            info!(
                pipeline,
                execution_id,
                ?reported,
                "commit statuses reported"
            );
        }
        json!({
            "commitStatuses": {
                "posted": reported.posted,
                "failed": reported.failed,
                "outdated": reported.outdated,
            }
        })
    }

    /// Run one sweep. Pipelines that could not be swept make the invocation fail as
    /// retryable, so the failure shows in metrics; the next schedule sweeps again anyway.
    pub async fn sweep(&self) -> Result<Value, HandlerError> {
        let hooks = ClaimLease {
            clock: self.engine.clock.clone(),
            lease_ms: self.lease_ms,
        };
        let report = self.sweeper.sweep(false, &hooks).await?;
        info!(?report, "swept");
        if report.failed > 0 {
            return Err(HandlerError::transient(format!(
                "{} of {} pipelines could not be swept",
                report.failed, report.pipelines
            )));
        }
        Ok(json!({
            "pipelines": report.pipelines,
            "republishedOutboxes": report.republished_outboxes,
            "timedOut": report.timed_out,
            "rescheduled": report.rescheduled,
            "interrupted": report.interrupted,
            "polledFinished": report.polled_finished,
        }))
    }
}

/// Whether the event is the sweeper's schedule firing.
pub fn is_schedule(event: &Value) -> bool {
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    matches!(
        (field("source"), field("detail-type")),
        (Some(SWEEP_SOURCE), Some(SWEEP_DETAIL_TYPE))
            | (
                Some(SCHEDULED_RULE_SOURCE),
                Some(SCHEDULED_RULE_DETAIL_TYPE)
            )
    )
}
