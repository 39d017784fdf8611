//! Token sampling: sampling parameters and their validation, the per-sequence [`Sampler`]
//! (logit bias, penalties, greedy, top-k, temperature, top-p, min-p, seeded draws, logprobs) and
//! the [`StopMatcher`] for stop strings.

mod error;
mod numeric;
mod params;
#[allow(clippy::module_inception)]
mod sampler;
mod select;
mod stop;

pub use error::SamplerError;
pub use params::{MAX_TOP_LOGPROBS, SamplingParams};
pub use sampler::{SampledToken, Sampler};
pub use stop::{StopMatcher, StopStep};

/// The `n` most likely tokens under `log_softmax(logits)` as `(id, logprob)`, best first (ties:
/// lower id first); fewer when there are fewer logits. NaN logits count as -inf. Used for sampled
/// and prompt logprobs.
pub fn log_softmax_top(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut top = Vec::new();
    select::top_k_into(logits, n, &mut top);
    if !top.is_empty() {
        let lse = numeric::log_sum_exp(logits);
        for e in &mut top {
            e.1 = numeric::logprob(e.1, lse);
        }
    }
    top
}

/// Index of the largest logit, the lowest index on ties; NaN counts as -inf. Returns 0 when no
/// logit is above -inf or `logits` is empty.
pub fn argmax(logits: &[f32]) -> u32 {
    numeric::argmax_clean(logits).map_or(0, |i| i as u32)
}
