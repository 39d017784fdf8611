//! Structured outputs: a grammar (a JSON schema, a regular expression, a list of choices, a Lark
//! grammar) limits the tokens a sequence may sample to those that keep its output a prefix of
//! something the grammar accepts. The token masks come from `llguidance`, over a token trie
//! built once from the model's vocabulary.

#[cfg(feature = "grammars")]
use std::sync::Arc;

#[cfg(feature = "grammars")]
use llguidance::api::TopLevelGrammar;
#[cfg(feature = "grammars")]
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
#[cfg(feature = "grammars")]
use llguidance::{Matcher, ParserFactory};

use crate::tokenizer::Tokenizer;

/// What a sequence's output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON value valid against this JSON schema (`{"type": "object"}` for any object), written
    /// on one line with `, ` and `: ` separators unless the schema's `x-guidance` says
    /// otherwise.
    JsonSchema(serde_json::Value),
    /// The whole output matches this regular expression.
    Regex(String),
    /// The output is exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect: EBNF rules, regex terminals, `%json` and more).
    Lark(String),
}

impl Grammar {
    /// Any JSON object (OpenAI's `response_format: {type: "json_object"}`).
    pub fn json_object() -> Grammar {
        Grammar::JsonSchema(serde_json::json!({"type": "object"}))
    }

    #[cfg(feature = "grammars")]
    fn top_level(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            Grammar::JsonSchema(schema) => {
                let mut schema = schema.clone();
                // One line, `json.dumps` style, unless the schema says otherwise: whitespace a
                // small model could spend its tokens on is not offered.
                if let Some(o) = schema.as_object_mut()
                    && !o.contains_key("x-guidance")
                {
                    o.insert(
                        "x-guidance".into(),
                        serde_json::json!({"whitespace_flexible": false, "item_separator": ", ",
                                           "key_separator": ": "}),
                    );
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Choice(choices) => {
                if choices.is_empty() {
                    return Err(ConstraintError::Invalid(
                        "a choice needs at least one option".into(),
                    ));
                }
                let alternatives: Vec<String> =
                    choices.iter().map(|c| regex_syntax::escape(c)).collect();
                TopLevelGrammar::from_regex(&format!("(?:{})", alternatives.join("|")))
            }
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        })
    }
}

/// Why a grammar cannot constrain a sequence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The grammar or schema is malformed or uses what is not supported.
    #[error("invalid grammar: {0}")]
    Invalid(String),
    /// The matcher failed while generating.
    #[error("the grammar matcher failed: {0}")]
    Matcher(String),
}

/// Compiles grammars for one vocabulary (the token trie and its precomputed slices are built
/// once and shared by every sequence).
#[cfg(feature = "grammars")]
pub struct GrammarCompiler {
    factory: ParserFactory,
}

/// What a token trie is built from: the vocabulary's bytes and its special ids, copied out of
/// a tokenizer (quick), so that the trie itself can be built on another thread.
#[cfg(feature = "grammars")]
pub struct Vocabulary {
    words: Vec<Vec<u8>>,
    info: TokRxInfo,
}

#[cfg(feature = "grammars")]
impl Vocabulary {
    /// Copies `tokenizer`'s vocabulary (control tokens are special: a grammar never produces
    /// them; the end-of-sequence token ends an accepted output).
    pub fn of(tokenizer: &Tokenizer) -> Result<Vocabulary, ConstraintError> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id).unwrap_or_default();
                if tokenizer.is_control(id) || bytes.is_empty() {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    match tokenizer.token_piece(id).filter(|p| !p.is_empty()) {
                        Some(p) => w.extend_from_slice(p.as_bytes()),
                        None => w.extend_from_slice(format!("<[unused{id}]>").as_bytes()),
                    }
                    w
                } else {
                    bytes.into_owned()
                }
            })
            .collect();
        let eos = tokenizer
            .eos_id()
            .or_else(|| tokenizer.eot_id())
            .ok_or_else(|| {
                ConstraintError::Invalid("the vocabulary has no end-of-sequence token".into())
            })?;
        let info = TokRxInfo {
            vocab_size: n as u32,
            tok_eos: eos,
            tok_bos: tokenizer.bos_id(),
            tok_pad: tokenizer.pad_id(),
            tok_unk: tokenizer.unk_id(),
            tok_end_of_turn: tokenizer.eot_id(),
        };
        Ok(Vocabulary { words, info })
    }
}

#[cfg(feature = "grammars")]
impl GrammarCompiler {
    /// Builds the token trie of `tokenizer`'s vocabulary.
    pub fn new(tokenizer: &Tokenizer) -> Result<GrammarCompiler, ConstraintError> {
        GrammarCompiler::build(Vocabulary::of(tokenizer)?)
    }

    /// Builds the token trie of `vocabulary` (the slow part: most of a second for a
    /// 49,152-token vocabulary).
    pub fn build(vocabulary: Vocabulary) -> Result<GrammarCompiler, ConstraintError> {
        let Vocabulary { words, info } = vocabulary;
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Invalid(e.to_string()))?;
        factory.quiet();
        Ok(GrammarCompiler { factory })
    }

    /// A fresh constraint for one sequence.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        let parser = self
            .factory
            .create_parser(grammar.top_level()?)
            .map_err(|e| ConstraintError::Invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Invalid(e));
        }
        Ok(Constraint {
            matcher,
            ready: None,
        })
    }
}

/// One sequence's position in its grammar.
#[cfg(feature = "grammars")]
pub struct Constraint {
    matcher: Matcher,
    /// The mask of the next token, computed ahead by [`Constraint::prepare`] (while the forward
    /// pass runs); cleared when a token is accepted.
    ready: Option<Result<llguidance::toktrie::SimpleVob, ConstraintError>>,
}

#[cfg(feature = "grammars")]
impl Constraint {
    /// Sets the logits of every token the grammar does not allow next to minus infinity (only
    /// the end of sequence once the output is complete).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let allowed = match self.ready.take() {
            Some(ready) => ready?,
            None => self.next_mask()?,
        };
        for (id, l) in logits.iter_mut().enumerate() {
            if id >= allowed.len() || !allowed.is_allowed(id as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Computes the next token's mask ahead of [`Constraint::mask`], which then only applies
    /// it: the engine calls this on another thread while the forward pass runs.
    pub fn prepare(&mut self) {
        if self.ready.is_none() {
            self.ready = Some(self.next_mask());
        }
    }

    fn next_mask(&mut self) -> Result<llguidance::toktrie::SimpleVob, ConstraintError> {
        self.matcher
            .compute_mask_or_eos()
            .map_err(|e| ConstraintError::Matcher(e.to_string()))
    }

    /// Advances past a sampled token.
    pub fn accept(&mut self, token: u32) -> Result<(), ConstraintError> {
        self.ready = None;
        if self.matcher.is_stopped() {
            // Complete: the end-of-sequence token it allowed.
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError::Matcher(e.to_string()))
    }

    /// Whether the output is complete (nothing but the end of sequence may follow).
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// Without the `grammars` feature no compiler can be built (so no [`Constraint`] exists).
#[cfg(not(feature = "grammars"))]
pub enum GrammarCompiler {}

#[cfg(not(feature = "grammars"))]
impl GrammarCompiler {
    /// Refuses: this engine was built without the `grammars` feature.
    pub fn new(_tokenizer: &Tokenizer) -> Result<GrammarCompiler, ConstraintError> {
        Err(ConstraintError::Invalid(
            "structured outputs are not built into this engine (its `grammars` feature is off)"
                .into(),
        ))
    }

    /// Never called: no compiler exists.
    pub fn compile(&self, _grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        match *self {}
    }
}

/// Without the `grammars` feature no sequence has a constraint.
#[cfg(not(feature = "grammars"))]
pub enum Constraint {}

#[cfg(not(feature = "grammars"))]
impl Constraint {
    /// Never called: no constraint exists.
    pub fn mask(&mut self, _logits: &mut [f32]) -> Result<(), ConstraintError> {
        match *self {}
    }

    /// Never called: no constraint exists.
    pub fn prepare(&mut self) {
        match *self {}
    }

    /// Never called: no constraint exists.
    pub fn accept(&mut self, _token: u32) -> Result<(), ConstraintError> {
        match *self {}
    }

    /// Never called: no constraint exists.
    pub fn is_complete(&self) -> bool {
        match *self {}
    }
}
