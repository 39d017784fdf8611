//! `cargo xtask test`: everything CI checks.

use anyhow::Result;

use crate::{setup, shell};

/// Runs setup, the linters, every test, and the cross-target builds.
pub fn test(lint: bool) -> Result<()> {
    setup::setup()?;
    if lint {
        shell::run(shell::cargo().args(["fmt", "--all", "--check"]))?;
        for features in [&[][..], &["--features", "engine-core/webgpu"][..]] {
            shell::run(
                shell::cargo()
                    .args(["clippy", "--workspace", "--all-targets"])
                    .args(features)
                    .args(["--", "-D", "warnings"]),
            )?;
        }
    }
    // With the WebGPU backend: its tests run on whatever adapter there is (lavapipe in CI) and
    // say so and pass when there is none.
    shell::run(
        shell::cargo()
            .args(["test", "--workspace", "--features", "engine-core/webgpu"])
            .env("XDG_RUNTIME_DIR", runtime_dir()?),
    )?;
    cross_checks()?;
    eprintln!("all checks passed");
    Ok(())
}

/// A private runtime directory for the Vulkan loader and Mesa (`$XDG_RUNTIME_DIR` when set).
pub fn runtime_dir() -> Result<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Ok(dir.into());
    }
    let dir = crate::cache::dir().join("xdg-runtime");
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// engine-core must build for the browser (with and without wasm SIMD, and with the WebGPU
/// backend) and for AArch64 (NEON).
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
        "wasm32-unknown-unknown",
        "check-wasm32-webgpu",
        "-D warnings",
        &["--no-default-features", "--features", "webgpu"],
    )?;
    check(
        "aarch64-unknown-linux-gnu",
        "check-aarch64",
        "-D warnings",
        &[],
    )?;
    Ok(())
}
