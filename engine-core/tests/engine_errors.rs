//! Bad models and bad requests give typed errors, and the engine keeps working afterwards.

mod common;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::engine::{Engine, EngineConfig, EngineError, Event, Request};
use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value};
use engine_core::model::{LlamaModel, ModelError};
use engine_core::quant::{GgmlType, quantize};
use engine_core::sampler::SamplingParams;

/// A tiny llama GGUF with F32 weights; `edit` may change the metadata or drop tensors.
fn tiny(edit: impl Fn(&str) -> Option<Vec<u64>>, arch: &str, with_blocks: bool) -> GgufFile {
    let (d, ffn, vocab, heads) = (64u64, 128u64, 32u64, 4u32);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(arch.into()));
    if with_blocks {
        w.set(format!("{arch}.block_count"), Value::U32(1));
    }
    w.set(format!("{arch}.embedding_length"), Value::U32(d as u32));
    w.set(
        format!("{arch}.feed_forward_length"),
        Value::U32(ffn as u32),
    );
    w.set(format!("{arch}.attention.head_count"), Value::U32(heads));
    w.set(format!("{arch}.vocab_size"), Value::U32(vocab as u32));
    let tensors: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![d, vocab]),
        ("output_norm.weight".into(), vec![d]),
        ("blk.0.attn_norm.weight".into(), vec![d]),
        ("blk.0.ffn_norm.weight".into(), vec![d]),
        ("blk.0.attn_q.weight".into(), vec![d, d]),
        ("blk.0.attn_k.weight".into(), vec![d, d]),
        ("blk.0.attn_v.weight".into(), vec![d, d]),
        ("blk.0.attn_output.weight".into(), vec![d, d]),
        ("blk.0.ffn_gate.weight".into(), vec![d, ffn]),
        ("blk.0.ffn_up.weight".into(), vec![d, ffn]),
        ("blk.0.ffn_down.weight".into(), vec![ffn, d]),
    ];
    for (name, dims) in tensors {
        let Some(dims) = edit(&name).or(Some(dims)).filter(|d| !d.is_empty()) else {
            continue;
        };
        let n: u64 = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        w.add_tensor(
            name,
            &dims,
            GgmlType::F32,
            quantize(GgmlType::F32, &data).unwrap(),
        )
        .unwrap();
    }
    GgufFile::new(ModelBytes::from_vec(w.to_bytes().unwrap())).unwrap()
}

fn load(file: &GgufFile) -> Result<LlamaModel<CpuBackend>, ModelError> {
    let b = CpuBackend::new(CpuOptions {
        threads: 1,
        isa: None,
    })
    .unwrap();
    LlamaModel::load(&b, file)
}

#[test]
fn a_well_formed_tiny_model_loads() {
    load(&tiny(|_| None, "llama", true)).unwrap();
}

#[test]
fn bad_models_are_typed_errors() {
    let missing = load(&tiny(
        |n| (n == "blk.0.attn_k.weight").then(Vec::new),
        "llama",
        true,
    ))
    .err()
    .unwrap();
    assert!(
        matches!(&missing, ModelError::Tensor { name, .. } if name == "blk.0.attn_k.weight"),
        "{missing}"
    );
    let shape = load(&tiny(
        |n| (n == "blk.0.ffn_down.weight").then(|| vec![64, 128]),
        "llama",
        true,
    ))
    .err()
    .unwrap();
    assert!(
        matches!(&shape, ModelError::Tensor { name, reason } if name == "blk.0.ffn_down.weight" && reason.contains("expected")),
        "{shape}"
    );
    let norm = load(&tiny(
        |n| (n == "output_norm.weight").then(|| vec![32]),
        "llama",
        true,
    ))
    .err()
    .unwrap();
    assert!(matches!(norm, ModelError::Tensor { .. }), "{norm}");
    let arch = load(&tiny(|_| None, "gpt2", true)).err().unwrap();
    assert!(
        matches!(&arch, ModelError::UnsupportedArchitecture(a) if a == "gpt2"),
        "{arch}"
    );
    let meta = load(&tiny(|_| None, "llama", false)).err().unwrap();
    assert!(
        matches!(&meta, ModelError::Metadata(m) if m.contains("block_count")),
        "{meta}"
    );
}

fn default_engine(context_size: usize) -> Engine<CpuBackend> {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let b = CpuBackend::new(CpuOptions::default()).unwrap();
    Engine::new(
        b,
        &file,
        EngineConfig {
            context_size,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn run(engine: &mut Engine<CpuBackend>, req: Request) -> Result<Vec<u32>, EngineError> {
    let (tx, rx) = std::sync::mpsc::channel();
    engine.add(req, Box::new(move |ev| tx.send(ev).is_ok()))?;
    while engine.has_work() {
        pollster::block_on(engine.step())?;
    }
    Ok(rx
        .try_iter()
        .filter_map(|e| {
            if let Event::Token { token, .. } = e {
                Some(token.id)
            } else {
                None
            }
        })
        .collect())
}

#[test]
fn bad_requests_are_typed_errors_and_the_engine_recovers() {
    let mut engine = default_engine(64);
    let prompt = engine.tokenizer().encode("Hello there", false, false);
    assert!(matches!(
        run(&mut engine, Request::greedy(Vec::new(), 4)),
        Err(EngineError::EmptyPrompt)
    ));
    let long = vec![prompt[0]; 64];
    match run(&mut engine, Request::greedy(long, 4)) {
        Err(EngineError::PromptTooLong {
            prompt: 64,
            context: 64,
        }) => {}
        other => panic!("expected PromptTooLong, got {other:?}"),
    }
    assert!(matches!(
        run(&mut engine, Request::greedy(vec![1, 999_999], 4)),
        Err(EngineError::Model(_))
    ));
    let mut bad = Request::greedy(prompt.clone(), 4);
    bad.params = SamplingParams {
        temperature: f32::NAN,
        ..SamplingParams::default()
    };
    assert!(matches!(
        run(&mut engine, bad),
        Err(EngineError::Sampler(_))
    ));
    assert!(
        engine
            .tokenizer()
            .encode_bytes(&[0xff, 0xfe, b'a'], false, false)
            .is_err()
    );
    // Still healthy, and nothing leaked.
    assert_eq!(
        run(&mut engine, Request::greedy(prompt.clone(), 4))
            .unwrap()
            .len(),
        4
    );
    assert_eq!(engine.kv_usage(), 0.0);
    assert_eq!((engine.running(), engine.waiting()), (0, 0));
    // A generation that runs into the context size ends there (finish reason `length`).
    let got = run(&mut engine, {
        let mut r = Request::greedy(prompt.clone(), 1000);
        r.ignore_eos = true;
        r
    })
    .unwrap();
    assert_eq!(got.len(), 64 - prompt.len());
}
