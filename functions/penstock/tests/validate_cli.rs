//! `penstock validate` run as a real process on fixture files: exit codes and output lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/core/tests/fixtures")
        .join(name)
}

fn penstock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_penstock"))
        .args(args)
        .output()
        .expect("penstock starts")
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn valid_file_prints_summary_and_notes() {
    let file = fixture("reference.json");
    let output = penstock(&["validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        lines(&output.stdout),
        [
            "MyWebAppPipeline: valid (V1, SUPERSEDED, 3 stages, 3 actions)",
            "note: GitHub source \"Source.SourceAction\" has no OAuthToken: Penstock uses its configured GitHub token",
            "note: CodeBuild action \"Build.BuildAction\" has no ProjectName: it runs on Penstock's default build environment",
            "note: CodeDeploy action \"Deploy.DeployAction\" (AWS/CodeDeploy) runs on AWS only: on the embedded default it fails as ProviderNotSupported when the run reaches it",
        ]
    );
    assert!(output.stderr.is_empty());
}

#[test]
fn v2_file_with_global_data_dir_option() {
    let file = fixture("v2_full.json");
    let output = penstock(&[
        "--data-dir",
        "/nonexistent/state",
        "validate",
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        lines(&output.stdout)[0],
        "ReleasePipeline: valid (V2, QUEUED, 4 stages, 6 actions)"
    );
}

#[test]
fn invalid_file_prints_every_error_and_exits_2() {
    let file = fixture("invalid_several.json");
    let output = penstock(&["validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        lines(&output.stdout),
        [
            "InvalidActionDeclarationException: pipeline.stages[0].actions[0].configuration: Custom LocalGit action requires configuration key BranchName",
            "InvalidStructureException: pipeline.stages[1].actions[0].inputArtifacts[0].name: input artifact \"SourceOuput\" is not produced by any action; artifacts available here: \"SourceOutput\" from \"Source.Checkout\"",
        ]
    );
}

#[test]
fn unreadable_file_exits_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let output = penstock(&["validate", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("penstock: cannot read {}: ", missing.display())),
        "{stderr}"
    );
}

#[test]
fn syntax_error_is_one_line_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.json");
    std::fs::write(&file, "{\"pipeline\": {\n  \"name\": \"x\",,\n}}").unwrap();
    let output = penstock(&["validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let out = lines(&output.stdout);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].starts_with("ValidationException: invalid JSON at line 2, column 15: "),
        "{out:?}"
    );
}
