//! Quantized tensor formats: block layouts, dequantization, and quantization of activations.

mod types;

pub use types::GgmlType;

/// Decodes `src` (whole blocks of `ty`) into `dst`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), String> {
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            Ok(())
        }
        GgmlType::Q8_0 => {
            for (d, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                let scale = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (o, &q) in d.iter_mut().zip(&b[2..]) {
                    *o = f32::from(q as i8) * scale;
                }
            }
            Ok(())
        }
        _ => Err(format!("{ty} is not supported")),
    }
}
