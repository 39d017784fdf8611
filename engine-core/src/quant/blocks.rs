//! Byte layouts of ggml's quantized blocks.
//!
//! Every struct here is `#[repr(C)]` with only `u8` array fields, so it has alignment 1 and no
//! padding: a tensor's bytes can be viewed as a slice of blocks with [`bytemuck::cast_slice`]
//! wherever they lie in a file. Multi-byte fields are little-endian, as in GGUF files; accessor
//! methods decode them.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::GgmlType;

/// Elements per Q4_0 block.
pub const QK4_0: usize = 32;
/// Elements per Q4_1 block.
pub const QK4_1: usize = 32;
/// Elements per Q5_0 block.
pub const QK5_0: usize = 32;
/// Elements per Q5_1 block.
pub const QK5_1: usize = 32;
/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;
/// Elements per Q8_1 block.
pub const QK8_1: usize = 32;
/// Elements per k-quant super-block (Q2_K to Q8_K).
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in a Q4_K or Q5_K super-block.
pub const K_SCALE_SIZE: usize = 12;

/// A block type with its place among the ggml types.
pub trait QuantBlock: Pod {
    /// The ggml type whose tensors are made of these blocks.
    const TYPE: GgmlType;
    /// Elements encoded by one block.
    const BLOCK_SIZE: usize;
}

#[inline]
fn f16_at(bytes: [u8; 2]) -> f16 {
    f16::from_le_bytes(bytes)
}

/// 32 weights as 4-bit values `q` with one scale: `x = d * (q - 8)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Element `j` in the low nibble of byte `j`, element `j + 16` in its high nibble.
    pub qs: [u8; QK4_0 / 2],
}

/// 32 weights as 4-bit values `q` with a scale and a minimum: `x = d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Element `j` in the low nibble of byte `j`, element `j + 16` in its high nibble.
    pub qs: [u8; QK4_1 / 2],
}

/// 32 weights as 5-bit values `q` with one scale: `x = d * (q - 16)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Fifth bits: bit `j` of this little-endian u32 belongs to element `j`.
    pub qh: [u8; 4],
    /// Low four bits, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK5_0 / 2],
}

/// 32 weights as 5-bit values `q` with a scale and a minimum: `x = d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Fifth bits: bit `j` of this little-endian u32 belongs to element `j`.
    pub qh: [u8; 4],
    /// Low four bits, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK5_1 / 2],
}

/// 32 weights as signed bytes with one scale: `x = d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Quants, i8.
    pub qs: [u8; QK8_0],
}

/// 32 activations as signed bytes with a scale and the scaled sum of the quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// `d * sum(qs)`, f16.
    pub s: [u8; 2],
    /// Quants, i8.
    pub qs: [u8; QK8_1],
}

/// 256 weights in 16 groups of 16 as 2-bit values, with 4-bit group scales and mins:
/// `x = d * sc * q - dmin * m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Group `g`'s scale in the low nibble of byte `g`, its min in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Scale of the group scales, f16.
    pub d: [u8; 2],
    /// Scale of the group mins, f16.
    pub dmin: [u8; 2],
}

/// 256 weights in 16 groups of 16 as 3-bit values, with 6-bit signed group scales:
/// `x = d * (sc - 32) * (q - 4)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High (third) bits of the quants; a set bit means no offset of -4.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits of the quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales; see [`q3_k_scales`].
    pub scales: [u8; 12],
    /// Scale of the group scales, f16.
    pub d: [u8; 2],
}

/// 256 weights in 8 groups of 32 as 4-bit values, with 6-bit group scales and mins:
/// `x = d * sc * q - dmin * m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Scale of the group scales, f16.
    pub d: [u8; 2],
    /// Scale of the group mins, f16.
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins; see [`get_scale_min_k4`].
    pub scales: [u8; K_SCALE_SIZE],
    /// 4-bit quants: for each 64 elements, 32 bytes with the first 32 in the low nibbles.
    pub qs: [u8; QK_K / 2],
}

/// 256 weights in 8 groups of 32 as 5-bit values, with 6-bit group scales and mins:
/// `x = d * sc * q - dmin * m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Scale of the group scales, f16.
    pub d: [u8; 2],
    /// Scale of the group mins, f16.
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins; see [`get_scale_min_k4`].
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits: bit `g` of byte `l` belongs to element `32 * g + l`.
    pub qh: [u8; QK_K / 8],
    /// Low four bits, packed as in [`BlockQ4K`].
    pub qs: [u8; QK_K / 2],
}

/// 256 weights in 16 groups of 16 as 6-bit values, with 8-bit signed group scales:
/// `x = d * sc * (q - 32)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low four bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High two bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Group scales, i8.
    pub scales: [u8; QK_K / 16],
    /// Scale of the group scales, f16.
    pub d: [u8; 2],
}

/// 256 activations as signed bytes with an f32 scale and sums of each 16 quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Scale, f32.
    pub d: [u8; 4],
    /// Quants, i8.
    pub qs: [u8; QK_K],
    /// Sum of each 16 quants, 16 little-endian i16.
    pub bsums: [u8; QK_K / 16 * 2],
}

macro_rules! block_traits {
    ($($block:ty => $ty:expr, $n:expr;)*) => {
        $(
            impl QuantBlock for $block {
                const TYPE: GgmlType = $ty;
                const BLOCK_SIZE: usize = $n;
            }
            const _: () = {
                let layout = match $ty.layout() {
                    Some(layout) => layout,
                    None => panic!("block type without a layout"),
                };
                assert!(layout.0 == $n);
                assert!(layout.1 == size_of::<$block>());
                assert!(align_of::<$block>() == 1);
            };
        )*
    };
}

block_traits! {
    BlockQ4_0 => GgmlType::Q4_0, QK4_0;
    BlockQ4_1 => GgmlType::Q4_1, QK4_1;
    BlockQ5_0 => GgmlType::Q5_0, QK5_0;
    BlockQ5_1 => GgmlType::Q5_1, QK5_1;
    BlockQ8_0 => GgmlType::Q8_0, QK8_0;
    BlockQ8_1 => GgmlType::Q8_1, QK8_1;
    BlockQ2K => GgmlType::Q2_K, QK_K;
    BlockQ3K => GgmlType::Q3_K, QK_K;
    BlockQ4K => GgmlType::Q4_K, QK_K;
    BlockQ5K => GgmlType::Q5_K, QK_K;
    BlockQ6K => GgmlType::Q6_K, QK_K;
    BlockQ8K => GgmlType::Q8_K, QK_K;
}

impl BlockQ4_0 {
    /// The scale.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }
}

impl BlockQ4_1 {
    /// The scale.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The minimum.
    pub fn m(&self) -> f16 {
        f16_at(self.m)
    }
}

impl BlockQ5_0 {
    /// The scale.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The fifth bits as one word: bit `j` belongs to element `j`.
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

impl BlockQ5_1 {
    /// The scale.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The minimum.
    pub fn m(&self) -> f16 {
        f16_at(self.m)
    }

    /// The fifth bits as one word: bit `j` belongs to element `j`.
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

impl BlockQ8_0 {
    /// The scale.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The quants as signed bytes.
    pub fn qs(&self) -> &[i8; QK8_0] {
        bytemuck::cast_ref(&self.qs)
    }
}

impl BlockQ8_1 {
    /// The scale.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// `d` times the sum of the quants.
    pub fn s(&self) -> f16 {
        f16_at(self.s)
    }

    /// The quants as signed bytes.
    pub fn qs(&self) -> &[i8; QK8_1] {
        bytemuck::cast_ref(&self.qs)
    }
}

impl BlockQ2K {
    /// The scale of the group scales.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The scale of the group mins.
    pub fn dmin(&self) -> f16 {
        f16_at(self.dmin)
    }
}

impl BlockQ3K {
    /// The scale of the group scales.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }
}

impl BlockQ4K {
    /// The scale of the group scales.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The scale of the group mins.
    pub fn dmin(&self) -> f16 {
        f16_at(self.dmin)
    }
}

impl BlockQ5K {
    /// The scale of the group scales.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The scale of the group mins.
    pub fn dmin(&self) -> f16 {
        f16_at(self.dmin)
    }
}

impl BlockQ6K {
    /// The scale of the group scales.
    pub fn d(&self) -> f16 {
        f16_at(self.d)
    }

    /// The group scales as signed bytes.
    pub fn scales(&self) -> &[i8; QK_K / 16] {
        bytemuck::cast_ref(&self.scales)
    }
}

impl BlockQ8K {
    /// The scale.
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    /// The quants as signed bytes.
    pub fn qs(&self) -> &[i8; QK_K] {
        bytemuck::cast_ref(&self.qs)
    }

    /// The sum of quants `16 * i .. 16 * i + 16`, for `i < 16`.
    pub fn bsum(&self, i: usize) -> Option<i16> {
        let at = 2 * i;
        let bytes = self.bsums.get(at..at + 2)?;
        Some(i16::from_le_bytes([bytes[0], bytes[1]]))
    }

    /// All sixteen sums of 16 quants.
    pub fn bsums(&self) -> [i16; QK_K / 16] {
        let mut out = [0i16; QK_K / 16];
        for (o, b) in out.iter_mut().zip(self.bsums.chunks_exact(2)) {
            *o = i16::from_le_bytes([b[0], b[1]]);
        }
        out
    }
}

/// The 6-bit scale and min of group `j` (0 to 7) of a Q4_K or Q5_K super-block, unpacked from its
/// 12 packed bytes. Groups 0-3 keep theirs in the low six bits of bytes `j` (scale) and `j + 4`
/// (min); groups 4-7 keep the low four bits in byte `j + 4` and the high two bits in the top bits
/// of bytes `j - 4` (scale) and `j` (min). `j` is taken modulo 8.
#[inline]
pub fn get_scale_min_k4(j: usize, scales: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    let j = j % 8;
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// The sixteen group scales of a Q3_K super-block, unpacked from their 12 packed bytes and with
/// the offset of 32 removed (so each lies in -32..=31). Group `g` keeps its low four bits in byte
/// `g % 8` (low nibble for `g < 8`, high nibble otherwise) and its high two bits in byte
/// `8 + g % 4` at bit `2 * (g / 4)`.
#[inline]
pub fn q3_k_scales(scales: &[u8; 12]) -> [i8; QK_K / 16] {
    let mut out = [0i8; QK_K / 16];
    for (g, o) in out.iter_mut().enumerate() {
        let low = if g < 8 {
            scales[g] & 0x0F
        } else {
            scales[g - 8] >> 4
        };
        let high = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_unpacking() {
        // Groups 0-3 and 4-7 with distinct 6-bit values, packed by hand.
        let sc: [u8; 8] = [1, 17, 33, 63, 5, 21, 42, 60];
        let mn: [u8; 8] = [2, 18, 34, 62, 7, 23, 45, 59];
        let mut packed = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                packed[j] = sc[j];
                packed[j + 4] = mn[j];
            } else {
                packed[j + 4] = (sc[j] & 0xF) | ((mn[j] & 0xF) << 4);
                packed[j - 4] |= (sc[j] >> 4) << 6;
                packed[j] |= (mn[j] >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &packed), (sc[j], mn[j]), "group {j}");
        }
    }

    #[test]
    fn q3_scales_unpacking() {
        let want: [i8; 16] = [
            -32, -1, 0, 31, 5, -7, 12, -20, 30, -31, 1, 2, -3, 17, -18, 9,
        ];
        let mut packed = [0u8; 12];
        for (g, &v) in want.iter().enumerate() {
            let l = (v + 32) as u8;
            if g < 8 {
                packed[g] |= l & 0xF;
            } else {
                packed[g - 8] |= (l & 0xF) << 4;
            }
            packed[8 + g % 4] |= (l >> 4) << (2 * (g / 4));
        }
        assert_eq!(q3_k_scales(&packed), want);
    }

    #[test]
    fn q8k_sums() {
        let mut b = BlockQ8K::zeroed();
        b.bsums[2..4].copy_from_slice(&(-300i16).to_le_bytes());
        assert_eq!(b.bsum(1), Some(-300));
        assert_eq!(b.bsum(16), None);
        assert_eq!(b.bsums()[1], -300);
    }
}
