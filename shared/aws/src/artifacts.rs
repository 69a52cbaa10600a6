//! Artifacts on S3: zip objects encrypted with SSE-KMS under the pipeline's `encryptionKey`,
//! uploaded from files in parts so memory stays flat whatever the size, read back by version.
//!
//! Architecture Invariant: no object is ever written without server-side encryption headers.
//! Every put goes through [`upload_file`], which takes the encryption as a required argument.
//!
//! Locations read `s3://{bucket}/{key}#{versionId}` (`#...` absent when the bucket is not
//! versioned), so a later write under the same key never changes what an execution reads.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use penstock_app::ports::{ArtifactError, ArtifactLocation, ArtifactStore};
use penstock_core::model::EncryptionKeyType;
use tokio::io::AsyncWriteExt;

use crate::sdk_error::{ErrorKind, describe, kind};

/// The size of each part of a multipart upload; files smaller than one part go up in a single
/// `PutObject`. S3 takes parts of 5 MiB to 5 GiB, at most 10,000 of them.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;

/// How an object is encrypted at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-KMS with this key (id, ARN or alias).
    Kms(String),
    /// SSE-S3 (AES256), for deploy targets that name no key.
    S3Managed,
}

/// A stored object: where it is and which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

impl S3Object {
    /// `s3://bucket/key#version`.
    pub fn location(&self) -> String {
        match &self.version_id {
            Some(version) => format!("s3://{}/{}#{version}", self.bucket, self.key),
            None => format!("s3://{}/{}", self.bucket, self.key),
        }
    }

    pub fn parse(location: &str) -> Result<Self, ArtifactError> {
        let invalid = || ArtifactError::Invalid(format!("not an S3 artifact location: {location}"));
        let rest = location.strip_prefix("s3://").ok_or_else(invalid)?;
        let (path, version_id) = match rest.rsplit_once('#') {
            Some((path, version)) if !version.is_empty() => (path, Some(version.to_string())),
            Some(_) => return Err(invalid()),
            None => (rest, None),
        };
        let (bucket, key) = path.split_once('/').ok_or_else(invalid)?;
        if bucket.is_empty() || key.is_empty() {
            return Err(invalid());
        }
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id,
        })
    }
}

fn s3_error<E, R>(
    what: &str,
    error: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> ArtifactError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match kind(error) {
        ErrorKind::Service(code)
            if code == "NoSuchKey" || code == "NoSuchBucket" || code == "NoSuchVersion" =>
        {
            ArtifactError::NotFound(format!("{what}: {code}"))
        }
        ErrorKind::Service(code) if code == "AccessDenied" || code == "KMS.NotFoundException" => {
            ArtifactError::Invalid(format!("{what}: {}", describe(error)))
        }
        ErrorKind::Construction => ArtifactError::Invalid(format!("{what}: {}", describe(error))),
        _ => ArtifactError::Unavailable(format!("{what}: {}", describe(error))),
    }
}

/// A version id from S3, if it names one (moto answers `null` for unversioned buckets, where
/// S3 sends no version at all).
pub(crate) fn version_of(version: Option<&str>) -> Option<String> {
    version
        .filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_string)
}

/// Upload the file at `path` to `bucket/key` with `encryption`: one `PutObject` below
/// [`PART_SIZE`], else a multipart upload whose parts are streamed from the file one at a
/// time (aborted if any part fails). Returns the new object's version id, if versioned.
pub async fn upload_file(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    encryption: &Encryption,
) -> Result<Option<String>, ArtifactError> {
    let what = format!("s3://{bucket}/{key}");
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| ArtifactError::Unavailable(format!("reading {}: {e}", path.display())))?
        .len();
    // With an S3 Bucket Key, S3 asks KMS for a data key once per bucket and key for a while,
    // not once per object: KMS requests (and their cost) stop growing with artifacts.
    let (sse, kms_key, bucket_key) = match encryption {
        Encryption::Kms(key) => (ServerSideEncryption::AwsKms, Some(key.clone()), Some(true)),
        Encryption::S3Managed => (ServerSideEncryption::Aes256, None, None),
    };
    if size < PART_SIZE {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| ArtifactError::Unavailable(format!("reading {}: {e}", path.display())))?;
        let output = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .content_length(size as i64)
            .server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_bucket_key_enabled(bucket_key)
            .send()
            .await
            .map_err(|e| s3_error(&what, &e))?;
        return Ok(version_of(output.version_id()));
    }
    let parts = size.div_ceil(PART_SIZE);
    if parts > MAX_PARTS {
        return Err(ArtifactError::Invalid(format!(
            "{} is {size} bytes, over what {MAX_PARTS} parts of {PART_SIZE} bytes hold",
            path.display()
        )));
    }
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .server_side_encryption(sse)
        .set_ssekms_key_id(kms_key)
        .set_bucket_key_enabled(bucket_key)
        .send()
        .await
        .map_err(|e| s3_error(&what, &e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| ArtifactError::Unavailable(format!("{what}: no upload id")))?
        .to_string();
    let result = upload_parts(client, bucket, key, &upload_id, path, size).await;
    let completed = match result {
        Ok(parts) => client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error(&what, &e)),
        Err(e) => Err(e),
    };
    match completed {
        Ok(output) => Ok(version_of(output.version_id())),
        Err(error) => {
            // Parts of an abandoned upload are billed until aborted (a bucket lifecycle rule
            // catches what a crash leaves).
            if let Err(abort) = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(object = %what, error = %describe(&abort), "aborting a failed multipart upload failed");
            }
            Err(error)
        }
    }
}

async fn upload_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    path: &Path,
    size: u64,
) -> Result<Vec<CompletedPart>, ArtifactError> {
    let what = format!("s3://{bucket}/{key}");
    let mut completed = Vec::new();
    let mut offset = 0u64;
    let mut number = 1i32;
    while offset < size {
        let length = PART_SIZE.min(size - offset);
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(length))
            .build()
            .await
            .map_err(|e| ArtifactError::Unavailable(format!("reading {}: {e}", path.display())))?;
        let output = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(length as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error(&what, &e))?;
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag().map(str::to_string))
                .set_checksum_crc32(output.checksum_crc32().map(str::to_string))
                .set_checksum_crc32_c(output.checksum_crc32_c().map(str::to_string))
                .set_checksum_crc64_nvme(output.checksum_crc64_nvme().map(str::to_string))
                .set_checksum_sha1(output.checksum_sha1().map(str::to_string))
                .set_checksum_sha256(output.checksum_sha256().map(str::to_string))
                .build(),
        );
        offset += length;
        number += 1;
    }
    Ok(completed)
}

/// Stream an object (at a version, when given) into the file `dest`.
pub async fn download_file(
    client: &Client,
    object: &S3Object,
    dest: &Path,
) -> Result<(), ArtifactError> {
    let what = object.location();
    let output = client
        .get_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_version_id(object.version_id.clone())
        .send()
        .await
        .map_err(|e| s3_error(&what, &e))?;
    let io =
        |e: std::io::Error| ArtifactError::Unavailable(format!("writing {}: {e}", dest.display()));
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut reader = output.body.into_async_read();
    tokio::io::copy(&mut reader, &mut file).await.map_err(io)?;
    file.flush().await.map_err(io)?;
    Ok(())
}

/// The artifact store on S3.
#[derive(Clone, Debug)]
pub struct S3Artifacts {
    client: Client,
    default_bucket: String,
    default_key: String,
}

impl S3Artifacts {
    /// `default_bucket` and `default_key` serve pipelines whose declaration names no artifact
    /// store or no encryption key.
    pub fn new(
        client: Client,
        default_bucket: impl Into<String>,
        default_key: impl Into<String>,
    ) -> Self {
        Self {
            client,
            default_bucket: default_bucket.into(),
            default_key: default_key.into(),
        }
    }

    /// Where an artifact of a pipeline with this store goes, and under which key.
    pub fn target(
        &self,
        store: Option<&penstock_core::model::ArtifactStore>,
    ) -> (String, Encryption) {
        let bucket = store
            .map(|s| s.location.clone())
            .filter(|location| !location.is_empty())
            .unwrap_or_else(|| self.default_bucket.clone());
        let key = store
            .and_then(|s| s.encryption_key.as_ref())
            .filter(|k| k.key_type == EncryptionKeyType::Kms && !k.id.is_empty())
            .map(|k| k.id.clone())
            .unwrap_or_else(|| self.default_key.clone());
        (bucket, Encryption::Kms(key))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put(
        &self,
        store: Option<&penstock_core::model::ArtifactStore>,
        key: &str,
        zip: &Path,
    ) -> Result<ArtifactLocation, ArtifactError> {
        if key.contains('#') {
            // `#` separates the version in a location.
            return Err(ArtifactError::Invalid(format!(
                "artifact key {key} contains '#'"
            )));
        }
        let (bucket, encryption) = self.target(store);
        let version_id = upload_file(&self.client, &bucket, key, zip, &encryption).await?;
        Ok(S3Object {
            bucket,
            key: key.to_string(),
            version_id,
        }
        .location())
    }

    async fn get(&self, location: &str, dest: &Path) -> Result<(), ArtifactError> {
        download_file(&self.client, &S3Object::parse(location)?, dest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_with_and_without_versions() {
        let object = S3Object {
            bucket: "artifacts".into(),
            key: "pipe/exec/a/out.zip".into(),
            version_id: Some("v1".into()),
        };
        assert_eq!(object.location(), "s3://artifacts/pipe/exec/a/out.zip#v1");
        assert_eq!(S3Object::parse(&object.location()).expect("parse"), object);
        let unversioned = S3Object {
            version_id: None,
            key: "k.zip".into(),
            ..object
        };
        assert_eq!(
            S3Object::parse("s3://artifacts/k.zip").expect("parse"),
            unversioned
        );
        for bad in ["local:x", "s3://bucket", "s3:///key", "s3://b/k#"] {
            assert!(S3Object::parse(bad).is_err(), "{bad}");
        }
    }
}
