//! Tiny SentencePiece vocabularies written as GGUF metadata in memory.
#![allow(dead_code)]

use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value, ValueType};
use engine_core::tokenizer::Tokenizer;

/// The metadata of a SentencePiece vocabulary. ids: 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..=258 the
/// byte tokens `<0x00>`..`<0xFF>`, then `pieces` (normal tokens with their scores), then
/// `controls` (control tokens).
pub fn spm_entries(pieces: &[(&str, f32)], controls: &[&str]) -> Vec<(&'static str, Value)> {
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![2i32, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for (p, s) in pieces {
        tokens.push((*p).to_owned());
        scores.push(*s);
        types.push(1);
    }
    for c in controls {
        tokens.push((*c).to_owned());
        scores.push(0.0);
        types.push(3);
    }
    vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(
                ValueType::String,
                tokens.into_iter().map(Value::String).collect(),
            ),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        ),
    ]
}

/// The tokenizer of [`spm_entries`].
pub fn spm(pieces: &[(&str, f32)], controls: &[&str]) -> Tokenizer {
    let mut w = GgufWriter::new();
    for (k, v) in spm_entries(pieces, controls) {
        w.set(k, v);
    }
    let f = GgufFile::new(ModelBytes::from_vec(w.to_bytes().unwrap())).unwrap();
    Tokenizer::from_metadata(f.metadata()).unwrap()
}
