//! Matrix products of quantized weights with activations, split over worker threads.

use super::CpuMatrix;
use super::acts::QuantActs;
use super::kernels::{Kernel, Tile};
use super::threads::{Pool, SharedMut};
use crate::quant::GgmlType;

/// Weight rows per work item: enough to amortize scheduling, few enough to balance the threads.
const MIN_ROWS_PER_TASK: usize = 16;
/// Activation rows processed per pass over a weight-row stripe (keeps them in cache).
const TOKENS_PER_PASS: usize = 64;

/// One product of a [`matmul_quantized`] call: `out[t][n] = dot(w[n], acts[t])`.
pub struct QuantJob<'a> {
    /// The tile kernel for `w`'s type.
    pub kernel: Kernel,
    /// The weights.
    pub w: &'a CpuMatrix,
    /// The output, `acts.rows` rows of `w.rows`.
    pub out: &'a mut [f32],
}

/// Runs several products that share quantized activations (e.g. the q, k and v projections) in
/// one parallel region: their weight rows are split into work items together.
pub fn matmul_quantized(pool: &Pool, jobs: &mut [QuantJob<'_>], acts: &QuantActs) {
    let rows = acts.rows;
    let mut outs = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        assert!(
            job.out.len() >= rows * job.w.rows,
            "matmul output too small"
        );
        assert_eq!(acts.cols, job.w.cols, "matmul inner dimensions differ");
        outs.push(SharedMut(job.out.as_mut_ptr()));
    }
    let total: usize = jobs.iter().map(|j| j.w.rows).sum();
    let parts = pool.threads() * 4;
    let mut items = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let chunk = (total.div_ceil(parts.max(1)))
            .max(MIN_ROWS_PER_TASK)
            .next_multiple_of(job.kernel.rows);
        let mut start = 0;
        while start < job.w.rows {
            let end = (start + chunk).min(job.w.rows);
            items.push((j, start, end));
            start = end;
        }
    }
    pool.for_each(items.len(), |i| {
        let (j, start, end) = items[i];
        let (job, out) = (&jobs[j], outs[j]);
        let (n, rb, data) = (job.w.rows, job.w.row_bytes, job.w.data());
        for t0 in (0..rows).step_by(TOKENS_PER_PASS) {
            let t1 = (t0 + TOKENS_PER_PASS).min(rows);
            let mut r = start;
            while r < end {
                let nr = (end - r).min(job.kernel.rows);
                let mut t = t0;
                while t < t1 {
                    let nt = (t1 - t).min(job.kernel.tokens);
                    // SAFETY: rows r..r+nr and tokens t..t+nt lie inside this job's output
                    // (checked above), and each work item owns a disjoint range of its rows.
                    unsafe {
                        (job.kernel.run)(&Tile {
                            w: &data[r * rb..(r + nr) * rb],
                            row_bytes: rb,
                            rows: nr,
                            acts,
                            t0: t,
                            tokens: nt,
                            out: out.get().add(t * n + r),
                            out_stride: n,
                        });
                    }
                    t += nt;
                }
                r += nr;
            }
        }
    });
}

/// `out[t][n] = dot(w[n], x[t])` for float weights (F32, F16, BF16) or any type that has no
/// integer kernel, by converting one weight row at a time to f32.
pub fn matmul_float(pool: &Pool, w: &CpuMatrix, x: &[f32], rows: usize, out: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    assert!(
        out.len() >= rows * n && x.len() >= rows * k,
        "matmul buffers too small"
    );
    let data = w.data();
    let rb = w.row_bytes;
    let ty = w.ty;
    let out_ptr = SharedMut(out.as_mut_ptr());
    pool.for_ranges(n, 1, MIN_ROWS_PER_TASK, 4, |range| {
        let mut row = vec![0.0f32; k];
        for r in range {
            row_to_f32(ty, &data[r * rb..(r + 1) * rb], &mut row);
            for t in 0..rows {
                let v = dot_f32(&row, &x[t * k..(t + 1) * k]);
                // SAFETY: each worker writes only its own rows' column of `out`, inside bounds.
                unsafe { *out_ptr.get().add(t * n + r) = v };
            }
        }
    });
}

/// Decodes one weight row to f32.
pub fn row_to_f32(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        other => crate::quant::dequantize(other, src, dst)
            .expect("weight types are checked when the matrix is loaded"),
    }
}

/// Dot product of two f32 slices, in eight independent lanes so the compiler vectorizes it.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
