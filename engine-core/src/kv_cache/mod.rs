//! Paged KV cache bookkeeping: a pool of fixed-size blocks, and per-sequence block tables.
//!
//! The storage itself belongs to the backend ([`crate::backend::Backend::KvStore`]); this module
//! decides which blocks each sequence owns, so sequences share one pool and give their blocks
//! back when they end. With prefix caching on, full blocks are also named by their tokens
//! ([`prefix`]): sequences that start with the same tokens share them (counted references), and
//! blocks no sequence holds stay cached until the pool needs them, least recently used first.

pub mod prefix;

use prefix::PrefixIndex;

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
    /// Blocks holding nothing anyone may want.
    free: Vec<u32>,
    /// References to each block (sequences holding it).
    refs: Vec<u32>,
    /// Full blocks by content, when prefix caching is on.
    prefix: Option<PrefixIndex>,
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
            refs: vec![0; n_blocks],
            prefix: None,
        }
    }

    /// Turns prefix caching on or off (off forgets every cached block no sequence holds).
    pub fn set_prefix_caching(&mut self, on: bool) {
        match (on, self.prefix.is_some()) {
            (true, false) => self.prefix = Some(PrefixIndex::default()),
            (false, true) => {
                let mut ix = self.prefix.take().expect("checked");
                self.free.extend(ix.evict_all());
            }
            _ => {}
        }
    }

    /// Forgets what every block holds (after a failure that leaves their contents in doubt);
    /// prefix caching stays as it was.
    pub fn forget_cached(&mut self) {
        if self.prefix.is_some() {
            self.set_prefix_caching(false);
            self.set_prefix_caching(true);
        }
    }

    /// Whether prefix caching is on.
    pub fn prefix_caching(&self) -> bool {
        self.prefix.is_some()
    }

    /// Blocks no sequence holds that still cache their tokens.
    pub fn cached_blocks(&self) -> usize {
        self.prefix.as_ref().map_or(0, PrefixIndex::parked)
    }

    /// References held on a block.
    pub fn refs(&self, block: u32) -> u32 {
        self.refs.get(block as usize).copied().unwrap_or(0)
    }

    /// The longest run of cached full blocks holding the start of `tokens` (whole blocks only),
    /// each now also held by the caller, with their hashes.
    pub fn lookup(&mut self, tokens: &[u32]) -> (Vec<u32>, Vec<u64>) {
        let Some(ix) = &mut self.prefix else {
            return (Vec::new(), Vec::new());
        };
        let (mut blocks, mut hashes) = (Vec::new(), Vec::new());
        let mut parent = prefix::ROOT;
        for chunk in tokens.chunks_exact(self.block_size) {
            let Some((block, hash)) = ix.find(parent, chunk) else {
                break;
            };
            if self.refs[block as usize] == 0 {
                ix.unpark(block);
            }
            self.refs[block as usize] += 1;
            blocks.push(block);
            hashes.push(hash);
            parent = hash;
        }
        (blocks, hashes)
    }

    /// Names `block` (full, holding `tokens` after the blocks hashed `parent`) so that others
    /// may find it; returns its hash.
    fn index(&mut self, block: u32, parent: u64, tokens: &[u32]) -> u64 {
        match &mut self.prefix {
            Some(ix) => ix.insert(block, parent, tokens),
            None => prefix::chain(parent, tokens),
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

    /// Blocks not held by any sequence (free, or caching tokens until they are needed).
    pub fn free_blocks(&self) -> usize {
        self.free.len() + self.cached_blocks()
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
            1.0 - self.free_blocks() as f64 / self.n_blocks as f64
        }
    }

    fn take(&mut self, n: usize) -> Result<Vec<u32>, OutOfBlocks> {
        let free = self.free_blocks();
        if n > free {
            return Err(OutOfBlocks { needed: n, free });
        }
        let at = self.free.len().saturating_sub(n);
        let mut got = self.free.split_off(at);
        // Then the cached blocks nobody holds, least recently used first.
        while got.len() < n {
            let ix = self.prefix.as_mut().expect("counted in free_blocks");
            got.insert(0, ix.evict().expect("counted in free_blocks"));
        }
        for &b in &got {
            self.refs[b as usize] = 1;
        }
        Ok(got)
    }

    fn give_back(&mut self, blocks: impl IntoIterator<Item = u32>) {
        for b in blocks {
            let r = &mut self.refs[b as usize];
            debug_assert!(*r > 0, "block {b} given back twice");
            *r = r.saturating_sub(1);
            if *r > 0 {
                continue;
            }
            match &mut self.prefix {
                Some(ix) if ix.contains(b) => ix.park(b),
                _ => self.free.push(b),
            }
        }
    }
}

/// The blocks one sequence owns, in position order, and how many tokens they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<u32>,
    len: usize,
    /// Hashes of the first full blocks (their place in the prefix cache).
    hashes: Vec<u64>,
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

    /// Starts an empty table on the cached blocks holding the start of `tokens`
    /// ([`BlockAllocator::lookup`]); at most `max_tokens` of them. Returns the tokens it holds.
    pub fn adopt_cached(
        &mut self,
        alloc: &mut BlockAllocator,
        tokens: &[u32],
        max_tokens: usize,
    ) -> usize {
        debug_assert!(self.blocks.is_empty());
        let whole = max_tokens.min(tokens.len()) / alloc.block_size * alloc.block_size;
        let (blocks, hashes) = alloc.lookup(&tokens[..whole]);
        self.len = blocks.len() * alloc.block_size;
        self.blocks = blocks;
        self.hashes = hashes;
        self.len
    }

    /// Names the full blocks written so far (`tokens` are the sequence's, at least
    /// [`BlockTable::len`] of them) in the prefix cache.
    pub fn index_full_blocks(&mut self, alloc: &mut BlockAllocator, tokens: &[u32]) {
        let bs = alloc.block_size;
        while self.hashes.len() < self.len / bs {
            let b = self.hashes.len();
            let parent = self.hashes.last().copied().unwrap_or(prefix::ROOT);
            let hash = alloc.index(self.blocks[b], parent, &tokens[b * bs..(b + 1) * bs]);
            self.hashes.push(hash);
        }
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
        self.hashes.truncate(len / alloc.block_size);
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
    fn cached_blocks_are_shared_parked_and_evicted() {
        let mut alloc = BlockAllocator::new(4, 2);
        alloc.set_prefix_caching(true);
        let tokens = [1, 2, 3, 4, 5];
        let mut a = BlockTable::new();
        a.reserve(&mut alloc, 5).unwrap();
        a.advance(5, 2);
        a.index_full_blocks(&mut alloc, &tokens);
        // A second sequence with the same start takes the two full blocks.
        let mut b = BlockTable::new();
        assert_eq!(b.adopt_cached(&mut alloc, &tokens, 4), 4);
        assert_eq!(b.blocks(), &a.blocks()[..2]);
        assert_eq!(alloc.refs(a.blocks()[0]), 2);
        // Given back by both, they stay cached (and count as free) until needed.
        let first = a.blocks()[0];
        a.release(&mut alloc);
        b.release(&mut alloc);
        assert_eq!((alloc.free_blocks(), alloc.cached_blocks()), (4, 2));
        assert_eq!(alloc.refs(first), 0);
        let mut c = BlockTable::new();
        assert_eq!(c.adopt_cached(&mut alloc, &[1, 2, 9], 2), 2);
        c.release(&mut alloc);
        // Taking every block evicts the cached ones, the least recently used first.
        let mut d = BlockTable::new();
        d.reserve(&mut alloc, 8).unwrap();
        assert_eq!(alloc.cached_blocks(), 0);
        d.release(&mut alloc);
        let mut e = BlockTable::new();
        assert_eq!(e.adopt_cached(&mut alloc, &tokens, 4), 0);
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
