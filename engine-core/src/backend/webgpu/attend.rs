//! Attention over the paged KV cache: split over the context for decode steps
//! (flash-decoding, then a combine pass), tiled and causal for prefill steps.

use super::pipelines::KernelSpec;
use super::pool::{Kind, Scratch};
use super::recorder::Bind;
use super::{
    ATTENTION_CHUNK, GpuBuffer, GpuKvStore, GpuStep, R, RW, S_ATTN, SPLIT_ATTENTION_MAX_ROWS,
    WebGpuBackend, bind, bind_scratch,
};
use crate::backend::BackendError;

impl WebGpuBackend {
    /// Records causal attention of the step's queries over `layer` of the cache.
    pub(super) fn record_attention(
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
}
