//! Pipeline declaration validation: JSON syntax, the service model's shape constraints, then
//! CodePipeline's structural rules (stage and action layout, artifacts, namespaces, variable
//! references, V2 features, triggers, conditions). Every error is reported, each with
//! CodePipeline's exception name and the JSON path of the offending value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::Value;

use crate::model::{
    ActionCategory, ActionDeclaration, ActionOwner, Condition, ConditionResult,
    CreatePipelineInput, ExecutionMode, PipelineDeclaration, PipelineType, StageDeclaration, Tag,
};
use crate::providers;
use crate::shape;
use crate::variables::{
    self, CODEPIPELINE_NAMESPACE, PIPELINE_EXECUTION_ID, PIPELINE_VARIABLES_NAMESPACE,
};

/// The CodePipeline exception a validation error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExceptionName {
    /// A value does not fit the service model (type, length, pattern, enum, range, members).
    ValidationException,
    /// The pipeline as a whole is malformed (stages, artifacts, V2 features, triggers).
    InvalidStructureException,
    InvalidStageDeclarationException,
    InvalidActionDeclarationException,
    InvalidBlockerDeclarationException,
}

impl ExceptionName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationException => "ValidationException",
            Self::InvalidStructureException => "InvalidStructureException",
            Self::InvalidStageDeclarationException => "InvalidStageDeclarationException",
            Self::InvalidActionDeclarationException => "InvalidActionDeclarationException",
            Self::InvalidBlockerDeclarationException => "InvalidBlockerDeclarationException",
        }
    }
}

impl fmt::Display for ExceptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a declaration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub exception: ExceptionName,
    /// JSON path of the offending value (`pipeline.stages[1].actions[0].name`); empty when the
    /// error is about the document as a whole.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.exception, self.message)
        } else {
            write!(f, "{}: {}: {}", self.exception, self.path, self.message)
        }
    }
}

/// Something worth knowing about a valid declaration (not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A declaration that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub declaration: PipelineDeclaration,
    pub tags: Vec<Tag>,
    pub notes: Vec<Note>,
}

impl Validated {
    /// The `create-pipeline --cli-input-json` form of this declaration.
    pub fn into_create_pipeline_input(self) -> CreatePipelineInput {
        CreatePipelineInput {
            pipeline: self.declaration,
            tags: self.tags,
        }
    }
}

/// What the structural rules found in a typed declaration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub errors: Vec<ValidationError>,
    pub notes: Vec<Note>,
}

/// Parses and validates a pipeline document: `{"pipeline": {...}, "tags": [...]}`
/// (`create-pipeline` input; `get-pipeline` output is accepted too, its `metadata` ignored) or a
/// bare pipeline declaration. Returns every error found at the first failing step.
pub fn parse_and_validate(json: &str) -> Result<Validated, Vec<ValidationError>> {
    let mut value: Value = serde_json::from_str(json).map_err(|e| {
        vec![ValidationError {
            exception: ExceptionName::ValidationException,
            path: String::new(),
            message: format!(
                "invalid JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                syntax_message(&e)
            ),
        }]
    })?;
    let mut notes = Vec::new();
    let wrapped = value.get("pipeline").is_some();
    if wrapped
        && let Some(object) = value.as_object_mut()
        && object.remove("metadata").is_some()
    {
        notes.push(Note {
            path: "metadata".to_owned(),
            message: "metadata (from get-pipeline) is ignored".to_owned(),
        });
    }
    let shape_name = if wrapped {
        "CreatePipelineInput"
    } else {
        "PipelineDeclaration"
    };
    let violations = shape::validate_shape(shape_name, &value, "").map_err(|e| {
        vec![ValidationError {
            exception: ExceptionName::ValidationException,
            path: String::new(),
            message: e.to_string(),
        }]
    })?;
    if !violations.is_empty() {
        return Err(violations
            .into_iter()
            .map(|v| ValidationError {
                exception: ExceptionName::ValidationException,
                path: v.path,
                message: v.message,
            })
            .collect());
    }

    // The shape check accepted explicit nulls as absent members; the typed model does not.
    strip_nulls(&mut value);
    let (declaration, tags, pipeline_path) = if wrapped {
        let input: CreatePipelineInput = deserialize(value)?;
        (input.pipeline, input.tags, "pipeline")
    } else {
        (deserialize(value)?, Vec::new(), "")
    };

    let findings = check_declaration(&declaration, pipeline_path);
    if !findings.errors.is_empty() {
        return Err(findings.errors);
    }
    notes.extend(findings.notes);
    Ok(Validated {
        declaration,
        tags,
        notes,
    })
}

fn syntax_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C" to its messages; the location is already given.
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Builds the typed model. The shape check has already passed, so a failure here means the
/// model and the types disagree; it is still reported with its path rather than panicking.
fn deserialize<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Vec<ValidationError>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = match e.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        vec![ValidationError {
            exception: ExceptionName::ValidationException,
            path,
            message: e.into_inner().to_string(),
        }]
    })
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|_, v| !v.is_null());
            object.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

const MIN_STAGES: usize = 2;
const MAX_STAGES: usize = 50;
const MAX_ACTIONS_PER_STAGE: usize = 50;
const MAX_ACTIONS_PER_PIPELINE: usize = 500;

/// Where an action runs: actions at a lower position run strictly before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    stage: usize,
    run_order: u32,
}

impl Position {
    fn runs_before(self, other: Position) -> bool {
        self.stage < other.stage || (self.stage == other.stage && self.run_order < other.run_order)
    }
}

/// An action together with where it sits and how errors name it.
struct Located<'a> {
    action: &'a ActionDeclaration,
    position: Position,
    /// `Stage.Action`, as people name actions.
    label: String,
    path: String,
}

impl Located<'_> {
    fn describe(&self) -> String {
        format!("\"{}\" (runOrder {})", self.label, self.position.run_order)
    }
}

/// Applies CodePipeline's structural rules to a typed declaration. `path_prefix` names the
/// declaration in the document (`"pipeline"` in the `create-pipeline` form, `""` when bare).
pub fn check_declaration(declaration: &PipelineDeclaration, path_prefix: &str) -> Findings {
    let mut checker = Checker {
        declaration,
        prefix: path_prefix,
        findings: Findings::default(),
        actions: Vec::new(),
    };
    checker.locate_actions();
    checker.check_artifact_store();
    checker.check_stages();
    checker.check_artifacts();
    checker.check_namespaces_and_references();
    checker.check_v2_features();
    checker.check_triggers();
    checker.findings
}

struct Checker<'a> {
    declaration: &'a PipelineDeclaration,
    prefix: &'a str,
    findings: Findings,
    actions: Vec<Located<'a>>,
}

impl<'a> Checker<'a> {
    fn path(&self, rest: &str) -> String {
        match (self.prefix.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_owned(),
            (false, true) => self.prefix.to_owned(),
            (false, false) => format!("{}.{rest}", self.prefix),
        }
    }

    fn error(&mut self, exception: ExceptionName, path: String, message: impl Into<String>) {
        self.findings.errors.push(ValidationError {
            exception,
            path,
            message: message.into(),
        });
    }

    fn note(&mut self, path: String, message: impl Into<String>) {
        self.findings.notes.push(Note {
            path,
            message: message.into(),
        });
    }

    fn locate_actions(&mut self) {
        for (s, stage) in self.declaration.stages.iter().enumerate() {
            for (a, action) in stage.actions.iter().enumerate() {
                self.actions.push(Located {
                    action,
                    position: Position {
                        stage: s,
                        run_order: action.effective_run_order(),
                    },
                    label: format!("{}.{}", stage.name, action.name),
                    path: self.path(&format!("stages[{s}].actions[{a}]")),
                });
            }
        }
    }

    fn check_artifact_store(&mut self) {
        use ExceptionName::InvalidStructureException as Structure;
        let d = self.declaration;
        match (&d.artifact_store, &d.artifact_stores) {
            (Some(_), Some(_)) => self.error(
                Structure,
                self.path("artifactStores"),
                "use either artifactStore or artifactStores, not both",
            ),
            (None, None) => self.error(
                Structure,
                self.path("artifactStore"),
                "an artifact store is required: declare artifactStore or artifactStores",
            ),
            (None, Some(stores)) => {
                // Cross-region actions read and write artifacts in their own region's store.
                let missing: Vec<(String, String)> = self
                    .actions
                    .iter()
                    .filter_map(|l| {
                        let region = l.action.region.as_ref()?;
                        (!stores.contains_key(region))
                            .then(|| (format!("{}.region", l.path), region.clone()))
                    })
                    .collect();
                for (path, region) in missing {
                    self.error(
                        ExceptionName::InvalidActionDeclarationException,
                        path,
                        format!(
                            "artifactStores has no store for region {region}; it has: {}",
                            stores.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
            (Some(_), None) => {}
        }
    }

    fn check_stages(&mut self) {
        use ExceptionName::*;
        let declaration = self.declaration;
        let stages = &declaration.stages;
        if !(MIN_STAGES..=MAX_STAGES).contains(&stages.len()) {
            self.error(
                InvalidStructureException,
                self.path("stages"),
                format!(
                    "a pipeline needs {MIN_STAGES} to {MAX_STAGES} stages, got {}",
                    stages.len()
                ),
            );
        }
        if self.actions.len() > MAX_ACTIONS_PER_PIPELINE {
            self.error(
                InvalidStructureException,
                self.path("stages"),
                format!(
                    "a pipeline holds at most {MAX_ACTIONS_PER_PIPELINE} actions, got {}",
                    self.actions.len()
                ),
            );
        }
        let mut stage_names: HashMap<&str, usize> = HashMap::new();
        for (s, stage) in stages.iter().enumerate() {
            let stage_path = self.path(&format!("stages[{s}]"));
            if let Some(&earlier) = stage_names.get(stage.name.as_str()) {
                self.error(
                    InvalidStructureException,
                    format!("{stage_path}.name"),
                    format!(
                        "stage name \"{}\" is already used by stages[{earlier}]",
                        stage.name
                    ),
                );
            } else {
                stage_names.insert(&stage.name, s);
            }
            if !(1..=MAX_ACTIONS_PER_STAGE).contains(&stage.actions.len()) {
                self.error(
                    InvalidStageDeclarationException,
                    format!("{stage_path}.actions"),
                    format!(
                        "a stage needs 1 to {MAX_ACTIONS_PER_STAGE} actions, got {}",
                        stage.actions.len()
                    ),
                );
            }
            self.check_blockers(stage, &stage_path);
            self.check_conditions(s, stage, &stage_path);
            let mut action_names: HashMap<&str, usize> = HashMap::new();
            for (a, action) in stage.actions.iter().enumerate() {
                let action_path = format!("{stage_path}.actions[{a}]");
                if let Some(earlier) = action_names.get(action.name.as_str()) {
                    self.error(
                        InvalidStageDeclarationException,
                        format!("{action_path}.name"),
                        format!(
                            "action name \"{}\" is already used in this stage by actions[{earlier}]",
                            action.name
                        ),
                    );
                } else {
                    action_names.insert(&action.name, a);
                }
                self.check_action(s, stage, action, &action_path);
            }
        }
    }

    fn check_blockers(&mut self, stage: &StageDeclaration, stage_path: &str) {
        let Some(blockers) = &stage.blockers else {
            return;
        };
        let mut seen = BTreeSet::new();
        for (b, blocker) in blockers.iter().enumerate() {
            if !seen.insert(blocker.name.as_str()) {
                self.error(
                    ExceptionName::InvalidBlockerDeclarationException,
                    format!("{stage_path}.blockers[{b}].name"),
                    format!("blocker name \"{}\" is used twice", blocker.name),
                );
            }
        }
        if !blockers.is_empty() {
            self.note(
                format!("{stage_path}.blockers"),
                format!(
                    "stage \"{}\" declares blockers: Penstock ignores them",
                    stage.name
                ),
            );
        }
    }

    fn check_action(
        &mut self,
        stage_index: usize,
        stage: &StageDeclaration,
        action: &ActionDeclaration,
        action_path: &str,
    ) {
        use ExceptionName::*;
        let label = format!("{}.{}", stage.name, action.name);
        let type_id = &action.action_type_id;
        let is_source = type_id.category == ActionCategory::Source;
        if stage_index == 0 && !is_source {
            self.error(
                InvalidStructureException,
                format!("{action_path}.actionTypeId.category"),
                format!(
                    "the first stage holds only Source actions, got {}",
                    type_id.category.as_str()
                ),
            );
        } else if stage_index > 0 && is_source {
            self.error(
                InvalidStructureException,
                format!("{action_path}.actionTypeId.category"),
                "Source actions belong in the first stage only",
            );
        }
        let is_manual_approval = type_id.category == ActionCategory::Approval
            && type_id.owner == ActionOwner::Aws
            && type_id.provider == "Manual";
        if action.timeout_in_minutes.is_some() && !is_manual_approval {
            self.error(
                InvalidActionDeclarationException,
                format!("{action_path}.timeoutInMinutes"),
                "timeoutInMinutes is allowed only on Manual approval actions",
            );
        }

        let type_name = format!(
            "{}/{}/{} version {}",
            type_id.category.as_str(),
            type_id.owner.as_str(),
            type_id.provider,
            type_id.version
        );
        let Some(spec) = providers::lookup(type_id) else {
            self.note(
                format!("{action_path}.actionTypeId"),
                format!(
                    "action \"{label}\" has action type {type_name}, which Penstock does not know: accepted as a custom action, but Penstock cannot run it"
                ),
            );
            return;
        };
        let counts = [
            (
                "inputArtifacts",
                "input",
                action.input_artifacts.len(),
                spec.input_artifacts,
            ),
            (
                "outputArtifacts",
                "output",
                action.output_artifacts.len(),
                spec.output_artifacts,
            ),
        ];
        for (member, noun, got, allowed) in counts {
            if !allowed.allows(got) {
                self.error(
                    InvalidActionDeclarationException,
                    format!("{action_path}.{member}"),
                    format!(
                        "a {} action takes {allowed} {noun} artifact(s), got {got}",
                        spec.provider
                    ),
                );
            }
        }
        for problem in providers::check_configuration(spec, &action.configuration) {
            let path = match &problem.key {
                Some(key) => format!("{action_path}.configuration.{key}"),
                None => format!("{action_path}.configuration"),
            };
            self.error(InvalidActionDeclarationException, path, problem.message);
        }
        for key in action.configuration.keys() {
            if !spec.knows_key(key) {
                self.note(
                    format!("{action_path}.configuration.{key}"),
                    format!(
                        "{} action \"{label}\" has configuration key {key}, which {} does not use",
                        spec.provider, spec.provider
                    ),
                );
            }
        }
        match (spec.category, spec.provider) {
            (ActionCategory::Build | ActionCategory::Test, "CodeBuild")
                if !action.configuration.contains_key("ProjectName") =>
            {
                self.note(
                    format!("{action_path}.configuration"),
                    format!(
                        "CodeBuild action \"{label}\" has no ProjectName: it runs on Penstock's default build environment"
                    ),
                );
            }
            (ActionCategory::Source, "GitHub")
                if !action.configuration.contains_key("OAuthToken") =>
            {
                self.note(
                    format!("{action_path}.configuration"),
                    format!(
                        "GitHub source \"{label}\" has no OAuthToken: Penstock uses its configured GitHub token"
                    ),
                );
            }
            _ => {}
        }
        // Never silently skipped: an action no provider of the runtime takes fails as
        // `ProviderNotSupported` when the execution reaches it; the note says so beforehand.
        if !spec.runs_on_embedded {
            let type_name = format!("{}/{}", spec.owner.as_str(), spec.provider);
            let message = if spec.runs_on_aws {
                format!(
                    "{} action \"{label}\" ({type_name}) runs on AWS only: on the embedded default it fails as ProviderNotSupported when the run reaches it",
                    spec.provider
                )
            } else {
                format!(
                    "{} action \"{label}\" ({type_name}) does not run on the embedded default yet",
                    spec.provider
                )
            };
            self.note(format!("{action_path}.actionTypeId"), message);
        }
    }

    fn check_conditions(&mut self, stage_index: usize, stage: &StageDeclaration, stage_path: &str) {
        use ConditionResult::*;
        use ExceptionName::InvalidStageDeclarationException as Stage;
        let mut rollback_paths = Vec::new();
        if let Some(on_failure) = &stage.on_failure {
            let conditions = on_failure.conditions.as_deref().unwrap_or_default();
            rollback_paths.extend(self.check_condition_results(
                stage_path,
                "onFailure",
                conditions,
                &[Rollback, Retry],
            ));
            match on_failure.result {
                Some(Retry) if !conditions.is_empty() => self.error(
                    Stage,
                    format!("{stage_path}.onFailure.conditions"),
                    "the RETRY result cannot be combined with onFailure conditions",
                ),
                Some(Rollback) => rollback_paths.push(format!("{stage_path}.onFailure.result")),
                Some(other @ (Fail | Skip)) => self.error(
                    Stage,
                    format!("{stage_path}.onFailure.result"),
                    format!(
                        "onFailure allows the result ROLLBACK or RETRY, got {}",
                        result_name(other)
                    ),
                ),
                _ => {}
            }
            if on_failure.retry_configuration.is_some() && on_failure.result != Some(Retry) {
                self.error(
                    Stage,
                    format!("{stage_path}.onFailure.retryConfiguration"),
                    "retryConfiguration needs the onFailure result RETRY",
                );
            }
        }
        if let Some(on_success) = &stage.on_success {
            rollback_paths.extend(self.check_condition_results(
                stage_path,
                "onSuccess",
                &on_success.conditions,
                &[Rollback, Fail],
            ));
        }
        if let Some(before_entry) = &stage.before_entry {
            self.check_condition_results(
                stage_path,
                "beforeEntry",
                &before_entry.conditions,
                &[Fail, Skip],
            );
        }
        let parallel = self.declaration.effective_execution_mode() == ExecutionMode::Parallel;
        for path in rollback_paths {
            if stage_index == 0 {
                self.error(Stage, path, "the first (source) stage cannot roll back");
            } else if parallel {
                self.error(Stage, path, "rollback is not available in PARALLEL mode");
            }
        }
        if self.declaration.effective_pipeline_type() == PipelineType::V1 {
            let declared = [
                ("onFailure", stage.on_failure.is_some()),
                ("onSuccess", stage.on_success.is_some()),
                ("beforeEntry", stage.before_entry.is_some()),
            ];
            for (member, present) in declared {
                if present {
                    self.error(
                        Stage,
                        format!("{stage_path}.{member}"),
                        format!("{member} conditions need pipelineType V2"),
                    );
                }
            }
        }
    }

    /// Checks each condition's result against those its condition type allows; returns the
    /// paths of the ROLLBACK results, which have further rules.
    fn check_condition_results(
        &mut self,
        stage_path: &str,
        member: &str,
        conditions: &[Condition],
        allowed: &[ConditionResult],
    ) -> Vec<String> {
        let mut rollbacks = Vec::new();
        for (c, condition) in conditions.iter().enumerate() {
            let Some(result) = condition.result else {
                continue;
            };
            let path = format!("{stage_path}.{member}.conditions[{c}].result");
            if !allowed.contains(&result) {
                self.error(
                    ExceptionName::InvalidStageDeclarationException,
                    path,
                    format!(
                        "{member} conditions allow the result {}, got {}",
                        names(allowed),
                        result_name(result)
                    ),
                );
            } else if result == ConditionResult::Rollback {
                rollbacks.push(path);
            }
        }
        rollbacks
    }

    fn check_artifacts(&mut self) {
        use ExceptionName::InvalidStructureException as Structure;
        // First producer of each output artifact name.
        let mut producers: BTreeMap<&str, usize> = BTreeMap::new();
        let mut errors = Vec::new();
        for (i, located) in self.actions.iter().enumerate() {
            for (o, output) in located.action.output_artifacts.iter().enumerate() {
                if let Some(&first) = producers.get(output.name.as_str()) {
                    errors.push((
                        format!("{}.outputArtifacts[{o}].name", located.path),
                        format!(
                            "output artifact \"{}\" is already produced by {}; output artifact names are unique in a pipeline",
                            output.name,
                            self.actions[first].describe()
                        ),
                    ));
                } else {
                    producers.insert(&output.name, i);
                }
            }
        }
        for located in &self.actions {
            for (k, input) in located.action.input_artifacts.iter().enumerate() {
                let path = format!("{}.inputArtifacts[{k}].name", located.path);
                match producers.get(input.name.as_str()) {
                    Some(&p) if self.actions[p].position.runs_before(located.position) => {}
                    Some(&p) => errors.push((
                        path,
                        format!(
                            "input artifact \"{}\" is produced by {}, which does not run before this action (an earlier stage or a lower runOrder in the same stage)",
                            input.name,
                            self.actions[p].describe()
                        ),
                    )),
                    None => {
                        let available: Vec<String> = producers
                            .iter()
                            .filter(|&(_, &p)| {
                                self.actions[p].position.runs_before(located.position)
                            })
                            .map(|(name, &p)| format!("\"{name}\" from \"{}\"", self.actions[p].label))
                            .collect();
                        let known = if available.is_empty() {
                            "no earlier action produces any artifact".to_owned()
                        } else {
                            format!("artifacts available here: {}", available.join(", "))
                        };
                        errors.push((
                            path,
                            format!(
                                "input artifact \"{}\" is not produced by any action; {known}",
                                input.name
                            ),
                        ));
                    }
                }
            }
        }
        for (path, message) in errors {
            self.error(Structure, path, message);
        }
    }

    fn check_namespaces_and_references(&mut self) {
        use ExceptionName::InvalidActionDeclarationException as Action;
        let artifact_names: BTreeSet<&str> = self
            .actions
            .iter()
            .flat_map(|l| {
                let outputs = l.action.output_artifacts.iter().map(|a| a.name.as_str());
                let inputs = l.action.input_artifacts.iter().map(|a| a.name.as_str());
                outputs.chain(inputs)
            })
            .collect();
        let mut namespaces: BTreeMap<&str, usize> = BTreeMap::new();
        let mut errors = Vec::new();
        for (i, located) in self.actions.iter().enumerate() {
            let Some(namespace) = located.action.namespace.as_deref() else {
                continue;
            };
            let path = format!("{}.namespace", located.path);
            if namespace == CODEPIPELINE_NAMESPACE || namespace == PIPELINE_VARIABLES_NAMESPACE {
                errors.push((
                    path,
                    format!("namespace \"{namespace}\" is reserved by CodePipeline"),
                ));
            } else if let Some(&first) = namespaces.get(namespace) {
                errors.push((
                    path,
                    format!(
                        "namespace \"{namespace}\" is already declared by {}",
                        self.actions[first].describe()
                    ),
                ));
            } else if artifact_names.contains(namespace) {
                errors.push((
                    path,
                    format!("namespace \"{namespace}\" clashes with an artifact of the same name"),
                ));
            } else {
                namespaces.insert(namespace, i);
            }
        }

        let is_v2 = self.declaration.effective_pipeline_type() == PipelineType::V2;
        let pipeline_variables: BTreeSet<&str> = self
            .declaration
            .variables
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        for located in &self.actions {
            let configuration = located
                .action
                .configuration
                .iter()
                .map(|(key, value)| (format!("{}.configuration.{key}", located.path), value));
            let environment = located
                .action
                .environment_variables
                .iter()
                .flatten()
                .enumerate()
                .map(|(e, var)| {
                    (
                        format!("{}.environmentVariables[{e}].value", located.path),
                        &var.value,
                    )
                });
            for (path, value) in configuration.chain(environment) {
                for reference in variables::references(value) {
                    let problem = match reference.namespace.as_str() {
                        CODEPIPELINE_NAMESPACE if reference.name == PIPELINE_EXECUTION_ID => None,
                        CODEPIPELINE_NAMESPACE => Some(format!(
                            "{reference}: the codepipeline namespace has only {PIPELINE_EXECUTION_ID}"
                        )),
                        PIPELINE_VARIABLES_NAMESPACE if !is_v2 => Some(format!(
                            "{reference}: pipeline variables need pipelineType V2"
                        )),
                        PIPELINE_VARIABLES_NAMESPACE => (!pipeline_variables
                            .contains(reference.name.as_str()))
                        .then(|| {
                            format!(
                                "{reference}: pipeline variable \"{}\" is not declared; declared: {}",
                                reference.name,
                                list_or_none(pipeline_variables.iter().copied())
                            )
                        }),
                        namespace => match namespaces.get(namespace) {
                            Some(&p)
                                if self.actions[p].position.runs_before(located.position) =>
                            {
                                None
                            }
                            Some(&p) => Some(format!(
                                "{reference}: namespace \"{namespace}\" belongs to {}, which does not run before this action",
                                self.actions[p].describe()
                            )),
                            None => Some(format!(
                                "{reference}: no action declares the namespace \"{namespace}\"; declared: {}",
                                list_or_none(namespaces.keys().copied())
                            )),
                        },
                    };
                    if let Some(message) = problem {
                        errors.push((path.clone(), message));
                    }
                }
            }
        }
        for (path, message) in errors {
            self.error(Action, path, message);
        }
    }

    fn check_v2_features(&mut self) {
        use ExceptionName::InvalidStructureException as Structure;
        let d = self.declaration;
        if d.effective_pipeline_type() == PipelineType::V1 {
            if d.variables.as_ref().is_some_and(|v| !v.is_empty()) {
                self.error(
                    Structure,
                    self.path("variables"),
                    "pipeline variables need pipelineType V2",
                );
            }
            if let Some(mode @ (ExecutionMode::Queued | ExecutionMode::Parallel)) = d.execution_mode
            {
                self.error(
                    Structure,
                    self.path("executionMode"),
                    format!(
                        "executionMode {} needs pipelineType V2; V1 pipelines run SUPERSEDED",
                        mode_name(mode)
                    ),
                );
            }
            if d.triggers.as_ref().is_some_and(|t| !t.is_empty()) {
                self.error(
                    Structure,
                    self.path("triggers"),
                    "triggers need pipelineType V2",
                );
            }
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (v, variable) in d.variables.iter().flatten().enumerate() {
            if let Some(first) = seen.get(variable.name.as_str()) {
                self.error(
                    Structure,
                    self.path(&format!("variables[{v}].name")),
                    format!(
                        "pipeline variable \"{}\" is already declared by variables[{first}]",
                        variable.name
                    ),
                );
            } else {
                seen.insert(&variable.name, v);
            }
        }
    }

    fn check_triggers(&mut self) {
        use ExceptionName::InvalidStructureException as Structure;
        let Some(triggers) = &self.declaration.triggers else {
            return;
        };
        let sources: Vec<&ActionDeclaration> = self
            .declaration
            .stages
            .first()
            .map(|s| {
                s.actions
                    .iter()
                    .filter(|a| a.action_type_id.category == ActionCategory::Source)
                    .collect()
            })
            .unwrap_or_default();
        let mut used: BTreeMap<&str, usize> = BTreeMap::new();
        for (t, trigger) in triggers.iter().enumerate() {
            let git = &trigger.git_configuration;
            let git_path = self.path(&format!("triggers[{t}].gitConfiguration"));
            let name_path = format!("{git_path}.sourceActionName");
            match sources.iter().find(|a| a.name == git.source_action_name) {
                None => self.error(
                    Structure,
                    name_path.clone(),
                    format!(
                        "no source action is named \"{}\"; source actions: {}",
                        git.source_action_name,
                        list_or_none(sources.iter().map(|a| a.name.as_str()))
                    ),
                ),
                Some(action) if action.action_type_id.provider != "CodeStarSourceConnection" => {
                    self.error(
                        Structure,
                        name_path.clone(),
                        format!(
                            "triggers work only with CodeStarSourceConnection source actions; \"{}\" is a {} action",
                            action.name, action.action_type_id.provider
                        ),
                    )
                }
                Some(_) => {}
            }
            if let Some(first) = used.get(git.source_action_name.as_str()) {
                self.error(
                    Structure,
                    name_path,
                    format!(
                        "source action \"{}\" already has a trigger: triggers[{first}]",
                        git.source_action_name
                    ),
                );
            } else {
                used.insert(&git.source_action_name, t);
            }
            let push = git.push.as_deref().unwrap_or_default();
            let pull_request = git.pull_request.as_deref().unwrap_or_default();
            if push.is_empty() && pull_request.is_empty() {
                self.error(
                    Structure,
                    git_path.clone(),
                    "a git trigger needs push or pullRequest filters",
                );
            }
            for (f, filter) in push.iter().enumerate() {
                let filter_path = format!("{git_path}.push[{f}]");
                match (&filter.tags, &filter.branches) {
                    (Some(_), Some(_)) => self.error(
                        Structure,
                        filter_path.clone(),
                        "a push filter takes tags or branches, not both",
                    ),
                    (None, None) => self.error(
                        Structure,
                        filter_path.clone(),
                        "a push filter needs tags or branches",
                    ),
                    _ => {}
                }
                if filter.file_paths.is_some() && filter.branches.is_none() {
                    self.error(
                        Structure,
                        format!("{filter_path}.filePaths"),
                        "filePaths filters need branches in the same push filter",
                    );
                }
            }
            for (f, filter) in pull_request.iter().enumerate() {
                if filter.branches.is_none() {
                    self.error(
                        Structure,
                        format!("{git_path}.pullRequest[{f}].branches"),
                        "a pullRequest filter needs branches",
                    );
                }
            }
        }
    }
}

fn list_or_none<'s>(items: impl Iterator<Item = &'s str>) -> String {
    let items: Vec<&str> = items.collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn result_name(result: ConditionResult) -> &'static str {
    match result {
        ConditionResult::Rollback => "ROLLBACK",
        ConditionResult::Fail => "FAIL",
        ConditionResult::Retry => "RETRY",
        ConditionResult::Skip => "SKIP",
    }
}

fn names(results: &[ConditionResult]) -> String {
    results
        .iter()
        .map(|r| result_name(*r))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn mode_name(mode: ExecutionMode) -> &'static str {
    match mode {
        ExecutionMode::Queued => "QUEUED",
        ExecutionMode::Superseded => "SUPERSEDED",
        ExecutionMode::Parallel => "PARALLEL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_deserialization_failures_carry_their_path() {
        // Bypasses the shape check on purpose: a negative runOrder does not fit `u32`.
        let value = serde_json::json!({
            "name": "p",
            "roleArn": "arn:aws:iam::111111111111:role/r",
            "stages": [{"name": "S", "actions": [{
                "name": "A",
                "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
                "runOrder": -1
            }]}]
        });
        let errors = deserialize::<PipelineDeclaration>(value).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].exception, ExceptionName::ValidationException);
        assert_eq!(errors[0].path, "stages[0].actions[0].runOrder");
    }
}
