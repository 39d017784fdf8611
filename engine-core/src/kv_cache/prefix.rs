//! The prefix cache's index: full KV blocks named by a hash chain of their token ids (each
//! block's hash covers every token before it), so a new sequence whose tokens start the same way
//! can use the blocks instead of computing them. Blocks no sequence holds stay indexed, in
//! least-recently-used order, until the allocator needs them back.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// The hash of the (empty) prefix before the first block.
pub const ROOT: u64 = 0x7461_6e64_656d_4b56;

/// The hash of a block holding `tokens` after the blocks hashed `parent`.
pub fn chain(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: stable within a process, which is all the index needs.
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// What an indexed block holds.
#[derive(Debug, Clone)]
struct Entry {
    hash: u64,
    parent: u64,
    tokens: Box<[u32]>,
    /// When it became unreferenced (its place in the eviction order), if it is.
    idle_since: Option<u64>,
}

/// Blocks by content, and the unreferenced ones by age.
#[derive(Debug, Clone, Default)]
pub struct PrefixIndex {
    by_hash: HashMap<u64, u32>,
    entries: HashMap<u32, Entry>,
    idle: BTreeMap<u64, u32>,
    clock: u64,
}

impl PrefixIndex {
    /// The indexed block holding `tokens` after `parent`, if any (tokens compared, so a hash
    /// collision is a miss, never a wrong block).
    pub fn find(&self, parent: u64, tokens: &[u32]) -> Option<(u32, u64)> {
        let hash = chain(parent, tokens);
        let &block = self.by_hash.get(&hash)?;
        let e = &self.entries[&block];
        (e.parent == parent && *e.tokens == *tokens).then_some((block, hash))
    }

    /// Indexes `block` as holding `tokens` after `parent`; returns its hash. A block already
    /// indexed, or content already held by another block, leaves the index as it is.
    pub fn insert(&mut self, block: u32, parent: u64, tokens: &[u32]) -> u64 {
        let hash = chain(parent, tokens);
        if !self.entries.contains_key(&block) && !self.by_hash.contains_key(&hash) {
            self.by_hash.insert(hash, block);
            self.entries.insert(
                block,
                Entry {
                    hash,
                    parent,
                    tokens: tokens.into(),
                    idle_since: None,
                },
            );
        }
        hash
    }

    /// Whether `block` is indexed.
    pub fn contains(&self, block: u32) -> bool {
        self.entries.contains_key(&block)
    }

    /// Marks an indexed block as held by no sequence (the newest in eviction order).
    pub fn park(&mut self, block: u32) {
        if let Some(e) = self.entries.get_mut(&block) {
            self.clock += 1;
            e.idle_since = Some(self.clock);
            self.idle.insert(self.clock, block);
        }
    }

    /// Marks a parked block as held again.
    pub fn unpark(&mut self, block: u32) {
        if let Some(e) = self.entries.get_mut(&block)
            && let Some(t) = e.idle_since.take()
        {
            self.idle.remove(&t);
        }
    }

    /// Unreferenced indexed blocks.
    pub fn parked(&self) -> usize {
        self.idle.len()
    }

    /// Forgets the least recently used unreferenced block and returns it.
    pub fn evict(&mut self) -> Option<u32> {
        let (_, block) = self.idle.pop_first()?;
        if let Some(e) = self.entries.remove(&block) {
            self.by_hash.remove(&e.hash);
        }
        Some(block)
    }

    /// Forgets every unreferenced block, returning them.
    pub fn evict_all(&mut self) -> Vec<u32> {
        std::iter::from_fn(|| self.evict()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_depend_on_every_earlier_token() {
        let a = chain(ROOT, &[1, 2, 3]);
        assert_ne!(a, chain(ROOT, &[1, 2, 4]));
        assert_ne!(chain(a, &[5]), chain(chain(ROOT, &[1, 2, 4]), &[5]));
        assert_eq!(a, chain(ROOT, &[1, 2, 3]));
    }

    #[test]
    fn find_park_evict_in_age_order() {
        let mut ix = PrefixIndex::default();
        let h0 = ix.insert(7, ROOT, &[1, 2]);
        let h1 = ix.insert(3, h0, &[3, 4]);
        assert_eq!(ix.find(ROOT, &[1, 2]), Some((7, h0)));
        assert_eq!(ix.find(h0, &[3, 4]), Some((3, h1)));
        assert_eq!(ix.find(ROOT, &[3, 4]), None);
        // The same content in another block is not indexed twice.
        assert_eq!(ix.insert(9, ROOT, &[1, 2]), h0);
        assert!(!ix.contains(9));
        ix.park(3);
        ix.park(7);
        assert_eq!(ix.parked(), 2);
        ix.unpark(3);
        ix.park(3);
        assert_eq!(ix.evict(), Some(7));
        assert_eq!(ix.find(ROOT, &[1, 2]), None);
        assert_eq!(ix.evict_all(), vec![3]);
        assert_eq!(ix.evict(), None);
    }
}
