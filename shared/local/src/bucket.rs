//! The local S3 deploy action: "buckets" are directories under a root, and deploying either
//! unpacks the input artifact under a key prefix (`Extract=true`) or stores the zip as one object
//! (`Extract=false`), like CodePipeline's S3 deploy provider.
//!
//! Blocking (file IO); call it through `tokio::task::spawn_blocking`.
//!
//! With `Extract=true`, the prefix directory is replaced as a whole: the artifact is unpacked
//! (safely, see `archive`) into a scratch directory beside it, which is then swapped in with one
//! `renameat2(RENAME_EXCHANGE)`, so readers see the old tree or the new one, never a mix. Without
//! an `ObjectKey` the prefix is the whole bucket directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::{self, ArchiveError, ExtractLimits};
use crate::artifact_files::{InvalidObjectKey, validate_object_key};

/// What a deploy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    /// The artifact was unpacked into this directory.
    Extracted {
        dir: PathBuf,
        entries: u64,
        bytes: u64,
    },
    /// The zip was stored as this file.
    Stored { path: PathBuf, bytes: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName { name: String, reason: &'static str },
    #[error(transparent)]
    InvalidObjectKey(#[from] InvalidObjectKey),
    #[error("ObjectKey is required when Extract is false")]
    MissingObjectKey,
    #[error("extracting the artifact: {0}")]
    Extract(#[from] ArchiveError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BucketError + use<> {
    let path = path.to_path_buf();
    move |source| BucketError::Io {
        action,
        path,
        source,
    }
}

/// Checks S3's bucket naming rules: 3 to 63 characters of lower-case letters, digits, `.` and
/// `-`, starting and ending with a letter or digit, no `..`, not shaped like an IP address, and
/// none of the reserved prefixes and suffixes.
pub fn validate_bucket_name(name: &str) -> Result<(), BucketError> {
    let fail = |reason| {
        Err(BucketError::InvalidBucketName {
            name: name.to_string(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return fail("it must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return fail("only lower-case letters, digits, `.` and `-` are allowed");
    }
    let first_last_ok =
        |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !first_last_ok(name.bytes().next()) || !first_last_ok(name.bytes().last()) {
        return fail("it must start and end with a letter or digit");
    }
    if name.contains("..") {
        return fail("it must not contain `..`");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return fail("it must not be formatted as an IP address");
    }
    if name.starts_with("xn--") || name.starts_with("sthree-") {
        return fail("it must not start with a reserved prefix");
    }
    if name.ends_with("-s3alias") || name.ends_with("--ol-s3") {
        return fail("it must not end with a reserved suffix");
    }
    Ok(())
}

/// Deploys `input_zip` into the bucket `bucket_name` under `buckets_root`.
pub fn deploy(
    buckets_root: &Path,
    bucket_name: &str,
    extract: bool,
    object_key: Option<&str>,
    input_zip: &Path,
    limits: &ExtractLimits,
) -> Result<DeployOutcome, BucketError> {
    validate_bucket_name(bucket_name)?;
    let bucket_dir = buckets_root.join(bucket_name);
    fs::create_dir_all(&bucket_dir).map_err(io_error("creating", &bucket_dir))?;

    if !extract {
        let key = object_key
            .filter(|key| !key.is_empty())
            .ok_or(BucketError::MissingObjectKey)?;
        validate_object_key(key)?;
        let path = bucket_dir.join(key);
        let parent = path.parent().unwrap_or(&bucket_dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_error("creating", &parent))?;
        let temp = tempfile::NamedTempFile::new_in(&parent)
            .map_err(io_error("creating a temporary file in", &parent))?;
        let bytes = fs::copy(input_zip, temp.path()).map_err(io_error("copying", input_zip))?;
        temp.as_file()
            .sync_all()
            .map_err(io_error("syncing", temp.path()))?;
        temp.persist(&path)
            .map_err(|err| io_error("renaming into", &path)(err.error))?;
        return Ok(DeployOutcome::Stored { path, bytes });
    }

    // A deployment path may be written with a trailing slash, like an S3 prefix.
    let prefix = object_key
        .map(|key| key.trim_end_matches('/'))
        .filter(|key| !key.is_empty());
    let target = match prefix {
        Some(prefix) => {
            validate_object_key(prefix)?;
            bucket_dir.join(prefix)
        }
        None => bucket_dir.clone(),
    };
    let parent = target.parent().unwrap_or(buckets_root).to_path_buf();
    fs::create_dir_all(&parent).map_err(io_error("creating", &parent))?;
    // A dot-prefixed scratch name can never collide with a bucket or a deployed key segment
    // that a reader would look for.
    let scratch = tempfile::Builder::new()
        .prefix(".deploy-")
        .tempdir_in(&parent)
        .map_err(io_error("creating a scratch directory in", &parent))?;
    let staged = scratch.path().join("tree");
    let summary = archive::extract_zip(input_zip, &staged, limits)?;
    swap_in(&staged, &target)?;
    // `scratch` now holds the previous tree (or nothing) and is removed when dropped.
    drop(scratch);
    Ok(DeployOutcome::Extracted {
        dir: target,
        entries: summary.entries,
        bytes: summary.bytes,
    })
}

/// Puts `staged` at `target`, leaving the previous `target` (if any) at `staged`.
fn swap_in(staged: &Path, target: &Path) -> Result<(), BucketError> {
    if fs::symlink_metadata(target).is_err() {
        return fs::rename(staged, target).map_err(io_error("renaming into", target));
    }
    exchange(staged, target)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(staged: &Path, target: &Path) -> Result<(), BucketError> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(
        AT_FDCWD,
        staged,
        AT_FDCWD,
        target,
        RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|errno| io_error("swapping in", target)(io::Error::from(errno)))
}

/// Without an atomic exchange: move the old tree aside, then the new one in. Readers may see
/// the prefix missing for an instant.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(staged: &Path, target: &Path) -> Result<(), BucketError> {
    let aside = staged.with_extension("previous");
    fs::rename(target, &aside).map_err(io_error("moving aside", target))?;
    fs::rename(staged, target).map_err(io_error("renaming into", target))?;
    fs::rename(&aside, staged).map_err(io_error("renaming", &aside))
}
