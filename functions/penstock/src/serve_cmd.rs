//! `penstock serve`: the long-running runner of a data directory. It executes whatever is
//! started (by `penstock start`, the API, triggers) and finishes what a killed runner left.

use std::path::Path;

use penstock_local::runtime::{DataDir, Runner};

pub async fn serve(data_dir: &Path, listen: &str) -> anyhow::Result<i32> {
    let address: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    let mut runner = Runner::open(DataDir::new(data_dir))?;
    let tasks = runner.start();
    println!(
        "penstock serve: running pipelines of {} (API address {address})",
        data_dir.display()
    );
    shutdown_signal().await;
    for task in tasks {
        task.abort();
    }
    Ok(0)
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
