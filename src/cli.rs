//! The `mlobs` command line. `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::input::{self, Document, InputError};

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
    Plan(InputArgs),
    /// Run the operator.
    Run,
}

/// Input files shared by `render` and `plan`.
#[derive(Debug, clap::Args)]
pub struct InputArgs {
    /// YAML file with one or more MLObservabilityPipelines (and optionally a GpuTelemetryPolicy).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// YAML file with the GpuTelemetryPolicy that governs the pipelines.
    #[arg(long)]
    pub policy: Option<PathBuf>,
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
        Command::Render(args) | Command::Plan(args) => {
            let docs = match load_inputs(&args) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(EXIT_INVALID_INPUT));
                }
            };
            eprintln!("{} valid document(s); output is not implemented yet", docs.len());
            Ok(ExitCode::FAILURE)
        }
        Command::Run => {
            eprintln!("mlobs run: not implemented yet");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads `-f` and `--policy`, validating every document.
pub fn load_inputs(args: &InputArgs) -> Result<Vec<Document>, InputError> {
    let mut docs = input::load_file(&args.file)?;
    if let Some(p) = &args.policy {
        docs.extend(input::load_file(p)?);
    }
    Ok(docs)
}
