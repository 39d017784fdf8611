//! AArch64 NEON kernels: 8-bit multiplies widened to 16 and pairwise-added to 32 bits (baseline
//! NEON, no dot-product extension needed), tiles of up to 4 x 4 in the 32 vector registers. The
//! formats and the tile loop are in [`super::lanes128`].

use std::arch::aarch64::*;

use super::lanes128::{Lanes128, PLANE_SHIFT, lanes128_kernels};

/// Whether this CPU runs these kernels (NEON is part of every AArch64 CPU).
pub fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// NEON's primitives.
pub(super) struct Neon;

impl Lanes128 for Neon {
    type V = uint8x16_t;
    type I = int32x4_t;
    type F = float32x4_t;

    #[inline(always)]
    unsafe fn load(p: *const u8) -> uint8x16_t {
        unsafe { vld1q_u8(p) }
    }
    #[inline(always)]
    fn splat(b: u8) -> uint8x16_t {
        unsafe { vdupq_n_u8(b) }
    }
    #[inline(always)]
    fn spread2(a: u8, b: u8) -> uint8x16_t {
        unsafe { vcombine_u8(vdup_n_u8(a), vdup_n_u8(b)) }
    }
    #[inline(always)]
    fn and(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        unsafe { vandq_u8(a, b) }
    }
    #[inline(always)]
    fn or(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        unsafe { vorrq_u8(a, b) }
    }
    #[inline(always)]
    fn test(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        unsafe { vtstq_u8(a, b) }
    }
    #[inline(always)]
    fn shl(a: uint8x16_t, n: u32) -> uint8x16_t {
        unsafe { vshlq_u8(a, vdupq_n_s8(n as i8)) }
    }
    #[inline(always)]
    fn shr(a: uint8x16_t, n: u32) -> uint8x16_t {
        unsafe { vshlq_u8(a, vdupq_n_s8(-(n as i8))) }
    }
    #[inline(always)]
    fn sub(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        unsafe { vsubq_u8(a, b) }
    }
    #[inline(always)]
    fn dot16(w: uint8x16_t, x: uint8x16_t) -> int32x4_t {
        unsafe {
            let (w, x) = (vreinterpretq_s8_u8(w), vreinterpretq_s8_u8(x));
            let p0 = vmull_s8(vget_low_s8(w), vget_low_s8(x));
            let p1 = vmull_s8(vget_high_s8(w), vget_high_s8(x));
            vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1))
        }
    }
    #[inline(always)]
    fn planes(hi: int32x4_t, lo: int32x4_t) -> int32x4_t {
        unsafe { vaddq_s32(vshlq_s32(hi, vdupq_n_s32(PLANE_SHIFT as i32)), lo) }
    }
    #[inline(always)]
    fn add(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        unsafe { vaddq_s32(a, b) }
    }
    #[inline(always)]
    fn fma(acc: float32x4_t, i: int32x4_t, s: f32) -> float32x4_t {
        unsafe { vfmaq_n_f32(acc, vcvtq_f32_s32(i), s) }
    }
    #[inline(always)]
    fn zero() -> float32x4_t {
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    fn hsum(f: float32x4_t) -> f32 {
        unsafe { vaddvq_f32(f) }
    }
}

lanes128_kernels!(Neon, "neon");
