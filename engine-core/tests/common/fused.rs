//! The fused operations of the `Backend` contract against the operations they stand for, on one
//! backend, on fresh random inputs: `add_rms_norm` equals `add` then `rms_norm`, and
//! `matmul_swiglu` equals `matmul_many` then `swiglu`. Shared by every backend's tests.

use engine_core::backend::{Backend, MatrixSource};
use engine_core::gguf::ModelBytes;
use engine_core::quant::{GgmlType, quantize};
use rand::RngExt;

/// `n` uniform random floats in `(-scale, scale)`, fresh on every call.
pub fn random(n: usize, scale: f32) -> Vec<f32> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// The first `len` floats of a buffer.
pub fn read<B: Backend>(b: &B, buf: &B::Buffer, len: usize) -> Vec<f32> {
    pollster::block_on(b.read(buf, len)).unwrap()
}

/// The largest difference relative to the largest magnitude of `want`.
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(g, w)| if g == w { 0.0 } else { (g - w).abs() / scale })
        .fold(0.0, f32::max)
}

/// Checks both fused operations on `b`: the residual add and norm must be equal bit for bit,
/// the feed-forward products within `tol` relative (a fused kernel may round its SwiGLU
/// epilogue differently). Weight types are those `b` computes among Q4_0, Q4_K and F16 (a
/// backend may fuse some types and not others).
pub fn fused_ops_equal_their_parts<B: Backend>(b: &B, tol: f32) {
    let (rows, dim) = (5, 512);
    let x = random(rows * dim, 3.0);
    let y = random(rows * dim, 3.0);
    let weight = random(dim, 1.0);
    let (yb, wb) = (
        b.upload_vector(&y).unwrap(),
        b.upload_vector(&weight).unwrap(),
    );

    let mut x1 = b.upload_vector(&x).unwrap();
    let mut out1 = b.alloc(rows * dim).unwrap();
    b.add(&mut x1, &yb, rows * dim);
    b.rms_norm(&x1, &wb, 1e-5, rows, dim, &mut out1);
    let mut x2 = b.upload_vector(&x).unwrap();
    let mut out2 = b.alloc(rows * dim).unwrap();
    b.add_rms_norm(&mut x2, &yb, &wb, 1e-5, rows, dim, &mut out2);
    assert_eq!(
        read(b, &x2, rows * dim),
        read(b, &x1, rows * dim),
        "add_rms_norm: the sum differs from add"
    );
    assert_eq!(
        read(b, &out2, rows * dim),
        read(b, &out1, rows * dim),
        "add_rms_norm: the norm differs from rms_norm"
    );

    let caps = b.capabilities();
    let ffn = 96;
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::F16] {
        if !caps.computes(ty) {
            continue;
        }
        let matrix = |name: &str| {
            let bytes = quantize(ty, &random(ffn * dim, 1.0)).unwrap();
            let len = bytes.len();
            b.upload_matrix(&MatrixSource {
                name: name.into(),
                ty,
                rows: ffn,
                cols: dim,
                bytes: ModelBytes::from_vec(bytes),
                range: 0..len,
            })
            .unwrap()
        };
        let (wg, wu) = (matrix("ffn_gate"), matrix("ffn_up"));
        // 1, 8 and 13 rows: one launch, a full one, and several.
        for n in [1, 8, 13] {
            let xb = b.upload_vector(&random(n * dim, 2.0)).unwrap();
            let mut gate1 = b.alloc(n * ffn).unwrap();
            let mut up1 = b.alloc(n * ffn).unwrap();
            b.matmul_many(&[&wg, &wu], &xb, n, &mut [&mut gate1, &mut up1]);
            b.swiglu(&mut gate1, &up1, n * ffn);
            let mut gate2 = b.alloc(n * ffn).unwrap();
            let mut up2 = b.alloc(n * ffn).unwrap();
            b.matmul_swiglu(&wg, &wu, &xb, n, ffn, &mut gate2, &mut up2);
            let diff = rel_diff(&read(b, &gate2, n * ffn), &read(b, &gate1, n * ffn));
            assert!(
                diff <= tol,
                "matmul_swiglu {ty:?} x {n} rows: {diff:.3e} from matmul_many + swiglu"
            );
        }
    }
}
