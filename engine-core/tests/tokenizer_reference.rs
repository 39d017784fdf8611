//! The default model's tokenizer against llama.cpp's token ids (`tokenize.json`).

mod common;

use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::tokenizer::{Tokenizer, TokenizerKind};

fn tokenizer() -> Tokenizer {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    Tokenizer::from_metadata(file.metadata()).unwrap()
}

struct Case {
    text: String,
    parse_special: bool,
    ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let json = common::reference_json("tokenize.json");
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_owned(),
            parse_special: c["parse_special"].as_bool().unwrap(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect(),
        })
        .collect()
}

#[test]
fn matches_llama_cpp_on_every_case() {
    let tok = tokenizer();
    let cases = cases();
    assert_eq!(cases.len(), 54);
    let mut failures = Vec::new();
    for c in &cases {
        let ids = tok.encode(&c.text, false, c.parse_special);
        if ids != c.ids {
            failures.push(format!(
                "{:?} (parse_special={}): got {:?}, want {:?}",
                c.text, c.parse_special, ids, c.ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn both_parse_special_values_are_covered() {
    let cases = cases();
    assert_eq!(cases.iter().filter(|c| c.parse_special).count(), 27);
    assert_eq!(cases.iter().filter(|c| !c.parse_special).count(), 27);
}

#[test]
fn decode_inverts_encode() {
    let tok = tokenizer();
    for c in cases() {
        let ids = tok.encode(&c.text, false, c.parse_special);
        assert_eq!(tok.decode(&ids, false), c.text, "{:?}", c.text);
        let from_reference = tok.decode(&c.ids, false);
        assert_eq!(from_reference, c.text, "{:?}", c.text);
    }
}

#[test]
fn default_model_special_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(!tok.add_bos());
    assert!(!tok.add_eos());
    assert_eq!(tok.end_of_generation_ids(), &[0, 2, 4]);
    for id in [0, 2, 4] {
        assert!(tok.is_end_of_generation(id));
    }
    for id in [1, 3, 5, 198, 49151, 49152, u32::MAX] {
        assert!(!tok.is_end_of_generation(id), "{id}");
    }
    assert!(tok.is_control(1));
    assert!(!tok.is_control(198));
    assert!(!tok.is_control(u32::MAX));
    assert_eq!(tok.token_piece(1), Some("<|im_start|>"));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_piece(216), Some("Ġ"));
    assert_eq!(tok.token_bytes(216).as_deref(), Some(&b" "[..]));
    assert_eq!(tok.token_bytes(198).as_deref(), Some(&b"\n"[..]));
    assert_eq!(tok.token_bytes(2).as_deref(), Some(&b"<|im_end|>"[..]));
    assert_eq!(tok.token_bytes(49152), None);
    assert_eq!(tok.token_piece(49152), None);
    // add_special changes nothing for this model (no BOS, no EOS).
    assert_eq!(tok.encode("Hello world", true, false), [19556, 905]);
}

#[test]
fn decode_skips_special_tokens_when_asked() {
    let tok = tokenizer();
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n", false, true);
    assert_eq!(tok.decode(&ids, true), "user\nhi\n");
    assert_eq!(tok.decode(&ids, false), "<|im_start|>user\nhi<|im_end|>\n");
    // Unknown ids are skipped.
    assert_eq!(tok.decode(&[6004, 49152, u32::MAX, 6004], false), "hihi");
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}

#[test]
fn long_prompts_are_fast() {
    let tok = tokenizer();
    let base = "The quick brown fox jumps over the lazy dog. fn main() { println!(\"hi\"); }\n\
                日本語のテキスト 1234567890 emoji 😀🎉 naïve café\n\n    indented\tcode;\n";
    let text = base.repeat(50_000 / base.len());
    let start = std::time::Instant::now();
    let ids = tok.encode(&text, false, true);
    let elapsed = start.elapsed();
    assert_eq!(tok.decode(&ids, false), text);
    // About 5 ms in an optimized build; the bound leaves room for a busy machine.
    assert!(
        elapsed.as_millis() < 500,
        "{} bytes took {elapsed:?}",
        text.len()
    );
}
