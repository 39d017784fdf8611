//! The compute backend interface the model graph runs on, and the per-step batch description.
//!
//! A backend owns device memory (activations, quantized weights, the paged KV cache) and executes
//! the operations of a Llama-family forward pass. Operations are enqueued synchronously (a CPU
//! backend runs them at once; a GPU backend records them) and results come back through the
//! asynchronous [`Backend::read`], so the same graph code runs natively and in a browser.

pub mod cpu;
mod step;
#[cfg(feature = "webgpu")]
pub mod webgpu;

use std::future::Future;
use std::ops::Range;

pub use step::{LogitsWanted, SeqChunk, StepInput, StepSeq};

use crate::gguf::ModelBytes;
use crate::quant::GgmlType;

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot compute with a tensor of this type.
    #[error("the {backend} backend does not support {ty} weights")]
    UnsupportedType {
        /// Backend name.
        backend: String,
        /// The tensor type.
        ty: GgmlType,
    },
    /// A tensor or buffer does not fit the device.
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// The backend is not available on this machine.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A device-side failure.
    #[error("device error: {0}")]
    Device(String),
}

/// What a backend reports about itself.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    /// Short name: `cpu`, `webgpu`, `cuda`.
    pub name: String,
    /// The device: CPU model and instruction set, or the GPU adapter.
    pub device: String,
    /// Worker threads (CPU) or 0.
    pub threads: usize,
}

/// What a backend can do beyond the operations every backend has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// It picks tokens on the device ([`Backend::sample`]), so that only token ids come back.
    pub device_sampling: bool,
    /// The weight types [`Backend::upload_matrix`] takes; a model with others cannot load.
    pub weight_types: Vec<GgmlType>,
    /// Its operations are done when they return (the CPU), so a step abandoned between two
    /// layers saves the rest of its work; a backend that records or queues them for the device
    /// gains nothing from that, and its steps always run to their end.
    pub eager: bool,
}

impl Capabilities {
    /// Whether matrices of type `ty` can be uploaded.
    pub fn computes(&self, ty: GgmlType) -> bool {
        self.weight_types.contains(&ty)
    }
}

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDtype {
    /// 32-bit floats.
    F32,
    /// Half floats.
    F16,
}

impl KvDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}

/// Geometry of the paged KV cache: `n_blocks` blocks of `block_size` token slots, for every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    /// Transformer layers.
    pub n_layers: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Token slots per block.
    pub block_size: usize,
    /// Blocks in the pool.
    pub n_blocks: usize,
    /// Element type.
    pub dtype: KvDtype,
}

impl KvLayout {
    /// Floats per token per layer for keys (and again for values).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Bytes the whole pool takes (keys and values, all layers).
    pub fn total_bytes(&self) -> usize {
        2 * self.n_layers * self.n_blocks * self.block_size * self.kv_dim() * self.dtype.size()
    }
}

/// A weight matrix as stored in a model file: `rows` rows of `cols` elements of type `ty`, row
/// major, in `bytes[range]`.
#[derive(Clone)]
pub struct MatrixSource {
    /// Tensor name, for messages.
    pub name: String,
    /// Element type.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// The file's bytes.
    pub bytes: ModelBytes,
    /// Where the matrix's rows lie in `bytes`.
    pub range: Range<usize>,
}

impl MatrixSource {
    /// The encoded rows.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

/// How the device picks the token of one logit row (see [`Backend::sample`]): the sampler's
/// top-k -> temperature -> softmax -> top-p -> min-p -> draw, without logit bias, penalties or
/// log-probabilities (those need the logits on the host).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceSampling {
    /// Softmax temperature; 0 means greedy (argmax, lowest id on ties).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 means off (1 means greedy).
    pub top_k: u32,
    /// Nucleus threshold; 1 means off.
    pub top_p: f32,
    /// Drop tokens below `min_p` times the best token's probability; 0 means off.
    pub min_p: f32,
    /// The random draw, uniform in [0, 1) (ignored when greedy).
    pub uniform: f64,
}

impl DeviceSampling {
    /// Greedy decoding.
    pub fn greedy() -> DeviceSampling {
        DeviceSampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            uniform: 0.0,
        }
    }

    /// `1 / temperature`, or 0 when the choice is greedy (temperature 0, top-k 1, or a
    /// temperature so small that its inverse overflows), as the CPU sampler decides.
    pub fn inverse_temperature(&self) -> f32 {
        if self.temperature > 0.0 && self.top_k != 1 {
            let inv = 1.0 / self.temperature;
            if inv.is_finite() {
                return inv;
            }
        }
        0.0
    }
}

/// A device that runs the Llama-family forward pass.
///
/// Shapes are given by the caller: buffers are flat `f32` arrays with `rows` rows of a given
/// width. Operations on mismatched shapes are bugs in the caller and may panic.
pub trait Backend: Send + Sync + 'static {
    /// An activation buffer.
    type Buffer: Send + Sync;
    /// A weight matrix resident on the device.
    type Matrix: Send + Sync;
    /// The paged KV cache.
    type KvStore: Send + Sync;
    /// Per-step metadata resident on the device.
    type Step: Send + Sync;

    /// Name and device.
    fn info(&self) -> BackendInfo;

    /// What it can do beyond the required operations.
    fn capabilities(&self) -> Capabilities;

    /// Runs a whole forward pass (`f`) in the backend's execution context; the CPU backend runs
    /// it inside its worker pool so that its parallel loops start cheaply.
    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Makes a weight matrix available to the device (without dequantizing it).
    fn upload_matrix(&self, src: &MatrixSource) -> Result<Self::Matrix, BackendError>;

    /// Copies a vector (norm weights, biases) to the device.
    fn upload_vector(&self, data: &[f32]) -> Result<Self::Buffer, BackendError>;

    /// Allocates a zeroed activation buffer of `len` floats.
    fn alloc(&self, len: usize) -> Result<Self::Buffer, BackendError>;

    /// Allocates the paged KV cache.
    fn alloc_kv(&self, layout: &KvLayout) -> Result<Self::KvStore, BackendError>;

    /// Uploads a step's metadata (tokens, positions, block tables, RoPE angles).
    fn begin_step(&self, step: &StepInput) -> Result<Self::Step, BackendError>;

    /// `out[r] = table[token[r]]` for every row of the step.
    fn embed(&self, step: &Self::Step, table: &Self::Matrix, out: &mut Self::Buffer);

    /// Row-wise RMSNorm: `out[r] = x[r] / rms(x[r]) * weight`.
    fn rms_norm(
        &self,
        x: &Self::Buffer,
        weight: &Self::Buffer,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Buffer,
    );

    /// `out[r][n] = sum_k w[n][k] * x[r][k]` for `rows` rows of `x`.
    fn matmul(&self, w: &Self::Matrix, x: &Self::Buffer, rows: usize, out: &mut Self::Buffer);

    /// Several products with the same input (e.g. q, k and v), which a backend may fuse.
    fn matmul_many(
        &self,
        ws: &[&Self::Matrix],
        x: &Self::Buffer,
        rows: usize,
        outs: &mut [&mut Self::Buffer],
    ) {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, rows, out);
        }
    }

    /// `x[r] += bias` for `rows` rows of width `dim`.
    fn add_bias(&self, x: &mut Self::Buffer, bias: &Self::Buffer, rows: usize, dim: usize);

    /// Rotates the first `n_dims` of each of `n_heads` heads of every row by the step's angles.
    fn rope(&self, step: &Self::Step, x: &mut Self::Buffer, n_heads: usize, head_dim: usize);

    /// Stores the step's keys and values for `layer` into their cache slots.
    fn kv_write(
        &self,
        step: &Self::Step,
        kv: &mut Self::KvStore,
        layer: usize,
        k: &Self::Buffer,
        v: &Self::Buffer,
    );

    /// Causal attention of the step's queries over each sequence's cached keys and values.
    fn attention(
        &self,
        step: &Self::Step,
        kv: &Self::KvStore,
        layer: usize,
        q: &Self::Buffer,
        n_heads: usize,
        out: &mut Self::Buffer,
    );

    /// `gate = silu(gate) * up` over `len` floats.
    fn swiglu(&self, gate: &mut Self::Buffer, up: &Self::Buffer, len: usize);

    /// `x += y` over `len` floats.
    fn add(&self, x: &mut Self::Buffer, y: &Self::Buffer, len: usize);

    /// Copies the step's logit rows of `x` (width `dim`) into `out`, in order.
    fn gather_output_rows(
        &self,
        step: &Self::Step,
        x: &Self::Buffer,
        dim: usize,
        out: &mut Self::Buffer,
    );

    /// `x += y`, then `out = rms_norm(x)`: a residual add and the norm that follows it. A backend
    /// may fuse them; the result must equal [`Backend::add`] then [`Backend::rms_norm`].
    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm(
        &self,
        x: &mut Self::Buffer,
        y: &Self::Buffer,
        weight: &Self::Buffer,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Buffer,
    ) {
        self.add(x, y, rows * dim);
        self.rms_norm(x, weight, eps, rows, dim, out);
    }

    /// The feed-forward's two products and SwiGLU: `gate = silu(w_gate . x) * (w_up . x)` for
    /// `rows` rows of `ffn` outputs (`up` is scratch). A backend may fuse them; the result must
    /// equal [`Backend::matmul_many`] then [`Backend::swiglu`].
    #[allow(clippy::too_many_arguments)]
    fn matmul_swiglu(
        &self,
        w_gate: &Self::Matrix,
        w_up: &Self::Matrix,
        x: &Self::Buffer,
        rows: usize,
        ffn: usize,
        gate: &mut Self::Buffer,
        up: &mut Self::Buffer,
    ) {
        self.matmul_many(&[w_gate, w_up], x, rows, &mut [&mut *gate, &mut *up]);
        self.swiglu(gate, up, rows * ffn);
    }

    /// RoPE on the step's queries (`n_heads` heads) and keys (`n_kv_heads`), then the keys and
    /// values into their cache slots for `layer`. A backend may fuse them; the result must equal
    /// [`Backend::rope`] twice then [`Backend::kv_write`].
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_write(
        &self,
        step: &Self::Step,
        kv: &mut Self::KvStore,
        layer: usize,
        (q, n_heads): (&mut Self::Buffer, usize),
        (k, n_kv_heads): (&mut Self::Buffer, usize),
        v: &Self::Buffer,
        head_dim: usize,
    ) {
        self.rope(step, q, n_heads, head_dim);
        self.rope(step, k, n_kv_heads, head_dim);
        self.kv_write(step, kv, layer, k, v);
    }

    /// Reads `len` floats of a buffer back to the host.
    fn read(
        &self,
        buf: &Self::Buffer,
        len: usize,
    ) -> impl Future<Output = Result<Vec<f32>, BackendError>>;

    /// Picks one token per logit row of `logits` (`rows.len()` rows of `vocab` floats) on the
    /// device, so that only the token ids come back. `None` when the backend does not sample
    /// (the caller reads the logits instead).
    fn sample(
        &self,
        logits: &Self::Buffer,
        vocab: usize,
        rows: &[DeviceSampling],
    ) -> Option<impl Future<Output = Result<Vec<u32>, BackendError>>> {
        let _ = (logits, vocab, rows);
        None::<std::future::Ready<Result<Vec<u32>, BackendError>>>
    }
}
