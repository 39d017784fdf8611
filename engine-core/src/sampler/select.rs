//! Partial selection of the best logits without sorting the whole vocabulary.

use core::cmp::Ordering;

use super::numeric::{EXP_MIN, LANES, Weights, clean};

/// Orders `(id, cleaned logit)` pairs best first: higher logit, then lower id. A total order on
/// cleaned logits, so the selected set and its sorted order never depend on the algorithm.
#[inline]
pub(crate) fn rank(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Fills `out` with the `k` best `(id, cleaned logit)` pairs of `logits` (all of them when
/// `k >= logits.len()`), sorted by [`rank`].
///
/// One pass with a buffer of about `2k` entries: when it fills, `select_nth_unstable_by` keeps the
/// best `k` and their worst logit becomes a threshold that later logits must beat (a later logit
/// equal to it has a higher id, so it ranks lower). Runs in O(V + k log k) and reuses `out`'s
/// allocation.
pub(crate) fn top_k_into(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    if k >= logits.len() {
        out.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, clean(l))),
        );
        out.sort_unstable_by(rank);
        return;
    }
    let cap = (2 * k).max(k + 64).min(logits.len());
    out.reserve(cap);
    let mut threshold = None;
    for (i, &l) in logits.iter().enumerate() {
        let l = clean(l);
        if let Some(t) = threshold
            && l <= t
        {
            continue;
        }
        out.push((i as u32, l));
        if out.len() == cap {
            out.select_nth_unstable_by(k - 1, rank);
            out.truncate(k);
            threshold = out.last().map(|e| e.1);
        }
    }
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, rank);
        out.truncate(k);
    }
    out.sort_unstable_by(rank);
}

/// A non-negative weight as an exact fixed-point integer, `floor(w * 2^64)` (weights below 2^-64
/// count as 0), so sums do not depend on the order of their terms. Integer operations only.
#[inline]
fn fixed(w: f32) -> u128 {
    let bits = w.to_bits();
    if bits >> 31 != 0 {
        return 0;
    }
    let e = (bits >> 23) as i32;
    let m = (bits & 0x7f_ffff) | if e != 0 { 0x80_0000 } else { 0 };
    // w = m * 2^(max(e, 1) - 150), so w * 2^64 = m * 2^(max(e, 1) - 86).
    let s = e.max(1) - 86;
    if s >= 0 {
        (m as u128).checked_shl(s as u32).unwrap_or(u128::MAX)
    } else if s > -32 {
        (m >> -s) as u128
    } else {
        0
    }
}

/// `floor(t * 2^64)` for the nucleus target.
fn fixed_f64(t: f64) -> u128 {
    (t * 18_446_744_073_709_551_616.0) as u128
}

/// Number of buckets of [`weighted_boundary`].
const BUCKETS: usize = 4096;

/// The last token of the nucleus: going through the tokens in rank order (higher logit, then
/// lower id), the first one at which the cumulative weight reaches `target`. `None` when the
/// total weight never reaches it (every token is in the nucleus). `buf` is scratch.
///
/// Avoids sorting the vocabulary: one pass sums the weights into buckets of the scaled logit
/// (a monotone function of the logit, so buckets are ranges of the rank order), which locates the
/// bucket holding the boundary; only that bucket's tokens are then sorted. Sums are exact
/// fixed-point integers, so the answer does not depend on the order of any summation.
pub(crate) fn weighted_boundary(
    logits: &[f32],
    k: &Weights,
    target: f64,
    buf: &mut Vec<(u32, f32)>,
) -> Option<(u32, f32)> {
    // Scaled logits with weight lie in [lo, 0]; spread the buckets over that range.
    let min = logits.iter().fold(f32::INFINITY, |m, &l| {
        let l = clean(l);
        if l > f32::NEG_INFINITY && l < m { l } else { m }
    });
    let lo = ((min - k.max) * k.inv_t).max(EXP_MIN);
    let scale = if lo < 0.0 {
        (BUCKETS as f32 - 0.5) / -lo
    } else {
        0.0
    };
    let bucket = |l: f32| -> usize {
        let x = (clean(l) - k.max) * k.inv_t;
        ((-x * scale) as usize).min(BUCKETS - 1)
    };

    let mut sums = vec![0u128; BUCKETS];
    let mut chunks = logits.chunks_exact(LANES);
    let mut id = 0u32;
    for c in &mut chunks {
        let mut w = [0.0f32; LANES];
        let mut b = [0usize; LANES];
        for j in 0..LANES {
            w[j] = k.of_with::<false>(c[j], id.wrapping_add(j as u32));
            b[j] = bucket(c[j]);
        }
        for j in 0..LANES {
            sums[b[j]] += fixed(w[j]);
        }
        id = id.wrapping_add(LANES as u32);
    }
    for (j, &l) in chunks.remainder().iter().enumerate() {
        sums[bucket(l)] += fixed(k.of(l, id.wrapping_add(j as u32)));
    }

    let target = fixed_f64(target);
    let mut before = 0u128;
    let mut found = None;
    for (b, &s) in sums.iter().enumerate() {
        if s > 0 && before + s >= target {
            found = Some(b);
            break;
        }
        before += s;
    }
    let found = found?;
    buf.clear();
    buf.extend(
        logits
            .iter()
            .enumerate()
            .filter(|&(i, &l)| bucket(l) == found && k.of(l, i as u32) > 0.0)
            .map(|(i, &l)| (i as u32, clean(l))),
    );
    buf.sort_unstable_by(rank);
    let mut cum = before;
    for e in buf.iter() {
        cum += fixed(k.of(e.1, e.0));
        if cum >= target {
            return Some(*e);
        }
    }
    buf.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, clean(l)))
            .collect();
        all.sort_by(rank);
        all.truncate(k);
        all
    }

    #[test]
    fn matches_a_full_sort_with_ties_and_nan() {
        // Deterministic pseudo-random logits with many ties (few distinct values).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let n = 1 + (next() % 3000) as usize;
            let logits: Vec<f32> = (0..n)
                .map(|_| match next() % 20 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    r => (r % 7) as f32 - 3.0,
                })
                .collect();
            for k in [1, 2, 5, 40, 63, 64, 65, 200, n - 1, n, n + 3] {
                let mut out = Vec::new();
                top_k_into(&logits, k, &mut out);
                assert_eq!(out, reference(&logits, k), "round {round} n {n} k {k}");
            }
        }
    }

    #[test]
    fn fixed_point_is_exact() {
        for w in [
            0.0f32,
            1.0,
            0.5,
            0.75,
            1e-10,
            1.17e-38,
            1e-45,
            5.4e-20,
            0.333_333_34,
            1.4,
        ] {
            assert_eq!(
                fixed(w),
                (w as f64 * 18_446_744_073_709_551_616.0) as u128,
                "{w}"
            );
        }
        assert_eq!(fixed(-0.0), 0);
        assert_eq!(fixed(-1.0), 0);
    }

    #[test]
    fn weighted_boundary_matches_a_sorted_walk() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = Vec::new();
        for _ in 0..100 {
            let n = 1 + (next() % 5000) as usize;
            let logits: Vec<f32> = (0..n)
                .map(|_| match next() % 50 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    r => (r % 13) as f32 * 0.37 - 2.0,
                })
                .collect();
            let sorted = reference(&logits, n);
            let max = sorted[0].1;
            if max == f32::NEG_INFINITY {
                continue;
            }
            let k = Weights::new(max, 1.3);
            let total: u128 = sorted.iter().map(|e| fixed(k.of(e.1, e.0))).sum();
            for p in [1e-9, 0.01, 0.3, 0.5, 0.9, 0.999, 1.0, 1.01] {
                let target = p * total as f64 / 18_446_744_073_709_551_616.0;
                let t = fixed_f64(target);
                let mut cum = 0u128;
                let want = sorted.iter().find(|e| {
                    cum += fixed(k.of(e.1, e.0));
                    cum >= t
                });
                assert_eq!(
                    weighted_boundary(&logits, &k, target, &mut buf),
                    want.copied()
                );
            }
        }
    }
}
