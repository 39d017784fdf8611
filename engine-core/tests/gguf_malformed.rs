//! The GGUF reader on malformed input: every defect is a typed error with a useful message, never
//! a panic, and never a large allocation driven by a count in the file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use engine_core::gguf::{Gguf, GgufError, GgufFile, GgufWriter, ModelBytes, Value, ValueType};
use engine_core::quant::GgmlType;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The global allocator, wrapped to record the largest single allocation of each thread.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Parses `bytes`, returning the result and the largest single allocation made meanwhile.
fn parse_tracked(bytes: &[u8]) -> (Result<Gguf, GgufError>, usize) {
    LARGEST.with(|l| l.set(0));
    let result = Gguf::parse(bytes);
    (result, LARGEST.with(Cell::get))
}

/// Parses `bytes`, expecting an error, and checks the parse allocated little.
fn parse_err(bytes: &[u8]) -> GgufError {
    let (result, largest) = parse_tracked(bytes);
    let limit = 64 * 1024 + 8 * bytes.len();
    assert!(
        largest <= limit,
        "parsing {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
    match result {
        Ok(g) => panic!("malformed file accepted: {g:?}"),
        Err(e) => e,
    }
}

/// Builds GGUF bytes field by field, without any validation.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }

    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key).u32(ValueType::U32.id()).u32(v)
    }

    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }

    /// Pads to `align` and appends `n` bytes of tensor data.
    fn data(&mut self, align: usize, n: usize) -> &mut Raw {
        let padded = self.0.len().div_ceil(align) * align;
        self.0.resize(padded + n, 0xAB);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// A small valid file: a few metadata values of several types and three tensors.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("llama.block_count", Value::U32(2));
    w.set("general.ratio", Value::F32(0.5));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(
            ValueType::String,
            vec![Value::String("a".into()), Value::String("bc".into())],
        ),
    );
    w.set(
        "nested",
        Value::Array(
            ValueType::Array,
            vec![Value::Array(ValueType::I16, vec![Value::I16(-3)])],
        ),
    );
    w.add_tensor("a", &[4, 2], GgmlType::F32, vec![1; 32])
        .unwrap();
    w.add_tensor("b", &[32], GgmlType::Q8_0, vec![2; 34])
        .unwrap();
    w.add_tensor("c", &[3], GgmlType::F16, vec![3; 6]).unwrap();
    w.to_bytes().unwrap()
}

#[test]
fn the_valid_file_parses() {
    let bytes = valid_file();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.tensors.len(), 3);
    assert_eq!(g.metadata.len(), 5);
}

#[test]
fn allocation_tracking_sees_large_allocations() {
    // A legitimate array of 100 000 bytes is held as 100 000 values: the tracker must see that.
    let mut w = GgufWriter::new();
    w.set(
        "big",
        Value::Array(ValueType::U8, vec![Value::U8(7); 100_000]),
    );
    let bytes = w.to_bytes().unwrap();
    let (result, largest) = parse_tracked(&bytes);
    assert_eq!(
        result.unwrap().metadata.get_array("big").map(<[_]>::len),
        Some(100_000)
    );
    assert!(largest >= 100_000 * size_of::<Value>(), "{largest}");
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let bytes = valid_file();
    for len in 0..bytes.len() {
        let err = parse_err(&bytes[..len]);
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. }
                    | GgufError::CountTooLarge { .. }
                    | GgufError::BadTensor { .. }
            ),
            "truncated at {len}: unexpected error {msg}"
        );
        assert!(!msg.is_empty());
    }
}

#[test]
fn wrong_magic() {
    let mut bytes = valid_file();
    bytes[..4].copy_from_slice(b"GGML");
    let err = parse_err(&bytes);
    assert!(
        matches!(err, GgufError::BadMagic(m) if &m == b"GGML"),
        "{err}"
    );
    assert!(err.to_string().contains("not a GGUF file"));
    assert!(matches!(parse_err(b"GG"), GgufError::Truncated { .. }));
}

#[test]
fn unsupported_versions() {
    for version in [0u32, 1, 4, 1000] {
        let bytes = Raw::new(version, 0, 0).bytes();
        let err = parse_err(&bytes);
        assert!(
            matches!(err, GgufError::UnsupportedVersion(v) if v == version),
            "{err}"
        );
        assert!(err.to_string().contains(&version.to_string()));
    }
}

#[test]
fn big_endian_files_are_recognised() {
    for version in [2u32, 3] {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.extend_from_slice(&0u64.to_be_bytes());
        bytes.extend_from_slice(&0u64.to_be_bytes());
        let err = parse_err(&bytes);
        assert!(
            matches!(err, GgufError::BigEndian { version: v } if v == version),
            "{err}"
        );
        assert!(err.to_string().contains("big-endian"), "{err}");
    }
}

#[test]
fn absurd_counts_are_rejected_without_allocating() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tensor count", Raw::new(3, u64::MAX, 0).bytes()),
        ("tensor count", Raw::new(3, 1 << 40, 0).bytes()),
        ("kv count", Raw::new(3, 0, u64::MAX).bytes()),
        ("kv count", Raw::new(3, 0, u64::MAX / 13 + 1).bytes()),
        ("key length", Raw::new(3, 0, 1).u64(u64::MAX).bytes()),
        ("key length", Raw::new(3, 0, 1).u64(1 << 62).bytes()),
        (
            "string value length",
            Raw::new(3, 0, 1)
                .str("k")
                .u32(ValueType::String.id())
                .u64(u64::MAX - 3)
                .bytes(),
        ),
        (
            "u8 array length",
            Raw::new(3, 0, 1)
                .str("k")
                .u32(ValueType::Array.id())
                .u32(ValueType::U8.id())
                .u64(u64::MAX)
                .bytes(),
        ),
        (
            "string array length",
            Raw::new(3, 0, 1)
                .str("k")
                .u32(ValueType::Array.id())
                .u32(ValueType::String.id())
                .u64(1 << 61)
                .bytes(),
        ),
        (
            "nested array length",
            Raw::new(3, 0, 1)
                .str("k")
                .u32(ValueType::Array.id())
                .u32(ValueType::Array.id())
                .u64(1)
                .u32(ValueType::U64.id())
                .u64(u64::MAX / 8)
                .bytes(),
        ),
        (
            "array string element length",
            Raw::new(3, 0, 1)
                .str("k")
                .u32(ValueType::Array.id())
                .u32(ValueType::String.id())
                .u64(1)
                .u64(u64::MAX)
                .bytes(),
        ),
        (
            "tensor name length",
            Raw::new(3, 1, 0).u64(u64::MAX).u64(0).u64(0).u64(0).bytes(),
        ),
    ];
    for (what, bytes) in cases {
        let err = parse_err(&bytes);
        assert!(
            matches!(err, GgufError::CountTooLarge { .. }),
            "{what}: unexpected error {err}"
        );
        assert!(err.to_string().contains("cannot fit"), "{what}: {err}");
    }
}

/// A file with one tensor `t` of type id `ty`, `dims` and `offset` as given, followed by `data`
/// bytes of tensor data.
fn one_tensor(dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
    Raw::new(3, 1, 0)
        .tensor("t", dims, ty, offset)
        .data(32, data)
        .bytes()
}

fn bad_tensor(bytes: &[u8]) -> (String, String) {
    match parse_err(bytes) {
        GgufError::BadTensor { name, reason } => (name, reason),
        other => panic!("expected a tensor error, got {other}"),
    }
}

#[test]
fn dimension_counts_outside_one_to_four() {
    for dims in [&[][..], &[1, 1, 1, 1, 1][..]] {
        let (name, reason) = bad_tensor(&one_tensor(dims, 0, 0, 4));
        assert_eq!(name, "t");
        assert!(
            reason.contains(&format!("{} dimensions", dims.len())),
            "{reason}"
        );
    }
    // A huge dimension count is refused before any dimension is read.
    let bytes = Raw::new(3, 1, 0).str("t").u32(u32::MAX).data(1, 64).bytes();
    assert!(bad_tensor(&bytes).1.contains("dimensions"));
}

#[test]
fn dimensions_that_overflow() {
    for dims in [
        &[1 << 32, 1 << 32][..],
        &[u64::MAX, 2][..],
        &[1 << 20, 1 << 20, 1 << 20][..],
        &[0, 1 << 62][..],
        &[1 << 62, 0][..],
        &[u64::MAX][..],
    ] {
        let (_, reason) = bad_tensor(&one_tensor(dims, 0, 0, 64));
        assert!(reason.contains("overflow"), "{dims:?}: {reason}");
    }
}

#[test]
fn unknown_value_types() {
    let bytes = Raw::new(3, 0, 1).str("weird").u32(13).u32(0).bytes();
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, GgufError::BadValueType { key, id: 13 } if key == "weird"),
        "{err}"
    );
    assert!(err.to_string().contains("weird"));
    let bytes = Raw::new(3, 0, 1)
        .str("arr")
        .u32(ValueType::Array.id())
        .u32(99)
        .u64(0)
        .bytes();
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, GgufError::BadValueType { key, id: 99 } if key == "arr"),
        "{err}"
    );
}

#[test]
fn unknown_tensor_types() {
    for ty in [4u32, 5, 31, 32, 33, 40, 1000, u32::MAX] {
        let (_, reason) = bad_tensor(&one_tensor(&[32], ty, 0, 1024));
        assert!(
            reason.contains(&format!("unknown type id {ty}")),
            "{reason}"
        );
    }
}

#[test]
fn rows_that_are_not_whole_blocks() {
    let (_, reason) = bad_tensor(&one_tensor(&[16, 2], GgmlType::Q4_0.id(), 0, 64));
    assert!(reason.contains("block size 32"), "{reason}");
}

#[test]
fn misaligned_and_out_of_range_offsets() {
    let (_, reason) = bad_tensor(&one_tensor(&[4], 0, 4, 64));
    assert!(reason.contains("alignment 32"), "{reason}");
    let (_, reason) = bad_tensor(&one_tensor(&[4], 0, 64, 64));
    assert!(reason.contains("outside"), "{reason}");
    let (_, reason) = bad_tensor(&one_tensor(&[16], 0, 32, 40));
    assert!(reason.contains("outside"), "{reason}");
    let (_, reason) = bad_tensor(&one_tensor(&[32], 0, u64::MAX - 31, 64));
    assert!(reason.contains("outside"), "{reason}");
    // A custom alignment is the one offsets are checked against.
    let bytes = Raw::new(3, 1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("t", &[4], 0, 32)
        .data(64, 64)
        .bytes();
    assert!(bad_tensor(&bytes).1.contains("alignment 64"));
}

#[test]
fn overlapping_tensors() {
    let bytes = Raw::new(3, 2, 0)
        .tensor("first", &[16], 0, 0)
        .tensor("second", &[8], 0, 32)
        .data(32, 64)
        .bytes();
    let (name, reason) = bad_tensor(&bytes);
    assert_eq!(name, "second");
    assert!(
        reason.contains("overlaps") && reason.contains("first"),
        "{reason}"
    );
    // Touching is fine.
    let bytes = Raw::new(3, 2, 0)
        .tensor("first", &[8], 0, 0)
        .tensor("second", &[8], 0, 32)
        .data(32, 64)
        .bytes();
    Gguf::parse(&bytes).unwrap();
}

#[test]
fn duplicates() {
    let bytes = Raw::new(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2).bytes();
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, GgufError::DuplicateKey(k) if k == "k"),
        "{err}"
    );
    assert!(err.to_string().contains("\"k\""));
    let bytes = Raw::new(3, 2, 0)
        .tensor("t", &[8], 0, 0)
        .tensor("t", &[8], 0, 32)
        .data(32, 64)
        .bytes();
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, GgufError::DuplicateTensor(t) if t == "t"),
        "{err}"
    );
}

#[test]
fn bad_alignment_values() {
    let u32_value = |v: u32| Raw::new(3, 0, 1).kv_u32("general.alignment", v).bytes();
    for v in [0u32, 3, 48, 1 << 17, u32::MAX] {
        let err = parse_err(&u32_value(v));
        assert!(matches!(err, GgufError::BadAlignment(_)), "{v}: {err}");
        assert!(err.to_string().contains(&v.to_string()), "{err}");
    }
    let other_types = [
        Raw::new(3, 0, 1)
            .str("general.alignment")
            .u32(ValueType::U64.id())
            .u64(32)
            .bytes(),
        Raw::new(3, 0, 1)
            .str("general.alignment")
            .u32(ValueType::I32.id())
            .u32(32)
            .bytes(),
        Raw::new(3, 0, 1)
            .str("general.alignment")
            .u32(ValueType::String.id())
            .str("32")
            .bytes(),
    ];
    for bytes in other_types {
        assert!(matches!(parse_err(&bytes), GgufError::BadAlignment(_)));
    }
    for v in [1u32, 8, 64, 65536] {
        assert_eq!(Gguf::parse(&u32_value(v)).unwrap().alignment, u64::from(v));
    }
}

#[test]
fn strings_must_be_utf8() {
    let mut bytes = Raw::new(3, 0, 1).u64(2).bytes();
    bytes.extend_from_slice(&[0xC3, 0x28]);
    bytes.extend_from_slice(&ValueType::U8.id().to_le_bytes());
    bytes.push(0);
    let err = parse_err(&bytes);
    assert!(
        matches!(err, GgufError::InvalidUtf8 { offset: 32 }),
        "{err}"
    );
}

#[test]
fn arrays_nested_too_deep() {
    let mut raw = Raw::new(3, 0, 1);
    raw.str("deep").u32(ValueType::Array.id());
    for _ in 0..64 {
        raw.u32(ValueType::Array.id()).u64(1);
    }
    raw.u32(ValueType::U8.id()).u64(0);
    let err = parse_err(&raw.bytes());
    assert!(
        matches!(&err, GgufError::TooDeep { key, .. } if key == "deep"),
        "{err}"
    );
}

#[test]
fn empty_tensor_past_the_end_of_the_file() {
    // The directory ends off the alignment and the file ends with it: a zero-sized tensor's data
    // would start past the end.
    let bytes = Raw::new(3, 1, 0).tensor("empty", &[0], 0, 0).bytes();
    assert_ne!(bytes.len() % 32, 0);
    match Gguf::parse(&bytes) {
        Ok(_) => {
            let file = GgufFile::new(ModelBytes::from_vec(bytes)).unwrap();
            let (info, data) = file.tensor("empty").unwrap();
            assert_eq!((info.n_elements(), data.len()), (0, 0));
            assert_eq!(info.n_rows(), 1);
        }
        Err(e) => assert!(matches!(e, GgufError::Truncated { .. }), "{e}"),
    }
}

#[test]
fn random_mutations_never_panic() {
    let base = valid_file();
    let mut rng = StdRng::seed_from_u64(0x6775_6666);
    let mut accepted = 0;
    for round in 0..4000 {
        let mut bytes = base.clone();
        for _ in 0..rng.random_range(1..=4) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..6) {
                0 => bytes[at] = rng.random(),
                1 => bytes[at] ^= 1 << rng.random_range(0..8),
                2 => bytes.insert(at, rng.random()),
                3 => {
                    bytes.remove(at);
                }
                4 => {
                    // A little-endian u64 count or length with an extreme value.
                    let v: u64 = [0, 1, u64::MAX, 1 << 32, u64::MAX / 2][rng.random_range(0..5)];
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let outcome = std::panic::catch_unwind(|| {
            let (result, largest) = parse_tracked(&bytes);
            (result.map(|g| g.tensors.len()), largest)
        });
        match outcome {
            Err(_) => panic!("round {round}: the reader panicked on {bytes:02x?}"),
            Ok((result, largest)) => {
                assert!(
                    largest <= 64 * 1024 + 8 * bytes.len(),
                    "round {round}: {largest}"
                );
                if result.is_ok() {
                    accepted += 1;
                    // What parses must also be usable without panicking.
                    let file = GgufFile::new(ModelBytes::from_vec(bytes)).unwrap();
                    for t in file.gguf().tensors.clone() {
                        let (_, data) = file.tensor(&t.name).unwrap();
                        assert_eq!(data.len() as u64, t.n_bytes);
                        let _ = (t.n_elements(), t.n_rows());
                    }
                }
            }
        }
    }
    eprintln!("{accepted} of 4000 mutated files still parsed");
}
