//! `tandem`: run a model from the command line, benchmark it, or serve it over an
//! OpenAI-compatible API with continuous batching.

mod api;
mod backends;
mod bench;
mod config;
mod load;
mod loadgen;
mod memory;
mod metrics;
mod openai_types;
mod progress;
mod run;
mod server;
mod shutdown;
mod source;
mod sse;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Tandem: hybrid browser/server LLM inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer one prompt, streaming the reply.
    Run(run::RunArgs),
    /// Measure prefill and decode speed, time to first token and memory.
    Bench(bench::BenchArgs),
    /// Serve models over an OpenAI-compatible HTTP API (and the web demo at /).
    #[command(args_override_self = true)]
    Serve(config::ServeArgs),
    /// Load-test an OpenAI-compatible server with concurrent streams (TTFT, decode tok/s).
    Load(loadgen::LoadArgs),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => rt.block_on(run::run(args)),
        Command::Bench(args) => rt.block_on(bench::bench(args)),
        Command::Serve(args) => rt.block_on(server::run(args)),
        Command::Load(args) => rt.block_on(loadgen::load(args)),
    }
}
