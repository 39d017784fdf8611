//! AVX-512 VNNI kernels: `vpdpbusd` integer dots on 256-bit vectors (AVX512-VL), with the 32
//! vector registers of AVX-512 holding tiles of up to 4 x 4.

use std::arch::x86_64::*;

use super::TileFn;
use super::x86::{IntDot, Q4_0, Q4_1, Q4K, Q5_0, Q5_1, Q6K, Q8_0};
use crate::quant::GgmlType;

/// Whether this CPU runs these kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Integer dot through `vpdpbusd` (u8 x i8 quads -> i32).
pub struct Dot;
impl IntDot for Dot {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s) }
    }
}

crate::x86_tile_kernel!(
    tile_q4_0,
    Q4_0,
    Dot,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    4
);
crate::x86_tile_kernel!(
    tile_q4_1,
    Q4_1,
    Dot,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    4
);
crate::x86_tile_kernel!(
    tile_q5_0,
    Q5_0,
    Dot,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    4
);
crate::x86_tile_kernel!(
    tile_q5_1,
    Q5_1,
    Dot,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    4
);
crate::x86_tile_kernel!(
    tile_q8_0,
    Q8_0,
    Dot,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    4
);
crate::x86_tile_kernel!(
    tile_q4_k,
    Q4K,
    Dot,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    4
);
crate::x86_tile_kernel!(
    tile_q6_k,
    Q6K,
    Dot,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    4
);

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
