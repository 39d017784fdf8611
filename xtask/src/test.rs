//! `cargo xtask test`: everything CI checks.

use std::process::Command;

use anyhow::Result;

use crate::{cache, setup, shell};

/// Runs setup, the linters, every test, and the cross-target builds.
pub fn test(lint: bool) -> Result<()> {
    setup::setup()?;
    if lint {
        shell::run(shell::cargo().args(["fmt", "--all", "--check"]))?;
        shell::run(shell::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    shell::run(shell::cargo().args(["test", "--workspace"]))?;
    sdk_tests()?;
    cross_checks()?;
    eprintln!("all checks passed");
    Ok(())
}

/// The server against real clients: the `openai` Python SDK (pytest), the `openai` npm SDK and
/// the web demo in headless Chromium (`node --test`), each starting the `tandem` binary that
/// `cargo test` just built.
fn sdk_tests() -> Result<()> {
    shell::run(shell::cargo().args(["build", "-p", "control-plane", "--bin", "tandem"]))?;
    let bin = shell::root().join("target/debug/tandem");
    shell::run(
        Command::new(cache::python())
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/python",
            ])
            .env("TANDEM_BIN", &bin)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )?;
    shell::run(
        Command::new("node")
            .args(["--test", "--test-concurrency=1"])
            .env("TANDEM_BIN", &bin)
            .current_dir(shell::root().join("tests/node")),
    )
}

/// engine-core must build for the browser, and its SIMD kernels for other instruction sets must
/// compute what the scalar ones do: the kernel tests run as WebAssembly (SIMD128) under Node and
/// as AArch64 (NEON) under QEMU.
fn cross_checks() -> Result<()> {
    let target = shell::root().join("target");
    let env_var = |triple: &str, what: &str| {
        format!(
            "CARGO_TARGET_{}_{what}",
            triple.to_uppercase().replace('-', "_")
        )
    };
    let mut wasm = shell::cargo();
    wasm.args([
        "check",
        "-p",
        "engine-core",
        "--no-default-features",
        "--target",
        "wasm32-unknown-unknown",
        "--target-dir",
    ])
    .arg(target.join("check-wasm32"))
    .env(
        env_var("wasm32-unknown-unknown", "RUSTFLAGS"),
        "-D warnings",
    );
    shell::run(&mut wasm)?;

    let runner = shell::root().join("xtask/assets/wasi-runner.mjs");
    let mut wasi = shell::cargo();
    wasi.args([
        "test",
        "-p",
        "engine-core",
        "--no-default-features",
        "--target",
        "wasm32-wasip1",
        "--test",
        "cpu_kernels",
        "--target-dir",
    ])
    .arg(target.join("wasi"))
    .env(
        env_var("wasm32-wasip1", "RUSTFLAGS"),
        "-D warnings -C target-feature=+simd128",
    )
    .env(
        env_var("wasm32-wasip1", "RUNNER"),
        format!("node --no-warnings {}", runner.display()),
    );
    shell::run(&mut wasi)?;

    let triple = "aarch64-unknown-linux-gnu";
    let mut arm = shell::cargo();
    arm.args([
        "test",
        "-p",
        "engine-core",
        "--target",
        triple,
        "--test",
        "cpu_kernels",
        "--target-dir",
    ])
    .arg(target.join("aarch64"))
    .env(env_var(triple, "RUSTFLAGS"), "-D warnings")
    .env(env_var(triple, "LINKER"), "aarch64-linux-gnu-gcc")
    .env(
        env_var(triple, "RUNNER"),
        "qemu-aarch64 -L /usr/aarch64-linux-gnu",
    );
    shell::run(&mut arm)
}
