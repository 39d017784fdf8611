//! `cargo xtask test`: everything CI checks.

use std::process::Command;

use anyhow::Result;

use crate::{cache, setup, shell};

/// Runs setup, the linters, every test, and the cross-target builds.
pub fn test(lint: bool) -> Result<()> {
    setup::setup()?;
    // The CUDA kernels embedded in engine-cuda are those its sources compile to.
    crate::cuda::check()?;
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
        // The browser engine exists only for wasm32: its default build and its threaded one (whose
        // code lints the same without the atomics its real build adds).
        for features in [
            &[][..],
            &["--no-default-features", "--features", "threads"][..],
        ] {
            shell::run(
                shell::cargo()
                    .args(["clippy", "-p", "engine-wasm", "--target"])
                    .arg("wasm32-unknown-unknown")
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
    // The browser engine and the npm package, which the browser tests below load.
    crate::wasm::build()?;
    package_tests()?;
    sdk_tests()?;
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

/// The npm package's own checks: types, and its unit tests (routing rules, stream parsing, the
/// client against fake servers and engines).
fn package_tests() -> Result<()> {
    let dir = shell::root().join("npm");
    shell::run(
        Command::new("npm")
            .args(["run", "typecheck"])
            .current_dir(&dir),
    )?;
    shell::run(Command::new("npm").args(["test"]).current_dir(&dir))?;
    // The example app builds against the package with Vite, worker and wasm included.
    let example = dir.join("examples/vite");
    setup::npm_ci(&example)?;
    shell::run(
        Command::new("npm")
            .args(["run", "build"])
            .current_dir(&example),
    )?;
    let assets: Vec<String> = std::fs::read_dir(example.join("dist/assets"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let emitted = |prefix: &str, ext: &str| {
        assets
            .iter()
            .any(|a| a.starts_with(prefix) && a.ends_with(ext))
    };
    if !emitted("worker", ".js")
        || !emitted("thread", ".js")
        || !emitted("engine_wasm_bg", ".wasm")
        || !emitted("engine_wasm_relaxed_bg", ".wasm")
        || !emitted("engine_wasm_threads_bg", ".wasm")
    {
        anyhow::bail!(
            "the Vite example's build lacks one of the engine's workers or one of its three wasm builds: {assets:?}"
        );
    }
    Ok(())
}

/// The server against real clients: the `openai` Python SDK (pytest), the `openai` npm SDK and
/// the web demo in headless Chromium (`node --test`), each starting the `tandem` binary that
/// `cargo test` just built.
fn sdk_tests() -> Result<()> {
    shell::run(shell::cargo().args(["build", "-p", "control-plane", "--bin", "tandem"]))?;
    let bin = shell::root().join("target/debug/tandem");
    // The gateway test puts llama.cpp's server beside Tandem's (built once into the cache).
    let llama_server = crate::llama::llama_server()?;
    // The servers these tests start keep their ledgers in a scratch folder, not the user's.
    let data_dir = std::env::temp_dir().join(format!("tandem-sdk-tests-{}", std::process::id()));
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
            .env("TANDEM_LLAMA_SERVER", &llama_server)
            .env("TANDEM_DATA_DIR", &data_dir)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )?;
    shell::run(
        Command::new("node")
            .args(["--test", "--test-concurrency=1"])
            .env("TANDEM_BIN", &bin)
            .env("TANDEM_DATA_DIR", &data_dir)
            .current_dir(shell::root().join("tests/node")),
    )?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// engine-core must build for the browser (also with the WebGPU backend), and its SIMD kernels
/// for other instruction sets must compute what the scalar ones do: the kernel tests run as
/// WebAssembly (SIMD128) under Node, as WebAssembly with relaxed SIMD in Chromium, and as AArch64
/// (NEON) under QEMU.
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
    shell::run(wasm.args(["--features", "webgpu"]))?;
    shell::run(wasm.args(["--features", "grammars"]))?;

    // The kernel tests as WebAssembly SIMD128 under Node, then built with relaxed SIMD (the
    // browser engine's faster build) in Chromium: Node 20 has only an experimental relaxed SIMD
    // that computes other values.
    let assets = shell::root().join("xtask/assets");
    for (dir, features, node, script) in [
        ("wasi", "+simd128", "node --no-warnings", "wasi-runner.mjs"),
        (
            "wasi-relaxed",
            "+simd128,+relaxed-simd",
            "node",
            "wasi-chromium.mjs",
        ),
    ] {
        shell::run(
            shell::cargo()
                .args([
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
                .arg(target.join(dir))
                .env(
                    env_var("wasm32-wasip1", "RUSTFLAGS"),
                    format!("-D warnings -C target-feature={features}"),
                )
                .env(
                    env_var("wasm32-wasip1", "RUNNER"),
                    format!("{node} {}", assets.join(script).display()),
                ),
        )?;
    }

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
