//! The embedded adapters of the app's artifact ports: the encrypted file store and the zip
//! archiver, behind the async port traits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use penstock_app::ports::{Archiver, ArtifactError, ArtifactLocation, ArtifactStore};

use crate::archive::{self, ArchiveError, ExtractLimits};
use crate::artifact_files::{self, ArtifactStoreError, LocalArtifactStore};

/// Zips with the local archive module; extraction is always the safe one.
pub struct ZipArchiver;

fn archive_error(e: ArchiveError) -> ArtifactError {
    ArtifactError::Invalid(e.to_string())
}

impl Archiver for ZipArchiver {
    fn pack(&self, dir: &Path, zip: &Path) -> Result<(), ArtifactError> {
        archive::zip_directory(dir, zip)
            .map(|_| ())
            .map_err(archive_error)
    }
    fn unpack(&self, zip: &Path, dir: &Path) -> Result<(), ArtifactError> {
        archive::extract_zip(zip, dir, &ExtractLimits::default())
            .map(|_| ())
            .map_err(archive_error)
    }
}

/// The encrypted file artifact store as an [`ArtifactStore`]. Locations read
/// `local:{key}?sha256={digest}&size={bytes}`: the digest is checked on every read.
#[derive(Clone)]
pub struct FileArtifacts {
    inner: Arc<LocalArtifactStore>,
}

impl FileArtifacts {
    pub fn open(dir: &Path) -> Result<Self, ArtifactStoreError> {
        Ok(Self {
            inner: Arc::new(LocalArtifactStore::open(dir)?),
        })
    }
}

fn store_error(e: ArtifactStoreError) -> ArtifactError {
    match e {
        ArtifactStoreError::NotFound { key } => ArtifactError::NotFound(key),
        ArtifactStoreError::DigestMismatch { .. } | ArtifactStoreError::Crypto { .. } => {
            ArtifactError::Corrupt(e.to_string())
        }
        ArtifactStoreError::InvalidKey(_) => ArtifactError::Invalid(e.to_string()),
        other => ArtifactError::Unavailable(other.to_string()),
    }
}

fn format_location(location: &artifact_files::ArtifactLocation) -> String {
    format!(
        "local:{}?sha256={}&size={}",
        location.key, location.sha256, location.size
    )
}

fn parse_location(
    store: &LocalArtifactStore,
    text: &str,
) -> Result<artifact_files::ArtifactLocation, ArtifactError> {
    let invalid = || ArtifactError::Invalid(format!("not a local artifact location: {text}"));
    let rest = text.strip_prefix("local:").ok_or_else(invalid)?;
    let (key, query) = rest.split_once('?').ok_or_else(invalid)?;
    let mut sha256 = None;
    let mut size = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sha256", v)) => sha256 = Some(v.to_string()),
            Some(("size", v)) => size = v.parse::<u64>().ok(),
            _ => return Err(invalid()),
        }
    }
    let path: PathBuf = store
        .object_path(key)
        .map_err(|e| ArtifactError::Invalid(e.to_string()))?;
    Ok(artifact_files::ArtifactLocation {
        key: key.to_string(),
        path,
        sha256: sha256.ok_or_else(invalid)?,
        size: size.ok_or_else(invalid)?,
    })
}

#[async_trait]
impl ArtifactStore for FileArtifacts {
    async fn put(
        &self,
        _store: Option<&penstock_core::model::ArtifactStore>,
        key: &str,
        zip: &Path,
    ) -> Result<ArtifactLocation, ArtifactError> {
        let inner = self.inner.clone();
        let (key, zip) = (key.to_string(), zip.to_path_buf());
        let location = tokio::task::spawn_blocking(move || inner.put(&key, &zip))
            .await
            .map_err(|e| ArtifactError::Unavailable(e.to_string()))?
            .map_err(store_error)?;
        Ok(format_location(&location))
    }

    async fn get(&self, location: &str, dest: &Path) -> Result<(), ArtifactError> {
        let inner = self.inner.clone();
        let location = parse_location(&inner, location)?;
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || inner.get(&location, &dest))
            .await
            .map_err(|e| ArtifactError::Unavailable(e.to_string()))?
            .map_err(store_error)
    }
}
