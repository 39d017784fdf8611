//! Quantized tensor formats: block layouts, dequantization, and quantization of activations.

pub mod blocks;
mod dequant;
mod quantize;
mod types;

pub use blocks::{
    BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K,
    BlockQ8_0, BlockQ8_1, BlockQ8K, K_SCALE_SIZE, QK_K, QK4_0, QK4_1, QK5_0, QK5_1, QK8_0, QK8_1,
    QuantBlock, get_scale_min_k4, q3_k_scales,
};
pub(crate) use dequant::f16_to_f32_exact;
pub use dequant::{dequantize, dequantize_to_vec};
pub use quantize::{nearest_int, quantize, quantize_into};
pub use types::GgmlType;

/// Why a buffer could not be quantized or dequantized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The type has no (de)quantizer in this engine.
    #[error("tensor type {0} is not supported here")]
    Unsupported(GgmlType),
    /// Encoded bytes that are not a whole number of blocks.
    #[error("{len} bytes of {ty} are not a whole number of {type_size}-byte blocks")]
    PartialBlock {
        /// The type.
        ty: GgmlType,
        /// Length of the encoded buffer.
        len: usize,
        /// Bytes per block.
        type_size: usize,
    },
    /// A number of elements that is not a whole number of blocks.
    #[error("{len} elements cannot be stored as {ty}, whose blocks hold {block_size} elements")]
    NotBlockMultiple {
        /// The type.
        ty: GgmlType,
        /// Number of elements given.
        len: usize,
        /// Elements per block.
        block_size: usize,
    },
    /// The output buffer does not have the size the input calls for.
    #[error("{ty}: the output should hold {expected} items but has room for {got}")]
    LengthMismatch {
        /// The type.
        ty: GgmlType,
        /// The size the input calls for.
        expected: usize,
        /// The output's size.
        got: usize,
    },
    /// A size that does not fit in memory addresses.
    #[error("{ty}: the buffer size overflows")]
    TooLarge {
        /// The type.
        ty: GgmlType,
    },
}
