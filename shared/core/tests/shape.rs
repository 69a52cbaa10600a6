//! The model-driven shape validator on operation inputs other than the pipeline declaration,
//! and the embedded service model's own consistency.

use penstock_core::shape::{
    ShapeType, ViolationKind, codepipeline, operation_input_shapes, validate_shape,
};
use serde_json::{Value, json};

fn violations(shape: &str, value: Value) -> Vec<(String, ViolationKind)> {
    validate_shape(shape, &value, "")
        .unwrap()
        .into_iter()
        .map(|v| (v.path, v.kind))
        .collect()
}

#[test]
fn every_shape_reference_in_the_model_resolves() {
    let model = codepipeline();
    let mut dangling = Vec::new();
    for (name, shape) in &model.shapes {
        let mut targets: Vec<&str> = shape
            .members
            .keys()
            .filter_map(|m| shape.member_shape(m))
            .collect();
        targets.extend(
            [&shape.member, &shape.key, &shape.value]
                .into_iter()
                .flatten()
                .map(|r| r.shape.as_str()),
        );
        if shape.members.len()
            != shape
                .members
                .keys()
                .filter_map(|m| shape.member_shape(m))
                .count()
        {
            dangling.push(format!("{name}: a member without a shape"));
        }
        dangling.extend(
            targets
                .into_iter()
                .filter(|t| model.shape(t).is_none())
                .map(|t| format!("{name} -> {t}")),
        );
    }
    for operation in model.operations.values() {
        let shapes = operation
            .input_shape()
            .into_iter()
            .chain(operation.output_shape())
            .chain(operation.error_shapes());
        dangling.extend(
            shapes
                .filter(|s| model.shape(s).is_none())
                .map(|s| format!("{} -> {s}", operation.name)),
        );
    }
    assert!(dangling.is_empty(), "{dangling:#?}");
    // Every pattern of this model compiles, so no pattern check is silently skipped.
    assert_eq!(model.skipped_patterns(), Vec::<&str>::new());
    assert_eq!(model.metadata.target_prefix, "CodePipeline_20150709");
    assert_eq!(model.metadata.json_version, "1.1");
}

#[test]
fn operations_list_their_input_shapes() {
    let inputs: Vec<_> = operation_input_shapes().collect();
    assert!(inputs.contains(&("CreatePipeline", Some("CreatePipelineInput"))));
    assert!(inputs.contains(&(
        "StartPipelineExecution",
        Some("StartPipelineExecutionInput")
    )));
    assert!(inputs.contains(&("PutApprovalResult", Some("PutApprovalResultInput"))));
    assert_eq!(inputs.len(), codepipeline().operations.len());
    let create = codepipeline().operation("CreatePipeline").unwrap();
    assert!(
        create
            .error_shapes()
            .any(|e| e == "InvalidStructureException")
    );
    assert!(codepipeline().is_exception("ValidationException"));
    assert!(!codepipeline().is_exception("PipelineDeclaration"));
}

#[test]
fn unknown_shape_is_an_error_not_a_violation() {
    assert!(validate_shape("NoSuchShape", &json!({}), "").is_err());
}

#[test]
fn start_pipeline_execution_input() {
    assert!(violations(
        "StartPipelineExecutionInput",
        json!({
            "name": "web",
            "variables": [{"name": "Env", "value": "prod"}],
            "clientRequestToken": "a-b-c",
            "sourceRevisions": [{"actionName": "Source", "revisionType": "COMMIT_ID", "revisionValue": "abc"}]
        })
    )
    .is_empty());
    assert_eq!(
        violations(
            "StartPipelineExecutionInput",
            json!({
                "variables": [],
                "clientRequestToken": "not a token!",
                "sourceRevisions": [{"actionName": "Source", "revisionType": "BRANCH", "revisionValue": "x"}],
                "extra": 1
            })
        ),
        [
            ("variables".to_owned(), ViolationKind::Length),
            ("clientRequestToken".to_owned(), ViolationKind::Pattern),
            (
                "sourceRevisions[0].revisionType".to_owned(),
                ViolationKind::NotInEnum
            ),
            ("extra".to_owned(), ViolationKind::UnknownMember),
            ("name".to_owned(), ViolationKind::MissingRequired),
        ]
    );
}

#[test]
fn scalar_types_are_checked() {
    // maxResults is an integer, filter.succeededInStage a structure.
    assert_eq!(
        violations(
            "ListPipelineExecutionsInput",
            json!({"pipelineName": "p", "maxResults": 1.5})
        ),
        [("maxResults".to_owned(), ViolationKind::WrongType)]
    );
    assert_eq!(
        violations(
            "ListPipelineExecutionsInput",
            json!({"pipelineName": "p", "maxResults": 101})
        ),
        [("maxResults".to_owned(), ViolationKind::Range)]
    );
    // ApprovalResult.status is an enum; the token a UUID pattern.
    assert_eq!(
        violations(
            "PutApprovalResultInput",
            json!({
                "pipelineName": "p", "stageName": "s", "actionName": "a",
                "result": {"summary": "ok", "status": "Maybe"},
                "token": "1f2e3d4c-0000-4000-8000-123456789abc"
            })
        ),
        [("result.status".to_owned(), ViolationKind::NotInEnum)]
    );
    // Booleans and timestamps (epoch seconds in awsJson1_1) live in the model's shapes too.
    let model = codepipeline();
    let boolean = model
        .shapes
        .iter()
        .find(|(_, s)| s.shape_type == ShapeType::Boolean)
        .map(|(n, _)| n.as_str())
        .unwrap();
    assert!(violations(boolean, json!(true)).is_empty());
    assert_eq!(
        violations(boolean, json!("true")),
        [(String::new(), ViolationKind::WrongType)]
    );
    assert!(violations("Timestamp", json!(1_700_000_000.5)).is_empty());
    assert_eq!(
        violations("Timestamp", json!("2024-01-01")),
        [(String::new(), ViolationKind::WrongType)]
    );
}

#[test]
fn map_keys_and_values_get_their_own_paths() {
    let v = validate_shape(
        "ActionConfigurationMap",
        &json!({"": "x", "Good": "", "has space": "ok"}),
        "configuration",
    )
    .unwrap();
    let rendered: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "configuration[\"\"]: key expected 1 to 50 characters, got 0",
            "configuration.Good: expected 1 to 1000 characters, got 0",
        ]
    );
}
