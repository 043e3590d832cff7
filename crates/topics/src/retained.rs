//! Retained messages by exact topic, for replay to new subscriptions.
//!
//! A trie with one node per topic level, so that a subscription to `devices/d42/#` visits the
//! subtree under `devices/d42` rather than every retained topic, and a `+` level visits the
//! children of one node.

use std::fmt;

use fleetwire_mqtt_codec::{TopicFilter, TopicName};

use crate::trie::{
    Children, Drain, NO_MORE_LEVELS, SmallStack, TrieNode, drop_iteratively, split_level,
};

/// How many pending nodes a match keeps without allocating.
const INLINE_PENDING_NODES: usize = 16;

/// At most one retained value per topic name, searchable by topic filter.
///
/// ```
/// use fleetwire_mqtt_codec::{TopicFilter, TopicName};
/// use fleetwire_topics::RetainedStore;
///
/// let mut store = RetainedStore::default();
/// let topic = TopicName::new("devices/d42/status").expect("valid topic");
/// store.insert(&topic, "online");
///
/// let filter = TopicFilter::new("devices/d42/#").expect("valid filter");
/// let mut replayed = Vec::new();
/// store.for_each_match(&filter, |topic, value| replayed.push((topic.as_str(), *value)));
/// assert_eq!(replayed, [("devices/d42/status", "online")]);
/// ```
pub struct RetainedStore<V> {
    root: Node<V>,
    len: usize,
}

/// One topic level, with the value retained at the topic that ends here, if any.
struct Node<V> {
    children: Children<Node<V>>,
    value: Option<(TopicName, V)>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            value: None,
        }
    }
}

impl<V> TrieNode for Node<V> {
    fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    fn drain_children(&mut self) -> Drain<Self> {
        self.children.drain(None)
    }
}

impl<V> Drop for Node<V> {
    fn drop(&mut self) {
        drop_iteratively(self);
    }
}

impl<V> Node<V> {
    fn visit_value<'a>(&'a self, visit: &mut impl FnMut(&'a TopicName, &'a V)) {
        if let Some((topic, value)) = &self.value {
            visit(topic, value);
        }
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![self];
        while let Some(node) = pending.pop() {
            count += 1;
            node.children.for_each(|_, child| pending.push(child));
        }
        count
    }
}

/// Where a match stands: a node reached by the filter's levels before byte `offset` of the
/// pattern, or a node whose whole subtree matches because the filter reached `#`.
enum Step<'a, V> {
    Filter(&'a Node<V>, usize),
    Subtree(&'a Node<V>),
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        RetainedStore {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V> fmt::Debug for RetainedStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.len)
            .finish()
    }
}

impl<V> RetainedStore<V> {
    /// Retains `value` at `topic`, returning the value it replaces.
    pub fn insert(&mut self, topic: &TopicName, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.levels() {
            node = node.children.get_or_insert_default(level.as_bytes());
        }
        let previous = node.value.replace((topic.clone(), value)).map(|(_, v)| v);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes and returns the value retained at `topic`. Nodes left without a value or
    /// children are removed, so the store's memory follows its contents.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        // As in the subscription tree: find the topmost node of the chain that only leads to
        // the value, then detach it top-down, without recursion.
        let mut node = &self.root;
        let mut depth = 0;
        let mut chain_start = None;
        for level in topic.levels() {
            if depth > 0 {
                if node.value.is_none() && node.children.len() == 1 {
                    chain_start.get_or_insert(depth);
                } else {
                    chain_start = None;
                }
            }
            node = node.children.get(level.as_bytes())?;
            depth += 1;
        }
        node.value.as_ref()?;
        let prune_from = node
            .children
            .is_empty()
            .then(|| chain_start.unwrap_or(depth));

        let mut levels = topic.levels();
        let mut parent = &mut self.root;
        let value = match prune_from {
            None => {
                for level in levels {
                    parent = parent.children.get_mut(level.as_bytes())?;
                }
                parent.value.take()
            }
            Some(prune_from) => {
                for level in levels.by_ref().take(prune_from - 1) {
                    parent = parent.children.get_mut(level.as_bytes())?;
                }
                let mut detached = parent.children.remove(levels.next()?.as_bytes())?;
                for level in levels {
                    // Each node left behind has just lost its only child and is dropped here.
                    detached = detached.children.remove(level.as_bytes())?;
                }
                detached.value.take()
            }
        };
        let value = value.map(|(_, value)| value);
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// The value retained at exactly `topic`.
    pub fn get(&self, topic: &TopicName) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.levels() {
            node = node.children.get(level.as_bytes())?;
        }
        node.value.as_ref().map(|(_, value)| value)
    }

    /// Calls `visit` with every retained topic matched by `filter`'s pattern, and its value, in
    /// no particular order. A filter starting with `+` or `#` does not match topics starting
    /// with `$`.
    pub fn for_each_match<'a>(
        &'a self,
        filter: &TopicFilter,
        mut visit: impl FnMut(&'a TopicName, &'a V),
    ) {
        let pattern = filter.pattern().as_bytes();
        let mut pending: SmallStack<Step<'a, V>, INLINE_PENDING_NODES> = SmallStack::new();
        pending.push(Step::Filter(&self.root, 0));
        while let Some(step) = pending.pop() {
            let (node, offset) = match step {
                Step::Subtree(node) => {
                    node.visit_value(&mut visit);
                    node.children
                        .for_each(|_, child| pending.push(Step::Subtree(child)));
                    continue;
                }
                Step::Filter(node, NO_MORE_LEVELS) => {
                    node.visit_value(&mut visit);
                    continue;
                }
                Step::Filter(node, offset) => (node, offset),
            };
            // Only the root is reached with the pattern's first level, where the `$` rule
            // applies.
            let at_root = offset == 0;
            let (level, next) = split_level(pattern, offset);
            match level {
                b"#" if at_root => node.children.for_each(|level, child| {
                    if !level.is_system() {
                        pending.push(Step::Subtree(child));
                    }
                }),
                b"#" => pending.push(Step::Subtree(node)),
                b"+" => node.children.for_each(|level, child| {
                    if !(at_root && level.is_system()) {
                        pending.push(Step::Filter(child, next));
                    }
                }),
                _ => {
                    if let Some(child) = node.children.get(level) {
                        pending.push(Step::Filter(child, next));
                    }
                }
            }
        }
    }

    /// The number of retained topics.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic has a retained value.
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

    fn topic(text: &str) -> TopicName {
        TopicName::new(text).expect("test topics are valid")
    }

    #[test]
    fn removing_every_topic_prunes_the_store_back_to_its_root() {
        let topics = ["a/b/c", "a/b", "a", "/", "//", "a//b", "$SYS/x", "x/y/z/w"];
        let mut store = RetainedStore::default();
        for (value, text) in topics.iter().enumerate() {
            store.insert(&topic(text), value);
        }
        assert!(store.node_count() > 1);
        for (value, text) in topics.iter().enumerate() {
            assert_eq!(store.remove(&topic(text)), Some(value), "{text}");
            assert_eq!(store.remove(&topic(text)), None, "{text}");
        }
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn removing_one_topic_keeps_nodes_others_need() {
        let mut store = RetainedStore::default();
        store.insert(&topic("a/b/c/d"), 1);
        store.insert(&topic("a/b"), 2);
        assert_eq!(store.node_count(), 5);
        store.remove(&topic("a/b/c/d"));
        assert_eq!(store.node_count(), 3);
        store.insert(&topic("a/b/c/d"), 1);
        store.remove(&topic("a/b"));
        assert_eq!(store.node_count(), 5);
        assert_eq!(store.get(&topic("a/b/c/d")), Some(&1));
        assert_eq!(store.get(&topic("a/b")), None);
    }

    #[test]
    fn the_deepest_possible_topic_does_not_overflow_the_stack() {
        let deep = "/".repeat(usize::from(u16::MAX));
        let mut store = RetainedStore::default();
        store.insert(&topic(&deep), 1);
        store.insert(&topic(&deep[..100]), 2);
        let filter = TopicFilter::new("/#").expect("valid filter");
        let mut matched = Vec::new();
        store.for_each_match(&filter, |_, value| matched.push(*value));
        matched.sort_unstable();
        assert_eq!(matched, [1, 2]);
        assert_eq!(store.remove(&topic(&deep)), Some(1));
        assert_eq!(store.node_count(), 102);
        store.insert(&topic(&deep), 1);
        drop(store);
    }

    proptest! {
        #[test]
        fn any_insert_then_remove_all_returns_to_the_root(
            topics in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec!["", "a", "b", "$SYS"]), 1..5),
                0..40),
        ) {
            let mut store = RetainedStore::default();
            let topics: Vec<_> = topics
                .iter()
                .filter_map(|levels| TopicName::new(levels.join("/")).ok())
                .collect();
            for (value, topic) in topics.iter().enumerate() {
                store.insert(topic, value);
            }
            for topic in &topics {
                store.remove(topic);
            }
            prop_assert!(store.is_empty());
            prop_assert_eq!(store.node_count(), 1);
        }
    }
}
