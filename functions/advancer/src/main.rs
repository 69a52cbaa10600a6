//! The advancer Lambda: wiring only (see the library for the handler).

use std::sync::Arc;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn, tracing};
use penstock_advancer::Advancer;
use penstock_app::control::Control;
use penstock_aws::{AwsClients, AwsConfig, AwsParts, SecretsManagerSecrets};
use penstock_local::commit_status::CommitStatuses;
use penstock_local::github_source::{GitHubClient, GitHubSettings};
use serde_json::Value;

/// The GitHub REST API commit statuses go to (default `https://api.github.com`).
const GITHUB_API_URL_VAR: &str = "PENSTOCK_GITHUB_API_URL";
/// Secrets Manager secret whose string is a GitHub token; without one, no statuses are posted.
const GITHUB_TOKEN_SECRET_VAR: &str = "PENSTOCK_GITHUB_TOKEN_SECRET_ARN";
/// The base of the links in commit statuses.
const PUBLIC_URL_VAR: &str = "PENSTOCK_PUBLIC_URL";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let parts = AwsParts::new(config, AwsClients::new(&sdk));
    let external_id = penstock_aws::parts::external_id_from_env();
    // Polling external work (builds) needs the artifact store; without it the sweeper still
    // re-publishes, reschedules and times out. GitHub sources never hand off: no need here.
    let providers = parts
        .providers(
            Arc::new(penstock_local::adapters::ZipArchiver),
            external_id,
            None,
        )
        .map(|p| Arc::new(p) as Arc<dyn penstock_app::ports::ProviderRegistry>);
    let token = SecretsManagerSecrets::new(parts.clients.secretsmanager.clone())
        .optional_from_env(GITHUB_TOKEN_SECRET_VAR)
        .await?;
    let github = GitHubSettings::new(
        std::env::var(GITHUB_API_URL_VAR).ok(),
        token.map(|t| t.expose().to_string()),
    );
    let mut advancer = Advancer::new(parts.engine(), providers);
    advancer.lease_ms = penstock_advancer::dispatch_lease_from_env();
    if github.token.is_some() {
        advancer.commit_statuses = Some(CommitStatuses::new(
            GitHubClient::new(&github)?,
            Control::new(parts.engine()),
            std::env::var(PUBLIC_URL_VAR).ok(),
        ));
    } else {
        tracing::info!(
            variable = GITHUB_TOKEN_SECRET_VAR,
            "commit statuses off: no GitHub token"
        );
    }
    let advancer = &advancer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        penstock_aws::handler::outcome(advancer.handle(event.payload).await).map_err(diagnostic)
    }))
    .await
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
