//! One-row-per-vector tile kernels over 256-bit vectors, for the x86-64 formats that have no
//! transposed kernel (Q6_K on AVX2).
//!
//! Each weight format unpacks 32 weights at a time into bytes and says how the integer dot with a
//! 32-block of 8-bit activations is scaled; an [`IntDot`] (e.g. AVX2 `maddubs`) computes the
//! integer dot. Tiles of `NR` weight rows by `NT` activation rows keep their
//! accumulators in registers so each unpacked weight block is used `NT` times.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::super::acts::{HI_SHIFT, QK, QuantActs};

/// The integer dot product of 32 unsigned bytes with 32 signed bytes, as eight lanes of
/// four-element sums.
pub trait IntDot {
    /// `lane i = sum_{j<4} u[4i+j] * s[4i+j]`.
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
}

/// How one 32-weight sub-block's integer dot is scaled.
#[derive(Clone, Copy)]
pub struct SubScale {
    /// Scale of elements 0..16.
    pub lo: f32,
    /// Scale of elements 16..32.
    pub hi: f32,
    /// Coefficient of the activation block's `d * sum(q)`.
    pub corr: f32,
}

/// A quantized weight format as seen by the x86 kernels.
pub trait Format {
    /// Bytes per (super-)block.
    const BYTES: usize;
    /// 32-weight sub-blocks per (super-)block.
    const SUBS: usize;
    /// Whether unpacked weights are signed (then the dot uses the sign trick).
    const SIGNED: bool;
    /// Whether the two halves of a sub-block may have different scales.
    const HALVES: bool;
    /// Per-block data decoded once (scales).
    type Pre: Copy;
    /// Decodes the block-level data.
    unsafe fn prepare(blk: *const u8) -> Self::Pre;
    /// Unpacks sub-block `j` to 32 bytes and gives its scales.
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> (__m256i, SubScale);
}

/// The f16 at `p` as f32, by the F16C instruction (every x86 kernel is compiled with `f16c`).
#[inline(always)]
unsafe fn f16_to_f32(p: *const u8) -> f32 {
    // SAFETY: p points at two readable bytes; the caller's features include F16C.
    unsafe {
        let bits = std::ptr::read_unaligned(p as *const u16);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }
}

/// Q6_K: 210-byte super-blocks `[ql[128], qh[64], scales: [i8; 16], d]` of sixteen 16-weight
/// sub-blocks, `x = d * sc * (q - 32)`.
pub struct Q6K;
impl Format for Q6K {
    const BYTES: usize = 210;
    const SUBS: usize = 8;
    const SIGNED: bool = true;
    const HALVES: bool = true;
    type Pre = [f32; 16];
    #[inline(always)]
    unsafe fn prepare(blk: *const u8) -> Self::Pre {
        unsafe {
            let d = f16_to_f32(blk.add(208));
            let mut out = [0.0; 16];
            for (i, o) in out.iter_mut().enumerate() {
                *o = d * f32::from(*blk.add(192 + i) as i8);
            }
            out
        }
    }
    #[inline(always)]
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> (__m256i, SubScale) {
        unsafe {
            let (half, g) = (j / 4, j % 4);
            let ql = _mm256_loadu_si256(blk.add(64 * half + 32 * (g & 1)) as *const __m256i);
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * half) as *const __m256i);
            let m4 = _mm256_set1_epi8(0x0f);
            let lo = if g < 2 {
                _mm256_and_si256(ql, m4)
            } else {
                _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4)
            };
            let hi = match g {
                0 => _mm256_slli_epi16(qh, 4),
                1 => _mm256_slli_epi16(qh, 2),
                2 => qh,
                _ => _mm256_srli_epi16(qh, 2),
            };
            let hi = _mm256_and_si256(hi, _mm256_set1_epi8(0x30));
            let w = _mm256_sub_epi8(_mm256_or_si256(lo, hi), _mm256_set1_epi8(32));
            let s = 8 * half + 2 * g;
            (
                w,
                SubScale {
                    lo: pre[s],
                    hi: pre[s + 1],
                    corr: 0.0,
                },
            )
        }
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// One `NR` x `NT` tile. Must be inlined into a function compiled with the ISA's features.
#[inline(always)]
pub unsafe fn tile<F: Format, D: IntDot, const NR: usize, const NT: usize>(
    w: &[u8],
    row_bytes: usize,
    acts: &QuantActs,
    t0: usize,
    out: *mut f32,
    out_stride: usize,
) {
    unsafe {
        let n_super = row_bytes / F::BYTES;
        let nb = acts.cols / QK;
        let wp = w.as_ptr();
        let xh = acts.hi.as_ptr().add(t0 * acts.cols);
        let xl = acts.lo.as_ptr().add(t0 * acts.cols);
        let xd = acts.d.as_ptr().add(t0 * nb);
        let xds = acts.ds.as_ptr().add(t0 * nb);
        let mut acc = [[_mm256_setzero_ps(); NT]; NR];
        let mut corr = [[0.0f32; NT]; NR];
        for sb in 0..n_super {
            let mut pre = [std::mem::MaybeUninit::<F::Pre>::uninit(); NR];
            for r in 0..NR {
                pre[r].write(F::prepare(wp.add(r * row_bytes + sb * F::BYTES)));
            }
            for j in 0..F::SUBS {
                let b = sb * F::SUBS + j;
                let mut wv = [_mm256_setzero_si256(); NR];
                let mut sc = [SubScale {
                    lo: 0.0,
                    hi: 0.0,
                    corr: 0.0,
                }; NR];
                for r in 0..NR {
                    let (v, s) = F::sub(
                        wp.add(r * row_bytes + sb * F::BYTES),
                        pre[r].assume_init_ref(),
                        j,
                    );
                    wv[r] = v;
                    sc[r] = s;
                }
                for t in 0..NT {
                    let at = t * acts.cols + b * QK;
                    let x_hi = _mm256_loadu_si256(xh.add(at) as *const __m256i);
                    let x_lo = _mm256_loadu_si256(xl.add(at) as *const __m256i);
                    let dx = *xd.add(t * nb + b);
                    let dsx = *xds.add(t * nb + b);
                    for r in 0..NR {
                        let (ph, pl) = if F::SIGNED {
                            let u = _mm256_sign_epi8(wv[r], wv[r]);
                            (
                                D::dot(u, _mm256_sign_epi8(x_hi, wv[r])),
                                D::dot(u, _mm256_sign_epi8(x_lo, wv[r])),
                            )
                        } else {
                            (D::dot(wv[r], x_hi), D::dot(wv[r], x_lo))
                        };
                        let p = _mm256_add_epi32(_mm256_slli_epi32(ph, HI_SHIFT as i32), pl);
                        let scale = if F::HALVES {
                            _mm256_set_m128(_mm_set1_ps(sc[r].hi * dx), _mm_set1_ps(sc[r].lo * dx))
                        } else {
                            _mm256_set1_ps(sc[r].lo * dx)
                        };
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[r][t]);
                        corr[r][t] += sc[r].corr * dsx;
                    }
                }
            }
        }
        for r in 0..NR {
            for t in 0..NT {
                *out.add(t * out_stride + r) = hsum(acc[r][t]) + corr[r][t];
            }
        }
    }
}

/// Declares a tile kernel for one format: dispatches `(nr, nt)` to constant-size tiles.
/// Expands inside a module that defines `Dot` and a `#[target_feature]` attribute list.
#[macro_export]
#[doc(hidden)]
macro_rules! x86_tile_kernel {
    ($name:ident, $fmt:ty, $dot:ty, $features:literal, $max_nt:literal) => {
        /// Tile kernel (see [`super::TileFn`]).
        ///
        /// # Safety
        /// As [`super::TileFn`]; the CPU must support the instruction set.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(job: &$crate::backend::cpu::kernels::Tile<'_>) {
            let (w, row_bytes, nr, acts, t0, nt, out, out_stride) = (
                job.w,
                job.row_bytes,
                job.rows,
                job.acts,
                job.t0,
                job.tokens,
                job.out,
                job.out_stride,
            );
            use super::x86::tile;
            let mut t = 0;
            while t < nt {
                let n = (nt - t).min($max_nt);
                let o = unsafe { out.add(t * out_stride) };
                unsafe {
                    match (nr, n) {
                        (4, 4) => {
                            tile::<$fmt, $dot, 4, 4>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (4, 3) => {
                            tile::<$fmt, $dot, 4, 3>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (4, 2) => {
                            tile::<$fmt, $dot, 4, 2>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (4, _) => {
                            tile::<$fmt, $dot, 4, 1>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (3, 4) | (3, 3) => {
                            tile::<$fmt, $dot, 3, 3>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (3, 2) => {
                            tile::<$fmt, $dot, 3, 2>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (3, _) => {
                            tile::<$fmt, $dot, 3, 1>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (2, 4) | (2, 3) | (2, 2) => {
                            tile::<$fmt, $dot, 2, 2>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (2, _) => {
                            tile::<$fmt, $dot, 2, 1>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (_, 4) | (_, 3) | (_, 2) => {
                            tile::<$fmt, $dot, 1, 2>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        _ => tile::<$fmt, $dot, 1, 1>(w, row_bytes, acts, t0 + t, o, out_stride),
                    }
                }
                // Shapes with fewer tokens than asked for advance by what they computed.
                t += match (nr, n) {
                    (4, k) => k,
                    (3, 4) | (3, 3) => 3,
                    (3, k) => k,
                    (_, 1) => 1,
                    _ => 2,
                };
            }
        }
    };
}
