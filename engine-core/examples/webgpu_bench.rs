//! Prefill and decode speed of the WebGPU backend on whatever adapter wgpu finds.
//!
//! Usage: cargo run --release -p engine-core --features webgpu --example webgpu_bench --
//!        [--model PATH | --synthetic-1b PATH] [-p 128] [-n 64] [--batch 1,4]
//!        [--precision auto|f32|f16] [--bandwidth GB/s] [--reps 2]
//!
//! `--synthetic-1b PATH` writes (once) a Llama-3.2-1B-shaped GGUF with Q4_0 weights (random
//! values; speed does not depend on them) and benchmarks it. `--bandwidth` is the adapter's
//! memory bandwidth: with it, decode speed is also given as a share of the roofline
//! `bandwidth / bytes of weights read per token`.

use std::time::Instant;

use engine_core::backend::webgpu::{Precision, WebGpuBackend, WebGpuOptions};
use engine_core::backend::{
    Backend, DeviceSampling, KvDtype, KvLayout, LogitsWanted, SeqChunk, StepInput,
};
use engine_core::gguf::{GgufFile, GgufWriter, ModelBytes, Value};
use engine_core::kv_cache::{BlockAllocator, BlockTable};
use engine_core::model::{LlamaModel, Scratch};
use engine_core::quant::{GgmlType, quantize};

struct Args {
    model: Option<String>,
    synthetic: Option<String>,
    prompt: Vec<usize>,
    generate: usize,
    batch: Vec<usize>,
    precision: Precision,
    bandwidth: Option<f64>,
    reps: usize,
}

fn list(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        model: None,
        synthetic: None,
        prompt: vec![128],
        generate: 64,
        batch: vec![1],
        precision: Precision::Auto,
        bandwidth: None,
        reps: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" | "-m" => a.model = Some(val()?),
            "--synthetic-1b" => a.synthetic = Some(val()?),
            "-p" => a.prompt = list(&val()?),
            "-n" => a.generate = val()?.parse().map_err(|e| format!("-n: {e}"))?,
            "--batch" => a.batch = list(&val()?),
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--bandwidth" => {
                a.bandwidth = Some(val()?.parse().map_err(|e| format!("--bandwidth: {e}"))?)
            }
            "--precision" => {
                a.precision = match val()?.as_str() {
                    "auto" => Precision::Auto,
                    "f32" => Precision::F32,
                    "f16" => Precision::F16,
                    other => return Err(format!("unknown precision {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.model.is_none() == a.synthetic.is_none() {
        return Err("give --model PATH or --synthetic-1b PATH".into());
    }
    Ok(a)
}

/// A Llama-3.2-1B-shaped model (16 layers, d 2048, 32/8 heads, ffn 8192, vocab 128256, tied
/// embeddings) with every matrix in Q4_0: 1.24 B parameters.
fn write_synthetic(path: &str) -> Result<(), String> {
    let (layers, d, heads, kv_heads, ffn, vocab) =
        (16usize, 2048usize, 32, 8, 8192usize, 128256usize);
    let hd = d / heads;
    let mut w = GgufWriter::new();
    let s = |v: &str| Value::String(v.into());
    let u = |v: usize| Value::U32(v as u32);
    w.set("general.architecture", s("llama"));
    w.set("general.name", s("synthetic-1b-q4_0"));
    w.set("llama.block_count", u(layers));
    w.set("llama.embedding_length", u(d));
    w.set("llama.feed_forward_length", u(ffn));
    w.set("llama.attention.head_count", u(heads));
    w.set("llama.attention.head_count_kv", u(kv_heads));
    w.set("llama.vocab_size", u(vocab));
    w.set("llama.context_length", u(8192));
    w.set("llama.rope.freq_base", Value::F32(500000.0));
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    // One quantized block of rows of random weights, repeated to fill each matrix.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let mut matrix = |rows: usize, cols: usize| -> Vec<u8> {
        let tile_rows = 8;
        let tile: Vec<f32> = (0..tile_rows * cols).map(|_| rnd()).collect();
        let q = quantize(GgmlType::Q4_0, &tile).expect("quantize");
        let mut out = Vec::with_capacity(q.len() * rows / tile_rows);
        for _ in 0..rows / tile_rows {
            out.extend_from_slice(&q);
        }
        out
    };
    let ones = |n: usize| -> Vec<u8> { bytemuck::cast_slice(&vec![1.0f32; n]).to_vec() };
    let err = |e: engine_core::gguf::GgufError| e.to_string();
    let t = GgmlType::Q4_0;
    w.add_tensor(
        "token_embd.weight",
        &[d as u64, vocab as u64],
        t,
        matrix(vocab, d),
    )
    .map_err(err)?;
    w.add_tensor("output_norm.weight", &[d as u64], GgmlType::F32, ones(d))
        .map_err(err)?;
    for l in 0..layers {
        let n = |x: &str| format!("blk.{l}.{x}");
        let kvd = kv_heads * hd;
        for (name, rows, cols) in [
            ("attn_q.weight", d, d),
            ("attn_k.weight", kvd, d),
            ("attn_v.weight", kvd, d),
            ("attn_output.weight", d, d),
            ("ffn_gate.weight", ffn, d),
            ("ffn_up.weight", ffn, d),
            ("ffn_down.weight", d, ffn),
        ] {
            w.add_tensor(n(name), &[cols as u64, rows as u64], t, matrix(rows, cols))
                .map_err(err)?;
        }
        w.add_tensor(n("attn_norm.weight"), &[d as u64], GgmlType::F32, ones(d))
            .map_err(err)?;
        w.add_tensor(n("ffn_norm.weight"), &[d as u64], GgmlType::F32, ones(d))
            .map_err(err)?;
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = format!("{path}.partial");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| e.to_string())?);
    w.write_to(&mut f).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

fn open_model(path: &str) -> Result<GgufFile, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: the file is only read, and not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{path}: {e}"))?;
    GgufFile::new(ModelBytes::from_mmap(map)).map_err(|e| e.to_string())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse()?;
    let path = match (&args.model, &args.synthetic) {
        (Some(m), _) => m.clone(),
        (None, Some(s)) => {
            if !std::path::Path::new(s).exists() {
                eprintln!("writing the synthetic 1B model to {s}");
                write_synthetic(s)?;
            }
            s.clone()
        }
        (None, None) => unreachable!("checked in parse"),
    };
    let file = open_model(&path)?;
    let b = match WebGpuBackend::new_blocking(WebGpuOptions {
        precision: args.precision,
        ..WebGpuOptions::default()
    }) {
        Ok(b) => b,
        Err(e) => {
            println!("no WebGPU adapter: {e}");
            return Ok(());
        }
    };
    eprintln!("{}", b.report());
    let max_prompt = args.prompt.iter().copied().max().unwrap_or(1);
    let max_batch = args.batch.iter().copied().max().unwrap_or(1);
    let bs = 16;
    let per_seq = max_prompt.max(1) + args.generate + 1;
    let n_blocks = per_seq.div_ceil(bs) * max_batch.max(1) + max_prompt.div_ceil(bs) + 1;
    let config = engine_core::model::ModelConfig::from_metadata(file.metadata())
        .map_err(|e| e.to_string())?;
    let layout = KvLayout {
        n_layers: config.n_layers,
        n_kv_heads: config.n_kv_heads,
        head_dim: config.head_dim,
        block_size: bs,
        n_blocks,
        dtype: KvDtype::F32,
    };
    let plan = b
        .check_model(&file, &layout, max_prompt.max(max_batch))
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let model = LlamaModel::load(&b, &file).map_err(|e| e.to_string())?;
    let c = model.config().clone();
    let mut kv = b.alloc_kv(&layout).map_err(|e| e.to_string())?;
    eprintln!(
        "loaded in {:.1} s: weights {} MiB on the device (largest matrix in {} parts), KV cache {} MiB",
        t0.elapsed().as_secs_f64(),
        plan.weights >> 20,
        plan.max_parts,
        plan.kv_cache >> 20
    );
    // Weights read per decoded token: every matrix (the output one included), not the
    // embedding rows.
    let matrix_bytes: u64 = file
        .gguf()
        .tensors
        .iter()
        .filter(|t| t.dims.len() == 2 && t.dims[1] > 1 && t.name != "token_embd.weight")
        .map(|t| t.n_elements() * t.ggml_type.type_size() as u64 / t.ggml_type.block_size() as u64)
        .sum::<u64>()
        + if file.gguf().tensor("output.weight").is_none() {
            let t = file
                .gguf()
                .tensor("token_embd.weight")
                .ok_or("no token_embd")?;
            t.n_elements() * t.ggml_type.type_size() as u64 / t.ggml_type.block_size() as u64
        } else {
            0
        };
    let params: u64 = file.gguf().tensors.iter().map(|t| t.n_elements()).sum();
    let name = std::path::Path::new(&path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let adapter = b.report().name.clone();
    let prec = if b.uses_f16() { "f16" } else { "f32" };
    println!(
        "adapter: {adapter} ({}, {}); {} matrix kernels\n",
        b.report().api,
        b.report().device_type,
        if b.report().cpu_kernels {
            "CPU-adapter"
        } else {
            "GPU"
        }
    );
    println!(
        "| model | size | params | backend | test | t/s |\n| --- | --- | --- | --- | --- | --- |"
    );
    let mut notes = Vec::new();
    let row = |test: String, tps: f64| {
        println!(
            "| {name} | {:.0} MiB | {:.2} B | webgpu {prec} | {test} | {tps:.2} |",
            plan.weights as f64 / (1 << 20) as f64,
            params as f64 / 1e9,
        )
    };
    let mut scratch = Scratch::default();
    let vocab = c.vocab_size;
    let greedy = [DeviceSampling::greedy()];

    for &pp in &args.prompt {
        let mut alloc = BlockAllocator::new(layout.n_blocks, bs);
        let mut table = BlockTable::new();
        table
            .reserve(&mut alloc, pp)
            .map_err(|_| "KV cache too small")?;
        let tokens: Vec<u32> = (0..pp as u32).map(|i| (i * 7919) % vocab as u32).collect();
        let step = StepInput::build(
            &[SeqChunk {
                start_pos: 0,
                tokens: &tokens,
                block_table: table.blocks(),
                logits: LogitsWanted::Last,
                hidden: 0..0,
            }],
            bs,
            &c.rope,
        );
        let mut best = f64::MAX;
        for _ in 0..args.reps + 1 {
            let t = Instant::now();
            model
                .forward(&b, &step, &mut kv, &mut scratch)
                .map_err(|e| e.to_string())?;
            let fut = b
                .sample(scratch.logits().ok_or("no logits")?, vocab, &greedy)
                .ok_or("no device sampling")?;
            pollster::block_on(fut).map_err(|e| e.to_string())?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        row(format!("pp{pp}"), pp as f64 / best);
    }

    for &batch in &args.batch {
        let mut alloc = BlockAllocator::new(layout.n_blocks, bs);
        let mut tables: Vec<BlockTable> = Vec::new();
        for _ in 0..batch {
            let mut t = BlockTable::new();
            t.reserve(&mut alloc, args.generate + 1)
                .map_err(|_| "KV cache too small")?;
            tables.push(t);
        }
        let specs = vec![DeviceSampling::greedy(); batch];
        let mut last: Vec<u32> = (0..batch as u32).map(|i| 1 + i).collect();
        // One warm-up step compiles the kernels.
        let mut elapsed = 0.0;
        for i in 0..=args.generate {
            let toks: Vec<[u32; 1]> = last.iter().map(|&t| [t]).collect();
            let chunks: Vec<SeqChunk<'_>> = (0..batch)
                .map(|s| SeqChunk {
                    start_pos: i,
                    tokens: &toks[s],
                    block_table: tables[s].blocks(),
                    logits: LogitsWanted::Last,
                    hidden: 0..0,
                })
                .collect();
            let step = StepInput::build(&chunks, bs, &c.rope);
            let t = Instant::now();
            model
                .forward(&b, &step, &mut kv, &mut scratch)
                .map_err(|e| e.to_string())?;
            let fut = b
                .sample(scratch.logits().ok_or("no logits")?, vocab, &specs)
                .ok_or("no device sampling")?;
            last = pollster::block_on(fut).map_err(|e| e.to_string())?;
            if i > 0 {
                elapsed += t.elapsed().as_secs_f64();
            }
        }
        let tps = (batch * args.generate) as f64 / elapsed;
        row(format!("tg{} x{batch}", args.generate), tps);
        if batch == 1 {
            let per_token = matrix_bytes as f64;
            notes.push(match args.bandwidth {
                Some(bw) => {
                    let roof = bw * 1e9 / per_token;
                    format!(
                        "decode reads {:.0} MiB of weights per token; at {bw} GB/s the roofline is {roof:.1} tok/s: measured {tps:.2} tok/s = {:.0}% of it",
                        per_token / (1 << 20) as f64,
                        100.0 * tps / roof
                    )
                }
                None => format!(
                    "decode reads {:.0} MiB of weights per token, {:.2} GB/s at {tps:.2} tok/s (give --bandwidth for the roofline share)",
                    per_token / (1 << 20) as f64,
                    per_token * tps / 1e9
                ),
            });
        }
    }
    for n in notes {
        println!("\n{n}");
    }
    Ok(())
}
