//! When log groups last received events, read from CloudWatch's own per-group metric
//! (`AWS/Logs` `IncomingLogEvents`, dimension `LogGroupName`): one GetMetricData call reads 500
//! groups, where DescribeLogStreams reads one and has a low account quota (25 per second). The
//! metric is published once a minute, a minute or two late, and only for minutes with events, so
//! it tells that data flows; it cannot tell when a quiet group last received an event (that stays
//! DescribeLogStreams' job).
//!
//! Cost: GetMetricData is billed per metric requested ($0.01 per 1,000), one per group and read.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDataResult, MetricStat, ScanBy};

use super::error::classify;
use super::{AwsClients, AwsError};

/// How far back a read looks. A group whose newest event is older than this is read from its
/// streams (its age matters then, not that it flows).
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
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

/// For each of `groups` with events in the [`WINDOW`] before `now`: the start of its newest
/// minute with events (ms since the epoch). Groups without events are absent.
pub async fn newest_minutes(
    c: &AwsClients,
    groups: &[String],
    now: SystemTime,
) -> Result<BTreeMap<String, i64>, AwsError> {
    let mut newest = BTreeMap::new();
    // Aligned to the period, as CloudWatch advises (and so moto's buckets are whole minutes too).
    let from = DateTime::from(now.checked_sub(WINDOW).unwrap_or(now)).secs();
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
    Ok(newest)
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
