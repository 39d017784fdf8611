//! Feeds arbitrary bytes to the default model's tokenizer. Invalid UTF-8 must be a typed error;
//! valid text must encode without panicking, decode to text that survives another round trip
//! unchanged (characters the vocabulary cannot spell, such as bytes it has no token for, are
//! dropped as llama.cpp drops them), and stream-decode to the same text. The model is read from
//! `$TANDEM_MODEL`, else `~/.cache/tandem/models/`.

#![no_main]

use std::sync::OnceLock;

use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::tokenizer::{StreamDecoder, Tokenizer};
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = std::env::var_os("TANDEM_MODEL").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
        let bytes = std::fs::read(&path).expect("the default model (run `cargo xtask setup`)");
        let file = GgufFile::new(ModelBytes::from_vec(bytes)).expect("a valid model");
        Tokenizer::from_metadata(file.metadata()).expect("its tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    for parse_special in [false, true] {
        match tok.encode_bytes(data, false, parse_special) {
            Err(_) => assert!(std::str::from_utf8(data).is_err(), "valid UTF-8 was rejected"),
            Ok(ids) => {
                let text = std::str::from_utf8(data).expect("only valid UTF-8 is accepted");
                assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
                if !parse_special {
                    let once = tok.decode(&ids, false);
                    assert!(once.len() <= text.len(), "decoding added text");
                    let twice = tok.decode(&tok.encode(&once, false, false), false);
                    assert_eq!(twice, once, "a decoded text does not round-trip");
                }
                let mut stream = StreamDecoder::with_special(true);
                let mut streamed: String = ids.iter().map(|&id| stream.push(tok, id)).collect();
                streamed.push_str(&stream.finish());
                assert_eq!(streamed, tok.decode(&ids, false));
            }
        }
    }
});
