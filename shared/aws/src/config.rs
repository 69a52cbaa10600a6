//! Typed configuration read once at start-up, and the SDK clients built from it.
//!
//! Endpoints, region and credentials come from the standard AWS chain (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, the credential providers); Penstock's own resources (table, bus, bucket, key)
//! come from `PENSTOCK_*` variables. Nothing is hard-coded: a missing variable fails start-up
//! with a message naming it.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;

/// The DynamoDB table holding all state.
pub const TABLE_VAR: &str = "PENSTOCK_TABLE";
/// The custom EventBridge bus Penstock publishes on.
pub const BUS_VAR: &str = "PENSTOCK_BUS";
/// The S3 bucket for artifacts of pipelines that declare no artifact store of their own.
pub const BUCKET_VAR: &str = "PENSTOCK_ARTIFACT_BUCKET";
/// The KMS key (id, ARN or alias) artifacts are encrypted with when a pipeline declares none.
pub const KMS_KEY_VAR: &str = "PENSTOCK_KMS_KEY_ARN";
/// The base URL of approval pages (`https://…/approvals`), linked from approval notifications.
pub const APPROVAL_URL_VAR: &str = "PENSTOCK_APPROVAL_URL";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {name} is not set ({what})")]
    Missing {
        name: &'static str,
        what: &'static str,
    },
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("no AWS region configured (set AWS_REGION)")]
    NoRegion,
}

/// Penstock's AWS resources, as the infrastructure created them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    pub table: String,
    pub event_bus: String,
    /// Where artifacts go; only functions that read or write artifacts are given it.
    pub artifacts: Option<ArtifactConfig>,
}

/// The default artifact store: for pipelines whose declaration names no bucket or no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactConfig {
    pub bucket: String,
    pub kms_key: String,
}

impl AwsConfig {
    /// Read the `PENSTOCK_*` variables; fails on the first one missing or empty.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &'static str, what: &'static str| -> Result<String, ConfigError> {
            value(name).ok_or(ConfigError::Missing { name, what })
        };
        let artifacts = match (value(BUCKET_VAR), value(KMS_KEY_VAR)) {
            (None, None) => None,
            (Some(bucket), Some(kms_key)) => {
                if bucket.contains('/') {
                    return Err(ConfigError::Invalid {
                        name: BUCKET_VAR,
                        reason: "a bucket name, not a path or URL".into(),
                    });
                }
                Some(ArtifactConfig { bucket, kms_key })
            }
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    name: KMS_KEY_VAR,
                    what: "the KMS key for artifacts, which go with the artifact bucket",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    name: BUCKET_VAR,
                    what: "the artifact bucket, which goes with the artifact key",
                });
            }
        };
        Ok(Self {
            table: required(TABLE_VAR, "the DynamoDB table name")?,
            event_bus: required(BUS_VAR, "the EventBridge bus name or ARN")?,
            artifacts,
        })
    }

    /// The artifact store, for functions that cannot work without one.
    pub fn require_artifacts(&self) -> Result<&ArtifactConfig, ConfigError> {
        self.artifacts.as_ref().ok_or(ConfigError::Missing {
            name: BUCKET_VAR,
            what: "the artifact bucket (with PENSTOCK_KMS_KEY_ARN)",
        })
    }
}

/// Load the SDK configuration from the standard chain and check that it names a region.
pub async fn load_sdk_config() -> Result<SdkConfig, ConfigError> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    if config.region().is_none() {
        return Err(ConfigError::NoRegion);
    }
    Ok(config)
}

/// One client per service, all from the same SDK configuration and with the same
/// interceptors (tests count calls and inject faults through them).
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub s3: aws_sdk_s3::Client,
    pub kms: aws_sdk_kms::Client,
    pub sts: aws_sdk_sts::Client,
    pub codebuild: aws_sdk_codebuild::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    pub sns: aws_sdk_sns::Client,
    pub codedeploy: aws_sdk_codedeploy::Client,
    config: SdkConfig,
    interceptors: Vec<SharedInterceptor>,
}

macro_rules! client_with {
    ($service:ident, $config:expr, $interceptors:expr) => {{
        let mut builder = $service::config::Builder::from($config);
        for interceptor in $interceptors {
            builder.push_interceptor(interceptor.clone());
        }
        $service::Client::from_conf(builder.build())
    }};
}

impl AwsClients {
    pub fn new(config: &SdkConfig) -> Self {
        Self::with_interceptors(config, Vec::new())
    }

    pub fn with_interceptors(config: &SdkConfig, interceptors: Vec<SharedInterceptor>) -> Self {
        Self {
            dynamodb: client_with!(aws_sdk_dynamodb, config, &interceptors),
            eventbridge: client_with!(aws_sdk_eventbridge, config, &interceptors),
            s3: client_with!(aws_sdk_s3, config, &interceptors),
            kms: client_with!(aws_sdk_kms, config, &interceptors),
            sts: client_with!(aws_sdk_sts, config, &interceptors),
            codebuild: client_with!(aws_sdk_codebuild, config, &interceptors),
            cloudformation: client_with!(aws_sdk_cloudformation, config, &interceptors),
            secretsmanager: client_with!(aws_sdk_secretsmanager, config, &interceptors),
            sns: client_with!(aws_sdk_sns, config, &interceptors),
            codedeploy: client_with!(aws_sdk_codedeploy, config, &interceptors),
            config: config.clone(),
            interceptors,
        }
    }

    /// The SDK configuration these clients were built from.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// Clients for another configuration (an assumed role's), keeping the interceptors.
    pub fn for_config(&self, config: &SdkConfig) -> Self {
        Self::with_interceptors(config, self.interceptors.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_complete_environment_is_read() {
        let config = AwsConfig::from_lookup(lookup(&[
            (TABLE_VAR, "penstock"),
            (BUS_VAR, "penstock-bus"),
            (BUCKET_VAR, "artifacts"),
            (KMS_KEY_VAR, "alias/penstock"),
        ]))
        .expect("config");
        assert_eq!(config.table, "penstock");
        let artifacts = config.require_artifacts().expect("artifacts");
        assert_eq!(artifacts.kms_key, "alias/penstock");
    }

    #[test]
    fn artifacts_are_optional_but_come_in_pairs() {
        let config =
            AwsConfig::from_lookup(lookup(&[(TABLE_VAR, "t"), (BUS_VAR, "b")])).expect("config");
        assert_eq!(config.artifacts, None);
        assert!(config.require_artifacts().is_err());
        let error = AwsConfig::from_lookup(lookup(&[
            (TABLE_VAR, "t"),
            (BUS_VAR, "b"),
            (BUCKET_VAR, "artifacts"),
        ]))
        .expect_err("bucket without key");
        assert!(matches!(
            error,
            ConfigError::Missing {
                name: KMS_KEY_VAR,
                ..
            }
        ));
    }

    #[test]
    fn a_missing_or_empty_variable_is_named() {
        let error = AwsConfig::from_lookup(lookup(&[(TABLE_VAR, "penstock"), (BUS_VAR, " ")]))
            .expect_err("missing bus");
        assert_eq!(
            error.to_string(),
            "environment variable PENSTOCK_BUS is not set (the EventBridge bus name or ARN)"
        );
        let error = AwsConfig::from_lookup(lookup(&[
            (TABLE_VAR, "penstock"),
            (BUS_VAR, "bus"),
            (BUCKET_VAR, "s3://artifacts"),
            (KMS_KEY_VAR, "k"),
        ]))
        .expect_err("bucket URL");
        assert!(matches!(
            error,
            ConfigError::Invalid {
                name: BUCKET_VAR,
                ..
            }
        ));
    }
}
