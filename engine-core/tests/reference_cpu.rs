//! The CPU backend against llama.cpp's reference outputs on the default model, judged by the
//! rules in `shared/reference/README.md`.

mod common;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::backend::{Backend, KvDtype, KvLayout, LogitsWanted, SeqChunk, StepInput};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::kv_cache::{BlockAllocator, BlockTable};
use engine_core::model::{LlamaModel, Scratch};

fn teacher_forced_logits(
    b: &CpuBackend,
    model: &LlamaModel<CpuBackend>,
    ids: &[u32],
    from: usize,
    dtype: KvDtype,
) -> Vec<Vec<f32>> {
    let c = model.config();
    let bs = 16;
    let layout = KvLayout {
        n_layers: c.n_layers,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: bs,
        n_blocks: ids.len().div_ceil(bs),
        dtype,
    };
    let mut kv = b.alloc_kv(&layout).unwrap();
    let mut alloc = BlockAllocator::new(layout.n_blocks, bs);
    let mut table = BlockTable::new();
    table.reserve(&mut alloc, ids.len()).unwrap();
    let step = StepInput::build(
        &[SeqChunk {
            start_pos: 0,
            tokens: ids,
            block_table: table.blocks(),
            logits: LogitsWanted::All,
        }],
        bs,
        &c.rope,
    );
    let mut scratch = Scratch::default();
    b.install(|| model.forward(b, &step, &mut kv, &mut scratch))
        .unwrap();
    let v = c.vocab_size;
    let logits = pollster_block_on(b.read(scratch.logits().unwrap(), ids.len() * v)).unwrap();
    (from..ids.len())
        .map(|r| logits[r * v..(r + 1) * v].to_vec())
        .collect()
}

fn pollster_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the CPU backend's futures are always ready"),
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn teacher_forced_agreement_and_logit_error_f32_cache() {
    judge_teacher_forced(KvDtype::F32);
}

#[test]
fn teacher_forced_agreement_and_logit_error_f16_cache() {
    judge_teacher_forced(KvDtype::F16);
}

fn judge_teacher_forced(dtype: KvDtype) {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let isa = std::env::var("TANDEM_ISA").ok().and_then(|n| {
        engine_core::backend::cpu::Isa::available()
            .into_iter()
            .find(|i| i.name() == n)
    });
    let b = CpuBackend::new(CpuOptions { threads: 0, isa }).unwrap();
    let model = LlamaModel::load(&b, &file).unwrap();
    let reference = common::reference_json("generate.json");
    let (mut confident, mut agree) = (0, 0);
    let (mut err_sum, mut err_n, mut err_max) = (0.0f64, 0usize, 0.0f64);
    for case in reference["cases"].as_array().unwrap() {
        let prompt: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let generated: Vec<u32> = case["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
        let logits =
            teacher_forced_logits(&b, &model, &ids[..ids.len() - 1], prompt.len() - 1, dtype);
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let row = &logits[i];
            let margin = step["margin"].as_f64().unwrap();
            let top1 = step["top5"][0][0].as_u64().unwrap() as u32;
            if margin >= 0.3 {
                confident += 1;
                if argmax(row) == top1 {
                    agree += 1;
                }
            }
            for pair in step["exact_top5"].as_array().unwrap() {
                let id = pair[0].as_u64().unwrap() as usize;
                let want = pair[1].as_f64().unwrap();
                let e = (row[id] as f64 - want).abs();
                err_sum += e;
                err_n += 1;
                err_max = err_max.max(e);
            }
        }
    }
    let rate = agree as f64 / confident as f64;
    let mean = err_sum / err_n as f64;
    eprintln!(
        "agreement {agree}/{confident} = {rate:.4}; logit error mean {mean:.4} max {err_max:.4}"
    );
    assert!(rate >= 0.98, "teacher-forced agreement {rate:.4} < 0.98");
    assert!(mean <= 0.25, "mean logit error {mean:.4} > 0.25");
    assert!(err_max <= 1.25, "max logit error {err_max:.4} > 1.25");
}

#[test]
fn free_running_greedy_keeps_stable_prefixes() {
    use engine_core::engine::{Engine, EngineConfig, Event, Request};
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let b = CpuBackend::new(CpuOptions::default()).unwrap();
    let mut engine = Engine::new(
        b,
        &file,
        EngineConfig {
            context_size: 512,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let reference = common::reference_json("generate.json");
    for case in reference["cases"].as_array().unwrap() {
        let prompt: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<u32> = case["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let stable = case["stable_prefix_len"].as_u64().unwrap() as usize;
        let (tx, rx) = std::sync::mpsc::channel();
        engine
            .add(
                Request::greedy(prompt, want.len()),
                Box::new(move |ev| tx.send(ev).is_ok()),
            )
            .unwrap();
        while engine.has_work() {
            pollster_block_on(engine.step()).unwrap();
        }
        let got: Vec<u32> = rx
            .try_iter()
            .filter_map(|ev| match ev {
                Event::Token { token, .. } => Some(token.id),
                _ => None,
            })
            .collect();
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

#[test]
#[ignore]
fn isa_logit_differences() {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let reference = common::reference_json("generate.json");
    let case = &reference["cases"][1];
    let prompt: Vec<u32> = case["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut results = Vec::new();
    for isa in engine_core::backend::cpu::Isa::available() {
        let b = CpuBackend::new(CpuOptions {
            threads: 1,
            isa: Some(isa),
        })
        .unwrap();
        let model = LlamaModel::load(&b, &file).unwrap();
        let l = teacher_forced_logits(&b, &model, &prompt, 0, KvDtype::F32);
        results.push((isa, l));
    }
    let (_, base) = results.last().unwrap();
    for (isa, l) in &results {
        let mut worst = (0.0f32, 0, 0);
        for (r, (a, b)) in l.iter().zip(base).enumerate() {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if (x - y).abs() > worst.0 {
                    worst = ((x - y).abs(), r, i);
                }
            }
        }
        eprintln!("{}: max |logit - scalar| = {:?}", isa.name(), worst);
    }
}
