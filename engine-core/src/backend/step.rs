//! The description of one forward step: which tokens of which sequences are computed.

use std::ops::Range;

use crate::model::{RopeConfig, RopeLayout};

/// One sequence's share of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSeq {
    /// Its rows in the step (its new tokens).
    pub rows: Range<usize>,
    /// Position of its first new token (the number of tokens already cached).
    pub start_pos: usize,
    /// KV blocks covering positions `0..start_pos + rows.len()`, in order.
    pub block_table: Vec<u32>,
}

impl StepSeq {
    /// Tokens in the cache after this step.
    pub fn context_len(&self) -> usize {
        self.start_pos + self.rows.len()
    }
}

/// A batch of new tokens from one or more sequences, computed in one forward pass.
#[derive(Clone, Debug)]
pub struct StepInput {
    /// Token id of every row; rows are grouped by sequence.
    pub tokens: Vec<u32>,
    /// Position of every row.
    pub positions: Vec<u32>,
    /// The sequences, in row order.
    pub seqs: Vec<StepSeq>,
    /// Rows whose final normalized hidden states are computed, in output order: the first
    /// `n_logits` also get logits (next-token distributions); the rest are read as hidden states
    /// (embeddings).
    pub output_rows: Vec<u32>,
    /// How many of `output_rows` (the first) get logits.
    pub n_logits: usize,
    /// Cache slot (`block * block_size + offset`) of every row.
    pub slots: Vec<u32>,
    /// RoPE `(cos, sin)` pairs for every row: `rope_dims` floats per row.
    pub rope_angles: Vec<f32>,
    /// Floats of `rope_angles` per row (the number of rotated dimensions).
    pub rope_dims: usize,
    /// How rotated pairs are laid out in a head.
    pub rope_layout: RopeLayout,
}

impl StepInput {
    /// Number of rows (new tokens).
    pub fn rows(&self) -> usize {
        self.tokens.len()
    }
}

/// Which of a sequence's new tokens need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None (a prefill chunk that is not the last).
    None,
    /// The last new token's (the next-token distribution).
    Last,
    /// Every new token's (prompt log-probabilities).
    All,
}

/// A sequence's part of a step, as the scheduler describes it.
#[derive(Clone, Debug)]
pub struct SeqChunk<'a> {
    /// Tokens already cached for the sequence.
    pub start_pos: usize,
    /// The new tokens.
    pub tokens: &'a [u32],
    /// Its KV blocks, covering at least `start_pos + tokens.len()` positions.
    pub block_table: &'a [u32],
    /// Which logits to compute.
    pub logits: LogitsWanted,
    /// Which of the new tokens' final hidden states to read (relative to `tokens`; empty for
    /// none).
    pub hidden: Range<usize>,
}

impl StepInput {
    /// Builds a step from sequence chunks: rows, positions, cache slots and RoPE angles.
    pub fn build(chunks: &[SeqChunk<'_>], block_size: usize, rope: &RopeConfig) -> StepInput {
        let rows: usize = chunks.iter().map(|c| c.tokens.len()).sum();
        let mut step = StepInput {
            tokens: Vec::with_capacity(rows),
            positions: Vec::with_capacity(rows),
            seqs: Vec::with_capacity(chunks.len()),
            output_rows: Vec::new(),
            n_logits: 0,
            slots: Vec::with_capacity(rows),
            rope_angles: vec![0.0; rows * rope.n_dims],
            rope_dims: rope.n_dims,
            rope_layout: rope.layout,
        };
        for c in chunks {
            let first = step.tokens.len();
            for (i, &tok) in c.tokens.iter().enumerate() {
                let pos = c.start_pos + i;
                let row = step.tokens.len();
                step.tokens.push(tok);
                step.positions.push(pos as u32);
                step.slots.push(
                    c.block_table[pos / block_size] * block_size as u32 + (pos % block_size) as u32,
                );
                rope.angles(
                    pos as u32,
                    &mut step.rope_angles[row * rope.n_dims..(row + 1) * rope.n_dims],
                );
            }
            let last = step.tokens.len();
            match c.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last if last > first => step.output_rows.push((last - 1) as u32),
                LogitsWanted::Last => {}
                LogitsWanted::All => step.output_rows.extend(first as u32..last as u32),
            }
            step.seqs.push(StepSeq {
                rows: first..last,
                start_pos: c.start_pos,
                block_table: c.block_table[..(c.start_pos + c.tokens.len()).div_ceil(block_size)]
                    .to_vec(),
            });
        }
        step.n_logits = step.output_rows.len();
        for (c, s) in chunks.iter().zip(&step.seqs) {
            let first = s.rows.start;
            let hidden = c.hidden.start.min(c.tokens.len())..c.hidden.end.min(c.tokens.len());
            step.output_rows.extend(hidden.map(|r| (first + r) as u32));
        }
        step
    }
}
