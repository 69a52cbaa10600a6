//! Which commit statuses an execution's state changes call for: pending at start for a pinned
//! GitHub commit, the final state at the end, each once, with a link to the execution.

use penstock_app::control::StartOptions;
use penstock_core::engine::{EventKind, SourceRevision, StateChange, Timestamp};
use penstock_local::commit_status::CommitStatusReporter;
use penstock_local::github_source::{GitHubClient, GitHubSettings};
use penstock_local::runtime::{DataDir, LocalParts, ObservedChange};
use serde_json::json;

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

fn change(kind: EventKind, execution_id: &str, detail: serde_json::Value) -> ObservedChange {
    ObservedChange {
        pipeline: "app".into(),
        execution_id: execution_id.into(),
        change: StateChange {
            kind,
            time: Timestamp(0),
            detail,
        },
    }
}

#[tokio::test]
async fn statuses_follow_the_execution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = LocalParts::open(DataDir::new(dir.path())).expect("data dir");
    let control = parts.detached_control();
    let text = json!({"pipeline": {
        "name": "app",
        "roleArn": "arn:aws:iam::111111111111:role/p",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [{
                "name": "Code",
                "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeStarSourceConnection", "version": "1"},
                "configuration": {"FullRepositoryId": "octo/hello", "BranchName": "main"},
                "outputArtifacts": [{"name": "Src"}]
            }]},
            {"name": "Approve", "actions": [{
                "name": "Approve",
                "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"}
            }]}
        ]
    }})
    .to_string();
    let validated = penstock_core::validate::parse_and_validate(&text).expect("valid");
    control
        .create_pipeline(validated.declaration, vec![])
        .await
        .expect("create");
    let pinned = control
        .start_execution(
            "app",
            StartOptions {
                source_revisions: vec![SourceRevision {
                    action_name: "Code".into(),
                    revision_type: "COMMIT_ID".into(),
                    revision_value: SHA.into(),
                }],
                ..Default::default()
            },
        )
        .await
        .expect("start");
    let unpinned = control
        .start_execution("app", StartOptions::default())
        .await
        .expect("start");
    let client = GitHubClient::new(&GitHubSettings {
        api_url: "http://127.0.0.1:9".into(),
        token: None,
    })
    .expect("client");
    let mut reporter = CommitStatusReporter::new(
        client,
        control.clone(),
        Some("http://127.0.0.1:7788/".into()),
    );

    let started = change(EventKind::Pipeline, &pinned, json!({"state": "STARTED"}));
    let posts = reporter.statuses_for(&started).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].repository.full_name(), "octo/hello");
    assert_eq!(posts[0].sha, SHA);
    assert_eq!(posts[0].status.state, "pending");
    assert_eq!(posts[0].status.context, "penstock/app");
    assert_eq!(
        posts[0].status.target_url.as_deref(),
        Some(format!("http://127.0.0.1:7788/pipelines/app/executions/{pinned}").as_str())
    );
    // The source action succeeding says nothing new for a pinned commit.
    let source_done = change(
        EventKind::Action,
        &pinned,
        json!({"state": "SUCCEEDED", "stage": "Source", "type": {"category": "Source"}}),
    );
    assert!(reporter.statuses_for(&source_done).await.is_empty());
    // Without a pinned commit and before the source ran, there is no commit to report on.
    let started = change(EventKind::Pipeline, &unpinned, json!({"state": "STARTED"}));
    assert!(reporter.statuses_for(&started).await.is_empty());

    // (event state, GitHub state)
    for (state, expected) in [
        ("SUCCEEDED", "success"),
        ("FAILED", "failure"),
        ("STOPPED", "error"),
        ("SUPERSEDED", "error"),
        ("CANCELED", "error"),
    ] {
        let end = change(EventKind::Pipeline, &pinned, json!({"state": state}));
        let posts = reporter.statuses_for(&end).await;
        assert_eq!(posts.len(), 1, "{state}");
        assert_eq!(posts[0].status.state, expected, "{state}");
        assert!(posts[0].status.description.len() <= 140);
    }
    // A retried stage resumes the execution: its commit is pending again.
    let resumed = change(EventKind::Pipeline, &pinned, json!({"state": "RESUMED"}));
    let posts = reporter.statuses_for(&resumed).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].status.state, "pending");
    // Stage events and other states call for nothing.
    let stage = change(EventKind::Stage, &pinned, json!({"state": "SUCCEEDED"}));
    assert!(reporter.statuses_for(&stage).await.is_empty());
}
