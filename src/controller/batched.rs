//! Batched AWS reads for resyncs: the account's KMS aliases and mlobs's IAM roles, each read once
//! per resync period for every pipeline resyncing in it (as the log group snapshot is, see
//! [`super::resync`]), and the schedule of each pipeline's slower checks.
//!
//! The slower checks are what no listing shows: the KMS key's own state, tags, rotation and policy
//! (four reads) and the log groups' tags (one read each). They run when the pipeline is new to
//! this process, when a drift event names one of its resources, once after its data stopped
//! flowing, and otherwise once per `--kms-check-interval`. Each pipeline has its own phase in that interval
//! (a hash of its uid), so N pipelines come due spread evenly over it, not all in one resync.
//! A change mlobs makes is made by a full check, which records itself.
//!
//! While the drift events queue is being read (`--drift-events-queue`, a ReceiveMessage that
//! succeeded within [`EVENTS_LIVE`]), its events name every change these reads would find within
//! seconds, so the reads whose count grows with N become the backstop for a lost event: the
//! slower checks run once per `--event-backstop-interval` instead, and so does the log group
//! listing (2N/50 DescribeLogGroups pages) instead of once per resync period. The constant-cost
//! listings (aliases, roles) stay per resync.
//!
//! The `DataFlowing` read at a resync takes, for the log groups of every pipeline this process
//! reconciled, when each last received events from one metric listing per period (`log_metrics`:
//! 500 groups per GetMetricData) instead of one DescribeLogStreams per group. A quiet group's
//! streams are read once; while the listings show nothing new for it, that reading stands (once
//! any listing has shown the metric published in the account).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dataflow::Signal;
use super::shard::Shard;
use crate::aws::{AwsClients, AwsError, iam, kms, log_metrics};

/// Default of `mlobs run --kms-check-interval`.
pub const DEFAULT_KMS_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Default of `mlobs run --event-backstop-interval`.
pub const DEFAULT_EVENT_BACKSTOP_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long after a successful ReceiveMessage the drift events queue counts as being read. A long
/// poll returns within 20 s, so a queue not read for two minutes is not (the SQS call fails, or
/// this replica does not lead): the per-resync reads are back at once.
pub const EVENTS_LIVE: Duration = Duration::from_secs(120);

/// A snapshot as last read: when, and what (`None`: the read failed). It serves every caller
/// whose period started at or before it was taken, also after a failed read, so that an account
/// without the permission is asked once per period, not once per pipeline.
type Cached<T> = tokio::sync::Mutex<Option<(SystemTime, Option<Arc<T>>)>>;

/// What a group's streams last said (`newest_ms`: its newest event, `None`: none) and up to when
/// that is known to hold (`through_ms`: when they were read, moved on by each metric listing that
/// shows nothing arrived since).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Known {
    through_ms: i64,
    newest_ms: Option<i64>,
}

/// The start of the minute `ms` lies in.
fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

/// Whether `shard`'s role snapshot keeps a role whose `mlobs.io/pipeline` tag is `pipeline`
/// (`<namespace>/<name>`): the shard's pipelines' roles. A tag of another form is kept, not
/// judged: a role missing from the snapshot costs its pipeline two reads, one kept costs memory.
pub fn keeps_role_of(shard: Shard, pipeline: &str) -> bool {
    pipeline.split_once('/').is_none_or(|(ns, name)| shard.owns(ns, name))
}

/// Shared by all pipeline reconciles (one `Ctx` field).
pub struct BatchedReads {
    aliases: Cached<kms::AliasSnapshot>,
    roles: Cached<iam::RoleSnapshot>,
    /// Resync interval (ms) → log group → the start of its newest minute with events, for the
    /// groups of the pipelines with that interval: each group is asked for once per its own
    /// pipeline's resync (GetMetricData is billed per metric asked for), not at the shortest
    /// interval of any pipeline.
    incoming: Mutex<HashMap<u64, Arc<Cached<log_metrics::Listing>>>>,
    /// Log group → what its streams last said, for the quiet groups (see
    /// [`Self::unchanged_since_read`]).
    known: Mutex<HashMap<String, Known>>,
    /// A metric listing has shown some group (see [`Self::unchanged_since_read`]).
    metric_published: AtomicBool,
    /// Pipeline uid → its resync interval (ms) and log groups, as its last reconcile named them.
    flow_groups: Mutex<HashMap<String, (u64, Vec<String>)>>,
    /// Pipeline uid → when this process last ran its slower checks.
    slow_checks: Mutex<HashMap<String, SystemTime>>,
    /// Pipelines a drift event named, until their next AWS step: it reads their own log groups
    /// (one DescribeLogGroups) instead of the listing of all, which the event dropped (2N/50 pages
    /// between the event and its correction).
    event_named: Mutex<BTreeSet<String>>,
    /// `--kms-check-interval`.
    pub kms_check_interval: Duration,
    /// `--event-backstop-interval`.
    pub event_backstop_interval: Duration,
    /// When the drift events queue was last read without error (ms since the epoch; 0: never).
    events_read_ms: AtomicU64,
}

impl BatchedReads {
    pub fn new(kms_check_interval: Duration, event_backstop_interval: Duration) -> BatchedReads {
        BatchedReads {
            aliases: tokio::sync::Mutex::new(None),
            roles: tokio::sync::Mutex::new(None),
            incoming: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            metric_published: AtomicBool::new(false),
            flow_groups: Mutex::new(HashMap::new()),
            slow_checks: Mutex::new(HashMap::new()),
            event_named: Mutex::new(BTreeSet::new()),
            kms_check_interval,
            event_backstop_interval,
            events_read_ms: AtomicU64::new(0),
        }
    }

    /// The drift events queue was read without error at `at` (the events loop calls it).
    pub fn events_read(&self, at: SystemTime) {
        let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.events_read_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Whether drift events reach this process at `now`: the queue was read within [`EVENTS_LIVE`].
    pub fn events_live(&self, now: SystemTime) -> bool {
        match self.events_read_ms.load(Ordering::Relaxed) {
            0 => false,
            ms => (now.duration_since(UNIX_EPOCH + Duration::from_millis(ms))).is_ok_and(|d| d <= EVENTS_LIVE),
        }
    }

    /// The interval of the slower checks at `now`: `--event-backstop-interval` while drift events
    /// are read, `--kms-check-interval` otherwise.
    pub fn slow_check_interval(&self, now: SystemTime) -> Duration {
        if self.events_live(now) {
            self.event_backstop_interval.max(self.kms_check_interval)
        } else {
            self.kms_check_interval
        }
    }

    /// The time at or after which a log group listing must have been taken to serve the resync at
    /// `now` of a pipeline whose resync interval is `resync`: the start of its resync period, or,
    /// while drift events are read, of the current `--event-backstop-interval` period (mlobs's
    /// own changes and a drift event naming a group drop the listing, see
    /// `Ctx::invalidate_log_groups`).
    pub fn log_groups_fresh_since(&self, now: SystemTime, resync: Duration) -> SystemTime {
        let every = if self.events_live(now) {
            self.event_backstop_interval.max(resync)
        } else {
            resync
        };
        super::resync::boundary(now, every)
    }

    /// The account's KMS aliases, read at or after `fresh_since` (the current resync period's
    /// start); `None` when ListAliases fails (each pipeline then describes its own alias).
    pub async fn aliases(&self, aws: &AwsClients, fresh_since: SystemTime) -> Option<Arc<kms::AliasSnapshot>> {
        cached(&self.aliases, fresh_since, "ListAliases", kms::observe_aliases(aws)).await
    }

    /// mlobs's IAM roles of the pipelines of `shard`, read at or after `fresh_since`; `None` when
    /// GetAccountAuthorizationDetails fails (each pipeline then reads its own role).
    pub async fn roles(
        &self,
        aws: &AwsClients,
        fresh_since: SystemTime,
        shard: Shard,
    ) -> Option<Arc<iam::RoleSnapshot>> {
        let keep = move |pipeline: &str| keeps_role_of(shard, pipeline);
        cached(
            &self.roles,
            fresh_since,
            "GetAccountAuthorizationDetails",
            iam::observe_roles(aws, &keep),
        )
        .await
    }

    /// Names the log groups of the pipeline `uid`, whose resync interval is `interval_ms`, for the
    /// metric listings to come (every reconcile that looks at data flow calls it, so a pipeline
    /// whose collector is not serving yet is in the listing by the time it is).
    pub fn flow_groups(&self, uid: &str, interval_ms: u64, groups: &[(Signal, String)]) {
        let mut m = self.flow_groups.lock().unwrap_or_else(|e| e.into_inner());
        let known = m
            .get(uid)
            .is_some_and(|(i, g)| *i == interval_ms && g.iter().eq(groups.iter().map(|(_, n)| n)));
        if !known {
            let names = groups.iter().map(|(_, n)| n.clone()).collect();
            m.insert(uid.to_string(), (interval_ms, names));
        }
    }

    /// When the log groups of the pipelines with resync interval `interval_ms` (as named by
    /// [`Self::flow_groups`]) last received events (log group → start of the newest minute with
    /// events, within `log_metrics::window_for` the interval), read at or after `fresh_since`; with `read: false`,
    /// only a listing already taken then. `None` when there is none or GetMetricData fails (the
    /// groups are then read from their streams).
    pub async fn newest_minutes(
        &self,
        aws: &AwsClients,
        interval_ms: u64,
        fresh_since: SystemTime,
        read: bool,
    ) -> Option<Arc<log_metrics::Listing>> {
        let slot = {
            let mut m = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(interval_ms).or_default().clone()
        };
        if !read {
            let held = slot.lock().await;
            return (held.as_ref())
                .filter(|(taken, _)| *taken >= fresh_since)
                .and_then(|(_, v)| v.clone());
        }
        let read = async {
            let groups = self.flow_groups_of(interval_ms);
            let window = log_metrics::window_for(Duration::from_millis(interval_ms));
            log_metrics::newest_minutes(aws, &groups, SystemTime::now(), window).await
        };
        cached(&slot, fresh_since, "GetMetricData", read).await
    }

    /// The log groups of the pipelines with resync interval `interval_ms`, each once.
    fn flow_groups_of(&self, interval_ms: u64) -> Vec<String> {
        let m = self.flow_groups.lock().unwrap_or_else(|e| e.into_inner());
        let all: BTreeSet<&String> = (m.values())
            .filter(|(i, _)| *i == interval_ms)
            .flat_map(|(_, g)| g)
            .collect();
        all.into_iter().cloned().collect()
    }

    /// The pipeline is gone: its groups leave the metric listing.
    pub fn pipeline_gone(&self, uid: &str) {
        let gone = (self.flow_groups.lock().unwrap_or_else(|e| e.into_inner())).remove(uid);
        if let Some((_, groups)) = gone {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for g in groups {
                known.remove(&g);
            }
        }
        self.forget(uid);
        self.take_event_named(uid);
    }

    /// `group`'s streams were read at `at_ms`: its newest event was `newest_ms`.
    pub fn streams_read(&self, group: &str, at_ms: i64, newest_ms: Option<i64>) {
        let mut m = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let k = m.entry(group.to_string()).or_default();
        (k.through_ms, k.newest_ms) = (at_ms, newest_ms);
    }

    /// `group`'s newest event without reading its streams, when the metric is published and
    /// `listing` (this period's metric listing) reaches back to when its streams were last read
    /// and shows no event from that minute on. Published: a listing, this or an earlier one,
    /// showed some group. CloudWatch publishes `IncomingLogEvents` for every group that receives
    /// events, so a listing without a group says that it received nothing; until a listing shows
    /// any, quiet groups' streams are read at every resync, as in a setup that never publishes the
    /// metric, such as an emulator (reads, never a wrong `DataFlowing`). What the streams said then
    /// still holds (or a minute the listing shows, if later: the streams' `lastEventTimestamp`
    /// can lag). The reading is then vouched for until the listing's
    /// [`log_metrics::Listing::vouches_until_ms`], which the next listing reaches back to. `None`:
    /// read the streams (not read by this process, no listing has shown the metric published, the
    /// listing does not reach back that far, or events came since).
    pub fn unchanged_since_read(&self, group: &str, listing: &log_metrics::Listing) -> Option<Option<i64>> {
        if !listing.newest.is_empty() {
            self.metric_published.store(true, Ordering::Relaxed);
        }
        let mut m = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let k = m.get_mut(group)?;
        if !self.metric_published.load(Ordering::Relaxed) || k.through_ms < listing.from_ms {
            return None;
        }
        let shown = listing.newest.get(group).copied();
        if shown.is_some_and(|t| t >= minute_of(k.through_ms)) {
            return None;
        }
        k.newest_ms = k.newest_ms.max(shown);
        k.through_ms = k.through_ms.max(listing.vouches_until_ms());
        Some(k.newest_ms)
    }

    /// Drops both snapshots: mlobs changed a role or an alias, or a drift event says someone did.
    pub async fn invalidate(&self) {
        *self.aliases.lock().await = None;
        *self.roles.lock().await = None;
    }

    /// Whether the pipeline's slower checks are due at `now`. `data_stopped_at`: since when its
    /// `DataFlowing` is `False`, if it is: one check after data stopped, not one per resync while
    /// it stays stopped (each would also rewrite `status.aws.kmsKeyCheckedAt`).
    pub fn slow_checks_due(&self, uid: &str, now: SystemTime, data_stopped_at: Option<SystemTime>) -> bool {
        let m = self.slow_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.get(uid).is_none_or(|last| {
            due(*last, now, self.slow_check_interval(now), uid) || data_stopped_at.is_some_and(|t| *last < t)
        })
    }

    /// Whether the check once after data stopped is still to run: this process ran the
    /// pipeline's slower checks, but before its data stopped at `data_stopped_at`. (A pipeline
    /// this process never checked is due anyway: its AWS side was never ensured here.)
    pub fn stop_check_due(&self, uid: &str, data_stopped_at: SystemTime) -> bool {
        let m = self.slow_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.get(uid).is_some_and(|last| *last < data_stopped_at)
    }

    /// Records that the pipeline's slower checks ran at `at`.
    pub fn slow_checks_ran(&self, uid: &str, at: SystemTime) {
        let mut m = self.slow_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(uid.to_string(), at);
    }

    /// Makes the pipeline's next ensure run its slower checks.
    pub fn forget(&self, uid: &str) {
        let mut m = self.slow_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(uid);
    }

    /// A drift event named one of the pipeline's resources: its next ensure runs its slower checks
    /// and reads its own log groups ([`Self::take_event_named`]).
    pub fn event_named(&self, uid: &str) {
        self.forget(uid);
        (self.event_named.lock().unwrap_or_else(|e| e.into_inner())).insert(uid.to_string());
    }

    /// Whether a drift event named the pipeline since its last AWS step (which this call is).
    pub fn take_event_named(&self, uid: &str) -> bool {
        (self.event_named.lock().unwrap_or_else(|e| e.into_inner())).remove(uid)
    }
}

async fn cached<T>(
    slot: &Cached<T>,
    fresh_since: SystemTime,
    operation: &str,
    read: impl std::future::Future<Output = Result<T, AwsError>>,
) -> Option<Arc<T>> {
    let mut held = slot.lock().await;
    if let Some((taken, value)) = held.as_ref()
        && *taken >= fresh_since
    {
        return value.clone();
    }
    let taken = SystemTime::now();
    let value = match read.await {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            tracing::warn!(operation, error = %e, "batched read failed; pipelines read their own resources until it succeeds");
            None
        }
    };
    *held = Some((taken, value.clone()));
    value
}

/// This pipeline's offset within the interval, from a hash of `phase_key`.
fn phase(interval: Duration, phase_key: &str) -> u64 {
    super::resync::key_hash(phase_key) % interval.as_secs().max(1)
}

/// Whether a check at `last` is stale at `now`: the pipeline's own boundary (its phase plus a
/// whole number of intervals since the epoch) lies in `(last, now]`. So each pipeline is checked
/// once per interval, at a time of its own; one checked just before its boundary is checked
/// again at it.
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

    #[test]
    fn each_role_is_kept_by_the_one_shard_of_its_pipeline() {
        let shards = [Shard { index: 0, count: 2 }, Shard { index: 1, count: 2 }];
        let mut kept = [0, 0];
        for i in 0..100 {
            let tag = format!("team-{}/train-{i}", i % 7);
            let keepers: Vec<usize> = (0..2).filter(|s| keeps_role_of(shards[*s], &tag)).collect();
            assert_eq!(keepers.len(), 1, "{tag}: kept by {keepers:?}");
            kept[keepers[0]] += 1;
        }
        assert!(kept[0] > 20 && kept[1] > 20, "{kept:?}");
        assert!(shards.iter().all(|s| keeps_role_of(*s, "no-slash")));
        assert!(keeps_role_of(Shard::default(), "team-a/train"));
    }

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
        assert!(
            due(at(start), at(start + 3600), HOUR, "uid-a"),
            "at most one interval late"
        );
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

    #[tokio::test]
    async fn a_listing_serves_its_whole_resync_period_and_is_read_again_in_the_next() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let slot: Cached<u32> = tokio::sync::Mutex::new(None);
        let reads = AtomicU32::new(0);
        let read = || async { Ok::<u32, AwsError>(reads.fetch_add(1, Ordering::SeqCst) + 1) };
        // A 10-minute period that started 9 minutes ago: taken now, the listing serves its
        // pipelines until the period ends, however late in it they resync.
        let period_start = SystemTime::now() - Duration::from_secs(540);
        let first = cached(&slot, period_start, "Test", read()).await;
        assert_eq!(first.as_deref(), Some(&1));
        let taken = slot.lock().await.as_ref().map(|(t, _)| *t).expect("held");
        // 45 s later in the same period (a 30 s time-to-live would have read again).
        slot.lock().await.as_mut().expect("held").0 = taken - Duration::from_secs(45);
        let later = cached(&slot, period_start, "Test", read()).await;
        assert_eq!(later.as_deref(), Some(&1), "the same period: no second read");
        // The next period starts after it was taken: read again.
        let next = cached(&slot, SystemTime::now() + Duration::from_millis(1), "Test", read()).await;
        assert_eq!(next.as_deref(), Some(&2), "a new period: read again");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_listing_is_not_asked_again_in_the_same_period() {
        let slot: Cached<u32> = tokio::sync::Mutex::new(None);
        let period_start = SystemTime::now() - Duration::from_secs(60);
        let denied = || async {
            Err::<u32, AwsError>(AwsError::AccessDenied {
                operation: "ListAliases".into(),
                resource: "*".into(),
                code: "AccessDeniedException".into(),
                message: "not allowed".into(),
            })
        };
        assert!(cached(&slot, period_start, "Test", denied()).await.is_none());
        let again = cached(&slot, period_start, "Test", async { Ok::<u32, AwsError>(7) }).await;
        assert!(
            again.is_none(),
            "the failure stands for the period: pipelines read their own"
        );
        let next = cached(&slot, SystemTime::now() + Duration::from_millis(1), "Test", async {
            Ok::<u32, AwsError>(7)
        })
        .await;
        assert_eq!(next.as_deref(), Some(&7));
    }

    #[test]
    fn the_check_after_data_stopped_is_due_once_until_it_ran() {
        let b = BatchedReads::new(HOUR, DEFAULT_EVENT_BACKSTOP_INTERVAL);
        let checked = at(1_800_000_000);
        let stopped = checked + Duration::from_secs(300);
        assert!(
            !b.stop_check_due("uid", stopped),
            "never checked here: due for other reasons"
        );
        b.slow_checks_ran("uid", checked);
        assert!(
            !b.stop_check_due("uid", checked - Duration::from_secs(1)),
            "stopped before the check"
        );
        assert!(b.stop_check_due("uid", stopped), "stopped after the check");
        b.slow_checks_ran("uid", stopped + Duration::from_secs(2));
        assert!(!b.stop_check_due("uid", stopped), "ran after it stopped: once");
    }

    #[test]
    fn a_pipeline_new_to_the_process_or_forgotten_is_due_at_once() {
        let b = BatchedReads::new(HOUR, DEFAULT_EVENT_BACKSTOP_INTERVAL);
        let now = at(1_800_000_000);
        let later = now + Duration::from_secs(1);
        assert!(b.slow_checks_due("uid", now, None), "new to this process");
        b.slow_checks_ran("uid", now);
        assert!(!b.slow_checks_due("uid", later, None));
        b.event_named("uid");
        assert!(b.slow_checks_due("uid", later, None), "a drift event named it");
        assert!(b.take_event_named("uid"), "its next AWS step reads its own groups");
        assert!(!b.take_event_named("uid"), "once");
    }

    #[test]
    fn a_metric_listing_names_each_group_of_its_resync_interval_once_and_forgets_deleted_pipelines() {
        let b = BatchedReads::new(HOUR, DEFAULT_EVENT_BACKSTOP_INTERVAL);
        let name = |uid: &str, interval_ms: u64, groups: &[&str]| {
            let groups: Vec<(Signal, String)> = groups.iter().map(|g| (Signal::Logs, g.to_string())).collect();
            b.flow_groups(uid, interval_ms, &groups);
        };
        name("a", 600_000, &["/g/a/logs", "/g/a/metrics"]);
        name("b", 600_000, &["/g/b/logs", "/g/a/logs"]);
        name("fast", 30_000, &["/g/fast/logs"]);
        assert_eq!(b.flow_groups_of(600_000), ["/g/a/logs", "/g/a/metrics", "/g/b/logs"]);
        assert_eq!(
            b.flow_groups_of(30_000),
            ["/g/fast/logs"],
            "asked for every 30 s: alone"
        );
        // A spec edit moves a pipeline to another interval's listing.
        name("fast", 600_000, &["/g/fast/logs"]);
        assert!(b.flow_groups_of(30_000).is_empty());
        b.pipeline_gone("a");
        assert_eq!(b.flow_groups_of(600_000), ["/g/a/logs", "/g/b/logs", "/g/fast/logs"]);
        b.pipeline_gone("b");
        b.pipeline_gone("fast");
        assert!(b.flow_groups_of(600_000).is_empty());
    }

    #[test]
    fn while_drift_events_are_read_the_log_group_listing_and_slower_checks_wait_for_the_backstop() {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let resync = Duration::from_secs(600);
        let b = BatchedReads::new(DAY, 7 * DAY);
        let now = at(1_800_000_000 / 600 * 600 + 300);
        // No queue read yet: the listing is per resync period, the slower checks per day.
        assert!(!b.events_live(now));
        assert_eq!(
            b.log_groups_fresh_since(now, resync),
            super::super::resync::boundary(now, resync)
        );
        assert_eq!(b.slow_check_interval(now), DAY);
        // Read 30 s ago: one listing per backstop period, the slower checks weekly.
        b.events_read(now - Duration::from_secs(30));
        assert!(b.events_live(now));
        let week_start = super::super::resync::boundary(now, 7 * DAY);
        assert_eq!(b.log_groups_fresh_since(now, resync), week_start);
        assert!(week_start < now - resync, "older than the resync period");
        assert_eq!(b.slow_check_interval(now), 7 * DAY);
        // A pipeline checked a day ago is not due while events flow; it is once they stop.
        b.slow_checks_ran("uid", now - DAY - Duration::from_secs(1));
        let mut checks = 0;
        for h in 0..24 {
            let t = now + Duration::from_secs(h * 3600);
            b.events_read(t);
            if b.slow_checks_due("uid", t, None) {
                b.slow_checks_ran("uid", t);
                checks += 1;
            }
        }
        // Per day (no events), it would be due now and again within the day: two checks.
        assert!(
            checks <= 1,
            "{checks} checks in a day: at most its weekly phase falls in it"
        );
        let stale = now + DAY + EVENTS_LIVE + Duration::from_secs(1);
        assert!(!b.events_live(stale), "the queue was last read over two minutes ago");
        assert_eq!(b.slow_check_interval(stale), DAY, "back to --kms-check-interval");
        assert_eq!(
            b.log_groups_fresh_since(stale, resync),
            super::super::resync::boundary(stale, resync)
        );
    }

    #[test]
    fn a_quiet_groups_reading_stands_while_listings_show_nothing_since_and_not_after() {
        let b = BatchedReads::new(HOUR, DEFAULT_EVENT_BACKSTOP_INTERVAL);
        let min = 60_000;
        let t0 = 1_800_000_000_000 / min * min;
        let listing = |taken_ms: i64, newest: &[(&str, i64)]| log_metrics::Listing {
            from_ms: taken_ms - 17 * min,
            taken_ms,
            newest: newest.iter().map(|(g, t)| (g.to_string(), *t)).collect(),
        };
        assert_eq!(b.unchanged_since_read("g", &listing(t0, &[])), None, "never read");
        b.streams_read("g", t0, Some(t0 - 3 * HOUR.as_millis() as i64));
        b.streams_read("never", t0, None);
        assert_eq!(
            b.unchanged_since_read("g", &listing(t0 + min, &[])),
            None,
            "no listing showed any group yet: the metric's silence says nothing"
        );
        assert_eq!(b.unchanged_since_read("never", &listing(t0 + min, &[])), None);
        // Another group's minute in a listing: the metric is published in this account.
        assert_eq!(
            b.unchanged_since_read("never", &listing(t0 + 2 * min, &[("other", t0)])),
            Some(None),
            "a group that never received an event, read once, stays so while listings omit it"
        );
        // Ten-minute periods: each listing reaches back past what the one before vouched for.
        let mut taken = t0;
        for _ in 0..6 {
            taken += 10 * min + 30_000;
            assert_eq!(
                b.unchanged_since_read("g", &listing(taken, &[])),
                Some(Some(t0 - 3 * HOUR.as_millis() as i64)),
                "nothing since: the reading stands"
            );
        }
        // An event after the last vouched-for time: read the streams.
        taken += 10 * min;
        let event = taken - 2 * min;
        assert_eq!(b.unchanged_since_read("g", &listing(taken, &[("g", event)])), None);
        // Read again: the streams' time is what stands, or a later minute the metric showed
        // (lastEventTimestamp can lag).
        b.streams_read("g", taken, Some(event - 5 * min));
        let next = taken + 10 * min;
        assert_eq!(
            b.unchanged_since_read("g", &listing(next, &[("g", taken - min)])),
            Some(Some(taken - min)),
            "the metric's minute before the read is newer than the lagging streams"
        );
        // A listing that does not reach back to the last read (a long gap): read the streams.
        let far = next + 40 * min;
        assert_eq!(b.unchanged_since_read("g", &listing(far, &[])), None);
        // A deleted pipeline's groups are forgotten.
        b.flow_groups("uid", 600_000, &[(Signal::Logs, "g".to_string())]);
        b.streams_read("g", far, None);
        assert!(b.unchanged_since_read("g", &listing(far + min, &[])).is_some());
        b.pipeline_gone("uid");
        assert_eq!(b.unchanged_since_read("g", &listing(far + 2 * min, &[])), None);
    }

    #[test]
    fn data_that_stopped_after_the_last_check_makes_one_check_due() {
        let b = BatchedReads::new(HOUR, DEFAULT_EVENT_BACKSTOP_INTERVAL);
        let now = at(1_800_000_000);
        b.slow_checks_ran("uid", now);
        let stopped = Some(now + Duration::from_secs(60));
        assert!(b.slow_checks_due("uid", now + Duration::from_secs(120), stopped));
        b.slow_checks_ran("uid", now + Duration::from_secs(120));
        assert!(
            !b.slow_checks_due("uid", now + Duration::from_secs(180), stopped),
            "still stopped, already checked since"
        );
    }
}
