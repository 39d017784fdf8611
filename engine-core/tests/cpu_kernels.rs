//! Every CPU matrix-product kernel (each instruction set this machine has, and the scalar one)
//! against an f64 reference, on fresh random weights and activations, for every tile shape.

use engine_core::backend::cpu::acts::quantize_block;
use engine_core::backend::cpu::{CpuBackend, CpuOptions, Isa};
use engine_core::backend::{Backend, MatrixSource};
use engine_core::gguf::ModelBytes;
use engine_core::quant::{GgmlType, dequantize_to_vec, quantize};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

const INTEGER_TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];
const FLOAT_PATH_TYPES: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q5_K,
];

fn seed() -> u64 {
    // Fresh inputs on every run; the seed is printed so a failure can be replayed.
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

/// Weight bytes: either quantized random floats, or random bits with the block scales replaced by
/// sane half floats (so every bit pattern of the quants is exercised).
fn weights(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize, raw_bits: bool) -> Vec<u8> {
    if !raw_bits
        || !matches!(
            ty,
            GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q4_K
                | GgmlType::Q6_K
        )
    {
        let mut w = random_vec(rng, rows * cols, 1.0);
        // Vary the magnitude between rows.
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
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K => &[0, 2],
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

/// The exact product of the dequantized weights with the activations as the kernels quantize them
/// (8-bit, per 32) or, for float-path types, with the float activations.
fn reference(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    tokens: usize,
    integer: bool,
) -> Vec<f64> {
    let wf = dequantize_to_vec(ty, w).unwrap();
    let mut xq = x.to_vec();
    if integer {
        for block in xq.chunks_mut(32) {
            let (mut hi, mut lo) = ([0i8; 32], [0i8; 32]);
            let (d, _) = quantize_block(block, &mut hi, &mut lo);
            for ((v, &h), &l) in block.iter_mut().zip(&hi).zip(&lo) {
                *v = ((i32::from(h) << 7) + i32::from(l)) as f32 * d;
            }
        }
    }
    let mut out = vec![0.0f64; tokens * rows];
    for t in 0..tokens {
        for r in 0..rows {
            out[t * rows + r] = (0..cols)
                .map(|k| f64::from(wf[r * cols + k]) * f64::from(xq[t * cols + k]))
                .sum();
        }
    }
    out
}

fn check(
    isa: Isa,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    tokens: usize,
    raw_bits: bool,
    rng: &mut StdRng,
) {
    let backend = CpuBackend::new(CpuOptions {
        threads: 2,
        isa: Some(isa),
    })
    .unwrap();
    let w = weights(rng, ty, rows, cols, raw_bits);
    let x = random_vec(rng, tokens * cols, 2.0);
    let len = w.len();
    let m = backend
        .upload_matrix(&MatrixSource {
            name: "w".into(),
            ty,
            rows,
            cols,
            bytes: ModelBytes::from_vec(w.clone()),
            range: 0..len,
        })
        .unwrap();
    let mut out = vec![f32::NAN; tokens * rows];
    backend.matmul(&m, &x, tokens, &mut out);
    let integer = INTEGER_TYPES.contains(&ty);
    let want = reference(ty, &w, rows, cols, &x, tokens, integer);
    let wf = dequantize_to_vec(ty, &w).unwrap();
    for t in 0..tokens {
        for r in 0..rows {
            let got = out[t * rows + r];
            // Tolerance: f32 rounding relative to the sum of absolute terms.
            let mag: f64 = (0..cols)
                .map(|k| (f64::from(wf[r * cols + k]) * f64::from(x[t * cols + k])).abs())
                .sum();
            let err = (f64::from(got) - want[t * rows + r]).abs();
            assert!(
                got.is_finite() && err <= 2e-5 * mag + 1e-6,
                "{} {ty} rows={rows} cols={cols} tokens={tokens} raw={raw_bits}: out[{t}][{r}] = {got}, want {} (err {err:.3e}, scale {mag:.3e})",
                isa.name(),
                want[t * rows + r]
            );
        }
    }
}

#[test]
fn integer_kernels_match_reference_on_every_isa() {
    let mut rng = StdRng::seed_from_u64(seed());
    let names: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
    eprintln!("instruction sets: {names:?}");
    for isa in Isa::available() {
        for ty in INTEGER_TYPES {
            let cols = if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) {
                512
            } else {
                96
            };
            for &(rows, tokens) in &[(1, 1), (4, 1), (7, 3), (13, 9), (37, 4), (5, 70), (17, 31)] {
                check(isa, ty, rows, cols, tokens, false, &mut rng);
                check(isa, ty, rows, cols, tokens, true, &mut rng);
            }
        }
    }
}

#[test]
fn float_path_kernels_match_reference() {
    let mut rng = StdRng::seed_from_u64(seed());
    for isa in Isa::available() {
        for ty in FLOAT_PATH_TYPES {
            let cols = 256;
            for &(rows, tokens) in &[(1, 1), (9, 3), (33, 5)] {
                check(isa, ty, rows, cols, tokens, false, &mut rng);
            }
        }
    }
}

#[test]
fn simd_kernels_agree_with_scalar_exactly_enough() {
    // The same inputs through every instruction set give results within f32 rounding of each
    // other (not only of the reference).
    let mut rng = StdRng::seed_from_u64(seed());
    let isas = Isa::available();
    for ty in INTEGER_TYPES {
        let (rows, cols, tokens) = (21, 512, 6);
        let w = weights(&mut rng, ty, rows, cols, true);
        let x = random_vec(&mut rng, tokens * cols, 3.0);
        let mut results = Vec::new();
        for &isa in &isas {
            let b = CpuBackend::new(CpuOptions {
                threads: 1,
                isa: Some(isa),
            })
            .unwrap();
            let len = w.len();
            let m = b
                .upload_matrix(&MatrixSource {
                    name: "w".into(),
                    ty,
                    rows,
                    cols,
                    bytes: ModelBytes::from_vec(w.clone()),
                    range: 0..len,
                })
                .unwrap();
            let mut out = vec![f32::NAN; rows * tokens];
            b.matmul(&m, &x, tokens, &mut out);
            results.push((isa, out));
        }
        let wf = dequantize_to_vec(ty, &w).unwrap();
        let (_, scalar) = results.last().unwrap();
        for (isa, out) in &results {
            for (i, (a, b)) in out.iter().zip(scalar).enumerate() {
                let (t, r) = (i / rows, i % rows);
                let mag: f32 = (0..cols)
                    .map(|k| (wf[r * cols + k] * x[t * cols + k]).abs())
                    .sum();
                assert!(
                    (a - b).abs() <= 2e-5 * mag,
                    "{} vs scalar on {ty}: {a} vs {b} (scale {mag})",
                    isa.name()
                );
            }
        }
    }
}
