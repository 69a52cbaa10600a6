//! Test support for running the adapters against moto in server mode: find or start the
//! server, SDK configs pointed at it, unique resource names, and SDK interceptors that count
//! calls, inject faults and report what moto cannot (build variables, finished deployments).
//!
//! The test command (`make test`) starts one moto server and exports its address as
//! `PENSTOCK_TEST_MOTO_ENDPOINT`; a test run without it (`cargo nextest run -p ...`) starts its
//! own server on a free loopback port, once per test process. Tests isolate from each other by
//! unique table, bucket, bus and queue names, never by resetting the server.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// The environment variable naming a running moto server (`http://127.0.0.1:PORT`).
pub const MOTO_ENDPOINT_VAR: &str = "PENSTOCK_TEST_MOTO_ENDPOINT";
/// The region every test resource lives in.
pub const TEST_REGION: &str = "us-east-1";
/// The account moto's default credentials act in.
pub const DEFAULT_ACCOUNT: &str = "123456789012";

/// How long a moto server may take to accept connections.
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto server this process uses.
pub struct MotoServer {
    endpoint: String,
    /// A server this process started: it lives while this pipe is open, that is until the
    /// process ends however it ends (see [`start_moto`]).
    _lifeline: Option<(Child, ChildStdin)>,
}

impl MotoServer {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// The moto server of this test process: the one the test command started, or one started
/// now. Panics with the reason when none can be had (a test cannot go on without it).
pub fn moto() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(endpoint) = std::env::var(MOTO_ENDPOINT_VAR)
            && !endpoint.is_empty()
        {
            return MotoServer {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                _lifeline: None,
            };
        }
        start_moto().unwrap_or_else(|e| panic!("cannot start a moto server: {e}"))
    })
}

/// Start `python3 -m moto.server` on a free loopback port and wait until it accepts
/// connections.
///
/// The server runs under a small shell that kills it when its standard input closes; the
/// write end of that pipe stays in this process, so the server ends with the process, even
/// when a test panics or the runner kills the process.
fn start_moto() -> Result<MotoServer, String> {
    let port = {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
        listener
            .local_addr()
            .map_err(|e| format!("finding a free port: {e}"))?
            .port()
    };
    let python = std::env::var("PENSTOCK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "{python} -m moto.server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & server=$!; \
         cat >/dev/null; kill $server 2>/dev/null; wait $server 2>/dev/null"
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("running {python}: {e}"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| "the moto launcher has no stdin".to_string())?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "moto exited with {status}; is `moto[server]` installed (pip install -r tests/requirements.txt)?"
            ));
        }
        if started.elapsed() > MOTO_START_TIMEOUT {
            return Err(format!(
                "moto did not listen on {address} within {MOTO_START_TIMEOUT:?}"
            ));
        }
        // Polling a port that is not open yet: there is no event to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(MotoServer {
        endpoint: format!("http://{address}"),
        _lifeline: Some((child, stdin)),
    })
}

/// An SDK config pointed at moto, with dummy credentials of the default account and quick
/// retries (tests inject throttling; a real backoff would only slow them down).
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(moto().endpoint()).await
}

pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(TEST_REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "penstock-tests",
        ))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(10))
                .with_max_backoff(Duration::from_millis(100)),
        )
        .load()
        .await
}

/// A name no other test uses: `prefix-` and twelve hex digits (valid for tables, buses,
/// queues and S3 buckets).
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Calls to one operation: executions (what the caller asked for) and attempts (what went on
/// the wire, retries included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCount {
    pub executions: usize,
    pub attempts: usize,
}

/// An SDK interceptor counting calls per (service, operation).
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), CallCount>>>,
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shared(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }

    /// Every count so far, by (service, operation).
    pub fn snapshot(&self) -> BTreeMap<(String, String), CallCount> {
        self.counts
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
    }

    /// The counts so far, and start again from zero.
    pub fn take(&self) -> BTreeMap<(String, String), CallCount> {
        self.counts
            .lock()
            .map(|mut counts| std::mem::take(&mut *counts))
            .unwrap_or_default()
    }

    /// Executions of one operation so far.
    pub fn executions(&self, service: &str, operation: &str) -> usize {
        self.snapshot()
            .get(&(service.to_string(), operation.to_string()))
            .map_or(0, |count| count.executions)
    }

    fn record(&self, cfg: &ConfigBag, attempt: bool) {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return;
        };
        if let Ok(mut counts) = self.counts.lock() {
            let count = counts
                .entry((metadata.service().to_string(), metadata.name().to_string()))
                .or_default();
            if attempt {
                count.attempts += 1;
            } else {
                count.executions += 1;
            }
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "PenstockCallCounter"
    }

    // Counted when the execution ends: the operation's metadata is in the config bag by then
    // (it is not yet when an execution starts).
    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.record(cfg, false);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.record(cfg, true);
        Ok(())
    }
}

/// Marks an attempt whose answer is replaced by a throttling error.
#[derive(Debug, Clone, Copy)]
struct Throttled(bool);

impl Storable for Throttled {
    type Storer = StoreReplace<Self>;
}

/// An SDK interceptor that answers the next `n` attempts of one DynamoDB operation with
/// `ThrottlingException`, as DynamoDB does under load. The attempt never reaches the table: its
/// request is turned into a harmless `ListTables` before it is sent, and the answer is replaced,
/// so a throttled conditional write has no effect, as on AWS.
#[derive(Debug, Clone)]
pub struct ThrottleDynamoDb {
    operation: String,
    remaining: Arc<AtomicUsize>,
    injected: Arc<AtomicUsize>,
}

impl ThrottleDynamoDb {
    pub fn new(operation: &str) -> Self {
        Self {
            operation: operation.to_string(),
            remaining: Arc::default(),
            injected: Arc::default(),
        }
    }

    pub fn shared(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }

    /// Throttle the next `attempts` attempts of the operation.
    pub fn arm(&self, attempts: usize) {
        self.remaining.store(attempts, Ordering::SeqCst);
    }

    /// How many attempts were throttled so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Intercept for ThrottleDynamoDb {
    fn name(&self) -> &'static str {
        "PenstockThrottleDynamoDb"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let matches = cfg
            .load::<Metadata>()
            .is_some_and(|m| m.service() == "DynamoDB" && m.name() == self.operation);
        let armed = matches
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        cfg.interceptor_state().store_put(Throttled(armed));
        if armed {
            let request = context.request_mut();
            request
                .headers_mut()
                .insert("x-amz-target", "DynamoDB_20120810.ListTables");
            request.headers_mut().insert("content-length", "2");
            *request.body_mut() = SdkBody::from("{}");
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !cfg.load::<Throttled>().is_some_and(|t| t.0) {
            return Ok(());
        }
        cfg.interceptor_state().store_put(Throttled(false));
        self.injected.fetch_add(1, Ordering::SeqCst);
        let response = context.response_mut();
        *response.status_mut() = 400u16.try_into()?;
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        response.headers_mut().remove("content-length");
        response.headers_mut().remove("x-amz-crc32");
        *response.body_mut() = SdkBody::from(
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput (injected)"}"#,
        );
        Ok(())
    }
}

/// Which entries of the current attempt were made to fail, of how many.
#[derive(Debug, Clone)]
struct FailedEntries(Vec<usize>, usize);

impl Storable for FailedEntries {
    type Storer = StoreReplace<Self>;
}

/// An SDK interceptor that makes the next `n` entries sent with `PutEvents` fail as
/// EventBridge's transient `InternalFailure`: each such entry is made malformed before the
/// request leaves (so moto really does not deliver it), and its error code in the answer is
/// changed to `InternalFailure`, which the bus must retry.
#[derive(Debug, Clone, Default)]
pub struct FailEventEntries {
    remaining: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl FailEventEntries {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shared(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }

    pub fn arm(&self, entries: usize) {
        self.remaining.store(entries, Ordering::SeqCst);
    }

    /// How many entries were failed so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

fn is_put_events(cfg: &ConfigBag) -> bool {
    cfg.load::<Metadata>()
        .is_some_and(|m| m.service() == "EventBridge" && m.name() == "PutEvents")
}

impl Intercept for FailEventEntries {
    fn name(&self) -> &'static str {
        "PenstockFailEventEntries"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(FailedEntries(Vec::new(), 0));
        if !is_put_events(cfg) || self.remaining.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let request = context.request_mut();
        let Some(bytes) = request.body().bytes() else {
            return Ok(());
        };
        let mut body: serde_json::Value = serde_json::from_slice(bytes)?;
        let mut failed = Vec::new();
        let mut total = 0;
        if let Some(entries) = body.get_mut("Entries").and_then(|e| e.as_array_mut()) {
            total = entries.len();
            for (index, entry) in entries.iter_mut().enumerate() {
                let taken = self
                    .remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if !taken {
                    break;
                }
                entry["Detail"] = serde_json::Value::String("not json".into());
                failed.push(index);
            }
        }
        let text = serde_json::to_vec(&body)?;
        request
            .headers_mut()
            .insert("content-length", text.len().to_string());
        *request.body_mut() = SdkBody::from(text);
        cfg.interceptor_state()
            .store_put(FailedEntries(failed, total));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (failed, total) = match cfg.load::<FailedEntries>() {
            Some(FailedEntries(failed, total)) if !failed.is_empty() => (failed.clone(), *total),
            _ => return Ok(()),
        };
        // The real answer is still a stream here; the whole answer is written instead (the
        // other entries were accepted: moto rejects only the ones made malformed).
        let entries: Vec<serde_json::Value> = (0..total)
            .map(|index| {
                if failed.contains(&index) {
                    serde_json::json!({"ErrorCode": "InternalFailure", "ErrorMessage": "injected transient failure"})
                } else {
                    serde_json::json!({"EventId": uuid::Uuid::new_v4().to_string()})
                }
            })
            .collect();
        let body = serde_json::json!({"FailedEntryCount": failed.len(), "Entries": entries});
        self.failed.fetch_add(failed.len(), Ordering::SeqCst);
        let text = serde_json::to_vec(&body)?;
        let response = context.response_mut();
        *response.status_mut() = 200u16.try_into()?;
        response
            .headers_mut()
            .insert("content-length", text.len().to_string());
        *response.body_mut() = SdkBody::from(text);
        Ok(())
    }
}

/// A bus on moto with a rule sending every Penstock event (or those matching `pattern`) to a
/// fresh SQS queue, so tests can read what was published.
pub struct BusTap {
    pub bus: String,
    pub queue_url: String,
    sqs: aws_sdk_sqs::Client,
}

impl BusTap {
    /// Create the bus (when `create_bus`) and one rule per pattern, all to one new queue.
    pub async fn new(
        config: &SdkConfig,
        bus: &str,
        create_bus: bool,
        patterns: &[serde_json::Value],
    ) -> Result<Self, BoxError> {
        let events = aws_sdk_eventbridge::Client::new(config);
        let sqs = aws_sdk_sqs::Client::new(config);
        if create_bus {
            events.create_event_bus().name(bus).send().await?;
        }
        let queue_url = sqs
            .create_queue()
            .queue_name(unique_name("tap"))
            .send()
            .await?
            .queue_url()
            .ok_or("no queue url")?
            .to_string();
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .ok_or("no queue arn")?
            .clone();
        for pattern in patterns {
            let rule = unique_name("rule");
            events
                .put_rule()
                .name(&rule)
                .event_bus_name(bus)
                .event_pattern(pattern.to_string())
                .send()
                .await?;
            events
                .put_targets()
                .rule(&rule)
                .event_bus_name(bus)
                .targets(
                    aws_sdk_eventbridge::types::Target::builder()
                        .id("tap")
                        .arn(&queue_arn)
                        .build()?,
                )
                .send()
                .await?;
        }
        Ok(Self {
            bus: bus.to_string(),
            queue_url,
            sqs,
        })
    }

    /// Every event waiting in the queue now, removed from it (events are delivered to the
    /// queue while `PutEvents` runs, so nothing published before the call is missed).
    pub async fn drain(&self) -> Result<Vec<serde_json::Value>, BoxError> {
        let mut events = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await?;
            let messages = output.messages();
            if messages.is_empty() {
                return Ok(events);
            }
            for message in messages {
                if let Some(body) = message.body() {
                    events.push(serde_json::from_str(body)?);
                }
                if let Some(handle) = message.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
    }
}

/// Marks an attempt whose answer is replaced by a refusal.
#[derive(Debug, Clone)]
struct Refused(String);

impl Storable for Refused {
    type Storer = StoreReplace<Self>;
}

/// An SDK interceptor that refuses `AssumeRole` into the listed roles with STS's own
/// `AccessDenied` answer, as STS does when a role's trust policy does not name the caller (moto
/// checks no trust policy, so a refusal has to be made). Every other call passes untouched.
#[derive(Debug, Clone, Default)]
pub struct DenyAssumeRole {
    roles: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

impl DenyAssumeRole {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shared(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }

    /// Refuse every later `AssumeRole` into `role_arn`.
    pub fn deny(&self, role_arn: &str) {
        if let Ok(mut roles) = self.roles.lock() {
            roles.push(role_arn.to_string());
        }
    }

    /// How many calls were refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// The value of `name` in a form-encoded body.
fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        index += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Intercept for DenyAssumeRole {
    fn name(&self) -> &'static str {
        "PenstockDenyAssumeRole"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let is_assume_role = cfg
            .load::<Metadata>()
            .is_some_and(|m| m.service() == "STS" && m.name() == "AssumeRole");
        if !is_assume_role {
            return Ok(());
        }
        let role = context
            .request()
            .body()
            .bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|body| form_value(body, "RoleArn"));
        let denied = role.filter(|role| {
            self.roles
                .lock()
                .map(|roles| roles.contains(role))
                .unwrap_or(false)
        });
        if let Some(role) = denied {
            cfg.interceptor_state().store_put(Refused(role));
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Refused(role)) = cfg.load::<Refused>().cloned() else {
            return Ok(());
        };
        self.refused.fetch_add(1, Ordering::SeqCst);
        let body = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
             <Type>Sender</Type><Code>AccessDenied</Code><Message>User: \
             arn:aws:iam::{DEFAULT_ACCOUNT}:user/penstock is not authorized to perform: \
             sts:AssumeRole on resource: {role}</Message></Error>\
             <RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        );
        let response = context.response_mut();
        *response.status_mut() = 403u16.try_into()?;
        response.headers_mut().insert("content-type", "text/xml");
        response
            .headers_mut()
            .insert("content-length", body.len().to_string());
        *response.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

/// An SDK interceptor that records, per (service, operation), the access key ids that signed
/// the calls: tests tell the default credentials from an assumed role's by them.
#[derive(Debug, Clone, Default)]
pub struct SignerRecorder {
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl SignerRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shared(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }

    /// The access key ids that signed calls of `service`/`operation`, in call order.
    pub fn signers(&self, service: &str, operation: &str) -> Vec<String> {
        self.seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .filter(|(s, o, _)| s == service && o == operation)
                    .map(|(_, _, key)| key.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Intercept for SignerRecorder {
    fn name(&self) -> &'static str {
        "PenstockSignerRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        // `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...`
        let key = context
            .request()
            .headers()
            .get("authorization")
            .and_then(|value| value.split("Credential=").nth(1))
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_string();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((
                metadata.service().to_string(),
                metadata.name().to_string(),
                key,
            ));
        }
        Ok(())
    }
}

/// An SDK interceptor that adds exported environment variables to the succeeded builds of
/// `BatchGetBuilds` answers, as CodeBuild reports a buildspec's `exported-variables` (moto's
/// builds export none). The rest of the answer is moto's own.
#[derive(Debug, Clone, Default)]
pub struct ExportBuildVariables {
    variables: Arc<Mutex<Vec<(String, String)>>>,
}

impl ExportBuildVariables {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shared(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }

    /// Report `name=value` as exported by every succeeded build from now on.
    pub fn export(&self, name: &str, value: &str) {
        if let Ok(mut variables) = self.variables.lock() {
            variables.push((name.to_string(), value.to_string()));
        }
    }
}

impl Intercept for ExportBuildVariables {
    fn name(&self) -> &'static str {
        "PenstockExportBuildVariables"
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let variables = self.variables.lock().map(|v| v.clone()).unwrap_or_default();
        if variables.is_empty() {
            return Ok(());
        }
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(output) = output
            .downcast_mut::<aws_sdk_codebuild::operation::batch_get_builds::BatchGetBuildsOutput>(
        ) else {
            return Ok(());
        };
        for build in output.builds.iter_mut().flatten() {
            if build.build_status == Some(aws_sdk_codebuild::types::StatusType::Succeeded) {
                build.exported_environment_variables = Some(
                    variables
                        .iter()
                        .map(|(name, value)| {
                            aws_sdk_codebuild::types::ExportedEnvironmentVariable::builder()
                                .name(name)
                                .value(value)
                                .build()
                        })
                        .collect(),
                );
            }
        }
        Ok(())
    }
}

/// An SDK interceptor that reports the deployments of chosen CodeDeploy applications in
/// `GetDeployment` answers with a given status (and `errorInformation`), as CodeDeploy does
/// once the instances are done (moto's deployments stay `Created` forever). The rest of the
/// answer is moto's own.
#[derive(Debug, Clone, Default)]
pub struct ReportDeployments {
    outcomes: Arc<Mutex<BTreeMap<String, DeploymentReport>>>,
}

/// The status and error a [`ReportDeployments`] gives one application's deployments.
#[derive(Debug, Clone)]
struct DeploymentReport {
    status: String,
    error: Option<(String, String)>,
}

impl ReportDeployments {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shared(&self) -> SharedInterceptor {
        SharedInterceptor::new(self.clone())
    }

    /// Report every deployment of `application` as `status` (`Succeeded`, `Failed`...) from now
    /// on, with `error` (CodeDeploy's error code and message) as its `errorInformation`.
    pub fn report(&self, application: &str, status: &str, error: Option<(&str, &str)>) {
        if let Ok(mut outcomes) = self.outcomes.lock() {
            outcomes.insert(
                application.to_string(),
                DeploymentReport {
                    status: status.to_string(),
                    error: error.map(|(code, message)| (code.to_string(), message.to_string())),
                },
            );
        }
    }
}

impl Intercept for ReportDeployments {
    fn name(&self) -> &'static str {
        "PenstockReportDeployments"
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(output) = output
            .downcast_mut::<aws_sdk_codedeploy::operation::get_deployment::GetDeploymentOutput>()
        else {
            return Ok(());
        };
        let Some(info) = output.deployment_info.as_mut() else {
            return Ok(());
        };
        let report = info.application_name.as_ref().and_then(|application| {
            self.outcomes
                .lock()
                .ok()
                .and_then(|outcomes| outcomes.get(application).cloned())
        });
        if let Some(report) = report {
            info.status = Some(aws_sdk_codedeploy::types::DeploymentStatus::from(
                report.status.as_str(),
            ));
            info.error_information = report.error.map(|(code, message)| {
                aws_sdk_codedeploy::types::ErrorInformation::builder()
                    .code(aws_sdk_codedeploy::types::ErrorCode::from(code.as_str()))
                    .message(message)
                    .build()
            });
        }
        Ok(())
    }
}
