//! Artifacts on S3 (moto): SSE-KMS on every object, multipart above the part size, reads by
//! version.

use std::io::Write as _;

use penstock_app::ports::ArtifactStore;
use penstock_aws::AwsClients;
use penstock_aws::artifacts::{PART_SIZE, S3Artifacts, S3Object};
use penstock_aws::testing::{CallCounter, sdk_config, unique_name};
use penstock_core::model::{ArtifactStoreType, EncryptionKey, EncryptionKeyType};

struct Setup {
    clients: AwsClients,
    counter: CallCounter,
    bucket: String,
    key_id: String,
    dir: tempfile::TempDir,
}

async fn setup(versioned: bool) -> Setup {
    let counter = CallCounter::new();
    let clients = AwsClients::with_interceptors(&sdk_config().await, vec![counter.shared()]);
    let bucket = unique_name("artifacts");
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    if versioned {
        clients
            .s3
            .put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("versioning");
    }
    let key_id = clients
        .kms
        .create_key()
        .send()
        .await
        .expect("key")
        .key_metadata()
        .expect("metadata")
        .key_id()
        .to_string();
    counter.take();
    Setup {
        clients,
        counter,
        bucket,
        key_id,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// A file of `size` bytes of a repeating, position-dependent pattern.
fn write_file(path: &std::path::Path, size: u64, seed: u8) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let chunk: Vec<u8> = (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
    file.flush().expect("flush");
}

fn declared(bucket: &str, key_id: &str) -> penstock_core::model::ArtifactStore {
    penstock_core::model::ArtifactStore {
        store_type: ArtifactStoreType::S3,
        location: bucket.to_string(),
        encryption_key: Some(EncryptionKey {
            id: key_id.to_string(),
            key_type: EncryptionKeyType::Kms,
        }),
    }
}

#[tokio::test]
async fn a_large_artifact_goes_up_in_parts_encrypted_with_the_pipeline_key() {
    let s = setup(false).await;
    let store = S3Artifacts::new(s.clients.s3.clone(), "unused-default", "unused-key");
    let source = s.dir.path().join("big.zip");
    let size = 2 * PART_SIZE + 12_345;
    write_file(&source, size, 7);
    let location = store
        .put(
            Some(&declared(&s.bucket, &s.key_id)),
            "p/e/a/big.zip",
            &source,
        )
        .await
        .expect("put");
    assert_eq!(location, format!("s3://{}/p/e/a/big.zip", s.bucket));
    let counts = s.counter.take();
    let count = |op: &str| {
        counts
            .get(&("S3".to_string(), op.to_string()))
            .map_or(0, |c| c.executions)
    };
    assert_eq!(count("CreateMultipartUpload"), 1);
    assert_eq!(count("UploadPart"), 3);
    assert_eq!(count("CompleteMultipartUpload"), 1);
    assert_eq!(count("PutObject"), 0);

    let head = s
        .clients
        .s3
        .head_object()
        .bucket(&s.bucket)
        .key("p/e/a/big.zip")
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("aws:kms")
    );
    assert!(
        head.ssekms_key_id().is_some_and(|k| k.contains(&s.key_id)),
        "{:?}",
        head.ssekms_key_id()
    );
    // (moto keeps no Bucket Key flag on multipart uploads; the single put below checks it.)
    assert_eq!(head.content_length(), Some(size as i64));

    let copy = s.dir.path().join("copy.zip");
    store.get(&location, &copy).await.expect("get");
    assert!(std::fs::read(&copy).expect("copy") == std::fs::read(&source).expect("source"));
}

#[tokio::test]
async fn a_small_artifact_is_one_put_with_the_default_key_and_reads_go_by_version() {
    let s = setup(true).await;
    let store = S3Artifacts::new(s.clients.s3.clone(), &s.bucket, &s.key_id);
    let first = s.dir.path().join("first.zip");
    let second = s.dir.path().join("second.zip");
    write_file(&first, 1000, 1);
    write_file(&second, 2000, 2);
    let old = store
        .put(None, "p/e/a/out.zip", &first)
        .await
        .expect("first put");
    let new = store
        .put(None, "p/e/a/out.zip", &second)
        .await
        .expect("second put");
    assert_ne!(old, new);
    assert!(
        S3Object::parse(&old).expect("parse").version_id.is_some(),
        "{old}"
    );
    let counts = s.counter.take();
    assert_eq!(
        counts
            .get(&("S3".to_string(), "PutObject".to_string()))
            .map(|c| c.executions),
        Some(2)
    );
    assert!(!counts.contains_key(&("S3".to_string(), "CreateMultipartUpload".to_string())));
    let head = s
        .clients
        .s3
        .head_object()
        .bucket(&s.bucket)
        .key("p/e/a/out.zip")
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("aws:kms")
    );
    assert!(head.ssekms_key_id().is_some_and(|k| k.contains(&s.key_id)));
    assert_eq!(head.bucket_key_enabled(), Some(true));

    let read = s.dir.path().join("read.zip");
    store.get(&old, &read).await.expect("get the old version");
    assert_eq!(
        std::fs::read(&read).expect("read"),
        std::fs::read(&first).expect("first")
    );
    store.get(&new, &read).await.expect("get the new version");
    assert_eq!(
        std::fs::read(&read).expect("read"),
        std::fs::read(&second).expect("second")
    );
}

#[tokio::test]
async fn a_missing_artifact_is_not_found() {
    let s = setup(false).await;
    let store = S3Artifacts::new(s.clients.s3.clone(), &s.bucket, &s.key_id);
    let error = store
        .get(
            &format!("s3://{}/nothing.zip", s.bucket),
            &s.dir.path().join("x"),
        )
        .await
        .expect_err("missing");
    assert!(
        matches!(error, penstock_app::ports::ArtifactError::NotFound(_)),
        "{error:?}"
    );
}
