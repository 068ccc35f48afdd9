//! Lease-based leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: only the
//! holder reconciles, and a holder that cannot renew in time exits so its replacement never races it.
//!
//! Hand-written, after checking the crates (2026-12): `kube-leader-election` 0.44 (the newest)
//! needs kube 4 and acquires and renews with a merge patch without a resourceVersion
//! precondition, so two candidates that read an expired Lease can both believe they lead;
//! `kubert`'s lease manager (0.25) needs kube-client 1.1. kube-runtime 5 has no leader election.
//! This module is ~230 lines besides its tests: a pure [`decide`] (holder, expiry, transitions,
//! unit-tested), acquire/renew by PUT with the read resourceVersion (a 409 is a lost race, as in
//! client-go), release on shutdown, and exit when renewal fails past the lease duration; the e2e
//! failover scenario proves it on the real API server.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

/// Who competes for which Lease, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per replica, usually the pod name.
    pub identity: String,
    /// How long a lease stays valid after its last renewal (client-go default 15s).
    pub lease_duration: Duration,
    /// How often the leader renews and a candidate retries (5s).
    pub renew_every: Duration,
}

impl LeaderConfig {
    /// A config with the usual 15s lease renewed every 5s.
    pub fn new(namespace: impl Into<String>, lease_name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn lease_duration_seconds(&self) -> i32 {
        // Whole seconds, at least one: a zero-second lease would be expired the moment it is written.
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1)
    }
}

/// What to do with the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: write a new renewTime.
    Renew,
    /// Released or expired: become the holder, one more transition.
    TakeOver,
    /// Someone else holds a fresh lease.
    Wait { holder: String },
}

/// Pure decision on the current Lease (`None` when it does not exist).
pub fn decide(lease: Option<&Lease>, cfg: &LeaderConfig, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.as_deref()).unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == cfg.identity {
        return Decision::Renew;
    }
    if is_expired(spec, cfg, now) {
        Decision::TakeOver
    } else {
        Decision::Wait {
            holder: holder.to_owned(),
        }
    }
}

fn is_expired(spec: Option<&LeaseSpec>, cfg: &LeaderConfig, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    // A holder that never wrote a renewTime is judged by when it acquired; with neither, nothing
    // proves it alive.
    let Some(MicroTime(renewed)) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    // The holder's own duration counts, not ours: replicas mid-rollout may be configured differently.
    let seconds = spec
        .lease_duration_seconds
        .unwrap_or_else(|| cfg.lease_duration_seconds());
    renewed
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .is_ok_and(|expires| expires < now)
}

/// The Lease to write for `decision`: `current` keeps its metadata (resourceVersion included), so
/// the PUT fails with 409 if anyone wrote in between.
fn next_lease(current: Option<&Lease>, decision: &Decision, cfg: &LeaderConfig, now: Timestamp) -> Lease {
    let old = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let mut spec = LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration_seconds()),
        renew_time: Some(MicroTime(now)),
        ..old.clone()
    };
    match decision {
        Decision::Renew => {}
        Decision::Create => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(0);
        }
        Decision::TakeOver | Decision::Wait { .. } => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0).saturating_add(1));
        }
    }
    let metadata = match current {
        Some(lease) => lease.metadata.clone(),
        None => ObjectMeta {
            name: Some(cfg.lease_name.clone()),
            namespace: Some(cfg.namespace.clone()),
            ..ObjectMeta::default()
        },
    };
    Lease {
        metadata,
        spec: Some(spec),
    }
}

fn lost_race(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_already_exists() || s.is_conflict())
}

/// One election round: `Ok(true)` when we hold the lease afterwards. Losing a create or update race
/// to another replica is `Ok(false)`, not an error.
pub async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaderConfig, now: Timestamp) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.lease_name).await?;
    let decision = decide(current.as_ref(), cfg, now);
    if matches!(decision, Decision::Wait { .. }) {
        return Ok(false);
    }
    let lease = next_lease(current.as_ref(), &decision, cfg, now);
    let written = match decision {
        Decision::Create => api.create(&PostParams::default(), &lease).await,
        _ => api.replace(&cfg.lease_name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => Ok(true),
        Err(e) if lost_race(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up so a standby takes over at once instead of after `lease_duration`.
async fn release(api: &Api<Lease>, cfg: &LeaderConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.lease_name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    api.replace(&cfg.lease_name, &PostParams::default(), &lease).await?;
    Ok(())
}

/// Why leading stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica holds the lease, or renewals failed for a whole `lease_duration`: the work was
    /// stopped and the process should exit so it restarts as a candidate.
    #[error("lost leadership of lease {namespace}/{name}")]
    LostLeadership { namespace: String, name: String },
}

impl LeaderError {
    /// Short CamelCase reason for events and metrics.
    pub fn reason(&self) -> crate::crd::reason::Reason {
        match self {
            LeaderError::LostLeadership { .. } => crate::crd::reason::Reason::LostLeadership,
        }
    }
}

/// Waits to become leader, then runs `work` while renewing the lease. Returns `work`'s output (after
/// releasing the lease, best effort) when it finishes, or `LostLeadership` (with `work` dropped,
/// i.e. stopped) when the lease could not be kept. `Ok(None)` when `stop` resolves before this
/// replica became leader (a standby that is told to terminate). Dropping this future while
/// waiting holds nothing; dropping it while leading leaves the lease to expire.
pub async fn run_elected<F, Fut, T>(
    client: kube::Client,
    cfg: LeaderConfig,
    stop: impl Future<Output = ()>,
    work: F,
) -> Result<Option<T>, LeaderError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let acquire = async {
        loop {
            let attempt = Instant::now();
            match try_acquire_or_renew(&api, &cfg, Timestamp::now()).await {
                Ok(true) => break attempt,
                Ok(false) => tracing::debug!(lease = %cfg.lease_name, "another replica leads; waiting"),
                Err(e) => tracing::warn!(lease = %cfg.lease_name, error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(cfg.renew_every).await;
        }
    };
    let acquired_at = tokio::select! {
        at = acquire => at,
        () = stop => {
            tracing::info!(lease = %cfg.lease_name, "stopped while waiting for the lease");
            return Ok(None);
        }
    };
    tracing::info!(lease = %cfg.lease_name, identity = %cfg.identity, "became leader");

    let out = tokio::select! {
        out = work() => out,
        lost = keep_renewed(&api, &cfg, acquired_at) => return Err(lost),
    };
    if let Err(e) = release(&api, &cfg).await {
        tracing::warn!(lease = %cfg.lease_name, error = %e, "releasing the lease failed; it will expire");
    } else {
        tracing::info!(lease = %cfg.lease_name, "lease released");
    }
    Ok(Some(out))
}

/// Renews every `renew_every`; returns only when leadership is lost. Each attempt is cut off at the
/// deadline so a hung request cannot keep us working past the point a standby may take over.
async fn keep_renewed(api: &Api<Lease>, cfg: &LeaderConfig, mut renewed_at: Instant) -> LeaderError {
    let lost = || LeaderError::LostLeadership {
        namespace: cfg.namespace.clone(),
        name: cfg.lease_name.clone(),
    };
    loop {
        let deadline = renewed_at + cfg.lease_duration;
        tokio::time::sleep_until((Instant::now() + cfg.renew_every).min(deadline)).await;
        let attempt = Instant::now();
        match tokio::time::timeout_at(deadline, try_acquire_or_renew(api, cfg, Timestamp::now())).await {
            Ok(Ok(true)) => renewed_at = attempt,
            Ok(Ok(false)) => {
                tracing::error!(lease = %cfg.lease_name, "lease taken by another replica");
                return lost();
            }
            Ok(Err(e)) if Instant::now() < deadline => {
                tracing::warn!(lease = %cfg.lease_name, error = %e, "renewing the lease failed; retrying");
            }
            Ok(Err(_)) | Err(_) => {
                tracing::error!(lease = %cfg.lease_name, "could not renew the lease within its duration");
                return lost();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{self, Handle};

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/mlobs/leases";
    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/mlobs/leases/mlobs-leader";

    fn cfg() -> LeaderConfig {
        LeaderConfig::new("mlobs", "mlobs-leader", "me")
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("mlobs-leader".into()),
                namespace: Some("mlobs".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(at(-100))),
                renew_time: Some(MicroTime(renewed)),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions_follow_holder_and_expiry() {
        let decide_now = |lease: Option<Lease>| decide(lease.as_ref(), &cfg(), at(0));
        let wait = Decision::Wait { holder: "other".into() };
        assert_eq!(decide_now(None), Decision::Create);
        assert_eq!(decide_now(Some(lease(Some("me"), at(-60)))), Decision::Renew);
        assert_eq!(decide_now(Some(lease(None, at(0)))), Decision::TakeOver);
        assert_eq!(decide_now(Some(lease(Some(""), at(0)))), Decision::TakeOver);
        assert_eq!(decide_now(Some(lease(Some("other"), at(-5)))), wait);
        // Valid up to and including renewTime + leaseDurationSeconds.
        assert_eq!(decide_now(Some(lease(Some("other"), at(-15)))), wait);
        assert_eq!(decide_now(Some(lease(Some("other"), at(-16)))), Decision::TakeOver);
        let mut no_times = lease(Some("other"), at(0));
        no_times.spec = Some(LeaseSpec {
            holder_identity: Some("other".into()),
            ..LeaseSpec::default()
        });
        assert_eq!(decide_now(Some(no_times)), Decision::TakeOver);
    }

    #[test]
    fn renewing_keeps_acquire_time_and_taking_over_counts_a_transition() {
        let c = cfg();
        let renewed = next_lease(Some(&lease(Some("me"), at(-5))), &Decision::Renew, &c, at(0));
        let spec = renewed.spec.unwrap();
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            (spec.acquire_time, spec.renew_time),
            (Some(MicroTime(at(-100))), Some(MicroTime(at(0))))
        );
        assert_eq!(spec.lease_transitions, Some(3));

        let taken = next_lease(Some(&lease(Some("other"), at(-60))), &Decision::TakeOver, &c, at(0));
        let spec = taken.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(4));
    }

    type MockHandle = Handle<Request<Body>, Response<Body>>;

    fn mock_client() -> (kube::Client, MockHandle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), handle)
    }

    fn acquire_now() -> (tokio::task::JoinHandle<Result<bool, kube::Error>>, MockHandle) {
        let (client, handle) = mock_client();
        let api = Api::namespaced(client, "mlobs");
        (
            tokio::spawn(async move { try_acquire_or_renew(&api, &cfg(), at(0)).await }),
            handle,
        )
    }

    fn reply(code: u16, body: Value) -> Response<Body> {
        let body = Body::from(serde_json::to_vec(&body).unwrap());
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(body)
            .unwrap()
    }

    fn with_lease(lease: &Lease) -> Response<Body> {
        reply(200, serde_json::to_value(lease).unwrap())
    }

    fn with_status(code: u16, reason: &str) -> Response<Body> {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "reason": reason, "code": code, "message": reason});
        reply(code, status)
    }

    /// Asserts the next request's method and path, answers it, and returns its JSON body.
    async fn expect(handle: &mut MockHandle, method: Method, path: &str, answer: Response<Body>) -> Value {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!((request.method(), request.uri().path()), (&method, path));
        let bytes = request.into_body().collect_bytes().await.unwrap();
        send.send_response(answer);
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn an_absent_lease_is_created_with_us_as_holder() {
        let (call, mut handle) = acquire_now();
        expect(&mut handle, Method::GET, PATH, with_status(404, "NotFound")).await;
        let body = expect(&mut handle, Method::POST, LEASES, with_lease(&lease(Some("me"), at(0)))).await;
        assert_eq!(body["metadata"]["name"], "mlobs-leader");
        assert_eq!(body["spec"]["holderIdentity"], "me");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        assert_eq!(body["spec"]["renewTime"], body["spec"]["acquireTime"]);
        assert!(call.await.unwrap().unwrap());
        assert!(handle.next_request().await.is_none(), "no further request");
    }

    #[tokio::test]
    async fn our_lease_is_renewed_by_a_put_with_its_resource_version() {
        let (call, mut handle) = acquire_now();
        let ours = lease(Some("me"), at(-5));
        expect(&mut handle, Method::GET, PATH, with_lease(&ours)).await;
        let body = expect(&mut handle, Method::PUT, PATH, with_lease(&ours)).await;
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(body["spec"]["holderIdentity"], "me");
        assert_eq!(
            body["spec"]["renewTime"],
            serde_json::to_value(MicroTime(at(0))).unwrap()
        );
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        assert!(call.await.unwrap().unwrap());
        assert!(handle.next_request().await.is_none(), "no further request");
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_holder_is_only_read() {
        let (call, mut handle) = acquire_now();
        expect(
            &mut handle,
            Method::GET,
            PATH,
            with_lease(&lease(Some("other"), at(-1))),
        )
        .await;
        assert!(!call.await.unwrap().unwrap());
        assert!(handle.next_request().await.is_none(), "GET only");
    }

    #[tokio::test]
    async fn losing_a_write_race_is_not_leading() {
        let (call, mut handle) = acquire_now();
        expect(&mut handle, Method::GET, PATH, with_status(404, "NotFound")).await;
        expect(&mut handle, Method::POST, LEASES, with_status(409, "AlreadyExists")).await;
        assert!(!call.await.unwrap().unwrap());

        let (call, mut handle) = acquire_now();
        expect(&mut handle, Method::GET, PATH, with_lease(&lease(Some("me"), at(-5)))).await;
        expect(&mut handle, Method::PUT, PATH, with_status(409, "Conflict")).await;
        assert!(!call.await.unwrap().unwrap());
    }

    fn fast() -> LeaderConfig {
        LeaderConfig {
            renew_every: Duration::from_millis(10),
            ..cfg()
        }
    }

    #[tokio::test]
    async fn finished_work_releases_the_lease() {
        let (client, mut handle) = mock_client();
        let run = tokio::spawn(run_elected(client, fast(), futures::future::pending(), || async { 7 }));
        let ours = lease(Some("me"), Timestamp::now());
        expect(&mut handle, Method::GET, PATH, with_status(404, "NotFound")).await;
        expect(&mut handle, Method::POST, LEASES, with_lease(&ours)).await;
        expect(&mut handle, Method::GET, PATH, with_lease(&ours)).await;
        let body = expect(&mut handle, Method::PUT, PATH, with_lease(&ours)).await;
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert!(body["spec"].get("holderIdentity").is_none(), "{body}");
        assert_eq!(run.await.unwrap().unwrap(), Some(7));
    }

    #[tokio::test]
    async fn a_standby_told_to_stop_returns_without_the_lease() {
        let (client, mut handle) = mock_client();
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let run = tokio::spawn(run_elected(
            client,
            fast(),
            async { rx.await.unwrap_or(()) },
            || async { 7 },
        ));
        let theirs = lease(Some("other"), Timestamp::now());
        expect(&mut handle, Method::GET, PATH, with_lease(&theirs)).await;
        tx.send(()).unwrap();
        assert_eq!(run.await.unwrap().unwrap(), None, "a standby never runs the work");
    }

    #[tokio::test]
    async fn a_lease_taken_by_another_stops_the_work() {
        let (client, mut handle) = mock_client();
        let run = tokio::spawn(run_elected(
            client,
            fast(),
            futures::future::pending(),
            futures::future::pending::<()>,
        ));
        let ours = lease(Some("me"), Timestamp::now());
        expect(&mut handle, Method::GET, PATH, with_lease(&ours)).await;
        expect(&mut handle, Method::PUT, PATH, with_lease(&ours)).await;
        let theirs = lease(Some("other"), Timestamp::now());
        expect(&mut handle, Method::GET, PATH, with_lease(&theirs)).await;
        let err = run.await.unwrap().unwrap_err();
        assert_eq!(err.reason().as_str(), "LostLeadership");
        assert_eq!(err.to_string(), "lost leadership of lease mlobs/mlobs-leader");
    }
}
