//! The catalog of action types Penstock knows: which configuration keys each needs, how many
//! artifacts it takes and gives, and which runtimes run it (the embedded default, AWS). Data
//! only, no IO.
//!
//! Action types not listed here are still accepted (CodePipeline allows custom action types);
//! validation notes them instead of refusing them.

use std::collections::BTreeMap;

use crate::model::{ActionCategory, ActionOwner, ActionTypeId};

/// Inclusive bounds on a count of artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactCount {
    pub min: usize,
    pub max: usize,
}

impl ArtifactCount {
    pub const fn exactly(n: usize) -> Self {
        Self { min: n, max: n }
    }

    pub const fn between(min: usize, max: usize) -> Self {
        Self { min, max }
    }

    pub fn allows(self, n: usize) -> bool {
        (self.min..=self.max).contains(&n)
    }
}

impl std::fmt::Display for ArtifactCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "exactly {}", self.min)
        } else {
            write!(f, "{} to {}", self.min, self.max)
        }
    }
}

/// One known action type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionTypeSpec {
    pub category: ActionCategory,
    pub owner: ActionOwner,
    pub provider: &'static str,
    pub version: &'static str,
    /// Configuration keys that must be present.
    pub required_configuration: &'static [&'static str],
    /// Configuration keys that may be present; any other key is noted as unknown.
    pub optional_configuration: &'static [&'static str],
    pub input_artifacts: ArtifactCount,
    pub output_artifacts: ArtifactCount,
    /// Whether the embedded default (`penstock run`/`serve` on one machine) runs this type.
    pub runs_on_embedded: bool,
    /// Whether the AWS runtime (the Lambda functions, `shared/aws`'s providers) runs this type.
    /// A type neither runtime runs still validates; its action fails as `ProviderNotSupported`
    /// when an execution reaches it, it is never skipped.
    pub runs_on_aws: bool,
}

impl ActionTypeSpec {
    pub fn matches(&self, id: &ActionTypeId) -> bool {
        self.category == id.category
            && self.owner == id.owner
            && self.provider == id.provider
            && self.version == id.version
    }

    pub fn knows_key(&self, key: &str) -> bool {
        self.required_configuration.contains(&key) || self.optional_configuration.contains(&key)
    }
}

const SOURCE_OUTPUT: ArtifactCount = ArtifactCount::exactly(1);
const NONE: ArtifactCount = ArtifactCount::exactly(0);

/// Every action type Penstock knows, source types first.
pub const CATALOG: &[ActionTypeSpec] = &[
    ActionTypeSpec {
        category: ActionCategory::Source,
        owner: ActionOwner::Custom,
        provider: "LocalGit",
        version: "1",
        // RepositoryPath is a local path or any URL `git clone` accepts.
        required_configuration: &["RepositoryPath", "BranchName"],
        optional_configuration: &[],
        input_artifacts: NONE,
        output_artifacts: SOURCE_OUTPUT,
        runs_on_embedded: true,
        runs_on_aws: false,
    },
    ActionTypeSpec {
        category: ActionCategory::Source,
        owner: ActionOwner::Aws,
        provider: "CodeStarSourceConnection",
        version: "1",
        // CodePipeline requires ConnectionArn; Penstock talks to the repository host with its own
        // credentials, so the connection is optional here.
        required_configuration: &["FullRepositoryId", "BranchName"],
        optional_configuration: &["ConnectionArn", "OutputArtifactFormat", "DetectChanges"],
        input_artifacts: NONE,
        output_artifacts: SOURCE_OUTPUT,
        runs_on_embedded: true,
        runs_on_aws: true,
    },
    ActionTypeSpec {
        category: ActionCategory::Source,
        owner: ActionOwner::ThirdParty,
        provider: "GitHub",
        version: "1",
        required_configuration: &["Owner", "Repo", "Branch"],
        // Without OAuthToken Penstock uses its configured GitHub token.
        optional_configuration: &["OAuthToken", "PollForSourceChanges"],
        input_artifacts: NONE,
        output_artifacts: SOURCE_OUTPUT,
        runs_on_embedded: true,
        runs_on_aws: true,
    },
    ActionTypeSpec {
        category: ActionCategory::Source,
        owner: ActionOwner::Aws,
        provider: "CodeCommit",
        version: "1",
        required_configuration: &["RepositoryName", "BranchName"],
        optional_configuration: &["PollForSourceChanges", "OutputArtifactFormat"],
        input_artifacts: NONE,
        output_artifacts: SOURCE_OUTPUT,
        runs_on_embedded: false,
        runs_on_aws: false,
    },
    ActionTypeSpec {
        category: ActionCategory::Source,
        owner: ActionOwner::Aws,
        provider: "S3",
        version: "1",
        required_configuration: &["S3Bucket", "S3ObjectKey"],
        optional_configuration: &["PollForSourceChanges", "AllowOverrideForS3ObjectKey"],
        input_artifacts: NONE,
        output_artifacts: SOURCE_OUTPUT,
        runs_on_embedded: false,
        runs_on_aws: true,
    },
    ActionTypeSpec {
        category: ActionCategory::Source,
        owner: ActionOwner::Aws,
        provider: "ECR",
        version: "1",
        required_configuration: &["RepositoryName"],
        optional_configuration: &["ImageTag"],
        input_artifacts: NONE,
        output_artifacts: SOURCE_OUTPUT,
        runs_on_embedded: false,
        runs_on_aws: false,
    },
    codebuild(ActionCategory::Build),
    codebuild(ActionCategory::Test),
    ActionTypeSpec {
        category: ActionCategory::Deploy,
        owner: ActionOwner::Aws,
        provider: "S3",
        version: "1",
        // ObjectKey is required when Extract is false: see `check_configuration`.
        required_configuration: &["BucketName", "Extract"],
        optional_configuration: &[
            "ObjectKey",
            "KMSEncryptionKeyARN",
            "CannedACL",
            "CacheControl",
        ],
        input_artifacts: ArtifactCount::exactly(1),
        output_artifacts: NONE,
        runs_on_embedded: true,
        runs_on_aws: true,
    },
    ActionTypeSpec {
        category: ActionCategory::Deploy,
        owner: ActionOwner::Aws,
        provider: "CloudFormation",
        version: "1",
        required_configuration: &["ActionMode", "StackName"],
        optional_configuration: &[
            "Capabilities",
            "ChangeSetName",
            "OutputFileName",
            "ParameterOverrides",
            "RoleArn",
            "TemplateConfiguration",
            "TemplatePath",
        ],
        input_artifacts: ArtifactCount::between(0, 10),
        output_artifacts: ArtifactCount::between(0, 1),
        runs_on_embedded: false,
        runs_on_aws: true,
    },
    ActionTypeSpec {
        category: ActionCategory::Deploy,
        owner: ActionOwner::Aws,
        provider: "CodeDeploy",
        version: "1",
        required_configuration: &["ApplicationName", "DeploymentGroupName"],
        optional_configuration: &[],
        input_artifacts: ArtifactCount::exactly(1),
        output_artifacts: NONE,
        runs_on_embedded: false,
        runs_on_aws: true,
    },
    ActionTypeSpec {
        category: ActionCategory::Approval,
        owner: ActionOwner::Aws,
        provider: "Manual",
        version: "1",
        required_configuration: &[],
        optional_configuration: &["NotificationArn", "CustomData", "ExternalEntityLink"],
        input_artifacts: NONE,
        output_artifacts: NONE,
        runs_on_embedded: true,
        runs_on_aws: true,
    },
    ActionTypeSpec {
        category: ActionCategory::Invoke,
        owner: ActionOwner::Aws,
        provider: "Lambda",
        version: "1",
        required_configuration: &["FunctionName"],
        optional_configuration: &["UserParameters"],
        input_artifacts: ArtifactCount::between(0, 5),
        output_artifacts: ArtifactCount::between(0, 5),
        runs_on_embedded: false,
        runs_on_aws: false,
    },
];

const fn codebuild(category: ActionCategory) -> ActionTypeSpec {
    ActionTypeSpec {
        category,
        owner: ActionOwner::Aws,
        provider: "CodeBuild",
        version: "1",
        // Without ProjectName the buildspec runs on Penstock's default build environment;
        // BuildSpec (Penstock's) names the buildspec file or holds it inline.
        required_configuration: &[],
        optional_configuration: &[
            "ProjectName",
            "BuildSpec",
            "PrimarySource",
            "BatchEnabled",
            "CombineArtifacts",
            "EnvironmentVariables",
        ],
        input_artifacts: ArtifactCount::between(1, 5),
        output_artifacts: ArtifactCount::between(0, 5),
        runs_on_embedded: true,
        runs_on_aws: true,
    }
}

/// The catalog entry for an action type, if Penstock knows it.
pub fn lookup(id: &ActionTypeId) -> Option<&'static ActionTypeSpec> {
    CATALOG.iter().find(|spec| spec.matches(id))
}

/// A configuration problem of a known action type; `key` is the offending key when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigurationProblem {
    pub key: Option<String>,
    pub message: String,
}

const CLOUDFORMATION_MODES: &[&str] = &[
    "CHANGE_SET_EXECUTE",
    "CHANGE_SET_REPLACE",
    "CREATE_UPDATE",
    "DELETE_ONLY",
    "REPLACE_ON_FAILURE",
];

/// Checks a configuration against its action type: required keys, and the rules that depend on
/// other keys' values. Values holding variable references are not judged: they are only known
/// at run time.
pub fn check_configuration(
    spec: &ActionTypeSpec,
    configuration: &BTreeMap<String, String>,
) -> Vec<ConfigurationProblem> {
    let mut problems: Vec<ConfigurationProblem> = spec
        .required_configuration
        .iter()
        .filter(|key| !configuration.contains_key(**key))
        .map(|key| ConfigurationProblem {
            key: None,
            message: format!(
                "{} {} action requires configuration key {key}",
                spec.owner.as_str(),
                spec.provider
            ),
        })
        .collect();
    let known = |key: &str| {
        configuration
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.contains("#{"))
    };
    match (spec.category, spec.provider) {
        (ActionCategory::Deploy, "S3") => match known("Extract") {
            Some("false") if !configuration.contains_key("ObjectKey") => {
                problems.push(ConfigurationProblem {
                    key: None,
                    message: "S3 deploy action requires configuration key ObjectKey when Extract is false"
                        .to_owned(),
                });
            }
            Some("true" | "false") | None => {}
            Some(other) => problems.push(ConfigurationProblem {
                key: Some("Extract".to_owned()),
                message: format!("expected true or false, got {other:?}"),
            }),
        },
        (ActionCategory::Deploy, "CloudFormation") => {
            if let Some(mode) = known("ActionMode") {
                if !CLOUDFORMATION_MODES.contains(&mode) {
                    problems.push(ConfigurationProblem {
                        key: Some("ActionMode".to_owned()),
                        message: format!(
                            "expected one of {}, got {mode:?}",
                            CLOUDFORMATION_MODES.join(", ")
                        ),
                    });
                } else if mode.starts_with("CHANGE_SET_")
                    && !configuration.contains_key("ChangeSetName")
                {
                    problems.push(ConfigurationProblem {
                        key: None,
                        message: format!(
                            "CloudFormation action requires configuration key ChangeSetName with ActionMode {mode}"
                        ),
                    });
                }
            }
        }
        _ => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(category: ActionCategory, owner: ActionOwner, provider: &str) -> ActionTypeId {
        ActionTypeId {
            category,
            owner,
            provider: provider.to_owned(),
            version: "1".to_owned(),
        }
    }

    #[test]
    fn lookup_tells_s3_source_from_s3_deploy() {
        let source = lookup(&id(ActionCategory::Source, ActionOwner::Aws, "S3")).unwrap();
        let deploy = lookup(&id(ActionCategory::Deploy, ActionOwner::Aws, "S3")).unwrap();
        assert!(source.required_configuration.contains(&"S3Bucket"));
        assert!(deploy.required_configuration.contains(&"BucketName"));
        assert!(!source.runs_on_embedded);
        assert!(deploy.runs_on_embedded);
        assert!(lookup(&id(ActionCategory::Deploy, ActionOwner::Custom, "S3")).is_none());
    }

    #[test]
    fn catalog_entries_are_unique() {
        for (i, a) in CATALOG.iter().enumerate() {
            for b in &CATALOG[i + 1..] {
                assert!(
                    !(a.category == b.category && a.owner == b.owner && a.provider == b.provider),
                    "{} listed twice",
                    a.provider
                );
            }
        }
    }

    #[test]
    fn s3_deploy_needs_object_key_only_when_not_extracting() {
        let spec = lookup(&id(ActionCategory::Deploy, ActionOwner::Aws, "S3")).unwrap();
        let config = |extract: &str| {
            BTreeMap::from([
                ("BucketName".to_owned(), "b".to_owned()),
                ("Extract".to_owned(), extract.to_owned()),
            ])
        };
        assert!(check_configuration(spec, &config("true")).is_empty());
        assert_eq!(check_configuration(spec, &config("false")).len(), 1);
        assert!(check_configuration(spec, &config("#{v.Extract}")).is_empty());
        assert_eq!(
            check_configuration(spec, &config("yes"))[0].key.as_deref(),
            Some("Extract")
        );
    }
}
