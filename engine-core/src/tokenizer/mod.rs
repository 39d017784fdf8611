//! Text to token ids and back, for the vocabularies GGUF files carry.
//!
//! Two algorithms are implemented: GPT-2-style byte-level BPE (`tokenizer.ggml.model = "gpt2"`,
//! with the regex pre-tokenizer named by `tokenizer.ggml.pre`) and SentencePiece-style BPE by
//! score (`"llama"`). Token ids match llama.cpp's for the same model and input; special tokens
//! written in the text are recognised when asked to.
//!
//! ```no_run
//! # fn demo(meta: &engine_core::gguf::Metadata) -> Result<(), engine_core::tokenizer::TokenizerError> {
//! use engine_core::tokenizer::Tokenizer;
//! let tok = Tokenizer::from_metadata(meta)?;
//! let ids = tok.encode("Hello world", true, false);
//! assert_eq!(tok.decode(&ids, true), "Hello world");
//! # Ok(()) }
//! ```

mod bpe;
mod bytelevel;
mod error;
mod hash;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod vocab;

use std::borrow::Cow;

pub use error::TokenizerError;
pub use stream::StreamDecoder;
pub use vocab::TokenizerKind;

use bpe::{BpeModel, BpeWork};
use pretokenize::PreTokenizer;
use special::Fragment;
use spm::{SpmModel, SpmWork};
use vocab::{Vocab, attr};

use crate::gguf::Metadata;

enum Model {
    Bpe { bpe: BpeModel, pre: PreTokenizer },
    Spm(SpmModel),
}

/// A tokenizer built from a model's GGUF metadata. Cheap to share by reference across threads.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.vocab.kind)
            .field("vocab_size", &self.vocab.len())
            .field("bos", &self.vocab.ids.bos)
            .field("eos", &self.vocab.ids.eos)
            .field("eog", &self.vocab.eog)
            .finish()
    }
}

/// Scratch space for one encode call, reused across its words.
#[derive(Default)]
struct Work {
    words: Vec<std::ops::Range<usize>>,
    tmp: Vec<std::ops::Range<usize>>,
    bpe: BpeWork,
    spm: SpmWork,
}

impl Tokenizer {
    /// Builds the tokenizer that `meta` (a GGUF file's metadata) describes.
    pub fn from_metadata(meta: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let vocab = Vocab::from_metadata(meta)?;
        let model = match (vocab.kind, vocab.pre) {
            (TokenizerKind::Bpe, Some(spec)) => Model::Bpe {
                bpe: BpeModel::new(meta, &vocab, spec.ignore_merges)?,
                pre: PreTokenizer::new(&spec)?,
            },
            (TokenizerKind::Bpe, None) => {
                return Err(TokenizerError::UnsupportedPreTokenizer(String::new()));
            }
            (TokenizerKind::Spm, _) => Model::Spm(SpmModel::new(&vocab)),
        };
        Ok(Tokenizer { vocab, model })
    }

    /// Encodes text. `add_special` adds BOS/EOS as the model asks
    /// (`tokenizer.ggml.add_bos_token` / `add_eos_token`, with llama.cpp's per-model defaults);
    /// `parse_special` turns control tokens written in the text (such as `<|im_start|>`) into
    /// their ids instead of tokenizing them as plain text. User-defined tokens are always
    /// recognised.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special
            && self.vocab.add_bos
            && let Some(bos) = self.vocab.ids.bos
        {
            out.push(bos);
        }
        let frags = special::partition(&self.vocab, text, parse_special);
        self.encode_fragments(text, &frags, &mut Work::default(), &mut out);
        if add_special
            && self.vocab.add_eos
            && let Some(eos) = self.vocab.ids.eos
        {
            out.push(eos);
        }
        out
    }

    /// Like [`Tokenizer::encode`] for raw bytes, which must be valid UTF-8.
    pub fn encode_bytes(
        &self,
        bytes: &[u8],
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let text = std::str::from_utf8(bytes).map_err(|e| TokenizerError::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        Ok(self.encode(text, add_special, parse_special))
    }

    fn encode_fragments(
        &self,
        text: &str,
        frags: &[Fragment],
        work: &mut Work,
        out: &mut Vec<u32>,
    ) {
        match &self.model {
            Model::Bpe { bpe, pre } => {
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => out.push(*id),
                        Fragment::Text(r) => {
                            let piece = &text[r.clone()];
                            pre.split(piece, &mut work.words, &mut work.tmp);
                            for w in &work.words {
                                let word = &piece.as_bytes()[w.clone()];
                                bpe.encode_word(&self.vocab, word, &mut work.bpe, out);
                            }
                        }
                    }
                }
            }
            Model::Spm(spm) => {
                // A space is prefixed to the first text and to text after a special token.
                let mut after_special = true;
                let mut escaped = String::new();
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(*id);
                            after_special = true;
                        }
                        Fragment::Text(r) => {
                            escaped.clear();
                            if self.vocab.add_space_prefix && after_special {
                                escaped.push('▁');
                            }
                            for c in text[r.clone()].chars() {
                                escaped.push(if c == ' ' { '▁' } else { c });
                            }
                            spm.encode(&self.vocab, &escaped, &mut work.spm, out);
                            after_special = false;
                        }
                    }
                }
            }
        }
    }

    /// Decodes ids to text. With `skip_special`, control and unknown tokens are left out
    /// (user-defined tokens are always rendered). Ids out of range are skipped; bytes that do not
    /// form valid UTF-8 become U+FFFD. For SentencePiece vocabularies that prefix a space, the
    /// space at the very start of the output is removed.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        // Only SentencePiece encoding prefixes the space that decoding takes away again.
        let mut strip_space = self.vocab.add_space_prefix && self.vocab.kind == TokenizerKind::Spm;
        for &id in ids {
            let Some(piece) = self.render_bytes(id, skip_special) else {
                continue;
            };
            if piece.is_empty() {
                continue;
            }
            let piece = match piece {
                [b' ', rest @ ..] if strip_space => rest,
                p => p,
            };
            strip_space = false;
            bytes.extend_from_slice(piece);
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// A token's bytes as it renders, or `None` for an unknown id; control and unknown tokens
    /// render as nothing when `skip_special`.
    pub(crate) fn render_bytes(&self, id: u32, skip_special: bool) -> Option<&[u8]> {
        let a = self.vocab.attr(id)?;
        if skip_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            return Some(&[]);
        }
        self.vocab.piece(id)
    }

    /// The raw bytes a token stands for: byte-level decoded for BPE vocabularies, `▁` as a space
    /// and `<0xXX>` as its byte for SentencePiece ones, control and user-defined tokens as their
    /// text, unused tokens as nothing. `None` for an id out of range.
    pub fn token_bytes(&self, id: u32) -> Option<Cow<'_, [u8]>> {
        self.vocab.piece(id).map(Cow::Borrowed)
    }

    /// The token's text as stored in the vocabulary.
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(|t| &**t)
    }

    /// The id of the token whose vocabulary text is exactly `piece`.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.vocab.id_of(piece)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Which algorithm this vocabulary uses.
    pub fn kind(&self) -> TokenizerKind {
        self.vocab.kind
    }

    /// The beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.ids.bos
    }

    /// The end-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.ids.eos
    }

    /// The end-of-turn token, from metadata or recognised by its text.
    pub fn eot_id(&self) -> Option<u32> {
        self.vocab.ids.eot
    }

    /// The unknown token.
    pub fn unk_id(&self) -> Option<u32> {
        self.vocab.ids.unk
    }

    /// The padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.vocab.ids.pad
    }

    /// Whether `encode` with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos && self.vocab.ids.bos.is_some()
    }

    /// Whether `encode` with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos && self.vocab.ids.eos.is_some()
    }

    /// Whether the token is a control token (BOS, EOS, chat markup...).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id).is_some_and(|a| a & attr::CONTROL != 0)
    }

    /// Whether the token is user-defined (always split out of text and rendered as text).
    pub fn is_user_defined(&self, id: u32) -> bool {
        self.vocab
            .attr(id)
            .is_some_and(|a| a & attr::USER_DEFINED != 0)
    }

    /// Whether the token is a byte-fallback token (`<0xXX>`).
    pub fn is_byte(&self, id: u32) -> bool {
        self.vocab.attr(id).is_some_and(|a| a & attr::BYTE != 0)
    }

    /// Whether generating this token ends generation: EOS, end-of-turn, end-of-message and the
    /// tokens recognised by their text (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<|end|>`,
    /// `<end_of_turn>`, ...), as llama.cpp decides.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// The fill-in-the-middle tokens (from `tokenizer.ggml.fim_*_token_id`, else recognised by
    /// their text), when the vocabulary has at least the prefix, suffix and middle markers.
    pub fn fim_tokens(&self) -> Option<FimTokens> {
        let ids = &self.vocab.ids;
        Some(FimTokens {
            prefix: ids.fim_pre?,
            suffix: ids.fim_suf?,
            middle: ids.fim_mid?,
            repo: ids.fim_rep,
            file_separator: ids.fim_sep,
        })
    }
}

/// A vocabulary's fill-in-the-middle markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FimTokens {
    /// Starts the text before the gap (`<|fim_prefix|>`, `<PRE>`...).
    pub prefix: u32,
    /// Starts the text after the gap.
    pub suffix: u32,
    /// Asks for the gap's text.
    pub middle: u32,
    /// Starts a repository's name in repository-level prompts (`<|repo_name|>`).
    pub repo: Option<u32>,
    /// Starts another file of the repository (`<|file_sep|>`).
    pub file_separator: Option<u32>,
}
