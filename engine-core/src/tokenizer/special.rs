//! Splitting special tokens out of text before it is tokenized.
//!
//! Special tokens are taken longest first: each one splits every remaining text fragment at all
//! of its (non-overlapping, leftmost) occurrences. Control and unknown tokens are only split out
//! when the caller asks to parse special tokens; user-defined tokens always are.

use std::ops::Range;

use super::vocab::{Vocab, attr};

/// A piece of input: text still to tokenize, or a token already decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Byte range of the input.
    Text(Range<usize>),
    /// A special token.
    Token(u32),
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Splits `text` into fragments.
pub(crate) fn partition(vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(0..text.len()));
    let mut next = Vec::new();
    for &id in &vocab.special_tokens {
        let a = vocab.attrs[id as usize];
        if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle: &str = &vocab.texts[id as usize];
        if needle.is_empty() || !text.contains(needle) {
            continue;
        }
        next.clear();
        for frag in &frags {
            match frag {
                Fragment::Text(r) => split(text, r.clone(), needle, id, a, &mut next),
                Fragment::Token(_) => next.push(frag.clone()),
            }
        }
        std::mem::swap(&mut frags, &mut next);
    }
    frags
}

/// Splits one text fragment at every occurrence of `needle`.
fn split(text: &str, r: Range<usize>, needle: &str, id: u32, a: u16, out: &mut Vec<Fragment>) {
    let bytes = text.as_bytes();
    let mut start = r.start;
    while let Some(pos) = text[start..r.end].find(needle) {
        let m = start + pos;
        let mut left_end = m;
        if a & attr::LSTRIP != 0 {
            while left_end > start && is_c_space(bytes[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > start {
            out.push(Fragment::Text(start..left_end));
        }
        out.push(Fragment::Token(id));
        start = m + needle.len();
        if a & attr::RSTRIP != 0 {
            while start < r.end && is_c_space(bytes[start]) {
                start += 1;
            }
        }
    }
    if start < r.end {
        out.push(Fragment::Text(start..r.end));
    }
}
