//! Packing and safe extraction of zips, with real files and hand-crafted malicious archives.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use penstock_local::archive::{ArchiveError, ExtractLimits, extract_zip, zip_directory};
use zip::write::SimpleFileOptions;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// Writes a zip whose entries are produced by `build`, for crafting archives no packer makes.
fn craft(path: &Path, build: impl FnOnce(&mut zip::ZipWriter<fs::File>) -> std::io::Result<()>) {
    let mut writer = zip::ZipWriter::new(fs::File::create(path).unwrap());
    build(&mut writer).unwrap();
    writer.finish().unwrap();
}

fn refused_entry(result: Result<impl std::fmt::Debug, ArchiveError>) -> (String, String) {
    match result {
        Err(ArchiveError::UnsafeEntry { entry, reason }) => (entry, reason),
        other => panic!("expected an unsafe entry refusal, got {other:?}"),
    }
}

#[test]
fn round_trip_keeps_tree_modes_and_safe_symlinks() {
    let temp = tempfile::tempdir().unwrap();
    let src = temp.path().join("src");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("top.txt"), "top").unwrap();
    fs::write(src.join("a/b/c/deep.txt"), "deep").unwrap();
    fs::write(src.join("a/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(src.join("a/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join("a/private"), "secret-ish").unwrap();
    fs::set_permissions(src.join("a/private"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("b/c/deep.txt", src.join("a/link")).unwrap();
    symlink("../../outside", src.join("a/escape")).unwrap();
    symlink("/etc/passwd", src.join("absolute")).unwrap();

    let zip_path = temp.path().join("out.zip");
    let summary = zip_directory(&src, &zip_path).unwrap();
    assert_eq!(summary.files, 4);
    assert_eq!(summary.symlinks, 1);
    assert_eq!(
        summary.skipped_symlinks,
        vec!["a/escape".to_string(), "absolute".to_string()]
    );

    let dest = temp.path().join("dest");
    let extracted = extract_zip(&zip_path, &dest, &ExtractLimits::default()).unwrap();
    assert_eq!(extracted.entries, 4 + 1 + 4);
    assert_eq!(fs::read_to_string(dest.join("top.txt")).unwrap(), "top");
    assert_eq!(
        fs::read_to_string(dest.join("a/b/c/deep.txt")).unwrap(),
        "deep"
    );
    assert_eq!(mode(&dest.join("a/run.sh")), 0o755);
    assert_eq!(mode(&dest.join("a/private")), 0o600);
    assert!(dest.join("empty").is_dir());
    assert_eq!(
        fs::read_link(dest.join("a/link")).unwrap(),
        Path::new("b/c/deep.txt")
    );
    assert_eq!(fs::read_to_string(dest.join("a/link")).unwrap(), "deep");
    assert!(fs::symlink_metadata(dest.join("a/escape")).is_err());
    assert!(fs::symlink_metadata(dest.join("absolute")).is_err());
}

#[test]
fn packing_is_deterministic() {
    let temp = tempfile::tempdir().unwrap();
    let src = temp.path().join("src");
    fs::create_dir_all(src.join("z/y")).unwrap();
    for name in ["b", "a", "c", "z/y/x", "z/w"] {
        fs::write(src.join(name), name).unwrap();
    }
    let first = temp.path().join("1.zip");
    let second = temp.path().join("2.zip");
    zip_directory(&src, &first).unwrap();
    // Touch a file so its modification time differs: the zip must not change.
    fs::write(src.join("a"), "a").unwrap();
    zip_directory(&src, &second).unwrap();
    assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());

    let archive = zip::ZipArchive::new(fs::File::open(&first).unwrap()).unwrap();
    let names: Vec<String> = archive
        .file_names()
        .map(|name| name.unwrap().into_owned())
        .collect();
    assert_eq!(names, vec!["a", "b", "c", "z/", "z/w", "z/y/", "z/y/x"]);
}

#[test]
fn refuses_parent_traversal() {
    let temp = tempfile::tempdir().unwrap();
    let zip_path = temp.path().join("slip.zip");
    craft(&zip_path, |w| {
        w.start_file("ok.txt", SimpleFileOptions::default())?;
        w.write_all(b"fine")?;
        w.start_file("../evil", SimpleFileOptions::default())?;
        w.write_all(b"pwned")
    });
    let dest = temp.path().join("dest");
    let (entry, reason) = refused_entry(extract_zip(&zip_path, &dest, &ExtractLimits::default()));
    assert_eq!(entry, "../evil");
    assert!(reason.contains(".."), "{reason}");
    assert!(!temp.path().join("evil").exists());
    // Refused before anything was written.
    assert!(!dest.join("ok.txt").exists());
}

#[test]
fn refuses_nested_parent_traversal() {
    let temp = tempfile::tempdir().unwrap();
    let zip_path = temp.path().join("slip.zip");
    craft(&zip_path, |w| {
        w.start_file("a/b/../../../evil", SimpleFileOptions::default())?;
        w.write_all(b"pwned")
    });
    let (entry, _) = refused_entry(extract_zip(
        &zip_path,
        &temp.path().join("dest"),
        &ExtractLimits::default(),
    ));
    assert_eq!(entry, "a/b/../../../evil");
}

#[test]
fn refuses_absolute_paths() {
    let temp = tempfile::tempdir().unwrap();
    let zip_path = temp.path().join("abs.zip");
    let target = temp.path().join("abs-target");
    let name = target.to_str().unwrap().to_string();
    craft(&zip_path, |w| {
        w.start_file(name.clone(), SimpleFileOptions::default())?;
        w.write_all(b"pwned")
    });
    let (entry, reason) = refused_entry(extract_zip(
        &zip_path,
        &temp.path().join("dest"),
        &ExtractLimits::default(),
    ));
    assert_eq!(entry, name);
    assert!(reason.contains("absolute"), "{reason}");
    assert!(!target.exists());
}

#[test]
fn refuses_symlink_pointing_outside() {
    let temp = tempfile::tempdir().unwrap();
    for target in ["../../outside", "/etc", "x/../../outside", "x/.."] {
        let zip_path = temp.path().join("link.zip");
        craft(&zip_path, |w| {
            Ok(w.add_symlink("sub/link", target, SimpleFileOptions::default())?)
        });
        let dest = tempfile::tempdir().unwrap();
        let (entry, reason) = refused_entry(extract_zip(
            &zip_path,
            &dest.path().join("d"),
            &ExtractLimits::default(),
        ));
        assert_eq!(entry, "sub/link");
        assert!(reason.contains(target), "{reason}");
    }
}

#[test]
fn refuses_writing_through_a_symlink() {
    let temp = tempfile::tempdir().unwrap();
    let outside = temp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // The link itself points inside, but a later entry tries to write through it.
    let zip_path = temp.path().join("through.zip");
    craft(&zip_path, |w| {
        w.add_directory("real/", SimpleFileOptions::default())?;
        w.add_symlink("alias", "real", SimpleFileOptions::default())?;
        w.start_file("alias/file", SimpleFileOptions::default())?;
        w.write_all(b"via link")
    });
    let (entry, reason) = refused_entry(extract_zip(
        &zip_path,
        &temp.path().join("dest"),
        &ExtractLimits::default(),
    ));
    assert_eq!(entry, "alias/file");
    assert!(reason.contains("symlink"), "{reason}");

    // A file entry with the same name as an earlier symlink must not follow it.
    let zip_path = temp.path().join("clobber.zip");
    craft(&zip_path, |w| {
        w.add_symlink("same", "real", SimpleFileOptions::default())?;
        w.start_file("samX", SimpleFileOptions::default())?;
        w.write_all(b"overwrite")
    });
    // Zip writers refuse duplicate names, so rename the second entry in the raw bytes.
    let mut raw = fs::read(&zip_path).unwrap();
    let positions: Vec<usize> = raw
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"samX")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(positions.len(), 2, "local and central headers");
    for position in positions {
        raw[position + 3] = b'e';
    }
    fs::write(&zip_path, &raw).unwrap();
    // The zip reader keeps one entry per name; whichever it keeps, nothing may land behind
    // the link.
    let dest = temp.path().join("dest2");
    match extract_zip(&zip_path, &dest, &ExtractLimits::default()) {
        Err(ArchiveError::UnsafeEntry { entry, .. }) => assert_eq!(entry, "same"),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => assert!(!dest.join("real").exists()),
    }
}

#[test]
fn refuses_bombs_over_the_caps() {
    let temp = tempfile::tempdir().unwrap();
    let zip_path = temp.path().join("bomb.zip");
    let zeros = vec![0u8; 4 * 1024 * 1024];
    craft(&zip_path, |w| {
        w.start_file("zeros", SimpleFileOptions::default())?;
        w.write_all(&zeros)
    });

    // 4 MiB of zeros deflate more than a thousandfold: the default ratio cap refuses it.
    match extract_zip(
        &zip_path,
        &temp.path().join("d1"),
        &ExtractLimits::default(),
    ) {
        Err(ArchiveError::RatioExceeded { entry, limit }) => {
            assert_eq!(entry, "zeros");
            assert_eq!(limit, 1000);
        }
        other => panic!("expected a ratio refusal, got {other:?}"),
    }

    let relaxed_ratio = ExtractLimits {
        max_ratio: 100_000,
        ..ExtractLimits::default()
    };
    let total = ExtractLimits {
        max_total_bytes: 1024 * 1024,
        ..relaxed_ratio
    };
    match extract_zip(&zip_path, &temp.path().join("d2"), &total) {
        Err(ArchiveError::TotalSizeExceeded { entry, limit }) => {
            assert_eq!(entry, "zeros");
            assert_eq!(limit, 1024 * 1024);
        }
        other => panic!("expected a total size refusal, got {other:?}"),
    }

    // With caps that allow it, the same archive extracts in full.
    let summary = extract_zip(&zip_path, &temp.path().join("d3"), &relaxed_ratio).unwrap();
    assert_eq!(summary.bytes, zeros.len() as u64);
}

#[test]
fn refuses_too_many_entries() {
    let temp = tempfile::tempdir().unwrap();
    let zip_path = temp.path().join("many.zip");
    craft(&zip_path, |w| {
        for index in 0..11 {
            w.start_file(format!("f{index}"), SimpleFileOptions::default())?;
        }
        Ok(())
    });
    let limits = ExtractLimits {
        max_entries: 10,
        ..ExtractLimits::default()
    };
    match extract_zip(&zip_path, &temp.path().join("d"), &limits) {
        Err(ArchiveError::TooManyEntries {
            count: 11,
            limit: 10,
        }) => {}
        other => panic!("expected an entry count refusal, got {other:?}"),
    }
}

#[test]
fn refuses_a_non_empty_destination() {
    let temp = tempfile::tempdir().unwrap();
    let zip_path = temp.path().join("ok.zip");
    craft(&zip_path, |w| {
        Ok(w.start_file("x", SimpleFileOptions::default())?)
    });
    let dest = temp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("existing"), "x").unwrap();
    assert!(matches!(
        extract_zip(&zip_path, &dest, &ExtractLimits::default()),
        Err(ArchiveError::DestinationNotEmpty { .. })
    ));
}
