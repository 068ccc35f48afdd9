//! The `mlobs` command line. `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::offline::{InputArgs, PlanArgs};

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
    // Boxed: the plan flags make it far larger than the other variants.
    Plan(Box<PlanArgs>),
    /// Run the operator (reconciles both custom resources in the cluster of the kubeconfig or
    /// the in-cluster service account).
    Run(crate::controller::run::RunArgs),
    /// Print which shard of `--shards` reconciles each pipeline (`NAMESPACE/NAME` arguments), as
    /// `mlobs run --shard I/M` computes it: "NAMESPACE/NAME I/M".
    ShardOf {
        /// How many shards the operator runs (the chart's `shards`).
        #[arg(long)]
        shards: u32,
        /// Pipelines as NAMESPACE/NAME.
        #[arg(required = true)]
        pipelines: Vec<String>,
    },
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
        Command::ShardOf { shards, pipelines } => {
            let lines = crate::controller::shard::shard_of_lines(shards, &pipelines)?;
            crate::stdout::write(&lines)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            crate::controller::run::one_malloc_arena();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(crate::controller::run::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
