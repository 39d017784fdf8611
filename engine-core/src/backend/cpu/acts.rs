//! Activations quantized to 8 bits in blocks of 32, the right-hand side of the integer kernels.

/// Elements per activation block.
pub const QK: usize = 32;

/// `rows` rows of `cols` activations, quantized per block of 32: `x ≈ d * q`.
#[derive(Default)]
pub struct QuantActs {
    /// Rows.
    pub rows: usize,
    /// Columns (a multiple of 32).
    pub cols: usize,
    /// Quantized values, row major.
    pub qs: Vec<i8>,
    /// Scale of each block.
    pub d: Vec<f32>,
    /// Scale times the sum of the block's quantized values.
    pub ds: Vec<f32>,
}

/// One row of [`QuantActs`].
#[derive(Clone, Copy)]
pub struct ActRow<'a> {
    /// Quantized values.
    pub qs: &'a [i8],
    /// Block scales.
    pub d: &'a [f32],
    /// Block scale times block sum.
    pub ds: &'a [f32],
}

impl QuantActs {
    /// Quantizes `rows` rows of `cols` floats from `x`, reusing this buffer's memory.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        assert!(
            cols.is_multiple_of(QK),
            "activation width {cols} is not a multiple of {QK}"
        );
        let nb = cols / QK;
        self.rows = rows;
        self.cols = cols;
        self.qs.resize(rows * cols, 0);
        self.d.resize(rows * nb, 0.0);
        self.ds.resize(rows * nb, 0.0);
        for ((xs, qs), (d, ds)) in x[..rows * cols]
            .chunks_exact(QK)
            .zip(self.qs.chunks_exact_mut(QK))
            .zip(self.d.iter_mut().zip(self.ds.iter_mut()))
        {
            let (scale, sum) = quantize_block(xs, qs);
            *d = scale;
            *ds = scale * sum as f32;
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> ActRow<'_> {
        let nb = self.cols / QK;
        ActRow {
            qs: &self.qs[r * self.cols..(r + 1) * self.cols],
            d: &self.d[r * nb..(r + 1) * nb],
            ds: &self.ds[r * nb..(r + 1) * nb],
        }
    }
}

/// Quantizes 32 floats symmetrically to `[-127, 127]`; returns the scale and the sum of the
/// quantized values.
#[inline]
pub fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round() as i8;
        *q = r;
        sum += i32::from(r);
    }
    (d, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173)
            .collect();
        let mut q = QuantActs::default();
        q.quantize(&x, 2, 32);
        for r in 0..2 {
            let row = q.row(r);
            let sum: i32 = row.qs.iter().map(|&v| i32::from(v)).sum();
            assert!((row.ds[0] - row.d[0] * sum as f32).abs() < 1e-6);
            for (i, &qv) in row.qs.iter().enumerate() {
                let back = f32::from(qv) * row.d[0];
                assert!((back - x[r * 32 + i]).abs() <= row.d[0] * 0.5 + 1e-6);
            }
        }
    }
}
