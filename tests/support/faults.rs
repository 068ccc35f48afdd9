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
