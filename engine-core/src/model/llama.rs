//! Weights of a Llama-family model on a backend, and its forward pass.

use std::sync::atomic::{AtomicBool, Ordering};

use super::ModelError;
use super::config::{Architecture, ModelConfig};
use crate::backend::{Backend, BackendError, MatrixSource, StepInput};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;

struct Layer<B: Backend> {
    attn_norm: B::Buffer,
    wq: B::Matrix,
    wk: B::Matrix,
    wv: B::Matrix,
    bias: Option<[B::Buffer; 3]>,
    wo: B::Matrix,
    ffn_norm: B::Buffer,
    w_gate: B::Matrix,
    w_up: B::Matrix,
    w_down: B::Matrix,
}

/// A Llama-family transformer whose weights live on backend `B`.
pub struct LlamaModel<B: Backend> {
    config: ModelConfig,
    tok_embd: B::Matrix,
    output_norm: B::Buffer,
    output: Option<B::Matrix>,
    layers: Vec<Layer<B>>,
}

/// Activation buffers for a forward pass, grown on demand and reused between steps.
pub struct Scratch<B: Backend> {
    rows: usize,
    output_rows: usize,
    logit_rows: usize,
    x: Option<B::Buffer>,
    xn: Option<B::Buffer>,
    y: Option<B::Buffer>,
    q: Option<B::Buffer>,
    k: Option<B::Buffer>,
    v: Option<B::Buffer>,
    attn: Option<B::Buffer>,
    gate: Option<B::Buffer>,
    up: Option<B::Buffer>,
    last: Option<B::Buffer>,
    last_norm: Option<B::Buffer>,
    logits: Option<B::Buffer>,
}

impl<B: Backend> Default for Scratch<B> {
    fn default() -> Self {
        Scratch {
            rows: 0,
            output_rows: 0,
            logit_rows: 0,
            x: None,
            xn: None,
            y: None,
            q: None,
            k: None,
            v: None,
            attn: None,
            gate: None,
            up: None,
            last: None,
            last_norm: None,
            logits: None,
        }
    }
}

impl<B: Backend> Scratch<B> {
    fn ensure(
        &mut self,
        b: &B,
        c: &ModelConfig,
        rows: usize,
        output_rows: usize,
        logit_rows: usize,
    ) -> Result<(), ModelError> {
        if rows > self.rows {
            let rows = rows.max(self.rows * 2).max(1);
            self.x = Some(b.alloc(rows * c.d_model)?);
            self.xn = Some(b.alloc(rows * c.d_model)?);
            self.y = Some(b.alloc(rows * c.d_model)?);
            self.q = Some(b.alloc(rows * c.q_dim())?);
            self.k = Some(b.alloc(rows * c.kv_dim())?);
            self.v = Some(b.alloc(rows * c.kv_dim())?);
            self.attn = Some(b.alloc(rows * c.q_dim())?);
            self.gate = Some(b.alloc(rows * c.ffn_dim)?);
            self.up = Some(b.alloc(rows * c.ffn_dim)?);
            self.rows = rows;
        }
        if output_rows > self.output_rows || self.last.is_none() {
            let n = output_rows.max(1);
            self.last = Some(b.alloc(n * c.d_model)?);
            self.last_norm = Some(b.alloc(n * c.d_model)?);
            self.output_rows = n;
        }
        if logit_rows > self.logit_rows || self.logits.is_none() {
            let n = logit_rows.max(1);
            self.logits = Some(b.alloc(n * c.vocab_size)?);
            self.logit_rows = n;
        }
        Ok(())
    }

    /// The logits of the last step: one row of `vocab_size` per logit row of the step.
    pub fn logits(&self) -> Option<&B::Buffer> {
        self.logits.as_ref()
    }

    /// The final normalized hidden states of the last step: one row of `d_model` per output row
    /// of the step (its logit rows first, then its hidden rows).
    pub fn hidden(&self) -> Option<&B::Buffer> {
        self.last_norm.as_ref()
    }
}

/// The 2-D shape `(rows, cols)` of a weight matrix.
fn matrix_shape(info: &TensorInfo) -> Option<(usize, usize)> {
    match info.dims[..] {
        [cols, rows] => Some((rows as usize, cols as usize)),
        _ => None,
    }
}

struct Loader<'a, B: Backend> {
    backend: &'a B,
    file: &'a GgufFile,
}

impl<B: Backend> Loader<'_, B> {
    fn info(&self, name: &str) -> Result<&TensorInfo, ModelError> {
        self.file
            .gguf()
            .tensor(name)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_owned(),
                reason: "missing".into(),
            })
    }

    fn has(&self, name: &str) -> bool {
        self.file.gguf().tensor(name).is_some()
    }

    /// Rows `rows` of the matrix `name`, which must have `cols` columns.
    fn matrix_rows(
        &self,
        name: &str,
        cols: usize,
        rows: std::ops::Range<usize>,
        total_rows: usize,
    ) -> Result<B::Matrix, ModelError> {
        let info = self.info(name)?;
        let bad = |reason: String| ModelError::Tensor {
            name: name.to_owned(),
            reason,
        };
        let (r, c) = matrix_shape(info)
            .ok_or_else(|| bad(format!("expected a matrix, got dims {:?}", info.dims)))?;
        if (r, c) != (total_rows, cols) {
            return Err(bad(format!(
                "expected {total_rows} rows of {cols}, got {r} rows of {c}"
            )));
        }
        let row_bytes = info
            .ggml_type
            .row_bytes(c)
            .ok_or_else(|| bad(format!("type {} cannot hold rows of {c}", info.ggml_type)))?;
        let start = self.file.gguf().tensor_range(info).start;
        let src = MatrixSource {
            name: name.to_owned(),
            ty: info.ggml_type,
            rows: rows.len(),
            cols: c,
            bytes: self.file.bytes().clone(),
            range: start + rows.start * row_bytes..start + rows.end * row_bytes,
        };
        Ok(self.backend.upload_matrix(&src)?)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<B::Matrix, ModelError> {
        self.matrix_rows(name, cols, 0..rows, rows)
    }

    fn vector_f32(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let (info, data) = self.file.tensor(name)?;
        if info.n_elements() != len as u64 {
            return Err(ModelError::Tensor {
                name: name.to_owned(),
                reason: format!("expected {len} elements, got dims {:?}", info.dims),
            });
        }
        let mut out = vec![0.0f32; len];
        crate::quant::dequantize(info.ggml_type, data, &mut out).map_err(|e| {
            ModelError::Tensor {
                name: name.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(out)
    }

    fn vector(&self, name: &str, len: usize) -> Result<B::Buffer, ModelError> {
        let v = self.vector_f32(name, len)?;
        Ok(self.backend.upload_vector(&v)?)
    }
}

impl<B: Backend> LlamaModel<B> {
    /// Reads the configuration and makes every weight available to `backend`.
    pub fn load(backend: &B, file: &GgufFile) -> Result<LlamaModel<B>, ModelError> {
        let mut config = ModelConfig::from_metadata(file.metadata())?;
        let ld = Loader { backend, file };
        let c = config.clone();
        // Refuse a model with weights the backend cannot multiply before uploading any.
        let caps = backend.capabilities();
        if let Some(t) = file
            .gguf()
            .tensors
            .iter()
            .find(|t| matrix_shape(t).is_some() && !caps.computes(t.ggml_type))
        {
            return Err(BackendError::UnsupportedType {
                backend: backend.info().name,
                ty: t.ggml_type,
            }
            .into());
        }
        if ld.has("rope_freqs.weight") {
            config.rope.freq_factors = Some(ld.vector_f32("rope_freqs.weight", c.rope.n_dims / 2)?);
        }
        let tok_embd = ld.matrix("token_embd.weight", c.vocab_size, c.d_model)?;
        let output_norm = ld.vector("output_norm.weight", c.d_model)?;
        let output = if ld.has("output.weight") {
            Some(ld.matrix("output.weight", c.vocab_size, c.d_model)?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let name = |t: &str| format!("blk.{l}.{t}");
            let (wq, wk, wv) = if c.arch == Architecture::Phi3 {
                let n = name("attn_qkv.weight");
                let (q, kv) = (c.q_dim(), c.kv_dim());
                let total = q + 2 * kv;
                (
                    ld.matrix_rows(&n, c.d_model, 0..q, total)?,
                    ld.matrix_rows(&n, c.d_model, q..q + kv, total)?,
                    ld.matrix_rows(&n, c.d_model, q + kv..total, total)?,
                )
            } else {
                (
                    ld.matrix(&name("attn_q.weight"), c.q_dim(), c.d_model)?,
                    ld.matrix(&name("attn_k.weight"), c.kv_dim(), c.d_model)?,
                    ld.matrix(&name("attn_v.weight"), c.kv_dim(), c.d_model)?,
                )
            };
            let bias = if ld.has(&name("attn_q.bias")) {
                Some([
                    ld.vector(&name("attn_q.bias"), c.q_dim())?,
                    ld.vector(&name("attn_k.bias"), c.kv_dim())?,
                    ld.vector(&name("attn_v.bias"), c.kv_dim())?,
                ])
            } else {
                None
            };
            let (w_gate, w_up) =
                if c.arch == Architecture::Phi3 && !ld.has(&name("ffn_gate.weight")) {
                    let n = name("ffn_up.weight");
                    let f = c.ffn_dim;
                    (
                        ld.matrix_rows(&n, c.d_model, 0..f, 2 * f)?,
                        ld.matrix_rows(&n, c.d_model, f..2 * f, 2 * f)?,
                    )
                } else {
                    (
                        ld.matrix(&name("ffn_gate.weight"), c.ffn_dim, c.d_model)?,
                        ld.matrix(&name("ffn_up.weight"), c.ffn_dim, c.d_model)?,
                    )
                };
            layers.push(Layer {
                attn_norm: ld.vector(&name("attn_norm.weight"), c.d_model)?,
                wq,
                wk,
                wv,
                bias,
                wo: ld.matrix(&name("attn_output.weight"), c.d_model, c.q_dim())?,
                ffn_norm: ld.vector(&name("ffn_norm.weight"), c.d_model)?,
                w_gate,
                w_up,
                w_down: ld.matrix(&name("ffn_down.weight"), c.d_model, c.ffn_dim)?,
            });
        }
        Ok(LlamaModel {
            config,
            tok_embd,
            output_norm,
            output,
            layers,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Runs one step: writes the step's keys and values into `kv` and leaves the logits of its
    /// logit rows and the final hidden states of its output rows in `scratch` (see
    /// [`Scratch::logits`] and [`Scratch::hidden`]).
    pub fn forward(
        &self,
        b: &B,
        input: &StepInput,
        kv: &mut B::KvStore,
        scratch: &mut Scratch<B>,
    ) -> Result<(), ModelError> {
        self.forward_unless(b, input, kv, scratch, None).map(|_| ())
    }

    /// [`LlamaModel::forward`], abandoned between two layers once `stop` is set: returns
    /// whether the step ran to the end. An abandoned step leaves its logits undefined and may
    /// have written keys and values at its positions, which the same step run again overwrites
    /// with the same values.
    pub fn forward_unless(
        &self,
        b: &B,
        input: &StepInput,
        kv: &mut B::KvStore,
        scratch: &mut Scratch<B>,
        stop: Option<&AtomicBool>,
    ) -> Result<bool, ModelError> {
        let c = &self.config;
        let n = input.rows();
        if n == 0 {
            return Err(ModelError::Step("a step needs at least one token".into()));
        }
        if let Some(&bad) = input.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::Step(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let m = input.output_rows.len();
        let m_logits = input.n_logits.min(m);
        scratch.ensure(b, c, n, m, m_logits)?;
        let step = b.begin_step(input)?;
        let s = scratch;
        let (d, eps) = (c.d_model, c.norm_eps);
        let x = s.x.as_mut().expect("allocated");
        let xn = s.xn.as_mut().expect("allocated");
        let y = s.y.as_mut().expect("allocated");
        let q = s.q.as_mut().expect("allocated");
        let k = s.k.as_mut().expect("allocated");
        let v = s.v.as_mut().expect("allocated");
        let attn = s.attn.as_mut().expect("allocated");
        let gate = s.gate.as_mut().expect("allocated");
        let up = s.up.as_mut().expect("allocated");

        b.embed(&step, &self.tok_embd, x);
        if let Some(first) = self.layers.first() {
            b.rms_norm(x, &first.attn_norm, eps, n, d, xn);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ok(false);
            }
            // xn holds this layer's normalized input.
            b.matmul_many(
                &[&layer.wq, &layer.wk, &layer.wv],
                xn,
                n,
                &mut [&mut *q, &mut *k, &mut *v],
            );
            if let Some([bq, bk, bv]) = &layer.bias {
                b.add_bias(q, bq, n, c.q_dim());
                b.add_bias(k, bk, n, c.kv_dim());
                b.add_bias(v, bv, n, c.kv_dim());
            }
            b.rope_kv_write(
                &step,
                kv,
                l,
                (&mut *q, c.n_heads),
                (&mut *k, c.n_kv_heads),
                v,
                c.head_dim,
            );
            b.attention(&step, kv, l, q, c.n_heads, attn);
            b.matmul(&layer.wo, attn, n, y);
            b.add_rms_norm(x, y, &layer.ffn_norm, eps, n, d, xn);
            b.matmul_swiglu(&layer.w_gate, &layer.w_up, xn, n, c.ffn_dim, gate, up);
            b.matmul(&layer.w_down, gate, n, y);
            // The residual add, and the next layer's input norm with it.
            match self.layers.get(l + 1) {
                Some(next) => b.add_rms_norm(x, y, &next.attn_norm, eps, n, d, xn),
                None => b.add(x, y, n * d),
            }
        }
        if m > 0 {
            let last = s.last.as_mut().expect("allocated");
            let last_norm = s.last_norm.as_mut().expect("allocated");
            b.gather_output_rows(&step, x, d, last);
            b.rms_norm(last, &self.output_norm, eps, m, d, last_norm);
            if m_logits > 0 {
                let out = self.output.as_ref().unwrap_or(&self.tok_embd);
                b.matmul(
                    out,
                    last_norm,
                    m_logits,
                    s.logits.as_mut().expect("allocated"),
                );
            }
        }
        Ok(true)
    }

    /// Whether every weight type of the model can be computed by this engine.
    pub fn weight_types(file: &GgufFile) -> Vec<GgmlType> {
        let mut types: Vec<GgmlType> = file.gguf().tensors.iter().map(|t| t.ggml_type).collect();
        types.sort_by_key(|t| t.id());
        types.dedup();
        types
    }
}
