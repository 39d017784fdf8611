//! Finding a usable CUDA device: the driver library, its version, the device and its compute
//! capability, each failure a clear [`CudaError`] (never a panic).

use std::fmt;

use cudarc::driver::{CudaContext, sys};

/// Why CUDA cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// No CUDA driver library on this machine.
    #[error("CUDA not available: {0}")]
    Unavailable(String),
    /// The driver is older than what the kernels need.
    #[error(
        "the NVIDIA driver supports CUDA {found}; Tandem's kernels need CUDA {needed} or newer: update the driver"
    )]
    DriverTooOld {
        /// What the driver supports.
        found: DriverVersion,
        /// What is needed.
        needed: DriverVersion,
    },
    /// No device with this ordinal.
    #[error("no CUDA device {ordinal}: this machine has {count}")]
    NoDevice {
        /// The device asked for.
        ordinal: usize,
        /// How many there are.
        count: usize,
    },
    /// The GPU is too old for the kernels.
    #[error(
        "the GPU {name} (compute capability {major}.{minor}) is not supported: Tandem's CUDA kernels need compute capability 8.0 (Ampere) or newer"
    )]
    Unsupported {
        /// The device's name.
        name: String,
        /// Compute capability, major.
        major: u32,
        /// Compute capability, minor.
        minor: u32,
    },
    /// The driver reported an error.
    #[error("CUDA driver error: {0}")]
    Driver(String),
}

/// A CUDA version as the driver reports it (`cuDriverGetVersion`: 1000 * major + 10 * minor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DriverVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl DriverVersion {
    /// From the driver's integer.
    pub fn from_raw(v: i32) -> DriverVersion {
        let v = v.max(0) as u32;
        DriverVersion {
            major: v / 1000,
            minor: (v % 1000) / 10,
        }
    }
}

impl fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest driver the cubins load on (CUDA 12's minor-version compatibility).
pub const MIN_DRIVER: DriverVersion = DriverVersion {
    major: 12,
    minor: 0,
};

/// The oldest compute capability the kernels are built for.
pub const MIN_COMPUTE_CAPABILITY: (u32, u32) = (8, 0);

/// A usable device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its ordinal.
    pub ordinal: usize,
    /// Its name (`NVIDIA H200`, ...).
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// What the driver supports.
    pub driver: DriverVersion,
}

fn driver_error(e: impl fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}

/// The driver's CUDA version, once its library is known to be there.
pub fn driver_version() -> Result<DriverVersion, CudaError> {
    // SAFETY: only looks for the library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::Unavailable(
            "the NVIDIA driver library (libcuda.so.1) was not found; install the NVIDIA driver to use --backend cuda".into(),
        ));
    }
    let mut v = 0i32;
    // SAFETY: the library is present; cuDriverGetVersion needs no initialization.
    let code = unsafe { sys::cuDriverGetVersion(&mut v) };
    if code != sys::CUresult::CUDA_SUCCESS {
        return Err(driver_error(code));
    }
    let found = DriverVersion::from_raw(v);
    if found < MIN_DRIVER {
        return Err(CudaError::DriverTooOld {
            found,
            needed: MIN_DRIVER,
        });
    }
    Ok(found)
}

/// Checks that device `ordinal` can run the kernels and describes it.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    let driver = driver_version()?;
    cudarc::driver::result::init().map_err(driver_error)?;
    let count = CudaContext::device_count().map_err(driver_error)?.max(0) as usize;
    if ordinal >= count {
        return Err(CudaError::NoDevice { ordinal, count });
    }
    let ctx = CudaContext::new(ordinal).map_err(driver_error)?;
    let name = ctx.name().map_err(driver_error)?;
    let (major, minor) = ctx.compute_capability().map_err(driver_error)?;
    let (major, minor) = (major.max(0) as u32, minor.max(0) as u32);
    if (major, minor) < MIN_COMPUTE_CAPABILITY {
        return Err(CudaError::Unsupported { name, major, minor });
    }
    Ok(DeviceInfo {
        ordinal,
        name,
        compute_capability: (major, minor),
        memory_bytes: ctx.total_mem().map_err(driver_error)? as u64,
        driver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_versions_read_as_cuda_versions() {
        let v = DriverVersion::from_raw(12040);
        assert_eq!((v.major, v.minor), (12, 4));
        assert_eq!(v.to_string(), "12.4");
        assert!(DriverVersion::from_raw(11080) < MIN_DRIVER);
        assert!(DriverVersion::from_raw(12080) > DriverVersion::from_raw(12040));
        assert_eq!(DriverVersion::from_raw(-1), DriverVersion::from_raw(0));
    }

    #[test]
    fn a_machine_without_cuda_gets_a_clear_error_not_a_panic() {
        match probe(0) {
            Err(CudaError::Unavailable(msg)) => {
                assert!(msg.contains("libcuda"), "{msg}");
                let shown = CudaError::Unavailable(msg).to_string();
                assert!(shown.starts_with("CUDA not available"), "{shown}");
            }
            // Where a driver is installed: a device, or a clear reason there is none.
            Ok(info) => assert!(info.compute_capability >= MIN_COMPUTE_CAPABILITY),
            Err(e @ (CudaError::NoDevice { .. } | CudaError::Driver(_))) => {
                assert!(!e.to_string().is_empty())
            }
            Err(e) => panic!("unexpected: {e}"),
        }
        // Asking for a device far past any machine's count never panics either.
        assert!(probe(1 << 20).is_err());
    }
}
