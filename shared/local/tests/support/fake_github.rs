//! A loopback stand-in for the GitHub REST API, answering from a real git repository: the
//! zipball endpoint (a redirect to another origin, as GitHub's goes to codeload.github.com,
//! then `git archive --format=zip --prefix=OWNER-REPO-SHA/`, as GitHub lays zipballs out),
//! commits, branches-where-head, and commit statuses (recorded).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
}

pub struct FakeGitHub {
    /// The API base URL to configure (`http://127.0.0.1:PORT/api/v3`, as on GitHub Enterprise).
    pub api_url: String,
    /// Every request, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Each commit status posted: (sha, body).
    pub statuses: mpsc::UnboundedReceiver<(String, Value)>,
}

#[derive(Clone)]
struct Fake {
    /// `http://127.0.0.1:PORT` of the download server (another port: another origin).
    download_base: String,
    repo: PathBuf,
    full_name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    statuses: mpsc::UnboundedSender<(String, Value)>,
}

fn git(repo: &std::path::Path, args: &[&str]) -> Option<Vec<u8>> {
    let mut command = Command::new("git");
    command.arg("-C").arg(repo).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    let output = command.output().ok()?;
    output.status.success().then_some(output.stdout)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"}))
}

impl Fake {
    fn record(&self, path: String, headers: &HeaderMap) {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.seen.lock().expect("lock").push(Seen {
            path,
            authorization,
        });
    }

    fn is_repo(&self, owner: &str, name: &str) -> bool {
        format!("{owner}/{name}") == self.full_name
    }

    fn resolve(&self, reference: &str) -> Option<String> {
        let out = git(
            &self.repo,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
        )?;
        Some(String::from_utf8_lossy(&out).trim().to_string())
    }
}

async fn zipball(
    State(fake): State<Fake>,
    Path((owner, name, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    fake.record(format!("/repos/{owner}/{name}/zipball/{sha}"), &headers);
    if !fake.is_repo(&owner, &name) || fake.resolve(&sha).is_none() {
        return not_found();
    }
    // GitHub answers with a redirect to its download host.
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("{}/codeload/{owner}/{name}/zip/{sha}", fake.download_base),
        )],
    )
        .into_response()
}

async fn codeload(
    State(fake): State<Fake>,
    Path((owner, name, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    fake.record(format!("/codeload/{owner}/{name}/zip/{sha}"), &headers);
    let Some(full) = fake.resolve(&sha) else {
        return not_found();
    };
    let prefix = format!("--prefix={owner}-{name}-{}/", &full[..7]);
    match git(&fake.repo, &["archive", "--format=zip", &prefix, &full]) {
        Some(zip) => ([(header::CONTENT_TYPE, "application/zip")], zip).into_response(),
        None => not_found(),
    }
}

async fn commit(
    State(fake): State<Fake>,
    Path((owner, name, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    fake.record(
        format!("/repos/{owner}/{name}/commits/{reference}"),
        &headers,
    );
    if !fake.is_repo(&owner, &name) {
        return not_found();
    }
    let Some(sha) = fake.resolve(&reference) else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": format!("No commit found for SHA: {reference}")}),
        );
    };
    let Some(out) = git(&fake.repo, &["log", "-1", "--format=%aI%x00%B", &sha]) else {
        return not_found();
    };
    let text = String::from_utf8_lossy(&out).to_string();
    let (date, message) = text.split_once('\0').unwrap_or(("", ""));
    json_response(
        StatusCode::OK,
        json!({
            "sha": sha,
            "html_url": format!("https://github.example/{owner}/{name}/commit/{sha}"),
            "commit": {
                "message": message.trim_end_matches('\n'),
                "author": {"name": "Ada", "date": date.trim()}
            }
        }),
    )
}

async fn branches_where_head(
    State(fake): State<Fake>,
    Path((owner, name, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    fake.record(
        format!("/repos/{owner}/{name}/commits/{sha}/branches-where-head"),
        &headers,
    );
    let out = git(
        &fake.repo,
        &["branch", "--points-at", &sha, "--format=%(refname:short)"],
    )
    .unwrap_or_default();
    let names: Vec<Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|n| json!({"name": n, "commit": {"sha": sha}, "protected": false}))
        .collect();
    json_response(StatusCode::OK, Value::Array(names))
}

async fn status(
    State(fake): State<Fake>,
    Path((owner, name, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.record(format!("/repos/{owner}/{name}/statuses/{sha}"), &headers);
    if !fake.is_repo(&owner, &name) {
        return not_found();
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": "Problems parsing JSON"}),
        );
    };
    let _ = fake.statuses.send((sha, value.clone()));
    json_response(StatusCode::CREATED, value)
}

/// Serve `repo` as `full_name` (`owner/name`) on a loopback port, and its downloads on
/// another.
pub async fn start(repo: PathBuf, full_name: &str) -> FakeGitHub {
    let (sender, statuses) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listener = bind().await.expect("bind the fake GitHub");
    let downloads = bind().await.expect("bind the fake GitHub's download host");
    let address = listener.local_addr().expect("address");
    let fake = Fake {
        download_base: format!("http://{}", downloads.local_addr().expect("address")),
        repo,
        full_name: full_name.to_string(),
        seen: seen.clone(),
        statuses: sender,
    };
    let api = Router::new()
        .route("/repos/{owner}/{name}/zipball/{sha}", get(zipball))
        .route("/repos/{owner}/{name}/commits/{reference}", get(commit))
        .route(
            "/repos/{owner}/{name}/commits/{sha}/branches-where-head",
            get(branches_where_head),
        )
        .route("/repos/{owner}/{name}/statuses/{sha}", post(status));
    let app = Router::new().nest("/api/v3", api).with_state(fake.clone());
    let download = Router::new()
        .route("/codeload/{owner}/{name}/zip/{sha}", get(codeload))
        .with_state(fake);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tokio::spawn(async move {
        let _ = axum::serve(downloads, download).await;
    });
    FakeGitHub {
        api_url: format!("http://{address}/api/v3"),
        seen,
        statuses,
    }
}
