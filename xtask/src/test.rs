//! `cargo xtask test`: everything CI checks.

use anyhow::Result;

use crate::{setup, shell};

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
    cross_checks()?;
    eprintln!("all checks passed");
    Ok(())
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
