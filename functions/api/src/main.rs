//! The control-plane Lambda (API Gateway HTTP API, `POST /`): wiring only; the router is the
//! library's, the same one `penstock serve` serves.

use penstock_api::auth::Credentials;
use penstock_api::{ApiDeps, router};
use penstock_app::control::Control;
use penstock_aws::{AwsClients, AwsConfig, AwsParts, SecretsManagerSecrets};

/// Secrets Manager secret holding `{"access_key_id": "...", "secret_access_key": "..."}`.
const CREDENTIALS_SECRET_VAR: &str = "PENSTOCK_API_CREDENTIALS_SECRET_ARN";
const ACCOUNT_VAR: &str = "PENSTOCK_ACCOUNT_ID";
const MAX_BODY_VAR: &str = "PENSTOCK_MAX_BODY_BYTES";

#[derive(serde::Deserialize)]
struct KeyPair {
    access_key_id: String,
    secret_access_key: String,
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let secret = SecretsManagerSecrets::new(aws_secrets_client(&sdk))
        .from_env(CREDENTIALS_SECRET_VAR)
        .await?;
    let keys: KeyPair = serde_json::from_str(secret.expose()).map_err(|_| {
        format!("{CREDENTIALS_SECRET_VAR} must name a secret of JSON {{\"access_key_id\", \"secret_access_key\"}}")
    })?;
    let account = std::env::var(ACCOUNT_VAR).map_err(|_| format!("{ACCOUNT_VAR} is not set"))?;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .ok_or("no AWS region configured")?;
    let parts = AwsParts::new(config, AwsClients::new(&sdk));
    let mut deps = ApiDeps::new(
        Control::new(parts.engine()),
        Credentials::single(keys.access_key_id, keys.secret_access_key),
        region,
        account,
    );
    if let Ok(max) = std::env::var(MAX_BODY_VAR) {
        deps.max_body_bytes = max
            .parse()
            .map_err(|_| format!("{MAX_BODY_VAR} must be a number of bytes"))?;
    }
    lambda_http::run(router(deps)).await
}

fn aws_secrets_client(sdk: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(sdk)
}
