//! The vocabulary as GGUF metadata describes it: token texts, scores and attributes, special
//! token ids, the end-of-generation set and the flags that steer encoding.
//!
//! Defaults and auto-detection follow llama.cpp's loader, so that a model behaves the same here:
//! per-model default special ids, end-of-turn tokens recognised by their text, and the list of
//! tokens that are split out of text before pre-tokenization.

use super::bytelevel;
use super::error::TokenizerError;
use super::hash::FastMap;
use super::pretokenize::{self, PreSpec};
use crate::gguf::{Metadata, Value};

/// Token attribute bits (the values llama.cpp uses).
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

/// Which tokenization algorithm a vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece-style (`tokenizer.ggml.model = "llama"`): merges by token score, `▁` for
    /// spaces, `<0xXX>` byte fallback.
    Spm,
    /// GPT-2-style byte-level BPE (`tokenizer.ggml.model = "gpt2"`): regex pre-tokenization, then
    /// merges by rank.
    Bpe,
}

/// Ids of tokens with a role.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// A loaded vocabulary.
pub(crate) struct Vocab {
    pub kind: TokenizerKind,
    /// The pre-tokenizer's settings (BPE only).
    pub pre: Option<PreSpec>,
    pub texts: Vec<Box<str>>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u16>,
    pub by_text: FastMap<Box<str>, u32>,
    pub ids: SpecialIds,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// End-of-generation ids, sorted.
    pub eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which they are
    /// split out of input text.
    pub special_tokens: Vec<u32>,
    /// Every token's bytes, concatenated; token `i` is `piece_data[piece_offsets[i]..piece_offsets[i + 1]]`.
    piece_data: Vec<u8>,
    piece_offsets: Vec<u32>,
}

pub(crate) const KEY_MODEL: &str = "tokenizer.ggml.model";
pub(crate) const KEY_PRE: &str = "tokenizer.ggml.pre";
pub(crate) const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub(crate) const KEY_SCORES: &str = "tokenizer.ggml.scores";
pub(crate) const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub(crate) const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// Texts that mark a token as end-of-turn when no `eot_token_id` is given.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Texts of tokens that end generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Tokens that are always rendered as text (gpt-oss's channel markup).
const ALWAYS_RENDERED_TEXTS: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl Vocab {
    /// Reads the vocabulary from GGUF metadata.
    pub fn from_metadata(meta: &Metadata) -> Result<Vocab, TokenizerError> {
        let model = match meta.get(KEY_MODEL) {
            None => return Err(TokenizerError::MissingMetadata(KEY_MODEL)),
            Some(v) => v
                .as_str()
                .ok_or_else(|| invalid(KEY_MODEL, "not a string"))?,
        };
        let pre_name = match meta.get(KEY_PRE) {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| invalid(KEY_PRE, "not a string"))?),
        };

        let mut ids = SpecialIds::default();
        let (kind, pre, mut add_bos, mut add_space_prefix);
        match model {
            "llama" => {
                kind = TokenizerKind::Spm;
                pre = None;
                ids.bos = Some(1);
                ids.eos = Some(2);
                ids.unk = Some(0);
                add_bos = true;
                add_space_prefix = true;
            }
            "gpt2" => {
                kind = TokenizerKind::Bpe;
                let name = pre_name.unwrap_or("default");
                let spec = pretokenize::spec(name)
                    .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(name.to_owned()))?;
                ids.bos = if spec.no_bos { None } else { Some(11) };
                ids.eos = Some(11);
                add_bos = spec.add_bos;
                add_space_prefix = false;
                pre = Some(spec);
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        }
        if let Some(v) = get_bool(meta, KEY_ADD_PREFIX)? {
            add_space_prefix = v;
        }

        let texts = read_tokens(meta)?;
        let n = texts.len();
        let scores = read_scores(meta, n)?;
        let mut attrs = read_attrs(meta, n)?;

        let mut by_text: FastMap<Box<str>, u32> = FastMap::default();
        by_text.reserve(n);
        for (i, t) in texts.iter().enumerate() {
            by_text.insert(t.clone(), i as u32);
        }

        read_special_ids(meta, n, &mut ids);
        if let Some(v) = get_bool(meta, KEY_ADD_BOS)? {
            add_bos = v;
        }
        let add_eos = get_bool(meta, KEY_ADD_EOS)?.unwrap_or(false);

        // When several texts of a list are in the vocabulary, the lowest id wins.
        let find = |list: &[&str]| list.iter().filter_map(|t| by_text.get(*t).copied()).min();
        for (slot, list) in [
            (&mut ids.eot, EOT_TEXTS),
            (&mut ids.eom, EOM_TEXTS),
            (&mut ids.fim_pre, FIM_PRE_TEXTS),
            (&mut ids.fim_suf, FIM_SUF_TEXTS),
            (&mut ids.fim_mid, FIM_MID_TEXTS),
            (&mut ids.fim_pad, FIM_PAD_TEXTS),
            (&mut ids.fim_rep, FIM_REP_TEXTS),
            (&mut ids.fim_sep, FIM_SEP_TEXTS),
        ] {
            if slot.is_none()
                && let Some(id) = find(list)
            {
                *slot = Some(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }

        // Control tokens named "unused" are unused.
        for (a, t) in attrs.iter_mut().zip(&texts) {
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }

        let mut eog: Vec<u32> = [ids.fim_pad, ids.fim_rep, ids.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        for text in EOG_TEXTS {
            if let Some(&id) = by_text.get(*text) {
                eog.push(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        for text in ALWAYS_RENDERED_TEXTS {
            if let Some(&id) = by_text.get(*text) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        drop_conflicting_eog(&texts, &mut attrs, &mut eog);

        let mut special_tokens: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_tokens.sort_by(|&a, &b| texts[b as usize].len().cmp(&texts[a as usize].len()));

        set_model_specific_attrs(
            meta,
            pre_name,
            &texts,
            &by_text,
            &special_tokens,
            &mut attrs,
        );

        let mut vocab = Vocab {
            kind,
            pre,
            texts,
            scores,
            attrs,
            by_text,
            ids,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
            special_tokens,
            piece_data: Vec::new(),
            piece_offsets: Vec::new(),
        };
        vocab.build_pieces();
        Ok(vocab)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// A token's attribute bits, or `None` out of range.
    pub fn attr(&self, id: u32) -> Option<u16> {
        self.attrs.get(id as usize).copied()
    }

    /// A token's id by its exact text.
    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// The bytes a token stands for when rendered (control tokens as their text).
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let start = *self.piece_offsets.get(i)? as usize;
        let end = *self.piece_offsets.get(i + 1)? as usize;
        self.piece_data.get(start..end)
    }

    fn build_pieces(&mut self) {
        let mut data = Vec::new();
        let mut offsets = Vec::with_capacity(self.texts.len() + 1);
        offsets.push(0u32);
        for (text, &a) in self.texts.iter().zip(&self.attrs) {
            if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
                data.extend_from_slice(text.as_bytes());
            } else if a & attr::NORMAL != 0 {
                match self.kind {
                    TokenizerKind::Bpe => bytelevel::decode_into(text, &mut data),
                    TokenizerKind::Spm => data.extend_from_slice(text.replace('▁', " ").as_bytes()),
                }
            } else if a & attr::BYTE != 0 {
                match parse_byte_token(text) {
                    Some(b) => data.push(b),
                    None => data.extend_from_slice(text.as_bytes()),
                }
            }
            // Unused and undefined tokens render as nothing.
            offsets.push(u32::try_from(data.len()).unwrap_or(u32::MAX));
        }
        self.piece_data = data;
        self.piece_offsets = offsets;
    }
}

/// The byte of a `<0xXX>` token.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn invalid(key: &'static str, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidMetadata {
        key,
        reason: reason.into(),
    }
}

fn get_bool(meta: &Metadata, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| invalid(key, "not a bool")),
    }
}

/// The elements of an array value, if present.
pub(crate) fn get_array<'m>(
    meta: &'m Metadata,
    key: &'static str,
) -> Result<Option<&'m [Value]>, TokenizerError> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| invalid(key, "not an array")),
    }
}

fn read_tokens(meta: &Metadata) -> Result<Vec<Box<str>>, TokenizerError> {
    let items = get_array(meta, KEY_TOKENS)?.ok_or(TokenizerError::MissingMetadata(KEY_TOKENS))?;
    if items.is_empty() {
        return Err(invalid(KEY_TOKENS, "the vocabulary is empty"));
    }
    if u32::try_from(items.len()).is_err() {
        return Err(invalid(KEY_TOKENS, "more than 2^32 tokens"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_str() {
            Some("") => Ok(format!("[EMPTY_{i}]").into_boxed_str()),
            Some(s) => Ok(s.into()),
            None => Err(invalid(KEY_TOKENS, format!("element {i} is not a string"))),
        })
        .collect()
}

fn read_scores(meta: &Metadata, n: usize) -> Result<Vec<f32>, TokenizerError> {
    let Some(items) = get_array(meta, KEY_SCORES)? else {
        return Ok(vec![0.0; n]);
    };
    if items.len() < n {
        return Err(invalid(
            KEY_SCORES,
            format!("{} scores for {n} tokens", items.len()),
        ));
    }
    items[..n]
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::F32(x) => Ok(*x),
            Value::I32(x) => Ok(*x as f32),
            _ => Err(invalid(
                KEY_SCORES,
                format!("element {i} is not a float32 or int32"),
            )),
        })
        .collect()
}

fn read_attrs(meta: &Metadata, n: usize) -> Result<Vec<u16>, TokenizerError> {
    let Some(items) = get_array(meta, KEY_TOKEN_TYPE)? else {
        return Ok(vec![attr::NORMAL; n]);
    };
    if items.len() < n {
        return Err(invalid(
            KEY_TOKEN_TYPE,
            format!("{} types for {n} tokens", items.len()),
        ));
    }
    items[..n]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = v
                .as_i64()
                .ok_or_else(|| invalid(KEY_TOKEN_TYPE, format!("element {i} is not an integer")))?;
            Ok(match t {
                1 => attr::NORMAL,
                2 => attr::UNKNOWN,
                3 => attr::CONTROL,
                4 => attr::USER_DEFINED,
                5 => attr::UNUSED,
                6 => attr::BYTE,
                _ => 0,
            })
        })
        .collect()
}

/// Applies `tokenizer.ggml.*_token_id` keys. Defaults out of range are dropped; ids out of range
/// in the metadata are ignored.
fn read_special_ids(meta: &Metadata, n: usize, ids: &mut SpecialIds) {
    let apply = |key: &str, slot: &mut Option<u32>| {
        if slot.is_some_and(|id| id as usize >= n) {
            *slot = None;
        }
        match meta.get(key).map(Value::as_u64) {
            None => {}
            Some(Some(id)) if id < n as u64 => *slot = Some(id as u32),
            Some(_) => tracing::warn!("ignoring out-of-range or non-integer {key}"),
        }
    };
    apply("tokenizer.ggml.bos_token_id", &mut ids.bos);
    apply("tokenizer.ggml.eos_token_id", &mut ids.eos);
    apply("tokenizer.ggml.eot_token_id", &mut ids.eot);
    apply("tokenizer.ggml.eom_token_id", &mut ids.eom);
    apply("tokenizer.ggml.unknown_token_id", &mut ids.unk);
    apply("tokenizer.ggml.seperator_token_id", &mut ids.sep);
    apply("tokenizer.ggml.padding_token_id", &mut ids.pad);
    apply("tokenizer.ggml.mask_token_id", &mut ids.mask);
    apply("tokenizer.ggml.fim_pre_token_id", &mut ids.fim_pre);
    apply("tokenizer.ggml.fim_suf_token_id", &mut ids.fim_suf);
    apply("tokenizer.ggml.fim_mid_token_id", &mut ids.fim_mid);
    apply("tokenizer.ggml.fim_pad_token_id", &mut ids.fim_pad);
    apply("tokenizer.ggml.fim_rep_token_id", &mut ids.fim_rep);
    apply("tokenizer.ggml.fim_sep_token_id", &mut ids.fim_sep);
    // Older names of the fill-in-the-middle keys.
    apply("tokenizer.ggml.prefix_token_id", &mut ids.fim_pre);
    apply("tokenizer.ggml.suffix_token_id", &mut ids.fim_suf);
    apply("tokenizer.ggml.middle_token_id", &mut ids.fim_mid);
}

/// Some vocabularies mark tokens as end of generation that only delimit parts of a turn.
fn drop_conflicting_eog(texts: &[Box<str>], attrs: &mut [u16], eog: &mut Vec<u32>) {
    let has = |eog: &[u32], wanted: &[&str]| {
        eog.iter().any(|&id| {
            texts
                .get(id as usize)
                .is_some_and(|t| wanted.contains(&t.as_ref()))
        })
    };
    let find = |eog: &[u32], wanted: &str| {
        eog.iter()
            .copied()
            .find(|&id| texts.get(id as usize).is_some_and(|t| t.as_ref() == wanted))
    };

    // gpt-oss and solar-open: "<|end|>" ends a message, not generation.
    let has_call = has(eog, &["<|call|>", "<|calls|>"]);
    let has_return = has(eog, &["<|return|>"]);
    let has_flush = has(eog, &["<|flush|>"]);
    if let Some(end) = find(eog, "<|end|>")
        && has_call
        && (has_return || has_flush)
    {
        eog.retain(|&id| id != end);
        attrs[end as usize] = attr::USER_DEFINED;
    }

    // Gemma 4 and PLaMo 2 use "</s>" as an ordinary token.
    if let Some(s) = find(eog, "</s>")
        && has(eog, &["<|tool_response>", "<|plamo:eos|>"])
    {
        eog.retain(|&id| id != s);
        attrs[s as usize] = attr::NORMAL;
    }
}

/// Strip flags that some model families set on their special tokens.
fn set_model_specific_attrs(
    meta: &Metadata,
    pre_name: Option<&str>,
    texts: &[Box<str>],
    by_text: &FastMap<Box<str>, u32>,
    special_tokens: &[u32],
    attrs: &mut [u16],
) {
    let mut set = |text: &str, bit: u16, on: bool| {
        if let Some(&id) = by_text.get(text) {
            let a = &mut attrs[id as usize];
            *a = if on { *a | bit } else { *a & !bit };
        }
    };
    let name = meta
        .get_str("general.name")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let arch = meta.get_str("general.architecture").unwrap_or_default();
    let pre = pre_name.unwrap_or_default();
    let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));

    if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
        || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set("<mask>", attr::LSTRIP, true);
    } else if any(&name, &["phi-3", "phi3"]) {
        for &id in special_tokens {
            let text = &texts[id as usize];
            set(text, attr::RSTRIP, true);
        }
        set("</s>", attr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(t, attr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set("[MASK]", attr::LSTRIP, true);
    }
}
