//! Matrix-product kernels, one file per instruction set, chosen at run time.
//!
//! A tile kernel computes `out[t * out_stride + r] = dot(weight row r, activation row t0 + t)` for
//! a tile of weight rows and activation rows; each [`Kernel`] says the tile shape it works on.

pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(any(
    target_arch = "aarch64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
mod lanes128;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod simd128;

use super::acts::QuantActs;
use crate::quant::GgmlType;

/// Weight rows per tile.
pub const TILE_ROWS: usize = 4;
/// Activation rows per tile.
pub const TILE_TOKENS: usize = 4;

/// One tile of a matrix product: `rows` weight rows against activation rows
/// `t0..t0 + tokens`, written to `out[t * out_stride + r]`.
pub struct Tile<'a> {
    /// The weight rows, `row_bytes` each.
    pub w: &'a [u8],
    /// Bytes per weight row.
    pub row_bytes: usize,
    /// Weight rows in the tile (at most the kernel's [`Kernel::rows`]).
    pub rows: usize,
    /// The quantized activations.
    pub acts: &'a QuantActs,
    /// First activation row.
    pub t0: usize,
    /// Activation rows in the tile (at most the kernel's [`Kernel::tokens`]).
    pub tokens: usize,
    /// Where output (token 0, row 0) goes.
    pub out: *mut f32,
    /// Distance between the outputs of consecutive tokens.
    pub out_stride: usize,
}

/// A tile kernel. See the module documentation.
///
/// # Safety
/// `tile.w` must hold `rows` rows of `row_bytes`, `acts` rows `t0..t0 + tokens`, and `out` must
/// be valid for writes at `t * out_stride + r` for `t < tokens`, `r < rows`.
pub type TileFn = unsafe fn(tile: &Tile<'_>);

/// A tile kernel with the tile shape it works best on.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// The kernel.
    pub run: TileFn,
    /// Weight rows per tile (the kernel takes fewer at the end of a matrix).
    pub rows: usize,
    /// Activation rows per tile (the kernel takes fewer at the end).
    pub tokens: usize,
}

impl Kernel {
    /// A kernel on [`TILE_ROWS`] x [`TILE_TOKENS`] tiles.
    pub fn small(run: TileFn) -> Kernel {
        Kernel {
            run,
            rows: TILE_ROWS,
            tokens: TILE_TOKENS,
        }
    }
}

/// An instruction set the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) with VNNI.
    Avx512Vnni,
    /// AArch64 NEON.
    Neon,
    /// WebAssembly 128-bit SIMD (with relaxed SIMD's dot product when built with it).
    Simd128,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if avx512::available() {
                return Isa::Avx512Vnni;
            }
            if avx2::available() {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if neon::available() {
                return Isa::Neon;
            }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        {
            return Isa::Simd128;
        }
        #[allow(unreachable_code)]
        Isa::Scalar
    }

    /// Every instruction set usable on this CPU, best first.
    // The pushes depend on the target: no single `vec![...]` fits them all.
    #[allow(clippy::vec_init_then_push)]
    pub fn available() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if avx512::available() {
                out.push(Isa::Avx512Vnni);
            }
            if avx2::available() {
                out.push(Isa::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if neon::available() {
            out.push(Isa::Neon);
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        out.push(Isa::Simd128);
        out.push(Isa::Scalar);
        out
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Neon => "neon",
            Isa::Simd128 if cfg!(target_feature = "relaxed-simd") => "simd128+relaxed",
            Isa::Simd128 => "simd128",
        }
    }

    /// The tile kernel for weights of type `ty`, if this instruction set has one.
    pub fn kernel(self, ty: GgmlType) -> Option<Kernel> {
        match self {
            Isa::Scalar => scalar::tile(ty).map(Kernel::small),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::kernel(ty),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => avx512::kernel(ty),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::tile(ty).map(Kernel::small),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => simd128::tile(ty).map(Kernel::small),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The tile kernel for `ty`: this instruction set's, else the scalar one.
    pub fn kernel_or_scalar(self, ty: GgmlType) -> Option<Kernel> {
        self.kernel(ty)
            .or_else(|| scalar::tile(ty).map(Kernel::small))
    }
}
