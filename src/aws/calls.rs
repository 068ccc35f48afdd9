//! Counts every AWS operation by service, operation and outcome: the `/metrics` source and how
//! tests assert "0 mutating calls on a no-op ensure" and "≤ N/50 + 3 reads per resync".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// One counted operation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey {
    pub service: String,
    pub operation: String,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Debug, Default)]
struct Counts {
    operations: BTreeMap<CallKey, u64>,
    attempts: u64,
}

/// Shared, cloneable counter registered as an interceptor on every client.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Mutex<Counts>>);

/// Operations that change AWS state (everything not named Describe/Get/List/Head).
pub fn is_mutating(operation: &str) -> bool {
    !["Describe", "Get", "List", "Head"]
        .iter()
        .any(|p| operation.starts_with(p))
}

impl CallCounter {
    fn with<R>(&self, f: impl FnOnce(&mut Counts) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-count; the counts stay usable.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Every operation with its count.
    pub fn snapshot(&self) -> BTreeMap<CallKey, u64> {
        self.with(|c| c.operations.clone())
    }

    /// HTTP attempts, retries included.
    pub fn attempts(&self) -> u64 {
        self.with(|c| c.attempts)
    }

    /// Total operations matching a filter.
    pub fn count(&self, f: impl Fn(&CallKey) -> bool) -> u64 {
        self.with(|c| c.operations.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum())
    }

    /// Mutating operations (successful or not).
    pub fn mutating(&self) -> u64 {
        self.count(|k| is_mutating(&k.operation))
    }

    /// Operations named exactly `operation`.
    pub fn of(&self, operation: &str) -> u64 {
        self.count(|k| k.operation == operation)
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        self.with(|c| *c = Counts::default());
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "mlobs-call-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.with(|c| c.attempts += 1);
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let outcome = match context.output_or_error() {
            Some(Ok(_)) => "ok",
            _ => "error",
        };
        self.with(|c| {
            *c.operations
                .entry(CallKey {
                    service,
                    operation,
                    outcome,
                })
                .or_default() += 1
        });
        Ok(())
    }
}
