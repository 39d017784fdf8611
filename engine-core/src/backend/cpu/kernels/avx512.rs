//! AVX-512 VNNI kernels on 512-bit vectors: each step takes two 32-weight blocks (or two
//! sub-blocks of a k-quant super-block) of a row, one `vpdpbusd` per activation row, and keeps
//! the per-block scales in vector lanes so nothing is done in scalar per block.
//!
//! Exactness: the integer part of every block dot is exact (weight offsets such as Q4_0's `-8`
//! enter through the `vpdpbusd` accumulator as `-offset * sum(x)`), and each (row, token) pair
//! goes through the same operations whatever the tile shape, so batching never changes results.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::super::acts::{HI_SHIFT, QK, QuantActs};
use super::{Tile, TileFn};
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
    /// 32-weight blocks per (super-)block.
    const SUBS: usize;
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
    /// The last, unpaired block `b` of a row whose block count is odd (upper half zero).
    unsafe fn single(row: *const u8, b: usize) -> Pair;
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

/// Two f16 at `a` and `b` as f32 lanes 0 and 1.
#[inline(always)]
unsafe fn halfs2(a: *const u8, b: *const u8) -> __m128 {
    unsafe {
        let v = _mm_insert_epi16(
            _mm_cvtsi32_si128(i32::from(std::ptr::read_unaligned(a as *const u16))),
            i32::from(std::ptr::read_unaligned(b as *const u16)),
            1,
        );
        _mm_cvtph_ps(v)
    }
}

/// Two (d, m) f16 pairs at `a` and `b` as f32 lanes `[d_a, m_a, d_b, m_b]`.
#[inline(always)]
unsafe fn half_pairs2(a: *const u8, b: *const u8) -> __m128 {
    unsafe {
        let v = _mm_insert_epi32(
            _mm_cvtsi32_si128(std::ptr::read_unaligned(a as *const i32)),
            std::ptr::read_unaligned(b as *const i32),
            1,
        );
        _mm_cvtph_ps(v)
    }
}

/// 16 + 16 packed nibble bytes of two blocks -> 64 bytes in element order.
#[inline(always)]
unsafe fn nibbles2(a: *const u8, b: *const u8) -> __m512i {
    unsafe {
        let v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(a as *const __m128i)),
            _mm_loadu_si128(b as *const __m128i),
            1,
        );
        let m = _mm256_set1_epi8(0x0f);
        let lo = _mm256_and_si256(v, m);
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        let z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        // [lo_a, lo_b, hi_a, hi_b] -> [lo_a, hi_a, lo_b, hi_b]
        _mm512_shuffle_i64x2(z, z, 0b11_01_10_00)
    }
}

/// Nibbles of one block -> 32 bytes in the lower half, zero upper half.
#[inline(always)]
unsafe fn nibbles1(a: *const u8) -> __m512i {
    unsafe {
        let v = _mm_loadu_si128(a as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, m);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        _mm512_castsi256_si512(_mm256_set_m128i(hi, lo))
    }
}

struct Q4_0;
impl Format for Q4_0 {
    const PAIR_BYTES: usize = 36;
    const SUBS: usize = 1;
    const OFFSET: u8 = 8;
    const HAS_MIN: bool = false;
    type Cache = ();
    #[inline(always)]
    unsafe fn pair(row: *const u8, p: usize, _: &mut ()) -> Pair {
        unsafe {
            let a = row.add(2 * p * 18);
            let b = a.add(18);
            Pair {
                w: nibbles2(a.add(2), b.add(2)),
                scale: spread2(halfs2(a, b)),
                min8: _mm512_setzero_ps(),
            }
        }
    }
    #[inline(always)]
    unsafe fn single(row: *const u8, b: usize) -> Pair {
        unsafe {
            let a = row.add(b * 18);
            let d = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(std::ptr::read_unaligned(
                a as *const u16,
            ))));
            Pair {
                w: nibbles1(a.add(2)),
                scale: spread2(d),
                min8: _mm512_setzero_ps(),
            }
        }
    }
}

struct Q4_1;
impl Format for Q4_1 {
    const PAIR_BYTES: usize = 40;
    const SUBS: usize = 1;
    const OFFSET: u8 = 0;
    const HAS_MIN: bool = true;
    type Cache = ();
    #[inline(always)]
    unsafe fn pair(row: *const u8, p: usize, _: &mut ()) -> Pair {
        unsafe {
            let a = row.add(2 * p * 20);
            let b = a.add(20);
            let dm = half_pairs2(a, b);
            let d = _mm_shuffle_ps(dm, dm, 0b10_00_10_00);
            let m = _mm_mul_ps(_mm_shuffle_ps(dm, dm, 0b11_01_11_01), _mm_set1_ps(0.125));
            Pair {
                w: nibbles2(a.add(4), b.add(4)),
                scale: spread2(d),
                min8: spread2(m),
            }
        }
    }
    #[inline(always)]
    unsafe fn single(row: *const u8, b: usize) -> Pair {
        unsafe {
            let a = row.add(b * 20);
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(a as *const i32)));
            let d = _mm_shuffle_ps(dm, _mm_setzero_ps(), 0b00_00_11_00);
            let m = _mm_mul_ps(
                _mm_shuffle_ps(dm, _mm_setzero_ps(), 0b00_00_11_01),
                _mm_set1_ps(0.125),
            );
            Pair {
                w: nibbles1(a.add(4)),
                scale: spread2(d),
                min8: spread2(m),
            }
        }
    }
}

/// Bits of the two 32-bit words at `a` and `b` as a 64-lane byte mask.
#[inline(always)]
unsafe fn high_bits2(a: *const u8, b: *const u8) -> __mmask64 {
    unsafe {
        let lo = u64::from(std::ptr::read_unaligned(a as *const u32));
        let hi = u64::from(std::ptr::read_unaligned(b as *const u32));
        _cvtu64_mask64(lo | (hi << 32))
    }
}

struct Q5_0;
impl Format for Q5_0 {
    const PAIR_BYTES: usize = 44;
    const SUBS: usize = 1;
    const OFFSET: u8 = 16;
    const HAS_MIN: bool = false;
    type Cache = ();
    #[inline(always)]
    unsafe fn pair(row: *const u8, p: usize, _: &mut ()) -> Pair {
        unsafe {
            let a = row.add(2 * p * 22);
            let b = a.add(22);
            let w = nibbles2(a.add(6), b.add(6));
            let w =
                _mm512_mask_add_epi8(w, high_bits2(a.add(2), b.add(2)), w, _mm512_set1_epi8(16));
            Pair {
                w,
                scale: spread2(halfs2(a, b)),
                min8: _mm512_setzero_ps(),
            }
        }
    }
    #[inline(always)]
    unsafe fn single(row: *const u8, b: usize) -> Pair {
        unsafe {
            let a = row.add(b * 22);
            let w = nibbles1(a.add(6));
            let k = _cvtu64_mask64(u64::from(std::ptr::read_unaligned(a.add(2) as *const u32)));
            let w = _mm512_mask_add_epi8(w, k, w, _mm512_set1_epi8(16));
            let d = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(std::ptr::read_unaligned(
                a as *const u16,
            ))));
            Pair {
                w,
                scale: spread2(d),
                min8: _mm512_setzero_ps(),
            }
        }
    }
}

struct Q5_1;
impl Format for Q5_1 {
    const PAIR_BYTES: usize = 48;
    const SUBS: usize = 1;
    const OFFSET: u8 = 0;
    const HAS_MIN: bool = true;
    type Cache = ();
    #[inline(always)]
    unsafe fn pair(row: *const u8, p: usize, _: &mut ()) -> Pair {
        unsafe {
            let a = row.add(2 * p * 24);
            let b = a.add(24);
            let w = nibbles2(a.add(8), b.add(8));
            let w =
                _mm512_mask_add_epi8(w, high_bits2(a.add(4), b.add(4)), w, _mm512_set1_epi8(16));
            let dm = half_pairs2(a, b);
            let d = _mm_shuffle_ps(dm, dm, 0b10_00_10_00);
            let m = _mm_mul_ps(_mm_shuffle_ps(dm, dm, 0b11_01_11_01), _mm_set1_ps(0.125));
            Pair {
                w,
                scale: spread2(d),
                min8: spread2(m),
            }
        }
    }
    #[inline(always)]
    unsafe fn single(row: *const u8, b: usize) -> Pair {
        unsafe {
            let a = row.add(b * 24);
            let w = nibbles1(a.add(8));
            let k = _cvtu64_mask64(u64::from(std::ptr::read_unaligned(a.add(4) as *const u32)));
            let w = _mm512_mask_add_epi8(w, k, w, _mm512_set1_epi8(16));
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(a as *const i32)));
            let d = _mm_shuffle_ps(dm, _mm_setzero_ps(), 0b00_00_11_00);
            let m = _mm_mul_ps(
                _mm_shuffle_ps(dm, _mm_setzero_ps(), 0b00_00_11_01),
                _mm_set1_ps(0.125),
            );
            Pair {
                w,
                scale: spread2(d),
                min8: spread2(m),
            }
        }
    }
}

struct Q8_0;
impl Format for Q8_0 {
    const PAIR_BYTES: usize = 68;
    const SUBS: usize = 1;
    const OFFSET: u8 = 128;
    const HAS_MIN: bool = false;
    type Cache = ();
    #[inline(always)]
    unsafe fn pair(row: *const u8, p: usize, _: &mut ()) -> Pair {
        unsafe {
            let a = row.add(2 * p * 34);
            let b = a.add(34);
            let v = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256(a.add(2) as *const __m256i)),
                _mm256_loadu_si256(b.add(2) as *const __m256i),
                1,
            );
            // Signed q + 128 as an unsigned byte.
            let w = _mm512_xor_si512(v, _mm512_set1_epi8(-128));
            Pair {
                w,
                scale: spread2(halfs2(a, b)),
                min8: _mm512_setzero_ps(),
            }
        }
    }
    #[inline(always)]
    unsafe fn single(row: *const u8, b: usize) -> Pair {
        unsafe {
            let a = row.add(b * 34);
            let v = _mm512_castsi256_si512(_mm256_loadu_si256(a.add(2) as *const __m256i));
            let w = _mm512_maskz_xor_epi64(0x0f, v, _mm512_set1_epi8(-128));
            let d = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(std::ptr::read_unaligned(
                a as *const u16,
            ))));
            Pair {
                w,
                scale: spread2(d),
                min8: _mm512_setzero_ps(),
            }
        }
    }
}

/// `[a x8 | b x8]`.
#[inline(always)]
unsafe fn set2(a: f32, b: f32) -> __m512 {
    unsafe {
        _mm512_insertf32x8(
            _mm512_castps256_ps512(_mm256_set1_ps(a)),
            _mm256_set1_ps(b),
            1,
        )
    }
}

struct Q4K;
impl Format for Q4K {
    const PAIR_BYTES: usize = 36;
    const SUBS: usize = 8;
    const OFFSET: u8 = 0;
    const HAS_MIN: bool = true;
    type Cache = ([f32; 8], [f32; 8]);
    #[inline(always)]
    unsafe fn pair(row: *const u8, p: usize, cache: &mut Self::Cache) -> Pair {
        unsafe {
            let blk = row.add((p / 4) * 144);
            if p.is_multiple_of(4) {
                let d = half::f16::from_bits(std::ptr::read_unaligned(blk as *const u16)).to_f32();
                let dmin = half::f16::from_bits(std::ptr::read_unaligned(blk.add(2) as *const u16))
                    .to_f32();
                let s = std::slice::from_raw_parts(blk.add(4), 12);
                for j in 0..8 {
                    let (sc, m) = super::scalar::scale_min_k4(j, s);
                    cache.0[j] = d * f32::from(sc);
                    cache.1[j] = -dmin * f32::from(m) * 0.125;
                }
            }
            let q = p % 4;
            let v = _mm256_loadu_si256(blk.add(16 + 32 * q) as *const __m256i);
            let m = _mm256_set1_epi8(0x0f);
            let lo = _mm256_and_si256(v, m);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            Pair {
                w,
                scale: set2(cache.0[2 * q], cache.0[2 * q + 1]),
                min8: set2(cache.1[2 * q], cache.1[2 * q + 1]),
            }
        }
    }
    #[inline(always)]
    unsafe fn single(_: *const u8, _: usize) -> Pair {
        unreachable!("k-quant rows hold whole super-blocks of eight blocks")
    }
}

struct Q6K;
impl Format for Q6K {
    const PAIR_BYTES: usize = 53;
    const SUBS: usize = 8;
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
    #[inline(always)]
    unsafe fn single(_: *const u8, _: usize) -> Pair {
        unreachable!("k-quant rows hold whole super-blocks of eight blocks")
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
unsafe fn act_pair<F: Format>(acts: &QuantActs, t: usize, b: usize, single: bool) -> ActPair {
    unsafe {
        let nb = acts.cols / QK;
        let at = t * acts.cols + b * QK;
        let (hp, lp) = (acts.hi.as_ptr().add(at), acts.lo.as_ptr().add(at));
        let dp = acts.d.as_ptr().add(t * nb + b);
        let sp = acts.ds.as_ptr().add(t * nb + b);
        let (hi, lo, d2, s2) = if single {
            (
                _mm512_maskz_loadu_epi8(0xffff_ffff, hp),
                _mm512_maskz_loadu_epi8(0xffff_ffff, lp),
                _mm_load_ss(dp),
                _mm_load_ss(sp),
            )
        } else {
            (
                _mm512_loadu_si512(hp as *const __m512i),
                _mm512_loadu_si512(lp as *const __m512i),
                _mm_castpd_ps(_mm_load_sd(dp as *const f64)),
                _mm_castpd_ps(_mm_load_sd(sp as *const f64)),
            )
        };
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
                a[t].write(act_pair::<F>(acts, t0 + t, 2 * p, false));
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
        if F::SUBS == 1 && nb % 2 == 1 {
            let b = nb - 1;
            for t in 0..NT {
                let a = act_pair::<F>(acts, t0 + t, b, true);
                for r in 0..NR {
                    let w = F::single(wp.add(r * job.row_bytes), b);
                    accumulate::<F>(&mut acc[r][t], &w, &a);
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

kernel!(tile_q4_0, Q4_0);
kernel!(tile_q4_1, Q4_1);
kernel!(tile_q5_0, Q5_0);
kernel!(tile_q5_1, Q5_1);
kernel!(tile_q8_0, Q8_0);
kernel!(tile_q4_k, Q4K);
kernel!(tile_q6_k, Q6K);

/// The AVX-512 VNNI tile kernel for a weight type.
pub fn tile(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q4_0 => tile_q4_0,
        GgmlType::Q4_1 => tile_q4_1,
        GgmlType::Q5_0 => tile_q5_0,
        GgmlType::Q5_1 => tile_q5_1,
        GgmlType::Q8_0 => tile_q8_0,
        GgmlType::Q4_K => tile_q4_k,
        GgmlType::Q6_K => tile_q6_k,
        _ => return None,
    })
}
