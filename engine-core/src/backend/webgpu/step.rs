//! A step's metadata on the device: one buffer of 32-bit words with a header of section offsets
//! (the layout `common.wgsl` names `HDR_*`).

use crate::backend::StepInput;
use crate::model::RopeLayout;

/// Header words; sections follow.
const HEADER: usize = 16;
/// Query rows per tile of the prefill attention kernel.
pub(crate) const TILE_ROWS: usize = 16;

/// A step uploaded for the kernels.
pub struct GpuStep {
    /// Rows (new tokens).
    pub(crate) rows: usize,
    /// Output rows (gathered for logits and hidden states).
    pub(crate) n_output: usize,
    /// Rotated dimensions per head.
    pub(crate) rope_dims: usize,
    /// Longest context of any row (its position + 1).
    pub(crate) max_ctx: usize,
    /// Tiles of the prefill attention kernel.
    pub(crate) n_tiles: usize,
    pub(crate) buf: super::pool::Scratch,
}

/// Packs a step into words.
pub(crate) fn pack(step: &StepInput) -> Vec<u32> {
    let rows = step.rows();
    let mut w = vec![0u32; HEADER];
    let section = |w: &mut Vec<u32>, hdr: usize, data: &mut dyn Iterator<Item = u32>| {
        w[hdr] = w.len() as u32;
        w.extend(data);
    };
    section(&mut w, 3, &mut step.tokens.iter().copied());
    section(&mut w, 4, &mut step.positions.iter().copied());
    section(&mut w, 5, &mut step.slots.iter().copied());
    let mut row_seq = vec![0u32; rows];
    for (s, seq) in step.seqs.iter().enumerate() {
        for r in seq.rows.clone() {
            if let Some(x) = row_seq.get_mut(r) {
                *x = s as u32;
            }
        }
    }
    section(&mut w, 6, &mut row_seq.into_iter());
    section(&mut w, 7, &mut step.output_rows.iter().copied());
    section(&mut w, 8, &mut step.rope_angles.iter().map(|a| a.to_bits()));
    // Sequences: row start, rows, start position, block table offset (filled below).
    let seqs_at = w.len();
    w[10] = seqs_at as u32;
    w.resize(seqs_at + 4 * step.seqs.len(), 0);
    for (s, seq) in step.seqs.iter().enumerate() {
        let bt = w.len() as u32;
        w.extend(&seq.block_table);
        w[seqs_at + 4 * s..seqs_at + 4 * s + 4].copy_from_slice(&[
            seq.rows.start as u32,
            seq.rows.len() as u32,
            seq.start_pos as u32,
            bt,
        ]);
    }
    let tiles_at = w.len();
    w[11] = tiles_at as u32;
    let mut n_tiles = 0;
    for (s, seq) in step.seqs.iter().enumerate() {
        let mut r = seq.rows.start;
        while r < seq.rows.end {
            let n = (seq.rows.end - r).min(TILE_ROWS);
            w.extend([s as u32, r as u32, n as u32, 0]);
            n_tiles += 1;
            r += n;
        }
    }
    w[0] = rows as u32;
    w[1] = step.seqs.len() as u32;
    w[2] = step.output_rows.len() as u32;
    w[9] = step.rope_dims as u32;
    w[12] = n_tiles;
    w[13] = match step.rope_layout {
        RopeLayout::Normal => 0,
        RopeLayout::Neox => 1,
    };
    w[14] = max_ctx(step) as u32;
    w
}

/// The longest context of any row.
pub(crate) fn max_ctx(step: &StepInput) -> usize {
    step.positions
        .iter()
        .map(|&p| p as usize + 1)
        .max()
        .unwrap_or(0)
}

/// Number of prefill attention tiles.
pub(crate) fn tiles(step: &StepInput) -> usize {
    step.seqs
        .iter()
        .map(|s| s.rows.len().div_ceil(TILE_ROWS))
        .sum()
}
