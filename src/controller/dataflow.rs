//! The `DataFlowing` condition: does telemetry reach CloudWatch? Pure: what a read found, the
//! previous status and the clock come in; the condition, the recorded event times, the event to
//! emit and when to read again come out.
//!
//! Cadence (DescribeLogStreams has a low account quota, and status writes cost at scale):
//! - a read at every AWS step (resync, plan change, requested reconcile); at a resync, groups
//!   whose data flows come from one metric listing for all pipelines (`batched`, `log_metrics`),
//!   the others from their streams;
//! - while DataFlowing is not True and a collector pod is ready, re-checks 30 s, 60 s, 120 s …
//!   apart, back to 30 s when the status flips; a re-check reads only the streams, never the whole
//!   AWS side. Once the delay reaches the resync interval, the resync's own read (at the
//!   pipeline's slot, see `resync`) is the re-check: the scheduled one is set past the next slot,
//!   a fallback only, so a pipeline whose data stays missing reads its streams once per resync,
//!   not twice;
//! - when `CollectorReady` turns True while waiting for a first event, no read: the last read's
//!   findings are restated, so the write that records the collector as ready also starts the
//!   grace period's message;
//! - stream reads go within the process's DescribeLogStreams budget (`--stream-reads-per-second`,
//!   `aws::budget`): a read beyond it is put off to a reserved time ([`Read::Deferred`]), so many
//!   collectors becoming ready at once do not spend the account's quota;
//! - status written only when the condition's status, reason or message changes (a failed read's
//!   message only at a resync read), or at a resync read (so `lastLogEventTime` /
//!   `lastMetricEventTime` are at most one resync old). Messages of missing data name the newest
//!   event's time, not its age: a stopped pipeline's status is not rewritten at each resync.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::conditions::{self, pipeline as ty, reason, status as st};
use crate::crd::reason::Reason;
use crate::crd::{MLObservabilityPipelineStatus, format_duration_ms};
use crate::desired::effective::Effective;

/// The first re-check after a read that did not find data flowing; doubled after each one.
pub const FIRST_RECHECK: Duration = Duration::from_secs(30);

/// Which signal a log group carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Logs,
    Metrics,
}

impl Signal {
    fn noun(self) -> &'static str {
        match self {
            Signal::Logs => "log",
            Signal::Metrics => "metric",
        }
    }
}

/// The log groups that should receive data: the logs group when logs are shipped, the metrics
/// group when the metrics pipeline runs.
pub fn groups(e: &Effective) -> Vec<(Signal, String)> {
    let mut out = Vec::new();
    if e.ships_logs() {
        out.push((Signal::Logs, e.logs.group.name.clone()));
    }
    if e.ships_metrics() {
        out.push((Signal::Metrics, e.metrics.group.name.clone()));
    }
    out
}

/// Why the streams were read: at the AWS step (its times are recorded in status) or a re-check
/// while data is missing (written only if the condition changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Resync,
    Recheck,
    /// No AWS call: `CollectorReady` turned True while the condition waits for a first event
    /// (`WaitingForData`), and the last read's findings (the newest event times recorded in
    /// status) are restated, so the status write that records the collector as ready also says
    /// since when the grace period runs. The re-check schedule is left as it was.
    Restated,
    /// No AWS call: the streams were due to be read, but the DescribeLogStreams budget
    /// (`--stream-reads-per-second`) was spent; the read is reserved for this long from now. A
    /// finding already made is kept, and so is the re-check schedule; a collector just ready
    /// whose groups never recorded an event waits for data (the readings are those recorded:
    /// none), else is said to wait its turn.
    Deferred(Duration),
}

impl Read {
    /// Whether this read asked AWS (it moves the re-check schedule on).
    pub fn asked_aws(self) -> bool {
        matches!(self, Read::Resync | Read::Recheck)
    }
}

/// The newest event of one log group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReading {
    pub signal: Signal,
    pub group: String,
    /// Milliseconds since the epoch; `None`: the group holds no event.
    pub newest_ms: Option<i64>,
}

/// One read of the pipeline's log groups.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFlowObs {
    pub read: Read,
    pub grace_ms: u64,
    /// The readings, or the AWS error.
    pub result: Result<Vec<GroupReading>, String>,
}

/// Whether a collector can be sending data, as this reconcile saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// The collector was not looked at in this reconcile (it stopped before, e.g. an invalid
    /// spec or a failing AWS step): whatever runs keeps running, so the condition is kept.
    NotLookedAt,
    /// No node matches the GPU node selector: nothing runs, no data is expected.
    NoGpuNodes,
    /// No collector pod is ready (the message says why).
    NotReady(String),
    /// At least one collector pod is ready.
    Ready,
}

/// Status, reason, message.
type Verdict = (&'static str, &'static str, String);

fn rfc3339(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms - ms.rem_euclid(1000))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn age(now_ms: i64, then_ms: i64) -> String {
    format_duration_ms(u64::try_from(now_ms - then_ms).unwrap_or(0) / 1000 * 1000)
}

/// The condition the observation calls for; `None` keeps the previous one.
///
/// `ready_since`: since when `CollectorReady` is True (not counting `NoGpuNodes`). A collector
/// that has just become ready gets one grace period to deliver a first event: until then missing
/// data is `WaitingForData` (Unknown), not False — unless the condition was True or False before.
pub fn verdict(
    serving: &Serving,
    ready_since: Option<&Time>,
    prev: Option<&Condition>,
    obs: Option<&DataFlowObs>,
    now: &Time,
) -> Option<Verdict> {
    let readings = match serving {
        Serving::NotLookedAt => {
            return prev.is_none().then(|| {
                (
                    st::UNKNOWN,
                    reason::COLLECTOR_NOT_READY,
                    "the collector is not running yet: data is checked once it is ready".to_string(),
                )
            });
        }
        Serving::NoGpuNodes => {
            return Some((
                st::UNKNOWN,
                reason::NO_GPU_NODES,
                "no node matches the GPU node selector: no collector runs, so no data is expected".to_string(),
            ));
        }
        Serving::NotReady(why) => {
            return Some((
                st::UNKNOWN,
                reason::COLLECTOR_NOT_READY,
                format!("{why}: data is checked once a collector pod is ready"),
            ));
        }
        Serving::Ready if obs.is_none() => {
            return prev.is_none().then(|| {
                (
                    st::UNKNOWN,
                    reason::WAITING_FOR_DATA,
                    "a collector pod is ready; the log groups are not checked yet".to_string(),
                )
            });
        }
        Serving::Ready if obs.is_some_and(|o| matches!(o.read, Read::Deferred(_))) => {
            // A finding already made stands until the read.
            if prev.is_some_and(evaluated) {
                return None;
            }
            // A collector just ready, last said not to be. With no event ever recorded (the
            // readings the check passes on), the read would find what they say unless data came
            // in the last moments: waiting since the collector became ready, said in the same
            // write that records it ready. Otherwise: ready, and the check waits its turn.
            let restated = obs
                .filter(|o| o.result.as_ref().is_ok_and(|r| !r.is_empty()))
                .and_then(|o| {
                    let o = DataFlowObs {
                        read: Read::Restated,
                        ..o.clone()
                    };
                    verdict(serving, ready_since, prev, Some(&o), now)
                })
                .filter(|v| v.1 == reason::WAITING_FOR_DATA);
            return Some(restated.unwrap_or_else(|| {
                (
                    st::UNKNOWN,
                    reason::WAITING_FOR_DATA,
                    "a collector pod is ready; the log groups are checked in turn (DescribeLogStreams budget, --stream-reads-per-second)".to_string(),
                )
            }));
        }
        Serving::Ready => match &obs?.result {
            Err(e) => {
                return Some((
                    st::UNKNOWN,
                    reason::DATA_CHECK_FAILED,
                    format!("reading the log streams failed: {e}"),
                ));
            }
            Ok(r) if r.is_empty() => return None,
            Ok(r) => r,
        },
    };
    let grace_ms = obs.map_or(0, |o| o.grace_ms);
    let grace = format_duration_ms(grace_ms);
    let grace_ms = i64::try_from(grace_ms).unwrap_or(i64::MAX);
    let now_ms = now.0.as_millisecond();
    let fresh = |r: &GroupReading| r.newest_ms.is_some_and(|t| now_ms.saturating_sub(t) <= grace_ms);
    let stale: Vec<&GroupReading> = readings.iter().filter(|r| !fresh(r)).collect();
    if stale.is_empty() {
        let ages: Vec<String> = readings
            .iter()
            .filter_map(|r| {
                let t = r.newest_ms?;
                Some(format!("newest {} event {} ago", r.signal.noun(), age(now_ms, t)))
            })
            .collect();
        return Some((
            st::TRUE,
            reason::DATA_FLOWING,
            format!("{} (grace period {grace})", ages.join(", ")),
        ));
    }
    let missing: Vec<String> = stale
        .iter()
        .map(|r| match r.newest_ms {
            None => format!("no {} event in {} yet", r.signal.noun(), r.group),
            // No age: the message of a pipeline whose data stopped stays the same from one
            // read to the next, so a stopped pipeline's status is not rewritten at each resync.
            Some(t) => format!("no {} event in {} since {}", r.signal.noun(), r.group, rfc3339(t)),
        })
        .collect();
    let first_check = prev.is_none_or(|c| c.status == st::UNKNOWN);
    if first_check {
        let waited_ms = ready_since.map(|t| now_ms - t.0.as_millisecond());
        match waited_ms {
            None => {
                return Some((
                    st::UNKNOWN,
                    reason::WAITING_FOR_DATA,
                    format!(
                        "{}; the collector is still rolling out (CollectorReady is not True)",
                        missing.join("; ")
                    ),
                ));
            }
            Some(w) if w < grace_ms => {
                let by = ready_since.map_or(0, |t| t.0.as_millisecond()).saturating_add(grace_ms);
                return Some((
                    st::UNKNOWN,
                    reason::WAITING_FOR_DATA,
                    format!(
                        "{}; the collector is ready since {}: DataFlowing turns False if nothing arrives by {}",
                        missing.join("; "),
                        rfc3339(now_ms - w),
                        rfc3339(by)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let r = if stale.iter().any(|r| r.signal == Signal::Logs) {
        reason::NO_RECENT_LOGS
    } else {
        reason::NO_RECENT_METRICS
    };
    Some((st::FALSE, r, format!("{} (grace period {grace})", missing.join("; "))))
}

/// The newest event time of `signal`'s group recorded in status (ms since the epoch).
pub fn recorded_ms(s: Option<&MLObservabilityPipelineStatus>, signal: Signal) -> Option<i64> {
    let t = s?.telemetry.as_ref()?;
    let recorded = match signal {
        Signal::Logs => &t.last_log_event_time,
        Signal::Metrics => &t.last_metric_event_time,
    };
    let at: k8s_openapi::jiff::Timestamp = recorded.as_deref()?.parse().ok()?;
    Some(at.as_millisecond())
}

/// Since when `CollectorReady` is True (not counting `NoGpuNodes`): where the grace period starts.
fn collector_ready_since(s: &MLObservabilityPipelineStatus) -> Option<&Time> {
    conditions::find(&s.conditions, ty::COLLECTOR_READY)
        .filter(|c| c.status == st::TRUE && c.reason != reason::NO_GPU_NODES)
        .map(|c| &c.last_transition_time)
}

/// Sets `DataFlowing` and the last event times in `s` (whose `CollectorReady` is already this
/// reconcile's). A re-check that leaves status and reason as they were changes nothing, so it
/// writes nothing; a resync read refreshes message and times.
pub fn update(
    s: &mut MLObservabilityPipelineStatus,
    serving: &Serving,
    obs: Option<&DataFlowObs>,
    generation: Option<i64>,
    now: &Time,
) {
    let prev = conditions::find(&s.conditions, ty::DATA_FLOWING).cloned();
    let ready_since = collector_ready_since(s).cloned();
    let Some((status, r, message)) = verdict(serving, ready_since.as_ref(), prev.as_ref(), obs, now) else {
        return;
    };
    let changed = prev.as_ref().is_none_or(|c| c.status != status || c.reason != r);
    let between_resyncs = obs.is_some_and(|o| o.read != Read::Resync);
    // A re-check (or restatement) with the same status and reason writes only a message that says
    // something new (the grace period's start once the collector is ready, a newer event's time);
    // a failed read's message (the AWS error, with its request ID) is not rewritten by each one.
    let same_message = prev.as_ref().is_some_and(|c| c.message == message);
    if !changed && between_resyncs && (same_message || r == reason::DATA_CHECK_FAILED) {
        return;
    }
    conditions::upsert(
        &mut s.conditions,
        conditions::condition(ty::DATA_FLOWING, status, r, message, generation, now.clone()),
    );
    if let Some(Ok(readings)) = obs.map(|o| &o.result) {
        for g in readings {
            let Some(t) = g.newest_ms else { continue };
            let telemetry = s.telemetry.get_or_insert_with(Default::default);
            // Never cleared: status is merge-patched, so an absent field would not remove it.
            let field = match g.signal {
                Signal::Logs => &mut telemetry.last_log_event_time,
                Signal::Metrics => &mut telemetry.last_metric_event_time,
            };
            *field = Some(rfc3339(t));
        }
    }
}

/// The event for a change of `DataFlowing`: Normal when it becomes True, Warning when it becomes
/// False or the read fails. `(warning, reason, message)`.
pub fn transition_event(old: Option<&Condition>, new: Option<&Condition>) -> Option<(bool, Reason, String)> {
    let new = new?;
    if old.is_some_and(|o| o.status == new.status && o.reason == new.reason) {
        return None;
    }
    let warning = match new.status.as_str() {
        st::TRUE => false,
        st::FALSE => true,
        _ if new.reason == reason::DATA_CHECK_FAILED => true,
        _ => return None,
    };
    // Every DataFlowing reason is a `Reason`: the condition is built from those constants.
    Some((warning, Reason::parse(&new.reason)?, new.message.clone()))
}

/// When the streams were last read while data was not flowing, and how long until the next look.
/// Kept in memory per pipeline: a restarted operator starts with a read at its first (AWS) reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recheck {
    pub last: Instant,
    pub delay: Duration,
}

fn evaluated(c: &Condition) -> bool {
    c.status != st::UNKNOWN || c.reason == reason::WAITING_FOR_DATA || c.reason == reason::DATA_CHECK_FAILED
}

/// Whether a condition in this state keeps its re-check schedule: data is not flowing while a
/// collector pod is ready (False, `WaitingForData`, `DataCheckFailed`).
pub fn rechecks(c: &Condition) -> bool {
    c.status != st::TRUE && evaluated(c)
}

/// Whether this reconcile reads the streams, and why.
pub fn read_due(
    aws_step_ran: bool,
    serving: &Serving,
    prev: Option<&Condition>,
    recheck: Option<&Recheck>,
    now: Instant,
) -> Option<Read> {
    if *serving != Serving::Ready {
        return None;
    }
    if aws_step_ran {
        return Some(Read::Resync);
    }
    match (prev, recheck) {
        (Some(c), _) if c.status == st::TRUE => None,
        // A collector pod just became ready: look now (it usually finds WaitingForData).
        (Some(c), _) if !evaluated(c) => Some(Read::Recheck),
        (None, _) => Some(Read::Recheck),
        (Some(_), Some(r)) => (now >= r.last + r.delay).then_some(Read::Recheck),
        (Some(_), None) => Some(Read::Recheck),
    }
}

/// Whether this reconcile restates the last read ([`Read::Restated`]) when no read is due:
/// `CollectorReady` turns True in it while a collector pod is ready and the condition waits for a
/// first event, whose message depends on since when the collector is ready.
pub fn restates(collector_became_ready: bool, serving: &Serving, prev: Option<&Condition>) -> bool {
    collector_became_ready && *serving == Serving::Ready && prev.is_some_and(|c| c.reason == reason::WAITING_FOR_DATA)
}

/// The re-check schedule after a read that left the condition `new_status` (was `old_status`):
/// none once data flows; otherwise the delay doubles from [`FIRST_RECHECK`], and starts over when
/// the status flips. A delay that reaches `resync` is set past the next resync slot (`resync` plus
/// its spread plus a second): the resync reads first, and its read resets the schedule.
pub fn after_read(
    prev: Option<&Recheck>,
    old_status: Option<&str>,
    new_status: Option<&str>,
    now: Instant,
    resync: Duration,
) -> Option<Recheck> {
    if new_status == Some(st::TRUE) {
        return None;
    }
    let delay = match prev {
        Some(r) if old_status == new_status => r.delay * 2,
        _ => FIRST_RECHECK,
    };
    let delay = if delay >= resync {
        resync + resync / 10 + Duration::from_secs(1)
    } else {
        delay
    };
    Some(Recheck { last: now, delay })
}

/// A re-check while `DataFlowing` waits out the grace period (`WaitingForData`) comes no later
/// than one second after the grace period ends (`CollectorReady`'s transition + `grace_ms`), so
/// `False` is found when the grace runs out, not one doubled delay later. Other states keep `r`.
pub fn due_by_grace_end(r: Recheck, s: &MLObservabilityPipelineStatus, grace_ms: u64, now: &Time) -> Recheck {
    let waiting =
        conditions::find(&s.conditions, ty::DATA_FLOWING).is_some_and(|c| c.reason == reason::WAITING_FOR_DATA);
    let ready_since = collector_ready_since(s).map(|t| t.0.as_millisecond());
    let Some(since_ms) = ready_since.filter(|_| waiting) else {
        return r;
    };
    let end_ms = since_ms.saturating_add(i64::try_from(grace_ms).unwrap_or(i64::MAX));
    let left = u64::try_from(end_ms.saturating_sub(now.0.as_millisecond())).unwrap_or(0);
    let by = Duration::from_millis(left) + Duration::from_secs(1);
    Recheck {
        delay: r.delay.min(by),
        ..r
    }
}

/// How long until the scheduled re-check (zero when overdue).
pub fn next_read_in(r: &Recheck, now: Instant) -> Duration {
    (r.last + r.delay).saturating_duration_since(now)
}

#[cfg(test)]
#[path = "dataflow_tests.rs"]
mod tests;
