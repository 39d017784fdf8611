//! The paged KV cache on the device: per layer, one buffer of keys and one of values, each
//! `n_blocks * block_size` slots of `kv_dim` elements (f32, or f16 packed two per word).

use crate::backend::{BackendError, KvLayout};

use super::recorder::DeadIds;

/// The device's KV cache.
pub struct GpuKvStore {
    /// The geometry.
    pub layout: KvLayout,
    /// Whether elements are stored as f16.
    pub f16: bool,
    pub(crate) k: Vec<(u64, wgpu::Buffer)>,
    pub(crate) v: Vec<(u64, wgpu::Buffer)>,
    dead: DeadIds,
}

impl GpuKvStore {
    /// Bytes of one layer's keys (and again of its values).
    pub fn layer_bytes(layout: &KvLayout, f16: bool) -> u64 {
        (layout.n_blocks * layout.block_size * layout.kv_dim()) as u64 * if f16 { 2 } else { 4 }
    }

    /// Checks the geometry against the kernels and the binding limit.
    pub(crate) fn check(layout: &KvLayout, f16: bool, limit: u64) -> Result<(), BackendError> {
        let hd = layout.head_dim;
        if hd == 0 || !hd.is_multiple_of(4) || hd > 256 || layout.n_kv_heads == 0 {
            return Err(BackendError::Device(format!(
                "the WebGPU attention kernels need a head size that is a multiple of 4 up to 256 (got {hd}) and at least one KV head"
            )));
        }
        let bytes = Self::layer_bytes(layout, f16);
        if bytes > limit {
            return Err(BackendError::OutOfMemory(format!(
                "one layer of the KV cache takes {bytes} bytes, more than the largest binding ({limit} bytes): use fewer KV tokens"
            )));
        }
        Ok(())
    }

    pub(crate) fn new(
        device: &wgpu::Device,
        layout: KvLayout,
        f16: bool,
        next_id: impl Fn() -> u64,
        dead: DeadIds,
    ) -> GpuKvStore {
        let bytes = Self::layer_bytes(&layout, f16).max(4);
        let make = |what: &str, l: usize| {
            (
                next_id(),
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("kv {what} {l}")),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            )
        };
        GpuKvStore {
            layout,
            f16,
            k: (0..layout.n_layers).map(|l| make("k", l)).collect(),
            v: (0..layout.n_layers).map(|l| make("v", l)).collect(),
            dead,
        }
    }

    /// Bytes on the device.
    pub fn device_bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|(_, b)| b.size()).sum()
    }
}

impl Drop for GpuKvStore {
    fn drop(&mut self) {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        dead.extend(self.k.iter().chain(&self.v).map(|(id, _)| *id));
    }
}
