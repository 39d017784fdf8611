//! Times prefill and decode steps of a model on the CPU backend.
//! Usage: cargo run --release -p engine-core --example bench_forward -- MODEL [THREADS]
//! [all | batch | long [CONTEXT...]]

use std::time::Instant;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::backend::{Backend, KvDtype, KvLayout, LogitsWanted, SeqChunk, StepInput};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::kv_cache::{BlockAllocator, BlockTable};
use engine_core::model::{LlamaModel, Scratch};

/// Process CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let threads: usize = args.get(2).map_or(0, |t| t.parse().unwrap());
    let only: &str = args.get(3).map_or("all", |s| s.as_str());
    if only == "long" {
        // Context lengths: the arguments after `long`, or 128, 1024 and 4000.
        let mut ctxs: Vec<usize> = args[4..].iter().map(|c| c.parse().unwrap()).collect();
        if ctxs.is_empty() {
            ctxs = vec![128, 1024, 4000];
        }
        for ctx in ctxs {
            let (prefill, rate) = batched_decode(path, threads, 1, ctx, 128);
            println!("prefill of {ctx} tokens in chunks of 512: {prefill:.1} tok/s");
            println!("decode after {ctx} tokens: {rate:.1} tok/s");
        }
        return;
    }
    if only == "batch" {
        for batch in [1, 4, 16] {
            let (_, rate) = batched_decode(path, threads, batch, 128, 32);
            println!("batch {batch}: {rate:.1} tok/s aggregate");
        }
        return;
    }
    let (b, model) = load(path, threads);
    let c = model.config().clone();
    let bs = 16;
    let layout = KvLayout {
        n_layers: c.n_layers,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: bs,
        n_blocks: 64,
        dtype: if std::env::var("KV").as_deref() == Ok("f32") {
            KvDtype::F32
        } else {
            KvDtype::F16
        },
    };
    let mut kv = b.alloc_kv(&layout).unwrap();
    let mut scratch = Scratch::default();
    let pps: &[usize] = if only == "tg" { &[] } else { &[128, 512] };
    for &pp in pps {
        let mut alloc = BlockAllocator::new(64, bs);
        let mut table = BlockTable::new();
        table.reserve(&mut alloc, pp).unwrap();
        let tokens: Vec<u32> = (0..pp as u32).map(|i| (i * 7919) % 49152).collect();
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
        b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
            .unwrap();
        let t = Instant::now();
        let c0 = cpu_time();
        let reps = 3;
        for _ in 0..reps {
            b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
                .unwrap();
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        let cpu = (cpu_time() - c0) / reps as f64;
        println!(
            "pp{pp}: {:.1} tok/s ({:.1} ms; cpu {:.1} ms)",
            pp as f64 / dt,
            dt * 1e3,
            cpu * 1e3
        );
    }
    let mut alloc = BlockAllocator::new(64, bs);
    let mut table = BlockTable::new();
    table.reserve(&mut alloc, 300).unwrap();
    let n = if only == "pp" { 0 } else { 256 };
    let t = Instant::now();
    let c0 = cpu_time();
    for i in 0..n {
        let tok = [(i as u32 * 31) % 49152];
        let step = StepInput::build(
            &[SeqChunk {
                start_pos: i,
                tokens: &tok,
                block_table: table.blocks(),
                logits: LogitsWanted::Last,
                hidden: 0..0,
            }],
            bs,
            &c.rope,
        );
        b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
            .unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    let cpu = cpu_time() - c0;
    println!(
        "tg{n}: {:.1} tok/s ({:.2} ms/token; cpu {:.2} ms/token)",
        n as f64 / dt,
        dt * 1e3 / n as f64,
        cpu * 1e3 / n.max(1) as f64
    );
}

/// The CPU backend with `threads` workers and the model at `path` loaded onto it.
/// (Memory-mapped natively; read whole where there is no `mmap`, as under WASI.)
fn load(path: &str, threads: usize) -> (CpuBackend, LlamaModel<CpuBackend>) {
    #[cfg(feature = "mmap")]
    let bytes = {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: the model file is not modified while it is mapped.
        ModelBytes::from_mmap(unsafe { memmap2::Mmap::map(&file).unwrap() })
    };
    #[cfg(not(feature = "mmap"))]
    let bytes = ModelBytes::from_vec(std::fs::read(path).unwrap());
    let file = GgufFile::new(bytes).unwrap();
    let b = CpuBackend::new(CpuOptions { threads, isa: None }).unwrap();
    let model = LlamaModel::load(&b, &file).unwrap();
    (b, model)
}

/// Prefills `ctx` tokens of each of `batch` sequences, then decodes `steps` steps of all of them
/// at once (one token each): the prefill's and the decode's tokens per second.
pub fn batched_decode(
    path: &str,
    threads: usize,
    batch: usize,
    ctx: usize,
    steps: usize,
) -> (f64, f64) {
    let (b, model) = load(path, threads);
    let c = model.config().clone();
    let bs = 16;
    let per_seq = (ctx + steps).div_ceil(bs) + 1;
    let layout = KvLayout {
        n_layers: c.n_layers,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: bs,
        n_blocks: per_seq * batch,
        dtype: KvDtype::F16,
    };
    let mut kv = b.alloc_kv(&layout).unwrap();
    let mut alloc = BlockAllocator::new(layout.n_blocks, bs);
    let tables: Vec<BlockTable> = (0..batch)
        .map(|_| {
            let mut t = BlockTable::new();
            t.reserve(&mut alloc, ctx + steps).unwrap();
            t
        })
        .collect();
    let mut scratch = Scratch::default();
    // Fill the cache with real keys and values (untouched cache memory would read as zero pages).
    let t = Instant::now();
    for (s, table) in tables.iter().enumerate() {
        let toks: Vec<u32> = (0..ctx)
            .map(|i| ((i * 131 + s * 17) % 49152) as u32)
            .collect();
        for (ci, chunk) in toks.chunks(512).enumerate() {
            let chunks = [SeqChunk {
                start_pos: ci * 512,
                tokens: chunk,
                block_table: table.blocks(),
                logits: LogitsWanted::None,
                hidden: 0..0,
            }];
            let step = StepInput::build(&chunks, bs, &c.rope);
            b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
                .unwrap();
        }
    }
    let prefill = (batch * ctx) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..steps {
        let toks: Vec<[u32; 1]> = (0..batch)
            .map(|s| [((i * 31 + s * 7) as u32) % 49152])
            .collect();
        let chunks: Vec<SeqChunk> = (0..batch)
            .map(|s| SeqChunk {
                start_pos: ctx + i,
                tokens: &toks[s],
                block_table: tables[s].blocks(),
                logits: LogitsWanted::Last,
                hidden: 0..0,
            })
            .collect();
        let step = StepInput::build(&chunks, bs, &c.rope);
        b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
            .unwrap();
    }
    (prefill, (batch * steps) as f64 / t.elapsed().as_secs_f64())
}
