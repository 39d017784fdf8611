//! Element-wise and row-wise operations of the forward pass.

use super::CpuMatrix;
use super::matmul::{dot_f32, row_to_f32};
use super::threads::{Pool, SharedMut};
use crate::backend::StepInput;

/// Rows per work item for row-wise operations.
const ROWS_PER_TASK: usize = 8;

/// `out[r] = table[tokens[r]]`, decoding one table row per token.
pub fn embed(pool: &Pool, table: &CpuMatrix, tokens: &[u32], out: &mut [f32]) {
    let d = table.cols;
    let out_ptr = SharedMut(out.as_mut_ptr());
    pool.for_ranges(tokens.len(), 1, ROWS_PER_TASK, 1, |range| {
        for r in range {
            let id = (tokens[r] as usize).min(table.rows.saturating_sub(1));
            let src = &table.data()[id * table.row_bytes..(id + 1) * table.row_bytes];
            // SAFETY: row r of `out` belongs to this worker alone and lies inside `out`.
            let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(r * d), d) };
            row_to_f32(table.ty, src, dst);
        }
    });
}

/// Row-wise RMSNorm.
pub fn rms_norm(
    pool: &Pool,
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) {
    let out_ptr = SharedMut(out.as_mut_ptr());
    pool.for_ranges(rows, 1, ROWS_PER_TASK, 1, |range| {
        for r in range {
            let xr = &x[r * dim..(r + 1) * dim];
            let mean_sq = dot_f32(xr, xr) / dim as f32;
            let scale = 1.0 / (mean_sq + eps).sqrt();
            // SAFETY: row r of `out` belongs to this worker alone and lies inside `out`.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(r * dim), dim) };
            for ((o, &v), &g) in o.iter_mut().zip(xr).zip(w) {
                *o = v * scale * g;
            }
        }
    });
}

/// Rotates `n_heads` heads of every row by the step's RoPE angles.
pub fn rope(step: &StepInput, x: &mut [f32], n_heads: usize, head_dim: usize) {
    let n = step.rope_dims;
    if n == 0 {
        return;
    }
    let width = n_heads * head_dim;
    for (r, row) in x[..step.rows() * width].chunks_exact_mut(width).enumerate() {
        let angles = &step.rope_angles[r * n..(r + 1) * n];
        for head in row.chunks_exact_mut(head_dim) {
            crate::model::rotate(step.rope_layout, head, angles);
        }
    }
}

/// `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x[r] += bias` for every row.
pub fn add_bias(x: &mut [f32], bias: &[f32], rows: usize) {
    let dim = bias.len();
    for row in x[..rows * dim].chunks_exact_mut(dim) {
        add(row, bias);
    }
}
