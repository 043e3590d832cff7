//! Building blocks shared by both tries: the owned text of one topic level, the children of
//! a node keyed by that text, the small stack the matchers walk with, and the splitting of a
//! topic into levels by byte offsets.
//!
//! Nothing here knows about subscriptions or retained messages; `tree.rs` and `retained.rs`
//! own their node types and the meaning of what hangs off a node.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{self, DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

/// Levels of up to this many bytes are stored inline, without a heap allocation. Most levels
/// (device ids, words such as `telemetry`) are this short, and the inline form keeps a level
/// and its enum tag in 24 bytes, the size of a `Box<[u8]>` plus its tag.
const INLINE_LEVEL_BYTES: usize = 22;

/// The text of one level, owned by the trie.
///
/// Equality and hashing are those of the level's bytes, so a map keyed by `Level` can be
/// searched with a borrowed `&[u8]` taken straight out of the topic being matched.
#[derive(Clone, Debug)]
pub(crate) enum Level {
    Inline {
        len: u8,
        bytes: [u8; INLINE_LEVEL_BYTES],
    },
    Heap(Box<[u8]>),
}

impl Level {
    pub(crate) fn new(level: &[u8]) -> Level {
        match u8::try_from(level.len()) {
            Ok(len) if level.len() <= INLINE_LEVEL_BYTES => {
                let mut bytes = [0; INLINE_LEVEL_BYTES];
                bytes[..level.len()].copy_from_slice(level);
                Level::Inline { len, bytes }
            }
            _ => Level::Heap(level.into()),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Level::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Level::Heap(bytes) => bytes,
        }
    }

    /// Whether the level starts with `$`, which leading wildcards must not match.
    pub(crate) fn is_system(&self) -> bool {
        self.as_bytes().first() == Some(&b'$')
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Level) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Level {}

impl Hash for Level {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly like `[u8]` for `Borrow<[u8]>` lookups to find the entry.
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Level {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Up to this many children are kept in a vector and found by a linear scan, which is both
/// smaller and faster than hashing for the one-to-few children most nodes have.
const MAX_FEW_CHILDREN: usize = 16;

/// A map that has shrunk to this many children goes back to a vector. Lower than
/// [`MAX_FEW_CHILDREN`] so that a node hovering at the limit does not convert on every change.
const MIN_MANY_CHILDREN: usize = MAX_FEW_CHILDREN / 2;

/// The children of a node, keyed by level.
///
/// Wide levels (one child per device under `devices/`) use a hash map, narrow ones a vector.
pub(crate) enum Children<N> {
    Few(Vec<(Level, N)>),
    Many(HashMap<Level, N, LevelHasher>),
}

/// Hashes levels with std's default hasher (SipHash-1-3) under keys drawn at random once per
/// process.
///
/// Level texts come from clients, so the hash must be keyed: with a fixed-seed hasher (FxHash
/// and the like) a client could craft colliding levels that turn every lookup at a wide node
/// into a linear probe. One set of keys per process, rather than a `RandomState` in every map,
/// makes the hasher zero-sized, so a map fits inline in its node: one dependent cache miss
/// fewer per wide level than a boxed map, for 8 more bytes per node. SipHash costs a few tens
/// of nanoseconds per wide level matched; narrow levels are not hashed at all.
#[derive(Clone, Copy, Default)]
pub(crate) struct LevelHasher;

impl BuildHasher for LevelHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        KEYS.get_or_init(RandomState::new).build_hasher()
    }
}

impl<N> Default for Children<N> {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl<N: Default> Children<N> {
    /// The child at `level`, created empty if there is none.
    pub(crate) fn get_or_insert_default(&mut self, level: &[u8]) -> &mut N {
        if let Children::Few(few) = self {
            if few.len() >= MAX_FEW_CHILDREN && !few.iter().any(|(l, _)| l.as_bytes() == level) {
                let map = std::mem::take(few).into_iter().collect();
                *self = Children::Many(map);
            }
        }
        match self {
            Children::Few(few) => {
                let index = match few.iter().position(|(l, _)| l.as_bytes() == level) {
                    Some(index) => index,
                    None => {
                        // Grow one slot at a time: most nodes keep a single child forever, and
                        // the default growth would reserve room for four.
                        few.reserve_exact(1);
                        few.push((Level::new(level), N::default()));
                        few.len() - 1
                    }
                };
                &mut few[index].1
            }
            Children::Many(many) => many.entry(Level::new(level)).or_default(),
        }
    }
}

impl<N> Children<N> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Children::Few(few) => few.len(),
            Children::Many(many) => many.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get(&self, level: &[u8]) -> Option<&N> {
        match self {
            Children::Few(few) => few
                .iter()
                .find(|(l, _)| l.as_bytes() == level)
                .map(|(_, child)| child),
            Children::Many(many) => many.get(level),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &[u8]) -> Option<&mut N> {
        match self {
            Children::Few(few) => few
                .iter_mut()
                .find(|(l, _)| l.as_bytes() == level)
                .map(|(_, child)| child),
            Children::Many(many) => many.get_mut(level),
        }
    }

    /// Detaches the child at `level`, giving back memory the children no longer need.
    pub(crate) fn remove(&mut self, level: &[u8]) -> Option<N> {
        match self {
            Children::Few(few) => {
                let index = few.iter().position(|(l, _)| l.as_bytes() == level)?;
                let (_, child) = few.swap_remove(index);
                if few.len() * 2 <= few.capacity() {
                    few.shrink_to_fit();
                }
                Some(child)
            }
            Children::Many(many) => {
                let child = many.remove(level)?;
                if many.len() <= MIN_MANY_CHILDREN {
                    let few: Vec<_> = std::mem::take(many).into_iter().collect();
                    *self = Children::Few(few);
                } else if many.len() * 4 <= many.capacity() {
                    many.shrink_to(many.len() * 2);
                }
                Some(child)
            }
        }
    }

    /// Calls `visit` with every child and its level, in no particular order.
    pub(crate) fn for_each<'a>(&'a self, mut visit: impl FnMut(&'a Level, &'a N)) {
        match self {
            Children::Few(few) => few.iter().for_each(|(level, child)| visit(level, child)),
            Children::Many(many) => many.iter().for_each(|(level, child)| visit(level, child)),
        }
    }

    /// Takes every child out, plus `extra` (the `+` child of the subscription tree), leaving
    /// the children empty.
    pub(crate) fn drain(&mut self, extra: Option<N>) -> Drain<N> {
        let inner = match std::mem::take(self) {
            Children::Few(few) => DrainInner::Few(few.into_iter()),
            Children::Many(many) => DrainInner::Many(many.into_values()),
        };
        Drain { extra, inner }
    }
}

/// The owned children of a node being dropped; see [`drop_iteratively`].
pub(crate) struct Drain<N> {
    extra: Option<N>,
    inner: DrainInner<N>,
}

enum DrainInner<N> {
    Few(std::vec::IntoIter<(Level, N)>),
    Many(hash_map::IntoValues<Level, N>),
}

impl<N> Iterator for Drain<N> {
    type Item = N;

    fn next(&mut self) -> Option<N> {
        if let Some(extra) = self.extra.take() {
            return Some(extra);
        }
        match &mut self.inner {
            DrainInner::Few(few) => few.next().map(|(_, child)| child),
            DrainInner::Many(many) => many.next(),
        }
    }
}

/// A trie node whose children can be taken out, so that it can be dropped without recursion.
pub(crate) trait TrieNode: Sized {
    fn has_children(&self) -> bool;
    fn drain_children(&mut self) -> Drain<Self>;
}

/// Drops the descendants of `node` depth first with a heap-allocated stack of one iterator
/// per level, instead of the compiler's recursive drop glue.
///
/// A filter may have 32,768 levels (`/` repeated up to the 65,535-byte limit); dropping such a
/// chain recursively would need megabytes of stack and overflow a runtime's worker thread.
/// Called from each node type's `Drop`; every node it drops has no children left, so the
/// recursion stops after one call.
pub(crate) fn drop_iteratively<N: TrieNode>(node: &mut N) {
    if !node.has_children() {
        return;
    }
    let mut stack = vec![node.drain_children()];
    while let Some(top) = stack.last_mut() {
        match top.next() {
            Some(mut child) => {
                if child.has_children() {
                    stack.push(child.drain_children());
                }
            }
            None => {
                stack.pop();
            }
        }
    }
}

/// Marks, in place of the offset of the next level, that a topic has no levels left.
pub(crate) const NO_MORE_LEVELS: usize = usize::MAX;

/// Splits the level starting at byte `offset` off `text`: returns the level and the offset of
/// the next one, or [`NO_MORE_LEVELS`] if it was the last.
///
/// Walking by offset lets a pending branch of a match be remembered as a `usize` rather than a
/// cloned iterator.
#[inline]
pub(crate) fn split_level(text: &[u8], offset: usize) -> (&[u8], usize) {
    let rest = text.get(offset..).unwrap_or_default();
    match rest.iter().position(|&byte| byte == b'/') {
        Some(end) => (&rest[..end], offset + end + 1),
        None => (rest, NO_MORE_LEVELS),
    }
}

/// A LIFO stack that keeps its first `N` items inline and only allocates beyond them, so a
/// match over an ordinary tree does not touch the allocator.
pub(crate) struct SmallStack<T, const N: usize> {
    inline: [Option<T>; N],
    inline_len: usize,
    spilled: Vec<T>,
}

impl<T, const N: usize> SmallStack<T, N> {
    pub(crate) fn new() -> Self {
        SmallStack {
            inline: std::array::from_fn(|_| None),
            inline_len: 0,
            spilled: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = Some(item);
                self.inline_len += 1;
            }
            None => self.spilled.push(item),
        }
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        // Items spill only while the inline part is full, so the spilled ones are the newest.
        if let Some(item) = self.spilled.pop() {
            return Some(item);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline.get_mut(self.inline_len)?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_compare_by_bytes_whether_inline_or_on_the_heap() {
        let short = Level::new(b"temperature");
        let long = Level::new(b"a-level-longer-than-twenty-two-bytes");
        assert!(matches!(short, Level::Inline { .. }));
        assert!(matches!(long, Level::Heap(_)));
        assert_eq!(short.as_bytes(), b"temperature");
        assert_eq!(long.as_bytes(), b"a-level-longer-than-twenty-two-bytes");
        assert!(matches!(Level::new(&[b'x'; 22]), Level::Inline { .. }));
        assert!(matches!(Level::new(&[b'x'; 23]), Level::Heap(_)));
        assert_eq!(Level::new(b""), Level::new(b""));
        assert!(Level::new(b"$SYS").is_system());
        assert!(!Level::new(b"").is_system());
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn compact_layouts_hold() {
        assert_eq!(size_of::<Level>(), 24);
        assert_eq!(size_of::<Children<u64>>(), 32);
    }

    #[test]
    fn children_switch_between_vector_and_map_and_stay_findable() {
        let mut children: Children<u32> = Children::default();
        for i in 0..100u32 {
            *children.get_or_insert_default(i.to_string().as_bytes()) = i;
            assert_eq!(children.len(), i as usize + 1);
        }
        assert!(matches!(children, Children::Many(_)));
        for i in 0..100u32 {
            assert_eq!(children.get(i.to_string().as_bytes()), Some(&i));
        }
        for i in 0..100u32 {
            assert_eq!(children.remove(i.to_string().as_bytes()), Some(i));
            assert_eq!(children.remove(i.to_string().as_bytes()), None);
        }
        assert!(children.is_empty());
        assert!(matches!(children, Children::Few(_)));
    }

    #[test]
    fn split_level_walks_empty_levels() {
        let text = b"/a//b/";
        let mut offset = 0;
        let mut levels = Vec::new();
        while offset != NO_MORE_LEVELS {
            let (level, next) = split_level(text, offset);
            levels.push(level);
            offset = next;
        }
        assert_eq!(levels, [&b""[..], b"a", b"", b"b", b""]);
    }

    #[test]
    fn small_stack_is_last_in_first_out_across_the_spill() {
        let mut stack: SmallStack<u32, 2> = SmallStack::new();
        for i in 0..5 {
            stack.push(i);
        }
        let popped: Vec<_> = std::iter::from_fn(|| stack.pop()).collect();
        assert_eq!(popped, [4, 3, 2, 1, 0]);
        stack.push(7);
        assert_eq!(stack.pop(), Some(7));
        assert_eq!(stack.pop(), None);
    }
}
