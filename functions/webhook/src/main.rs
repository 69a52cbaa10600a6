//! The trigger-intake Lambda (API Gateway HTTP API, `POST /webhooks/github`): wiring only; the
//! router is the library's, the same one `penstock serve` serves.

use penstock_app::control::Control;
use penstock_app::intake::Intake;
use penstock_aws::{AwsClients, AwsConfig, AwsParts, SecretsManagerSecrets};
use penstock_webhook::{WebhookDeps, WebhookSecret, router};

/// Secrets Manager secret whose string is the GitHub webhook secret.
const SECRET_VAR: &str = "PENSTOCK_GITHUB_WEBHOOK_SECRET_ARN";

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let secret = SecretsManagerSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk))
        .from_env(SECRET_VAR)
        .await?;
    let parts = AwsParts::new(config, AwsClients::new(&sdk));
    let intake = Intake::new(Control::new(parts.engine()));
    let deps = WebhookDeps::new(
        intake,
        WebhookSecret::new(secret.expose().as_bytes().to_vec()),
    );
    lambda_http::run(router(deps)).await
}
