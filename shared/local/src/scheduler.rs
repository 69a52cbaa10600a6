//! Schedules on the embedded default: `penstock serve` starts pipelines tagged
//! `penstock:schedule` = `rate(...)` or `cron(...)` (EventBridge's syntax, UTC), as an
//! EventBridge schedule rule would on AWS.
//!
//! A rate counts from when the runner first saw the schedule; firings missed while no runner
//! was up are not made up for (EventBridge does not replay them either). Each firing starts with
//! a token derived from the pipeline, the expression and the firing time, so a firing is
//! started at most once.

use std::collections::BTreeMap;
use std::time::Duration;

use penstock_app::error::AppError;
use penstock_app::intake::{Intake, IntakeReport};
use penstock_core::engine::Timestamp;
use penstock_core::triggers::{SCHEDULE_TAG, Schedule};
use tracing::{info, warn};

/// How often the tags are read again when nothing is due sooner.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

struct Entry {
    schedule: Schedule,
    anchor: Timestamp,
    next: Option<Timestamp>,
}

/// The local scheduler: which pipelines are scheduled, and when each fires next.
pub struct LocalScheduler {
    intake: Intake,
    entries: BTreeMap<String, Entry>,
    /// Expressions already reported as invalid, by pipeline (reported once, not every tick).
    invalid: BTreeMap<String, String>,
}

impl LocalScheduler {
    pub fn new(intake: Intake) -> Self {
        Self {
            intake,
            entries: BTreeMap::new(),
            invalid: BTreeMap::new(),
        }
    }

    /// Read the pipelines' schedule tags: new schedules start counting at `now`, changed ones
    /// start again, removed ones go.
    async fn refresh(&mut self, now: Timestamp) -> Result<(), AppError> {
        let mut seen = BTreeMap::new();
        let mut after = None;
        loop {
            let (page, next) = self
                .intake
                .control()
                .engine
                .repo
                .list_pipelines(after, 100)
                .await?;
            for record in page {
                if let Some(tag) = record.tags.iter().find(|t| t.key == SCHEDULE_TAG) {
                    seen.insert(record.declaration.name.clone(), tag.value.clone());
                }
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        self.entries.retain(|name, _| seen.contains_key(name));
        self.invalid.retain(|name, _| seen.contains_key(name));
        for (name, expression) in seen {
            if self
                .entries
                .get(&name)
                .is_some_and(|e| e.schedule.expression() == expression.trim())
            {
                continue;
            }
            match Schedule::parse(&expression) {
                Ok(schedule) => {
                    let next = schedule.next_after(now, now);
                    info!(pipeline = %name, schedule = %expression, "pipeline scheduled");
                    self.invalid.remove(&name);
                    self.entries.insert(
                        name,
                        Entry {
                            schedule,
                            anchor: now,
                            next,
                        },
                    );
                }
                Err(e) => {
                    self.entries.remove(&name);
                    if self.invalid.get(&name) != Some(&expression) {
                        warn!(pipeline = %name, error = %e, "the {SCHEDULE_TAG} tag is not a valid schedule; not scheduled");
                        self.invalid.insert(name, expression);
                    }
                }
            }
        }
        Ok(())
    }

    /// Bring the schedules up to date and start every pipeline whose firing time has come
    /// (once, however many firings were missed). Returns what was started.
    pub async fn tick(&mut self, now: Timestamp) -> Result<Vec<IntakeReport>, AppError> {
        self.refresh(now).await?;
        let mut reports = Vec::new();
        for (name, entry) in &mut self.entries {
            let Some(due) = entry.next.filter(|due| *due <= now) else {
                continue;
            };
            entry.next = entry.schedule.next_after(now, entry.anchor);
            match self
                .intake
                .start_scheduled(name, entry.schedule.expression(), due)
                .await
            {
                Ok(report) => reports.push(report),
                Err(e) => warn!(pipeline = %name, error = %e, "a scheduled start failed"),
            }
        }
        Ok(reports)
    }

    /// When the next firing is due, if any.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.entries.values().filter_map(|e| e.next).min()
    }

    /// Run until the task is aborted: tick, then wait for the next firing (or the next refresh
    /// of the tags, whichever comes first).
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let now = self.intake.control().engine.clock.now();
                if let Err(e) = self.tick(now).await {
                    warn!(error = %e, "reading schedules failed; trying again");
                }
                let now = self.intake.control().engine.clock.now();
                let wait = self
                    .next_due()
                    .map(|due| Duration::from_millis(u64::try_from(due.0 - now.0).unwrap_or(0)))
                    .unwrap_or(REFRESH_EVERY)
                    .min(REFRESH_EVERY);
                tokio::time::sleep(wait).await;
            }
        })
    }
}
