//! WebAssembly SIMD (simd128) kernels: 8-bit products widened to 16 bits and pairwise-added to
//! 32, tiles of up to 4 x 4. Compiled when the crate is built with `+simd128`, which every
//! current browser runs.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use core::arch::wasm32::*;

use super::super::acts::{HI_SHIFT, QK, QuantActs};
use super::TileFn;
use crate::quant::GgmlType;

/// 32 weights as two signed 16-byte halves, with the scales of the halves and the coefficient of
/// the activation block's `d * sum(q)`.
#[derive(Clone, Copy)]
struct Sub {
    lo: v128,
    hi: v128,
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
    half::f16::from_bits(unsafe { core::ptr::read_unaligned(p as *const u16) }).to_f32()
}

#[inline(always)]
unsafe fn load(p: *const u8) -> v128 {
    unsafe { v128_load(p as *const v128) }
}

#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (v128, v128) {
    unsafe {
        let v = load(p);
        (v128_and(v, u8x16_splat(0x0f)), u8x16_shr(v, 4))
    }
}

/// Bits 0..16 and 16..32 of the little-endian word at `p` as bytes equal to 0x10 where set.
#[inline(always)]
unsafe fn high_bits(p: *const u8) -> (v128, v128) {
    unsafe {
        let sel = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
        let b = core::slice::from_raw_parts(p, 4);
        let spread = |a: u8, c: u8| u8x16(a, a, a, a, a, a, a, a, c, c, c, c, c, c, c, c);
        let bit = u8x16_splat(0x10);
        let mask = |v: v128| v128_and(u8x16_eq(v128_and(v, sel), sel), bit);
        (mask(spread(b[0], b[1])), mask(spread(b[2], b[3])))
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
                lo: v128_or(lo, blo),
                hi: v128_or(hi, bhi),
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
                lo: v128_or(lo, blo),
                hi: v128_or(hi, bhi),
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
            Sub {
                lo: load(blk.add(2)),
                hi: load(blk.add(18)),
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
            let s = core::slice::from_raw_parts(blk.add(4), 12);
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
            let (a, b) = (load(p), load(p.add(16)));
            let m = u8x16_splat(0x0f);
            let (lo, hi) = if j % 2 == 0 {
                (v128_and(a, m), v128_and(b, m))
            } else {
                (u8x16_shr(a, 4), u8x16_shr(b, 4))
            };
            let d = pre.0[j];
            Sub {
                lo,
                hi,
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
            let one = |o: usize| -> v128 {
                let l = load(ql.add(o));
                let h = load(qh.add(o));
                let low = if g < 2 {
                    v128_and(l, u8x16_splat(0x0f))
                } else {
                    u8x16_shr(l, 4)
                };
                let high = match g {
                    0 => u8x16_shl(h, 4),
                    1 => u8x16_shl(h, 2),
                    2 => h,
                    _ => u8x16_shr(h, 2),
                };
                let v = v128_or(low, v128_and(high, u8x16_splat(0x30)));
                i8x16_sub(v, i8x16_splat(32))
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
fn dot16(w: v128, x: v128) -> v128 {
    let p0 = i16x8_extmul_low_i8x16(w, x);
    let p1 = i16x8_extmul_high_i8x16(w, x);
    i32x4_add(
        i32x4_extadd_pairwise_i16x8(p0),
        i32x4_extadd_pairwise_i16x8(p1),
    )
}

#[inline(always)]
fn hsum(v: v128) -> f32 {
    f32x4_extract_lane::<0>(v)
        + f32x4_extract_lane::<1>(v)
        + f32x4_extract_lane::<2>(v)
        + f32x4_extract_lane::<3>(v)
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
        let xh = acts.hi.as_ptr().add(t0 * acts.cols) as *const u8;
        let xl = acts.lo.as_ptr().add(t0 * acts.cols) as *const u8;
        let xd = acts.d.as_ptr().add(t0 * nb);
        let xds = acts.ds.as_ptr().add(t0 * nb);
        let mut acc = [[f32x4_splat(0.0); NT]; NR];
        let mut corr = [[0.0f32; NT]; NR];
        for sb in 0..n_super {
            let mut pre = [core::mem::MaybeUninit::<F::Pre>::uninit(); NR];
            for r in 0..NR {
                pre[r].write(F::prepare(wp.add(r * row_bytes + sb * F::BYTES)));
            }
            for j in 0..F::SUBS {
                let b = sb * F::SUBS + j;
                let mut subs = [core::mem::MaybeUninit::<Sub>::uninit(); NR];
                for r in 0..NR {
                    subs[r].write(F::sub(
                        wp.add(r * row_bytes + sb * F::BYTES),
                        pre[r].assume_init_ref(),
                        j,
                    ));
                }
                for t in 0..NT {
                    let at = t * acts.cols + b * QK;
                    let (h0, h1) = (load(xh.add(at)), load(xh.add(at + 16)));
                    let (l0, l1) = (load(xl.add(at)), load(xl.add(at + 16)));
                    let dx = *xd.add(t * nb + b);
                    let dsx = *xds.add(t * nb + b);
                    for r in 0..NR {
                        let s = subs[r].assume_init_ref();
                        let p0 = f32x4_convert_i32x4(i32x4_add(
                            i32x4_shl(dot16(s.lo, h0), HI_SHIFT),
                            dot16(s.lo, l0),
                        ));
                        let p1 = f32x4_convert_i32x4(i32x4_add(
                            i32x4_shl(dot16(s.hi, h1), HI_SHIFT),
                            dot16(s.hi, l1),
                        ));
                        let a = f32x4_add(acc[r][t], f32x4_mul(p0, f32x4_splat(s.s_lo * dx)));
                        acc[r][t] = f32x4_add(a, f32x4_mul(p1, f32x4_splat(s.s_hi * dx)));
                        corr[r][t] += s.corr * dsx;
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

macro_rules! wasm_kernel {
    ($name:ident, $fmt:ty) => {
        /// Tile kernel (see [`super::TileFn`]).
        ///
        /// # Safety
        /// As [`super::TileFn`].
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

wasm_kernel!(tile_q4_0, Q4_0);
wasm_kernel!(tile_q4_1, Q4_1);
wasm_kernel!(tile_q5_0, Q5_0);
wasm_kernel!(tile_q5_1, Q5_1);
wasm_kernel!(tile_q8_0, Q8_0);
wasm_kernel!(tile_q4_k, Q4K);
wasm_kernel!(tile_q6_k, Q6K);

/// The simd128 tile kernel for a weight type.
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
