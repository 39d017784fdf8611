//! `cargo xtask cuda-kernels`: compiles engine-cuda's CUDA C kernels (`engine-cuda/kernels/*.cu`)
//! with NVRTC into PTX (the driver's fallback) and cubins for sm_80, sm_89 and sm_90, written to
//! `engine-cuda/kernels/build/` (committed, and embedded in the binary), and checks every PTX
//! with `ptxas`. No CUDA toolkit is needed: NVRTC, the CUDA headers and `ptxas` come from
//! NVIDIA's PyPI wheels, downloaded once into the cache. `cargo xtask test` runs the same
//! compilation into a scratch folder and fails when the committed files are stale.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cache, shell};

/// NVRTC (`libnvrtc.so.12`).
const NVRTC_WHEEL: (&str, &str) = ("nvidia-cuda-nvrtc-cu12", "12.4.127");
/// The CUDA headers (`cuda_fp16.h`, ...).
const RUNTIME_WHEEL: (&str, &str) = ("nvidia-cuda-runtime-cu12", "12.4.127");
/// `ptxas`.
const NVCC_WHEEL: (&str, &str) = ("nvidia-cuda-nvcc-cu12", "12.9.86");

/// The architectures cubins are built for; the PTX targets the oldest.
pub const CUBIN_ARCHS: &[u32] = &[80, 89, 90];
const PTX_ARCH: u32 = 80;

/// The tools the compilation needs, unpacked in the cache.
struct Toolkit {
    nvrtc: PathBuf,
    include: PathBuf,
    ptxas: PathBuf,
}

/// Downloads (once) and unpacks a wheel; returns where.
fn wheel((name, version): (&str, &str)) -> Result<PathBuf> {
    let dir = cache::dir().join("cuda").join(format!("{name}-{version}"));
    let done = dir.join(".unpacked");
    if done.exists() {
        return Ok(dir);
    }
    let prefix = format!("{}-{version}-", name.replace('-', "_"));
    let whl = crate::setup::pip_download(&format!("{name}=={version}"), &prefix)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    shell::run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&whl)
            .arg(&dir),
    )?;
    std::fs::write(&done, "")?;
    std::fs::remove_file(&whl)?;
    Ok(dir)
}

fn toolkit() -> Result<Toolkit> {
    let nvrtc = wheel(NVRTC_WHEEL)?.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    let include = wheel(RUNTIME_WHEEL)?.join("nvidia/cuda_runtime/include");
    let ptxas = wheel(NVCC_WHEEL)?.join("nvidia/cuda_nvcc/bin/ptxas");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ptxas, std::fs::Permissions::from_mode(0o755))?;
    }
    for p in [&nvrtc, &include, &ptxas] {
        if !p.exists() {
            bail!("{} is missing from its wheel", p.display());
        }
    }
    Ok(Toolkit {
        nvrtc,
        include,
        ptxas,
    })
}

type Program = *mut c_void;
type CreateProgram = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileProgram = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type GetSize = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type GetBytes = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyProgram = unsafe extern "C" fn(*mut Program) -> c_int;
type GetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;

/// NVRTC's entry points.
struct Nvrtc {
    _lib: libloading::Library,
    create: CreateProgram,
    compile: CompileProgram,
    log_size: GetSize,
    log: GetBytes,
    ptx_size: GetSize,
    ptx: GetBytes,
    cubin_size: GetSize,
    cubin: GetBytes,
    destroy: DestroyProgram,
    error: GetErrorString,
}

impl Nvrtc {
    fn load(path: &Path) -> Result<Nvrtc> {
        // SAFETY: NVRTC's documented C API, with the signatures above.
        unsafe {
            let lib = libloading::Library::new(path)
                .with_context(|| format!("loading {}", path.display()))?;
            let create = *lib.get::<CreateProgram>(b"nvrtcCreateProgram\0")?;
            let compile = *lib.get::<CompileProgram>(b"nvrtcCompileProgram\0")?;
            let log_size = *lib.get::<GetSize>(b"nvrtcGetProgramLogSize\0")?;
            let log = *lib.get::<GetBytes>(b"nvrtcGetProgramLog\0")?;
            let ptx_size = *lib.get::<GetSize>(b"nvrtcGetPTXSize\0")?;
            let ptx = *lib.get::<GetBytes>(b"nvrtcGetPTX\0")?;
            let cubin_size = *lib.get::<GetSize>(b"nvrtcGetCUBINSize\0")?;
            let cubin = *lib.get::<GetBytes>(b"nvrtcGetCUBIN\0")?;
            let destroy = *lib.get::<DestroyProgram>(b"nvrtcDestroyProgram\0")?;
            let error = *lib.get::<GetErrorString>(b"nvrtcGetErrorString\0")?;
            Ok(Nvrtc {
                _lib: lib,
                create,
                compile,
                log_size,
                log,
                ptx_size,
                ptx,
                cubin_size,
                cubin,
                destroy,
                error,
            })
        }
    }

    fn check(&self, what: &str, code: c_int) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static string for any code.
        let msg = unsafe { CStr::from_ptr((self.error)(code)) };
        bail!("{what}: {}", msg.to_string_lossy())
    }

    /// Reads one of the program's outputs.
    fn bytes(&self, prog: Program, size: GetSize, get: GetBytes) -> Result<Vec<u8>> {
        let mut n = 0usize;
        // SAFETY: `prog` is a compiled program; the buffer has the size NVRTC reported.
        unsafe {
            self.check("size", size(prog, &mut n))?;
            let mut buf = vec![0u8; n];
            self.check("read", get(prog, buf.as_mut_ptr().cast()))?;
            Ok(buf)
        }
    }

    /// Compiles `source` for `arch` (`compute_XX`: PTX only; `sm_XX`: a cubin too).
    fn compile(
        &self,
        name: &str,
        source: &str,
        arch: &str,
        include: &[&Path],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let src = CString::new(source)?;
        let cname = CString::new(name)?;
        let mut options = vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_owned(),
            "--device-as-default-execution-space".to_owned(),
        ];
        options.extend(
            include
                .iter()
                .map(|p| format!("--include-path={}", p.display())),
        );
        let options: Vec<CString> = options
            .into_iter()
            .map(CString::new)
            .collect::<Result<_, _>>()?;
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: valid C strings that outlive the calls; the program is destroyed below.
        unsafe {
            self.check(
                "nvrtcCreateProgram",
                (self.create)(
                    &mut prog,
                    src.as_ptr(),
                    cname.as_ptr(),
                    0,
                    std::ptr::null(),
                    std::ptr::null(),
                ),
            )?;
            let compiled = (self.compile)(prog, option_ptrs.len() as c_int, option_ptrs.as_ptr());
            let log = self
                .bytes(prog, self.log_size, self.log)
                .unwrap_or_default();
            let log = String::from_utf8_lossy(&log)
                .trim_end_matches('\0')
                .trim()
                .to_owned();
            let result = self
                .check(&format!("compiling {name} for {arch}:\n{log}"), compiled)
                .and_then(|()| {
                    let ptx = self.bytes(prog, self.ptx_size, self.ptx)?;
                    let cubin = if arch.starts_with("sm_") {
                        Some(self.bytes(prog, self.cubin_size, self.cubin)?)
                    } else {
                        None
                    };
                    Ok((ptx, cubin))
                });
            (self.destroy)(&mut prog);
            if result.is_ok() && !log.is_empty() {
                bail!("compiling {name} for {arch} gave warnings:\n{log}");
            }
            result
        }
    }
}

/// The kernel sources: `engine-cuda/kernels/*.cu`, by name.
fn sources() -> Result<Vec<PathBuf>> {
    let dir = kernels_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    Ok(files)
}

fn kernels_dir() -> PathBuf {
    shell::root().join("engine-cuda").join("kernels")
}

/// Compiles every kernel file into `out`; checks each PTX with `ptxas` for every architecture.
fn compile_all(out: &Path) -> Result<Vec<PathBuf>> {
    let tk = toolkit()?;
    let nvrtc = Nvrtc::load(&tk.nvrtc)?;
    std::fs::create_dir_all(out)?;
    let dir = kernels_dir();
    let mut written = Vec::new();
    for src in sources()? {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .context("kernel file name")?
            .to_owned();
        let text = std::fs::read_to_string(&src)?;
        let name = format!("{stem}.cu");
        let include = [tk.include.as_path(), dir.as_path()];
        let (ptx, _) = nvrtc.compile(&name, &text, &format!("compute_{PTX_ARCH}"), &include)?;
        let ptx_path = out.join(format!("{stem}.ptx"));
        std::fs::write(&ptx_path, trim_nul(ptx))?;
        written.push(ptx_path.clone());
        for &arch in CUBIN_ARCHS {
            let (_, cubin) = nvrtc.compile(&name, &text, &format!("sm_{arch}"), &include)?;
            let path = out.join(format!("{stem}.sm_{arch}.cubin"));
            std::fs::write(&path, cubin.context("NVRTC gave no cubin")?)?;
            written.push(path);
            // The PTX the driver would JIT on this architecture assembles.
            shell::run(
                Command::new(&tk.ptxas)
                    .arg(format!("-arch=sm_{arch}"))
                    .arg(&ptx_path)
                    .args(["-o", "/dev/null"]),
            )
            .with_context(|| format!("ptxas rejects {stem}.ptx for sm_{arch}"))?;
        }
    }
    Ok(written)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// `cargo xtask cuda-kernels`: rebuilds the committed kernel images.
pub fn build() -> Result<()> {
    let out = kernels_dir().join("build");
    let _ = std::fs::remove_dir_all(&out);
    let written = compile_all(&out)?;
    eprintln!(
        "cuda-kernels: {} files in {} (commit them)",
        written.len(),
        out.display()
    );
    Ok(())
}

/// Compiles the kernels afresh and fails if the committed images differ (or are missing, or
/// more are committed than the sources make).
pub fn check() -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("tandem-cuda-kernels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let written = compile_all(&scratch)?;
    let committed = kernels_dir().join("build");
    let mut stale = Vec::new();
    for fresh in &written {
        let name = fresh.file_name().context("file name")?;
        let old = std::fs::read(committed.join(name)).unwrap_or_default();
        if old != std::fs::read(fresh)? {
            stale.push(name.to_string_lossy().into_owned());
        }
    }
    let expected: Vec<_> = written.iter().filter_map(|p| p.file_name()).collect();
    if let Ok(entries) = std::fs::read_dir(&committed) {
        for e in entries.filter_map(|e| e.ok()) {
            if !expected.contains(&e.file_name().as_os_str()) {
                stale.push(format!("{} (no source)", e.file_name().to_string_lossy()));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !stale.is_empty() {
        bail!(
            "engine-cuda's committed kernel images are stale ({}): run `cargo xtask cuda-kernels` and commit engine-cuda/kernels/build",
            stale.join(", ")
        );
    }
    eprintln!(
        "cuda-kernels: {} committed images are current; ptxas accepts every PTX",
        written.len()
    );
    Ok(())
}
