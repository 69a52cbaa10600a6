//! Invalid declarations, table-driven from `fixtures/invalid_cases.json`: each case must be
//! refused with exactly the listed errors (exception name and JSON path), all of them.

use penstock_core::validate::{ExceptionName, ValidationError, parse_and_validate};
use serde::Deserialize;
use serde_json::Value;

const BASE: &str = include_str!("fixtures/v2_full.json");
const CASES: &str = include_str!("fixtures/invalid_cases.json");

#[derive(Deserialize)]
struct Table {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Raw document text, used instead of an edited base.
    #[serde(default)]
    raw: Option<String>,
    /// Validate the base's bare `pipeline` instead of the wrapped form.
    #[serde(default)]
    unwrap: bool,
    /// JSON pointers removed, in order.
    #[serde(default)]
    remove: Vec<String>,
    /// JSON pointer -> new value; a missing last segment is added.
    #[serde(default)]
    set: serde_json::Map<String, Value>,
    expect: Vec<(String, String)>,
}

fn split(pointer: &str) -> (&str, String) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer has a segment");
    (parent, last.replace("~1", "/").replace("~0", "~"))
}

fn remove(doc: &mut Value, pointer: &str) {
    let (parent, key) = split(pointer);
    match doc.pointer_mut(parent) {
        Some(Value::Object(o)) => assert!(o.remove(&key).is_some(), "nothing at {pointer}"),
        Some(Value::Array(a)) => {
            a.remove(key.parse().expect("array index"));
        }
        _ => panic!("no container at {parent}"),
    }
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = split(pointer);
    match doc.pointer_mut(parent) {
        Some(Value::Object(o)) => {
            o.insert(key, value);
        }
        Some(Value::Array(a)) => {
            let index: usize = key.parse().expect("array index");
            if index == a.len() {
                a.push(value);
            } else {
                a[index] = value;
            }
        }
        _ => panic!("no container at {parent}"),
    }
}

fn document(case: &Case) -> String {
    if let Some(raw) = &case.raw {
        return raw.clone();
    }
    let mut doc: Value = serde_json::from_str(BASE).unwrap();
    if case.unwrap {
        doc = doc["pipeline"].take();
    }
    for pointer in &case.remove {
        remove(&mut doc, pointer);
    }
    for (pointer, value) in &case.set {
        set(&mut doc, pointer, value.clone());
    }
    doc.to_string()
}

fn exception_name(name: &str) -> ExceptionName {
    use ExceptionName::*;
    [
        ValidationException,
        InvalidStructureException,
        InvalidStageDeclarationException,
        InvalidActionDeclarationException,
        InvalidBlockerDeclarationException,
    ]
    .into_iter()
    .find(|e| e.as_str() == name)
    .unwrap_or_else(|| panic!("unknown exception name {name}"))
}

fn render(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_invalid_case_reports_exactly_its_errors() {
    let table: Table = serde_json::from_str(CASES).unwrap();
    assert!(table.cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &table.cases {
        let errors = match parse_and_validate(&document(case)) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.name));
                continue;
            }
            Err(errors) => errors,
        };
        let mut got: Vec<(ExceptionName, &str)> = errors
            .iter()
            .map(|e| (e.exception, e.path.as_str()))
            .collect();
        let mut expected: Vec<(ExceptionName, &str)> = case
            .expect
            .iter()
            .map(|(exception, path)| (exception_name(exception), path.as_str()))
            .collect();
        got.sort();
        expected.sort();
        if got != expected {
            failures.push(format!(
                "{}:\n expected {expected:?}\n got\n{}",
                case.name,
                render(&errors)
            ));
        }
        for error in &errors {
            assert!(
                !error.message.trim().is_empty(),
                "{}: empty message",
                case.name
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn errors_of(json: &str) -> Vec<String> {
    parse_and_validate(json)
        .expect_err("expected errors")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn syntax_error_names_line_and_column() {
    let errors = errors_of("{\n  \"pipeline\": {\n    \"name\": \"x\",\n  }\n}");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("ValidationException: invalid JSON at line 4, column 3: "),
        "{}",
        errors[0]
    );
}

#[test]
fn messages_say_what_was_expected() {
    let mut doc: Value = serde_json::from_str(BASE).unwrap();
    set(
        &mut doc,
        "/pipeline/stages/1/actions/0/runOrder",
        Value::from(0),
    );
    set(
        &mut doc,
        "/pipeline/stages/0/actions/0/outputArtifacts/0/name",
        Value::from("Source Output"),
    );
    remove(&mut doc, "/pipeline/roleArn");
    assert_eq!(
        errors_of(&doc.to_string()),
        [
            "ValidationException: pipeline.stages[0].actions[0].outputArtifacts[0].name: \"Source Output\" does not match the pattern [a-zA-Z0-9_\\-]+",
            "ValidationException: pipeline.stages[1].actions[0].runOrder: expected an integer from 1 to 999, got 0",
            "ValidationException: pipeline.roleArn: required member is missing (expected RoleArn)",
        ]
    );
}

#[test]
fn missing_input_artifact_names_the_producers() {
    let mut doc: Value = serde_json::from_str(BASE).unwrap();
    set(
        &mut doc,
        "/pipeline/stages/3/actions/0/inputArtifacts/0/name",
        Value::from("BuildOutptu"),
    );
    set(
        &mut doc,
        "/pipeline/stages/1/actions/1/runOrder",
        Value::from(1),
    );
    let errors = errors_of(&doc.to_string());
    assert!(errors.contains(&"InvalidStructureException: pipeline.stages[3].actions[0].inputArtifacts[0].name: input artifact \"BuildOutptu\" is not produced by any action; artifacts available here: \"BuildOutput\" from \"Build.Compile\", \"SourceOutput\" from \"Source.Checkout\", \"ToolsOutput\" from \"Source.Tools\"".to_owned()), "{errors:#?}");
    assert!(errors.contains(&"InvalidStructureException: pipeline.stages[1].actions[1].inputArtifacts[0].name: input artifact \"BuildOutput\" is produced by \"Build.Compile\" (runOrder 1), which does not run before this action (an earlier stage or a lower runOrder in the same stage)".to_owned()), "{errors:#?}");
}

/// A stage of `n` Manual approval actions, valid on its own.
fn approvals(name: &str, n: usize) -> Value {
    let actions: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("Approve{i}"),
                "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"}
            })
        })
        .collect();
    serde_json::json!({"name": name, "actions": actions})
}

#[test]
fn action_and_stage_limits() {
    let base: Value = serde_json::from_str(BASE).unwrap();

    let mut doc = base.clone();
    set(&mut doc, "/pipeline/stages/2", approvals("Approve", 51));
    assert_eq!(
        errors_of(&doc.to_string()),
        [
            "InvalidStageDeclarationException: pipeline.stages[2].actions: a stage needs 1 to 50 actions, got 51"
        ]
    );

    // 45 stages of 12 actions: every stage within its limit, the pipeline over 500 actions.
    let mut doc = base.clone();
    for s in 0..45 {
        set(
            &mut doc,
            &format!("/pipeline/stages/{}", 4 + s),
            approvals(&format!("Gate{s}"), 12),
        );
    }
    assert_eq!(
        errors_of(&doc.to_string()),
        [
            "InvalidStructureException: pipeline.stages: a pipeline holds at most 500 actions, got 546"
        ]
    );

    let mut doc = base;
    for s in 0..47 {
        set(
            &mut doc,
            &format!("/pipeline/stages/{}", 4 + s),
            approvals(&format!("Gate{s}"), 1),
        );
    }
    assert_eq!(
        errors_of(&doc.to_string()),
        ["InvalidStructureException: pipeline.stages: a pipeline needs 2 to 50 stages, got 51"]
    );
}
