//! GGUF writer and reader: round trips of every value type and several tensor types and
//! alignments, and interoperability with the `gguf` Python package in both directions.

mod py;

use engine_core::gguf::{Gguf, GgufError, GgufFile, GgufWriter, ModelBytes, Value, ValueType};
use engine_core::quant::{self, GgmlType};
use serde_json::{Value as Json, json};

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn strings(items: &[&str]) -> Value {
    Value::Array(ValueType::String, items.iter().map(|s| string(s)).collect())
}

/// Metadata with every value type, edge values, and nested and empty arrays.
fn all_values() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", string("llama")),
        ("u8.max", Value::U8(u8::MAX)),
        ("i8.min", Value::I8(i8::MIN)),
        ("u16.max", Value::U16(u16::MAX)),
        ("i16.min", Value::I16(i16::MIN)),
        ("u32.max", Value::U32(u32::MAX)),
        ("i32.min", Value::I32(i32::MIN)),
        ("u64.max", Value::U64(u64::MAX)),
        ("i64.min", Value::I64(i64::MIN)),
        ("f32.pi", Value::F32(std::f32::consts::PI)),
        ("f32.neg_zero", Value::F32(-0.0)),
        ("f32.inf", Value::F32(f32::INFINITY)),
        ("f32.subnormal", Value::F32(f32::from_bits(1))),
        ("f64.e", Value::F64(std::f64::consts::E)),
        ("f64.min", Value::F64(f64::MIN)),
        ("bool.true", Value::Bool(true)),
        ("bool.false", Value::Bool(false)),
        ("string.empty", string("")),
        ("string.unicode", string("héllo ☃ 𝄞 \u{0} \"quoted\"")),
        ("", string("a value under the empty key")),
        (
            "array.u8",
            Value::Array(ValueType::U8, vec![Value::U8(0), Value::U8(255)]),
        ),
        ("array.i8", Value::Array(ValueType::I8, vec![Value::I8(-1)])),
        (
            "array.u16",
            Value::Array(ValueType::U16, vec![Value::U16(7)]),
        ),
        (
            "array.i16",
            Value::Array(ValueType::I16, vec![Value::I16(-7)]),
        ),
        (
            "array.u32",
            Value::Array(ValueType::U32, vec![Value::U32(1), Value::U32(u32::MAX)]),
        ),
        (
            "array.i32",
            Value::Array(ValueType::I32, vec![Value::I32(-5)]),
        ),
        (
            "array.u64",
            Value::Array(ValueType::U64, vec![Value::U64(1 << 40)]),
        ),
        (
            "array.i64",
            Value::Array(ValueType::I64, vec![Value::I64(-(1 << 40))]),
        ),
        (
            "array.f32",
            Value::Array(ValueType::F32, vec![Value::F32(0.25), Value::F32(-1e-30)]),
        ),
        (
            "array.f64",
            Value::Array(ValueType::F64, vec![Value::F64(1e300)]),
        ),
        (
            "array.bool",
            Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
        ("array.strings", strings(&["a", "", "☃"])),
        ("array.empty_u32", Value::Array(ValueType::U32, vec![])),
        (
            "array.empty_strings",
            Value::Array(ValueType::String, vec![]),
        ),
        ("array.empty_arrays", Value::Array(ValueType::Array, vec![])),
        (
            "array.of_string_arrays",
            Value::Array(
                ValueType::Array,
                vec![strings(&["x", "y"]), strings(&[]), strings(&["z"])],
            ),
        ),
        (
            "array.of_mixed_arrays",
            Value::Array(
                ValueType::Array,
                vec![
                    strings(&["s"]),
                    Value::Array(ValueType::F32, vec![Value::F32(2.0)]),
                ],
            ),
        ),
        (
            "array.three_levels",
            Value::Array(
                ValueType::Array,
                vec![Value::Array(
                    ValueType::Array,
                    vec![strings(&["deep"]), Value::Array(ValueType::U8, vec![])],
                )],
            ),
        ),
    ]
}

/// Tensors of several types and shapes, quantized from a smooth signal.
fn all_tensors() -> Vec<(String, Vec<u64>, GgmlType, Vec<u8>)> {
    let mut out = Vec::new();
    let shapes: [(GgmlType, &[u64]); 9] = [
        (GgmlType::F32, &[5, 3]),
        (GgmlType::F16, &[7]),
        (GgmlType::BF16, &[4, 2, 2]),
        (GgmlType::Q4_0, &[64, 3]),
        (GgmlType::Q8_0, &[32, 1, 2, 2]),
        (GgmlType::Q4_K, &[256, 2]),
        (GgmlType::Q6_K, &[512]),
        (GgmlType::F32, &[0, 4]),
        (GgmlType::Q5_1, &[32, 3]),
    ];
    for (i, (ty, dims)) in shapes.into_iter().enumerate() {
        let n: u64 = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|j| (j as f32 * 0.37 + i as f32).sin()).collect();
        let data = quant::quantize(ty, &values).unwrap();
        out.push((
            format!("blk.{i}.{}", ty.name().to_lowercase()),
            dims.to_vec(),
            ty,
            data,
        ));
    }
    out
}

fn build(alignment: Option<u32>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.set(k, v);
    }
    if let Some(a) = alignment {
        w.set("general.alignment", Value::U32(a));
    }
    for (name, dims, ty, data) in all_tensors() {
        w.add_tensor(name, &dims, ty, data).unwrap();
    }
    w.to_bytes().unwrap()
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "u8",
        ValueType::I8 => "i8",
        ValueType::U16 => "u16",
        ValueType::I16 => "i16",
        ValueType::U32 => "u32",
        ValueType::I32 => "i32",
        ValueType::F32 => "f32",
        ValueType::Bool => "bool",
        ValueType::String => "string",
        ValueType::Array => "array",
        ValueType::U64 => "u64",
        ValueType::I64 => "i64",
        ValueType::F64 => "f64",
    }
}

/// A value in the tagged form `gguf_dump.py` prints (floats by their bits, so that NaN, -0.0 and
/// every last bit compare exactly).
fn tagged(v: &Value) -> Json {
    let t = type_name(v.value_type());
    match v {
        Value::U8(x) => json!({"type": t, "value": x}),
        Value::I8(x) => json!({"type": t, "value": x}),
        Value::U16(x) => json!({"type": t, "value": x}),
        Value::I16(x) => json!({"type": t, "value": x}),
        Value::U32(x) => json!({"type": t, "value": x}),
        Value::I32(x) => json!({"type": t, "value": x}),
        Value::U64(x) => json!({"type": t, "value": x}),
        Value::I64(x) => json!({"type": t, "value": x}),
        Value::F32(x) => json!({"type": t, "bits": x.to_bits()}),
        Value::F64(x) => json!({"type": t, "bits": x.to_bits()}),
        Value::Bool(x) => json!({"type": t, "value": x}),
        Value::String(x) => json!({"type": t, "value": x}),
        Value::Array(elem, items) => json!({
            "type": t,
            "elem": type_name(*elem),
            "items": items.iter().map(tagged).collect::<Vec<_>>(),
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file as our reader sees it, in `gguf_dump.py`'s form.
fn our_dump(bytes: &[u8]) -> Json {
    let file = GgufFile::new(ModelBytes::from_vec(bytes.to_vec())).unwrap();
    let g = file.gguf();
    let kv: Vec<Json> = g
        .metadata
        .iter()
        .map(|(k, v)| json!([k, tagged(v)]))
        .collect();
    let tensors: Vec<Json> = g
        .tensors
        .iter()
        .map(|t| {
            let (_, data) = file.tensor(&t.name).unwrap();
            json!({
                "name": t.name,
                "dims": t.dims,
                "type": t.ggml_type.id(),
                "offset": t.offset,
                "n_bytes": t.n_bytes,
                "data": hex(data),
            })
        })
        .collect();
    json!({
        "version": g.version,
        "alignment": g.alignment,
        "data_offset": g.data_offset,
        "kv": kv,
        "tensors": tensors,
    })
}

fn python_dump(path: &std::path::Path) -> Json {
    let out = py::run("gguf_dump.py", &[path.as_os_str()]);
    serde_json::from_str(&out).expect("gguf_dump.py printed invalid JSON")
}

/// Compares two dumps part by part, so a failure names what differs.
fn assert_dumps_equal(ours: &Json, theirs: &Json) {
    for key in ["version", "alignment", "data_offset"] {
        assert_eq!(ours[key], theirs[key], "{key} differs");
    }
    let (a, b) = (
        ours["kv"].as_array().unwrap(),
        theirs["kv"].as_array().unwrap(),
    );
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "metadata differs");
    }
    assert_eq!(a.len(), b.len(), "number of metadata pairs differs");
    let (a, b) = (
        ours["tensors"].as_array().unwrap(),
        theirs["tensors"].as_array().unwrap(),
    );
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "tensor differs");
    }
    assert_eq!(a.len(), b.len(), "number of tensors differs");
}

#[test]
fn writer_to_reader_round_trip() {
    for alignment in [None, Some(1), Some(8), Some(64), Some(4096)] {
        let bytes = build(alignment);
        let file = GgufFile::new(ModelBytes::from_vec(bytes)).unwrap();
        let g = file.gguf();
        let align = u64::from(alignment.unwrap_or(32));
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, align);
        assert_eq!(g.data_offset % align, 0);

        let mut want = all_values();
        if let Some(a) = alignment {
            want.push(("general.alignment", Value::U32(a)));
        }
        assert_eq!(g.metadata.len(), want.len());
        for ((key, value), (k, v)) in want.iter().zip(g.metadata.iter()) {
            assert_eq!(*key, k);
            assert_eq!(tagged(value), tagged(v), "{key}");
            assert_eq!(tagged(g.metadata.get(key).unwrap()), tagged(value));
        }

        let tensors = all_tensors();
        assert_eq!(g.tensors.len(), tensors.len());
        for (t, (name, dims, ty, data)) in g.tensors.iter().zip(&tensors) {
            assert_eq!((&t.name, &t.dims, t.ggml_type), (name, dims, *ty));
            assert_eq!(t.offset % align, 0, "{name} is misaligned");
            let (info, bytes) = file.tensor(name).unwrap();
            assert_eq!(info, t);
            assert_eq!(bytes, &data[..], "{name}");
            assert_eq!(t.n_bytes as usize, data.len());
        }
    }
}

#[test]
fn a_file_without_tensors_or_metadata() {
    let bytes = GgufWriter::new().to_bytes().unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    assert!(g.metadata.is_empty() && g.tensors.is_empty());
}

#[test]
fn python_reads_our_files() {
    let dir = py::scratch_dir("python_reads_our_files");
    for alignment in [None, Some(64)] {
        let bytes = build(alignment);
        let path = dir.join(format!("ours-{}.gguf", alignment.unwrap_or(32)));
        std::fs::write(&path, &bytes).unwrap();
        assert_dumps_equal(&our_dump(&bytes), &python_dump(&path));
    }
}

#[test]
fn we_read_python_files() {
    let dir = py::scratch_dir("we_read_python_files");
    let path = dir.join("python.gguf");
    py::run("gguf_write.py", &[path.as_os_str()]);
    let bytes = std::fs::read(&path).unwrap();
    assert_dumps_equal(&our_dump(&bytes), &python_dump(&path));

    // Spot checks against the values gguf_write.py writes.
    let file = GgufFile::new(ModelBytes::from_vec(bytes)).unwrap();
    let m = file.metadata();
    assert_eq!(file.gguf().alignment, 64);
    assert_eq!(m.get_str("general.architecture"), Some("tandem-test"));
    assert_eq!(m.get("test.i8"), Some(&Value::I8(-100)));
    assert_eq!(m.get("test.u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(m.get("test.i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(m.get("test.f32"), Some(&Value::F32(0.1)));
    assert_eq!(m.get("test.f64"), Some(&Value::F64(-1.0e300)));
    assert_eq!(m.get_bool("test.bool"), Some(true));
    assert_eq!(m.get_str("test.string"), Some("héllo ☃"));
    assert_eq!(m.get("test.strings"), Some(&strings(&["a", "", "ccc"])));
    assert_eq!(
        m.get("test.nested"),
        Some(&Value::Array(
            ValueType::Array,
            vec![strings(&["x", "y"]), strings(&["z"])]
        ))
    );
    let (info, data) = file.tensor("f32").unwrap();
    assert_eq!(
        (info.dims.clone(), info.ggml_type),
        (vec![8, 3], GgmlType::F32)
    );
    let values = quant::dequantize_to_vec(GgmlType::F32, data).unwrap();
    assert_eq!(values[23], 23.0 / 7.0);
    let (info, data) = file.tensor("q8_0").unwrap();
    assert_eq!(
        (info.dims.clone(), info.ggml_type),
        (vec![32, 2], GgmlType::Q8_0)
    );
    let values = quant::dequantize_to_vec(GgmlType::Q8_0, data).unwrap();
    for (j, v) in values.iter().enumerate() {
        assert!((v - (j as f32).sin()).abs() < 0.01, "q8_0[{j}] = {v}");
    }
    // Python's Q8_0 bytes are the engine's.
    let sines: Vec<f32> = (0..64).map(|j| (j as f32).sin()).collect();
    assert_eq!(quant::quantize(GgmlType::Q8_0, &sines).unwrap(), data);
    let (_, data) = file.tensor("bf16").unwrap();
    assert_eq!(quant::quantize(GgmlType::BF16, &sines).unwrap(), data);
}

#[test]
fn writer_rejects_what_it_cannot_encode() {
    let mut w = GgufWriter::new();
    let err = w
        .add_tensor("t", &[32, 2], GgmlType::Q4_0, vec![0; 35])
        .err()
        .unwrap();
    assert!(matches!(err, GgufError::Write(_)), "{err}");
    assert!(w.add_tensor("t", &[16], GgmlType::Q4_0, vec![]).is_err());
    assert!(w.add_tensor("t", &[], GgmlType::F32, vec![]).is_err());
    assert!(
        w.add_tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4])
            .is_err()
    );
    assert!(
        w.add_tensor("t", &[u64::MAX, u64::MAX], GgmlType::F32, vec![])
            .is_err()
    );
    assert!(
        w.add_tensor("t", &[4], GgmlType::Other(4), vec![0; 4])
            .is_err()
    );
    w.add_tensor("t", &[4], GgmlType::F32, vec![0; 16]).unwrap();
    assert!(matches!(
        w.add_tensor("t", &[4], GgmlType::F32, vec![0; 16]),
        Err(GgufError::DuplicateTensor(_))
    ));

    for bad in [
        Value::U32(0),
        Value::U32(48),
        Value::U32(1 << 20),
        Value::U64(32),
    ] {
        let mut w = GgufWriter::new();
        w.set("general.alignment", bad);
        assert!(matches!(w.to_bytes(), Err(GgufError::BadAlignment(_))));
    }

    let mut deep = Value::Array(ValueType::U8, vec![]);
    for _ in 0..4 {
        deep = Value::Array(ValueType::Array, vec![deep]);
    }
    let mut w = GgufWriter::new();
    w.set("deep", deep);
    let err = w.to_bytes().unwrap_err();
    assert!(err.to_string().contains("\"deep\""), "{err}");

    let mut w = GgufWriter::new();
    w.set(
        "mixed",
        Value::Array(ValueType::U8, vec![Value::U8(1), Value::U16(2)]),
    );
    assert!(matches!(w.to_bytes(), Err(GgufError::Write(_))));
}
