//! Parses arbitrary bytes as a GGUF file. The parser must return an error, never panic or
//! allocate without bound; whatever it accepts must be usable: every tensor's data slice is
//! reachable and has the size the directory gives, and every supported tensor dequantizes.

#![no_main]

use engine_core::gguf::{Gguf, GgufFile, ModelBytes};
use engine_core::quant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(data) else {
        return;
    };
    let file =
        GgufFile::new(ModelBytes::from_vec(data.to_vec())).expect("accepted once, accepted twice");
    for (_, value) in gguf.metadata.iter() {
        let _ = value.to_string();
    }
    for info in &gguf.tensors {
        let (_, bytes) = file
            .tensor(&info.name)
            .expect("a listed tensor is readable");
        assert_eq!(bytes.len() as u64, info.n_bytes);
        let _ = (info.n_elements(), info.n_rows());
        if info.ggml_type.is_supported() {
            let values = quant::dequantize_to_vec(info.ggml_type, bytes).expect("whole blocks");
            assert_eq!(values.len() as u64, info.n_elements());
        }
    }
});
