//! The AWS events that start pipelines, as the webhook function receives them from EventBridge
//! (or S3 notifications), turned into intake calls:
//! - `Scheduled Event` (`aws.events`): starts the pipeline(s) its rule names;
//! - `Penstock Scheduled Start` (`penstock.scheduler`): the input an EventBridge Scheduler
//!   schedule sends (see [`SCHEDULED_START`]), starts the pipeline it names;
//! - `Object Created` (`aws.s3`, EventBridge notifications) and S3 notification `Records` with
//!   `ObjectCreated:*`: starts pipelines whose S3 source watches the bucket and key;
//! - `ECR Image Action` (`aws.ecr`) of a successful `PUSH`: starts pipelines whose ECR source
//!   watches the repository and tag.
//!
//! Shapes are read leniently (unknown members ignored); anything else is reported as ignored,
//! not as an error, so a too-broad rule does not make EventBridge retry forever.

use penstock_app::error::AppError;
use penstock_app::intake::{EcrImagePushed, Intake, IntakeReport, S3ObjectCreated};
use penstock_core::engine::Timestamp;
use penstock_core::triggers::parse_event_time;
use serde_json::Value;

/// The `source` of the input EventBridge Scheduler schedules send to the webhook function.
pub const SCHEDULER_SOURCE: &str = "penstock.scheduler";
/// The `detail-type` of a scheduled start. A schedule's target `Input` is
/// `{"source": "penstock.scheduler", "detail-type": "Penstock Scheduled Start", "detail":
/// {"pipelineName": NAME, "schedule": "<aws.scheduler.schedule-arn>", "scheduledTime":
/// "<aws.scheduler.scheduled-time>"}}`; Scheduler fills the placeholders on every firing.
pub const SCHEDULED_START: &str = "Penstock Scheduled Start";

/// Every (`source`, `detail-type`) this module turns into starts (rules routing other events to
/// the webhook only produce acknowledged, ignored invocations).
pub const TRIGGER_EVENT_TYPES: &[(&str, &str)] = &[
    ("aws.events", "Scheduled Event"),
    (SCHEDULER_SOURCE, SCHEDULED_START),
    ("aws.s3", "Object Created"),
    ("aws.ecr", "ECR Image Action"),
];

/// An AWS event that can start pipelines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsTriggerEvent {
    Scheduled {
        id: Option<String>,
        /// The rule's ARN (`resources[0]`).
        rule: String,
        time: Timestamp,
    },
    /// One firing of an EventBridge Scheduler schedule naming its pipeline.
    ScheduledStart {
        pipeline: String,
        /// The schedule's ARN.
        schedule: String,
        /// The firing's scheduled time: with `schedule`, identifies the firing, so a retried
        /// delivery starts nothing new.
        time: Timestamp,
    },
    S3ObjectsCreated {
        id: Option<String>,
        objects: Vec<S3ObjectCreated>,
    },
    EcrImagePushed {
        id: Option<String>,
        image: EcrImagePushed,
    },
    /// Starts nothing, and why.
    Ignored(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AwsEventError {
    #[error("{detail_type} event is missing {member}")]
    Missing {
        detail_type: String,
        member: &'static str,
    },
    #[error(transparent)]
    Intake(#[from] AppError),
}

fn text<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

fn required<'v>(
    value: &'v Value,
    path: &[&str],
    detail_type: &str,
    member: &'static str,
) -> Result<&'v str, AwsEventError> {
    text(value, path)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AwsEventError::Missing {
            detail_type: detail_type.to_string(),
            member,
        })
}

/// Read an EventBridge event or an S3 notification.
pub fn parse_aws_event(event: &Value) -> Result<AwsTriggerEvent, AwsEventError> {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        return Ok(s3_notification(records));
    }
    let detail_type = text(event, &["detail-type"]).unwrap_or_default();
    let source = text(event, &["source"]).unwrap_or_default();
    let id = text(event, &["id"]).map(str::to_string);
    let detail = event.get("detail").unwrap_or(&Value::Null);
    match (source, detail_type) {
        ("aws.events", "Scheduled Event") => {
            let rule = event
                .get("resources")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_str)
                .ok_or_else(|| AwsEventError::Missing {
                    detail_type: detail_type.to_string(),
                    member: "resources[0] (the rule)",
                })?;
            let time = required(event, &["time"], detail_type, "time")?;
            let time = parse_event_time(time).ok_or_else(|| AwsEventError::Missing {
                detail_type: detail_type.to_string(),
                member: "an RFC 3339 time",
            })?;
            Ok(AwsTriggerEvent::Scheduled {
                id,
                rule: rule.to_string(),
                time,
            })
        }
        (SCHEDULER_SOURCE, SCHEDULED_START) => {
            let pipeline = required(
                detail,
                &["pipelineName"],
                detail_type,
                "detail.pipelineName",
            )?;
            let schedule = required(detail, &["schedule"], detail_type, "detail.schedule")?;
            let time = required(
                detail,
                &["scheduledTime"],
                detail_type,
                "detail.scheduledTime",
            )?;
            // A placeholder left as written (`<aws.scheduler.scheduled-time>`) is not a time: the
            // input was not sent by Scheduler.
            let time = parse_event_time(time).ok_or_else(|| AwsEventError::Missing {
                detail_type: detail_type.to_string(),
                member: "an RFC 3339 detail.scheduledTime",
            })?;
            Ok(AwsTriggerEvent::ScheduledStart {
                pipeline: pipeline.to_string(),
                schedule: schedule.to_string(),
                time,
            })
        }
        ("aws.s3", "Object Created") => {
            let bucket = required(
                detail,
                &["bucket", "name"],
                detail_type,
                "detail.bucket.name",
            )?;
            let key = required(detail, &["object", "key"], detail_type, "detail.object.key")?;
            Ok(AwsTriggerEvent::S3ObjectsCreated {
                id,
                objects: vec![S3ObjectCreated {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    version_id: text(detail, &["object", "version-id"]).map(str::to_string),
                    etag: text(detail, &["object", "etag"]).map(str::to_string),
                    sequencer: text(detail, &["object", "sequencer"]).map(str::to_string),
                }],
            })
        }
        ("aws.ecr", "ECR Image Action") => {
            let action = text(detail, &["action-type"]).unwrap_or_default();
            let result = text(detail, &["result"]).unwrap_or_default();
            if action != "PUSH" || result != "SUCCESS" {
                return Ok(AwsTriggerEvent::Ignored(format!(
                    "ECR {action} with result {result} starts nothing"
                )));
            }
            let Some(tag) = text(detail, &["image-tag"]).filter(|t| !t.is_empty()) else {
                return Ok(AwsTriggerEvent::Ignored(
                    "an untagged ECR image starts nothing".into(),
                ));
            };
            Ok(AwsTriggerEvent::EcrImagePushed {
                id,
                image: EcrImagePushed {
                    repository: required(
                        detail,
                        &["repository-name"],
                        detail_type,
                        "detail.repository-name",
                    )?
                    .to_string(),
                    tag: tag.to_string(),
                    digest: required(
                        detail,
                        &["image-digest"],
                        detail_type,
                        "detail.image-digest",
                    )?
                    .to_string(),
                },
            })
        }
        _ => Ok(AwsTriggerEvent::Ignored(format!(
            "{source} {detail_type:?} events start no pipeline"
        ))),
    }
}

/// S3 event notifications (`Records`): object keys arrive URL-encoded (`+` for spaces).
fn s3_notification(records: &[Value]) -> AwsTriggerEvent {
    let objects: Vec<S3ObjectCreated> = records
        .iter()
        .filter(|r| text(r, &["eventSource"]) == Some("aws:s3"))
        .filter(|r| text(r, &["eventName"]).is_some_and(|n| n.starts_with("ObjectCreated:")))
        .filter_map(|r| {
            let bucket = text(r, &["s3", "bucket", "name"])?;
            let encoded = text(r, &["s3", "object", "key"])?;
            Some(S3ObjectCreated {
                bucket: bucket.to_string(),
                key: url_decode(encoded),
                version_id: text(r, &["s3", "object", "versionId"]).map(str::to_string),
                etag: text(r, &["s3", "object", "eTag"]).map(str::to_string),
                sequencer: text(r, &["s3", "object", "sequencer"]).map(str::to_string),
            })
        })
        .collect();
    if objects.is_empty() {
        AwsTriggerEvent::Ignored("no ObjectCreated records".into())
    } else {
        AwsTriggerEvent::S3ObjectsCreated { id: None, objects }
    }
}

fn url_decode(key: &str) -> String {
    // `form_urlencoded` decodes `+` as a space and `%XX` escapes, as S3 encodes keys.
    let query = format!("k={key}");
    form_urlencoded::parse(query.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| key.to_string())
}

/// Take in one AWS event: start what it triggers.
pub async fn handle_aws_event(
    intake: &Intake,
    event: &Value,
) -> Result<IntakeReport, AwsEventError> {
    match parse_aws_event(event)? {
        AwsTriggerEvent::Scheduled { id, rule, time } => {
            Ok(intake.schedule_fired(id.as_deref(), &rule, time).await?)
        }
        AwsTriggerEvent::ScheduledStart {
            pipeline,
            schedule,
            time,
        } => Ok(intake.start_scheduled(&pipeline, &schedule, time).await?),
        AwsTriggerEvent::S3ObjectsCreated { id, objects } => {
            let mut report = IntakeReport::default();
            for object in &objects {
                // One event id per notification; each record is its own delivery.
                let record_id = id.as_ref().map(|id| format!("{id}#{}", object.key));
                let one = intake
                    .s3_object_created(record_id.as_deref(), object)
                    .await?;
                report.duplicate |= one.duplicate;
                report.started.extend(one.started);
                report.problems.extend(one.problems);
            }
            Ok(report)
        }
        AwsTriggerEvent::EcrImagePushed { id, image } => {
            Ok(intake.ecr_image_pushed(id.as_deref(), &image).await?)
        }
        AwsTriggerEvent::Ignored(reason) => Ok(IntakeReport {
            problems: vec![reason],
            ..Default::default()
        }),
    }
}
