//! Weight matrices on the device, still quantized: each type's blocks are laid out so that every
//! field is 4-byte aligned (the GGUF layouts of Q4_0, Q8_0 and Q6_K are not), and a matrix larger
//! than one binding is split by rows into several buffers.
//!
//! Layouts (32-bit words; a "group" is 8 consecutive weights of a row, the unit the kernels
//! decode):
//! - F32: the floats, 8 words per group. F16: the halves, 4 words per group.
//! - Q4_0: all blocks' 16 quant bytes (4 words each), then the f16 scales, two per word.
//! - Q8_0: all blocks' 32 quant bytes (8 words each), then the f16 scales, two per word.
//! - Q4_1 (20 bytes) and Q4_K (144 bytes): as in the file.
//! - Q6_K: the 210-byte block padded to 212 bytes.

use crate::backend::{BackendError, MatrixSource};
use crate::quant::GgmlType;

use super::recorder::DeadIds;

/// How one weight type is stored on the device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypeLayout {
    /// Weights per block.
    pub block: usize,
    /// Bytes per block in the file.
    pub src_bytes: usize,
    /// Words per block in the main region.
    pub words: usize,
    /// Whether the f16 scale is moved to a separate region (Q4_0, Q8_0).
    pub split_scale: bool,
    /// Name of the decoder flag in `quant.wgsl`.
    pub flag: &'static str,
}

/// Every weight type the backend computes with (those [`TypeLayout::of`] knows).
pub const TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

impl TypeLayout {
    /// The layout of `ty`, if the backend computes with it.
    pub fn of(ty: GgmlType) -> Option<TypeLayout> {
        let (block, src_bytes, words, split_scale, flag) = match ty {
            GgmlType::F32 => (8, 32, 8, false, "W_F32"),
            GgmlType::F16 => (8, 16, 4, false, "W_F16"),
            GgmlType::Q4_0 => (32, 18, 4, true, "W_Q4_0"),
            GgmlType::Q4_1 => (32, 20, 5, false, "W_Q4_1"),
            GgmlType::Q8_0 => (32, 34, 8, true, "W_Q8_0"),
            GgmlType::Q4_K => (256, 144, 36, false, "W_Q4_K"),
            GgmlType::Q6_K => (256, 210, 53, false, "W_Q6_K"),
            _ => return None,
        };
        Some(TypeLayout {
            block,
            src_bytes,
            words,
            split_scale,
            flag,
        })
    }

    /// Device bytes of `rows` rows of `blocks_per_row` blocks.
    pub fn part_bytes(&self, rows: usize, blocks_per_row: usize) -> u64 {
        let blocks = (rows * blocks_per_row) as u64;
        let main = blocks * self.words as u64 * 4;
        let scales = if self.split_scale {
            blocks.div_ceil(2) * 4
        } else {
            0
        };
        main + scales
    }

    /// Re-encodes whole blocks from the file layout into `out` (main region) and `scales`
    /// (f16 scales, for the split layouts).
    fn repack(&self, src: &[u8], main: &mut Vec<u8>, scales: &mut Vec<u8>) {
        for block in src.chunks_exact(self.src_bytes) {
            if self.split_scale {
                scales.extend_from_slice(&block[..2]);
                main.extend_from_slice(&block[2..]);
            } else {
                main.extend_from_slice(block);
                main.resize(main.len().next_multiple_of(4), 0);
            }
        }
    }
}

/// The row range of a matrix held by one buffer.
pub(crate) struct Part {
    /// First row.
    pub row0: usize,
    /// Rows.
    pub rows: usize,
    /// Word offset of the scale region (split layouts), else 0.
    pub scale_offset: u32,
    pub id: u64,
    pub buf: wgpu::Buffer,
}

/// A weight matrix resident on the device, in one or more row parts.
pub struct GpuMatrix {
    /// Element type.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    pub(crate) layout: TypeLayout,
    pub(crate) parts: Vec<Part>,
    dead: DeadIds,
}

impl GpuMatrix {
    /// Blocks per row.
    pub(crate) fn blocks_per_row(&self) -> usize {
        self.cols / self.layout.block
    }

    /// How many buffers the matrix is split into.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Bytes on the device.
    pub fn device_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buf.size()).sum()
    }
}

impl Drop for GpuMatrix {
    fn drop(&mut self) {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        dead.extend(self.parts.iter().map(|p| p.id));
    }
}

/// Checks that `ty`, `rows` and `cols` can live on the device with bindings of at most `limit`
/// bytes; returns the layout, the rows per part and the device bytes.
pub(crate) fn plan(
    name: &str,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    limit: u64,
) -> Result<(TypeLayout, usize, u64), BackendError> {
    let layout = TypeLayout::of(ty).ok_or_else(|| BackendError::UnsupportedType {
        backend: "webgpu".into(),
        ty,
    })?;
    if cols == 0 || !cols.is_multiple_of(layout.block) || !cols.is_multiple_of(8) {
        return Err(BackendError::Device(format!(
            "matrix {name}: {cols} columns of {ty} are not a whole number of blocks (and of 8 weights)"
        )));
    }
    let nb = cols / layout.block;
    let row_bytes = layout.part_bytes(2, nb) / 2;
    let per_part = usize::try_from(limit.saturating_sub(4) / row_bytes.max(1))
        .unwrap_or(usize::MAX)
        .min(rows.max(1));
    if per_part == 0 {
        return Err(BackendError::OutOfMemory(format!(
            "matrix {name}: one row of {cols} {ty} weights ({row_bytes} bytes) exceeds the largest binding ({limit} bytes)"
        )));
    }
    let total = (0..rows)
        .step_by(per_part)
        .map(|r0| layout.part_bytes(per_part.min(rows - r0), nb))
        .sum();
    Ok((layout, per_part, total))
}

/// Uploads a matrix, repacked and split into parts of at most `limit` bytes.
pub(crate) fn upload(
    device: &wgpu::Device,
    src: &MatrixSource,
    limit: u64,
    next_id: impl Fn() -> u64,
    dead: DeadIds,
) -> Result<GpuMatrix, BackendError> {
    let (layout, per_part, _) = plan(&src.name, src.ty, src.rows, src.cols, limit)?;
    let nb = src.cols / layout.block;
    let src_row = nb * layout.src_bytes;
    if src.range.len() != src_row * src.rows || src.range.end > src.bytes.len() {
        return Err(BackendError::Device(format!(
            "matrix {} has {} bytes, expected {} rows of {src_row}",
            src.name,
            src.range.len(),
            src.rows
        )));
    }
    let data = src.data();
    let mut parts = Vec::new();
    let mut row0 = 0;
    while row0 < src.rows {
        let rows = per_part.min(src.rows - row0);
        let bytes = layout.part_bytes(rows, nb);
        let blocks = rows * nb;
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&src.name),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        {
            let mut view = buf.slice(..).get_mapped_range_mut().map_err(|e| {
                BackendError::Device(format!("mapping {} for upload: {e}", src.name))
            })?;
            let mut main = Vec::new();
            let mut scales = Vec::new();
            // Repack a few thousand blocks at a time to bound host memory.
            let chunk_blocks = 4096;
            let main_bytes = blocks * layout.words * 4;
            let (mut at_main, mut at_scale) = (0usize, main_bytes);
            let src_part = &data[row0 * src_row..(row0 + rows) * src_row];
            for chunk in src_part.chunks(chunk_blocks * layout.src_bytes) {
                main.clear();
                scales.clear();
                layout.repack(chunk, &mut main, &mut scales);
                view.slice(at_main..at_main + main.len())
                    .copy_from_slice(&main);
                at_main += main.len();
                if !scales.is_empty() {
                    view.slice(at_scale..at_scale + scales.len())
                        .copy_from_slice(&scales);
                    at_scale += scales.len();
                }
            }
            if at_scale < bytes as usize && layout.split_scale {
                let pad = bytes as usize - at_scale;
                view.slice(at_scale..).copy_from_slice(&vec![0u8; pad]);
            }
        }
        buf.unmap();
        parts.push(Part {
            row0,
            rows,
            scale_offset: if layout.split_scale {
                (blocks * layout.words) as u32
            } else {
                0
            },
            id: next_id(),
            buf,
        });
        row0 += rows;
    }
    Ok(GpuMatrix {
        ty: src.ty,
        rows: src.rows,
        cols: src.cols,
        layout,
        parts,
        dead,
    })
}
