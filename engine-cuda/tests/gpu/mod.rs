//! The device the GPU tests run on.

use engine_core::backend::Backend;
use engine_cuda::CudaBackend;

/// The first CUDA device, or `None` (after saying so) where there is none; with
/// `TANDEM_REQUIRE_CUDA=1` (the GPU machine's check) a missing device fails instead.
pub fn cuda() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => {
            eprintln!("{}", b.info().device);
            Some(b)
        }
        Err(e) => {
            assert!(
                std::env::var_os("TANDEM_REQUIRE_CUDA").is_none(),
                "no CUDA device ({e}), and TANDEM_REQUIRE_CUDA is set"
            );
            eprintln!("{e}\nno CUDA device: skipped");
            None
        }
    }
}
