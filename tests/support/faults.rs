//! Fault injection for AWS calls: "crash" after N mutating calls, by failing every later mutating
//! call before it is sent. The test then drops the clients (all in-memory state) and runs ensure
//! again with fresh ones, exactly as a restarted operator would.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use aws_config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use mlobs::aws::AwsClients;
use mlobs::aws::calls::is_mutating;

/// Lets `n` mutating calls through, then fails every mutating call.
#[derive(Debug, Clone)]
pub struct CrashAfter(Arc<AtomicI64>);

impl CrashAfter {
    pub fn new(n: i64) -> CrashAfter {
        CrashAfter(Arc::new(AtomicI64::new(n)))
    }

    /// Whether the crash point was reached (some mutating call was refused).
    pub fn crashed(&self) -> bool {
        self.0.load(Ordering::SeqCst) < 0
    }
}

impl Intercept for CrashAfter {
    fn name(&self) -> &'static str {
        "crash-after"
    }

    // Metadata (the operation name) is only in the config bag once the request is built.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_default();
        if is_mutating(&op) && self.0.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(format!("injected crash before {op}").into());
        }
        Ok(())
    }
}

/// Clients against moto whose mutating calls stop after `n`.
pub async fn crashing_clients(n: i64) -> (AwsClients, CrashAfter) {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(super::moto::endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await;
    let crash = CrashAfter::new(n);
    (AwsClients::with_interceptor(&conf, Some(crash.clone())), crash)
}

// ---------------------------------------------------------------------------------------------
// Service faults: throttling, HTTP 500, timeouts and AccessDenied on chosen calls, as the SDK
// would see them from AWS. The decision is made per HTTP attempt, so the SDK's own retries (and
// their backoff) are exercised and counted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use mlobs::aws::CallCounter;

/// What a failed attempt looks like to the SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// HTTP 400 `ThrottlingException` (`Throttling` on IAM): the SDK retries it with backoff.
    Throttle,
    /// HTTP 500 `InternalFailure` (`ServiceFailure` on IAM): the SDK retries it.
    ServerError,
    /// The SDK's own timeout error (`ConnectorError::timeout`, what a read timeout gives): retried.
    Timeout,
    /// `AccessDeniedException` (HTTP 400; `AccessDenied`, HTTP 403, on IAM): never retried.
    AccessDenied,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::Throttle, Fault::ServerError, Fault::Timeout, Fault::AccessDenied];
}

/// Which attempts a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every attempt of one operation, e.g. `CreateKey`.
    Op(String),
    /// Every attempt of any mutating operation.
    Mutating,
    /// Every attempt of any operation.
    Any,
}

/// Fail `times` attempts of `target`, after letting the first `skip` of them through.
#[derive(Debug, Clone)]
pub struct Rule {
    pub target: Target,
    pub fault: Fault,
    pub skip: u32,
    pub times: u32,
    /// The service acted on the request and only its answer was lost (a timeout or 500 after
    /// the write happened). Otherwise the request never reaches the service.
    pub lost_response: bool,
}

impl Rule {
    pub fn on(op: &str, fault: Fault) -> Rule {
        Rule {
            target: Target::Op(op.to_string()),
            fault,
            skip: 0,
            times: 1,
            lost_response: false,
        }
    }

    /// The `n`-th attempt (0-based) of any operation.
    pub fn nth_call(n: u32, fault: Fault) -> Rule {
        Rule {
            target: Target::Any,
            fault,
            skip: n,
            times: 1,
            lost_response: false,
        }
    }

    pub fn times(mut self, k: u32) -> Rule {
        self.times = k;
        self
    }

    pub fn skip(mut self, n: u32) -> Rule {
        self.skip = n;
        self
    }

    pub fn lost_response(mut self) -> Rule {
        self.lost_response = true;
        self
    }

    fn matches(&self, op: &str) -> bool {
        match &self.target {
            Target::Op(o) => o == op,
            Target::Mutating => is_mutating(op),
            Target::Any => true,
        }
    }
}

/// One injected failure.
#[derive(Debug, Clone)]
pub struct Injection {
    pub service: String,
    pub operation: String,
    pub fault: Fault,
    pub lost_response: bool,
    /// 1 for the first attempt of the operation call, 2 for the SDK's first retry, ...
    pub attempt: u32,
    pub at: Instant,
}

#[derive(Debug, Default)]
struct FaultState {
    rules: Vec<(Rule, u32, u32)>,
    injected: Vec<Injection>,
    /// Every attempt seen: (operation, attempt number, time).
    attempts: Vec<(String, u32, Instant)>,
}

/// The fault decided for the current attempt, kept in the attempt's config bag between hooks.
#[derive(Debug, Clone)]
struct Pending(Option<(Fault, bool, String)>);

impl Storable for Pending {
    type Storer = StoreReplace<Pending>;
}

/// Registered on every client; cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

impl Faults {
    pub fn new(rules: Vec<Rule>) -> Faults {
        let f = Faults::default();
        for r in rules {
            f.add(r);
        }
        f
    }

    fn with<R>(&self, f: impl FnOnce(&mut FaultState) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn add(&self, rule: Rule) {
        self.with(|s| s.rules.push((rule, 0, 0)));
    }

    /// The fault clears: no more injections.
    pub fn clear(&self) {
        self.with(|s| s.rules.clear());
    }

    pub fn injected(&self) -> Vec<Injection> {
        self.with(|s| s.injected.clone())
    }

    /// Injections per (operation, fault).
    pub fn injected_by_op(&self) -> BTreeMap<(String, Fault), u32> {
        let mut m = BTreeMap::new();
        for i in self.injected() {
            *m.entry((i.operation, i.fault)).or_default() += 1;
        }
        m
    }

    /// Every HTTP attempt seen, retries included.
    pub fn attempts(&self) -> usize {
        self.with(|s| s.attempts.len())
    }

    /// Attempts that were SDK retries (attempt number > 1).
    pub fn sdk_retries(&self) -> usize {
        self.with(|s| s.attempts.iter().filter(|(_, n, _)| *n > 1).count())
    }

    /// When each call of `op` started (its first attempt; SDK retries not included).
    pub fn calls_of(&self, op: &str) -> Vec<Instant> {
        self.with(|s| {
            s.attempts
                .iter()
                .filter(|(o, n, _)| o == op && *n == 1)
                .map(|(_, _, at)| *at)
                .collect()
        })
    }

    /// The time between each SDK retry and the attempt before it: the SDK's backoff.
    pub fn retry_gaps(&self) -> Vec<Duration> {
        self.with(|s| {
            let mut gaps = Vec::new();
            for (i, (op, n, at)) in s.attempts.iter().enumerate() {
                if *n > 1
                    && let Some((_, _, prev)) = s.attempts[..i].iter().rev().find(|(o, m, _)| o == op && *m == n - 1)
                {
                    gaps.push(at.duration_since(*prev));
                }
            }
            gaps
        })
    }

    fn decide(&self, op: &str, attempt: u32) -> Option<(Fault, bool)> {
        self.with(|s| {
            s.attempts.push((op.to_string(), attempt, Instant::now()));
            let mut chosen = None;
            for (rule, seen, done) in s.rules.iter_mut() {
                if !rule.matches(op) {
                    continue;
                }
                *seen += 1;
                if chosen.is_none() && *seen > rule.skip && *done < rule.times {
                    *done += 1;
                    chosen = Some((rule.fault, rule.lost_response));
                }
            }
            chosen
        })
    }

    fn record(&self, i: Injection) {
        self.with(|s| s.injected.push(i));
    }
}

fn query_protocol(service: &str) -> bool {
    matches!(service, "IAM" | "STS")
}

/// The error response AWS sends for `fault`, in the service's protocol.
fn fault_response(service: &str, fault: Fault, op: &str) -> HttpResponse {
    let (status, code, message) = match (fault, query_protocol(service)) {
        (Fault::Throttle, false) => (400, "ThrottlingException", "Rate exceeded".to_string()),
        (Fault::Throttle, true) => (400, "Throttling", "Rate exceeded".to_string()),
        (Fault::ServerError, false) => (500, "InternalFailure", "injected internal failure".to_string()),
        (Fault::ServerError, true) => (500, "ServiceFailure", "injected service failure".to_string()),
        (Fault::AccessDenied, false) => (
            400,
            "AccessDeniedException",
            format!(
                "User: arn:aws:sts::123456789012:assumed-role/mlobs-operator/pod is not authorized to perform: {op}"
            ),
        ),
        (Fault::AccessDenied, true) => (
            403,
            "AccessDenied",
            format!(
                "User: arn:aws:sts::123456789012:assumed-role/mlobs-operator/pod is not authorized to perform: {op}"
            ),
        ),
        (Fault::Timeout, _) => unreachable!("a timeout has no response"),
    };
    let (content_type, body) = if query_protocol(service) {
        (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>injected</RequestId></ErrorResponse>"
            ),
        )
    } else {
        (
            "application/x-amz-json-1.1",
            serde_json::json!({"__type": code, "message": message}).to_string(),
        )
    };
    let mut r = HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body));
    r.headers_mut().insert("content-type", content_type);
    r.headers_mut().insert("x-amzn-errortype", code);
    r.headers_mut().insert("x-amzn-requestid", "injected");
    r
}

fn attempt_number(cfg: &ConfigBag) -> u32 {
    cfg.load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
        .map_or(1, |a| a.attempts())
}

impl Intercept for Faults {
    fn name(&self) -> &'static str {
        "mlobs-test-faults"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, op) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_default();
        let decided = self.decide(&op, attempt_number(cfg));
        if let Some((_, false)) = decided {
            // The request must not reach the service: send it to a path no moto service routes
            // (moto answers 404 without acting), and replace that answer below.
            let req = context.request_mut();
            let uri: http::Uri = req.uri().parse()?;
            let target = format!(
                "{}://{}/mlobs-injected-fault",
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map(|a| a.as_str()).unwrap_or("localhost")
            );
            req.set_uri(target)?;
            req.headers_mut().remove("x-amz-target");
        }
        cfg.interceptor_state()
            .store_put(Pending(decided.map(|(f, lost)| (f, lost, service))));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Pending(Some((fault, _, service)))) = cfg.load::<Pending>()
            && *fault != Fault::Timeout
        {
            let op = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_default();
            *context.response_mut() = fault_response(service, *fault, &op);
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Pending(Some((fault, lost, service)))) = cfg.load::<Pending>().cloned() else {
            return Ok(());
        };
        let op = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_default();
        if fault == Fault::Timeout {
            context
                .inner_mut()
                .set_output_or_error(Err(OrchestratorError::connector(ConnectorError::timeout(
                    format!("injected timeout on {op}").into(),
                ))));
        }
        self.record(Injection {
            service,
            operation: op,
            fault,
            lost_response: lost,
            attempt: attempt_number(cfg),
            at: Instant::now(),
        });
        cfg.interceptor_state().store_put(Pending(None));
        Ok(())
    }
}

/// SDK retry settings for fault tests: the SDK's standard mode (3 attempts), with the initial
/// backoff shortened from 1 s so a matrix of scenarios runs in seconds.
pub fn fast_retries() -> RetryConfig {
    RetryConfig::standard().with_initial_backoff(Duration::from_millis(20))
}

/// Clients against moto with `faults` on every client, the call counter first (so it counts
/// injected failures too), and a private SDK retry token bucket: the SDK's default bucket is
/// shared by every client of a service in the process, and these tests empty it on purpose.
pub async fn faulty_clients(faults: &Faults, retry: RetryConfig) -> AwsClients {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(super::moto::endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .retry_config(retry)
        .load()
        .await;
    let calls = CallCounter::default();
    let partition = RetryPartition::custom(format!("faults-{}", super::moto::unique("p")))
        .token_bucket(TokenBucket::default())
        .build();
    macro_rules! client {
        ($krate:ident) => {
            $krate::Client::from_conf(
                $krate::config::Builder::from(&conf)
                    .interceptor(calls.clone())
                    .interceptor(faults.clone())
                    .retry_partition(partition.clone())
                    .build(),
            )
        };
    }
    AwsClients {
        kms: client!(aws_sdk_kms),
        logs: client!(aws_sdk_cloudwatchlogs),
        iam: client!(aws_sdk_iam),
        eks: client!(aws_sdk_eks),
        sts: client!(aws_sdk_sts),
        amp: client!(aws_sdk_amp),
        xray: client!(aws_sdk_xray),
        sqs: client!(aws_sdk_sqs),
        kinesis: client!(aws_sdk_kinesis),
        cloudwatch: client!(aws_sdk_cloudwatch),
        sns: client!(aws_sdk_sns),
        // Path-style against moto, as `AwsClients::new` sets with an endpoint override.
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&conf)
                .interceptor(calls.clone())
                .interceptor(faults.clone())
                .retry_partition(partition.clone())
                .force_path_style(true)
                .build(),
        ),
        calls,
        kms_key_tags: Default::default(),
        log_group_tags: Default::default(),
    }
}
