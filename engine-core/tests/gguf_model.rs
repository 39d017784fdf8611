//! Reads the default model's GGUF file and checks its directory.

mod common;

use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::quant::GgmlType;

#[test]
fn reads_default_model_directory() {
    let file = GgufFile::new(ModelBytes::from_vec(common::default_model_bytes())).unwrap();
    let g = file.gguf();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(
        file.metadata().get_str("general.architecture"),
        Some("llama")
    );
    assert_eq!(file.metadata().get_u64("llama.block_count"), Some(30));
    assert_eq!(
        file.metadata()
            .get_array("tokenizer.ggml.tokens")
            .map(|a| a.len()),
        Some(49152)
    );
    let (info, data) = file.tensor("token_embd.weight").unwrap();
    assert_eq!(info.dims, vec![576, 49152]);
    assert_eq!(info.ggml_type, GgmlType::Q8_0);
    assert_eq!(data.len(), 49152 * 18 * 34);
    let (info, _) = file.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(
        (info.dims.clone(), info.ggml_type),
        (vec![1536, 576], GgmlType::Q4_1)
    );
}
