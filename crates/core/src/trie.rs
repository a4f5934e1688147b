//! The subscription tree: one node per topic level, with `+` and `#` children kept apart so a
//! publish walks only the branches that can match. Shared subscriptions (`$share/g/f`) live on
//! the node of their filter `f`, grouped by share name.

use ahash::AHashMap;
use midge_codec::SubscriptionOptions;

use crate::SessionId;

/// One subscription of one session to a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subscriber {
    pub(crate) session: SessionId,
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifier: Option<u32>,
}

#[derive(Debug, Default)]
struct Node {
    children: AHashMap<Box<str>, usize>,
    plus: Option<usize>,
    hash: Option<usize>,
    subscribers: Vec<Subscriber>,
    shared: Vec<SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.subscribers.is_empty()
            && self.shared.is_empty()
    }
}

/// Members of one share group on one filter; delivery goes round robin.
#[derive(Debug)]
pub(crate) struct SharedGroup {
    pub(crate) name: Box<str>,
    /// (filter, group name): identifies the group for messages routed through it.
    pub(crate) key: std::sync::Arc<(Box<str>, Box<str>)>,
    pub(crate) members: Vec<Subscriber>,
    pub(crate) next: usize,
}

/// What a publish matched: plain subscribers (possibly several per session) and shared
/// groups (one member of each is chosen by the caller).
#[derive(Debug, Default)]
pub(crate) struct Matches {
    pub(crate) subscribers: Vec<Subscriber>,
    /// (node index, group index) of each matching share group.
    pub(crate) groups: Vec<(usize, usize)>,
}

impl Matches {
    pub(crate) fn clear(&mut self) {
        self.subscribers.clear();
        self.groups.clear();
    }
}

/// The subscription tree.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
    free: Vec<usize>,
    parent: Vec<(usize, Level)>,
    count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Root,
    Plus,
    Hash,
    Name(Box<str>),
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![Node::default()],
            free: Vec::new(),
            parent: vec![(0, Level::Root)],
            count: 0,
        }
    }
}

impl Tree {
    /// Number of subscriptions (plain and shared memberships).
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    fn alloc(&mut self, parent: usize, level: Level) -> usize {
        if let Some(i) = self.free.pop() {
            if let (Some(n), Some(p)) = (self.nodes.get_mut(i), self.parent.get_mut(i)) {
                *n = Node::default();
                *p = (parent, level);
            }
            i
        } else {
            self.nodes.push(Node::default());
            self.parent.push((parent, level));
            self.nodes.len() - 1
        }
    }

    fn node_for(&mut self, filter: &str) -> usize {
        let mut cur = 0;
        for level in filter.split('/') {
            let existing = self.nodes.get(cur).and_then(|n| match level {
                "+" => n.plus,
                "#" => n.hash,
                name => n.children.get(name).copied(),
            });
            cur = match existing {
                Some(i) => i,
                None => {
                    let lv = match level {
                        "+" => Level::Plus,
                        "#" => Level::Hash,
                        name => Level::Name(name.into()),
                    };
                    let i = self.alloc(cur, lv.clone());
                    if let Some(n) = self.nodes.get_mut(cur) {
                        match lv {
                            Level::Plus => n.plus = Some(i),
                            Level::Hash => n.hash = Some(i),
                            Level::Name(name) => {
                                n.children.insert(name, i);
                            }
                            Level::Root => {}
                        }
                    }
                    i
                }
            };
        }
        cur
    }

    fn find(&self, filter: &str) -> Option<usize> {
        let mut cur = 0;
        for level in filter.split('/') {
            let n = self.nodes.get(cur)?;
            cur = match level {
                "+" => n.plus?,
                "#" => n.hash?,
                name => *n.children.get(name)?,
            };
        }
        Some(cur)
    }

    /// Add or replace a subscription. Returns true if it is new (did not exist before).
    pub(crate) fn insert(&mut self, filter: &str, group: Option<&str>, sub: Subscriber) -> bool {
        let idx = self.node_for(filter);
        let Some(node) = self.nodes.get_mut(idx) else {
            return false;
        };
        let list = match group {
            None => &mut node.subscribers,
            Some(g) => {
                let gi = match node.shared.iter().position(|sg| &*sg.name == g) {
                    Some(gi) => gi,
                    None => {
                        node.shared.push(SharedGroup {
                            name: g.into(),
                            key: std::sync::Arc::new((filter.into(), g.into())),
                            members: Vec::new(),
                            next: 0,
                        });
                        node.shared.len() - 1
                    }
                };
                match node.shared.get_mut(gi) {
                    Some(sg) => &mut sg.members,
                    None => return false,
                }
            }
        };
        if let Some(existing) = list.iter_mut().find(|s| s.session == sub.session) {
            *existing = sub;
            false
        } else {
            list.push(sub);
            self.count += 1;
            true
        }
    }

    /// Remove a subscription. Returns true if it existed.
    pub(crate) fn remove(&mut self, filter: &str, group: Option<&str>, session: SessionId) -> bool {
        let Some(idx) = self.find(filter) else {
            return false;
        };
        let Some(node) = self.nodes.get_mut(idx) else {
            return false;
        };
        let removed = match group {
            None => remove_member(&mut node.subscribers, session),
            Some(g) => match node.shared.iter().position(|sg| &*sg.name == g) {
                Some(gi) => {
                    let removed = node
                        .shared
                        .get_mut(gi)
                        .is_some_and(|sg| remove_member(&mut sg.members, session));
                    if node.shared.get(gi).is_some_and(|sg| sg.members.is_empty()) {
                        node.shared.swap_remove(gi);
                    }
                    removed
                }
                None => false,
            },
        };
        if removed {
            self.count -= 1;
            self.prune(idx);
        }
        removed
    }

    /// Free empty nodes from `idx` up towards the root.
    fn prune(&mut self, mut idx: usize) {
        while idx != 0 {
            let empty = self.nodes.get(idx).is_some_and(Node::is_empty);
            if !empty {
                return;
            }
            let Some((parent, level)) = self.parent.get(idx).cloned() else {
                return;
            };
            if let Some(p) = self.nodes.get_mut(parent) {
                match level {
                    Level::Plus => p.plus = None,
                    Level::Hash => p.hash = None,
                    Level::Name(name) => {
                        p.children.remove(&name);
                    }
                    Level::Root => {}
                }
            }
            self.free.push(idx);
            idx = parent;
        }
    }

    /// Collect every subscription matching `topic` into `out` (cleared first).
    pub(crate) fn matches(&self, topic: &str, out: &mut Matches) {
        out.clear();
        let system = topic.starts_with('$');
        self.walk(0, topic, true, system, out);
    }

    fn collect(&self, idx: usize, out: &mut Matches) {
        if let Some(n) = self.nodes.get(idx) {
            out.subscribers.extend_from_slice(&n.subscribers);
            for gi in 0..n.shared.len() {
                out.groups.push((idx, gi));
            }
        }
    }

    fn walk(&self, idx: usize, rest: &str, first: bool, system: bool, out: &mut Matches) {
        let Some(node) = self.nodes.get(idx) else {
            return;
        };
        // a byte search: `split_once('/')` goes through the char searcher and memchr,
        // several times the cost for the short levels of a topic (this runs per level of
        // every PUBLISH)
        let (level, tail) = match rest.bytes().position(|b| b == b'/') {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                Some(rest.get(i + 1..).unwrap_or_default()),
            ),
            None => (rest, None),
        };
        // '#' matches this level and everything below (and the parent level itself)
        if let Some(h) = node.hash {
            if !(first && system) {
                self.collect(h, out);
            }
        }
        if let Some(&c) = node.children.get(level) {
            match tail {
                Some(t) => self.walk(c, t, false, system, out),
                None => {
                    self.collect(c, out);
                    // "sport/#" also matches "sport"
                    if let Some(h) = self.nodes.get(c).and_then(|n| n.hash) {
                        self.collect(h, out);
                    }
                }
            }
        }
        if let Some(p) = node.plus {
            if !(first && system) {
                match tail {
                    Some(t) => self.walk(p, t, false, system, out),
                    None => {
                        self.collect(p, out);
                        if let Some(h) = self.nodes.get(p).and_then(|n| n.hash) {
                            self.collect(h, out);
                        }
                    }
                }
            }
        }
    }

    /// The share group at a position returned in [`Matches::groups`].
    pub(crate) fn group_mut(&mut self, node: usize, group: usize) -> Option<&mut SharedGroup> {
        self.nodes.get_mut(node)?.shared.get_mut(group)
    }

    /// Where a share group is: (node index, group index), as in [`Matches::groups`].
    pub(crate) fn group_position(&self, filter: &str, name: &str) -> Option<(usize, usize)> {
        let idx = self.find(filter)?;
        let gi = self
            .nodes
            .get(idx)?
            .shared
            .iter()
            .position(|g| &*g.name == name)?;
        Some((idx, gi))
    }

    /// Find a share group by filter and name.
    pub(crate) fn group_by_name(&mut self, filter: &str, name: &str) -> Option<&mut SharedGroup> {
        let idx = self.find(filter)?;
        self.nodes
            .get_mut(idx)?
            .shared
            .iter_mut()
            .find(|g| &*g.name == name)
    }
}

fn remove_member(list: &mut Vec<Subscriber>, session: SessionId) -> bool {
    match list.iter().position(|s| s.session == session) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{TopicFilter, TopicName};

    fn sub(n: u32) -> Subscriber {
        Subscriber {
            session: SessionId(n),
            options: SubscriptionOptions::default(),
            identifier: None,
        }
    }

    fn matched(t: &Tree, topic: &str) -> Vec<u32> {
        let mut m = Matches::default();
        t.matches(topic, &mut m);
        let mut v: Vec<u32> = m.subscribers.iter().map(|s| s.session.0).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn trie_agrees_with_reference_matcher() {
        let filters = [
            "#",
            "+",
            "a",
            "a/b",
            "a/+",
            "a/#",
            "+/b",
            "+/+",
            "a/b/c",
            "a/+/c",
            "+/#",
            "/+",
            "/#",
            "$SYS/#",
            "$SYS/+",
            "a//b",
            "a/b/#",
            "sport/tennis/player1/#",
        ];
        let topics = [
            "a",
            "a/b",
            "a/b/c",
            "b",
            "/a",
            "a/",
            "a//b",
            "$SYS/x",
            "$SYS",
            "x/b",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "/",
        ];
        let mut t = Tree::default();
        for (i, f) in filters.iter().enumerate() {
            t.insert(f, None, sub(i as u32));
        }
        for topic in topics {
            let want: Vec<u32> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    TopicFilter::new(**f)
                        .unwrap()
                        .matches(&TopicName::new(topic).unwrap())
                })
                .map(|(i, _)| i as u32)
                .collect();
            assert_eq!(matched(&t, topic), want, "topic {topic}");
        }
    }

    #[test]
    fn remove_prunes_and_count_tracks() {
        let mut t = Tree::default();
        assert!(t.insert("a/b/c", None, sub(1)));
        assert!(!t.insert("a/b/c", None, sub(1)), "re-subscribe replaces");
        assert!(t.insert("a/+/c", Some("g"), sub(2)));
        assert_eq!(t.len(), 2);
        assert!(t.remove("a/b/c", None, SessionId(1)));
        assert!(!t.remove("a/b/c", None, SessionId(1)));
        assert!(t.remove("a/+/c", Some("g"), SessionId(2)));
        assert_eq!(t.len(), 0);
        assert_eq!(t.nodes.len() - t.free.len(), 1, "only the root is left");
    }
}
