//! `tandem`: run a model from the command line, benchmark it, load-test a server, or serve
//! models and upstreams over an OpenAI-compatible API. This file only dispatches; the work is in
//! the `control_plane` library and the commands under `cli/`.

mod cli;

/// mimalloc: the server allocates many small short-lived buffers per request (headers, JSON,
/// chunks), which glibc's allocator serves markedly slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Run(cli::run::RunArgs),
    /// Measure prefill and decode speed, time to first token and memory.
    Bench(cli::bench::BenchArgs),
    /// Serve models and upstreams over an OpenAI-compatible HTTP API (and the web demo at /).
    #[command(args_override_self = true)]
    Serve(Box<control_plane::config::ServeArgs>),
    /// Load-test an OpenAI-compatible server with concurrent streams (TTFT, decode tok/s).
    Load(cli::loadgen::LoadArgs),
    /// Measure requests per second and latency percentiles of short requests to a server.
    Throughput(cli::throughput::ThroughputArgs),
    /// A minimal OpenAI-compatible server that answers at once (to measure the gateway).
    EchoUpstream(cli::echo_upstream::EchoArgs),
    /// Manage tiers, tenants and API keys, and read usage and invoices, through a server's admin
    /// API.
    Admin(cli::admin::AdminArgs),
    /// Simulate a population of web clients against a server, first all on the server, then
    /// routed by `/v1/route` as the browser package does, and report from the ledger what the
    /// hybrid saves.
    SimulateClients(cli::simulate::SimulateArgs),
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
    // One worker thread per core (`TOKIO_WORKER_THREADS` overrides it).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => rt.block_on(cli::run::run(args)),
        Command::Bench(args) => rt.block_on(cli::bench::bench(args)),
        Command::Serve(args) => Ok(rt.block_on(control_plane::server::run(*args))?),
        Command::Load(args) => rt.block_on(cli::loadgen::load(args)),
        Command::Throughput(args) => rt.block_on(cli::throughput::run(args)),
        Command::EchoUpstream(args) => rt.block_on(cli::echo_upstream::run(args)),
        Command::Admin(args) => rt.block_on(cli::admin::run(args)),
        Command::SimulateClients(args) => rt.block_on(cli::simulate::run(args)),
    }
}
