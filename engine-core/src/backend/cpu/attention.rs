//! The paged KV cache (f32 or f16) and causal attention over it.
//!
//! Layout: for each layer, block and KV head, a `head_dim x block_size` tile of keys stored
//! transposed (element `d` of all the block's keys is contiguous, so the scores of a whole block
//! come from one vector multiply-add per dimension, with no horizontal sums), and a
//! `block_size x head_dim` tile of values.

use super::kernels::Isa;
use super::simd::{Simd, dispatch, prefetch};
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

/// The CPU's KV cache. Memory is allocated zeroed and untouched, so only used blocks take RAM.
pub struct CpuKvStore {
    /// The geometry.
    pub layout: KvLayout,
    data: KvData,
    /// Room for the partial results of attention's work items, kept between calls (every call
    /// writes all of the part it uses before reading it).
    partials: std::sync::Mutex<Vec<f32>>,
}

/// Keys per work item. A query's keys are split at fixed positions (multiples of this), each
/// range's softmax is computed on its own and the ranges are merged in order, so a long context
/// spreads over every worker while each result depends only on the query's position: not on the
/// batch, the cache's block size or the number of threads.
const KEY_CHUNK: usize = 256;

/// One work item: the query heads that share one KV head, for some query rows of one sequence,
/// over one range of key positions.
struct Item<'a> {
    seq: &'a StepSeq,
    kv_head: usize,
    rows: std::ops::Range<usize>,
    keys: std::ops::Range<usize>,
    /// Where the item's partial results start in the partials buffer: for each query, the
    /// range's maximum score, its sum of exponentials and its unnormalized output.
    partial: usize,
}

/// The items of one (sequence, KV head, query rows): their partials are merged into the output.
struct Group {
    items: std::ops::Range<usize>,
}

/// What every work item of one attention call shares.
struct Shared<'a> {
    store: &'a CpuKvStore,
    layer: usize,
    q: &'a [f32],
    q_width: usize,
    group: usize,
    scale: f32,
    partials: SharedMut<f32>,
}

/// Where the key and value tiles of `head` in `block` of `layer` start. Blocks are the outer
/// dimension: a block's tiles of every layer lie together, so the memory a sequence touches first
/// is a few pages near each other, not a page in each layer's region (with transparent huge
/// pages, each of those is 2 MB the kernel zeroes on first write: tens of them made a fresh
/// server's first request hundreds of milliseconds slower).
#[inline(always)]
fn tile_base(l: &KvLayout, layer: usize, block: usize, head: usize) -> usize {
    ((block * l.n_layers + layer) * l.n_kv_heads + head) * l.block_size * l.head_dim
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
        Some(CpuKvStore {
            layout,
            data,
            partials: Default::default(),
        })
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
        let group = n_heads / l.n_kv_heads;
        let stride = l.head_dim + 2;
        let (mut items, mut groups, mut len) = (Vec::new(), Vec::new(), 0);
        for seq in &step.seqs {
            for kv_head in 0..l.n_kv_heads {
                let mut r = seq.rows.start;
                while r < seq.rows.end {
                    let end = (r + ROWS_PER_TASK).min(seq.rows.end);
                    // The last row sees the most keys: positions 0..=last.
                    let last = seq.start_pos + (end - 1 - seq.rows.start);
                    let first = items.len();
                    for c0 in (0..=last).step_by(KEY_CHUNK) {
                        items.push(Item {
                            seq,
                            kv_head,
                            rows: r..end,
                            keys: c0..(c0 + KEY_CHUNK).min(last + 1),
                            partial: len,
                        });
                        len += group * (end - r) * stride;
                    }
                    groups.push(Group {
                        items: first..items.len(),
                    });
                    r = end;
                }
            }
        }
        let mut partials = self.partials.lock().unwrap_or_else(|e| e.into_inner());
        if partials.len() < len {
            partials.resize(len, 0.0);
        }
        let shared = Shared {
            store: self,
            layer,
            q,
            q_width: n_heads * l.head_dim,
            group,
            scale: 1.0 / (l.head_dim as f32).sqrt(),
            partials: SharedMut(partials.as_mut_ptr()),
        };
        pool.for_each(items.len(), |i| attend_item(isa, &shared, &items[i]));
        let out = SharedMut(out.as_mut_ptr());
        let (items, partials) = (&items, &partials[..len]);
        pool.for_each(groups.len(), |g| {
            let at = &groups[g].items;
            // SAFETY: the group's (row, head) slices of `out` belong to it alone.
            unsafe { merge(&shared, &items[at.clone()], partials, out) }
        });
    }
}

/// Merges the partial results of one group's key ranges, in order, into `out`.
///
/// # Safety
/// `out` must point at the step's output, and no other thread may write this group's rows.
unsafe fn merge(sh: &Shared<'_>, items: &[Item<'_>], partials: &[f32], out: SharedMut<f32>) {
    let hd = sh.store.layout.head_dim;
    let stride = hd + 2;
    let first = &items[0];
    let n_rows = first.rows.len();
    let h0 = first.kv_head * sh.group;
    let mut acc = vec![0.0f32; hd];
    for qi in 0..sh.group * n_rows {
        let part =
            |it: &Item<'_>| &partials[it.partial + qi * stride..it.partial + (qi + 1) * stride];
        let live = || items.iter().map(part).filter(|p| p[1] > 0.0);
        let max = live().map(|p| p[0]).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        acc.fill(0.0);
        for p in live() {
            let w = crate::math::exp(p[0] - max);
            sum += w * p[1];
            for (a, &o) in acc.iter_mut().zip(&p[2..]) {
                *a += w * o;
            }
        }
        let inv = 1.0 / sum;
        let (h, r) = (h0 + qi / n_rows, first.rows.start + qi % n_rows);
        // SAFETY: (row r, head h) of `out` belongs to this group alone (the caller's promise).
        let dst =
            unsafe { std::slice::from_raw_parts_mut(out.get().add(r * sh.q_width + h * hd), hd) };
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = a * inv;
        }
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

/// One item's partial results: for each query, the maximum score over the item's key range, the
/// sum of the exponentials of the scores minus that maximum, and the values weighted by them.
#[inline(always)]
fn attend_rows<S: Simd, E: Elem>(sh: &Shared<'_>, item: &Item<'_>, keys: &[E], values: &[E]) {
    let l = sh.store.layout;
    let (hd, bs) = (l.head_dim, l.block_size);
    let seq = item.seq;
    let n_rows = item.rows.len();
    let first_pos = seq.start_pos + (item.rows.start - seq.rows.start);
    let (c0, c1) = (item.keys.start, item.keys.end);
    let width = c1 - c0;
    // Queries: the group's heads for each row; query qi is head h0 + qi / n_rows of row qi % n_rows.
    let h0 = item.kv_head * sh.group;
    let n_q = sh.group * n_rows;
    let pos_of = |qi: usize| first_pos + qi % n_rows;
    // Keys of the range that query qi sees: c0..seen(qi).
    let seen = |qi: usize| (pos_of(qi) + 1).clamp(c0, c1);
    // The positions lo..hi of the block starting at t0 that query qi sees in the range, if any.
    let span = |qi: usize, t0: usize| {
        let (lo, hi) = (t0.max(c0), seen(qi).min(t0 + bs));
        (lo < hi).then_some((lo, hi))
    };
    let q_at = |qi: usize| {
        let (h, r) = (h0 + qi / n_rows, item.rows.start + qi % n_rows);
        &sh.q[r * sh.q_width + h * hd..r * sh.q_width + (h + 1) * hd]
    };
    let stride = hd + 2;
    let part_at = |qi: usize| {
        // SAFETY: the item's slice of the partials belongs to it alone.
        unsafe {
            std::slice::from_raw_parts_mut(
                sh.partials.get().add(item.partial + qi * stride),
                stride,
            )
        }
    };
    let mut scores = vec![f32::NEG_INFINITY; n_q * width];
    let mut tile = vec![0.0f32; hd * bs];
    let mut block = vec![0.0f32; bs];
    let blocks = c0 / bs..(c1 - 1) / bs + 1;
    let tile_at = |kb: usize| {
        let base = tile_base(&l, sh.layer, seq.block_table[kb] as usize, item.kv_head);
        base..base + hd * bs
    };
    for kb in blocks.clone() {
        // Start loading the next tile (the values' first one after the last key tile): tiles of
        // one head are strided, and a range is too short for the hardware to learn the stride.
        match kb + 1 < blocks.end {
            true => prefetch(&keys[tile_at(kb + 1)]),
            false => prefetch(&values[tile_at(blocks.start)]),
        }
        // SAFETY: the caller compiled this for an instruction set the CPU has.
        unsafe { E::widen::<S>(&keys[tile_at(kb)], &mut tile) };
        let t0 = kb * bs;
        for qi in 0..n_q {
            let Some((lo, hi)) = span(qi, t0) else {
                continue;
            };
            if bs == 16 {
                block_scores::<S, 16>(q_at(qi), &tile, sh.scale, &mut block);
            } else {
                block_scores_any::<S>(q_at(qi), &tile, bs, sh.scale, &mut block);
            }
            scores[qi * width + lo - c0..qi * width + hi - c0]
                .copy_from_slice(&block[lo - t0..hi - t0]);
        }
    }
    for qi in 0..n_q {
        let part = part_at(qi);
        part[2..].fill(0.0);
        let n = seen(qi) - c0;
        if n == 0 {
            part[..2].copy_from_slice(&[f32::NEG_INFINITY, 0.0]);
            continue;
        }
        let row = &mut scores[qi * width..qi * width + n];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|s| *s = crate::math::exp(*s - max));
        part[0] = max;
        part[1] = lane_sum(row);
    }
    for kb in blocks.clone() {
        if kb + 1 < blocks.end {
            prefetch(&values[tile_at(kb + 1)]);
        }
        // SAFETY: as above.
        unsafe { E::widen::<S>(&values[tile_at(kb)], &mut tile) };
        let t0 = kb * bs;
        for qi in 0..n_q {
            let Some((lo, hi)) = span(qi, t0) else {
                continue;
            };
            let p = &scores[qi * width + lo - c0..qi * width + hi - c0];
            accumulate_values::<S>(&mut part_at(qi)[2..], p, &tile[(lo - t0) * hd..], hd);
        }
    }
}

/// `o += sum_j p[j] * value_j` over a value tile (`tile[j * hd + d]`), one chain of multiply-adds
/// per element of `o`, in key order (so splitting the keys over several calls changes nothing).
#[inline(always)]
fn accumulate_values<S: Simd>(o: &mut [f32], p: &[f32], tile: &[f32], hd: usize) {
    match hd {
        64 => accumulate_fixed::<S, 64>(o, p, tile),
        128 => accumulate_fixed::<S, 128>(o, p, tile),
        _ => {
            for (&pj, v) in p.iter().zip(tile.chunks_exact(hd)) {
                for (o, &v) in o.iter_mut().zip(v) {
                    *o = S::fma(pj, v, *o);
                }
            }
        }
    }
}

/// [`accumulate_values`] for a head size known at compile time: `o` stays in registers.
#[inline(always)]
fn accumulate_fixed<S: Simd, const HD: usize>(o: &mut [f32], p: &[f32], tile: &[f32]) {
    let o: &mut [f32; HD] = (&mut o[..HD]).try_into().expect("a whole head");
    let mut acc = *o;
    for (&pj, v) in p.iter().zip(tile.chunks_exact(HD)) {
        let v: &[f32; HD] = v.try_into().expect("a whole value row");
        for d in 0..HD {
            acc[d] = S::fma(pj, v[d], acc[d]);
        }
    }
    *o = acc;
}

/// `out[j] = scale * q . key_j` for the `BS` keys of a transposed tile (`tile[d * BS + j]`).
#[inline(always)]
fn block_scores<S: Simd, const BS: usize>(q: &[f32], tile: &[f32], scale: f32, out: &mut [f32]) {
    // Four partial sums over the dimensions (dimension d goes to sum d % 4), so the multiply-adds
    // do not wait on each other.
    let mut acc = [[0.0f32; BS]; 4];
    let whole = q.len() / 4 * 4;
    for (qd, rows) in q[..whole].chunks_exact(4).zip(tile.chunks_exact(4 * BS)) {
        for (k, part) in acc.iter_mut().enumerate() {
            let col: &[f32; BS] = rows[k * BS..(k + 1) * BS]
                .try_into()
                .expect("a whole tile row");
            for j in 0..BS {
                part[j] = S::fma(qd[k], col[j], part[j]);
            }
        }
    }
    for d in whole..q.len() {
        let col: &[f32; BS] = tile[d * BS..(d + 1) * BS]
            .try_into()
            .expect("a whole tile row");
        for j in 0..BS {
            acc[0][j] = S::fma(q[d], col[j], acc[0][j]);
        }
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
