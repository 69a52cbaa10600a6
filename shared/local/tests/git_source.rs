//! The local git source against real repositories built with the real `git` binary.

use std::fs;
use std::path::Path;
use std::process::Command;

use penstock_local::archive::{ExtractLimits, extract_zip};
use penstock_local::git_source::{GitSourceError, GitSourceRequest, fetch_source, repository_name};

fn git(dir: &Path, args: &[&str], date: &str) -> String {
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
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A repository `my-app` with two commits on `main` and one on `feature`.
fn repository(root: &Path) -> (std::path::PathBuf, String, String) {
    let repo = root.join("my-app");
    fs::create_dir(&repo).unwrap();
    let date1 = "2024-03-01T10:00:00+02:00";
    git(&repo, &["init", "--quiet", "--initial-branch=main"], date1);
    fs::write(repo.join("README.md"), "first\n").unwrap();
    git(&repo, &["add", "-A"], date1);
    git(&repo, &["commit", "--quiet", "-m", "First commit"], date1);
    let first = git(&repo, &["rev-parse", "HEAD"], date1);

    let date2 = "2024-03-02T12:30:00-05:00";
    fs::write(repo.join("README.md"), "second\n").unwrap();
    fs::create_dir(repo.join("src")).unwrap();
    fs::write(repo.join("src/main.rs"), "fn main() {}\n").unwrap();
    git(&repo, &["add", "-A"], date2);
    git(
        &repo,
        &["commit", "--quiet", "-m", "Second commit\n\nWith a body."],
        date2,
    );
    let second = git(&repo, &["rev-parse", "HEAD"], date2);

    git(
        &repo,
        &["checkout", "--quiet", "-b", "feature", &first],
        date2,
    );
    fs::write(repo.join("feature.txt"), "feature\n").unwrap();
    git(&repo, &["add", "-A"], date2);
    git(&repo, &["commit", "--quiet", "-m", "Feature work"], date2);
    git(&repo, &["checkout", "--quiet", "main"], date2);
    // Uncommitted changes must not reach the artifact.
    fs::write(repo.join("README.md"), "dirty\n").unwrap();
    (repo, first, second)
}

fn request(repository: &Path, branch: &str, commit: Option<&str>) -> GitSourceRequest {
    GitSourceRequest {
        repository: repository.to_str().unwrap().to_string(),
        branch: branch.to_string(),
        commit: commit.map(str::to_string),
    }
}

#[tokio::test]
async fn branch_head_becomes_a_zip_with_source_variables() {
    let temp = tempfile::tempdir().unwrap();
    let (repo, _, second) = repository(temp.path());
    let zip = temp.path().join("source.zip");
    let variables = fetch_source(&request(&repo, "main", None), &zip)
        .await
        .unwrap();

    assert_eq!(variables.commit_id, second);
    assert_eq!(variables.branch_name, "main");
    assert_eq!(variables.commit_message, "Second commit\n\nWith a body.");
    assert_eq!(variables.author_date, "2024-03-02T17:30:00Z");
    assert_eq!(variables.repository_name, "my-app");

    let out = temp.path().join("out");
    extract_zip(&zip, &out, &ExtractLimits::default()).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("README.md")).unwrap(),
        "second\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    assert!(!out.join("feature.txt").exists());
    assert!(!out.join(".git").exists());
}

#[tokio::test]
async fn pinned_older_commit_is_taken_exactly() {
    let temp = tempfile::tempdir().unwrap();
    let (repo, first, _) = repository(temp.path());
    let zip = temp.path().join("source.zip");
    let variables = fetch_source(&request(&repo, "main", Some(&first[..12])), &zip)
        .await
        .unwrap();
    assert_eq!(variables.commit_id, first);
    assert_eq!(variables.commit_message, "First commit");
    assert_eq!(variables.author_date, "2024-03-01T08:00:00Z");

    let out = temp.path().join("out");
    extract_zip(&zip, &out, &ExtractLimits::default()).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("README.md")).unwrap(),
        "first\n"
    );
    assert!(!out.join("src").exists());
}

#[tokio::test]
async fn other_branch_and_url_clone() {
    let temp = tempfile::tempdir().unwrap();
    let (repo, _, _) = repository(temp.path());
    let url = format!("file://{}", repo.display());
    let zip = temp.path().join("source.zip");
    let request = GitSourceRequest {
        repository: url,
        branch: "feature".to_string(),
        commit: None,
    };
    let variables = fetch_source(&request, &zip).await.unwrap();
    assert_eq!(variables.commit_message, "Feature work");
    assert_eq!(variables.repository_name, "my-app");
    let out = temp.path().join("out");
    extract_zip(&zip, &out, &ExtractLimits::default()).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("feature.txt")).unwrap(),
        "feature\n"
    );
}

#[tokio::test]
async fn clear_errors_for_missing_things() {
    let temp = tempfile::tempdir().unwrap();
    let (repo, _, _) = repository(temp.path());
    let zip = temp.path().join("source.zip");

    let missing = temp.path().join("nope");
    let err = fetch_source(&request(&missing, "main", None), &zip)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitSourceError::RepositoryNotFound { .. }),
        "{err}"
    );

    let not_a_repo = temp.path().join("plain");
    fs::create_dir(&not_a_repo).unwrap();
    let err = fetch_source(&request(&not_a_repo, "main", None), &zip)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitSourceError::RepositoryNotFound { .. }),
        "{err}"
    );

    let err = fetch_source(&request(&repo, "release", None), &zip)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitSourceError::BranchNotFound { ref branch, .. } if branch == "release"),
        "{err}"
    );
    assert!(err.to_string().contains("release"));

    let absent = "0123456789abcdef0123456789abcdef01234567";
    let err = fetch_source(&request(&repo, "main", Some(absent)), &zip)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitSourceError::CommitNotFound { ref commit, .. } if commit == absent),
        "{err}"
    );

    let err = fetch_source(&request(&repo, "main", Some("HEAD~1")), &zip)
        .await
        .unwrap_err();
    assert!(matches!(err, GitSourceError::InvalidInput { .. }), "{err}");
    let err = fetch_source(&request(&repo, "--upload-pack=x", None), &zip)
        .await
        .unwrap_err();
    assert!(matches!(err, GitSourceError::InvalidInput { .. }), "{err}");

    let url = GitSourceRequest {
        repository: format!("file://{}", missing.display()),
        branch: "main".to_string(),
        commit: None,
    };
    let err = fetch_source(&url, &zip).await.unwrap_err();
    assert!(
        matches!(err, GitSourceError::RepositoryUnreadable { .. }),
        "{err}"
    );
    assert!(!zip.exists());
}

#[test]
fn repository_names() {
    assert_eq!(repository_name("/srv/git/my-app.git"), "my-app");
    assert_eq!(
        repository_name("https://github.com/org/service/"),
        "service"
    );
    assert_eq!(repository_name("git@github.com:org/tool.git"), "tool");
}
