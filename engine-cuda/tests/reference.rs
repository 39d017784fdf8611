//! The CUDA backend against llama.cpp's reference outputs on the default model, judged by the
//! rules in `tests/reference/README.md` (as the CPU and WebGPU backends are): teacher-forced
//! agreement and logit error with f32 and f16 KV caches, and free-running greedy through the
//! engine's scheduler with every case batched together. Without a GPU the tests say so and
//! pass; `TANDEM_REQUIRE_CUDA=1` makes a missing GPU a failure.

#[path = "../../engine-core/tests/common/mod.rs"]
mod common;
mod gpu;

use common::judge::{Judgement, batched_stable_prefixes, teacher_forced_logits};
use engine_core::backend::KvDtype;
use engine_core::engine::{Engine, EngineConfig};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::model::LlamaModel;
use gpu::cuda;

#[test]
fn teacher_forced_agreement_and_logit_error() {
    let Some(b) = cuda() else { return };
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let reference = common::reference_json("generate.json");
    let model = LlamaModel::load(&b, &file).unwrap();
    for dtype in [KvDtype::F32, KvDtype::F16] {
        let j = Judgement::of_cases(&reference, |ids, from| {
            teacher_forced_logits(&b, &model, ids, from, dtype)
        });
        j.check(&format!("cuda, {dtype:?} cache"), 0.25, 1.25);
    }
}

#[test]
fn free_running_greedy_batched_keeps_stable_prefixes() {
    let Some(b) = cuda() else { return };
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let reference = common::reference_json("generate.json");
    let mut engine = Engine::new(
        b,
        &file,
        EngineConfig {
            context_size: 512,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let widest = batched_stable_prefixes(&mut engine, &reference, "cuda", |_, len| len);
    eprintln!("cuda: batched free-running greedy kept every stable prefix (widest step {widest})");
}
