//! The local buildspec runner with real shells, real files and real processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use penstock_local::archive::{ExtractLimits, extract_zip};
use penstock_local::buildspec::{
    BuildOutcome, BuildRequest, BuildSpec, BuildSpecError, BuildStatus, PhaseName, PhaseStatus,
    load_buildspec, run_build,
};

struct Fixture {
    _temp: tempfile::TempDir,
    source: PathBuf,
    work: PathBuf,
}

fn fixture() -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("src");
    let work = temp.path().join("work");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("input.txt"), "from source\n").unwrap();
    Fixture {
        _temp: temp,
        source,
        work,
    }
}

fn request(fixture: &Fixture) -> BuildRequest {
    BuildRequest {
        work_dir: fixture.work.clone(),
        primary_source_dir: fixture.source.clone(),
        secondary_sources: Vec::new(),
        variables: Vec::new(),
        build_id: "local-project:build-1".to_string(),
        build_number: 7,
        build_arn: "arn:aws:codebuild:local:000000000000:build/local-project:build-1".to_string(),
        initiator: "codepipeline/my-pipeline".to_string(),
        resolved_source_version: "abc123".to_string(),
        timeout: Duration::from_secs(60),
    }
}

async fn run(yaml: &str, request: &BuildRequest) -> BuildOutcome {
    let spec = BuildSpec::parse(yaml).unwrap();
    run_build(&spec, request, std::future::pending())
        .await
        .unwrap()
}

fn log(outcome: &BuildOutcome) -> String {
    fs::read_to_string(&outcome.log_path).unwrap()
}

fn phase_status(outcome: &BuildOutcome, phase: PhaseName) -> Option<PhaseStatus> {
    outcome
        .phases
        .iter()
        .find(|report| report.phase == phase)
        .map(|report| report.status)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            entry
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn success_collects_artifacts() {
    let fixture = fixture();
    let yaml = r#"
version: 0.2
phases:
  build:
    commands:
      - mkdir -p out/sub
      - cp input.txt out/a.txt
      - echo b > out/sub/b.txt
      - echo noise > out/debug.log
artifacts:
  files:
    - '**/*'
  base-directory: out
  exclude-paths:
    - '**/*.log'
  name: app
  secondary-artifacts:
    flat:
      files:
        - 'out/**/*'
      discard-paths: yes
"#;
    let outcome = run(yaml, &request(&fixture)).await;
    assert!(outcome.succeeded(), "{}", log(&outcome));
    assert_eq!(
        phase_status(&outcome, PhaseName::Build),
        Some(PhaseStatus::Succeeded)
    );

    let primary = &outcome.artifacts[0];
    assert_eq!(primary.identifier, None);
    assert_eq!(primary.name.as_deref(), Some("app"));
    assert_eq!(files_under(&primary.dir), vec!["a.txt", "sub/b.txt"]);
    let extracted = fixture.work.join("extracted");
    extract_zip(&primary.zip, &extracted, &ExtractLimits::default()).unwrap();
    assert_eq!(
        fs::read_to_string(extracted.join("a.txt")).unwrap(),
        "from source\n"
    );
    assert_eq!(
        fs::read_to_string(extracted.join("sub/b.txt")).unwrap(),
        "b\n"
    );

    let flat = &outcome.artifacts[1];
    assert_eq!(flat.identifier.as_deref(), Some("flat"));
    assert_eq!(files_under(&flat.dir), vec!["a.txt", "b.txt", "debug.log"]);

    let text = log(&outcome);
    assert!(text.contains("Entering phase BUILD"), "{text}");
    assert!(text.contains("Running command mkdir -p out/sub"), "{text}");
    assert!(
        text.contains("Phase complete: BUILD State: SUCCEEDED"),
        "{text}"
    );
}

#[tokio::test]
async fn state_persists_across_commands_and_phases() {
    let fixture = fixture();
    assert!(std::env::var_os("PATH").is_some());
    let yaml = r#"
version: 0.2
env:
  variables:
    FROM_SPEC: spec
    OVERRIDDEN: spec
    NUMBER: 42
  exported-variables:
    - WHERE
    - FOO
    - PLAIN
    - FROM_SPEC
    - OVERRIDDEN
    - NUMBER
    - BUILD_ID
    - LEAKED
    - NEVER_SET
phases:
  install:
    commands:
      - cd sub
      - export FOO=bar
      - PLAIN="not exported"
  build:
    commands:
      - WHERE=$(pwd)
      - BUILD_ID="$CODEBUILD_BUILD_ID"
      - LEAKED="${CARGO_MANIFEST_DIR-absent}${RUST_TEST_THREADS-}"
"#;
    let mut request = request(&fixture);
    request.variables = vec![("OVERRIDDEN".to_string(), "caller".to_string())];
    let outcome = run(yaml, &request).await;
    assert!(outcome.succeeded(), "{}", log(&outcome));
    let vars = &outcome.exported_variables;
    assert_eq!(vars["WHERE"], fixture.source.join("sub").to_string_lossy());
    assert_eq!(vars["FOO"], "bar");
    assert_eq!(vars["PLAIN"], "not exported");
    assert_eq!(vars["FROM_SPEC"], "spec");
    assert_eq!(vars["OVERRIDDEN"], "caller");
    assert_eq!(vars["NUMBER"], "42");
    assert_eq!(vars["BUILD_ID"], "local-project:build-1");
    assert_eq!(vars["LEAKED"], "absent");
    assert!(!vars.contains_key("NEVER_SET"));
}

#[tokio::test]
async fn build_failure_runs_finally_and_post_build() {
    let fixture = fixture();
    let yaml = r#"
version: 0.2
phases:
  pre_build:
    commands:
      - echo pre
  build:
    commands:
      - echo before-failure
      - 'echo "boom: the compiler broke" >&2 && false'
      - echo never-printed
    finally:
      - echo build-finally
  post_build:
    commands:
      - echo "succeeding=$CODEBUILD_BUILD_SUCCEEDING"
"#;
    let outcome = run(yaml, &request(&fixture)).await;
    assert_eq!(
        outcome.status,
        BuildStatus::Failed {
            phase: Some(PhaseName::Build)
        }
    );
    assert_eq!(
        phase_status(&outcome, PhaseName::PreBuild),
        Some(PhaseStatus::Succeeded)
    );
    assert_eq!(
        phase_status(&outcome, PhaseName::Build),
        Some(PhaseStatus::Failed)
    );
    assert_eq!(
        phase_status(&outcome, PhaseName::PostBuild),
        Some(PhaseStatus::Succeeded)
    );
    let text = log(&outcome);
    assert!(text.contains("before-failure"), "{text}");
    assert!(!text.contains("never-printed\n"), "{text}");
    assert!(text.contains("build-finally"), "{text}");
    assert!(text.contains("succeeding=0"), "{text}");

    // The failing command's output sits right before the failure report in the tail.
    let tail = outcome.log_tail(12).unwrap();
    assert!(tail.contains("boom: the compiler broke"), "{tail}");
    assert!(tail.contains("Error while executing command: echo \"boom: the compiler broke\" >&2 && false. Reason: exit status 1"), "{tail}");
    assert!(tail.lines().count() <= 12);
}

#[tokio::test]
async fn install_failure_skips_everything_and_continue_carries_on() {
    let fixture = fixture();
    let yaml = r#"
version: 0.2
phases:
  install:
    commands:
      - exit 3
  build:
    commands:
      - echo should-not-run
  post_build:
    commands:
      - echo should-not-run-either
artifacts:
  files: ['**/*']
"#;
    let outcome = run(yaml, &request(&fixture)).await;
    assert_eq!(
        outcome.status,
        BuildStatus::Failed {
            phase: Some(PhaseName::Install)
        }
    );
    assert_eq!(
        phase_status(&outcome, PhaseName::Build),
        Some(PhaseStatus::Skipped)
    );
    assert_eq!(
        phase_status(&outcome, PhaseName::PostBuild),
        Some(PhaseStatus::Skipped)
    );
    assert!(outcome.artifacts.is_empty());
    assert!(!log(&outcome).contains("should-not-run"));

    let fixture = self::fixture();
    let yaml = r#"
version: 0.2
phases:
  pre_build:
    on-failure: CONTINUE
    commands:
      - "false"
  build:
    commands:
      - echo "built anyway, succeeding=$CODEBUILD_BUILD_SUCCEEDING"
"#;
    let outcome = run(yaml, &request(&fixture)).await;
    assert_eq!(
        outcome.status,
        BuildStatus::Failed {
            phase: Some(PhaseName::PreBuild)
        }
    );
    assert_eq!(
        phase_status(&outcome, PhaseName::Build),
        Some(PhaseStatus::Succeeded)
    );
    assert!(log(&outcome).contains("built anyway, succeeding=1"));
}

#[tokio::test]
async fn shell_exit_fails_the_phase_and_post_build_gets_a_fresh_shell() {
    let fixture = fixture();
    let yaml = r#"
version: 0.2
phases:
  build:
    commands:
      - export GONE=yes
      - exit 4
  post_build:
    commands:
      - echo "gone=${GONE-unset} succeeding=$CODEBUILD_BUILD_SUCCEEDING"
"#;
    let outcome = run(yaml, &request(&fixture)).await;
    assert_eq!(
        outcome.status,
        BuildStatus::Failed {
            phase: Some(PhaseName::Build)
        }
    );
    let text = log(&outcome);
    assert!(text.contains("Reason: exit status 4"), "{text}");
    assert!(text.contains("gone=unset succeeding=0"), "{text}");
}

#[tokio::test]
async fn no_matching_artifacts_fails_the_build() {
    let fixture = fixture();
    let yaml = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ok\nartifacts:\n  files:\n    - 'dist/**/*'\n";
    let outcome = run(yaml, &request(&fixture)).await;
    assert_eq!(outcome.status, BuildStatus::Failed { phase: None });
    assert!(log(&outcome).contains("no matching artifact paths"));
}

#[tokio::test]
async fn timeout_kills_the_build() {
    let fixture = fixture();
    let yaml = r#"
version: 0.2
phases:
  build:
    commands:
      - echo started
      - sleep 60
  post_build:
    commands:
      - echo not-after-timeout
"#;
    let mut request = request(&fixture);
    request.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = run(yaml, &request).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(outcome.status, BuildStatus::TimedOut);
    let text = log(&outcome);
    assert!(text.contains("started"), "{text}");
    assert!(text.contains("Build timed out"), "{text}");
    assert!(!text.contains("not-after-timeout"), "{text}");
}

#[tokio::test]
async fn cancellation_kills_the_build() {
    let fixture = fixture();
    let spec = BuildSpec::parse(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - touch started && sleep 60\n",
    )
    .unwrap();
    let request = request(&fixture);
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let marker = fixture.source.join("started");
    let build = tokio::spawn(async move {
        run_build(&spec, &request, async move {
            let _ = cancel_rx.await;
        })
        .await
    });
    // Cancel once the command is visibly running.
    let watcher = tokio::task::spawn_blocking(move || {
        while !marker.exists() {
            std::thread::yield_now();
        }
    });
    tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .unwrap()
        .unwrap();
    cancel_tx.send(()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), build)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(outcome.status, BuildStatus::Cancelled);
}

#[test]
fn parse_errors_name_the_key_path() {
    let err =
        BuildSpec::parse("version: 0.2\nphases:\n  build:\n    commands:\n      - echo: hi\n")
            .unwrap_err();
    match err {
        BuildSpecError::Invalid { path, .. } => assert_eq!(path, "phases.build.commands[0]"),
        other => panic!("unexpected {other:?}"),
    }
    let err = BuildSpec::parse("version: 0.2\nenv:\n  variables: [a, b]\n").unwrap_err();
    assert!(
        matches!(err, BuildSpecError::Invalid { ref path, .. } if path == "env.variables"),
        "{err}"
    );
    let err = BuildSpec::parse("version: 0.2\nphases:\n  build:\n    on-failure: SOMETIMES\n")
        .unwrap_err();
    assert!(
        matches!(err, BuildSpecError::Invalid { ref path, .. } if path == "phases.build.on-failure"),
        "{err}"
    );

    assert!(matches!(
        BuildSpec::parse("version: 0.1\n"),
        Err(BuildSpecError::UnsupportedVersion(_))
    ));
    assert!(matches!(
        BuildSpec::parse("version: 0.2\nenv:\n  secrets-manager:\n    TOKEN: arn:x\n"),
        Err(BuildSpecError::Unsupported("env.secrets-manager"))
    ));
    // Unknown keys are tolerated, a single string is accepted for files.
    let spec = BuildSpec::parse(
        "version: 0.2\nreports: {}\ncache:\n  paths: []\nartifacts:\n  files: out/app.zip\n",
    )
    .unwrap();
    assert_eq!(
        spec.artifacts.unwrap().files.0,
        vec!["out/app.zip".to_string()]
    );
}

#[test]
fn buildspec_is_found_like_codebuild_finds_it() {
    let fixture = fixture();
    let inline = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo inline\n";
    let spec = load_buildspec(Some(inline), &fixture.source).unwrap();
    assert_eq!(
        spec.phases.build.unwrap().commands,
        vec!["echo inline".to_string()]
    );

    assert!(matches!(
        load_buildspec(None, &fixture.source),
        Err(BuildSpecError::NotFound { .. })
    ));
    fs::write(
        fixture.source.join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo default]\n",
    )
    .unwrap();
    let spec = load_buildspec(None, &fixture.source).unwrap();
    assert_eq!(
        spec.phases.build.unwrap().commands,
        vec!["echo default".to_string()]
    );

    fs::write(
        fixture.source.join("sub/ci.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo path]\n",
    )
    .unwrap();
    let spec = load_buildspec(Some("sub/ci.yml"), &fixture.source).unwrap();
    assert_eq!(
        spec.phases.build.unwrap().commands,
        vec!["echo path".to_string()]
    );
    assert!(matches!(
        load_buildspec(Some("../outside.yml"), &fixture.source),
        Err(BuildSpecError::BadPath(_))
    ));
}
