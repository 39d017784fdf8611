//! Tandem's CUDA backend for large models on NVIDIA GPUs.
//!
//! The CUDA driver is loaded at run time (`cudarc` with dynamic loading), so this crate and the
//! `tandem` binary build and run on machines without a GPU or a CUDA toolkit; there,
//! [`device::probe`] answers [`device::CudaError::Unavailable`] instead of failing to link or
//! panicking. The kernels are CUDA C sources in `kernels/`, compiled ahead by
//! `cargo xtask cuda-kernels` (NVRTC from NVIDIA's PyPI wheels) into PTX and cubins for sm_80,
//! sm_89 and sm_90 that are committed and embedded ([`images`]); at run time the cubin of the
//! device's architecture is loaded, else the PTX for the driver to compile.
//!
//! [`CudaBackend`] is engine-core's `Backend` on a device: weights stay in their GGUF encoding
//! (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16), activations are f32, the KV cache f32 or
//! f16, and a step's metadata goes through pinned buffers reused from step to step ([`step`]). None of the GPU paths
//! has run on a GPU yet: they are checked here only as far as a machine without one can (the
//! kernels compile and assemble for every target architecture, their entry points and launch
//! geometry match, a missing driver is a clear error).

pub mod backend;
pub mod device;
pub mod images;
pub mod launch;
pub mod step;

pub use backend::CudaBackend;
pub use device::{CudaError, DeviceInfo, DriverVersion, probe};
