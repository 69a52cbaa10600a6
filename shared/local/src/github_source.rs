//! The GitHub source action on the embedded default (`Source/AWS/CodeStarSourceConnection` and
//! `Source/ThirdParty/GitHub`), and the GitHub REST API client it and commit statuses use.
//!
//! The action downloads one exact commit through the API's archive endpoint
//! (`GET {api}/repos/{owner}/{repo}/zipball/{sha}`, redirects followed) and re-packs it so the
//! artifact holds the repository's files at its root, as CodePipeline's `CODE_ZIP` does
//! (GitHub's zipballs put everything under one `{owner}-{repo}-{sha}/` folder). The commit is
//! the execution's pinned revision (a webhook-started execution) or the branch head (a manual
//! start). `CODEBUILD_CLONE_REF` needs CodeBuild's git credentials and is refused.
//!
//! Configuration comes from the environment: `PENSTOCK_GITHUB_API_URL` (default
//! `https://api.github.com`; `https://HOST/api/v3` for GitHub Enterprise Server) and
//! `PENSTOCK_GITHUB_TOKEN` (optional for public repositories). The token is sent only to the
//! API host (redirects to other hosts drop it) and never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use penstock_app::ports::{ActionProvider, JobContext, ProviderOutcome};
use penstock_core::engine::ExternalExecution;
use penstock_core::model::ActionOwner;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::providers::failure;

pub const API_URL_ENV: &str = "PENSTOCK_GITHUB_API_URL";
pub const TOKEN_ENV: &str = "PENSTOCK_GITHUB_TOKEN";
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How long one API call may take (a large zipball downloads within it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a commit status post may take: statuses are informative, never worth a wait.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);
/// Most changed files read from a pull request (GitHub lists at most 3000).
const MAX_PULL_REQUEST_FILES: usize = 3000;

/// Where the GitHub API is and how to authenticate. `Debug` hides the token.
#[derive(Clone)]
pub struct GitHubSettings {
    pub api_url: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for GitHubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubSettings")
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl GitHubSettings {
    /// From `PENSTOCK_GITHUB_API_URL` and `PENSTOCK_GITHUB_TOKEN`.
    pub fn from_env() -> Self {
        Self::new(
            std::env::var(API_URL_ENV).ok(),
            std::env::var(TOKEN_ENV).ok(),
        )
    }

    /// An API URL (default [`DEFAULT_API_URL`]) and a token, either absent or empty when not
    /// configured (on AWS the token comes from Secrets Manager rather than the environment).
    pub fn new(api_url: Option<String>, token: Option<String>) -> Self {
        let non_empty =
            |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Self {
            api_url: non_empty(api_url).unwrap_or_else(|| DEFAULT_API_URL.to_string()),
            token: non_empty(token),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("invalid GitHub API URL {url:?}: {detail}")]
    InvalidApiUrl { url: String, detail: String },
    #[error("invalid repository {0:?}: expected owner/name")]
    InvalidRepository(String),
    #[error("GitHub API request {method} {path} failed: {detail}")]
    Transport {
        method: Method,
        path: String,
        detail: String,
    },
    #[error("GitHub API {method} {path} answered {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("GitHub API {path}: unexpected answer: {detail}")]
    Unexpected { path: String, detail: String },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryId {
    pub owner: String,
    pub name: String,
}

impl RepositoryId {
    pub fn parse(full_name: &str) -> Result<Self, GitHubError> {
        match full_name.trim().split_once('/') {
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    owner: owner.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(GitHubError::InvalidRepository(full_name.to_string())),
        }
    }

    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// What CodePipeline's source variables need from a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub message: String,
    /// ISO 8601, as GitHub gives it (`2024-03-01T08:00:00Z`).
    pub author_date: String,
    pub html_url: Option<String>,
}

/// A commit status (`POST /repos/{owner}/{repo}/statuses/{sha}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitStatus {
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    pub description: String,
    pub context: String,
}

#[derive(Deserialize)]
struct CommitAuthor {
    date: Option<String>,
}

#[derive(Deserialize)]
struct CommitDetail {
    message: String,
    author: Option<CommitAuthor>,
}

#[derive(Deserialize)]
struct CommitResponse {
    sha: String,
    commit: CommitDetail,
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct BranchResponse {
    name: String,
}

#[derive(Deserialize)]
struct PullRequestFileResponse {
    filename: String,
    #[serde(default)]
    previous_filename: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    message: Option<String>,
}

/// A small GitHub REST API client (only what Penstock needs).
#[derive(Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    api_url: Url,
    token: Option<String>,
}

impl std::fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubClient")
            .field("api_url", &self.api_url.as_str())
            .finish_non_exhaustive()
    }
}

impl GitHubClient {
    pub fn new(settings: &GitHubSettings) -> Result<Self, GitHubError> {
        let invalid = |detail: String| GitHubError::InvalidApiUrl {
            url: settings.api_url.clone(),
            detail,
        };
        let api_url = Url::parse(settings.api_url.trim()).map_err(|e| invalid(e.to_string()))?;
        if !matches!(api_url.scheme(), "http" | "https") || api_url.cannot_be_a_base() {
            return Err(invalid("expected an http(s) URL".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("penstock/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            http,
            api_url,
            token: settings.token.clone(),
        })
    }

    /// `{api}/repos/{owner}/{repo}/{rest...}`, each segment escaped (a branch `a/b` stays one
    /// segment).
    fn repo_url(&self, repo: &RepositoryId, rest: &[&str]) -> Url {
        let mut url = self.api_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["repos", repo.owner.as_str(), repo.name.as_str()])
                .extend(rest);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, GitHubError> {
        self.send_within(method, url, body, REQUEST_TIMEOUT).await
    }

    async fn send_within(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<reqwest::Response, GitHubError> {
        let path = url.path().to_string();
        let mut request = self.request(method.clone(), url).timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| GitHubError::Transport {
            method: method.clone(),
            path: path.clone(),
            detail: e.without_url().to_string(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response
            .json::<ErrorResponse>()
            .await
            .ok()
            .and_then(|e| e.message)
            .unwrap_or_default();
        let message = match status {
            StatusCode::NOT_FOUND => format!(
                "not found, or not readable with the configured token ({TOKEN_ENV}){}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ),
            StatusCode::UNAUTHORIZED => format!("the token in {TOKEN_ENV} was refused: {message}"),
            _ => message,
        };
        Err(GitHubError::Status {
            method,
            path,
            status,
            message,
        })
    }

    async fn json<T: for<'de> Deserialize<'de>>(&self, url: Url) -> Result<T, GitHubError> {
        let path = url.path().to_string();
        self.send(Method::GET, url, None)
            .await?
            .json::<T>()
            .await
            .map_err(|e| GitHubError::Unexpected {
                path,
                detail: e.without_url().to_string(),
            })
    }

    /// A commit by sha, or the head commit of a branch.
    pub async fn commit(
        &self,
        repo: &RepositoryId,
        reference: &str,
    ) -> Result<CommitInfo, GitHubError> {
        let response: CommitResponse = self
            .json(self.repo_url(repo, &["commits", reference]))
            .await?;
        Ok(CommitInfo {
            sha: response.sha,
            message: response.commit.message,
            author_date: response
                .commit
                .author
                .and_then(|a| a.date)
                .unwrap_or_default(),
            html_url: response.html_url,
        })
    }

    /// The branches whose head is `sha`.
    pub async fn branches_where_head(
        &self,
        repo: &RepositoryId,
        sha: &str,
    ) -> Result<Vec<String>, GitHubError> {
        let branches: Vec<BranchResponse> = self
            .json(self.repo_url(repo, &["commits", sha, "branches-where-head"]))
            .await?;
        Ok(branches.into_iter().map(|b| b.name).collect())
    }

    /// Download the zipball of `sha` to `dest`, streaming; returns its size.
    pub async fn download_zipball(
        &self,
        repo: &RepositoryId,
        sha: &str,
        dest: &Path,
    ) -> Result<u64, GitHubError> {
        use futures_util::StreamExt;
        let url = self.repo_url(repo, &["zipball", sha]);
        let path = url.path().to_string();
        let response = self.send(Method::GET, url, None).await?;
        let io = |source| GitHubError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut stream = response.bytes_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| GitHubError::Transport {
                method: Method::GET,
                path: path.clone(),
                detail: e.without_url().to_string(),
            })?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(size)
    }

    /// Set a commit status.
    pub async fn create_status(
        &self,
        repo: &RepositoryId,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), GitHubError> {
        let body = serde_json::to_value(status).map_err(|e| GitHubError::Unexpected {
            path: "statuses".into(),
            detail: e.to_string(),
        })?;
        self.send_within(
            Method::POST,
            self.repo_url(repo, &["statuses", sha]),
            Some(&body),
            STATUS_TIMEOUT,
        )
        .await?;
        Ok(())
    }

    /// The files a pull request changes (renames count under both names).
    pub async fn pull_request_files(
        &self,
        repo: &RepositoryId,
        number: u64,
    ) -> Result<Vec<String>, GitHubError> {
        let mut files = Vec::new();
        for page in 1.. {
            let mut url = self.repo_url(repo, &["pulls", &number.to_string(), "files"]);
            url.query_pairs_mut()
                .append_pair("per_page", "100")
                .append_pair("page", &page.to_string());
            let batch: Vec<PullRequestFileResponse> = self.json(url).await?;
            let done = batch.len() < 100;
            for file in batch {
                files.push(file.filename);
                files.extend(file.previous_filename);
            }
            if done || files.len() >= MAX_PULL_REQUEST_FILES {
                break;
            }
        }
        Ok(files)
    }
}

#[async_trait]
impl penstock_app::intake::PullRequestFiles for GitHubClient {
    async fn changed_files(&self, repository: &str, number: u64) -> Result<Vec<String>, String> {
        let repo = RepositoryId::parse(repository).map_err(|e| e.to_string())?;
        self.pull_request_files(&repo, number)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The GitHub source action.
pub struct GitHubSource {
    client: Result<GitHubClient, String>,
}

impl GitHubSource {
    pub fn new(settings: &GitHubSettings) -> Self {
        Self {
            client: GitHubClient::new(settings).map_err(|e| e.to_string()),
        }
    }
}

/// What the action's configuration names.
struct SourceConfig {
    repo: RepositoryId,
    branch: String,
    connection_arn: Option<String>,
}

/// The configuration, or why it cannot be used (every refusal is a `ConfigurationError`).
fn source_config(ctx: &JobContext) -> Result<SourceConfig, String> {
    let config = &ctx.job.configuration;
    let get = |key: &str| config.get(key).filter(|v| !v.is_empty()).cloned();
    let missing = |key: &str| format!("the action's configuration has no {key}");
    let (full_name, branch) = if ctx.job.action_type_id.owner == ActionOwner::ThirdParty {
        let owner = get("Owner").ok_or_else(|| missing("Owner"))?;
        let repo = get("Repo").ok_or_else(|| missing("Repo"))?;
        (
            format!("{owner}/{repo}"),
            get("Branch").ok_or_else(|| missing("Branch"))?,
        )
    } else {
        (
            get("FullRepositoryId").ok_or_else(|| missing("FullRepositoryId"))?,
            get("BranchName").ok_or_else(|| missing("BranchName"))?,
        )
    };
    let repo = RepositoryId::parse(&full_name).map_err(|e| e.to_string())?;
    match get("OutputArtifactFormat").as_deref() {
        None | Some("CODE_ZIP") => {}
        Some("CODEBUILD_CLONE_REF") => {
            return Err(
                "OutputArtifactFormat CODEBUILD_CLONE_REF (a full clone for CodeBuild) is not supported on the embedded default; use CODE_ZIP".into(),
            );
        }
        Some(other) => {
            return Err(format!(
                "OutputArtifactFormat {other} is not CODE_ZIP or CODEBUILD_CLONE_REF"
            ));
        }
    }
    Ok(SourceConfig {
        repo,
        branch,
        connection_arn: get("ConnectionArn"),
    })
}

#[async_trait]
impl ActionProvider for GitHubSource {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => return failure("ConfigurationError", e.clone()),
        };
        let config = match source_config(ctx) {
            Ok(c) => c,
            Err(message) => return failure("ConfigurationError", message),
        };
        let Some((artifact, out_dir)) = ctx.outputs.first() else {
            return failure(
                "ConfigurationError",
                "a source action needs one output artifact".into(),
            );
        };
        let pinned = ctx
            .job
            .source_revision
            .as_ref()
            .filter(|r| r.revision_type == "COMMIT_ID")
            .map(|r| r.revision_value.clone());
        let commit = match client
            .commit(&config.repo, pinned.as_deref().unwrap_or(&config.branch))
            .await
        {
            Ok(c) => c,
            Err(e) => return failure("JobFailed", e.to_string()),
        };
        let branch = match &pinned {
            // A triggered execution may come from another branch than the configured one (V2
            // triggers): name the branch whose head the commit is, preferring the configured.
            Some(sha) => match client.branches_where_head(&config.repo, sha).await {
                Ok(heads) if !heads.contains(&config.branch) && !heads.is_empty() => {
                    heads[0].clone()
                }
                _ => config.branch.clone(),
            },
            None => config.branch.clone(),
        };
        let zip = ctx.work_dir.join("github-zipball.zip");
        if let Err(e) = client
            .download_zipball(&config.repo, &commit.sha, &zip)
            .await
        {
            return failure("JobFailed", e.to_string());
        }
        let unpack_dir = ctx.work_dir.join("github-zipball");
        let (zip_path, unpack, out) = (zip.clone(), unpack_dir.clone(), out_dir.clone());
        let unpacked =
            tokio::task::spawn_blocking(move || unpack_to_root(&zip_path, &unpack, &out))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
        if let Err(e) = unpacked {
            return failure("JobFailed", format!("the zipball of {}: {e}", commit.sha));
        }
        let mut variables = BTreeMap::from([
            ("CommitId".to_string(), commit.sha.clone()),
            ("BranchName".to_string(), branch),
            ("CommitMessage".to_string(), commit.message.clone()),
            ("AuthorDate".to_string(), commit.author_date.clone()),
            ("FullRepositoryName".to_string(), config.repo.full_name()),
        ]);
        if let Some(arn) = config.connection_arn {
            variables.insert("ConnectionArn".into(), arn);
        }
        let summary = commit.message.lines().next().unwrap_or("").to_string();
        ProviderOutcome::Succeeded {
            output_variables: variables,
            revisions: BTreeMap::from([(
                artifact.clone(),
                (commit.sha.clone(), Some(summary.clone())),
            )]),
            external: ExternalExecution {
                id: Some(commit.sha),
                summary: Some(summary),
                url: commit.html_url,
            },
        }
    }
}

/// Unpack a zipball into `scratch` (safely: no escapes, no bombs) and move the files of its one
/// top-level folder into `out`, so the artifact has the repository at its root.
fn unpack_to_root(zip: &Path, scratch: &Path, out: &Path) -> Result<(), String> {
    crate::archive::extract_zip(zip, scratch, &crate::archive::ExtractLimits::default())
        .map_err(|e| e.to_string())?;
    let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(scratch)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let root = match entries.as_slice() {
        [single] if single.file_type().map_err(|e| e.to_string())?.is_dir() => single.path(),
        _ => scratch.to_path_buf(),
    };
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(&root).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::rename(entry.path(), out.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    Ok(())
}
