//! The device's reading of every quantized weight format (`kernels/formats.cuh`), compiled for
//! the host with the system's C++ compiler and checked against engine-core's dequantizer, on
//! fresh random rows: quantized random floats, and random bits with sane scales (so that every
//! bit pattern of the quants, scales and high bits is read). This checks the block layouts and
//! index arithmetic of the kernels without a GPU; `tests/kernels.rs` checks the kernels
//! themselves on one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use engine_core::quant::{GgmlType, dequantize_to_vec, quantize};
use rand::{Rng, RngExt};

/// Weights per row (two K-quant super-blocks, sixteen 32-weight blocks).
const K: usize = 512;

/// Compiles the harness once into this test's scratch folder.
fn harness() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("formats-harness");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&cxx)
        .args([
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wno-unknown-pragmas",
            "-Werror",
            "-I",
        ])
        .arg(here.join("kernels"))
        .arg("-o")
        .arg(&out)
        .arg(here.join("tests/formats_host/harness.cpp"))
        .status()
        .unwrap_or_else(|e| panic!("running the C++ compiler `{cxx}` (set CXX): {e}"));
    assert!(status.success(), "the harness did not compile");
    out
}

/// The harness's dequantized row and per-unit dots for one row.
fn device_reading(harness: &Path, name: &str, row: &[u8], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut child = Command::new(harness)
        .args([name, &K.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = row.to_vec();
    input.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "harness failed on {name}");
    let floats: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats.len(), K + K / 32, "{name}: output length");
    let (w, dots) = floats.split_at(K);
    (w.to_vec(), dots.to_vec())
}

/// A row of random bits whose f16 scales are replaced by sane values.
fn raw_row(rng: &mut impl Rng, ty: GgmlType) -> Vec<u8> {
    let (block_len, block_bytes) = ty.layout().unwrap();
    let mut bytes = vec![0u8; K / block_len * block_bytes];
    rng.fill_bytes(&mut bytes);
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => unreachable!(),
    };
    for blk in bytes.chunks_mut(block_bytes) {
        for &o in scale_offsets {
            let h = half::f16::from_f32(rng.random_range(0.001f32..0.02));
            blk[o..o + 2].copy_from_slice(&h.to_le_bytes());
        }
    }
    bytes
}

#[test]
fn the_device_reads_every_format_as_engine_core_does() {
    let harness = harness();
    let mut rng = rand::rng();
    for (ty, name) in [
        (GgmlType::Q4_0, "q4_0"),
        (GgmlType::Q4_1, "q4_1"),
        (GgmlType::Q8_0, "q8_0"),
        (GgmlType::Q4_K, "q4_k"),
        (GgmlType::Q5_K, "q5_k"),
        (GgmlType::Q6_K, "q6_k"),
    ] {
        for raw in [false, true] {
            let row = if raw {
                raw_row(&mut rng, ty)
            } else {
                let w: Vec<f32> = (0..K).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                quantize(ty, &w).unwrap()
            };
            let x: Vec<f32> = (0..K).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let want = dequantize_to_vec(ty, &row).unwrap();
            let (got, dots) = device_reading(&harness, name, &row, &x);
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * scale,
                    "{name} raw={raw}: weight {i} is {g}, engine-core reads {w}"
                );
            }
            for (u, &d) in dots.iter().enumerate() {
                let terms = (32 * u..32 * u + 32).map(|i| f64::from(want[i]) * f64::from(x[i]));
                let exact: f64 = terms.clone().sum();
                let magnitude: f64 = terms.map(f64::abs).sum();
                assert!(
                    (f64::from(d) - exact).abs() <= 1e-5 * magnitude + 1e-9,
                    "{name} raw={raw}: unit {u} dot is {d}, exactly {exact}"
                );
            }
        }
    }
}
