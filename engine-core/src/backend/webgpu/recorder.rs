//! Command recording: every operation of a step goes into one command encoder (one compute pass
//! between copies), with its parameters in a uniform arena bound at a dynamic offset, and bind
//! groups cached by the buffers they name. [`Recorder::flush`] submits it all at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::pipelines::{Kernel, PARAMS_BYTES};

/// Parameter slots per submission; a step that needs more submits early.
const ARENA_SLOTS: u32 = 4096;
/// Most storage bindings of any kernel.
const MAX_BINDS: usize = 7;

/// A buffer as a kernel binds it.
#[derive(Clone, Copy)]
pub(crate) struct Bind<'a> {
    pub id: u64,
    pub buf: &'a wgpu::Buffer,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    layout: u32,
    ids: [u64; MAX_BINDS],
}

/// Ids of buffers that were destroyed; their cached bind groups are dropped at the next flush.
pub(crate) type DeadIds = Arc<Mutex<Vec<u64>>>;

/// Records a step's commands.
pub(crate) struct Recorder {
    device: wgpu::Device,
    queue: wgpu::Queue,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    arena: wgpu::Buffer,
    stride: u64,
    params: Vec<u8>,
    used: u32,
    groups: HashMap<GroupKey, wgpu::BindGroup>,
    dead: DeadIds,
    /// Dispatches recorded since the recorder was made (for tests and statistics).
    pub dispatches: u64,
    /// Submissions made since the recorder was made.
    pub submissions: u64,
}

impl Recorder {
    pub fn new(device: wgpu::Device, queue: wgpu::Queue, align: u32, dead: DeadIds) -> Recorder {
        let stride = PARAMS_BYTES.max(u64::from(align));
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: stride * u64::from(ARENA_SLOTS),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Recorder {
            device,
            queue,
            encoder: None,
            pass: None,
            arena,
            stride,
            params: Vec::new(),
            used: 0,
            groups: HashMap::new(),
            dead,
            dispatches: 0,
            submissions: 0,
        }
    }

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    /// Records one dispatch of `kernel` with `params` (at most 16 words) over `groups`
    /// workgroups.
    pub fn dispatch(
        &mut self,
        kernel: &Kernel,
        params: &[u32],
        binds: &[Bind<'_>],
        groups: [u32; 3],
    ) {
        debug_assert!(params.len() * 4 <= PARAMS_BYTES as usize && binds.len() <= MAX_BINDS);
        if groups.contains(&0) {
            return;
        }
        if self.used == ARENA_SLOTS {
            self.flush();
        }
        let offset = u64::from(self.used) * self.stride;
        self.params
            .resize(offset as usize + self.stride as usize, 0);
        for (i, w) in params.iter().enumerate() {
            let at = offset as usize + 4 * i;
            self.params[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        self.used += 1;
        let mut key = GroupKey {
            layout: kernel.layout.id,
            ids: [0; MAX_BINDS],
        };
        for (k, b) in key.ids.iter_mut().zip(binds) {
            *k = b.id;
        }
        if !self.groups.contains_key(&key) {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.arena,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAMS_BYTES),
                }),
            }];
            for (i, b) in binds.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.buf.as_entire_binding(),
                });
            }
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &kernel.layout.bgl,
                entries: &entries,
            });
            self.groups.insert(key.clone(), group);
        }
        if self.pass.is_none() {
            let pass = self
                .encoder()
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                })
                .forget_lifetime();
            self.pass = Some(pass);
        }
        let group = &self.groups[&key];
        let pass = self.pass.as_mut().expect("a pass was begun above");
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, group, &[offset as u32]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.dispatches += 1;
    }

    /// Records zeroing the first `bytes` of `buf`.
    pub fn clear(&mut self, buf: &wgpu::Buffer, bytes: u64) {
        self.encoder()
            .clear_buffer(buf, 0, Some(bytes.next_multiple_of(4)));
    }

    /// Records a copy between buffers.
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_off: u64,
        dst: &wgpu::Buffer,
        dst_off: u64,
        bytes: u64,
    ) {
        self.encoder()
            .copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes.next_multiple_of(4));
    }

    /// Submits everything recorded so far (one submission).
    pub fn flush(&mut self) {
        self.pass = None;
        let dead = std::mem::take(&mut *self.dead.lock().unwrap_or_else(|p| p.into_inner()));
        if !dead.is_empty() {
            self.groups
                .retain(|k, _| !k.ids.iter().any(|id| dead.contains(id)));
        }
        let Some(encoder) = self.encoder.take() else {
            return;
        };
        if self.used > 0 {
            let bytes = u64::from(self.used) * self.stride;
            self.queue
                .write_buffer(&self.arena, 0, &self.params[..bytes as usize]);
        }
        self.queue.submit([encoder.finish()]);
        self.used = 0;
        self.submissions += 1;
    }
}
