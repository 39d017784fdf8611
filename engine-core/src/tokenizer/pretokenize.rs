//! Regex pre-tokenization for byte-level BPE: `tokenizer.ggml.pre` names a list of regular
//! expressions. Each one in turn splits every piece the previous ones produced into its matches
//! and the text between them (both kept), so later expressions never see across earlier splits.
//!
//! The expressions are those llama.cpp uses for each pre-tokenizer name (its case-insensitive
//! contraction groups are spelled out as `'[sS]` and so on).

use std::ops::Range;

use fancy_regex::Regex;

use super::error::TokenizerError;

/// GPT-2's expression.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's expression (numbers in groups of up to three).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's expression (single digits).
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 3.5's expression (marks join letters).
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Jais 2: Llama 3 with whitespace runs cut into power-of-two lengths.
const JAIS2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";
/// DeepSeek V3 and relatives.
const DEEPSEEK3: &str = r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// ChatGLM 4 / GLM 4.
const CHATGLM4: &str = LLAMA3;
/// Poro, BLOOM, GPT-3 Finnish.
const PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
/// Mistral's Tekken.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o, Llama 4 and relatives.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Granite embedding (multilingual): GPT-4o with marks joining letters.
const GRANITE_EMB_MULTI: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Bailing MoE (possessive quantifiers made greedy).
const BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
/// Seed-Coder.
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2 without contractions (Turkish suffixes stay attached).
const UFAKZEKA: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// EXAONE MoE.
const EXAONE_MOE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
/// MiniCPM 5's second expression.
const MINICPM5: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How one pre-tokenizer name tokenizes, and the flags it implies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreSpec {
    /// Expressions applied in order.
    pub exprs: &'static [&'static str],
    /// A word that is itself a token is emitted without running merges.
    pub ignore_merges: bool,
    /// The default for `add_bos_token`.
    pub add_bos: bool,
    /// The model has no BOS token by default.
    pub no_bos: bool,
}

const fn plain(exprs: &'static [&'static str]) -> PreSpec {
    PreSpec {
        exprs,
        ignore_merges: false,
        add_bos: false,
        no_bos: false,
    }
}

const fn with_flags(
    exprs: &'static [&'static str],
    ignore_merges: bool,
    add_bos: bool,
    no_bos: bool,
) -> PreSpec {
    PreSpec {
        exprs,
        ignore_merges,
        add_bos,
        no_bos,
    }
}

/// The settings for a `tokenizer.ggml.pre` value, or `None` if it is not supported.
pub(crate) fn spec(name: &str) -> Option<PreSpec> {
    const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"];
    const STARCODER: &[&str] = &[r"\p{N}", GPT2];
    const CHAMELEON: &[&str] = &[
        "<sentinel:[0-9]+>",
        "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
        "([\\t\\n]|    |  )",
        r"\p{N}",
        r"[\p{P}!-/:-@\[-`{-~]",
        GPT2,
    ];
    Some(match name {
        "default" => plain(DEFAULT),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => with_flags(&[LLAMA3], true, true, false),
        "minicpm5" => with_flags(&[r"\p{N}{1,3}", MINICPM5], true, false, false),
        "dbrx" | "smaug-bpe" => plain(&[LLAMA3]),
        "jais-2" => plain(&[JAIS2]),
        "deepseek-coder" => plain(&[
            "[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            "[一-龥ࠀ-一가-퟿]+",
            r"\p{N}",
        ]),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
            plain(&[r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK3])
        }
        "falcon" => plain(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => plain(STARCODER),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "exaone4" | "trillion" | "granite-docling" => plain(&[GPT2]),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "megrez" | "hunyuan"
        | "grok-2" | "solar-open" => plain(&[QWEN2]),
        "qwen35" => plain(&[QWEN35]),
        "poro-chat" | "bloom" | "gpt3-finnish" => plain(&[PORO]),
        "chatglm-bpe" => with_flags(&[CHATGLM4], false, false, true),
        "glm4" | "glm5" => with_flags(&[CHATGLM4], true, false, true),
        "viking" => plain(&[PORO, r"\p{N}"]),
        "tekken" => with_flags(&[TEKKEN], true, true, false),
        "exaone-moe" => plain(&[EXAONE_MOE]),
        "chameleon" => with_flags(CHAMELEON, false, true, false),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => plain(&[GPT4O]),
        "granite-embed-multi-97m" => with_flags(&[GRANITE_EMB_MULTI], true, false, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => plain(&[BAILINGMOE]),
        "seed-coder" => plain(&[SEED_CODER]),
        "ufakzeka" => plain(&[UFAKZEKA]),
        "laguna" => plain(&["[^\n]+|[\n]+", QWEN2]),
        _ => return None,
    })
}

/// Compiled expressions for one pre-tokenizer.
pub(crate) struct PreTokenizer {
    regexes: Vec<Regex>,
}

impl PreTokenizer {
    /// Compiles `spec`'s expressions.
    pub fn new(spec: &PreSpec) -> Result<PreTokenizer, TokenizerError> {
        let regexes = spec
            .exprs
            .iter()
            .map(|&expr| {
                Regex::new(expr).map_err(|e| TokenizerError::Regex {
                    expr,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer { regexes })
    }

    /// Splits `text` into words, written to `out` as byte ranges of `text` (in order, covering
    /// all of it). `tmp` is scratch space.
    pub fn split(&self, text: &str, out: &mut Vec<Range<usize>>, tmp: &mut Vec<Range<usize>>) {
        out.clear();
        if text.is_empty() {
            return;
        }
        out.push(0..text.len());
        for re in &self.regexes {
            std::mem::swap(out, tmp);
            out.clear();
            for piece in tmp.iter() {
                split_one(re, text, piece.clone(), out);
            }
        }
    }
}

/// Splits one piece by one expression into matches and the gaps between them.
fn split_one(re: &Regex, text: &str, piece: Range<usize>, out: &mut Vec<Range<usize>>) {
    let base = piece.start;
    let slice = &text[piece];
    let mut last = 0;
    for m in re.find_iter(slice) {
        let Ok(m) = m else {
            // The matcher gave up (backtracking limit): keep the rest unsplit.
            break;
        };
        if m.start() == m.end() {
            continue;
        }
        if m.start() > last {
            out.push(base + last..base + m.start());
        }
        out.push(base + m.start()..base + m.end());
        last = m.end();
    }
    if last < slice.len() {
        out.push(base + last..base + slice.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(name: &str, text: &str) -> Vec<String> {
        let pre = PreTokenizer::new(&spec(name).unwrap()).unwrap();
        let (mut out, mut tmp) = (Vec::new(), Vec::new());
        pre.split(text, &mut out, &mut tmp);
        out.into_iter().map(|r| text[r].to_owned()).collect()
    }

    #[test]
    fn every_named_spec_compiles() {
        for name in [
            "default",
            "llama-bpe",
            "minicpm5",
            "dbrx",
            "jais-2",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "smollm",
            "gpt-2",
            "qwen2",
            "qwen35",
            "poro-chat",
            "chatglm-bpe",
            "glm4",
            "viking",
            "tekken",
            "exaone-moe",
            "chameleon",
            "gpt-4o",
            "granite-embed-multi-97m",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "laguna",
        ] {
            let s = spec(name).unwrap();
            PreTokenizer::new(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(spec("no-such-thing").is_none());
    }

    #[test]
    fn gpt2_splits() {
        assert_eq!(
            words("gpt-2", "Hello world, it's  me\n"),
            ["Hello", " world", ",", " it", "'s", " ", " me", "\n"]
        );
        assert_eq!(words("gpt-2", "a\tb"), ["a", "\t", "b"]);
        assert_eq!(words("gpt-2", "  x"), [" ", " x"]);
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(words("smollm", "ab 123"), ["ab", " ", "1", "2", "3"]);
    }

    #[test]
    fn llama3_groups_digits_and_newlines() {
        assert_eq!(
            words("llama-bpe", "I'M 12345\n\n  ok"),
            ["I", "'M", " ", "123", "45", "\n\n", " ", " ok"]
        );
    }

    #[test]
    fn qwen2_single_digits() {
        assert_eq!(words("qwen2", "x 42"), ["x", " ", "4", "2"]);
    }
}
