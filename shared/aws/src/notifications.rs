//! Approval notifications: when a Manual approval action names a `NotificationArn`, the SNS
//! topic receives CodePipeline's approval message (subject `APPROVAL NEEDED: …`, a JSON body
//! with `region`, `consoleLink` and `approval`: pipeline, stage, action, token, expiry,
//! `externalEntityLink`, `approvalReviewLink`, `customData`), so subscriptions written for
//! CodePipeline (email, chat bots, Lambda functions reading the token) work unchanged.
//!
//! The review link is Penstock's approval page
//! (`{PENSTOCK_APPROVAL_URL}/{pipeline}/{stage}/{action}?token=…`), where a reviewer approves or
//! rejects. The token in it is the capability to decide this one attempt, so the topic's
//! subscribers are the approvers: restrict who may subscribe to the topic.

use penstock_core::engine::ActionJob;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

/// SNS refuses subjects over 100 characters.
const MAX_SUBJECT: usize = 100;

/// Path segments keep letters, digits and CodePipeline name punctuation; the rest is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'@');

/// One approval notification, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalNotice {
    pub subject: String,
    pub message: Value,
}

/// The review page of this attempt's approval, under `base` (`https://…/approvals`).
pub fn review_link(base: &str, job: &ActionJob, token: &str) -> String {
    let segment = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
    format!(
        "{}/{}/{}/{}?token={}",
        base.trim_end_matches('/'),
        segment(&job.pipeline_name),
        segment(&job.stage),
        segment(&job.action),
        segment(token)
    )
}

/// CodePipeline's approval message for `job`, whose attempt waits for `token`.
pub fn approval_notice(
    job: &ActionJob,
    token: &str,
    region: &str,
    approval_url: Option<&str>,
) -> ApprovalNotice {
    let review = approval_url.map(|base| review_link(base, job, token));
    let mut subject = format!(
        "APPROVAL NEEDED: AWS CodePipeline {} for action {}",
        job.pipeline_name, job.action
    );
    if subject.chars().count() > MAX_SUBJECT {
        subject = subject.chars().take(MAX_SUBJECT - 3).collect::<String>() + "...";
    }
    let optional = |key: &str| {
        job.configuration
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
    };
    // CodePipeline's expiry has minute precision: `2016-07-07T20:22Z`.
    let deadline = job.deadline.to_iso8601();
    let expires = format!("{}Z", &deadline[..16.min(deadline.len())]);
    ApprovalNotice {
        subject,
        message: json!({
            "region": region,
            "consoleLink": review.clone(),
            "approval": {
                "pipelineName": job.pipeline_name,
                "stageName": job.stage,
                "actionName": job.action,
                "token": token,
                "expires": expires,
                "externalEntityLink": optional("ExternalEntityLink"),
                "approvalReviewLink": review,
                "customData": optional("CustomData"),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use penstock_core::engine::Timestamp;
    use penstock_core::model::{ActionCategory, ActionOwner, ActionTypeId};

    use super::*;

    fn job(pipeline: &str, action: &str) -> ActionJob {
        ActionJob {
            pipeline_name: pipeline.into(),
            pipeline_version: 1,
            execution_id: "e-1".into(),
            stage: "Prod Gate".into(),
            action: action.into(),
            attempt: 1,
            action_execution_id: "a-1".into(),
            action_type_id: ActionTypeId {
                category: ActionCategory::Approval,
                owner: ActionOwner::Aws,
                provider: "Manual".into(),
                version: "1".into(),
            },
            configuration: BTreeMap::from([
                ("CustomData".to_string(), "Check the canary".to_string()),
                ("ExternalEntityLink".to_string(), String::new()),
            ]),
            input_artifacts: Vec::new(),
            output_artifacts: Vec::new(),
            role_arn: None,
            region: None,
            namespace: None,
            artifact_store: None,
            source_revision: None,
            // 2016-07-07T20:22:33.456Z
            deadline: Timestamp(1_467_922_953_456),
        }
    }

    #[test]
    fn the_message_has_codepipelines_shape_and_links_the_review_page() {
        let notice = approval_notice(
            &job("web", "Review"),
            "tok-1",
            "eu-west-1",
            Some("https://api.example/approvals/"),
        );
        assert_eq!(
            notice.subject,
            "APPROVAL NEEDED: AWS CodePipeline web for action Review"
        );
        let link = "https://api.example/approvals/web/Prod%20Gate/Review?token=tok-1";
        assert_eq!(
            notice.message,
            json!({
                "region": "eu-west-1",
                "consoleLink": link,
                "approval": {
                    "pipelineName": "web",
                    "stageName": "Prod Gate",
                    "actionName": "Review",
                    "token": "tok-1",
                    "expires": "2016-07-07T20:22Z",
                    "externalEntityLink": null,
                    "approvalReviewLink": link,
                    "customData": "Check the canary",
                }
            })
        );
    }

    #[test]
    fn without_an_approval_url_the_token_is_sent_without_links() {
        let notice = approval_notice(&job("web", "Review"), "tok-1", "eu-west-1", None);
        assert_eq!(notice.message["approval"]["token"], "tok-1");
        assert_eq!(
            notice.message["approval"]["approvalReviewLink"],
            Value::Null
        );
        assert_eq!(notice.message["consoleLink"], Value::Null);
    }

    #[test]
    fn long_subjects_are_cut_to_what_sns_accepts() {
        let notice = approval_notice(&job(&"p".repeat(100), "Review"), "t", "r", None);
        assert_eq!(notice.subject.chars().count(), MAX_SUBJECT);
        assert!(notice.subject.ends_with("..."));
    }
}
