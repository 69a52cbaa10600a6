//! The dispatcher Lambda: wiring only (see the library for the handler).

use std::sync::Arc;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn, tracing};
use penstock_app::dispatch::Dispatcher;
use penstock_aws::{AwsClients, AwsConfig, AwsParts, SecretsManagerSecrets};
use penstock_local::github_source::{GitHubClient, GitHubSettings, GitHubSource};
use serde_json::Value;

/// The GitHub REST API GitHub sources read from (default `https://api.github.com`;
/// `https://HOST/api/v3` for GitHub Enterprise Server).
const GITHUB_API_URL_VAR: &str = "PENSTOCK_GITHUB_API_URL";
/// Secrets Manager secret whose string is a GitHub token (optional: without one, public
/// repositories only).
const GITHUB_TOKEN_SECRET_VAR: &str = "PENSTOCK_GITHUB_TOKEN_SECRET_ARN";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let parts = AwsParts::new(config, AwsClients::new(&sdk));
    let archiver = Arc::new(penstock_local::adapters::ZipArchiver);
    let external_id = penstock_aws::parts::external_id_from_env();
    let artifacts = parts.require_artifacts()?;
    // Read once here; the token lives in the provider's client, never in logs.
    let token = SecretsManagerSecrets::new(parts.clients.secretsmanager.clone())
        .optional_from_env(GITHUB_TOKEN_SECRET_VAR)
        .await?;
    let github = GitHubSettings::new(
        std::env::var(GITHUB_API_URL_VAR).ok(),
        token.map(|t| t.expose().to_string()),
    );
    GitHubClient::new(&github)?; // a malformed API URL fails start-up, not each GitHub action
    let providers = parts
        .providers(
            archiver.clone(),
            external_id,
            Some(Arc::new(GitHubSource::new(&github))),
        )
        .ok_or("the dispatcher needs the artifact store")?;
    let dispatcher = Dispatcher::new(
        parts.engine(),
        Arc::new(artifacts),
        archiver,
        Arc::new(providers),
        format!("dispatcher-{}", uuid_like()),
        penstock_dispatcher::WORK_ROOT.into(),
    );
    let dispatcher = &dispatcher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        penstock_aws::handler::outcome(penstock_dispatcher::handle(dispatcher, event.payload).await)
            .map_err(diagnostic)
    }))
    .await
}

/// Names this function instance in claims.
fn uuid_like() -> String {
    use penstock_app::ports::IdGenerator;
    penstock_app::ports::RandomIds.uuid()
}

/// Lambda's error report: the type says whether a retry can help.
fn diagnostic(error: penstock_aws::HandlerError) -> Diagnostic {
    Diagnostic {
        error_type: if error.retryable {
            "Retryable"
        } else {
            "Rejected"
        }
        .to_string(),
        error_message: error.message,
    }
}
