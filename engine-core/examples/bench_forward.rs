//! Times prefill and decode steps of a model on the CPU backend.
//! Usage: cargo run --release -p engine-core --example bench_forward -- MODEL [THREADS]

use std::time::Instant;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::backend::{Backend, KvDtype, KvLayout, LogitsWanted, SeqChunk, StepInput};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::kv_cache::{BlockAllocator, BlockTable};
use engine_core::model::{LlamaModel, Scratch};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let threads: usize = args.get(2).map_or(0, |t| t.parse().unwrap());
    let file = std::fs::File::open(path).unwrap();
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
    let file = GgufFile::new(ModelBytes::from_mmap(map)).unwrap();
    let b = CpuBackend::new(CpuOptions { threads, isa: None }).unwrap();
    let model = LlamaModel::load(&b, &file).unwrap();
    let c = model.config().clone();
    let bs = 16;
    let layout = KvLayout {
        n_layers: c.n_layers,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: bs,
        n_blocks: 64,
        dtype: KvDtype::F32,
    };
    let mut kv = b.alloc_kv(&layout).unwrap();
    let mut scratch = Scratch::default();
    for &pp in &[128usize, 512] {
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
            }],
            bs,
            &c.rope,
        );
        b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
            .unwrap();
        let t = Instant::now();
        let reps = 3;
        for _ in 0..reps {
            b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
                .unwrap();
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!("pp{pp}: {:.1} tok/s ({:.1} ms)", pp as f64 / dt, dt * 1e3);
    }
    let mut alloc = BlockAllocator::new(64, bs);
    let mut table = BlockTable::new();
    table.reserve(&mut alloc, 256).unwrap();
    let n = 128;
    let t = Instant::now();
    for i in 0..n {
        let tok = [(i as u32 * 31) % 49152];
        let step = StepInput::build(
            &[SeqChunk {
                start_pos: i,
                tokens: &tok,
                block_table: table.blocks(),
                logits: LogitsWanted::Last,
            }],
            bs,
            &c.rope,
        );
        b.install(|| model.forward(&b, &step, &mut kv, &mut scratch))
            .unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "tg{n}: {:.1} tok/s ({:.2} ms/token)",
        n as f64 / dt,
        dt * 1e3 / n as f64
    );
}
