//! Every WebGPU kernel against the CPU backend on fresh random inputs, on the f32 path and (where
//! the adapter has `shader-f16`) on the f16 path. Outputs are poisoned with NaN first, so an
//! element a kernel fails to write fails the comparison. Without an adapter the tests say so
//! and pass.
#![cfg(feature = "webgpu")]

use std::sync::OnceLock;

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::backend::webgpu::{Precision, WebGpuBackend, WebGpuOptions};
use engine_core::backend::{
    Backend, DeviceSampling, KvDtype, KvLayout, LogitsWanted, MatrixSource, SeqChunk, StepInput,
};
use engine_core::gguf::ModelBytes;
use engine_core::model::{RopeConfig, RopeLayout};
use engine_core::quant::{GgmlType, dequantize_to_vec, quantize};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

/// Relative tolerance of each path: errors are measured against the sum of absolute terms of
/// each output (the scale rounding errors are relative to).
const TOL_F32: f64 = 1e-5;
const TOL_F16: f64 = 1e-2;

struct Gpu {
    b: WebGpuBackend,
    tol: f64,
    name: &'static str,
}

fn open(precision: Precision, subgroups: bool, cpu_kernels: bool) -> Option<WebGpuBackend> {
    match WebGpuBackend::new_blocking(WebGpuOptions {
        precision,
        subgroups,
        cpu_kernels: Some(cpu_kernels),
        ..WebGpuOptions::default()
    }) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// Every kernel variant this adapter can run: the f32 path with the GPU kernels, the f16 path
/// (when the adapter has shader-f16), the workgroup-memory reductions (when it has subgroups,
/// so both reductions are tested), and the matrix kernels for CPU adapters on each precision.
fn gpus() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let mut v = Vec::new();
        let Some(b) = open(Precision::F32, true, false) else {
            return v;
        };
        eprintln!("{}", b.report());
        let (f16, subgroups) = (b.report().shader_f16, b.report().using_subgroups);
        v.push(Gpu {
            b,
            tol: TOL_F32,
            name: "f32",
        });
        let mut more = vec![(
            Precision::F32,
            true,
            true,
            TOL_F32,
            "f32, CPU-adapter kernels",
        )];
        if f16 {
            more.push((Precision::F16, true, false, TOL_F16, "f16"));
            more.push((
                Precision::F16,
                true,
                true,
                TOL_F16,
                "f16, CPU-adapter kernels",
            ));
        }
        if subgroups {
            more.push((Precision::F32, false, false, TOL_F32, "f32, no subgroups"));
        }
        for (precision, subgroups, cpu_kernels, tol, name) in more {
            if let Some(b) = open(precision, subgroups, cpu_kernels) {
                v.push(Gpu { b, tol, name });
            }
        }
        v
    })
}

/// The paths to test, or `None` (after saying so) when there is no adapter. With
/// `TANDEM_REQUIRE_WEBGPU=1` (CI, which has lavapipe) a missing adapter fails instead.
fn paths() -> Option<&'static [Gpu]> {
    let g = gpus();
    if g.is_empty() {
        assert!(
            std::env::var_os("TANDEM_REQUIRE_WEBGPU").is_none(),
            "no WebGPU adapter, and TANDEM_REQUIRE_WEBGPU is set"
        );
        eprintln!("no WebGPU adapter: skipped");
        None
    } else {
        Some(g)
    }
}

fn cpu() -> CpuBackend {
    CpuBackend::new(CpuOptions::default()).unwrap()
}

fn seed() -> u64 {
    let s = std::env::var("TANDEM_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("TANDEM_TEST_SEED={s}");
    s
}

fn random_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

fn read(b: &WebGpuBackend, buf: &<WebGpuBackend as Backend>::Buffer, n: usize) -> Vec<f32> {
    pollster::block_on(b.read(buf, n)).unwrap()
}

fn read_cpu(b: &CpuBackend, buf: &Vec<f32>, n: usize) -> Vec<f32> {
    pollster::block_on(b.read(buf, n)).unwrap()
}

/// A GPU buffer of `n` NaNs.
fn poisoned(b: &WebGpuBackend, n: usize) -> <WebGpuBackend as Backend>::Buffer {
    b.upload_vector(&vec![f32::NAN; n]).unwrap()
}

/// Largest error relative to `scale[i]` (plus a tiny absolute floor); NaN counts as infinite.
fn max_rel_err(got: &[f32], want: &[f32], scale: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut worst = 0.0f64;
    for i in 0..got.len() {
        let e = (f64::from(got[i]) - f64::from(want[i])).abs() / (scale[i] + 1e-20);
        let e = if e.is_nan() { f64::INFINITY } else { e };
        worst = worst.max(e);
    }
    worst
}

fn assert_close(what: &str, path: &Gpu, got: &[f32], want: &[f32], scale: &[f64]) {
    let e = max_rel_err(got, want, scale);
    eprintln!("{what} [{}]: max relative error {e:.2e}", path.name);
    assert!(
        e <= path.tol,
        "{what} [{}]: relative error {e:.3e} > {:.0e}",
        path.name,
        path.tol
    );
}

/// Weight bytes: quantized random floats, or random bits with sane block scales (so every bit
/// pattern of the quants is exercised).
fn weights(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize, raw_bits: bool) -> Vec<u8> {
    let quantized = !matches!(ty, GgmlType::F32 | GgmlType::F16);
    if !raw_bits || !quantized {
        let mut w = random_vec(rng, rows * cols, 1.0);
        for (r, row) in w.chunks_mut(cols).enumerate() {
            let s = 0.01 + (r % 5) as f32 * 0.3;
            row.iter_mut().for_each(|v| *v *= s);
        }
        return quantize(ty, &w).unwrap();
    }
    let (_, block_bytes) = ty.layout().unwrap();
    let mut bytes = vec![0u8; rows * ty.row_bytes(cols).unwrap()];
    rng.fill_bytes(&mut bytes);
    let half =
        |rng: &mut StdRng| half::f16::from_f32(rng.random::<f32>() * 0.02 + 0.001).to_le_bytes();
    for blk in bytes.chunks_mut(block_bytes) {
        let scale_offsets: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q4_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[],
        };
        for &o in scale_offsets {
            let h = half(rng);
            blk[o..o + 2].copy_from_slice(&h);
        }
    }
    bytes
}

fn source(name: &str, ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> MatrixSource {
    let len = bytes.len();
    MatrixSource {
        name: name.into(),
        ty,
        rows,
        cols,
        bytes: ModelBytes::from_vec(bytes),
        range: 0..len,
    }
}

/// One matrix product on `g` against the CPU backend's f32 product with the dequantized weights.
fn check_matmul(g: &Gpu, ty: GgmlType, n: usize, k: usize, rows: usize, rng: &mut StdRng) {
    let raw = rng.random::<bool>();
    let bytes = weights(rng, ty, n, k, raw);
    let wf = dequantize_to_vec(ty, &bytes).unwrap();
    let x = random_vec(rng, rows * k, 2.0);
    let c = cpu();
    let cw = c
        .upload_matrix(&source(
            "w",
            GgmlType::F32,
            n,
            k,
            bytemuck::cast_slice(&wf).to_vec(),
        ))
        .unwrap();
    let cx = c.upload_vector(&x).unwrap();
    let mut cout = c.alloc(rows * n).unwrap();
    c.matmul(&cw, &cx, rows, &mut cout);
    let want = read_cpu(&c, &cout, rows * n);
    let scale: Vec<f64> = (0..rows * n)
        .map(|i| {
            let (t, r) = (i / n, i % n);
            (0..k)
                .map(|j| (f64::from(wf[r * k + j]) * f64::from(x[t * k + j])).abs())
                .sum()
        })
        .collect();

    let b = &g.b;
    let w = b.upload_matrix(&source("w", ty, n, k, bytes)).unwrap();
    let gx = b.upload_vector(&x).unwrap();
    let mut out = poisoned(b, rows * n);
    b.matmul(&w, &gx, rows, &mut out);
    let got = read(b, &out, rows * n);
    assert_close(
        &format!("matmul {ty} {n}x{k} rows {rows}"),
        g,
        &got,
        &want,
        &scale,
    );
}

#[test]
fn matmul_every_type_and_row_count() {
    let Some(paths) = paths() else { return };
    let mut rng = StdRng::seed_from_u64(seed());
    for g in paths {
        for ty in g.b.capabilities().weight_types {
            for rows in [1, 2, 3, 5, 8, 9, 37, 70] {
                let n = [67, 130, 33][rows % 3];
                let k = [256, 512, 768][rows % 3];
                check_matmul(g, ty, n, k, rows, &mut rng);
            }
        }
    }
}

#[test]
fn matrices_split_across_bindings() {
    if paths().is_none() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed());
    // Bindings of 16 KiB force every matrix below into several row parts.
    let b = WebGpuBackend::new_blocking(WebGpuOptions {
        precision: Precision::F32,
        cpu_kernels: Some(false),
        max_binding_size: Some(16384),
        ..WebGpuOptions::default()
    })
    .unwrap();
    let g = Gpu {
        b,
        tol: TOL_F32,
        name: "f32, 16 KiB bindings",
    };
    for ty in g.b.capabilities().weight_types {
        let (n, k) = (200, 256);
        let m =
            g.b.upload_matrix(&source("w", ty, n, k, weights(&mut rng, ty, n, k, false)))
                .unwrap();
        assert!(m.parts() > 1, "{ty} was not split");
        for rows in [1, 4, 12] {
            check_matmul(&g, ty, n, k, rows, &mut rng);
        }
        check_embed(&g, ty, n, k, &mut rng);
    }
    let err = match g.b.upload_matrix(&source(
        "wide",
        GgmlType::F32,
        2,
        8192,
        vec![0; 2 * 8192 * 4],
    )) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a row larger than a binding was accepted"),
    };
    assert!(err.contains("exceeds the largest binding"), "{err}");
}

fn one_seq_step(
    tokens: &[u32],
    start_pos: usize,
    rope: &RopeConfig,
    logits: LogitsWanted,
) -> StepInput {
    let bs = 16;
    let blocks: Vec<u32> = (0..(start_pos + tokens.len()).div_ceil(bs) as u32).collect();
    StepInput::build(
        &[SeqChunk {
            start_pos,
            tokens,
            block_table: &blocks,
            logits,
            hidden: 0..0,
        }],
        bs,
        rope,
    )
}

fn check_embed(g: &Gpu, ty: GgmlType, vocab: usize, d: usize, rng: &mut StdRng) {
    let bytes = weights(rng, ty, vocab, d, true);
    let tokens: Vec<u32> = (0..9).map(|_| rng.random_range(0..vocab as u32)).collect();
    let rope = RopeConfig::plain(RopeLayout::Normal, 0, 10000.0);
    let step = one_seq_step(&tokens, 0, &rope, LogitsWanted::None);
    let c = cpu();
    let ct = c
        .upload_matrix(&source("t", ty, vocab, d, bytes.clone()))
        .unwrap();
    let cs = c.begin_step(&step).unwrap();
    let mut cout = c.alloc(tokens.len() * d).unwrap();
    c.embed(&cs, &ct, &mut cout);
    let want = read_cpu(&c, &cout, tokens.len() * d);
    let b = &g.b;
    let t = b.upload_matrix(&source("t", ty, vocab, d, bytes)).unwrap();
    let s = b.begin_step(&step).unwrap();
    let mut out = poisoned(b, tokens.len() * d);
    b.embed(&s, &t, &mut out);
    let got = read(b, &out, tokens.len() * d);
    // Decoding is exact on every path.
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "embed {ty} [{}]",
        g.name
    );
}

#[test]
fn embedding_lookup_is_exact() {
    let Some(paths) = paths() else { return };
    let mut rng = StdRng::seed_from_u64(seed());
    for g in paths {
        for ty in g.b.capabilities().weight_types {
            check_embed(g, ty, 300, 512, &mut rng);
        }
    }
}

#[test]
fn rms_norm_matches() {
    let Some(paths) = paths() else { return };
    let mut rng = StdRng::seed_from_u64(seed());
    for g in paths {
        for (rows, dim) in [(1, 576), (7, 1000), (3, 4096)] {
            let x = random_vec(&mut rng, rows * dim, 3.0);
            let w = random_vec(&mut rng, dim, 1.5);
            let c = cpu();
            let (cx, cw) = (c.upload_vector(&x).unwrap(), c.upload_vector(&w).unwrap());
            let mut cout = c.alloc(rows * dim).unwrap();
            c.rms_norm(&cx, &cw, 1e-5, rows, dim, &mut cout);
            let want = read_cpu(&c, &cout, rows * dim);
            let b = &g.b;
            let (gx, gw) = (b.upload_vector(&x).unwrap(), b.upload_vector(&w).unwrap());
            let mut out = poisoned(b, rows * dim);
            b.rms_norm(&gx, &gw, 1e-5, rows, dim, &mut out);
            let got = read(b, &out, rows * dim);
            let scale: Vec<f64> = want.iter().map(|v| f64::from(v.abs()) + 1e-3).collect();
            // Row-wise kernels compute in f32 on both paths.
            let e = max_rel_err(&got, &want, &scale);
            eprintln!(
                "rms_norm {rows}x{dim} [{}]: max relative error {e:.2e}",
                g.name
            );
            assert!(e <= TOL_F32, "rms_norm {rows}x{dim} [{}]: {e:.3e}", g.name);
        }
    }
}

#[test]
fn elementwise_ops_match() {
    let Some(paths) = paths() else { return };
    let mut rng = StdRng::seed_from_u64(seed());
    for g in paths {
        let b = &g.b;
        let c = cpu();
        let (rows, dim) = (5, 333);
        let n = rows * dim;
        let x = random_vec(&mut rng, n, 4.0);
        let y = random_vec(&mut rng, n, 4.0);
        let bias = random_vec(&mut rng, dim, 1.0);
        let scale =
            |v: &[f32]| -> Vec<f64> { v.iter().map(|a| f64::from(a.abs()) + 1e-6).collect() };

        // swiglu
        let mut cg = c.upload_vector(&x).unwrap();
        c.swiglu(&mut cg, &c.upload_vector(&y).unwrap(), n);
        let want = read_cpu(&c, &cg, n);
        let mut gg = b.upload_vector(&x).unwrap();
        b.swiglu(&mut gg, &b.upload_vector(&y).unwrap(), n);
        let got = read(b, &gg, n);
        assert!(
            max_rel_err(&got, &want, &scale(&want)) <= TOL_F32,
            "swiglu [{}]",
            g.name
        );

        // add
        let mut ca = c.upload_vector(&x).unwrap();
        c.add(&mut ca, &c.upload_vector(&y).unwrap(), n);
        let want = read_cpu(&c, &ca, n);
        let mut ga = b.upload_vector(&x).unwrap();
        b.add(&mut ga, &b.upload_vector(&y).unwrap(), n);
        assert_eq!(read(b, &ga, n), want, "add [{}]", g.name);

        // add_bias
        let mut cb = c.upload_vector(&x).unwrap();
        c.add_bias(&mut cb, &c.upload_vector(&bias).unwrap(), rows, dim);
        let want = read_cpu(&c, &cb, n);
        let mut gb = b.upload_vector(&x).unwrap();
        b.add_bias(&mut gb, &b.upload_vector(&bias).unwrap(), rows, dim);
        assert_eq!(read(b, &gb, n), want, "add_bias [{}]", g.name);

        // gather_output_rows
        let tokens: Vec<u32> = (0..rows as u32).collect();
        let rope = RopeConfig::plain(RopeLayout::Normal, 0, 10000.0);
        let step = one_seq_step(&tokens, 0, &rope, LogitsWanted::All);
        let mut step2 = step.clone();
        step2.output_rows = vec![4, 1, 3];
        let cs = c.begin_step(&step2).unwrap();
        let mut cgat = c.alloc(3 * dim).unwrap();
        c.gather_output_rows(&cs, &c.upload_vector(&x).unwrap(), dim, &mut cgat);
        let want = read_cpu(&c, &cgat, 3 * dim);
        let gs = b.begin_step(&step2).unwrap();
        let mut ggat = poisoned(b, 3 * dim);
        b.gather_output_rows(&gs, &b.upload_vector(&x).unwrap(), dim, &mut ggat);
        assert_eq!(read(b, &ggat, 3 * dim), want, "gather [{}]", g.name);
    }
}

#[test]
fn rope_matches_both_layouts() {
    let Some(paths) = paths() else { return };
    let mut rng = StdRng::seed_from_u64(seed());
    for g in paths {
        for layout in [RopeLayout::Normal, RopeLayout::Neox] {
            for (n_heads, head_dim, n_dims) in [(9, 64, 64), (4, 128, 64)] {
                let rope = RopeConfig::plain(layout, n_dims, 10000.0);
                let tokens = vec![1u32; 6];
                let step = one_seq_step(&tokens, 21, &rope, LogitsWanted::None);
                let n = tokens.len() * n_heads * head_dim;
                let x = random_vec(&mut rng, n, 2.0);
                let c = cpu();
                let cs = c.begin_step(&step).unwrap();
                let mut cx = c.upload_vector(&x).unwrap();
                c.rope(&cs, &mut cx, n_heads, head_dim);
                let want = read_cpu(&c, &cx, n);
                let b = &g.b;
                let gs = b.begin_step(&step).unwrap();
                let mut gx = b.upload_vector(&x).unwrap();
                b.rope(&gs, &mut gx, n_heads, head_dim);
                let got = read(b, &gx, n);
                let scale = vec![4.0; n];
                assert!(
                    max_rel_err(&got, &want, &scale) <= TOL_F32,
                    "rope {layout:?} {n_heads}x{head_dim}/{n_dims} [{}]",
                    g.name
                );
            }
        }
    }
}

/// A two-step scenario on three sequences with shuffled (paged) blocks: the first step caches a
/// prefix of each, the second adds `new[s]` rows to sequence `s` and attends.
fn check_attention(g: &Gpu, prefix: [usize; 3], new: [usize; 3], rng: &mut StdRng) {
    let (n_heads, n_kv, hd, bs) = (6, 2, 64, 16);
    let kv_dim = n_kv * hd;
    let total: Vec<usize> = (0..3).map(|s| prefix[s] + new[s]).collect();
    let n_blocks: usize = total.iter().map(|t| t.div_ceil(bs)).sum::<usize>() + 3;
    let mut ids: Vec<u32> = (0..n_blocks as u32).collect();
    for i in (1..ids.len()).rev() {
        let j = rng.random_range(0..=i);
        ids.swap(i, j);
    }
    let mut tables = Vec::new();
    let mut at = 0;
    for t in &total {
        let nb = t.div_ceil(bs);
        tables.push(ids[at..at + nb].to_vec());
        at += nb;
    }
    let layout = KvLayout {
        n_layers: 2,
        n_kv_heads: n_kv,
        head_dim: hd,
        block_size: bs,
        n_blocks,
        dtype: KvDtype::F32,
    };
    let rope = RopeConfig::plain(RopeLayout::Normal, 0, 10000.0);
    let toks: Vec<Vec<u32>> = total.iter().map(|&t| vec![0u32; t]).collect();
    let step_of = |from: [usize; 3], to: [usize; 3]| {
        let chunks: Vec<SeqChunk<'_>> = (0..3)
            .filter(|&s| to[s] > from[s])
            .map(|s| SeqChunk {
                start_pos: from[s],
                tokens: &toks[s][from[s]..to[s]],
                block_table: &tables[s],
                logits: LogitsWanted::None,
                hidden: 0..0,
            })
            .collect();
        StepInput::build(&chunks, bs, &rope)
    };
    let first = step_of([0; 3], prefix);
    let second = step_of(prefix, [total[0], total[1], total[2]]);
    let c = cpu();
    let b = &g.b;
    let mut ckv = c.alloc_kv(&layout).unwrap();
    let mut gkv = b.alloc_kv(&layout).unwrap();
    let layer = 1;
    let mut want = Vec::new();
    let mut got = Vec::new();
    for step in [&first, &second] {
        let rows = step.rows();
        if rows == 0 {
            continue;
        }
        let k = random_vec(rng, rows * kv_dim, 1.0);
        let v = random_vec(rng, rows * kv_dim, 1.0);
        let q = random_vec(rng, rows * n_heads * hd, 1.0);
        let cs = c.begin_step(step).unwrap();
        c.kv_write(
            &cs,
            &mut ckv,
            layer,
            &c.upload_vector(&k).unwrap(),
            &c.upload_vector(&v).unwrap(),
        );
        let mut cout = c.alloc(rows * n_heads * hd).unwrap();
        c.attention(
            &cs,
            &ckv,
            layer,
            &c.upload_vector(&q).unwrap(),
            n_heads,
            &mut cout,
        );
        want = read_cpu(&c, &cout, rows * n_heads * hd);
        let gs = b.begin_step(step).unwrap();
        b.kv_write(
            &gs,
            &mut gkv,
            layer,
            &b.upload_vector(&k).unwrap(),
            &b.upload_vector(&v).unwrap(),
        );
        let mut gout = poisoned(b, rows * n_heads * hd);
        b.attention(
            &gs,
            &gkv,
            layer,
            &b.upload_vector(&q).unwrap(),
            n_heads,
            &mut gout,
        );
        got = read(b, &gout, rows * n_heads * hd);
    }
    // Outputs are convex combinations of values in [-1, 1].
    let scale = vec![1.0; want.len()];
    let tol = if gkv.f16 { TOL_F16 } else { TOL_F32 };
    let e = max_rel_err(&got, &want, &scale);
    eprintln!(
        "attention prefix {prefix:?} new {new:?} [{}, kv {}]: max error {e:.2e}",
        g.name,
        if gkv.f16 { "f16" } else { "f32" }
    );
    assert!(
        e <= tol,
        "attention prefix {prefix:?} new {new:?} [{}]: {e:.3e}",
        g.name
    );
}

#[test]
fn attention_decode_and_prefill_over_paged_cache() {
    let Some(paths) = paths() else { return };
    let mut rng = StdRng::seed_from_u64(seed());
    for g in paths {
        // Decode rows (split over the context), with contexts past one chunk of 256.
        check_attention(g, [40, 300, 7], [1, 1, 1], &mut rng);
        // A small mixed step, still split.
        check_attention(g, [0, 17, 5], [5, 1, 3], &mut rng);
        // Prefill (tiled): long new chunks, with and without cached prefixes.
        check_attention(g, [0, 33, 0], [40, 20, 3], &mut rng);
        check_attention(g, [0, 0, 0], [70, 1, 1], &mut rng);
    }
}

/// The CPU sampler's choice for `logits` with draw `u`, computed plainly (full sort, f64), and the
/// smallest relative distance of any decision to its boundary (to skip near-ties).
fn reference_sample(logits: &[f32], s: &DeviceSampling) -> (u32, f64) {
    let clean = |x: f32| {
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x.min(f32::MAX)
        }
    };
    let l: Vec<f32> = logits.iter().map(|&x| clean(x)).collect();
    let n = l.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    let inv_t = s.inverse_temperature();
    if inv_t == 0.0 || l[order[0]] == f32::NEG_INFINITY {
        let id = if l[order[0]] == f32::NEG_INFINITY {
            0
        } else {
            order[0] as u32
        };
        return (id, 1.0);
    }
    let max = l[order[0]];
    let w = |i: usize| ((f64::from(l[i]) - f64::from(max)) * f64::from(inv_t)).exp();
    let k = s.top_k as usize;
    let top_k_on = k > 0 && k < n;
    let cand: Vec<usize> = if top_k_on {
        order[..k].to_vec()
    } else {
        order.clone()
    };
    let total: f64 = cand.iter().map(|&i| w(i)).sum();
    let mut margin = 1.0f64;
    let mut nucleus = cand.clone();
    if s.top_p < 1.0 {
        let target = f64::from(s.top_p) * total;
        let mut cum = 0.0;
        for (j, &i) in cand.iter().enumerate() {
            cum += w(i);
            margin = margin.min((cum - target).abs() / total);
            if cum >= target {
                nucleus.truncate(j + 1);
                break;
            }
        }
    }
    let rank_order = top_k_on || (s.top_p < 1.0 && nucleus.len() <= 1024);
    let mut kept: Vec<usize> = Vec::new();
    for i in nucleus {
        let wi = w(i);
        if s.min_p > 0.0 {
            margin = margin.min((wi - f64::from(s.min_p)).abs());
        }
        if wi >= f64::from(s.min_p) {
            kept.push(i);
        }
    }
    if !rank_order {
        kept.sort();
    }
    let total: f64 = kept.iter().map(|&i| w(i)).sum();
    let target = s.uniform * total;
    let mut cum = 0.0;
    for &i in &kept {
        cum += w(i);
        margin = margin.min((cum - target).abs() / total);
        if cum > target {
            return (i as u32, margin);
        }
    }
    (*kept.last().unwrap() as u32, 0.0)
}

#[test]
fn sampling_on_the_device() {
    let Some(paths) = paths() else { return };
    let mut rng = StdRng::seed_from_u64(seed());
    let specs = [
        DeviceSampling::greedy(),
        DeviceSampling {
            temperature: 0.8,
            ..DeviceSampling::greedy()
        },
        DeviceSampling {
            temperature: 1.0,
            top_k: 40,
            ..DeviceSampling::greedy()
        },
        DeviceSampling {
            temperature: 0.7,
            top_p: 0.9,
            ..DeviceSampling::greedy()
        },
        DeviceSampling {
            temperature: 1.2,
            top_k: 50,
            top_p: 0.8,
            min_p: 0.05,
            uniform: 0.0,
        },
        DeviceSampling {
            temperature: 3.0,
            top_p: 0.999,
            ..DeviceSampling::greedy()
        },
        DeviceSampling {
            temperature: 1.0,
            top_k: 1,
            ..DeviceSampling::greedy()
        },
    ];
    let (mut compared, mut skipped) = (0, 0);
    for (g, vocab) in paths.iter().flat_map(|g| [(g, 1000usize), (g, 5003)]) {
        let b = &g.b;
        for spec in specs {
            let rows = 12;
            let mut logits = Vec::with_capacity(rows * vocab);
            for r in 0..rows {
                let spread = [1.0f32, 3.0, 8.0][r % 3];
                for _ in 0..vocab {
                    // Coarse values make ties common.
                    let v = (rng.random::<f32>() * 2.0 - 1.0) * spread;
                    logits.push((v * 8.0).round() / 8.0);
                }
            }
            // Special values in some rows: NaN, -inf, +inf.
            logits[3] = f32::NAN;
            logits[vocab + 5] = f32::NEG_INFINITY;
            logits[2 * vocab + 7] = f32::INFINITY;
            logits[2 * vocab + 9] = f32::INFINITY;
            let rows_spec: Vec<DeviceSampling> = (0..rows)
                .map(|_| DeviceSampling {
                    uniform: rng.random::<f64>(),
                    ..spec
                })
                .collect();
            let gl = b.upload_vector(&logits).unwrap();
            let got = pollster::block_on(b.sample(&gl, vocab, &rows_spec).unwrap()).unwrap();
            for r in 0..rows {
                let (want, margin) =
                    reference_sample(&logits[r * vocab..(r + 1) * vocab], &rows_spec[r]);
                if margin < 5e-6 {
                    eprintln!("near-tie skipped: vocab {vocab} spec {spec:?} margin {margin:.1e}");
                    skipped += 1;
                    continue;
                }
                compared += 1;
                assert_eq!(
                    got[r], want,
                    "[{}] vocab {vocab} row {r} spec {:?}",
                    g.name, rows_spec[r]
                );
            }
        }
    }
    eprintln!("sampling: {compared} choices compared, {skipped} near-ties skipped");
    assert!(compared >= 9 * (compared + skipped) / 10);
}
