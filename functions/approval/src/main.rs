//! The approval Lambda: wiring only (see the library for the handler).

use lambda_http::{Request, service_fn, tracing};
use penstock_app::control::Control;
use penstock_aws::{AwsClients, AwsConfig, AwsParts};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let control = Control::new(AwsParts::new(config, AwsClients::new(&sdk)).engine());
    let control = &control;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, std::convert::Infallible>(penstock_approval::handle(control, request).await)
    }))
    .await
}
