//! Adapters on AWS: the DynamoDB state store, the EventBridge bus, S3+KMS artifacts, KMS
//! secrets, the STS role assumer and the AWS action providers, all on the official SDK.

pub mod artifacts;
pub mod bus;
pub mod cloudformation;
pub mod codedeploy;
pub mod config;
pub mod dynamo;
pub mod handler;
pub mod notifications;
pub mod parts;
pub mod providers;
mod sdk_error;
pub mod secrets;
pub mod sts;
#[cfg(feature = "testing")]
pub mod testing;

pub use artifacts::S3Artifacts;
pub use bus::EventBridgeBus;
pub use config::{AwsClients, AwsConfig, ConfigError};
pub use dynamo::DynamoStore;
pub use handler::HandlerError;
pub use parts::AwsParts;
pub use secrets::{KmsSecrets, Secret, SecretsManagerSecrets};
pub use sts::RoleAssumer;
