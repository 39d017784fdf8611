//! WebAssembly SIMD (simd128) kernels: 8-bit products widened to 16 bits and pairwise-added to
//! 32, tiles of up to 4 x 4. Compiled when the crate is built with `+simd128`, which every
//! current browser runs; built also with `+relaxed-simd` (Chrome 114 and later), the products
//! take relaxed SIMD's 8-bit dot product. The formats and the tile loop are in
//! [`super::lanes128`].

use core::arch::wasm32::*;

use super::lanes128::{Lanes128, PLANE_SHIFT, lanes128_kernels};

/// WebAssembly SIMD's primitives.
pub(super) struct Simd128;

impl Lanes128 for Simd128 {
    type V = v128;
    type I = v128;
    type F = v128;

    #[inline(always)]
    unsafe fn load(p: *const u8) -> v128 {
        unsafe { v128_load(p as *const v128) }
    }
    #[inline(always)]
    fn splat(b: u8) -> v128 {
        u8x16_splat(b)
    }
    #[inline(always)]
    fn spread2(a: u8, b: u8) -> v128 {
        u8x16(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
    }
    #[inline(always)]
    fn and(a: v128, b: v128) -> v128 {
        v128_and(a, b)
    }
    #[inline(always)]
    fn or(a: v128, b: v128) -> v128 {
        v128_or(a, b)
    }
    #[inline(always)]
    fn test(a: v128, b: v128) -> v128 {
        v128_not(u8x16_eq(v128_and(a, b), u8x16_splat(0)))
    }
    #[inline(always)]
    fn shl(a: v128, n: u32) -> v128 {
        u8x16_shl(a, n)
    }
    #[inline(always)]
    fn shr(a: v128, n: u32) -> v128 {
        u8x16_shr(a, n)
    }
    #[inline(always)]
    fn sub(a: v128, b: v128) -> v128 {
        i8x16_sub(a, b)
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
    fn planes(hi: v128, lo: v128) -> v128 {
        i32x4_add(i32x4_shl(hi, PLANE_SHIFT), lo)
    }
    /// Relaxed SIMD's dot product takes weights in `0..128` as its 7-bit operand: products of
    /// such a weight and a signed activation byte, summed in fours, in one instruction
    /// (`pmaddubsw` + `pmaddwd` on x86, `sdot` on Arm). Exact: no pair sum of 127 x 127 products
    /// reaches the 16-bit limit some engines saturate at.
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    fn dot_planes_u7(w: v128, h: v128, l: v128) -> v128 {
        let hi = i32x4_relaxed_dot_i8x16_i7x16_add(h, w, i32x4_splat(0));
        i32x4_relaxed_dot_i8x16_i7x16_add(l, w, i32x4_shl(hi, PLANE_SHIFT))
    }
    #[inline(always)]
    fn add(a: v128, b: v128) -> v128 {
        i32x4_add(a, b)
    }
    #[inline(always)]
    fn fma(acc: v128, i: v128, s: f32) -> v128 {
        f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(i), f32x4_splat(s)))
    }
    #[inline(always)]
    fn zero() -> v128 {
        f32x4_splat(0.0)
    }
    #[inline(always)]
    fn hsum(f: v128) -> f32 {
        f32x4_extract_lane::<0>(f)
            + f32x4_extract_lane::<1>(f)
            + f32x4_extract_lane::<2>(f)
            + f32x4_extract_lane::<3>(f)
    }
}

lanes128_kernels!(Simd128,);
