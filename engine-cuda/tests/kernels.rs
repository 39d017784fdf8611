//! Every operation of the CUDA backend against an exact float64 computation and against the CPU
//! backend, on fresh random inputs: products of every weight format and row count (including
//! counts that take several launches), norms and element-wise operations, embeddings, RoPE,
//! writes into non-contiguous KV blocks and attention over them (prefill, then decode over the
//! cached prefix), with f32 and f16 caches; the fused operations against their parts. Without a
//! GPU the tests say so and pass; `TANDEM_REQUIRE_CUDA=1` makes a missing GPU a failure (the GPU
//! machine's check sets it).

#[path = "../../engine-core/tests/common/fused.rs"]
mod fused;
mod gpu;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::backend::{
    Backend, KvDtype, KvLayout, LogitsWanted, MatrixSource, SeqChunk, StepInput,
};
use engine_core::gguf::ModelBytes;
use engine_core::model::{RopeConfig, RopeLayout};
use engine_core::quant::{GgmlType, dequantize_to_vec, quantize};
use fused::{random, read};
use gpu::cuda;

fn cpu() -> CpuBackend {
    CpuBackend::new(CpuOptions::default()).unwrap()
}

/// Checks `got` against `want`: the largest error at most `tol` times the largest magnitude of
/// `want` (plus a floor for all-small outputs).
fn close(label: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-3);
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .enumerate()
        .fold(
            (0, 0.0f64),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        err <= tol * scale && got.iter().all(|g| g.is_finite()),
        "{label}: error {err:.3e} at {i} (got {}, want {}), scale {scale:.3e}",
        got[i],
        want[i]
    );
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// `out[r][j] = w[j] . x[r]` in float64 over the dequantized weights.
fn exact_matmul(w: &[f32], x: &[f32], rows: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; rows * n];
    for r in 0..rows {
        for j in 0..n {
            out[r * n + j] = (0..k)
                .map(|i| f64::from(w[j * k + i]) * f64::from(x[r * k + i]))
                .sum();
        }
    }
    out
}

fn matmul_on<B: Backend>(b: &B, src: &MatrixSource, x: &[f32], rows: usize) -> Vec<f32> {
    let m = b.upload_matrix(src).unwrap();
    let xb = b.upload_vector(x).unwrap();
    let mut out = b.alloc(rows * src.rows).unwrap();
    b.matmul(&m, &xb, rows, &mut out);
    read(b, &out, rows * src.rows)
}

/// Products of `gpu` against float64 (within `tol`) and against the CPU backend.
fn check_products<B: Backend>(gpu: &B, tol: f64) {
    let host = cpu();
    let (n, k) = (90, 512);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let bytes = quantize(ty, &random(n * k, 1.0)).unwrap();
        let w = dequantize_to_vec(ty, &bytes).unwrap();
        let len = bytes.len();
        let src = MatrixSource {
            name: format!("{ty:?}"),
            ty,
            rows: n,
            cols: k,
            bytes: ModelBytes::from_vec(bytes),
            range: 0..len,
        };
        for rows in [1, 2, 5, 8, 9, 17] {
            let x = random(rows * k, 2.0);
            let want = exact_matmul(&w, &x, rows, n, k);
            let got = matmul_on(gpu, &src, &x, rows);
            close(&format!("{ty:?} x {rows} rows"), &got, &want, tol);
            // The CPU backend multiplies 8-bit activations: close, not exact.
            let on_cpu = matmul_on(&host, &src, &x, rows);
            close(
                &format!("cuda vs cpu {ty:?} x {rows} rows"),
                &got,
                &wide(&on_cpu),
                2e-2,
            );
        }
    }
}

fn check_norms_element_wise_and_embeddings<B: Backend>(gpu: &B) {
    let (rows, dim) = (3, 576);
    let x = random(rows * dim, 3.0);
    let weight = random(dim, 1.0);
    let eps = 1e-5f32;
    let mut want = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / dim as f64;
        let s = 1.0 / (ms + f64::from(eps)).sqrt();
        want.extend(
            row.iter()
                .zip(&weight)
                .map(|(&v, &w)| f64::from(v) * s * f64::from(w)),
        );
    }
    let xb = gpu.upload_vector(&x).unwrap();
    let wb = gpu.upload_vector(&weight).unwrap();
    let mut out = gpu.alloc(rows * dim).unwrap();
    gpu.rms_norm(&xb, &wb, eps, rows, dim, &mut out);
    close("rms_norm", &read(gpu, &out, rows * dim), &want, 1e-5);

    let y = random(rows * dim, 3.0);
    let yb = gpu.upload_vector(&y).unwrap();
    let mut sum = gpu.upload_vector(&x).unwrap();
    gpu.add(&mut sum, &yb, rows * dim);
    let want: Vec<f64> = x
        .iter()
        .zip(&y)
        .map(|(&a, &b)| f64::from(a) + f64::from(b))
        .collect();
    close("add", &read(gpu, &sum, rows * dim), &want, 1e-6);

    let mut biased = gpu.upload_vector(&x).unwrap();
    gpu.add_bias(&mut biased, &wb, rows, dim);
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &a)| f64::from(a) + f64::from(weight[i % dim]))
        .collect();
    close("add_bias", &read(gpu, &biased, rows * dim), &want, 1e-6);

    let mut gate = gpu.upload_vector(&x).unwrap();
    gpu.swiglu(&mut gate, &yb, rows * dim);
    let want: Vec<f64> = x
        .iter()
        .zip(&y)
        .map(|(&g, &u)| {
            let g = f64::from(g);
            g / (1.0 + (-g).exp()) * f64::from(u)
        })
        .collect();
    close("swiglu", &read(gpu, &gate, rows * dim), &want, 1e-5);

    // Embeddings of a quantized table, through a step's tokens.
    // 512 wide: a whole number of the K-quants' super-blocks.
    let (vocab, dim) = (40, 512);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let bytes = quantize(ty, &random(vocab * dim, 1.0)).unwrap();
        let table = dequantize_to_vec(ty, &bytes).unwrap();
        let len = bytes.len();
        let src = MatrixSource {
            name: "token_embd".into(),
            ty,
            rows: vocab,
            cols: dim,
            bytes: ModelBytes::from_vec(bytes),
            range: 0..len,
        };
        let tokens = [7u32, 0, 39, 7];
        let rope = RopeConfig::plain(RopeLayout::Normal, 64, 10000.0);
        let blocks = [0u32];
        let step = StepInput::build(
            &[SeqChunk {
                start_pos: 0,
                tokens: &tokens,
                block_table: &blocks,
                logits: LogitsWanted::Last,
                hidden: 0..0,
            }],
            16,
            &rope,
        );
        let m = gpu.upload_matrix(&src).unwrap();
        let s = gpu.begin_step(&step).unwrap();
        let mut out = gpu.alloc(tokens.len() * dim).unwrap();
        gpu.embed(&s, &m, &mut out);
        let want: Vec<f64> = tokens
            .iter()
            .flat_map(|&t| wide(&table[t as usize * dim..(t as usize + 1) * dim]))
            .collect();
        close(
            &format!("embed {ty:?}"),
            &read(gpu, &out, tokens.len() * dim),
            &want,
            0.0,
        );
    }
}

/// Runs RoPE on q and k, writes k and v into the cache and attends, for one step.
#[allow(clippy::too_many_arguments)]
fn attend_step<B: Backend>(
    b: &B,
    kv: &mut B::KvStore,
    step: &StepInput,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> (Vec<f32>, Vec<f32>) {
    let rows = step.rows();
    let s = b.begin_step(step).unwrap();
    let mut qb = b.upload_vector(q).unwrap();
    let mut kb = b.upload_vector(k).unwrap();
    let vb = b.upload_vector(v).unwrap();
    b.rope(&s, &mut qb, n_heads, head_dim);
    b.rope(&s, &mut kb, n_kv_heads, head_dim);
    b.kv_write(&s, kv, 1, &kb, &vb);
    let mut out = b.alloc(rows * n_heads * head_dim).unwrap();
    b.attention(&s, kv, 1, &qb, n_heads, &mut out);
    let width = n_heads * head_dim;
    let mut gathered = b.alloc(step.output_rows.len() * width).unwrap();
    b.gather_output_rows(&s, &out, width, &mut gathered);
    (
        read(b, &out, rows * width),
        read(b, &gathered, step.output_rows.len() * width),
    )
}

fn check_attention<B: Backend>(gpu: &B) {
    let host = cpu();
    let (n_heads, n_kv_heads, head_dim, block_size) = (6, 2, 64, 16);
    for (dtype, rope_layout, tol) in [
        (KvDtype::F32, RopeLayout::Normal, 1e-4),
        (KvDtype::F32, RopeLayout::Neox, 1e-4),
        (KvDtype::F16, RopeLayout::Normal, 5e-3),
    ] {
        let layout = KvLayout {
            n_layers: 2,
            n_kv_heads,
            head_dim,
            block_size,
            n_blocks: 12,
            dtype,
        };
        let rope = RopeConfig::plain(rope_layout, head_dim, 10000.0);
        let mut gkv = gpu.alloc_kv(&layout).unwrap();
        let mut ckv = host.alloc_kv(&layout).unwrap();
        // Two sequences on scattered blocks: 37 and 20 prompt tokens, then one decode step each.
        let tables: [&[u32]; 2] = [&[9, 2, 6, 0], &[3, 11]];
        let lens = [37usize, 20];
        let tokens: Vec<Vec<u32>> = lens.iter().map(|&n| vec![1; n + 1]).collect();
        for (start, count) in [(0usize, None), (1, Some(1usize))] {
            let chunks: Vec<SeqChunk> = (0..2)
                .map(|s| {
                    let (from, to) = match count {
                        None => (0, lens[s]),
                        Some(c) => (lens[s], lens[s] + c),
                    };
                    SeqChunk {
                        start_pos: from,
                        tokens: &tokens[s][from..to],
                        block_table: tables[s],
                        logits: if start == 0 {
                            LogitsWanted::All
                        } else {
                            LogitsWanted::Last
                        },
                        hidden: 0..0,
                    }
                })
                .collect();
            let step = StepInput::build(&chunks, block_size, &rope);
            let rows = step.rows();
            let q = random(rows * n_heads * head_dim, 1.0);
            let k = random(rows * n_kv_heads * head_dim, 1.0);
            let v = random(rows * n_kv_heads * head_dim, 1.0);
            let (g, g_rows) = attend_step(
                gpu, &mut gkv, &step, &q, &k, &v, n_heads, n_kv_heads, head_dim,
            );
            let (c, c_rows) = attend_step(
                &host, &mut ckv, &step, &q, &k, &v, n_heads, n_kv_heads, head_dim,
            );
            let label = format!("{dtype:?} {rope_layout:?} step {start}");
            close(&format!("attention {label}"), &g, &wide(&c), tol);
            close(
                &format!("gathered rows {label}"),
                &g_rows,
                &wide(&c_rows),
                tol,
            );
        }
    }
}

#[test]
fn products_of_every_format_and_row_count() {
    if let Some(gpu) = cuda() {
        check_products(&gpu, 1e-5);
    }
}

#[test]
fn norms_element_wise_operations_and_embeddings() {
    if let Some(gpu) = cuda() {
        check_norms_element_wise_and_embeddings(&gpu);
    }
}

#[test]
fn rope_paged_kv_writes_and_attention_prefill_then_decode() {
    if let Some(gpu) = cuda() {
        check_attention(&gpu);
    }
}

#[test]
fn fused_operations_equal_their_parts() {
    if let Some(gpu) = cuda() {
        // The fused SwiGLU epilogue may round differently from the separate kernel.
        fused::fused_ops_equal_their_parts(&gpu, 1e-6);
        let caps = gpu.capabilities();
        assert!(caps.computes(GgmlType::Q4_K) && caps.computes(GgmlType::BF16));
    }
}

/// The checks themselves, with the CPU backend in the GPU's place (its products multiply 8-bit
/// activations, hence their looser bound): a check that failed on a correct backend would say
/// nothing about the GPU.
#[test]
fn the_checks_hold_for_the_cpu_backend() {
    let host = cpu();
    check_products(&host, 2e-2);
    check_norms_element_wise_and_embeddings(&host);
    check_attention(&host);
    fused::fused_ops_equal_their_parts(&host, 0.0);
}
