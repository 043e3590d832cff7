//! The subscriptions that end at one node of the subscription tree: `(key, value)` pairs kept
//! contiguous so that visiting them while matching is a loop over one slice, with a position
//! index once there are enough of them for a linear search to hurt.

use std::collections::HashMap;
use std::hash::Hash;

/// Above this many entries a node builds its key → position index; below, a linear scan over
/// the keys beats hashing one.
const MAX_UNINDEXED: usize = 16;

/// An indexed node that has shrunk to this many entries drops its index. Lower than
/// [`MAX_UNINDEXED`] so that a node hovering at the limit does not rebuild it on every change.
const MIN_INDEXED: usize = MAX_UNINDEXED / 2;

/// The `(key, value)` entries of one node, one per key.
pub(crate) enum Entries<K, V> {
    Unindexed(Vec<(K, V)>),
    Indexed(Box<Indexed<K, V>>),
}

/// Entries plus where each key sits in them, for nodes with many subscribers (a fleet-wide
/// command topic with 100,000 devices on it) where insert and remove must not scan.
pub(crate) struct Indexed<K, V> {
    items: Vec<(K, V)>,
    /// Keys come from clients, so this keeps std's randomly keyed hasher.
    positions: HashMap<K, usize>,
}

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries::Unindexed(Vec::new())
    }
}

impl<K, V> Entries<K, V> {
    #[inline]
    pub(crate) fn as_slice(&self) -> &[(K, V)] {
        match self {
            Entries::Unindexed(items) => items,
            Entries::Indexed(indexed) => &indexed.items,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Calls `visit` with every entry.
    #[inline]
    pub(crate) fn visit<'a>(&'a self, visit: &mut impl FnMut(&'a K, &'a V)) {
        for (key, value) in self.as_slice() {
            visit(key, value);
        }
    }
}

impl<K: Eq + Hash + Clone, V> Entries<K, V> {
    pub(crate) fn contains(&self, key: &K) -> bool {
        match self {
            Entries::Unindexed(items) => items.iter().any(|(k, _)| k == key),
            Entries::Indexed(indexed) => indexed.positions.contains_key(key),
        }
    }

    /// Adds `key` with `value`, or replaces and returns the value `key` already had.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Entries::Unindexed(items) => {
                if let Some((_, old)) = items.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if items.len() < MAX_UNINDEXED {
                    if items.capacity() == 0 {
                        // Most filters have a single subscriber; do not reserve room for four.
                        items.reserve_exact(1);
                    }
                    items.push((key, value));
                    return None;
                }
                let mut items = std::mem::take(items);
                items.push((key, value));
                let positions = items
                    .iter()
                    .enumerate()
                    .map(|(position, (key, _))| (key.clone(), position))
                    .collect();
                *self = Entries::Indexed(Box::new(Indexed { items, positions }));
                None
            }
            Entries::Indexed(indexed) => {
                let Indexed { items, positions } = &mut **indexed;
                match positions.get(&key) {
                    Some(&position) => Some(std::mem::replace(&mut items[position].1, value)),
                    None => {
                        positions.insert(key.clone(), items.len());
                        items.push((key, value));
                        None
                    }
                }
            }
        }
    }

    /// Removes `key` and returns its value, giving back memory the entries no longer need.
    /// Order is not kept: the last entry moves into the hole.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Entries::Unindexed(items) => {
                let position = items.iter().position(|(k, _)| k == key)?;
                let (_, value) = items.swap_remove(position);
                shrink_if_sparse(items);
                Some(value)
            }
            Entries::Indexed(indexed) => {
                let Indexed { items, positions } = &mut **indexed;
                let position = positions.remove(key)?;
                let (_, value) = items.swap_remove(position);
                if let Some((moved, _)) = items.get(position) {
                    if let Some(moved_position) = positions.get_mut(moved) {
                        *moved_position = position;
                    }
                }
                if items.len() <= MIN_INDEXED {
                    let mut items = std::mem::take(items);
                    items.shrink_to_fit();
                    *self = Entries::Unindexed(items);
                } else {
                    shrink_if_sparse(items);
                    if positions.len() * 4 <= positions.capacity() {
                        positions.shrink_to(positions.len() * 2);
                    }
                }
                Some(value)
            }
        }
    }
}

/// Halves a vector's allocation once it is three-quarters empty: memory comes back after a mass
/// unsubscribe, and the next shrink is a quarter of the removals away, so removal stays O(1)
/// amortized.
fn shrink_if_sparse<T>(items: &mut Vec<T>) {
    if items.len() * 4 <= items.capacity() {
        items.shrink_to(items.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_one_value_per_key_across_indexing() {
        let mut entries = Entries::default();
        for key in 0..1000u32 {
            assert_eq!(entries.insert(key, key), None);
        }
        assert!(matches!(entries, Entries::Indexed(_)));
        for key in 0..1000u32 {
            assert_eq!(entries.insert(key, key + 1), Some(key));
        }
        assert_eq!(entries.len(), 1000);
        for key in (0..1000u32).step_by(2) {
            assert_eq!(entries.remove(&key), Some(key + 1));
            assert_eq!(entries.remove(&key), None);
        }
        for key in 0..1000u32 {
            assert_eq!(entries.contains(&key), key % 2 == 1);
        }
        let mut seen: Vec<_> = entries.as_slice().iter().map(|(k, v)| (*k, *v)).collect();
        seen.sort_unstable();
        let expected: Vec<_> = (1..1000u32).step_by(2).map(|k| (k, k + 1)).collect();
        assert_eq!(seen, expected);
        for key in (1..1000u32).step_by(2) {
            assert_eq!(entries.remove(&key), Some(key + 1));
        }
        assert!(entries.is_empty());
        assert!(matches!(&entries, Entries::Unindexed(items) if items.capacity() == 0));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn compact_layout_holds() {
        assert_eq!(size_of::<Entries<u64, u8>>(), 24);
    }
}
