//! The paged KV cache (f32 or f16) and causal attention over it.
//!
//! Layout: for each layer, block and KV head, a `head_dim x block_size` tile of keys stored
//! transposed (element `d` of all the block's keys is contiguous, so the scores of a whole block
//! come from one vector multiply-add per dimension, with no horizontal sums), and a
//! `block_size x head_dim` tile of values.

use super::kernels::Isa;
use super::simd::{Simd, dispatch};
use super::threads::{Pool, SharedMut};
use crate::backend::{KvDtype, KvLayout, StepInput, StepSeq};

/// Query rows per work item: their scores are computed in one pass over the keys and values.
const ROWS_PER_TASK: usize = 16;

/// An element type of the cache.
trait Elem: Copy + Send + Sync + 'static {
    fn from_f32(x: f32) -> Self;
    /// `dst = src` as f32.
    unsafe fn widen<S: Simd>(src: &[Self], dst: &mut [f32]);
}

impl Elem for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn widen<S: Simd>(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

/// IEEE half precision, stored as bits.
impl Elem for u16 {
    #[inline(always)]
    fn from_f32(x: f32) -> u16 {
        half::f16::from_f32(x).to_bits()
    }
    #[inline(always)]
    unsafe fn widen<S: Simd>(src: &[u16], dst: &mut [f32]) {
        unsafe { S::widen_f16(src, dst) }
    }
}

enum KvData {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<u16>, v: Vec<u16> },
}

/// The CPU's KV cache. Memory is allocated zeroed and untouched, so only used slots take RAM.
pub struct CpuKvStore {
    /// The geometry.
    pub layout: KvLayout,
    data: KvData,
}

/// One work item: the query heads that share one KV head, for some query rows of one sequence.
struct Item<'a> {
    seq: &'a StepSeq,
    kv_head: usize,
    rows: std::ops::Range<usize>,
}

/// What every work item of one attention call shares.
struct Shared<'a> {
    store: &'a CpuKvStore,
    layer: usize,
    q: &'a [f32],
    q_width: usize,
    group: usize,
    scale: f32,
    out: SharedMut<f32>,
}

/// Where the key and value tiles of `head` in `block` of `layer` start.
#[inline(always)]
fn tile_base(l: &KvLayout, layer: usize, block: usize, head: usize) -> usize {
    ((layer * l.n_blocks + block) * l.n_kv_heads + head) * l.block_size * l.head_dim
}

impl CpuKvStore {
    /// Allocates the pool.
    pub fn new(layout: KvLayout) -> Option<CpuKvStore> {
        let n = layout
            .n_layers
            .checked_mul(layout.n_blocks)?
            .checked_mul(layout.block_size)?
            .checked_mul(layout.kv_dim())?;
        let data = match layout.dtype {
            KvDtype::F32 => KvData::F32 {
                k: super::zeroed_vec(n)?,
                v: super::zeroed_vec(n)?,
            },
            KvDtype::F16 => KvData::F16 {
                k: super::zeroed_vec(n)?,
                v: super::zeroed_vec(n)?,
            },
        };
        Some(CpuKvStore { layout, data })
    }

    /// Writes the step's keys and values of `layer` into their slots.
    pub fn write(&mut self, step: &StepInput, layer: usize, k: &[f32], v: &[f32]) {
        /// Keys go to column `off` of the transposed key tile, values to row `off` of the value
        /// tile.
        fn store<E: Elem>(
            l: &KvLayout,
            (keys, values): (&mut [E], &mut [E]),
            (k, v): (&[f32], &[f32]),
            step: &StepInput,
            layer: usize,
        ) {
            let (hd, heads, bs) = (l.head_dim, l.n_kv_heads, l.block_size);
            for (r, &slot) in step.slots.iter().enumerate() {
                let (block, off) = (slot as usize / bs, slot as usize % bs);
                for h in 0..heads {
                    let base = tile_base(l, layer, block, h);
                    let from = (r * heads + h) * hd..(r * heads + h + 1) * hd;
                    for (d, &x) in k[from.clone()].iter().enumerate() {
                        keys[base + d * bs + off] = E::from_f32(x);
                    }
                    let row = &mut values[base + off * hd..base + (off + 1) * hd];
                    for (dst, &x) in row.iter_mut().zip(&v[from]) {
                        *dst = E::from_f32(x);
                    }
                }
            }
        }
        let l = &self.layout;
        match &mut self.data {
            KvData::F32 { k: kd, v: vd } => store(l, (kd, vd), (k, v), step, layer),
            KvData::F16 { k: kd, v: vd } => store(l, (kd, vd), (k, v), step, layer),
        }
    }

    /// Causal attention of the step's queries (`n_heads` heads per row) over `layer`'s cache.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        pool: &Pool,
        isa: Isa,
        step: &StepInput,
        layer: usize,
        q: &[f32],
        n_heads: usize,
        out: &mut [f32],
    ) {
        let l = self.layout;
        let mut items = Vec::new();
        for seq in &step.seqs {
            for kv_head in 0..l.n_kv_heads {
                let mut r = seq.rows.start;
                while r < seq.rows.end {
                    let end = (r + ROWS_PER_TASK).min(seq.rows.end);
                    items.push(Item {
                        seq,
                        kv_head,
                        rows: r..end,
                    });
                    r = end;
                }
            }
        }
        let shared = Shared {
            store: self,
            layer,
            q,
            q_width: n_heads * l.head_dim,
            group: n_heads / l.n_kv_heads,
            scale: 1.0 / (l.head_dim as f32).sqrt(),
            out: SharedMut(out.as_mut_ptr()),
        };
        pool.for_each(items.len(), |i| attend_item(isa, &shared, &items[i]));
    }
}

dispatch!(
    /// Attention of one work item, compiled for the instruction set.
    fn attend_item => attend_item_with(shared: &Shared<'_>, item: &Item<'_>) -> ()
);

#[inline(always)]
fn attend_item_with<S: Simd>(sh: &Shared<'_>, item: &Item<'_>) {
    match &sh.store.data {
        KvData::F32 { k, v } => attend_rows::<S, f32>(sh, item, k, v),
        KvData::F16 { k, v } => attend_rows::<S, u16>(sh, item, k, v),
    }
}

#[inline(always)]
fn attend_rows<S: Simd, E: Elem>(sh: &Shared<'_>, item: &Item<'_>, keys: &[E], values: &[E]) {
    let l = sh.store.layout;
    let (hd, bs) = (l.head_dim, l.block_size);
    let seq = item.seq;
    let n_rows = item.rows.len();
    let first_pos = seq.start_pos + (item.rows.start - seq.rows.start);
    // Row i sees keys 0..=first_pos + i.
    let n_blocks = (first_pos + n_rows).div_ceil(bs);
    let width = n_blocks * bs;
    // Queries: the group's heads for each row; query qi is head h0 + qi / n_rows of row qi % n_rows.
    let h0 = item.kv_head * sh.group;
    let n_q = sh.group * n_rows;
    let row_of = |qi: usize| qi % n_rows;
    let q_at = |qi: usize| {
        let (h, r) = (h0 + qi / n_rows, item.rows.start + qi % n_rows);
        &sh.q[r * sh.q_width + h * hd..r * sh.q_width + (h + 1) * hd]
    };
    let out_at = |qi: usize| {
        let (h, r) = (h0 + qi / n_rows, item.rows.start + qi % n_rows);
        // SAFETY: (row r, head h) of `out` belongs to this work item alone.
        unsafe { std::slice::from_raw_parts_mut(sh.out.get().add(r * sh.q_width + h * hd), hd) }
    };
    let mut scores = vec![f32::NEG_INFINITY; n_q * width];
    let mut tile = vec![0.0f32; hd * bs];
    for kb in 0..n_blocks {
        let base = tile_base(&l, sh.layer, seq.block_table[kb] as usize, item.kv_head);
        // SAFETY: the caller compiled this for an instruction set the CPU has.
        unsafe { E::widen::<S>(&keys[base..base + hd * bs], &mut tile) };
        let t0 = kb * bs;
        for qi in 0..n_q {
            let pos = first_pos + row_of(qi);
            if pos < t0 {
                continue;
            }
            let visible = (pos + 1 - t0).min(bs);
            let row = &mut scores[qi * width + t0..qi * width + t0 + bs];
            if bs == 16 {
                block_scores::<S, 16>(q_at(qi), &tile, sh.scale, row);
            } else {
                block_scores_any::<S>(q_at(qi), &tile, bs, sh.scale, row);
            }
            row[visible..].fill(f32::NEG_INFINITY);
        }
    }
    for qi in 0..n_q {
        let row = &mut scores[qi * width..qi * width + first_pos + row_of(qi) + 1];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|s| *s = crate::math::exp(*s - max));
        let inv = 1.0 / lane_sum(row);
        row.iter_mut().for_each(|s| *s *= inv);
        out_at(qi).fill(0.0);
    }
    for kb in 0..n_blocks {
        let base = tile_base(&l, sh.layer, seq.block_table[kb] as usize, item.kv_head);
        // SAFETY: as above.
        unsafe { E::widen::<S>(&values[base..base + hd * bs], &mut tile) };
        let t0 = kb * bs;
        for qi in 0..n_q {
            let pos = first_pos + row_of(qi);
            if pos < t0 {
                continue;
            }
            let visible = (pos + 1 - t0).min(bs);
            let p = &scores[qi * width + t0..qi * width + t0 + visible];
            accumulate_values::<S>(out_at(qi), p, &tile, hd);
        }
    }
}

/// `o += sum_j p[j] * value_j` over a value tile (`tile[j * hd + d]`). With a head size that is a
/// multiple of 16, four 16-float slices of `o` stay in registers across the keys (four
/// independent chains of multiply-adds).
#[inline(always)]
fn accumulate_values<S: Simd>(o: &mut [f32], p: &[f32], tile: &[f32], hd: usize) {
    if !hd.is_multiple_of(16) {
        for (j, &pj) in p.iter().enumerate() {
            for (o, &v) in o.iter_mut().zip(&tile[j * hd..(j + 1) * hd]) {
                *o = S::fma(pj, v, *o);
            }
        }
        return;
    }
    let mut d0 = 0;
    while d0 < hd {
        let n = ((hd - d0) / 16).min(4);
        let mut acc = [[0.0f32; 16]; 4];
        for (k, a) in acc.iter_mut().enumerate().take(n) {
            *a = o[d0 + 16 * k..d0 + 16 * (k + 1)]
                .try_into()
                .expect("16 floats");
        }
        for (j, &pj) in p.iter().enumerate() {
            for (k, a) in acc.iter_mut().enumerate().take(n) {
                let at = j * hd + d0 + 16 * k;
                let v: &[f32; 16] = tile[at..at + 16].try_into().expect("16 floats");
                for l in 0..16 {
                    a[l] = S::fma(pj, v[l], a[l]);
                }
            }
        }
        for (k, a) in acc.iter().enumerate().take(n) {
            o[d0 + 16 * k..d0 + 16 * (k + 1)].copy_from_slice(a);
        }
        d0 += 16 * n;
    }
}

/// `out[j] = scale * q . key_j` for the `BS` keys of a transposed tile (`tile[d * BS + j]`).
#[inline(always)]
fn block_scores<S: Simd, const BS: usize>(q: &[f32], tile: &[f32], scale: f32, out: &mut [f32]) {
    // Four partial sums over the dimensions, so the multiply-adds do not wait on each other.
    let mut acc = [[0.0f32; BS]; 4];
    let mut d = 0;
    while d + 4 <= q.len() {
        for (k, part) in acc.iter_mut().enumerate() {
            let col: &[f32; BS] = tile[(d + k) * BS..(d + k + 1) * BS]
                .try_into()
                .expect("a whole tile row");
            for j in 0..BS {
                part[j] = S::fma(q[d + k], col[j], part[j]);
            }
        }
        d += 4;
    }
    while d < q.len() {
        let col: &[f32; BS] = tile[d * BS..(d + 1) * BS]
            .try_into()
            .expect("a whole tile row");
        for j in 0..BS {
            acc[0][j] = S::fma(q[d], col[j], acc[0][j]);
        }
        d += 1;
    }
    for (j, o) in out.iter_mut().enumerate().take(BS) {
        *o = ((acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j])) * scale;
    }
}

/// [`block_scores`] for any block size, with the same operations in the same order for each
/// score (so results do not depend on the cache's block size).
#[inline(always)]
fn block_scores_any<S: Simd>(q: &[f32], tile: &[f32], bs: usize, scale: f32, out: &mut [f32]) {
    let mut acc = vec![[0.0f32; 4]; bs];
    let mut d = 0;
    while d + 4 <= q.len() {
        for k in 0..4 {
            let col = &tile[(d + k) * bs..(d + k + 1) * bs];
            for (a, &x) in acc.iter_mut().zip(col) {
                a[k] = S::fma(q[d + k], x, a[k]);
            }
        }
        d += 4;
    }
    while d < q.len() {
        for (a, &x) in acc.iter_mut().zip(&tile[d * bs..(d + 1) * bs]) {
            a[0] = S::fma(q[d], x, a[0]);
        }
        d += 1;
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = ((a[0] + a[1]) + (a[2] + a[3])) * scale;
    }
}

/// Sum in 16 independent lanes (so it vectorizes), then across them.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for j in 0..16 {
            acc[j] += c[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}
