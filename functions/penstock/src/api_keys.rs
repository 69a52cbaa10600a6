//! The key pair that signs requests to `penstock serve`'s CodePipeline API: from
//! `PENSTOCK_ACCESS_KEY_ID`/`PENSTOCK_SECRET_ACCESS_KEY`, or created once in the data directory
//! (`api-credentials.json`, mode 0600) and kept there.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use penstock_api::auth::Credentials;
use serde::{Deserialize, Serialize};

const FILE: &str = "api-credentials.json";
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#[derive(Serialize, Deserialize)]
struct StoredKeys {
    access_key_id: String,
    secret_access_key: String,
}

impl std::fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Where the keys came from, and the pair itself for the lines a user pastes.
pub struct ApiKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `Some(path)` when they live in the data directory; `None` when from the environment.
    pub file: Option<PathBuf>,
    /// Created by this call (first start).
    pub created: bool,
}

impl ApiKeys {
    pub fn credentials(&self) -> Credentials {
        Credentials::single(self.access_key_id.clone(), self.secret_access_key.clone())
    }

    /// The lines that point the `aws` CLI at the API.
    pub fn shell_lines(&self, endpoint: &str, region: &str) -> String {
        format!(
            "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_DEFAULT_REGION={region}\n# then: aws codepipeline list-pipelines --endpoint-url {endpoint}\n",
            self.access_key_id, self.secret_access_key
        )
    }
}

fn random_string(alphabet: &[u8], len: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    // The alphabets have 32 and 64 symbols, so taking the low bits keeps the choice uniform.
    Ok(bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect())
}

/// The environment's pair, else the data directory's (created on first use).
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<ApiKeys> {
    let from_env = (
        std::env::var("PENSTOCK_ACCESS_KEY_ID").ok(),
        std::env::var("PENSTOCK_SECRET_ACCESS_KEY").ok(),
    );
    if let (Some(key), Some(secret)) = from_env
        && !key.is_empty()
        && !secret.is_empty()
    {
        return Ok(ApiKeys {
            access_key_id: key,
            secret_access_key: secret,
            file: None,
            created: false,
        });
    }
    let path = data_dir.join(FILE);
    if let Some(keys) = read(&path)? {
        return Ok(keys);
    }
    let stored = StoredKeys {
        access_key_id: format!("PSK{}", random_string(KEY_ALPHABET, 17)?),
        secret_access_key: random_string(SECRET_ALPHABET, 40)?,
    };
    let text = serde_json::to_string_pretty(&stored)?;
    // create_new + 0600: never readable by others, and two first starts cannot both write.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(text.as_bytes())
                .and_then(|_| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(ApiKeys {
                access_key_id: stored.access_key_id,
                secret_access_key: stored.secret_access_key,
                file: Some(path),
                created: true,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path)?
            .ok_or_else(|| anyhow::anyhow!("{} vanished while being read", path.display())),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Option<ApiKeys>> {
    use std::os::unix::fs::PermissionsExt;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by other users (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let stored: StoredKeys = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a credentials file", path.display()))?;
    Ok(Some(ApiKeys {
        access_key_id: stored.access_key_id,
        secret_access_key: stored.secret_access_key,
        file: Some(path.to_path_buf()),
        created: false,
    }))
}
