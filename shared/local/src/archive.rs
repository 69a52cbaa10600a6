//! Zip archives for artifacts: packing a directory deterministically and extracting untrusted
//! zips without letting them write outside the destination or exhaust the disk.
//!
//! Both functions are blocking (file IO); call them from async code through
//! `tokio::task::spawn_blocking`.
//!
//! Symlinks when packing: a symlink is stored as a symlink entry only when its target is relative,
//! uses `..` only as leading components, and those do not climb above the packed directory. Any
//! other symlink (absolute target, or one that climbs out) is skipped with a warning, because
//! storing it would hand an escape to whoever extracts the artifact, and following it would copy
//! files from outside the directory into the artifact.
//!
//! Extraction is stricter than packing: entry names must be relative, free of `..`, `\` and NUL;
//! no entry may be written through a symlink (not even one the archive created inside the
//! destination); symlink entries must point inside the destination; and caps bound the entry
//! count, the total uncompressed size and each entry's compression ratio, checked against the
//! declared sizes first and against the bytes actually inflated while writing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use walkdir::WalkDir;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

/// Longest symlink target accepted from an archive; real targets are short paths.
const MAX_SYMLINK_TARGET_BYTES: u64 = 4096;

/// Entries smaller than this are exempt from the ratio cap: a few kilobytes of zeros compress
/// beyond any sane ratio yet cannot hurt anyone, and the total-size cap still counts them.
const RATIO_EXEMPT_BYTES: u64 = 64 * 1024;

/// Caps applied while extracting an untrusted zip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest sum of uncompressed entry sizes.
    pub max_total_bytes: u64,
    /// Largest number of entries (files, directories and symlinks).
    pub max_entries: u64,
    /// Largest uncompressed/compressed ratio of one entry (entries under 64 KiB are exempt).
    pub max_ratio: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 2 * 1024 * 1024 * 1024,
            max_entries: 100_000,
            max_ratio: 1000,
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractSummary {
    pub entries: u64,
    pub bytes: u64,
}

/// What packing wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackSummary {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Symlinks left out because they pointed outside the packed directory (relative paths).
    pub skipped_symlinks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading zip {path}: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("zip entry {entry:?} refused: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("zip has {count} entries, more than the limit of {limit}")]
    TooManyEntries { count: u64, limit: u64 },
    #[error("zip entry {entry:?} brings the uncompressed total past the limit of {limit} bytes")]
    TotalSizeExceeded { entry: String, limit: u64 },
    #[error("zip entry {entry:?} has a compression ratio above the limit of {limit}")]
    RatioExceeded { entry: String, limit: u64 },
    #[error("zip entry {entry:?} inflates to more bytes than its header declares")]
    SizeMismatch { entry: String },
    #[error("path {path} cannot be stored in a zip: {reason}")]
    UnsupportedPath { path: PathBuf, reason: &'static str },
    #[error("extraction destination {path} must be absent or an empty directory")]
    DestinationNotEmpty { path: PathBuf },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + use<> {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io {
        action,
        path,
        source,
    }
}

/// Packs `src_dir` (its contents, not the directory itself) into a new zip at `dest_zip`.
///
/// Entries are sorted by path and carry a fixed timestamp, so the same tree always gives the
/// same bytes. Unix permission bits are kept; see the module docs for symlinks.
pub fn zip_directory(src_dir: &Path, dest_zip: &Path) -> Result<PackSummary, ArchiveError> {
    let file = File::create(dest_zip).map_err(io_error("creating", dest_zip))?;
    let mut writer = ZipWriter::new(BufWriter::new(file));
    let mut summary = PackSummary::default();
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .large_file(false);

    for item in WalkDir::new(src_dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let item = item.map_err(|err| {
            let path = err.path().unwrap_or(src_dir).to_path_buf();
            ArchiveError::Io {
                action: "walking",
                path,
                source: err.into(),
            }
        })?;
        let relative =
            item.path()
                .strip_prefix(src_dir)
                .map_err(|_| ArchiveError::UnsupportedPath {
                    path: item.path().to_path_buf(),
                    reason: "outside the packed directory",
                })?;
        let name = entry_name(relative)?;
        let metadata = item
            .path()
            .symlink_metadata()
            .map_err(io_error("reading metadata of", item.path()))?;
        let mode = metadata.permissions().mode() & 0o7777;
        let file_type = metadata.file_type();
        let zip_err = |source| ArchiveError::Zip {
            path: dest_zip.to_path_buf(),
            source,
        };

        if file_type.is_symlink() {
            let target =
                fs::read_link(item.path()).map_err(io_error("reading link", item.path()))?;
            match safe_link_target(relative, &target) {
                Some(target) => {
                    writer
                        .add_symlink(name, target, base.unix_permissions(0o777))
                        .map_err(zip_err)?;
                    summary.symlinks += 1;
                }
                None => {
                    tracing::warn!(path = %name, "symlink pointing outside the directory left out of the zip");
                    summary.skipped_symlinks.push(name);
                }
            }
        } else if file_type.is_dir() {
            writer
                .add_directory(format!("{name}/"), base.unix_permissions(mode))
                .map_err(zip_err)?;
            summary.directories += 1;
        } else if file_type.is_file() {
            // Files of 4 GiB and more need zip64 headers, which must be chosen up front.
            let options = base
                .unix_permissions(mode)
                .large_file(metadata.len() >= u64::from(u32::MAX));
            writer.start_file(name, options).map_err(zip_err)?;
            let mut source = File::open(item.path()).map_err(io_error("opening", item.path()))?;
            io::copy(&mut source, &mut writer).map_err(io_error("packing", item.path()))?;
            summary.files += 1;
        } else {
            tracing::warn!(path = %name, "special file (socket, device or fifo) left out of the zip");
        }
    }
    let mut inner = writer.finish().map_err(|source| ArchiveError::Zip {
        path: dest_zip.to_path_buf(),
        source,
    })?;
    inner.flush().map_err(io_error("writing", dest_zip))?;
    inner
        .get_ref()
        .sync_all()
        .map_err(io_error("syncing", dest_zip))?;
    Ok(summary)
}

fn entry_name(relative: &Path) -> Result<String, ArchiveError> {
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => {
                let part = part.to_str().ok_or(ArchiveError::UnsupportedPath {
                    path: relative.to_path_buf(),
                    reason: "the name is not UTF-8",
                })?;
                if part.contains('\\') {
                    return Err(ArchiveError::UnsupportedPath {
                        path: relative.to_path_buf(),
                        reason: "the name contains a backslash, which extraction refuses",
                    });
                }
                parts.push(part);
            }
            _ => {
                return Err(ArchiveError::UnsupportedPath {
                    path: relative.to_path_buf(),
                    reason: "unexpected path component",
                });
            }
        }
    }
    Ok(parts.join("/"))
}

/// Returns the link target as a zip string when it stays inside the root the link lives in.
/// `link` is the link's path relative to that root.
fn safe_link_target(link: &Path, target: &Path) -> Option<String> {
    if target.is_absolute() {
        return None;
    }
    let target_str = target.to_str()?;
    if target_str.is_empty() || target_str.contains('\\') || target_str.contains('\0') {
        return None;
    }
    // `..` is only accepted before the first name: after a name that is itself a symlink, the
    // kernel would apply `..` to the link's target, not lexically, and could climb out.
    // Depth of the directory holding the link, counted in normal components.
    let mut depth: i64 = link.components().count() as i64 - 1;
    let mut seen_name = false;
    for part in target_str.split('/') {
        match part {
            "" | "." => {}
            ".." if seen_name => return None,
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ => seen_name = true,
        }
    }
    Some(target_str.to_string())
}

/// Extracts the zip at `zip_path` into `dest_dir`, which must be absent or an empty directory.
///
/// Refuses (and names) the first offending entry; on error, `dest_dir` may hold a partial
/// extraction, so callers extract into a scratch directory and rename on success.
pub fn extract_zip(
    zip_path: &Path,
    dest_dir: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractSummary, ArchiveError> {
    let zip_err = |source| ArchiveError::Zip {
        path: zip_path.to_path_buf(),
        source,
    };
    let file = File::open(zip_path).map_err(io_error("opening", zip_path))?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;

    let count = archive.len() as u64;
    if count > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            count,
            limit: limits.max_entries,
        });
    }

    // First pass over the central directory: refuse before writing anything when the
    // declared names or sizes are already unacceptable.
    let mut plans = Vec::with_capacity(archive.len());
    let mut declared_total: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(zip_err)?;
        let display = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let components = checked_components(entry.name_raw(), &display)?;
        if entry.encrypted() {
            return Err(unsafe_entry(
                &display,
                "encrypted entries are not supported",
            ));
        }
        let kind = if entry.is_symlink() {
            EntryKind::Symlink
        } else if entry.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::File
        };
        declared_total = declared_total.saturating_add(entry.size());
        if declared_total > limits.max_total_bytes {
            return Err(ArchiveError::TotalSizeExceeded {
                entry: display,
                limit: limits.max_total_bytes,
            });
        }
        if ratio_exceeded(entry.size(), entry.compressed_size(), limits.max_ratio) {
            return Err(ArchiveError::RatioExceeded {
                entry: display,
                limit: limits.max_ratio,
            });
        }
        plans.push(EntryPlan {
            display,
            components,
            kind,
            mode: entry.unix_mode(),
            declared_size: entry.size(),
            compressed_size: entry.compressed_size(),
        });
    }

    prepare_destination(dest_dir)?;

    let mut written_total: u64 = 0;
    let mut directory_modes: Vec<(PathBuf, u32)> = Vec::new();
    for (index, plan) in plans.iter().enumerate() {
        let target = ensure_parents(dest_dir, &plan.components, &plan.display)?;
        match plan.kind {
            EntryKind::Directory => {
                if plan.components.is_empty() {
                    continue;
                }
                match target.symlink_metadata() {
                    Ok(meta) if meta.file_type().is_dir() => {}
                    Ok(_) => {
                        return Err(unsafe_entry(
                            &plan.display,
                            "a directory entry collides with a file or symlink",
                        ));
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&target).map_err(io_error("creating", &target))?;
                    }
                    Err(err) => return Err(io_error("inspecting", &target)(err)),
                }
                if let Some(mode) = plan.mode {
                    directory_modes.push((target, mode & 0o777));
                }
            }
            EntryKind::Symlink => {
                let mut entry = archive.by_index(index).map_err(zip_err)?;
                let mut raw = Vec::new();
                entry
                    .by_ref()
                    .take(MAX_SYMLINK_TARGET_BYTES + 1)
                    .read_to_end(&mut raw)
                    .map_err(io_error("reading symlink entry from", zip_path))?;
                if raw.len() as u64 > MAX_SYMLINK_TARGET_BYTES {
                    return Err(unsafe_entry(&plan.display, "symlink target is too long"));
                }
                let link_target = String::from_utf8(raw)
                    .map_err(|_| unsafe_entry(&plan.display, "symlink target is not UTF-8"))?;
                let relative: PathBuf = plan.components.iter().collect();
                if safe_link_target(&relative, Path::new(&link_target)).is_none() {
                    return Err(unsafe_entry(
                        &plan.display,
                        format!("symlink target {link_target:?} points outside the destination"),
                    ));
                }
                written_total = written_total.saturating_add(link_target.len() as u64);
                symlink(&link_target, &target).map_err(|err| {
                    if err.kind() == io::ErrorKind::AlreadyExists {
                        unsafe_entry(&plan.display, "the path already exists (duplicate entry)")
                    } else {
                        io_error("creating symlink", &target)(err)
                    }
                })?;
            }
            EntryKind::File => {
                let mut entry = archive.by_index(index).map_err(zip_err)?;
                // create_new (O_EXCL) never follows a symlink at the final component, so a
                // link planted by an earlier entry cannot redirect this write.
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(|err| {
                        if err.kind() == io::ErrorKind::AlreadyExists {
                            unsafe_entry(&plan.display, "the path already exists (duplicate entry)")
                        } else {
                            io_error("creating", &target)(err)
                        }
                    })?;
                let written =
                    copy_capped(&mut entry, &mut out, plan, written_total, limits, zip_path)?;
                written_total += written;
                let mode = plan.mode.map_or(0o644, |mode| mode & 0o777);
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(io_error("setting permissions of", &target))?;
            }
        }
    }
    // Directory modes last and deepest first: a read-only directory must not stop the
    // extraction of its own contents.
    directory_modes.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, mode) in directory_modes {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o700))
            .map_err(io_error("setting permissions of", &path))?;
    }
    Ok(ExtractSummary {
        entries: count,
        bytes: written_total,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    File,
    Directory,
    Symlink,
}

struct EntryPlan {
    display: String,
    components: Vec<String>,
    kind: EntryKind,
    mode: Option<u32>,
    declared_size: u64,
    compressed_size: u64,
}

fn unsafe_entry(entry: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::UnsafeEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

fn ratio_exceeded(size: u64, compressed: u64, max_ratio: u64) -> bool {
    size > RATIO_EXEMPT_BYTES && size / compressed.max(1) > max_ratio
}

/// Splits an entry name into path components, refusing anything that could leave the
/// destination or be read differently on another platform.
fn checked_components(raw: &[u8], display: &str) -> Result<Vec<String>, ArchiveError> {
    let name = std::str::from_utf8(raw).map_err(|_| unsafe_entry(display, "name is not UTF-8"))?;
    if name.is_empty() {
        return Err(unsafe_entry(display, "empty name"));
    }
    if name.contains('\0') {
        return Err(unsafe_entry(display, "name contains a NUL byte"));
    }
    if name.contains('\\') {
        return Err(unsafe_entry(display, "name contains a backslash"));
    }
    if name.starts_with('/') {
        return Err(unsafe_entry(display, "absolute path"));
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(unsafe_entry(display, "drive-letter path"));
    }
    let mut components = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_entry(display, "path climbs out with `..`")),
            part => components.push(part.to_string()),
        }
    }
    Ok(components)
}

fn prepare_destination(dest_dir: &Path) -> Result<(), ArchiveError> {
    match dest_dir.symlink_metadata() {
        Ok(meta) if meta.file_type().is_dir() => {
            let mut entries = fs::read_dir(dest_dir).map_err(io_error("listing", dest_dir))?;
            if entries.next().is_some() {
                return Err(ArchiveError::DestinationNotEmpty {
                    path: dest_dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Ok(_) => Err(ArchiveError::DestinationNotEmpty {
            path: dest_dir.to_path_buf(),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest_dir).map_err(io_error("creating", dest_dir))
        }
        Err(err) => Err(io_error("inspecting", dest_dir)(err)),
    }
}

/// Creates the parent directories of an entry one component at a time, refusing to pass
/// through a symlink, and returns the entry's full path.
fn ensure_parents(
    dest_dir: &Path,
    components: &[String],
    display: &str,
) -> Result<PathBuf, ArchiveError> {
    let mut path = dest_dir.to_path_buf();
    let Some((last, parents)) = components.split_last() else {
        return Ok(path);
    };
    for part in parents {
        path.push(part);
        match path.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(unsafe_entry(display, "would write through a symlink"));
            }
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(unsafe_entry(display, "a parent of the entry is a file"));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(io_error("creating", &path))?;
            }
            Err(err) => return Err(io_error("inspecting", &path)(err)),
        }
    }
    path.push(last);
    if let Ok(meta) = path.symlink_metadata()
        && meta.file_type().is_symlink()
    {
        return Err(unsafe_entry(display, "would write through a symlink"));
    }
    Ok(path)
}

/// Copies one entry's inflated bytes, enforcing the caps on what is actually produced rather
/// than what the header claims.
fn copy_capped(
    entry: &mut impl Read,
    out: &mut File,
    plan: &EntryPlan,
    written_before: u64,
    limits: &ExtractLimits,
    zip_path: &Path,
) -> Result<u64, ArchiveError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    loop {
        let read = match entry.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(ArchiveError::Io {
                    action: "inflating entry of",
                    path: zip_path.to_path_buf(),
                    source: io::Error::new(err.kind(), format!("entry {:?}: {err}", plan.display)),
                });
            }
        };
        written += read as u64;
        if written > plan.declared_size {
            return Err(ArchiveError::SizeMismatch {
                entry: plan.display.clone(),
            });
        }
        if written_before.saturating_add(written) > limits.max_total_bytes {
            return Err(ArchiveError::TotalSizeExceeded {
                entry: plan.display.clone(),
                limit: limits.max_total_bytes,
            });
        }
        if ratio_exceeded(written, plan.compressed_size, limits.max_ratio) {
            return Err(ArchiveError::RatioExceeded {
                entry: plan.display.clone(),
                limit: limits.max_ratio,
            });
        }
        out.write_all(&buffer[..read])
            .map_err(io_error("writing entry", Path::new(&plan.display)))?;
    }
    Ok(written)
}
