//! `mlobs render` and `mlobs plan`: the desired state of pipelines read from files, with no
//! cluster and no AWS account. Uses exactly the builders the controller uses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::aws::operator_policy::{OperatorPolicyOptions, operator_policy};
use crate::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use crate::desired::cost::destinations::Traffic;
use crate::desired::cost::{self, Fleet, Prices};
use crate::desired::{self, Context, Desired};
use crate::input::{self, Document, InputError};
use crate::report::PlanReport;

/// Exit code for a spec that violates its policy (a GitOps gate).
pub const EXIT_POLICY_VIOLATION: u8 = 1;
/// Exit code for input that is not a valid resource.
pub const EXIT_INVALID_INPUT: u8 = 2;

/// Input files shared by `render` and `plan`.
#[derive(Debug, clap::Args)]
pub struct InputArgs {
    /// YAML file with one or more MLObservabilityPipelines (and optionally GpuTelemetryPolicies);
    /// `-` reads standard input.
    // An Option only so that `plan --operator-policy` can go without it; required everywhere else.
    #[arg(short = 'f', long = "file", required = true)]
    pub file: Option<PathBuf>,
    /// YAML file with the GpuTelemetryPolicy (or policies) that govern the pipelines; `-` reads
    /// standard input (then -f must name a file: stdin can be read once).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// EKS cluster name for pipelines that set no spec.clusterName.
    #[arg(long, env = "MLOBS_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// AWS region for pipelines that set no spec.region.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// AWS account id used in ARNs (offline there is no STS to ask) [default: 123456789012;
    /// --operator-policy requires it].
    #[arg(long)]
    pub account_id: Option<String>,
    /// AWS partition (aws, aws-cn, aws-us-gov).
    #[arg(long, default_value = "aws")]
    pub partition: String,
    /// Namespace the operator and a Managed DCGM exporter run in.
    #[arg(long, default_value = "mlobs-system")]
    pub operator_namespace: String,
}

/// The account id ARNs use offline when `--account-id` is not given.
pub const OFFLINE_ACCOUNT_ID: &str = "123456789012";

/// Fleet and price assumptions for `plan`, or the operator's own IAM policy.
#[derive(Debug, clap::Args)]
#[command(mut_arg("file", |a| a.required(false).required_unless_present("operator_policy")))]
pub struct PlanArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// GPU nodes the collector will run on.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// EC2 instance type of the GPU nodes (sets GPUs, vCPUs and memory per node).
    #[arg(long, default_value = "p4d.24xlarge")]
    pub instance_type: String,
    /// GPUs per node, for instance types mlobs does not know or partial allocations.
    #[arg(long)]
    pub gpus_per_node: Option<u32>,
    /// Expected log volume, to estimate ingestion and storage cost.
    #[arg(long)]
    pub log_gb_per_day: Option<f64>,
    /// Container Insights Enhanced price per vCPU-hour used for the comparison.
    #[arg(long, default_value_t = 0.009)]
    pub enhanced_usd_per_vcpu_hour: f64,
    /// Container Insights Enhanced price per GiB-hour of node memory used for the comparison.
    #[arg(long, default_value_t = 0.0003)]
    pub enhanced_usd_per_gib_hour: f64,
    /// Spans per second the pipeline's applications send (all nodes), to estimate X-Ray.
    #[arg(long, default_value_t = 100.0)]
    pub spans_per_second: f64,
    /// AWS X-Ray price per million spans (list: $5.00 per million traces recorded).
    #[arg(long, default_value_t = 5.00)]
    pub xray_usd_per_million_spans: f64,
    /// Amazon Managed Service for Prometheus price per 10 million samples ingested, first tier
    /// (up to 2 billion samples a month; the next tiers keep their list prices).
    #[arg(long, default_value_t = 0.90)]
    pub amp_usd_per_10m_samples: f64,
    /// Datadog price per host-month (Infrastructure Pro, billed annually).
    #[arg(long, default_value_t = 15.00)]
    pub datadog_usd_per_host_month: f64,
    /// S3 Standard storage price per GB-month (the archive's objects before their transition).
    #[arg(long, default_value_t = 0.023)]
    pub s3_standard_usd_per_gb_month: f64,
    /// CloudWatch price per alarm metric-month (standard resolution; each mlobs alarm reads one).
    #[arg(long, default_value_t = 0.10)]
    pub alarm_usd_per_metric_month: f64,
    /// CloudWatch price per dashboard-month (beyond the account's first 3, which are free).
    #[arg(long, default_value_t = 3.00)]
    pub dashboard_usd_per_month: f64,
    /// S3 PUT price per 1,000 requests (the archive writes one object per batch per node).
    #[arg(long, default_value_t = 0.005)]
    pub s3_put_usd_per_1000: f64,
    /// Price per GB-month of the archive's colder class. Default: that class's list price
    /// (STANDARD_IA $0.0125, GLACIER_IR $0.004, GLACIER $0.0036, DEEP_ARCHIVE $0.00099).
    #[arg(long)]
    pub s3_cold_usd_per_gb_month: Option<f64>,
    /// Price per 1,000 lifecycle transitions into the colder class. Default: that class's list
    /// price (STANDARD_IA $0.01, GLACIER_IR $0.02, GLACIER $0.03, DEEP_ARCHIVE $0.05).
    #[arg(long)]
    pub s3_transition_usd_per_1000: Option<f64>,
    /// Raw log bytes per archived byte: OTLP JSON wraps each record, gzip shrinks it.
    #[arg(long, default_value_t = 10.0)]
    pub archive_compression_ratio: f64,
    /// The hot path's Kinesis rates and traffic.
    #[command(flatten)]
    pub kinesis: cost::hot_path::KinesisRates,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Print the least-privilege IAM policy the operator itself needs, as JSON, instead of a
    /// pipeline's plan (no -f needed). Scoped by --account-id (required), --region (required),
    /// --partition, --cluster-name (default: every cluster) and the flags below.
    #[arg(long)]
    pub operator_policy: bool,
    /// With --operator-policy: log group names the operator may create and manage start with this.
    #[arg(long, default_value = "/aws/eks/", requires = "operator_policy")]
    pub log_group_prefix: String,
    /// With --operator-policy: collector role names start with this.
    #[arg(long, default_value = "mlobs-", requires = "operator_policy")]
    pub role_name_prefix: String,
    /// With --operator-policy: IAM path of the collector roles (mlobs creates them at /).
    #[arg(long, default_value = "/", requires = "operator_policy")]
    pub role_path: String,
    /// With --operator-policy: archive bucket names the operator may create and manage start with
    /// this (mlobs derives `mlobs-<cluster>-<namespace>-<pipeline>-<hash>`).
    #[arg(long, default_value = "mlobs-", requires = "operator_policy")]
    pub archive_bucket_prefix: String,
    /// With --operator-policy: hot path Kinesis stream names the operator may create and manage
    /// start with this (mlobs derives `mlobs-<cluster>-<namespace>-<pipeline>-hot`).
    #[arg(long, default_value = "mlobs-", requires = "operator_policy")]
    pub hot_path_stream_prefix: String,
    /// With --operator-policy: KMS aliases of created keys start with this.
    #[arg(long, default_value = "alias/mlobs/", requires = "operator_policy")]
    pub kms_alias_prefix: String,
    /// With --operator-policy: the permissions boundary every collector role must carry (the
    /// GpuTelemetryPolicy's identity.permissionsBoundaryArn). Strongly recommended: without it,
    /// whoever controls the operator can grant a collector role any permission.
    #[arg(long, requires = "operator_policy")]
    pub permissions_boundary_arn: Option<String>,
    /// With --operator-policy: the SQS queue of `mlobs run --drift-events-queue`; the policy may
    /// receive and delete its messages. `{shard}` in it stands for each shard's index (one queue
    /// per shard, see --shards).
    #[arg(long, requires = "operator_policy")]
    pub drift_events_queue_arn: Option<String>,
    /// With --drift-events-queue-arn: the operator's shard count M (`mlobs run --shard I/M`, the
    /// chart's `shards`). With `{shard}` in the queue ARN, the policy names the M queues and
    /// --drift-events prints one rule and queue policy per shard: every event reaches every
    /// shard's queue.
    #[arg(long, default_value_t = 1, requires = "drift_events_queue_arn",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::controller::shard::MAX_SHARDS)))]
    pub shards: u32,
    /// With --drift-events-queue-arn: print one JSON object with the operator policy, the
    /// EventBridge rule to create (name and event pattern) and the queue's resource policy,
    /// instead of the policy alone.
    #[arg(long, requires = "drift_events_queue_arn")]
    pub drift_events: bool,
}

/// `plan` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Pipelines and policies from `-f` and `--policy`.
struct Inputs {
    pipelines: Vec<MLObservabilityPipeline>,
    policies: Vec<GpuTelemetryPolicy>,
}

fn load(args: &InputArgs, file: &Path) -> Result<Inputs, InputError> {
    let mut docs = input::load_file(file)?;
    if let Some(p) = &args.policy {
        docs.extend(input::load_file(p)?);
    }
    let mut inputs = Inputs {
        pipelines: vec![],
        policies: vec![],
    };
    for d in docs {
        match d {
            Document::Pipeline(p) => inputs.pipelines.push(*p),
            Document::Policy(p) => inputs.policies.push(*p),
        }
    }
    Ok(inputs)
}

fn context(args: &InputArgs) -> Context {
    Context {
        cluster_name: args.cluster_name.clone(),
        region: args.region.clone(),
        account_id: args.account_id.clone().unwrap_or_else(|| OFFLINE_ACCOUNT_ID.into()),
        partition: args.partition.clone(),
        operator_namespace: args.operator_namespace.clone(),
    }
}

/// The policy that governs `p`: its `policyRef`, else the one default policy, else none.
/// Offline, a named policy that was not given is an error: planning without it would skip its
/// guardrails silently.
pub fn governing_policy<'a>(
    p: &MLObservabilityPipeline,
    policies: &'a [GpuTelemetryPolicy],
) -> Result<Option<&'a GpuTelemetryPolicy>, String> {
    match &p.spec.policy_ref {
        Some(name) => policies
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(name))
            .map(Some)
            .ok_or_else(|| {
                format!("spec.policyRef: GpuTelemetryPolicy {name:?} was not given (pass it with --policy)")
            }),
        None => {
            let defaults: Vec<&GpuTelemetryPolicy> = policies.iter().filter(|x| x.spec.default == Some(true)).collect();
            match defaults.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(one)),
                _ => Err("spec.policyRef: absent, and more than one policy has default: true (DefaultConflict)".into()),
            }
        }
    }
}

fn pipeline_name(p: &MLObservabilityPipeline) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Builds every pipeline; on failure prints why and returns the exit code.
fn build_all(args: &InputArgs) -> Result<(Inputs, Vec<Desired>), ExitCode> {
    // clap requires -f for render and for plan without --operator-policy.
    let Some(path) = args.file.as_deref() else {
        eprintln!("error: -f/--file is required");
        return Err(ExitCode::from(EXIT_INVALID_INPUT));
    };
    if input::is_stdin(path) && args.policy.as_deref().is_some_and(input::is_stdin) {
        eprintln!(
            "error: -f - and --policy - both read standard input, which can be read once: put the documents in one stream (`-f -` alone) or give one of them as a file"
        );
        return Err(ExitCode::from(EXIT_INVALID_INPUT));
    }
    let inputs = load(args, path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_INVALID_INPUT)
    })?;
    let file = input::display_name(path);
    if inputs.pipelines.is_empty() {
        eprintln!("error: {file}: no MLObservabilityPipeline found");
        return Err(ExitCode::from(EXIT_INVALID_INPUT));
    }
    let ctx = context(args);
    let mut built = vec![];
    for p in &inputs.pipelines {
        let policy = governing_policy(p, &inputs.policies).map_err(|e| {
            eprintln!("error: {file}: MLObservabilityPipeline {}: {e}", pipeline_name(p));
            ExitCode::from(EXIT_INVALID_INPUT)
        })?;
        let d = desired::build(p, policy, &ctx).map_err(|e| {
            eprintln!("error: {file}: MLObservabilityPipeline {}: {e}", pipeline_name(p));
            ExitCode::from(EXIT_INVALID_INPUT)
        })?;
        built.push(d);
    }
    Ok((inputs, built))
}

/// Every Kubernetes object of the pipelines (and of Managed exporters of the given policies),
/// as multi-document YAML.
pub fn render_yaml(inputs_policies: &[GpuTelemetryPolicy], built: &[Desired], operator_namespace: &str) -> String {
    let mut docs: Vec<String> = vec![];
    let mut push = |v: Result<String, serde_saphyr::SerializeError>| {
        if let Ok(s) = v {
            docs.push(s);
        }
    };
    for d in built {
        let o = &d.objects;
        push(serde_saphyr::to_string(&o.service_account));
        push(serde_saphyr::to_string(&o.cluster_role));
        push(serde_saphyr::to_string(&o.cluster_role_binding));
        push(serde_saphyr::to_string(&o.config_map));
        if let Some(h) = &o.hot_path {
            push(serde_saphyr::to_string(&h.service_account));
            push(serde_saphyr::to_string(&h.config_map));
            push(serde_saphyr::to_string(&h.daemon_set));
        }
        let e = &d.effective;
        if e.dashboards.grafana {
            push(serde_saphyr::to_string(&desired::dashboards::grafana::config_map(e)));
        }
        // Applied by the operator only where the cluster serves monitoring.coreos.com/v1.
        if let Some(a) = &e.alerts {
            push(serde_saphyr::to_string(&desired::alerts::prometheus::prometheus_rule(
                e, a,
            )));
        }
        push(serde_saphyr::to_string(&o.daemon_set));
    }
    for pol in inputs_policies {
        if let Some(x) = desired::dcgm_exporter::from_policy(pol, operator_namespace) {
            let (ds, cm, svc) = desired::dcgm_exporter::build(&x, None);
            push(serde_saphyr::to_string(&cm));
            push(serde_saphyr::to_string(&ds));
            push(serde_saphyr::to_string(&svc));
        }
    }
    docs.join("---\n")
}

fn print_violations(built: &[Desired]) -> bool {
    let mut any = false;
    for d in built {
        for v in &d.violations {
            eprintln!("violation: {}: {v}", d.effective.pipeline_id());
            any = true;
        }
    }
    any
}

/// `mlobs render`.
pub fn render(args: &InputArgs) -> ExitCode {
    let (inputs, built) = match build_all(args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if print_violations(&built) {
        eprintln!("error: policy violations: nothing rendered");
        return ExitCode::from(EXIT_POLICY_VIOLATION);
    }
    print_or_fail(&render_yaml(&inputs.policies, &built, &args.operator_namespace))
        .map_or_else(|code| code, |()| ExitCode::SUCCESS)
}

/// Prints to stdout (a reader closing the pipe early is fine); any other write error is exit 1.
fn print_or_fail(text: &str) -> Result<(), ExitCode> {
    crate::stdout::write(text).map_err(|e| {
        eprintln!("error: writing to stdout: {e}");
        ExitCode::FAILURE
    })
}

/// The destinations' rate and traffic flags are amounts: finite and not negative.
fn check_amounts(args: &PlanArgs) -> Result<(), String> {
    let flags = [
        ("--spans-per-second", args.spans_per_second),
        ("--xray-usd-per-million-spans", args.xray_usd_per_million_spans),
        ("--amp-usd-per-10m-samples", args.amp_usd_per_10m_samples),
        ("--datadog-usd-per-host-month", args.datadog_usd_per_host_month),
        ("--s3-standard-usd-per-gb-month", args.s3_standard_usd_per_gb_month),
        ("--s3-put-usd-per-1000", args.s3_put_usd_per_1000),
        (
            "--s3-cold-usd-per-gb-month",
            args.s3_cold_usd_per_gb_month.unwrap_or(0.0),
        ),
        (
            "--s3-transition-usd-per-1000",
            args.s3_transition_usd_per_1000.unwrap_or(0.0),
        ),
        ("--archive-compression-ratio", args.archive_compression_ratio),
        ("--alarm-usd-per-metric-month", args.alarm_usd_per_metric_month),
        ("--dashboard-usd-per-month", args.dashboard_usd_per_month),
    ];
    let flags = flags.into_iter().chain(args.kinesis.flags());
    match flags.into_iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
        Some((flag, v)) => Err(format!("{flag}: {v} is not an amount (a finite number, at least 0)")),
        None => Ok(()),
    }
}

/// The plan reports of every pipeline.
pub fn plan_reports(args: &PlanArgs, built: &[Desired]) -> Result<Vec<PlanReport>, String> {
    check_amounts(args)?;
    let fleet = Fleet {
        nodes: args.nodes,
        instance_type: args.instance_type.clone(),
        gpus_per_node: args.gpus_per_node,
    };
    let list = Prices::default();
    let [_, amp_tier2, amp_tier3] = list.amp_usd_per_10m_samples;
    let prices = Prices {
        enhanced_usd_per_vcpu_hour: args.enhanced_usd_per_vcpu_hour,
        enhanced_usd_per_gib_hour: args.enhanced_usd_per_gib_hour,
        xray_usd_per_million_spans: args.xray_usd_per_million_spans,
        amp_usd_per_10m_samples: [args.amp_usd_per_10m_samples, amp_tier2, amp_tier3],
        datadog_usd_per_host_month: args.datadog_usd_per_host_month,
        s3_standard_usd_per_gb_month: args.s3_standard_usd_per_gb_month,
        s3_put_usd_per_1000: args.s3_put_usd_per_1000,
        s3_cold_usd_per_gb_month: args.s3_cold_usd_per_gb_month,
        s3_transition_usd_per_1000: args.s3_transition_usd_per_1000,
        archive_compression_ratio: args.archive_compression_ratio,
        kinesis: args.kinesis.clone(),
        alarm_usd_per_metric_month: args.alarm_usd_per_metric_month,
        dashboard_usd_per_month: args.dashboard_usd_per_month,
        ..list
    };
    let traffic = Traffic {
        spans_per_second: args.spans_per_second,
        log_gb_per_day: args.log_gb_per_day,
    };
    built
        .iter()
        .map(|d| {
            let estimate =
                cost::estimate(&d.effective, &fleet, &prices, args.log_gb_per_day).map_err(|e| e.to_string())?;
            Ok(PlanReport::priced(d, estimate, &prices, &traffic))
        })
        .collect()
}

/// The operator-policy options `plan --operator-policy` was given.
pub fn operator_policy_options(args: &PlanArgs) -> Result<OperatorPolicyOptions, String> {
    let i = &args.input;
    let account = i
        .account_id
        .clone()
        .ok_or("--operator-policy needs --account-id: the policy names the account's resources")?;
    let region = i
        .region
        .clone()
        .ok_or("--operator-policy needs --region (or AWS_REGION)")?;
    let opts = OperatorPolicyOptions {
        partition: i.partition.clone(),
        log_group_prefix: args.log_group_prefix.clone(),
        role_name_prefix: args.role_name_prefix.clone(),
        role_path: args.role_path.clone(),
        kms_alias_prefix: args.kms_alias_prefix.clone(),
        archive_bucket_prefix: args.archive_bucket_prefix.clone(),
        hot_path_stream_prefix: args.hot_path_stream_prefix.clone(),
        permissions_boundary_arn: args.permissions_boundary_arn.clone(),
        cluster_name: i.cluster_name.clone(),
        drift_events_queue_arns: (args.drift_events_queue_arn.iter())
            .flat_map(|q| shard_queue_arns(q, args.shards))
            .collect(),
        ..OperatorPolicyOptions::new(account, region)
    };
    match opts.problems().as_slice() {
        [] => Ok(opts),
        problems => Err(problems.join("; ")),
    }
}

/// The rule name `--drift-events` prints (with one queue per shard: `<this>-<I>`).
pub const DRIFT_EVENTS_RULE: &str = "mlobs-drift-events";

/// The queue ARNs of `arn`: with `{shard}`, one per shard of `shards` (what each replica of
/// `mlobs run --shard I/M --drift-events-queue` with `{shard}` reads); else `arn`, shared.
pub fn shard_queue_arns(arn: &str, shards: u32) -> Vec<String> {
    use crate::controller::drift_events::SHARD_PLACEHOLDER;
    if arn.contains(SHARD_PLACEHOLDER) {
        (0..shards.max(1))
            .map(|i| arn.replace(SHARD_PLACEHOLDER, &i.to_string()))
            .collect()
    } else {
        vec![arn.to_string()]
    }
}

/// The EventBridge rule `name` that delivers drift events to `queue_arn`, and that queue's policy.
fn rule_and_queue_policy(opts: &OperatorPolicyOptions, name: &str, queue_arn: &str) -> serde_json::Value {
    use crate::aws::drift_events::{event_pattern, queue_policy};
    let region = queue_arn.split(':').nth(3).unwrap_or_default();
    let rule_arn = format!("arn:{}:events:{region}:{}:rule/{name}", opts.partition, opts.account_id);
    serde_json::json!({
        "eventRule": {
            "name": name,
            "region": region,
            "eventPattern": event_pattern(),
            "target": queue_arn,
            "note": "IAM events reach EventBridge in us-east-1 only: create this rule (and its queue) there too, or forward us-east-1 events to this region's bus",
        },
        "queuePolicy": queue_policy(queue_arn, &rule_arn),
    })
}

/// `--drift-events`: the operator policy, the EventBridge rule and the queue policy, together.
/// With one queue per shard: `shards`, each shard's queue with its own rule (the same pattern:
/// every event reaches every shard, which keeps those of its own pipelines) and queue policy.
fn drift_events_documents(opts: &OperatorPolicyOptions, policy: serde_json::Value) -> serde_json::Value {
    match opts.drift_events_queue_arns.as_slice() {
        [one] => {
            let mut doc = rule_and_queue_policy(opts, DRIFT_EVENTS_RULE, one);
            doc["operatorPolicy"] = policy;
            doc
        }
        per_shard => {
            let shards: Vec<serde_json::Value> = (per_shard.iter().enumerate())
                .map(|(i, q)| {
                    let mut doc = rule_and_queue_policy(opts, &format!("{DRIFT_EVENTS_RULE}-{i}"), q);
                    doc["shard"] = serde_json::json!(i);
                    doc["queueArn"] = serde_json::json!(q);
                    doc
                })
                .collect();
            serde_json::json!({ "operatorPolicy": policy, "shards": shards })
        }
    }
}

/// `mlobs plan --operator-policy`: the policy JSON on stdout.
fn print_operator_policy(args: &PlanArgs) -> ExitCode {
    let opts = match operator_policy_options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let policy = operator_policy(&opts);
    let doc = if args.drift_events && !opts.drift_events_queue_arns.is_empty() {
        drift_events_documents(&opts, policy)
    } else {
        policy
    };
    match serde_json::to_string_pretty(&doc) {
        Ok(s) => print_or_fail(&format!("{s}\n")).map_or_else(|code| code, |()| ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mlobs plan`.
pub fn plan(args: &PlanArgs) -> ExitCode {
    if args.operator_policy {
        return print_operator_policy(args);
    }
    let (_, built) = match build_all(&args.input) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let reports = match plan_reports(args, &built) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    match args.output {
        Output::Json => match serde_json::to_string_pretty(&reports) {
            Ok(s) => {
                if let Err(code) = print_or_fail(&format!("{s}\n")) {
                    return code;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Output::Text => {
            let texts: Vec<String> = reports.iter().map(PlanReport::to_text).collect();
            if let Err(code) = print_or_fail(&texts.join("\n")) {
                return code;
            }
        }
    }
    if reports.iter().any(|r| !r.violations.is_empty()) {
        ExitCode::from(EXIT_POLICY_VIOLATION)
    } else {
        ExitCode::SUCCESS
    }
}
