//! Causal attention over the paged KV cache.

use super::matmul::dot_f32;
use super::threads::{Pool, SharedMut};
use crate::backend::{KvLayout, StepInput};

/// Query rows per work item.
const ROWS_PER_TASK: usize = 16;

/// The CPU's KV cache: for each layer, `n_blocks * block_size` slots of `kv_dim` floats, keys and
/// values apart. Memory is allocated zeroed and untouched, so only used slots take RAM.
pub struct CpuKvStore {
    /// The geometry.
    pub layout: KvLayout,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl CpuKvStore {
    /// Allocates the pool.
    pub fn new(layout: KvLayout) -> Option<CpuKvStore> {
        let n = layout
            .n_layers
            .checked_mul(layout.n_blocks)?
            .checked_mul(layout.block_size)?
            .checked_mul(layout.kv_dim())?;
        Some(CpuKvStore {
            layout,
            k: super::zeroed_f32(n)?,
            v: super::zeroed_f32(n)?,
        })
    }

    fn offset(&self, layer: usize, slot: usize) -> usize {
        let l = &self.layout;
        (layer * l.n_blocks * l.block_size + slot) * l.kv_dim()
    }

    /// Writes the step's keys and values of `layer` into their slots.
    pub fn write(&mut self, step: &StepInput, layer: usize, k: &[f32], v: &[f32]) {
        let dim = self.layout.kv_dim();
        for (r, &slot) in step.slots.iter().enumerate() {
            let at = self.offset(layer, slot as usize);
            self.k[at..at + dim].copy_from_slice(&k[r * dim..(r + 1) * dim]);
            self.v[at..at + dim].copy_from_slice(&v[r * dim..(r + 1) * dim]);
        }
    }

    /// Causal attention of the step's queries (`n_heads` heads per row) over `layer`'s cache.
    pub fn attend(
        &self,
        pool: &Pool,
        step: &StepInput,
        layer: usize,
        q: &[f32],
        n_heads: usize,
        out: &mut [f32],
    ) {
        let l = self.layout;
        let hd = l.head_dim;
        let group = n_heads / l.n_kv_heads;
        let q_width = n_heads * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        // Work items: (sequence, head, chunk of its rows).
        let mut items = Vec::new();
        for (s, seq) in step.seqs.iter().enumerate() {
            for h in 0..n_heads {
                let mut r = seq.rows.start;
                while r < seq.rows.end {
                    let end = (r + ROWS_PER_TASK).min(seq.rows.end);
                    items.push((s, h, r, end));
                    r = end;
                }
            }
        }
        let out_ptr = SharedMut(out.as_mut_ptr());
        pool.for_each(items.len(), |i| {
            let (s, h, r0, r1) = items[i];
            let seq = &step.seqs[s];
            let kvh = h / group;
            let mut scores = vec![0.0f32; seq.context_len()];
            for r in r0..r1 {
                let pos = seq.start_pos + (r - seq.rows.start);
                let ctx = pos + 1;
                let qh = &q[r * q_width + h * hd..r * q_width + (h + 1) * hd];
                let mut max = f32::NEG_INFINITY;
                for (t, sc) in scores[..ctx].iter_mut().enumerate() {
                    let slot = seq.block_table[t / l.block_size] as usize * l.block_size
                        + t % l.block_size;
                    let at = self.offset(layer, slot) + kvh * hd;
                    *sc = dot_f32(qh, &self.k[at..at + hd]) * scale;
                    max = max.max(*sc);
                }
                let mut sum = 0.0f32;
                for sc in &mut scores[..ctx] {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                // SAFETY: (row r, head h) of `out` belongs to this work item alone.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.get().add(r * q_width + h * hd), hd)
                };
                o.fill(0.0);
                for (t, &p) in scores[..ctx].iter().enumerate() {
                    let slot = seq.block_table[t / l.block_size] as usize * l.block_size
                        + t % l.block_size;
                    let at = self.offset(layer, slot) + kvh * hd;
                    let w = p * inv;
                    for (o, &v) in o.iter_mut().zip(&self.v[at..at + hd]) {
                        *o += w * v;
                    }
                }
            }
        });
    }
}
