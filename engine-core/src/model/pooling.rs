//! How a sequence's final hidden states become one embedding vector.

/// The pooling a model's embeddings use (GGUF `{arch}.pooling_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over every token (the default for causal models, as llama.cpp's).
    #[default]
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The last token's state.
    Last,
}

impl Pooling {
    /// The pooling a GGUF declares: 1 mean, 2 CLS, 3 last; `None` (mean) for 0 (none), 4 (rank)
    /// and anything else, which have no single vector per input.
    pub fn from_gguf(value: u64) -> Option<Pooling> {
        match value {
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }

    /// Its name (`mean`, `cls`, `last`).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }

    /// Parses a name as [`Pooling::name`] writes it.
    pub fn from_name(name: &str) -> Option<Pooling> {
        match name {
            "mean" => Some(Pooling::Mean),
            "cls" => Some(Pooling::Cls),
            "last" => Some(Pooling::Last),
            _ => None,
        }
    }

    /// Which of a chunk's rows feed the pool: the chunk covers positions `start..start + len`
    /// of a prompt of `prompt_len` tokens; the answer is relative to the chunk.
    pub fn rows(self, start: usize, len: usize, prompt_len: usize) -> std::ops::Range<usize> {
        let end = start + len;
        match self {
            Pooling::Mean => 0..len.min(prompt_len.saturating_sub(start)),
            Pooling::Cls if start == 0 && len > 0 => 0..1,
            Pooling::Last if start < prompt_len && end >= prompt_len => {
                prompt_len - 1 - start..prompt_len - start
            }
            _ => 0..0,
        }
    }
}

/// A pool being filled chunk by chunk, in float64.
#[derive(Clone, Debug)]
pub struct PoolAccumulator {
    pooling: Pooling,
    sum: Vec<f64>,
    rows: usize,
}

impl PoolAccumulator {
    /// An empty pool of vectors of `dim` floats.
    pub fn new(pooling: Pooling, dim: usize) -> PoolAccumulator {
        PoolAccumulator {
            pooling,
            sum: vec![0.0; dim],
            rows: 0,
        }
    }

    /// The pooling.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Adds rows of `dim` floats (those [`Pooling::rows`] chose).
    pub fn add(&mut self, rows: &[f32]) {
        let dim = self.sum.len();
        for row in rows.chunks_exact(dim) {
            for (s, &x) in self.sum.iter_mut().zip(row) {
                *s += f64::from(x);
            }
            self.rows += 1;
        }
    }

    /// Forgets what was added (the sequence is computed again).
    pub fn reset(&mut self) {
        self.sum.fill(0.0);
        self.rows = 0;
    }

    /// The pooled vector, scaled to unit Euclidean length (a zero vector stays zero).
    pub fn finish(&self) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        normalized(&mean)
    }
}

/// `v / |v|` (a zero vector stays zero).
pub fn normalized(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|x| (x * scale) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_the_prompt_once_across_chunks() {
        // A prompt of 10 tokens computed in chunks of 4, 4 and 2 (plus a decode row at 10).
        let chunks = [(0, 4), (4, 4), (8, 2), (10, 1)];
        let count = |p: Pooling| -> Vec<usize> {
            let mut hit = vec![0; 11];
            for &(s, l) in &chunks {
                for r in p.rows(s, l, 10) {
                    hit[s + r] += 1;
                }
            }
            hit
        };
        assert_eq!(count(Pooling::Mean), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(count(Pooling::Cls), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(count(Pooling::Last), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn the_pool_is_the_normalized_mean() {
        let mut p = PoolAccumulator::new(Pooling::Mean, 2);
        p.add(&[3.0, 0.0, 1.0, 4.0]);
        p.add(&[2.0, 2.0]);
        // Mean (2, 2): unit length (0.7071, 0.7071).
        let v = p.finish();
        assert!((v[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((v[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        p.reset();
        assert_eq!(p.finish(), vec![0.0, 0.0]);
        assert_eq!(Pooling::from_gguf(3), Some(Pooling::Last));
        assert_eq!(Pooling::from_gguf(0), None);
        assert_eq!(Pooling::from_name("cls"), Some(Pooling::Cls));
    }
}
