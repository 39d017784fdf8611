//! The per-sequence sampler: logit processing and the seeded draw.

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::numeric::{
    Weights, argmax_clean, draw, draw_blocked, log_sum_exp, logprob, max_clean, weight_sum,
};
use super::select::{top_k_into, weighted_boundary};
use super::{SamplerError, SamplingParams};
use crate::backend::DeviceSampling;

/// Sizes of the sorted candidate sets tried, in turn, for a nucleus (top-p) without top-k, before
/// falling back to a weighted selection over the whole vocabulary.
const NUCLEUS_CANDIDATES: [usize; 2] = [64, 1024];

/// One sampled token.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledToken {
    /// The token id.
    pub id: u32,
    /// Log-probability of `id` under the raw model logits (log-softmax before any processing, as
    /// vLLM reports by default). Computed only when [`SamplingParams::logprobs`] is set; 0.0
    /// otherwise.
    pub logprob: f32,
    /// The [`SamplingParams::top_logprobs`] most likely tokens under the raw model logits, best
    /// first (ties: lower id first). Empty unless [`SamplingParams::logprobs`] is set.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Picks tokens for one sequence: applies logit bias and penalties, then greedy or seeded random
/// sampling with top-k, temperature, top-p and min-p.
///
/// Processing order: `logit_bias` -> repetition penalty -> frequency/presence penalties -> if
/// `temperature == 0` or `top_k == 1`, argmax (lowest id on ties) -> otherwise top-k ->
/// temperature -> softmax -> top-p -> min-p -> draw.
///
/// Deterministic: the same parameters, seed, accepted tokens and logits give the same tokens on
/// every platform. The random source is ChaCha8 seeded with `seed_from_u64`; each random draw
/// consumes exactly one `u64` (greedy decoding consumes none); `exp` is computed with a portable
/// routine and sums are taken in `f64` in a fixed order.
///
/// NaN logits count as -inf; +inf logits win over every finite one (several share the mass
/// equally). A temperature so small that `1 / temperature` overflows behaves as greedy.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// `1 / temperature`, or `None` for greedy decoding.
    inv_temp: Option<f32>,
    /// Recent prompt and output tokens in order, for the repetition penalty (only kept when it is
    /// on and `penalty_last_n > 0`).
    window: VecDeque<u32>,
    /// Occurrences of each token within the repetition window (only kept when it is on).
    window_counts: BTreeMap<u32, u32>,
    /// Occurrences of each token in the output (only kept when a frequency or presence penalty is
    /// on).
    output_counts: BTreeMap<u32, u32>,
    /// Scratch: selected candidates.
    cands: Vec<(u32, f32)>,
    /// Scratch: weights of the candidates.
    weights: Vec<f32>,
    /// Scratch: block sums of the full-vocabulary draw.
    blocks: Vec<f64>,
    /// Scratch: original values of the logits changed by bias and penalties.
    touched: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `params` over a vocabulary of `vocab_size` tokens. The random draws are
    /// seeded with `params.seed`, or `fallback_seed` when it is `None`. Fails when `params` does
    /// not pass [`SamplingParams::validate`].
    pub fn new(
        params: SamplingParams,
        vocab_size: usize,
        fallback_seed: u64,
    ) -> Result<Sampler, SamplerError> {
        params.validate(vocab_size)?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed.unwrap_or(fallback_seed));
        let inv_temp = if params.temperature > 0.0 && params.top_k != 1 {
            Some(1.0 / params.temperature).filter(|t| t.is_finite())
        } else {
            None
        };
        Ok(Sampler {
            params,
            rng,
            inv_temp,
            window: VecDeque::new(),
            window_counts: BTreeMap::new(),
            output_counts: BTreeMap::new(),
            cands: Vec::new(),
            weights: Vec::new(),
            blocks: Vec::new(),
            touched: Vec::new(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    fn repetition_on(&self) -> bool {
        self.params.repetition_penalty != 1.0
    }

    fn output_penalties_on(&self) -> bool {
        self.params.frequency_penalty != 0.0 || self.params.presence_penalty != 0.0
    }

    /// Records prompt tokens; they count for the repetition penalty only. May be called several
    /// times (e.g. per prefill chunk). Does nothing when the repetition penalty is off.
    pub fn accept_prompt(&mut self, ids: &[u32]) {
        if !self.repetition_on() {
            return;
        }
        let n = self.params.penalty_last_n;
        // Only the last `n` tokens can stay in the window.
        let ids = if n > 0 && ids.len() > n {
            &ids[ids.len() - n..]
        } else {
            ids
        };
        for &id in ids {
            self.push_window(id);
        }
    }

    /// Records a generated token (the one actually appended to the sequence): it counts for the
    /// repetition penalty and for the frequency and presence penalties.
    pub fn accept(&mut self, id: u32) {
        if self.repetition_on() {
            self.push_window(id);
        }
        if self.output_penalties_on() {
            let c = self.output_counts.entry(id).or_insert(0);
            *c = c.saturating_add(1);
        }
    }

    fn push_window(&mut self, id: u32) {
        let c = self.window_counts.entry(id).or_insert(0);
        *c = c.saturating_add(1);
        let n = self.params.penalty_last_n;
        if n == 0 {
            return;
        }
        self.window.push_back(id);
        if self.window.len() > n
            && let Some(old) = self.window.pop_front()
            && let Some(c) = self.window_counts.get_mut(&old)
        {
            *c -= 1;
            if *c == 0 {
                self.window_counts.remove(&old);
            }
        }
    }

    /// Whether the next choice can be made on the device ([`Sampler::device_sampling`]): no logit
    /// bias, penalties or log-probabilities. Does not consume randomness.
    pub fn can_sample_on_device(&self) -> bool {
        let p = &self.params;
        !(p.logprobs
            || !p.logit_bias.is_empty()
            || self.repetition_on()
            || self.output_penalties_on())
    }

    /// The next choice as a device-side sampling request, for backends that pick tokens on the
    /// device ([`crate::backend::Backend::sample`]); `None` when this sampler needs the logits on
    /// the host (logit bias, penalties or log-probabilities). Draws the one random number that
    /// [`Sampler::sample`] would draw (none when greedy), so a seeded sequence keeps its stream
    /// of draws; the caller then passes the chosen id to [`Sampler::accept`] as usual.
    pub fn device_sampling(&mut self) -> Option<DeviceSampling> {
        if !self.can_sample_on_device() {
            return None;
        }
        let p = &self.params;
        let request = DeviceSampling {
            temperature: p.temperature,
            top_k: u32::try_from(p.top_k).unwrap_or(u32::MAX),
            top_p: p.top_p,
            min_p: p.min_p,
            uniform: 0.0,
        };
        let uniform = if self.inv_temp.is_some() {
            self.next_unit()
        } else {
            0.0
        };
        Some(DeviceSampling { uniform, ..request })
    }

    /// Picks the next token from `logits` (one per vocabulary entry).
    ///
    /// `logits` is also the working buffer: on return it holds the logits after `logit_bias` and
    /// the penalties (top-k, temperature and the filters do not write to it). Ids beyond
    /// `logits.len()` in the bias or the history are ignored.
    ///
    /// When no token has a logit above -inf after processing (all -inf or NaN, or `logits` is
    /// empty), returns id 0 with logprob -inf (if logprobs were requested; 0.0 otherwise) and
    /// does not consume randomness; [`Sampler::try_sample`] reports that case as `None`.
    pub fn sample(&mut self, logits: &mut [f32]) -> SampledToken {
        let (token, _) = self.sample_inner(logits);
        token
    }

    /// Like [`Sampler::sample`], but `None` when no token has a logit above -inf after
    /// processing.
    pub fn try_sample(&mut self, logits: &mut [f32]) -> Option<SampledToken> {
        match self.sample_inner(logits) {
            (token, true) => Some(token),
            (_, false) => None,
        }
    }

    fn sample_inner(&mut self, logits: &mut [f32]) -> (SampledToken, bool) {
        let want = self.params.logprobs;
        let raw = want.then(|| {
            let lse = log_sum_exp(logits);
            let mut top = Vec::new();
            if self.params.top_logprobs > 0 {
                top_k_into(logits, self.params.top_logprobs, &mut top);
                for e in &mut top {
                    e.1 = logprob(e.1, lse);
                }
            }
            (lse, top)
        });
        self.apply_adjustments(logits, want);
        let chosen = self.choose(logits);
        let id = chosen.unwrap_or(0);
        let token = match raw {
            None => SampledToken {
                id,
                logprob: 0.0,
                top_logprobs: Vec::new(),
            },
            Some((lse, top)) => {
                let raw_logit = if chosen.is_some() {
                    self.raw_logit(logits, id)
                } else {
                    f32::NEG_INFINITY
                };
                SampledToken {
                    id,
                    logprob: logprob(raw_logit, lse),
                    top_logprobs: top,
                }
            }
        };
        (token, chosen.is_some())
    }

    /// The logit of `id` before [`Sampler::apply_adjustments`] changed it.
    fn raw_logit(&self, logits: &[f32], id: u32) -> f32 {
        self.touched
            .iter()
            .find(|e| e.0 == id)
            .map(|e| e.1)
            .or_else(|| logits.get(id as usize).copied())
            .unwrap_or(f32::NEG_INFINITY)
    }

    /// Applies logit bias, then the repetition penalty, then the frequency and presence
    /// penalties, in place. With `record`, keeps the original values in `touched`.
    fn apply_adjustments(&mut self, logits: &mut [f32], record: bool) {
        let touched = &mut self.touched;
        touched.clear();
        let mut touch = |logits: &mut [f32], id: u32, f: &dyn Fn(f32) -> f32| {
            if let Some(l) = logits.get_mut(id as usize) {
                if record {
                    touched.push((id, *l));
                }
                *l = f(*l);
            }
        };
        for &(id, bias) in &self.params.logit_bias {
            touch(logits, id, &|l| l + bias);
        }
        let p = self.params.repetition_penalty;
        if p != 1.0 {
            for &id in self.window_counts.keys() {
                touch(logits, id, &|l| if l > 0.0 { l / p } else { l * p });
            }
        }
        let (freq, pres) = (self.params.frequency_penalty, self.params.presence_penalty);
        if freq != 0.0 || pres != 0.0 {
            for (&id, &count) in &self.output_counts {
                let sub = count as f32 * freq + if count > 0 { pres } else { 0.0 };
                touch(logits, id, &|l| l - sub);
            }
        }
    }

    /// A uniform `f64` in [0, 1) from the top 53 bits of one `u64`.
    fn next_unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Picks a token from processed logits; `None` when none is above -inf.
    fn choose(&mut self, logits: &[f32]) -> Option<u32> {
        let Some(inv_t) = self.inv_temp else {
            return argmax_clean(logits).map(|i| i as u32);
        };
        let n = logits.len();
        let (top_k, top_p, min_p) = (self.params.top_k, self.params.top_p, self.params.min_p);
        if top_k > 0 && top_k < n {
            // Top-k: a sorted candidate list; top-p and min-p keep prefixes of it.
            top_k_into(logits, top_k, &mut self.cands);
            let max = self.cands.first()?.1;
            if max == f32::NEG_INFINITY {
                return None;
            }
            let total = self.candidate_weights(&Weights::new(max, inv_t));
            let m = nucleus_len(&self.weights, top_p as f64 * total).unwrap_or(self.weights.len());
            return self.draw_candidates(m, min_p);
        }
        let max = max_clean(logits);
        if max == f32::NEG_INFINITY {
            return None;
        }
        let mut k = Weights::new(max, inv_t);
        if top_p < 1.0 {
            let target = top_p as f64 * weight_sum(logits, &k, None);
            // Usually the nucleus is small: look for it among the best few candidates.
            for c in NUCLEUS_CANDIDATES {
                top_k_into(logits, c, &mut self.cands);
                let cand_total = self.candidate_weights(&k);
                if let Some(m) = nucleus_len(&self.weights, target) {
                    return self.draw_candidates(m, min_p);
                }
                if c >= n || cand_total <= 0.0 {
                    break;
                }
            }
            // A large nucleus: find its last token without sorting, then draw over the vocabulary.
            if let Some((id, l)) = weighted_boundary(logits, &k, target, &mut self.cands) {
                k.cut_logit = l;
                k.cut_id = id;
            }
            self.cands.clear();
            self.cands
                .shrink_to(2 * NUCLEUS_CANDIDATES[NUCLEUS_CANDIDATES.len() - 1]);
        }
        k.min_w = min_p;
        weight_sum(logits, &k, Some(&mut self.blocks));
        let u = self.next_unit();
        draw_blocked(logits, &k, &self.blocks, u).map(|i| i as u32)
    }

    /// Fills `weights` with the softmax weights of `cands` and returns their sum.
    fn candidate_weights(&mut self, k: &Weights) -> f64 {
        self.weights.clear();
        self.weights
            .extend(self.cands.iter().map(|&(id, l)| k.of(l, id)));
        self.weights.iter().map(|&w| w as f64).sum()
    }

    /// Draws among the first `m` candidates, after dropping those below `min_p` times the best
    /// one's weight (which is 1).
    fn draw_candidates(&mut self, m: usize, min_p: f32) -> Option<u32> {
        let u = self.next_unit();
        let ws = self.weights.get(..m)?;
        // Weights are sorted descending, so min-p keeps a prefix; the best token always stays.
        let m = ws.partition_point(|&w| w >= min_p).max(1);
        let i = draw(ws.get(..m)?, u)?;
        self.cands.get(i).map(|c| c.0)
    }
}

/// Length of the smallest prefix of `weights` (sorted descending) whose sum reaches `target`;
/// `None` when the whole slice does not reach it.
fn nucleus_len(weights: &[f32], target: f64) -> Option<usize> {
    let mut cum = 0.0f64;
    for (i, &w) in weights.iter().enumerate() {
        cum += w as f64;
        if cum >= target {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p, 8, 7).unwrap()
    }

    #[test]
    fn window_keeps_only_the_last_n_tokens() {
        let mut s = sampler(SamplingParams {
            repetition_penalty: 2.0,
            penalty_last_n: 3,
            ..SamplingParams::greedy()
        });
        s.accept_prompt(&[1, 2, 3, 4]);
        s.accept(5);
        assert_eq!(
            s.window_counts.keys().copied().collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        s.accept(5);
        s.accept(5);
        assert_eq!(s.window_counts.get(&5), Some(&3));
        assert_eq!(s.window_counts.len(), 1);
        // Output penalties are off, so output counts are not kept.
        assert!(s.output_counts.is_empty());
    }

    #[test]
    fn whole_history_window_when_last_n_is_zero() {
        let mut s = sampler(SamplingParams {
            repetition_penalty: 2.0,
            penalty_last_n: 0,
            ..SamplingParams::greedy()
        });
        s.accept_prompt(&[1, 1, 2]);
        s.accept(3);
        assert!(s.window.is_empty());
        assert_eq!(s.window_counts.len(), 3);
        assert_eq!(s.window_counts.get(&1), Some(&2));
    }

    #[test]
    fn penalties_off_keep_no_history() {
        let mut s = sampler(SamplingParams::default());
        s.accept_prompt(&[1, 2, 3]);
        s.accept(4);
        assert!(s.window_counts.is_empty() && s.output_counts.is_empty());
    }

    #[test]
    fn device_sampling_only_without_host_processing() {
        let mut greedy = sampler(SamplingParams::greedy());
        let d = greedy.device_sampling().unwrap();
        assert_eq!((d.inverse_temperature(), d.uniform), (0.0, 0.0));
        for p in [
            SamplingParams {
                repetition_penalty: 1.1,
                ..SamplingParams::default()
            },
            SamplingParams {
                presence_penalty: 0.5,
                ..SamplingParams::default()
            },
            SamplingParams {
                logit_bias: vec![(1, 2.0)],
                ..SamplingParams::default()
            },
            SamplingParams {
                logprobs: true,
                ..SamplingParams::default()
            },
        ] {
            let mut s = sampler(p);
            assert!(!s.can_sample_on_device());
            assert!(s.device_sampling().is_none());
        }
        // Seeded draws match the ones the host path makes.
        let p = SamplingParams {
            temperature: 0.7,
            top_k: 5,
            seed: Some(3),
            ..SamplingParams::default()
        };
        let (mut a, mut b) = (sampler(p.clone()), sampler(p));
        let d = a.device_sampling().unwrap();
        assert_eq!((d.top_k, d.temperature), (5, 0.7));
        assert_eq!(d.uniform, b.next_unit());
        assert!((0.0..1.0).contains(&d.uniform));
    }

    #[test]
    fn nucleus_len_reaches_target() {
        let w = [1.0f32, 0.5, 0.25, 0.25];
        assert_eq!(nucleus_len(&w, 0.2), Some(1));
        assert_eq!(nucleus_len(&w, 1.0), Some(1));
        assert_eq!(nucleus_len(&w, 1.2), Some(2));
        assert_eq!(nucleus_len(&w, 1.8), Some(4));
        assert_eq!(nucleus_len(&w[..2], 1.8), None);
    }
}
