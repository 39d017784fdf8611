//! `POST /v1/embeddings`: the request and the response, as OpenAI's API has them.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Extra, PromptInput};

/// `POST /v1/embeddings`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EmbeddingRequest {
    /// Model id or alias; empty or missing means the default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A text, a list of texts, a list of token ids, or a list of such lists.
    pub input: PromptInput,
    /// `float` (default) or `base64` (little-endian 32-bit floats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// The size of the vectors, for models that can shorten them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// The end user (the fairness id when no header gives one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fields Tandem does not interpret, forwarded.
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// How the vectors are written in the response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian `f32` bytes.
    Base64,
}

impl EncodingFormat {
    /// Parses the field (`None`: float).
    pub fn parse(field: Option<&str>) -> Option<EncodingFormat> {
        match field {
            None | Some("float") => Some(EncodingFormat::Float),
            Some("base64") => Some(EncodingFormat::Base64),
            Some(_) => None,
        }
    }
}

/// One vector in the response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: String,
    /// Which input it embeds.
    pub index: usize,
    /// The vector: numbers, or a base64 string.
    pub embedding: EmbeddingVector,
}

/// A vector as written on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

impl EmbeddingVector {
    /// `v` in `format`.
    pub fn encode(v: Vec<f32>, format: EncodingFormat) -> EmbeddingVector {
        match format {
            EncodingFormat::Float => EmbeddingVector::Float(v),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }

    /// The numbers (a base64 vector decoded); `None` for base64 that is not whole floats.
    pub fn decode(self) -> Option<Vec<f32>> {
        match self {
            EmbeddingVector::Float(v) => Some(v),
            EmbeddingVector::Base64(s) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
                if bytes.len() % 4 != 0 {
                    return None;
                }
                Some(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            }
        }
    }
}

/// The token counts of an embeddings request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingUsage {
    /// Input tokens.
    #[serde(default)]
    pub prompt_tokens: usize,
    /// The same (nothing is generated).
    #[serde(default)]
    pub total_tokens: usize,
}

/// The response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingResponse {
    /// Always `list`.
    pub object: String,
    /// One vector per input, in input order.
    pub data: Vec<EmbeddingData>,
    /// The model's public name.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_floats() {
        let v = vec![1.0f32, -0.5, 0.25];
        let EmbeddingVector::Base64(s) = EmbeddingVector::encode(v.clone(), EncodingFormat::Base64)
        else {
            panic!("base64 expected");
        };
        // 1.0 = 00 00 80 3f.
        assert!(s.starts_with("AACAPw"));
        assert_eq!(EmbeddingVector::Base64(s).decode(), Some(v));
        assert_eq!(EmbeddingVector::Base64("AAA=".into()).decode(), None);
        assert_eq!(
            EncodingFormat::parse(Some("base64")),
            Some(EncodingFormat::Base64)
        );
        assert_eq!(EncodingFormat::parse(Some("int8")), None);
    }

    #[test]
    fn inputs_take_every_openai_shape() {
        for (json, count) in [
            (serde_json::json!({"input": "hi"}), 1),
            (serde_json::json!({"input": ["a", "b"]}), 2),
            (serde_json::json!({"input": [1, 2, 3]}), 1),
            (serde_json::json!({"input": [[1, 2], [3]]}), 2),
        ] {
            let r: EmbeddingRequest = serde_json::from_value(json).unwrap();
            assert_eq!(r.input.count(), count);
        }
    }
}
