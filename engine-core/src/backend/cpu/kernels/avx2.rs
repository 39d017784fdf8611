//! AVX2 + FMA kernels: `vpmaddubsw` + `vpmaddwd` integer dots.
//!
//! - The 32-weight block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and Q4_K use eight-row tiles
//!   whose blocks are transposed on the fly, one row per 32-bit lane (see [`kernel`]).
//! - Q6_K uses the one-row-per-vector tiles of up to 4 x 2 in `x86.rs`.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::super::acts::{HI_SHIFT, QK, QuantActs};
use super::x86::{IntDot, Q6K};
use super::{Kernel, Tile};
use crate::quant::GgmlType;

/// Whether this CPU runs these kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Integer dot through `maddubs` (u8 x i8 -> i16 pairs) and `madd` (-> i32 quads).
pub struct Dot;
impl IntDot for Dot {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)) }
    }
}

crate::x86_tile_kernel!(tile_q6_k, Q6K, Dot, "avx2,fma,f16c", 2);

/// The AVX2 tile kernel for a weight type.
pub fn kernel(ty: GgmlType) -> Option<Kernel> {
    let rows8 = |run: super::TileFn| Kernel {
        run,
        rows: R8,
        tokens: T8,
    };
    Some(match ty {
        GgmlType::Q4_0 => rows8(rows8_q4_0),
        GgmlType::Q4_1 => rows8(rows8_q4_1),
        GgmlType::Q5_0 => rows8(rows8_q5_0),
        GgmlType::Q5_1 => rows8(rows8_q5_1),
        GgmlType::Q8_0 => rows8(rows8_q8_0),
        GgmlType::Q4_K => rows8(rows8_q4_k),
        GgmlType::Q6_K => Kernel::small(tile_q6_k),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Eight rows per vector: for the 32-weight block formats and Q4_K, a tile is 8 weight rows whose
// blocks are transposed on the fly so that each 32-bit lane holds four weights of one row. A
// `vpmaddubsw` + `vpmaddwd` pair then advances all eight rows by four weights each against four
// activations broadcast to every lane, and each block is scaled once per token for all eight rows
// with vector multiplies: no per-row horizontal sums and no scalar work per block. The unpacked
// weights of a block serve every token of the tile. Each (row, token) pair goes through the same
// operations whatever the tile shape, so batching never changes a result.
//
// `vpmaddubsw` saturates its 16-bit pair sums, so the weights stay small: 4- and 5-bit weights
// are used unsigned (at most 31; a pair sum is at most 2 * 31 * 127 = 7874, and four of them, or
// eight with the low plane's |x| <= 64, are summed in 16 bits before widening), and Q8_0's signed
// weights take the sign trick (|w| times x with w's sign, at most 2 * 128 * 127 = 32512).

/// Weight rows per tile.
const R8: usize = 8;
/// Activation rows per tile.
const T8: usize = 4;

/// A block format for the eight-row kernels.
trait Rows8 {
    /// Bytes per block.
    const BYTES: usize;
    /// The unsigned weight value that means zero, subtracted exactly (0 for signed weights).
    const OFFSET: i32;
    /// Whether blocks have a minimum (`x = d * q + m`).
    const HAS_MIN: bool;
    /// Whether the weights are signed bytes (Q8_0).
    const SIGNED: bool;
    /// Where the high-bit word lies in a block, for the 5-bit formats.
    const QH_AT: Option<usize>;
    /// The block's 32 weights of 8 rows as eight vectors, vector `g` holding weights
    /// `4g..4g + 4` of each row in its lane (unsigned, or signed for [`Rows8::SIGNED`]).
    unsafe fn weights(rows: &[*const u8; R8], at: usize, qh: __m256i) -> [__m256i; 8];
}

/// 16 bytes at `at` of each of the 8 rows, as four vectors of 32-bit columns: vector `j` holds
/// bytes `4j..4j + 4` of row `r` in lane `r`.
#[inline(always)]
unsafe fn columns8(rows: &[*const u8; R8], at: usize) -> [__m256i; 4] {
    unsafe {
        // a[i] holds rows i and i + 4 in its 128-bit halves ...
        let load = |r: usize| _mm_loadu_si128(rows[r].add(at) as *const __m128i);
        let a = [
            _mm256_inserti128_si256(_mm256_castsi128_si256(load(0)), load(4), 1),
            _mm256_inserti128_si256(_mm256_castsi128_si256(load(1)), load(5), 1),
            _mm256_inserti128_si256(_mm256_castsi128_si256(load(2)), load(6), 1),
            _mm256_inserti128_si256(_mm256_castsi128_si256(load(3)), load(7), 1),
        ];
        // ... so a 4x4 transpose of 32-bit words inside each half puts row 4h + i at lane 4h + i.
        let t0 = _mm256_unpacklo_epi32(a[0], a[1]);
        let t1 = _mm256_unpackhi_epi32(a[0], a[1]);
        let t2 = _mm256_unpacklo_epi32(a[2], a[3]);
        let t3 = _mm256_unpackhi_epi32(a[2], a[3]);
        [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ]
    }
}

/// Low and high nibbles of four byte columns as the eight weight groups of a 4-bit block.
#[inline(always)]
unsafe fn nibble_groups(c: [__m256i; 4]) -> [__m256i; 8] {
    unsafe {
        let m = _mm256_set1_epi8(0x0f);
        let lo = |v: __m256i| _mm256_and_si256(v, m);
        let hi = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
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
unsafe fn add_high_bits(w: &mut [__m256i; 8], qh: __m256i) {
    unsafe {
        for (g, w) in w.iter_mut().enumerate() {
            // Bits 4g..4g + 4 of each lane spread to bit 4 of its four bytes.
            let bits = _mm256_and_si256(
                _mm256_srlv_epi32(qh, _mm256_set1_epi32(4 * g as i32)),
                _mm256_set1_epi32(0xf),
            );
            let spread = _mm256_and_si256(
                _mm256_mullo_epi32(bits, _mm256_set1_epi32(0x0020_4081)),
                _mm256_set1_epi32(0x0101_0101),
            );
            *w = _mm256_or_si256(*w, _mm256_slli_epi32(spread, 4));
        }
    }
}

struct R4_0;
impl Rows8 for R4_0 {
    const BYTES: usize = 18;
    const OFFSET: i32 = 8;
    const HAS_MIN: bool = false;
    const SIGNED: bool = false;
    const QH_AT: Option<usize> = None;
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R8], at: usize, _: __m256i) -> [__m256i; 8] {
        unsafe { nibble_groups(columns8(rows, at + 2)) }
    }
}

struct R4_1;
impl Rows8 for R4_1 {
    const BYTES: usize = 20;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    const SIGNED: bool = false;
    const QH_AT: Option<usize> = None;
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R8], at: usize, _: __m256i) -> [__m256i; 8] {
        unsafe { nibble_groups(columns8(rows, at + 4)) }
    }
}

struct R5_0;
impl Rows8 for R5_0 {
    const BYTES: usize = 22;
    const OFFSET: i32 = 16;
    const HAS_MIN: bool = false;
    const SIGNED: bool = false;
    const QH_AT: Option<usize> = Some(2);
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R8], at: usize, qh: __m256i) -> [__m256i; 8] {
        unsafe {
            let mut w = nibble_groups(columns8(rows, at + 6));
            add_high_bits(&mut w, qh);
            w
        }
    }
}

struct R5_1;
impl Rows8 for R5_1 {
    const BYTES: usize = 24;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    const SIGNED: bool = false;
    const QH_AT: Option<usize> = Some(4);
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R8], at: usize, qh: __m256i) -> [__m256i; 8] {
        unsafe {
            let mut w = nibble_groups(columns8(rows, at + 8));
            add_high_bits(&mut w, qh);
            w
        }
    }
}

struct R8_0;
impl Rows8 for R8_0 {
    const BYTES: usize = 34;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = false;
    const SIGNED: bool = true;
    const QH_AT: Option<usize> = None;
    #[inline(always)]
    unsafe fn weights(rows: &[*const u8; R8], at: usize, _: __m256i) -> [__m256i; 8] {
        unsafe {
            let a = columns8(rows, at + 2);
            let b = columns8(rows, at + 18);
            [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
        }
    }
}

/// The row pointers, stored-lane mask and gather offsets of an eight-row tile. Missing rows of a
/// partial tile read row 0 again; their lanes are never stored.
#[inline(always)]
unsafe fn tile_rows(job: &Tile<'_>) -> ([*const u8; R8], __m256i, __m256i) {
    unsafe {
        let n_rows = job.rows.min(R8);
        let base = job.w.as_ptr();
        let mut rows = [base; R8];
        for (r, p) in rows.iter_mut().enumerate().take(n_rows) {
            *p = base.add(r * job.row_bytes);
        }
        let index = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
        let lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(n_rows as i32), index);
        let offsets = _mm256_and_si256(
            _mm256_mullo_epi32(index, _mm256_set1_epi32(job.row_bytes as i32)),
            lanes,
        );
        (rows, lanes, offsets)
    }
}

/// The f16 pair at the start of each lane's 32 bits as two f32 vectors (low half, high half).
#[inline(always)]
unsafe fn f16_pairs(v: __m256i) -> (__m256, __m256) {
    unsafe {
        // Each 128-bit half: low halves of its four words, then their high halves ...
        let split = _mm256_shuffle_epi8(
            v,
            _mm256_set_epi8(
                15, 14, 11, 10, 7, 6, 3, 2, 13, 12, 9, 8, 5, 4, 1, 0, 15, 14, 11, 10, 7, 6, 3, 2,
                13, 12, 9, 8, 5, 4, 1, 0,
            ),
        );
        // ... then the eight low halves together, and the eight high halves.
        let joined = _mm256_permute4x64_epi64::<0b11_01_10_00>(split);
        (
            _mm256_cvtph_ps(_mm256_castsi256_si128(joined)),
            _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(joined)),
        )
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

/// The integer dots of the block's eight weight groups with one token's activation plane at
/// `x` (32 bytes), as eight 32-bit lanes (one per row); signed weights come with their
/// magnitudes. `SUM16` groups' 16-bit pair sums are
/// added before widening (within `vpmaddubsw`'s range for the plane, see the section notes).
#[inline(always)]
unsafe fn plane_dot<const SIGNED: bool, const SUM16: usize>(
    w: &[__m256i; 8],
    magnitude: &[__m256i; 8],
    x: *const i8,
) -> __m256i {
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut dot = _mm256_setzero_si256();
        let mut part = _mm256_setzero_si256();
        for (g, wg) in w.iter().enumerate() {
            let xg = _mm256_set1_epi32(std::ptr::read_unaligned(x.add(4 * g) as *const i32));
            let p = if SIGNED {
                _mm256_maddubs_epi16(magnitude[g], _mm256_sign_epi8(xg, *wg))
            } else {
                _mm256_maddubs_epi16(*wg, xg)
            };
            part = if g % SUM16 == 0 {
                p
            } else {
                _mm256_add_epi16(part, p)
            };
            if g % SUM16 == SUM16 - 1 {
                dot = _mm256_add_epi32(dot, _mm256_madd_epi16(part, ones));
            }
        }
        dot
    }
}

/// Adds one 32-weight block of the tile's 8 rows times activation block `b` of each of its
/// tokens to `acc`: `w` holds the weights (signed bytes with `signed`), `d` the rows' scales and, with
/// `has_min`, `m` their minimums (`x = d * (q - offset) + m`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block_tokens<const NT: usize>(
    acc: &mut [__m256; NT],
    w: &[__m256i; 8],
    (d, m): (__m256, __m256),
    (offset, has_min, signed): (i32, bool, bool),
    acts: &QuantActs,
    t0: usize,
    b: usize,
) {
    unsafe {
        let nb = acts.cols / QK;
        let magnitude = if signed {
            w.map(|v| _mm256_sign_epi8(v, v))
        } else {
            *w
        };
        for t in 0..NT {
            let row = t0 + t;
            let x = row * acts.cols + b * QK;
            let (hp, lp) = (acts.hi.as_ptr().add(x), acts.lo.as_ptr().add(x));
            let (hi, lo) = if signed {
                (
                    plane_dot::<true, 1>(w, &magnitude, hp),
                    plane_dot::<true, 1>(w, &magnitude, lp),
                )
            } else {
                (
                    plane_dot::<false, 4>(w, w, hp),
                    plane_dot::<false, 8>(w, w, lp),
                )
            };
            let mut dot = _mm256_add_epi32(_mm256_slli_epi32(hi, HI_SHIFT as i32), lo);
            let k = row * nb + b;
            if offset != 0 {
                dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(offset * *acts.sum.as_ptr().add(k)));
            }
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(*acts.d.as_ptr().add(k)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
            if has_min {
                acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(*acts.ds.as_ptr().add(k)), acc[t]);
            }
        }
    }
}

#[inline(always)]
unsafe fn rows8_impl<F: Rows8, const NT: usize>(job: &Tile<'_>) {
    unsafe {
        let acts = job.acts;
        let nb = acts.cols / QK;
        let rb = job.row_bytes;
        let (rows, lanes, offsets) = tile_rows(job);
        let base = job.w.as_ptr();
        let mut acc = [_mm256_setzero_ps(); NT];
        // Prefetch the next tile of rows (contiguous after this one), spread over the blocks.
        let next = base.add(R8 * rb);
        let step = (R8 * rb).div_ceil(nb.max(1)).next_multiple_of(64);
        for b in 0..nb {
            let at = b * F::BYTES;
            prefetch_span(next.add(b * step), step);
            let qh = match F::QH_AT {
                Some(q) => _mm256_mask_i32gather_epi32::<1>(
                    _mm256_setzero_si256(),
                    base.add(at + q) as *const i32,
                    offsets,
                    lanes,
                ),
                None => _mm256_setzero_si256(),
            };
            let w = F::weights(&rows, at, qh);
            let dm = _mm256_mask_i32gather_epi32::<1>(
                _mm256_setzero_si256(),
                base.add(at) as *const i32,
                offsets,
                lanes,
            );
            let (d, m) = f16_pairs(dm);
            block_tokens::<NT>(
                &mut acc,
                &w,
                (d, m),
                (F::OFFSET, F::HAS_MIN, F::SIGNED),
                acts,
                job.t0,
                b,
            );
        }
        store_tile(job, &acc, lanes);
    }
}

/// Stores the tile's accumulators (the lanes of missing rows are left alone).
#[inline(always)]
unsafe fn store_tile<const NT: usize>(job: &Tile<'_>, acc: &[__m256; NT], lanes: __m256i) {
    unsafe {
        for (t, a) in acc.iter().enumerate() {
            _mm256_maskstore_ps(job.out.add(t * job.out_stride), lanes, *a);
        }
    }
}

/// Byte `k` of each 32-bit lane.
#[inline(always)]
unsafe fn lane_byte(v: __m256i, k: u32) -> __m256i {
    unsafe {
        _mm256_and_si256(
            _mm256_srlv_epi32(v, _mm256_set1_epi32(8 * k as i32)),
            _mm256_set1_epi32(0xff),
        )
    }
}

/// The eight-row kernel for Q4_K: super-blocks of 256 weights (144 bytes: f16 `d` and `dmin`,
/// twelve bytes of 6-bit sub-block scales and minimums, 128 bytes of nibbles). Each pair of
/// 32-weight sub-blocks shares 32 bytes (low nibbles: the first, high nibbles: the second); a
/// sub-block's weights are `d * scale * q - dmin * min`.
#[inline(always)]
unsafe fn rows8_q4k_impl<const NT: usize>(job: &Tile<'_>) {
    unsafe {
        const SUPER: usize = 144;
        let acts = job.acts;
        let n_super = acts.cols / 256;
        let rb = job.row_bytes;
        let (rows, lanes, offsets) = tile_rows(job);
        let base = job.w.as_ptr();
        let mut acc = [_mm256_setzero_ps(); NT];
        let next = base.add(R8 * rb);
        let step = (R8 * rb).div_ceil(n_super.max(1)).next_multiple_of(64);
        for s in 0..n_super {
            let at = s * SUPER;
            prefetch_span(next.add(s * step), step);
            let gather = |off: usize| {
                _mm256_mask_i32gather_epi32::<1>(
                    _mm256_setzero_si256(),
                    base.add(at + off) as *const i32,
                    offsets,
                    lanes,
                )
            };
            let (s0, s1, s2) = (gather(4), gather(8), gather(12));
            let (d, dmin) = f16_pairs(gather(0));
            for h in 0..4u32 {
                // Low nibbles of the 32 bytes: the first sub-block; high nibbles: the second.
                let a = nibble_groups(columns8(&rows, at + 16 + 32 * h as usize));
                let b = nibble_groups(columns8(&rows, at + 32 + 32 * h as usize));
                let halves = [
                    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
                    [a[4], a[5], a[6], a[7], b[4], b[5], b[6], b[7]],
                ];
                for (e, w) in halves.iter().enumerate() {
                    let j = 2 * h + e as u32;
                    // The 6-bit scale and minimum of sub-block j (ggml's get_scale_min_k4).
                    let six = _mm256_set1_epi32(63);
                    let (sc, mn) = if j < 4 {
                        (
                            _mm256_and_si256(lane_byte(s0, j), six),
                            _mm256_and_si256(lane_byte(s1, j), six),
                        )
                    } else {
                        let (q8, q0, q4) = (
                            lane_byte(s2, j - 4),
                            lane_byte(s0, j - 4),
                            lane_byte(s1, j - 4),
                        );
                        let top = |v: __m256i| _mm256_slli_epi32(_mm256_srli_epi32(v, 6), 4);
                        (
                            _mm256_or_si256(_mm256_and_si256(q8, _mm256_set1_epi32(0xf)), top(q0)),
                            _mm256_or_si256(_mm256_srli_epi32(q8, 4), top(q4)),
                        )
                    };
                    let dj = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc));
                    let mj = _mm256_sub_ps(
                        _mm256_setzero_ps(),
                        _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mn)),
                    );
                    block_tokens::<NT>(
                        &mut acc,
                        w,
                        (dj, mj),
                        (0, true, false),
                        acts,
                        job.t0,
                        8 * s + j as usize,
                    );
                }
            }
        }
        store_tile(job, &acc, lanes);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows8_q4_k(job: &Tile<'_>) {
    // A constant token count lets the compiler unroll and place the accumulators.
    unsafe {
        match job.tokens {
            4 => rows8_q4k_impl::<4>(job),
            3 => rows8_q4k_impl::<3>(job),
            2 => rows8_q4k_impl::<2>(job),
            _ => rows8_q4k_impl::<1>(job),
        }
    }
}

macro_rules! rows8_kernel {
    ($name:ident, $fmt:ty) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(job: &Tile<'_>) {
            // A constant token count lets the compiler unroll and place the accumulators.
            unsafe {
                match job.tokens {
                    4 => rows8_impl::<$fmt, 4>(job),
                    3 => rows8_impl::<$fmt, 3>(job),
                    2 => rows8_impl::<$fmt, 2>(job),
                    _ => rows8_impl::<$fmt, 1>(job),
                }
            }
        }
    };
}

rows8_kernel!(rows8_q4_0, R4_0);
rows8_kernel!(rows8_q4_1, R4_1);
rows8_kernel!(rows8_q5_0, R5_0);
rows8_kernel!(rows8_q5_1, R5_1);
rows8_kernel!(rows8_q8_0, R8_0);
