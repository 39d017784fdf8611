//! The paged KV cache (f32 or f16) and causal attention over it.
//!
//! Layout: for each layer, block and KV head, `block_size` consecutive slots of `head_dim`
//! elements, so that one head's keys in a block are contiguous.

use super::kernels::Isa;
use super::simd::{Simd, dispatch};
use super::threads::{Pool, SharedMut};
use crate::backend::{KvDtype, KvLayout, StepInput, StepSeq};

/// Query rows per work item: their scores are computed in one pass over the keys and values.
const ROWS_PER_TASK: usize = 16;

/// An element type of the cache.
trait Elem: Copy + Send + Sync + 'static {
    fn from_f32(x: f32) -> Self;
    /// `q . k`.
    unsafe fn dot<S: Simd>(q: &[f32], k: &[Self]) -> f32;
    /// `o += a * v`.
    unsafe fn axpy<S: Simd>(o: &mut [f32], a: f32, v: &[Self]);
}

impl Elem for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn dot<S: Simd>(q: &[f32], k: &[f32]) -> f32 {
        unsafe { S::dot(q, k) }
    }
    #[inline(always)]
    unsafe fn axpy<S: Simd>(o: &mut [f32], a: f32, v: &[f32]) {
        unsafe { S::axpy(o, a, v) }
    }
}

/// IEEE half precision, stored as bits.
impl Elem for u16 {
    #[inline(always)]
    fn from_f32(x: f32) -> u16 {
        half::f16::from_f32(x).to_bits()
    }
    #[inline(always)]
    unsafe fn dot<S: Simd>(q: &[f32], k: &[u16]) -> f32 {
        unsafe { S::dot_f16(q, k) }
    }
    #[inline(always)]
    unsafe fn axpy<S: Simd>(o: &mut [f32], a: f32, v: &[u16]) {
        unsafe { S::axpy_f16(o, a, v) }
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

/// One work item: a head of some query rows of one sequence.
struct Item<'a> {
    seq: &'a StepSeq,
    head: usize,
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

/// Where `head`'s element 0 of cache slot `slot` of `layer` is.
#[inline(always)]
fn offset(l: &KvLayout, layer: usize, slot: usize, head: usize) -> usize {
    let (block, off) = (slot / l.block_size, slot % l.block_size);
    (((layer * l.n_blocks + block) * l.n_kv_heads + head) * l.block_size + off) * l.head_dim
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
        fn store<E: Elem>(
            l: &KvLayout,
            dst: &mut [E],
            src: &[f32],
            step: &StepInput,
            layer: usize,
        ) {
            let (hd, heads) = (l.head_dim, l.n_kv_heads);
            for (r, &slot) in step.slots.iter().enumerate() {
                for h in 0..heads {
                    let at = offset(l, layer, slot as usize, h);
                    let from = &src[(r * heads + h) * hd..(r * heads + h + 1) * hd];
                    for (d, &s) in dst[at..at + hd].iter_mut().zip(from) {
                        *d = E::from_f32(s);
                    }
                }
            }
        }
        let l = &self.layout;
        match &mut self.data {
            KvData::F32 { k: kd, v: vd } => {
                store(l, kd, k, step, layer);
                store(l, vd, v, step, layer);
            }
            KvData::F16 { k: kd, v: vd } => {
                store(l, kd, k, step, layer);
                store(l, vd, v, step, layer);
            }
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
            for head in 0..n_heads {
                let mut r = seq.rows.start;
                while r < seq.rows.end {
                    let end = (r + ROWS_PER_TASK).min(seq.rows.end);
                    items.push(Item {
                        seq,
                        head,
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
    let store = sh.store;
    let l = store.layout;
    let hd = l.head_dim;
    let seq = item.seq;
    let kvh = item.head / sh.group;
    let n_rows = item.rows.len();
    let first_pos = seq.start_pos + (item.rows.start - seq.rows.start);
    // Row i sees keys 0..=first_pos + i.
    let ctx_max = first_pos + n_rows;
    let mut scores = vec![0.0f32; n_rows * ctx_max];
    let at = |t: usize| {
        let slot = seq.block_table[t / l.block_size] as usize * l.block_size + t % l.block_size;
        offset(&l, sh.layer, slot, kvh)
    };
    let q_at = |i: usize| {
        let r = item.rows.start + i;
        &sh.q[r * sh.q_width + item.head * hd..r * sh.q_width + (item.head + 1) * hd]
    };
    for t in 0..ctx_max {
        let a = at(t);
        let k = &keys[a..a + hd];
        for i in t.saturating_sub(first_pos)..n_rows {
            // SAFETY: the caller compiled this for an instruction set the CPU has.
            scores[i * ctx_max + t] = unsafe { E::dot::<S>(q_at(i), k) } * sh.scale;
        }
    }
    for i in 0..n_rows {
        let row = &mut scores[i * ctx_max..i * ctx_max + first_pos + i + 1];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in row.iter_mut() {
            *s = crate::math::exp(*s - max);
            sum += *s;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|s| *s *= inv);
        let r = item.rows.start + i;
        // SAFETY: (row r, this head) of `out` belongs to this work item alone.
        let o = unsafe {
            std::slice::from_raw_parts_mut(sh.out.get().add(r * sh.q_width + item.head * hd), hd)
        };
        o.fill(0.0);
    }
    for t in 0..ctx_max {
        let a = at(t);
        let v = &values[a..a + hd];
        for i in t.saturating_sub(first_pos)..n_rows {
            let r = item.rows.start + i;
            // SAFETY: as above.
            let o = unsafe {
                std::slice::from_raw_parts_mut(
                    sh.out.get().add(r * sh.q_width + item.head * hd),
                    hd,
                )
            };
            // SAFETY: the caller compiled this for an instruction set the CPU has.
            unsafe { E::axpy::<S>(o, scores[i * ctx_max + t], v) };
        }
    }
}
