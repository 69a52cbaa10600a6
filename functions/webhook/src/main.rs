//! The trigger-intake Lambda: API Gateway HTTP API requests (`POST /webhooks/github`),
//! EventBridge events (S3 objects created, ECR images pushed) and EventBridge Scheduler's
//! scheduled starts, in one function. Wiring only; the handler is the library's.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use penstock_app::control::Control;
use penstock_app::intake::Intake;
use penstock_aws::{AwsClients, AwsConfig, AwsParts, SecretsManagerSecrets};
use penstock_webhook::lambda::{WebhookFunction, diagnostic};
use penstock_webhook::{WebhookDeps, WebhookSecret};
use serde_json::Value;

/// Secrets Manager secret whose string is the GitHub webhook secret.
const SECRET_VAR: &str = "PENSTOCK_GITHUB_WEBHOOK_SECRET_ARN";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let secret = SecretsManagerSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk))
        .from_env(SECRET_VAR)
        .await?;
    let parts = AwsParts::new(config, AwsClients::new(&sdk));
    let intake = Intake::new(Control::new(parts.engine()));
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
