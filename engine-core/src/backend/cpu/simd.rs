//! Float vector primitives for the element-wise parts of the forward pass (attention, norms,
//! activations, activation quantization), written once generically and compiled per instruction
//! set: each entry point declared with [`dispatch`] runs a copy built with the features of the
//! instruction set chosen at start-up.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The per-instruction-set primitives that generic code cannot express portably.
pub(crate) trait Simd {
    /// `dst[i] = src[i]` widened from IEEE half precision (bits).
    unsafe fn widen_f16(src: &[u16], dst: &mut [f32]);
    /// `a * b + c`, fused where the instruction set has it (so loops over it vectorize to FMA).
    fn fma(a: f32, b: f32, c: f32) -> f32;
}

/// Asks the cache to start loading every line of `bytes` (a hint: does nothing where the target
/// has no prefetch instruction).
#[inline(always)]
pub(crate) fn prefetch<T>(bytes: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let (p, n) = (bytes.as_ptr() as *const i8, std::mem::size_of_val(bytes));
        for off in (0..n).step_by(64) {
            // SAFETY: a prefetch is only a hint; the address lies inside `bytes`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// IEEE half precision (bits) widened to single precision exactly, without branches.
pub(crate) use crate::quant::f16_to_f32_exact as h2f;

/// Plain Rust, eight independent lanes (vectorized by the compiler to the baseline ISA).
pub(crate) struct Portable;

impl Simd for Portable {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }

    #[inline(always)]
    unsafe fn widen_f16(src: &[u16], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = h2f(s);
        }
    }
}

/// AVX-512F: 16 lanes with fused multiply-add.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    unsafe fn widen_f16(src: &[u16], dst: &mut [f32]) {
        unsafe {
            let n = src.len().min(dst.len());
            let mut i = 0;
            while i < n {
                let k = if n - i >= 16 {
                    0xffff
                } else {
                    (1u32 << (n - i)) as u16 - 1
                };
                let v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                    k,
                    src.as_ptr().add(i) as *const i16,
                ));
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), k, v);
                i += 16;
            }
        }
    }
}

/// AVX2 + FMA: 8 lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    unsafe fn widen_f16(src: &[u16], dst: &mut [f32]) {
        unsafe {
            let n = src.len().min(dst.len());
            let mut i = 0;
            while i + 8 <= n {
                let v = _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(i) as *const __m128i));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
                i += 8;
            }
            while i < n {
                dst[i] = h2f(src[i]);
                i += 1;
            }
        }
    }
}

/// Declares `fn $name(isa, args...)` that runs `$generic::<S>(args...)` compiled for the
/// best instruction set available among those `isa` allows.
macro_rules! dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident => $generic:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty) => {
        $(#[$doc])*
        $vis fn $name(isa: $crate::backend::cpu::kernels::Isa, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
                unsafe fn with_avx512($($arg: $ty),*) -> $ret {
                    $generic::<$crate::backend::cpu::simd::Avx512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn with_avx2($($arg: $ty),*) -> $ret {
                    $generic::<$crate::backend::cpu::simd::Avx2>($($arg),*)
                }
                match isa {
                    // SAFETY: the ISA was detected on this CPU before it was chosen.
                    $crate::backend::cpu::kernels::Isa::Avx512Vnni => return unsafe { with_avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::backend::cpu::kernels::Isa::Avx2 => return unsafe { with_avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = isa;
            $generic::<$crate::backend::cpu::simd::Portable>($($arg),*)
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::h2f;

    #[test]
    fn h2f_widens_every_half_exactly() {
        for bits in 0..=u16::MAX {
            let got = h2f(bits);
            let want = half::f16::from_bits(bits).to_f32();
            if want.is_nan() {
                // The payload and sign are kept as they are (`half` also sets the quiet bit).
                let sign = u32::from(bits & 0x8000) << 16;
                let payload = u32::from(bits & 0x03ff) << 13;
                assert_eq!(got.to_bits(), sign | 0x7f80_0000 | payload, "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }
}
