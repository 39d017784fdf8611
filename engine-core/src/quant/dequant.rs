//! Dequantization to f32, with the same arithmetic as ggml's reference `dequantize_row_*`
//! functions (and the `gguf` Python package), so that results agree bit for bit.

use bytemuck::Pod;

use super::QuantError;
use super::blocks::*;
use super::types::GgmlType;

impl BlockQ4_0 {
    /// Decodes the block's 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK4_0]) {
        let d = self.d().to_f32();
        let (lo, hi) = out.split_at_mut(QK4_0 / 2);
        for ((&q, a), b) in self.qs.iter().zip(lo).zip(hi) {
            *a = ((q & 0x0F) as i32 - 8) as f32 * d;
            *b = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockQ4_1 {
    /// Decodes the block's 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK4_1]) {
        let d = self.d().to_f32();
        let m = self.m().to_f32();
        let (lo, hi) = out.split_at_mut(QK4_1 / 2);
        for ((&q, a), b) in self.qs.iter().zip(lo).zip(hi) {
            *a = (q & 0x0F) as f32 * d + m;
            *b = (q >> 4) as f32 * d + m;
        }
    }
}

impl BlockQ5_0 {
    /// Decodes the block's 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK5_0]) {
        let d = self.d().to_f32();
        let qh = self.qh();
        for (j, &q) in self.qs.iter().enumerate() {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            out[j] = (((q & 0x0F) | (h0 << 4)) as i32 - 16) as f32 * d;
            out[j + 16] = (((q >> 4) | (h1 << 4)) as i32 - 16) as f32 * d;
        }
    }
}

impl BlockQ5_1 {
    /// Decodes the block's 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK5_1]) {
        let d = self.d().to_f32();
        let m = self.m().to_f32();
        let qh = self.qh();
        for (j, &q) in self.qs.iter().enumerate() {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            out[j] = ((q & 0x0F) | (h0 << 4)) as f32 * d + m;
            out[j + 16] = ((q >> 4) | (h1 << 4)) as f32 * d + m;
        }
    }
}

impl BlockQ8_0 {
    /// Decodes the block's 32 values.
    pub fn dequantize(&self, out: &mut [f32; QK8_0]) {
        let d = self.d().to_f32();
        for (o, &q) in out.iter_mut().zip(self.qs()) {
            *o = q as f32 * d;
        }
    }
}

impl BlockQ8_1 {
    /// Decodes the block's 32 values (the stored sum is not needed).
    pub fn dequantize(&self, out: &mut [f32; QK8_1]) {
        let d = self.d().to_f32();
        for (o, &q) in out.iter_mut().zip(self.qs()) {
            *o = q as f32 * d;
        }
    }
}

impl BlockQ2K {
    /// Decodes the super-block's 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d().to_f32();
        let dmin = self.dmin().to_f32();
        // Element 128 * n + 32 * j + 16 * h + l lies in bits 2j of byte 32 * n + 16 * h + l and
        // belongs to group 8 * n + 2 * j + h.
        for (n, (out, qs)) in out
            .chunks_exact_mut(128)
            .zip(self.qs.chunks_exact(32))
            .enumerate()
        {
            for (k, out) in out.chunks_exact_mut(16).enumerate() {
                let (j, h) = (k / 2, k % 2);
                let sc = self.scales[8 * n + k];
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for (o, &q) in out.iter_mut().zip(&qs[16 * h..16 * h + 16]) {
                    *o = dl * ((q >> (2 * j)) & 3) as f32 - ml;
                }
            }
        }
    }
}

impl BlockQ3K {
    /// Decodes the super-block's 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d().to_f32();
        let scales = q3_k_scales(&self.scales);
        // Same element order as Q2_K; the high bit of element 128 * n + 32 * j + 16 * h + l is
        // bit 4 * n + j of hmask[16 * h + l].
        for (n, (out, qs)) in out
            .chunks_exact_mut(128)
            .zip(self.qs.chunks_exact(32))
            .enumerate()
        {
            for (k, out) in out.chunks_exact_mut(16).enumerate() {
                let (j, h) = (k / 2, k % 2);
                let dl = d * scales[8 * n + k] as f32;
                let bit = 4 * n + j;
                let lanes = qs[16 * h..16 * h + 16]
                    .iter()
                    .zip(&self.hmask[16 * h..16 * h + 16]);
                for (o, (&q, &hm)) in out.iter_mut().zip(lanes) {
                    let low = ((q >> (2 * j)) & 3) as i32;
                    let offset = if (hm >> bit) & 1 != 0 { 0 } else { 4 };
                    *o = dl * (low - offset) as f32;
                }
            }
        }
    }
}

impl BlockQ4K {
    /// Decodes the super-block's 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d().to_f32();
        let dmin = self.dmin().to_f32();
        for (c, (out, qs)) in out
            .chunks_exact_mut(64)
            .zip(self.qs.chunks_exact(32))
            .enumerate()
        {
            let (lo, hi) = out.split_at_mut(32);
            let (sc, m) = get_scale_min_k4(2 * c, &self.scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let (sc, m) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, dmin * m as f32);
            for ((&q, a), b) in qs.iter().zip(lo).zip(hi) {
                *a = d1 * (q & 0x0F) as f32 - m1;
                *b = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

impl BlockQ5K {
    /// Decodes the super-block's 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d().to_f32();
        let dmin = self.dmin().to_f32();
        for (c, (out, qs)) in out
            .chunks_exact_mut(64)
            .zip(self.qs.chunks_exact(32))
            .enumerate()
        {
            let (lo, hi) = out.split_at_mut(32);
            let (sc, m) = get_scale_min_k4(2 * c, &self.scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let (sc, m) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, dmin * m as f32);
            let lanes = qs.iter().zip(&self.qh).zip(lo).zip(hi);
            for (((&q, &qh), a), b) in lanes {
                let h1 = ((qh >> (2 * c)) & 1) << 4;
                let h2 = ((qh >> (2 * c + 1)) & 1) << 4;
                *a = d1 * ((q & 0x0F) | h1) as f32 - m1;
                *b = d2 * ((q >> 4) | h2) as f32 - m2;
            }
        }
    }
}

impl BlockQ6K {
    /// Decodes the super-block's 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d().to_f32();
        let scales = self.scales();
        let halves = out
            .chunks_exact_mut(128)
            .zip(self.ql.chunks_exact(64))
            .zip(self.qh.chunks_exact(32));
        for (n, ((out, ql), qh)) in halves.enumerate() {
            let sc = &scales[8 * n..8 * n + 8];
            for l in 0..32 {
                let is = l / 16;
                let h = qh[l];
                let q1 = ((ql[l] & 0x0F) | ((h & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * sc[is] as f32 * q1 as f32;
                out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl BlockQ8K {
    /// Decodes the super-block's 256 values.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d();
        for (o, &q) in out.iter_mut().zip(self.qs()) {
            *o = d * q as f32;
        }
    }
}

/// Widens an f16 to f32 exactly, NaN payloads included: a signalling NaN stays signalling, as in
/// NumPy's conversion (the `half` crate sets the quiet bit). Without branches, so that loops over
/// it vectorize (the CPU backend widens its f16 KV cache and block scales with it): the
/// magnitude's bits move to f32's places and a multiplication by 2^112 (exact, subnormals
/// included) rebiases the exponent; infinities and NaNs take f32's top exponent instead.
#[inline(always)]
pub(crate) fn f16_to_f32_exact(bits: u16) -> f32 {
    let h = u32::from(bits);
    let moved = (h & 0x7fff) << 13;
    let scaled = (f32::from_bits(moved) * f32::from_bits(0x7780_0000)).to_bits();
    let magnitude = if h & 0x7c00 == 0x7c00 {
        moved | 0x7f80_0000
    } else {
        scaled
    };
    f32::from_bits(magnitude | ((h & 0x8000) << 16))
}

/// Number of elements that `n_bytes` bytes of `ty` hold, checking they are whole blocks.
pub(crate) fn elements_in(ty: GgmlType, n_bytes: usize) -> Result<usize, QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::Unsupported(ty));
    }
    let (block, type_size) = ty.layout().ok_or(QuantError::Unsupported(ty))?;
    if !n_bytes.is_multiple_of(type_size) {
        return Err(QuantError::PartialBlock {
            ty,
            len: n_bytes,
            type_size,
        });
    }
    (n_bytes / type_size)
        .checked_mul(block)
        .ok_or(QuantError::TooLarge { ty })
}

fn run_blocks<B: Pod, const N: usize>(
    ty: GgmlType,
    src: &[u8],
    dst: &mut [f32],
    f: impl Fn(&B, &mut [f32; N]),
) -> Result<(), QuantError> {
    let blocks: &[B] = bytemuck::try_cast_slice(src).map_err(|_| QuantError::PartialBlock {
        ty,
        len: src.len(),
        type_size: size_of::<B>(),
    })?;
    let (chunks, rest) = dst.as_chunks_mut::<N>();
    if chunks.len() != blocks.len() || !rest.is_empty() {
        return Err(QuantError::LengthMismatch {
            ty,
            expected: blocks.len().saturating_mul(N),
            got: dst.len(),
        });
    }
    for (b, out) in blocks.iter().zip(chunks) {
        f(b, out);
    }
    Ok(())
}

/// Decodes `src`, whole blocks of `ty`, into `dst`, which must have exactly one slot per encoded
/// element. Supports F32, F16, BF16 and every quantized type in [`GgmlType::SUPPORTED`].
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let n = elements_in(ty, src.len())?;
    if n != dst.len() {
        return Err(QuantError::LengthMismatch {
            ty,
            expected: n,
            got: dst.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, b) in dst.iter_mut().zip(src.as_chunks::<4>().0) {
                *o = f32::from_le_bytes(*b);
            }
            Ok(())
        }
        GgmlType::F16 => {
            for (o, b) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *o = f16_to_f32_exact(u16::from_le_bytes(*b));
            }
            Ok(())
        }
        GgmlType::BF16 => {
            for (o, b) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                // A plain shift, as ggml does: NaN payloads pass through unchanged.
                *o = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16);
            }
            Ok(())
        }
        GgmlType::Q4_0 => run_blocks(ty, src, dst, BlockQ4_0::dequantize),
        GgmlType::Q4_1 => run_blocks(ty, src, dst, BlockQ4_1::dequantize),
        GgmlType::Q5_0 => run_blocks(ty, src, dst, BlockQ5_0::dequantize),
        GgmlType::Q5_1 => run_blocks(ty, src, dst, BlockQ5_1::dequantize),
        GgmlType::Q8_0 => run_blocks(ty, src, dst, BlockQ8_0::dequantize),
        GgmlType::Q8_1 => run_blocks(ty, src, dst, BlockQ8_1::dequantize),
        GgmlType::Q2_K => run_blocks(ty, src, dst, BlockQ2K::dequantize),
        GgmlType::Q3_K => run_blocks(ty, src, dst, BlockQ3K::dequantize),
        GgmlType::Q4_K => run_blocks(ty, src, dst, BlockQ4K::dequantize),
        GgmlType::Q5_K => run_blocks(ty, src, dst, BlockQ5K::dequantize),
        GgmlType::Q6_K => run_blocks(ty, src, dst, BlockQ6K::dequantize),
        GgmlType::Q8_K => run_blocks(ty, src, dst, BlockQ8K::dequantize),
        GgmlType::Other(_) => Err(QuantError::Unsupported(ty)),
    }
}

/// Decodes `src`, whole blocks of `ty`, into a new vector.
pub fn dequantize_to_vec(ty: GgmlType, src: &[u8]) -> Result<Vec<f32>, QuantError> {
    let n = elements_in(ty, src.len())?;
    let mut out = vec![0.0; n];
    dequantize(ty, src, &mut out)?;
    Ok(out)
}
