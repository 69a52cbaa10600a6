//! The role assumer: `AssumeRole` into an action's `roleArn` (with an `ExternalId` when
//! configured), a session name that names the execution, credentials cached until shortly
//! before they expire, and an SDK configuration for the target account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sts::Client;

use crate::sdk_error::{ErrorKind, describe, kind};

/// Credentials are used until this long before they expire, then assumed again.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How long assumed credentials last (STS's default and minimum role session is 15 minutes;
/// an hour outlives any single dispatch).
const SESSION_SECONDS: i32 = 3600;

/// What to assume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssumeRequest {
    pub role_arn: String,
    pub external_id: Option<String>,
    /// Already valid for STS (see [`session_name`]).
    pub session_name: String,
    /// The region the target clients use (the action's `region`), else the base config's.
    pub region: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssumeError {
    /// STS refused: the role does not trust us, the ExternalId is wrong, the ARN is bad.
    #[error("assuming {role_arn} was refused: {reason}")]
    Denied { role_arn: String, reason: String },
    /// STS could not be reached or throttled us: trying again later can work.
    #[error("assuming {role_arn} failed: {reason}")]
    Unavailable { role_arn: String, reason: String },
}

impl AssumeError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, AssumeError::Unavailable { .. })
    }
}

/// A role session name for an execution: `{pipeline}-{execution id}`, with characters STS does
/// not accept replaced and the pipeline part shortened so the whole stays within 64 characters
/// (the execution id is kept whole: it is what CloudTrail readers look for).
pub fn session_name(pipeline: &str, execution_id: &str) -> String {
    let clean = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let execution: String = clean(execution_id).chars().take(64).collect();
    let room = 64usize.saturating_sub(execution.len() + 1);
    let pipeline: String = clean(pipeline).chars().take(room).collect();
    let name = match (pipeline.is_empty(), execution.is_empty()) {
        (false, false) => format!("{pipeline}-{execution}"),
        (true, false) => execution,
        (false, true) => pipeline,
        (true, true) => String::new(),
    };
    if name.len() < 2 {
        format!("penstock{name}")
    } else {
        name
    }
}

/// The current time, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Clone)]
struct Cached {
    config: SdkConfig,
    expires: SystemTime,
}

/// Assumes roles and caches the resulting configurations.
#[derive(Clone)]
pub struct RoleAssumer {
    sts: Client,
    base: SdkConfig,
    clock: Clock,
    cache: Arc<Mutex<HashMap<AssumeRequest, Cached>>>,
}

impl std::fmt::Debug for RoleAssumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleAssumer").finish_non_exhaustive()
    }
}

impl RoleAssumer {
    /// `sts` calls STS with the function's own credentials; `base` is the configuration the
    /// assumed credentials replace the credentials of (endpoints, retries stay).
    pub fn new(sts: Client, base: SdkConfig) -> Self {
        Self {
            sts,
            base,
            clock: Arc::new(SystemTime::now),
            cache: Arc::default(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// An SDK configuration acting as the assumed role: from the cache while its credentials
    /// have more than [`REFRESH_BEFORE_EXPIRY`] left, else assumed now.
    pub async fn config_for(&self, request: &AssumeRequest) -> Result<SdkConfig, AssumeError> {
        let now = (self.clock)();
        if let Ok(cache) = self.cache.lock()
            && let Some(cached) = cache.get(request)
            && now + REFRESH_BEFORE_EXPIRY < cached.expires
        {
            return Ok(cached.config.clone());
        }
        let output = self
            .sts
            .assume_role()
            .role_arn(&request.role_arn)
            .role_session_name(&request.session_name)
            .set_external_id(request.external_id.clone())
            .duration_seconds(SESSION_SECONDS)
            .send()
            .await
            .map_err(|e| match kind(&e) {
                ErrorKind::Throttled | ErrorKind::Transport => AssumeError::Unavailable {
                    role_arn: request.role_arn.clone(),
                    reason: describe(&e),
                },
                _ => AssumeError::Denied {
                    role_arn: request.role_arn.clone(),
                    reason: describe(&e),
                },
            })?;
        let credentials = output
            .credentials()
            .ok_or_else(|| AssumeError::Unavailable {
                role_arn: request.role_arn.clone(),
                reason: "STS returned no credentials".into(),
            })?;
        let expires = SystemTime::try_from(*credentials.expiration())
            .unwrap_or(now + Duration::from_secs(SESSION_SECONDS as u64));
        let provider = SharedCredentialsProvider::new(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_string()),
            Some(expires),
            "penstock-assume-role",
        ));
        let mut builder = self.base.to_builder().credentials_provider(provider);
        if let Some(region) = &request.region {
            builder = builder.region(Region::new(region.clone()));
        }
        let config = builder.build();
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, cached| now + REFRESH_BEFORE_EXPIRY < cached.expires);
            cache.insert(
                request.clone(),
                Cached {
                    config: config.clone(),
                    expires,
                },
            );
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        (2..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn session_names_keep_the_execution_id_and_sts_rules() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let name = session_name("my-pipeline", id);
        assert_eq!(name, format!("my-pipeline-{id}"));
        let long = session_name(&"p".repeat(100), id);
        assert_eq!(long.len(), 64);
        assert!(long.ends_with(id));
        let odd = session_name("pipe line/ü", id);
        assert!(valid(&odd), "{odd}");
        assert!(odd.starts_with("pipe-line--"));
        assert!(valid(&session_name("", "")));
        assert!(valid(&session_name("x", "")));
        assert!(valid(&session_name("", &"e".repeat(80))));
    }
}
