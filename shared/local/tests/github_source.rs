//! The GitHub source action against a loopback GitHub API answering from a real repository:
//! the pinned commit's files at the artifact's root, the source variables, the branch head for
//! unpinned runs, and the refusals.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use penstock_app::ports::{ActionProvider, JobContext, ProviderOutcome};
use penstock_core::engine::{ActionJob, SourceRevision, Timestamp};
use penstock_core::model::{ActionCategory, ActionOwner, ActionTypeId};
use penstock_local::github_source::{
    CommitStatus, GitHubClient, GitHubSettings, GitHubSource, RepositoryId,
};
use support::fake_github;

fn git(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("GIT_AUTHOR_DATE", "2024-03-01T10:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-03-01T10:00:00Z")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `main` with two commits, `release/1.x` with a third.
fn repository(root: &Path) -> (std::path::PathBuf, String, String, String) {
    let repo = root.join("hello");
    fs::create_dir_all(repo.join("src")).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    fs::write(repo.join("README.md"), "first\n").expect("write");
    fs::write(repo.join("src/app.py"), "print('one')\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &["commit", "--quiet", "-m", "First commit\n\nWith a body."],
    );
    let first = git(&repo, &["rev-parse", "HEAD"]);
    fs::write(repo.join("README.md"), "second\n").expect("write");
    git(&repo, &["commit", "--quiet", "-am", "Second commit"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "--quiet", "-b", "release/1.x"]);
    fs::write(repo.join("RELEASE"), "1.x\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "Release branch"]);
    let release = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "--quiet", "main"]);
    (repo, first, second, release)
}

fn context(
    work: &Path,
    owner: ActionOwner,
    configuration: BTreeMap<String, String>,
    pinned: Option<&str>,
) -> JobContext {
    let provider = if owner == ActionOwner::ThirdParty {
        "GitHub"
    } else {
        "CodeStarSourceConnection"
    };
    // As the dispatcher lays out an attempt: a fresh work directory and output directories.
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work.join("outputs/Src")).expect("work dir");
    JobContext {
        job: ActionJob {
            pipeline_name: "app".into(),
            pipeline_version: 1,
            execution_id: "e-1".into(),
            stage: "Source".into(),
            action: "Code".into(),
            attempt: 1,
            action_execution_id: "a-1".into(),
            action_type_id: ActionTypeId {
                category: ActionCategory::Source,
                owner,
                provider: provider.into(),
                version: "1".into(),
            },
            configuration,
            input_artifacts: Vec::new(),
            output_artifacts: vec!["Src".into()],
            role_arn: None,
            region: None,
            namespace: None,
            artifact_store: None,
            source_revision: pinned.map(|sha| SourceRevision {
                action_name: "Code".into(),
                revision_type: "COMMIT_ID".into(),
                revision_value: sha.into(),
            }),
            deadline: Timestamp(i64::MAX),
        },
        work_dir: work.to_path_buf(),
        inputs: Vec::new(),
        outputs: vec![("Src".into(), work.join("outputs/Src"))],
        cancel: tokio_util::sync::CancellationToken::new(),
    }
}

fn connection(branch: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut c = BTreeMap::from([
        ("FullRepositoryId".to_string(), "octo/hello".to_string()),
        ("BranchName".to_string(), branch.to_string()),
    ]);
    for (k, v) in extra {
        c.insert(k.to_string(), v.to_string());
    }
    c
}

fn settings(api_url: &str) -> GitHubSettings {
    GitHubSettings {
        api_url: api_url.to_string(),
        token: Some("test-token".into()),
    }
}

#[tokio::test]
async fn a_pinned_commit_is_fetched_with_its_files_at_the_root() {
    let root = tempfile::tempdir().expect("tempdir");
    let (repo, first, _, _) = repository(root.path());
    let github = fake_github::start(repo, "octo/hello").await;
    let source = GitHubSource::new(&settings(&github.api_url));
    let work = root.path().join("work");
    let ctx = context(
        &work,
        ActionOwner::Aws,
        connection(
            "main",
            &[(
                "ConnectionArn",
                "arn:aws:codeconnections:us-east-1:111111111111:connection/x",
            )],
        ),
        Some(&first),
    );
    let outcome = source.run(&ctx).await;
    let ProviderOutcome::Succeeded {
        output_variables,
        revisions,
        external,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    let out = work.join("outputs/Src");
    assert_eq!(
        fs::read_to_string(out.join("README.md")).expect("README"),
        "first\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("src/app.py")).expect("app"),
        "print('one')\n"
    );
    assert_eq!(
        fs::read_dir(&out).expect("out").count(),
        2,
        "only the repository's files"
    );
    assert_eq!(output_variables["CommitId"], first);
    assert_eq!(
        output_variables["CommitMessage"],
        "First commit\n\nWith a body."
    );
    assert_eq!(output_variables["AuthorDate"], "2024-03-01T10:00:00Z");
    assert_eq!(output_variables["FullRepositoryName"], "octo/hello");
    // The first commit is no branch's head: the configured branch is named.
    assert_eq!(output_variables["BranchName"], "main");
    assert_eq!(
        output_variables["ConnectionArn"],
        "arn:aws:codeconnections:us-east-1:111111111111:connection/x"
    );
    assert_eq!(
        revisions["Src"],
        (first.clone(), Some("First commit".to_string()))
    );
    assert_eq!(external.id.as_deref(), Some(first.as_str()));
    // The zipball came through the redirect, and the token went to the API only.
    let seen = github.seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|s| s.path == format!("/repos/octo/hello/zipball/{first}"))
    );
    assert!(seen.iter().any(|s| s.path.starts_with("/codeload/")));
    assert!(
        seen.iter()
            .filter(|s| s.path.starts_with("/repos/"))
            .all(|s| s.authorization.as_deref() == Some("Bearer test-token"))
    );
    assert!(
        seen.iter()
            .filter(|s| s.path.starts_with("/codeload/"))
            .all(|s| s.authorization.is_none()),
        "the download host is another origin: {seen:?}"
    );
}

#[tokio::test]
async fn a_commit_pushed_to_another_branch_names_that_branch() {
    let root = tempfile::tempdir().expect("tempdir");
    let (repo, _, _, release) = repository(root.path());
    let github = fake_github::start(repo, "octo/hello").await;
    let source = GitHubSource::new(&settings(&github.api_url));
    let work = root.path().join("work");
    let outcome = source
        .run(&context(
            &work,
            ActionOwner::Aws,
            connection("main", &[]),
            Some(&release),
        ))
        .await;
    let ProviderOutcome::Succeeded {
        output_variables, ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(output_variables["BranchName"], "release/1.x");
    assert!(work.join("outputs/Src/RELEASE").exists());
    assert!(!output_variables.contains_key("ConnectionArn"));
}

#[tokio::test]
async fn without_a_pinned_commit_the_branch_head_is_taken() {
    let root = tempfile::tempdir().expect("tempdir");
    let (repo, _, _, release) = repository(root.path());
    let github = fake_github::start(repo, "octo/hello").await;
    let source = GitHubSource::new(&settings(&github.api_url));
    let work = root.path().join("work");
    // A V1 GitHub action, on a branch whose name has a slash.
    let configuration = BTreeMap::from([
        ("Owner".to_string(), "octo".to_string()),
        ("Repo".to_string(), "hello".to_string()),
        ("Branch".to_string(), "release/1.x".to_string()),
    ]);
    let outcome = source
        .run(&context(
            &work,
            ActionOwner::ThirdParty,
            configuration,
            None,
        ))
        .await;
    let ProviderOutcome::Succeeded {
        output_variables, ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(output_variables["CommitId"], release);
    assert_eq!(output_variables["BranchName"], "release/1.x");
}

#[tokio::test]
async fn refusals_are_clear() {
    let root = tempfile::tempdir().expect("tempdir");
    let (repo, first, _, _) = repository(root.path());
    let github = fake_github::start(repo, "octo/hello").await;
    let source = GitHubSource::new(&settings(&github.api_url));
    let work = root.path().join("work");
    let failed = |outcome: ProviderOutcome| match outcome {
        ProviderOutcome::Failed { code, message, .. } => (code, message),
        other => panic!("expected a failure, got {other:?}"),
    };
    // CODEBUILD_CLONE_REF needs CodeBuild's own git access.
    let (code, message) = failed(
        source
            .run(&context(
                &work,
                ActionOwner::Aws,
                connection("main", &[("OutputArtifactFormat", "CODEBUILD_CLONE_REF")]),
                Some(&first),
            ))
            .await,
    );
    assert_eq!(code, "ConfigurationError");
    assert!(message.contains("CODEBUILD_CLONE_REF"), "{message}");
    // A commit the repository does not have.
    let (code, message) = failed(
        source
            .run(&context(
                &work,
                ActionOwner::Aws,
                connection("main", &[]),
                Some("0123456789012345678901234567890123456789"),
            ))
            .await,
    );
    assert_eq!(code, "JobFailed");
    assert!(message.contains("422"), "{message}");
    // A repository the token cannot see.
    let mut other = connection("main", &[]);
    other.insert("FullRepositoryId".into(), "octo/private".into());
    let (_, message) = failed(
        source
            .run(&context(&work, ActionOwner::Aws, other, Some(&first)))
            .await,
    );
    assert!(
        message.contains("404") && message.contains("PENSTOCK_GITHUB_TOKEN"),
        "{message}"
    );
    // A repository id that is not owner/name.
    let mut bad = connection("main", &[]);
    bad.insert("FullRepositoryId".into(), "hello".into());
    let (code, _) = failed(
        source
            .run(&context(&work, ActionOwner::Aws, bad, None))
            .await,
    );
    assert_eq!(code, "ConfigurationError");
    // The token never appears in a failure.
    assert!(!message.contains("test-token"));
}

#[tokio::test]
async fn commit_statuses_are_posted_with_the_token() {
    let root = tempfile::tempdir().expect("tempdir");
    let (repo, first, _, _) = repository(root.path());
    let mut github = fake_github::start(repo, "octo/hello").await;
    let client = GitHubClient::new(&settings(&github.api_url)).expect("client");
    let status = CommitStatus {
        state: "success".into(),
        target_url: Some("http://127.0.0.1:7788/pipelines/app/executions/e-1".into()),
        description: "Penstock: pipeline app succeeded".into(),
        context: "penstock/app".into(),
    };
    client
        .create_status(
            &RepositoryId::parse("octo/hello").expect("id"),
            &first,
            &status,
        )
        .await
        .expect("posted");
    let (sha, body) = github.statuses.recv().await.expect("a status");
    assert_eq!(sha, first);
    assert_eq!(body["state"], "success");
    assert_eq!(body["context"], "penstock/app");
    assert_eq!(
        body["target_url"],
        "http://127.0.0.1:7788/pipelines/app/executions/e-1"
    );
    // A repository the fake does not know: the error says so and carries no token.
    let error = client
        .create_status(
            &RepositoryId::parse("octo/other").expect("id"),
            &first,
            &status,
        )
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("404"));
    assert!(!format!("{error:?}").contains("test-token"));
    assert!(!format!("{client:?}").contains("test-token"));
}
