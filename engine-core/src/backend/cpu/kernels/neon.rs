//! AArch64 NEON kernels: 8-bit multiplies widened to 16 and pairwise-added to 32 bits (baseline
//! NEON, no dot-product extension needed), tiles of up to 4 x 4 in the 32 vector registers.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::super::acts::{HI_SHIFT, QK, QuantActs};
use super::TileFn;
use crate::quant::GgmlType;

/// Whether this CPU runs these kernels (NEON is part of every AArch64 CPU).
pub fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// 32 weights as two signed 16-byte halves, with the scales of the halves and the coefficient of
/// the activation block's `d * sum(q)`.
#[derive(Clone, Copy)]
struct Sub {
    lo: int8x16_t,
    hi: int8x16_t,
    s_lo: f32,
    s_hi: f32,
    corr: f32,
}

trait Format {
    const BYTES: usize;
    const SUBS: usize;
    type Pre: Copy;
    unsafe fn prepare(blk: *const u8) -> Self::Pre;
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> Sub;
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    half::f16::from_bits(unsafe { std::ptr::read_unaligned(p as *const u16) }).to_f32()
}

#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (int8x16_t, int8x16_t) {
    unsafe {
        let v = vld1q_u8(p);
        (
            vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))),
            vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)),
        )
    }
}

/// Bits 0..16 and 16..32 of the little-endian word at `p` as bytes equal to 0x10 where set.
#[inline(always)]
unsafe fn high_bits(p: *const u8) -> (int8x16_t, int8x16_t) {
    unsafe {
        const SEL: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let sel = vld1q_u8(SEL.as_ptr());
        let b = std::slice::from_raw_parts(p, 4);
        let lo = vcombine_u8(vdup_n_u8(b[0]), vdup_n_u8(b[1]));
        let hi = vcombine_u8(vdup_n_u8(b[2]), vdup_n_u8(b[3]));
        let bit = vdupq_n_u8(0x10);
        (
            vreinterpretq_s8_u8(vandq_u8(vtstq_u8(lo, sel), bit)),
            vreinterpretq_s8_u8(vandq_u8(vtstq_u8(hi, sel), bit)),
        )
    }
}

struct Q4_0;
impl Format for Q4_0 {
    const BYTES: usize = 18;
    const SUBS: usize = 1;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles(blk.add(2));
            Sub {
                lo,
                hi,
                s_lo: d,
                s_hi: d,
                corr: -8.0 * d,
            }
        }
    }
}

struct Q4_1;
impl Format for Q4_1 {
    const BYTES: usize = 20;
    const SUBS: usize = 1;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles(blk.add(4));
            Sub {
                lo,
                hi,
                s_lo: d,
                s_hi: d,
                corr: f16_at(blk.add(2)),
            }
        }
    }
}

struct Q5_0;
impl Format for Q5_0 {
    const BYTES: usize = 22;
    const SUBS: usize = 1;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles(blk.add(6));
            let (blo, bhi) = high_bits(blk.add(2));
            Sub {
                lo: vorrq_s8(lo, blo),
                hi: vorrq_s8(hi, bhi),
                s_lo: d,
                s_hi: d,
                corr: -16.0 * d,
            }
        }
    }
}

struct Q5_1;
impl Format for Q5_1 {
    const BYTES: usize = 24;
    const SUBS: usize = 1;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles(blk.add(8));
            let (blo, bhi) = high_bits(blk.add(4));
            Sub {
                lo: vorrq_s8(lo, blo),
                hi: vorrq_s8(hi, bhi),
                s_lo: d,
                s_hi: d,
                corr: f16_at(blk.add(2)),
            }
        }
    }
}

struct Q8_0;
impl Format for Q8_0 {
    const BYTES: usize = 34;
    const SUBS: usize = 1;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub {
        unsafe {
            let d = f16_at(blk);
            let p = blk.add(2) as *const i8;
            Sub {
                lo: vld1q_s8(p),
                hi: vld1q_s8(p.add(16)),
                s_lo: d,
                s_hi: d,
                corr: 0.0,
            }
        }
    }
}

struct Q4K;
impl Format for Q4K {
    const BYTES: usize = 144;
    const SUBS: usize = 8;
    type Pre = ([f32; 8], [f32; 8]);
    #[inline(always)]
    unsafe fn prepare(blk: *const u8) -> Self::Pre {
        unsafe {
            let (d, dmin) = (f16_at(blk), f16_at(blk.add(2)));
            let s = std::slice::from_raw_parts(blk.add(4), 12);
            let mut pre = ([0.0; 8], [0.0; 8]);
            for j in 0..8 {
                let (sc, m) = super::scalar::scale_min_k4(j, s);
                pre.0[j] = d * f32::from(sc);
                pre.1[j] = -dmin * f32::from(m);
            }
            pre
        }
    }
    #[inline(always)]
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> Sub {
        unsafe {
            let p = blk.add(16 + (j / 2) * 32);
            let (a, b) = (vld1q_u8(p), vld1q_u8(p.add(16)));
            let m = vdupq_n_u8(0x0f);
            let (lo, hi) = if j % 2 == 0 {
                (vandq_u8(a, m), vandq_u8(b, m))
            } else {
                (vshrq_n_u8::<4>(a), vshrq_n_u8::<4>(b))
            };
            let d = pre.0[j];
            Sub {
                lo: vreinterpretq_s8_u8(lo),
                hi: vreinterpretq_s8_u8(hi),
                s_lo: d,
                s_hi: d,
                corr: pre.1[j],
            }
        }
    }
}

struct Q6K;
impl Format for Q6K {
    const BYTES: usize = 210;
    const SUBS: usize = 8;
    type Pre = [f32; 16];
    #[inline(always)]
    unsafe fn prepare(blk: *const u8) -> Self::Pre {
        unsafe {
            let d = f16_at(blk.add(208));
            let mut out = [0.0; 16];
            for (i, o) in out.iter_mut().enumerate() {
                *o = d * f32::from(*blk.add(192 + i) as i8);
            }
            out
        }
    }
    #[inline(always)]
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> Sub {
        unsafe {
            let (half, g) = (j / 4, j % 4);
            let ql = blk.add(64 * half + 32 * (g & 1));
            let qh = blk.add(128 + 32 * half);
            let one = |o: usize| -> int8x16_t {
                let l = vld1q_u8(ql.add(o));
                let h = vld1q_u8(qh.add(o));
                let low = if g < 2 {
                    vandq_u8(l, vdupq_n_u8(0x0f))
                } else {
                    vshrq_n_u8::<4>(l)
                };
                let high = match g {
                    0 => vshlq_n_u8::<4>(h),
                    1 => vshlq_n_u8::<2>(h),
                    2 => h,
                    _ => vshrq_n_u8::<2>(h),
                };
                let v = vorrq_u8(low, vandq_u8(high, vdupq_n_u8(0x30)));
                vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32))
            };
            let s = 8 * half + 2 * g;
            Sub {
                lo: one(0),
                hi: one(16),
                s_lo: pre[s],
                s_hi: pre[s + 1],
                corr: 0.0,
            }
        }
    }
}

#[inline(always)]
unsafe fn dot16(w: int8x16_t, x: int8x16_t) -> int32x4_t {
    unsafe {
        let p0 = vmull_s8(vget_low_s8(w), vget_low_s8(x));
        let p1 = vmull_s8(vget_high_s8(w), vget_high_s8(x));
        vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1))
    }
}

#[inline(always)]
unsafe fn tile_impl<F: Format, const NR: usize, const NT: usize>(
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
        let mut acc = [[vdupq_n_f32(0.0); NT]; NR];
        let mut corr = [[0.0f32; NT]; NR];
        for sb in 0..n_super {
            let mut pre = [std::mem::MaybeUninit::<F::Pre>::uninit(); NR];
            for r in 0..NR {
                pre[r].write(F::prepare(wp.add(r * row_bytes + sb * F::BYTES)));
            }
            for j in 0..F::SUBS {
                let b = sb * F::SUBS + j;
                let mut subs = [std::mem::MaybeUninit::<Sub>::uninit(); NR];
                for r in 0..NR {
                    subs[r].write(F::sub(
                        wp.add(r * row_bytes + sb * F::BYTES),
                        pre[r].assume_init_ref(),
                        j,
                    ));
                }
                for t in 0..NT {
                    let at = t * acts.cols + b * QK;
                    let (h0, h1) = (vld1q_s8(xh.add(at)), vld1q_s8(xh.add(at + 16)));
                    let (l0, l1) = (vld1q_s8(xl.add(at)), vld1q_s8(xl.add(at + 16)));
                    let dx = *xd.add(t * nb + b);
                    let dsx = *xds.add(t * nb + b);
                    for r in 0..NR {
                        let s = subs[r].assume_init_ref();
                        let p0 = vcvtq_f32_s32(vaddq_s32(
                            vshlq_n_s32::<{ HI_SHIFT as i32 }>(dot16(s.lo, h0)),
                            dot16(s.lo, l0),
                        ));
                        let p1 = vcvtq_f32_s32(vaddq_s32(
                            vshlq_n_s32::<{ HI_SHIFT as i32 }>(dot16(s.hi, h1)),
                            dot16(s.hi, l1),
                        ));
                        acc[r][t] = vfmaq_n_f32(acc[r][t], p0, s.s_lo * dx);
                        acc[r][t] = vfmaq_n_f32(acc[r][t], p1, s.s_hi * dx);
                        corr[r][t] += s.corr * dsx;
                    }
                }
            }
        }
        for r in 0..NR {
            for t in 0..NT {
                *out.add(t * out_stride + r) = vaddvq_f32(acc[r][t]) + corr[r][t];
            }
        }
    }
}

macro_rules! neon_kernel {
    ($name:ident, $fmt:ty) => {
        /// Tile kernel (see [`super::TileFn`]).
        ///
        /// # Safety
        /// As [`super::TileFn`].
        #[target_feature(enable = "neon")]
        unsafe fn $name(job: &super::Tile<'_>) {
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
            let mut t = 0;
            while t < nt {
                let n = (nt - t).min(4);
                let o = unsafe { out.add(t * out_stride) };
                unsafe {
                    match (nr, n) {
                        (4, 4) => {
                            tile_impl::<$fmt, 4, 4>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (4, 3) => {
                            tile_impl::<$fmt, 4, 3>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (4, 2) => {
                            tile_impl::<$fmt, 4, 2>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (4, _) => {
                            tile_impl::<$fmt, 4, 1>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (3, _) => {
                            tile_impl::<$fmt, 3, 1>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        (2, _) => {
                            tile_impl::<$fmt, 2, 1>(w, row_bytes, acts, t0 + t, o, out_stride)
                        }
                        _ => tile_impl::<$fmt, 1, 1>(w, row_bytes, acts, t0 + t, o, out_stride),
                    }
                }
                t += if nr == 4 { n } else { 1 };
            }
        }
    };
}

neon_kernel!(tile_q4_0, Q4_0);
neon_kernel!(tile_q4_1, Q4_1);
neon_kernel!(tile_q5_0, Q5_0);
neon_kernel!(tile_q5_1, Q5_1);
neon_kernel!(tile_q8_0, Q8_0);
neon_kernel!(tile_q4_k, Q4K);
neon_kernel!(tile_q6_k, Q6K);

/// The NEON tile kernel for a weight type.
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
