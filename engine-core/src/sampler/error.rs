//! The error type for rejected sampling parameters.

/// A sampling parameter outside its allowed range. The messages name the parameter and the range,
/// so they can be returned to API clients as they are (HTTP 400).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// `temperature` is negative, NaN or infinite.
    #[error("temperature must be a finite number >= 0, got {0}")]
    Temperature(f32),
    /// `top_p` is outside (0, 1].
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    /// `min_p` is outside [0, 1].
    #[error("min_p must be in [0, 1], got {0}")]
    MinP(f32),
    /// `repetition_penalty` is not a finite number > 0.
    #[error("repetition_penalty must be a finite number > 0, got {0}")]
    RepetitionPenalty(f32),
    /// `frequency_penalty` is outside [-2, 2].
    #[error("frequency_penalty must be in [-2, 2], got {0}")]
    FrequencyPenalty(f32),
    /// `presence_penalty` is outside [-2, 2].
    #[error("presence_penalty must be in [-2, 2], got {0}")]
    PresencePenalty(f32),
    /// `top_logprobs` is above 20.
    #[error("top_logprobs must be in [0, 20], got {0}")]
    TopLogprobs(usize),
    /// A `logit_bias` key is not a token id of the vocabulary.
    #[error(
        "logit_bias token id {token} is out of range: ids must be < {vocab_size} (the vocabulary size)"
    )]
    LogitBiasToken {
        /// The offending token id.
        token: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A `logit_bias` value is NaN or infinite.
    #[error("logit_bias value for token {token} must be a finite number, got {bias}")]
    LogitBiasValue {
        /// The token id the value is for.
        token: u32,
        /// The offending value.
        bias: f32,
    },
}

impl SamplerError {
    /// The name of the request parameter at fault (the `param` field of an OpenAI error).
    pub fn param(&self) -> &'static str {
        match self {
            Self::Temperature(_) => "temperature",
            Self::TopP(_) => "top_p",
            Self::MinP(_) => "min_p",
            Self::RepetitionPenalty(_) => "repetition_penalty",
            Self::FrequencyPenalty(_) => "frequency_penalty",
            Self::PresencePenalty(_) => "presence_penalty",
            Self::TopLogprobs(_) => "top_logprobs",
            Self::LogitBiasToken { .. } | Self::LogitBiasValue { .. } => "logit_bias",
        }
    }
}
