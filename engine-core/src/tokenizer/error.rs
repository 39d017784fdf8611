//! Errors from building a tokenizer or encoding text.

/// Why a tokenizer could not be built from metadata, or why input could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key the tokenizer needs is absent.
    #[error("tokenizer metadata key {0:?} is missing")]
    MissingMetadata(&'static str),
    /// A metadata value has the wrong type or an impossible value.
    #[error("tokenizer metadata key {key:?} is invalid: {reason}")]
    InvalidMetadata {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error("tokenizer model {0:?} is not supported (supported: \"gpt2\", \"llama\")")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("pre-tokenizer {0:?} is not supported")]
    UnsupportedPreTokenizer(String),
    /// A pre-tokenizer regular expression failed to compile.
    #[error("pre-tokenizer regex {expr:?} failed to compile: {reason}")]
    Regex {
        /// The expression.
        expr: &'static str,
        /// The compiler's message.
        reason: String,
    },
    /// Input bytes are not valid UTF-8.
    #[error("input is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the longest valid prefix.
        valid_up_to: usize,
    },
}
