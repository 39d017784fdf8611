//! Embeddings on the default model: the engine's pooled, normalized final hidden states agree
//! with an independent float64 forward pass over the GGUF's dequantized weights (itself checked
//! against the float64 logits of the reference outputs), and batching, chunked prefill and
//! preemption do not change them.

mod common;

use std::sync::mpsc;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::engine::{Engine, EngineConfig, Event, FinishReason, Request};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::model::{ModelConfig, Pooling};
use engine_core::quant::dequantize_to_vec;

fn file() -> GgufFile {
    GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap()
}

/// The float64 model: every weight dequantized (exactly, as stored) and widened.
struct Exact {
    c: ModelConfig,
    tok_embd: Vec<f64>,
    output_norm: Vec<f64>,
    layers: Vec<[Vec<f64>; 9]>,
}

fn weights(file: &GgufFile, name: &str) -> Vec<f64> {
    let (info, data) = file.tensor(name).unwrap();
    dequantize_to_vec(info.ggml_type, data)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

impl Exact {
    fn load(file: &GgufFile) -> Exact {
        let c = ModelConfig::from_metadata(file.metadata()).unwrap();
        assert!(file.gguf().tensor("output.weight").is_none(), "tied output");
        let layers = (0..c.n_layers)
            .map(|l| {
                [
                    "attn_norm",
                    "attn_q",
                    "attn_k",
                    "attn_v",
                    "attn_output",
                    "ffn_norm",
                    "ffn_gate",
                    "ffn_up",
                    "ffn_down",
                ]
                .map(|t| weights(file, &format!("blk.{l}.{t}.weight")))
            })
            .collect();
        Exact {
            tok_embd: weights(file, "token_embd.weight"),
            output_norm: weights(file, "output_norm.weight"),
            layers,
            c,
        }
    }

    /// The final normalized hidden state of every token of `ids`.
    fn hidden(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        let c = &self.c;
        let (d, hd, nh, nkv) = (c.d_model, c.head_dim, c.n_heads, c.n_kv_heads);
        let eps = f64::from(c.norm_eps);
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .map(|&t| self.tok_embd[t as usize * d..(t as usize + 1) * d].to_vec())
            .collect();
        for [an, wq, wk, wv, wo, fnorm, wg, wu, wd] in &self.layers {
            let xn: Vec<Vec<f64>> = x.iter().map(|r| rms_norm(r, an, eps)).collect();
            let mut q: Vec<Vec<f64>> = xn.iter().map(|r| matvec(wq, r)).collect();
            let mut k: Vec<Vec<f64>> = xn.iter().map(|r| matvec(wk, r)).collect();
            let v: Vec<Vec<f64>> = xn.iter().map(|r| matvec(wv, r)).collect();
            for (pos, (q, k)) in q.iter_mut().zip(&mut k).enumerate() {
                rope(q, nh, hd, pos, c);
                rope(k, nkv, hd, pos, c);
            }
            let scale = 1.0 / (hd as f64).sqrt();
            for (i, xi) in x.iter_mut().enumerate() {
                let mut attn = vec![0.0; nh * hd];
                for h in 0..nh {
                    let kh = h / (nh / nkv);
                    let qh = &q[i][h * hd..(h + 1) * hd];
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| dot(qh, &k[j][kh * hd..(kh + 1) * hd]) * scale)
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    for (j, wj) in w.iter().enumerate() {
                        for e in 0..hd {
                            attn[h * hd + e] += wj / sum * v[j][kh * hd + e];
                        }
                    }
                }
                for (a, b) in xi.iter_mut().zip(matvec(wo, &attn)) {
                    *a += b;
                }
                let xn = rms_norm(xi, fnorm, eps);
                let g = matvec(wg, &xn);
                let u = matvec(wu, &xn);
                let act: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                for (a, b) in xi.iter_mut().zip(matvec(wd, &act)) {
                    *a += b;
                }
            }
        }
        x.iter()
            .map(|r| rms_norm(r, &self.output_norm, eps))
            .collect()
    }

    /// The logits of a final hidden state (the output matrix is the embedding table).
    fn logits(&self, h: &[f64]) -> Vec<f64> {
        matvec(&self.tok_embd, h)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks_exact(x.len()).map(|row| dot(row, x)).collect()
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * s * w).collect()
}

/// Llama's RoPE (adjacent pairs), in float64.
fn rope(x: &mut [f64], heads: usize, hd: usize, pos: usize, c: &ModelConfig) {
    let n = c.rope.n_dims;
    let base = f64::from(c.rope.freq_base);
    for h in 0..heads {
        for i in (0..n).step_by(2) {
            let theta = pos as f64 * base.powf(-(i as f64) / n as f64);
            let (s, co) = theta.sin_cos();
            let (a, b) = (x[h * hd + i], x[h * hd + i + 1]);
            x[h * hd + i] = a * co - b * s;
            x[h * hd + i + 1] = a * s + b * co;
        }
    }
}

fn pool(hidden: &[Vec<f64>], p: Pooling) -> Vec<f64> {
    let v = match p {
        Pooling::Mean => {
            let mut m = vec![0.0; hidden[0].len()];
            for r in hidden {
                for (a, b) in m.iter_mut().zip(r) {
                    *a += b / hidden.len() as f64;
                }
            }
            m
        }
        Pooling::Cls => hidden[0].clone(),
        Pooling::Last => hidden[hidden.len() - 1].clone(),
    };
    let norm = dot(&v, &v).sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// Runs the requests together; returns each one's embedding.
fn embed_all(
    engine: &mut Engine<CpuBackend>,
    reqs: Vec<Request>,
) -> (Vec<Option<Vec<f32>>>, usize) {
    let mut rxs = Vec::new();
    for req in reqs {
        let (tx, rx) = mpsc::channel();
        engine
            .add(req, Box::new(move |ev| tx.send(ev).is_ok()))
            .unwrap();
        rxs.push(rx);
    }
    let mut preempted = 0;
    while engine.has_work() {
        preempted += pollster::block_on(engine.step()).unwrap().preempted;
    }
    let out = rxs
        .iter()
        .map(|rx| {
            let mut emb = None;
            let mut finished = false;
            for ev in rx.try_iter() {
                match ev {
                    Event::Embedding(v) => {
                        assert!(emb.is_none(), "one embedding per request");
                        emb = Some(v);
                    }
                    Event::Finished {
                        reason,
                        completion_tokens,
                        ..
                    } => {
                        assert_ne!(reason, FinishReason::Cancelled);
                        finished = true;
                        if emb.is_some() {
                            assert_eq!(completion_tokens, 0);
                        }
                    }
                    Event::Failed(e) => panic!("failed: {e}"),
                    _ => {}
                }
            }
            assert!(finished);
            emb
        })
        .collect();
    (out, preempted)
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let a: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
    dot(&a, b) / (dot(&a, &a).sqrt() * dot(b, b).sqrt())
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn embeddings_match_a_float64_forward_pass() {
    let file = file();
    let exact = Exact::load(&file);
    let reference = common::reference_json("generate.json");
    let case = &reference["cases"][0];
    let ids: Vec<u32> = case["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let hidden = exact.hidden(&ids);

    // The float64 pass is the reference's: its next-token logits are the recorded exact ones.
    let logits = exact.logits(&hidden[ids.len() - 1]);
    for pair in case["steps"][0]["exact_top5"].as_array().unwrap() {
        let (id, want) = (
            pair[0].as_u64().unwrap() as usize,
            pair[1].as_f64().unwrap(),
        );
        assert!(
            (logits[id] - want).abs() < 2e-3,
            "float64 logit of {id}: {} vs the reference's {want}",
            logits[id]
        );
    }

    let backend = CpuBackend::new(CpuOptions::default()).unwrap();
    let mut engine = Engine::new(backend, &file, EngineConfig::default()).unwrap();
    assert_eq!(engine.model_config().pooling, Pooling::Mean);
    for p in [Pooling::Mean, Pooling::Last, Pooling::Cls] {
        let want = pool(&hidden, p);
        let (got, _) = embed_all(&mut engine, vec![Request::embedding(ids.clone(), p)]);
        let got = got[0].clone().expect("an embedding");
        assert_eq!(got.len(), exact.c.d_model);
        let norm: f64 = got.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        let (cos, err) = (cosine(&got, &want), max_abs(&got, &want));
        eprintln!("{}: cosine {cos:.6}, max abs error {err:.5}", p.name());
        // 8-bit activations and f16 keys/values against exact arithmetic.
        assert!(cos > 0.9999, "{}: cosine {cos}", p.name());
        assert!(err < 0.003, "{}: max abs error {err}", p.name());
    }
}

#[test]
fn batching_chunking_and_preemption_leave_embeddings_unchanged() {
    let file = file();
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Paris is the capital of France.",
        &"Rust is a systems programming language focused on safety. ".repeat(12),
        "A",
    ];
    let alone_cfg = EngineConfig {
        context_size: 512,
        ..EngineConfig::default()
    };
    let backend = CpuBackend::new(CpuOptions::default()).unwrap();
    let mut alone = Engine::new(backend, &file, alone_cfg).unwrap();
    alone.set_prefix_caching(true);
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| alone.tokenizer().encode(t, false, false))
        .collect();
    let singles: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            embed_all(
                &mut alone,
                vec![Request::embedding(p.clone(), Pooling::Mean)],
            )
            .0[0]
                .clone()
                .unwrap()
        })
        .collect();
    // The same prompt again is computed in full (a cached prefix has no hidden states).
    let again = embed_all(
        &mut alone,
        vec![Request::embedding(prompts[2].clone(), Pooling::Mean)],
    );
    assert_eq!(again.0[0].as_ref().unwrap(), &singles[2]);

    // Small chunks and a small cache, beside greedy generations that outgrow it.
    let tight = EngineConfig {
        context_size: 512,
        max_seqs: 8,
        max_batch_tokens: 24,
        kv_tokens: 16 * 12,
        block_size: 16,
        ..EngineConfig::default()
    };
    let backend = CpuBackend::new(CpuOptions::default()).unwrap();
    let mut busy = Engine::new(backend, &file, tight).unwrap();
    let mut reqs = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        reqs.push(Request {
            ignore_eos: true,
            ..Request::greedy(prompts[i % 2].clone(), 60)
        });
        reqs.push(Request::embedding(p.clone(), Pooling::Mean));
    }
    let (out, preempted) = embed_all(&mut busy, reqs);
    assert!(preempted > 0, "the small cache forces preemptions");
    for (i, want) in singles.iter().enumerate() {
        let got = out[2 * i + 1].as_ref().expect("an embedding");
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "prompt {i}: batched embedding differs by {err}");
        assert!(out[2 * i].is_none());
    }
}
