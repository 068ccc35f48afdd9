//! When log groups last received events, read from CloudWatch's own per-group metric
//! (`AWS/Logs` `IncomingLogEvents`, dimension `LogGroupName`): one GetMetricData call reads 500
//! groups, where DescribeLogStreams reads one and has a low account quota (25 per second). The
//! metric is published once a minute, a minute or two late, and only for minutes with events, so
//! it tells that data flows; it cannot tell when a quiet group last received an event (that stays
//! DescribeLogStreams' job). It can tell that a quiet group received nothing since its streams
//! were last read: then that reading still holds (`BatchedReads::unchanged_since_read`), and
//! consecutive listings overlap ([`window_for`]) so that this carries from resync to resync.
//!
//! Cost: GetMetricData is billed per metric requested ($0.01 per 1,000), one per group and read.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDataResult, MetricStat, ScanBy};

use super::error::classify;
use super::{AwsClients, AwsError};

/// How far back a read looks at the least. A group whose newest event is older than the window
/// is read from its streams (its age matters then, not that it flows), unless the listing shows
/// that nothing arrived since they were last read.
pub const MIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// At the most: 500 groups × 180 one-minute datapoints stay under GetMetricData's 100,800 per call.
pub const MAX_WINDOW: Duration = Duration::from_secs(3 * 3600);
/// How late CloudWatch may publish a minute's datapoint: a listing vouches for the time up to
/// this long before it was taken, not later.
pub const PUBLISH_LAG: Duration = Duration::from_secs(5 * 60);

/// How far back the listing for pipelines that resync every `resync` looks: far enough that a
/// listing reaches back past the previous one's end (`taken` − [`PUBLISH_LAG`]; listings of one
/// interval are at most a period and its spread, `resync` × 1.1, apart), so what a quiet group's
/// streams last said carries from listing to listing. 15 minutes at the least (GetMetricData is
/// billed per metric, not per datapoint: a longer window costs nothing more), 3 hours at the most
/// (longer intervals read quiet groups' streams at each resync).
pub fn window_for(resync: Duration) -> Duration {
    let reach = resync + resync / 10 + PUBLISH_LAG + Duration::from_secs(60);
    reach.clamp(MIN_WINDOW, MAX_WINDOW)
}

/// One listing: what it covers and, for each group with events in it, the start of its newest
/// minute with events (ms since the epoch; groups without events are absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The window's start: events from here on show.
    pub from_ms: i64,
    /// When it was read.
    pub taken_ms: i64,
    pub newest: BTreeMap<String, i64>,
}

impl Listing {
    /// Up to when the listing vouches that a group absent from it received nothing:
    /// [`PUBLISH_LAG`] before it was taken.
    pub fn vouches_until_ms(&self) -> i64 {
        self.taken_ms.saturating_sub(PUBLISH_LAG.as_millis() as i64)
    }
}
/// One datapoint per minute: the newest minute with events is the reading.
const PERIOD_S: i32 = 60;
/// GetMetricData takes at most 500 queries per call.
const QUERIES_PER_CALL: usize = 500;

/// The query for `group`'s events per minute; `id` names it in the answer.
fn query(id: String, group: &str) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace("AWS/Logs")
        .metric_name("IncomingLogEvents")
        .dimensions(Dimension::builder().name("LogGroupName").value(group).build())
        .build();
    let stat = MetricStat::builder()
        .metric(metric)
        .period(PERIOD_S)
        .stat("Sum")
        .build();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(stat)
        .return_data(true)
        .build()
}

/// Query ids must start with a lower-case letter: `g<index in the call>`.
fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix('g')?.parse().ok()
}

/// The start of the newest minute with at least one event in `r` (ms since the epoch). The
/// minute's start, not its end: an event in it may be up to a minute older than that.
pub fn newest_minute(r: &MetricDataResult) -> Option<i64> {
    (r.timestamps().iter().zip(r.values()))
        .filter(|(_, v)| **v > 0.0)
        .filter_map(|(t, _)| t.to_millis().ok())
        .max()
}

/// For each of `groups` with events in the `window` before `now`: the start of its newest
/// minute with events (ms since the epoch). Groups without events are absent.
pub async fn newest_minutes(
    c: &AwsClients,
    groups: &[String],
    now: SystemTime,
    window: Duration,
) -> Result<Listing, AwsError> {
    let mut newest = BTreeMap::new();
    // Aligned to the period, as CloudWatch advises (and so moto's buckets are whole minutes too).
    let from = DateTime::from(now.checked_sub(window).unwrap_or(now)).secs();
    let start = DateTime::from_secs(from - from.rem_euclid(i64::from(PERIOD_S)));
    let end = DateTime::from(now);
    for chunk in groups.chunks(QUERIES_PER_CALL) {
        let queries: Vec<MetricDataQuery> = (chunk.iter().enumerate())
            .map(|(i, g)| query(format!("g{i}"), g))
            .collect();
        let mut token = None;
        loop {
            let out = (c.cloudwatch.get_metric_data())
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(start)
                .end_time(end)
                .scan_by(ScanBy::TimestampDescending)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify("GetMetricData", "AWS/Logs IncomingLogEvents", e))?;
            for r in out.metric_data_results() {
                let group = r.id().and_then(index_of).and_then(|i| chunk.get(i));
                if let (Some(group), Some(t)) = (group, newest_minute(r)) {
                    let at = newest.entry(group.clone()).or_insert(t);
                    *at = (*at).max(t);
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(Listing {
        from_ms: start.to_millis().unwrap_or(0),
        taken_ms: end.to_millis().unwrap_or(0),
        newest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(points: &[(i64, f64)]) -> MetricDataResult {
        MetricDataResult::builder()
            .id("g0")
            .set_timestamps(Some(points.iter().map(|(t, _)| DateTime::from_millis(*t)).collect()))
            .set_values(Some(points.iter().map(|(_, v)| *v).collect()))
            .build()
    }

    #[test]
    fn the_reading_is_the_newest_minute_that_had_events_not_the_newest_datapoint() {
        let r = result(&[(180_000, 0.0), (120_000, 7.0), (60_000, 3.0)]);
        assert_eq!(newest_minute(&r), Some(120_000));
        assert_eq!(newest_minute(&result(&[(60_000, 0.0)])), None);
        assert_eq!(newest_minute(&result(&[])), None);
    }

    #[test]
    fn consecutive_listings_of_an_interval_overlap_past_what_the_previous_one_vouched_for() {
        for resync_s in [30, 120, 600, 900, 3600, 9000, 10_000] {
            let resync = Duration::from_secs(resync_s);
            let w = window_for(resync);
            assert!((MIN_WINDOW..=MAX_WINDOW).contains(&w), "{resync_s} s: {w:?}");
            // The latest a listing comes after the previous one: a period and its spread.
            let apart = resync + resync / 10;
            let first = Listing {
                taken_ms: 1_800_000_000_000,
                ..Listing::default()
            };
            let next_from = first.taken_ms + apart.as_millis() as i64 - w.as_millis() as i64;
            assert_eq!(
                next_from <= first.vouches_until_ms(),
                w < MAX_WINDOW,
                "{resync_s} s: overlap unless the window is capped"
            );
        }
        assert_eq!(window_for(Duration::from_secs(600)), Duration::from_secs(17 * 60));
    }

    #[test]
    fn query_ids_map_back_to_their_group_index() {
        assert_eq!(index_of("g0"), Some(0));
        assert_eq!(index_of("g499"), Some(499));
        assert_eq!(index_of("x1"), None);
        let q = query("g3".into(), "/aws/eks/c/ns/p/logs");
        assert_eq!(q.id(), Some("g3"));
        let dims = q
            .metric_stat()
            .and_then(|s| s.metric())
            .map(|m| m.dimensions().to_vec());
        assert_eq!(
            dims.unwrap_or_default(),
            vec![
                Dimension::builder()
                    .name("LogGroupName")
                    .value("/aws/eks/c/ns/p/logs")
                    .build()
            ]
        );
    }
}
