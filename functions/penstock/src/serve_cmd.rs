//! `penstock serve`: the long-running runner of a data directory. It executes whatever is
//! started (by `penstock start`, the API, triggers), finishes what a killed runner left, and
//! serves on one HTTP listener (loopback by default):
//! - the CodePipeline API on `POST /`;
//! - GitHub webhooks on `POST /webhooks/github` (when `PENSTOCK_GITHUB_WEBHOOK_SECRET` is set).
//!
//! It also starts pipelines tagged `penstock:schedule`, and, when `PENSTOCK_GITHUB_TOKEN` is
//! set, reports commit statuses to GitHub for executions of GitHub commits.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use penstock_api::ApiDeps;
use penstock_app::intake::Intake;
use penstock_local::commit_status::{CommitStatusReporter, PUBLIC_URL_ENV};
use penstock_local::github_source::{GitHubClient, GitHubSettings, TOKEN_ENV};
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

    let keys = crate::api_keys::load_or_create(runner.data_dir().root.as_path())?;
    let region = std::env::var("PENSTOCK_REGION").unwrap_or_else(|_| "us-east-1".into());
    let account = std::env::var("PENSTOCK_ACCOUNT_ID").unwrap_or_else(|_| "000000000000".into());
    let deps = ApiDeps::new(
        runner.control.clone(),
        keys.credentials(),
        region.clone(),
        account,
    );
    let mut app = Router::new();
    let webhooks = webhook_secret();
    let webhooks_on = webhooks.is_some();
    if let Some(secret) = webhooks {
        app = app.merge(penstock_webhook::router(WebhookDeps::new(
            intake.clone(),
            secret,
        )));
    }
    // The API answers every other path, so it is merged last.
    app = app.merge(penstock_api::router(deps));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {address}: {e}"))?;
    let bound = listener.local_addr()?;
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    }));
    println!("penstock serve: CodePipeline API on http://{bound}");
    if webhooks_on {
        println!("penstock serve: GitHub webhooks on POST /webhooks/github at http://{bound}");
    } else {
        println!(
            "penstock serve: GitHub webhooks disabled; set {} to accept them",
            penstock_webhook::SECRET_ENV
        );
    }
    let endpoint = format!("http://{bound}");
    match &keys.file {
        Some(file) if keys.created => {
            println!(
                "penstock serve: created API credentials in {} (mode 0600). To use the aws CLI:",
                file.display()
            );
            print!("{}", keys.shell_lines(&endpoint, &region));
        }
        Some(_) => println!(
            "penstock serve: aws CLI settings: eval \"$(penstock --data-dir {} credentials --endpoint-url {endpoint})\"",
            data_dir.display()
        ),
        None => println!(
            "penstock serve: API credentials from PENSTOCK_ACCESS_KEY_ID/PENSTOCK_SECRET_ACCESS_KEY"
        ),
    }

    match (&github.token, github_client) {
        (Some(_), Some(client)) => {
            let public_url = std::env::var(PUBLIC_URL_ENV)
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or(endpoint);
            let reporter =
                CommitStatusReporter::new(client, runner.control.clone(), Some(public_url));
            tasks.push(reporter.spawn(status_changes));
            println!(
                "penstock serve: reporting commit statuses to {}",
                github.api_url
            );
        }
        _ => println!(
            "penstock serve: commit statuses disabled; set {TOKEN_ENV} to report them to GitHub"
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

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}
