//! Streaming detokenization with the default model: multi-byte characters split across tokens
//! come out whole, and invalid bytes never stall the stream.

mod common;

use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::tokenizer::{StreamDecoder, Tokenizer};

fn tokenizer() -> Tokenizer {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    Tokenizer::from_metadata(file.metadata()).unwrap()
}

const TEXTS: &[&str] = &[
    "emoji 😀🎉👍🏽 done",
    "日本語のテキスト",
    "中文测试",
    "ÀÉÎÕÜ àéîõü ß ñ ç",
    "Ελληνικά και русский текст",
    "mixed 🦀 Rust 和 中文 🇫🇷 flags",
    "x\u{200b}y",
];

#[test]
fn stream_emits_whole_characters_and_matches_decode() {
    let tok = tokenizer();
    let mut held_back = 0;
    for text in TEXTS {
        let ids = tok.encode(text, false, false);
        let mut d = StreamDecoder::new();
        let mut joined = String::new();
        for &id in &ids {
            let piece = d.push(&tok, id);
            assert!(
                !piece.contains('\u{fffd}'),
                "{text:?}: replacement char in {piece:?}"
            );
            // A piece is emitted only when whole: this token's bytes alone are not always valid.
            let alone = tok.token_bytes(id).unwrap();
            if std::str::from_utf8(&alone).is_err() {
                held_back += 1;
            }
            joined.push_str(&piece);
        }
        assert!(!d.has_pending());
        joined.push_str(&d.finish());
        assert_eq!(joined, tok.decode(&ids, true));
        assert_eq!(joined, *text);
    }
    // The texts really do split characters across tokens.
    assert!(
        held_back > 10,
        "only {held_back} tokens were partial characters"
    );
}

#[test]
fn emoji_bytes_are_held_until_complete() {
    let tok = tokenizer();
    // 😀 is F0 9F 98 80; the default model writes it as three tokens.
    let ids = tok.encode("😀", false, false);
    assert_eq!(ids, [10813, 242, 218]);
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&tok, ids[0]), "");
    assert!(d.has_pending());
    assert_eq!(d.push(&tok, ids[1]), "");
    assert_eq!(d.push(&tok, ids[2]), "😀");
    assert!(!d.has_pending());
    assert_eq!(d.finish(), "");
}

#[test]
fn invalid_bytes_become_replacement_characters_without_stalling() {
    let tok = tokenizer();
    let by_bytes = |b: &[u8]| {
        (0..tok.vocab_size() as u32)
            .find(|&i| tok.token_bytes(i).as_deref() == Some(b))
            .unwrap()
    };
    // A lone continuation byte can never start a character.
    let cont = by_bytes(&[0x80]);
    // "æ" stands for byte 0xE6, a three-byte lead.
    let lead = tok.token_id("æ").unwrap();
    assert_eq!(tok.token_bytes(lead).as_deref(), Some(&[0xE6u8][..]));
    let a = tok.token_id("a").unwrap();

    let mut d = StreamDecoder::new();
    for _ in 0..100 {
        assert_eq!(d.push(&tok, cont), "\u{fffd}");
    }
    assert_eq!(d.push(&tok, lead), "");
    assert_eq!(d.push(&tok, a), "\u{fffd}a");
    assert_eq!(d.push(&tok, lead), "");
    assert_eq!(d.finish(), "\u{fffd}");
    assert_eq!(d.finish(), "");
    // Ids out of range add nothing.
    assert_eq!(d.push(&tok, u32::MAX), "");
    // decode of the same ids is lossy the same way.
    assert_eq!(
        tok.decode(&[cont, lead, a, lead], false),
        "\u{fffd}\u{fffd}a\u{fffd}"
    );
}

#[test]
fn control_tokens_in_a_stream() {
    let tok = tokenizer();
    let ids = tok.encode("<|im_start|>assistant\nhi<|im_end|>", false, true);
    let mut plain = StreamDecoder::default();
    let mut special = StreamDecoder::with_special(true);
    let (mut a, mut b) = (String::new(), String::new());
    for &id in &ids {
        a.push_str(&plain.push(&tok, id));
        b.push_str(&special.push(&tok, id));
    }
    assert_eq!(a, "assistant\nhi");
    assert_eq!(b, "<|im_start|>assistant\nhi<|im_end|>");
}
