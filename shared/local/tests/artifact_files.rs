//! The encrypted artifact store on real files: round trips, tamper and truncation detection, the
//! key file's mode and object key validation.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use penstock_local::artifact_files::{ArtifactStoreError, LocalArtifactStore, validate_object_key};
use sha2::{Digest, Sha256};

/// A few MB of varied bytes (not all zeros, so segments differ).
fn sample(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state & 0xff) as u8
        })
        .collect()
}

#[test]
fn round_trip_of_a_multi_megabyte_artifact() {
    let temp = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(&temp.path().join("store")).unwrap();
    let data = sample(3 * 1024 * 1024 + 12345);
    let src = temp.path().join("in.zip");
    fs::write(&src, &data).unwrap();

    let location = store.put("pipeline/exec-1/BuildOutput.zip", &src).unwrap();
    assert_eq!(location.size, data.len() as u64);
    assert_eq!(location.sha256, hex::encode(Sha256::digest(&data)));
    let stored = fs::read(&location.path).unwrap();
    assert!(stored.len() > data.len());
    // The plaintext is not visible in the stored file.
    assert!(!stored.windows(64).any(|window| window == &data[1000..1064]));

    let out = temp.path().join("out.zip");
    store.get(&location, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);

    // Reopening reads the same key.
    let reopened = LocalArtifactStore::open(&temp.path().join("store")).unwrap();
    let out2 = temp.path().join("out2.zip");
    reopened.get(&location, &out2).unwrap();
    assert_eq!(fs::read(&out2).unwrap(), data);
}

#[test]
fn empty_and_segment_aligned_artifacts_round_trip() {
    let temp = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(temp.path()).unwrap();
    for len in [0usize, 1, 64 * 1024, 2 * 64 * 1024, 64 * 1024 + 1] {
        let data = sample(len);
        let src = temp.path().join("in");
        fs::write(&src, &data).unwrap();
        let location = store.put(&format!("len-{len}"), &src).unwrap();
        let out = temp.path().join("out");
        store.get(&location, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data, "length {len}");
    }
}

#[test]
fn tampering_and_truncation_are_detected() {
    let temp = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(&temp.path().join("store")).unwrap();
    let data = sample(200 * 1024);
    let src = temp.path().join("in.zip");
    fs::write(&src, &data).unwrap();
    let location = store.put("a.zip", &src).unwrap();
    let original = fs::read(&location.path).unwrap();
    let out = temp.path().join("out.zip");

    let mut flipped = original.clone();
    flipped[100_000] ^= 0x01;
    fs::write(&location.path, &flipped).unwrap();
    assert!(matches!(
        store.get(&location, &out),
        Err(ArtifactStoreError::Crypto { .. })
    ));
    assert!(
        !out.exists(),
        "no output may appear for a tampered artifact"
    );

    // Cut at a segment boundary (header 15 bytes + one full segment of 64 KiB + 16).
    fs::write(&location.path, &original[..15 + 64 * 1024 + 16]).unwrap();
    assert!(matches!(
        store.get(&location, &out),
        Err(ArtifactStoreError::Crypto { .. })
    ));

    fs::write(&location.path, &original[..original.len() - 1]).unwrap();
    assert!(matches!(
        store.get(&location, &out),
        Err(ArtifactStoreError::Crypto { .. })
    ));
    assert!(!out.exists());

    fs::write(&location.path, &original).unwrap();
    store.get(&location, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
}

#[test]
fn another_key_cannot_read_the_artifact() {
    let temp = tempfile::tempdir().unwrap();
    let first = LocalArtifactStore::open(&temp.path().join("one")).unwrap();
    let second = LocalArtifactStore::open(&temp.path().join("two")).unwrap();
    let src = temp.path().join("in.zip");
    fs::write(&src, sample(1000)).unwrap();
    let location = first.put("x.zip", &src).unwrap();
    let copy = second.object_path("x.zip").unwrap();
    fs::copy(&location.path, &copy).unwrap();
    assert!(matches!(
        second.get(&location, &temp.path().join("out")),
        Err(ArtifactStoreError::Crypto { .. })
    ));
}

#[test]
fn key_file_is_private_and_stable() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    LocalArtifactStore::open(&dir).unwrap();
    let key_path = dir.join("key");
    let metadata = fs::metadata(&key_path).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(metadata.len(), 32);
    let key = fs::read(&key_path).unwrap();
    LocalArtifactStore::open(&dir).unwrap();
    assert_eq!(fs::read(&key_path).unwrap(), key);

    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        LocalArtifactStore::open(&dir),
        Err(ArtifactStoreError::KeyFile { .. })
    ));
}

#[test]
fn object_keys_are_validated() {
    for bad in [
        "",
        "/abs",
        "../up",
        "a/../b",
        "a//b",
        "a/./b",
        "a\\b",
        "trailing/",
        "nul\0",
    ] {
        assert!(
            validate_object_key(bad).is_err(),
            "{bad:?} should be refused"
        );
    }
    for good in [
        "a",
        "a/b/c.zip",
        "Pipeline/Exec-1/Out_put.zip",
        "..hidden",
        "a..b",
    ] {
        assert!(
            validate_object_key(good).is_ok(),
            "{good:?} should be accepted"
        );
    }
    let temp = tempfile::tempdir().unwrap();
    let store = LocalArtifactStore::open(temp.path()).unwrap();
    let src = temp.path().join("in");
    fs::write(&src, b"x").unwrap();
    assert!(matches!(
        store.put("../escape", &src),
        Err(ArtifactStoreError::InvalidKey(_))
    ));
}
