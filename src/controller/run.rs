//! The operator process: flags, logging, clients, leader election, the health/metrics server and
//! graceful SIGTERM handling around [`super::run_controllers`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use futures::FutureExt;
use kube::runtime::events::Reporter;

use super::leader::{LeaderConfig, run_elected};
use super::shard::Shard;
use super::{Metrics, Settings, run_controllers};
use crate::aws::AwsClients;
use crate::desired;

/// Flags of `mlobs run` (each also read from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// EKS cluster name: default for pipelines without spec.clusterName, and the cluster of pod
    /// identity associations.
    #[arg(long, env = "MLOBS_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// AWS region: default for pipelines without spec.region, and the SDK's region.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// AWS account id used in ARNs; asked from STS GetCallerIdentity when absent.
    #[arg(long, env = "MLOBS_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// AWS partition (aws, aws-cn, aws-us-gov); taken from STS when the account id is asked.
    #[arg(long, env = "MLOBS_PARTITION")]
    pub partition: Option<String>,
    /// Namespace the operator runs in: its Lease and the Managed DCGM exporters live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "mlobs-system")]
    pub namespace: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MLOBS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Lease-based leader election, so only one replica reconciles (`--leader-elect=false` to turn off).
    #[arg(long, env = "MLOBS_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Endpoint for every AWS service (VPC endpoints, or an emulator in tests).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// SQS queue URL that an EventBridge rule fills with CloudTrail events of the calls that can
    /// change what mlobs owns (`mlobs plan --operator-policy --drift-events-queue-arn ARN` prints the
    /// rule pattern and queue policy). The leader reads it and reconciles the touched pipelines at
    /// once, instead of finding the change at the next resync. Needs `sqs:ReceiveMessage` and
    /// `sqs:DeleteMessage` on the queue. With `--shard I/M`, `{shard}` in the URL is replaced by
    /// I: each shard reads a queue of its own that receives every event (recommended; `mlobs plan
    /// --shards M` prints one rule target and queue policy per shard). Without `{shard}` the
    /// shards share one queue and pass unmatched messages on, so an event may reach its shard
    /// late or not at all.
    #[arg(long, env = "MLOBS_DRIFT_EVENTS_QUEUE")]
    pub drift_events_queue: Option<String>,
    /// `I/M`: reconcile only the pipelines whose `<namespace>/<name>` hashes (FNV-1a 64, modulo M)
    /// to shard I of M, behind the Lease `mlobs-operator-leader-I-of-M` (one active replica per
    /// shard, the others stand by). Shard 0 also reconciles the GpuTelemetryPolicies. `mlobs
    /// shard-of` tells which shard a pipeline is in. The chart's `shards` value runs one
    /// Deployment per shard. Default 0/1: every pipeline, Lease `mlobs-operator-leader`.
    #[arg(long, env = "MLOBS_SHARD", default_value = "0/1")]
    pub shard: Shard,
    /// Reconciles in flight at once, per controller. Bounds memory and the request rate at startup
    /// (every pipeline is reconciled once when the caches fill); 0 means unbounded. At 1,000
    /// pipelines 16 finished the first reconciles as fast as 32 with a 3 MiB lower peak
    /// (`make bench`, runs M and N in the README).
    #[arg(long, env = "MLOBS_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,
    /// How often each pipeline's KMS key is read in full (DescribeKey, ListResourceTags,
    /// GetKeyRotationStatus, GetKeyPolicy), and its log groups' tags (ListTagsForResource), when
    /// nothing else asks for it, e.g. `24h`, `6h`, `30m` (at least `1m`). Every resync still finds
    /// the key through its alias (one ListAliases for all pipelines) and reads the log groups and
    /// roles in shared listings; the full read also happens when the pipeline is new to this
    /// process, when a drift event names one of its resources, when mlobs changed it, and once
    /// after its data stopped flowing. Pipelines come due spread over the interval. So without
    /// `--drift-events-queue`, a change to a key's rotation, tags or policy (or to a log group's
    /// tags) that does not stop the logs is found within this interval, not within one resync.
    #[arg(long, env = "MLOBS_KMS_CHECK_INTERVAL", default_value = "24h", value_parser = parse_interval)]
    pub kms_check_interval: std::time::Duration,
    /// With `--drift-events-queue`, while the queue is being read (a ReceiveMessage succeeded in
    /// the last 2 minutes): how often the reads that the events stand in for run as a backstop for
    /// a lost event, e.g. `168h` (a week), `48h` (at least `1m`; never more often than `--kms-check-interval`).
    /// These are the reads whose count grows with the pipelines: each pipeline's slower checks
    /// (see `--kms-check-interval`) and the log group listing (DescribeLogGroups, 50 groups a page),
    /// which is otherwise taken once per resync period. An event naming a resource, and every
    /// change mlobs makes, still triggers the reads at once. When the queue cannot be read, the
    /// per-resync listing and `--kms-check-interval` are back within 2 minutes.
    #[arg(long, env = "MLOBS_EVENT_BACKSTOP_INTERVAL", default_value = "168h", value_parser = parse_interval)]
    pub event_backstop_interval: std::time::Duration,
    /// DescribeLogStreams calls a second at the most, for the whole process (decimals allowed,
    /// e.g. `0.5`; `0` removes the limit). The `DataFlowing` check reads the streams of each quiet
    /// log group with it, and AWS limits it to 25 calls a second per account and Region, shared by
    /// everyone in the account. When many collectors become ready at once (a cluster's pipelines
    /// created, or the operator restarted), the checks beyond the budget get reserved times, one
    /// after the other, instead of calling at once; their `DataFlowing` stays `WaitingForData`
    /// until then. Counted in `mlobs_stream_reads_deferred_total`. With several shards the
    /// budget is per replica: give each its share.
    #[arg(long, env = "MLOBS_STREAM_READS_PER_SECOND", default_value_t = 5.0, value_parser = parse_rate)]
    pub stream_reads_per_second: f64,
    /// How often the free memory inside the heap is given back to the system (glibc
    /// `malloc_trim`), e.g. `5s`, `1m`; `0s` turns it off. glibc returns freed memory by itself
    /// only from the top of the heap: what a burst of reconciles frees below memory still in use
    /// stays resident until it is reused. Releasing it keeps the resident set (what a memory limit
    /// counts) near the memory in use. Does nothing without glibc (musl, other systems).
    #[arg(long, env = "MLOBS_HEAP_RELEASE_INTERVAL", default_value = "5s", value_parser = parse_release_interval)]
    pub heap_release_interval: std::time::Duration,
}

/// Calls a second: 0 (no limit), or from 0.01 to 1000.
fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of calls a second (e.g. 5, 0.5; 0: no limit)"))?;
    if r == 0.0 || (0.01..=1000.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!(
            "`{s}`: calls a second must be 0 (no limit) or from 0.01 to 1000"
        ))
    }
}

/// A Go-style duration (`5s`, `1m`); `0s` is allowed (off).
fn parse_release_interval(s: &str) -> Result<std::time::Duration, String> {
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::crd::common::parse_duration_ms(s).map(std::time::Duration::from_millis)
}

/// A Go-style duration of at least one minute (`90s`, `30m`, `24h`).
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let ms = crate::crd::common::parse_duration_ms(s)?;
    if ms < 60_000 {
        return Err(format!("{s:?} is shorter than 1m"));
    }
    Ok(std::time::Duration::from_millis(ms))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,aws=warn"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).try_init();
}

/// Resolves after SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The partition and account of an STS caller ARN (`arn:<partition>:sts::<account>:...`).
pub fn partition_and_account(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.split(':');
    let (_, partition, _, _, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (!partition.is_empty() && !account.is_empty()).then(|| (partition.to_string(), account.to_string()))
}

/// One glibc malloc arena for the whole process, set before the runtime starts its threads.
///
/// glibc gives each thread that allocates an arena of its own (up to 8 per core), and memory a
/// thread frees stays in the arena it came from: the tokio workers and the blocking pool (DNS
/// lookups, file reads) each hold their own free memory. The operator waits on the network, not
/// on malloc, so one arena costs no measurable time and keeps the resident set to what is in use
/// (`make bench` prints the resident set by mapping). Without glibc (musl, other systems) this
/// does nothing.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime starts
    // any thread, and a refused value (0 returned) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the free pages inside the malloc heap back to the system (`malloc_trim(0)`: glibc
/// advises the kernel that the whole free pages of every free block, not only those at the top
/// of the heap, are not needed; they are faulted in again, zeroed, when reused). Returns whether
/// any memory was released; `false` without glibc.
pub fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas to the system;
    // it takes the arena locks like malloc does, so it is safe from any thread.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// [`release_free_heap`] every `every` until `shutdown` (never when `every` is zero).
async fn release_heap_every(every: std::time::Duration, shutdown: impl std::future::Future<Output = ()>) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                release_free_heap();
            }
            _ = &mut shutdown => return,
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    let aws = AwsClients::from_env(args.region.clone(), args.aws_endpoint_url.clone()).await;
    let metrics = Metrics::new(Some(aws.calls.clone()));
    let client = super::client::counting_client(metrics.clone())
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let (partition, account_id) = match (&args.account_id, &args.partition) {
        (Some(a), p) => (p.clone().unwrap_or_else(|| "aws".into()), a.clone()),
        (None, p) => {
            let who = aws
                .sts
                .get_caller_identity()
                .send()
                .await
                .context("sts:GetCallerIdentity (pass --account-id to skip)")?;
            let arn = who.arn().unwrap_or_default();
            let (part, acct) = partition_and_account(arn)
                .with_context(|| format!("cannot read partition and account from caller ARN {arn:?}"))?;
            (p.clone().unwrap_or(part), acct)
        }
    };
    // A standby replica is ready (it serves health and waits for the lease); the leader turns
    // ready again only once its caches are synced.
    let ready = Arc::new(AtomicBool::new(true));
    let shutdown = terminated().shared();
    let server = tokio::spawn(super::metrics::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(release_heap_every(args.heap_release_interval, shutdown.clone()));
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("mlobs-{}", std::process::id()));
    let settings = Settings {
        aws,
        desired: desired::Context {
            cluster_name: args.cluster_name.clone(),
            region: args.region.clone(),
            account_id,
            partition,
            operator_namespace: args.namespace.clone(),
        },
        metrics,
        reporter: Reporter {
            controller: "mlobs".into(),
            instance: Some(identity.clone()),
        },
        drift_events_queue: args.drift_events_queue.clone(),
        shard: args.shard,
        concurrency: args.max_concurrent_reconciles,
        kms_check_interval: args.kms_check_interval,
        event_backstop_interval: args.event_backstop_interval,
        stream_reads_per_second: args.stream_reads_per_second,
    };
    tracing::info!(namespace = %args.namespace, leader_elect = args.leader_elect, shard = %args.shard, "starting mlobs operator");
    let work = run_controllers(client.clone(), settings, ready, shutdown.clone());
    if args.leader_elect {
        let cfg = LeaderConfig::new(args.namespace.clone(), args.shard.lease_name(), identity);
        run_elected(client, cfg, shutdown.clone(), || work).await?;
    } else {
        work.await;
    }
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_rate, parse_release_interval, partition_and_account, release_free_heap};
    use std::time::Duration;

    const PAGE: usize = 4096;

    /// How many of the whole pages inside `[start, start + len)` are resident (`mincore`); a
    /// range no longer mapped counts as not resident. Only asks the kernel: nothing is read.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_pages(start: usize, len: usize) -> usize {
        let first = start.div_ceil(PAGE) * PAGE;
        let end = (start + len) / PAGE * PAGE;
        if end <= first {
            return 0;
        }
        let mut vec = vec![0u8; (end - first) / PAGE];
        // SAFETY: mincore only reports on the pages of the range (page-aligned here) into `vec`,
        // which holds one byte per page; it reads no memory of the range.
        let rc = unsafe { libc::mincore(first as *mut libc::c_void, end - first, vec.as_mut_ptr()) };
        if rc != 0 {
            return 0;
        }
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    /// 32 MiB freed in 32 KiB blocks (below any mmap threshold), each followed by a kept block of
    /// the same size, so that glibc can neither merge them nor give them back from the top of the
    /// heap: their pages stay resident until `release_free_heap` (a no-op here fails the test).
    /// Residency is asked of the freed blocks' own pages, so other tests' memory does not count.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn release_free_heap_returns_freed_blocks_below_memory_in_use() {
        const BLOCKS: usize = 1024;
        const SIZE: usize = 32 * 1024;
        let mut freed = Vec::with_capacity(BLOCKS);
        let mut kept = Vec::with_capacity(BLOCKS);
        for i in 0..BLOCKS {
            freed.push(vec![(i % 251) as u8 + 1; SIZE]);
            kept.push(vec![(i % 13) as u8 + 1; SIZE]);
        }
        assert!(freed.iter().all(|b| b[PAGE] != 0));
        let ranges: Vec<usize> = freed.iter().map(|b| b.as_ptr() as usize).collect();
        let resident = |ranges: &[usize]| ranges.iter().map(|r| resident_pages(*r, SIZE)).sum::<usize>();
        drop(freed);
        let before = resident(&ranges);
        assert!(
            before >= BLOCKS * 4,
            "only {before} pages of the freed blocks were resident before the release"
        );
        assert!(release_free_heap(), "malloc_trim released nothing");
        let after = resident(&ranges);
        assert!(
            after <= before / 10,
            "{after} of {before} resident pages of the freed blocks are still resident after the release"
        );
        assert!(kept.iter().all(|b| b[PAGE] != 0));
    }

    #[test]
    fn the_heap_release_interval_is_a_duration_and_zero_turns_it_off() {
        assert_eq!(parse_release_interval("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_release_interval("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_release_interval("0"), Ok(Duration::ZERO));
        assert!(parse_release_interval("soon").is_err());
    }

    #[test]
    fn the_stream_read_rate_is_zero_or_a_positive_number_of_calls_a_second() {
        assert_eq!(parse_rate("5"), Ok(5.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_rate("0"), Ok(0.0));
        for bad in ["-1", "0.001", "5000", "NaN", "inf", "fast"] {
            let e = parse_rate(bad).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn partition_and_account_come_from_the_caller_arn() {
        assert_eq!(
            partition_and_account("arn:aws-cn:sts::123456789012:assumed-role/r/s"),
            Some(("aws-cn".into(), "123456789012".into()))
        );
        assert_eq!(partition_and_account("not-an-arn"), None);
    }
}
