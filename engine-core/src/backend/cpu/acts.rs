//! Activations quantized for the integer kernels: each block of 32 values is stored as two 8-bit
//! planes, `x ≈ d * (128 * hi + lo)`, so the integer dot products of the kernels see activations
//! with 15 bits of precision per block (the rounding error is 1/256 of a plain 8-bit step).

use super::kernels::Isa;
use super::simd::{Simd, dispatch};
use super::threads::{Pool, SharedMut};

/// Elements per activation block.
pub const QK: usize = 32;
/// Weight of the high plane relative to the low plane.
pub const HI_SHIFT: u32 = 7;

/// `rows` rows of `cols` activations, quantized per block of 32.
#[derive(Default)]
pub struct QuantActs {
    /// Rows.
    pub rows: usize,
    /// Columns (a multiple of 32).
    pub cols: usize,
    /// High plane, `[-127, 127]`, row major.
    pub hi: Vec<i8>,
    /// Low plane (the residual in 1/128 steps of the high plane), `[-64, 64]`, row major.
    pub lo: Vec<i8>,
    /// Scale of each block: `x ≈ d * (128 * hi + lo)`.
    pub d: Vec<f32>,
    /// Scale times the sum of the block's `128 * hi + lo`.
    pub ds: Vec<f32>,
    /// The sum of the block's `128 * hi + lo`.
    pub sum: Vec<i32>,
}

/// One row of [`QuantActs`].
#[derive(Clone, Copy)]
pub struct ActRow<'a> {
    /// High plane.
    pub hi: &'a [i8],
    /// Low plane.
    pub lo: &'a [i8],
    /// Block scales.
    pub d: &'a [f32],
    /// Block scale times block sum.
    pub ds: &'a [f32],
}

impl ActRow<'_> {
    /// Element `i` as the integer `128 * hi + lo`.
    #[inline(always)]
    pub fn int(&self, i: usize) -> i32 {
        (i32::from(self.hi[i]) << HI_SHIFT) + i32::from(self.lo[i])
    }
}

impl QuantActs {
    /// Quantizes `rows` rows of `cols` floats from `x`, reusing this buffer's memory, with the
    /// rows spread over the pool's workers.
    pub fn quantize(&mut self, pool: &Pool, isa: Isa, x: &[f32], rows: usize, cols: usize) {
        assert!(
            cols.is_multiple_of(QK),
            "activation width {cols} is not a multiple of {QK}"
        );
        assert!(x.len() >= rows * cols, "too few activations");
        let nb = cols / QK;
        self.rows = rows;
        self.cols = cols;
        self.hi.resize(rows * cols, 0);
        self.lo.resize(rows * cols, 0);
        self.d.resize(rows * nb, 0.0);
        self.ds.resize(rows * nb, 0.0);
        self.sum.resize(rows * nb, 0);
        let planes = Planes {
            hi: SharedMut(self.hi.as_mut_ptr()),
            lo: SharedMut(self.lo.as_mut_ptr()),
            d: SharedMut(self.d.as_mut_ptr()),
            ds: SharedMut(self.ds.as_mut_ptr()),
            sum: SharedMut(self.sum.as_mut_ptr()),
        };
        pool.for_ranges(rows, 1, ROWS_PER_TASK, 1, |range| {
            let (a, b) = (range.start * cols, range.end * cols);
            // SAFETY: every worker gets a disjoint range of rows, inside the buffers sized above.
            let (hi, lo, d, ds, sum) = unsafe {
                (
                    std::slice::from_raw_parts_mut(planes.hi.get().add(a), b - a),
                    std::slice::from_raw_parts_mut(planes.lo.get().add(a), b - a),
                    std::slice::from_raw_parts_mut(planes.d.get().add(a / QK), (b - a) / QK),
                    std::slice::from_raw_parts_mut(planes.ds.get().add(a / QK), (b - a) / QK),
                    std::slice::from_raw_parts_mut(planes.sum.get().add(a / QK), (b - a) / QK),
                )
            };
            quantize_rows(isa, &x[a..b], hi, lo, (d, ds, sum));
        });
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> ActRow<'_> {
        let nb = self.cols / QK;
        ActRow {
            hi: &self.hi[r * self.cols..(r + 1) * self.cols],
            lo: &self.lo[r * self.cols..(r + 1) * self.cols],
            d: &self.d[r * nb..(r + 1) * nb],
            ds: &self.ds[r * nb..(r + 1) * nb],
        }
    }
}

/// Rows quantized per work item.
const ROWS_PER_TASK: usize = 16;

/// The output planes, shared by the workers that fill disjoint rows of them.
struct Planes {
    hi: SharedMut<i8>,
    lo: SharedMut<i8>,
    d: SharedMut<f32>,
    ds: SharedMut<f32>,
    sum: SharedMut<i32>,
}

dispatch!(
    /// Quantizes whole blocks of `x`, compiled for the instruction set.
    fn quantize_rows => quantize_rows_with(x: &[f32], hi: &mut [i8], lo: &mut [i8], scales: (&mut [f32], &mut [f32], &mut [i32])) -> ()
);

#[inline(always)]
fn quantize_rows_with<S: Simd>(
    x: &[f32],
    hi: &mut [i8],
    lo: &mut [i8],
    (d, ds, sums): (&mut [f32], &mut [f32], &mut [i32]),
) {
    for (((xs, hi), lo), ((d, ds), s)) in x
        .chunks_exact(QK)
        .zip(hi.chunks_exact_mut(QK))
        .zip(lo.chunks_exact_mut(QK))
        .zip(d.iter_mut().zip(ds.iter_mut()).zip(sums.iter_mut()))
    {
        let (scale, sum) = quantize_block(xs, hi, lo);
        *d = scale;
        *ds = scale * sum as f32;
        *s = sum;
    }
}

/// Rounds to the nearest integer (ties to even) for `|x| < 2^22`, without a library call.
#[inline(always)]
fn round_to_i32(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    ((x + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32)
}

/// Quantizes 32 floats into the two planes; returns the scale `d` (with
/// `x ≈ d * (128 * hi + lo)`) and the sum of `128 * hi + lo`.
#[inline(always)]
pub fn quantize_block(x: &[f32], hi: &mut [i8], lo: &mut [i8]) -> (f32, i32) {
    // Lane-wise maximum, so the loop vectorizes (a single running maximum would not).
    let mut lanes = [0.0f32; 16];
    for c in x.chunks(16) {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    let step = amax / 127.0;
    let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
    let mut sum = 0i32;
    for ((h, l), &v) in hi.iter_mut().zip(lo.iter_mut()).zip(x) {
        let scaled = (v * inv).clamp(-127.0, 127.0);
        let q = round_to_i32(scaled).clamp(-127, 127);
        let r = round_to_i32((scaled - q as f32) * 128.0).clamp(-64, 64);
        *h = q as i8;
        *l = r as i8;
        sum += (q << HI_SHIFT) + r;
    }
    (step / 128.0, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_within_a_fraction_of_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173 + 0.0071 * i as f32)
            .collect();
        let mut q = QuantActs::default();
        q.quantize(&Pool::new(1), Isa::Scalar, &x, 2, 32);
        for r in 0..2 {
            let row = q.row(r);
            let sum: i32 = (0..32).map(|i| row.int(i)).sum();
            assert!((row.ds[0] - row.d[0] * sum as f32).abs() < 1e-5);
            let amax = x[r * 32..(r + 1) * 32]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            for i in 0..32 {
                let back = row.int(i) as f32 * row.d[0];
                // Half a step of the low plane, plus float rounding.
                assert!(
                    (back - x[r * 32 + i]).abs() <= amax / 127.0 / 256.0 * 1.01 + 1e-6,
                    "{back} vs {}",
                    x[r * 32 + i]
                );
            }
        }
    }

    #[test]
    fn handles_zero_and_non_finite_blocks() {
        let mut q = QuantActs::default();
        let pool = Pool::new(1);
        q.quantize(&pool, Isa::Scalar, &[0.0; 32], 1, 32);
        assert!(q.hi.iter().chain(&q.lo).all(|&v| v == 0));
        let mut x = [1.0f32; 32];
        x[3] = f32::NAN;
        q.quantize(&pool, Isa::Scalar, &x, 1, 32);
        x[3] = f32::INFINITY;
        q.quantize(&pool, Isa::Scalar, &x, 1, 32);
    }
}
