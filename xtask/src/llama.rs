//! llama.cpp's `llama-server`, built once from source into the cache, for tests and benchmarks
//! that compare against it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{cache, shell};

/// The llama-cpp-python release whose source distribution vendors the llama.cpp we build.
pub const VERSION: &str = "0.3.36";
/// The cached build's name after the version: it names the flags below (a build from before them
/// crashes on AMX hosts and must not be reused).
const FLAVOR: &str = "noamx";
/// Compiler flags on top of `-march=native`: llama.cpp's AMX matmul crashes (SIGSEGV in
/// `ggml_backend_amx_mul_mat`) on hosts whose CPU has AMX but whose kernel or sandbox does not
/// hand the tile state to processes, as on some of this project's CI machines; AVX-512 stays.
const NO_AMX: &str = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16";

/// Returns the cached `llama-server` binary, building it first if it is not there.
///
/// Everything lives in the cache: a virtual environment with cmake and ninja and the
/// llama-cpp-python source (`llama.cpp-VERSION/{venv,dl,src}`), and the statically linked,
/// natively tuned binary (`llama-server-VERSION-FLAVOR/bin/llama-server`). The build runs in
/// `llama-server-VERSION-FLAVOR.tmp` and is renamed when it has finished, so an interrupted
/// build is resumed rather than taken for a finished one.
pub fn llama_server() -> Result<PathBuf> {
    let cache = cache::dir();
    let done = cache.join(format!("llama-server-{VERSION}-{FLAVOR}"));
    let bin = done.join("bin/llama-server");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("building llama.cpp's llama-server (once; about 15 minutes on 2 cores)");
    let root = cache.join(format!("llama.cpp-{VERSION}"));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let venv_bin = tool_venv(&root)?;
    let src = source(&root, &venv_bin)?;

    let build = cache.join(format!("llama-server-{VERSION}-{FLAVOR}.tmp"));
    let path = path_with(&venv_bin);
    shell::run(
        Command::new(venv_bin.join("cmake"))
            .env("PATH", &path)
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(&build)
            .args([
                "-G",
                "Ninja",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DGGML_NATIVE=ON",
                &format!("-DCMAKE_C_FLAGS={NO_AMX}"),
                &format!("-DCMAKE_CXX_FLAGS={NO_AMX}"),
                "-DBUILD_SHARED_LIBS=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_SERVER=ON",
                "-DLLAMA_BUILD_APP=OFF",
                "-DLLAMA_USE_PREBUILT_UI=OFF",
                "-DLLAMA_BUILD_UI=OFF",
            ]),
    )?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    shell::run(
        Command::new(venv_bin.join("cmake"))
            .env("PATH", &path)
            .arg("--build")
            .arg(&build)
            .arg(format!("-j{jobs}"))
            // llama-quantize too: once the folder is renamed, cmake cannot build in it again.
            .args(["--target", "llama-server", "llama-quantize"]),
    )?;
    if done.exists() {
        // A folder without the binary, left by an older, unfinished build.
        std::fs::remove_dir_all(&done).with_context(|| format!("removing {}", done.display()))?;
    }
    std::fs::rename(&build, &done)
        .with_context(|| format!("renaming {} to {}", build.display(), done.display()))?;
    Ok(bin)
}

/// Returns the cached `llama-quantize`, built with `llama-server`.
pub fn llama_quantize() -> Result<PathBuf> {
    let server = llama_server()?;
    let bin = server.with_file_name("llama-quantize");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: remove {} to build llama.cpp's tools again",
        bin.display(),
        server
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&server)
            .display()
    );
    Ok(bin)
}

/// `$PATH` with `dir` first (where cmake finds ninja).
fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A virtual environment under `root` with cmake, ninja and scikit-build-core (which pip needs
/// to read the source distribution's metadata without build isolation); returns its `bin`.
fn tool_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join("venv");
    let bin = venv.join("bin");
    if bin.join("cmake").is_file() && bin.join("ninja").is_file() {
        return Ok(bin);
    }
    shell::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    shell::run(Command::new(bin.join("pip")).args([
        "install",
        "-q",
        "cmake",
        "ninja",
        "scikit-build-core",
    ]))?;
    Ok(bin)
}

/// Downloads and unpacks the llama-cpp-python source distribution into `root/src` unless it is
/// there already; returns the vendored llama.cpp tree.
fn source(root: &Path, venv_bin: &Path) -> Result<PathBuf> {
    let src = root.join("src");
    let llama_cpp = src.join("vendor/llama.cpp");
    if llama_cpp.join("CMakeLists.txt").is_file() {
        return Ok(llama_cpp);
    }
    let dl = root.join("dl");
    let archive = dl.join(format!("llama_cpp_python-{VERSION}.tar.gz"));
    if !archive.is_file() {
        // Only the source archive is wanted; with build isolation off, pip does not build
        // cmake from source to read its metadata.
        shell::run(
            Command::new(venv_bin.join("pip"))
                .args([
                    "download",
                    "-q",
                    "--no-deps",
                    "--no-binary",
                    "llama-cpp-python",
                ])
                .args(["--no-build-isolation", "-d"])
                .arg(&dl)
                .arg(format!("llama-cpp-python=={VERSION}")),
        )?;
    }
    let unpack = root.join("src.tmp");
    for stale in [&src, &unpack] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(&unpack).with_context(|| format!("creating {}", unpack.display()))?;
    shell::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpack),
    )?;
    let unpacked = unpack.join(format!("llama_cpp_python-{VERSION}"));
    std::fs::rename(&unpacked, &src)
        .with_context(|| format!("renaming {} to {}", unpacked.display(), src.display()))?;
    std::fs::remove_dir_all(&unpack).with_context(|| format!("removing {}", unpack.display()))?;
    Ok(llama_cpp)
}
