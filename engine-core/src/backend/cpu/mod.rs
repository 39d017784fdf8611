//! The CPU backend: quantized matrix products with runtime-dispatched SIMD kernels (AVX-512 VNNI,
//! AVX2, NEON, wasm SIMD, scalar), multithreaded natively, over weights read in place from the
//! model file.

pub mod acts;
mod attention;
pub mod kernels;
pub mod matmul;
mod ops;
mod simd;
pub mod spin_pool;
pub mod threads;

use std::future::Future;
use std::sync::Mutex;

pub use attention::CpuKvStore;
pub use kernels::Isa;

use self::acts::QuantActs;
use self::threads::Pool;
use super::{Backend, BackendError, BackendInfo, Capabilities, KvLayout, MatrixSource, StepInput};
use crate::gguf::ModelBytes;
use crate::quant::GgmlType;

/// A weight matrix read in place from the model file's bytes.
pub struct CpuMatrix {
    /// Element type.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    bytes: ModelBytes,
    start: usize,
    kernel: Option<kernels::Kernel>,
}

impl CpuMatrix {
    /// The encoded rows.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.rows * self.row_bytes]
    }
}

/// A zeroed vector of `n` elements, allocated so that the OS supplies its pages lazily: memory
/// never touched takes no RAM.
pub(crate) fn zeroed_vec<T: bytemuck::Zeroable>(n: usize) -> Option<Vec<T>> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).ok()?;
    // SAFETY: the layout's size is non-zero; all-zero bytes are a valid `T` (`Zeroable`); the Vec
    // takes ownership of an allocation made by the global allocator with exactly this layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(p, n, n))
    }
}

/// Options of the CPU backend.
#[derive(Clone, Debug, Default)]
pub struct CpuOptions {
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Instruction set to use (None = the best available).
    pub isa: Option<Isa>,
}

/// The CPU backend.
pub struct CpuBackend {
    pool: Pool,
    isa: Isa,
    acts: Mutex<QuantActs>,
}

impl CpuBackend {
    /// Whether weights of type `ty` can be multiplied (every type but the activation-only ones).
    fn computes(ty: GgmlType) -> bool {
        ty.is_supported() && !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K)
    }

    /// A backend with `options`.
    pub fn new(options: CpuOptions) -> Result<CpuBackend, BackendError> {
        CpuBackend::with_pool(options.isa, Pool::new(options.threads))
    }

    /// A backend running on `pool` (instruction set `isa`, None = the best available).
    pub fn with_pool(isa: Option<Isa>, pool: Pool) -> Result<CpuBackend, BackendError> {
        let isa = match isa {
            None => Isa::detect(),
            Some(isa) if Isa::available().contains(&isa) => isa,
            Some(isa) => {
                return Err(BackendError::Unavailable(format!(
                    "this CPU does not support the {} instruction set",
                    isa.name()
                )));
            }
        };
        Ok(CpuBackend {
            pool,
            isa,
            acts: Mutex::new(QuantActs::default()),
        })
    }

    /// The instruction set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs `f` inside the worker pool (cheaper forking for the operations it calls).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn quantized_matmul(
        &self,
        ws: &[&CpuMatrix],
        x: &[f32],
        rows: usize,
        outs: &mut [&mut Vec<f32>],
    ) {
        let mut acts = self.acts.lock().unwrap_or_else(|e| e.into_inner());
        let mut jobs = Vec::new();
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            match w.kernel {
                Some(kernel) => jobs.push(matmul::QuantJob {
                    kernel,
                    w,
                    out: out.as_mut_slice(),
                }),
                None => matmul::matmul_float(&self.pool, w, x, rows, out),
            }
        }
        // Jobs of different widths (rare: the callers group products of one input) run apart.
        while !jobs.is_empty() {
            let cols = jobs[0].w.cols;
            let split = jobs
                .iter()
                .position(|j| j.w.cols != cols)
                .unwrap_or(jobs.len());
            let mut rest = jobs.split_off(split);
            acts.quantize(&self.pool, self.isa, x, rows, cols);
            matmul::matmul_quantized(&self.pool, &mut jobs, &acts);
            std::mem::swap(&mut jobs, &mut rest);
        }
    }
}

/// The processor's brand string, from CPUID where the architecture has it.
fn cpu_name() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let max = __cpuid(0x8000_0000).eax;
        if max >= 0x8000_0004 {
            let mut bytes = Vec::with_capacity(48);
            for leaf in 0x8000_0002u32..=0x8000_0004 {
                let r = __cpuid(leaf);
                for reg in [r.eax, r.ebx, r.ecx, r.edx] {
                    bytes.extend_from_slice(&reg.to_le_bytes());
                }
            }
            let name = String::from_utf8_lossy(&bytes);
            let name = name.trim_matches(char::from(0)).trim();
            if !name.is_empty() {
                return name.to_owned();
            }
        }
    }
    std::env::consts::ARCH.to_owned()
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;
    type Matrix = CpuMatrix;
    type KvStore = CpuKvStore;
    type Step = StepInput;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "cpu".into(),
            device: format!("{} ({})", cpu_name(), self.isa.name()),
            threads: self.pool.threads(),
        }
    }

    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            device_sampling: false,
            eager: true,
            weight_types: GgmlType::SUPPORTED
                .into_iter()
                .filter(|&ty| Self::computes(ty))
                .collect(),
        }
    }

    fn upload_matrix(&self, src: &MatrixSource) -> Result<CpuMatrix, BackendError> {
        let unsupported = || BackendError::UnsupportedType {
            backend: "cpu".into(),
            ty: src.ty,
        };
        if !Self::computes(src.ty) {
            return Err(unsupported());
        }
        let row_bytes = src.ty.row_bytes(src.cols).ok_or_else(unsupported)?;
        if src.range.len() != row_bytes * src.rows || src.range.end > src.bytes.len() {
            return Err(BackendError::Device(format!(
                "matrix {} has {} bytes, expected {} rows of {row_bytes}",
                src.name,
                src.range.len(),
                src.rows
            )));
        }
        let kernel = if src.cols.is_multiple_of(acts::QK) {
            self.isa.kernel_or_scalar(src.ty)
        } else {
            None
        };
        Ok(CpuMatrix {
            ty: src.ty,
            rows: src.rows,
            cols: src.cols,
            row_bytes,
            bytes: src.bytes.clone(),
            start: src.range.start,
            kernel,
        })
    }

    fn upload_vector(&self, data: &[f32]) -> Result<Vec<f32>, BackendError> {
        Ok(data.to_vec())
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>, BackendError> {
        zeroed_vec(len).ok_or_else(|| BackendError::OutOfMemory(format!("{len} floats")))
    }

    fn alloc_kv(&self, layout: &KvLayout) -> Result<CpuKvStore, BackendError> {
        CpuKvStore::new(*layout).ok_or_else(|| {
            BackendError::OutOfMemory(format!("KV cache of {} bytes", layout.total_bytes()))
        })
    }

    fn begin_step(&self, step: &StepInput) -> Result<StepInput, BackendError> {
        Ok(step.clone())
    }

    fn embed(&self, step: &StepInput, table: &CpuMatrix, out: &mut Vec<f32>) {
        ops::embed(&self.pool, table, &step.tokens, out);
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) {
        ops::rms_norm(&self.pool, self.isa, x, weight, eps, rows, dim, out);
    }

    fn matmul(&self, w: &CpuMatrix, x: &Vec<f32>, rows: usize, out: &mut Vec<f32>) {
        self.quantized_matmul(&[w], x, rows, &mut [out]);
    }

    fn matmul_many(
        &self,
        ws: &[&CpuMatrix],
        x: &Vec<f32>,
        rows: usize,
        outs: &mut [&mut Vec<f32>],
    ) {
        self.quantized_matmul(ws, x, rows, outs);
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, _dim: usize) {
        ops::add_bias(x, bias, rows);
    }

    fn rope(&self, step: &StepInput, x: &mut Vec<f32>, n_heads: usize, head_dim: usize) {
        ops::rope(step, x, n_heads, head_dim);
    }

    fn kv_write(
        &self,
        step: &StepInput,
        kv: &mut CpuKvStore,
        layer: usize,
        k: &Vec<f32>,
        v: &Vec<f32>,
    ) {
        kv.write(step, layer, k, v);
    }

    fn attention(
        &self,
        step: &StepInput,
        kv: &CpuKvStore,
        layer: usize,
        q: &Vec<f32>,
        n_heads: usize,
        out: &mut Vec<f32>,
    ) {
        kv.attend(&self.pool, self.isa, step, layer, q, n_heads, out);
    }

    fn swiglu(&self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) {
        ops::swiglu(&self.pool, self.isa, &mut gate[..len], &up[..len]);
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) {
        ops::add(&mut x[..len], &y[..len]);
    }

    fn add_rms_norm(
        &self,
        x: &mut Vec<f32>,
        y: &Vec<f32>,
        weight: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) {
        ops::add_rms_norm(&self.pool, self.isa, x, y, weight, eps, (rows, dim), out);
    }

    fn gather_output_rows(&self, step: &StepInput, x: &Vec<f32>, dim: usize, out: &mut Vec<f32>) {
        for (i, &r) in step.output_rows.iter().enumerate() {
            let r = r as usize;
            out[i * dim..(i + 1) * dim].copy_from_slice(&x[r * dim..(r + 1) * dim]);
        }
    }

    fn read(
        &self,
        buf: &Vec<f32>,
        len: usize,
    ) -> impl Future<Output = Result<Vec<f32>, BackendError>> {
        std::future::ready(Ok(buf[..len].to_vec()))
    }
}
