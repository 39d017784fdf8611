//! Portable numeric kernels: NaN handling, an `exp` built only from IEEE basic operations (so it
//! gives bit-identical results on every platform, unlike the system `libm`), and softmax sums
//! accumulated in `f64` in a fixed order.

/// Number of logits per block of the blocked weight sums.
pub(crate) const BLOCK: usize = 1024;

/// Lanes of the fixed-order partial sums (independent accumulators, combined in a fixed tree).
pub(crate) const LANES: usize = 8;

/// Maps NaN to -inf and +inf to `f32::MAX`, so every later comparison and subtraction is defined.
/// Written as compare-and-select so that loops over it vectorize.
#[inline(always)]
pub(crate) fn clean(x: f32) -> f32 {
    let x = if x > f32::NEG_INFINITY {
        x
    } else {
        f32::NEG_INFINITY
    };
    if x < f32::MAX { x } else { f32::MAX }
}

pub(crate) use crate::math::{EXP_MIN, exp, mask};

/// How logits turn into unnormalized softmax weights `e^((l - max) / T)`: with the (cleaned)
/// maximum, `1 / T`, a minimum weight (min-p, relative to the best token's weight of 1) and a cut
/// in rank order (tokens ranked after `(cut_logit, cut_id)`, by higher logit then lower id, get
/// weight 0).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Weights {
    pub max: f32,
    pub inv_t: f32,
    pub min_w: f32,
    pub cut_logit: f32,
    pub cut_id: u32,
}

impl Weights {
    /// Weights for logits with maximum `max` at `1 / T = inv_t`, no filter.
    pub fn new(max: f32, inv_t: f32) -> Self {
        Weights {
            max,
            inv_t,
            min_w: 0.0,
            cut_logit: f32::NEG_INFINITY,
            cut_id: u32::MAX,
        }
    }

    /// Whether the filters (min-p or the rank cut) can zero a weight.
    fn filtered(&self) -> bool {
        self.min_w > 0.0 || self.cut_logit > f32::NEG_INFINITY || self.cut_id < u32::MAX
    }

    /// The weight of logit `l` (raw) of token `id`.
    #[inline(always)]
    pub fn of(&self, l: f32, id: u32) -> f32 {
        self.of_with::<true>(l, id)
    }

    /// [`Weights::of`], skipping the filters when `FILTERED` is false.
    #[inline(always)]
    pub fn of_with<const FILTERED: bool>(&self, l: f32, id: u32) -> f32 {
        let l = clean(l);
        let w = exp((l - self.max) * self.inv_t);
        if !FILTERED {
            return w;
        }
        let ranked_in = l > self.cut_logit || (l == self.cut_logit && id <= self.cut_id);
        mask(w, (w >= self.min_w) & ranked_in)
    }
}

/// Sum of weights of `logits` (the first at index `start`) in `f64`, in a fixed order.
#[inline]
fn block_sum<const FILTERED: bool>(logits: &[f32], start: usize, k: &Weights) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    let mut id = start as u32;
    for c in &mut chunks {
        let mut w = [0.0f32; LANES];
        for j in 0..LANES {
            w[j] = k.of_with::<FILTERED>(c[j], id.wrapping_add(j as u32));
        }
        for j in 0..LANES {
            acc[j] += w[j] as f64;
        }
        id = id.wrapping_add(LANES as u32);
    }
    for (j, (a, &l)) in acc.iter_mut().zip(chunks.remainder()).enumerate() {
        *a += k.of_with::<FILTERED>(l, id.wrapping_add(j as u32)) as f64;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Total weight of `logits`: the sum, in order, of the sums of blocks of [`BLOCK`] logits. The
/// block sums are stored in `blocks` when given, for [`draw_blocked`].
pub(crate) fn weight_sum(logits: &[f32], k: &Weights, mut blocks: Option<&mut Vec<f64>>) -> f64 {
    if let Some(b) = blocks.as_deref_mut() {
        b.clear();
    }
    let filtered = k.filtered();
    let mut total = 0.0f64;
    for (b, chunk) in logits.chunks(BLOCK).enumerate() {
        let s = if filtered {
            block_sum::<true>(chunk, b * BLOCK, k)
        } else {
            block_sum::<false>(chunk, b * BLOCK, k)
        };
        if let Some(b) = blocks.as_deref_mut() {
            b.push(s);
        }
        total += s;
    }
    total
}

/// Draws an index with probability proportional to its weight, given the block sums from
/// [`weight_sum`] and a uniform `u` in [0, 1). Finds the block first, then walks inside it, so
/// only one block's weights are recomputed. `None` when every weight is 0.
pub(crate) fn draw_blocked(logits: &[f32], k: &Weights, blocks: &[f64], u: f64) -> Option<usize> {
    let total: f64 = blocks.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let target = u * total;
    let mut cum = 0.0f64;
    let mut chosen = None;
    for (b, &s) in blocks.iter().enumerate() {
        if s > 0.0 {
            chosen = Some((b, target - cum));
        }
        cum += s;
        if cum > target && s > 0.0 {
            break;
        }
    }
    let (b, rest) = chosen?;
    let start = b * BLOCK;
    let block = logits.get(start..(start + BLOCK).min(logits.len()))?;
    let mut cum = 0.0f64;
    let mut last = None;
    for (i, &l) in block.iter().enumerate() {
        let w = k.of(l, (start + i) as u32);
        if w > 0.0 {
            last = Some(start + i);
            cum += w as f64;
            if cum > rest {
                return last;
            }
        }
    }
    // Rounding left the walk a hair short of the target: the last token with weight wins.
    last
}

/// Draws an index of `weights` with probability proportional to its value, given a uniform `u` in
/// [0, 1). `None` when every weight is 0.
pub(crate) fn draw(weights: &[f32], u: f64) -> Option<usize> {
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let target = u * total;
    let mut cum = 0.0f64;
    let mut last = None;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            last = Some(i);
            cum += w as f64;
            if cum > target {
                return last;
            }
        }
    }
    last
}

/// The largest cleaned logit (NaN counts as -inf, +inf as `f32::MAX`); -inf when there is none.
pub(crate) fn max_clean(logits: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] = acc[j].max(clean(c[j]));
        }
    }
    for (a, &l) in acc.iter_mut().zip(chunks.remainder()) {
        *a = a.max(clean(l));
    }
    acc.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a))
}

/// Index of the largest cleaned logit, the lowest index on ties; `None` when every logit is -inf
/// or NaN, or there are none. One pass: each chunk's maximum is computed branch-free and the chunk
/// is scanned only when it beats the best so far.
pub(crate) fn argmax_clean(logits: &[f32]) -> Option<usize> {
    const CHUNK: usize = 16;
    let mut best = f32::NEG_INFINITY;
    let mut best_i = None;
    for (ci, c) in logits.chunks(CHUNK).enumerate() {
        let m = c.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(clean(l)));
        if m > best {
            best = m;
            best_i = c
                .iter()
                .position(|&l| clean(l) == m)
                .map(|j| ci * CHUNK + j);
        }
    }
    best_i
}

/// `ln Σ e^l` over the cleaned logits, in `f64`; -inf when no logit is above -inf.
pub(crate) fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = max_clean(logits);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max as f64 + weight_sum(logits, &Weights::new(max, 1.0), None).ln()
}

/// The log-probability of a logit given [`log_sum_exp`] of its distribution.
#[inline]
pub(crate) fn logprob(l: f32, lse: f64) -> f32 {
    let l = clean(l);
    if l == f32::NEG_INFINITY || lse == f64::NEG_INFINITY {
        f32::NEG_INFINITY
    } else {
        (l as f64 - lse) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut x = -90.0f32;
        while x <= 88.0 {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            if x < -87.0 {
                assert_eq!(got, 0.0, "x={x}");
            } else {
                assert!(
                    ((got - want) / want).abs() < 3e-7,
                    "x={x} got={got} want={want}"
                );
            }
            x += 0.001_37;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::NAN), 0.0);
        assert_eq!(exp(-87.0001), 0.0);
        assert!(exp(-87.0) > 0.0);
    }

    #[test]
    fn clean_maps_nan_and_inf() {
        assert_eq!(clean(f32::NAN), f32::NEG_INFINITY);
        assert_eq!(clean(f32::INFINITY), f32::MAX);
        assert_eq!(clean(-3.5), -3.5);
    }

    #[test]
    fn argmax_prefers_lowest_index_and_skips_nan() {
        let mut v = vec![0.0f32; 100];
        v[37] = 5.0;
        v[80] = 5.0;
        v[3] = f32::NAN;
        assert_eq!(argmax_clean(&v), Some(37));
        assert_eq!(argmax_clean(&[f32::NAN, f32::NEG_INFINITY]), None);
        assert_eq!(argmax_clean(&[]), None);
        assert_eq!(argmax_clean(&[1.0, f32::INFINITY, f32::INFINITY]), Some(1));
    }

    #[test]
    fn blocked_draw_walks_to_the_right_token() {
        // 3000 logits, all -inf but three: probabilities 1/4, 1/4, 1/2 (across blocks).
        let mut v = vec![f32::NEG_INFINITY; 3000];
        v[5] = 0.0;
        v[1500] = 0.0;
        v[2999] = 2f32.ln();
        let k = Weights::new(max_clean(&v), 1.0);
        let mut blocks = Vec::new();
        let z = weight_sum(&v, &k, Some(&mut blocks));
        assert!((z - 2.0).abs() < 1e-6);
        let pick = |u| draw_blocked(&v, &k, &blocks, u);
        assert_eq!(pick(0.0), Some(5));
        assert_eq!(pick(0.249), Some(5));
        assert_eq!(pick(0.251), Some(1500));
        assert_eq!(pick(0.499), Some(1500));
        assert_eq!(pick(0.501), Some(2999));
        assert_eq!(pick(1.0 - f64::EPSILON), Some(2999));
    }

    #[test]
    fn weights_apply_min_w_and_the_rank_cut() {
        let mut k = Weights::new(2.0, 1.0);
        assert_eq!(k.of(2.0, 9), 1.0);
        assert!((k.of(1.0, 9) - (-1.0f32).exp()).abs() < 1e-7);
        assert_eq!(k.of(f32::NAN, 0), 0.0);
        k.min_w = 0.5;
        assert_eq!(k.of(1.0, 9), 0.0);
        k.min_w = 0.0;
        k.cut_logit = 1.0;
        k.cut_id = 5;
        assert!(k.of(1.0, 5) > 0.0);
        assert_eq!(k.of(1.0, 6), 0.0);
        assert!(k.of(1.5, 600) > 0.0);
        assert_eq!(k.of(0.5, 0), 0.0);
    }
}
