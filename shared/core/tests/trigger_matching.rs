//! Trigger matching tables: which git events start which source actions, under CodePipeline V2
//! filters (branches, tags, file paths, pull request events; includes, excludes, globs) and
//! under default change detection.

use penstock_core::engine::TriggerType;
use penstock_core::model::{GitPullRequestEventType, PipelineDeclaration};
use penstock_core::triggers::{
    GitEvent, NULL_COMMIT, PullRequestEvent, PushEvent, RefKind, compile_glob, match_git_event,
    needs_pull_request_files,
};
use serde_json::{Value, json};

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

fn pipeline(triggers: Value) -> PipelineDeclaration {
    let mut value = json!({
        "name": "app",
        "roleArn": "arn:aws:iam::111111111111:role/p",
        "pipelineType": "V2",
        "stages": [
            {"name": "Source", "actions": [{
                "name": "Code",
                "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeStarSourceConnection", "version": "1"},
                "configuration": {
                    "FullRepositoryId": "Codertocat/Hello-World",
                    "BranchName": "main",
                    "ConnectionArn": "arn:aws:codeconnections:us-east-1:111111111111:connection/abc"
                },
                "outputArtifacts": [{"name": "Src"}]
            }]},
            {"name": "Build", "actions": [{
                "name": "B",
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"BuildSpec": "version: 0.2"},
                "inputArtifacts": [{"name": "Src"}]
            }]}
        ]
    });
    if !triggers.is_null() {
        value["triggers"] = triggers;
    }
    serde_json::from_value(value).expect("test pipeline")
}

fn push_trigger(filters: Value) -> Value {
    json!([{"providerType": "CodeStarSourceConnection", "gitConfiguration": {
        "sourceActionName": "Code", "push": filters
    }}])
}

fn pr_trigger(filters: Value) -> Value {
    json!([{"providerType": "CodeStarSourceConnection", "gitConfiguration": {
        "sourceActionName": "Code", "pullRequest": filters
    }}])
}

fn branch_push(branch: &str, files: &[&str]) -> GitEvent {
    GitEvent::Push(PushEvent {
        repository: "Codertocat/Hello-World".into(),
        git_ref: format!("refs/heads/{branch}"),
        ref_kind: RefKind::Branch,
        ref_name: branch.into(),
        before: NULL_COMMIT.into(),
        after: SHA.into(),
        deleted: false,
        changed_files: files.iter().map(|f| f.to_string()).collect(),
        head_commit_message: None,
    })
}

fn tag_push(tag: &str) -> GitEvent {
    GitEvent::Push(PushEvent {
        repository: "Codertocat/Hello-World".into(),
        git_ref: format!("refs/tags/{tag}"),
        ref_kind: RefKind::Tag,
        ref_name: tag.into(),
        before: NULL_COMMIT.into(),
        after: SHA.into(),
        deleted: false,
        changed_files: Vec::new(),
        head_commit_message: None,
    })
}

fn pull_request(event: GitPullRequestEventType, base: &str, files: Option<&[&str]>) -> GitEvent {
    GitEvent::PullRequest(PullRequestEvent {
        repository: "Codertocat/Hello-World".into(),
        number: 2,
        action: "opened".into(),
        event,
        base_branch: base.into(),
        head_branch: "changes".into(),
        head_sha: SHA.into(),
        updated_at: "2019-05-15T15:20:33Z".into(),
        changed_files: files.map(|f| f.iter().map(|s| s.to_string()).collect()),
    })
}

fn starts(declaration: &PipelineDeclaration, event: &GitEvent) -> bool {
    let outcome = match_git_event(declaration, event);
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    !outcome.matches.is_empty()
}

#[test]
fn glob_syntax_is_codepipelines() {
    // (pattern, name, matches)
    let table = [
        ("main", "main", true),
        ("main", "main2", false),
        ("release/*", "release/1.0", true),
        ("release/*", "release/1.0/hotfix", false),
        ("release/**", "release/1.0/hotfix", true),
        ("feature-*", "feature-x", true),
        ("*", "feature/x", false),
        ("**", "feature/x", true),
        ("src/**/*.rs", "src/main.rs", true),
        ("src/**/*.rs", "src/a/b/lib.rs", true),
        ("src/**/*.rs", "docs/src/lib.rs", false),
        ("*.md", "README.md", true),
        ("*.md", "docs/README.md", false),
        ("**/*.md", "docs/README.md", true),
        ("v?.*", "v1.2", true),
        ("v?.*", "v10.2", false),
        ("*.{java,class}", "A.class", true),
        ("[ab]*", "beta", true),
        ("[ab]*", "gamma", false),
        ("\\*", "*", true),
        ("\\*", "x", false),
    ];
    for (pattern, name, expected) in table {
        let matcher = compile_glob(pattern).expect(pattern);
        assert_eq!(matcher.is_match(name), expected, "{pattern} vs {name}");
    }
}

#[test]
fn push_branch_filters() {
    // (filters, branch, starts)
    let table = [
        (json!([{"branches": {"includes": ["main"]}}]), "main", true),
        (
            json!([{"branches": {"includes": ["main"]}}]),
            "develop",
            false,
        ),
        (
            json!([{"branches": {"includes": ["release/*"]}}]),
            "release/1.0",
            true,
        ),
        (
            json!([{"branches": {"includes": ["release/*"]}}]),
            "release/1.0/rc",
            false,
        ),
        (
            json!([{"branches": {"includes": ["release/**"]}}]),
            "release/1.0/rc",
            true,
        ),
        // Excludes win over includes.
        (
            json!([{"branches": {"includes": ["release/**"], "excludes": ["release/old/**"]}}]),
            "release/old/1",
            false,
        ),
        (
            json!([{"branches": {"includes": ["release/**"], "excludes": ["release/old/**"]}}]),
            "release/new/1",
            true,
        ),
        // Excludes alone: everything else is included.
        (
            json!([{"branches": {"excludes": ["wip/*"]}}]),
            "feature",
            true,
        ),
        (
            json!([{"branches": {"excludes": ["wip/*"]}}]),
            "wip/x",
            false,
        ),
        // Any of several filters.
        (
            json!([{"branches": {"includes": ["main"]}}, {"branches": {"includes": ["hotfix/*"]}}]),
            "hotfix/a",
            true,
        ),
        // A tags-only filter says nothing about branches.
        (json!([{"tags": {"includes": ["*"]}}]), "main", false),
    ];
    for (filters, branch, expected) in table {
        let declaration = pipeline(push_trigger(filters.clone()));
        assert_eq!(
            starts(&declaration, &branch_push(branch, &["README.md"])),
            expected,
            "{filters} on branch {branch}"
        );
    }
}

#[test]
fn push_tag_filters() {
    let table = [
        (json!([{"tags": {"includes": ["v*"]}}]), "v1.0.0", true),
        (json!([{"tags": {"includes": ["v*"]}}]), "release-1", false),
        (
            json!([{"tags": {"includes": ["v*"], "excludes": ["v*-rc*"]}}]),
            "v2.0-rc1",
            false,
        ),
        (
            json!([{"tags": {"includes": ["v*"], "excludes": ["v*-rc*"]}}]),
            "v2.0",
            true,
        ),
        // A branch filter never matches a tag, even one named like the branch.
        (json!([{"branches": {"includes": ["main"]}}]), "main", false),
    ];
    for (filters, tag, expected) in table {
        let declaration = pipeline(push_trigger(filters.clone()));
        assert_eq!(
            starts(&declaration, &tag_push(tag)),
            expected,
            "{filters} on tag {tag}"
        );
    }
}

#[test]
fn push_file_path_filters() {
    let filters = |paths: Value| json!([{"branches": {"includes": ["main"]}, "filePaths": paths}]);
    // (file paths criteria, changed files, starts)
    let table: Vec<(Value, Vec<&str>, bool)> = vec![
        (json!({"includes": ["src/**"]}), vec!["src/a/b.rs"], true),
        (json!({"includes": ["src/**"]}), vec!["docs/a.md"], false),
        (json!({"includes": ["src/*"]}), vec!["src/a/b.rs"], false),
        (json!({"includes": ["src/*"]}), vec!["src/b.rs"], true),
        // One included, not excluded, file is enough.
        (
            json!({"includes": ["**"], "excludes": ["**/*.md"]}),
            vec!["README.md", "src/main.rs"],
            true,
        ),
        (
            json!({"includes": ["**"], "excludes": ["**/*.md"]}),
            vec!["README.md", "docs/x.md"],
            false,
        ),
        (json!({"excludes": ["docs/**"]}), vec!["docs/a.md"], false),
        (
            json!({"excludes": ["docs/**"]}),
            vec!["docs/a.md", "Makefile"],
            true,
        ),
        // A filter with file paths needs at least one changed file.
        (json!({"includes": ["**"]}), vec![], false),
    ];
    for (paths, files, expected) in table {
        let declaration = pipeline(push_trigger(filters(paths.clone())));
        assert_eq!(
            starts(&declaration, &branch_push("main", &files)),
            expected,
            "{paths} with {files:?}"
        );
    }
    // The branch must match as well as the files.
    let declaration = pipeline(push_trigger(filters(json!({"includes": ["**"]}))));
    assert!(!starts(
        &declaration,
        &branch_push("develop", &["src/main.rs"])
    ));
}

#[test]
fn pull_request_filters() {
    use GitPullRequestEventType::{Closed, Open, Updated};
    let table: Vec<(Value, GitEvent, bool)> = vec![
        (
            json!([{"branches": {"includes": ["main"]}}]),
            pull_request(Open, "main", None),
            true,
        ),
        (
            json!([{"branches": {"includes": ["main"]}}]),
            pull_request(Closed, "main", None),
            true,
        ),
        // The branch filter looks at the base (destination) branch.
        (
            json!([{"branches": {"includes": ["changes"]}}]),
            pull_request(Open, "main", None),
            false,
        ),
        (
            json!([{"events": ["OPEN", "UPDATED"], "branches": {"includes": ["main"]}}]),
            pull_request(Updated, "main", None),
            true,
        ),
        (
            json!([{"events": ["OPEN", "UPDATED"], "branches": {"includes": ["main"]}}]),
            pull_request(Closed, "main", None),
            false,
        ),
        (
            json!([{"events": ["OPEN"], "branches": {"includes": ["**"], "excludes": ["main"]}}]),
            pull_request(Open, "main", None),
            false,
        ),
        // File paths of a pull request, when known.
        (
            json!([{"branches": {"includes": ["main"]}, "filePaths": {"includes": ["src/**"]}}]),
            pull_request(Open, "main", Some(&["src/x.rs"])),
            true,
        ),
        (
            json!([{"branches": {"includes": ["main"]}, "filePaths": {"includes": ["src/**"]}}]),
            pull_request(Open, "main", Some(&["doc/x.md"])),
            false,
        ),
        // Unknown changed files never satisfy a file path filter.
        (
            json!([{"branches": {"includes": ["main"]}, "filePaths": {"includes": ["**"]}}]),
            pull_request(Open, "main", None),
            false,
        ),
    ];
    for (filters, event, expected) in table {
        let declaration = pipeline(pr_trigger(filters.clone()));
        assert_eq!(
            starts(&declaration, &event),
            expected,
            "{filters} on {event:?}"
        );
    }
    // A push trigger alone does not start on pull requests, nor a pull request trigger on pushes.
    let push_only = pipeline(push_trigger(json!([{"branches": {"includes": ["**"]}}])));
    assert!(!starts(&push_only, &pull_request(Open, "main", None)));
    let pr_only = pipeline(pr_trigger(json!([{"branches": {"includes": ["**"]}}])));
    assert!(!starts(&pr_only, &branch_push("main", &["a"])));
}

#[test]
fn pull_request_files_are_wanted_only_when_a_filter_needs_them() {
    let with_paths = pipeline(pr_trigger(
        json!([{"branches": {"includes": ["main"]}, "filePaths": {"includes": ["src/**"]}}]),
    ));
    let without = pipeline(pr_trigger(json!([{"branches": {"includes": ["main"]}}])));
    assert!(needs_pull_request_files(
        &with_paths,
        "codertocat/hello-world"
    ));
    assert!(!needs_pull_request_files(&with_paths, "someone/else"));
    assert!(!needs_pull_request_files(
        &without,
        "Codertocat/Hello-World"
    ));
}

#[test]
fn without_triggers_pushes_to_the_configured_branch_start() {
    let declaration = pipeline(Value::Null);
    assert!(starts(&declaration, &branch_push("main", &[])));
    assert!(!starts(&declaration, &branch_push("develop", &["a"])));
    assert!(!starts(&declaration, &tag_push("main")));
    assert!(!starts(
        &declaration,
        &pull_request(GitPullRequestEventType::Open, "main", None)
    ));
    // Repository names compare without case, as GitHub's do.
    let GitEvent::Push(mut push) = branch_push("main", &[]) else {
        unreachable!()
    };
    push.repository = "codertocat/hello-world".into();
    assert!(starts(&declaration, &GitEvent::Push(push.clone())));
    push.repository = "Codertocat/Other".into();
    assert!(!starts(&declaration, &GitEvent::Push(push)));
}

#[test]
fn detect_changes_false_turns_default_detection_off() {
    let mut declaration = pipeline(Value::Null);
    declaration.stages[0].actions[0]
        .configuration
        .insert("DetectChanges".into(), "false".into());
    assert!(!starts(&declaration, &branch_push("main", &[])));
}

#[test]
fn triggers_replace_default_detection_of_their_action() {
    // The trigger names tags only: a push to the configured branch no longer starts.
    let declaration = pipeline(push_trigger(json!([{"tags": {"includes": ["v*"]}}])));
    assert!(!starts(&declaration, &branch_push("main", &["a"])));
    assert!(starts(&declaration, &tag_push("v1")));
}

#[test]
fn deletions_start_nothing() {
    let declaration = pipeline(push_trigger(json!([{"branches": {"includes": ["**"]}}])));
    let GitEvent::Push(mut push) = branch_push("main", &["a"]) else {
        unreachable!()
    };
    push.deleted = true;
    push.after = NULL_COMMIT.into();
    assert!(!starts(&declaration, &GitEvent::Push(push)));
    let default = pipeline(Value::Null);
    let GitEvent::Push(mut push) = branch_push("main", &[]) else {
        unreachable!()
    };
    push.deleted = true;
    assert!(!starts(&default, &GitEvent::Push(push)));
}

#[test]
fn a_match_pins_the_commit_and_names_the_connection() {
    let declaration = pipeline(Value::Null);
    let outcome = match_git_event(&declaration, &branch_push("main", &[]));
    assert_eq!(outcome.matches.len(), 1);
    let m = &outcome.matches[0];
    assert_eq!(m.source_action, "Code");
    assert_eq!(m.revision.action_name, "Code");
    assert_eq!(m.revision.revision_type, "COMMIT_ID");
    assert_eq!(m.revision.revision_value, SHA);
    assert_eq!(m.trigger.trigger_type, TriggerType::WebhookV2);
    assert_eq!(
        m.trigger.trigger_detail,
        "arn:aws:codeconnections:us-east-1:111111111111:connection/abc"
    );
}

#[test]
fn github_v1_sources_start_on_their_branch_as_webhook_triggers() {
    let mut value = serde_json::to_value(pipeline(Value::Null)).expect("encode");
    value["stages"][0]["actions"][0] = json!({
        "name": "Code",
        "actionTypeId": {"category": "Source", "owner": "ThirdParty", "provider": "GitHub", "version": "1"},
        "configuration": {"Owner": "Codertocat", "Repo": "Hello-World", "Branch": "main"},
        "outputArtifacts": [{"name": "Src"}]
    });
    let declaration: PipelineDeclaration = serde_json::from_value(value).expect("decode");
    let outcome = match_git_event(&declaration, &branch_push("main", &[]));
    assert_eq!(outcome.matches.len(), 1);
    assert_eq!(
        outcome.matches[0].trigger.trigger_type,
        TriggerType::Webhook
    );
    assert!(!starts(&declaration, &branch_push("other", &[])));
}

#[test]
fn invalid_patterns_match_nothing_and_are_reported() {
    let declaration = pipeline(push_trigger(json!([{"branches": {"includes": ["[main"]}}])));
    let outcome = match_git_event(&declaration, &branch_push("main", &[]));
    assert!(outcome.matches.is_empty());
    assert_eq!(outcome.problems.len(), 1);
    assert!(outcome.problems[0].contains("triggers[0].push[0].branches.includes"));
}
