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
    /// YAML file with one or more MLObservabilityPipelines (and optionally GpuTelemetryPolicies).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// YAML file with the GpuTelemetryPolicy (or policies) that govern the pipelines.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// EKS cluster name for pipelines that set no spec.clusterName.
    #[arg(long, env = "MLOBS_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// AWS region for pipelines that set no spec.region.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// AWS account id used in ARNs (offline there is no STS to ask).
    #[arg(long, default_value = "123456789012")]
    pub account_id: String,
    /// AWS partition (aws, aws-cn, aws-us-gov).
    #[arg(long, default_value = "aws")]
    pub partition: String,
    /// Namespace the operator and a Managed DCGM exporter run in.
    #[arg(long, default_value = "mlobs-system")]
    pub operator_namespace: String,
}

/// Fleet and price assumptions for `plan`.
#[derive(Debug, clap::Args)]
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
                    print!("{}", docs.join("---\n"));
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
