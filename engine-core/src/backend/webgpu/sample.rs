//! Device-side sampling: the per-row requests, the kernel dispatch and the read-back of the
//! chosen ids.

use super::pool::{Kind, Scratch};
use super::read::{ReadBack, take_error};
use super::recorder::Bind;
use super::{GpuBuffer, R, RW, S_SAMPLE, WebGpuBackend, bind, bind_scratch, lock};
use crate::backend::{BackendError, DeviceSampling};

impl WebGpuBackend {
    /// Records token selection for `rows` logit rows and submits; the returned read-back yields
    /// one id (u32) per row.
    pub(super) fn record_sample(
        &self,
        logits: &GpuBuffer,
        vocab: usize,
        rows: &[DeviceSampling],
    ) -> Result<ReadBack, BackendError> {
        take_error(&self.errors)?;
        let n = rows.len();
        if n == 0 || vocab == 0 {
            return Err(BackendError::Device(
                "sampling needs rows and a vocabulary".into(),
            ));
        }
        if logits.len() < n * vocab {
            return Err(BackendError::Device(format!(
                "sampling {n} rows of {vocab} logits from a buffer of {} floats",
                logits.len()
            )));
        }
        let mut spec = Vec::with_capacity(8 * n);
        for s in rows {
            spec.extend([
                s.inverse_temperature().to_bits(),
                s.top_k,
                s.top_p.to_bits(),
                s.min_p.to_bits(),
                (s.uniform as f32).min(1.0 - f32::EPSILON / 2.0).to_bits(),
                0,
                0,
                0,
            ]);
        }
        let spec_bytes = (spec.len() * 4) as u64;
        // The spec buffer is used only here and every sample submits at once, so no recorded
        // command can still be waiting for its old contents.
        let (spec_id, spec_buf) = {
            let mut slot = lock(&self.sample_spec);
            if slot.as_ref().is_none_or(|(_, b)| b.size() < spec_bytes) {
                if let Some((old, _)) = slot.take() {
                    lock(&self.dead).push(old);
                }
                let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("sample spec"),
                    size: spec_bytes.next_power_of_two().max(256),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                *slot = Some((self.pool.id(), buf));
            }
            let (id, buf) = slot.as_ref().expect("set above");
            (*id, buf.clone())
        };
        self.queue
            .write_buffer(&spec_buf, 0, bytemuck::cast_slice(&spec));
        let scratch = Scratch::take(&self.pool, Kind::Storage, (n * vocab * 8) as u64)?;
        let out = Scratch::take(&self.pool, Kind::Storage, (n * 4) as u64)?;
        let kernel = self.pipelines.get(
            &self.device,
            &self.spec(S_SAMPLE, "sample".into(), vec![], &[R, R, RW, RW]),
        )?;
        let binds = [
            bind(logits),
            Bind {
                id: spec_id,
                buf: &spec_buf,
            },
            bind_scratch(&scratch),
            bind_scratch(&out),
        ];
        self.dispatch(
            &kernel,
            &[vocab as u32, n as u32, 0, 0],
            &binds,
            self.grid(n),
        );
        self.read_bytes(&out.slot().buf, (n * 4) as u64)
    }
}
