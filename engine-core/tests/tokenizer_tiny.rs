//! Tiny hand-made vocabularies, written as GGUF files in memory. Every expected id sequence is
//! worked out by hand from the merge rules (see the comments), not taken from the implementation.

mod common;

use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value, ValueType};
use engine_core::tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerKind};

fn strings(items: &[&str]) -> Value {
    Value::Array(
        ValueType::String,
        items
            .iter()
            .map(|s| Value::String((*s).to_owned()))
            .collect(),
    )
}

fn build(entries: Vec<(&str, Value)>) -> Result<Tokenizer, TokenizerError> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    for (k, v) in entries {
        w.set(k, v);
    }
    let file = GgufFile::new(ModelBytes::from_vec(w.to_bytes().unwrap())).unwrap();
    Tokenizer::from_metadata(file.metadata())
}

// ---------------------------------------------------------------------------------------------
// SentencePiece ("llama")
// ---------------------------------------------------------------------------------------------

/// ids: 0 <unk>, 1 <s>, 2 </s>, 3..=258 <0x00>..<0xFF>, then the pieces below.
const SPM_PIECES: &[(&str, f32)] = &[
    ("▁", -1.0),   // 259
    ("a", -2.0),   // 260
    ("b", -3.0),   // 261
    ("c", -4.0),   // 262
    ("ab", -0.5),  // 263
    ("bc", -0.2),  // 264
    ("▁a", -1.5),  // 265
    ("abc", -0.1), // 266
    ("▁ab", -0.3), // 267
    ("aa", -0.4),  // 268
];

fn byte_id(b: u8) -> u32 {
    3 + u32::from(b)
}

fn spm_entries(extra: Vec<(&'static str, Value)>) -> Vec<(&'static str, Value)> {
    let mut e = common::tiny_vocab::spm_entries(SPM_PIECES, &[]);
    e.extend(extra);
    e
}

fn spm() -> Tokenizer {
    build(spm_entries(vec![])).unwrap()
}

#[test]
fn spm_defaults() {
    let tok = spm();
    assert_eq!(tok.kind(), TokenizerKind::Spm);
    assert_eq!(tok.vocab_size(), 269);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.unk_id(), Some(0));
    assert!(tok.add_bos());
    assert!(!tok.add_eos());
    assert_eq!(tok.end_of_generation_ids(), &[2]);
    assert!(tok.is_byte(byte_id(0xC3)));
}

#[test]
fn spm_merges_highest_score_first() {
    let tok = spm();
    // "▁abc": pairs ▁a (-1.5), ab (-0.5), bc (-0.2). bc wins; then a+bc = abc (-0.1);
    // "▁abc" is no token. -> ▁ abc
    assert_eq!(tok.encode("abc", false, false), [259, 266]);
    // "▁ab": ab (-0.5) beats ▁a (-1.5); then ▁ab (-0.3). -> ▁ab
    assert_eq!(tok.encode("ab", false, false), [267]);
}

#[test]
fn spm_ties_go_to_the_leftmost_pair() {
    // "▁aaa": the two "aa" pairs tie at -0.4, the left one merges first: ▁ aa a. Neither "▁aa"
    // nor "aaa" is a token. (Right-first would give ▁a aa.)
    assert_eq!(spm().encode("aaa", false, false), [259, 268, 260]);
}

#[test]
fn spm_byte_fallback() {
    let tok = spm();
    // "▁é": é is no token, so its UTF-8 bytes C3 A9 become <0xC3> <0xA9>.
    assert_eq!(
        tok.encode("é", false, false),
        [259, byte_id(0xC3), byte_id(0xA9)]
    );
    // Spaces are ▁; "x" falls back to its byte.
    assert_eq!(tok.encode("a x", false, false), [265, 259, byte_id(b'x')]);
    assert_eq!(tok.decode(&[259, byte_id(0xC3), byte_id(0xA9)], false), "é");
    assert_eq!(
        tok.token_bytes(byte_id(0xC3)).as_deref(),
        Some(&[0xC3u8][..])
    );
    assert_eq!(tok.token_bytes(259).as_deref(), Some(&b" "[..]));
    assert_eq!(tok.token_bytes(265).as_deref(), Some(&b" a"[..]));
}

#[test]
fn spm_bos_and_special_tokens() {
    let tok = spm();
    assert_eq!(tok.encode("ab", true, false), [1, 267]);
    assert_eq!(tok.encode("", true, false), [1]);
    assert!(tok.encode("", false, false).is_empty());
    // With parse_special, "</s>" is split out; text after a special token gets a space prefix
    // again: "▁a" </s> "▁b" (▁b is no token).
    assert_eq!(tok.encode("a</s>b", false, true), [265, 2, 259, 261]);
    // Without it the markup is text: ▁a, then < / s > as bytes, then b.
    assert_eq!(
        tok.encode("a</s>b", false, false),
        [
            265,
            byte_id(b'<'),
            byte_id(b'/'),
            byte_id(b's'),
            byte_id(b'>'),
            261
        ]
    );
}

#[test]
fn spm_decode_removes_the_prefixed_space() {
    let tok = spm();
    assert_eq!(tok.decode(&[1, 267], true), "ab");
    assert_eq!(tok.decode(&[267], false), "ab");
    assert_eq!(tok.decode(&[1, 267], false), "<s> ab");
    assert_eq!(tok.decode(&[267, 265], true), "ab a");
    for text in ["abc", "a b  c", " lead", "é and ü", ""] {
        assert_eq!(tok.decode(&tok.encode(text, true, false), true), text);
    }
}

#[test]
fn spm_without_space_prefix() {
    let tok = build(spm_entries(vec![(
        "tokenizer.ggml.add_space_prefix",
        Value::Bool(false),
    )]))
    .unwrap();
    // "ab" -> ab, no ▁.
    assert_eq!(tok.encode("ab", false, false), [263]);
    assert_eq!(tok.decode(&[259, 263], false), " ab");
}

#[test]
fn spm_stream_joins_byte_tokens() {
    let tok = spm();
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&tok, 259), " ");
    assert_eq!(d.push(&tok, byte_id(0xC3)), "");
    assert_eq!(d.push(&tok, byte_id(0xA9)), "é");
    // BOS renders as nothing by default, as its text with `with_special(true)`.
    assert_eq!(d.push(&tok, 1), "");
    assert_eq!(StreamDecoder::with_special(true).push(&tok, 1), "<s>");
    assert_eq!(d.finish(), "");
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE ("gpt2")
// ---------------------------------------------------------------------------------------------

const BPE_TOKENS: &[&str] = &[
    "<|endoftext|>", // 0 control
    "h",             // 1
    "e",             // 2
    "l",             // 3
    "o",             // 4
    "Ġ",             // 5  (space)
    "w",             // 6
    "r",             // 7
    "d",             // 8
    "he",            // 9
    "ll",            // 10
    "llo",           // 11
    "hello",         // 12
    "Ġw",            // 13
    "or",            // 14
    "Ġwor",          // 15
    "ld",            // 16
    "Ġworld",        // 17
    "Ċ",             // 18 (newline)
    "<|user|>",      // 19 user-defined
    "Ã",             // 20 (byte C3)
    "©",             // 21 (byte A9)
    "Ã©",            // 22 ("é")
];

const BPE_MERGES: &[&str] = &[
    "h e",     // 0
    "l l",     // 1
    "ll o",    // 2
    "he llo",  // 3
    "Ġ w",     // 4
    "o r",     // 5
    "Ġw or",   // 6
    "l d",     // 7
    "Ġwor ld", // 8
    "Ã ©",     // 9
];

fn bpe_with(pre: &str, merges: &[&str]) -> Result<Tokenizer, TokenizerError> {
    let mut types = vec![1i32; BPE_TOKENS.len()];
    types[0] = 3;
    types[19] = 4;
    build(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(BPE_TOKENS)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges", strings(merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(0)),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ])
}

fn bpe() -> Tokenizer {
    bpe_with("gpt-2", BPE_MERGES).unwrap()
}

#[test]
fn bpe_merges_by_rank() {
    let tok = bpe();
    // "hello": he(0) -> he l l o; ll(1) -> he ll o; ll+o(2) -> he llo; he+llo(3) -> hello.
    // " world": Ġw(4), or(5), Ġw+or(6), ld(7), Ġwor+ld(8) -> Ġworld.
    assert_eq!(tok.encode("hello world", false, false), [12, 17]);
    // "lld": ll (rank 1) beats ld (rank 7), and "ll d" has no merge -> ll d.
    assert_eq!(tok.encode("lld", false, false), [10, 8]);
    // "é" is the bytes C3 A9, i.e. "Ã" "©", merged by rule 9.
    assert_eq!(tok.encode("é", false, false), [22]);
    assert_eq!(tok.encode("\n", false, false), [18]);
    // Characters whose byte has no token are dropped, as llama.cpp does.
    assert_eq!(tok.encode("hz", false, false), [1]);
    assert_eq!(tok.decode(&[12, 17, 18, 22], false), "hello world\né");
}

#[test]
fn bpe_special_tokens() {
    let tok = bpe();
    assert_eq!(tok.encode("<|endoftext|>", false, true), [0]);
    // As text, "<|endoftext|>" pre-splits into "<|", "endoftext", "|>"; only e, d, o, e have
    // tokens, and no merge applies between them.
    assert_eq!(tok.encode("<|endoftext|>", false, false), [2, 8, 4, 2]);
    // User-defined tokens are split out even without parse_special: "hi" -> h (i has no token).
    assert_eq!(tok.encode("hi<|user|>he", false, false), [1, 19, 9]);
    assert_eq!(tok.decode(&[1, 19, 9], true), "h<|user|>he");
    assert_eq!(tok.decode(&[0, 12], true), "hello");
    assert_eq!(tok.decode(&[0, 12], false), "<|endoftext|>hello");
    assert_eq!(tok.end_of_generation_ids(), &[0]);
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("he", true, false), [9]);
}

#[test]
fn bpe_llama3_pre_tokenizer_ignores_merges_for_whole_tokens() {
    // Without rule 3 ("he llo"), "hello" stops at he + llo...
    let merges: Vec<&str> = BPE_MERGES
        .iter()
        .copied()
        .filter(|m| *m != "he llo")
        .collect();
    let gpt2 = bpe_with("gpt-2", &merges).unwrap();
    assert_eq!(gpt2.encode("hello", false, false), [9, 11]);
    // ...but Llama 3's pre-tokenizer takes a word that is itself a token as is, and adds BOS.
    let llama3 = bpe_with("llama-bpe", &merges).unwrap();
    assert_eq!(llama3.encode("hello", false, false), [12]);
    assert!(llama3.add_bos());
    assert_eq!(llama3.encode("hello", true, false), [0, 12]);
}

#[test]
fn metadata_errors_are_typed() {
    let missing_model = build(vec![("tokenizer.ggml.tokens", strings(&["a"]))]);
    assert!(matches!(
        missing_model,
        Err(TokenizerError::MissingMetadata("tokenizer.ggml.model"))
    ));

    let bert = build(vec![
        ("tokenizer.ggml.model", Value::String("bert".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
    ]);
    assert!(matches!(bert, Err(TokenizerError::UnsupportedModel(m)) if m == "bert"));

    assert!(matches!(
        bpe_with("no-such-pre", BPE_MERGES),
        Err(TokenizerError::UnsupportedPreTokenizer(p)) if p == "no-such-pre"
    ));

    let no_merges = build(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(BPE_TOKENS)),
    ]);
    assert!(matches!(
        no_merges,
        Err(TokenizerError::MissingMetadata("tokenizer.ggml.merges"))
    ));

    let bad_tokens = build(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::U32, vec![Value::U32(1)]),
        ),
    ]);
    assert!(matches!(
        bad_tokens,
        Err(TokenizerError::InvalidMetadata {
            key: "tokenizer.ggml.tokens",
            ..
        })
    ));

    let short_scores = build(spm_entries(vec![(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, vec![Value::F32(0.0)]),
    )]));
    assert!(matches!(
        short_scores,
        Err(TokenizerError::InvalidMetadata {
            key: "tokenizer.ggml.scores",
            ..
        })
    ));

    let invalid_utf8 = bpe().encode_bytes(b"he\xffllo", false, false);
    assert!(matches!(
        invalid_utf8,
        Err(TokenizerError::InvalidUtf8 { valid_up_to: 2 })
    ));
}
