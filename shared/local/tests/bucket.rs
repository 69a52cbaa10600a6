//! The local S3 deploy action on real directories.

use std::fs;
use std::io::Write;
use std::path::Path;

use penstock_local::archive::{ExtractLimits, zip_directory};
use penstock_local::bucket::{BucketError, DeployOutcome, deploy, validate_bucket_name};
use zip::write::SimpleFileOptions;

fn site_zip(root: &Path, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = root.join(format!("{name}-tree"));
    for (path, content) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    let zip = root.join(format!("{name}.zip"));
    zip_directory(&dir, &zip).unwrap();
    zip
}

#[test]
fn extract_deploys_and_replaces_the_prefix() {
    let temp = tempfile::tempdir().unwrap();
    let buckets = temp.path().join("buckets");
    let v1 = site_zip(
        temp.path(),
        "v1",
        &[("index.html", "v1"), ("old.css", "stale")],
    );
    let v2 = site_zip(
        temp.path(),
        "v2",
        &[("index.html", "v2"), ("js/app.js", "app")],
    );

    let outcome = deploy(
        &buckets,
        "my-site",
        true,
        Some("web/"),
        &v1,
        &ExtractLimits::default(),
    )
    .unwrap();
    let dir = buckets.join("my-site/web");
    assert!(
        matches!(outcome, DeployOutcome::Extracted { ref dir, entries: 2, .. } if dir.ends_with("my-site/web"))
    );
    assert_eq!(fs::read_to_string(dir.join("index.html")).unwrap(), "v1");

    deploy(
        &buckets,
        "my-site",
        true,
        Some("web"),
        &v2,
        &ExtractLimits::default(),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(dir.join("index.html")).unwrap(), "v2");
    assert_eq!(fs::read_to_string(dir.join("js/app.js")).unwrap(), "app");
    assert!(
        !dir.join("old.css").exists(),
        "the previous content is replaced"
    );

    // Nothing but the deployed prefix is left in the bucket (no scratch directories).
    let names: Vec<String> = fs::read_dir(buckets.join("my-site"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["web".to_string()]);

    // Without an ObjectKey the whole bucket is the prefix.
    deploy(
        &buckets,
        "root-site",
        true,
        None,
        &v1,
        &ExtractLimits::default(),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(buckets.join("root-site/index.html")).unwrap(),
        "v1"
    );
}

#[test]
fn unsafe_artifact_leaves_the_previous_deployment_alone() {
    let temp = tempfile::tempdir().unwrap();
    let buckets = temp.path().join("buckets");
    let good = site_zip(temp.path(), "good", &[("index.html", "good")]);
    deploy(
        &buckets,
        "my-site",
        true,
        Some("web"),
        &good,
        &ExtractLimits::default(),
    )
    .unwrap();

    let evil = temp.path().join("evil.zip");
    let mut writer = zip::ZipWriter::new(fs::File::create(&evil).unwrap());
    writer
        .start_file("index.html", SimpleFileOptions::default())
        .unwrap();
    writer.write_all(b"evil").unwrap();
    writer
        .start_file("../../escaped", SimpleFileOptions::default())
        .unwrap();
    writer.finish().unwrap();

    let err = deploy(
        &buckets,
        "my-site",
        true,
        Some("web"),
        &evil,
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, BucketError::Extract(_)), "{err}");
    assert!(
        err.to_string().contains("../../escaped") || format!("{err:?}").contains("../../escaped")
    );
    assert_eq!(
        fs::read_to_string(buckets.join("my-site/web/index.html")).unwrap(),
        "good"
    );
    assert!(!buckets.join("escaped").exists());
}

#[test]
fn non_extract_stores_the_zip_as_the_object() {
    let temp = tempfile::tempdir().unwrap();
    let buckets = temp.path().join("buckets");
    let zip = site_zip(temp.path(), "art", &[("a.txt", "a")]);
    let outcome = deploy(
        &buckets,
        "artifacts.example",
        false,
        Some("releases/app-1.zip"),
        &zip,
        &ExtractLimits::default(),
    )
    .unwrap();
    let stored = buckets.join("artifacts.example/releases/app-1.zip");
    assert_eq!(
        outcome,
        DeployOutcome::Stored {
            path: stored.clone(),
            bytes: fs::metadata(&zip).unwrap().len()
        }
    );
    assert_eq!(fs::read(&stored).unwrap(), fs::read(&zip).unwrap());

    assert!(matches!(
        deploy(
            &buckets,
            "artifacts.example",
            false,
            None,
            &zip,
            &ExtractLimits::default()
        ),
        Err(BucketError::MissingObjectKey)
    ));
    assert!(matches!(
        deploy(
            &buckets,
            "artifacts.example",
            false,
            Some("../up.zip"),
            &zip,
            &ExtractLimits::default()
        ),
        Err(BucketError::InvalidObjectKey(_))
    ));
    assert!(matches!(
        deploy(
            &buckets,
            "artifacts.example",
            true,
            Some("a/../../b"),
            &zip,
            &ExtractLimits::default()
        ),
        Err(BucketError::InvalidObjectKey(_))
    ));
    assert!(!temp.path().join("up.zip").exists());
}

#[test]
fn bucket_names_follow_s3_rules() {
    for good in ["abc", "my-bucket", "my.bucket.1", "0start"] {
        assert!(validate_bucket_name(good).is_ok(), "{good}");
    }
    for bad in [
        "ab",
        "My-Bucket",
        "-start",
        "end-",
        "a..b",
        "192.168.5.4",
        "xn--abc",
        "a-s3alias",
        "has_underscore",
        "../x",
        &"a".repeat(64),
    ] {
        assert!(validate_bucket_name(bad).is_err(), "{bad}");
    }
}
