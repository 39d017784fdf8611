//! `cargo xtask bench`: Tandem's benchmarks on the default model, optionally beside llama.cpp's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{llama, setup, shell};

/// Concurrency levels of the server benchmark.
const SERVE_STREAMS: &str = "1,4,16";
/// Tokens per request in the server benchmark.
const SERVE_TOKENS: &str = "128";
/// Requests per stream and level.
const SERVE_ROUNDS: &str = "2";

/// Runs benchmark `which`.
pub fn bench(which: &str, llama_cpp: bool, bandwidth: Option<f64>) -> Result<()> {
    let model = setup::default_model()?;
    match which {
        "cpu" => {
            shell::run(shell::cargo().args(["build", "--release", "-p", "control-plane"]))?;
            let tandem = shell::root().join("target/release/tandem");
            let tandem_bench = |args: &[&str]| -> Result<()> {
                println!("## Tandem (`tandem bench {}`)\n", args.join(" "));
                shell::run(
                    Command::new(&tandem)
                        .args(["bench", "--model"])
                        .arg(&model)
                        .args(args),
                )
            };
            tandem_bench(&[
                "--threads",
                "1,2",
                "-p",
                "128,512",
                "-n",
                "128",
                "--reps",
                "3",
            ])?;
            // A 1,500-token shared system prompt, cold and warm (prefix caching), one thread count.
            println!();
            tandem_bench(&[
                "--threads",
                "2",
                "-p",
                "0",
                "-n",
                "0",
                "--prefix-cache",
                "1500",
                "--reps",
                "3",
            ])?;
            // Decoding under a JSON schema beside unconstrained decoding (structured outputs).
            println!();
            tandem_bench(&[
                "--threads",
                "1,2",
                "-p",
                "0",
                "-n",
                "128",
                "--structured",
                "--reps",
                "6",
            ])?;
            // Decode deep into the context, in a process of its own so that the peak memory
            // above is that of the short tests (4000 tokens of f16 KV cache take 92 MiB).
            println!();
            tandem_bench(&[
                "--threads",
                "1,2",
                "-p",
                "0",
                "-n",
                "128",
                "-d",
                "4000",
                "--reps",
                "3",
            ])?;
            if llama_cpp {
                let bin = llama_cpp_bin()?;
                println!("\n## llama.cpp (`llama-bench -t 1,2 -p 128,512 -n 128 -r 3`)\n");
                shell::run(
                    Command::new(bin.join("llama-bench"))
                        .arg("-m")
                        .arg(&model)
                        .args(["-t", "1,2", "-p", "128,512", "-n", "128", "-r", "3"]),
                )?;
                println!("\n## llama.cpp (`llama-bench -t 1,2 -p 0 -n 128 -d 4000 -r 3`)\n");
                shell::run(
                    Command::new(bin.join("llama-bench"))
                        .arg("-m")
                        .arg(&model)
                        .args(["-t", "1,2", "-p", "0", "-n", "128", "-d", "4000", "-r", "3"]),
                )?;
            }
            Ok(())
        }
        "serve" => bench_serve(&model, llama_cpp),
        "webgpu" => webgpu(&model, bandwidth),
        "gateway" => crate::bench_gateway::bench(),
        "hybrid" => crate::bench_hybrid::bench(&model),
        "browser" => browser(&model, llama_cpp),
        other => {
            bail!(
                "unknown benchmark {other:?} (available: cpu, serve, webgpu, gateway, browser, hybrid)"
            )
        }
    }
}

/// A server process, killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `GET path` on 127.0.0.1:`port` answers 200.
pub fn wait_ready(port: u16, path: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited with {status} before it was ready");
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut head = [0u8; 12];
            if s.read_exact(&mut head).is_ok() && head.ends_with(b"200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the server on port {port} was not ready after 300 s")
}

/// `cargo xtask bench serve`: aggregate decode throughput and TTFT at 1, 4 and 16 concurrent
/// streams against `tandem serve` (and llama.cpp's `llama-server -np 16` with `--llama-cpp`),
/// measured by `tandem load`.
fn bench_serve(model: &Path, llama_cpp: bool) -> Result<()> {
    shell::run(shell::cargo().args(["build", "--release", "-p", "control-plane"]))?;
    let tandem = shell::root().join("target/release/tandem");
    let load = |port: u16, label: &str, header: bool| -> Result<()> {
        let mut cmd = Command::new(&tandem);
        cmd.args(["load", "--url", &format!("http://127.0.0.1:{port}")])
            .args(["--concurrency", SERVE_STREAMS, "-n", SERVE_TOKENS])
            .args(["--rounds", SERVE_ROUNDS, "--label", label]);
        if header {
            cmd.arg("--header");
        }
        shell::run(&mut cmd)
    };
    println!(
        "## Server (`tandem load --concurrency {SERVE_STREAMS} -n {SERVE_TOKENS} --rounds {SERVE_ROUNDS}`, greedy, end-of-turn ignored)\n"
    );
    let port = free_port()?;
    let mut server = Running(
        Command::new(&tandem)
            .args(["serve", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--max-seqs", "16"])
            .spawn()
            .context("starting tandem serve")?,
    );
    wait_ready(port, "/ready", &mut server.0)?;
    load(port, "tandem", true)?;
    drop(server);
    if llama_cpp {
        let bin = llama::llama_server()?;
        let port = free_port()?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut server = Running(
            Command::new(&bin)
                .arg("-m")
                .arg(model)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["-np", "16", "-c", "32768", "-t", &threads.to_string()])
                .args(["--log-disable"])
                .spawn()
                .context("starting llama-server")?,
        );
        wait_ready(port, "/health", &mut server.0)?;
        load(port, "llama.cpp", false)?;
    }
    Ok(())
}

/// Tandem's browser engine against `@wllama/wllama` in the same headless Chromium: the default
/// model, and with `llama_cpp` also its Q8_0 requantization (by llama.cpp's `llama-quantize`).
fn browser(model: &std::path::Path, llama_cpp: bool) -> Result<()> {
    crate::wasm::build()?;
    let dir = shell::root().join("xtask/bench-browser");
    setup::npm_ci(&dir)?;
    let mut models = vec![model.to_path_buf()];
    if llama_cpp {
        let q8 = crate::cache::dir().join("models/SmolLM2-135M-Instruct.Q8_0-requant.gguf");
        if !q8.exists() {
            shell::run(
                Command::new(crate::llama::llama_quantize()?)
                    .arg("--allow-requantize")
                    .arg(model)
                    .arg(&q8)
                    .arg("Q8_0"),
            )?;
        }
        models.push(q8);
    }
    for (i, m) in models.iter().enumerate() {
        let json = shell::root().join(format!("target/bench-browser-{i}.json"));
        eprintln!("model: {}", m.display());
        shell::run(
            Command::new("node")
                .arg("bench.mjs")
                .arg("--model")
                .arg(m)
                .arg("--json")
                .arg(&json)
                .current_dir(&dir),
        )?;
    }
    Ok(())
}

/// Builds llama.cpp's tools once with `../shared/tools/llama-cpp.sh` and returns their directory.
fn llama_cpp_bin() -> Result<std::path::PathBuf> {
    let script = shell::root().join("../shared/tools/llama-cpp.sh");
    if !script.exists() {
        bail!(
            "{} not found: llama.cpp comparisons need the shared tools beside the checkout",
            script.display()
        );
    }
    let out =
        shell::output(Command::new("bash").arg(&script)).context("building llama.cpp's tools")?;
    Ok(std::path::PathBuf::from(out.trim()))
}

/// The WebGPU backend on whatever adapter wgpu finds: the default model, then a synthetic
/// Llama-3.2-1B-shaped Q4_0 model (written once into the cache) for the bandwidth roofline.
fn webgpu(model: &std::path::Path, bandwidth: Option<f64>) -> Result<()> {
    setup::apt_packages(&["mesa-vulkan-drivers", "libvulkan1"])?;
    let runtime = crate::test::runtime_dir()?;
    let example = |args: &[String]| -> Result<()> {
        shell::run(
            shell::cargo()
                .args([
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "engine-core",
                    "--features",
                    "webgpu",
                    "--example",
                    "webgpu_bench",
                    "--",
                ])
                .args(args)
                .env("XDG_RUNTIME_DIR", &runtime),
        )
    };
    println!("## WebGPU, default model (`-p 128 -n 64 --batch 1,4`)\n");
    example(&[
        "--model".into(),
        model.display().to_string(),
        "-p".into(),
        "128".into(),
        "-n".into(),
        "64".into(),
        "--batch".into(),
        "1,4".into(),
    ])?;
    let synthetic = crate::cache::dir()
        .join("models")
        .join("synthetic-llama-1b-q4_0.gguf");
    println!("\n## WebGPU, synthetic 1.24B-parameter Q4_0 model (`-p 32 -n 16`)\n");
    let mut args = vec![
        "--synthetic-1b".into(),
        synthetic.display().to_string(),
        "-p".into(),
        "32".into(),
        "-n".into(),
        "16".into(),
        "--reps".into(),
        "1".into(),
    ];
    if let Some(bw) = bandwidth {
        args.extend(["--bandwidth".into(), bw.to_string()]);
    }
    example(&args)
}
