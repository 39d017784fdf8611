//! Element-wise and row-wise operations of the forward pass.

use super::CpuMatrix;
use super::kernels::Isa;
use super::matmul::row_to_f32;
use super::simd::{Simd, dispatch};
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
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    pool: &Pool,
    isa: Isa,
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) {
    let out_ptr = SharedMut(out.as_mut_ptr());
    pool.for_ranges(rows, 1, ROWS_PER_TASK, 1, |range| {
        // SAFETY: these rows of `out` belong to this worker alone and lie inside `out`.
        let o = unsafe {
            std::slice::from_raw_parts_mut(out_ptr.get().add(range.start * dim), range.len() * dim)
        };
        rms_norm_rows(isa, &x[range.start * dim..range.end * dim], w, eps, o);
    });
}

/// `x += y`, then row-wise RMSNorm of `x` into `out`, in one pass over each worker's rows (the
/// same arithmetic as [`add`] then [`rms_norm`]).
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm(
    pool: &Pool,
    isa: Isa,
    x: &mut [f32],
    y: &[f32],
    w: &[f32],
    eps: f32,
    (rows, dim): (usize, usize),
    out: &mut [f32],
) {
    let x_ptr = SharedMut(x.as_mut_ptr());
    let out_ptr = SharedMut(out.as_mut_ptr());
    assert!(x.len() >= rows * dim && y.len() >= rows * dim && out.len() >= rows * dim);
    pool.for_ranges(rows, 1, ROWS_PER_TASK, 1, |range| {
        let (at, len) = (range.start * dim, range.len() * dim);
        // SAFETY: these rows of `x` and `out` belong to this worker alone and lie inside them
        // (checked above).
        let (xr, o) = unsafe {
            (
                std::slice::from_raw_parts_mut(x_ptr.get().add(at), len),
                std::slice::from_raw_parts_mut(out_ptr.get().add(at), len),
            )
        };
        add(xr, &y[at..at + len]);
        rms_norm_rows(isa, xr, w, eps, o);
    });
}

dispatch!(
    /// RMSNorm of whole rows of width `w.len()`, compiled for the instruction set.
    fn rms_norm_rows => rms_norm_rows_with(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> ()
);

#[inline(always)]
fn rms_norm_rows_with<S: Simd>(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mut lanes = [0.0f32; 16];
        for c in xr.chunks(16) {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l = S::fma(v, v, *l);
            }
        }
        let mean_sq = lanes.iter().sum::<f32>() / dim as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
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

/// Elements per work item of element-wise operations.
const ELEMENTS_PER_TASK: usize = 16384;

/// `gate = silu(gate) * up`.
pub fn swiglu(pool: &Pool, isa: Isa, gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let gate_ptr = SharedMut(gate.as_mut_ptr());
    pool.for_ranges(n, 16, ELEMENTS_PER_TASK, 1, |range| {
        // SAFETY: each worker owns a disjoint range of `gate`, inside its bounds.
        let g =
            unsafe { std::slice::from_raw_parts_mut(gate_ptr.get().add(range.start), range.len()) };
        swiglu_range(isa, g, &up[range]);
    });
}

dispatch!(
    /// SwiGLU of a range, compiled for the instruction set.
    fn swiglu_range => swiglu_range_with(gate: &mut [f32], up: &[f32]) -> ()
);

#[inline(always)]
fn swiglu_range_with<S: Simd>(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + crate::math::exp(-*g)) * u;
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
