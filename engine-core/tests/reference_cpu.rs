//! The CPU backend against llama.cpp's reference outputs on the default model, judged by the
//! rules in `tests/reference/README.md`, with an f32 and an f16 KV cache, and on every
//! instruction set with `TANDEM_ISA` (e.g. `TANDEM_ISA=scalar`).

mod common;

use common::judge::{Judgement, generated_ids, ids, teacher_forced_logits};
use engine_core::backend::KvDtype;
use engine_core::backend::cpu::{CpuBackend, CpuOptions, Isa};
use engine_core::engine::{Engine, EngineConfig, Request};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::model::LlamaModel;

fn backend() -> CpuBackend {
    let isa = std::env::var("TANDEM_ISA")
        .ok()
        .and_then(|n| Isa::available().into_iter().find(|i| i.name() == n));
    CpuBackend::new(CpuOptions { threads: 0, isa }).unwrap()
}

fn judge_teacher_forced(dtype: KvDtype) {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let b = backend();
    let model = LlamaModel::load(&b, &file).unwrap();
    let reference = common::reference_json("generate.json");
    let j = Judgement::of_cases(&reference, |ids, from| {
        teacher_forced_logits(&b, &model, ids, from, dtype)
    });
    j.check(
        &format!("cpu {}, {dtype:?} cache", b.isa().name()),
        0.25,
        1.25,
    );
}

#[test]
fn teacher_forced_agreement_and_logit_error_f32_cache() {
    judge_teacher_forced(KvDtype::F32);
}

#[test]
fn teacher_forced_agreement_and_logit_error_f16_cache() {
    judge_teacher_forced(KvDtype::F16);
}

#[test]
fn free_running_greedy_keeps_stable_prefixes() {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let config = EngineConfig {
        context_size: 512,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(backend(), &file, config).unwrap();
    let reference = common::reference_json("generate.json");
    for case in reference["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["generated_ids"]);
        let stable = case["stable_prefix_len"].as_u64().unwrap() as usize;
        let (tx, rx) = std::sync::mpsc::channel();
        engine
            .add(
                Request::greedy(prompt, want.len()),
                Box::new(move |ev| tx.send(ev).is_ok()),
            )
            .unwrap();
        while engine.has_work() {
            pollster::block_on(engine.step()).unwrap();
        }
        let got = generated_ids(&rx);
        assert!(
            got.len() >= stable,
            "generated {} tokens, fewer than the stable prefix {stable}",
            got.len()
        );
        assert_eq!(
            &got[..stable],
            &want[..stable],
            "stable prefix of {:?}",
            case["messages"]
        );
    }
}

/// How far apart the logits of the instruction sets are (a diagnostic; run with `--ignored`).
#[test]
#[ignore]
fn isa_logit_differences() {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let reference = common::reference_json("generate.json");
    let prompt = ids(&reference["cases"][1]["prompt_ids"]);
    let mut results = Vec::new();
    for isa in Isa::available() {
        let b = CpuBackend::new(CpuOptions {
            threads: 1,
            isa: Some(isa),
        })
        .unwrap();
        let model = LlamaModel::load(&b, &file).unwrap();
        results.push((
            isa,
            teacher_forced_logits(&b, &model, &prompt, 0, KvDtype::F32),
        ));
    }
    let (_, base) = results.last().unwrap();
    for (isa, l) in &results {
        let worst = l
            .iter()
            .zip(base)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        eprintln!("{}: max |logit - scalar| = {worst}", isa.name());
    }
}
