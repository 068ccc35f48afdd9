//! Batched AWS reads for resyncs: the account's KMS aliases and mlobs's IAM roles, each read once
//! for every pipeline that resyncs within [`SNAPSHOT_TTL`] (as the log group snapshot is), and the
//! schedule of the slower per-key KMS check.
//!
//! A key's own state, tags, rotation and policy (four reads) are read when the key is new to this
//! process, when a drift event or a change by mlobs names it, when the pipeline's data stopped
//! flowing, and otherwise once per `--kms-check-interval`. Each key has its own phase in that
//! interval (a hash of the pipeline's uid), so N keys come due spread evenly over it, not all in
//! one resync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::aws::{AwsClients, AwsError, iam, kms};

/// How long a snapshot serves resyncs before it is read again (also after a failed read, so that
/// an account without the permission is not asked once per pipeline).
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(30);

/// Default of `mlobs run --kms-check-interval`.
pub const DEFAULT_KMS_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A snapshot as last read: when, and what (`None`: the read failed).
type Cached<T> = tokio::sync::Mutex<Option<(Instant, Option<Arc<T>>)>>;

/// Shared by all pipeline reconciles (one `Ctx` field).
pub struct BatchedReads {
    aliases: Cached<kms::AliasSnapshot>,
    roles: Cached<iam::RoleSnapshot>,
    /// Key id → when this process last read the key's state, tags, rotation and policy.
    key_checks: Mutex<HashMap<String, SystemTime>>,
    /// `--kms-check-interval`.
    pub kms_check_interval: Duration,
}

impl BatchedReads {
    pub fn new(kms_check_interval: Duration) -> BatchedReads {
        BatchedReads {
            aliases: tokio::sync::Mutex::new(None),
            roles: tokio::sync::Mutex::new(None),
            key_checks: Mutex::new(HashMap::new()),
            kms_check_interval,
        }
    }

    /// The account's KMS aliases, at most [`SNAPSHOT_TTL`] old; `None` when ListAliases fails
    /// (each pipeline then describes its own alias).
    pub async fn aliases(&self, aws: &AwsClients) -> Option<Arc<kms::AliasSnapshot>> {
        cached(&self.aliases, "ListAliases", kms::observe_aliases(aws)).await
    }

    /// mlobs's IAM roles, at most [`SNAPSHOT_TTL`] old; `None` when GetAccountAuthorizationDetails
    /// fails (each pipeline then reads its own role).
    pub async fn roles(&self, aws: &AwsClients) -> Option<Arc<iam::RoleSnapshot>> {
        cached(&self.roles, "GetAccountAuthorizationDetails", iam::observe_roles(aws)).await
    }

    /// Drops both snapshots: mlobs changed a role or an alias, or a drift event says someone did.
    pub async fn invalidate(&self) {
        *self.aliases.lock().await = None;
        *self.roles.lock().await = None;
    }

    /// Whether the key's full check is due at `now` (`phase_key`: the pipeline's uid).
    pub fn key_check_due(&self, key_id: &str, phase_key: &str, now: SystemTime) -> bool {
        let m = self.key_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key_id)
            .is_none_or(|last| due(*last, now, self.kms_check_interval, phase_key))
    }

    /// Records a full check of the key at `at`.
    pub fn key_checked(&self, key_id: &str, at: SystemTime) {
        let mut m = self.key_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(key_id.to_string(), at);
    }

    /// Makes the key's next ensure a full check (a drift event named it).
    pub fn forget_key(&self, key_id: &str) {
        let mut m = self.key_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(key_id);
    }
}

async fn cached<T>(
    slot: &Cached<T>,
    operation: &str,
    read: impl std::future::Future<Output = Result<T, AwsError>>,
) -> Option<Arc<T>> {
    let mut held = slot.lock().await;
    if let Some((taken, value)) = held.as_ref()
        && taken.elapsed() < SNAPSHOT_TTL
    {
        return value.clone();
    }
    let value = match read.await {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            tracing::warn!(operation, error = %e, "batched read failed; pipelines read their own resources until it succeeds");
            None
        }
    };
    *held = Some((Instant::now(), value.clone()));
    value
}

/// This key's offset within the interval, from a hash of `phase_key`.
fn phase(interval: Duration, phase_key: &str) -> u64 {
    let h = Sha256::digest(phase_key.as_bytes());
    let n = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    n % interval.as_secs().max(1)
}

/// Whether a check at `last` is stale at `now`: the key's own boundary (its phase plus a whole
/// number of intervals since the epoch) lies in `(last, now]`. So each key is checked once per
/// interval, at a time of its own; a key checked just before its boundary is checked again at it.
pub fn due(last: SystemTime, now: SystemTime, interval: Duration, phase_key: &str) -> bool {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (every, offset) = (interval.as_secs().max(1), phase(interval, phase_key));
    let period = |t: SystemTime| secs(t).saturating_sub(offset) / every;
    period(now) > period(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_key_is_due_once_per_interval_at_its_own_phase() {
        let start = 1_800_000_000;
        // Checked at `start`: due exactly once within any later interval-long window.
        let boundaries = (1..=2 * 3600)
            .filter(|s| due(at(start + s - 1), at(start + s), HOUR, "uid-a"))
            .count();
        assert_eq!(boundaries, 2, "two boundaries in two hours");
        assert!(!due(at(start), at(start + 1), HOUR, "uid-a"));
        assert!(due(at(start), at(start + 3600), HOUR, "uid-a"), "at most one interval late");
    }

    #[test]
    fn keys_checked_together_come_due_spread_over_the_interval() {
        let start = 1_800_000_000;
        let resync = 600;
        // 600 keys all checked at start: how many fall due in each 10-minute resync after it.
        let mut per_resync = [0usize; 6];
        for i in 0..600 {
            let key = format!("uid-{i}");
            let first = (1..=6).find(|r| due(at(start), at(start + r * resync), HOUR, &key));
            let r = first.expect("due within one interval");
            per_resync[(r - 1) as usize] += 1;
        }
        assert!(per_resync.iter().all(|n| (60..=140).contains(n)), "{per_resync:?}");
    }

    #[test]
    fn a_key_new_to_the_process_or_forgotten_is_due_at_once() {
        let b = BatchedReads::new(HOUR);
        let now = at(1_800_000_000);
        assert!(b.key_check_due("k", "uid", now), "new to this process");
        b.key_checked("k", now);
        assert!(!b.key_check_due("k", "uid", now + Duration::from_secs(1)));
        b.forget_key("k");
        assert!(b.key_check_due("k", "uid", now + Duration::from_secs(1)), "a drift event named it");
    }
}
