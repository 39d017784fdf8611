//! Nothing panics on any input: random bytes, random text, huge runs of one character, ids out of
//! range, and every supported pre-tokenizer on the default model's vocabulary.

mod common;

use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value};
use engine_core::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn default_file() -> GgufFile {
    GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap()
}

/// The default model's tokenizer metadata with `tokenizer.ggml.pre` replaced.
fn with_pre(file: &GgufFile, pre: &str) -> Result<Tokenizer, TokenizerError> {
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata().iter() {
        if k.starts_with("tokenizer.ggml.") {
            w.set(k, v.clone());
        }
    }
    w.set("tokenizer.ggml.pre", Value::String(pre.to_owned()));
    let f = GgufFile::new(ModelBytes::from_vec(w.to_bytes().unwrap())).unwrap();
    Tokenizer::from_metadata(f.metadata())
}

/// A random character from ranges whose bytes all have tokens in the default vocabulary.
fn random_char(rng: &mut StdRng) -> char {
    loop {
        let cp = match rng.random_range(0..10) {
            0..=4 => rng.random_range(0x20..0x7F),
            5 => [0x09, 0x0A, 0x0D, 0x20, 0xA0, 0x3000, 0x2003, 0x85][rng.random_range(0..8)],
            6 => rng.random_range(0xA0..0x800),
            7 => rng.random_range(0x800..0x10000),
            8 => rng.random_range(0x1F300..0x1FB00),
            _ => rng.random_range(0x30..0x3A),
        };
        if let Some(c) = char::from_u32(cp) {
            return c;
        }
    }
}

fn random_text(rng: &mut StdRng, specials: &[&str]) -> String {
    let len = rng.random_range(0..40);
    let mut s = String::new();
    for _ in 0..len {
        if rng.random_range(0..20) == 0 {
            s.push_str(specials[rng.random_range(0..specials.len())]);
        } else {
            s.push(random_char(rng));
        }
    }
    s
}

const SPECIALS: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_",
    "'s",
    "'LL",
];

#[test]
fn random_bytes_never_panic() {
    let tok = Tokenizer::from_metadata(default_file().metadata()).unwrap();
    let mut rng = StdRng::seed_from_u64(0x7a4d);
    let mut valid = 0;
    for i in 0..4000 {
        let len = rng.random_range(0..48);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        if i % 4 == 0 {
            // Mostly-ASCII inputs are more often valid UTF-8.
            for b in &mut bytes {
                *b &= 0x7F;
            }
        }
        let parse_special = i % 2 == 0;
        match tok.encode_bytes(&bytes, i % 3 == 0, parse_special) {
            Ok(ids) => {
                valid += 1;
                assert!(std::str::from_utf8(&bytes).is_ok());
                let _ = tok.decode(&ids, false);
            }
            Err(TokenizerError::InvalidUtf8 { valid_up_to }) => {
                let e = std::str::from_utf8(&bytes).unwrap_err();
                assert_eq!(valid_up_to, e.valid_up_to());
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        // Any bytes through the stream decoder, read as ids.
        let mut d = StreamDecoder::new();
        for chunk in bytes.chunks(4) {
            let mut id = [0u8; 4];
            id[..chunk.len()].copy_from_slice(chunk);
            let _ = d.push(&tok, u32::from_le_bytes(id) % 50_000);
        }
        let _ = d.finish();
    }
    assert!(valid > 1000, "{valid}");
}

#[test]
fn random_text_round_trips() {
    let tok = Tokenizer::from_metadata(default_file().metadata()).unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    for i in 0..3000 {
        let text = random_text(&mut rng, SPECIALS);
        let parse_special = i % 2 == 0;
        let ids = tok.encode(&text, false, parse_special);
        assert_eq!(
            tok.decode(&ids, false),
            text,
            "parse_special={parse_special}"
        );
        let mut d = StreamDecoder::with_special(true);
        let mut streamed: String = ids.iter().map(|&id| d.push(&tok, id)).collect();
        streamed.push_str(&d.finish());
        assert_eq!(streamed, text);
    }
}

#[test]
fn huge_runs_of_one_character() {
    let tok = Tokenizer::from_metadata(default_file().metadata()).unwrap();
    for unit in [
        "a",
        " ",
        "\n",
        "\t",
        "1",
        "'",
        "😀",
        "日",
        "\u{3000}",
        "<|im_start|>",
        " \n",
        "'s",
        ".",
        "\u{200b}",
    ] {
        let text = unit.repeat(100_000 / unit.len());
        for parse_special in [false, true] {
            let ids = tok.encode(&text, true, parse_special);
            assert!(!ids.is_empty());
            assert_eq!(tok.decode(&ids, false), text, "{unit:?}");
        }
    }
}

#[test]
fn empty_input_and_ids_out_of_range() {
    let tok = Tokenizer::from_metadata(default_file().metadata()).unwrap();
    assert!(tok.encode("", false, false).is_empty());
    assert!(tok.encode("", true, true).is_empty());
    assert!(tok.encode_bytes(b"", true, true).unwrap().is_empty());
    assert_eq!(tok.decode(&[], false), "");
    let n = tok.vocab_size() as u32;
    for id in [n, n + 1, u32::MAX] {
        assert_eq!(tok.decode(&[id], false), "");
        assert!(tok.token_bytes(id).is_none());
        assert!(tok.token_piece(id).is_none());
        assert!(!tok.is_control(id));
        assert!(!tok.is_end_of_generation(id));
    }
    assert_eq!(tok.token_id(""), None);
    assert_eq!(tok.token_id("no such token at all"), None);
}

#[test]
fn every_supported_pre_tokenizer_survives_random_text() {
    let file = default_file();
    let names = [
        "default",
        "llama-bpe",
        "minicpm5",
        "dbrx",
        "jais-2",
        "deepseek-coder",
        "deepseek-v3",
        "falcon",
        "smollm",
        "gpt-2",
        "qwen2",
        "qwen35",
        "poro-chat",
        "chatglm-bpe",
        "glm4",
        "viking",
        "tekken",
        "exaone-moe",
        "chameleon",
        "gpt-4o",
        "granite-embed-multi-97m",
        "bailingmoe",
        "seed-coder",
        "ufakzeka",
        "laguna",
        "command-r",
        "stablelm2",
    ];
    let mut rng = StdRng::seed_from_u64(7);
    for name in names {
        let tok = with_pre(&file, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        for _ in 0..150 {
            let text = random_text(&mut rng, SPECIALS);
            let ids = tok.encode(&text, false, true);
            assert_eq!(tok.decode(&ids, false), text, "{name}");
            let with_special = tok.encode(&text, true, true);
            assert_eq!(
                with_special.len(),
                ids.len() + usize::from(tok.add_bos()),
                "{name}"
            );
        }
        let long = "Hello, world! 12345 don't\n\n  x".repeat(2000);
        assert_eq!(
            tok.decode(&tok.encode(&long, false, false), false),
            long,
            "{name}"
        );
    }
    for name in ["kimi-k2", "gemma4", "whitespace", "nonsense"] {
        assert!(matches!(
            with_pre(&file, name),
            Err(TokenizerError::UnsupportedPreTokenizer(_))
        ));
    }
}
