//! Shared, immutable bytes of a model file, owned or borrowed from a memory map.

use std::ops::Deref;
use std::sync::Arc;

/// Immutable bytes of a model file, cheap to clone. Weights are read in place from these bytes,
/// so a memory-mapped file is never copied.
#[derive(Clone)]
pub struct ModelBytes(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl ModelBytes {
    /// Takes ownership of a buffer.
    pub fn from_vec(bytes: Vec<u8>) -> ModelBytes {
        ModelBytes(Arc::new(bytes))
    }

    /// Borrows a static buffer.
    pub fn from_static(bytes: &'static [u8]) -> ModelBytes {
        ModelBytes(Arc::new(bytes))
    }

    /// Wraps a memory map of a model file.
    #[cfg(feature = "mmap")]
    pub fn from_mmap(map: memmap2::Mmap) -> ModelBytes {
        ModelBytes(Arc::new(map))
    }
}

impl Deref for ModelBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl AsRef<[u8]> for ModelBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}
