//! `cargo xtask <task>`: the one entry point for setting up, testing, benchmarking and running
//! Tandem. Tools and models are cached under `~/.cache/tandem` (or `$TANDEM_CACHE`) and never
//! fetched or built twice.

mod bench;
mod bench_gateway;
mod bench_hybrid;
mod cache;
mod cuda;
mod llama;
mod setup;
mod shell;
mod test;
mod wasm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tandem developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: system packages, Rust targets, the Python tools, the default model.
    Setup,
    /// Everything CI checks: formatting, clippy, all tests, the wasm32 build.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Benchmarks (`cpu`: prefill and decode tokens/s, TTFT and memory on the default model;
    /// `serve`: the server's TTFT and aggregate decode tokens/s at 1, 4 and 16 streams;
    /// `webgpu`: prefill and decode tokens/s on the WebGPU adapter, for the default model and a
    /// synthetic 1B-parameter Q4_0 model; `gateway`: requests/s and added latency of the gateway
    /// in front of an upstream that answers at once; `browser`: Tandem's WASM CPU and WebGPU paths
    /// against @wllama/wllama in headless Chromium, and the package's size; `hybrid`: a simulated
    /// population of web clients through `/v1/route`, served in browsers or by the server, against
    /// the same workload on the server alone).
    Bench {
        /// Which benchmark.
        #[arg(default_value = "cpu")]
        which: String,
        /// Also measure llama.cpp's own tools on the same model, side by side.
        #[arg(long)]
        llama_cpp: bool,
        /// The adapter's memory bandwidth in GB/s (`webgpu`): decode speed is then also given as
        /// a share of the memory-bandwidth roofline.
        #[arg(long)]
        bandwidth: Option<f64>,
    },
    /// Builds the browser engine (engine-wasm → npm/wasm/) and the npm package (npm/dist/).
    BuildWasm,
    /// Compiles engine-cuda's kernels with NVRTC into the committed PTX and cubins
    /// (`engine-cuda/kernels/build/`), checking each PTX with `ptxas`.
    CudaKernels,
    /// Serves the default model on http://127.0.0.1:8080 with the web demo at `/`
    /// (`cargo xtask serve -- --port 9000` passes flags on to `tandem serve`).
    Serve {
        /// More arguments for `tandem serve`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Answers a prompt with the default model: `cargo xtask run -- --prompt "..."`.
    Run {
        /// Arguments for `tandem run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::setup(),
        Task::Test { no_lint } => test::test(!no_lint),
        Task::Bench {
            which,
            llama_cpp,
            bandwidth,
        } => bench::bench(&which, llama_cpp, bandwidth),
        Task::BuildWasm => wasm::build(),
        Task::CudaKernels => cuda::build(),
        Task::Serve { args } => {
            setup::setup()?;
            wasm::build()?;
            let model = setup::default_model()?;
            let mut full = vec![
                "serve".to_owned(),
                "--model".to_owned(),
                model.display().to_string(),
                "--host".to_owned(),
                "127.0.0.1".to_owned(),
                "--port".to_owned(),
                "8080".to_owned(),
            ];
            full.extend(args);
            shell::cargo_run_release("control-plane", "tandem", &full)
        }
        Task::Run { args } => {
            let model = setup::default_model()?;
            let mut full = vec![
                "run".to_owned(),
                "--model".to_owned(),
                model.display().to_string(),
            ];
            full.extend(args);
            shell::cargo_run_release("control-plane", "tandem", &full)
        }
    }
}
