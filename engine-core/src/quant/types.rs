//! The ggml tensor types that GGUF files carry, with their block geometry.

use std::fmt;

/// A ggml tensor element type, numbered as in GGUF files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half float.
    F16,
    /// 4-bit, 32 per block, one f16 scale.
    Q4_0,
    /// 4-bit, 32 per block, f16 scale and minimum.
    Q4_1,
    /// 5-bit, 32 per block, one f16 scale.
    Q5_0,
    /// 5-bit, 32 per block, f16 scale and minimum.
    Q5_1,
    /// 8-bit, 32 per block, one f16 scale.
    Q8_0,
    /// 8-bit, 32 per block, f16 scale and f16 sum (activation format).
    Q8_1,
    /// 2-bit k-quant, 256 per super-block.
    Q2_K,
    /// 3-bit k-quant, 256 per super-block.
    Q3_K,
    /// 4-bit k-quant, 256 per super-block.
    Q4_K,
    /// 5-bit k-quant, 256 per super-block.
    Q5_K,
    /// 6-bit k-quant, 256 per super-block.
    Q6_K,
    /// 8-bit k-quant (activation format), 256 per super-block.
    Q8_K,
    /// bfloat16.
    BF16,
    /// Any type this engine does not compute with; the raw id is kept.
    Other(u32),
}

/// Block size and byte size of the types that ggml knows but this engine does not compute with,
/// so that a file containing them can still be read and its layout validated.
const OTHER_LAYOUTS: &[(u32, usize, usize)] = &[
    (16, 256, 66),  // IQ2_XXS
    (17, 256, 74),  // IQ2_XS
    (18, 256, 98),  // IQ3_XXS
    (19, 256, 50),  // IQ1_S
    (20, 32, 18),   // IQ4_NL
    (21, 256, 110), // IQ3_S
    (22, 256, 82),  // IQ2_S
    (23, 256, 136), // IQ4_XS
    (24, 1, 1),     // I8
    (25, 1, 2),     // I16
    (26, 1, 4),     // I32
    (27, 1, 8),     // I64
    (28, 1, 8),     // F64
    (29, 256, 56),  // IQ1_M
    (34, 256, 54),  // TQ1_0
    (35, 256, 66),  // TQ2_0
    (39, 32, 17),   // MXFP4
];

impl GgmlType {
    /// Every type this engine computes with.
    pub const SUPPORTED: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
    ];

    /// The type for a GGUF type id.
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// Whether this engine can compute with the type.
    pub fn is_supported(self) -> bool {
        !matches!(self, GgmlType::Other(_))
    }

    /// Elements per block and bytes per block; `None` for an id ggml does not know.
    pub const fn layout(self) -> Option<(usize, usize)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2_K => (256, 84),
            GgmlType::Q3_K => (256, 110),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
            GgmlType::Q8_K => (256, 292),
            GgmlType::Other(id) => {
                let mut i = 0;
                while i < OTHER_LAYOUTS.len() {
                    let (other, block, bytes) = OTHER_LAYOUTS[i];
                    if other == id {
                        return Some((block, bytes));
                    }
                    i += 1;
                }
                return None;
            }
        })
    }

    /// Elements per block (1 for float types). Panics for an unknown id; use [`GgmlType::layout`] to check.
    pub fn block_size(self) -> usize {
        self.layout().expect("unknown ggml type").0
    }

    /// Bytes per block. Panics for an unknown id; use [`GgmlType::layout`] to check.
    pub fn type_size(self) -> usize {
        self.layout().expect("unknown ggml type").1
    }

    /// Bytes taken by a row of `n` elements, if `n` is a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let (block, bytes) = self.layout()?;
        if !n.is_multiple_of(block) {
            return None;
        }
        (n / block).checked_mul(bytes)
    }

    /// The type's name as ggml prints it.
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::BF16 => "BF16".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
            GgmlType::Q5_0 => "Q5_0".into(),
            GgmlType::Q5_1 => "Q5_1".into(),
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Q8_1 => "Q8_1".into(),
            GgmlType::Q2_K => "Q2_K".into(),
            GgmlType::Q3_K => "Q3_K".into(),
            GgmlType::Q4_K => "Q4_K".into(),
            GgmlType::Q5_K => "Q5_K".into(),
            GgmlType::Q6_K => "Q6_K".into(),
            GgmlType::Q8_K => "Q8_K".into(),
            GgmlType::Other(id) => format!("type#{id}"),
        }
    }

    /// Parses a type name (case-insensitive), as printed by [`GgmlType::name`].
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::SUPPORTED
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in GgmlType::SUPPORTED {
            assert_eq!(GgmlType::from_id(t.id()), t);
            assert_eq!(GgmlType::from_name(&t.name()), Some(t));
        }
        assert_eq!(GgmlType::from_id(23).layout(), Some((256, 136)));
        assert_eq!(GgmlType::from_id(4).layout(), None);
    }

    #[test]
    fn row_bytes_checks_blocks() {
        assert_eq!(GgmlType::Q4_1.row_bytes(576), Some(18 * 20));
        assert_eq!(GgmlType::Q4_K.row_bytes(576), None);
        assert_eq!(GgmlType::F16.row_bytes(3), Some(6));
    }
}
