//! Reading device buffers back: the copy is submitted at once; the returned future resolves
//! when the mapping completes. Natively it polls the device (blocking until the GPU is done), so
//! any executor completes it on the first poll; on the web it waits for the browser's callback
//! and never blocks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::device::ErrorSlot;
use super::pool::Scratch;
use crate::backend::BackendError;

#[derive(Default)]
struct MapState {
    result: Option<Result<(), String>>,
    waker: Option<Waker>,
}

/// Bytes coming back from the device.
pub(crate) struct ReadBack {
    state: Arc<Mutex<MapState>>,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    device: wgpu::Device,
    staging: Option<Scratch>,
    bytes: u64,
    errors: ErrorSlot,
}

impl ReadBack {
    /// Maps the first `bytes` of `staging` (whose copy was submitted) for reading.
    pub fn new(device: wgpu::Device, staging: Scratch, bytes: u64, errors: ErrorSlot) -> ReadBack {
        let state = Arc::new(Mutex::new(MapState::default()));
        let s = state.clone();
        staging
            .slot()
            .buf
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |res| {
                let mut st = s.lock().unwrap_or_else(|p| p.into_inner());
                st.result = Some(res.map_err(|e| e.to_string()));
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            });
        ReadBack {
            state,
            device,
            staging: Some(staging),
            bytes,
            errors,
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>, BackendError> {
        let staging = self
            .staging
            .take()
            .ok_or_else(|| BackendError::Device("read polled after completion".into()))?;
        let buf = &staging.slot().buf;
        let out = {
            let view = buf
                .slice(..self.bytes)
                .get_mapped_range()
                .map_err(|e| BackendError::Device(format!("reading back: {e}")))?;
            view.to_vec()
        };
        buf.unmap();
        Ok(out)
    }
}

impl Drop for ReadBack {
    fn drop(&mut self) {
        // A buffer goes back to the pool unmapped, even when the read was abandoned.
        if let Some(staging) = self.staging.take() {
            staging.slot().buf.unmap();
        }
    }
}

/// The sticky device error, if one happened.
pub(crate) fn take_error(errors: &ErrorSlot) -> Result<(), BackendError> {
    match errors.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(BackendError::Device(e)),
        None => Ok(()),
    }
}

impl Future for ReadBack {
    type Output = Result<Vec<u8>, BackendError>;

    // On the web the loop body returns on its first pass (the browser's callback wakes the task).
    #[cfg_attr(target_arch = "wasm32", allow(clippy::never_loop))]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let result = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match st.result.take() {
                    Some(r) => Some(r),
                    None => {
                        st.waker = Some(cx.waker().clone());
                        None
                    }
                }
            };
            if let Some(r) = result {
                take_error(&self.errors)?;
                return Poll::Ready(match r {
                    Ok(()) => self.finish(),
                    Err(e) => Err(BackendError::Device(format!("mapping for read-back: {e}"))),
                });
            }
            #[cfg(not(target_arch = "wasm32"))]
            {
                if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
                    return Poll::Ready(Err(BackendError::Device(format!(
                        "waiting for the device: {e}"
                    ))));
                }
                take_error(&self.errors)?;
            }
            #[cfg(target_arch = "wasm32")]
            {
                return Poll::Pending;
            }
        }
    }
}
