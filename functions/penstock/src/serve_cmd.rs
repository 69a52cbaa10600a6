//! `penstock serve`: the long-running runner of a data directory. It executes whatever is
//! started (by `penstock start`, the API, triggers), finishes what a killed runner left, and
//! serves on one HTTP listener (loopback by default):
//! - the CodePipeline API on `POST /` (when `PENSTOCK_ACCESS_KEY_ID` and
//!   `PENSTOCK_SECRET_ACCESS_KEY` are set);
//! - GitHub webhooks on `POST /webhooks/github` (when `PENSTOCK_GITHUB_WEBHOOK_SECRET` is set).
//!
//! It also starts pipelines tagged `penstock:schedule`, and, when `PENSTOCK_GITHUB_TOKEN` is
//! set, reports commit statuses to GitHub for executions of GitHub commits.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use penstock_api::ApiDeps;
use penstock_api::auth::Credentials;
use penstock_app::intake::Intake;
use penstock_local::commit_status::{CommitStatusReporter, PUBLIC_URL_ENV};
use penstock_local::github_source::{GitHubClient, GitHubSettings};
use penstock_local::runtime::{DataDir, Runner};
use penstock_local::scheduler::LocalScheduler;
use penstock_webhook::{WebhookDeps, WebhookSecret};

pub async fn serve(data_dir: &Path, listen: &str) -> anyhow::Result<i32> {
    let address: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    let mut runner = Runner::open(DataDir::new(data_dir))?;
    // Subscribed before the runner starts, so the statuses of work it resumes are not missed.
    let status_changes = runner.changes.subscribe();
    let mut tasks = runner.start();
    println!(
        "penstock serve: running pipelines of {}",
        data_dir.display()
    );

    let github = GitHubSettings::from_env();
    let github_client = match GitHubClient::new(&github) {
        Ok(client) => Some(client),
        Err(e) => {
            eprintln!("penstock serve: GitHub API unavailable: {e}");
            None
        }
    };
    let mut intake = Intake::new(runner.control.clone());
    if let Some(client) = &github_client {
        intake = intake.with_pull_request_files(Arc::new(client.clone()));
    }
    tasks.push(LocalScheduler::new(intake.clone()).spawn());

    let mut app = Router::new();
    let mut served = Vec::new();
    match webhook_secret() {
        Some(secret) => {
            app = app.merge(penstock_webhook::router(WebhookDeps::new(
                intake.clone(),
                secret,
            )));
            served.push("GitHub webhooks on POST /webhooks/github");
        }
        None => eprintln!(
            "penstock serve: GitHub webhooks disabled; set {} to accept them",
            penstock_webhook::SECRET_ENV
        ),
    }
    match api_credentials() {
        Some(credentials) => {
            let region = std::env::var("PENSTOCK_REGION").unwrap_or_else(|_| "us-east-1".into());
            let account =
                std::env::var("PENSTOCK_ACCOUNT_ID").unwrap_or_else(|_| "000000000000".into());
            let deps = ApiDeps::new(runner.control.clone(), credentials, region, account);
            app = app.merge(penstock_api::router(deps));
            served.push("the CodePipeline API on POST /");
        }
        None => eprintln!(
            "penstock serve: API disabled; set PENSTOCK_ACCESS_KEY_ID and \
             PENSTOCK_SECRET_ACCESS_KEY to serve the CodePipeline API on {address}"
        ),
    }
    let mut public_url = std::env::var(PUBLIC_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty());
    if !served.is_empty() {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("--listen {address}: {e}"))?;
        let bound = listener.local_addr()?;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        }));
        for what in &served {
            println!("penstock serve: {what} at http://{bound}");
        }
        public_url.get_or_insert_with(|| format!("http://{bound}"));
    }

    match (&github.token, github_client) {
        (Some(_), Some(client)) => {
            let reporter = CommitStatusReporter::new(client, runner.control.clone(), public_url);
            tasks.push(reporter.spawn(status_changes));
            println!(
                "penstock serve: reporting commit statuses to {}",
                github.api_url
            );
        }
        _ => eprintln!(
            "penstock serve: commit statuses disabled; set {} to report them to GitHub",
            penstock_local::github_source::TOKEN_ENV
        ),
    }

    shutdown_signal().await;
    for task in tasks {
        task.abort();
    }
    Ok(0)
}

/// The GitHub webhook secret, from the environment (never printed).
fn webhook_secret() -> Option<WebhookSecret> {
    let secret = std::env::var(penstock_webhook::SECRET_ENV).ok()?;
    (!secret.is_empty()).then(|| WebhookSecret::new(secret))
}

/// The key pair API clients sign with, from the environment.
fn api_credentials() -> Option<Credentials> {
    let key = std::env::var("PENSTOCK_ACCESS_KEY_ID").ok()?;
    let secret = std::env::var("PENSTOCK_SECRET_ACCESS_KEY").ok()?;
    (!key.is_empty() && !secret.is_empty()).then(|| Credentials::single(key, secret))
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}
