//! The trigger-intake Lambda: API Gateway HTTP API requests (`POST /webhooks/github`),
//! EventBridge events (S3 objects created, ECR images pushed) and EventBridge Scheduler's
//! scheduled starts, in one function. Wiring only; the handler is the library's.

use std::sync::Arc;

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use penstock_app::control::Control;
use penstock_app::intake::Intake;
use penstock_aws::{AwsClients, AwsConfig, AwsParts, SecretsManagerSecrets};
use penstock_local::github_source::{GitHubClient, GitHubSettings};
use penstock_webhook::lambda::{WebhookFunction, diagnostic};
use penstock_webhook::{WebhookDeps, WebhookSecret};
use serde_json::Value;

/// Secrets Manager secret whose string is the GitHub webhook secret.
const SECRET_VAR: &str = "PENSTOCK_GITHUB_WEBHOOK_SECRET_ARN";
/// The GitHub REST API (default `https://api.github.com`), for pull requests' changed files.
const GITHUB_API_URL_VAR: &str = "PENSTOCK_GITHUB_API_URL";
/// Secrets Manager secret whose string is a GitHub token (optional: public repositories only).
const GITHUB_TOKEN_SECRET_VAR: &str = "PENSTOCK_GITHUB_TOKEN_SECRET_ARN";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let secrets = SecretsManagerSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk));
    let secret = secrets.from_env(SECRET_VAR).await?;
    // Pull-request triggers with `filePaths` filters need the pull request's changed files,
    // which only the GitHub API lists (the payload does not).
    let token = secrets.optional_from_env(GITHUB_TOKEN_SECRET_VAR).await?;
    let github = GitHubClient::new(&GitHubSettings::new(
        std::env::var(GITHUB_API_URL_VAR).ok(),
        token.map(|t| t.expose().to_string()),
    ))?;
    let parts = AwsParts::new(config, AwsClients::new(&sdk));
    let intake =
        Intake::new(Control::new(parts.engine())).with_pull_request_files(Arc::new(github));
    let function = WebhookFunction::new(WebhookDeps::new(
        intake,
        WebhookSecret::new(secret.expose().as_bytes().to_vec()),
    ));
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        function.handle(event).await.map_err(diagnostic)
    }))
    .await
}
