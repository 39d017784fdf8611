//! The buffer pool: activation, scratch and read-back buffers are recycled by size class, so a
//! step allocates nothing and the bind groups that name them stay valid.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::BackendError;

/// What a pooled buffer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Storage, copy source and destination.
    Storage,
    /// Mappable for reading, copy destination.
    ReadBack,
}

/// A device buffer with an id (for bind group cache keys).
pub(crate) struct Slot {
    pub id: u64,
    pub buf: wgpu::Buffer,
}

/// Recycles buffers by (kind, size class).
pub(crate) struct Pool {
    device: wgpu::Device,
    next_id: AtomicU64,
    free: Mutex<HashMap<(Kind, u64), Vec<Slot>>>,
    /// Largest storage buffer the kernels may bind.
    binding_limit: u64,
}

/// Rounds a size up to its class: a power of two from 256 bytes, capped at `limit`.
fn class(bytes: u64, limit: u64) -> u64 {
    bytes.max(256).next_power_of_two().min(limit.max(bytes))
}

impl Pool {
    pub fn new(device: wgpu::Device, binding_limit: u64) -> Pool {
        Pool {
            device,
            next_id: AtomicU64::new(1),
            free: Mutex::new(HashMap::new()),
            binding_limit,
        }
    }

    /// A fresh id for a buffer that is not pooled (weights, KV cache).
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A buffer of at least `bytes`; the flag says whether it is new (and so zeroed).
    pub fn take(&self, kind: Kind, bytes: u64) -> Result<(Slot, bool), BackendError> {
        let bytes = bytes.max(4).next_multiple_of(4);
        if kind == Kind::Storage && bytes > self.binding_limit {
            return Err(BackendError::OutOfMemory(format!(
                "a buffer of {bytes} bytes exceeds the largest binding the adapter allows ({} bytes)",
                self.binding_limit
            )));
        }
        let size = class(bytes, self.binding_limit);
        if let Some(slot) = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(kind, size))
            .and_then(Vec::pop)
        {
            return Ok((slot, false));
        }
        let usage = match kind {
            Kind::Storage => {
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST
            }
            Kind::ReadBack => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        };
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        });
        Ok((Slot { id: self.id(), buf }, true))
    }

    /// Returns a buffer to the pool.
    pub fn put(&self, kind: Kind, slot: Slot) {
        let size = slot.buf.size();
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind, size))
            .or_default()
            .push(slot);
    }
}

/// An activation buffer: `len` floats on the device, returned to the pool when dropped.
pub struct GpuBuffer {
    slot: Option<Slot>,
    len: usize,
    pool: Arc<Pool>,
}

impl GpuBuffer {
    pub(crate) fn new(slot: Slot, len: usize, pool: Arc<Pool>) -> GpuBuffer {
        GpuBuffer {
            slot: Some(slot),
            len,
            pool,
        }
    }

    /// Number of floats.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no floats.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn slot(&self) -> &Slot {
        self.slot.as_ref().expect("a live buffer has its slot")
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.put(Kind::Storage, slot);
        }
    }
}

/// A pooled scratch buffer held for the length of one operation.
pub(crate) struct Scratch {
    slot: Option<Slot>,
    kind: Kind,
    pool: Arc<Pool>,
}

impl Scratch {
    pub fn take(pool: &Arc<Pool>, kind: Kind, bytes: u64) -> Result<Scratch, BackendError> {
        let (slot, _) = pool.take(kind, bytes)?;
        Ok(Scratch {
            slot: Some(slot),
            kind,
            pool: pool.clone(),
        })
    }

    pub fn slot(&self) -> &Slot {
        self.slot
            .as_ref()
            .expect("a live scratch buffer has its slot")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.put(self.kind, slot);
        }
    }
}
