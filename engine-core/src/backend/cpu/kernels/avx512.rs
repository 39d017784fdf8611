//! AVX-512 VNNI kernels on 512-bit vectors.
//!
//! - The 32-weight block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and Q4_K use sixteen-row tiles:
//!   sixteen rows' blocks are transposed on the fly so that each 32-bit lane holds four weights
//!   of one row, and one `vpdpbusd` advances all sixteen rows at once (see [`kernel`]).
//! - Q6_K takes two 32-weight sub-blocks of one row per step, with the sub-block scales in
//!   vector lanes.
//!
//! Exactness: the integer part of every block dot is exact (weight offsets such as Q4_0's `-8`
//! are subtracted as `offset * sum(x)` in integers), and each (row, token) pair goes through the
//! same operations whatever the tile shape, so batching never changes results.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::super::acts::{HI_SHIFT, QK, QuantActs};
use super::{Kernel, Tile, TileFn};
use crate::quant::GgmlType;

/// Whether this CPU runs these kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("avx2")
}

/// How far ahead of the computation weights are prefetched: far enough to cover the memory
/// latency, near enough to stay in the first-level cache.
const PREFETCH_BYTES: usize = 6144;

/// Two 32-weight blocks of one row, unpacked.
#[derive(Clone, Copy)]
struct Pair {
    /// 64 weights as unsigned bytes (the format's offset is removed by the accumulator).
    w: __m512i,
    /// Scale of each lane's four weights.
    scale: __m512,
    /// Coefficient of the activation block's `d * sum(q)`, divided by 8 (each block has 8 lanes).
    min8: __m512,
}

/// A weight format seen as a sequence of block pairs per row.
trait Format {
    /// Bytes of a row per pair of blocks (rounded up).
    const PAIR_BYTES: usize;
    /// The unsigned weight value that means zero (8 for Q4_0), subtracted exactly.
    const OFFSET: u8;
    /// Whether the format has per-block minimums (`x = d * q + m`).
    const HAS_MIN: bool;
    /// Scales decoded once per super-block.
    type Cache: Copy + Default;
    /// Pair `p` (blocks `2p` and `2p + 1`) of the row at `row`.
    unsafe fn pair(row: *const u8, p: usize, cache: &mut Self::Cache) -> Pair;
}

#[inline(always)]
unsafe fn idx_halves() -> __m512i {
    unsafe { _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0) }
}

/// `[a x8 | b x8]` from lanes 0 and 1 of `v`.
#[inline(always)]
unsafe fn spread2(v: __m128) -> __m512 {
    unsafe { _mm512_permutexvar_ps(idx_halves(), _mm512_castps128_ps512(v)) }
}

struct Q6K;
impl Format for Q6K {
    const PAIR_BYTES: usize = 53;
    const OFFSET: u8 = 32;
    const HAS_MIN: bool = false;
    type Cache = f32;
    #[inline(always)]
    unsafe fn pair(row: *const u8, p: usize, d: &mut f32) -> Pair {
        unsafe {
            let blk = row.add((p / 4) * 210);
            if p.is_multiple_of(4) {
                *d = half::f16::from_bits(std::ptr::read_unaligned(blk.add(208) as *const u16))
                    .to_f32();
            }
            // Pair q of the super-block: half h = q / 2, groups g0 = 2 (q % 2) and g0 + 1.
            let q = p % 4;
            let (h, g0) = (q / 2, 2 * (q % 2));
            let ql = _mm512_loadu_si512(blk.add(64 * h) as *const __m512i);
            let low = if g0 == 0 {
                _mm512_and_si512(ql, _mm512_set1_epi8(0x0f))
            } else {
                _mm512_and_si512(_mm512_srli_epi16(ql, 4), _mm512_set1_epi8(0x0f))
            };
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
            let qh = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
            let shift = 2 * g0 as i64;
            let qh = _mm512_srlv_epi64(
                qh,
                _mm512_set_epi64(
                    shift + 2,
                    shift + 2,
                    shift + 2,
                    shift + 2,
                    shift,
                    shift,
                    shift,
                    shift,
                ),
            );
            let high = _mm512_slli_epi16(_mm512_and_si512(qh, _mm512_set1_epi8(3)), 4);
            let w = _mm512_or_si512(low, high);
            let sc = blk.add(192 + 8 * h + 2 * g0) as *const i32;
            let s4 = _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(
                std::ptr::read_unaligned(sc),
            )));
            let s4 = _mm_mul_ps(s4, _mm_set1_ps(*d));
            let idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
            Pair {
                w,
                scale: _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(s4)),
                min8: _mm512_setzero_ps(),
            }
        }
    }
}

/// One token's activations for a block pair.
#[derive(Clone, Copy)]
struct ActPair {
    hi: __m512i,
    lo: __m512i,
    d: __m512,
    ds: __m512,
    /// `-offset * sum` of each lane's four activations (`128 * hi + lo`): where the low plane's
    /// `vpdpbusd` starts.
    base: __m512i,
}

#[inline(always)]
unsafe fn act_pair<F: Format>(acts: &QuantActs, t: usize, b: usize) -> ActPair {
    unsafe {
        let nb = acts.cols / QK;
        let at = t * acts.cols + b * QK;
        let (hp, lp) = (acts.hi.as_ptr().add(at), acts.lo.as_ptr().add(at));
        let dp = acts.d.as_ptr().add(t * nb + b);
        let sp = acts.ds.as_ptr().add(t * nb + b);
        let (hi, lo, d2, s2) = (
            _mm512_loadu_si512(hp as *const __m512i),
            _mm512_loadu_si512(lp as *const __m512i),
            _mm_castpd_ps(_mm_load_sd(dp as *const f64)),
            _mm_castpd_ps(_mm_load_sd(sp as *const f64)),
        );
        let base = if F::OFFSET == 0 {
            _mm512_setzero_si512()
        } else {
            let off = _mm512_set1_epi8(F::OFFSET as i8);
            let zero = _mm512_setzero_si512();
            let sums = _mm512_add_epi32(
                _mm512_slli_epi32(_mm512_dpbusd_epi32(zero, off, hi), HI_SHIFT),
                _mm512_dpbusd_epi32(zero, off, lo),
            );
            _mm512_sub_epi32(zero, sums)
        };
        ActPair {
            hi,
            lo,
            d: spread2(d2),
            ds: if F::HAS_MIN {
                spread2(s2)
            } else {
                _mm512_setzero_ps()
            },
            base,
        }
    }
}

#[inline(always)]
unsafe fn accumulate<F: Format>(acc: &mut __m512, w: &Pair, a: &ActPair) {
    unsafe {
        let high = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w.w, a.hi);
        let dot = _mm512_add_epi32(
            _mm512_slli_epi32(high, HI_SHIFT),
            _mm512_dpbusd_epi32(a.base, w.w, a.lo),
        );
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(w.scale, a.d), *acc);
        if F::HAS_MIN {
            *acc = _mm512_fmadd_ps(w.min8, a.ds, *acc);
        }
    }
}

#[inline(always)]
unsafe fn tile_impl<F: Format, const NR: usize, const NT: usize>(
    job: &Tile<'_>,
    t0: usize,
    out: *mut f32,
) {
    unsafe {
        let acts = job.acts;
        let nb = acts.cols / QK;
        let wp = job.w.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); NT]; NR];
        let mut cache = [F::Cache::default(); NR];
        // Prefetch about PREFETCH_BYTES ahead, in whole tiles.
        let tiles_ahead = PREFETCH_BYTES.div_ceil(NR * job.row_bytes);
        for p in 0..nb / 2 {
            let mut a = [std::mem::MaybeUninit::<ActPair>::uninit(); NT];
            for t in 0..NT {
                a[t].write(act_pair::<F>(acts, t0 + t, 2 * p));
            }
            for r in 0..NR {
                let row = wp.add(r * job.row_bytes);
                // Fetch the same pair of the row NR rows below (the next tile, as rows are
                // contiguous) while this one computes.
                let ahead = row.add(tiles_ahead * NR * job.row_bytes + p * F::PAIR_BYTES);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                if F::PAIR_BYTES > 64 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(64) as *const i8);
                }
                let w = F::pair(row, p, &mut cache[r]);
                for t in 0..NT {
                    accumulate::<F>(&mut acc[r][t], &w, a[t].assume_init_ref());
                }
            }
        }
        for r in 0..NR {
            for t in 0..NT {
                *out.add(t * job.out_stride + r) = _mm512_reduce_add_ps(acc[r][t]);
            }
        }
    }
}

macro_rules! kernel {
    ($name:ident, $fmt:ty) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,f16c,fma,avx2")]
        unsafe fn $name(job: &Tile<'_>) {
            let mut t = 0;
            while t < job.tokens {
                let n = (job.tokens - t).min(2);
                let o = unsafe { job.out.add(t * job.out_stride) };
                let t0 = job.t0 + t;
                unsafe {
                    match (job.rows, n) {
                        (4, 2) => tile_impl::<$fmt, 4, 2>(job, t0, o),
                        (4, _) => tile_impl::<$fmt, 4, 1>(job, t0, o),
                        (3, 2) => tile_impl::<$fmt, 3, 2>(job, t0, o),
                        (3, _) => tile_impl::<$fmt, 3, 1>(job, t0, o),
                        (2, 2) => tile_impl::<$fmt, 2, 2>(job, t0, o),
                        (2, _) => tile_impl::<$fmt, 2, 1>(job, t0, o),
                        (_, 2) => tile_impl::<$fmt, 1, 2>(job, t0, o),
                        _ => tile_impl::<$fmt, 1, 1>(job, t0, o),
                    }
                }
                t += n;
            }
        }
    };
}

kernel!(tile_q6_k, Q6K);

/// The AVX-512 VNNI tile kernel for a weight type.
pub fn kernel(ty: GgmlType) -> Option<Kernel> {
    let rows16 = |run: TileFn| Kernel {
        run,
        rows: R16,
        tokens: T16,
    };
    Some(match ty {
        GgmlType::Q4_0 => rows16(rows16_q4_0),
        GgmlType::Q4_1 => rows16(rows16_q4_1),
        GgmlType::Q5_0 => rows16(rows16_q5_0),
        GgmlType::Q5_1 => rows16(rows16_q5_1),
        GgmlType::Q8_0 => rows16(rows16_q8_0),
        GgmlType::Q4_K => rows16(rows16_q4_k),
        GgmlType::Q6_K => Kernel::small(tile_q6_k),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Sixteen rows per vector: for the 32-weight block formats, a tile is 16 weight rows whose blocks
// are transposed on the fly so that each 32-bit lane holds four weights of one row. One
// `vpdpbusd` then advances 16 rows by four weights each against four activations broadcast to all
// lanes, and each block is scaled once per token for all 16 rows with vector multiplies: no
// per-row horizontal sums and no scalar work per block. The same sequence of operations runs for
// each (row, token) whatever the tile shape, so batching never changes a result.

/// Weight rows per tile.
const R16: usize = 16;
/// Activation rows per tile.
const T16: usize = 16;

/// A block format for the sixteen-row kernels.
trait Rows16 {
    /// Bytes per block.
    const BYTES: usize;
    /// The unsigned weight value that means zero, subtracted exactly.
    const OFFSET: i32;
    /// Whether blocks have a minimum (`x = d * q + m`).
    const HAS_MIN: bool;
    /// The block's 32 weights of 16 rows as eight vectors, vector `g` holding weights
    /// `4g..4g + 4` of each row in its lane.
    unsafe fn weights(rows: &[*const u8; R16], at: usize, qh: __m512i) -> [__m512i; 8];
    /// Where the high-bit word lies in a block, for the 5-bit formats.
    const QH_AT: Option<usize>;
    /// Where the two f16 `(d, m)` lie in a block (`m` only with [`Rows16::HAS_MIN`]).
    const SCALE_AT: usize = 0;
}

/// 16 bytes at `at` of each of the 16 rows, as four vectors of 32-bit columns: vector `j` holds
/// bytes `4j..4j + 4` of row `r` in lane `r`.
#[inline(always)]
unsafe fn columns16(rows: &[*const u8; R16], at: usize) -> [__m512i; 4] {
    unsafe {
        // a[i] holds rows i, i + 4, i + 8, i + 12 in its 128-bit lanes ...
        let mut a = [_mm512_setzero_si512(); 4];
        for (i, a) in a.iter_mut().enumerate() {
            let mut v = _mm512_castsi128_si512(_mm_loadu_si128(rows[i].add(at) as *const __m128i));
            v = _mm512_inserti32x4(v, _mm_loadu_si128(rows[i + 4].add(at) as *const __m128i), 1);
            v = _mm512_inserti32x4(v, _mm_loadu_si128(rows[i + 8].add(at) as *const __m128i), 2);
            v = _mm512_inserti32x4(
                v,
                _mm_loadu_si128(rows[i + 12].add(at) as *const __m128i),
                3,
            );
            *a = v;
        }
        // ... so a 4x4 transpose of 32-bit words inside each 128-bit lane puts row 4k + i at
        // lane 4k + i.
        let t0 = _mm512_unpacklo_epi32(a[0], a[1]);
        let t1 = _mm512_unpackhi_epi32(a[0], a[1]);
        let t2 = _mm512_unpacklo_epi32(a[2], a[3]);
        let t3 = _mm512_unpackhi_epi32(a[2], a[3]);
        [
            _mm512_unpacklo_epi64(t0, t2),
            _mm512_unpackhi_epi64(t0, t2),
            _mm512_unpacklo_epi64(t1, t3),
            _mm512_unpackhi_epi64(t1, t3),
        ]
    }
}

/// Low and high nibbles of four byte columns as the eight weight groups of a 4-bit block.
#[inline(always)]
unsafe fn nibble_groups(c: [__m512i; 4]) -> [__m512i; 8] {
    unsafe {
        let m = _mm512_set1_epi8(0x0f);
        let lo = |v: __m512i| _mm512_and_si512(v, m);
        let hi = |v: __m512i| _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
        [
            lo(c[0]),
            lo(c[1]),
            lo(c[2]),
            lo(c[3]),
            hi(c[0]),
            hi(c[1]),
            hi(c[2]),
            hi(c[3]),
        ]
    }
}

/// Adds 16 to each weight whose bit is set in the rows' high-bit words (bit `e` for weight `e`).
#[inline(always)]
unsafe fn add_high_bits(w: &mut [__m512i; 8], qh: __m512i) {
    unsafe {
        for (g, w) in w.iter_mut().enumerate() {
            // Bits 4g..4g + 4 of each lane spread to bit 4 of its four bytes.
            let bits = _mm512_and_si512(
                _mm512_srlv_epi32(qh, _mm512_set1_epi32(4 * g as i32)),
                _mm512_set1_epi32(0xf),
            );
            let spread = _mm512_and_si512(
                _mm512_mullo_epi32(bits, _mm512_set1_epi32(0x0020_4081)),
                _mm512_set1_epi32(0x0101_0101),
            );
            *w = _mm512_or_si512(*w, _mm512_slli_epi32(spread, 4));
        }
    }
}

struct R4_0;
impl Rows16 for R4_0 {
    const BYTES: usize = 18;
    const OFFSET: i32 = 8;
    const HAS_MIN: bool = false;
    const QH_AT: Option<usize> = None;
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R16], at: usize, _: __m512i) -> [__m512i; 8] {
        unsafe { nibble_groups(columns16(rows, at + 2)) }
    }
}

struct R4_1;
impl Rows16 for R4_1 {
    const BYTES: usize = 20;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    const QH_AT: Option<usize> = None;
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R16], at: usize, _: __m512i) -> [__m512i; 8] {
        unsafe { nibble_groups(columns16(rows, at + 4)) }
    }
}

struct R5_0;
impl Rows16 for R5_0 {
    const BYTES: usize = 22;
    const OFFSET: i32 = 16;
    const HAS_MIN: bool = false;
    const QH_AT: Option<usize> = Some(2);
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R16], at: usize, qh: __m512i) -> [__m512i; 8] {
        unsafe {
            let mut w = nibble_groups(columns16(rows, at + 6));
            add_high_bits(&mut w, qh);
            w
        }
    }
}

struct R5_1;
impl Rows16 for R5_1 {
    const BYTES: usize = 24;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    const QH_AT: Option<usize> = Some(4);
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R16], at: usize, qh: __m512i) -> [__m512i; 8] {
        unsafe {
            let mut w = nibble_groups(columns16(rows, at + 8));
            add_high_bits(&mut w, qh);
            w
        }
    }
}

struct R8_0;
impl Rows16 for R8_0 {
    const BYTES: usize = 34;
    const OFFSET: i32 = 128;
    const HAS_MIN: bool = false;
    const QH_AT: Option<usize> = None;
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R16], at: usize, _: __m512i) -> [__m512i; 8] {
        unsafe {
            let a = columns16(rows, at + 2);
            let b = columns16(rows, at + 18);
            // Signed q + 128 as an unsigned byte.
            let f = |v: __m512i| _mm512_xor_si512(v, _mm512_set1_epi8(-128));
            [
                f(a[0]),
                f(a[1]),
                f(a[2]),
                f(a[3]),
                f(b[0]),
                f(b[1]),
                f(b[2]),
                f(b[3]),
            ]
        }
    }
}

/// The row pointers, stored-lane mask and gather offsets of a sixteen-row tile. Missing rows of
/// a partial tile read row 0 again; their lanes are never stored.
#[inline(always)]
unsafe fn tile_rows(job: &Tile<'_>) -> ([*const u8; R16], __mmask16, __m512i) {
    unsafe {
        let n_rows = job.rows;
        let lanes: __mmask16 = if n_rows >= R16 {
            0xffff
        } else {
            (1u16 << n_rows) - 1
        };
        let base = job.w.as_ptr();
        let mut rows = [base; R16];
        for (r, p) in rows.iter_mut().enumerate().take(n_rows) {
            *p = base.add(r * job.row_bytes);
        }
        let offsets = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(job.row_bytes as i32),
        );
        (rows, lanes, _mm512_maskz_mov_epi32(lanes, offsets))
    }
}

/// Prefetches `bytes` bytes from `from` (a part of the next tile, which follows this one).
#[inline(always)]
unsafe fn prefetch_span(from: *const u8, bytes: usize) {
    unsafe {
        for k in 0..bytes / 64 {
            _mm_prefetch::<_MM_HINT_T0>(from.add(64 * k) as *const i8);
        }
    }
}

/// Adds one 32-weight block of the tile's 16 rows times activation block `b` of each of its
/// tokens to `acc`: `w` holds the unsigned weights (minus `offset` each), `d` the rows' scales
/// and, with `has_min`, `m` their minimums (`x = d * (q - offset) + m`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block_tokens<const NT: usize>(
    acc: &mut [__m512; NT],
    w: &[__m512i; 8],
    (d, m): (__m512, __m512),
    (offset, has_min): (i32, bool),
    acts: &QuantActs,
    t0: usize,
    nb: usize,
    b: usize,
) {
    unsafe {
        for t in 0..NT {
            let row = t0 + t;
            let x = row * acts.cols + b * QK;
            let (hp, lp) = (acts.hi.as_ptr().add(x), acts.lo.as_ptr().add(x));
            let mut hi = _mm512_setzero_si512();
            let mut lo = _mm512_setzero_si512();
            for (g, wg) in w.iter().enumerate() {
                let xh = _mm512_set1_epi32(std::ptr::read_unaligned(hp.add(4 * g) as *const i32));
                let xl = _mm512_set1_epi32(std::ptr::read_unaligned(lp.add(4 * g) as *const i32));
                hi = _mm512_dpbusd_epi32(hi, *wg, xh);
                lo = _mm512_dpbusd_epi32(lo, *wg, xl);
            }
            let mut dot = _mm512_add_epi32(_mm512_slli_epi32(hi, HI_SHIFT), lo);
            let k = row * nb + b;
            if offset != 0 {
                dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(offset * *acts.sum.as_ptr().add(k)));
            }
            let scale = _mm512_mul_ps(d, _mm512_set1_ps(*acts.d.as_ptr().add(k)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[t]);
            if has_min {
                acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(*acts.ds.as_ptr().add(k)), acc[t]);
            }
        }
    }
}

/// Stores the tile's accumulators.
#[inline(always)]
unsafe fn store_tile<const NT: usize>(job: &Tile<'_>, acc: &[__m512; NT], lanes: __mmask16) {
    unsafe {
        for (t, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(job.out.add(t * job.out_stride), lanes, *a);
        }
    }
}

#[inline(always)]
unsafe fn rows16_impl<F: Rows16, const NT: usize>(job: &Tile<'_>) {
    unsafe {
        let acts = job.acts;
        let nb = acts.cols / QK;
        let rb = job.row_bytes;
        let (rows, lanes, offsets) = tile_rows(job);
        let base = job.w.as_ptr();
        let mut acc = [_mm512_setzero_ps(); NT];
        // Prefetch the next tile of rows (contiguous after this one), spread over the blocks.
        let next = base.add(R16 * rb);
        let step = (R16 * rb).div_ceil(nb.max(1)).next_multiple_of(64);
        for b in 0..nb {
            let at = b * F::BYTES;
            prefetch_span(next.add(b * step), step);
            let qh = match F::QH_AT {
                Some(q) => _mm512_i32gather_epi32::<1>(offsets, base.add(at + q) as *const i32),
                None => _mm512_setzero_si512(),
            };
            let w = F::weights(&rows, at, qh);
            let dm = _mm512_i32gather_epi32::<1>(offsets, base.add(at + F::SCALE_AT) as *const i32);
            let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
            let m = if F::HAS_MIN {
                _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)))
            } else {
                _mm512_setzero_ps()
            };
            block_tokens(
                &mut acc,
                &w,
                (d, m),
                (F::OFFSET, F::HAS_MIN),
                acts,
                job.t0,
                nb,
                b,
            );
        }
        store_tile(job, &acc, lanes);
    }
}

/// Byte `k` of each 32-bit lane.
#[inline(always)]
unsafe fn lane_byte(v: __m512i, k: u32) -> __m512i {
    unsafe {
        _mm512_and_si512(
            _mm512_srlv_epi32(v, _mm512_set1_epi32(8 * k as i32)),
            _mm512_set1_epi32(0xff),
        )
    }
}

/// The sixteen-row kernel for Q4_K: super-blocks of 256 weights (144 bytes: f16 `d` and `dmin`,
/// twelve bytes of 6-bit sub-block scales and minimums, 128 bytes of nibbles). Each pair of
/// 32-weight sub-blocks shares 32 bytes (low nibbles: the first, high nibbles: the second); a
/// sub-block's weights are `d * scale * q - dmin * min`.
#[inline(always)]
unsafe fn rows16_q4k_impl<const NT: usize>(job: &Tile<'_>) {
    unsafe {
        const SUPER: usize = 144;
        let acts = job.acts;
        let nb = acts.cols / QK;
        let n_super = acts.cols / 256;
        let rb = job.row_bytes;
        let (rows, lanes, offsets) = tile_rows(job);
        let base = job.w.as_ptr();
        let mut acc = [_mm512_setzero_ps(); NT];
        let next = base.add(R16 * rb);
        let step = (R16 * rb).div_ceil(n_super.max(1)).next_multiple_of(64);
        for s in 0..n_super {
            let at = s * SUPER;
            prefetch_span(next.add(s * step), step);
            // The rows' super-block after next (the next-tile prefetch misses the first tile of
            // a work item).
            if s + 2 < n_super {
                for r in rows {
                    let p = r.add(at + 2 * SUPER);
                    _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(p.add(64) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(p.add(128) as *const i8);
                }
            }
            let gather =
                |off: usize| _mm512_i32gather_epi32::<1>(offsets, base.add(at + off) as *const i32);
            let dd = gather(0);
            let (s0, s1, s2) = (gather(4), gather(8), gather(12));
            let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
            let dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
            for h in 0..4u32 {
                // Low nibbles of the 32 bytes: the first sub-block; high nibbles: the second.
                let a = nibble_groups(columns16(&rows, at + 16 + 32 * h as usize));
                let b = nibble_groups(columns16(&rows, at + 32 + 32 * h as usize));
                let halves = [
                    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
                    [a[4], a[5], a[6], a[7], b[4], b[5], b[6], b[7]],
                ];
                for (e, w) in halves.iter().enumerate() {
                    let j = 2 * h + e as u32;
                    // The 6-bit scale and minimum of sub-block j (ggml's get_scale_min_k4).
                    let six = _mm512_set1_epi32(63);
                    let (sc, mn) = if j < 4 {
                        (
                            _mm512_and_si512(lane_byte(s0, j), six),
                            _mm512_and_si512(lane_byte(s1, j), six),
                        )
                    } else {
                        let (q8, q0, q4) = (
                            lane_byte(s2, j - 4),
                            lane_byte(s0, j - 4),
                            lane_byte(s1, j - 4),
                        );
                        let top = |v: __m512i| _mm512_slli_epi32(_mm512_srli_epi32(v, 6), 4);
                        (
                            _mm512_or_si512(_mm512_and_si512(q8, _mm512_set1_epi32(0xf)), top(q0)),
                            _mm512_or_si512(_mm512_srli_epi32(q8, 4), top(q4)),
                        )
                    };
                    let dj = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
                    let mj = _mm512_sub_ps(
                        _mm512_setzero_ps(),
                        _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mn)),
                    );
                    block_tokens(
                        &mut acc,
                        w,
                        (dj, mj),
                        (0, true),
                        acts,
                        job.t0,
                        nb,
                        8 * s + j as usize,
                    );
                }
            }
        }
        store_tile(job, &acc, lanes);
    }
}

macro_rules! rows16_kernel {
    ($name:ident, $fmt:ty) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,f16c,fma,avx2")]
        unsafe fn $name(job: &Tile<'_>) {
            // A constant token count lets the compiler unroll and place the accumulators.
            unsafe {
                match job.tokens {
                    16 => rows16_impl::<$fmt, 16>(job),
                    15 => rows16_impl::<$fmt, 15>(job),
                    14 => rows16_impl::<$fmt, 14>(job),
                    13 => rows16_impl::<$fmt, 13>(job),
                    12 => rows16_impl::<$fmt, 12>(job),
                    11 => rows16_impl::<$fmt, 11>(job),
                    10 => rows16_impl::<$fmt, 10>(job),
                    9 => rows16_impl::<$fmt, 9>(job),
                    8 => rows16_impl::<$fmt, 8>(job),
                    7 => rows16_impl::<$fmt, 7>(job),
                    6 => rows16_impl::<$fmt, 6>(job),
                    5 => rows16_impl::<$fmt, 5>(job),
                    4 => rows16_impl::<$fmt, 4>(job),
                    3 => rows16_impl::<$fmt, 3>(job),
                    2 => rows16_impl::<$fmt, 2>(job),
                    _ => rows16_impl::<$fmt, 1>(job),
                }
            }
        }
    };
}

rows16_kernel!(rows16_q4_0, R4_0);
rows16_kernel!(rows16_q4_1, R4_1);
rows16_kernel!(rows16_q5_0, R5_0);
rows16_kernel!(rows16_q5_1, R5_1);
rows16_kernel!(rows16_q8_0, R8_0);

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,f16c,fma,avx2")]
unsafe fn rows16_q4_k(job: &Tile<'_>) {
    // A constant token count lets the compiler unroll and place the accumulators.
    unsafe {
        match job.tokens {
            16 => rows16_q4k_impl::<16>(job),
            15 => rows16_q4k_impl::<15>(job),
            14 => rows16_q4k_impl::<14>(job),
            13 => rows16_q4k_impl::<13>(job),
            12 => rows16_q4k_impl::<12>(job),
            11 => rows16_q4k_impl::<11>(job),
            10 => rows16_q4k_impl::<10>(job),
            9 => rows16_q4k_impl::<9>(job),
            8 => rows16_q4k_impl::<8>(job),
            7 => rows16_q4k_impl::<7>(job),
            6 => rows16_q4k_impl::<6>(job),
            5 => rows16_q4k_impl::<5>(job),
            4 => rows16_q4k_impl::<4>(job),
            3 => rows16_q4k_impl::<3>(job),
            2 => rows16_q4k_impl::<2>(job),
            _ => rows16_q4k_impl::<1>(job),
        }
    }
}
