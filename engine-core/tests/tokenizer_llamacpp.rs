//! Differential cases recorded from llama.cpp's `llama-tokenize` on random text (see the
//! fixture's `source`): the default model, the default model's vocabulary under other
//! pre-tokenizers, and a tiny SentencePiece vocabulary built here.

mod common;

use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value};
use engine_core::tokenizer::Tokenizer;
use serde_json::Value as Json;

fn fixture() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/llamacpp_tokenize.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Checks every case; returns the number checked.
fn check(name: &str, tok: &Tokenizer, cases: &Json) -> usize {
    let mut failures = Vec::new();
    let cases = cases.as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        for (key, parse_special) in [("special", true), ("plain", false)] {
            let want = ids(&case[key]);
            let got = tok.encode(text, false, parse_special);
            if got != want {
                failures.push(format!(
                    "{text:?} parse_special={parse_special}\n  got  {got:?}\n  want {want:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases.len() * 2
}

fn default_file() -> GgufFile {
    GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap()
}

#[test]
fn default_model_random_text() {
    let tok = Tokenizer::from_metadata(default_file().metadata()).unwrap();
    let n = check("smollm", &tok, &fixture()["smollm"]);
    assert_eq!(n, 606);
}

#[test]
fn other_pre_tokenizers_random_text() {
    let file = default_file();
    let fixture = fixture();
    let pre = fixture["pre"].as_object().unwrap();
    assert_eq!(pre.len(), 21);
    for (name, cases) in pre {
        let mut w = GgufWriter::new();
        for (k, v) in file.metadata().iter() {
            if k.starts_with("tokenizer.ggml.") {
                w.set(k, v.clone());
            }
        }
        w.set("tokenizer.ggml.pre", Value::String(name.clone()));
        let f = GgufFile::new(ModelBytes::from_vec(w.to_bytes().unwrap())).unwrap();
        let tok = Tokenizer::from_metadata(f.metadata()).unwrap();
        assert_eq!(check(name, &tok, cases), 80);
    }
}

#[test]
fn tiny_sentencepiece_random_text() {
    let pieces: &[(&str, f32)] = &[
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -3.0),
        ("c", -4.0),
        ("ab", -0.5),
        ("bc", -0.2),
        ("▁a", -1.5),
        ("abc", -0.1),
        ("▁ab", -0.3),
        ("aa", -0.4),
        ("▁▁", -0.6),
        ("s>", -0.7),
        ("</", -0.8),
        ("é", -5.0),
        ("<s", -0.9),
    ];
    let tok = common::tiny_vocab::spm(pieces, &[]);
    assert_eq!(check("spm", &tok, &fixture()["spm"]), 800);
}
