//! Fill-in-the-middle through `tandem serve`: `/v1/completions` with `suffix` and llama.cpp's
//! `/infill` (plain and streamed, with other files as context). The default model has no FIM
//! markers, so the test writes a copy of it whose metadata names three of its control tokens as
//! the markers (`tokenizer.ggml.fim_*_token_id`, as llama.cpp's converter writes them): the
//! answers are not meaningful code, but the prompt must be exactly the FIM prompt, which the
//! test checks by sending that prompt's token ids to `/v1/completions` and comparing the greedy
//! answers.

mod common;

use std::path::{Path, PathBuf};

use common::{Server, default_model, parse_sse, scratch_dir};
use engine_core::gguf::{Gguf, GgufFile, GgufWriter, ModelBytes, Value as Meta};
use engine_core::infill::{self, ExtraFile, Infill};
use engine_core::tokenizer::Tokenizer;
use serde_json::json;

const PREFIX: &str = "def add(a, b):\n    ";
const SUFFIX: &str = "\n\nprint(add(1, 2))\n";

/// A copy of the default model with FIM markers.
fn fim_model(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(default_model()).unwrap();
    let gguf = Gguf::parse(&bytes).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in gguf.metadata.iter() {
        w.set(k, v.clone());
    }
    let file = GgufFile::new(ModelBytes::from_vec(bytes.clone())).unwrap();
    let tok = Tokenizer::from_metadata(file.metadata()).unwrap();
    for (key, piece) in [
        ("tokenizer.ggml.fim_pre_token_id", "<jupyter_start>"),
        ("tokenizer.ggml.fim_suf_token_id", "<jupyter_text>"),
        ("tokenizer.ggml.fim_mid_token_id", "<jupyter_code>"),
    ] {
        let id = tok
            .token_id(piece)
            .unwrap_or_else(|| panic!("{piece} missing"));
        w.set(key, Meta::U32(id));
    }
    for t in &gguf.tensors {
        let at = (gguf.data_offset + t.offset) as usize;
        let data = bytes[at..at + t.n_bytes as usize].to_vec();
        w.add_tensor(t.name.clone(), &t.dims, t.ggml_type, data)
            .unwrap();
    }
    let path = dir.join("smollm2-fim.gguf");
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

fn tokenizer(path: &Path) -> Tokenizer {
    let file = GgufFile::new(ModelBytes::from_vec(std::fs::read(path).unwrap())).unwrap();
    Tokenizer::from_metadata(file.metadata()).unwrap()
}

#[tokio::test]
async fn a_model_without_markers_says_so() {
    let server = Server::start(&[]);
    let (status, body) = server
        .post(
            "/v1/completions",
            &json!({"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 4}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "suffix");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("fill-in-the-middle"), "{message}");
    let (status, body) = server
        .post(
            "/infill",
            &json!({"input_prefix": PREFIX, "input_suffix": SUFFIX}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // An empty suffix is a plain completion.
    let (status, body) = server
        .post(
            "/v1/completions",
            &json!({"prompt": PREFIX, "suffix": "", "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn suffix_and_infill_build_the_fill_in_the_middle_prompt() {
    let dir = scratch_dir("fim");
    let model = fim_model(&dir);
    let tok = tokenizer(&model);
    let server = Server::start_raw(&["--model", model.to_str().unwrap()], &[]);

    // The prompt the engine must see, and the greedy answer to it.
    let plain = Infill {
        prefix: PREFIX,
        suffix: SUFFIX,
        ..Infill::default()
    };
    let ids = infill::prompt(&tok, &plain, 10_000).unwrap();
    let (status, want) = server
        .post(
            "/v1/completions",
            &json!({"prompt": ids, "max_tokens": 12, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{want}");
    let want_text = want["choices"][0]["text"].as_str().unwrap().to_owned();
    assert!(!want_text.is_empty());

    // /v1/completions with a suffix.
    let (status, got) = server
        .post(
            "/v1/completions",
            &json!({"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 12, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], want_text.as_str());
    assert_eq!(got["usage"]["prompt_tokens"], ids.len());
    let (status, body) = server
        .post(
            "/v1/completions",
            &json!({"prompt": [PREFIX, PREFIX], "suffix": SUFFIX}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // /infill, as llama.vim sends it: the typed text is the prefix's end.
    let split = PREFIX.len() - 4;
    let request = json!({
        "input_prefix": &PREFIX[..split],
        "prompt": &PREFIX[split..],
        "input_suffix": SUFFIX,
        "n_predict": 12,
        "temperature": 0,
        "top_k": 40,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": true,
        "t_max_prompt_ms": 500,
    });
    let (status, got) = server.post("/infill", &request).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["content"], want_text.as_str());
    assert_eq!(got["stop"], true);
    assert_eq!(got["tokens_evaluated"], ids.len());
    assert_eq!(got["tokens_predicted"], want["usage"]["completion_tokens"]);
    assert!(got["timings"]["predicted_per_second"].as_f64().unwrap() > 0.0);

    // Streamed: partial contents, then a last event with the counts.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let resp = server
        .client
        .post(server.url("/infill"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = parse_sse(&resp.text().await.unwrap());
    let (last, partial) = events.split_last().unwrap();
    let text: String = partial
        .iter()
        .map(|e| {
            assert_eq!(e["stop"], false, "{e}");
            e["content"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, want_text);
    assert_eq!(last["stop"], true, "{last}");
    assert_eq!(last["tokens_evaluated"], ids.len());

    // Other files go first, after the repository markers the vocabulary has.
    let files = [ExtraFile {
        filename: "util.py".into(),
        text: "import math\n".into(),
    }];
    let with_files = infill::prompt(
        &tok,
        &Infill {
            extra: &files,
            ..plain
        },
        10_000,
    )
    .unwrap();
    assert!(with_files.len() > ids.len());
    let mut request = request;
    request["input_extra"] = json!([{"filename": "util.py", "text": "import math\n"}]);
    let (status, got) = server.post("/infill", &request).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["tokens_evaluated"], with_files.len());
    let (_, want) = server
        .post(
            "/v1/completions",
            &json!({"prompt": with_files, "max_tokens": 12, "temperature": 0}),
        )
        .await;
    assert_eq!(got["content"], want["choices"][0]["text"]);

    // Bad input gets llama.cpp-independent, OpenAI-shaped errors.
    let (status, body) = server.post("/infill", &json!({"input_prefix": 5})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].is_string());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
