//! Builds GGUF files: metadata, tensor directory and aligned tensor data.

use std::io::Write;

use super::error::GgufError;
use super::reader::{MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_ELEMENTS};
use super::value::Value;
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use crate::quant::GgmlType;

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a version-3 GGUF file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets a metadata value, replacing an earlier one with the same key.
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Adds a tensor. `dims` are in ggml order (`dims[0]` contiguous); `data` must be exactly the
    /// tensor's encoded bytes.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(GgufError::Write(format!(
                "tensor {name:?} has {} dimensions",
                dims.len()
            )));
        }
        // The reader's bound: the product of the non-zero dimensions stays below 2^53.
        let fits = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d.max(1)))
            .is_some_and(|n| n < MAX_ELEMENTS);
        if !fits {
            return Err(GgufError::Write(format!(
                "tensor {name:?} has too many elements: dims {dims:?}"
            )));
        }
        let rows: u64 = dims[1..].iter().product();
        let expected = usize::try_from(dims[0])
            .ok()
            .and_then(|d0| ggml_type.row_bytes(d0))
            .and_then(|row| (row as u64).checked_mul(rows));
        if expected != Some(data.len() as u64) {
            return Err(GgufError::Write(format!(
                "tensor {name:?} of type {ggml_type} and dims {dims:?} needs {expected:?} bytes, got {}",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor(name));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        Ok(self)
    }

    fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, Value::U32(a))) if a.is_power_of_two() && *a <= MAX_ALIGNMENT => {
                Ok(u64::from(*a))
            }
            Some((_, v)) => Err(GgufError::BadAlignment(v.to_string())),
        }
    }

    /// Writes the file.
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut head, key);
            head.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut head, value, 0)
                .map_err(|e| GgufError::Write(format!("metadata key {key:?}: {e}")))?;
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).div_ceil(alignment) * alignment;
        }
        let pad = |len: u64| (len.div_ceil(alignment) * alignment - len) as usize;
        head.resize(head.len() + pad(head.len() as u64), 0);
        out.write_all(&head)?;
        let mut written = 0u64;
        for (t, &at) in self.tensors.iter().zip(&offsets) {
            out.write_all(&vec![0u8; (at - written) as usize])?;
            out.write_all(&t.data)?;
            written = at + t.data.len() as u64;
        }
        Ok(())
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a value; the error says what cannot be encoded.
fn put_value(out: &mut Vec<u8>, value: &Value, depth: usize) -> Result<(), String> {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(elem, items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(format!("arrays nest deeper than {MAX_ARRAY_DEPTH} levels"));
            }
            if let Some(bad) = items.iter().find(|i| i.value_type() != *elem) {
                return Err(format!("array of {elem:?} holds a {:?}", bad.value_type()));
            }
            out.extend_from_slice(&elem.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item, depth + 1)?;
            }
        }
    }
    Ok(())
}
