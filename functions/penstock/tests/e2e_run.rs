//! End to end: the real `penstock` binary runs real pipelines (a real git repository, real
//! buildspec processes, the SQLite store, encrypted artifacts, a local bucket) on temporary
//! data directories: success, a failing build, a rejected approval, a stop, and a SIGKILL in
//! the middle of a build followed by a resume.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PENSTOCK: &str = env!("CARGO_BIN_EXE_penstock");

/// A temporary workspace: a git repository with the given files, and a data directory.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        for (name, content) in files {
            let path = repo.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "first commit"]);
        Self { dir }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a pipeline: LocalGit source -> CodeBuild (`buildspec`) -> optional approval ->
    /// S3 deploy into bucket `site`.
    fn pipeline(&self, name: &str, buildspec: &str, approval: bool) -> PathBuf {
        let mut deploy_actions = Vec::new();
        if approval {
            deploy_actions.push(serde_json::json!({
                "name": "Approve",
                "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"},
                "runOrder": 1
            }));
        }
        deploy_actions.push(serde_json::json!({
            "name": "Publish",
            "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1"},
            "configuration": {"BucketName": "site", "Extract": "true"},
            "inputArtifacts": [{"name": "Built"}],
            "runOrder": 2
        }));
        let pipeline = serde_json::json!({
            "pipeline": {
                "name": name,
                "roleArn": "arn:aws:iam::111111111111:role/Test",
                "artifactStore": {"type": "S3", "location": "test-artifacts"},
                "stages": [
                    {"name": "Source", "actions": [{
                        "name": "Checkout",
                        "actionTypeId": {"category": "Source", "owner": "Custom", "provider": "LocalGit", "version": "1"},
                        "configuration": {"RepositoryPath": self.repo().display().to_string(), "BranchName": "main"},
                        "outputArtifacts": [{"name": "Src"}]
                    }]},
                    {"name": "Build", "actions": [{
                        "name": "Compile",
                        "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                        "configuration": {"BuildSpec": buildspec},
                        "inputArtifacts": [{"name": "Src"}],
                        "outputArtifacts": [{"name": "Built"}]
                    }]},
                    {"name": "Deploy", "actions": deploy_actions}
                ]
            }
        });
        let path = self.path(&format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&pipeline).unwrap()).unwrap();
        path
    }

    fn penstock(&self, args: &[&str]) -> Command {
        let mut command = Command::new(PENSTOCK);
        command
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.penstock(args).output().expect("running penstock")
    }
}

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?} failed");
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Poll `penstock status` until `done` says so, or fail after `limit`.
fn wait_for_status(
    ws: &Workspace,
    pipeline: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let output = ws.run(&["status", pipeline]);
        let out = text(&output);
        if done(&out) {
            return out;
        }
        assert!(
            start.elapsed() < limit,
            "gave up waiting; last status:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Read the run's stdout until the line announcing the execution id.
fn execution_id_from(child: &mut Child) -> (String, BufReader<std::process::ChildStdout>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).expect("reading run output");
        assert!(read > 0, "run ended before announcing its execution");
        if let Some(rest) = line.trim().split(", execution ").nth(1) {
            return (rest.trim().to_string(), reader);
        }
    }
}

const GOOD_BUILDSPEC: &str = r#"version: 0.2
phases:
  build:
    commands:
      - mkdir -p out
      - echo "hello from $CODEBUILD_RESOLVED_SOURCE_VERSION" > out/index.html
artifacts:
  base-directory: out
  files:
    - '**/*'
"#;

#[test]
fn a_pipeline_runs_from_source_to_a_deployed_bucket() {
    let ws = Workspace::new(&[("README.md", "app\n")]);
    let file = ws.pipeline("good", GOOD_BUILDSPEC, false);
    let output = ws.run(&["run", file.to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("Succeeded"), "{out}");
    let deployed = std::fs::read_to_string(ws.data().join("buckets/site/index.html"))
        .unwrap_or_else(|e| panic!("deployed page missing ({e}):\n{out}"));
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(ws.repo())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(deployed.trim(), format!("hello from {head}"));
    assert!(
        out.contains("deployed to"),
        "the run says where the result is:\n{out}"
    );
}

#[test]
fn a_failing_build_fails_the_run_and_shows_the_log_tail() {
    let ws = Workspace::new(&[("README.md", "app\n")]);
    let buildspec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo compiling-marker-42\n      - exit 3\n";
    let file = ws.pipeline("bad", buildspec, false);
    let output = ws.run(&["run", file.to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("compiling-marker-42"),
        "log tail shown:\n{out}"
    );
    assert!(out.contains("Failed"), "{out}");
    assert!(!ws.data().join("buckets/site").exists(), "nothing deployed");
}

#[test]
fn a_rejected_approval_fails_the_execution_and_deploys_nothing() {
    let ws = Workspace::new(&[("README.md", "app\n")]);
    let file = ws.pipeline("gated", GOOD_BUILDSPEC, true);
    let output = ws.run(&["run", file.to_str().unwrap(), "--reject"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        !ws.data().join("buckets/site").exists(),
        "nothing deployed:\n{out}"
    );
    let status = text(&ws.run(&["status", "gated"]));
    assert!(status.contains("Failed"), "{status}");
}

#[test]
fn an_approval_answered_from_another_process_lets_the_run_finish() {
    let ws = Workspace::new(&[("README.md", "app\n")]);
    let file = ws.pipeline("gated2", GOOD_BUILDSPEC, true);
    let mut child = ws
        .penstock(&["run", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&ws, "gated2", Duration::from_secs(60), |s| {
        s.contains("waiting for approval")
    });
    let approve = ws.run(&["approve", "gated2", "Deploy", "Approve"]);
    assert_eq!(approve.status.code(), Some(0), "{}", text(&approve));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(ws.data().join("buckets/site/index.html").exists());
}

#[test]
fn a_stopped_run_exits_non_zero_and_records_the_stop() {
    let ws = Workspace::new(&[("README.md", "app\n")]);
    let buildspec = "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 60\n";
    let file = ws.pipeline("stoppable", buildspec, false);
    let mut child = ws
        .penstock(&["run", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (execution_id, _reader) = execution_id_from(&mut child);
    wait_for_status(&ws, "stoppable", Duration::from_secs(60), |s| {
        s.lines()
            .any(|l| l.contains("Compile") && l.contains("InProgress"))
    });
    let stop = ws.run(&[
        "stop",
        "stoppable",
        &execution_id,
        "--abandon",
        "--reason",
        "test stop",
    ]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a stop exits with 3");
    let after = text(&ws.run(&["status", "stoppable"]));
    assert!(after.contains("Stopped"), "{after}");
    assert!(after.contains("Abandoned"), "{after}");
}

#[test]
fn a_killed_run_is_finished_by_serve_without_running_an_attempt_twice() {
    let ws = Workspace::new(&[("README.md", "app\n")]);
    let ledger = ws.path("ledger.txt");
    // Each attempt records its build id, waits to be killed, then builds.
    let buildspec = format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"$CODEBUILD_BUILD_ID\" >> {ledger}\n      - sleep 2\n      - mkdir -p out && echo done > out/index.html\nartifacts:\n  base-directory: out\n  files:\n    - '**/*'\n",
        ledger = ledger.display()
    );
    let file = ws.pipeline("crashy", &buildspec, false);
    let mut child = ws
        .penstock(&["run", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (execution_id, _reader) = execution_id_from(&mut child);
    wait_for_status(&ws, "crashy", Duration::from_secs(60), |s| {
        s.lines()
            .any(|l| l.contains("Compile") && l.contains("InProgress"))
    });
    // Wait until the build really started, then kill the runner outright.
    let start = Instant::now();
    while !ledger.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "build never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let mut serve = ws
        .penstock(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_for_status(&ws, "crashy", Duration::from_secs(120), |s| {
        let execution_line = s.lines().next().unwrap_or("");
        execution_line.contains("Succeeded") || execution_line.contains("Failed")
    });
    serve.kill().ok();
    serve.wait().ok();
    assert!(status.contains(&execution_id), "{status}");
    assert!(
        status.lines().next().unwrap_or("").contains("Succeeded"),
        "the interrupted execution finished:\n{status}"
    );
    let ledger = std::fs::read_to_string(&ledger).unwrap();
    let ids: Vec<&str> = ledger.lines().collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an attempt ran twice: {ids:?}");
    assert_eq!(
        ids.len(),
        2,
        "the interrupted attempt and its one replacement: {ids:?}"
    );
    assert!(
        ws.data().join("buckets/site/index.html").exists(),
        "artifact not lost"
    );
}
