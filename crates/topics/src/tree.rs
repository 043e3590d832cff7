//! The subscription index: which `(key, value)` pairs have a filter matching a topic.
//!
//! A trie with one node per filter level. Each node has its exact-level children, a separate
//! `+` child, the entries of filters that end at it and the entries of filters that end at it
//! followed by `/#`. Matching a topic walks its levels once, following the exact child and the
//! `+` child at every level and collecting `#` entries on the way, so its cost grows with the
//! number of levels and of wildcard branches, not with the number of filters.

use std::fmt;
use std::hash::Hash;

use fleetwire_mqtt_codec::{TopicFilter, TopicName};

use crate::entries::Entries;
use crate::trie::{
    Children, Drain, NO_MORE_LEVELS, SmallStack, TrieNode, drop_iteratively, split_level,
};

/// How many pending `+` branches a match keeps without allocating. Each is 16 bytes; a match
/// pushes one for every `+` child it passes and pops it once the path it is on ends.
const INLINE_PENDING_BRANCHES: usize = 16;

/// Subscriptions indexed by topic filter, for finding every subscription that matches a topic.
///
/// Each entry is a filter plus a key (typically the subscribing session) with a value
/// (typically the subscription options). There is at most one entry per filter pattern and
/// key: a `$share/{group}/` prefix is not part of the index, so `$share/g/a/b` and `a/b` are
/// the same slot, and the caller keeps shared groups apart in its key or value if it needs to.
///
/// Matching follows MQTT: `+` matches exactly one level, `#` matches the level before it and
/// any number of levels below, empty levels are levels, and a filter starting with `+` or `#`
/// does not match a topic starting with `$`.
///
/// ```
/// use fleetwire_mqtt_codec::{TopicFilter, TopicName};
/// use fleetwire_topics::TopicTree;
///
/// let mut tree = TopicTree::default();
/// let filter = TopicFilter::new("devices/+/status").expect("valid filter");
/// tree.insert(&filter, "dashboard", 1);
///
/// let mut matched = Vec::new();
/// let topic = TopicName::new("devices/d42/status").expect("valid topic");
/// tree.for_each_match(&topic, |key, qos| matched.push((*key, *qos)));
/// assert_eq!(matched, [("dashboard", 1)]);
/// ```
pub struct TopicTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

/// One filter level. Filters ending at this node are in `exact`; filters ending at this node
/// followed by `/#` are in `multi`, since `#` is always last and needs no node of its own.
struct Node<K, V> {
    children: Children<Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    exact: Entries<K, V>,
    multi: Entries<K, V>,
}

/// Which entries of the last node of a filter's path hold the filter.
#[derive(Clone, Copy)]
enum Slot {
    Exact,
    Multi,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            plus: None,
            exact: Entries::default(),
            multi: Entries::default(),
        }
    }
}

impl<K, V> TrieNode for Node<K, V> {
    fn has_children(&self) -> bool {
        !self.children.is_empty() || self.plus.is_some()
    }

    fn drain_children(&mut self) -> Drain<Self> {
        let plus = self.plus.take().map(|plus| *plus);
        self.children.drain(plus)
    }
}

impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        drop_iteratively(self);
    }
}

impl<K, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        match level {
            "+" => self.plus.as_deref(),
            _ => self.children.get(level.as_bytes()),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        match level {
            "+" => self.plus.as_deref_mut(),
            _ => self.children.get_mut(level.as_bytes()),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        match level {
            "+" => self.plus.get_or_insert_with(Box::default),
            _ => self.children.get_or_insert_default(level.as_bytes()),
        }
    }

    fn take_child(&mut self, level: &str) -> Option<Node<K, V>> {
        match level {
            "+" => self.plus.take().map(|plus| *plus),
            _ => self.children.remove(level.as_bytes()),
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn entries(&self, slot: Slot) -> &Entries<K, V> {
        match slot {
            Slot::Exact => &self.exact,
            Slot::Multi => &self.multi,
        }
    }

    fn entries_mut(&mut self, slot: Slot) -> &mut Entries<K, V> {
        match slot {
            Slot::Exact => &mut self.exact,
            Slot::Multi => &mut self.multi,
        }
    }

    /// Whether this node only links its parent to its single child, so that it can go once
    /// that child goes.
    fn is_bare_link(&self) -> bool {
        self.exact.is_empty() && self.multi.is_empty() && self.child_count() == 1
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![self];
        while let Some(node) = pending.pop() {
            count += 1;
            node.children.for_each(|_, child| pending.push(child));
            pending.extend(node.plus.as_deref());
        }
        count
    }
}

/// The levels of a filter pattern that are nodes, and where at the last one the filter lives:
/// `a/+/#` is the path `a`, `+` with the entry in [`Slot::Multi`]; `#` alone is the root's
/// multi-level entries.
fn path_of(pattern: &str) -> (impl Iterator<Item = &str> + Clone, Slot) {
    let (path, slot) = if pattern == "#" {
        (None, Slot::Multi)
    } else if let Some(path) = pattern.strip_suffix("/#") {
        (Some(path), Slot::Multi)
    } else {
        (Some(pattern), Slot::Exact)
    };
    (path.into_iter().flat_map(|path| path.split('/')), slot)
}

impl<K, V> Default for TopicTree<K, V> {
    fn default() -> Self {
        TopicTree {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K, V> fmt::Debug for TopicTree<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTree").field("len", &self.len).finish()
    }
}

impl<K: Eq + Hash + Clone, V> TopicTree<K, V> {
    /// Adds the entry for `key` under `filter`'s pattern, or replaces its value and returns
    /// the previous one.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let (path, slot) = path_of(filter.pattern());
        let mut node = &mut self.root;
        for level in path {
            node = node.child_or_insert(level);
        }
        let previous = node.entries_mut(slot).insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes the entry for `key` under `filter`'s pattern and returns its value. Nodes left
    /// without entries or children are removed, so the tree's memory follows its contents.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let (path, slot) = path_of(filter.pattern());

        // First, without changing anything, find the entry and the topmost node of the chain
        // that only leads to it (`prune_from`, a depth below the root). Removing top-down in a
        // second pass keeps this free of recursion, whatever the number of levels.
        let mut node = &self.root;
        let mut depth = 0;
        let mut chain_start = None;
        for level in path.clone() {
            if depth > 0 {
                if node.is_bare_link() {
                    chain_start.get_or_insert(depth);
                } else {
                    chain_start = None;
                }
            }
            node = node.child(level)?;
            depth += 1;
        }
        let entries = node.entries(slot);
        if !entries.contains(key) {
            return None;
        }
        let other = match slot {
            Slot::Exact => &node.multi,
            Slot::Multi => &node.exact,
        };
        let empties_target =
            depth > 0 && entries.len() == 1 && other.is_empty() && node.child_count() == 0;

        let value = match empties_target.then(|| chain_start.unwrap_or(depth)) {
            None => {
                let mut node = &mut self.root;
                for level in path {
                    node = node.child_mut(level)?;
                }
                node.entries_mut(slot).remove(key)
            }
            Some(prune_from) => {
                let mut levels = path;
                let mut parent = &mut self.root;
                for level in levels.by_ref().take(prune_from - 1) {
                    parent = parent.child_mut(level)?;
                }
                let mut detached = parent.take_child(levels.next()?)?;
                for level in levels {
                    // Each node left behind has just lost its only child and is dropped here.
                    detached = detached.take_child(level)?;
                }
                detached.entries_mut(slot).remove(key)
            }
        };
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// Calls `visit` with every entry whose filter matches `topic`, in no particular order.
    ///
    /// A key subscribed through several matching filters is visited once per filter. Does not
    /// allocate unless the topic branches into more than 16 pending `+` paths at once.
    pub fn for_each_match<'a>(&'a self, topic: &TopicName, mut visit: impl FnMut(&'a K, &'a V)) {
        let text = topic.as_str().as_bytes();
        let mut pending: SmallStack<(&'a Node<K, V>, usize), INLINE_PENDING_BRANCHES> =
            SmallStack::new();

        // The first level is the only one where the `$` rule applies: a filter whose first
        // level is a wildcard does not match a topic starting with `$`.
        let root = &self.root;
        let (level, rest) = split_level(text, 0);
        if !topic.is_system() {
            root.multi.visit(&mut visit);
            if let Some(plus) = &root.plus {
                pending.push((plus, rest));
            }
        }
        if let Some(child) = root.children.get(level) {
            pending.push((child, rest));
        }

        while let Some((mut node, mut rest)) = pending.pop() {
            // Follow exact children in this loop and leave `+` branches for later.
            loop {
                node.multi.visit(&mut visit);
                if rest == NO_MORE_LEVELS {
                    node.exact.visit(&mut visit);
                    break;
                }
                let (level, next) = split_level(text, rest);
                if let Some(plus) = &node.plus {
                    pending.push((plus, next));
                }
                match node.children.get(level) {
                    Some(child) => {
                        node = child;
                        rest = next;
                    }
                    None => break,
                }
            }
        }
    }

    /// The number of entries, each a filter pattern with a key.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of nodes, the root included.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.count_nodes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::new(text).expect("test filters are valid")
    }

    fn topic(text: &str) -> TopicName {
        TopicName::new(text).expect("test topics are valid")
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn compact_layout_holds() {
        assert_eq!(size_of::<Node<u64, u8>>(), 88);
    }

    #[test]
    fn removing_every_filter_prunes_the_tree_back_to_its_root() {
        let filters = [
            "a/b/c", "a/b", "a/#", "a/+/c", "+/+", "#", "/", "//", "a//b/#", "$SYS/#", "x/y/z/w",
        ];
        let mut tree = TopicTree::default();
        for (key, text) in filters.iter().enumerate() {
            tree.insert(&filter(text), key, ());
        }
        assert!(tree.node_count() > 1);
        for (key, text) in filters.iter().enumerate() {
            assert_eq!(tree.remove(&filter(text), &key), Some(()), "{text}");
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn removing_one_filter_keeps_nodes_others_need() {
        let mut tree = TopicTree::default();
        tree.insert(&filter("a/b/c/d"), 1, ());
        tree.insert(&filter("a/b"), 2, ());
        assert_eq!(tree.node_count(), 5);
        tree.remove(&filter("a/b/c/d"), &1);
        assert_eq!(tree.node_count(), 3);
        tree.insert(&filter("a/b/c/d"), 1, ());
        tree.remove(&filter("a/b"), &2);
        assert_eq!(tree.node_count(), 5);
        tree.insert(&filter("a/b/#"), 3, ());
        tree.remove(&filter("a/b/c/d"), &1);
        assert_eq!(tree.node_count(), 3);
    }

    #[test]
    fn removing_an_absent_entry_changes_nothing() {
        let mut tree = TopicTree::default();
        tree.insert(&filter("a/b"), 1, ());
        assert_eq!(tree.remove(&filter("a/b"), &2), None);
        assert_eq!(tree.remove(&filter("a/b/c"), &1), None);
        assert_eq!(tree.remove(&filter("a/#"), &1), None);
        assert_eq!(tree.remove(&filter("a"), &1), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.node_count(), 3);
    }

    /// 32,768 levels is the most a 65,535-byte filter can have; nothing may recurse per level.
    #[test]
    fn the_deepest_possible_filter_does_not_overflow_the_stack() {
        let deep = "/".repeat(usize::from(u16::MAX));
        let mut tree = TopicTree::default();
        tree.insert(&filter(&deep), 1, ());
        tree.insert(&filter(&format!("{}#", &deep[..deep.len() - 1])), 2, ());
        let mut matched = Vec::new();
        tree.for_each_match(&topic(&deep), |key, _| matched.push(*key));
        matched.sort_unstable();
        assert_eq!(matched, [1, 2]);
        assert_eq!(tree.remove(&filter(&deep), &1), Some(()));
        // Dropping a tree still holding the deep chain must not recurse either.
        tree.insert(&filter(&deep), 1, ());
        drop(tree);
    }

    #[test]
    fn a_wide_plus_pattern_spills_the_pending_stack_and_still_matches() {
        let mut tree = TopicTree::default();
        let levels = 40;
        for depth in 0..levels {
            let mut text = vec!["a"; levels];
            text[depth] = "+";
            tree.insert(&filter(&text.join("/")), depth, ());
            tree.insert(&filter(&vec!["a"; depth + 1].join("/")), depth + 1000, ());
        }
        let mut matched = Vec::new();
        tree.for_each_match(&topic(&vec!["a"; levels].join("/")), |key, _| {
            matched.push(*key);
        });
        matched.sort_unstable();
        let mut expected: Vec<_> = (0..levels).collect();
        expected.push(levels - 1 + 1000);
        assert_eq!(matched, expected);
    }

    proptest! {
        #[test]
        fn any_insert_then_remove_all_returns_to_the_root(
            filters in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec!["", "a", "b", "+", "$SYS"]), 1..5),
                0..40),
            keys in proptest::collection::vec(0u8..4, 40),
            multi in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let mut tree = TopicTree::default();
            let mut inserted = Vec::new();
            for (index, levels) in filters.iter().enumerate() {
                let mut text = levels.join("/");
                if multi[index] {
                    text.push_str("/#");
                }
                let Ok(filter) = TopicFilter::new(text) else { continue };
                tree.insert(&filter, keys[index], ());
                inserted.push((filter, keys[index]));
            }
            for (filter, key) in &inserted {
                tree.remove(filter, key);
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.node_count(), 1);
        }
    }
}
