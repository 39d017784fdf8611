//! Tile kernels shared by the 128-bit instruction sets (AArch64 NEON, WebAssembly SIMD128): each
//! instruction set supplies its [`Lanes128`] primitives, and the weight formats and the tile loop
//! here are written once over them.
//!
//! A 32-weight block is unpacked into two signed 16-byte halves; each half's integer dot with the
//! activations' two planes is widened to 32 bits, scaled by the half's scale and accumulated in
//! four float lanes per (row, token); format offsets and minimums enter through the activation
//! block's `d * sum(q)`.

#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use super::super::acts::{HI_SHIFT, QK, QuantActs};
use super::Tile;

/// The primitives of a 128-bit instruction set.
pub(super) trait Lanes128 {
    /// 16 bytes.
    type V: Copy;
    /// Four 32-bit integers.
    type I: Copy;
    /// Four floats.
    type F: Copy;
    /// Loads 16 bytes.
    unsafe fn load(p: *const u8) -> Self::V;
    /// 16 copies of a byte.
    fn splat(b: u8) -> Self::V;
    /// `[a x8 | b x8]`.
    fn spread2(a: u8, b: u8) -> Self::V;
    /// Bitwise and.
    fn and(a: Self::V, b: Self::V) -> Self::V;
    /// Bitwise or.
    fn or(a: Self::V, b: Self::V) -> Self::V;
    /// 0xff in each byte where `a & b` is not zero, else 0.
    fn test(a: Self::V, b: Self::V) -> Self::V;
    /// Each byte shifted left by `n` (bits shifted out are lost).
    fn shl(a: Self::V, n: u32) -> Self::V;
    /// Each byte shifted right by `n`, filling with zeros.
    fn shr(a: Self::V, n: u32) -> Self::V;
    /// Byte-wise wrapping subtraction.
    fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// Sums of four adjacent products of signed bytes.
    fn dot16(w: Self::V, x: Self::V) -> Self::I;
    /// `(hi << 7) + lo`: the integer dot with the two-plane activations.
    fn planes(hi: Self::I, lo: Self::I) -> Self::I;
    /// Lane-wise sum of 32-bit integers.
    fn add(a: Self::I, b: Self::I) -> Self::I;
    /// The integer dot of weights `w` with the two-plane activations `(h, l)`.
    #[inline(always)]
    fn dot_planes(w: Self::V, h: Self::V, l: Self::V) -> Self::I {
        Self::planes(Self::dot16(w, h), Self::dot16(w, l))
    }
    /// [`Lanes128::dot_planes`] for weights in `0..128`.
    #[inline(always)]
    fn dot_planes_u7(w: Self::V, h: Self::V, l: Self::V) -> Self::I {
        Self::dot_planes(w, h, l)
    }
    /// `acc + float(i) * s`.
    fn fma(acc: Self::F, i: Self::I, s: f32) -> Self::F;
    /// Four zero floats.
    fn zero() -> Self::F;
    /// The sum of the four floats.
    fn hsum(f: Self::F) -> f32;
}

/// 32 weights as two signed 16-byte halves, with the scales of the halves and the coefficient of
/// the activation block's `d * sum(q)`.
#[derive(Clone, Copy)]
pub(super) struct Sub<V> {
    lo: V,
    hi: V,
    s_lo: f32,
    s_hi: f32,
    corr: f32,
}

/// A weight format seen as 32-weight sub-blocks.
pub(super) trait Format<L: Lanes128> {
    /// Bytes per (super-)block.
    const BYTES: usize;
    /// 32-weight sub-blocks per (super-)block.
    const SUBS: usize;
    /// Scales decoded once per (super-)block.
    type Pre: Copy;
    /// Whether the halves of [`Format::sub`] are in `0..128` (unsigned nibbles and 5-bit values).
    const U7: bool = false;
    /// Whether both halves always have the same scale (then their integer dots are added before
    /// the one conversion to float).
    const ONE_SCALE: bool = true;
    unsafe fn prepare(blk: *const u8) -> Self::Pre;
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> Sub<L::V>;
}

/// The f16 at `p` widened to f32 (exactly, in a few integer operations).
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    super::super::simd::h2f(unsafe { std::ptr::read_unaligned(p as *const u16) })
}

/// 16 packed bytes -> their low nibbles (weights 0..16) and high nibbles (16..32).
#[inline(always)]
unsafe fn nibbles<L: Lanes128>(p: *const u8) -> (L::V, L::V) {
    let v = unsafe { L::load(p) };
    (L::and(v, L::splat(0x0f)), L::shr(v, 4))
}

/// Bits 0..16 and 16..32 of the little-endian word at `p` as bytes equal to 0x10 where set.
#[inline(always)]
unsafe fn high_bits<L: Lanes128>(p: *const u8) -> (L::V, L::V) {
    let b = unsafe { std::slice::from_raw_parts(p, 4) };
    const SEL: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let sel = unsafe { L::load(SEL.as_ptr()) };
    let bit = L::splat(0x10);
    (
        L::and(L::test(L::spread2(b[0], b[1]), sel), bit),
        L::and(L::test(L::spread2(b[2], b[3]), sel), bit),
    )
}

pub(super) struct Q4_0;
impl<L: Lanes128> Format<L> for Q4_0 {
    const BYTES: usize = 18;
    const SUBS: usize = 1;
    const U7: bool = true;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub<L::V> {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles::<L>(blk.add(2));
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

pub(super) struct Q4_1;
impl<L: Lanes128> Format<L> for Q4_1 {
    const BYTES: usize = 20;
    const SUBS: usize = 1;
    const U7: bool = true;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub<L::V> {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles::<L>(blk.add(4));
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

pub(super) struct Q5_0;
impl<L: Lanes128> Format<L> for Q5_0 {
    const BYTES: usize = 22;
    const SUBS: usize = 1;
    const U7: bool = true;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub<L::V> {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles::<L>(blk.add(6));
            let (blo, bhi) = high_bits::<L>(blk.add(2));
            Sub {
                lo: L::or(lo, blo),
                hi: L::or(hi, bhi),
                s_lo: d,
                s_hi: d,
                corr: -16.0 * d,
            }
        }
    }
}

pub(super) struct Q5_1;
impl<L: Lanes128> Format<L> for Q5_1 {
    const BYTES: usize = 24;
    const SUBS: usize = 1;
    const U7: bool = true;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub<L::V> {
        unsafe {
            let d = f16_at(blk);
            let (lo, hi) = nibbles::<L>(blk.add(8));
            let (blo, bhi) = high_bits::<L>(blk.add(4));
            Sub {
                lo: L::or(lo, blo),
                hi: L::or(hi, bhi),
                s_lo: d,
                s_hi: d,
                corr: f16_at(blk.add(2)),
            }
        }
    }
}

pub(super) struct Q8_0;
impl<L: Lanes128> Format<L> for Q8_0 {
    const BYTES: usize = 34;
    const SUBS: usize = 1;
    type Pre = ();
    #[inline(always)]
    unsafe fn prepare(_: *const u8) {}
    #[inline(always)]
    unsafe fn sub(blk: *const u8, _: &(), _: usize) -> Sub<L::V> {
        unsafe {
            let d = f16_at(blk);
            Sub {
                lo: L::load(blk.add(2)),
                hi: L::load(blk.add(18)),
                s_lo: d,
                s_hi: d,
                corr: 0.0,
            }
        }
    }
}

pub(super) struct Q4K;
impl<L: Lanes128> Format<L> for Q4K {
    const BYTES: usize = 144;
    const SUBS: usize = 8;
    const U7: bool = true;
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
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> Sub<L::V> {
        unsafe {
            let p = blk.add(16 + (j / 2) * 32);
            let (a, b) = (L::load(p), L::load(p.add(16)));
            let (lo, hi) = if j.is_multiple_of(2) {
                let m = L::splat(0x0f);
                (L::and(a, m), L::and(b, m))
            } else {
                (L::shr(a, 4), L::shr(b, 4))
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

pub(super) struct Q6K;
impl<L: Lanes128> Format<L> for Q6K {
    const BYTES: usize = 210;
    const SUBS: usize = 8;
    const ONE_SCALE: bool = false;
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
    unsafe fn sub(blk: *const u8, pre: &Self::Pre, j: usize) -> Sub<L::V> {
        unsafe {
            let (half, g) = (j / 4, j % 4);
            let ql = blk.add(64 * half + 32 * (g & 1));
            let qh = blk.add(128 + 32 * half);
            let one = |o: usize| {
                let l = L::load(ql.add(o));
                let h = L::load(qh.add(o));
                let low = if g < 2 {
                    L::and(l, L::splat(0x0f))
                } else {
                    L::shr(l, 4)
                };
                // Bits 2g..2g + 2 of qh to bits 4..6.
                let high = if g < 2 {
                    L::shl(h, 4 - 2 * g as u32)
                } else {
                    L::shr(h, 2 * g as u32 - 4)
                };
                L::sub(L::or(low, L::and(high, L::splat(0x30))), L::splat(32))
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

/// One `NR` x `NT` tile. Must be inlined into a function compiled for the instruction set.
#[inline(always)]
unsafe fn tile_impl<L: Lanes128, F: Format<L>, const NR: usize, const NT: usize>(
    job: &Tile<'_>,
    t0: usize,
    out: *mut f32,
) {
    unsafe {
        let acts: &QuantActs = job.acts;
        let (row_bytes, out_stride) = (job.row_bytes, job.out_stride);
        let n_super = row_bytes / F::BYTES;
        let nb = acts.cols / QK;
        let wp = job.w.as_ptr();
        let xh = acts.hi.as_ptr().add(t0 * acts.cols) as *const u8;
        let xl = acts.lo.as_ptr().add(t0 * acts.cols) as *const u8;
        let xd = acts.d.as_ptr().add(t0 * nb);
        let xds = acts.ds.as_ptr().add(t0 * nb);
        let mut acc = [[L::zero(); NT]; NR];
        let mut corr = [[0.0f32; NT]; NR];
        for sb in 0..n_super {
            let mut pre = [std::mem::MaybeUninit::<F::Pre>::uninit(); NR];
            for r in 0..NR {
                pre[r].write(F::prepare(wp.add(r * row_bytes + sb * F::BYTES)));
            }
            for j in 0..F::SUBS {
                let b = sb * F::SUBS + j;
                let mut subs = [std::mem::MaybeUninit::<Sub<L::V>>::uninit(); NR];
                for r in 0..NR {
                    subs[r].write(F::sub(
                        wp.add(r * row_bytes + sb * F::BYTES),
                        pre[r].assume_init_ref(),
                        j,
                    ));
                }
                for t in 0..NT {
                    let at = t * acts.cols + b * QK;
                    let (h0, h1) = (L::load(xh.add(at)), L::load(xh.add(at + 16)));
                    let (l0, l1) = (L::load(xl.add(at)), L::load(xl.add(at + 16)));
                    let dx = *xd.add(t * nb + b);
                    let dsx = *xds.add(t * nb + b);
                    for r in 0..NR {
                        let s = subs[r].assume_init_ref();
                        let (p0, p1) = if F::U7 {
                            (
                                L::dot_planes_u7(s.lo, h0, l0),
                                L::dot_planes_u7(s.hi, h1, l1),
                            )
                        } else {
                            (L::dot_planes(s.lo, h0, l0), L::dot_planes(s.hi, h1, l1))
                        };
                        if F::ONE_SCALE {
                            acc[r][t] = L::fma(acc[r][t], L::add(p0, p1), s.s_lo * dx);
                        } else {
                            acc[r][t] = L::fma(acc[r][t], p0, s.s_lo * dx);
                            acc[r][t] = L::fma(acc[r][t], p1, s.s_hi * dx);
                        }
                        corr[r][t] += s.corr * dsx;
                    }
                }
            }
        }
        for r in 0..NR {
            for t in 0..NT {
                *out.add(t * out_stride + r) = L::hsum(acc[r][t]) + corr[r][t];
            }
        }
    }
}

/// A whole tile: tokens in groups of up to four, with register tiles of four rows.
#[inline(always)]
pub(super) unsafe fn tile<L: Lanes128, F: Format<L>>(job: &Tile<'_>) {
    let mut t = 0;
    while t < job.tokens {
        let n = (job.tokens - t).min(4);
        let t0 = job.t0 + t;
        unsafe {
            let o = job.out.add(t * job.out_stride);
            match (job.rows, n) {
                (4, 4) => tile_impl::<L, F, 4, 4>(job, t0, o),
                (4, 3) => tile_impl::<L, F, 4, 3>(job, t0, o),
                (4, 2) => tile_impl::<L, F, 4, 2>(job, t0, o),
                (4, _) => tile_impl::<L, F, 4, 1>(job, t0, o),
                (3, _) => tile_impl::<L, F, 3, 1>(job, t0, o),
                (2, _) => tile_impl::<L, F, 2, 1>(job, t0, o),
                _ => tile_impl::<L, F, 1, 1>(job, t0, o),
            }
        }
        t += if job.rows == 4 { n } else { 1 };
    }
}

/// Declares the kernel functions of an instruction set over its [`Lanes128`] type, and its
/// `tile(ty)` table.
macro_rules! lanes128_kernels {
    ($lanes:ty, $($feature:literal)?) => {
        macro_rules! kernel {
            ($name:ident, $fmt:ident) => {
                $(#[target_feature(enable = $feature)])?
                unsafe fn $name(job: &super::Tile<'_>) {
                    unsafe { super::lanes128::tile::<$lanes, super::lanes128::$fmt>(job) }
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

        /// The tile kernel for a weight type.
        pub fn tile(ty: crate::quant::GgmlType) -> Option<super::TileFn> {
            use crate::quant::GgmlType;
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
    };
}
pub(super) use lanes128_kernels;

/// Weight of the high activation plane, as a shift.
pub(super) const PLANE_SHIFT: u32 = HI_SHIFT;
