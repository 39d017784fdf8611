//! The WebGPU backend: the forward pass in WGSL compute kernels through `wgpu`, natively on
//! Vulkan, Metal or DX12 and in browsers on WebGPU.
//!
//! - Weights stay quantized on the device, in layouts with 4-byte aligned fields; matrices
//!   larger than one binding are split by rows. Products use a fused dequantize-and-multiply kernel for up to 8
//!   activation rows (decode, batched decode) and a tiled kernel beyond.
//! - Every operation is recorded into one command encoder; the step is submitted once, when its
//!   result is read (or when the next step begins). Pipelines and bind groups are created once
//!   and cached; activation and scratch buffers come from a pool.
//! - With `shader-f16` the products multiply in f16 and the KV cache holds f16; otherwise
//!   everything is f32. Reductions use subgroup operations when the adapter has them.
//! - [`Backend::read`](crate::backend::Backend::read) and [`Backend::sample`](crate::backend::Backend::sample) return futures that never block on the web.

mod attend;
mod device;
mod kv;
mod ops;
mod pipelines;
mod plan;
mod pool;
mod products;
mod read;
mod recorder;
mod sample;
mod step;
mod weights;

use std::sync::{Arc, Mutex};

pub use device::{AdapterReport, Precision, WebGpuOptions};
pub use kv::GpuKvStore;
pub use plan::MemoryPlan;
pub use pool::GpuBuffer;
pub use step::GpuStep;
pub use weights::GpuMatrix;

use self::device::ErrorSlot;
use self::pipelines::{Access, Kernel, KernelSpec, Pipelines};
use self::pool::{Kind, Pool, Scratch};
use self::read::{ReadBack, take_error};
use self::recorder::{Bind, DeadIds, Recorder};
use super::{BackendError, KvDtype, KvLayout};

const S_QUANT: &str = include_str!("shaders/quant.wgsl");
const S_MATVEC: &str = include_str!("shaders/matvec.wgsl");
const S_MATMUL: &str = include_str!("shaders/matmul.wgsl");
const S_ROWWISE: &str = include_str!("shaders/rowwise.wgsl");
const S_NORM: &str = include_str!("shaders/norm.wgsl");
const S_OPS: &str = include_str!("shaders/ops.wgsl");
const S_EMBED: &str = include_str!("shaders/embed.wgsl");
const S_ATTN: &str = include_str!("shaders/attention.wgsl");
const S_SAMPLE: &str = include_str!("shaders/sample.wgsl");

/// Activation rows up to which products use the matrix-vector kernel.
const MATVEC_MAX_ROWS: usize = 8;
/// Step rows up to which attention is split over the context (flash-decoding).
const SPLIT_ATTENTION_MAX_ROWS: usize = 16;
/// Cached tokens per workgroup of the split attention kernel (`CH` in the shader).
const ATTENTION_CHUNK: usize = 256;

const R: Access = Access::Read;
const RW: Access = Access::ReadWrite;

/// The WebGPU backend.
pub struct WebGpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    report: AdapterReport,
    max_groups: u32,
    cpu_kernels: bool,
    budget: Option<u64>,
    pool: Arc<Pool>,
    pipelines: Pipelines,
    rec: Mutex<Recorder>,
    errors: ErrorSlot,
    dead: DeadIds,
    /// The buffer of per-row sampling parameters (used only by [`Backend::sample`](crate::backend::Backend::sample)).
    sample_spec: Mutex<Option<(u64, wgpu::Buffer)>>,
}

/// Recording statistics, for tests and profiling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Kernel dispatches recorded.
    pub dispatches: u64,
    /// Command submissions.
    pub submissions: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bind(b: &GpuBuffer) -> Bind<'_> {
    let s = b.slot();
    Bind {
        id: s.id,
        buf: &s.buf,
    }
}

fn bind_scratch(s: &Scratch) -> Bind<'_> {
    let s = s.slot();
    Bind {
        id: s.id,
        buf: &s.buf,
    }
}

impl WebGpuBackend {
    /// Finds an adapter, reads its limits and features, and opens a device. Fails with
    /// [`BackendError::Unavailable`] when there is no adapter or it cannot run the kernels.
    pub async fn new(options: WebGpuOptions) -> Result<WebGpuBackend, BackendError> {
        let errors: ErrorSlot = Arc::new(Mutex::new(None));
        let setup = device::open(&options, &errors).await?;
        let dead: DeadIds = Arc::new(Mutex::new(Vec::new()));
        let pool = Arc::new(Pool::new(setup.device.clone(), setup.report.binding_limit));
        let rec = Recorder::new(
            setup.device.clone(),
            setup.queue.clone(),
            setup.limits.min_uniform_buffer_offset_alignment,
            dead.clone(),
        );
        Ok(WebGpuBackend {
            pipelines: Pipelines::new(setup.report.using_subgroups),
            device: setup.device,
            queue: setup.queue,
            max_groups: setup.limits.max_compute_workgroups_per_dimension,
            cpu_kernels: setup.report.cpu_kernels,
            report: setup.report,
            budget: options.memory_budget,
            pool,
            rec: Mutex::new(rec),
            errors,
            dead,
            sample_spec: Mutex::new(None),
        })
    }

    /// [`WebGpuBackend::new`], blocking until the device is open (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(options: WebGpuOptions) -> Result<WebGpuBackend, BackendError> {
        pollster::block_on(Self::new(options))
    }

    /// The adapter, its features and limits, and the paths in use.
    pub fn report(&self) -> &AdapterReport {
        &self.report
    }

    /// Whether kernels compute in f16 (and the KV cache holds f16).
    pub fn uses_f16(&self) -> bool {
        self.report.using_f16
    }

    /// Dispatches and submissions so far.
    pub fn stats(&self) -> RecordStats {
        let rec = lock(&self.rec);
        RecordStats {
            dispatches: rec.dispatches,
            submissions: rec.submissions,
        }
    }

    /// The first device error since the last call, if any (operations that cannot return errors
    /// record them here; [`Backend::read`](crate::backend::Backend::read), [`Backend::begin_step`](crate::backend::Backend::begin_step) and [`Backend::sample`](crate::backend::Backend::sample)
    /// return it).
    pub fn take_error(&self) -> Result<(), BackendError> {
        take_error(&self.errors)
    }

    fn kv_f16(&self, layout: &KvLayout) -> bool {
        self.report.using_f16 || layout.dtype == KvDtype::F16
    }

    fn fail(&self, e: BackendError) {
        let mut slot = lock(&self.errors);
        if slot.is_none() {
            *slot = Some(e.to_string());
        }
    }

    fn kernel(&self, spec: KernelSpec<'_>) -> Option<Arc<Kernel>> {
        match self.pipelines.get(&self.device, &spec) {
            Ok(k) => Some(k),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn spec<'a>(
        &self,
        source: &'static str,
        key: String,
        flags: Vec<&'a str>,
        bindings: &'a [Access],
    ) -> KernelSpec<'a> {
        KernelSpec {
            source,
            key,
            flags,
            consts: Vec::new(),
            extra: &[],
            bindings,
            f16: false,
        }
    }

    /// A 1-D count of workgroups as a grid within the per-dimension limit.
    fn grid(&self, n: usize) -> [u32; 3] {
        let max = self.max_groups.max(1) as usize;
        if n <= max {
            [n as u32, 1, 1]
        } else {
            [max as u32, n.div_ceil(max) as u32, 1]
        }
    }

    fn dispatch(&self, k: &Kernel, params: &[u32], binds: &[Bind<'_>], groups: [u32; 3]) {
        if groups.iter().any(|&g| g > self.max_groups) {
            self.fail(BackendError::Device(format!(
                "a dispatch of {groups:?} workgroups exceeds the adapter's {} per dimension",
                self.max_groups
            )));
            return;
        }
        lock(&self.rec).dispatch(k, params, binds, groups);
    }

    /// An element-wise kernel of `ops.wgsl` over `len` invocations.
    fn elementwise(
        &self,
        flag: &'static str,
        params: [u32; 4],
        binds: &[Bind<'_>],
        access: &[Access],
    ) {
        if params[0] == 0 {
            return;
        }
        let Some(k) = self.kernel(self.spec(S_OPS, format!("ops:{flag}"), vec![flag], access))
        else {
            return;
        };
        self.dispatch(
            &k,
            &params,
            binds,
            self.grid((params[0] as usize).div_ceil(256)),
        );
    }

    /// Submits the recorded commands (if any) before a host write to a buffer they may use.
    fn flush(&self) {
        lock(&self.rec).flush();
    }

    /// Records a copy of `bytes` of `src` into a read-back buffer, submits, and maps it.
    fn read_bytes(&self, src: &wgpu::Buffer, bytes: u64) -> Result<ReadBack, BackendError> {
        take_error(&self.errors)?;
        let staging = Scratch::take(&self.pool, Kind::ReadBack, bytes)?;
        {
            let mut rec = lock(&self.rec);
            rec.copy(src, 0, &staging.slot().buf, 0, bytes);
            rec.flush();
        }
        Ok(ReadBack::new(
            self.device.clone(),
            staging,
            bytes.next_multiple_of(4),
            self.errors.clone(),
        ))
    }

    fn upload_words(&self, words: &[u32]) -> Result<Scratch, BackendError> {
        let bytes = (words.len() * 4) as u64;
        let s = Scratch::take(&self.pool, Kind::Storage, bytes)?;
        self.flush();
        self.queue
            .write_buffer(&s.slot().buf, 0, bytemuck::cast_slice(words));
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_source_is_balanced() {
        for (name, src) in [
            ("common", include_str!("shaders/common.wgsl")),
            ("quant", S_QUANT),
            ("matvec", S_MATVEC),
            ("matmul", S_MATMUL),
            ("norm", S_NORM),
            ("ops", S_OPS),
            ("embed", S_EMBED),
            ("attention", S_ATTN),
            ("sample", S_SAMPLE),
        ] {
            assert!(pipelines::preprocess(src, &[]).is_ok(), "{name}");
        }
    }
}
