//! `cargo xtask build-wasm`: the browser engine (engine-wasm for `wasm32-unknown-unknown`, bound
//! by the `wasm-bindgen` CLI at the crate's exact version and optimized by `wasm-opt` from the
//! npm package `binaryen`), then the npm package `@tandem-inference/web` that carries it.
//! Debian's `wasm-opt` is never used: it corrupts wasm-bindgen's output. The tools are built or
//! installed once into the cache.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::{cache, setup, shell};

/// binaryen's npm package, pinned (its `wasm-opt` understands wasm-bindgen's output).
const BINARYEN: &str = "132.0.0";

/// Where `cargo xtask build-wasm` puts wasm-bindgen's output (the npm build copies it into the
/// package).
pub fn out_dir() -> PathBuf {
    shell::root().join("npm/wasm")
}

/// Builds the engine to `npm/wasm/`, the npm package to `npm/dist/`, and copies the package
/// into `web-demo/pkg/` (where the demo page, served by `tandem serve`, imports it from).
pub fn build() -> Result<()> {
    build_engine()?;
    build_package()?;
    let pkg = shell::root().join("web-demo/pkg");
    if pkg.exists() {
        fs::remove_dir_all(&pkg)?;
    }
    fs::create_dir_all(&pkg)?;
    for entry in fs::read_dir(shell::root().join("npm/dist"))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), pkg.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// engine-wasm → `npm/wasm/engine_wasm.js` + `engine_wasm_bg.wasm` (WebAssembly SIMD, which every
/// current browser runs) + `engine_wasm_relaxed_bg.wasm` (the same engine with relaxed SIMD,
/// which the worker loads where the browser validates it; the two share the glue) +
/// `engine_wasm_threads_bg.wasm` with its glue `threads/engine_wasm.js` (relaxed SIMD and CPU
/// threads on shared memory, for cross-origin isolated pages).
pub fn build_engine() -> Result<()> {
    setup::rust_targets()?;
    let bindgen = wasm_bindgen_cli()?;
    let wasm_opt = wasm_opt()?;
    let out = out_dir();
    fs::create_dir_all(&out)?;

    // Baseline: the workspace's target folder and `.cargo/config.toml`'s flags (`+simd128`).
    let baseline = compile(None)?;
    bind(&bindgen, &baseline, &out)?;
    optimize(&wasm_opt, &out.join("engine_wasm_bg.wasm"), false)?;

    // Relaxed SIMD: other flags, so its own target folder (sharing one would rebuild each in
    // turn).
    let relaxed = compile(Some(RELAXED))?;
    let scratch = out.join("relaxed");
    bind(&bindgen, &relaxed, &scratch)?;
    if fs::read(scratch.join("engine_wasm.js"))? != fs::read(out.join("engine_wasm.js"))? {
        bail!(
            "wasm-bindgen wrote different glue for the relaxed-SIMD build: the builds must share it"
        );
    }
    let wasm = out.join("engine_wasm_relaxed_bg.wasm");
    fs::rename(scratch.join("engine_wasm_bg.wasm"), &wasm)?;
    fs::remove_dir_all(&scratch)?;
    optimize(&wasm_opt, &wasm, true)?;

    // Threads (relaxed SIMD too): shared memory, so its own glue in `npm/wasm/threads/`.
    let threaded = compile(Some(THREADS))?;
    let dir = out.join("threads");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    bind(&bindgen, &threaded, &dir)?;
    let wasm = out.join("engine_wasm_threads_bg.wasm");
    fs::rename(dir.join("engine_wasm_bg.wasm"), &wasm)?;
    optimize(&wasm_opt, &wasm, true)?;
    Ok(())
}

/// How one build of engine-wasm differs from the baseline.
struct Variant {
    /// Rust flags for `wasm32-unknown-unknown`.
    rustflags: &'static str,
    /// Its own target folder (sharing one would rebuild each build in turn).
    target_dir: &'static str,
    /// engine-wasm features.
    features: &'static str,
    /// Whether engine-wasm's default features (WebGPU) are left out.
    no_default_features: bool,
    /// Whether the standard library is rebuilt with these flags.
    build_std: bool,
}

/// The relaxed-SIMD build.
const RELAXED: Variant = Variant {
    rustflags: "-C target-feature=+simd128,+relaxed-simd",
    target_dir: "target/wasm-relaxed",
    features: "",
    no_default_features: false,
    build_std: false,
};

/// The threaded build, for the CPU path only (wgpu's browser types are not thread-safe): atomics
/// and a shared memory of up to 4 GiB (a model's bytes live in it).
/// The standard library shipped for `wasm32-unknown-unknown` is built without atomics, so cargo
/// rebuilds it from the `rust-src` component (`-Z build-std`, which the stable toolchain allows
/// this one build through `RUSTC_BOOTSTRAP`).
const THREADS: Variant = Variant {
    rustflags: "-C target-feature=+simd128,+relaxed-simd,+atomics,+bulk-memory,+mutable-globals \
                -C link-arg=--shared-memory -C link-arg=--import-memory \
                -C link-arg=--max-memory=4294967296 \
                -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
                -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base",
    target_dir: "target/wasm-threads",
    features: "threads",
    no_default_features: true,
    build_std: true,
};

/// `cargo build` of engine-wasm, as `variant` when given; returns the module's path.
fn compile(variant: Option<Variant>) -> Result<PathBuf> {
    let mut cargo = shell::cargo();
    cargo.args([
        "build",
        "-p",
        "engine-wasm",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-release",
    ]);
    let mut target = shell::root().join("target");
    if let Some(v) = variant {
        target = shell::root().join(v.target_dir);
        cargo
            .arg("--target-dir")
            .arg(&target)
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", v.rustflags);
        if !v.features.is_empty() {
            cargo.args(["--features", v.features]);
        }
        if v.no_default_features {
            cargo.arg("--no-default-features");
        }
        if v.build_std {
            cargo
                .args(["-Z", "build-std=std,panic_abort"])
                .env("RUSTC_BOOTSTRAP", "1");
        }
    }
    shell::run(&mut cargo)?;
    Ok(target.join("wasm32-unknown-unknown/wasm-release/engine_wasm.wasm"))
}

/// wasm-bindgen: `input` → `dir/engine_wasm.js` + `dir/engine_wasm_bg.wasm`.
fn bind(bindgen: &std::path::Path, input: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    shell::run(
        Command::new(bindgen)
            .args(["--target", "web", "--out-name", "engine_wasm", "--out-dir"])
            .arg(dir)
            .arg(input),
    )
}

/// binaryen's `wasm-opt -Os` on `wasm` in place, with relaxed SIMD (and threads) allowed when
/// `relaxed`.
fn optimize(wasm_opt: &std::path::Path, wasm: &std::path::Path, relaxed: bool) -> Result<()> {
    let mut cmd = Command::new(wasm_opt);
    cmd.arg(wasm).args([
        "-Os",
        "--enable-simd",
        "--enable-bulk-memory",
        "--enable-nontrapping-float-to-int",
        "--enable-sign-ext",
        "--enable-mutable-globals",
        "--enable-reference-types",
        "--enable-multivalue",
    ]);
    if relaxed {
        cmd.args(["--enable-relaxed-simd", "--enable-threads"]);
    }
    shell::run(cmd.arg("-o").arg(wasm))?;
    eprintln!(
        "engine wasm: {} bytes ({})",
        fs::metadata(wasm)?.len(),
        wasm.display()
    );
    Ok(())
}

/// `npm ci` (when the lock file changed) and `npm run build` in `npm/`.
pub fn build_package() -> Result<()> {
    let dir = shell::root().join("npm");
    setup::npm_ci(&dir)?;
    shell::run(Command::new("npm").args(["run", "build"]).current_dir(&dir))
}

/// The `wasm-bindgen` crate's version in Cargo.lock (the CLI must match it exactly).
fn wasm_bindgen_version() -> Result<String> {
    let lock = fs::read_to_string(shell::root().join("Cargo.lock"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
        {
            return Ok(v.to_owned());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

/// The `wasm-bindgen` CLI at the locked version, installed once by cargo into the cache.
fn wasm_bindgen_cli() -> Result<PathBuf> {
    let version = wasm_bindgen_version()?;
    let root = cache::dir().join(format!("wasm-bindgen-{version}"));
    let bin = root.join("bin/wasm-bindgen");
    if !bin.exists() {
        shell::run(
            shell::cargo()
                .args([
                    "install",
                    "wasm-bindgen-cli",
                    "--version",
                    &version,
                    "--root",
                ])
                .arg(&root),
        )?;
    }
    Ok(bin)
}

/// `wasm-opt` from the npm package `binaryen`, installed once into the cache.
fn wasm_opt() -> Result<PathBuf> {
    let dir = cache::dir().join(format!("binaryen-{BINARYEN}"));
    let bin = dir.join("node_modules/binaryen/bin/wasm-opt");
    if !bin.exists() {
        fs::create_dir_all(&dir)?;
        shell::run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--prefix",
                ])
                .arg(&dir)
                .arg("--cache")
                .arg(cache::dir().join("npm"))
                .arg(format!("binaryen@{BINARYEN}")),
        )?;
    }
    Ok(bin)
}
