//! Resync slots. Time is cut into periods of the resync interval T, starting at whole multiples
//! of T since the Unix epoch (the boundaries). Each pipeline resyncs once per period, at its own
//! offset within the first tenth of it (a hash of its uid), so the N pipelines of one interval
//! resync together, spread over T/10, right after each boundary.
//!
//! What that buys: the shared listings a resync reads (log groups by prefix, KMS aliases, mlobs's
//! IAM roles) are fresh when taken after the current boundary, so each is read once per period for
//! every pipeline of that interval, whatever T is (a fixed time-to-live read them T/TTL times). And
//! a change made outside mlobs is found within T + T/10: by the pipeline's next slot, or, when the
//! change came after that period's listing was taken, by the slot after it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The share of the period over which the slots of one interval are spread.
const SPREAD_DIVISOR: u64 = 10;

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A stable number from `key` (a pipeline's uid): where in a window that pipeline's turn is.
pub fn key_hash(key: &str) -> u64 {
    let h = Sha256::digest(key.as_bytes());
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// The pipeline's offset after each boundary, in ms: in `[0, T/10)`.
fn offset_ms(interval: Duration, key: &str) -> u64 {
    key_hash(key) % (interval_ms(interval) / SPREAD_DIVISOR).max(1)
}

fn interval_ms(interval: Duration) -> u64 {
    u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The start of the period `now` lies in: the latest boundary at or before `now`. A shared
/// listing taken at or after it is fresh for every pipeline of this interval.
pub fn boundary(now: SystemTime, interval: Duration) -> SystemTime {
    let every = interval_ms(interval);
    at_ms(ms_since_epoch(now) / every * every)
}

/// The pipeline's latest slot at or before `now`.
pub fn last_slot(now: SystemTime, interval: Duration, key: &str) -> SystemTime {
    let (every, offset) = (interval_ms(interval), offset_ms(interval, key));
    let shifted = ms_since_epoch(now).saturating_sub(offset);
    at_ms(shifted / every * every + offset)
}

/// How long from `now` until the pipeline's next slot (never zero: a slot at `now` is this one).
pub fn until_next_slot(now: SystemTime, interval: Duration, key: &str) -> Duration {
    let next = last_slot(now, interval, key) + Duration::from_millis(interval_ms(interval));
    next.duration_since(now)
        .unwrap_or(Duration::from_millis(1))
        .max(Duration::from_millis(1))
}

/// Whether a resync is due: the AWS side was last ensured (`synced_at`) before the pipeline's
/// latest slot. So a resync late for its slot (its reconcile waited in the queue) does not push
/// the next one a period further.
pub fn due(synced_at: SystemTime, now: SystemTime, interval: Duration, key: &str) -> bool {
    synced_at < last_slot(now, interval, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(600);

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn each_pipeline_has_one_slot_per_period_within_its_first_tenth() {
        let start = 1_800_000_000 / 600 * 600;
        for i in 0..200 {
            let key = format!("uid-{i}");
            let slot = last_slot(at(start + 600 + 599), T, &key);
            let after = slot.duration_since(at(start + 600)).expect("after the boundary");
            assert!(after < Duration::from_secs(60), "{key}: {after:?} after the boundary");
            assert_eq!(
                until_next_slot(slot, T, &key),
                T,
                "{key}: the next slot is one period on"
            );
            assert_eq!(last_slot(slot, T, &key), slot, "a slot at now is the latest one");
        }
    }

    #[test]
    fn slots_of_many_pipelines_are_spread_over_the_first_tenth() {
        let start = 1_800_000_000 / 600 * 600;
        let mut per_10s = [0usize; 6];
        for i in 0..600 {
            let slot = last_slot(at(start + 599), T, &format!("uid-{i}"));
            let s = slot.duration_since(at(start)).expect("after the boundary").as_secs();
            per_10s[usize::try_from(s / 10).expect("small")] += 1;
        }
        assert!(per_10s.iter().all(|n| (60..=140).contains(n)), "{per_10s:?}");
    }

    #[test]
    fn a_resync_is_due_once_the_latest_slot_is_after_the_last_ensure() {
        let key = "uid-a";
        let slot = last_slot(at(1_800_000_000), T, key);
        let next = slot + T;
        assert!(!due(slot, slot + Duration::from_secs(1), T, key), "ensured at its slot");
        assert!(
            !due(slot, next - Duration::from_millis(1), T, key),
            "until the next slot"
        );
        assert!(due(slot, next, T, key), "at the next slot");
        // Ensured 50 s late for its slot (a queue): the next resync still comes at its slot,
        // 550 s later, not 600 s after the late one.
        let late = slot + Duration::from_secs(50);
        assert!(due(late, next, T, key));
        // Ensured first between two slots (a new pipeline): due at the next slot.
        assert!(due(slot + Duration::from_secs(300), next, T, key));
    }

    #[test]
    fn a_listing_taken_after_the_boundary_serves_the_whole_period() {
        let start = at(1_800_000_000 / 600 * 600);
        assert_eq!(boundary(start + Duration::from_secs(599), T), start);
        assert_eq!(boundary(start + T, T), start + T);
        // Every slot of the period lies at or after its boundary.
        for i in 0..100 {
            let slot = last_slot(start + Duration::from_secs(599), T, &format!("uid-{i}"));
            assert_eq!(boundary(slot, T), start);
        }
    }
}
