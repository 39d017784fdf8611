//! Parses the header, metadata and tensor directory of a GGUF file, validating every field.

use std::collections::HashMap;

use super::error::GgufError;
use super::value::{Value, ValueType};
use super::{GGUF_MAGIC, Gguf, MAX_DIMS, Metadata, TensorInfo};
use crate::quant::GgmlType;

/// Arrays may nest at most this deep.
pub(crate) const MAX_ARRAY_DEPTH: usize = 4;
/// The largest `general.alignment` accepted.
pub(crate) const MAX_ALIGNMENT: u32 = 65536;
/// Tensors may have fewer elements than this, so that counts stay exact in f64 and never
/// overflow byte sizes.
pub(crate) const MAX_ELEMENTS: u64 = 1 << 53;
/// The alignment GGUF uses when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A bounds-checked little-endian cursor over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos,
                len: self.bytes.len(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count and checks that `count * min_each` bytes could follow.
    fn count(&mut self, what: &'static str, min_each: usize) -> Result<usize, GgufError> {
        let offset = self.pos;
        let count = self.u64(what)?;
        let remaining = self.remaining();
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(min_each.max(1)))
            .is_some_and(|need| need <= remaining);
        if !fits {
            return Err(GgufError::CountTooLarge {
                what,
                count,
                offset,
                remaining,
            });
        }
        Ok(count as usize)
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.count(what, 1)?;
        let start = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::InvalidUtf8 { offset: start })
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>("u8 value")?[0]),
            ValueType::I8 => Value::I8(self.array::<1>("i8 value")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16 value")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            ValueType::U32 => Value::U32(self.u32("u32 value")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            ValueType::U64 => Value::U64(self.u64("u64 value")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
            ValueType::Bool => Value::Bool(self.array::<1>("bool value")?[0] != 0),
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep {
                        key: key.to_owned(),
                        limit: MAX_ARRAY_DEPTH,
                    });
                }
                let id = self.u32("array element type")?;
                let elem = ValueType::from_id(id).ok_or_else(|| GgufError::BadValueType {
                    key: key.to_owned(),
                    id,
                })?;
                let n = self.count("array element", elem.min_encoded_len())?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(key, elem, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}

/// Parses a whole GGUF file held in memory: header, metadata, tensor directory, and checks that
/// every tensor's data lies inside `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
    let mut cur = Cursor { bytes, pos: 0 };
    let magic = cur.array::<4>("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = cur.u32("version")?;
    if version != 2 && version != 3 {
        // A big-endian file's small version number reads as a huge little-endian one.
        let swapped = version.swap_bytes();
        if (1..=3).contains(&swapped) {
            return Err(GgufError::BigEndian { version: swapped });
        }
        return Err(GgufError::UnsupportedVersion(version));
    }
    // A tensor info takes at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; a key-value pair 8 + 4 + 1.
    let n_tensors_pos = cur.pos;
    let n_tensors = cur.u64("tensor count")?;
    let n_kv = cur.count("metadata key-value", 13)?;
    if usize::try_from(n_tensors)
        .ok()
        .and_then(|n| n.checked_mul(24))
        .is_none_or(|need| need > cur.remaining())
    {
        return Err(GgufError::CountTooLarge {
            what: "tensor",
            count: n_tensors,
            offset: n_tensors_pos,
            remaining: cur.remaining(),
        });
    }

    let mut entries = Vec::with_capacity(n_kv);
    let mut index = HashMap::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = cur.string("metadata key")?;
        let id = cur.u32("metadata value type")?;
        let ty = ValueType::from_id(id).ok_or_else(|| GgufError::BadValueType {
            key: key.clone(),
            id,
        })?;
        let value = cur.value(&key, ty, 0)?;
        if index.insert(key.clone(), entries.len()).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        entries.push((key, value));
    }
    let metadata = Metadata { entries, index };

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v {
            Value::U32(a) if a.is_power_of_two() && *a <= MAX_ALIGNMENT => u64::from(*a),
            other => return Err(GgufError::BadAlignment(other.to_string())),
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashMap::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = cur.string("tensor name")?;
        let bad = |reason: String| GgufError::BadTensor {
            name: name.clone(),
            reason,
        };
        let n_dims = cur.u32("tensor dimension count")? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(format!(
                "has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(cur.u64("tensor dimension")?);
        }
        let type_id = cur.u32("tensor type")?;
        let ggml_type = GgmlType::from_id(type_id);
        let offset = cur.u64("tensor offset")?;
        let (block, type_size) = ggml_type
            .layout()
            .ok_or_else(|| bad(format!("has unknown type id {type_id}")))?;
        // Bound the product of the non-zero dimensions too, so that no single dimension (a row
        // count, say) is absurd even when another dimension makes the tensor empty.
        let overflows = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
            .is_none_or(|n| n >= MAX_ELEMENTS);
        if overflows {
            return Err(bad(format!(
                "dimensions {dims:?} overflow (at most 2^53 elements)"
            )));
        }
        let n_elements: u64 = dims.iter().product();
        if dims[0] % block as u64 != 0 {
            return Err(bad(format!(
                "first dimension {} is not a multiple of {ggml_type}'s block size {block}",
                dims[0]
            )));
        }
        let n_bytes = (n_elements / block as u64)
            .checked_mul(type_size as u64)
            .ok_or_else(|| bad("byte size overflows".into()))?;
        if offset % alignment != 0 {
            return Err(bad(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if names.insert(name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor(name));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    let data_offset = (cur.pos as u64).div_ceil(alignment) * alignment;
    if !tensors.is_empty() && data_offset > bytes.len() as u64 {
        // Even zero-sized tensors need their data section to start inside the file.
        return Err(GgufError::Truncated {
            what: "padding before the tensor data",
            offset: cur.pos,
            len: bytes.len(),
        });
    }
    let data_len = (bytes.len() as u64).saturating_sub(data_offset);
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let end = t.offset.checked_add(t.n_bytes).filter(|&e| e <= data_len);
        let Some(end) = end else {
            return Err(GgufError::BadTensor {
                name: t.name.clone(),
                reason: format!(
                    "data [{}, +{}) lies outside the {data_len} bytes of tensor data (file truncated?)",
                    t.offset, t.n_bytes
                ),
            });
        };
        ranges.push((t.offset, end, i));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(GgufError::BadTensor {
                name: tensors[pair[1].2].name.clone(),
                reason: format!("data overlaps tensor {:?}", tensors[pair[0].2].name),
            });
        }
    }

    Ok(Gguf {
        version,
        alignment,
        metadata,
        tensors,
        tensor_index: names,
        data_offset,
    })
}
