//! Fill-in-the-middle prompts: the token ids that ask a code model for the text between a
//! prefix and a suffix, in the prefix-suffix-middle order code models are trained on, with
//! other files of the repository before them when the vocabulary has repository markers.
//! `/v1/completions` with `suffix` and llama.cpp's `/infill` both build their prompts here.

use crate::tokenizer::{FimTokens, Tokenizer};

/// Another file given as context (llama.cpp's `input_extra`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraFile {
    /// Its name (`tmp` when empty, as llama.cpp).
    pub filename: String,
    /// Its text.
    pub text: String,
}

/// What to fill in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Infill<'a> {
    /// The text before the gap.
    pub prefix: &'a str,
    /// The text after the gap.
    pub suffix: &'a str,
    /// Text typed at the gap, appended to the prefix (llama.cpp's `prompt`).
    pub prompt: &'a str,
    /// Other files, most relevant last.
    pub extra: &'a [ExtraFile],
}

/// Why no prompt could be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InfillError {
    /// The vocabulary has no fill-in-the-middle markers.
    #[error("the model's vocabulary has no fill-in-the-middle tokens")]
    Unsupported,
    /// Not even the markers fit in the budget.
    #[error("a fill-in-the-middle prompt needs at least {0} tokens")]
    TooSmall(usize),
}

/// The prompt's token ids, at most `budget` of them. When the text is longer, the prefix keeps
/// its end and the suffix its start, in the ratio 3:1 (the suffix gets more when the prefix is
/// short, and the other way round); the other files get what is left, the last ones first.
pub fn prompt(tok: &Tokenizer, input: &Infill<'_>, budget: usize) -> Result<Vec<u32>, InfillError> {
    let fim = tok.fim_tokens().ok_or(InfillError::Unsupported)?;
    let bos: Vec<u32> = tok
        .add_bos()
        .then(|| tok.bos_id())
        .flatten()
        .into_iter()
        .collect();
    let markers = bos.len() + 3;
    if budget < markers {
        return Err(InfillError::TooSmall(markers));
    }
    let mut prefix = tok.encode(input.prefix, false, false);
    prefix.extend(tok.encode(input.prompt, false, false));
    let suffix = tok.encode(input.suffix, false, false);

    // Prefix and suffix share the room at 3:1; either gets what the other leaves.
    let room = budget - markers;
    let suffix_share = room / 4;
    let take_suffix = suffix
        .len()
        .min(suffix_share.max(room - prefix.len().min(room)));
    let take_prefix = prefix.len().min(room - take_suffix);
    let prefix = &prefix[prefix.len() - take_prefix..];
    let suffix = &suffix[..take_suffix];
    let extra = extra_tokens(tok, &fim, input.extra);
    let extra = &extra[extra.len() - extra.len().min(room - take_prefix - take_suffix)..];

    let mut out = Vec::with_capacity(markers + extra.len() + prefix.len() + suffix.len());
    out.extend(&bos);
    out.extend(extra);
    out.push(fim.prefix);
    out.extend(prefix);
    out.push(fim.suffix);
    out.extend(suffix);
    out.push(fim.middle);
    Ok(out)
}

/// The other files: `<repo> myproject\n`, then per file `<file_sep> NAME\n TEXT`, then
/// `<file_sep> filename\n` for the file being edited, when the vocabulary has those markers;
/// else the files' texts, each after a `--- NAME ---` line.
fn extra_tokens(tok: &Tokenizer, fim: &FimTokens, files: &[ExtraFile]) -> Vec<u32> {
    let mut out = Vec::new();
    if files.is_empty() {
        return out;
    }
    if let Some(repo) = fim.repo {
        out.push(repo);
        out.extend(tok.encode("myproject\n", false, false));
    }
    for f in files {
        let name = if f.filename.is_empty() {
            "tmp"
        } else {
            &f.filename
        };
        match fim.file_separator {
            Some(sep) => {
                out.push(sep);
                out.extend(tok.encode(&format!("{name}\n"), false, false));
            }
            None => out.extend(tok.encode(&format!("--- {name} ---\n"), false, false)),
        }
        out.extend(tok.encode(&f.text, false, false));
    }
    if let Some(sep) = fim.file_separator {
        out.push(sep);
        out.extend(tok.encode("filename\n", false, false));
    }
    out
}
