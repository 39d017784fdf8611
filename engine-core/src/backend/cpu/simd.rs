//! Float vector primitives for the element-wise parts of the forward pass (attention, norms,
//! activations), written once generically and compiled per instruction set: each public entry
//! point dispatches on the [`Isa`] to a copy built with that instruction set's features.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Dot products and `y += a * x` over f32 slices of equal length.
pub(crate) trait Simd {
    /// `sum a[i] * b[i]`.
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32;
    /// `y[i] += a * x[i]`.
    unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]);
    /// `sum a[i] * b[i]` with `b` in IEEE half precision (bits).
    unsafe fn dot_f16(a: &[f32], b: &[u16]) -> f32;
    /// `y[i] += a * x[i]` with `x` in IEEE half precision (bits).
    unsafe fn axpy_f16(y: &mut [f32], a: f32, x: &[u16]);
}

#[inline(always)]
fn h2f(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// Plain Rust, eight independent lanes (vectorized by the compiler to the baseline ISA).
pub(crate) struct Portable;

impl Simd for Portable {
    #[inline(always)]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (x, y) in ra.iter().zip(rb) {
            s += x * y;
        }
        s
    }

    #[inline(always)]
    unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }

    #[inline(always)]
    unsafe fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * h2f(y[i]);
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (x, &y) in ra.iter().zip(rb) {
            s += x * h2f(y);
        }
        s
    }

    #[inline(always)]
    unsafe fn axpy_f16(y: &mut [f32], a: f32, x: &[u16]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * h2f(x);
        }
    }
}

/// AVX-512F: 16 lanes with fused multiply-add.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    #[inline(always)]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        unsafe {
            let n = a.len().min(b.len());
            let mut acc0 = _mm512_setzero_ps();
            let mut acc1 = _mm512_setzero_ps();
            let mut i = 0;
            while i + 32 <= n {
                acc0 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i + 16)),
                    _mm512_loadu_ps(b.as_ptr().add(i + 16)),
                    acc1,
                );
                i += 32;
            }
            while i < n {
                let k = if n - i >= 16 {
                    0xffff
                } else {
                    (1u32 << (n - i)) as u16 - 1
                };
                let x = _mm512_maskz_loadu_ps(k, a.as_ptr().add(i));
                let y = _mm512_maskz_loadu_ps(k, b.as_ptr().add(i));
                acc0 = _mm512_fmadd_ps(x, y, acc0);
                i += 16;
            }
            _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
        }
    }

    #[inline(always)]
    unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        unsafe {
            let n = y.len().min(x.len());
            let av = _mm512_set1_ps(a);
            let mut i = 0;
            while i < n {
                let k = if n - i >= 16 {
                    0xffff
                } else {
                    (1u32 << (n - i)) as u16 - 1
                };
                let yp = y.as_mut_ptr().add(i);
                let v = _mm512_fmadd_ps(
                    av,
                    _mm512_maskz_loadu_ps(k, x.as_ptr().add(i)),
                    _mm512_maskz_loadu_ps(k, yp),
                );
                _mm512_mask_storeu_ps(yp, k, v);
                i += 16;
            }
        }
    }

    #[inline(always)]
    unsafe fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
        unsafe {
            let n = a.len().min(b.len());
            let mut acc0 = _mm512_setzero_ps();
            let mut i = 0;
            while i < n {
                let k = if n - i >= 16 {
                    0xffff
                } else {
                    (1u32 << (n - i)) as u16 - 1
                };
                let x = _mm512_maskz_loadu_ps(k, a.as_ptr().add(i));
                let y =
                    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, b.as_ptr().add(i) as *const i16));
                acc0 = _mm512_fmadd_ps(x, y, acc0);
                i += 16;
            }
            _mm512_reduce_add_ps(acc0)
        }
    }

    #[inline(always)]
    unsafe fn axpy_f16(y: &mut [f32], a: f32, x: &[u16]) {
        unsafe {
            let n = y.len().min(x.len());
            let av = _mm512_set1_ps(a);
            let mut i = 0;
            while i < n {
                let k = if n - i >= 16 {
                    0xffff
                } else {
                    (1u32 << (n - i)) as u16 - 1
                };
                let yp = y.as_mut_ptr().add(i);
                let xv =
                    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, x.as_ptr().add(i) as *const i16));
                _mm512_mask_storeu_ps(yp, k, _mm512_fmadd_ps(av, xv, _mm512_maskz_loadu_ps(k, yp)));
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
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        unsafe {
            let n = a.len().min(b.len());
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                acc0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            let v = _mm256_add_ps(acc0, acc1);
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let mut total = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
            while i < n {
                total += a[i] * b[i];
                i += 1;
            }
            total
        }
    }

    #[inline(always)]
    unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        unsafe {
            let n = y.len().min(x.len());
            let av = _mm256_set1_ps(a);
            let mut i = 0;
            while i + 8 <= n {
                let yp = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    yp,
                    _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(yp)),
                );
                i += 8;
            }
            while i < n {
                y[i] += a * x[i];
                i += 1;
            }
        }
    }

    #[inline(always)]
    unsafe fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
        unsafe {
            let n = a.len().min(b.len());
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i + 8 <= n {
                let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), y, acc);
                i += 8;
            }
            let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let mut total = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
            while i < n {
                total += a[i] * h2f(b[i]);
                i += 1;
            }
            total
        }
    }

    #[inline(always)]
    unsafe fn axpy_f16(y: &mut [f32], a: f32, x: &[u16]) {
        unsafe {
            let n = y.len().min(x.len());
            let av = _mm256_set1_ps(a);
            let mut i = 0;
            while i + 8 <= n {
                let yp = y.as_mut_ptr().add(i);
                let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
                _mm256_storeu_ps(yp, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(yp)));
                i += 8;
            }
            while i < n {
                y[i] += a * h2f(x[i]);
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
