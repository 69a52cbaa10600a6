//! The in-process test harness: the router over the in-memory store, requests signed with the
//! official `aws-sigv4` signer, and a scripted dispatcher that plays the action providers.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials as SigningCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use penstock_api::auth::Credentials;
use penstock_api::{ApiDeps, router};
use penstock_app::advance::Engine;
use penstock_app::control::Control;
use penstock_app::memory_store::MemoryStore;
use penstock_app::ports::{
    BusError, BusMessage, Clock, Envelope, EventBus, RandomIds, SystemClock,
};
use penstock_app::repo::Repository;
use penstock_core::engine::{
    ActionJob, ArtifactRef, ErrorDetails, ExternalExecution, Input, Timestamp, is_manual_approval,
};
use penstock_core::model::ActionCategory;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const KEY_ID: &str = "AKIAPENSTOCKTEST0001";
pub const SECRET: &str = "penstock-test-secret/with+any=length";
pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
pub const HOST: &str = "127.0.0.1:4510";

/// Records every published message, for the scripted dispatcher.
#[derive(Default)]
pub struct RecordingBus {
    pub published: Mutex<Vec<Envelope>>,
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        self.published
            .lock()
            .map_err(|_| BusError::Unavailable("poisoned".into()))?
            .extend(envelopes);
        Ok(())
    }
}

/// The system clock moved by a fixed number of milliseconds.
pub struct OffsetClock(pub i64);

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        Timestamp(SystemClock.now().0 + self.0)
    }
}

/// How the scripted dispatcher answers the attempts of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Start it and report success (the default).
    Succeed,
    /// Start it and report failure.
    Fail,
    /// Start it and leave it running.
    Hold,
}

pub struct Harness {
    pub router: Router,
    pub control: Control,
    pub store: Arc<MemoryStore>,
    pub bus: Arc<RecordingBus>,
    handled: Mutex<usize>,
    failing: Mutex<HashSet<String>>,
    holding: Mutex<HashSet<String>>,
}

/// A response, its body parsed.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The body of a success; fails the test with the error otherwise.
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected success, got {}",
            self.body
        );
        self.body
    }

    /// The exception name of an error answer, checked to agree between body and header.
    pub fn error_type(&self) -> String {
        let from_body = self.body["__type"].as_str().unwrap_or_default().to_string();
        let from_header = self
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(from_body, from_header, "body and x-amzn-ErrorType disagree");
        from_body
    }

    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts an HTTP 400 with `error_type`.
    pub fn refused(&self, error_type: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.body);
        assert_eq!(self.error_type(), error_type, "{}", self.body);
    }
}

/// How to sign a request.
#[derive(Debug, Clone)]
pub struct Signer {
    pub key_id: String,
    pub secret: String,
    pub time: SystemTime,
    pub region: String,
    pub service: String,
    pub path: String,
}

impl Default for Signer {
    fn default() -> Self {
        Self {
            key_id: KEY_ID.into(),
            secret: SECRET.into(),
            time: SystemTime::now(),
            region: REGION.into(),
            service: "codepipeline".into(),
            path: "/".into(),
        }
    }
}

/// An unsigned request as botocore builds it.
pub fn unsigned_request(path: &str, operation: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("host", HOST)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("CodePipeline_20150709.{operation}"))
        .header("content-length", body.len().to_string())
        .body(Body::from(body))
        .unwrap()
}

/// A request signed like botocore signs it (`content-type;host;x-amz-date;x-amz-target`, plus
/// `content-length` here, as the Rust SDK does).
pub fn signed_request(signer: &Signer, operation: &str, body: Vec<u8>) -> Request<Body> {
    let request = unsigned_request(&signer.path, operation, body.clone());
    sign_request(signer, request, &body)
}

/// Sign `request` (whose body is `body`) with `signer`'s key, time and scope.
pub fn sign_request(signer: &Signer, mut request: Request<Body>, body: &[u8]) -> Request<Body> {
    let identity: Identity =
        SigningCredentials::new(&signer.key_id, &signer.secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&signer.region)
        .name(&signer.service)
        .time(signer.time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        "POST",
        uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request
}

/// A pipeline that validates: an S3 source, a build, then an approval before a deploy.
pub fn pipeline(name: &str) -> Value {
    json!({
        "name": name,
        "roleArn": "arn:aws:iam::123456789012:role/pipeline",
        "artifactStore": {"type": "S3", "location": "artifacts-bucket"},
        "stages": [
            {"name": "Source", "actions": [{
                "name": "Checkout",
                "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
                "configuration": {"S3Bucket": "sources", "S3ObjectKey": "app.zip", "PollForSourceChanges": "false"},
                "outputArtifacts": [{"name": "App"}]
            }]},
            {"name": "Build", "actions": [{
                "name": "Compile",
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"ProjectName": "web"},
                "inputArtifacts": [{"name": "App"}],
                "outputArtifacts": [{"name": "Bin"}]
            }]},
            {"name": "Deploy", "actions": [{
                "name": "Approve",
                "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"},
                "runOrder": 1
            }, {
                "name": "Ship",
                "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1"},
                "configuration": {"BucketName": "site", "Extract": "true"},
                "inputArtifacts": [{"name": "Bin"}],
                "runOrder": 2
            }]}
        ]
    })
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A harness whose dependencies `adjust` may change (clock skew, body limit...).
    pub fn with(adjust: impl FnOnce(&mut ApiDeps)) -> Self {
        Self::build(Arc::new(SystemClock), adjust)
    }

    /// A harness whose server clock runs `minutes` ahead of the system clock.
    pub fn with_server_clock_ahead(minutes: i64) -> Self {
        Self::build(Arc::new(OffsetClock(minutes * 60_000)), |_| {})
    }

    fn build(clock: Arc<dyn Clock>, adjust: impl FnOnce(&mut ApiDeps)) -> Self {
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(RecordingBus::default());
        let engine = Engine::new(
            Repository::new(store.clone()),
            bus.clone(),
            clock,
            Arc::new(RandomIds),
        );
        let control = Control::new(engine);
        let mut deps = ApiDeps::new(
            control.clone(),
            Credentials::single(KEY_ID, SECRET),
            REGION,
            ACCOUNT,
        );
        adjust(&mut deps);
        Self {
            router: router(deps),
            control,
            store,
            bus,
            handled: Mutex::new(0),
            failing: Mutex::new(HashSet::new()),
            holding: Mutex::new(HashSet::new()),
        }
    }

    /// Call an operation, signed with the test key.
    pub async fn call(&self, operation: &str, input: Value) -> Reply {
        let request = signed_request(
            &Signer::default(),
            operation,
            input.to_string().into_bytes(),
        );
        self.send(request).await
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "response is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn create(&self, name: &str) -> Value {
        self.call("CreatePipeline", json!({ "pipeline": pipeline(name) }))
            .await
            .ok()
    }

    pub async fn start(&self, name: &str) -> String {
        let reply = self
            .call("StartPipelineExecution", json!({ "name": name }))
            .await
            .ok();
        reply["pipelineExecutionId"].as_str().unwrap().to_string()
    }

    pub fn script(&self, action: &str, script: Script) {
        let mut failing = self.failing.lock().unwrap();
        let mut holding = self.holding.lock().unwrap();
        failing.remove(action);
        holding.remove(action);
        match script {
            Script::Succeed => {}
            Script::Fail => {
                failing.insert(action.to_string());
            }
            Script::Hold => {
                holding.insert(action.to_string());
            }
        }
    }

    /// Play the dispatcher until no scheduled attempt is left unanswered: approvals open with a
    /// fresh token, other actions follow their script.
    pub async fn drive(&self) {
        loop {
            let pending: Vec<Envelope> = {
                let published = self.bus.published.lock().unwrap();
                let mut handled = self.handled.lock().unwrap();
                let new = published[*handled..].to_vec();
                *handled = published.len();
                new
            };
            let jobs: Vec<ActionJob> = pending
                .into_iter()
                .filter_map(|e| match e.message {
                    BusMessage::ActionScheduled(job) => Some(job),
                    _ => None,
                })
                .collect();
            if jobs.is_empty() {
                return;
            }
            for job in jobs {
                self.answer(job).await;
            }
        }
    }

    async fn answer(&self, job: ActionJob) {
        let manual = is_manual_approval(&job.action_type_id);
        let started = Input::ActionStarted {
            execution_id: job.execution_id.clone(),
            stage: job.stage.clone(),
            action: job.action.clone(),
            attempt: job.attempt,
            external: ExternalExecution::default(),
            approval_token: manual.then(|| uuid::Uuid::new_v4().to_string()),
        };
        self.control
            .engine
            .apply(&job.pipeline_name, started)
            .await
            .unwrap();
        let failing = self.failing.lock().unwrap().contains(&job.action);
        let holding = self.holding.lock().unwrap().contains(&job.action);
        if manual || holding {
            return;
        }
        let external = ExternalExecution {
            id: Some(format!("ext-{}", job.action_execution_id)),
            summary: Some(format!("{} ran", job.action)),
            url: None,
        };
        let finished = if failing {
            Input::ActionFailed {
                execution_id: job.execution_id.clone(),
                stage: job.stage.clone(),
                action: job.action.clone(),
                attempt: job.attempt,
                error: ErrorDetails {
                    code: "JobFailed".into(),
                    message: format!("{} failed", job.action),
                },
                external,
            }
        } else {
            let source = job.action_type_id.category == ActionCategory::Source;
            Input::ActionSucceeded {
                execution_id: job.execution_id.clone(),
                stage: job.stage.clone(),
                action: job.action.clone(),
                attempt: job.attempt,
                output_artifacts: job
                    .output_artifacts
                    .iter()
                    .map(|name| ArtifactRef {
                        name: name.clone(),
                        location: format!(
                            "s3://artifacts-bucket/{}/{name}/{}.zip",
                            job.pipeline_name, job.action_execution_id
                        ),
                        revision_id: source.then(|| "rev-0001".to_string()),
                        revision_summary: source.then(|| "first revision".to_string()),
                    })
                    .collect(),
                output_variables: [("Done".to_string(), "yes".to_string())].into(),
                external,
            }
        };
        self.control
            .engine
            .apply(&job.pipeline_name, finished)
            .await
            .unwrap();
    }

    /// The open approval token of `stage.action`, from `GetPipelineState`.
    pub async fn approval_token(&self, pipeline: &str, stage: &str, action: &str) -> String {
        let state = self
            .call("GetPipelineState", json!({ "name": pipeline }))
            .await
            .ok();
        find_action(&state, stage, action)["latestExecution"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no open token for {stage}.{action}: {state}"))
            .to_string()
    }

    pub async fn execution_status(&self, pipeline: &str, id: &str) -> String {
        let reply = self
            .call(
                "GetPipelineExecution",
                json!({ "pipelineName": pipeline, "pipelineExecutionId": id }),
            )
            .await
            .ok();
        reply["pipelineExecution"]["status"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// A stage of a `GetPipelineState` answer.
pub fn find_stage<'a>(state: &'a Value, stage: &str) -> &'a Value {
    state["stageStates"]
        .as_array()
        .and_then(|stages| stages.iter().find(|s| s["stageName"] == stage))
        .unwrap_or_else(|| panic!("no stage {stage} in {state}"))
}

/// An action of a `GetPipelineState` answer.
pub fn find_action<'a>(state: &'a Value, stage: &str, action: &str) -> &'a Value {
    find_stage(state, stage)["actionStates"]
        .as_array()
        .and_then(|actions| actions.iter().find(|a| a["actionName"] == action))
        .unwrap_or_else(|| panic!("no action {stage}.{action} in {state}"))
}

/// A time `minutes` away from now (negative: in the past).
pub fn minutes_from_now(minutes: i64) -> SystemTime {
    let delta = Duration::from_secs(minutes.unsigned_abs() * 60);
    if minutes < 0 {
        SystemTime::now() - delta
    } else {
        SystemTime::now() + delta
    }
}
