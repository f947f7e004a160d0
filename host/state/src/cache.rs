//! The write-back cache in front of one subtask's fjall keys.
//!
//! Reads are served from memory once a key was read or written; writes stay in memory (dirty)
//! and reach fjall together, in one batch, when [`crate::OperatorState`] flushes: before a
//! snapshot, before the handle is dropped, and whenever the cache passes its byte budget. A
//! cached entry may also say that a key is absent (a delete not yet written, or a read that
//! found nothing), so repeated misses cost no fjall lookup either.
//!
//! The cache changes nothing about durability: fjall is the working copy, never fsynced, and
//! rebuilt from snapshot files on recovery. A snapshot flushes first, so it reads exactly what
//! the operator wrote.
//!
//! Eviction is second chance (CLOCK): an entry read since the last eviction pass survives one
//! pass. Only clean entries are evicted; a flush makes every entry clean. Entries are ordered
//! by key so that prefix scans (list items, map fields) merge the dirty entries of one prefix
//! with fjall's in key order.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Bytes counted per entry beyond its key and value: the tree node share and the boxes.
const ENTRY_OVERHEAD_BYTES: usize = 64;

#[derive(Debug)]
struct Cached {
    /// The value, or `None`: the key is absent.
    value: Option<Box<[u8]>>,
    /// Not yet written to fjall.
    dirty: bool,
    /// Read since the last eviction pass.
    referenced: Cell<bool>,
}

fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD_BYTES
}

/// One subtask's cached keys (full fjall keys), with their byte count against a budget.
#[derive(Debug, Default)]
pub(crate) struct StateCache {
    entries: BTreeMap<Box<[u8]>, Cached>,
    bytes: usize,
    dirty: usize,
    budget: usize,
}

impl StateCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self { budget, ..Self::default() }
    }

    pub(crate) fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// What the cache knows of `key`: `Some(Some(value))`, `Some(None)` (absent) or `None`
    /// (not cached: ask fjall).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.entries.get(key).map(|c| {
            c.referenced.set(true);
            c.value.as_deref()
        })
    }

    /// Remembers what fjall returned for `key` (not already cached). Without a budget nothing
    /// is remembered.
    pub(crate) fn fill(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.budget == 0 || self.entries.contains_key(key) {
            return;
        }
        self.bytes += entry_bytes(key, value);
        let cached = Cached { value: value.map(Into::into), dirty: false, referenced: Cell::new(false) };
        self.entries.insert(key.into(), cached);
    }

    /// Records a write (`Some`) or a delete (`None`) of `key`, to reach fjall at the next flush.
    pub(crate) fn write(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.bytes += entry_bytes(key, value);
        if let Some(cached) = self.entries.get_mut(key) {
            // Rewritten in place: the key is not allocated again.
            self.bytes -= entry_bytes(key, cached.value.as_deref());
            match (&mut cached.value, value) {
                (Some(old), Some(new)) if old.len() == new.len() => old.copy_from_slice(new),
                (slot, new) => *slot = new.map(Into::into),
            }
            cached.referenced.set(true);
            if !std::mem::replace(&mut cached.dirty, true) {
                self.dirty += 1;
            }
            return;
        }
        let cached = Cached { value: value.map(Into::into), dirty: true, referenced: Cell::new(true) };
        self.entries.insert(key.into(), cached);
        self.dirty += 1;
    }

    /// Whether the cache holds more than its budget.
    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > self.budget
    }

    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// Every dirty entry, in key order: what a flush writes.
    pub(crate) fn dirty_entries(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.entries.iter().filter(|(_, c)| c.dirty).map(|(k, c)| (&k[..], c.value.as_deref()))
    }

    /// The dirty entries whose keys start with `prefix`, in key order.
    pub(crate) fn dirty_under<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        self.entries
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter(|(_, c)| c.dirty)
            .map(|(k, c)| (&k[..], c.value.as_deref()))
    }

    /// Marks every entry clean: the dirty ones were written to fjall.
    pub(crate) fn mark_clean(&mut self) {
        for cached in self.entries.values_mut() {
            cached.dirty = false;
        }
        self.dirty = 0;
    }

    /// Drops every entry whose key starts with `prefix` (fjall's are being removed too).
    pub(crate) fn forget_under(&mut self, prefix: &[u8]) {
        let doomed: Vec<Box<[u8]>> = self
            .entries
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            if let Some(old) = self.entries.remove(&key) {
                self.bytes -= entry_bytes(&key, old.value.as_deref());
                if old.dirty {
                    self.dirty -= 1;
                }
            }
        }
    }

    /// Drops everything, dirty entries included (a restore replaces the state).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.dirty = 0;
    }

    /// Evicts clean entries, second chance, until at most `target` bytes are held or only dirty
    /// and just-referenced entries are left after two passes.
    pub(crate) fn evict_to(&mut self, target: usize) {
        for _ in 0..2 {
            if self.bytes <= target {
                return;
            }
            let mut bytes = self.bytes;
            self.entries.retain(|key, c| {
                if bytes <= target || c.dirty {
                    return true;
                }
                if c.referenced.replace(false) {
                    return true;
                }
                bytes -= entry_bytes(key, c.value.as_deref());
                false
            });
            self.bytes = bytes;
        }
    }

    /// Bytes held (keys, values and overhead).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_deletes_are_served_and_counted() {
        let mut cache = StateCache::new(1 << 20);
        assert_eq!(cache.get(b"a"), None);
        cache.write(b"a", Some(b"1"));
        cache.write(b"a", Some(b"22"));
        cache.write(b"b", None);
        assert_eq!(cache.get(b"a"), Some(Some(&b"22"[..])));
        assert_eq!(cache.get(b"b"), Some(None));
        assert_eq!(cache.dirty, 2, "a key written twice is one dirty entry");
        assert_eq!(cache.bytes(), entry_bytes(b"a", Some(b"22")) + entry_bytes(b"b", None));
        let dirty: Vec<_> = cache.dirty_entries().collect();
        assert_eq!(dirty, vec![(&b"a"[..], Some(&b"22"[..])), (&b"b"[..], None)]);
        cache.mark_clean();
        assert!(!cache.has_dirty());
        assert_eq!(cache.get(b"a"), Some(Some(&b"22"[..])), "clean entries are still served");
    }

    #[test]
    fn a_fill_never_overrides_a_write_and_needs_a_budget() {
        let mut cache = StateCache::new(1 << 20);
        cache.write(b"k", Some(b"new"));
        cache.fill(b"k", Some(b"old"));
        assert_eq!(cache.get(b"k"), Some(Some(&b"new"[..])));
        let mut none = StateCache::new(0);
        none.fill(b"k", Some(b"v"));
        assert_eq!(none.get(b"k"), None);
    }

    #[test]
    fn prefixes_select_exactly_their_keys() {
        let mut cache = StateCache::new(1 << 20);
        for key in [&b"ab"[..], b"abc", b"abd", b"ac", b"b"] {
            cache.write(key, Some(key));
        }
        cache.fill(b"abe", Some(b"clean"));
        let under: Vec<_> = cache.dirty_under(b"ab").map(|(k, _)| k.to_vec()).collect();
        assert_eq!(under, vec![b"ab".to_vec(), b"abc".to_vec(), b"abd".to_vec()], "clean entries are fjall's");
        cache.forget_under(b"ab");
        assert_eq!(cache.get(b"abe"), None);
        assert_eq!(cache.get(b"abc"), None);
        assert_eq!(cache.get(b"ac"), Some(Some(&b"ac"[..])));
        assert_eq!(cache.dirty, 2);
        assert_eq!(cache.bytes(), entry_bytes(b"ac", Some(b"ac")) + entry_bytes(b"b", Some(b"b")));
    }

    #[test]
    fn eviction_keeps_dirty_and_recently_read_entries() {
        let per = entry_bytes(b"k0", Some(&[0; 100]));
        let mut cache = StateCache::new(10 * per);
        for i in 0..10u8 {
            cache.fill(&[b'k', b'0' + i], Some(&[0; 100]));
        }
        cache.write(b"k9", Some(&[1; 100]));
        let _ = cache.get(b"k3");
        cache.evict_to(3 * per);
        assert!(cache.bytes() <= 3 * per, "{} > {}", cache.bytes(), 3 * per);
        assert_eq!(cache.get(b"k9"), Some(Some(&[1; 100][..])), "dirty entries are never evicted");
        assert!(cache.get(b"k3").is_some(), "a referenced entry gets a second chance");
        // Only dirty entries: nothing can go.
        let mut all_dirty = StateCache::new(per);
        all_dirty.write(b"a0", Some(&[0; 100]));
        all_dirty.write(b"b0", Some(&[0; 100]));
        all_dirty.evict_to(0);
        assert_eq!(all_dirty.bytes(), 2 * per);
    }
}
