//! What starts a pipeline, decided without IO: GitHub webhook payloads read into neutral
//! [`GitEvent`]s, CodePipeline V2 trigger matching (push and pull-request filters on branches,
//! tags and file paths), the start tokens that make a repeated delivery start nothing new, and
//! EventBridge schedule expressions (`cron(...)`, `rate(...)`).
//!
//! Matching follows CodePipeline's documented rules:
//! - A source action named by a trigger (`triggers[].gitConfiguration.sourceActionName`) starts
//!   only on events its filters accept; declaring the trigger disables the default change
//!   detection of that action (SEMANTICS §1 rule 6).
//! - Any other GitHub source action (`CodeStarSourceConnection`, or the V1 `ThirdParty/GitHub`)
//!   starts on pushes to its configured branch of its repository, unless `DetectChanges` is
//!   `false`.
//! - A filter criteria matches a name when the name matches at least one include (all names, when
//!   there are no includes) and no exclude: excludes win.
//! - Globs follow CodePipeline's syntax: `*` and `?` stay within one path segment, `**` crosses
//!   segments, `[...]` and `{a,b}` as usual, `\` escapes.
//! - A filter with `filePaths` needs at least one changed file that its file-path criteria
//!   accept.
//! - Deletions (of a branch or a tag) start nothing.
//!
//! Every match pins the triggering source action to the event's commit (`COMMIT_ID`), so the
//! execution builds exactly what was pushed, even when the branch moved on meanwhile.

use std::collections::BTreeMap;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::engine::{SourceRevision, Timestamp, Trigger, TriggerType};
use crate::model::{
    ActionCategory, ActionDeclaration, ActionOwner, FilterCriteria, GitPullRequestEventType,
    PipelineDeclaration,
};

/// The all-zero object id GitHub sends for "no commit" (`before` of a new ref, `after` of a
/// deletion).
pub const NULL_COMMIT: &str = "0000000000000000000000000000000000000000";

/// `revisionType` of a pinned git commit.
pub const COMMIT_ID: &str = "COMMIT_ID";
/// `revisionType` of a pinned S3 object version.
pub const S3_OBJECT_VERSION_ID: &str = "S3_OBJECT_VERSION_ID";
/// `revisionType` of a pinned S3 object key.
pub const S3_OBJECT_KEY: &str = "S3_OBJECT_KEY";
/// `revisionType` of a pinned container image.
pub const IMAGE_DIGEST: &str = "IMAGE_DIGEST";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// The body is not the JSON a GitHub event of this type carries.
    #[error("the {event} payload is not valid: {detail}")]
    InvalidPayload { event: String, detail: String },
    #[error("invalid schedule expression {expression:?}: {detail}")]
    InvalidSchedule { expression: String, detail: String },
}

/// What a git ref names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Tag,
}

/// A push of a branch or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// `owner/name` as GitHub spells it.
    pub repository: String,
    /// The full ref, `refs/heads/main` or `refs/tags/v1`.
    pub git_ref: String,
    pub ref_kind: RefKind,
    /// The branch or tag name, without `refs/heads/` or `refs/tags/`.
    pub ref_name: String,
    pub before: String,
    /// The commit the ref points at after the push.
    pub after: String,
    /// The ref was deleted (then `after` is [`NULL_COMMIT`]).
    pub deleted: bool,
    /// Files added, modified or removed by the pushed commits. GitHub lists at most 20 commits
    /// in a push payload, so a larger push may change files not listed here.
    pub changed_files: Vec<String>,
    pub head_commit_message: Option<String>,
}

/// A pull request opened, updated or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub repository: String,
    pub number: u64,
    /// GitHub's `action` (`opened`, `reopened`, `synchronize`, `closed`).
    pub action: String,
    pub event: GitPullRequestEventType,
    /// The branch the pull request merges into (what `branches` filters look at).
    pub base_branch: String,
    /// The branch the changes come from.
    pub head_branch: String,
    /// The commit the execution builds: the head of the pull request.
    pub head_sha: String,
    /// `pull_request.updated_at`: different for every event of the pull request, the same in
    /// every delivery of one event.
    pub updated_at: String,
    /// Files the pull request changes. GitHub's payload does not list them; they are filled in
    /// from the pull request files API when a filter needs them, and stay `None` when they could
    /// not be had, in which case filters with `filePaths` do not match.
    pub changed_files: Option<Vec<String>>,
}

/// A git event from any host, as trigger matching needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitEvent {
    Push(PushEvent),
    PullRequest(PullRequestEvent),
}

impl GitEvent {
    pub fn repository(&self) -> &str {
        match self {
            GitEvent::Push(p) => &p.repository,
            GitEvent::PullRequest(p) => &p.repository,
        }
    }

    /// The commit an execution started by this event builds.
    pub fn commit(&self) -> &str {
        match self {
            GitEvent::Push(p) => &p.after,
            GitEvent::PullRequest(p) => &p.head_sha,
        }
    }

    /// What identifies this event whatever delivery carried it: two deliveries of one push
    /// (a redelivery, or a repository and an organization webhook) have the same identity; a
    /// later push of the same commit (a force-push back, a re-opened pull request) does not.
    pub fn identity(&self) -> Vec<String> {
        match self {
            GitEvent::Push(p) => vec![
                "push".into(),
                p.repository.to_ascii_lowercase(),
                p.git_ref.clone(),
                p.before.clone(),
                p.after.clone(),
            ],
            GitEvent::PullRequest(p) => vec![
                "pull_request".into(),
                p.repository.to_ascii_lowercase(),
                p.number.to_string(),
                p.action.clone(),
                p.head_sha.clone(),
                p.updated_at.clone(),
            ],
        }
    }

    /// A short description for logs and trigger details: `push refs/heads/main 1a2b3c4`.
    pub fn describe(&self) -> String {
        match self {
            GitEvent::Push(p) => format!("push {} {}", p.git_ref, short(&p.after)),
            GitEvent::PullRequest(p) => format!(
                "pull request #{} {} {}",
                p.number,
                p.action,
                short(&p.head_sha)
            ),
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// A GitHub webhook delivery, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubEvent {
    /// GitHub's `ping`, sent when a webhook is created.
    Ping {
        zen: Option<String>,
        hook_id: Option<u64>,
    },
    Git(GitEvent),
    /// An event that starts nothing, and why.
    Ignored(String),
}

#[derive(Deserialize)]
struct RepositoryPayload {
    full_name: String,
}

#[derive(Deserialize)]
struct CommitPayload {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

#[derive(Deserialize)]
struct HeadCommitPayload {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    commits: Vec<CommitPayload>,
    #[serde(default)]
    head_commit: Option<HeadCommitPayload>,
    repository: RepositoryPayload,
}

#[derive(Deserialize)]
struct BranchPayload {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    number: u64,
    updated_at: Option<String>,
    base: BranchPayload,
    head: BranchPayload,
}

#[derive(Deserialize)]
struct PullRequestEventPayload {
    action: String,
    pull_request: PullRequestPayload,
    repository: RepositoryPayload,
}

#[derive(Deserialize)]
struct PingPayload {
    #[serde(default)]
    zen: Option<String>,
    #[serde(default)]
    hook_id: Option<u64>,
}

fn payload<T: for<'de> Deserialize<'de>>(event: &str, body: &[u8]) -> Result<T, TriggerError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| TriggerError::InvalidPayload {
        event: event.to_string(),
        detail: e.to_string(),
    })
}

/// Read a GitHub webhook delivery: `event` is the `X-GitHub-Event` header, `body` the JSON
/// payload (already taken out of a form-encoded body). Events that start nothing are
/// [`GitHubEvent::Ignored`], with the reason.
pub fn parse_github_event(event: &str, body: &[u8]) -> Result<GitHubEvent, TriggerError> {
    match event {
        "ping" => {
            let ping: PingPayload = payload(event, body)?;
            Ok(GitHubEvent::Ping {
                zen: ping.zen,
                hook_id: ping.hook_id,
            })
        }
        "push" => parse_push(payload(event, body)?),
        "pull_request" => parse_pull_request(payload(event, body)?),
        other => Ok(GitHubEvent::Ignored(format!(
            "{other} events start no pipeline"
        ))),
    }
}

fn parse_push(push: PushPayload) -> Result<GitHubEvent, TriggerError> {
    let (ref_kind, ref_name) = if let Some(name) = push.git_ref.strip_prefix("refs/heads/") {
        (RefKind::Branch, name.to_string())
    } else if let Some(name) = push.git_ref.strip_prefix("refs/tags/") {
        (RefKind::Tag, name.to_string())
    } else {
        return Ok(GitHubEvent::Ignored(format!(
            "a push of {} is neither a branch nor a tag",
            push.git_ref
        )));
    };
    let mut changed_files: Vec<String> = push
        .commits
        .into_iter()
        .flat_map(|c| c.added.into_iter().chain(c.modified).chain(c.removed))
        .collect();
    changed_files.sort();
    changed_files.dedup();
    Ok(GitHubEvent::Git(GitEvent::Push(PushEvent {
        repository: push.repository.full_name,
        deleted: push.deleted || push.after == NULL_COMMIT,
        git_ref: push.git_ref,
        ref_kind,
        ref_name,
        before: push.before,
        after: push.after,
        changed_files,
        head_commit_message: push.head_commit.and_then(|c| c.message),
    })))
}

/// GitHub's pull request `action` as CodePipeline's event type; `None` for actions that start
/// nothing (labels, reviews, assignments...).
pub fn pull_request_event_type(action: &str) -> Option<GitPullRequestEventType> {
    match action {
        "opened" | "reopened" => Some(GitPullRequestEventType::Open),
        "synchronize" => Some(GitPullRequestEventType::Updated),
        "closed" => Some(GitPullRequestEventType::Closed),
        _ => None,
    }
}

fn parse_pull_request(event: PullRequestEventPayload) -> Result<GitHubEvent, TriggerError> {
    let Some(event_type) = pull_request_event_type(&event.action) else {
        return Ok(GitHubEvent::Ignored(format!(
            "pull request action {} starts no pipeline",
            event.action
        )));
    };
    let pr = event.pull_request;
    Ok(GitHubEvent::Git(GitEvent::PullRequest(PullRequestEvent {
        repository: event.repository.full_name,
        number: pr.number,
        action: event.action,
        event: event_type,
        base_branch: pr.base.branch,
        head_branch: pr.head.branch,
        head_sha: pr.head.sha,
        updated_at: pr.updated_at.unwrap_or_default(),
        changed_files: None,
    })))
}

/// A GitHub source action and the repository it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubSource<'d> {
    pub action: &'d ActionDeclaration,
    /// `owner/name`.
    pub repository: String,
    pub branch: Option<String>,
    /// `ThirdParty/GitHub` (V1, `Webhook` trigger type) rather than a connection (`WebhookV2`).
    pub v1: bool,
}

/// The GitHub source actions of a pipeline (its first stage), with their repositories.
pub fn github_sources(declaration: &PipelineDeclaration) -> Vec<GitHubSource<'_>> {
    let Some(stage) = declaration.stages.first() else {
        return Vec::new();
    };
    stage.actions.iter().filter_map(github_source).collect()
}

/// The repository a GitHub source action reads, when it is one.
pub fn github_source(action: &ActionDeclaration) -> Option<GitHubSource<'_>> {
    let id = &action.action_type_id;
    if id.category != ActionCategory::Source {
        return None;
    }
    let config = &action.configuration;
    match (id.owner, id.provider.as_str()) {
        (ActionOwner::Aws, "CodeStarSourceConnection") => Some(GitHubSource {
            action,
            repository: config.get("FullRepositoryId")?.clone(),
            branch: config.get("BranchName").cloned(),
            v1: false,
        }),
        (ActionOwner::ThirdParty, "GitHub") => Some(GitHubSource {
            action,
            repository: format!("{}/{}", config.get("Owner")?, config.get("Repo")?),
            branch: config.get("Branch").cloned(),
            v1: true,
        }),
        _ => None,
    }
}

/// One source action a git event starts a pipeline for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerMatch {
    pub source_action: String,
    pub trigger: Trigger,
    /// The source action pinned to the event's commit.
    pub revision: SourceRevision,
    /// Which rule matched: `default branch main`, `triggers[0].push[1]`.
    pub rule: String,
}

/// What matching one pipeline found: the matches, and patterns that could not be compiled
/// (they match nothing; the caller logs them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchOutcome {
    pub matches: Vec<TriggerMatch>,
    pub problems: Vec<String>,
}

/// Whether a pull request event would need its changed files to be matched against this
/// pipeline: some trigger of a source action reading the event's repository has a pull-request
/// filter with `filePaths`.
pub fn needs_pull_request_files(declaration: &PipelineDeclaration, repository: &str) -> bool {
    let sources = github_sources(declaration);
    declaration
        .triggers
        .iter()
        .flatten()
        .filter(|t| {
            sources.iter().any(|s| {
                s.action.name == t.git_configuration.source_action_name
                    && s.repository.eq_ignore_ascii_case(repository)
            })
        })
        .flat_map(|t| t.git_configuration.pull_request.iter().flatten())
        .any(|f| f.file_paths.is_some())
}

/// The source actions of `declaration` that `event` starts, each pinned to the event's commit.
pub fn match_git_event(declaration: &PipelineDeclaration, event: &GitEvent) -> MatchOutcome {
    let mut outcome = MatchOutcome::default();
    if let GitEvent::Push(push) = event
        && push.deleted
    {
        return outcome;
    }
    let mut patterns = PatternCache::default();
    for source in github_sources(declaration) {
        if !source.repository.eq_ignore_ascii_case(event.repository()) {
            continue;
        }
        let trigger = declaration
            .triggers
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, t)| t.git_configuration.source_action_name == source.action.name);
        let rule = match trigger {
            Some((index, trigger)) => {
                let git = &trigger.git_configuration;
                match_filters(index, git, event, &mut patterns)
            }
            None => default_detection(&source, event),
        };
        if let Some(rule) = rule {
            outcome.matches.push(TriggerMatch {
                source_action: source.action.name.clone(),
                trigger: Trigger {
                    trigger_type: if source.v1 {
                        TriggerType::Webhook
                    } else {
                        TriggerType::WebhookV2
                    },
                    trigger_detail: trigger_detail(&source, event),
                },
                revision: SourceRevision {
                    action_name: source.action.name.clone(),
                    revision_type: COMMIT_ID.into(),
                    revision_value: event.commit().to_string(),
                },
                rule,
            });
        }
    }
    outcome.problems = patterns.problems;
    outcome
}

/// CodePipeline names the connection in a connection trigger's detail; without one, the
/// repository and the event say where the execution came from.
fn trigger_detail(source: &GitHubSource<'_>, event: &GitEvent) -> String {
    match source.action.configuration.get("ConnectionArn") {
        Some(arn) if !source.v1 => arn.clone(),
        _ => format!("{} {}", source.repository, event.describe()),
    }
}

/// Default change detection: a push to the configured branch.
fn default_detection(source: &GitHubSource<'_>, event: &GitEvent) -> Option<String> {
    let detect = source
        .action
        .configuration
        .get("DetectChanges")
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    let GitEvent::Push(push) = event else {
        return None;
    };
    let branch = source.branch.as_deref()?;
    (detect && push.ref_kind == RefKind::Branch && push.ref_name == branch)
        .then(|| format!("pushes to branch {branch}"))
}

fn match_filters(
    index: usize,
    git: &crate::model::GitConfiguration,
    event: &GitEvent,
    patterns: &mut PatternCache,
) -> Option<String> {
    match event {
        GitEvent::Push(push) => {
            for (f, filter) in git.push.iter().flatten().enumerate() {
                let path = format!("triggers[{index}].push[{f}]");
                let name_ok = match (push.ref_kind, &filter.branches, &filter.tags) {
                    (RefKind::Branch, Some(branches), _) => {
                        patterns.accepts(branches, &push.ref_name, &format!("{path}.branches"))
                    }
                    (RefKind::Tag, _, Some(tags)) => {
                        patterns.accepts(tags, &push.ref_name, &format!("{path}.tags"))
                    }
                    _ => false,
                };
                if !name_ok {
                    continue;
                }
                if let Some(files) = &filter.file_paths
                    && !patterns.accepts_any(
                        files,
                        &push.changed_files,
                        &format!("{path}.filePaths"),
                    )
                {
                    continue;
                }
                return Some(path);
            }
            None
        }
        GitEvent::PullRequest(pr) => {
            for (f, filter) in git.pull_request.iter().flatten().enumerate() {
                let path = format!("triggers[{index}].pullRequest[{f}]");
                // Without `events`, every pull request event counts (CodePipeline's default).
                let event_ok = filter
                    .events
                    .as_ref()
                    .is_none_or(|events| events.contains(&pr.event));
                if !event_ok {
                    continue;
                }
                if let Some(branches) = &filter.branches
                    && !patterns.accepts(branches, &pr.base_branch, &format!("{path}.branches"))
                {
                    continue;
                }
                if let Some(files) = &filter.file_paths {
                    let Some(changed) = &pr.changed_files else {
                        continue;
                    };
                    if !patterns.accepts_any(files, changed, &format!("{path}.filePaths")) {
                        continue;
                    }
                }
                return Some(path);
            }
            None
        }
    }
}

/// Compile a CodePipeline glob: `*` and `?` stop at `/`, `**` crosses it, `\` escapes.
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g: Glob| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

/// Compiled patterns, and the ones that did not compile.
#[derive(Default)]
struct PatternCache {
    compiled: BTreeMap<String, Option<GlobMatcher>>,
    problems: Vec<String>,
}

impl PatternCache {
    fn matcher(&mut self, pattern: &str, path: &str) -> Option<&GlobMatcher> {
        if !self.compiled.contains_key(pattern) {
            let compiled = match compile_glob(pattern) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.problems.push(format!(
                        "{path}: pattern {pattern:?} is not a valid glob: {e}"
                    ));
                    None
                }
            };
            self.compiled.insert(pattern.to_string(), compiled);
        }
        self.compiled.get(pattern).and_then(|m| m.as_ref())
    }

    fn any_matches(&mut self, patterns: &[String], name: &str, path: &str) -> bool {
        patterns
            .iter()
            .any(|p| self.matcher(p, path).is_some_and(|m| m.is_match(name)))
    }

    /// Included (by some include, or by default when there are none) and not excluded.
    fn accepts(&mut self, criteria: &FilterCriteria, name: &str, path: &str) -> bool {
        let included = match criteria.includes.as_deref() {
            None | Some([]) => true,
            Some(includes) => self.any_matches(includes, name, &format!("{path}.includes")),
        };
        let excluded = match criteria.excludes.as_deref() {
            None => false,
            Some(excludes) => self.any_matches(excludes, name, &format!("{path}.excludes")),
        };
        included && !excluded
    }

    fn accepts_any(&mut self, criteria: &FilterCriteria, names: &[String], path: &str) -> bool {
        names.iter().any(|name| self.accepts(criteria, name, path))
    }
}

/// The `clientRequestToken` of a start caused by an event: the same pipeline, source action and
/// event identity always give the same token, so deliveries racing each other start one
/// execution. 64 hex digits, within CodePipeline's token pattern.
pub fn start_token(pipeline: &str, source_action: &str, identity: &[String]) -> String {
    let mut hasher = Sha256::new();
    // Length prefixes keep ("a", "bc") and ("ab", "c") apart.
    for part in [pipeline, source_action]
        .into_iter()
        .chain(identity.iter().map(String::as_str))
    {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pipeline tag that gives a pipeline a schedule on the embedded default
/// (`penstock:schedule` = `rate(1 day)` or `cron(0 6 ? * MON-FRI *)`).
pub const SCHEDULE_TAG: &str = "penstock:schedule";
/// The pipeline tag naming the EventBridge rule whose scheduled events start the pipeline; a
/// rule named like the pipeline needs no tag.
pub const SCHEDULE_RULE_TAG: &str = "penstock:schedule-rule";

/// Whether a scheduled event of `rule` (its name, or its ARN) starts the pipeline `name` with
/// `tags`: the pipeline's `penstock:schedule-rule` tag names the rule, or, without that tag, the
/// rule has the pipeline's name.
pub fn schedule_rule_starts(rule: &str, name: &str, tags: &[crate::model::Tag]) -> bool {
    let rule_name = rule.rsplit(['/', ':']).next().unwrap_or(rule);
    match tags.iter().find(|t| t.key == SCHEDULE_RULE_TAG) {
        Some(tag) => tag.value == rule_name || tag.value == rule,
        None => rule_name == name,
    }
}

/// The `Source/AWS/S3` actions watching exactly `bucket` and `key`.
pub fn s3_sources_watching<'d>(
    declaration: &'d PipelineDeclaration,
    bucket: &str,
    key: &str,
) -> Vec<&'d ActionDeclaration> {
    source_actions(declaration, ActionOwner::Aws, "S3")
        .filter(|a| {
            a.configuration.get("S3Bucket").map(String::as_str) == Some(bucket)
                && a.configuration.get("S3ObjectKey").map(String::as_str) == Some(key)
        })
        .collect()
}

/// The `Source/AWS/ECR` actions watching `repository` at `tag` (`ImageTag` defaults to
/// `latest`, as in CodePipeline).
pub fn ecr_sources_watching<'d>(
    declaration: &'d PipelineDeclaration,
    repository: &str,
    tag: &str,
) -> Vec<&'d ActionDeclaration> {
    source_actions(declaration, ActionOwner::Aws, "ECR")
        .filter(|a| {
            a.configuration.get("RepositoryName").map(String::as_str) == Some(repository)
                && a.configuration
                    .get("ImageTag")
                    .map(String::as_str)
                    .unwrap_or("latest")
                    == tag
        })
        .collect()
}

fn source_actions<'d>(
    declaration: &'d PipelineDeclaration,
    owner: ActionOwner,
    provider: &'d str,
) -> impl Iterator<Item = &'d ActionDeclaration> {
    declaration
        .stages
        .first()
        .into_iter()
        .flat_map(move |stage| {
            stage.actions.iter().filter(move |a| {
                a.action_type_id.category == ActionCategory::Source
                    && a.action_type_id.owner == owner
                    && a.action_type_id.provider == provider
            })
        })
}

/// An event's RFC 3339 time (`2015-10-08T16:53:06Z`) as a [`Timestamp`].
pub fn parse_event_time(text: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| Timestamp(t.timestamp_millis()))
}

/// An EventBridge schedule expression.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `rate(N unit)`: every `every_ms`, counted from an anchor (when the schedule began).
    Rate { every_ms: i64, expression: String },
    /// `cron(min hour day-of-month month day-of-week year)`, in UTC.
    Cron {
        cron: Box<croner::Cron>,
        expression: String,
    },
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression() == other.expression()
    }
}

impl Schedule {
    /// Parse and check `cron(...)` or `rate(...)` as EventBridge accepts them.
    pub fn parse(expression: &str) -> Result<Schedule, TriggerError> {
        let text = expression.trim();
        let invalid = |detail: String| TriggerError::InvalidSchedule {
            expression: expression.to_string(),
            detail,
        };
        if let Some(inner) = text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
            let every_ms = parse_rate(inner.trim()).map_err(invalid)?;
            Ok(Schedule::Rate {
                every_ms,
                expression: text.to_string(),
            })
        } else if let Some(inner) = text.strip_prefix("cron(").and_then(|t| t.strip_suffix(')')) {
            let cron = parse_aws_cron(inner.trim()).map_err(invalid)?;
            Ok(Schedule::Cron {
                cron: Box::new(cron),
                expression: text.to_string(),
            })
        } else {
            Err(invalid(
                "expected cron(minutes hours day-of-month month day-of-week year) or rate(value unit)"
                    .into(),
            ))
        }
    }

    pub fn expression(&self) -> &str {
        match self {
            Schedule::Rate { expression, .. } | Schedule::Cron { expression, .. } => expression,
        }
    }

    /// The first firing strictly after `after`. A rate counts whole periods from `anchor`
    /// (when the schedule was set up), as EventBridge does; a cron ignores it. `None` when a
    /// cron never fires again (its years are past).
    pub fn next_after(&self, after: Timestamp, anchor: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Rate { every_ms, .. } => {
                let elapsed = after.0.saturating_sub(anchor.0);
                let periods = if elapsed < 0 {
                    1
                } else {
                    elapsed / every_ms + 1
                };
                Some(Timestamp(
                    anchor.0.saturating_add(periods.saturating_mul(*every_ms)),
                ))
            }
            Schedule::Cron { cron, .. } => {
                let start = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after.0)?;
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .map(|t| Timestamp(t.timestamp_millis()))
            }
        }
    }
}

/// `N minute(s)|hour(s)|day(s)`: a positive whole number, the singular unit exactly for 1.
fn parse_rate(inner: &str) -> Result<i64, String> {
    let mut parts = inner.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("a rate is a value and a unit, like rate(5 minutes)".into());
    };
    let value: i64 = value
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("the rate value {value:?} is not a positive whole number"))?;
    let (unit_ms, singular) = match unit {
        "minute" => (60_000, true),
        "minutes" => (60_000, false),
        "hour" => (3_600_000, true),
        "hours" => (3_600_000, false),
        "day" => (86_400_000, true),
        "days" => (86_400_000, false),
        other => {
            return Err(format!(
                "the rate unit {other:?} is not minute(s), hour(s) or day(s)"
            ));
        }
    };
    if singular != (value == 1) {
        return Err(format!(
            "use the singular unit for 1 and the plural otherwise (got {value} {unit})"
        ));
    }
    value
        .checked_mul(unit_ms)
        .ok_or_else(|| "the rate is too long".to_string())
}

/// EventBridge's six cron fields, checked for what EventBridge refuses and handed to croner in
/// its seven-field, Quartz-weekday form (`0` seconds first; `1` is Sunday, as on AWS).
fn parse_aws_cron(inner: &str) -> Result<croner::Cron, String> {
    let fields: Vec<&str> = inner.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "a cron expression has six fields (minutes hours day-of-month month day-of-week year), got {}",
            fields.len()
        ));
    }
    let (day_of_month, day_of_week) = (fields[2], fields[4]);
    match (day_of_month == "?", day_of_week == "?") {
        (true, true) => {
            return Err("day-of-month and day-of-week cannot both be ?".into());
        }
        (false, false) => {
            return Err(
                "one of day-of-month and day-of-week must be ? (EventBridge does not combine them)"
                    .into(),
            );
        }
        _ => {}
    }
    for (name, field, allowed) in [
        ("minutes", fields[0], "0123456789,-*/"),
        ("hours", fields[1], "0123456789,-*/"),
        ("day-of-month", fields[2], "0123456789,-*?/LW"),
        ("month", fields[3], "0123456789,-*/ABCDEFGJLMNOPRSTUVY"),
        ("day-of-week", fields[4], "0123456789,-*?/L#ADEFHIMNORSTUW"),
        ("year", fields[5], "0123456789,-*/"),
    ] {
        if let Some(c) = field
            .to_ascii_uppercase()
            .chars()
            .find(|c| !allowed.contains(*c))
        {
            return Err(format!(
                "the {name} field {field:?} has {c:?}, which EventBridge does not allow there"
            ));
        }
    }
    if fields[4]
        .chars()
        .any(|c| c.is_ascii_digit() && !('1'..='7').contains(&c))
        && !fields[4].contains('#')
    {
        return Err(format!(
            "day-of-week {:?} is out of range: 1-7 (1 is Sunday) or SUN-SAT",
            fields[4]
        ));
    }
    if fields[5] != "*" {
        for year in fields[5]
            .split([',', '-', '/'])
            .filter_map(|y| y.parse::<i32>().ok())
        {
            if !(1970..=2199).contains(&year) && !fields[5].contains('/') {
                return Err(format!("the year {year} is outside 1970-2199"));
            }
        }
    }
    let pattern = format!("0 {}", fields.join(" "));
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .year(croner::parser::Year::Required)
        .alternative_weekdays(true)
        // EventBridge writes steps from a start value (`0/15`), which croner calls sloppy.
        .sloppy_ranges(true)
        .build()
        .parse(&pattern)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        let t = chrono::DateTime::parse_from_rfc3339(text).expect("test timestamp");
        Timestamp(t.timestamp_millis())
    }

    #[test]
    fn rates_count_whole_periods_from_the_anchor() {
        let s = Schedule::parse("rate(5 minutes)").expect("valid");
        let anchor = ts("2026-01-01T00:00:00Z");
        assert_eq!(
            s.next_after(anchor, anchor),
            Some(ts("2026-01-01T00:05:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-01-01T00:07:30Z"), anchor),
            Some(ts("2026-01-01T00:10:00Z"))
        );
        // Exactly on a firing: the next one, not the same.
        assert_eq!(
            s.next_after(ts("2026-01-01T00:10:00Z"), anchor),
            Some(ts("2026-01-01T00:15:00Z"))
        );
    }

    #[test]
    fn rate_units_follow_eventbridge() {
        for ok in [
            "rate(1 minute)",
            "rate(2 hours)",
            "rate(1 day)",
            " rate(15 minutes) ",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(5 seconds)",
            "rate(5)",
            "rate(five minutes)",
            "every 5 minutes",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_uses_aws_fields_and_sunday_as_one() {
        // 10:00 UTC every day.
        let daily = Schedule::parse("cron(0 10 * * ? *)").expect("valid");
        assert_eq!(
            daily.next_after(ts("2026-03-04T10:00:00Z"), Timestamp(0)),
            Some(ts("2026-03-05T10:00:00Z"))
        );
        // 18:00 Monday to Friday: from Friday evening, the next is Monday.
        let weekdays = Schedule::parse("cron(0 18 ? * MON-FRI *)").expect("valid");
        assert_eq!(
            weekdays.next_after(ts("2026-03-06T18:30:00Z"), Timestamp(0)),
            Some(ts("2026-03-09T18:00:00Z"))
        );
        // Day-of-week 1 is Sunday on AWS: 2026-03-08 is a Sunday.
        let sundays = Schedule::parse("cron(0 12 ? * 1 *)").expect("valid");
        assert_eq!(
            sundays.next_after(ts("2026-03-04T00:00:00Z"), Timestamp(0)),
            Some(ts("2026-03-08T12:00:00Z"))
        );
        // Every 15 minutes.
        let quarter = Schedule::parse("cron(0/15 * * * ? *)").expect("valid");
        assert_eq!(
            quarter.next_after(ts("2026-03-04T10:16:00Z"), Timestamp(0)),
            Some(ts("2026-03-04T10:30:00Z"))
        );
        // Last day of the month.
        let last = Schedule::parse("cron(0 8 L * ? *)").expect("valid");
        assert_eq!(
            last.next_after(ts("2026-02-10T00:00:00Z"), Timestamp(0)),
            Some(ts("2026-02-28T08:00:00Z"))
        );
        // Last Friday of the month (6 is Friday on AWS): 2026-03-27.
        let last_friday = Schedule::parse("cron(0 12 ? * 6L *)").expect("valid");
        assert_eq!(
            last_friday.next_after(ts("2026-03-04T00:00:00Z"), Timestamp(0)),
            Some(ts("2026-03-27T12:00:00Z"))
        );
        // Second Tuesday of the month (3 is Tuesday on AWS): 2026-03-10.
        let second_tuesday = Schedule::parse("cron(0 12 ? * 3#2 *)").expect("valid");
        assert_eq!(
            second_tuesday.next_after(ts("2026-03-04T00:00:00Z"), Timestamp(0)),
            Some(ts("2026-03-10T12:00:00Z"))
        );
        // Weekday nearest the 15th: 2026-03-15 is a Sunday, so Monday the 16th.
        let nearest = Schedule::parse("cron(0 9 15W * ? *)").expect("valid");
        assert_eq!(
            nearest.next_after(ts("2026-03-04T00:00:00Z"), Timestamp(0)),
            Some(ts("2026-03-16T09:00:00Z"))
        );
        // Years past: never again.
        let past = Schedule::parse("cron(0 8 1 1 ? 2020)").expect("valid");
        assert_eq!(
            past.next_after(ts("2026-02-10T00:00:00Z"), Timestamp(0)),
            None
        );
    }

    #[test]
    fn cron_refuses_what_eventbridge_refuses() {
        for bad in [
            "cron(0 10 * * *)",         // five fields (Unix cron)
            "cron(0 0 10 * * ? *)",     // seven fields (Quartz with seconds)
            "cron(0 10 * * * *)",       // both day fields set
            "cron(0 10 ? * ? *)",       // neither day field set
            "cron(61 10 * * ? *)",      // minute out of range
            "cron(0 25 * * ? *)",       // hour out of range
            "cron(0 10 * 13 ? *)",      // month out of range
            "cron(0 10 ? * 8 *)",       // day-of-week out of range
            "cron(0 10 * * ? 1900)",    // year out of range
            "cron(0 10 * * ? * extra)", // too many
            "cron(0 10 W * ? *)",       // W needs a day
            "cron()",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn start_tokens_separate_their_parts() {
        let a = start_token("p", "Source", &["a".into(), "bc".into()]);
        let b = start_token("p", "Source", &["ab".into(), "c".into()]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(a, start_token("p", "Source", &["a".into(), "bc".into()]));
    }
}
