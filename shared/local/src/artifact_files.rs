//! The embedded default's artifact store: zip files kept on disk under `<dir>/objects/<key>`,
//! encrypted with AES-256-GCM (see `crypto`) under a local key file `<dir>/key` (mode 0600).
//!
//! The API is blocking (file IO and encryption); call it through `tokio::task::spawn_blocking`.
//! The store is cheap to clone for that purpose.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::{self, ArtifactKey, CryptoError};

const KEY_FILE: &str = "key";
const OBJECTS_DIR: &str = "objects";
const MAX_OBJECT_KEY_BYTES: usize = 1024;

/// Where an artifact was stored and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactLocation {
    /// The object key it was stored under; `get` reads by this key.
    pub key: String,
    /// The encrypted file on disk (informational).
    pub path: PathBuf,
    /// SHA-256 of the plaintext zip, lower-case hex.
    pub sha256: String,
    /// Size of the plaintext zip in bytes.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactStoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    InvalidKey(#[from] InvalidObjectKey),
    #[error("key file {path} is unusable: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("artifact {key:?}: {source}")]
    Crypto {
        key: String,
        #[source]
        source: CryptoError,
    },
    #[error("artifact {key:?} not found")]
    NotFound { key: String },
    #[error("artifact {key:?} decrypted but does not match its recorded digest")]
    DigestMismatch { key: String },
}

/// An object key that is not a plain relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct InvalidObjectKey {
    pub key: String,
    pub reason: &'static str,
}

/// Checks that an object key is a plain relative `/`-separated path: non-empty, at most 1024
/// bytes, no leading `/`, no empty, `.` or `..` segments, no backslash or control characters.
pub fn validate_object_key(key: &str) -> Result<(), InvalidObjectKey> {
    let fail = |reason| {
        Err(InvalidObjectKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return fail("it is empty");
    }
    if key.len() > MAX_OBJECT_KEY_BYTES {
        return fail("it is longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return fail("it is an absolute path");
    }
    if key.contains('\\') {
        return fail("it contains a backslash");
    }
    if key.chars().any(char::is_control) {
        return fail("it contains a control character");
    }
    for segment in key.split('/') {
        match segment {
            "" => return fail("it has an empty segment"),
            "." | ".." => return fail("it has a `.` or `..` segment"),
            _ => {}
        }
    }
    Ok(())
}

fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> ArtifactStoreError + use<> {
    let path = path.to_path_buf();
    move |source| ArtifactStoreError::Io {
        action,
        path,
        source,
    }
}

/// Encrypted artifact files under one directory.
#[derive(Debug, Clone)]
pub struct LocalArtifactStore {
    root: PathBuf,
    key: Arc<ArtifactKey>,
}

impl LocalArtifactStore {
    /// Opens the store at `dir`, creating the directory and a fresh key file when absent.
    ///
    /// The key file is written to a private temporary file (mode 0600) and linked into place
    /// without replacing, so concurrent openers agree on one key and nobody reads a half-written
    /// one. An existing key file readable by group or others is refused.
    pub fn open(dir: &Path) -> Result<Self, ArtifactStoreError> {
        fs::create_dir_all(dir.join(OBJECTS_DIR)).map_err(io_error("creating", dir))?;
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() {
            create_key_file(dir, &key_path)?;
        }
        let key = read_key_file(&key_path)?;
        Ok(Self {
            root: dir.to_path_buf(),
            key: Arc::new(key),
        })
    }

    /// Where the encrypted object for `key` lives.
    pub fn object_path(&self, key: &str) -> Result<PathBuf, InvalidObjectKey> {
        validate_object_key(key)?;
        Ok(self.root.join(OBJECTS_DIR).join(key))
    }

    /// Encrypts the zip at `src_zip` and stores it under `key_path`, replacing any previous
    /// object atomically (temporary file, then rename).
    pub fn put(
        &self,
        key_path: &str,
        src_zip: &Path,
    ) -> Result<ArtifactLocation, ArtifactStoreError> {
        let path = self.object_path(key_path)?;
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_error("creating", &parent))?;
        let source = File::open(src_zip).map_err(io_error("opening", src_zip))?;
        let temp = tempfile::NamedTempFile::new_in(&parent)
            .map_err(io_error("creating a temporary file in", &parent))?;
        let mut writer = BufWriter::new(temp.as_file());
        let digest = crypto::encrypt_stream(&self.key, source, &mut writer).map_err(|source| {
            ArtifactStoreError::Crypto {
                key: key_path.to_string(),
                source,
            }
        })?;
        writer.flush().map_err(io_error("writing", temp.path()))?;
        drop(writer);
        temp.as_file()
            .sync_all()
            .map_err(io_error("syncing", temp.path()))?;
        temp.persist(&path)
            .map_err(|err| io_error("renaming into", &path)(err.error))?;
        Ok(ArtifactLocation {
            key: key_path.to_string(),
            path,
            sha256: digest.sha256,
            size: digest.size,
        })
    }

    /// Decrypts the artifact at `location` into `dest_zip` after checking it is authentic and
    /// matches the recorded digest. `dest_zip` only appears once everything checked out.
    pub fn get(
        &self,
        location: &ArtifactLocation,
        dest_zip: &Path,
    ) -> Result<(), ArtifactStoreError> {
        let path = self.object_path(&location.key)?;
        let source = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(ArtifactStoreError::NotFound {
                    key: location.key.clone(),
                });
            }
            Err(err) => return Err(io_error("opening", &path)(err)),
        };
        let parent = match dest_zip.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = tempfile::NamedTempFile::new_in(&parent)
            .map_err(io_error("creating a temporary file in", &parent))?;
        let mut writer = BufWriter::new(temp.as_file());
        let digest = crypto::decrypt_stream(&self.key, BufReader::new(source), &mut writer)
            .map_err(|source| ArtifactStoreError::Crypto {
                key: location.key.clone(),
                source,
            })?;
        writer.flush().map_err(io_error("writing", temp.path()))?;
        drop(writer);
        if digest.sha256 != location.sha256 || digest.size != location.size {
            return Err(ArtifactStoreError::DigestMismatch {
                key: location.key.clone(),
            });
        }
        temp.persist(dest_zip)
            .map_err(|err| io_error("renaming into", dest_zip)(err.error))?;
        Ok(())
    }
}

fn create_key_file(dir: &Path, key_path: &Path) -> Result<(), ArtifactStoreError> {
    let key = ArtifactKey::generate().map_err(|err| ArtifactStoreError::KeyFile {
        path: key_path.to_path_buf(),
        reason: err.to_string(),
    })?;
    // NamedTempFile creates its file with mode 0600.
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_error("creating a temporary file in", dir))?;
    temp.write_all(key.as_bytes())
        .map_err(io_error("writing", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(io_error("syncing", temp.path()))?;
    match temp.persist_noclobber(key_path) {
        Ok(_) => Ok(()),
        // Another process created it first: use theirs.
        Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(io_error("creating", key_path)(err.error)),
    }
}

fn read_key_file(key_path: &Path) -> Result<ArtifactKey, ArtifactStoreError> {
    let key_error = |reason: String| ArtifactStoreError::KeyFile {
        path: key_path.to_path_buf(),
        reason,
    };
    let mut file = File::open(key_path).map_err(io_error("opening", key_path))?;
    let metadata = file.metadata().map_err(io_error("inspecting", key_path))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(format!(
            "its mode {mode:o} lets other users read it; expected 600"
        )));
    }
    let mut bytes = Vec::with_capacity(33);
    Read::take(&mut file, 33)
        .read_to_end(&mut bytes)
        .map_err(io_error("reading", key_path))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
        key_error(format!("it holds {} bytes, expected 32", bytes.len()))
    })?;
    Ok(ArtifactKey::from_bytes(bytes))
}
