//! The [`Backend`] implementation: each operation records one or more kernel dispatches.

use std::future::Future;

use super::pipelines::{self, KernelSpec};
use super::pool::Kind;
use super::read::take_error;
use super::recorder::Bind;
use super::{
    GpuBuffer, GpuKvStore, GpuMatrix, GpuStep, R, RW, S_EMBED, S_NORM, S_OPS, S_QUANT,
    WebGpuBackend, bind, bind_scratch, lock, step, weights,
};
use crate::backend::{
    Backend, BackendError, BackendInfo, Capabilities, DeviceSampling, KvLayout, MatrixSource,
    StepInput,
};

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

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            device_sampling: true,
            eager: false,
            weight_types: weights::TYPES.to_vec(),
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
            n_output: step.output_rows.len(),
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
        self.record_attention(step, kv, layer, q, n_heads, out);
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

    fn gather_output_rows(&self, step: &GpuStep, x: &GpuBuffer, dim: usize, out: &mut GpuBuffer) {
        self.elementwise(
            "K_GATHER",
            [(step.n_output * dim) as u32, dim as u32, 0, 0],
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
