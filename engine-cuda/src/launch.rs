//! Launch geometry of each kernel: which entry point, how many blocks of how many threads. Pure
//! arithmetic, so it is tested without a GPU; the kernels rely on it (a grid that misses a row,
//! or a block size that is not a multiple of a warp, would be silent corruption).

/// Warps per block of the matrix-vector kernels (`MATVEC_WARPS` in `kernels/matvec.cu`).
pub const MATVEC_WARPS: u32 = 4;

/// Most input rows one matrix-vector launch takes (its entry points exist for 1 to this many).
pub const MAX_MATVEC_ROWS: usize = 8;

/// Threads per block of the element-wise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;

/// The most blocks a grid's x dimension may have.
const MAX_GRID_X: u64 = (1 << 31) - 1;

/// The entry points `{prefix}{format}_r1` to `_r8`.
macro_rules! entry_rows {
    ($prefix:literal, $f:literal) => {
        &[
            concat!($prefix, $f, "_r1"),
            concat!($prefix, $f, "_r2"),
            concat!($prefix, $f, "_r3"),
            concat!($prefix, $f, "_r4"),
            concat!($prefix, $f, "_r5"),
            concat!($prefix, $f, "_r6"),
            concat!($prefix, $f, "_r7"),
            concat!($prefix, $f, "_r8"),
        ]
    };
}

/// A weight format the kernels read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// 32 weights in 18 bytes: 4 bits and an f16 scale.
    Q4_0,
    /// 32 weights in 20 bytes: 4 bits, an f16 scale and an f16 minimum.
    Q4_1,
    /// 32 weights in 34 bytes: 8 bits and an f16 scale.
    Q8_0,
    /// 256 weights in 144 bytes: 4 bits with 6-bit scales and minimums per 32.
    Q4K,
    /// 256 weights in 176 bytes: 5 bits with 6-bit scales and minimums per 32.
    Q5K,
    /// 256 weights in 210 bytes: 6 bits with 8-bit scales per 16.
    Q6K,
    /// Half floats.
    F16,
    /// bfloat16.
    BF16,
}

impl WeightFormat {
    /// Every format.
    pub const ALL: [WeightFormat; 8] = [
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q8_0,
        WeightFormat::Q4K,
        WeightFormat::Q5K,
        WeightFormat::Q6K,
        WeightFormat::F16,
        WeightFormat::BF16,
    ];

    /// The name in kernel entry points.
    pub fn kernel_name(self) -> &'static str {
        match self {
            WeightFormat::Q4_0 => "q4_0",
            WeightFormat::Q4_1 => "q4_1",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4K => "q4_k",
            WeightFormat::Q5K => "q5_k",
            WeightFormat::Q6K => "q6_k",
            WeightFormat::F16 => "f16",
            WeightFormat::BF16 => "bf16",
        }
    }

    /// Bytes of one row of `k` weights.
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            WeightFormat::Q4_0 => k / 32 * 18,
            WeightFormat::Q4_1 => k / 32 * 20,
            WeightFormat::Q8_0 => k / 32 * 34,
            WeightFormat::Q4K => k / 256 * 144,
            WeightFormat::Q5K => k / 256 * 176,
            WeightFormat::Q6K => k / 256 * 210,
            WeightFormat::F16 | WeightFormat::BF16 => k * 2,
        }
    }

    /// Weights per block of the format (a row's length is a multiple of it).
    pub fn block_len(self) -> usize {
        match self {
            WeightFormat::F16 | WeightFormat::BF16 => 2,
            WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K => 256,
            _ => 32,
        }
    }

    /// Whether the format is 16-bit floats (read one weight per thread, not in 32-weight units).
    fn is_float(self) -> bool {
        matches!(self, WeightFormat::F16 | WeightFormat::BF16)
    }

    /// The matrix-vector entry points for 1 to [`MAX_MATVEC_ROWS`] input rows.
    fn matvec_kernels(self) -> &'static [&'static str; MAX_MATVEC_ROWS] {
        match self {
            WeightFormat::Q4_0 => entry_rows!("matvec_", "q4_0"),
            WeightFormat::Q4_1 => entry_rows!("matvec_", "q4_1"),
            WeightFormat::Q8_0 => entry_rows!("matvec_", "q8_0"),
            WeightFormat::Q4K => entry_rows!("matvec_", "q4_k"),
            WeightFormat::Q5K => entry_rows!("matvec_", "q5_k"),
            WeightFormat::Q6K => entry_rows!("matvec_", "q6_k"),
            WeightFormat::F16 => entry_rows!("matvec_", "f16"),
            WeightFormat::BF16 => entry_rows!("matvec_", "bf16"),
        }
    }

    /// The fused gate/up/SwiGLU entry points (quantized formats only).
    fn matvec_swiglu_kernels(self) -> Option<&'static [&'static str; MAX_MATVEC_ROWS]> {
        Some(match self {
            WeightFormat::Q4_0 => entry_rows!("matvec_swiglu_", "q4_0"),
            WeightFormat::Q4_1 => entry_rows!("matvec_swiglu_", "q4_1"),
            WeightFormat::Q8_0 => entry_rows!("matvec_swiglu_", "q8_0"),
            WeightFormat::Q4K => entry_rows!("matvec_swiglu_", "q4_k"),
            WeightFormat::Q5K => entry_rows!("matvec_swiglu_", "q5_k"),
            WeightFormat::Q6K => entry_rows!("matvec_swiglu_", "q6_k"),
            WeightFormat::F16 | WeightFormat::BF16 => return None,
        })
    }

    /// The embedding entry point.
    fn embed_kernel(self) -> &'static str {
        match self {
            WeightFormat::Q4_0 => "embed_q4_0",
            WeightFormat::Q4_1 => "embed_q4_1",
            WeightFormat::Q8_0 => "embed_q8_0",
            WeightFormat::Q4K => "embed_q4_k",
            WeightFormat::Q5K => "embed_q5_k",
            WeightFormat::Q6K => "embed_q6_k",
            WeightFormat::F16 => "embed_f16",
            WeightFormat::BF16 => "embed_bf16",
        }
    }
}

/// How a kernel is launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The entry point.
    pub kernel: &'static str,
    /// Blocks (x).
    pub grid: u32,
    /// Threads per block (x).
    pub block: u32,
}

/// Why a shape cannot be launched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// A row's length is not a whole number of the format's blocks.
    #[error("a row of {k} weights is not a whole number of {format:?} blocks of {block}")]
    RaggedRow {
        /// The weight format.
        format: WeightFormat,
        /// Weights per row.
        k: usize,
        /// Weights per block.
        block: usize,
    },
    /// More blocks than a grid holds.
    #[error("{0} blocks exceed a grid's limit")]
    TooLarge(u64),
    /// An empty shape.
    #[error("nothing to launch")]
    Empty,
}

fn grid(blocks: u64) -> Result<u32, LaunchError> {
    match blocks {
        0 => Err(LaunchError::Empty),
        b if b > MAX_GRID_X => Err(LaunchError::TooLarge(b)),
        b => Ok(b as u32),
    }
}

/// `out[r][n] = w[n] . x[r]` for `rows` (1 to [`MAX_MATVEC_ROWS`]) rows of `k` inputs and `n`
/// outputs: one warp per output.
pub fn matvec(
    format: WeightFormat,
    rows: usize,
    n: usize,
    k: usize,
) -> Result<Launch, LaunchError> {
    if rows == 0 || k == 0 {
        return Err(LaunchError::Empty);
    }
    let block = format.block_len();
    if !k.is_multiple_of(block) {
        return Err(LaunchError::RaggedRow { format, k, block });
    }
    Ok(Launch {
        kernel: format.matvec_kernels()[rows.min(MAX_MATVEC_ROWS) - 1],
        grid: grid((n as u64).div_ceil(u64::from(MATVEC_WARPS)))?,
        block: 32 * MATVEC_WARPS,
    })
}

/// The fused feed-forward products with SwiGLU over `rows` (1 to [`MAX_MATVEC_ROWS`]) rows:
/// `gate[r][n] = silu(w_gate[n] . x[r]) * (w_up[n] . x[r])`, launched as [`matvec`]. `None` for
/// formats without a fused kernel (16-bit floats).
pub fn matvec_swiglu(
    format: WeightFormat,
    rows: usize,
    n: usize,
    k: usize,
) -> Option<Result<Launch, LaunchError>> {
    let names = format.matvec_swiglu_kernels()?;
    Some(matvec(format, rows, n, k).map(|l| Launch {
        kernel: names[rows.min(MAX_MATVEC_ROWS) - 1],
        ..l
    }))
}

/// Splits `rows` into launches of at most [`MAX_MATVEC_ROWS`]: `(first row, rows)`.
pub fn matvec_row_chunks(rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows)
        .step_by(MAX_MATVEC_ROWS)
        .map(move |start| (start, MAX_MATVEC_ROWS.min(rows - start)))
}

/// Row-wise RMSNorm (`rms_norm`, or `add_rms_norm` with the residual add before it): one block
/// per row, a warp multiple of threads up to 1,024, about one thread per 4 elements.
pub fn rms_norm(kernel: &'static str, rows: usize, dim: usize) -> Result<Launch, LaunchError> {
    if dim == 0 {
        return Err(LaunchError::Empty);
    }
    let threads = (dim.div_ceil(4)).next_multiple_of(32).clamp(32, 1024) as u32;
    Ok(Launch {
        kernel,
        grid: grid(rows as u64)?,
        block: threads,
    })
}

/// An element-wise kernel (`add`, `add_bias`, `swiglu`) over `len` elements.
pub fn elementwise(kernel: &'static str, len: usize) -> Result<Launch, LaunchError> {
    Ok(Launch {
        kernel,
        grid: grid((len as u64).div_ceil(u64::from(ELEMENTWISE_THREADS)))?,
        block: ELEMENTWISE_THREADS,
    })
}

/// Embedding lookup of `rows` tokens from a table of `dim`-wide rows: one block per row.
pub fn embed(format: WeightFormat, rows: usize, dim: usize) -> Result<Launch, LaunchError> {
    let block = format.block_len();
    if dim == 0 || !dim.is_multiple_of(block) {
        return Err(LaunchError::RaggedRow {
            format,
            k: dim,
            block,
        });
    }
    // One thread per weight of 16-bit floats, else per 32-weight unit.
    let work = if format.is_float() { dim } else { dim / 32 };
    Ok(Launch {
        kernel: format.embed_kernel(),
        grid: grid(rows as u64)?,
        block: work.next_multiple_of(32).clamp(32, 256) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::MODULES;

    fn entry_exists(name: &str) -> bool {
        let needle = format!(".entry {name}(");
        MODULES.iter().any(|m| m.ptx.contains(&needle))
    }

    #[test]
    fn matvec_grids_cover_every_output_with_one_warp_each() {
        for n in [1, 3, 4, 5, 576, 1536, 49_152, 128_256] {
            let l = matvec(WeightFormat::Q4_1, 1, n, 576).unwrap();
            let warps = u64::from(l.grid) * u64::from(l.block / 32);
            assert!(warps >= n as u64 && warps < n as u64 + u64::from(MATVEC_WARPS));
            assert_eq!(l.block % 32, 0);
        }
        assert_eq!(
            matvec(WeightFormat::Q8_0, 3, 10, 64).unwrap().kernel,
            "matvec_q8_0_r3"
        );
        assert!(matches!(
            matvec(WeightFormat::Q4_0, 1, 8, 48),
            Err(LaunchError::RaggedRow { .. })
        ));
        // K-quant rows are whole super-blocks of 256.
        assert!(matches!(
            matvec(WeightFormat::Q4K, 1, 8, 288),
            Err(LaunchError::RaggedRow { block: 256, .. })
        ));
        assert_eq!(
            matvec(WeightFormat::Q6K, 8, 8, 512).unwrap().kernel,
            "matvec_q6_k_r8"
        );
        assert_eq!(matvec(WeightFormat::F16, 1, 0, 64), Err(LaunchError::Empty));
        assert_eq!(matvec(WeightFormat::F16, 0, 8, 64), Err(LaunchError::Empty));
    }

    #[test]
    fn rows_go_in_chunks_the_kernels_have_entry_points_for() {
        for rows in [1, 7, 8, 9, 16, 17, 100] {
            let chunks: Vec<_> = matvec_row_chunks(rows).collect();
            assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), rows);
            assert!(
                chunks
                    .iter()
                    .all(|&(_, r)| (1..=MAX_MATVEC_ROWS).contains(&r))
            );
            assert!(chunks.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        }
    }

    #[test]
    fn block_sizes_are_whole_warps_within_the_limits() {
        for dim in [1, 31, 32, 576, 2048, 4096, 8192, 100_000] {
            let l = rms_norm("rms_norm", 3, dim).unwrap();
            assert!(
                l.block.is_multiple_of(32) && (32..=1024).contains(&l.block),
                "{dim}"
            );
        }
        let l = elementwise("add", 1_000_001).unwrap();
        assert!(u64::from(l.grid) * u64::from(l.block) >= 1_000_001);
        let l = embed(WeightFormat::Q4_1, 5, 576).unwrap();
        assert_eq!((l.grid, l.block % 32), (5, 0));
        assert!(embed(WeightFormat::Q8_0, 5, 100).is_err());
        assert!(embed(WeightFormat::Q5K, 5, 576).is_err());
        // One thread per 32-weight unit, or per element of 16-bit floats.
        assert_eq!(embed(WeightFormat::Q4K, 1, 4096).unwrap().block, 128);
        assert_eq!(embed(WeightFormat::BF16, 1, 4096).unwrap().block, 256);
        assert_eq!(rms_norm("add_rms_norm", 1, 0), Err(LaunchError::Empty));
        assert!(matches!(
            elementwise("add", usize::MAX),
            Err(LaunchError::TooLarge(_))
        ));
    }

    #[test]
    fn every_entry_point_launched_exists_in_the_kernels() {
        for f in WeightFormat::ALL {
            for rows in 1..=MAX_MATVEC_ROWS {
                let name = matvec(f, rows, 8, 512).unwrap().kernel;
                assert!(entry_exists(name), "{name}");
            }
            assert!(entry_exists(embed(f, 1, 512).unwrap().kernel));
            match matvec_swiglu(f, 3, 8, 512) {
                Some(l) => assert!(entry_exists(l.unwrap().kernel)),
                None => assert!(matches!(f, WeightFormat::F16 | WeightFormat::BF16)),
            }
            // Rows start 2-byte aligned (the blocks' f16 fields).
            assert_eq!(f.row_bytes(512) % 2, 0);
        }
        for name in ["rms_norm", "add_rms_norm", "add", "add_bias", "swiglu"] {
            assert!(entry_exists(name), "{name}");
        }
        // The block size the kernels were written for.
        let src = include_str!("../kernels/matvec.cu");
        assert!(src.contains(&format!("#define MATVEC_WARPS {MATVEC_WARPS}")));
    }
}
