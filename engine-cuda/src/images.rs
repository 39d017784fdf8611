//! The compiled kernels embedded in the binary (`kernels/build/`, made by
//! `cargo xtask cuda-kernels`): per source file one PTX and cubins for sm_80, sm_89 and sm_90;
//! and which of them a device loads.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::Ptx;

use crate::device::{CudaError, DriverVersion};

/// One kernel source file, compiled.
#[derive(Debug)]
pub struct Module {
    /// The source's name (`matvec` for `kernels/matvec.cu`).
    pub name: &'static str,
    /// PTX for compute_80, which the driver compiles for newer architectures.
    pub ptx: &'static str,
    /// Cubins by architecture (`90` for sm_90).
    pub cubins: &'static [(u32, &'static [u8])],
}

macro_rules! module {
    ($name:literal) => {
        Module {
            name: $name,
            ptx: include_str!(concat!("../kernels/build/", $name, ".ptx")),
            cubins: &[
                (
                    80,
                    include_bytes!(concat!("../kernels/build/", $name, ".sm_80.cubin")),
                ),
                (
                    89,
                    include_bytes!(concat!("../kernels/build/", $name, ".sm_89.cubin")),
                ),
                (
                    90,
                    include_bytes!(concat!("../kernels/build/", $name, ".sm_90.cubin")),
                ),
            ],
        }
    };
}

/// Every kernel file.
pub static MODULES: &[Module] = &[
    module!("attention"),
    module!("elementwise"),
    module!("matvec"),
    module!("step"),
];

/// The oldest driver that compiles the PTX (its ISA version 8.4 came with CUDA 12.4).
pub const PTX_DRIVER: DriverVersion = DriverVersion {
    major: 12,
    minor: 4,
};

/// Which image a device loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// The cubin of this architecture (the device's own, or an older one of its major
    /// version, which runs unchanged).
    Cubin(u32),
    /// The PTX, compiled by the driver at load.
    Ptx,
}

/// The image for a device of compute capability `cc` whose driver supports `driver`.
pub fn choose(cc: (u32, u32), driver: DriverVersion) -> Result<Image, CudaError> {
    let sm = cc.0 * 10 + cc.1;
    let archs = MODULES.first().map(|m| m.cubins).unwrap_or(&[]);
    let cubin = archs
        .iter()
        .map(|&(arch, _)| arch)
        .filter(|&arch| arch / 10 == cc.0 && arch <= sm)
        .max();
    if let Some(arch) = cubin {
        return Ok(Image::Cubin(arch));
    }
    if driver < PTX_DRIVER {
        return Err(CudaError::DriverTooOld {
            found: driver,
            needed: PTX_DRIVER,
        });
    }
    Ok(Image::Ptx)
}

impl Module {
    /// The module's image as the driver loads it.
    fn ptx_for(&self, image: Image) -> Ptx {
        match image {
            Image::Cubin(arch) => {
                let bytes = self
                    .cubins
                    .iter()
                    .find(|(a, _)| *a == arch)
                    .map(|(_, b)| *b)
                    .unwrap_or_default();
                Ptx::from_binary(bytes.to_vec())
            }
            Image::Ptx => Ptx::from_src(self.ptx),
        }
    }
}

/// Loads every module into `ctx` as `image`.
pub fn load(ctx: &Arc<CudaContext>, image: Image) -> Result<Vec<Arc<CudaModule>>, CudaError> {
    MODULES
        .iter()
        .map(|m| {
            ctx.load_module(m.ptx_for(image))
                .map_err(|e| CudaError::Driver(format!("loading the {} kernels: {e:?}", m.name)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: DriverVersion = DriverVersion {
        major: 12,
        minor: 8,
    };
    const OLD: DriverVersion = DriverVersion {
        major: 12,
        minor: 2,
    };

    #[test]
    fn each_device_loads_the_cubin_it_can_run_else_the_ptx() {
        assert_eq!(choose((8, 0), OLD), Ok(Image::Cubin(80)));
        // Ampere's other chips run sm_80 code; Ada has its own.
        assert_eq!(choose((8, 6), OLD), Ok(Image::Cubin(80)));
        assert_eq!(choose((8, 7), NEW), Ok(Image::Cubin(80)));
        assert_eq!(choose((8, 9), OLD), Ok(Image::Cubin(89)));
        assert_eq!(choose((9, 0), OLD), Ok(Image::Cubin(90)));
        // Blackwell: the PTX, which needs a driver that knows its ISA version.
        assert_eq!(choose((10, 0), NEW), Ok(Image::Ptx));
        assert_eq!(choose((12, 0), NEW), Ok(Image::Ptx));
        assert!(matches!(
            choose((10, 0), OLD),
            Err(CudaError::DriverTooOld { needed, .. }) if needed == PTX_DRIVER
        ));
    }

    #[test]
    fn every_kernel_source_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        let mut sources: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".cu").map(str::to_owned)
            })
            .collect();
        sources.sort();
        let mut embedded: Vec<String> = MODULES.iter().map(|m| m.name.to_owned()).collect();
        embedded.sort();
        assert_eq!(sources, embedded);
    }

    #[test]
    fn the_images_are_what_they_claim() {
        for m in MODULES {
            assert!(m.ptx.contains(".version 8.4"), "{}", m.name);
            assert!(m.ptx.contains(".target sm_80"), "{}", m.name);
            for &(arch, bytes) in m.cubins {
                // An ELF64 file whose flags name the architecture (EF_CUDA_SM, the low byte).
                assert_eq!(&bytes[..4], b"\x7fELF", "{} sm_{arch}", m.name);
                assert_eq!(bytes[4], 2, "ELF64");
                let flags = u32::from_le_bytes(bytes[48..52].try_into().unwrap());
                assert_eq!(flags & 0xff, arch, "{} sm_{arch}: flags {flags:#x}", m.name);
            }
        }
    }
}
