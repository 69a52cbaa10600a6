//! The local git source action: the tree of one exact commit of a repository (a local path or a
//! URL the `git` binary can clone) as a zip artifact, plus CodePipeline's source variables.
//!
//! It runs the real `git` binary through `tokio::process`, with the caller's `GIT_*` variables
//! removed so an outer repository cannot leak in, and without terminal prompts.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::process::Command;

/// Which revision to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSourceRequest {
    /// A local repository path or a URL.
    pub repository: String,
    /// The branch to follow (`BranchName`).
    pub branch: String,
    /// A commit to take instead of the branch head (a pinned execution revision).
    pub commit: Option<String>,
}

/// CodePipeline's source variables for the revision taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceVariables {
    pub commit_id: String,
    pub branch_name: String,
    pub commit_message: String,
    /// Author date in ISO 8601, UTC (`2024-05-01T12:00:00Z`).
    pub author_date: String,
    pub repository_name: String,
}

impl SourceVariables {
    /// The variables under their CodePipeline names.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CommitId", self.commit_id.clone()),
            ("BranchName", self.branch_name.clone()),
            ("CommitMessage", self.commit_message.clone()),
            ("AuthorDate", self.author_date.clone()),
            ("RepositoryName", self.repository_name.clone()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitSourceError {
    #[error("repository {repository:?} not found")]
    RepositoryNotFound { repository: String },
    #[error("repository {repository:?} could not be read: {detail}")]
    RepositoryUnreadable { repository: String, detail: String },
    #[error("branch {branch:?} not found in repository {repository:?}")]
    BranchNotFound { repository: String, branch: String },
    #[error("commit {commit:?} not found in repository {repository:?}")]
    CommitNotFound { repository: String, commit: String },
    #[error("invalid {what} {value:?}")]
    InvalidInput { what: &'static str, value: String },
    #[error("running git ({action}): {detail}")]
    Git {
        action: &'static str,
        detail: String,
    },
    #[error("scratch directory: {0}")]
    Scratch(#[source] std::io::Error),
}

/// Writes the tree of the requested commit to `dest_zip` (via `git archive --format=zip`) and
/// returns the source variables.
pub async fn fetch_source(
    request: &GitSourceRequest,
    dest_zip: &Path,
) -> Result<SourceVariables, GitSourceError> {
    validate_branch(&request.branch).await?;
    if let Some(commit) = &request.commit {
        let valid =
            (4..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(GitSourceError::InvalidInput {
                what: "commit id",
                value: commit.clone(),
            });
        }
    }
    if request.repository.is_empty() || request.repository.starts_with('-') {
        return Err(GitSourceError::InvalidInput {
            what: "repository",
            value: request.repository.clone(),
        });
    }

    // A local repository is read in place; anything else is cloned (bare) into scratch space
    // that lives until the archive is written.
    let scratch;
    let git_dir: PathBuf = if looks_like_url(&request.repository) {
        scratch = tempfile::tempdir().map_err(GitSourceError::Scratch)?;
        let target = scratch.path().join("repo.git");
        let output = git(None)
            .args(["clone", "--bare", "--quiet", "--"])
            .arg(&request.repository)
            .arg(&target)
            .output()
            .await
            .map_err(spawn_error("clone"))?;
        if !output.status.success() {
            return Err(GitSourceError::RepositoryUnreadable {
                repository: request.repository.clone(),
                detail: stderr_text(&output.stderr),
            });
        }
        target
    } else {
        let path = PathBuf::from(&request.repository);
        if !path.exists() {
            return Err(GitSourceError::RepositoryNotFound {
                repository: request.repository.clone(),
            });
        }
        let output = git(Some(&path))
            .args(["rev-parse", "--absolute-git-dir"])
            .output()
            .await
            .map_err(spawn_error("rev-parse"))?;
        if !output.status.success() {
            return Err(GitSourceError::RepositoryNotFound {
                repository: request.repository.clone(),
            });
        }
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    };

    let branch_ref = format!("refs/heads/{}^{{commit}}", request.branch);
    let head =
        resolve(&git_dir, &branch_ref)
            .await?
            .ok_or_else(|| GitSourceError::BranchNotFound {
                repository: request.repository.clone(),
                branch: request.branch.clone(),
            })?;
    let commit_id = match &request.commit {
        None => head,
        Some(commit) => resolve(&git_dir, &format!("{commit}^{{commit}}"))
            .await?
            .ok_or_else(|| GitSourceError::CommitNotFound {
                repository: request.repository.clone(),
                commit: commit.clone(),
            })?,
    };

    let output = git(Some(&git_dir))
        .args(["log", "-1", "--format=%aI%x00%B", &commit_id, "--"])
        .output()
        .await
        .map_err(spawn_error("log"))?;
    if !output.status.success() {
        return Err(GitSourceError::Git {
            action: "log",
            detail: stderr_text(&output.stderr),
        });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (date, message) = text.split_once('\0').ok_or_else(|| GitSourceError::Git {
        action: "log",
        detail: "unexpected output".to_string(),
    })?;
    let author_date = utc_iso8601(date.trim())?;

    let output = git(Some(&git_dir))
        .args(["archive", "--format=zip", "-o"])
        .arg(dest_zip)
        .arg(&commit_id)
        .output()
        .await
        .map_err(spawn_error("archive"))?;
    if !output.status.success() {
        return Err(GitSourceError::Git {
            action: "archive",
            detail: stderr_text(&output.stderr),
        });
    }

    Ok(SourceVariables {
        commit_id,
        branch_name: request.branch.clone(),
        commit_message: message.trim_end_matches('\n').to_string(),
        author_date,
        repository_name: repository_name(&request.repository),
    })
}

/// The repository's name: the last path segment, without a `.git` suffix.
pub fn repository_name(repository: &str) -> String {
    let trimmed = repository.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    last.strip_suffix(".git").unwrap_or(last).to_string()
}

fn looks_like_url(repository: &str) -> bool {
    repository.contains("://") || (repository.contains('@') && repository.contains(':'))
}

fn git(dir: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn validate_branch(branch: &str) -> Result<(), GitSourceError> {
    let invalid = || GitSourceError::InvalidInput {
        what: "branch name",
        value: branch.to_string(),
    };
    if branch.is_empty() || branch.starts_with('-') {
        return Err(invalid());
    }
    let status = git(None)
        .args(["check-ref-format", "--branch", branch])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(spawn_error("check-ref-format"))?;
    if status.success() {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// The full commit id `spec` names, or `None` when it names nothing.
async fn resolve(git_dir: &Path, spec: &str) -> Result<Option<String>, GitSourceError> {
    let output = git(Some(git_dir))
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options", spec])
        .output()
        .await
        .map_err(spawn_error("rev-parse"))?;
    if output.status.success() {
        Ok(Some(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        ))
    } else {
        Ok(None)
    }
}

fn utc_iso8601(date: &str) -> Result<String, GitSourceError> {
    let parsed = OffsetDateTime::parse(date, &Rfc3339).map_err(|err| GitSourceError::Git {
        action: "log",
        detail: format!("author date {date:?}: {err}"),
    })?;
    parsed
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|err| GitSourceError::Git {
            action: "log",
            detail: err.to_string(),
        })
}

fn spawn_error(action: &'static str) -> impl FnOnce(std::io::Error) -> GitSourceError {
    move |err| GitSourceError::Git {
        action,
        detail: format!("could not start git: {err}"),
    }
}

fn stderr_text(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr).trim().to_string()
}
