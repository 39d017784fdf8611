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

/// engine-core must build for the browser (with and without wasm SIMD) and for AArch64 (NEON).
fn cross_checks() -> Result<()> {
    let target = shell::root().join("target");
    let check = |triple: &str, dir: &str, rustflags: &str, extra: &[&str]| -> Result<()> {
        let mut cmd = shell::cargo();
        cmd.args([
            "check",
            "-p",
            "engine-core",
            "--target",
            triple,
            "--target-dir",
        ])
        .arg(target.join(dir))
        .args(extra);
        let var = format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            triple.to_uppercase().replace('-', "_")
        );
        cmd.env(var, rustflags);
        shell::run(&mut cmd)
    };
    check(
        "wasm32-unknown-unknown",
        "check-wasm32",
        "-D warnings",
        &["--no-default-features"],
    )?;
    check(
        "wasm32-unknown-unknown",
        "check-wasm32-simd",
        "-D warnings -C target-feature=+simd128",
        &["--no-default-features"],
    )?;
    check(
        "aarch64-unknown-linux-gnu",
        "check-aarch64",
        "-D warnings",
        &[],
    )?;
    Ok(())
}
