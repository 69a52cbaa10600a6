//! The action providers on AWS, named and configured as in CodePipeline: `Source/AWS/S3`,
//! `Build|Test/AWS/CodeBuild` (started, then polled by the sweeper), `Deploy/AWS/S3`,
//! `Deploy/AWS/CloudFormation` (see `cloudformation`), `Deploy/AWS/CodeDeploy` (see
//! `codedeploy`) and `Approval/AWS/Manual`. An action with a `roleArn` runs with that role's
//! credentials (through the [`RoleAssumer`]). The GitHub sources
//! (`Source/AWS/CodeStarSourceConnection`, `Source/ThirdParty/GitHub`) are the embedded
//! default's own provider (it talks to GitHub, not AWS), handed in by the function that runs
//! them ([`ProviderDeps::github_source`]); like every source, it writes the files into the
//! attempt's output directory and the dispatch use case stores them in S3.

// Providers return early with the outcome that reports a failure (`Err(ProviderOutcome)`):
// the port's own type, built once per attempt, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_codebuild::types::{
    ArtifactPackaging, ArtifactsType, EnvironmentVariable, EnvironmentVariableType,
    ProjectArtifacts, ProjectSource, ProjectSourceVersion, SourceType, StatusType,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption};
use penstock_app::dispatch::artifact_key;
use penstock_app::ports::{
    ActionProvider, Archiver, IdGenerator, JobContext, Polled, ProviderOutcome, ProviderRegistry,
};
use penstock_core::engine::{ActionJob, ArtifactRef, ErrorDetails, ExternalExecution, Input};
use penstock_core::model::{ActionCategory, ActionOwner, ActionTypeId};
use tracing::warn;

use crate::artifacts::{Encryption, S3Artifacts, S3Object, download_file};
use crate::cloudformation::CloudFormation;
use crate::codedeploy::CodeDeploy;
use crate::config::AwsClients;
use crate::notifications::approval_notice;
use crate::sdk_error::describe;
use crate::sts::{AssumeRequest, RoleAssumer, session_name};

/// What every provider shares: the function's clients, the role assumer, the archiver and
/// where artifacts go.
pub struct ProviderDeps {
    pub clients: AwsClients,
    pub assumer: RoleAssumer,
    pub archiver: Arc<dyn Archiver>,
    pub artifacts: S3Artifacts,
    pub ids: Arc<dyn IdGenerator>,
    /// `ExternalId` passed when assuming action roles, when the target accounts require one.
    pub external_id: Option<String>,
    /// The CodeBuild project of CodeBuild actions whose configuration names none.
    pub default_codebuild_project: Option<String>,
    /// The provider of both GitHub source action types (`penstock_local::github_source`, built
    /// with the deployment's API URL and token); `None` leaves them unsupported.
    pub github_source: Option<Arc<dyn ActionProvider>>,
    /// The base URL of approval pages (`https://…/approvals`), for the review link of approval
    /// notifications; without it a notification carries the token but no link.
    pub approval_url: Option<String>,
}

impl ProviderDeps {
    /// Clients acting for the job: the action's role in its region when it has a `roleArn`,
    /// the function's own otherwise.
    pub(crate) async fn clients_for(&self, job: &ActionJob) -> Result<AwsClients, ProviderOutcome> {
        let Some(role_arn) = &job.role_arn else {
            return Ok(match &job.region {
                Some(region) => self.clients.for_config(
                    &self
                        .clients
                        .sdk_config()
                        .to_builder()
                        .region(aws_config::Region::new(region.clone()))
                        .build(),
                ),
                None => self.clients.clone(),
            });
        };
        let request = AssumeRequest {
            role_arn: role_arn.clone(),
            external_id: self.external_id.clone(),
            session_name: session_name(&job.pipeline_name, &job.execution_id),
            region: job.region.clone(),
        };
        match self.assumer.config_for(&request).await {
            Ok(config) => Ok(self.clients.for_config(&config)),
            Err(e) => Err(failure("PermissionError", e.to_string())),
        }
    }
}

/// Looks providers up by action type.
pub struct AwsProviders {
    source: Arc<dyn ActionProvider>,
    build: Arc<dyn ActionProvider>,
    deploy: Arc<dyn ActionProvider>,
    cloudformation: Arc<dyn ActionProvider>,
    codedeploy: Arc<dyn ActionProvider>,
    approval: Arc<dyn ActionProvider>,
    github_source: Option<Arc<dyn ActionProvider>>,
}

impl AwsProviders {
    pub fn new(deps: ProviderDeps) -> Self {
        let deps = Arc::new(deps);
        Self {
            github_source: deps.github_source.clone(),
            source: Arc::new(S3Source { deps: deps.clone() }),
            build: Arc::new(CodeBuild { deps: deps.clone() }),
            deploy: Arc::new(S3Deploy { deps: deps.clone() }),
            cloudformation: Arc::new(CloudFormation { deps: deps.clone() }),
            codedeploy: Arc::new(CodeDeploy { deps: deps.clone() }),
            approval: Arc::new(ManualApproval { deps }),
        }
    }
}

impl ProviderRegistry for AwsProviders {
    fn provider_for(&self, type_id: &ActionTypeId) -> Option<Arc<dyn ActionProvider>> {
        use ActionCategory as C;
        use ActionOwner as O;
        match (type_id.category, type_id.owner, type_id.provider.as_str()) {
            (C::Source, O::Aws, "S3") => Some(self.source.clone()),
            (C::Build | C::Test, O::Aws, "CodeBuild") => Some(self.build.clone()),
            (C::Deploy, O::Aws, "S3") => Some(self.deploy.clone()),
            (C::Deploy, O::Aws, "CloudFormation") => Some(self.cloudformation.clone()),
            (C::Deploy, O::Aws, "CodeDeploy") => Some(self.codedeploy.clone()),
            (C::Approval, O::Aws, "Manual") => Some(self.approval.clone()),
            (C::Source, O::Aws, "CodeStarSourceConnection")
            | (C::Source, O::ThirdParty, "GitHub") => self.github_source.clone(),
            _ => None,
        }
    }
}

pub(crate) fn failure(code: &str, message: String) -> ProviderOutcome {
    ProviderOutcome::Failed {
        code: code.to_string(),
        message,
        external: ExternalExecution::default(),
    }
}

fn required<'a>(job: &'a ActionJob, key: &str) -> Result<&'a str, ProviderOutcome> {
    match job.configuration.get(key) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(failure(
            "ConfigurationError",
            format!("the action's configuration has no {key}"),
        )),
    }
}

pub(crate) async fn unpack(
    archiver: &Arc<dyn Archiver>,
    zip: &Path,
    dir: &Path,
) -> Result<(), ProviderOutcome> {
    let (archiver, zip, dir) = (archiver.clone(), zip.to_path_buf(), dir.to_path_buf());
    match tokio::task::spawn_blocking(move || archiver.unpack(&zip, &dir)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(failure("JobFailed", e.to_string())),
        Err(e) => Err(failure("JobFailed", e.to_string())),
    }
}

pub(crate) async fn pack(
    archiver: &Arc<dyn Archiver>,
    dir: &Path,
    zip: &Path,
) -> Result<(), ProviderOutcome> {
    let (archiver, dir, zip) = (archiver.clone(), dir.to_path_buf(), zip.to_path_buf());
    match tokio::task::spawn_blocking(move || archiver.pack(&dir, &zip)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(failure("JobFailed", e.to_string())),
        Err(e) => Err(failure("JobFailed", e.to_string())),
    }
}

/// `Source/AWS/S3`: the zip object `S3ObjectKey` in `S3Bucket`, at the version the execution
/// pins (`S3_OBJECT_VERSION_ID`) or the latest. Output variables `ETag` and `VersionId`.
struct S3Source {
    deps: Arc<ProviderDeps>,
}

impl S3Source {
    async fn fetch(&self, ctx: &JobContext) -> Result<ProviderOutcome, ProviderOutcome> {
        let job = &ctx.job;
        let bucket = required(job, "S3Bucket")?.to_string();
        let mut key = required(job, "S3ObjectKey")?.to_string();
        let mut version_id = None;
        if let Some(revision) = &job.source_revision {
            match revision.revision_type.as_str() {
                "S3_OBJECT_VERSION_ID" => version_id = Some(revision.revision_value.clone()),
                "S3_OBJECT_KEY" => key = revision.revision_value.clone(),
                other => {
                    return Err(failure(
                        "ConfigurationError",
                        format!("an S3 source cannot be pinned to a {other} revision"),
                    ));
                }
            }
        }
        let Some((artifact, out_dir)) = ctx.outputs.first() else {
            return Err(failure(
                "ConfigurationError",
                "an S3 source action needs one output artifact".into(),
            ));
        };
        let clients = self.deps.clients_for(job).await?;
        // The version read is fixed first, so the revision reported is the one downloaded.
        let head = clients
            .s3
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .set_version_id(version_id.clone())
            .send()
            .await
            .map_err(|e| {
                failure(
                    "JobFailed",
                    format!("s3://{bucket}/{key}: {}", describe(&e)),
                )
            })?;
        let object = S3Object {
            bucket: bucket.clone(),
            key: key.clone(),
            version_id: crate::artifacts::version_of(head.version_id()).or(version_id),
        };
        let zip = ctx.work_dir.join("source.zip");
        download_file(&clients.s3, &object, &zip)
            .await
            .map_err(|e| failure("JobFailed", e.to_string()))?;
        unpack(&self.deps.archiver, &zip, out_dir).await?;
        let etag = head
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let mut output_variables = BTreeMap::from([("ETag".to_string(), etag.clone())]);
        if let Some(version) = &object.version_id {
            output_variables.insert("VersionId".into(), version.clone());
        }
        let revision = object.version_id.clone().unwrap_or_else(|| etag.clone());
        let summary = head
            .metadata()
            .and_then(|m| m.get("codepipeline-artifact-revision-summary"))
            .cloned()
            .unwrap_or_else(|| format!("s3://{bucket}/{key}"));
        Ok(ProviderOutcome::Succeeded {
            output_variables,
            revisions: BTreeMap::from([(
                artifact.clone(),
                (revision.clone(), Some(summary.clone())),
            )]),
            external: ExternalExecution {
                id: Some(revision),
                summary: Some(summary),
                url: Some(format!(
                    "https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
                )),
            },
        })
    }
}

#[async_trait]
impl ActionProvider for S3Source {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        self.fetch(ctx).await.unwrap_or_else(|outcome| outcome)
    }
}

/// One entry of CodeBuild's `EnvironmentVariables` configuration.
#[derive(serde::Deserialize)]
struct BuildVariable {
    name: String,
    value: String,
    #[serde(rename = "type", default)]
    variable_type: Option<String>,
}

/// `Build|Test/AWS/CodeBuild`: starts a build of `ProjectName` with the input artifacts as
/// S3 sources and the output artifacts as S3 zips under the pipeline's artifact store and key,
/// then hands the attempt off; the sweeper polls the build ([`ActionProvider::poll`]).
struct CodeBuild {
    deps: Arc<ProviderDeps>,
}

/// `bucket/key` of an artifact location, as CodeBuild's S3 sources take it, and its version.
fn codebuild_source(artifact: &ArtifactRef) -> Result<(String, Option<String>), ProviderOutcome> {
    let object = S3Object::parse(&artifact.location).map_err(|e| {
        failure(
            "ConfigurationError",
            format!("input artifact {}: {e}", artifact.name),
        )
    })?;
    Ok((
        format!("{}/{}", object.bucket, object.key),
        object.version_id,
    ))
}

impl CodeBuild {
    async fn start(&self, ctx: &JobContext) -> Result<ProviderOutcome, ProviderOutcome> {
        let job = &ctx.job;
        // An action without ProjectName runs in the deployment's default project, whose own
        // buildspec only fails: the build runs the source's `buildspec.yml`, as CodeBuild does
        // for a project without an inline buildspec.
        let configured = job
            .configuration
            .get("ProjectName")
            .filter(|p| !p.is_empty());
        let (project, buildspec) = match (configured, &self.deps.default_codebuild_project) {
            (Some(project), _) => (project.clone(), None),
            (None, Some(project)) => (project.clone(), Some("buildspec.yml".to_string())),
            (None, None) => (required(job, "ProjectName")?.to_string(), None),
        };
        if job
            .configuration
            .get("BatchEnabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(failure(
                "ConfigurationError",
                "CodeBuild batch builds are not supported".into(),
            ));
        }
        let variables: Vec<BuildVariable> = match job.configuration.get("EnvironmentVariables") {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                failure(
                    "ConfigurationError",
                    format!("EnvironmentVariables must be a JSON array of {{\"name\", \"value\", \"type\"}}: {e}"),
                )
            })?,
            None => Vec::new(),
        };
        let invalid =
            |e: aws_sdk_codebuild::error::BuildError| failure("ConfigurationError", e.to_string());
        let mut environment = Vec::new();
        for variable in variables {
            let variable_type = match variable.variable_type.as_deref() {
                None | Some("PLAINTEXT") => EnvironmentVariableType::Plaintext,
                Some("PARAMETER_STORE") => EnvironmentVariableType::ParameterStore,
                Some("SECRETS_MANAGER") => EnvironmentVariableType::SecretsManager,
                Some(other) => {
                    return Err(failure(
                        "ConfigurationError",
                        format!(
                            "environment variable {} has unknown type {other}",
                            variable.name
                        ),
                    ));
                }
            };
            environment.push(
                EnvironmentVariable::builder()
                    .name(variable.name)
                    .value(variable.value)
                    .r#type(variable_type)
                    .build()
                    .map_err(invalid)?,
            );
        }
        // The primary source is `PrimarySource` when named, else the first input.
        let primary_name = job.configuration.get("PrimarySource");
        let mut inputs: Vec<&ArtifactRef> = job.input_artifacts.iter().collect();
        if let Some(name) = primary_name
            && let Some(position) = inputs.iter().position(|a| &a.name == name)
        {
            let primary = inputs.remove(position);
            inputs.insert(0, primary);
        }
        let (bucket, encryption) = self.deps.artifacts.target(job.artifact_store.as_ref());
        let Encryption::Kms(kms_key) = encryption else {
            return Err(failure(
                "ConfigurationError",
                "artifacts need a KMS key".into(),
            ));
        };
        let clients = self.deps.clients_for(job).await?;
        let mut request = clients
            .codebuild
            .start_build()
            .project_name(&project)
            .set_environment_variables_override((!environment.is_empty()).then_some(environment))
            .encryption_key_override(&kms_key)
            .set_buildspec_override(buildspec)
            .idempotency_token(&job.action_execution_id);
        match inputs.split_first() {
            Some((primary, secondary)) => {
                let (location, version) = codebuild_source(primary)?;
                request = request
                    .source_type_override(SourceType::S3)
                    .source_location_override(location)
                    .set_source_version(version);
                for artifact in secondary {
                    let (location, version) = codebuild_source(artifact)?;
                    request = request.secondary_sources_override(
                        ProjectSource::builder()
                            .r#type(SourceType::S3)
                            .location(location)
                            .source_identifier(&artifact.name)
                            .build()
                            .map_err(invalid)?,
                    );
                    if let Some(version) = version {
                        request = request.secondary_sources_version_override(
                            ProjectSourceVersion::builder()
                                .source_identifier(&artifact.name)
                                .source_version(version)
                                .build()
                                .map_err(invalid)?,
                        );
                    }
                }
            }
            None => request = request.source_type_override(SourceType::NoSource),
        }
        let outputs: Vec<ProjectArtifacts> = job
            .output_artifacts
            .iter()
            .map(|name| {
                let key = artifact_key(job, name);
                let (path, file) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
                ProjectArtifacts::builder()
                    .r#type(ArtifactsType::S3)
                    .location(&bucket)
                    .path(path)
                    .name(file)
                    .packaging(ArtifactPackaging::Zip)
                    .encryption_disabled(false)
                    .artifact_identifier(name)
                    .build()
                    .map_err(invalid)
            })
            .collect::<Result<_, _>>()?;
        let mut outputs = outputs.into_iter();
        request = match outputs.next() {
            Some(primary) => request.artifacts_override(primary),
            None => request.artifacts_override(
                ProjectArtifacts::builder()
                    .r#type(ArtifactsType::NoArtifacts)
                    .build()
                    .map_err(invalid)?,
            ),
        };
        for secondary in outputs {
            request = request.secondary_artifacts_override(secondary);
        }
        let output = request.send().await.map_err(|e| {
            failure(
                "JobFailed",
                format!("starting build of {project}: {}", describe(&e)),
            )
        })?;
        let build_id = output
            .build_value()
            .and_then(|b| b.id())
            .ok_or_else(|| failure("JobFailed", "CodeBuild returned no build id".into()))?
            .to_string();
        let region = clients
            .sdk_config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        Ok(ProviderOutcome::Pending {
            external: ExternalExecution {
                id: Some(build_id.clone()),
                summary: None,
                url: Some(build_url(&region, &project, &build_id)),
            },
            approval_token: None,
        })
    }

    async fn check(&self, job: &ActionJob, build_id: &str) -> Result<Polled, String> {
        let clients = match self.deps.clients_for(job).await {
            Ok(clients) => clients,
            Err(ProviderOutcome::Failed { message, .. }) => return Err(message),
            Err(_) => return Err("no clients".into()),
        };
        let output = clients
            .codebuild
            .batch_get_builds()
            .ids(build_id)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let Some(build) = output.builds().first() else {
            return Ok(Polled::Finished(failed_input(
                job,
                "JobFailed",
                format!("build {build_id} no longer exists"),
                ExternalExecution::default(),
            )));
        };
        let external = ExternalExecution {
            id: Some(build_id.to_string()),
            summary: build.current_phase().map(|p| format!("phase {p}")),
            url: None,
        };
        match build.build_status() {
            Some(StatusType::InProgress) | None => Ok(Polled::Running),
            Some(StatusType::Succeeded) => {
                let output_variables: BTreeMap<String, String> = build
                    .exported_environment_variables()
                    .iter()
                    .filter_map(|v| Some((v.name()?.to_string(), v.value()?.to_string())))
                    .collect();
                let (bucket, _) = self.deps.artifacts.target(job.artifact_store.as_ref());
                let mut output_artifacts = Vec::new();
                for name in &job.output_artifacts {
                    let key = artifact_key(job, name);
                    let head = self
                        .deps
                        .artifacts
                        .client()
                        .head_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await;
                    match head {
                        Ok(head) => output_artifacts.push(ArtifactRef {
                            name: name.clone(),
                            location: S3Object {
                                bucket: bucket.clone(),
                                key,
                                version_id: crate::artifacts::version_of(head.version_id()),
                            }
                            .location(),
                            revision_id: None,
                            revision_summary: None,
                        }),
                        Err(e) => {
                            return Ok(Polled::Finished(failed_input(
                                job,
                                "JobFailed",
                                format!(
                                    "build {build_id} succeeded but its output artifact {name} is missing: {}",
                                    describe(&e)
                                ),
                                external,
                            )));
                        }
                    }
                }
                Ok(Polled::Finished(Input::ActionSucceeded {
                    execution_id: job.execution_id.clone(),
                    stage: job.stage.clone(),
                    action: job.action.clone(),
                    attempt: job.attempt,
                    output_artifacts,
                    output_variables,
                    external: ExternalExecution {
                        summary: Some("Build succeeded".into()),
                        ..external
                    },
                }))
            }
            Some(status) => {
                let failed_phase = build
                    .phases()
                    .iter()
                    .filter(|p| {
                        p.phase_status()
                            .is_some_and(|s| *s != StatusType::Succeeded)
                    })
                    .filter_map(|p| {
                        let phase = p.phase_type()?.as_str().to_string();
                        let context: Vec<String> = p
                            .contexts()
                            .iter()
                            .filter_map(|c| c.message().map(str::to_string))
                            .collect();
                        Some(format!("{phase}: {}", context.join("; ")))
                    })
                    .next();
                Ok(Polled::Finished(failed_input(
                    job,
                    "JobFailed",
                    format!(
                        "build {build_id} ended {}{}",
                        status.as_str(),
                        failed_phase.map(|p| format!(" in {p}")).unwrap_or_default()
                    ),
                    external,
                )))
            }
        }
    }
}

fn build_url(region: &str, project: &str, build_id: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/codesuite/codebuild/projects/{project}/build/{build_id}"
    )
}

pub(crate) fn failed_input(
    job: &ActionJob,
    code: &str,
    message: String,
    external: ExternalExecution,
) -> Input {
    Input::ActionFailed {
        execution_id: job.execution_id.clone(),
        stage: job.stage.clone(),
        action: job.action.clone(),
        attempt: job.attempt,
        error: ErrorDetails {
            code: code.to_string(),
            message,
        },
        external,
    }
}

#[async_trait]
impl ActionProvider for CodeBuild {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        self.start(ctx).await.unwrap_or_else(|outcome| outcome)
    }

    async fn poll(&self, job: &ActionJob, external: &ExternalExecution) -> Option<Polled> {
        let build_id = external.id.as_deref()?;
        match self.check(job, build_id).await {
            Ok(polled) => Some(polled),
            Err(reason) => {
                // Unknown is not failed: the next sweep asks again, the deadline bounds it.
                warn!(build_id, reason, "polling a build failed");
                Some(Polled::Running)
            }
        }
    }
}

/// `Deploy/AWS/S3`: the input artifact into `BucketName`, either extracted (each file under
/// the `ObjectKey` prefix) or as the zip at `ObjectKey`; encrypted with `KMSEncryptionKeyARN`
/// when given, else with S3-managed keys; with `CannedACL` and `CacheControl` on every object
/// when given. With a `roleArn`, the objects are written with that role's credentials (into
/// the role's account).
struct S3Deploy {
    deps: Arc<ProviderDeps>,
}

/// How every object of one S3 deploy is written.
struct DeployObject<'a> {
    client: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    encryption: &'a Encryption,
    acl: Option<ObjectCannedAcl>,
    cache_control: Option<String>,
}

/// S3's limit on a single `PutObject`.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

impl DeployObject<'_> {
    /// One `PutObject` streamed from the file (memory stays flat), always with server-side
    /// encryption headers.
    async fn put(&self, key: &str, path: &Path) -> Result<(), ProviderOutcome> {
        let target = format!("s3://{}/{key}", self.bucket);
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| failure("JobFailed", format!("reading {}: {e}", path.display())))?
            .len();
        if size > MAX_SINGLE_PUT {
            return Err(failure(
                "JobFailed",
                format!("{target}: {size} bytes is over S3's 5 GiB limit for one object upload"),
            ));
        }
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| failure("JobFailed", format!("reading {}: {e}", path.display())))?;
        let (sse, kms_key) = match self.encryption {
            Encryption::Kms(key) => (ServerSideEncryption::AwsKms, Some(key.clone())),
            Encryption::S3Managed => (ServerSideEncryption::Aes256, None),
        };
        self.client
            .put_object()
            .bucket(self.bucket)
            .key(key)
            .body(body)
            .content_length(size as i64)
            .set_content_type(content_type(key).map(str::to_string))
            .server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_acl(self.acl.clone())
            .set_cache_control(self.cache_control.clone())
            .send()
            .await
            .map_err(|e| failure("JobFailed", format!("{target}: {}", describe(&e))))?;
        Ok(())
    }
}

/// The content type of common web files, so an extracted site is served as such.
fn content_type(key: &str) -> Option<&'static str> {
    let extension = key.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" | "map" => "application/json",
        "txt" => "text/plain",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "zip" => "application/zip",
        "yaml" | "yml" => "application/yaml",
        _ => return None,
    })
}

impl S3Deploy {
    async fn deploy(&self, ctx: &JobContext) -> Result<ProviderOutcome, ProviderOutcome> {
        let job = &ctx.job;
        let bucket = required(job, "BucketName")?.to_string();
        let extract = match required(job, "Extract")? {
            v if v.eq_ignore_ascii_case("true") => true,
            v if v.eq_ignore_ascii_case("false") => false,
            v => {
                return Err(failure(
                    "ConfigurationError",
                    format!("Extract must be true or false, not {v:?}"),
                ));
            }
        };
        let object_key = job
            .configuration
            .get("ObjectKey")
            .filter(|k| !k.is_empty())
            .cloned();
        let encryption = match job.configuration.get("KMSEncryptionKeyARN") {
            Some(key) if !key.is_empty() => Encryption::Kms(key.clone()),
            _ => Encryption::S3Managed,
        };
        let acl = match job.configuration.get("CannedACL").map(|a| a.trim()) {
            Some(acl) if !acl.is_empty() => {
                if !ObjectCannedAcl::values().contains(&acl) {
                    return Err(failure(
                        "ConfigurationError",
                        format!(
                            "CannedACL {acl:?} is not one of {}",
                            ObjectCannedAcl::values().join(", ")
                        ),
                    ));
                }
                Some(ObjectCannedAcl::from(acl))
            }
            _ => None,
        };
        let cache_control = job
            .configuration
            .get("CacheControl")
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let Some((artifact, input_dir)) = ctx.inputs.first() else {
            return Err(failure(
                "ConfigurationError",
                "an S3 deploy needs one input artifact".into(),
            ));
        };
        let clients = self.deps.clients_for(job).await?;
        let writer = DeployObject {
            client: &clients.s3,
            bucket: &bucket,
            encryption: &encryption,
            acl,
            cache_control,
        };
        let target = if extract {
            let prefix = object_key
                .map(|k| format!("{}/", k.trim_end_matches('/')))
                .unwrap_or_default();
            let files = list_files(input_dir)
                .await
                .map_err(|e| failure("JobFailed", format!("reading {}: {e}", artifact.name)))?;
            for (relative, path) in &files {
                writer.put(&format!("{prefix}{relative}"), path).await?;
            }
            format!("s3://{bucket}/{prefix}")
        } else {
            let Some(key) = object_key else {
                return Err(failure(
                    "ConfigurationError",
                    "ObjectKey is required when Extract is false".into(),
                ));
            };
            let zip = ctx.work_dir.join("deploy.zip");
            pack(&self.deps.archiver, input_dir, &zip).await?;
            writer.put(&key, &zip).await?;
            format!("s3://{bucket}/{key}")
        };
        Ok(ProviderOutcome::Succeeded {
            output_variables: BTreeMap::new(),
            revisions: BTreeMap::new(),
            external: ExternalExecution {
                id: None,
                summary: Some(format!("Deployed to {target}")),
                url: Some(format!(
                    "https://s3.console.aws.amazon.com/s3/buckets/{bucket}"
                )),
            },
        })
    }
}

#[async_trait]
impl ActionProvider for S3Deploy {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        self.deploy(ctx).await.unwrap_or_else(|outcome| outcome)
    }
}

/// Every regular file under `root`, with its `/`-separated path relative to `root`, in path
/// order. Symbolic links are skipped (the archiver refused escaping ones already).
async fn list_files(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut pending = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, dir)) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{prefix}{name}");
            let file_type = entry.file_type().await?;
            if file_type.is_dir() {
                pending.push((format!("{relative}/"), entry.path()));
            } else if file_type.is_file() {
                files.push((relative, entry.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `Approval/AWS/Manual`: issues a fresh token; the attempt waits for `PutApprovalResult`
/// (the approval function or the API) or its deadline. With a `NotificationArn`, the topic is
/// told first (CodePipeline's approval message, linking the approval page); an approval whose
/// notification cannot be sent fails rather than wait unseen until it times out.
struct ManualApproval {
    deps: Arc<ProviderDeps>,
}

impl ManualApproval {
    async fn notify(
        &self,
        job: &ActionJob,
        topic: &str,
        token: &str,
    ) -> Result<(), ProviderOutcome> {
        let clients = self.deps.clients_for(job).await?;
        let region = clients
            .sdk_config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let notice = approval_notice(job, token, &region, self.deps.approval_url.as_deref());
        clients
            .sns
            .publish()
            .topic_arn(topic)
            .subject(notice.subject)
            .message(notice.message.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                failure(
                    "PermissionError",
                    format!(
                        "the approval notification to {topic} could not be sent: {}",
                        describe(&e)
                    ),
                )
            })
    }
}

#[async_trait]
impl ActionProvider for ManualApproval {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        let token = self.deps.ids.uuid();
        let topic = ctx
            .job
            .configuration
            .get("NotificationArn")
            .filter(|t| !t.is_empty());
        if let Some(topic) = topic
            && let Err(outcome) = self.notify(&ctx.job, topic, &token).await
        {
            return outcome;
        }
        ProviderOutcome::Pending {
            external: ExternalExecution {
                id: None,
                summary: ctx.job.configuration.get("CustomData").cloned(),
                url: ctx.job.configuration.get("ExternalEntityLink").cloned(),
            },
            approval_token: Some(token),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_config::{BehaviorVersion, Region, SdkConfig};
    use penstock_app::ports::{ArtifactError, RandomIds};
    use penstock_core::providers::CATALOG;
    use penstock_local::github_source::{GitHubSettings, GitHubSource};

    use super::*;

    struct NoArchiver;

    impl Archiver for NoArchiver {
        fn pack(&self, _dir: &Path, _zip: &Path) -> Result<(), ArtifactError> {
            Err(ArtifactError::Invalid("not in this test".into()))
        }
        fn unpack(&self, _zip: &Path, _dir: &Path) -> Result<(), ArtifactError> {
            Err(ArtifactError::Invalid("not in this test".into()))
        }
    }

    /// Validation tells users which types run on AWS from the catalog: it must say what this
    /// registry does.
    #[tokio::test]
    async fn the_catalog_says_which_action_types_run_on_aws() {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        let clients = AwsClients::new(&config);
        let providers = AwsProviders::new(ProviderDeps {
            assumer: RoleAssumer::new(clients.sts.clone(), config.clone()),
            archiver: Arc::new(NoArchiver),
            artifacts: S3Artifacts::new(clients.s3.clone(), "artifacts", "alias/artifacts"),
            ids: Arc::new(RandomIds),
            external_id: None,
            default_codebuild_project: None,
            // The GitHub sources the dispatcher hands in.
            github_source: Some(Arc::new(GitHubSource::new(&GitHubSettings::new(
                None, None,
            )))),
            approval_url: None,
            clients,
        });
        for spec in CATALOG {
            let id = ActionTypeId {
                category: spec.category,
                owner: spec.owner,
                provider: spec.provider.to_string(),
                version: spec.version.to_string(),
            };
            assert_eq!(
                providers.provider_for(&id).is_some(),
                spec.runs_on_aws,
                "{}/{}/{}: runs_on_aws in the catalog",
                spec.category.as_str(),
                spec.owner.as_str(),
                spec.provider
            );
        }
    }

    #[tokio::test]
    async fn list_files_walks_nested_directories_in_order() {
        let dir = std::env::temp_dir().join(format!("penstock-list-{}", uuid::Uuid::new_v4()));
        tokio::fs::create_dir_all(dir.join("b/c"))
            .await
            .expect("dirs");
        for (path, text) in [("a.txt", "a"), ("b/c/d.txt", "d"), ("b/e.txt", "e")] {
            tokio::fs::write(dir.join(path), text).await.expect("write");
        }
        let files: Vec<String> = list_files(&dir)
            .await
            .expect("list")
            .into_iter()
            .map(|(relative, _)| relative)
            .collect();
        assert_eq!(files, vec!["a.txt", "b/c/d.txt", "b/e.txt"]);
        tokio::fs::remove_dir_all(&dir).await.expect("cleanup");
    }
}
