//! Paged KV cache bookkeeping: a pool of fixed-size blocks, and per-sequence block tables.
//!
//! The storage itself belongs to the backend ([`crate::backend::Backend::KvStore`]); this module
//! decides which blocks each sequence owns, so sequences share one pool and give their blocks
//! back when they end.

/// The cache has no free block left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the KV cache is full: {needed} more blocks needed, {free} free")]
pub struct OutOfBlocks {
    /// Blocks the request needed.
    pub needed: usize,
    /// Blocks that were free.
    pub free: usize,
}

/// Hands out and takes back blocks of the KV pool.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    block_size: usize,
    n_blocks: usize,
    free: Vec<u32>,
}

impl BlockAllocator {
    /// A pool of `n_blocks` blocks of `block_size` token slots, all free.
    pub fn new(n_blocks: usize, block_size: usize) -> BlockAllocator {
        assert!(block_size > 0, "block size must be positive");
        // Hand out low block numbers first: they are the ones already touched in memory.
        let free = (0..n_blocks as u32).rev().collect();
        BlockAllocator {
            block_size,
            n_blocks,
            free,
        }
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn total_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Blocks not owned by any sequence.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Fraction of blocks in use, 0 to 1.
    pub fn usage(&self) -> f64 {
        if self.n_blocks == 0 {
            0.0
        } else {
            1.0 - self.free.len() as f64 / self.n_blocks as f64
        }
    }

    fn take(&mut self, n: usize) -> Result<Vec<u32>, OutOfBlocks> {
        if n > self.free.len() {
            return Err(OutOfBlocks {
                needed: n,
                free: self.free.len(),
            });
        }
        let at = self.free.len() - n;
        Ok(self.free.split_off(at))
    }

    fn give_back(&mut self, blocks: impl IntoIterator<Item = u32>) {
        self.free.extend(blocks);
    }
}

/// The blocks one sequence owns, in position order, and how many tokens they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<u32>,
    len: usize,
}

impl BlockTable {
    /// An empty table.
    pub fn new() -> BlockTable {
        BlockTable::default()
    }

    /// Tokens stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Block numbers in position order.
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Makes room for `extra` more tokens, taking blocks from `alloc` as needed. On failure nothing
    /// changes.
    pub fn reserve(&mut self, alloc: &mut BlockAllocator, extra: usize) -> Result<(), OutOfBlocks> {
        let need = alloc
            .blocks_for(self.len + extra)
            .saturating_sub(self.blocks.len());
        if need > 0 {
            let mut got = alloc.take(need)?;
            got.reverse();
            self.blocks.extend(got);
        }
        Ok(())
    }

    /// Records that `n` more tokens were written (after [`BlockTable::reserve`]).
    pub fn advance(&mut self, n: usize, block_size: usize) {
        self.len += n;
        debug_assert!(self.len <= self.blocks.len() * block_size);
    }

    /// The cache slot of position `pos`.
    pub fn slot(&self, pos: usize, block_size: usize) -> u32 {
        self.blocks[pos / block_size] * block_size as u32 + (pos % block_size) as u32
    }

    /// Forgets tokens from position `len` on, returning whole unused blocks to `alloc`.
    pub fn truncate(&mut self, alloc: &mut BlockAllocator, len: usize) {
        if len >= self.len {
            return;
        }
        self.len = len;
        let keep = alloc.blocks_for(len);
        alloc.give_back(self.blocks.drain(keep..));
    }

    /// Returns every block to `alloc`.
    pub fn release(&mut self, alloc: &mut BlockAllocator) {
        self.truncate(alloc, 0);
        alloc.give_back(self.blocks.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_advance_release() {
        let mut alloc = BlockAllocator::new(4, 16);
        let mut a = BlockTable::new();
        a.reserve(&mut alloc, 20).unwrap();
        a.advance(20, 16);
        assert_eq!(a.blocks().len(), 2);
        assert_eq!(alloc.free_blocks(), 2);
        assert_eq!(a.slot(17, 16), a.blocks()[1] * 16 + 1);
        let mut b = BlockTable::new();
        let err = b.reserve(&mut alloc, 48).unwrap_err();
        assert_eq!(err, OutOfBlocks { needed: 3, free: 2 });
        assert!(b.blocks().is_empty());
        a.truncate(&mut alloc, 10);
        assert_eq!((a.len(), a.blocks().len(), alloc.free_blocks()), (10, 1, 3));
        a.release(&mut alloc);
        assert_eq!(alloc.free_blocks(), 4);
        assert_eq!(alloc.usage(), 0.0);
    }

    #[test]
    fn blocks_are_distinct() {
        let mut alloc = BlockAllocator::new(8, 4);
        let mut tables: Vec<BlockTable> = (0..4).map(|_| BlockTable::new()).collect();
        for t in &mut tables {
            t.reserve(&mut alloc, 7).unwrap();
        }
        let mut all: Vec<u32> = tables.iter().flat_map(|t| t.blocks().to_vec()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8);
    }
}
