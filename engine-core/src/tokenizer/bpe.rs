//! Byte-level BPE: a word's bytes start as one token each (by their byte-level character), then
//! the adjacent pair with the lowest merge rank is merged, leftmost first, until no pair has a
//! merge.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::bytelevel;
use super::error::TokenizerError;
use super::hash::FastMap;
use super::vocab::{self, KEY_MERGES, Vocab};
use crate::gguf::Metadata;

const NONE: u32 = u32::MAX;

/// What a pair of adjacent tokens merges into.
#[derive(Clone, Copy)]
struct Merge {
    rank: u32,
    id: u32,
}

/// Merge ranks keyed by token id pairs, and the token of each byte.
pub(crate) struct BpeModel {
    merges: FastMap<u64, Merge>,
    byte_tokens: [u32; 256],
    ignore_merges: bool,
}

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

impl BpeModel {
    /// Builds the rank table from `tokenizer.ggml.merges` (`"left right"` strings, best first).
    /// Merges whose parts or result are not tokens can never apply to token ids and are skipped.
    pub fn new(
        meta: &Metadata,
        vocab: &Vocab,
        ignore_merges: bool,
    ) -> Result<BpeModel, TokenizerError> {
        let items = vocab::get_array(meta, KEY_MERGES)?
            .ok_or(TokenizerError::MissingMetadata(KEY_MERGES))?;
        let mut merges: FastMap<u64, Merge> = FastMap::default();
        merges.reserve(items.len());
        let mut joined = String::new();
        for (rank, item) in items.iter().enumerate() {
            let line = item
                .as_str()
                .ok_or_else(|| TokenizerError::InvalidMetadata {
                    key: KEY_MERGES,
                    reason: format!("element {rank} is not a string"),
                })?;
            // The separator is the first space after the first character (a part may be a space
            // in non-byte-level vocabularies).
            let first_len = line.chars().next().map_or(0, char::len_utf8);
            let Some(sep) = line[first_len..].find(' ').map(|i| i + first_len) else {
                continue;
            };
            let (left, right) = (&line[..sep], &line[sep + 1..]);
            let (Some(l), Some(r)) = (vocab.id_of(left), vocab.id_of(right)) else {
                continue;
            };
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let Some(id) = vocab.id_of(&joined) else {
                continue;
            };
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            merges.entry(pair_key(l, r)).or_insert(Merge { rank, id });
        }
        let mut byte_tokens = [NONE; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            let text = bytelevel::byte_to_char(b as u8).encode_utf8(&mut buf);
            *slot = vocab.id_of(text).unwrap_or(NONE);
        }
        Ok(BpeModel {
            merges,
            byte_tokens,
            ignore_merges,
        })
    }

    /// Appends the tokens of one pre-tokenized word.
    pub fn encode_word(&self, vocab: &Vocab, word: &[u8], work: &mut BpeWork, out: &mut Vec<u32>) {
        match word.len() {
            0 => return,
            1 => {
                let id = self.byte_tokens[word[0] as usize];
                if id != NONE {
                    out.push(id);
                }
                return;
            }
            _ => {}
        }
        if self.ignore_merges
            && let Some(id) = vocab.id_of(&bytelevel::encode(word))
        {
            out.push(id);
            return;
        }

        let syms = &mut work.syms;
        let heap = &mut work.heap;
        syms.clear();
        heap.clear();
        let n = word.len();
        for (i, &b) in word.iter().enumerate() {
            syms.push(Sym {
                id: self.byte_tokens[b as usize],
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
                alive: true,
            });
        }
        for i in 1..n as u32 {
            self.push_pair(syms, heap, i - 1, i);
        }
        while let Some(Reverse((rank, left))) = heap.pop() {
            let right = syms[left as usize].next;
            if right == NONE || !syms[left as usize].alive {
                continue;
            }
            let (l, r) = (syms[left as usize], syms[right as usize]);
            // The pair must still be the one queued: same tokens, same rank.
            let Some(m) = self.merges.get(&pair_key(l.id, r.id)) else {
                continue;
            };
            if m.rank != rank {
                continue;
            }
            syms[left as usize].id = m.id;
            syms[left as usize].next = r.next;
            syms[right as usize].alive = false;
            if r.next != NONE {
                syms[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                self.push_pair(syms, heap, l.prev, left);
            }
            if r.next != NONE {
                self.push_pair(syms, heap, left, r.next);
            }
        }
        let mut i = 0u32;
        while i != NONE {
            let s = syms[i as usize];
            if s.id != NONE {
                out.push(s.id);
            }
            i = s.next;
        }
    }

    #[inline]
    fn push_pair(&self, syms: &[Sym], heap: &mut BinaryHeap<Reverse<(u32, u32)>>, l: u32, r: u32) {
        let (a, b) = (syms[l as usize].id, syms[r as usize].id);
        if a == NONE || b == NONE {
            return;
        }
        if let Some(m) = self.merges.get(&pair_key(a, b)) {
            heap.push(Reverse((m.rank, l)));
        }
    }
}

#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

/// Scratch buffers reused across words.
#[derive(Default)]
pub(crate) struct BpeWork {
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
}
