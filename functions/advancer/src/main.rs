//! The advancer Lambda: wiring only (see the library for the handler).

use std::sync::Arc;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn, tracing};
use penstock_advancer::Advancer;
use penstock_aws::{AwsClients, AwsConfig, AwsParts};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing::init_default_subscriber();
    let config = AwsConfig::from_env()?;
    let sdk = penstock_aws::config::load_sdk_config().await?;
    let parts = AwsParts::new(config, AwsClients::new(&sdk));
    let external_id = penstock_aws::parts::external_id_from_env();
    // Polling external work (builds) needs the artifact store; without it the sweeper still
    // re-publishes, reschedules and times out.
    let providers = parts
        .providers(Arc::new(penstock_local::adapters::ZipArchiver), external_id)
        .map(|p| Arc::new(p) as Arc<dyn penstock_app::ports::ProviderRegistry>);
    let mut advancer = Advancer::new(parts.engine(), providers);
    advancer.lease_ms = penstock_advancer::dispatch_lease_from_env();
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
