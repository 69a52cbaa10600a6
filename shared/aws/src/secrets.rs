//! Secrets the functions hold (the GitHub webhook secret, API credentials): stored as
//! KMS-encrypted, base64-encoded ciphertext in the function's environment and decrypted once at
//! cold start, or kept in Secrets Manager (what the SAM template creates) and read once at cold
//! start. A [`Secret`] never shows its value in `Debug` output, logs or errors.

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::sdk_error::{ErrorKind, describe, kind};

/// A decrypted secret. Its value is only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret's value, for the one place that needs it (a signature check).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    Missing(String),
    #[error("secret {name} is not base64-encoded KMS ciphertext")]
    NotBase64 { name: String },
    #[error("secret {name} could not be decrypted: {reason}")]
    Refused { name: String, reason: String },
    #[error("secret {name}: KMS unavailable: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("secret {name} is not UTF-8 text")]
    NotText { name: String },
}

impl SecretError {
    /// Whether starting again later can help (KMS was unreachable or throttled).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SecretError::Unavailable { .. })
    }
}

/// Decrypts secrets with KMS.
#[derive(Clone, Debug)]
pub struct KmsSecrets {
    client: Client,
}

impl KmsSecrets {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Decrypt the base64 ciphertext held by the environment variable `var`.
    pub async fn from_env(&self, var: &str) -> Result<Secret, SecretError> {
        let ciphertext = std::env::var(var).map_err(|_| SecretError::Missing(var.to_string()))?;
        self.decrypt_base64(var, &ciphertext).await
    }

    /// Decrypt base64 ciphertext; `name` says which secret it is in errors.
    pub async fn decrypt_base64(
        &self,
        name: &str,
        ciphertext: &str,
    ) -> Result<Secret, SecretError> {
        let bytes = STANDARD
            .decode(ciphertext.trim())
            .map_err(|_| SecretError::NotBase64 {
                name: name.to_string(),
            })?;
        let output = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(bytes))
            .send()
            .await
            .map_err(|e| match kind(&e) {
                ErrorKind::Throttled | ErrorKind::Transport => SecretError::Unavailable {
                    name: name.to_string(),
                    reason: describe(&e),
                },
                _ => SecretError::Refused {
                    name: name.to_string(),
                    reason: describe(&e),
                },
            })?;
        let plaintext = output.plaintext().ok_or_else(|| SecretError::Refused {
            name: name.to_string(),
            reason: "KMS returned no plaintext".into(),
        })?;
        String::from_utf8(plaintext.as_ref().to_vec())
            .map(Secret)
            .map_err(|_| SecretError::NotText {
                name: name.to_string(),
            })
    }

    /// Encrypt a value under `key_id` into the base64 form [`KmsSecrets::decrypt_base64`]
    /// reads (for deployment tooling and tests).
    pub async fn encrypt_base64(
        &self,
        key_id: &str,
        value: &Secret,
    ) -> Result<String, SecretError> {
        let output = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(value.expose().as_bytes()))
            .send()
            .await
            .map_err(|e| SecretError::Unavailable {
                name: key_id.to_string(),
                reason: describe(&e),
            })?;
        let blob = output
            .ciphertext_blob()
            .ok_or_else(|| SecretError::Refused {
                name: key_id.to_string(),
                reason: "KMS returned no ciphertext".into(),
            })?;
        Ok(STANDARD.encode(blob.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }
}

/// Reads secrets from Secrets Manager (the template generates them, so they never pass through
/// stack parameters).
#[derive(Clone, Debug)]
pub struct SecretsManagerSecrets {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }

    /// The string value of the secret whose ARN is in the environment variable `var`.
    pub async fn from_env(&self, var: &str) -> Result<Secret, SecretError> {
        let arn = std::env::var(var).map_err(|_| SecretError::Missing(var.to_string()))?;
        self.read(var, &arn).await
    }

    /// Like [`SecretsManagerSecrets::from_env`] for an optional secret: `None` when `var` is
    /// unset or empty; a secret that is named but cannot be read is still an error.
    pub async fn optional_from_env(&self, var: &str) -> Result<Option<Secret>, SecretError> {
        match std::env::var(var) {
            Ok(arn) if !arn.trim().is_empty() => self.read(var, arn.trim()).await.map(Some),
            _ => Ok(None),
        }
    }

    /// The string value of the secret `arn`; `var` names it in errors.
    pub async fn read(&self, var: &str, arn: &str) -> Result<Secret, SecretError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                let reason = describe(&e);
                match kind(&e) {
                    ErrorKind::Throttled | ErrorKind::Transport => SecretError::Unavailable {
                        name: var.to_string(),
                        reason,
                    },
                    _ => SecretError::Refused {
                        name: var.to_string(),
                        reason,
                    },
                }
            })?;
        output
            .secret_string()
            .map(Secret::new)
            .ok_or_else(|| SecretError::NotText {
                name: var.to_string(),
            })
    }
}
