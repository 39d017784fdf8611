//! GGUF: the model file format of llama.cpp. A validating reader that works zero-copy over any byte
//! buffer (a memory map natively, an `ArrayBuffer`'s bytes in wasm) and a writer for building files.

mod bytes;
mod error;
mod reader;
mod value;
mod writer;

use std::collections::HashMap;

pub use bytes::ModelBytes;
pub use error::GgufError;
pub use reader::DEFAULT_ALIGNMENT;
pub use value::{Value, ValueType};
pub use writer::GgufWriter;

use crate::quant::GgmlType;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Tensors have at most this many dimensions.
pub const MAX_DIMS: usize = 4;

/// Metadata key-value pairs in file order, with lookup by key.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// All pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// An unsigned integer value of any width.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// A numeric value as f64.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    /// An array value's elements.
    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key).and_then(Value::as_array)
    }
}

/// One tensor's entry in the file's directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1, |n, &d| n.saturating_mul(d))
    }

    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1, |n, &d| n.saturating_mul(d))
    }
}

/// The parsed header, metadata and tensor directory of a GGUF file.
#[derive(Clone, Debug)]
pub struct Gguf {
    /// File format version (2 or 3).
    pub version: u32,
    /// Alignment of tensor data.
    pub alignment: u64,
    /// Metadata key-value pairs.
    pub metadata: Metadata,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

impl Gguf {
    /// Parses and validates a GGUF file held in memory.
    pub fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
        reader::parse(bytes)
    }

    /// The directory entry of a tensor.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The absolute byte range of a tensor's data in the file.
    pub fn tensor_range(&self, info: &TensorInfo) -> std::ops::Range<usize> {
        let at = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let start = at(self.data_offset.saturating_add(info.offset));
        start..start.saturating_add(at(info.n_bytes))
    }
}

/// A GGUF file: its bytes and their parsed directory. Cloning shares the bytes.
#[derive(Clone)]
pub struct GgufFile {
    bytes: ModelBytes,
    gguf: std::sync::Arc<Gguf>,
}

impl GgufFile {
    /// Parses `bytes` as a GGUF file.
    pub fn new(bytes: ModelBytes) -> Result<GgufFile, GgufError> {
        let gguf = Gguf::parse(&bytes)?;
        Ok(GgufFile {
            bytes,
            gguf: std::sync::Arc::new(gguf),
        })
    }

    /// The parsed directory.
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.gguf.metadata
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &ModelBytes {
        &self.bytes
    }

    /// A tensor's entry and data.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self
            .gguf
            .tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_owned()))?;
        // The parser checked the range; `get` keeps this panic-free all the same.
        let data = self
            .bytes
            .get(self.gguf.tensor_range(info))
            .ok_or_else(|| GgufError::BadTensor {
                name: name.to_owned(),
                reason: "data lies outside the file".into(),
            })?;
        Ok((info, data))
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("len", &self.bytes.len())
            .field("version", &self.gguf.version)
            .field("tensors", &self.gguf.tensors.len())
            .finish()
    }
}
