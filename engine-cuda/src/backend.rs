//! engine-core's [`Backend`] on a CUDA device: f32 activations in device memory, weights in
//! their GGUF encoding, one stream. Operations are enqueued on the stream as the graph calls
//! them; the first failure of any of them is kept and answered by the next [`Backend::read`]
//! (the trait's operations cannot return errors), as the WebGPU backend does.
//!
//! This first version favours being plainly correct over speed (one launch per operation, a
//! matrix-vector kernel per 8 rows even in prefill, metadata uploaded per step); it has not run
//! on a GPU yet.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg,
};
use engine_core::backend::{
    Backend, BackendError, BackendInfo, Capabilities, KvDtype, KvLayout, MatrixSource, StepInput,
};
use engine_core::model::RopeLayout;
use engine_core::quant::GgmlType;

use crate::device::{CudaError, DeviceInfo, probe};
use crate::images::{self, Image, MODULES};
use crate::launch::{self, Launch, WeightFormat};
use crate::step::{ArenaHome, StepArena, StepLayout};

/// Threads per block of the attention kernel (`ATTN_THREADS` in `kernels/attention.cu`).
pub const ATTENTION_THREADS: u32 = 128;

/// The largest head the attention kernel handles (two dimensions per thread).
pub const MAX_HEAD_DIM: usize = 2 * ATTENTION_THREADS as usize;

/// The CUDA backend of one device.
pub struct CudaBackend {
    info: DeviceInfo,
    image: Image,
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    /// The first failure of an enqueued operation, answered by the next read.
    failure: Mutex<Option<String>>,
    /// Step metadata buffers, reused from step to step.
    arena: ArenaHome,
    /// The context (alive for the stream and the functions; allocates pinned memory).
    ctx: Arc<CudaContext>,
}

/// A weight matrix on the device, in its GGUF encoding.
pub struct CudaMatrix {
    format: WeightFormat,
    /// Output features (rows of the matrix).
    n: usize,
    /// Input features.
    k: usize,
    data: CudaSlice<u8>,
}

/// One layer's keys or values: `slots x kv_dim` elements.
enum KvCache {
    F32(CudaSlice<f32>),
    /// Half floats, as their bits.
    F16(CudaSlice<u16>),
}

/// The paged KV cache: per layer, keys and values by slot (`block * block_size + offset`).
pub struct CudaKvStore {
    layout: KvLayout,
    k: Vec<KvCache>,
    v: Vec<KvCache>,
}

/// A step's metadata on the device.
pub struct CudaStep {
    rows: usize,
    rope_dims: usize,
    neox: bool,
    n_outputs: usize,
    /// Where each part lies in the arena's packed integers.
    layout: StepLayout,
    /// The device copies of the metadata (always present until dropped).
    arena: Option<StepArena>,
    /// Where the arena goes back when the step ends.
    home: ArenaHome,
}

impl CudaStep {
    fn arena(&self) -> &StepArena {
        self.arena.as_ref().expect("a live step holds its arena")
    }

    /// A part of the packed integers.
    fn ints(&self, part: &Range<usize>) -> CudaView<'_, i32> {
        self.arena()
            .ints()
            .slice(part.start..part.end.max(part.start))
    }

    /// The RoPE angles (cos, sin per pair, per row).
    fn angles(&self) -> CudaView<'_, f32> {
        let floats = self.arena().floats();
        floats.slice(0..floats.len())
    }
}

impl Drop for CudaStep {
    fn drop(&mut self) {
        if let (Some(arena), Ok(mut home)) = (self.arena.take(), self.home.lock())
            && home.is_none()
        {
            *home = Some(arena);
        }
    }
}

/// The entry points of a PTX module (`.entry name(`).
pub fn entry_points(ptx: &str) -> impl Iterator<Item = &str> {
    ptx.lines().filter_map(|line| {
        let rest = line.split(".entry ").nth(1)?;
        rest.split('(').next().map(str::trim)
    })
}

impl CudaBackend {
    /// Opens device `ordinal`: checks the driver and the device, loads the kernel images its
    /// architecture runs.
    pub fn new(ordinal: usize) -> Result<CudaBackend, CudaError> {
        let info = probe(ordinal)?;
        let image = images::choose(info.compute_capability, info.driver)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::Driver(format!("{e:?}")))?;
        let modules = images::load(&ctx, image)?;
        let mut functions = HashMap::new();
        for (module, loaded) in MODULES.iter().zip(&modules) {
            for name in entry_points(module.ptx) {
                let f = loaded
                    .load_function(name)
                    .map_err(|e| CudaError::Driver(format!("kernel {name}: {e:?}")))?;
                functions.insert(name.to_owned(), f);
            }
        }
        Ok(CudaBackend {
            info,
            image,
            stream: ctx.default_stream(),
            functions,
            failure: Mutex::new(None),
            arena: ArenaHome::default(),
            ctx,
        })
    }

    /// The device.
    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// Keeps the first failure.
    fn fail(&self, what: &str, e: impl std::fmt::Debug) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(format!("{what}: {e:?}"));
        }
    }

    fn function(&self, name: &str) -> Option<&CudaFunction> {
        let f = self.functions.get(name);
        if f.is_none() {
            self.fail("missing kernel", name);
        }
        f
    }

    fn device_error(&self, e: impl std::fmt::Debug) -> BackendError {
        BackendError::Device(format!("{e:?}"))
    }

    fn upload<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        data: &[T],
    ) -> Result<CudaSlice<T>, BackendError> {
        if data.is_empty() {
            return self.zeros(1);
        }
        self.stream
            .clone_htod(data)
            .map_err(|e| self.device_error(e))
    }

    fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, BackendError> {
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(|e| BackendError::OutOfMemory(format!("{len} elements: {e:?}")))
    }
}

fn config(grid: (u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `$kernel` with `$cfg` and the arguments, recording a failure.
macro_rules! launch {
    ($self:ident, $kernel:expr, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        if let Some(f) = $self.function($kernel) {
            let mut b = $self.stream.launch_builder(f);
            $(b.arg($arg);)*
            // SAFETY: the argument list matches the kernel's parameters (see kernels/*.cu) and
            // every buffer is large enough for the launch's shape (checked by the graph).
            if let Err(e) = unsafe { b.launch($cfg) } {
                $self.fail($kernel, e);
            }
        }
    }};
}

/// Launches a kernel as its launch plan says, or records why it cannot be launched.
macro_rules! launch_planned {
    ($self:ident, $what:literal, $plan:expr, [$($arg:expr),* $(,)?]) => {
        match $plan {
            Ok(Launch { kernel, grid, block }) => {
                launch!($self, kernel, config((grid, 1), block), [$($arg),*])
            }
            Err(e) => $self.fail($what, e),
        }
    };
}

fn weight_format(ty: GgmlType) -> Option<WeightFormat> {
    match ty {
        GgmlType::Q4_0 => Some(WeightFormat::Q4_0),
        GgmlType::Q4_1 => Some(WeightFormat::Q4_1),
        GgmlType::Q8_0 => Some(WeightFormat::Q8_0),
        GgmlType::Q4_K => Some(WeightFormat::Q4K),
        GgmlType::Q5_K => Some(WeightFormat::Q5K),
        GgmlType::Q6_K => Some(WeightFormat::Q6K),
        GgmlType::F16 => Some(WeightFormat::F16),
        GgmlType::BF16 => Some(WeightFormat::BF16),
        _ => None,
    }
}

fn int(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Backend for CudaBackend {
    type Buffer = CudaSlice<f32>;
    type Matrix = CudaMatrix;
    type KvStore = CudaKvStore;
    type Step = CudaStep;

    fn info(&self) -> BackendInfo {
        let (major, minor) = self.info.compute_capability;
        let image = match self.image {
            Image::Cubin(arch) => format!("sm_{arch} cubin"),
            Image::Ptx => "PTX".to_owned(),
        };
        BackendInfo {
            name: "cuda".into(),
            device: format!(
                "{} (compute capability {major}.{minor}, {:.0} GiB, CUDA driver {}, {image})",
                self.info.name,
                self.info.memory_bytes as f64 / (1u64 << 30) as f64,
                self.info.driver
            ),
            threads: 0,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            device_sampling: false,
            eager: false,
            weight_types: GgmlType::SUPPORTED
                .into_iter()
                .filter(|&ty| weight_format(ty).is_some())
                .collect(),
        }
    }

    fn upload_matrix(&self, src: &MatrixSource) -> Result<CudaMatrix, BackendError> {
        let format = weight_format(src.ty).ok_or(BackendError::UnsupportedType {
            backend: "cuda".into(),
            ty: src.ty,
        })?;
        let bytes = src.data();
        if !src.cols.is_multiple_of(format.block_len())
            || bytes.len() != format.row_bytes(src.cols) * src.rows
        {
            return Err(BackendError::Device(format!(
                "matrix {} has {} bytes, expected {} rows of {} {:?} weights",
                src.name,
                bytes.len(),
                src.rows,
                src.cols,
                format
            )));
        }
        Ok(CudaMatrix {
            format,
            n: src.rows,
            k: src.cols,
            data: self.upload(bytes)?,
        })
    }

    fn upload_vector(&self, data: &[f32]) -> Result<CudaSlice<f32>, BackendError> {
        self.upload(data)
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>, BackendError> {
        self.zeros(len)
    }

    fn alloc_kv(&self, layout: &KvLayout) -> Result<CudaKvStore, BackendError> {
        if layout.head_dim > MAX_HEAD_DIM {
            return Err(BackendError::Unavailable(format!(
                "heads of {} dimensions (the CUDA attention kernel takes at most {MAX_HEAD_DIM})",
                layout.head_dim
            )));
        }
        let len = layout.n_blocks * layout.block_size * layout.kv_dim();
        let cache = || -> Result<KvCache, BackendError> {
            Ok(match layout.dtype {
                KvDtype::F32 => KvCache::F32(self.zeros(len)?),
                KvDtype::F16 => KvCache::F16(self.zeros(len)?),
            })
        };
        let mut k = Vec::with_capacity(layout.n_layers);
        let mut v = Vec::with_capacity(layout.n_layers);
        for _ in 0..layout.n_layers {
            k.push(cache()?);
            v.push(cache()?);
        }
        Ok(CudaKvStore {
            layout: *layout,
            k,
            v,
        })
    }

    fn begin_step(&self, step: &StepInput) -> Result<CudaStep, BackendError> {
        let (ints, layout) = crate::step::pack(step);
        // The arena kept from the last step, or new buffers (also when a step is still alive).
        let kept = self.arena.lock().ok().and_then(|mut home| home.take());
        let mut arena = match kept {
            Some(a) => a,
            None => StepArena::new(&self.ctx, &self.stream, ints.len(), step.rope_angles.len())
                .map_err(|e| self.device_error(e))?,
        };
        arena
            .load(&self.ctx, &self.stream, &ints, &step.rope_angles)
            .map_err(|e| self.device_error(e))?;
        Ok(CudaStep {
            rows: step.rows(),
            rope_dims: step.rope_dims,
            neox: step.rope_layout == RopeLayout::Neox,
            n_outputs: step.output_rows.len(),
            layout,
            arena: Some(arena),
            home: Arc::clone(&self.arena),
        })
    }

    fn embed(&self, step: &CudaStep, table: &CudaMatrix, out: &mut CudaSlice<f32>) {
        let dim = int(table.k);
        let tokens = step.ints(&step.layout.tokens);
        launch_planned!(
            self,
            "embed",
            launch::embed(table.format, step.rows, table.k),
            [&table.data, &tokens, &dim, out]
        )
    }

    fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) {
        let width = int(dim);
        launch_planned!(
            self,
            "rms_norm",
            launch::rms_norm("rms_norm", rows, dim),
            [x, weight, &eps, &width, out]
        )
    }

    fn matmul(&self, w: &CudaMatrix, x: &CudaSlice<f32>, rows: usize, out: &mut CudaSlice<f32>) {
        let (n, k) = (w.n, w.k);
        let (n32, k32) = (int(n), int(k));
        for (start, r) in launch::matvec_row_chunks(rows) {
            let xv = x.slice(start * k..(start + r) * k);
            let mut ov = out.slice_mut(start * n..(start + r) * n);
            launch_planned!(
                self,
                "matmul",
                launch::matvec(w.format, r, n, k),
                [&w.data, &xv, &mut ov, &n32, &k32]
            );
        }
    }

    fn add_bias(&self, x: &mut CudaSlice<f32>, bias: &CudaSlice<f32>, rows: usize, dim: usize) {
        let (rows32, dim32) = (int(rows), int(dim));
        launch_planned!(
            self,
            "add_bias",
            launch::elementwise("add_bias", rows * dim),
            [x, bias, &rows32, &dim32]
        )
    }

    fn rope(&self, step: &CudaStep, x: &mut CudaSlice<f32>, n_heads: usize, head_dim: usize) {
        if step.rope_dims == 0 || step.rows == 0 {
            return;
        }
        let block = (step.rope_dims / 2).next_multiple_of(32) as u32;
        let (heads, width, dims, neox) = (
            int(n_heads),
            int(head_dim),
            int(step.rope_dims),
            i32::from(step.neox),
        );
        let angles = step.angles();
        launch!(
            self,
            "rope",
            config((step.rows as u32, n_heads as u32), block),
            [x, &angles, &heads, &width, &dims, &neox]
        );
    }

    fn kv_write(
        &self,
        step: &CudaStep,
        kv: &mut CudaKvStore,
        layer: usize,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
    ) {
        if step.rows == 0 {
            return;
        }
        let kv_dim = int(kv.layout.kv_dim());
        let cfg = config((step.rows as u32, 1), 128);
        let slots = step.ints(&step.layout.slots);
        for (cache, src) in [(&mut kv.k[layer], k), (&mut kv.v[layer], v)] {
            match cache {
                KvCache::F32(c) => {
                    launch!(self, "kv_write_f32", cfg, [c, src, &slots, &kv_dim])
                }
                KvCache::F16(c) => {
                    launch!(self, "kv_write_f16", cfg, [c, src, &slots, &kv_dim])
                }
            }
        }
    }

    fn attention(
        &self,
        step: &CudaStep,
        kv: &CudaKvStore,
        layer: usize,
        q: &CudaSlice<f32>,
        n_heads: usize,
        out: &mut CudaSlice<f32>,
    ) {
        if step.rows == 0 {
            return;
        }
        let l = kv.layout;
        let scale = 1.0 / (l.head_dim as f32).sqrt();
        let (heads, kv_heads, head_dim, block_size) = (
            int(n_heads),
            int(l.n_kv_heads),
            int(l.head_dim),
            int(l.block_size),
        );
        let cfg = config((step.rows as u32, n_heads as u32), ATTENTION_THREADS);
        let positions = step.ints(&step.layout.positions);
        let row_table = step.ints(&step.layout.row_table);
        let tables = step.ints(&step.layout.tables);
        // The same arguments for either element type of the cache.
        macro_rules! attend {
            ($kernel:literal, $k:expr, $v:expr) => {
                launch!(
                    self,
                    $kernel,
                    cfg,
                    [
                        q,
                        $k,
                        $v,
                        &positions,
                        &row_table,
                        &tables,
                        &heads,
                        &kv_heads,
                        &head_dim,
                        &block_size,
                        &scale,
                        out
                    ]
                )
            };
        }
        match (&kv.k[layer], &kv.v[layer]) {
            (KvCache::F32(k), KvCache::F32(v)) => attend!("attention_f32", k, v),
            (KvCache::F16(k), KvCache::F16(v)) => attend!("attention_f16", k, v),
            _ => self.fail("attention", "keys and values of different types"),
        }
    }

    fn swiglu(&self, gate: &mut CudaSlice<f32>, up: &CudaSlice<f32>, len: usize) {
        let len32 = int(len);
        launch_planned!(
            self,
            "swiglu",
            launch::elementwise("swiglu", len),
            [gate, up, &len32]
        )
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, len: usize) {
        let len32 = int(len);
        launch_planned!(self, "add", launch::elementwise("add", len), [x, y, &len32])
    }

    fn add_rms_norm(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) {
        let width = int(dim);
        launch_planned!(
            self,
            "add_rms_norm",
            launch::rms_norm("add_rms_norm", rows, dim),
            [x, y, weight, &eps, &width, out]
        )
    }

    fn matmul_swiglu(
        &self,
        w_gate: &CudaMatrix,
        w_up: &CudaMatrix,
        x: &CudaSlice<f32>,
        rows: usize,
        ffn: usize,
        gate: &mut CudaSlice<f32>,
        up: &mut CudaSlice<f32>,
    ) {
        let (n, k) = (w_gate.n, w_gate.k);
        let fused = w_up.format == w_gate.format
            && (w_up.n, w_up.k) == (n, k)
            && launch::matvec_swiglu(w_gate.format, 1, n, k).is_some();
        if !fused {
            self.matmul_many(&[w_gate, w_up], x, rows, &mut [&mut *gate, &mut *up]);
            self.swiglu(gate, up, rows * ffn);
            return;
        }
        let (n32, k32) = (int(n), int(k));
        for (start, r) in launch::matvec_row_chunks(rows) {
            let xv = x.slice(start * k..(start + r) * k);
            let mut gv = gate.slice_mut(start * n..(start + r) * n);
            if let Some(plan) = launch::matvec_swiglu(w_gate.format, r, n, k) {
                launch_planned!(
                    self,
                    "matmul_swiglu",
                    plan,
                    [&w_gate.data, &w_up.data, &xv, &mut gv, &n32, &k32]
                );
            }
        }
    }

    fn gather_output_rows(
        &self,
        step: &CudaStep,
        x: &CudaSlice<f32>,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) {
        if step.n_outputs == 0 {
            return;
        }
        let width = int(dim);
        let rows = step.ints(&step.layout.output_rows);
        launch!(
            self,
            "gather_rows",
            config((step.n_outputs as u32, 1), 256),
            [x, &rows, &width, out]
        );
    }

    fn read(
        &self,
        buf: &CudaSlice<f32>,
        len: usize,
    ) -> impl Future<Output = Result<Vec<f32>, BackendError>> {
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let result = match failure {
            Some(f) => Err(BackendError::Device(f)),
            None => self
                .stream
                .clone_dtoh(&buf.slice(..len.min(buf.len())))
                .map_err(|e| self.device_error(e)),
        };
        std::future::ready(result)
    }
}

impl From<CudaError> for BackendError {
    fn from(e: CudaError) -> BackendError {
        BackendError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_the_backend_launches_is_an_entry_point() {
        let entries: Vec<&str> = MODULES.iter().flat_map(|m| entry_points(m.ptx)).collect();
        for name in [
            "rope",
            "kv_write_f32",
            "kv_write_f16",
            "attention_f32",
            "attention_f16",
            "gather_rows",
            "rms_norm",
            "add",
            "add_bias",
            "swiglu",
            "embed_q8_0",
            "matvec_q4_1_r8",
        ] {
            assert!(entries.contains(&name), "{name} not in {entries:?}");
        }
        let src = include_str!("../kernels/attention.cu");
        assert!(src.contains(&format!("#define ATTN_THREADS {ATTENTION_THREADS}")));
    }

    #[test]
    fn without_a_driver_the_backend_says_cuda_is_not_available() {
        match CudaBackend::new(0) {
            Err(CudaError::Unavailable(msg)) => {
                let e = BackendError::from(CudaError::Unavailable(msg));
                assert!(e.to_string().contains("CUDA not available"), "{e}");
            }
            // A machine with a GPU gets a backend (or a clear reason why not).
            Ok(b) => assert_eq!(b.info().name, "cuda"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
