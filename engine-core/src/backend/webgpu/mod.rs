//! The WebGPU backend: the forward pass in WGSL compute kernels through `wgpu`, natively on
//! Vulkan, Metal or DX12 and in browsers on WebGPU.
//!
//! - Weights stay quantized on the device (see [`weights`]); matrices larger than one binding
//!   are split by rows. Products use a fused dequantize-and-multiply kernel for up to 8
//!   activation rows (decode, batched decode) and a tiled kernel beyond.
//! - Every operation is recorded into one command encoder; the step is submitted once, when its
//!   result is read (or when the next step begins). Pipelines and bind groups are created once
//!   and cached; activation and scratch buffers come from a pool.
//! - With `shader-f16` the products multiply in f16 and the KV cache holds f16; otherwise
//!   everything is f32. Reductions use subgroup operations when the adapter has them.
//! - [`Backend::read`] and [`Backend::sample`] return futures that never block on the web.

mod device;
mod kv;
mod pipelines;
mod pool;
mod read;
mod recorder;
mod step;
mod weights;

use std::future::Future;
use std::sync::{Arc, Mutex};

pub use device::{AdapterReport, Precision, WebGpuOptions};
pub use kv::GpuKvStore;
pub use pool::GpuBuffer;
pub use step::GpuStep;
pub use weights::GpuMatrix;

use self::device::ErrorSlot;
use self::pipelines::{Access, Kernel, KernelSpec, Pipelines};
use self::pool::{Kind, Pool, Scratch};
use self::read::{ReadBack, take_error};
use self::recorder::{Bind, DeadIds, Recorder};
use super::{
    Backend, BackendError, BackendInfo, DeviceSampling, KvDtype, KvLayout, MatrixSource, StepInput,
};
use crate::gguf::GgufFile;
use crate::model::ModelConfig;

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

/// Device memory a model needs, from [`WebGpuBackend::check_model`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Quantized weights, as stored on the device.
    pub weights: u64,
    /// The KV cache.
    pub kv_cache: u64,
    /// Activations and scratch for the largest step.
    pub scratch: u64,
    /// Buffers the largest matrix is split into.
    pub max_parts: usize,
}

impl MemoryPlan {
    /// Everything.
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.scratch
    }
}

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
    /// The buffer of per-row sampling parameters (used only by [`Backend::sample`]).
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
    /// record them here; [`Backend::read`], [`Backend::begin_step`] and [`Backend::sample`]
    /// return it).
    pub fn take_error(&self) -> Result<(), BackendError> {
        take_error(&self.errors)
    }

    /// Checks, before anything is uploaded, that a model with a KV cache of `kv` and steps of up
    /// to `max_batch_tokens` rows fits the adapter: supported weight types, every tensor within
    /// the binding limits (split as needed), one KV layer within a binding, and the total within
    /// [`WebGpuOptions::memory_budget`] when one is set.
    pub fn check_model(
        &self,
        file: &GgufFile,
        kv: &KvLayout,
        max_batch_tokens: usize,
    ) -> Result<MemoryPlan, BackendError> {
        let limit = self.report.binding_limit;
        let mut plan = MemoryPlan::default();
        for t in &file.gguf().tensors {
            match t.dims[..] {
                [cols, rows] if rows > 1 => {
                    let (_, per_part, bytes) =
                        weights::plan(&t.name, t.ggml_type, rows as usize, cols as usize, limit)?;
                    plan.weights += bytes;
                    plan.max_parts = plan.max_parts.max((rows as usize).div_ceil(per_part));
                }
                _ => plan.weights += t.n_elements() * 4,
            }
        }
        let f16 = self.kv_f16(kv);
        GpuKvStore::check(kv, f16, limit)?;
        plan.kv_cache = 2 * kv.n_layers as u64 * GpuKvStore::layer_bytes(kv, f16);
        if let Ok(c) = ModelConfig::from_metadata(file.metadata()) {
            let rows = max_batch_tokens.max(1) as u64;
            let per_row = 3 * c.d_model + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.ffn_dim;
            plan.scratch = rows * per_row as u64 * 4 + 4 * c.vocab_size as u64 * 4;
            for (what, bytes) in [
                ("activations", rows * c.ffn_dim as u64 * 4),
                ("logits", rows.min(64) * c.vocab_size as u64 * 4),
            ] {
                if bytes > limit {
                    return Err(BackendError::OutOfMemory(format!(
                        "{what} of a {rows}-token step take {bytes} bytes, more than the largest binding ({limit} bytes): use smaller steps"
                    )));
                }
            }
        }
        if let Some(budget) = self.budget
            && plan.total() > budget
        {
            return Err(BackendError::OutOfMemory(format!(
                "the model needs about {} MiB on {} (weights {} MiB, KV cache {} MiB, scratch {} MiB), more than the budget of {} MiB",
                plan.total() >> 20,
                self.report.name,
                plan.weights >> 20,
                plan.kv_cache >> 20,
                plan.scratch >> 20,
                budget >> 20
            )));
        }
        Ok(plan)
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

    /// Records `out[r][col0..] = w . x[r]` for `rows` rows.
    fn record_matmul(&self, w: &GpuMatrix, x: &GpuBuffer, rows: usize, out: &mut GpuBuffer) {
        if rows == 0 || w.rows == 0 {
            return;
        }
        if x.len() < rows * w.cols || out.len() < rows * w.rows {
            self.fail(BackendError::Device(format!(
                "matmul of {rows} rows by a {}x{} matrix with buffers of {} and {} floats",
                w.rows,
                w.cols,
                x.len(),
                out.len()
            )));
            return;
        }
        let f16 = self.report.using_f16;
        let flag = w.layout.flag;
        let nb = w.blocks_per_row() as u32;
        if self.cpu_kernels && rows <= MATVEC_MAX_ROWS {
            let r = rows.next_power_of_two() as u32;
            let spec = KernelSpec {
                source: S_ROWWISE,
                key: format!("rw:{flag}:{r}:{f16}"),
                flags: vec![flag],
                consts: vec![("R", r)],
                extra: &[S_QUANT],
                bindings: &[R, R, RW],
                f16,
            };
            let Some(kernel) = self.kernel(spec) else {
                return;
            };
            for part in &w.parts {
                let params = [
                    w.cols as u32,
                    part.rows as u32,
                    w.rows as u32,
                    part.row0 as u32,
                    rows as u32,
                    nb,
                    part.scale_offset,
                    0,
                ];
                let binds = [
                    Bind {
                        id: part.id,
                        buf: &part.buf,
                    },
                    bind(x),
                    bind(out),
                ];
                self.dispatch(
                    &kernel,
                    &params,
                    &binds,
                    [part.rows.div_ceil(64) as u32, 1, 1],
                );
            }
            return;
        }
        let (kernel, per_wg) = if rows <= MATVEC_MAX_ROWS {
            let r = rows.next_power_of_two() as u32;
            let nr: u32 = if r >= 8 { 2 } else { 4 };
            let spec = KernelSpec {
                source: S_MATVEC,
                key: format!("mv:{flag}:{r}:{nr}:{f16}"),
                flags: vec![flag],
                consts: vec![("R", r), ("NR", nr)],
                extra: &[S_QUANT],
                bindings: &[R, R, RW],
                f16,
            };
            (self.kernel(spec), nr as usize)
        } else {
            let spec = KernelSpec {
                source: S_MATMUL,
                key: format!("mm:{flag}:{f16}"),
                flags: vec![flag],
                consts: Vec::new(),
                extra: &[S_QUANT],
                bindings: &[R, R, RW],
                f16,
            };
            (self.kernel(spec), 0)
        };
        let Some(kernel) = kernel else {
            return;
        };
        for part in &w.parts {
            let params = [
                w.cols as u32,
                part.rows as u32,
                w.rows as u32,
                part.row0 as u32,
                rows as u32,
                nb,
                part.scale_offset,
                0,
            ];
            let groups = if per_wg > 0 {
                self.grid(part.rows.div_ceil(per_wg))
            } else {
                [part.rows.div_ceil(64) as u32, rows.div_ceil(64) as u32, 1]
            };
            let binds = [
                Bind {
                    id: part.id,
                    buf: &part.buf,
                },
                bind(x),
                bind(out),
            ];
            self.dispatch(&kernel, &params, &binds, groups);
        }
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

impl Backend for WebGpuBackend {
    type Buffer = GpuBuffer;
    type Matrix = GpuMatrix;
    type KvStore = GpuKvStore;
    type Step = GpuStep;

    fn info(&self) -> BackendInfo {
        let r = &self.report;
        BackendInfo {
            name: "webgpu".into(),
            device: format!(
                "{} ({}, {}, {})",
                r.name,
                r.api,
                if r.using_f16 { "f16" } else { "f32" },
                if r.using_subgroups {
                    "subgroups"
                } else {
                    "no subgroups"
                }
            ),
            threads: 0,
        }
    }

    fn upload_matrix(&self, src: &MatrixSource) -> Result<GpuMatrix, BackendError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let m = weights::upload(
            &self.device,
            src,
            self.report.binding_limit,
            || self.pool.id(),
            self.dead.clone(),
        );
        if let Some(Some(e)) = pipelines::poll_now(scope.pop()) {
            return Err(BackendError::OutOfMemory(format!(
                "uploading {}: {e}",
                src.name
            )));
        }
        m
    }

    fn upload_vector(&self, data: &[f32]) -> Result<GpuBuffer, BackendError> {
        let (slot, _) = self.pool.take(Kind::Storage, (data.len() * 4) as u64)?;
        self.flush();
        if !data.is_empty() {
            self.queue
                .write_buffer(&slot.buf, 0, bytemuck::cast_slice(data));
        }
        Ok(GpuBuffer::new(slot, data.len(), self.pool.clone()))
    }

    fn alloc(&self, len: usize) -> Result<GpuBuffer, BackendError> {
        let bytes = (len * 4) as u64;
        let (slot, fresh) = self.pool.take(Kind::Storage, bytes)?;
        if !fresh {
            lock(&self.rec).clear(&slot.buf, slot.buf.size());
        }
        Ok(GpuBuffer::new(slot, len, self.pool.clone()))
    }

    fn alloc_kv(&self, layout: &KvLayout) -> Result<GpuKvStore, BackendError> {
        let f16 = self.kv_f16(layout);
        GpuKvStore::check(layout, f16, self.report.binding_limit)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let kv = GpuKvStore::new(
            &self.device,
            *layout,
            f16,
            || self.pool.id(),
            self.dead.clone(),
        );
        if let Some(Some(e)) = pipelines::poll_now(scope.pop()) {
            return Err(BackendError::OutOfMemory(format!(
                "allocating the KV cache: {e}"
            )));
        }
        Ok(kv)
    }

    fn begin_step(&self, step: &StepInput) -> Result<GpuStep, BackendError> {
        take_error(&self.errors)?;
        let words = step::pack(step);
        let buf = self.upload_words(&words)?;
        Ok(GpuStep {
            rows: step.rows(),
            n_logit: step.logit_rows.len(),
            rope_dims: step.rope_dims,
            max_ctx: step::max_ctx(step),
            n_tiles: step::tiles(step),
            buf,
        })
    }

    fn embed(&self, step: &GpuStep, table: &GpuMatrix, out: &mut GpuBuffer) {
        let groups = table.cols / 8;
        if out.len() < step.rows * table.cols {
            self.fail(BackendError::Device("embedding output too small".into()));
            return;
        }
        let flag = table.layout.flag;
        let spec = KernelSpec {
            source: S_EMBED,
            key: format!("embed:{flag}"),
            flags: vec![flag],
            consts: Vec::new(),
            extra: &[S_QUANT],
            bindings: &[R, R, RW],
            f16: false,
        };
        let Some(k) = self.kernel(spec) else {
            return;
        };
        for part in &table.parts {
            let params = [
                table.cols as u32,
                table.blocks_per_row() as u32,
                part.scale_offset,
                part.row0 as u32,
                part.rows as u32,
                step.rows as u32,
                table.rows as u32,
                0,
            ];
            let binds = [
                bind_scratch(&step.buf),
                Bind {
                    id: part.id,
                    buf: &part.buf,
                },
                bind(out),
            ];
            self.dispatch(
                &k,
                &params,
                &binds,
                self.grid((step.rows * groups).div_ceil(256)),
            );
        }
    }

    fn rms_norm(
        &self,
        x: &GpuBuffer,
        weight: &GpuBuffer,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut GpuBuffer,
    ) {
        let Some(k) = self.kernel(self.spec(S_NORM, "norm".into(), vec![], &[R, R, RW])) else {
            return;
        };
        let params = [dim as u32, rows as u32, eps.to_bits(), 0];
        self.dispatch(
            &k,
            &params,
            &[bind(x), bind(weight), bind(out)],
            self.grid(rows),
        );
    }

    fn matmul(&self, w: &GpuMatrix, x: &GpuBuffer, rows: usize, out: &mut GpuBuffer) {
        self.record_matmul(w, x, rows, out);
    }

    fn add_bias(&self, x: &mut GpuBuffer, bias: &GpuBuffer, rows: usize, dim: usize) {
        self.elementwise(
            "K_BIAS",
            [(rows * dim) as u32, dim as u32, 0, 0],
            &[bind(x), bind(bias)],
            &[RW, R],
        );
    }

    fn rope(&self, step: &GpuStep, x: &mut GpuBuffer, n_heads: usize, head_dim: usize) {
        let pairs = step.rope_dims / 2;
        self.elementwise(
            "K_ROPE",
            [
                (step.rows * n_heads * pairs) as u32,
                0,
                n_heads as u32,
                head_dim as u32,
            ],
            &[bind_scratch(&step.buf), bind(x)],
            &[R, RW],
        );
    }

    fn kv_write(
        &self,
        step: &GpuStep,
        kv: &mut GpuKvStore,
        layer: usize,
        k: &GpuBuffer,
        v: &GpuBuffer,
    ) {
        let (Some(kc), Some(vc)) = (kv.k.get(layer), kv.v.get(layer)) else {
            self.fail(BackendError::Device(format!("no KV layer {layer}")));
            return;
        };
        let dim = kv.layout.kv_dim();
        let (flags, per) = if kv.f16 {
            (vec!["K_KV_WRITE", "KV16"], 2)
        } else {
            (vec!["K_KV_WRITE"], 1)
        };
        let Some(kern) = self.kernel(self.spec(
            S_OPS,
            format!("kvwrite:{}", kv.f16),
            flags,
            &[R, R, R, RW, RW],
        )) else {
            return;
        };
        let len = step.rows * dim / per;
        let binds = [
            bind_scratch(&step.buf),
            bind(k),
            bind(v),
            Bind {
                id: kc.0,
                buf: &kc.1,
            },
            Bind {
                id: vc.0,
                buf: &vc.1,
            },
        ];
        self.dispatch(
            &kern,
            &[len as u32, dim as u32, 0, 0],
            &binds,
            self.grid(len.div_ceil(256)),
        );
    }

    fn attention(
        &self,
        step: &GpuStep,
        kv: &GpuKvStore,
        layer: usize,
        q: &GpuBuffer,
        n_heads: usize,
        out: &mut GpuBuffer,
    ) {
        let l = kv.layout;
        let (Some(kc), Some(vc)) = (kv.k.get(layer), kv.v.get(layer)) else {
            self.fail(BackendError::Device(format!("no KV layer {layer}")));
            return;
        };
        if n_heads == 0 || !n_heads.is_multiple_of(l.n_kv_heads) {
            self.fail(BackendError::Device(format!(
                "{n_heads} query heads cannot share {} KV heads",
                l.n_kv_heads
            )));
            return;
        }
        let hd = l.head_dim;
        let scale = 1.0 / (hd as f32).sqrt();
        let kvflag: Vec<&str> = if kv.f16 { vec!["KV16"] } else { vec![] };
        let kcb = Bind {
            id: kc.0,
            buf: &kc.1,
        };
        let vcb = Bind {
            id: vc.0,
            buf: &vc.1,
        };
        if step.rows <= SPLIT_ATTENTION_MAX_ROWS {
            let n_chunks = step.max_ctx.div_ceil(ATTENTION_CHUNK).max(1);
            let params = [
                n_heads as u32,
                l.n_kv_heads as u32,
                hd as u32,
                l.kv_dim() as u32,
                l.block_size as u32,
                n_chunks as u32,
                scale.to_bits(),
                (n_heads * hd) as u32,
            ];
            let part_bytes = (step.rows * n_heads * n_chunks * (hd + 2) * 4) as u64;
            let part = match Scratch::take(&self.pool, Kind::Storage, part_bytes) {
                Ok(p) => p,
                Err(e) => return self.fail(e),
            };
            let mut flags = kvflag.clone();
            flags.push("K_ATT_SPLIT");
            let Some(split) = self.kernel(self.spec(
                S_ATTN,
                format!("att-split:{}", kv.f16),
                flags,
                &[R, R, R, R, RW],
            )) else {
                return;
            };
            let Some(combine) = self.kernel(self.spec(
                S_ATTN,
                "att-combine".into(),
                vec!["K_ATT_COMBINE"],
                &[R, RW],
            )) else {
                return;
            };
            let binds = [
                bind_scratch(&step.buf),
                bind(q),
                kcb,
                vcb,
                bind_scratch(&part),
            ];
            self.dispatch(
                &split,
                &params,
                &binds,
                [n_chunks as u32, n_heads as u32, step.rows as u32],
            );
            self.dispatch(
                &combine,
                &params,
                &[bind_scratch(&part), bind(out)],
                [n_heads as u32, step.rows as u32, 1],
            );
        } else {
            let bkv: u32 = if hd <= 128 { 16 } else { 8 };
            let mut flags = kvflag;
            flags.push("K_ATT_TILED");
            let spec = KernelSpec {
                source: S_ATTN,
                key: format!("att-tiled:{}:{hd}", kv.f16),
                flags,
                consts: vec![("HD", hd as u32), ("HD4", (hd / 4) as u32), ("BKV", bkv)],
                extra: &[],
                bindings: &[R, R, R, R, RW],
                f16: false,
            };
            let Some(k) = self.kernel(spec) else {
                return;
            };
            let params = [
                n_heads as u32,
                l.n_kv_heads as u32,
                hd as u32,
                l.kv_dim() as u32,
                l.block_size as u32,
                0,
                scale.to_bits(),
                (n_heads * hd) as u32,
            ];
            let binds = [bind_scratch(&step.buf), bind(q), kcb, vcb, bind(out)];
            self.dispatch(
                &k,
                &params,
                &binds,
                [step.n_tiles as u32, n_heads as u32, 1],
            );
        }
    }

    fn swiglu(&self, gate: &mut GpuBuffer, up: &GpuBuffer, len: usize) {
        self.elementwise(
            "K_SWIGLU",
            [len as u32, 0, 0, 0],
            &[bind(gate), bind(up)],
            &[RW, R],
        );
    }

    fn add(&self, x: &mut GpuBuffer, y: &GpuBuffer, len: usize) {
        self.elementwise(
            "K_ADD",
            [len as u32, 0, 0, 0],
            &[bind(x), bind(y)],
            &[RW, R],
        );
    }

    fn gather_logit_rows(&self, step: &GpuStep, x: &GpuBuffer, dim: usize, out: &mut GpuBuffer) {
        self.elementwise(
            "K_GATHER",
            [(step.n_logit * dim) as u32, dim as u32, 0, 0],
            &[bind_scratch(&step.buf), bind(x), bind(out)],
            &[R, R, RW],
        );
    }

    fn read(
        &self,
        buf: &GpuBuffer,
        len: usize,
    ) -> impl Future<Output = Result<Vec<f32>, BackendError>> {
        let len = len.min(buf.len());
        let started = if len == 0 {
            None
        } else {
            Some(self.read_bytes(&buf.slot().buf, (len * 4) as u64))
        };
        async move {
            let Some(started) = started else {
                return Ok(Vec::new());
            };
            let bytes = started?.await?;
            Ok(bytes
                .chunks_exact(4)
                .take(len)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
    }

    fn supports_device_sampling(&self) -> bool {
        true
    }

    fn sample(
        &self,
        logits: &GpuBuffer,
        vocab: usize,
        rows: &[DeviceSampling],
    ) -> Option<impl Future<Output = Result<Vec<u32>, BackendError>>> {
        let started = self.record_sample(logits, vocab, rows);
        let n = rows.len();
        Some(async move {
            let bytes = started?.await?;
            Ok(bytes
                .chunks_exact(4)
                .take(n)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        })
    }
}

impl WebGpuBackend {
    fn record_sample(
        &self,
        logits: &GpuBuffer,
        vocab: usize,
        rows: &[DeviceSampling],
    ) -> Result<ReadBack, BackendError> {
        take_error(&self.errors)?;
        let n = rows.len();
        if n == 0 || vocab == 0 {
            return Err(BackendError::Device(
                "sampling needs rows and a vocabulary".into(),
            ));
        }
        if logits.len() < n * vocab {
            return Err(BackendError::Device(format!(
                "sampling {n} rows of {vocab} logits from a buffer of {} floats",
                logits.len()
            )));
        }
        let mut spec = Vec::with_capacity(8 * n);
        for s in rows {
            spec.extend([
                s.inverse_temperature().to_bits(),
                s.top_k,
                s.top_p.to_bits(),
                s.min_p.to_bits(),
                (s.uniform as f32).min(1.0 - f32::EPSILON / 2.0).to_bits(),
                0,
                0,
                0,
            ]);
        }
        let spec_bytes = (spec.len() * 4) as u64;
        // The spec buffer is used only here and every sample submits at once, so no recorded
        // command can still be waiting for its old contents.
        let (spec_id, spec_buf) = {
            let mut slot = lock(&self.sample_spec);
            if slot.as_ref().is_none_or(|(_, b)| b.size() < spec_bytes) {
                if let Some((old, _)) = slot.take() {
                    lock(&self.dead).push(old);
                }
                let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("sample spec"),
                    size: spec_bytes.next_power_of_two().max(256),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                *slot = Some((self.pool.id(), buf));
            }
            let (id, buf) = slot.as_ref().expect("set above");
            (*id, buf.clone())
        };
        self.queue
            .write_buffer(&spec_buf, 0, bytemuck::cast_slice(&spec));
        let scratch = Scratch::take(&self.pool, Kind::Storage, (n * vocab * 8) as u64)?;
        let out = Scratch::take(&self.pool, Kind::Storage, (n * 4) as u64)?;
        let kernel = self.pipelines.get(
            &self.device,
            &self.spec(S_SAMPLE, "sample".into(), vec![], &[R, R, RW, RW]),
        )?;
        let binds = [
            bind(logits),
            Bind {
                id: spec_id,
                buf: &spec_buf,
            },
            bind_scratch(&scratch),
            bind_scratch(&out),
        ];
        self.dispatch(
            &kernel,
            &[vocab as u32, n as u32, 0, 0],
            &binds,
            self.grid(n),
        );
        self.read_bytes(&out.slot().buf, (n * 4) as u64)
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
