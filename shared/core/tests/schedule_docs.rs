//! Every schedule expression the README and the examples show is one EventBridge (and
//! Penstock's local scheduler) accepts.

use std::path::{Path, PathBuf};

use penstock_core::triggers::Schedule;

/// `cron(...)` and `rate(...)` occurrences in `text` (parentheses do not nest in them).
fn expressions(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in ["cron(", "rate("] {
        let mut rest = text;
        while let Some(start) = rest.find(prefix) {
            let tail = &rest[start..];
            match tail.find(')') {
                Some(end) => {
                    found.push(tail[..=end].to_string());
                    rest = &tail[end + 1..];
                }
                None => break,
            }
        }
    }
    found
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut pending = vec![root.join("examples")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() && !name.starts_with('.') {
                pending.push(path);
            } else if name.ends_with(".json") || name.ends_with(".md") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn documented_schedules_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for file in files(&root) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for expression in expressions(&text) {
            // Placeholders explaining the syntax are not expressions.
            if expression.contains("minutes hours")
                || expression.contains("value unit")
                || expression.contains("...")
            {
                continue;
            }
            if let Err(e) = Schedule::parse(&expression) {
                panic!("{}: {e}", file.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "the README documents schedules; found {checked}"
    );
}
