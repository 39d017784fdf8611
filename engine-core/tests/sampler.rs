//! Behaviour of `engine_core::sampler`: greedy and random sampling, logit processing, logprobs,
//! parameter validation and stop strings.

use engine_core::sampler::{
    SampledToken, Sampler, SamplerError, SamplingParams, StopMatcher, StopStep, argmax,
    log_softmax_top,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn sampler(params: SamplingParams, vocab: usize) -> Sampler {
    Sampler::new(params, vocab, 1234).unwrap()
}

fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams::default();
    f(&mut p);
    p
}

fn sample(s: &mut Sampler, logits: &[f32]) -> SampledToken {
    s.sample(&mut logits.to_vec())
}

/// Softmax of `logits / t` in f64 (-inf logits get probability 0).
fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

/// Log-softmax of `logits` in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let z: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits.iter().map(|&l| l as f64 - max - z.ln()).collect()
}

/// Empirical frequencies of `n` draws with `params` from fixed `logits`.
fn frequencies(params: SamplingParams, logits: &[f32], n: usize) -> Vec<f64> {
    let mut s = sampler(params, logits.len());
    let mut counts = vec![0usize; logits.len()];
    let mut buf = logits.to_vec();
    for _ in 0..n {
        buf.copy_from_slice(logits);
        counts[s.sample(&mut buf).id as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

/// Whether every frequency is within `z` standard errors of the expected probability (a token
/// with probability 0 must never appear).
fn within(freq: &[f64], expected: &[f64], n: usize, z: f64) -> bool {
    freq.iter().zip(expected).all(|(&f, &p)| {
        if p == 0.0 {
            f == 0.0
        } else {
            (f - p).abs() <= z * (p * (1.0 - p) / n as f64).sqrt()
        }
    })
}

/// `probs` normalized to sum to 1.
fn normalized(probs: &[f64]) -> Vec<f64> {
    let z: f64 = probs.iter().sum();
    probs.iter().map(|p| p / z).collect()
}

/// Logits whose softmax is `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|&p| p.ln() as f32).collect()
}

/// Deterministic pseudo-random logits in [-8, 8) without any platform math.
fn hashed_logits(n: usize, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut x = (i ^ salt.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 32;
            (x % 16_000) as f32 / 1000.0 - 8.0
        })
        .collect()
}

const N: usize = 20_000;
const Z: f64 = 4.5;

// ---------------------------------------------------------------- greedy, bias, penalties

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let logits = [0.5, 3.0, -1.0, 3.0, 2.9];
    let mut s = sampler(SamplingParams::greedy(), 5);
    assert_eq!(sample(&mut s, &logits).id, 1);
    assert_eq!(argmax(&logits), 1);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..200 {
        let n = rng.random_range(1..300usize);
        let logits: Vec<f32> = (0..n).map(|_| rng.random_range(0..6) as f32).collect();
        let want = (0..n)
            .find(|&i| logits[i] == logits.iter().cloned().fold(f32::MIN, f32::max))
            .unwrap() as u32;
        assert_eq!(sample(&mut s, &logits).id, want);
        assert_eq!(argmax(&logits), want);
    }
}

#[test]
fn logit_bias_bans_and_forces() {
    let logits = [1.0, 4.0, 2.0, 0.0, 3.0];
    // -100 bans the best token, even at a high temperature.
    let mut s = sampler(
        params(|p| {
            p.temperature = 1.5;
            p.logit_bias = vec![(1, -100.0)];
        }),
        5,
    );
    for _ in 0..2000 {
        assert_ne!(sample(&mut s, &logits).id, 1);
    }
    // +100 forces the worst one.
    let mut s = sampler(
        params(|p| {
            p.temperature = 1.5;
            p.logit_bias = vec![(3, 100.0)];
        }),
        5,
    );
    for _ in 0..2000 {
        assert_eq!(sample(&mut s, &logits).id, 3);
    }
    let mut g = sampler(
        params(|p| {
            p.temperature = 0.0;
            p.logit_bias = vec![(3, 100.0), (0, -0.5), (0, -0.25)];
        }),
        5,
    );
    let mut buf = logits.to_vec();
    assert_eq!(g.sample(&mut buf).id, 3);
    // Repeated ids add up; the buffer holds the processed logits.
    assert_eq!(buf, vec![0.25, 4.0, 2.0, 100.0, 3.0]);
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative() {
    let mut s = sampler(
        params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 2.0;
        }),
        6,
    );
    s.accept_prompt(&[0, 1, 1]);
    s.accept(4);
    let mut buf = vec![2.0, -1.0, 0.5, 3.0, -2.0, 1.0];
    s.sample(&mut buf);
    // Each seen token is penalized once, however often it occurred.
    assert_eq!(buf, vec![1.0, -2.0, 0.5, 3.0, -4.0, 1.0]);
}

#[test]
fn repetition_penalty_window_is_penalty_last_n() {
    let mut s = sampler(
        params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 4.0;
            p.penalty_last_n = 2;
        }),
        4,
    );
    s.accept_prompt(&[0, 1, 2]);
    let mut buf = vec![8.0, 8.0, 8.0, 8.0];
    s.sample(&mut buf);
    assert_eq!(buf, vec![8.0, 2.0, 2.0, 8.0]);
    s.accept(3);
    let mut buf = vec![8.0, 8.0, 8.0, 8.0];
    s.sample(&mut buf);
    assert_eq!(buf, vec![8.0, 8.0, 2.0, 2.0]);
}

#[test]
fn frequency_and_presence_penalties_follow_openai() {
    let mut s = sampler(
        params(|p| {
            p.temperature = 0.0;
            p.frequency_penalty = 0.5;
            p.presence_penalty = 0.25;
        }),
        6,
    );
    // Prompt tokens do not count for these penalties.
    s.accept_prompt(&[5, 5, 5]);
    for id in [2, 4, 2] {
        s.accept(id);
    }
    let mut buf = vec![1.0; 6];
    s.sample(&mut buf);
    // logit -= count * frequency + (count > 0) * presence
    assert_eq!(buf, vec![1.0, 1.0, -0.25, 1.0, 0.25, 1.0]);
    // Negative values encourage repetition.
    let mut s = sampler(
        params(|p| {
            p.temperature = 0.0;
            p.frequency_penalty = -1.0;
            p.presence_penalty = -2.0;
        }),
        3,
    );
    s.accept(2);
    assert_eq!(sample(&mut s, &[1.0, 0.0, -1.5]).id, 2);
}

#[test]
fn bias_then_repetition_then_frequency() {
    let mut s = sampler(
        params(|p| {
            p.temperature = 0.0;
            p.logit_bias = vec![(0, 1.0)];
            p.repetition_penalty = 2.0;
            p.frequency_penalty = 0.5;
        }),
        2,
    );
    s.accept(0);
    let mut buf = vec![1.0, 0.0];
    s.sample(&mut buf);
    // (1 + 1) / 2 - 0.5
    assert_eq!(buf, vec![0.5, 0.0]);
}

// ---------------------------------------------------------------- filters and temperature

#[test]
fn top_k_1_is_greedy_at_any_temperature() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for t in [0.3, 1.0, 5.0, 100.0] {
        let mut s = sampler(
            params(|p| {
                p.temperature = t;
                p.top_k = 1;
            }),
            500,
        );
        for _ in 0..50 {
            let logits: Vec<f32> = (0..500).map(|_| rng.random_range(-5.0..5.0)).collect();
            assert_eq!(sample(&mut s, &logits).id, argmax(&logits));
        }
    }
}

#[test]
fn tiny_top_p_keeps_only_the_top_token() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for top_k in [0, 50] {
        let mut s = sampler(
            params(|p| {
                p.temperature = 3.0;
                p.top_p = 1e-6;
                p.top_k = top_k;
            }),
            2000,
        );
        for _ in 0..50 {
            let logits: Vec<f32> = (0..2000).map(|_| rng.random_range(-2.0..2.0)).collect();
            assert_eq!(sample(&mut s, &logits).id, argmax(&logits));
        }
    }
}

#[test]
fn temperature_shapes_the_distribution() {
    let logits = [1.0, 2.0, 0.5, -1.0, 1.5];
    for t in [0.7, 1.0, 1.8] {
        let freq = frequencies(params(|p| p.temperature = t), &logits, N);
        assert!(
            within(&freq, &softmax(&logits, t as f64), N, Z),
            "T={t}: {freq:?}"
        );
        // The test has power: the frequencies do not fit a different temperature.
        let wrong = if t == 1.0 { 0.8 } else { 1.0 };
        assert!(!within(&freq, &softmax(&logits, wrong), N, Z), "T={t}");
    }
}

#[test]
fn top_k_keeps_the_k_best_and_renormalizes() {
    let logits = [1.0, 2.0, 0.5, -1.0, 1.5, 0.0, 0.2];
    let freq = frequencies(
        params(|p| {
            p.temperature = 0.7;
            p.top_k = 3;
        }),
        &logits,
        N,
    );
    let mut kept = softmax(&logits, 0.7);
    for i in [2, 3, 5, 6] {
        kept[i] = 0.0;
    }
    assert!(within(&freq, &normalized(&kept), N, Z), "{freq:?}");
    assert!(!within(&freq, &softmax(&logits, 0.7), N, Z));
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    let probs = [0.15, 0.5, 0.05, 0.3];
    let logits = logits_of(&probs);
    // 0.5 < 0.75 <= 0.5 + 0.3: the nucleus is {1, 3}.
    for top_k in [0, 3] {
        let freq = frequencies(
            params(|p| {
                p.top_p = 0.75;
                p.top_k = top_k;
            }),
            &logits,
            N,
        );
        assert!(
            within(&freq, &normalized(&[0.0, 0.5, 0.0, 0.3]), N, Z),
            "{freq:?}"
        );
    }
}

#[test]
fn top_p_widens_past_the_first_candidate_set() {
    // A flat distribution over 10_000 tokens: the nucleus of 0.5 is the 5_000 lowest ids (ties
    // rank by id), far more than the first candidate set.
    let logits = vec![0.0f32; 10_000];
    let mut s = sampler(params(|p| p.top_p = 0.5), logits.len());
    let mut seen_high = false;
    for _ in 0..5000 {
        let id = sample(&mut s, &logits).id;
        assert!(id < 5000, "{id}");
        seen_high |= id >= 4096;
    }
    assert!(seen_high);
}

#[test]
fn large_nucleus_has_the_right_members_and_distribution() {
    // 2000 tokens of weight 1, then 1000 of weight ~1/2: the nucleus of 0.9 (mass 2250 of 2500)
    // is the first 2000 plus ~500 of the others, far beyond the sorted candidate sets.
    let mut logits = vec![0.0f32; 3000];
    logits[2000..].fill(-std::f32::consts::LN_2);
    let mut s = sampler(params(|p| p.top_p = 0.9), logits.len());
    let mut low = 0usize;
    for _ in 0..N {
        let id = sample(&mut s, &logits).id as usize;
        assert!(id <= 2501, "{id}");
        low += (id < 2000) as usize;
    }
    let freq = low as f64 / N as f64;
    assert!(within(&[freq], &[2000.0 / 2250.0], N, Z), "{freq}");
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let probs = [0.3, 0.15, 0.5, 0.05];
    let logits = logits_of(&probs);
    // min_p 0.25: tokens below 0.125 are dropped (only id 3).
    for (top_k, top_p) in [(0, 1.0), (4 - 1, 1.0), (0, 0.99)] {
        let freq = frequencies(
            params(|p| {
                p.min_p = 0.25;
                p.top_k = top_k;
                p.top_p = top_p;
            }),
            &logits,
            N,
        );
        assert!(
            within(&freq, &normalized(&[0.3, 0.15, 0.5, 0.0]), N, Z),
            "top_k {top_k} top_p {top_p}: {freq:?}"
        );
    }
    // min_p 1 keeps only the best token.
    let freq = frequencies(params(|p| p.min_p = 1.0), &logits, 1000);
    assert_eq!(freq, vec![0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn sampling_over_a_large_vocabulary_matches_softmax() {
    // Exercises the blocked full-vocabulary draw: the mass sits in several blocks.
    let mut logits = vec![f32::NEG_INFINITY; 5000];
    let hot = [3usize, 1030, 2047, 2048, 4999];
    let vals = [0.0f32, 1.0, 0.5, -0.5, 0.8];
    for (&i, &v) in hot.iter().zip(&vals) {
        logits[i] = v;
    }
    let mut s = sampler(SamplingParams::default(), logits.len());
    let mut counts = [0usize; 5];
    for _ in 0..N {
        let id = sample(&mut s, &logits).id as usize;
        let k = hot
            .iter()
            .position(|&h| h == id)
            .expect("a -inf token was drawn");
        counts[k] += 1;
    }
    let freq: Vec<f64> = counts.iter().map(|&c| c as f64 / N as f64).collect();
    assert!(within(&freq, &softmax(&vals, 1.0), N, Z), "{freq:?}");
}

// ---------------------------------------------------------------- determinism

fn run_sequence(p: SamplingParams, fallback: u64, steps: usize) -> Vec<u32> {
    let mut s = Sampler::new(p, 3000, fallback).unwrap();
    (0..steps as u64)
        .map(|step| {
            let mut logits = hashed_logits(3000, step);
            let id = s.sample(&mut logits).id;
            s.accept(id);
            id
        })
        .collect()
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    for (top_k, top_p, min_p) in [(0, 1.0, 0.0), (40, 1.0, 0.0), (0, 0.9, 0.0), (0, 1.0, 0.05)] {
        let p = |seed| {
            params(|p| {
                p.temperature = 1.3;
                p.top_k = top_k;
                p.top_p = top_p;
                p.min_p = min_p;
                p.frequency_penalty = 0.3;
                p.seed = seed;
            })
        };
        let a = run_sequence(p(Some(1)), 0, 64);
        assert_eq!(a, run_sequence(p(Some(1)), 99, 64), "params seed wins");
        assert_ne!(a, run_sequence(p(Some(2)), 0, 64));
        assert_eq!(run_sequence(p(None), 5, 64), run_sequence(p(None), 5, 64));
        assert_ne!(run_sequence(p(None), 5, 64), run_sequence(p(None), 6, 64));
    }
}

#[test]
fn token_sequences_are_pinned() {
    // Golden values: a change here changes what users get for a given seed.
    let golden = |top_k, top_p| {
        run_sequence(
            params(|p| {
                p.temperature = 0.8;
                p.top_k = top_k;
                p.top_p = top_p;
                p.seed = Some(42);
            }),
            0,
            12,
        )
    };
    assert_eq!(golden(0, 1.0), GOLDEN_FULL);
    assert_eq!(golden(20, 1.0), GOLDEN_TOP_K);
    assert_eq!(golden(0, 0.8), GOLDEN_TOP_P);
    // A nucleus of about half of a flat vocabulary (the large-nucleus path).
    let mut s = Sampler::new(
        params(|p| {
            p.top_p = 0.5;
            p.seed = Some(7);
        }),
        10_000,
        0,
    )
    .unwrap();
    let flat: Vec<f32> = hashed_logits(10_000, 99).iter().map(|x| x * 0.05).collect();
    let ids: Vec<u32> = (0..12).map(|_| sample(&mut s, &flat).id).collect();
    assert_eq!(ids, GOLDEN_LARGE_NUCLEUS);
}

const GOLDEN_FULL: [u32; 12] = [
    2030, 2877, 1236, 1846, 863, 422, 945, 2304, 2121, 621, 1487, 2638,
];
const GOLDEN_TOP_K: [u32; 12] = [
    2322, 1794, 1476, 889, 2168, 2672, 30, 2228, 82, 578, 430, 1666,
];
const GOLDEN_LARGE_NUCLEUS: [u32; 12] = [
    1477, 1565, 6897, 7126, 5897, 3480, 782, 8431, 3531, 9901, 1894, 3715,
];
const GOLDEN_TOP_P: [u32; 12] = [
    491, 2073, 2632, 701, 2546, 2375, 300, 2469, 1350, 2518, 2226, 2455,
];

// ---------------------------------------------------------------- logprobs

#[test]
fn logprobs_come_from_the_raw_logits() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let vocab = 1000;
    let mut s = sampler(
        params(|p| {
            p.temperature = 0.6;
            p.top_k = 50;
            p.repetition_penalty = 1.5;
            p.presence_penalty = 1.0;
            p.logit_bias = vec![(7, 5.0), (8, -3.0)];
            p.logprobs = true;
            p.top_logprobs = 5;
        }),
        vocab,
    );
    s.accept_prompt(&[1, 2, 3]);
    for _ in 0..100 {
        let logits: Vec<f32> = (0..vocab).map(|_| rng.random_range(-6.0..6.0)).collect();
        let reference = log_softmax(&logits);
        let tok = sample(&mut s, &logits);
        s.accept(tok.id);
        assert!((tok.logprob as f64 - reference[tok.id as usize]).abs() < 1e-5);
        assert_eq!(tok.top_logprobs.len(), 5);
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| reference[b].total_cmp(&reference[a]).then(a.cmp(&b)));
        for (&(id, lp), &want) in tok.top_logprobs.iter().zip(&order) {
            assert_eq!(id as usize, want);
            assert!((lp as f64 - reference[want]).abs() < 1e-5);
        }
        assert!(tok.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

#[test]
fn logprobs_are_zero_and_empty_unless_requested() {
    let mut s = sampler(params(|p| p.top_logprobs = 3), 4);
    let tok = sample(&mut s, &[0.0, 1.0, 2.0, 3.0]);
    assert_eq!(tok.logprob, 0.0);
    assert!(tok.top_logprobs.is_empty());
    // Greedy with logprobs.
    let mut s = sampler(
        params(|p| {
            p.temperature = 0.0;
            p.logprobs = true;
        }),
        4,
    );
    let logits = [0.0, 1.0, 2.0, 3.0];
    let tok = sample(&mut s, &logits);
    assert_eq!(tok.id, 3);
    assert!((tok.logprob as f64 - log_softmax(&logits)[3]).abs() < 1e-6);
    assert!(tok.top_logprobs.is_empty());
}

#[test]
fn log_softmax_top_is_sorted_and_exact() {
    let logits = [0.5, 2.0, f32::NAN, 2.0, -1.0];
    let top = log_softmax_top(&logits, 3);
    let finite = [0.5f32, 2.0, f32::NEG_INFINITY, 2.0, -1.0];
    let reference = log_softmax(&finite);
    assert_eq!(top.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 3, 0]);
    for &(id, lp) in &top {
        assert!((lp as f64 - reference[id as usize]).abs() < 1e-6);
    }
    let all = log_softmax_top(&logits, 10);
    assert_eq!(all.len(), 5);
    assert_eq!(all[4], (2, f32::NEG_INFINITY));
    assert!(log_softmax_top(&logits, 0).is_empty());
    assert!(log_softmax_top(&[], 5).is_empty());
    let probs: f64 = log_softmax_top(&hashed_logits(50_000, 1), 50_000)
        .iter()
        .map(|e| (e.1 as f64).exp())
        .sum();
    assert!((probs - 1.0).abs() < 1e-5);
}

// ---------------------------------------------------------------- validation

#[test]
fn each_bad_parameter_is_rejected_with_its_name() {
    let cases: Vec<(SamplingParams, &str)> = vec![
        (params(|p| p.temperature = -0.1), "temperature"),
        (params(|p| p.temperature = f32::NAN), "temperature"),
        (params(|p| p.temperature = f32::INFINITY), "temperature"),
        (params(|p| p.top_p = 0.0), "top_p"),
        (params(|p| p.top_p = 1.01), "top_p"),
        (params(|p| p.top_p = f32::NAN), "top_p"),
        (params(|p| p.min_p = -0.01), "min_p"),
        (params(|p| p.min_p = 1.5), "min_p"),
        (params(|p| p.min_p = f32::NAN), "min_p"),
        (params(|p| p.repetition_penalty = 0.0), "repetition_penalty"),
        (
            params(|p| p.repetition_penalty = -1.0),
            "repetition_penalty",
        ),
        (
            params(|p| p.repetition_penalty = f32::INFINITY),
            "repetition_penalty",
        ),
        (params(|p| p.frequency_penalty = 2.5), "frequency_penalty"),
        (
            params(|p| p.frequency_penalty = f32::NAN),
            "frequency_penalty",
        ),
        (params(|p| p.presence_penalty = -2.01), "presence_penalty"),
        (
            params(|p| p.presence_penalty = f32::NEG_INFINITY),
            "presence_penalty",
        ),
        (params(|p| p.top_logprobs = 21), "top_logprobs"),
        (
            params(|p| p.logit_bias = vec![(1, 1.0), (100, 1.0)]),
            "logit_bias",
        ),
        (params(|p| p.logit_bias = vec![(1, f32::NAN)]), "logit_bias"),
        (
            params(|p| p.logit_bias = vec![(1, f32::INFINITY)]),
            "logit_bias",
        ),
    ];
    for (p, name) in cases {
        let err = p.validate(100).unwrap_err();
        assert_eq!(err.param(), name, "{p:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(name), "{msg}");
        assert_eq!(Sampler::new(p, 100, 0).unwrap_err().to_string(), msg);
    }
    assert_eq!(
        params(|p| p.logit_bias = vec![(100, 1.0)]).validate(100),
        Err(SamplerError::LogitBiasToken {
            token: 100,
            vocab_size: 100
        })
    );
    assert_eq!(
        SamplerError::TopP(1.5).to_string(),
        "top_p must be in (0, 1], got 1.5"
    );
}

// ---------------------------------------------------------------- robustness

#[test]
fn no_panic_on_nan_inf_or_empty_logits() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    for round in 0..3000 {
        let n = match rng.random_range(0..4) {
            0 => rng.random_range(0..4),
            1 => rng.random_range(0..100),
            _ => rng.random_range(0..3000),
        };
        let mut logits: Vec<f32> = (0..n)
            .map(|_| match rng.random_range(0..10) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 if rng.random_bool(0.1) => f32::INFINITY,
                3 => rng.random_range(-1e30..1e30),
                _ => rng.random_range(-20.0..20.0),
            })
            .collect();
        if rng.random_bool(0.2) {
            logits.fill(if rng.random_bool(0.5) {
                f32::NAN
            } else {
                f32::NEG_INFINITY
            });
        }
        let p = params(|p| {
            p.temperature = [0.0, 0.5, 1.0, 2.0, 1e-30][rng.random_range(0..5)];
            p.top_k = [0, 1, 5, 100][rng.random_range(0..4)];
            p.top_p = [1.0, 0.9, 0.01][rng.random_range(0..3)];
            p.min_p = [0.0, 0.1, 1.0][rng.random_range(0..3)];
            p.repetition_penalty = [1.0, 1.3][rng.random_range(0..2)];
            p.frequency_penalty = [0.0, 0.5][rng.random_range(0..2)];
            p.logprobs = rng.random_bool(0.5);
            p.top_logprobs = rng.random_range(0..=20);
        });
        let mut s = Sampler::new(p.clone(), n.max(1), round).unwrap();
        s.accept_prompt(&[0, 1, 2, 5000]);
        s.accept(3);
        let viable = logits
            .iter()
            .any(|l| !l.is_nan() && *l != f32::NEG_INFINITY);
        let has_inf = logits.contains(&f32::INFINITY);
        let tok = s.try_sample(&mut logits.clone());
        assert_eq!(tok.is_some(), viable, "round {round} {p:?}");
        if let Some(tok) = &tok {
            let id = tok.id as usize;
            assert!(id < n);
            assert!(!logits[id].is_nan() && logits[id] != f32::NEG_INFINITY);
            if has_inf {
                assert_eq!(logits[id], f32::INFINITY, "round {round} {p:?}");
            }
            if p.logprobs {
                assert!(!tok.logprob.is_nan() && tok.logprob <= 0.0, "{tok:?}");
                assert_eq!(tok.top_logprobs.len(), p.top_logprobs.min(n));
            }
        }
        let fallback = s.sample(&mut logits.clone());
        if !viable {
            assert_eq!(fallback.id, 0);
            if p.logprobs {
                assert_eq!(fallback.logprob, f32::NEG_INFINITY);
            }
        }
    }
}

// ---------------------------------------------------------------- stop strings

fn stops(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// Pushes `pieces`, checking that what is emitted is always a prefix of `expected`; returns all
/// emitted text (with `finish` when no stop matched) and whether a stop matched.
fn stream(m: &mut StopMatcher, pieces: &[&str], expected: &str) -> (String, bool) {
    let mut out = String::new();
    let mut stopped = false;
    for p in pieces {
        let StopStep { emit, stopped: s } = m.push(p);
        out.push_str(&emit);
        assert!(
            expected.starts_with(&out),
            "{out:?} is not a prefix of {expected:?} ({pieces:?}, {m:?})"
        );
        if s {
            stopped = true;
            break;
        }
    }
    if !stopped {
        out.push_str(&m.finish());
    }
    (out, stopped)
}

#[test]
fn stop_string_split_across_pushes() {
    let mut m = StopMatcher::new(stops(&["###"]));
    assert_eq!(m.push("Hello #").emit, "Hello ");
    assert_eq!(m.push("#").emit, "");
    let step = m.push("# tail");
    assert_eq!(
        step,
        StopStep {
            emit: String::new(),
            stopped: true
        }
    );
    assert_eq!(m.finish(), "");
}

#[test]
fn stop_string_with_multibyte_characters() {
    let mut m = StopMatcher::new(stops(&["日本語", "é!"]));
    let (out, stopped) = stream(
        &mut m,
        &["caf", "é", " 日", "本", "人 é", "!x"],
        "café 日本人 ",
    );
    assert_eq!((out.as_str(), stopped), ("café 日本人 ", true));
    assert_eq!(m.matched_stop(), Some("é!"));
    let mut m = StopMatcher::new(stops(&["🙂🙃"]));
    assert_eq!(m.push("a🙂").emit, "a");
    assert_eq!(m.push("🙂").emit, "🙂");
    assert_eq!(m.finish(), "🙂");
}

#[test]
fn overlapping_stop_strings() {
    let mut m = StopMatcher::new(stops(&["aab"]));
    let (out, stopped) = stream(&mut m, &["a", "a", "a", "b"], "a");
    assert_eq!((out.as_str(), stopped), ("a", true));
    // Stops overlapping each other: the one completed first wins, even if a longer one started
    // earlier.
    let mut m = StopMatcher::new(stops(&[" 🙂 ", "🙂"]));
    let (out, stopped) = stream(&mut m, &[" b ", "🙂", " "], " b ");
    assert_eq!((out.as_str(), stopped), (" b ", true));
    assert_eq!(m.matched_stop(), Some("🙂"));
    let mut m = StopMatcher::new(stops(&[" 🙂 ", "🙂"]));
    let (out, _) = stream(&mut m, &[" b 🙂 x"], " b ");
    assert_eq!(out, " b ");
    // Completed in the same push: the earlier end wins.
    let mut m = StopMatcher::new(stops(&["bcd", "abcx", "cde"]));
    let (out, stopped) = stream(&mut m, &["xa", "bc", "de"], "xa");
    assert_eq!((out.as_str(), stopped), ("xa", true));
    assert_eq!(m.matched_stop(), Some("bcd"));
}

#[test]
fn stop_at_the_very_start_and_no_stop() {
    let mut m = StopMatcher::new(stops(&["Hi"]));
    assert_eq!(
        m.push("Hi there"),
        StopStep {
            emit: String::new(),
            stopped: true
        }
    );
    let mut m = StopMatcher::new(stops(&["END", ""]));
    assert_eq!(m.push("the E").emit, "the ");
    assert_eq!(m.push("N").emit, "");
    assert_eq!(m.finish(), "EN");
    assert!(!m.is_stopped());
    // Without stop strings everything passes straight through.
    let mut m = StopMatcher::new(vec![String::new()]);
    assert_eq!(m.push("abc").emit, "abc");
    assert_eq!(m.finish(), "");
}

#[test]
fn stop_matcher_agrees_with_a_whole_text_search() {
    let alphabet = ["a", "b", "é", "🙂", " "];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let word = |rng: &mut ChaCha8Rng, max: usize| {
        let len = rng.random_range(1..=max);
        (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect::<String>()
    };
    for _ in 0..3000 {
        let stop_list: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| word(&mut rng, 4))
            .collect();
        let text = word(&mut rng, 30);
        // The stop string completed first (then the one starting first), as characters arrive.
        let cut = stop_list
            .iter()
            .filter_map(|s| text.find(s.as_str()).map(|p| (p + s.len(), p)))
            .min()
            .map(|(_, p)| p);
        let expected = &text[..cut.unwrap_or(text.len())];
        // Split the text at random character boundaries.
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut pieces = Vec::new();
        let mut start = 0;
        for &(i, _) in &chars[1..] {
            if rng.random_bool(0.4) {
                pieces.push(&text[start..i]);
                start = i;
            }
        }
        pieces.push(&text[start..]);
        let mut m = StopMatcher::new(stop_list.clone());
        let (out, stopped) = stream(&mut m, &pieces, expected);
        assert_eq!(out, expected, "stops {stop_list:?} pieces {pieces:?}");
        assert_eq!(
            stopped,
            cut.is_some(),
            "stops {stop_list:?} pieces {pieces:?}"
        );
    }
}

// ---------------------------------------------------------------- benchmark

/// `cargo test -p engine-core --test sampler bench -- --ignored --nocapture`; set `ONLY` to a
/// substring of "<distribution> <config>" to run a subset.
#[test]
#[ignore]
fn bench() {
    use std::time::Instant;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for vocab in [49_152usize, 152_064] {
        // Peaked, like a real model's logits: a broad tail and a few dozen likely tokens.
        let mut peaked: Vec<f32> = (0..vocab)
            .map(|_| rng.random_range(-10.0f32..2.0))
            .collect();
        for r in 0..40 {
            let i = rng.random_range(0..vocab);
            peaked[i] = 16.0 - 0.3 * r as f32;
        }
        // Flat: the nucleus holds most of the vocabulary (the worst case for top-p).
        let flat: Vec<f32> = (0..vocab).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let configs: Vec<(&str, SamplingParams)> = vec![
            ("greedy", SamplingParams::greedy()),
            (
                "greedy+logprobs5",
                params(|p| {
                    p.temperature = 0.0;
                    p.logprobs = true;
                    p.top_logprobs = 5;
                }),
            ),
            ("temp 0.8", params(|p| p.temperature = 0.8)),
            (
                "temp 0.8 min_p 0.05",
                params(|p| {
                    p.temperature = 0.8;
                    p.min_p = 0.05;
                }),
            ),
            (
                "top_k 40",
                params(|p| {
                    p.temperature = 0.8;
                    p.top_k = 40;
                }),
            ),
            (
                "top_p 0.9",
                params(|p| {
                    p.temperature = 0.8;
                    p.top_p = 0.9;
                }),
            ),
            (
                "top_k 40 top_p 0.9 pen",
                params(|p| {
                    p.temperature = 0.8;
                    p.top_k = 40;
                    p.top_p = 0.9;
                    p.repetition_penalty = 1.1;
                    p.frequency_penalty = 0.2;
                }),
            ),
        ];
        for (dist, logits) in [("peaked", &peaked), ("flat", &flat)] {
            for (name, p) in &configs {
                if std::env::var("ONLY").is_ok_and(|o| !format!("{dist} {name}").contains(&o)) {
                    continue;
                }
                let mut s = Sampler::new(p.clone(), vocab, 0).unwrap();
                s.accept_prompt(&(0..500).collect::<Vec<u32>>());
                let mut buf = logits.clone();
                let iters = 300;
                let mut copy_ns = 0u128;
                let t0 = Instant::now();
                for _ in 0..iters {
                    let c = Instant::now();
                    buf.copy_from_slice(logits);
                    copy_ns += c.elapsed().as_nanos();
                    let id = s.sample(&mut buf).id;
                    s.accept(id);
                }
                let per = (t0.elapsed().as_nanos() - copy_ns) / iters;
                println!(
                    "vocab {vocab:>6} {dist:>6} {name:<24} {:>8.1} us",
                    per as f64 / 1000.0
                );
            }
        }
    }
}
