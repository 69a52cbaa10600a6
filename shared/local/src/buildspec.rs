//! The local CodeBuild action: parses a buildspec (version 0.2) and runs it on this machine with
//! real shell processes, collecting the log, exported variables and output artifacts.
//!
//! How it emulates CodeBuild:
//! - One long-lived shell (`bash`, else `sh`, or `env.shell`) runs every command of the build,
//!   so `cd`, exported and plain shell variables persist across commands and phases, as in
//!   CodeBuild 0.2. Each command is written to a file and sourced (`. file </dev/null`); its exit
//!   status is read back through a per-build marker line on the shell's output.
//! - A command exiting non-zero fails its phase; the phase's remaining commands are skipped and
//!   its `finally` commands run. What happens next is [`next_step_after_failure`].
//! - The environment starts clean (PATH, HOME, LANG), plus the `CODEBUILD_*` variables, the
//!   buildspec's `env.variables`, then the caller's variables (the action's
//!   `EnvironmentVariables`), later ones winning, as in CodeBuild's precedence.
//! - A command that exits the shell (`exit 1`) fails its phase; later phases run in a fresh shell
//!   started from the initial environment, and leftover background processes are killed.
//! - On timeout or cancellation the shell's whole process group is killed.
//! - `run-as`, `runtime-versions` and `git-credential-helper` are ignored (noted in the log);
//!   `parameter-store` and `secrets-manager` are refused: there is nothing local to read them
//!   from, and running without them would hide the problem.
//!
//! The work directory (given by the caller, outside the source directory) receives `build.log`,
//! the command files and the collected artifacts.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use walkdir::WalkDir;

use crate::archive;

/// Output lines longer than this are split, so one runaway line cannot exhaust memory.
const MAX_LINE_BYTES: u64 = 1024 * 1024;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------
// The buildspec document
// ---------------------------------------------------------------------------------------------

/// A parsed buildspec (version 0.2). Unknown keys are ignored, as CodeBuild does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BuildSpec {
    pub version: String,
    #[serde(default)]
    pub run_as: Option<String>,
    #[serde(default)]
    pub env: EnvSection,
    #[serde(default)]
    pub phases: Phases,
    #[serde(default)]
    pub artifacts: Option<ArtifactsSection>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EnvSection {
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub exported_variables: Vec<String>,
    #[serde(default)]
    pub parameter_store: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secrets_manager: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub git_credential_helper: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Phases {
    #[serde(default)]
    pub install: Option<Phase>,
    #[serde(default)]
    pub pre_build: Option<Phase>,
    #[serde(default)]
    pub build: Option<Phase>,
    #[serde(default)]
    pub post_build: Option<Phase>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Phase {
    #[serde(default)]
    pub run_as: Option<String>,
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub finally: Vec<String>,
    #[serde(default)]
    pub runtime_versions: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OnFailure {
    #[serde(rename = "ABORT")]
    Abort,
    #[serde(rename = "CONTINUE")]
    Continue,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ArtifactsSection {
    pub files: OneOrMany,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub discard_paths: bool,
    #[serde(default)]
    pub base_directory: Option<String>,
    #[serde(default)]
    pub exclude_paths: OneOrMany,
    #[serde(default)]
    pub enable_symlinks: bool,
    #[serde(default)]
    pub secondary_artifacts: BTreeMap<String, ArtifactsSection>,
}

/// A list of strings that CodeBuild also accepts written as a single string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrManyRepr")]
pub struct OneOrMany(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrManyRepr {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrManyRepr> for OneOrMany {
    fn from(repr: OneOrManyRepr) -> Self {
        match repr {
            OneOrManyRepr::One(one) => Self(vec![one]),
            OneOrManyRepr::Many(many) => Self(many),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildSpecError {
    #[error("buildspec is not valid: at `{path}`: {message}")]
    Invalid { path: String, message: String },
    #[error("buildspec version {0:?} is not supported (only 0.2)")]
    UnsupportedVersion(String),
    #[error("buildspec key `{0}` is not supported locally")]
    Unsupported(&'static str),
    #[error("buildspec file {path} not found in the primary source")]
    NotFound { path: String },
    #[error("buildspec path {0:?} must be relative and stay inside the primary source")]
    BadPath(String),
    #[error("reading buildspec {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BuildSpec {
    /// Parses buildspec YAML. Wrong types are errors naming the key path
    /// (`phases.build.commands[0]`).
    pub fn parse(yaml: &str) -> Result<Self, BuildSpecError> {
        let mut failed_path = String::new();
        let parsed = serde_saphyr::with_deserializer_from_str(yaml, |deserializer| {
            serde_path_to_error::deserialize::<_, BuildSpec>(deserializer).map_err(|err| {
                failed_path = err.path().to_string();
                err.into_inner()
            })
        });
        let spec = parsed.map_err(|err| BuildSpecError::Invalid {
            path: if failed_path.is_empty() {
                ".".to_string()
            } else {
                failed_path.clone()
            },
            message: err.to_string(),
        })?;
        if spec.version.trim() != "0.2" {
            return Err(BuildSpecError::UnsupportedVersion(spec.version));
        }
        if spec.env.parameter_store.is_some() {
            return Err(BuildSpecError::Unsupported("env.parameter-store"));
        }
        if spec.env.secrets_manager.is_some() {
            return Err(BuildSpecError::Unsupported("env.secrets-manager"));
        }
        for name in spec
            .env
            .variables
            .keys()
            .chain(&spec.env.exported_variables)
        {
            if !is_variable_name(name) {
                return Err(BuildSpecError::Invalid {
                    path: "env".to_string(),
                    message: format!("{name:?} is not a valid environment variable name"),
                });
            }
        }
        Ok(spec)
    }
}

/// Finds the buildspec as CodeBuild does: the `BuildSpec` configuration is either inline YAML
/// or a path relative to the primary source; without it, `buildspec.yml` in the primary source.
pub fn load_buildspec(
    configuration: Option<&str>,
    primary_source: &Path,
) -> Result<BuildSpec, BuildSpecError> {
    let relative = match configuration.map(str::trim) {
        Some(text) if text.contains('\n') || text.starts_with("version") => {
            return BuildSpec::parse(text);
        }
        Some(text) if !text.is_empty() => text.to_string(),
        _ => "buildspec.yml".to_string(),
    };
    if !is_contained_relative(&relative) {
        return Err(BuildSpecError::BadPath(relative));
    }
    let path = primary_source.join(&relative);
    match std::fs::read_to_string(&path) {
        Ok(text) => BuildSpec::parse(&text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Err(BuildSpecError::NotFound { path: relative })
        }
        Err(source) => Err(BuildSpecError::Read { path, source }),
    }
}

// ---------------------------------------------------------------------------------------------
// Phases and their transitions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PhaseName {
    Install,
    PreBuild,
    Build,
    PostBuild,
}

impl PhaseName {
    pub const ALL: [PhaseName; 4] = [
        PhaseName::Install,
        PhaseName::PreBuild,
        PhaseName::Build,
        PhaseName::PostBuild,
    ];

    /// CodeBuild's upper-case phase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Install => "INSTALL",
            PhaseName::PreBuild => "PRE_BUILD",
            PhaseName::Build => "BUILD",
            PhaseName::PostBuild => "POST_BUILD",
        }
    }

    fn of(self, phases: &Phases) -> Option<&Phase> {
        match self {
            PhaseName::Install => phases.install.as_ref(),
            PhaseName::PreBuild => phases.pre_build.as_ref(),
            PhaseName::Build => phases.build.as_ref(),
            PhaseName::PostBuild => phases.post_build.as_ref(),
        }
    }
}

/// Where a build goes after a phase failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Run the next phase (`on-failure: CONTINUE`).
    NextPhase,
    /// Skip to `POST_BUILD` (a failed `BUILD`).
    PostBuild,
    /// Skip to uploading artifacts (a failed `POST_BUILD`).
    UploadArtifacts,
    /// Stop: no more phases, no artifacts.
    Finalize,
}

/// CodeBuild's phase transitions on failure: `INSTALL` and `PRE_BUILD` failures end the build,
/// a `BUILD` failure still runs `POST_BUILD`, and artifacts are uploaded after `POST_BUILD`
/// whatever happened in `BUILD`. `on-failure: ABORT` ends the build at once; `CONTINUE` carries on
/// to the next phase (the build is still failed).
pub fn next_step_after_failure(phase: PhaseName, on_failure: Option<OnFailure>) -> AfterFailure {
    match (on_failure, phase) {
        (Some(OnFailure::Abort), _) => AfterFailure::Finalize,
        (Some(OnFailure::Continue), PhaseName::PostBuild) => AfterFailure::UploadArtifacts,
        (Some(OnFailure::Continue), _) => AfterFailure::NextPhase,
        (None, PhaseName::Install | PhaseName::PreBuild) => AfterFailure::Finalize,
        (None, PhaseName::Build) => AfterFailure::PostBuild,
        (None, PhaseName::PostBuild) => AfterFailure::UploadArtifacts,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseStatus {
    Succeeded,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseReport {
    pub phase: PhaseName,
    pub status: PhaseStatus,
}

// ---------------------------------------------------------------------------------------------
// Running a build
// ---------------------------------------------------------------------------------------------

/// Everything a build needs besides the buildspec.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Scratch space for the log, command files and artifacts; must not be inside a source.
    pub work_dir: PathBuf,
    /// The primary input, the build's starting directory (`CODEBUILD_SRC_DIR`).
    pub primary_source_dir: PathBuf,
    /// Secondary inputs by artifact name (`CODEBUILD_SRC_DIR_<name>`).
    pub secondary_sources: Vec<(String, PathBuf)>,
    /// The action's `EnvironmentVariables`, already resolved; they override `env.variables`.
    pub variables: Vec<(String, String)>,
    pub build_id: String,
    pub build_number: u64,
    pub build_arn: String,
    pub initiator: String,
    pub resolved_source_version: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildStatus {
    Succeeded,
    /// The build failed; `phase` is the first phase that failed (`None`: artifact upload).
    Failed {
        phase: Option<PhaseName>,
    },
    TimedOut,
    Cancelled,
}

/// One collected output artifact: the files as a directory and as a zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedArtifact {
    /// `None` for the primary artifact, else the secondary artifact identifier.
    pub identifier: Option<String>,
    /// `artifacts.name` when given.
    pub name: Option<String>,
    pub dir: PathBuf,
    pub zip: PathBuf,
}

#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub status: BuildStatus,
    pub phases: Vec<PhaseReport>,
    pub log_path: PathBuf,
    /// `env.exported-variables` with their values after `POST_BUILD` (unset ones left out).
    pub exported_variables: BTreeMap<String, String>,
    pub artifacts: Vec<CollectedArtifact>,
}

impl BuildOutcome {
    pub fn succeeded(&self) -> bool {
        self.status == BuildStatus::Succeeded
    }

    /// The last `lines` lines of the build log (blocking file read).
    pub fn log_tail(&self, lines: usize) -> io::Result<String> {
        log_tail(&self.log_path, lines)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid environment variable name {0:?}")]
    InvalidVariableName(String),
    #[error("shell {0:?} is not supported (bash or sh)")]
    UnsupportedShell(String),
    #[error("starting the build shell: {0}")]
    Spawn(#[source] io::Error),
    #[error("random source: {0}")]
    Random(String),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError + use<> {
    let path = path.to_path_buf();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

/// Runs the build to completion, timeout or cancellation (when `cancel` resolves).
///
/// An `Err` means the build could not be run at all (work directory unusable, shell missing);
/// a build that ran and failed is an `Ok` outcome with a failed status.
pub async fn run_build(
    spec: &BuildSpec,
    request: &BuildRequest,
    cancel: impl Future<Output = ()>,
) -> Result<BuildOutcome, BuildError> {
    for (name, _) in &request.variables {
        if !is_variable_name(name) {
            return Err(BuildError::InvalidVariableName(name.clone()));
        }
    }
    for (name, _) in &request.secondary_sources {
        if !is_variable_name(&format!("CODEBUILD_SRC_DIR_{name}")) {
            return Err(BuildError::InvalidVariableName(name.clone()));
        }
    }
    let commands_dir = request.work_dir.join("commands");
    tokio::fs::create_dir_all(&commands_dir)
        .await
        .map_err(io_error("creating", &commands_dir))?;
    let log_path = request.work_dir.join("build.log");
    let log_file = tokio::fs::File::create(&log_path)
        .await
        .map_err(io_error("creating", &log_path))?;
    let mut marker_bytes = [0u8; 12];
    getrandom::fill(&mut marker_bytes).map_err(|err| BuildError::Random(err.to_string()))?;

    let shell = match spec.env.shell.as_deref() {
        None => {
            if find_in_path("bash").is_some() {
                "bash"
            } else {
                "sh"
            }
        }
        Some(shell @ ("bash" | "sh" | "/bin/sh" | "/bin/bash")) => shell,
        Some(other) => return Err(BuildError::UnsupportedShell(other.to_string())),
    };

    let mut runner = Runner {
        spec,
        request,
        log: Log {
            writer: BufWriter::new(log_file),
            path: log_path.clone(),
            held: None,
        },
        shell_program: shell.to_string(),
        environment: base_environment(spec, request),
        marker: format!("__PENSTOCK_STATUS_{}__", hex::encode(marker_bytes)),
        commands_dir,
        command_count: 0,
        shell: None,
        reports: Vec::new(),
        exported: BTreeMap::new(),
        artifacts: Vec::new(),
    };

    let status = {
        let phases = runner.run_phases();
        tokio::pin!(phases);
        tokio::pin!(cancel);
        tokio::select! {
            result = &mut phases => result?,
            () = tokio::time::sleep(request.timeout) => BuildStatus::TimedOut,
            () = &mut cancel => BuildStatus::Cancelled,
        }
    };
    runner.stop_shell().await;
    match status {
        BuildStatus::TimedOut => {
            runner
                .log
                .container(&format!(
                    "Build timed out after {} seconds; processes killed",
                    request.timeout.as_secs()
                ))
                .await?;
        }
        BuildStatus::Cancelled => {
            runner
                .log
                .container("Build cancelled; processes killed")
                .await?
        }
        _ => {}
    }
    let outcome_word = if status == BuildStatus::Succeeded {
        "SUCCEEDED"
    } else {
        "FAILED"
    };
    runner
        .log
        .container(&format!("Build finished: {outcome_word}"))
        .await?;
    runner.log.flush().await?;

    Ok(BuildOutcome {
        status,
        phases: runner.reports,
        log_path,
        exported_variables: runner.exported,
        artifacts: runner.artifacts,
    })
}

fn base_environment(spec: &BuildSpec, request: &BuildRequest) -> Vec<(String, String)> {
    let inherited =
        |name: &str, fallback: &str| std::env::var(name).unwrap_or_else(|_| fallback.to_string());
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or_default();
    let mut environment: Vec<(String, String)> = vec![
        ("PATH".to_string(), inherited("PATH", DEFAULT_PATH)),
        (
            "HOME".to_string(),
            inherited("HOME", &request.work_dir.to_string_lossy()),
        ),
        ("LANG".to_string(), inherited("LANG", "C.UTF-8")),
        (
            "CODEBUILD_SRC_DIR".to_string(),
            request.primary_source_dir.to_string_lossy().into_owned(),
        ),
        ("CODEBUILD_BUILD_ID".to_string(), request.build_id.clone()),
        (
            "CODEBUILD_BUILD_NUMBER".to_string(),
            request.build_number.to_string(),
        ),
        ("CODEBUILD_BUILD_ARN".to_string(), request.build_arn.clone()),
        ("CODEBUILD_INITIATOR".to_string(), request.initiator.clone()),
        (
            "CODEBUILD_RESOLVED_SOURCE_VERSION".to_string(),
            request.resolved_source_version.clone(),
        ),
        ("CODEBUILD_START_TIME".to_string(), start_ms.to_string()),
        ("CODEBUILD_BUILD_SUCCEEDING".to_string(), "1".to_string()),
        ("CODEBUILD_LOCAL".to_string(), "true".to_string()),
    ];
    for (name, dir) in &request.secondary_sources {
        environment.push((
            format!("CODEBUILD_SRC_DIR_{name}"),
            dir.to_string_lossy().into_owned(),
        ));
    }
    for (name, value) in &spec.env.variables {
        environment.push((name.clone(), value.clone()));
    }
    environment.extend(request.variables.iter().cloned());
    environment
}

enum ShellEvent {
    Output(Option<Vec<u8>>),
    Exited,
}

enum CommandResult {
    Exited(i32),
    /// The shell itself ended while running the command.
    ShellDied(Option<i32>),
}

struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pending: Vec<u8>,
    pgid: Option<i32>,
}

struct Log {
    writer: BufWriter<tokio::fs::File>,
    path: PathBuf,
    /// The latest output line, held back: see `end_of_command`.
    held: Option<Vec<u8>>,
}

impl Log {
    /// A line of command output.
    async fn output(&mut self, line: Vec<u8>) -> Result<(), BuildError> {
        if let Some(previous) = self.held.replace(line) {
            self.line(&previous).await?;
        }
        Ok(())
    }

    /// The status marker is printed after a newline so that it always starts its own line. When
    /// the command's output ended with a newline (or was empty), that newline shows up as one
    /// empty line just before the marker: it is ours, so it is dropped here.
    async fn end_of_command(&mut self) -> Result<(), BuildError> {
        match self.held.take() {
            Some(line) if line == b"\n" => Ok(()),
            Some(line) => self.line(&line).await,
            None => Ok(()),
        }
    }

    async fn release_held(&mut self) -> Result<(), BuildError> {
        match self.held.take() {
            Some(line) => self.line(&line).await,
            None => Ok(()),
        }
    }

    async fn line(&mut self, text: &[u8]) -> Result<(), BuildError> {
        self.writer
            .write_all(text)
            .await
            .map_err(io_error("writing", &self.path))?;
        if !text.ends_with(b"\n") {
            self.writer
                .write_all(b"\n")
                .await
                .map_err(io_error("writing", &self.path))?;
        }
        Ok(())
    }

    /// A runner line in CodeBuild's style: `[Container] 2024/05/01 12:00:00.123456 text`.
    async fn container(&mut self, text: &str) -> Result<(), BuildError> {
        self.release_held().await?;
        let now = OffsetDateTime::now_utc();
        let stamp = now
            .format(format_description!(
                "[year]/[month]/[day] [hour]:[minute]:[second].[subsecond digits:6]"
            ))
            .unwrap_or_default();
        self.line(format!("[Container] {stamp} {text}").as_bytes())
            .await
    }

    async fn flush(&mut self) -> Result<(), BuildError> {
        self.release_held().await?;
        self.writer
            .flush()
            .await
            .map_err(io_error("writing", &self.path))
    }
}

struct Runner<'a> {
    spec: &'a BuildSpec,
    request: &'a BuildRequest,
    log: Log,
    shell_program: String,
    environment: Vec<(String, String)>,
    marker: String,
    commands_dir: PathBuf,
    command_count: u64,
    shell: Option<Shell>,
    reports: Vec<PhaseReport>,
    exported: BTreeMap<String, String>,
    artifacts: Vec<CollectedArtifact>,
}

impl Runner<'_> {
    async fn run_phases(&mut self) -> Result<BuildStatus, BuildError> {
        let mut first_failure: Option<PhaseName> = None;
        let mut upload = true;
        let mut skip_until: Option<PhaseName> = None;
        let mut finalize = false;
        if self.spec.run_as.is_some() {
            self.log
                .container("Note: run-as is ignored locally; commands run as the current user")
                .await?;
        }

        for phase_name in PhaseName::ALL {
            let skipped = finalize || skip_until.is_some_and(|target| phase_name < target);
            let spec = self.spec;
            let Some(phase) = phase_name.of(&spec.phases) else {
                continue;
            };
            if skipped {
                self.reports.push(PhaseReport {
                    phase: phase_name,
                    status: PhaseStatus::Skipped,
                });
                continue;
            }
            if phase_name == PhaseName::PostBuild && first_failure.is_some() {
                self.run_internal("export CODEBUILD_BUILD_SUCCEEDING=0\n")
                    .await?;
            }
            let succeeded = self.run_phase(phase_name, phase).await?;
            self.reports.push(PhaseReport {
                phase: phase_name,
                status: if succeeded {
                    PhaseStatus::Succeeded
                } else {
                    PhaseStatus::Failed
                },
            });
            if succeeded {
                continue;
            }
            first_failure.get_or_insert(phase_name);
            match next_step_after_failure(phase_name, phase.on_failure) {
                AfterFailure::NextPhase => {}
                AfterFailure::PostBuild => skip_until = Some(PhaseName::PostBuild),
                AfterFailure::UploadArtifacts => {}
                AfterFailure::Finalize => {
                    finalize = true;
                    upload = false;
                }
            }
        }

        if !self.spec.env.exported_variables.is_empty() {
            self.exported = self.read_exported_variables().await?;
        }

        let mut upload_failed = false;
        let spec = self.spec;
        if upload && let Some(section) = &spec.artifacts {
            self.log.container("Phase: UPLOAD_ARTIFACTS").await?;
            match self.collect_all(section).await {
                Ok(()) => {}
                Err(message) => {
                    self.log
                        .container(&format!(
                            "Phase context status code: CLIENT_ERROR Message: {message}"
                        ))
                        .await?;
                    upload_failed = true;
                }
            }
        }
        Ok(match first_failure {
            Some(phase) => BuildStatus::Failed { phase: Some(phase) },
            None if upload_failed => BuildStatus::Failed { phase: None },
            None => BuildStatus::Succeeded,
        })
    }

    async fn run_phase(&mut self, name: PhaseName, phase: &Phase) -> Result<bool, BuildError> {
        self.log
            .container(&format!("Entering phase {}", name.as_str()))
            .await?;
        if phase.run_as.is_some() {
            self.log
                .container("Note: run-as is ignored locally")
                .await?;
        }
        if phase.runtime_versions.is_some() {
            self.log
                .container(
                    "Note: runtime-versions is ignored locally; the machine's tools are used",
                )
                .await?;
        }
        let mut failure: Option<String> = None;
        for command in &phase.commands {
            if let Some(message) = self.run_user_command(command).await? {
                failure = Some(message);
                break;
            }
        }
        for command in &phase.finally {
            if let Some(message) = self.run_user_command(command).await? {
                failure.get_or_insert(message);
                break;
            }
        }
        let state = if failure.is_some() {
            "FAILED"
        } else {
            "SUCCEEDED"
        };
        if let Some(message) = &failure {
            self.log
                .container(&format!(
                    "Phase context status code: COMMAND_EXECUTION_ERROR Message: {message}"
                ))
                .await?;
        }
        self.log
            .container(&format!("Phase complete: {} State: {state}", name.as_str()))
            .await?;
        Ok(failure.is_none())
    }

    /// Runs one buildspec command; returns the failure message when it failed.
    async fn run_user_command(&mut self, command: &str) -> Result<Option<String>, BuildError> {
        self.log
            .container(&format!("Running command {command}"))
            .await?;
        let result = self.run_script(command).await?;
        Ok(match result {
            CommandResult::Exited(0) => None,
            CommandResult::Exited(code) => Some(format!(
                "Error while executing command: {command}. Reason: exit status {code}"
            )),
            CommandResult::ShellDied(code) => {
                let reason = code.map_or("killed by a signal".to_string(), |code| {
                    format!("exit status {code}")
                });
                self.log
                    .container("The shell exited; later commands run in a fresh shell without this one's state")
                    .await?;
                Some(format!(
                    "Error while executing command: {command}. Reason: {reason}"
                ))
            }
        })
    }

    /// Runs runner-internal shell code (not shown in the log as a command).
    async fn run_internal(&mut self, script: &str) -> Result<CommandResult, BuildError> {
        self.run_script(script).await
    }

    async fn run_script(&mut self, script: &str) -> Result<CommandResult, BuildError> {
        self.command_count += 1;
        let path = self
            .commands_dir
            .join(format!("{:05}.sh", self.command_count));
        tokio::fs::write(&path, script)
            .await
            .map_err(io_error("writing", &path))?;
        if self.shell.is_none() {
            self.shell = Some(self.spawn_shell().await?);
        }
        let Some(shell) = self.shell.as_mut() else {
            return Ok(CommandResult::ShellDied(None));
        };
        let line = format!(
            ". {} </dev/null\nprintf '\\n%s %s\\n' '{}' \"$?\"\n",
            shell_quote(&path.to_string_lossy()),
            self.marker
        );
        if shell.stdin.write_all(line.as_bytes()).await.is_err()
            || shell.stdin.flush().await.is_err()
        {
            let code = self.reap_shell().await;
            return Ok(CommandResult::ShellDied(code));
        }
        let marker = self.marker.as_bytes().to_vec();
        let mut child_exited = false;
        loop {
            let Some(shell) = self.shell.as_mut() else {
                return Ok(CommandResult::ShellDied(None));
            };
            let event = tokio::select! {
                read = read_line(&mut shell.stdout, &mut shell.pending) => {
                    ShellEvent::Output(read.map_err(io_error("reading output of", &path))?)
                }
                _ = shell.child.wait(), if !child_exited => ShellEvent::Exited,
            };
            match event {
                ShellEvent::Output(None) => {
                    self.log.release_held().await?;
                    let code = self.reap_shell().await;
                    return Ok(CommandResult::ShellDied(code));
                }
                ShellEvent::Output(Some(line)) => {
                    if let Some(position) = find(&line, &marker) {
                        let status = String::from_utf8_lossy(&line[position + marker.len()..]);
                        let code = status.trim().parse::<i32>().unwrap_or(1);
                        self.log.end_of_command().await?;
                        return Ok(CommandResult::Exited(code));
                    }
                    self.log.output(line).await?;
                }
                ShellEvent::Exited => {
                    // Background processes may hold the output pipe open after the shell
                    // ended; kill the group so the remaining output drains to end of file.
                    child_exited = true;
                    if let Some(pgid) = shell.pgid {
                        kill_group(pgid);
                    }
                }
            }
        }
    }

    async fn spawn_shell(&mut self) -> Result<Shell, BuildError> {
        let mut command = Command::new(&self.shell_program);
        command
            .arg("-s")
            .env_clear()
            .envs(
                self.environment
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .current_dir(&self.request.primary_source_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(BuildError::Spawn)?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        // Recorded so that a runner taking over after a crash can end what this one left
        // running (the shell outlives a killed runner until its current command ends).
        if let Some(pgid) = pgid {
            let _ = tokio::fs::write(
                self.request.work_dir.join("process-group"),
                format!("{pgid}\n"),
            )
            .await;
        }
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BuildError::Spawn(io::Error::other("shell pipes missing")));
        };
        // Commands' standard error goes to the same pipe as their output, in order.
        stdin
            .write_all(b"exec 2>&1\n")
            .await
            .map_err(BuildError::Spawn)?;
        Ok(Shell {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            pending: Vec::new(),
            pgid,
        })
    }

    /// Kills what is left of a dead shell and returns its exit code.
    async fn reap_shell(&mut self) -> Option<i32> {
        let mut shell = self.shell.take()?;
        if let Some(pgid) = shell.pgid {
            kill_group(pgid);
        }
        let status: Option<ExitStatus> = shell.child.wait().await.ok();
        status.and_then(|status| status.code())
    }

    async fn stop_shell(&mut self) {
        if let Some(mut shell) = self.shell.take() {
            if let Some(pgid) = shell.pgid {
                kill_group(pgid);
            }
            let _ = shell.child.wait().await;
            // Output still buffered in the pipe belongs in the log.
            let mut rest = shell.pending;
            let _ = shell.stdout.read_to_end(&mut rest).await;
            let _ = self.log.release_held().await;
            if !rest.is_empty() {
                let _ = self.log.line(&rest).await;
            }
        }
    }

    async fn read_exported_variables(&mut self) -> Result<BTreeMap<String, String>, BuildError> {
        let values_path = self.commands_dir.join("exported-variables");
        let mut script = String::from("{\n");
        for name in &self.spec.env.exported_variables {
            script.push_str(&format!(
                "printf '%s\\0%s\\0%s\\0' '{name}' \"${{{name}+1}}\" \"${{{name}-}}\"\n"
            ));
        }
        script.push_str(&format!(
            "}} > {}\n",
            shell_quote(&values_path.to_string_lossy())
        ));
        let mut exported = BTreeMap::new();
        if let CommandResult::Exited(0) = self.run_internal(&script).await? {
            let bytes = tokio::fs::read(&values_path)
                .await
                .map_err(io_error("reading", &values_path))?;
            let fields: Vec<&[u8]> = bytes.split(|byte| *byte == 0).collect();
            for triple in fields.chunks(3) {
                if let [name, set, value] = triple
                    && *set == b"1"
                {
                    exported.insert(
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    );
                }
            }
        }
        Ok(exported)
    }

    async fn collect_all(&mut self, section: &ArtifactsSection) -> Result<(), String> {
        let artifacts_dir = self.request.work_dir.join("artifacts");
        let source = self.request.primary_source_dir.clone();
        let mut jobs: Vec<(Option<String>, ArtifactsSection)> = vec![(None, section.clone())];
        for (identifier, secondary) in &section.secondary_artifacts {
            if !is_variable_name(identifier) {
                return Err(format!(
                    "invalid secondary artifact identifier {identifier:?}"
                ));
            }
            jobs.push((Some(identifier.clone()), secondary.clone()));
        }
        for (identifier, section) in jobs {
            let label = identifier.clone().unwrap_or_else(|| "primary".to_string());
            let dir = artifacts_dir.join(&label);
            let zip = artifacts_dir.join(format!("{label}.zip"));
            let (dir_for_task, zip_for_task, source_for_task, section_for_task) =
                (dir.clone(), zip.clone(), source.clone(), section.clone());
            let collected = tokio::task::spawn_blocking(move || {
                collect_artifact(
                    &source_for_task,
                    &section_for_task,
                    &dir_for_task,
                    &zip_for_task,
                )
            })
            .await
            .map_err(|err| err.to_string())??;
            let _ = self
                .log
                .container(&format!("Collected {collected} files for artifact {label}"))
                .await;
            self.artifacts.push(CollectedArtifact {
                identifier,
                name: section.name.clone(),
                dir,
                zip,
            });
        }
        Ok(())
    }
}

/// Copies the files an artifacts section selects into `dir` and zips them into `zip`.
/// Returns how many files were collected.
fn collect_artifact(
    source: &Path,
    section: &ArtifactsSection,
    dir: &Path,
    zip: &Path,
) -> Result<usize, String> {
    let base = match &section.base_directory {
        Some(base) => {
            let base = base.trim_end_matches('/');
            if !is_contained_relative(base) {
                return Err(format!(
                    "base-directory {base:?} must be relative and stay inside the source"
                ));
            }
            source.join(base)
        }
        None => source.to_path_buf(),
    };
    if !base.is_dir() {
        return Err(format!("base-directory {} does not exist", base.display()));
    }
    let include = glob_set(&section.files.0)?;
    let exclude = glob_set(&section.exclude_paths.0)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|err| format!("clearing {}: {err}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;

    let mut count = 0;
    for entry in WalkDir::new(&base)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|err| format!("listing build output: {err}"))?;
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(&base) else {
            continue;
        };
        let relative_text = relative.to_string_lossy().replace('\\', "/");
        if !include.is_match(&relative_text) || exclude.is_match(&relative_text) {
            continue;
        }
        let destination_relative = if section.discard_paths {
            PathBuf::from(entry.file_name())
        } else {
            relative.to_path_buf()
        };
        let destination = dir.join(&destination_relative);
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("creating {}: {err}", parent.display()))?;
        }
        if file_type.is_symlink() && section.enable_symlinks {
            let target = std::fs::read_link(entry.path())
                .map_err(|err| format!("reading link {relative_text}: {err}"))?;
            let _ = std::fs::remove_file(&destination);
            std::os::unix::fs::symlink(&target, &destination)
                .map_err(|err| format!("copying link {relative_text}: {err}"))?;
        } else {
            // Without enable-symlinks a link is collected as the file it points to.
            if !entry.path().is_file() {
                continue;
            }
            std::fs::copy(entry.path(), &destination)
                .map_err(|err| format!("copying {relative_text}: {err}"))?;
        }
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "no matching artifact paths found for {:?}",
            section.files.0
        ));
    }
    archive::zip_directory(dir, zip).map_err(|err| err.to_string())?;
    Ok(count)
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let pattern = pattern.trim_start_matches("./");
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|err| format!("invalid artifact pattern {pattern:?}: {err}"))?;
        builder.add(glob);
        // `dir/**/*` style patterns aside, CodeBuild treats a bare directory name as its contents.
        if !pattern.contains('*') {
            let nested = format!("{}/**", pattern.trim_end_matches('/'));
            builder.add(
                Glob::new(&nested)
                    .map_err(|err| format!("invalid artifact pattern {pattern:?}: {err}"))?,
            );
        }
    }
    builder.build().map_err(|err| err.to_string())
}

/// Reads one line (at most `MAX_LINE_BYTES`) into `pending` and returns it; `None` at end of
/// output. Cancel-safe: bytes read before a cancellation stay in `pending`.
async fn read_line(
    reader: &mut BufReader<ChildStdout>,
    pending: &mut Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        let before = pending.len();
        let limit = MAX_LINE_BYTES.saturating_sub(before as u64).max(1);
        let read = (&mut *reader)
            .take(limit)
            .read_until(b'\n', pending)
            .await?;
        if read == 0 && pending.len() == before {
            if pending.is_empty() {
                return Ok(None);
            }
            return Ok(Some(std::mem::take(pending)));
        }
        if pending.ends_with(b"\n") || pending.len() as u64 >= MAX_LINE_BYTES {
            return Ok(Some(std::mem::take(pending)));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn kill_group(pgid: i32) {
    // The group may already be gone; there is nothing to do about other errors either.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(first) if first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn is_contained_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|segment| segment != "..")
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The last `lines` lines of a log file, read from the end so large logs cost little.
pub fn log_tail(path: &Path, lines: usize) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let mut start = length;
    let mut buffer: Vec<u8> = Vec::new();
    const BLOCK: u64 = 64 * 1024;
    while start > 0 {
        let step = BLOCK.min(start);
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut block = vec![0u8; step as usize];
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buffer);
        buffer = block;
        // One extra newline: the file's final newline does not start a line.
        if buffer.iter().filter(|byte| **byte == b'\n').count() > lines {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buffer);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    Ok(all[from..].join("\n"))
}
