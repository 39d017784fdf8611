//! `cargo xtask bench`: Tandem's benchmarks on the default model, optionally beside llama.cpp's.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{setup, shell};

/// Runs benchmark `which`.
pub fn bench(which: &str, llama_cpp: bool, bandwidth: Option<f64>) -> Result<()> {
    let model = setup::default_model()?;
    match which {
        "cpu" => {
            shell::run(shell::cargo().args(["build", "--release", "-p", "control-plane"]))?;
            let tandem = shell::root().join("target/release/tandem");
            println!("## Tandem (`tandem bench --threads 1,2 -p 128,512 -n 128`)\n");
            shell::run(
                Command::new(&tandem)
                    .args(["bench", "--model"])
                    .arg(&model)
                    .args([
                        "--threads",
                        "1,2",
                        "-p",
                        "128,512",
                        "-n",
                        "128",
                        "--reps",
                        "3",
                    ]),
            )?;
            if llama_cpp {
                let bin = llama_cpp_bin()?;
                println!("\n## llama.cpp (`llama-bench -t 1,2 -p 128,512 -n 128 -r 3`)\n");
                shell::run(
                    Command::new(bin.join("llama-bench"))
                        .arg("-m")
                        .arg(&model)
                        .args(["-t", "1,2", "-p", "128,512", "-n", "128", "-r", "3"]),
                )?;
            }
            Ok(())
        }
        "webgpu" => webgpu(&model, bandwidth),
        other => bail!("unknown benchmark {other:?} (available: cpu, webgpu)"),
    }
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
