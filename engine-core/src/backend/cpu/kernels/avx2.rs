//! AVX2 + FMA kernels: `vpmaddubsw` + `vpmaddwd` integer dots, tiles of up to 4 x 2.

use std::arch::x86_64::*;

use super::TileFn;
use super::x86::{IntDot, Q4_0, Q4_1, Q4K, Q5_0, Q5_1, Q6K, Q8_0};
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

crate::x86_tile_kernel!(tile_q4_0, Q4_0, Dot, "avx2,fma,f16c", 2);
crate::x86_tile_kernel!(tile_q4_1, Q4_1, Dot, "avx2,fma,f16c", 2);
crate::x86_tile_kernel!(tile_q5_0, Q5_0, Dot, "avx2,fma,f16c", 2);
crate::x86_tile_kernel!(tile_q5_1, Q5_1, Dot, "avx2,fma,f16c", 2);
crate::x86_tile_kernel!(tile_q8_0, Q8_0, Dot, "avx2,fma,f16c", 2);
crate::x86_tile_kernel!(tile_q4_k, Q4K, Dot, "avx2,fma,f16c", 2);
crate::x86_tile_kernel!(tile_q6_k, Q6K, Dot, "avx2,fma,f16c", 2);

/// The AVX2 tile kernel for a weight type.
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
