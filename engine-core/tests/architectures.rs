//! The model graph on every supported architecture (llama with linear and YaRN RoPE scaling and
//! frequency factors, qwen2 with biases and NeoX RoPE, phi3 with fused projections and partial
//! rotation), on tiny random models written with the GGUF writer, with weights in every quant
//! format: logits against an independent float64 forward pass in numpy, and token-by-token decode
//! and other KV block sizes against one batched prefill (bit for bit), also over contexts long
//! enough for attention to split its keys.

mod py;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::backend::{Backend, KvDtype, KvLayout, LogitsWanted, SeqChunk, StepInput};
use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value, ValueType};
use engine_core::kv_cache::{BlockAllocator, BlockTable};
use engine_core::model::{LlamaModel, Scratch};
use engine_core::quant::{GgmlType, quantize};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const D: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const FFN: usize = 512;
const LAYERS: usize = 2;
const VOCAB: usize = 300;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    LlamaLinear,
    LlamaYarn,
    Qwen2,
    Phi3,
}

fn arch(v: Variant) -> &'static str {
    match v {
        Variant::LlamaLinear | Variant::LlamaYarn => "llama",
        Variant::Qwen2 => "qwen2",
        Variant::Phi3 => "phi3",
    }
}

struct Builder {
    w: GgufWriter,
    rng: StdRng,
}

impl Builder {
    fn matrix(&mut self, name: &str, rows: usize, cols: usize, ty: GgmlType) {
        let scale = 1.0 / (cols as f32).sqrt() * 1.7;
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| (self.rng.random::<f32>() * 2.0 - 1.0) * scale)
            .collect();
        self.w
            .add_tensor(
                name,
                &[cols as u64, rows as u64],
                ty,
                quantize(ty, &data).unwrap(),
            )
            .unwrap();
    }

    fn vector(&mut self, name: &str, len: usize, center: f32, spread: f32) {
        let data: Vec<f32> = (0..len)
            .map(|_| center + (self.rng.random::<f32>() * 2.0 - 1.0) * spread)
            .collect();
        self.w
            .add_tensor(
                name,
                &[len as u64],
                GgmlType::F32,
                quantize(GgmlType::F32, &data).unwrap(),
            )
            .unwrap();
    }
}

/// Weight types cycled through the layers' matrices, so every format is used.
const TYPES: [GgmlType; 14] = [
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_1,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
    GgmlType::Q5_K,
    GgmlType::Q3_K,
    GgmlType::Q2_K,
    GgmlType::Q6_K,
];

fn build(v: Variant, seed: u64) -> Vec<u8> {
    let a = arch(v);
    let mut b = Builder {
        w: GgufWriter::new(),
        rng: StdRng::seed_from_u64(seed),
    };
    let key = |k: &str| format!("{a}.{k}");
    b.w.set("general.architecture", Value::String(a.into()));
    b.w.set(key("block_count"), Value::U32(LAYERS as u32));
    b.w.set(key("context_length"), Value::U32(256));
    b.w.set(key("embedding_length"), Value::U32(D as u32));
    b.w.set(key("feed_forward_length"), Value::U32(FFN as u32));
    b.w.set(key("attention.head_count"), Value::U32(HEADS as u32));
    b.w.set(key("attention.head_count_kv"), Value::U32(KV_HEADS as u32));
    b.w.set(key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    b.w.set(key("vocab_size"), Value::U32(VOCAB as u32));
    b.w.set(key("rope.freq_base"), Value::F32(10000.0));
    match v {
        Variant::LlamaLinear => {
            b.w.set(key("rope.scaling.type"), Value::String("linear".into()));
            b.w.set(key("rope.scaling.factor"), Value::F32(2.0));
        }
        Variant::LlamaYarn => {
            b.w.set(key("rope.scaling.type"), Value::String("yarn".into()));
            b.w.set(key("rope.scaling.factor"), Value::F32(4.0));
            b.w.set(key("rope.scaling.original_context_length"), Value::U32(32));
        }
        Variant::Phi3 => {
            b.w.set(key("rope.dimension_count"), Value::U32(32));
        }
        Variant::Qwen2 => {}
    }
    // A few token strings so the file looks like a model; the graph does not read them.
    b.w.set(
        "tokenizer.ggml.tokens",
        Value::Array(
            ValueType::String,
            (0..VOCAB).map(|i| Value::String(format!("t{i}"))).collect(),
        ),
    );
    b.matrix("token_embd.weight", VOCAB, D, GgmlType::Q8_0);
    b.vector("output_norm.weight", D, 1.0, 0.2);
    if v != Variant::Qwen2 {
        b.matrix("output.weight", VOCAB, D, GgmlType::Q6_K);
    }
    if v == Variant::LlamaLinear {
        let factors: Vec<f32> = (0..HEAD_DIM / 2).map(|i| 1.0 + i as f32 * 0.1).collect();
        b.w.add_tensor(
            "rope_freqs.weight",
            &[(HEAD_DIM / 2) as u64],
            GgmlType::F32,
            quantize(GgmlType::F32, &factors).unwrap(),
        )
        .unwrap();
    }
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut types = TYPES.iter().copied().cycle();
    for l in 0..LAYERS {
        let n = |t: &str| format!("blk.{l}.{t}");
        b.vector(&n("attn_norm.weight"), D, 1.0, 0.2);
        b.vector(&n("ffn_norm.weight"), D, 1.0, 0.2);
        if v == Variant::Phi3 {
            b.matrix(&n("attn_qkv.weight"), q + 2 * kv, D, types.next().unwrap());
            b.matrix(&n("ffn_up.weight"), 2 * FFN, D, types.next().unwrap());
        } else {
            b.matrix(&n("attn_q.weight"), q, D, types.next().unwrap());
            b.matrix(&n("attn_k.weight"), kv, D, types.next().unwrap());
            b.matrix(&n("attn_v.weight"), kv, D, types.next().unwrap());
            b.matrix(&n("ffn_gate.weight"), FFN, D, types.next().unwrap());
            b.matrix(&n("ffn_up.weight"), FFN, D, types.next().unwrap());
        }
        if v == Variant::Qwen2 {
            b.vector(&n("attn_q.bias"), q, 0.0, 0.5);
            b.vector(&n("attn_k.bias"), kv, 0.0, 0.5);
            b.vector(&n("attn_v.bias"), kv, 0.0, 0.5);
        }
        b.matrix(&n("attn_output.weight"), D, q, types.next().unwrap());
        b.matrix(&n("ffn_down.weight"), D, FFN, types.next().unwrap());
    }
    b.w.to_bytes().unwrap()
}

/// Logits of every position: one prefill step, or one step per token, with a KV cache of blocks
/// of `bs` tokens.
fn engine_logits(file: &GgufFile, ids: &[u32], one_by_one: bool, bs: usize) -> Vec<Vec<f32>> {
    let b = CpuBackend::new(CpuOptions::default()).unwrap();
    let model = LlamaModel::load(&b, file).unwrap();
    let c = model.config().clone();
    let layout = KvLayout {
        n_layers: c.n_layers,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: bs,
        n_blocks: ids.len().div_ceil(bs),
        dtype: KvDtype::F32,
    };
    let mut kv = b.alloc_kv(&layout).unwrap();
    let mut alloc = BlockAllocator::new(layout.n_blocks, bs);
    let mut table = BlockTable::new();
    table.reserve(&mut alloc, ids.len()).unwrap();
    let mut scratch = Scratch::default();
    let chunks: Vec<(usize, &[u32])> = if one_by_one {
        ids.iter()
            .enumerate()
            .map(|(i, t)| (i, std::slice::from_ref(t)))
            .collect()
    } else {
        vec![(0, ids)]
    };
    let mut out = Vec::new();
    for (start, tokens) in chunks {
        let step = StepInput::build(
            &[SeqChunk {
                start_pos: start,
                tokens,
                block_table: table.blocks(),
                logits: LogitsWanted::All,
                hidden: 0..0,
            }],
            bs,
            &c.rope,
        );
        b.scope(|| model.forward(&b, &step, &mut kv, &mut scratch))
            .unwrap();
        let n = tokens.len() * c.vocab_size;
        let all = pollster::block_on(b.read(scratch.logits().unwrap(), n)).unwrap();
        out.extend(all.chunks(c.vocab_size).map(|r| r.to_vec()));
    }
    out
}

/// Checks `v` on `n` random tokens against the reference, token-by-token decode and the KV block
/// sizes `block_sizes`.
fn check(v: Variant, n: usize, block_sizes: &[usize]) {
    let seed: u64 = rand::rng().random();
    eprintln!("{}: seed {seed}", arch(v));
    let bytes = build(v, seed);
    let dir = py::scratch_dir(&format!("arch-{}-{}", arch(v), v as u8));
    let path = dir.join("model.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let mut rng = StdRng::seed_from_u64(seed ^ 1);
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..VOCAB as u32)).collect();
    let mut args: Vec<std::ffi::OsString> = vec![path.clone().into()];
    args.extend(ids.iter().map(|i| i.to_string().into()));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let reference: Vec<Vec<f64>> =
        serde_json::from_str(&py::run("reference_forward.py", &args)).unwrap();

    let file = GgufFile::new(ModelBytes::from_vec(bytes)).unwrap();
    let batched = engine_logits(&file, &ids, false, 16);
    let stepped = engine_logits(&file, &ids, true, 16);
    let mut worst = 0.0f64;
    for (pos, (got, want)) in batched.iter().zip(&reference).enumerate() {
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (f64::from(g) - w).abs();
            worst = worst.max(err / scale);
            assert!(
                err <= 2e-3 * scale,
                "{} position {pos} logit {i}: {g} vs reference {w} (scale {scale})",
                arch(v)
            );
        }
    }
    eprintln!("{}: worst error {worst:.2e} of the logit range", arch(v));
    for (pos, (a, b)) in batched.iter().zip(&stepped).enumerate() {
        assert_eq!(
            a,
            b,
            "{}: position {pos} differs between one prefill and token-by-token decode",
            arch(v)
        );
    }
    for &bs in block_sizes {
        let other = engine_logits(&file, &ids, false, bs);
        assert!(
            batched == other,
            "{}: logits change with a KV block size of {bs}",
            arch(v)
        );
    }
}

#[test]
fn llama_with_linear_rope_scaling_and_frequency_factors() {
    check(Variant::LlamaLinear, 40, &[1, 4, 7]);
}

#[test]
fn llama_with_yarn() {
    check(Variant::LlamaYarn, 40, &[1, 4, 7]);
}

#[test]
fn qwen2_with_biases_and_tied_embeddings() {
    check(Variant::Qwen2, 40, &[1, 4, 7]);
}

#[test]
fn phi3_with_fused_projections_and_partial_rotation() {
    check(Variant::Phi3, 40, &[1, 4, 7]);
}

/// Attention over a long context is computed in fixed ranges of key positions merged in order:
/// 600 positions cross those ranges, and a block size of 48 straddles their boundaries.
#[test]
fn long_context_attention_is_the_same_however_it_is_split() {
    check(Variant::LlamaLinear, 600, &[48, 7]);
}
