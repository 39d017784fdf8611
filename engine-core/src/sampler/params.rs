//! Per-request sampling parameters and their validation.

use serde::{Deserialize, Serialize};

use super::SamplerError;

/// The largest `top_logprobs` accepted (the OpenAI limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How to pick the next token. Missing fields deserialize to their [`Default`] values.
///
/// The default is plain sampling from the model's distribution, as the OpenAI API does when no
/// parameter is given: `temperature` 1, every filter and penalty off, `penalty_last_n` 64 (as
/// llama.cpp), no seed, no logprobs. Use [`SamplingParams::greedy`] for argmax decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 means off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches
    /// `top_p`; 1 means off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times that of the most likely token; 0 means
    /// off.
    pub min_p: f32,
    /// llama.cpp/Hugging Face repetition penalty over the last `penalty_last_n` tokens of prompt
    /// and output: positive logits are divided by it, negative ones multiplied; 1 means off.
    pub repetition_penalty: f32,
    /// OpenAI frequency penalty: subtracted once per occurrence of a token in the output so far.
    pub frequency_penalty: f32,
    /// OpenAI presence penalty: subtracted once from every token that occurs in the output so far.
    pub presence_penalty: f32,
    /// Window of the repetition penalty, in tokens; 0 means the whole prompt and output.
    pub penalty_last_n: usize,
    /// OpenAI logit bias: `(token id, value)` pairs added to the logits; -100 effectively bans a
    /// token and +100 effectively forces it.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random draws; `None` uses the fallback seed the engine passes in.
    pub seed: Option<u64>,
    /// Return the log-probability of each sampled token.
    pub logprobs: bool,
    /// With `logprobs`, also return this many most likely alternatives per position (0..=20).
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: false,
            top_logprobs: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: the defaults with `temperature` 0.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every parameter against its allowed range for a model with `vocab_size` tokens.
    pub fn validate(&self, vocab_size: usize) -> Result<(), SamplerError> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(SamplerError::Temperature(t));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP(self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(SamplerError::MinP(self.min_p));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(SamplerError::RepetitionPenalty(r));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(SamplerError::FrequencyPenalty(self.frequency_penalty));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(SamplerError::PresencePenalty(self.presence_penalty));
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(SamplerError::TopLogprobs(self.top_logprobs));
        }
        for &(token, bias) in &self.logit_bias {
            if token as usize >= vocab_size {
                return Err(SamplerError::LogitBiasToken { token, vocab_size });
            }
            if !bias.is_finite() {
                return Err(SamplerError::LogitBiasValue { token, bias });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: SamplingParams) -> Result<(), SamplerError> {
        p.validate(100)
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let d = SamplingParams::default();
        assert_eq!(d.temperature, 1.0);
        assert_eq!(d.top_p, 1.0);
        assert_eq!(d.penalty_last_n, 64);
        assert!(check(d).is_ok());
        assert!(check(SamplingParams::greedy()).is_ok());
    }

    #[test]
    fn missing_fields_deserialize_to_defaults() {
        let p: SamplingParams =
            serde_json::from_str(r#"{"temperature":0.5,"logit_bias":[[3,-100.0]]}"#).unwrap();
        assert_eq!(p.temperature, 0.5);
        assert_eq!(p.logit_bias, vec![(3, -100.0)]);
        assert_eq!(p.top_p, 1.0);
        let back: SamplingParams =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn boundaries_are_inclusive_where_documented() {
        let ok = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            f(&mut p);
            check(p)
        };
        assert!(ok(|p| p.temperature = 0.0).is_ok());
        assert!(ok(|p| p.top_p = 1.0).is_ok());
        assert!(ok(|p| p.min_p = 1.0).is_ok());
        assert!(ok(|p| p.frequency_penalty = -2.0).is_ok());
        assert!(ok(|p| p.presence_penalty = 2.0).is_ok());
        assert!(ok(|p| p.top_logprobs = 20).is_ok());
        assert!(ok(|p| p.logit_bias = vec![(99, 100.0)]).is_ok());
    }
}
