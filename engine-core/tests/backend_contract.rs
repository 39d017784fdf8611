//! The `Backend` contract on the CPU backend (and the WebGPU one when an adapter is present):
//! the fused operations equal the operations they stand for, and the capabilities say which
//! weight types uploads take.

mod common;

use engine_core::backend::cpu::{CpuBackend, CpuOptions, Isa};
use engine_core::backend::{Backend, BackendError, MatrixSource};
use engine_core::gguf::ModelBytes;
use engine_core::quant::GgmlType;

/// A 4 x 256 matrix of zero bytes of type `ty` (every layout is valid with zero bytes).
fn source(ty: GgmlType) -> MatrixSource {
    let (rows, cols) = (4, 256);
    let len = rows * ty.row_bytes(cols).unwrap();
    MatrixSource {
        name: format!("{ty:?}"),
        ty,
        rows,
        cols,
        bytes: ModelBytes::from_vec(vec![0; len]),
        range: 0..len,
    }
}

/// Uploads take exactly the types the capabilities list.
fn uploads_match_capabilities<B: Backend>(b: &B) {
    let caps = b.capabilities();
    for ty in GgmlType::SUPPORTED {
        let r = b.upload_matrix(&source(ty));
        if caps.computes(ty) {
            assert!(r.is_ok(), "{ty:?} is listed but its upload failed");
        } else {
            assert!(
                matches!(r, Err(BackendError::UnsupportedType { .. })),
                "{ty:?} is not listed but its upload did not say unsupported"
            );
        }
    }
}

#[test]
fn cpu_fused_operations_equal_their_parts() {
    for isa in Isa::available() {
        let b = CpuBackend::new(CpuOptions {
            threads: 2,
            isa: Some(isa),
        })
        .unwrap();
        common::fused::fused_ops_equal_their_parts(&b, 0.0);
    }
}

#[test]
fn cpu_capabilities() {
    let b = CpuBackend::new(CpuOptions::default()).unwrap();
    let caps = b.capabilities();
    assert!(!caps.device_sampling);
    // Every type but the activation-only Q8_1 and Q8_K.
    assert_eq!(caps.weight_types.len(), GgmlType::SUPPORTED.len() - 2);
    assert!(!caps.computes(GgmlType::Q8_K) && caps.computes(GgmlType::Q5_K));
    uploads_match_capabilities(&b);
}

#[cfg(feature = "webgpu")]
#[test]
fn webgpu_contract() {
    use engine_core::backend::webgpu::{WebGpuBackend, WebGpuOptions};
    let b = match WebGpuBackend::new_blocking(WebGpuOptions::default()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("no WebGPU adapter, skipping: {e}");
            return;
        }
    };
    assert!(b.capabilities().device_sampling);
    uploads_match_capabilities(&b);
    common::fused::fused_ops_equal_their_parts(&b, 0.0);
}
