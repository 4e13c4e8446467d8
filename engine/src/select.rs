//! `--files-from` and `-R/--relative`: the paths below a transfer root that make up the
//! transfer, as a tree of names, and what the walk does in each directory of that tree.
//!
//! A root with a [`Selection`] is walked only along the selected paths: a directory on the way
//! to a selected path (an *implied* directory) is entered and made, but only the names the tree
//! holds are looked up in it (one `lstat` each, no listing); a selected directory is walked
//! whole with `-r`, its immediate entries only when it was named with a trailing slash, and
//! otherwise made empty, as rsync's `--files-from` (which implies `--dirs`) does.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::sync::Arc;

/// The selected paths of one transfer root.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Node 0 is the root itself.
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: BTreeMap<CString, usize>,
    /// Named in the list (not only on the way to something named).
    listed: bool,
    /// Named with a trailing slash: its immediate entries belong to the transfer.
    contents: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Self::new()
    }
}

impl Selection {
    /// An empty selection (nothing below the root).
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }

    /// Select `path` (relative to the root, already cleaned: no `.`, `..` or empty components;
    /// empty means the root itself). `contents`: it was named with a trailing slash.
    pub fn add(&mut self, path: &[u8], contents: bool) {
        let mut at = 0;
        for part in path.split(|&c| c == b'/').filter(|p| !p.is_empty()) {
            let name = CString::new(part).expect("a path component holds no NUL");
            at = match self.nodes[at].children.get(&name) {
                Some(&i) => i,
                None => {
                    self.nodes.push(Node::default());
                    let i = self.nodes.len() - 1;
                    self.nodes[at].children.insert(name, i);
                    i
                }
            };
        }
        let n = &mut self.nodes[at];
        n.listed = true;
        n.contents |= contents;
    }

    /// How many paths were selected (for messages and tests).
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.listed).count()
    }

    /// Whether nothing was selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names selected directly below node `at`.
    pub(crate) fn children(&self, at: usize) -> impl Iterator<Item = &CStr> {
        self.nodes[at].children.keys().map(CString::as_c_str)
    }

    /// The child `name` of node `at`, if selected.
    pub(crate) fn child(&self, at: usize, name: &CStr) -> Option<usize> {
        self.nodes[at].children.get(name).copied()
    }

    /// Whether node `at` was named itself (else it is only on the way to something named).
    pub(crate) fn listed(&self, at: usize) -> bool {
        self.nodes[at].listed
    }

    /// The named paths below node `at` (relative to it, `a/b`), depth first, until `f` returns
    /// `true` for one; whether it did.
    pub(crate) fn any_listed_below(&self, at: usize, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let mut path = Vec::new();
        self.walk_listed(at, &mut path, f)
    }

    fn walk_listed(&self, at: usize, path: &mut Vec<u8>, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        for (name, &i) in &self.nodes[at].children {
            let len = path.len();
            if len > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            let hit = (self.nodes[i].listed && f(path)) || self.walk_listed(i, path, f);
            path.truncate(len);
            if hit {
                return true;
            }
        }
        false
    }
}

/// What the walk takes from one source directory.
#[derive(Clone, Debug)]
pub(crate) enum Scope {
    /// Everything below it (no selection, or a selected directory with `-r`).
    All,
    /// Everything below it (a selected directory with `-r`) with named paths further down, below
    /// node `.1`: those are sent also through directories the rules exclude, as rsync takes each
    /// named path on its own.
    AllWith(Arc<Selection>, usize),
    /// Only the names the selection holds below node `.1`, each looked up by name.
    Names(Arc<Selection>, usize),
    /// Its whole listing, one level: subdirectories not selected themselves are made empty.
    Contents(Arc<Selection>, usize),
    /// Nothing: the directory is made (with its attributes) and left empty.
    Empty,
}

impl Scope {
    /// The scope of a transfer root walked by `sel`.
    pub(crate) fn root(sel: &Arc<Selection>, recursive: bool) -> Scope {
        Self::of(sel, 0, recursive)
    }

    fn of(sel: &Arc<Selection>, at: usize, recursive: bool) -> Scope {
        let n = &sel.nodes[at];
        if n.listed && recursive {
            Self::all_below(sel, at)
        } else if n.listed && n.contents {
            Scope::Contents(Arc::clone(sel), at)
        } else if !n.children.is_empty() {
            Scope::Names(Arc::clone(sel), at)
        } else {
            Scope::Empty
        }
    }

    /// [`Scope::All`], or [`Scope::AllWith`] where named paths lie below node `at`.
    fn all_below(sel: &Arc<Selection>, at: usize) -> Scope {
        if sel.nodes[at].children.is_empty() {
            Scope::All
        } else {
            Scope::AllWith(Arc::clone(sel), at)
        }
    }

    /// The scope of subdirectory `name`, and whether it is only implied (on the way to a
    /// selected path, not selected or listed itself).
    pub(crate) fn child(&self, name: &CStr, recursive: bool) -> (Scope, bool) {
        match self {
            Scope::All => (Scope::All, false),
            Scope::AllWith(sel, at) => match sel.child(*at, name) {
                Some(i) => (Self::all_below(sel, i), false),
                None => (Scope::All, false),
            },
            Scope::Empty => (Scope::Empty, false),
            Scope::Names(sel, at) => match sel.child(*at, name) {
                Some(i) => (Self::of(sel, i, recursive), !sel.listed(i)),
                None => (Scope::Empty, false),
            },
            Scope::Contents(sel, at) => match sel.child(*at, name) {
                Some(i) => (Self::of(sel, i, recursive), false),
                None => (Scope::Empty, false),
            },
        }
    }

    /// For subdirectory `name` named itself with named paths below it: the scope of those paths
    /// alone, which it gets when the rules exclude it (rsync still sends each path below it, the
    /// directory on their way as an implied one).
    /// Under [`Scope::AllWith`] any subdirectory with named paths below it (named itself or
    /// not) is such a way.
    pub(crate) fn named_below(&self, name: &CStr) -> Option<Scope> {
        let (sel, i) = match self {
            Scope::Names(sel, at) | Scope::Contents(sel, at) => {
                // (One only on the way is implied already, never excluded.)
                let i = sel.child(*at, name).filter(|&i| sel.listed(i))?;
                (sel, i)
            }
            Scope::AllWith(sel, at) => (sel, sel.child(*at, name)?),
            _ => return None,
        };
        (!sel.nodes[i].children.is_empty()).then(|| Scope::Names(Arc::clone(sel), i))
    }

    /// The selection node of subdirectory `name` when [`Scope::named_below`] gives it a scope.
    pub(crate) fn named_below_at(&self, name: &CStr) -> Option<(Arc<Selection>, usize)> {
        match self.named_below(name)? {
            Scope::Names(sel, i) => Some((sel, i)),
            _ => None,
        }
    }

    /// Whether the directory's whole listing is in the transfer (so `--delete` may compare the
    /// destination with it): walked whole, or its contents selected (`dir/`, `-d`).
    pub(crate) fn lists_all(&self) -> bool {
        matches!(self, Scope::All | Scope::AllWith(..) | Scope::Contents(..))
    }
}

/// rsync's reading of one `--files-from` name: leading slashes and `.` components dropped,
/// `..` going up no further than the root, a trailing slash kept as "its contents too". The
/// first `/./` in the name splits it into a prefix (added to the source directory) and the path
/// that is replicated. Returns `(prefix, path, contents)`.
pub fn clean_list_name(line: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
    let mut line = line;
    while let Some(rest) = line.strip_prefix(b"/") {
        line = rest;
    }
    while let Some(rest) = line.strip_prefix(b"./") {
        line = rest;
    }
    let (prefix, rest) = match find(line, b"/./") {
        Some(i) => (&line[..i], &line[i + 3..]),
        None => (&b""[..], line),
    };
    let contents = rest.is_empty()
        || rest.ends_with(b"/")
        || rest.ends_with(b"/.")
        || rest == b"."
        || rest == b"..";
    let clean = |p: &[u8]| -> Vec<u8> {
        let mut parts: Vec<&[u8]> = Vec::new();
        for c in p.split(|&c| c == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        parts.join(&b'/')
    };
    (clean(prefix), clean(rest), contents)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_are_cleaned_as_rsync_cleans_them() {
        let c = |s: &str| {
            let (p, r, t) = clean_list_name(s.as_bytes());
            (
                String::from_utf8(p).unwrap(),
                String::from_utf8(r).unwrap(),
                t,
            )
        };
        assert_eq!(c("a/b/f1"), ("".into(), "a/b/f1".into(), false));
        assert_eq!(c("/e/f2"), ("".into(), "e/f2".into(), false));
        assert_eq!(c("d/"), ("".into(), "d".into(), true));
        assert_eq!(c("x/../y/yf"), ("".into(), "y/yf".into(), false));
        assert_eq!(c("../up"), ("".into(), "up".into(), false));
        assert_eq!(c("./a/./b/f9"), ("a".into(), "b/f9".into(), false));
        assert_eq!(c("a/./b/./f1"), ("a".into(), "b/f1".into(), false));
        assert_eq!(c("."), ("".into(), "".into(), true));
    }

    #[test]
    fn scopes_follow_the_selection() {
        let mut s = Selection::new();
        s.add(b"a/b/f1", false);
        s.add(b"c", false);
        s.add(b"d", true);
        s.add(b"d/sub/deep", false);
        let s = Arc::new(s);
        assert_eq!(s.len(), 4);
        let root = Scope::root(&s, false);
        assert!(matches!(root, Scope::Names(_, 0)));
        let names: Vec<_> = s.children(0).map(|n| n.to_owned()).collect();
        assert_eq!(names, [c"a", c"c", c"d"]);
        let (a, implied) = root.child(c"a", false);
        assert!(implied && matches!(a, Scope::Names(..)));
        assert!(matches!(root.child(c"c", false), (Scope::Empty, false)));
        assert!(matches!(root.child(c"c", true), (Scope::All, false)));
        let (d, _) = root.child(c"d", false);
        assert!(matches!(d, Scope::Contents(..)));
        // A subdirectory of a listed `d/` not named itself is made empty; one on the way to a
        // named path is walked by names.
        assert!(matches!(d.child(c"other", false), (Scope::Empty, false)));
        assert!(matches!(d.child(c"sub", false), (Scope::Names(..), false)));
        assert!(!root.lists_all() && Scope::All.lists_all() && d.lists_all());
        // With -r a named directory with named paths below it keeps them (they go through
        // excluded directories); one without is walked as any.
        let (d, _) = root.child(c"d", true);
        assert!(matches!(d, Scope::AllWith(_, _)) && d.lists_all());
        assert!(matches!(d.named_below(c"sub"), Some(Scope::Names(..))));
        assert!(d.named_below(c"other").is_none());
        assert!(matches!(d.child(c"other", true), (Scope::All, false)));
    }
}
