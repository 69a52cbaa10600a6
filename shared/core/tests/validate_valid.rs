//! Valid declarations: CodePipeline's reference example and a V2 pipeline using every feature
//! validation knows, accepted with their notes and round-tripped through the typed model.

use penstock_core::model::{CreatePipelineInput, ExecutionMode, PipelineType};
use penstock_core::validate::{Validated, parse_and_validate};
use serde_json::Value;

const REFERENCE: &str = include_str!("fixtures/reference.json");
const V2_FULL: &str = include_str!("fixtures/v2_full.json");

fn accept(json: &str) -> Validated {
    match parse_and_validate(json) {
        Ok(validated) => validated,
        Err(errors) => panic!(
            "expected a valid declaration, got:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn note_messages(validated: &Validated) -> Vec<String> {
    validated.notes.iter().map(ToString::to_string).collect()
}

/// Serializes the validated declaration back to the `create-pipeline` form, parses it again and
/// checks both the typed value and the JSON are unchanged.
fn assert_round_trips(original_json: &str, validated: Validated) {
    let input = validated.clone().into_create_pipeline_input();
    let serialized = serde_json::to_string_pretty(&input).unwrap();
    let again = accept(&serialized);
    assert_eq!(again.declaration, validated.declaration);
    assert_eq!(again.tags, validated.tags);

    let original: Value = serde_json::from_str(original_json).unwrap();
    let written: Value = serde_json::to_value(&input).unwrap();
    assert_eq!(written, original, "serialized JSON differs from the input");
    let _: CreatePipelineInput = serde_json::from_value(written).unwrap();
}

#[test]
fn reference_example_is_valid_with_its_notes() {
    let validated = accept(REFERENCE);
    let d = &validated.declaration;
    assert_eq!(d.name, "MyWebAppPipeline");
    assert_eq!(d.effective_pipeline_type(), PipelineType::V1);
    assert_eq!(d.effective_execution_mode(), ExecutionMode::Superseded);
    assert_eq!(d.stages.len(), 3);
    assert!(validated.tags.is_empty());
    assert_eq!(
        note_messages(&validated),
        [
            "GitHub source \"Source.SourceAction\" has no OAuthToken: Penstock uses its configured GitHub token",
            "CodeBuild action \"Build.BuildAction\" has no ProjectName: it runs on Penstock's default build environment",
            "CodeDeploy action \"Deploy.DeployAction\" (AWS/CodeDeploy) runs on AWS only: on the embedded default it fails as ProviderNotSupported when the run reaches it",
        ]
    );
    assert_round_trips(REFERENCE, validated);
}

#[test]
fn bare_declaration_is_accepted_like_the_wrapped_form() {
    let wrapped: Value = serde_json::from_str(REFERENCE).unwrap();
    let bare = serde_json::to_string(&wrapped["pipeline"]).unwrap();
    let (bare, wrapped) = (accept(&bare), accept(REFERENCE));
    assert_eq!(bare.declaration, wrapped.declaration);
    assert_eq!(note_messages(&bare), note_messages(&wrapped));
    // Paths name the declaration where it is: at the top, or under `pipeline`.
    assert_eq!(bare.notes[0].path, "stages[0].actions[0].configuration");
    assert_eq!(
        wrapped.notes[0].path,
        "pipeline.stages[0].actions[0].configuration"
    );
}

#[test]
fn get_pipeline_output_is_accepted_and_its_metadata_ignored() {
    let mut value: Value = serde_json::from_str(REFERENCE).unwrap();
    value["metadata"] = serde_json::json!({
        "pipelineArn": "arn:aws:codepipeline:eu-west-1:111111111111:MyWebAppPipeline",
        "created": "2024-05-01T10:00:00+00:00"
    });
    let validated = accept(&value.to_string());
    assert_eq!(
        validated.notes[0].to_string(),
        "metadata (from get-pipeline) is ignored"
    );
}

#[test]
fn explicit_nulls_count_as_absent() {
    let mut value: Value = serde_json::from_str(REFERENCE).unwrap();
    value["pipeline"]["executionMode"] = Value::Null;
    value["pipeline"]["stages"][1]["actions"][0]["configuration"] = Value::Null;
    assert_eq!(
        accept(&value.to_string()).declaration,
        accept(REFERENCE).declaration
    );
}

#[test]
fn v2_pipeline_with_every_feature_is_valid() {
    let validated = accept(V2_FULL);
    let d = &validated.declaration;
    assert_eq!(d.effective_pipeline_type(), PipelineType::V2);
    assert_eq!(d.effective_execution_mode(), ExecutionMode::Queued);
    assert_eq!(validated.tags.len(), 1);
    // Every action of this pipeline runs on the embedded default: nothing to note.
    assert_eq!(note_messages(&validated), Vec::<String>::new());
    assert_round_trips(V2_FULL, validated);
}
