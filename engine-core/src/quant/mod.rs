//! Quantized tensor formats: block layouts, dequantization, and quantization of activations.

mod types;

pub use types::GgmlType;
