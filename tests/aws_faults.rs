//! AWS faults part-way through the ordered apply: throttling (HTTP 400), HTTP 500, timeouts and
//! AccessDenied, injected per HTTP attempt by an SDK interceptor (tests/support/faults.rs) in
//! front of moto. Through `ensure_all` (every call position, every fault) and through the real
//! controllers (conditions, backoff). After the fault clears there is exactly one key, one
//! alias, two log groups and one role per pipeline, found by their ownership tags.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use mlobs::aws::apply::ensure_all;
use mlobs::aws::{AwsClients, logs};
use mlobs::crd::DriftPolicy;
use mlobs::desired::aws_plan;
use mlobs::desired::effective::Effective;
use serde_json::json;
use support::aws_pipeline::{self, plan_and_opts};
use support::faults::{Fault, Faults, Rule, Target, fast_retries, faulty_clients};
use support::moto;
use support::operator::{NS, Operator};

fn effective(cluster: &str, name: &str) -> Effective {
    aws_pipeline::effective(cluster, name, json!({}))
}

/// What moto holds for one cluster, found by the ownership tags (`mlobs.io/cluster` and
/// `mlobs.io/pipeline`) rather than by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Census {
    /// Enabled (not pending deletion) keys tagged for the cluster.
    keys: usize,
    /// Aliases under `alias/mlobs/<cluster>/`.
    aliases: usize,
    /// Aliases that point at one of the counted keys.
    aliases_on_our_keys: usize,
    /// Tagged log groups.
    groups: usize,
    /// Tagged groups whose retention is the plan's (30 days): the create was finished.
    groups_with_retention: usize,
    /// Tagged roles.
    roles: usize,
    /// Tagged roles with the inline policy and without the `mlobs.io/pending` tag.
    finished_roles: usize,
}

impl Census {
    const CLEAN: Census = Census {
        keys: 1,
        aliases: 1,
        aliases_on_our_keys: 1,
        groups: 2,
        groups_with_retention: 2,
        roles: 1,
        finished_roles: 1,
    };
}

/// One pass over the whole account (paged) for many clusters at once: KMS has no search by tag,
/// so keys are listed once, not once per scenario.
async fn census(c: &AwsClients, clusters: &BTreeSet<String>) -> BTreeMap<String, Census> {
    let mut out: BTreeMap<String, Census> = clusters.iter().map(|k| (k.clone(), Census::default())).collect();
    let tag_of = |tags: &BTreeMap<String, String>| -> Option<String> {
        let cluster = tags.get("mlobs.io/cluster")?;
        (clusters.contains(cluster) && tags.get("mlobs.io/pipeline").is_some()).then(|| cluster.clone())
    };

    let mut our_keys: BTreeMap<String, String> = BTreeMap::new(); // key id -> cluster
    let mut marker = None;
    loop {
        let page = c
            .kms
            .list_keys()
            .limit(1000)
            .set_marker(marker)
            .send()
            .await
            .expect("ListKeys");
        for id in page.keys().iter().filter_map(|k| k.key_id()) {
            let tags: BTreeMap<String, String> = c
                .kms
                .list_resource_tags()
                .key_id(id)
                .send()
                .await
                .expect("ListResourceTags")
                .tags()
                .iter()
                .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
                .collect();
            let Some(cluster) = tag_of(&tags) else { continue };
            let state = c
                .kms
                .describe_key()
                .key_id(id)
                .send()
                .await
                .expect("DescribeKey")
                .key_metadata()
                .and_then(|m| m.key_state().map(|s| s.as_str().to_string()));
            if state.as_deref() != Some("PendingDeletion") {
                out.get_mut(&cluster).expect("cluster").keys += 1;
                our_keys.insert(id.to_string(), cluster);
            }
        }
        match (page.truncated(), page.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => break,
        }
    }

    let mut marker = None;
    loop {
        let page = c
            .kms
            .list_aliases()
            .limit(100)
            .set_marker(marker)
            .send()
            .await
            .expect("ListAliases");
        for a in page.aliases() {
            let Some(name) = a.alias_name() else { continue };
            let Some(cluster) = name
                .strip_prefix("alias/mlobs/")
                .and_then(|rest| rest.split('/').next())
                .filter(|c| clusters.contains(*c))
            else {
                continue;
            };
            let entry = out.get_mut(cluster).expect("cluster");
            entry.aliases += 1;
            if a.target_key_id()
                .and_then(|k| our_keys.get(k))
                .is_some_and(|owner| owner == cluster)
            {
                entry.aliases_on_our_keys += 1;
            }
        }
        match (page.truncated(), page.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => break,
        }
    }

    for cluster in clusters {
        let groups = logs::observe_many(c, &format!("/aws/eks/{cluster}/"))
            .await
            .expect("DescribeLogGroups");
        for g in groups.values() {
            let tags: BTreeMap<String, String> = c
                .logs
                .list_tags_for_resource()
                .resource_arn(&g.arn)
                .send()
                .await
                .expect("ListTagsForResource")
                .tags()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
            if tag_of(&tags).as_deref() == Some(cluster.as_str()) {
                let entry = out.get_mut(cluster).expect("cluster");
                entry.groups += 1;
                entry.groups_with_retention += usize::from(g.retention_days == Some(30));
            }
        }
    }

    let mut marker = None;
    loop {
        let page = c
            .iam
            .list_roles()
            .max_items(1000)
            .set_marker(marker)
            .send()
            .await
            .expect("ListRoles");
        for r in page.roles() {
            let Some(cluster) = clusters.iter().find(|k| r.role_name().contains(k.as_str())) else {
                continue;
            };
            let tags: BTreeMap<String, String> = c
                .iam
                .list_role_tags()
                .role_name(r.role_name())
                .send()
                .await
                .expect("ListRoleTags")
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            if tag_of(&tags).as_deref() != Some(cluster.as_str()) {
                continue;
            }
            let has_policy = c
                .iam
                .get_role_policy()
                .role_name(r.role_name())
                .policy_name(aws_plan::INLINE_POLICY_NAME)
                .send()
                .await
                .is_ok();
            let entry = out.get_mut(cluster).expect("cluster");
            entry.roles += 1;
            entry.finished_roles += usize::from(has_policy && !tags.contains_key("mlobs.io/pending"));
        }
        match (page.is_truncated(), page.marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => break,
        }
    }
    out
}

/// The reason a fault must surface with when the SDK gives up.
fn expected_reason(fault: Fault) -> &'static str {
    match fault {
        Fault::AccessDenied => "AccessDenied",
        _ => "AwsRetryable",
    }
}

/// One failed ensure, as the condition would show it.
#[derive(Debug, Clone)]
struct Failure {
    step: String,
    reason: String,
    message: String,
}

#[derive(Debug)]
struct Outcome {
    name: String,
    cluster: String,
    fault: Fault,
    /// ensure_all runs until ready (the controller's reconciles).
    runs: u32,
    failures: Vec<Failure>,
    injected: usize,
    attempts: usize,
    sdk_retries: usize,
    /// AccessDenied injections that the SDK retried (must be none).
    retried_access_denied: usize,
    /// Operations a fault was injected into.
    faulted_ops: BTreeSet<String>,
    /// How many attempts the rule was to fail (u32::MAX: until cleared).
    times: u32,
    lost_response: bool,
}

/// Runs ensure_all as the controller would until the plan is ready: after a failure the next
/// run knows a create was started (tag scan allowed) and the key id status recorded, if any.
/// An AccessDenied stays until "the platform team fixes the operator's policy" (the test clears it).
async fn scenario(name: String, rules: Vec<Rule>, drift: DriftPolicy) -> Outcome {
    let (fault, times, lost_response) = (rules[0].fault, rules[0].times, rules[0].lost_response);
    let cluster = moto::unique("f");
    let e = effective(&cluster, "train");
    let (plan, mut opts) = plan_and_opts(&e, drift);
    let faults = Faults::new(rules);
    let c = faulty_clients(&faults, fast_retries()).await;
    let mut failures = Vec::new();
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 6, "{name}: not ready after 5 runs: {failures:?}");
        match ensure_all(&c, &plan, &opts).await {
            Ok(out) => {
                assert!(out.ready(&plan), "{name}: {out:?}");
                break;
            }
            Err(err) => {
                failures.push(Failure {
                    step: err.step.to_string(),
                    reason: err.error.reason().to_string(),
                    message: err.to_string(),
                });
                if err.error.reason().as_str() == "AccessDenied" {
                    faults.clear();
                }
                opts.scan_for_key = true;
                if let Some(id) = &err.partial.kms_key_id {
                    opts.known_key_id = Some(id.clone());
                }
            }
        }
    }
    let injected = faults.injected();
    let retried_access_denied = injected
        .iter()
        .filter(|i| i.fault == Fault::AccessDenied && i.attempt > 1)
        .count();
    Outcome {
        name,
        cluster,
        fault,
        runs,
        failures,
        injected: injected.len(),
        attempts: faults.attempts(),
        sdk_retries: faults.sdk_retries(),
        retried_access_denied,
        faulted_ops: injected.iter().map(|i| i.operation.clone()).collect(),
        times,
        lost_response,
    }
}

/// Calls (all, mutating) of a clean first create, counted on a probe pipeline.
async fn clean_create_calls() -> (u32, u32, Vec<String>) {
    let cluster = moto::unique("probe");
    let e = effective(&cluster, "train");
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let faults = Faults::default();
    let c = faulty_clients(&faults, fast_retries()).await;
    ensure_all(&c, &plan, &opts).await.expect("clean create");
    let ops: Vec<String> = c
        .calls
        .snapshot()
        .into_iter()
        .flat_map(|(k, n)| std::iter::repeat_n(k.operation, n as usize))
        .collect();
    (faults.attempts() as u32, c.calls.mutating() as u32, ops)
}

fn check(outcomes: &[Outcome], census: &BTreeMap<String, Census>) -> Vec<String> {
    let mut problems = Vec::new();
    for o in outcomes {
        let got = census.get(&o.cluster).cloned().unwrap_or_default();
        if got != Census::CLEAN {
            problems.push(format!("{}: {got:?}", o.name));
        }
        for f in &o.failures {
            if f.reason != expected_reason(o.fault) {
                problems.push(format!(
                    "{}: reason {} for {:?}: {}",
                    o.name, f.reason, o.fault, f.message
                ));
            }
        }
        if o.retried_access_denied > 0 {
            problems.push(format!("{}: AccessDenied was retried by the SDK", o.name));
        }
        // What each fault must look like from outside: the SDK absorbs one transient failure
        // (except on CreateKey, which is never retried blindly), three surface once as
        // AwsRetryable, AccessDenied surfaces once and waits for the fix.
        let create_key = o.faulted_ops.contains("CreateKey");
        let expected_runs = match (o.fault, o.times) {
            (Fault::AccessDenied, _) => 2,
            (_, 1) if !o.lost_response && !create_key => 1,
            _ => 0, // a lost answer may or may not need a second run: only the census counts
        };
        if expected_runs > 0 && o.runs != expected_runs {
            problems.push(format!(
                "{}: {} runs, expected {expected_runs}: {:?}",
                o.name, o.runs, o.failures
            ));
        }
        if o.times == 3 && !o.lost_response && o.failures.len() != 1 {
            problems.push(format!(
                "{}: expected exactly one surfaced failure: {:?}",
                o.name, o.failures
            ));
        }
        for f in &o.failures {
            let names_op = o.faulted_ops.iter().any(|op| f.message.contains(op.as_str()));
            let names_code = match o.fault {
                Fault::Throttle => f.message.contains("Throttling"),
                Fault::ServerError => f.message.contains("InternalFailure") || f.message.contains("ServiceFailure"),
                Fault::Timeout => f.message.contains("Timeout: ") && f.message.contains("timeout"),
                Fault::AccessDenied => f.message.contains("AccessDenied"),
            };
            let says_what = names_op && names_code;
            if !o.lost_response && !says_what {
                problems.push(format!(
                    "{}: the message does not say what failed: {}",
                    o.name, f.message
                ));
            }
        }
    }
    problems
}

/// One message per fault kind, to show what a condition says.
fn examples(outcomes: &[Outcome]) {
    let mut seen = BTreeSet::new();
    for o in outcomes {
        if let Some(f) = o.failures.first()
            && !o.lost_response
            && seen.insert(o.fault)
        {
            println!("  {:?} -> {} {}: {}", o.fault, f.step, f.reason, f.message);
        }
    }
}

fn summary(label: &str, outcomes: &[Outcome], started: Instant) {
    let runs: u32 = outcomes.iter().map(|o| o.runs).sum();
    let failed_runs: usize = outcomes.iter().map(|o| o.failures.len()).sum();
    let injected: usize = outcomes.iter().map(|o| o.injected).sum();
    let attempts: usize = outcomes.iter().map(|o| o.attempts).sum();
    let retries: usize = outcomes.iter().map(|o| o.sdk_retries).sum();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for f in outcomes.iter().flat_map(|o| &o.failures) {
        *reasons.entry(format!("{} {}", f.step, f.reason)).or_default() += 1;
    }
    println!(
        "{label}: {} scenarios, {injected} faults injected, {attempts} HTTP attempts ({retries} SDK retries), \
         {runs} ensure runs ({failed_runs} failed), failures by step/reason {reasons:?}, {:.1} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
}

async fn run_all(scenarios: Vec<(String, Vec<Rule>, DriftPolicy)>) -> Vec<Outcome> {
    futures::stream::iter(scenarios)
        .map(|(name, rules, drift)| scenario(name, rules, drift))
        .buffer_unordered(4)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_at_every_call_of_the_ordered_apply_converges_to_exactly_one_of_each() {
    let started = Instant::now();
    let (calls, mutating, ops) = clean_create_calls().await;
    println!("a clean first create: {calls} calls ({mutating} mutating), operations {ops:?}");
    let mut scenarios = Vec::new();
    for n in 0..calls {
        for fault in Fault::ALL {
            // 1: absorbed by the SDK's retries; 3: exhausts them (standard mode, 3 attempts).
            let counts: &[u32] = if fault == Fault::AccessDenied {
                &[u32::MAX]
            } else {
                &[1, 3]
            };
            for &k in counts {
                for drift in [DriftPolicy::Correct, DriftPolicy::Report] {
                    scenarios.push((
                        format!("{fault:?}x{k} at call {n} ({drift:?})"),
                        vec![Rule::nth_call(n, fault).times(k)],
                        drift,
                    ));
                }
            }
        }
    }
    let outcomes = run_all(scenarios).await;
    let clusters: BTreeSet<String> = outcomes.iter().map(|o| o.cluster.clone()).collect();
    let counted = census(&moto::clients().await, &clusters).await;
    summary("call sweep", &outcomes, started);
    examples(&outcomes);
    let problems = check(&outcomes, &counted);
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_to_any_write_never_duplicates_or_orphans_a_resource() {
    // The service acted, then the answer was lost (a timeout or a 500 after the write): the SDK
    // retries the write, or the next ensure must find what the first one made.
    let started = Instant::now();
    let (_, mutating, _) = clean_create_calls().await;
    let mut scenarios = Vec::new();
    for m in 0..mutating {
        for fault in [Fault::Timeout, Fault::ServerError] {
            for k in [1, 3] {
                let rule = Rule {
                    target: Target::Mutating,
                    fault,
                    skip: m,
                    times: k,
                    lost_response: true,
                };
                scenarios.push((
                    format!("lost {fault:?}x{k} at write {m}"),
                    vec![rule],
                    DriftPolicy::Report,
                ));
            }
        }
    }
    let outcomes = run_all(scenarios).await;
    let clusters: BTreeSet<String> = outcomes.iter().map(|o| o.cluster.clone()).collect();
    let counted = census(&moto::clients().await, &clusters).await;
    summary("lost responses", &outcomes, started);
    let problems = check(&outcomes, &counted);
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_backs_off_between_retries_with_its_default_settings() {
    // The operator's own clients: standard mode, 3 attempts, 1 s initial backoff with jitter.
    let cluster = moto::unique("backoff");
    let e = effective(&cluster, "train");
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let faults = Faults::new(vec![
        Rule::on("CreateLogGroup", Fault::Throttle).times(2),
        Rule::on("CreateRole", Fault::ServerError).times(2),
        Rule::on("PutRolePolicy", Fault::Timeout).times(2),
    ]);
    let c = faulty_clients(&faults, aws_sdk_kms::config::retry::RetryConfig::standard()).await;
    let started = Instant::now();
    let out = ensure_all(&c, &plan, &opts)
        .await
        .expect("two failures per call are absorbed");
    assert!(out.ready(&plan));
    let gaps = faults.retry_gaps();
    assert_eq!(gaps.len(), 6, "two SDK retries of each faulted call: {gaps:?}");
    let total: Duration = gaps.iter().sum();
    // Each wait is uniform in [0, 2^(n-1) s): six of them summing under 50 ms is ~impossible.
    assert!(
        total > Duration::from_millis(50),
        "no backoff between retries: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_secs(21)),
        "max backoff is 20 s: {gaps:?}"
    );
    println!(
        "default SDK retries: {} attempts for {} operations, backoff between retries {:?} (total {:.2} s of {:.2} s)",
        faults.attempts(),
        c.calls.count(|_| true),
        gaps,
        total.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let clusters = BTreeSet::from([cluster.clone()]);
    assert_eq!(census(&moto::clients().await, &clusters).await[&cluster], Census::CLEAN);
}

// ----- the real controllers (the Operator harness of tests/controller_flow.rs, trimmed) -----

/// This operator's resources in moto.
async fn census_of(op: &Operator) -> Census {
    let clusters = BTreeSet::from([op.cluster.clone()]);
    census(&moto::clients().await, &clusters).await[&op.cluster].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_500s_are_shown_as_retryable_backed_off_and_converge() {
    let faults = Faults::new(vec![
        // Six attempts: the SDK gives up twice (3 attempts each), then the controller's retry
        // after its backoff gets through.
        Rule::on("CreateLogGroup", Fault::Throttle).times(6),
        Rule::on("CreateRole", Fault::ServerError).times(3),
        // Absorbed by the SDK's own retries: never visible in status.
        Rule::on("PutRolePolicy", Fault::Timeout).times(2),
    ]);
    let op = Operator::start_with(faulty_clients(&faults, fast_retries()).await).await;
    let started = Instant::now();
    op.create("throttled", json!({})).await;

    let msg = op
        .wait_reason("throttled", "LogGroupsReady", "False", "AwsRetryable")
        .await;
    assert!(
        msg.contains("CreateLogGroup") && msg.contains("ThrottlingException"),
        "{msg}"
    );
    assert_eq!(
        op.condition_full("throttled", "Ready").map(|c| c.1).as_deref(),
        Some("AwsRetryable")
    );
    assert_eq!(
        op.condition_full("throttled", "Reconciling").map(|c| c.0).as_deref(),
        Some("True"),
        "retryable: on its way, not stalled"
    );
    assert_eq!(
        op.condition_full("throttled", "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert!(
        op.fake.get::<DaemonSet>(Some(NS), "mlobs-throttled").is_none(),
        "no collector before the log groups exist"
    );

    op.ready("throttled").await;
    // Shown for as long as the next reconcile takes: read from the status writes, not polled.
    let written = op.conditions_written("throttled", "IamRoleReady");
    assert!(
        written.iter().any(|(s, r, m)| s == "False"
            && r == "AwsRetryable"
            && m.contains("CreateRole")
            && m.contains("ServiceFailure")),
        "{written:?}"
    );
    let ready = started.elapsed();
    assert_eq!(census_of(&op).await, Census::CLEAN);

    // Reconciles that reached CreateLogGroup: two failed, the third got through. The wait
    // before the third is the controller's per-object backoff.
    let calls = faults.calls_of("CreateLogGroup");
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(calls.len() >= 3, "{gaps:?}");
    assert!(
        gaps.iter().any(|g| *g >= Duration::from_secs(4)),
        "no controller backoff between reconciles: {gaps:?}"
    );
    println!(
        "controller: throttling x6 on CreateLogGroup, 500 x3 on CreateRole, timeout x2 on PutRolePolicy (absorbed \
         by the SDK); CreateLogGroup reconciles {} apart; Ready at {:.1} s after {} reconciles; injected {:?}; \
         {} HTTP attempts, {} SDK retries",
        gaps.iter()
            .map(|g| format!("{:.2} s", g.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        ready.as_secs_f64(),
        op.reconciles(),
        faults.injected_by_op(),
        faults.attempts(),
        faults.sdk_retries(),
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_stalls_without_a_hot_loop_and_heals_once_the_policy_is_fixed() {
    let faults = Faults::new(vec![Rule::on("PutRolePolicy", Fault::AccessDenied).times(u32::MAX)]);
    let op = Operator::start_with(faulty_clients(&faults, fast_retries()).await).await;
    op.create("denied", json!({})).await;
    let msg = op.wait_reason("denied", "IamRoleReady", "False", "AccessDenied").await;
    assert!(msg.contains("PutRolePolicy") && msg.contains("not authorized"), "{msg}");
    op.wait_reason("denied", "Stalled", "True", "AccessDenied").await;
    assert_eq!(
        op.condition_full("denied", "KmsKeyReady").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_eq!(
        op.condition_full("denied", "LogGroupsReady").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert!(op.fake.get::<DaemonSet>(Some(NS), "mlobs-denied").is_none());

    // Terminal: no retry loop against a permission that is still missing. The reconciles that
    // the operator's own status writes trigger come first (under load one can still be running
    // when Stalled shows); a hot loop never goes quiet.
    op.quiet(Duration::from_secs(1)).await;
    let denied_before = faults.injected_by_op().values().sum::<u32>();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let denied_after = faults.injected_by_op().values().sum::<u32>();
    assert!(
        denied_after - denied_before <= 1,
        "{} more AccessDenied calls in 4 s: a hot loop",
        denied_after - denied_before
    );
    let retried = faults.injected().iter().filter(|i| i.attempt > 1).count();
    assert_eq!(retried, 0, "the SDK never retries AccessDenied");

    // The platform team fixes the operator's policy and asks for a reconcile.
    faults.clear();
    op.request_reconcile("denied", 1).await;
    op.ready("denied").await;
    assert_eq!(census_of(&op).await, Census::CLEAN);
    println!(
        "controller: AccessDenied on PutRolePolicy: {denied_after} denied calls in total ({} in the 4 s after the \
         condition), {} reconciles until Ready",
        denied_after - denied_before,
        op.reconciles()
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_key_whose_answer_is_lost_is_found_again_not_duplicated() {
    // KMS makes the key, then the answer times out: the SDK must not send CreateKey again, and
    // the next reconcile finds the key by its tags (status recorded that a create was started).
    let faults = Faults::new(vec![Rule::on("CreateKey", Fault::Timeout).lost_response()]);
    let op = Operator::start_with(faulty_clients(&faults, fast_retries()).await).await;
    op.create("lost", json!({})).await;
    op.ready("lost").await;
    let written = op.conditions_written("lost", "KmsKeyReady");
    assert!(
        written
            .iter()
            .any(|(s, r, m)| s == "False" && r == "AwsRetryable" && m.contains("CreateKey") && m.contains("Timeout")),
        "{written:?}"
    );
    assert_eq!(census_of(&op).await, Census::CLEAN, "one key: the lost one, adopted");
    let status = op.pipeline("lost").and_then(|p| p.status).expect("status");
    assert!(status.aws.and_then(|a| a.kms_key_create_started).is_some());
    println!(
        "controller: CreateKey answer lost: {} CreateKey calls, {} reconciles until Ready",
        faults.injected().iter().filter(|i| i.operation == "CreateKey").count(),
        op.reconciles()
    );
    op.stop().await;
}
