//! SentencePiece-style BPE by score: the text (spaces already written as `▁`) starts as one
//! symbol per character; the adjacent pair whose concatenation is the highest-scoring token is
//! merged (leftmost on ties) until no adjacent pair forms a token. Characters left that are not
//! tokens fall back to their bytes' `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

const NONE: u32 = u32::MAX;

/// Byte-fallback tokens.
pub(crate) struct SpmModel {
    byte_tokens: [u32; 256],
}

#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge; the heap's top is the highest score, then the leftmost.
#[derive(Clone, Copy)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    len: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Scratch buffers reused across fragments.
#[derive(Default)]
pub(crate) struct SpmWork {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
}

impl SpmModel {
    /// Finds the byte tokens: `<0xXX>`, else a token that is the byte itself (ASCII), else the
    /// unknown token.
    pub fn new(vocab: &Vocab) -> SpmModel {
        let mut byte_tokens = [NONE; 256];
        for (b, slot) in (0..=255u8).zip(byte_tokens.iter_mut()) {
            let as_char = || {
                let mut buf = [0u8; 4];
                b.is_ascii()
                    .then(|| vocab.id_of(char::from(b).encode_utf8(&mut buf)))
                    .flatten()
            };
            *slot = vocab
                .id_of(&format!("<0x{b:02X}>"))
                .or_else(as_char)
                .or(vocab.ids.unk)
                .unwrap_or(NONE);
        }
        SpmModel { byte_tokens }
    }

    /// Appends the tokens of `text`, whose spaces are already escaped.
    pub fn encode(&self, vocab: &Vocab, text: &str, work: &mut SpmWork, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let syms = &mut work.syms;
        let heap = &mut work.heap;
        syms.clear();
        heap.clear();
        let mut chars = text.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            let i = syms.len() as u32;
            syms.push(Sym {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if chars.peek().is_some() { i + 1 } else { NONE },
            });
        }
        for i in 1..syms.len() as u32 {
            try_pair(vocab, text, syms, heap, i - 1, i);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (syms[b.left as usize], syms[b.right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            syms[b.left as usize].len += r.len;
            syms[b.left as usize].next = r.next;
            syms[b.right as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = b.left;
            }
            if l.prev != NONE {
                try_pair(vocab, text, syms, heap, l.prev, b.left);
            }
            if r.next != NONE {
                try_pair(vocab, text, syms, heap, b.left, r.next);
            }
        }
        let mut i = 0u32;
        while i != NONE {
            let s = syms[i as usize];
            let piece = &text[s.start as usize..(s.start + s.len) as usize];
            match vocab.id_of(piece) {
                Some(id) => out.push(id),
                None => {
                    for &byte in piece.as_bytes() {
                        let id = self.byte_tokens[byte as usize];
                        if id != NONE {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}

fn try_pair(
    vocab: &Vocab,
    text: &str,
    syms: &[Sym],
    heap: &mut BinaryHeap<Bigram>,
    left: u32,
    right: u32,
) {
    let (l, r) = (syms[left as usize], syms[right as usize]);
    let start = l.start as usize;
    let len = l.len + r.len;
    let Some(piece) = text.get(start..start + len as usize) else {
        return;
    };
    if let Some(id) = vocab.id_of(piece) {
        heap.push(Bigram {
            score: vocab.scores[id as usize],
            left,
            right,
            len,
        });
    }
}
