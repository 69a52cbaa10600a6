//! `penstock serve`: the long-running runner of a data directory. It executes whatever is
//! started (by `penstock start`, the API, triggers) and finishes what a killed runner left.

use std::path::Path;

use penstock_api::ApiDeps;
use penstock_api::auth::Credentials;
use penstock_local::runtime::{DataDir, Runner};

pub async fn serve(data_dir: &Path, listen: &str) -> anyhow::Result<i32> {
    let address: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    let mut runner = Runner::open(DataDir::new(data_dir))?;
    let mut tasks = runner.start();
    println!(
        "penstock serve: running pipelines of {}",
        data_dir.display()
    );
    match api_credentials() {
        Some(credentials) => {
            let region = std::env::var("PENSTOCK_REGION").unwrap_or_else(|_| "us-east-1".into());
            let account =
                std::env::var("PENSTOCK_ACCOUNT_ID").unwrap_or_else(|_| "000000000000".into());
            let deps = ApiDeps::new(runner.control.clone(), credentials, region, account);
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| anyhow::anyhow!("--listen {address}: {e}"))?;
            let bound = listener.local_addr()?;
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, penstock_api::router(deps)).await {
                    tracing::error!(error = %e, "the API server stopped");
                }
            }));
            println!("penstock serve: CodePipeline API on http://{bound}");
        }
        None => eprintln!(
            "penstock serve: API disabled; set PENSTOCK_ACCESS_KEY_ID and \
             PENSTOCK_SECRET_ACCESS_KEY to serve the CodePipeline API on {address}"
        ),
    }
    shutdown_signal().await;
    for task in tasks {
        task.abort();
    }
    Ok(0)
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
