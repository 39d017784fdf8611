//! Errors from reading or writing GGUF files.

/// Why a GGUF file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file does not start with the `GGUF` magic.
    #[error("not a GGUF file: it starts with {0:02x?}, not \"GGUF\"")]
    BadMagic([u8; 4]),
    /// The file's version is not 2 or 3.
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    /// The file is a big-endian GGUF file, which this little-endian reader does not read.
    #[error(
        "the file is a big-endian GGUF file (version {version}); only little-endian files are supported"
    )]
    BigEndian {
        /// The version, read big-endian.
        version: u32,
    },
    /// The file ends before a field that should be there.
    #[error("the file is truncated: it ends at byte {len} while reading {what} at byte {offset}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it started.
        offset: usize,
        /// The file's length.
        len: usize,
    },
    /// A count in the file is larger than the bytes left could hold.
    #[error(
        "{what} count {count} at byte {offset} cannot fit in the {remaining} bytes left in the file"
    )]
    CountTooLarge {
        /// What is counted.
        what: &'static str,
        /// The count in the file.
        count: u64,
        /// Where the count is.
        offset: usize,
        /// Bytes left after it.
        remaining: usize,
    },
    /// A metadata value type id is not one GGUF defines.
    #[error("metadata key {key:?} has unknown value type {id}")]
    BadValueType {
        /// The key.
        key: String,
        /// The type id found.
        id: u32,
    },
    /// Arrays of arrays nest deeper than the reader allows.
    #[error("metadata key {key:?} nests arrays deeper than {limit} levels")]
    TooDeep {
        /// The key.
        key: String,
        /// The nesting limit.
        limit: usize,
    },
    /// A string is not valid UTF-8.
    #[error("the string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string starts.
        offset: usize,
    },
    /// The same metadata key appears twice.
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    /// The same tensor name appears twice.
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    /// `general.alignment` is not a usable power of two.
    #[error("general.alignment must be a power of two between 1 and 65536, not {0}")]
    BadAlignment(String),
    /// A tensor's description is inconsistent or points outside the file.
    #[error("tensor {name:?}: {reason}")]
    BadTensor {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor that was asked for is not in the file.
    #[error("tensor {0:?} is not in the file")]
    MissingTensor(String),
    /// A value given to the writer cannot be encoded.
    #[error("cannot write: {0}")]
    Write(String),
    /// The output could not be written.
    #[error("i/o error while writing GGUF: {0}")]
    Io(#[from] std::io::Error),
}
