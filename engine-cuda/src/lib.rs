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
//! What is here: the device probe with the driver checks, the embedded kernel images and the
//! choice among them, and the launch geometry of each kernel ([`launch`]). The engine-core
//! `Backend` built on them comes next; none of the GPU paths has run on a GPU yet.

pub mod device;
pub mod images;
pub mod launch;

pub use device::{CudaError, DeviceInfo, DriverVersion, probe};
