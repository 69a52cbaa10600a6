//! Live progress of an execution on a terminal: one line per stage or action change, and a
//! summary table at the end with states, durations and the failing action's log tail.

use std::collections::BTreeMap;
use std::io::Write;

use penstock_core::engine::{ActionStatus, Execution, StageStatus, Timestamp};

/// Remembers what was last printed, so each change is printed once.
#[derive(Default)]
pub struct Progress {
    stages: BTreeMap<String, Option<StageStatus>>,
    actions: BTreeMap<(String, String), (ActionStatus, u32)>,
    waiting_printed: Option<usize>,
}

fn seconds(from: Option<Timestamp>, to: Option<Timestamp>) -> String {
    match (from, to) {
        (Some(a), Some(b)) if b.0 >= a.0 => format!("{:.1}s", (b.0 - a.0) as f64 / 1000.0),
        _ => String::new(),
    }
}

impl Progress {
    /// Print what changed since the last call.
    pub fn update(&mut self, execution: &Execution, out: &mut impl Write) {
        let elapsed = |t: Option<Timestamp>| {
            t.map(|t| format!("{:>6.1}s", (t.0 - execution.start_time.0) as f64 / 1000.0))
                .unwrap_or_else(|| "       ".into())
        };
        if let penstock_core::engine::Position::Waiting { stage } = execution.position
            && self.waiting_printed != Some(stage)
        {
            self.waiting_printed = Some(stage);
            let name = execution
                .stages
                .get(stage)
                .map(|s| s.name.as_str())
                .unwrap_or("?");
            let _ = writeln!(
                out,
                "        waiting to enter stage {name} (stage busy or transition disabled)"
            );
        }
        for stage in &execution.stages {
            let previous = self.stages.get(&stage.name).copied().flatten();
            let mut stage_line = None;
            if stage.status != previous {
                if let Some(status) = stage.status {
                    stage_line = Some(format!(
                        "{} stage  {:<24} {:?}",
                        elapsed(stage.updated_at.or(stage.entered_at)),
                        stage.name,
                        status
                    ));
                }
                self.stages.insert(stage.name.clone(), stage.status);
            }
            // A stage that starts is shown before its actions; one that ends, after them.
            let entering = stage.status == Some(StageStatus::InProgress);
            if entering && let Some(line) = stage_line.take() {
                let _ = writeln!(out, "{line}");
            }
            for action in &stage.actions {
                let key = (stage.name.clone(), action.name.clone());
                let now = (action.status, action.attempt);
                if self.actions.get(&key) == Some(&now) || action.status == ActionStatus::NotStarted
                {
                    continue;
                }
                self.actions.insert(key, now);
                let label = format!("{}.{}", stage.name, action.name);
                let duration = match action.status {
                    ActionStatus::InProgress => String::new(),
                    _ => seconds(action.started_at, action.updated_at),
                };
                let attempt = if action.attempt > 1 {
                    format!(" (attempt {})", action.attempt)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{} action {:<24} {:?}{attempt} {duration}",
                    elapsed(action.updated_at.or(action.started_at)),
                    label,
                    action.status
                );
                if action.status == ActionStatus::Failed
                    && let Some(error) = &action.error
                {
                    let _ = writeln!(
                        out,
                        "        {}: {}",
                        error.code,
                        first_line(&error.message)
                    );
                }
            }
            if let Some(line) = stage_line {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The end-of-run table, and the log tail of every failed action.
pub fn summary(execution: &Execution, out: &mut impl Write) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Execution {} of {}: {:?}",
        execution.id, execution.pipeline_name, execution.status
    );
    for stage in &execution.stages {
        let status = stage
            .status
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| "Didn't run".into());
        let _ = writeln!(out, "  {:<28} {}", stage.name, status);
        for action in &stage.actions {
            let status = match action.status {
                ActionStatus::NotStarted => "Didn't run".to_string(),
                other => format!("{other:?}"),
            };
            let _ = writeln!(
                out,
                "    {:<26} {:<12} {}",
                action.name,
                status,
                seconds(action.started_at, action.updated_at)
            );
        }
    }
    for stage in &execution.stages {
        for action in &stage.actions {
            if action.status != ActionStatus::Failed {
                continue;
            }
            if let Some(error) = &action.error {
                let _ = writeln!(out);
                let _ = writeln!(
                    out,
                    "{}.{} failed ({}):",
                    stage.name, action.name, error.code
                );
                for line in error.message.lines() {
                    let _ = writeln!(out, "  | {line}");
                }
            }
        }
    }
    if let Some(summary) = &execution.status_summary {
        let _ = writeln!(out, "{summary}");
    }
    let _ = out.flush();
}
