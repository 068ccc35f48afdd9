//! The `mlobs` command line. `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a spec that violates its policy (a GitOps gate).
pub const EXIT_POLICY_VIOLATION: u8 = 1;
/// Exit code for input that is not a valid resource.
pub const EXIT_INVALID_INPUT: u8 = 2;

/// mlobs: ML observability pipelines on Amazon EKS from two custom resources.
#[derive(Debug, Parser)]
#[command(name = "mlobs", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as multi-document YAML (or write them into --out).
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print every Kubernetes object a pipeline creates, as YAML `kubectl apply -f -` accepts.
    Render(InputArgs),
    /// Print what a pipeline will create in AWS and Kubernetes, and what it will cost.
    Plan(PlanArgs),
    /// Run the operator (reconciles both custom resources in the cluster of the kubeconfig or
    /// the in-cluster service account).
    Run(crate::controller::run::RunArgs),
}

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
    /// With --operator-policy: KMS aliases of created keys start with this.
    #[arg(long, default_value = "alias/mlobs/", requires = "operator_policy")]
    pub kms_alias_prefix: String,
    /// With --operator-policy: the permissions boundary every collector role must carry (the
    /// GpuTelemetryPolicy's identity.permissionsBoundaryArn). Strongly recommended: without it,
    /// whoever controls the operator can grant a collector role any permission.
    #[arg(long, requires = "operator_policy")]
    pub permissions_boundary_arn: Option<String>,
}

/// `plan` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd { out } => {
            let files = crate::crd::crd_files()?;
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)?;
                    for (name, yaml) in files {
                        std::fs::write(dir.join(name), yaml)?;
                    }
                }
                None => {
                    let docs: Vec<String> = files.into_iter().map(|(_, y)| y).collect();
                    crate::stdout::write(&docs.join("---\n"))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Render(args) => Ok(crate::offline::render(&args)),
        Command::Plan(args) => Ok(crate::offline::plan(&args)),
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(crate::controller::run::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
