//! The adapters of a Penstock function on AWS, built once at cold start from typed
//! configuration and shared by every invocation.

use std::sync::Arc;

use penstock_app::advance::Engine;
use penstock_app::ports::{ActionProvider, Archiver, RandomIds, SystemClock};
use penstock_app::repo::Repository;

use crate::artifacts::S3Artifacts;
use crate::bus::EventBridgeBus;
use crate::config::{AwsClients, AwsConfig, ConfigError};
use crate::dynamo::DynamoStore;
use crate::providers::{AwsProviders, ProviderDeps};
use crate::sts::RoleAssumer;

/// `ExternalId` passed when assuming action roles (optional).
pub const EXTERNAL_ID_VAR: &str = "PENSTOCK_CROSS_ACCOUNT_EXTERNAL_ID";

/// The `ExternalId` for action roles, when configured (empty means none).
pub fn external_id_from_env() -> Option<String> {
    std::env::var(EXTERNAL_ID_VAR)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The CodeBuild project for CodeBuild actions that name none (optional).
pub const DEFAULT_CODEBUILD_PROJECT_VAR: &str = "PENSTOCK_DEFAULT_CODEBUILD_PROJECT";

#[derive(Clone)]
pub struct AwsParts {
    pub config: AwsConfig,
    pub clients: AwsClients,
    pub store: Arc<DynamoStore>,
    pub bus: Arc<EventBridgeBus>,
    /// The artifact store, when the configuration names one.
    pub artifacts: Option<S3Artifacts>,
}

impl AwsParts {
    pub fn new(config: AwsConfig, clients: AwsClients) -> Self {
        let store = Arc::new(DynamoStore::new(clients.dynamodb.clone(), &config.table));
        let bus = Arc::new(EventBridgeBus::new(
            clients.eventbridge.clone(),
            &config.event_bus,
        ));
        let artifacts = config.artifacts.as_ref().map(|artifacts| {
            S3Artifacts::new(clients.s3.clone(), &artifacts.bucket, &artifacts.kms_key)
        });
        Self {
            config,
            clients,
            store,
            bus,
            artifacts,
        }
    }

    /// The use cases' engine over these adapters, on the system clock and random ids.
    pub fn engine(&self) -> Engine {
        Engine::new(
            Repository::new(self.store.clone()),
            self.bus.clone(),
            Arc::new(SystemClock),
            Arc::new(RandomIds),
        )
    }

    /// The artifact store, or the configuration error saying what is missing.
    pub fn require_artifacts(&self) -> Result<S3Artifacts, ConfigError> {
        self.config.require_artifacts()?;
        self.artifacts.clone().ok_or(ConfigError::Missing {
            name: crate::config::BUCKET_VAR,
            what: "the artifact bucket",
        })
    }

    /// The AWS action providers, acting with these clients (and assumed roles), and the GitHub
    /// source when one is given; `None` when the configuration names no artifact store
    /// (providers read and write artifacts).
    pub fn providers(
        &self,
        archiver: Arc<dyn Archiver>,
        external_id: Option<String>,
        github_source: Option<Arc<dyn ActionProvider>>,
    ) -> Option<AwsProviders> {
        Some(AwsProviders::new(ProviderDeps {
            clients: self.clients.clone(),
            assumer: RoleAssumer::new(self.clients.sts.clone(), self.clients.sdk_config().clone()),
            archiver,
            artifacts: self.artifacts.clone()?,
            ids: Arc::new(RandomIds),
            external_id,
            default_codebuild_project: std::env::var(DEFAULT_CODEBUILD_PROJECT_VAR)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            github_source,
            approval_url: std::env::var(crate::config::APPROVAL_URL_VAR)
                .ok()
                .filter(|v| !v.trim().is_empty()),
        }))
    }
}
