//! Quantization and dequantization checked against the reference implementations.
//!
//! * Dequantization of random blocks must equal `gguf.quants.dequantize` (the Python package
//!   that ships with llama.cpp) bit for bit, for every type the package decodes.
//! * Quantization of random values must equal `gguf.quants.quantize` byte for byte, for every
//!   type the package encodes.
//! * Every type must round-trip within a per-type error bound.
//! * Where llama.cpp's own `libggml-base` build is in Tandem's cache (or `$TANDEM_GGML_LIB` names
//!   it), every quantizer is also compared byte for byte with ggml's `quantize_row_*_ref`.

mod py;

use std::path::{Path, PathBuf};

use engine_core::quant::{
    self, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K,
    BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K, GgmlType, QuantError,
};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

/// Types `gguf.quants.dequantize` supports among the engine's.
const PY_DEQUANT: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Types `gguf.quants.quantize` supports among the engine's.
const PY_QUANT: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

const QUANTIZED: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

/// Byte offsets of the f16 fields of a block (the scales that must be finite).
fn f16_fields(ty: GgmlType) -> Vec<usize> {
    use std::mem::offset_of;
    match ty {
        GgmlType::Q4_0 => vec![offset_of!(BlockQ4_0, d)],
        GgmlType::Q4_1 => vec![offset_of!(BlockQ4_1, d), offset_of!(BlockQ4_1, m)],
        GgmlType::Q5_0 => vec![offset_of!(BlockQ5_0, d)],
        GgmlType::Q5_1 => vec![offset_of!(BlockQ5_1, d), offset_of!(BlockQ5_1, m)],
        GgmlType::Q8_0 => vec![offset_of!(BlockQ8_0, d)],
        GgmlType::Q8_1 => vec![offset_of!(BlockQ8_1, d), offset_of!(BlockQ8_1, s)],
        GgmlType::Q2_K => vec![offset_of!(BlockQ2K, d), offset_of!(BlockQ2K, dmin)],
        GgmlType::Q3_K => vec![offset_of!(BlockQ3K, d)],
        GgmlType::Q4_K => vec![offset_of!(BlockQ4K, d), offset_of!(BlockQ4K, dmin)],
        GgmlType::Q5_K => vec![offset_of!(BlockQ5K, d), offset_of!(BlockQ5K, dmin)],
        GgmlType::Q6_K => vec![offset_of!(BlockQ6K, d)],
        _ => vec![],
    }
}

/// A random finite f16, as bits: any sign, exponent (subnormals included) and mantissa.
fn finite_f16(rng: &mut StdRng) -> [u8; 2] {
    loop {
        let bits: u16 = rng.random();
        if bits & 0x7C00 != 0x7C00 {
            return bits.to_le_bytes();
        }
    }
}

/// `n_blocks` random blocks of `ty`: random bytes with finite scales.
fn random_blocks(ty: GgmlType, n_blocks: usize, rng: &mut StdRng) -> Vec<u8> {
    let size = ty.type_size();
    let mut bytes = vec![0u8; n_blocks * size];
    rng.fill_bytes(&mut bytes);
    for block in bytes.chunks_exact_mut(size) {
        for at in f16_fields(ty) {
            block[at..at + 2].copy_from_slice(&finite_f16(rng));
        }
        if ty == GgmlType::Q8_K {
            let d: f32 = rng.random_range(-1e3..1e3);
            block[..4].copy_from_slice(&d.to_le_bytes());
        }
    }
    bytes
}

/// `n` values in blocks of 32 with varied shapes: uniform at scales from 1e-6 to 1e4, skewed to
/// one side, with outliers, constant, all zero, tiny (subnormal scales) and huge (scales beyond
/// f16's range).
fn random_values(n: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    let mut block = 0usize;
    while out.len() < n {
        let scale = 10f32.powf(rng.random_range(-6.0..4.0));
        let kind = block % 16;
        for i in 0..32 {
            let u: f32 = rng.random_range(-1.0..1.0);
            let v = match kind {
                0 => 0.0,
                1 => 0.375 * scale,
                2 => u * 1e-9,
                3 => u * 1e6,
                4 => (u.abs() + 0.5) * scale,
                5 => -(u.abs() + 0.1) * scale,
                6 if i == 7 => 40.0 * scale,
                7 => (u * 8.0).round() * scale,
                _ => u * scale,
            };
            out.push(v);
        }
        block += 1;
    }
    out.truncate(n);
    out
}

fn f32s_to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bytes_to_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

struct Job {
    op: &'static str,
    ty: GgmlType,
    input: PathBuf,
    output: PathBuf,
}

/// Runs `quants.py` over `jobs` (inputs already written) and returns each job's output bytes.
fn run_jobs(dir: &Path, jobs: &[Job], ggml_lib: Option<&Path>) -> Vec<Vec<u8>> {
    let manifest = serde_json::json!({
        "ggml_lib": ggml_lib.map(|p| p.display().to_string()),
        "jobs": jobs.iter().map(|j| serde_json::json!({
            "op": j.op,
            "type": j.ty.name(),
            "block_size": j.ty.block_size(),
            "type_size": j.ty.type_size(),
            "input": j.input.display().to_string(),
            "output": j.output.display().to_string(),
        })).collect::<Vec<_>>(),
    });
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    py::run("quants.py", &[path.as_os_str()]);
    jobs.iter()
        .map(|j| std::fs::read(&j.output).unwrap())
        .collect()
}

/// Asserts two f32 arrays are identical bit for bit; reports the first differences.
fn assert_bits_equal(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
    let diffs: Vec<String> = ours
        .iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
        .take(5)
        .map(|(i, (a, b))| {
            format!(
                "[{i}] ours {a:e} ({:#010x}) vs {b:e} ({:#010x})",
                a.to_bits(),
                b.to_bits()
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: values differ:\n{}",
        diffs.join("\n")
    );
}

/// Asserts two encodings are identical; reports the first differing blocks.
fn assert_bytes_equal(what: &str, ty: GgmlType, ours: &[u8], theirs: &[u8]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
    let size = ty.type_size();
    let diffs: Vec<String> = ours
        .chunks(size)
        .zip(theirs.chunks(size))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .take(3)
        .map(|(i, (a, b))| format!("block {i}:\n ours   {a:02x?}\n theirs {b:02x?}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: bytes differ:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn dequantize_matches_gguf_python() {
    let dir = py::scratch_dir("dequantize_matches_gguf_python");
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut jobs = Vec::new();
    let mut inputs = Vec::new();
    for ty in PY_DEQUANT {
        let n_blocks = if ty.block_size() == 1 {
            1 << 16
        } else {
            8192 * 32 / ty.block_size()
        };
        let bytes = random_blocks(ty, n_blocks, &mut rng);
        let input = dir.join(format!("{ty}.blocks"));
        std::fs::write(&input, &bytes).unwrap();
        jobs.push(Job {
            op: "dequantize",
            ty,
            input,
            output: dir.join(format!("{ty}.f32")),
        });
        inputs.push(bytes);
    }
    let outputs = run_jobs(&dir, &jobs, None);
    for ((job, bytes), theirs) in jobs.iter().zip(&inputs).zip(&outputs) {
        let ours = quant::dequantize_to_vec(job.ty, bytes).unwrap();
        assert_bits_equal(
            &format!("dequantize {}", job.ty),
            &ours,
            &bytes_to_f32s(theirs),
        );
    }
}

#[test]
fn quantize_matches_gguf_python() {
    let dir = py::scratch_dir("quantize_matches_gguf_python");
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let values = random_values(4096 * 32, &mut rng);
    let input = dir.join("values.f32");
    std::fs::write(&input, f32s_to_bytes(&values)).unwrap();
    let jobs: Vec<Job> = PY_QUANT
        .iter()
        .map(|&ty| Job {
            op: "quantize",
            ty,
            input: input.clone(),
            output: dir.join(format!("{ty}.q")),
        })
        .collect();
    let outputs = run_jobs(&dir, &jobs, None);
    for (job, theirs) in jobs.iter().zip(&outputs) {
        let ours = quant::quantize(job.ty, &values).unwrap();
        assert_bytes_equal(&format!("quantize {}", job.ty), job.ty, &ours, theirs);
    }
}

/// Where llama.cpp's build of `libggml-base` is, if it was built: `$TANDEM_GGML_LIB`, else a
/// `llama.cpp-*/build/bin/libggml-base.so` in Tandem's cache.
fn ggml_lib() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TANDEM_GGML_LIB") {
        return Some(PathBuf::from(path));
    }
    let cache = match std::env::var_os("TANDEM_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/tandem"),
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("llama.cpp-"))
        .map(|e| e.path().join("build/bin/libggml-base.so"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

#[test]
fn quantize_matches_ggml_library() {
    let Some(lib) = ggml_lib() else {
        eprintln!("skipped: no llama.cpp build of libggml-base.so in the cache");
        return;
    };
    let dir = py::scratch_dir("quantize_matches_ggml_library");
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    let values = random_values(512 * 256, &mut rng);
    let input = dir.join("values.f32");
    std::fs::write(&input, f32s_to_bytes(&values)).unwrap();
    let mut jobs: Vec<Job> = QUANTIZED
        .iter()
        .map(|&ty| Job {
            op: "ggml_quantize",
            ty,
            input: input.clone(),
            output: dir.join(format!("{ty}.q")),
        })
        .collect();
    let q8k = random_blocks(GgmlType::Q8_K, 64, &mut rng);
    let q8k_input = dir.join("Q8_K.blocks");
    std::fs::write(&q8k_input, &q8k).unwrap();
    jobs.push(Job {
        op: "ggml_dequantize",
        ty: GgmlType::Q8_K,
        input: q8k_input,
        output: dir.join("Q8_K.f32"),
    });
    let outputs = run_jobs(&dir, &jobs, Some(&lib));
    for (job, theirs) in jobs.iter().zip(&outputs) {
        if job.op == "ggml_quantize" {
            let ours = quant::quantize(job.ty, &values).unwrap();
            assert_bytes_equal(&format!("ggml quantize {}", job.ty), job.ty, &ours, theirs);
        } else {
            let ours = quant::dequantize_to_vec(job.ty, &q8k).unwrap();
            assert_bits_equal("ggml dequantize Q8_K", &ours, &bytes_to_f32s(theirs));
        }
    }
}

/// Root-mean-square error of the round trip relative to the input's RMS, and the largest error
/// relative to the largest magnitude of its block.
fn round_trip_errors(ty: GgmlType, values: &[f32]) -> (f64, f64) {
    let bytes = quant::quantize(ty, values).unwrap();
    assert_eq!(bytes.len(), ty.row_bytes(values.len()).unwrap());
    let back = quant::dequantize_to_vec(ty, &bytes).unwrap();
    let (mut err2, mut sig2, mut worst) = (0f64, 0f64, 0f64);
    // Float types have no blocks: measure their worst error against rows of 256.
    let chunk = if ty.block_size() == 1 {
        256
    } else {
        ty.block_size()
    };
    for (xs, ys) in values.chunks(chunk).zip(back.chunks(chunk)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (&x, &y) in xs.iter().zip(ys) {
            let e = (x as f64 - y as f64).abs();
            err2 += e * e;
            sig2 += (x as f64) * (x as f64);
            if amax > 0.0 {
                worst = worst.max(e / amax);
            }
        }
    }
    ((err2 / sig2).sqrt(), worst)
}

#[test]
fn round_trip_error_is_bounded() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    // Blocks of uniform values at one scale per 256, like a weight matrix's rows.
    let mut values = Vec::new();
    for _ in 0..256 {
        let scale = 10f32.powf(rng.random_range(-3.0..1.0));
        values.extend((0..256).map(|_| rng.random_range(-1.0f32..1.0) * scale));
    }
    // (type, bound on relative RMS error, bound on error relative to its block's max magnitude)
    let bounds: [(GgmlType, f64, f64); 15] = [
        (GgmlType::F32, 0.0, 0.0),
        (GgmlType::F16, 3e-4, 6e-4),
        (GgmlType::BF16, 2.5e-3, 4e-3),
        (GgmlType::Q4_0, 0.08, 0.13),
        (GgmlType::Q4_1, 0.075, 0.07),
        (GgmlType::Q5_0, 0.04, 0.065),
        (GgmlType::Q5_1, 0.037, 0.035),
        (GgmlType::Q8_0, 0.005, 0.01),
        (GgmlType::Q8_1, 0.005, 0.01),
        (GgmlType::Q2_K, 0.3, 0.5),
        (GgmlType::Q3_K, 0.16, 0.33),
        (GgmlType::Q4_K, 0.07, 0.15),
        (GgmlType::Q5_K, 0.036, 0.1),
        (GgmlType::Q6_K, 0.018, 0.1),
        (GgmlType::Q8_K, 0.005, 0.005),
    ];
    let mut report = String::new();
    let mut failed = false;
    for (ty, rms_bound, max_bound) in bounds {
        let (rms, worst) = round_trip_errors(ty, &values);
        report += &format!("{ty}: relative rms error {rms:.5}, worst {worst:.5}\n");
        failed |= rms > rms_bound || worst > max_bound;
    }
    eprint!("{report}");
    assert!(!failed, "round-trip error above bounds:\n{report}");
}

#[test]
fn activation_blocks_carry_consistent_sums() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0005);
    let values = random_values(64 * 256, &mut rng);
    let q81 = quant::quantize(GgmlType::Q8_1, &values).unwrap();
    let blocks = bytemuck::cast_slice::<u8, BlockQ8_1>(&q81);
    for (b, xs) in blocks.iter().zip(values.chunks(32)) {
        // The sum is scaled by the f32 scale, before it is rounded to f16.
        let d = xs.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        let sum: i32 = b.qs().iter().map(|&q| i32::from(q)).sum();
        let want = half::f16::from_f32(sum as f32 * d);
        assert_eq!(b.s().to_bits(), want.to_bits());
    }
    let q8k = quant::quantize(GgmlType::Q8_K, &values).unwrap();
    for b in bytemuck::cast_slice::<u8, BlockQ8K>(&q8k) {
        for (i, group) in b.qs().chunks(16).enumerate() {
            let sum: i32 = group.iter().map(|&q| i32::from(q)).sum();
            assert_eq!(b.bsum(i), Some(sum as i16));
        }
    }
    // Their dequantization is q * d, in f32.
    let q81 = random_blocks(GgmlType::Q8_1, 64, &mut rng);
    let out = quant::dequantize_to_vec(GgmlType::Q8_1, &q81).unwrap();
    for (b, ys) in bytemuck::cast_slice::<u8, BlockQ8_1>(&q81)
        .iter()
        .zip(out.chunks(32))
    {
        for (&q, &y) in b.qs().iter().zip(ys) {
            assert_eq!(y.to_bits(), (q as f32 * b.d().to_f32()).to_bits());
        }
    }
    let q8k = random_blocks(GgmlType::Q8_K, 16, &mut rng);
    let out = quant::dequantize_to_vec(GgmlType::Q8_K, &q8k).unwrap();
    for (b, ys) in bytemuck::cast_slice::<u8, BlockQ8K>(&q8k)
        .iter()
        .zip(out.chunks(256))
    {
        for (&q, &y) in b.qs().iter().zip(ys) {
            assert_eq!(y.to_bits(), (b.d() * q as f32).to_bits());
        }
    }
}

#[test]
fn sizes_and_types_are_checked() {
    let mut out = vec![0f32; 64];
    assert!(matches!(
        quant::dequantize(GgmlType::Q4_0, &[0u8; 35], &mut out),
        Err(QuantError::PartialBlock {
            len: 35,
            type_size: 18,
            ..
        })
    ));
    assert!(matches!(
        quant::dequantize(GgmlType::Q4_0, &[0u8; 36], &mut out[..63]),
        Err(QuantError::LengthMismatch {
            expected: 64,
            got: 63,
            ..
        })
    ));
    assert!(quant::dequantize(GgmlType::Q4_0, &[0u8; 36], &mut out).is_ok());
    assert!(matches!(
        quant::dequantize_to_vec(GgmlType::Other(16), &[0u8; 66]),
        Err(QuantError::Unsupported(GgmlType::Other(16)))
    ));
    assert!(matches!(
        quant::dequantize_to_vec(GgmlType::Other(4), &[]),
        Err(QuantError::Unsupported(_))
    ));
    assert!(matches!(
        quant::quantize(GgmlType::Q6_K, &[1.0; 300]),
        Err(QuantError::NotBlockMultiple {
            len: 300,
            block_size: 256,
            ..
        })
    ));
    assert_eq!(
        quant::quantize(GgmlType::Q4_K, &[]).unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(
        quant::dequantize_to_vec(GgmlType::Q4_K, &[]).unwrap(),
        Vec::<f32>::new()
    );
    let err = quant::quantize(GgmlType::Q8_0, &[0.0; 33]).unwrap_err();
    assert!(err.to_string().contains("33"), "{err}");
}

#[test]
fn non_finite_input_does_not_panic() {
    let mut values = vec![0.5f32; 512];
    values[3] = f32::NAN;
    values[40] = f32::INFINITY;
    values[300] = f32::NEG_INFINITY;
    values[301] = f32::MAX;
    values[302] = -f32::MAX;
    for ty in GgmlType::SUPPORTED {
        let bytes = quant::quantize(ty, &values).unwrap();
        quant::dequantize_to_vec(ty, &bytes).unwrap();
    }
}
