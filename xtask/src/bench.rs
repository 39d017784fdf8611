//! `cargo xtask bench`: Tandem's benchmarks on the default model, optionally beside llama.cpp's.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{setup, shell};

/// Runs benchmark `which`.
pub fn bench(which: &str, llama_cpp: bool) -> Result<()> {
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
        other => bail!("unknown benchmark {other:?} (available: cpu)"),
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
