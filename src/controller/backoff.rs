//! Per-object exponential backoff after retryable failures. The controller's own status write
//! after a failure triggers a new reconcile at once; [`Backoffs::waiting`] turns that into a wait
//! for the rest of the backoff unless the object itself changed (spec, annotations, deletion).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Resource;

/// First retry delay; it doubles per consecutive failure up to [`MAX`].
pub const BASE: Duration = Duration::from_secs(5);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Failure {
    count: u32,
    until: Instant,
    /// What the object looked like when it failed: a change means retry now.
    seen: String,
}

/// Object uid → its current failure streak.
#[derive(Debug, Default)]
pub struct Backoffs(Mutex<HashMap<String, Failure>>);

/// Generation, annotations, finalizers and deletion: what a user (or GitOps) changes; status and
/// resourceVersion are left out, since the controller's own status write changes them.
fn fingerprint<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{:?}|{:?}|{:?}|{:?}",
        m.generation, m.annotations, m.finalizers, m.deletion_timestamp
    )
}

impl Backoffs {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Failure>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records a retryable failure at `now`; returns the delay before the next attempt.
    pub fn failed<K: Resource>(&self, obj: &K, now: Instant) -> Duration {
        let key = obj.meta().uid.clone().unwrap_or_default();
        let seen = fingerprint(obj);
        self.with(|m| {
            let count = m.get(&key).map_or(1, |f| f.count.saturating_add(1));
            let delay = BASE.saturating_mul(1 << (count - 1).min(6)).min(MAX);
            m.insert(
                key,
                Failure {
                    count,
                    until: now + delay,
                    seen,
                },
            );
            delay
        })
    }

    /// The rest of the object's backoff, if it is in one and has not changed since it failed.
    pub fn waiting<K: Resource>(&self, obj: &K, now: Instant) -> Option<Duration> {
        let key = obj.meta().uid.clone()?;
        let seen = fingerprint(obj);
        self.with(|m| {
            let f = m.get(&key)?;
            (f.seen == seen && f.until > now).then(|| f.until - now)
        })
    }

    /// Ends the object's failure streak.
    pub fn succeeded<K: Resource>(&self, obj: &K) {
        if let Some(uid) = &obj.meta().uid {
            self.with(|m| m.remove(uid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn obj(generation: i64) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                uid: Some("u".into()),
                generation: Some(generation),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset_on_success() {
        let (b, t) = (Backoffs::default(), Instant::now());
        let delays: Vec<u64> = (0..9).map(|_| b.failed(&obj(1), t).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        b.succeeded(&obj(1));
        assert_eq!(b.failed(&obj(1), t), BASE);
    }

    #[test]
    fn a_retrigger_by_our_own_status_write_waits_but_a_spec_change_does_not() {
        let (b, t) = (Backoffs::default(), Instant::now());
        b.failed(&obj(1), t);
        let mut status_written = obj(1);
        status_written.metadata.resource_version = Some("99".into());
        assert_eq!(
            b.waiting(&status_written, t + Duration::from_secs(1)),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            b.waiting(&obj(2), t + Duration::from_secs(1)),
            None,
            "a new generation retries now"
        );
        assert_eq!(b.waiting(&obj(1), t + BASE), None, "the backoff is over");
    }
}
