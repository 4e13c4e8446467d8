//! Property test: random trees (files of random sizes, directories, symlinks, FIFOs and hard
//! links, random modes, names and nanosecond times) are copied exactly with `-aH`, whatever the
//! number of core threads (1 to 4, oversubscribed past the CPUs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Kind {
    File {
        len: usize,
        seed: u64,
    },
    Dir,
    Symlink(String),
    Fifo,
    /// A hard link to the n-th file created so far (if any).
    HardLink(usize),
}

#[derive(Clone, Debug)]
struct Node {
    /// Path components (a small alphabet, so names collide and directories nest).
    path: Vec<String>,
    kind: Kind,
    mode: u32,
    mtime: (i64, i64),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        "[a-z ._-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != ".."),
        Just("ünï".to_string()),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let kind = prop_oneof![
        4 => (0usize..300_000, any::<u64>()).prop_map(|(len, seed)| Kind::File { len, seed }),
        2 => Just(Kind::Dir),
        1 => "[a-z./]{0,12}".prop_filter("non-empty", |s| !s.is_empty()).prop_map(Kind::Symlink),
        1 => Just(Kind::Fifo),
        1 => (0usize..8).prop_map(Kind::HardLink),
    ];
    (
        prop::collection::vec(name(), 1..4),
        kind,
        prop_oneof![
            Just(0o644u32),
            Just(0o600),
            Just(0o755),
            Just(0o4755),
            Just(0o2750),
            Just(0o1777),
            Just(0o444)
        ],
        (1_000_000_000i64..1_900_000_000, 0i64..1_000_000_000),
    )
        .prop_map(|(path, kind, mode, mtime)| Node {
            path,
            kind,
            mode,
            mtime,
        })
}

/// Create the tree; entries whose place is taken (a name reused with another type) are skipped.
fn build(root: &Path, nodes: &[Node]) {
    fs::create_dir_all(root).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<(PathBuf, (i64, i64), u32)> = Vec::new();
    for n in nodes {
        let p: PathBuf = n.path.iter().collect();
        let full = root.join(&p);
        let parent = full.parent().unwrap();
        if fs::create_dir_all(parent).is_err() || fs::symlink_metadata(&full).is_ok() {
            continue;
        }
        match &n.kind {
            Kind::File { len, seed } => {
                write(&full, &content(*seed, *len));
                chmod(&full, n.mode);
                set_times(&full, n.mtime.0, n.mtime.1);
                files.push(full);
            }
            Kind::Dir => {
                fs::create_dir(&full).unwrap();
                dirs.push((full, n.mtime, n.mode & 0o7777 | 0o700));
            }
            Kind::Symlink(t) => {
                std::os::unix::fs::symlink(t, &full).unwrap();
                set_times(&full, n.mtime.0, n.mtime.1);
            }
            Kind::Fifo => {
                mkfifo(&full);
                chmod(&full, n.mode & 0o777);
                set_times(&full, n.mtime.0, n.mtime.1);
            }
            Kind::HardLink(i) => {
                if let Some(target) = files.get(*i) {
                    fs::hard_link(target, &full).unwrap();
                }
            }
        }
    }
    // Directory modes and times last, deepest first (children changed them).
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (d, t, mode) in dirs {
        chmod(&d, mode);
        set_times(&d, t.0, t.1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_trees_copy_exactly(nodes in prop::collection::vec(node(), 1..40), threads in 1usize..=4) {
        let s = Scratch::new();
        let src = s.path().join("src");
        build(&src, &nodes);
        let dst = s.path().join("dst");
        let t = format!("--threads={threads}");
        let out = copy_contents(&["-aH", &t, "--no-pin"], &src, &dst);
        prop_assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let d = treediff::diff(&src, &dst, treediff::Check::archive());
        prop_assert!(d.is_empty(), "{:#?}", d);
        // And a second run changes nothing at all.
        let out = copy_contents(&["-aH", "-i", &t, "--no-pin"], &src, &dst);
        prop_assert_eq!(code(&out), 0);
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        prop_assert!(listed.trim().is_empty(), "second run changed: {}", listed);
    }
}
