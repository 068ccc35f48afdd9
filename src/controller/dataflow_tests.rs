use super::*;

const GRACE: u64 = 60_000;
const LOGS: &str = "/aws/eks/c/team-a/train/logs";
const METRICS: &str = "/aws/eks/c/team-a/train/metrics";

fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
}

fn reading(signal: Signal, newest_s: Option<i64>) -> GroupReading {
    let group = match signal {
        Signal::Logs => LOGS,
        Signal::Metrics => METRICS,
    };
    GroupReading {
        signal,
        group: group.into(),
        newest_ms: newest_s.map(|s| s * 1000),
    }
}

fn read(kind: Read, logs_s: Option<i64>, metrics_s: Option<i64>) -> DataFlowObs {
    DataFlowObs {
        read: kind,
        grace_ms: GRACE,
        result: Ok(vec![reading(Signal::Logs, logs_s), reading(Signal::Metrics, metrics_s)]),
    }
}

/// A status whose collector became ready at `ready_at`.
fn status_ready_since(ready_at: i64) -> MLObservabilityPipelineStatus {
    let mut s = MLObservabilityPipelineStatus::default();
    conditions::upsert(
        &mut s.conditions,
        conditions::condition(
            ty::COLLECTOR_READY,
            st::TRUE,
            reason::RECONCILED,
            "2/2",
            Some(1),
            at(ready_at),
        ),
    );
    s
}

fn flowing(s: &MLObservabilityPipelineStatus) -> (String, String, String, Time) {
    let c = conditions::find(&s.conditions, ty::DATA_FLOWING).expect("DataFlowing");
    (
        c.status.clone(),
        c.reason.clone(),
        c.message.clone(),
        c.last_transition_time.clone(),
    )
}

fn step(s: &mut MLObservabilityPipelineStatus, serving: &Serving, obs: Option<&DataFlowObs>, now: i64) {
    update(s, serving, obs, Some(1), &at(now));
}

#[test]
fn unknown_until_a_collector_pod_is_ready() {
    let mut s = MLObservabilityPipelineStatus::default();
    step(&mut s, &Serving::NotLookedAt, None, 10);
    let (status, r, msg, _) = flowing(&s);
    assert_eq!(
        (status.as_str(), r.as_str()),
        (st::UNKNOWN, reason::COLLECTOR_NOT_READY)
    );
    assert!(msg.contains("not running yet"), "{msg}");

    step(
        &mut s,
        &Serving::NotReady("no collector pod is ready (0/2 GPU nodes)".into()),
        None,
        20,
    );
    let (status, r, msg, _) = flowing(&s);
    assert_eq!(
        (status.as_str(), r.as_str()),
        (st::UNKNOWN, reason::COLLECTOR_NOT_READY)
    );
    assert!(msg.contains("0/2"), "{msg}");

    step(&mut s, &Serving::NoGpuNodes, None, 30);
    assert_eq!(flowing(&s).1, reason::NO_GPU_NODES);
}

#[test]
fn a_reconcile_that_did_not_look_at_the_collector_keeps_the_condition() {
    let mut s = status_ready_since(0);
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Resync, Some(100), Some(100))),
        100,
    );
    let before = s.clone();
    // e.g. an invalid spec edit: what runs keeps running, and so does what was found.
    step(&mut s, &Serving::NotLookedAt, None, 200);
    assert_eq!(s, before);
    // Ready, but nothing read in this reconcile: kept as well.
    step(&mut s, &Serving::Ready, None, 200);
    assert_eq!(s, before);
}

#[test]
fn fresh_events_in_every_group_are_true_with_their_ages_and_times() {
    let mut s = status_ready_since(0);
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Resync, Some(988), Some(997))),
        1000,
    );
    let (status, r, msg, _) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::TRUE, reason::DATA_FLOWING));
    assert!(
        msg.contains("newest log event 12s ago") && msg.contains("newest metric event 3s ago"),
        "{msg}"
    );
    let t = s.telemetry.clone().expect("telemetry");
    assert_eq!(t.last_log_event_time.as_deref(), Some("1970-01-01T00:16:28Z"));
    assert_eq!(t.last_metric_event_time.as_deref(), Some("1970-01-01T00:16:37Z"));
}

#[test]
fn missing_data_waits_one_grace_period_after_the_collector_became_ready_then_is_false() {
    let mut s = status_ready_since(1000);
    step(&mut s, &Serving::NotLookedAt, None, 990);
    // Ready 30 s ago, nothing yet: Unknown, with the time it turns False.
    step(&mut s, &Serving::Ready, Some(&read(Read::Recheck, None, None)), 1030);
    let (status, r, msg, since) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::UNKNOWN, reason::WAITING_FOR_DATA));
    assert!(msg.contains(&format!("no log event in {LOGS} yet")), "{msg}");
    assert!(
        msg.contains("1970-01-01T00:17:40Z"),
        "ready at 1000 s + 60 s grace: {msg}"
    );
    assert_eq!(since, at(990), "Unknown → Unknown keeps the transition time");

    // Grace period over, still nothing: False, logs first.
    step(&mut s, &Serving::Ready, Some(&read(Read::Recheck, None, None)), 1061);
    let (status, r, msg, since) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::FALSE, reason::NO_RECENT_LOGS));
    assert!(msg.contains("grace period 1m"), "{msg}");
    assert_eq!(since, at(1061));
    assert!(s.telemetry.is_none(), "no event, no time");
}

#[test]
fn data_that_stops_is_false_at_once_without_a_new_grace_period() {
    let mut s = status_ready_since(0);
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Resync, Some(100), Some(100))),
        100,
    );
    assert_eq!(flowing(&s).0, st::TRUE);
    // Only the metrics stopped: NoRecentMetrics, naming the group and the newest event.
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Resync, Some(700), Some(100))),
        700,
    );
    let (status, r, msg, since) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::FALSE, reason::NO_RECENT_METRICS));
    assert!(
        msg.contains(&format!("no metric event in {METRICS} since 1970-01-01T00:01:40Z")),
        "{msg}"
    );
    assert!(!msg.contains(LOGS), "fresh logs are not listed: {msg}");
    assert_eq!(since, at(700));
    // Back: True, new transition time, times moved on.
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Recheck, Some(800), Some(799))),
        800,
    );
    let (status, _, _, since) = flowing(&s);
    assert_eq!((status.as_str(), since), (st::TRUE, at(800)));
    let t = s.telemetry.clone().expect("telemetry");
    assert_eq!(t.last_metric_event_time.as_deref(), Some("1970-01-01T00:13:19Z"));
}

#[test]
fn a_first_check_during_a_rollout_waits_instead_of_failing() {
    // CollectorReady not True (rolling out) and no data yet: not False.
    let mut s = MLObservabilityPipelineStatus::default();
    step(&mut s, &Serving::Ready, Some(&read(Read::Recheck, None, None)), 5000);
    let (status, r, msg, _) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::UNKNOWN, reason::WAITING_FOR_DATA));
    assert!(msg.contains("rolling out"), "{msg}");
}

#[test]
fn a_failed_read_is_unknown_with_the_aws_error_and_keeps_the_times() {
    let mut s = status_ready_since(0);
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Resync, Some(100), Some(100))),
        100,
    );
    let times = s.telemetry.clone();
    let failed = DataFlowObs {
        read: Read::Resync,
        grace_ms: GRACE,
        result: Err("DescribeLogStreams on logGroup:/x: AccessDeniedException: not allowed".into()),
    };
    step(&mut s, &Serving::Ready, Some(&failed), 200);
    let (status, r, msg, _) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::UNKNOWN, reason::DATA_CHECK_FAILED));
    assert!(msg.contains("AccessDeniedException"), "{msg}");
    assert_eq!(s.telemetry, times);
}

#[test]
fn reads_that_find_the_same_stopped_data_write_nothing_and_a_newer_event_refreshes_message_and_times() {
    let mut s = status_ready_since(0);
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Resync, Some(10), Some(10))),
        1000,
    );
    assert_eq!(flowing(&s).1, reason::NO_RECENT_LOGS);
    let before = s.clone();
    // Later re-checks and resyncs that find the same stopped data: nothing to write (the message
    // names the newest event's time, not its age).
    for (kind, now) in [(Read::Recheck, 1100), (Read::Resync, 1700), (Read::Recheck, 2300)] {
        step(&mut s, &Serving::Ready, Some(&read(kind, Some(10), Some(10))), now);
        assert_eq!(
            s, before,
            "{kind:?} at {now} s with the same newest events changes nothing"
        );
    }
    // A newer (still stale) event: the message and the times move on; the transition time stays.
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Recheck, Some(20), Some(20))),
        2400,
    );
    assert_ne!(s, before);
    assert!(
        flowing(&s).2.contains("since 1970-01-01T00:00:20Z"),
        "{}",
        flowing(&s).2
    );
    assert_eq!(flowing(&s).3, flowing(&before).3);
    let t = s.telemetry.clone().expect("telemetry");
    assert_eq!(t.last_log_event_time.as_deref(), Some("1970-01-01T00:00:20Z"));
    // An empty group afterwards (streams expired) does not clear a recorded time.
    step(&mut s, &Serving::Ready, Some(&read(Read::Resync, None, None)), 1200);
    assert_eq!(s.telemetry, Some(t));
}

#[test]
fn events_are_normal_when_flowing_warning_when_not_and_silent_while_waiting() {
    let c = |status: &str, r: &str| conditions::condition(ty::DATA_FLOWING, status, r, "m", Some(1), at(1));
    let unknown = c(st::UNKNOWN, reason::WAITING_FOR_DATA);
    let flowing = c(st::TRUE, reason::DATA_FLOWING);
    let logs = c(st::FALSE, reason::NO_RECENT_LOGS);
    let metrics = c(st::FALSE, reason::NO_RECENT_METRICS);
    let failed = c(st::UNKNOWN, reason::DATA_CHECK_FAILED);
    let ev = |old: Option<&Condition>, new: &Condition| transition_event(old, Some(new)).map(|(w, r, _)| (w, r));
    assert_eq!(ev(Some(&unknown), &flowing), Some((false, Reason::DataFlowing)));
    assert_eq!(ev(Some(&flowing), &logs), Some((true, Reason::NoRecentLogs)));
    assert_eq!(ev(Some(&logs), &metrics), Some((true, Reason::NoRecentMetrics)));
    assert_eq!(ev(Some(&flowing), &failed), Some((true, Reason::DataCheckFailed)));
    assert_eq!(ev(None, &unknown), None);
    assert_eq!(ev(Some(&flowing), &flowing), None, "no change, no event");
    assert_eq!(ev(Some(&logs), &logs), None);
}

#[test]
fn reads_happen_at_every_aws_step_and_between_them_only_while_data_is_missing() {
    let now = Instant::now();
    let c = |status: &str, r: &str| conditions::condition(ty::DATA_FLOWING, status, r, "m", Some(1), at(1));
    let flowing = c(st::TRUE, reason::DATA_FLOWING);
    let stale = c(st::FALSE, reason::NO_RECENT_LOGS);
    let not_ready = c(st::UNKNOWN, reason::COLLECTOR_NOT_READY);
    let soon = Recheck {
        last: now,
        delay: Duration::from_secs(30),
    };
    let due = Recheck {
        last: now - Duration::from_secs(31),
        delay: Duration::from_secs(30),
    };
    // No ready collector pod: never.
    for serving in [Serving::NotLookedAt, Serving::NoGpuNodes, Serving::NotReady("x".into())] {
        assert_eq!(read_due(true, &serving, Some(&stale), Some(&due), now), None);
    }
    // The AWS step: always, and its times are recorded.
    assert_eq!(
        read_due(true, &Serving::Ready, Some(&flowing), None, now),
        Some(Read::Resync)
    );
    // Flowing between resyncs: no read, whatever triggered the reconcile.
    assert_eq!(read_due(false, &Serving::Ready, Some(&flowing), Some(&due), now), None);
    // A collector pod just became ready (or first reconcile): look now.
    assert_eq!(
        read_due(false, &Serving::Ready, Some(&not_ready), Some(&soon), now),
        Some(Read::Recheck)
    );
    assert_eq!(read_due(false, &Serving::Ready, None, None, now), Some(Read::Recheck));
    // Not flowing: only once the re-check is due.
    assert_eq!(read_due(false, &Serving::Ready, Some(&stale), Some(&soon), now), None);
    assert_eq!(
        read_due(false, &Serving::Ready, Some(&stale), Some(&due), now),
        Some(Read::Recheck)
    );
    // CollectorReady turns True in this reconcile while waiting for a first event: no read, the
    // last one is restated (its message depends on since when the collector is ready); not when
    // data flows or stopped (their messages do not), nor when CollectorReady stays as it was.
    let waiting = c(st::UNKNOWN, reason::WAITING_FOR_DATA);
    assert!(restates(true, &Serving::Ready, Some(&waiting)));
    for prev in [&flowing, &stale, &not_ready] {
        assert!(!restates(true, &Serving::Ready, Some(prev)), "{}", prev.reason);
    }
    assert!(!restates(false, &Serving::Ready, Some(&waiting)));
    assert!(!restates(true, &Serving::NotReady("x".into()), Some(&waiting)));
}

#[test]
fn the_collector_turning_ready_rewrites_the_waiting_message_in_the_same_write() {
    // A pod ready, CollectorReady not True yet: WaitingForData, "still rolling out".
    let mut s = MLObservabilityPipelineStatus::default();
    step(&mut s, &Serving::Ready, Some(&read(Read::Recheck, None, None)), 1000);
    assert!(flowing(&s).2.contains("rolling out"), "{}", flowing(&s).2);
    // CollectorReady turns True; this reconcile restates that read (same status and reason) and
    // says since when the grace period runs instead of keeping the rollout message.
    let mut ready = status_ready_since(1010);
    ready
        .conditions
        .extend(s.conditions.iter().filter(|c| c.type_ == ty::DATA_FLOWING).cloned());
    step(
        &mut ready,
        &Serving::Ready,
        Some(&read(Read::Restated, None, None)),
        1010,
    );
    let (status, r, msg, since) = flowing(&ready);
    assert_eq!((status.as_str(), r.as_str()), (st::UNKNOWN, reason::WAITING_FOR_DATA));
    assert!(
        msg.contains("the collector is ready since 1970-01-01T00:16:50Z"),
        "{msg}"
    );
    assert_eq!(since, at(1000), "Unknown to Unknown keeps the transition time");
    // The next re-check finds the same: nothing to write.
    let before = ready.clone();
    step(
        &mut ready,
        &Serving::Ready,
        Some(&read(Read::Recheck, None, None)),
        1040,
    );
    assert_eq!(ready, before);
}

#[test]
fn rechecks_double_from_30s_until_the_resync_reads_instead_and_start_over_when_the_status_flips() {
    let t0 = Instant::now();
    let resync = Duration::from_secs(600);
    let (f, u, t) = (Some(st::FALSE), Some(st::UNKNOWN), Some(st::TRUE));
    let mut r = after_read(None, u, u, t0, resync).expect("scheduled");
    assert_eq!(r.delay, Duration::from_secs(30));
    let mut delays = vec![r.delay.as_secs()];
    for _ in 0..6 {
        r = after_read(Some(&r), f, f, t0, resync).expect("scheduled");
        delays.push(r.delay.as_secs());
    }
    // From 600 s on, the resync (every 600 s, at the pipeline's slot within its first 60 s) reads
    // first: the scheduled re-check lies past the next slot, a fallback only.
    assert_eq!(delays, [30, 60, 120, 240, 480, 661, 661]);
    // Flipped (Unknown → False): back to 30 s.
    assert_eq!(
        after_read(Some(&r), u, f, t0, resync).map(|r| r.delay),
        Some(Duration::from_secs(30))
    );
    // Flowing: no re-check, only resyncs.
    assert_eq!(after_read(Some(&r), f, t, t0, resync), None);
    // A resync shorter than 30 s is not possible (minimum 30s), but it would read first anyway.
    assert_eq!(
        after_read(None, u, f, t0, Duration::from_secs(20)).map(|r| r.delay),
        Some(Duration::from_secs(23))
    );
    let next = Recheck {
        last: t0,
        delay: Duration::from_secs(30),
    };
    assert_eq!(
        next_read_in(&next, t0 + Duration::from_secs(10)),
        Duration::from_secs(20)
    );
    assert_eq!(next_read_in(&next, t0 + Duration::from_secs(40)), Duration::ZERO);
}

#[test]
fn the_groups_checked_are_those_that_receive_data() {
    let mut e = crate::desired::effective::test_fixture();
    let names = |e: &Effective| groups(e).into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert_eq!(names(&e), [Signal::Logs, Signal::Metrics]);
    e.metrics.metrics.clear();
    assert_eq!(names(&e), [Signal::Logs], "no selected field: no metrics pipeline");
    e.logs.enabled = false;
    assert!(names(&e).is_empty());
}

#[test]
fn a_recheck_while_waiting_comes_by_the_end_of_the_grace_period_not_a_doubled_delay_later() {
    // Collector ready at 1000 s, grace 60 s: nothing arrived by the read at 1030 s.
    let mut s = status_ready_since(1000);
    step(&mut s, &Serving::Ready, Some(&read(Read::Recheck, None, None)), 1030);
    assert_eq!(flowing(&s).1, reason::WAITING_FOR_DATA);
    let r = Recheck {
        last: Instant::now(),
        delay: Duration::from_secs(60),
    };
    // 30 s of grace left: due one second after it ends, not 60 s from now.
    let capped = due_by_grace_end(r, &s, GRACE, &at(1030));
    assert_eq!(capped.delay, Duration::from_secs(31));
    assert_eq!(capped.last, r.last);
    // A read after the grace period ended (still WaitingForData in status): due in a second.
    assert_eq!(due_by_grace_end(r, &s, GRACE, &at(1090)).delay, Duration::from_secs(1));
    // A shorter delay stays.
    let short = Recheck {
        delay: Duration::from_secs(10),
        ..r
    };
    assert_eq!(
        due_by_grace_end(short, &s, GRACE, &at(1030)).delay,
        Duration::from_secs(10)
    );
    // Once False (no grace involved), the doubling is kept.
    step(&mut s, &Serving::Ready, Some(&read(Read::Recheck, None, None)), 1061);
    assert_eq!(flowing(&s).0, st::FALSE);
    assert_eq!(due_by_grace_end(r, &s, GRACE, &at(1061)).delay, Duration::from_secs(60));
}

#[test]
fn a_read_put_off_by_the_stream_budget_says_the_collector_is_ready_and_keeps_a_finding() {
    let deferred = DataFlowObs {
        read: Read::Deferred(Duration::from_secs(3)),
        grace_ms: GRACE,
        result: Ok(Vec::new()),
    };
    assert!(!deferred.read.asked_aws(), "a put-off read moves no re-check schedule");
    assert!(Read::Resync.asked_aws() && Read::Recheck.asked_aws() && !Read::Restated.asked_aws());
    // The collector was not ready at the last look; now it is, and the read waits its turn.
    let mut s = status_ready_since(0);
    step(
        &mut s,
        &Serving::NotReady("no collector pod is ready (0/2 GPU nodes)".into()),
        None,
        5,
    );
    step(&mut s, &Serving::Ready, Some(&deferred), 10);
    let (status, r, msg, _) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::UNKNOWN, reason::WAITING_FOR_DATA));
    assert!(msg.contains("--stream-reads-per-second"), "{msg}");
    // Put off again: nothing to write.
    let before = s.clone();
    step(&mut s, &Serving::Ready, Some(&deferred), 12);
    assert_eq!(s, before);
    // A finding already made (data flowing) is kept while a later read waits.
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Resync, Some(100), Some(100))),
        100,
    );
    let found = s.clone();
    assert_eq!(flowing(&found).0, st::TRUE);
    step(&mut s, &Serving::Ready, Some(&deferred), 200);
    assert_eq!(s, found);
}

#[test]
fn a_new_collector_whose_read_is_put_off_waits_for_data_in_the_write_that_records_it_ready() {
    // Never any event recorded: the put-off check passes on the recorded readings (none), and
    // the status that records the collector ready says since when data is awaited, as a read
    // finding nothing would (no second write when the read comes).
    let mut s = status_ready_since(100);
    step(
        &mut s,
        &Serving::Ready,
        Some(&read(Read::Deferred(Duration::from_secs(30)), None, None)),
        100,
    );
    let (status, r, msg, _) = flowing(&s);
    assert_eq!((status.as_str(), r.as_str()), (st::UNKNOWN, reason::WAITING_FOR_DATA));
    assert!(msg.contains("the collector is ready since"), "{msg}");
    let after_put_off = s.clone();
    step(&mut s, &Serving::Ready, Some(&read(Read::Recheck, None, None)), 130);
    assert_eq!(s, after_put_off, "the read found what the put-off check said");
    // Past its grace period the restatement would be False: not said without a read.
    let mut late = status_ready_since(0);
    step(
        &mut late,
        &Serving::Ready,
        Some(&read(Read::Deferred(Duration::from_secs(30)), None, None)),
        10_000,
    );
    assert!(flowing(&late).2.contains("checked in turn"), "{:?}", flowing(&late));
}
