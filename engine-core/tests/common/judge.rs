//! Judging a backend against llama.cpp's reference outputs by the rules of
//! `tests/reference/README.md`: teacher-forced agreement at confident positions and logit error
//! against the exact float64 pass.

use engine_core::backend::{Backend, KvDtype, KvLayout, LogitsWanted, SeqChunk, StepInput};
use engine_core::kv_cache::{BlockAllocator, BlockTable};
use engine_core::model::{LlamaModel, Scratch};
use serde_json::Value;

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The logits of positions `from..ids.len()` when `ids` is fed in one prefill step, with a KV
/// cache of the given element type.
pub fn teacher_forced_logits<B: Backend>(
    b: &B,
    model: &LlamaModel<B>,
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
    let mut step = StepInput::build(
        &[SeqChunk {
            start_pos: 0,
            tokens: ids,
            block_table: table.blocks(),
            logits: LogitsWanted::All,
            hidden: 0..0,
        }],
        bs,
        &c.rope,
    );
    // Only the judged positions need logits.
    step.output_rows.retain(|&r| r as usize >= from);
    step.n_logits = step.output_rows.len();
    let mut scratch = Scratch::default();
    b.scope(|| model.forward(b, &step, &mut kv, &mut scratch))
        .unwrap();
    let v = c.vocab_size;
    let n = ids.len() - from;
    let logits = pollster::block_on(b.read(scratch.logits().unwrap(), n * v)).unwrap();
    logits.chunks_exact(v).map(<[f32]>::to_vec).collect()
}

/// Running totals of the judging rules over the reference cases.
#[derive(Default)]
pub struct Judgement {
    confident: u32,
    agree: u32,
    err_sum: f64,
    err_n: usize,
    err_max: f64,
}

impl Judgement {
    /// Judges every case of `generate.json`, getting each case's logits (one row per generated
    /// position) from `logits(prompt + generated[..len - 1], prompt.len() - 1)`.
    pub fn of_cases(
        reference: &Value,
        mut logits: impl FnMut(&[u32], usize) -> Vec<Vec<f32>>,
    ) -> Judgement {
        let mut j = Judgement::default();
        for case in reference["cases"].as_array().unwrap() {
            let prompt = ids(&case["prompt_ids"]);
            let generated = ids(&case["generated_ids"]);
            let all: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
            let rows = logits(&all[..all.len() - 1], prompt.len() - 1);
            j.add_case(case, &rows);
        }
        j
    }

    /// Adds one case's generated positions.
    pub fn add_case(&mut self, case: &Value, rows: &[Vec<f32>]) {
        for (step, row) in case["steps"].as_array().unwrap().iter().zip(rows) {
            if step["margin"].as_f64().unwrap() >= 0.3 {
                self.confident += 1;
                if argmax(row) == step["top5"][0][0].as_u64().unwrap() as u32 {
                    self.agree += 1;
                }
            }
            for pair in step["exact_top5"].as_array().unwrap() {
                let e = (f64::from(row[pair[0].as_u64().unwrap() as usize])
                    - pair[1].as_f64().unwrap())
                .abs();
                self.err_sum += e;
                self.err_n += 1;
                self.err_max = self.err_max.max(e);
            }
        }
    }

    /// Prints the figures and asserts the rules: agreement >= 98% of confident positions, mean
    /// and maximum logit error within the bounds.
    pub fn check(&self, label: &str, mean_bound: f64, max_bound: f64) {
        let rate = f64::from(self.agree) / f64::from(self.confident);
        let mean = self.err_sum / self.err_n as f64;
        eprintln!(
            "[{label}] agreement {}/{} = {rate:.4}; logit error mean {mean:.4} max {:.4}",
            self.agree, self.confident, self.err_max
        );
        assert!(
            rate >= 0.98,
            "[{label}] teacher-forced agreement {rate:.4} < 0.98"
        );
        assert!(
            mean <= mean_bound,
            "[{label}] mean logit error {mean:.4} > {mean_bound}"
        );
        assert!(
            self.err_max <= max_bound,
            "[{label}] max logit error {:.4} > {max_bound}",
            self.err_max
        );
    }
}

/// Free-running greedy through `engine`'s scheduler with every reference case added at once
/// (decode steps carry several sequences), each generating `budget(stable_prefix_len,
/// generated_len)` tokens; checks that each keeps its stable prefix. Returns the most sequences
/// one decode step carried.
pub fn batched_stable_prefixes<B: Backend>(
    engine: &mut engine_core::engine::Engine<B>,
    reference: &Value,
    label: &str,
    budget: impl Fn(usize, usize) -> usize,
) -> usize {
    use engine_core::engine::Request;
    let cases = reference["cases"].as_array().expect("cases");
    let mut outputs = Vec::new();
    for case in cases {
        let (tx, rx) = std::sync::mpsc::channel();
        let want = ids(&case["generated_ids"]);
        let stable = case["stable_prefix_len"].as_u64().unwrap() as usize;
        engine
            .add(
                Request::greedy(ids(&case["prompt_ids"]), budget(stable, want.len())),
                Box::new(move |ev| tx.send(ev).is_ok()),
            )
            .unwrap();
        outputs.push(rx);
    }
    let mut widest = 0;
    while engine.has_work() {
        let report = pollster::block_on(engine.step()).unwrap();
        widest = widest.max(report.decoded);
    }
    assert!(widest > 1, "[{label}] decode steps never batched sequences");
    for (case, rx) in cases.iter().zip(outputs) {
        let want = ids(&case["generated_ids"]);
        let stable = case["stable_prefix_len"].as_u64().unwrap() as usize;
        let got = generated_ids(&rx);
        assert!(
            got.len() >= stable,
            "[{label}] fewer tokens than the stable prefix"
        );
        assert_eq!(
            &got[..stable],
            &want[..stable],
            "[{label}] stable prefix of {:?}",
            case["messages"]
        );
    }
    widest
}

/// The ids of the tokens a sequence generated, from the events it sent so far.
pub fn generated_ids(rx: &std::sync::mpsc::Receiver<engine_core::engine::Event>) -> Vec<u32> {
    rx.try_iter()
        .filter_map(|ev| match ev {
            engine_core::engine::Event::Token { token, .. } => Some(token.id),
            _ => None,
        })
        .collect()
}
