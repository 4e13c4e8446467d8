//! Sync behaviour against rsync on the same trees: `--delete` (and `--delete-after`,
//! `--delete-excluded`, `--max-delete`), filter rules, `-n` (changes nothing), `-i` (rsync's
//! change codes), `-c`, `-u`, `--existing`, `--ignore-existing`, `--max-size`/`--min-size`,
//! `--remove-source-files`, `-b`/`--backup-dir`/`--suffix`, `-O`/`-J`, `--chmod`,
//! `--usermap`/`--groupmap`/`--chown`, `--ignore-missing-args`, `--delete-missing-args`,
//! `--modify-window`, `-m/--prune-empty-dirs`, `--files-from`/`-R`, `--stats`, `--copy-devices`,
//! `--write-devices`, and the itemized lines of rewritten entries (`T`) and renamed files.
//! Where rsync is the oracle, the test runs `rsync -n -i` (or a real rsync copy) on an identical
//! tree and compares.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `rsync ARGS SRC/ DST` (as root: the test command installs rsync).
fn rsync(flags: &[&str], src: &Path, dst: &Path) -> Output {
    Command::new("rsync")
        .args(flags)
        .arg(format!("{}/", src.display()))
        .arg(dst)
        .output()
        .expect("run rsync")
}

/// `rsync FLAGS SRC/ DST` or the same with arsync, by `tool`'s name.
fn by_tool(tool: &str, flags: &[&str], src: &Path, dst: &Path) -> Output {
    if tool == "rsync" {
        rsync(flags, src, dst)
    } else {
        copy_contents(flags, src, dst)
    }
}

/// Run `each` for rsync, then for arsync, assert that arsync's outcome is rsync's (`what` names
/// the case in the message), and return it.
fn same_as_rsync<T: PartialEq + std::fmt::Debug>(
    what: &dyn std::fmt::Debug,
    mut each: impl FnMut(&str) -> T,
) -> T {
    let want = each("rsync");
    let got = each("arsync");
    assert_eq!(got, want, "{what:?}");
    got
}

/// [`same_as_rsync`] of `TOOL ARGS SRC/ BASE/TOOL{i}` by exit code and the destination's
/// listing, `prepare` making each destination's starting state first.
fn same_listing_as_rsync(
    base: &Path,
    i: usize,
    (args, src): (&[&str], &Path),
    prepare: impl Fn(&Path),
) -> (i32, BTreeSet<String>) {
    same_as_rsync(&args, |tool| {
        let dst = base.join(format!("{tool}{i}"));
        prepare(&dst);
        let out = by_tool(tool, args, src, &dst);
        (code(&out), listing(&dst))
    })
}

/// `rsync`, or this build's arsync, by `tool`'s name: a command to give arguments to.
fn tool_command(tool: &str) -> Command {
    Command::new(if tool == "rsync" {
        "rsync"
    } else {
        env!("CARGO_BIN_EXE_arsync")
    })
}

/// A directory of its own for one run (`base/name`), with an empty `DEST` in it when `premade`.
fn run_dir(base: &Path, name: &str, premade: bool) -> PathBuf {
    let at = base.join(name);
    fs::create_dir_all(&at).unwrap();
    if premade {
        fs::create_dir(at.join("DEST")).unwrap();
    }
    at
}

/// `args` (sources relative to `base`, the last one a destination relative to `at`) as paths.
fn sources_into(base: &Path, at: &Path, args: &[&str]) -> Vec<PathBuf> {
    let (dest, sources) = args.split_last().unwrap();
    let mut full: Vec<PathBuf> = sources.iter().map(|a| base.join(a)).collect();
    full.push(at.join(dest));
    full
}

/// The item lines of an `-i` run, sorted, without the "created directory" notice; a hard-link
/// line keeps only its own name (which name leads a group is an implementation detail).
fn items(o: &Output) -> BTreeSet<String> {
    text(o)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("created directory"))
        .map(|l| match l.split_once(" => ") {
            Some((a, _)) if l.starts_with('h') => a.to_string(),
            _ => l.to_string(),
        })
        .collect()
}

/// Every path under `root` with its type letter, for comparing what two tools produced.
fn listing(root: &Path) -> BTreeSet<String> {
    treediff::walk(root)
        .unwrap()
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| {
            let m = fs::symlink_metadata(root.join(&p)).unwrap();
            let t = if m.is_dir() {
                'd'
            } else if m.file_type().is_symlink() {
                'l'
            } else {
                'f'
            };
            format!("{t} {}", p.display())
        })
        .collect()
}

/// Files at `paths` below `root` (their directories made), each holding its own path.
fn named_files(root: &Path, paths: &[&str]) {
    for f in paths {
        fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
        write(&root.join(f), f.as_bytes());
    }
}

/// Old whole-second mtimes on everything below `root` (symlinks too), one second apart from
/// `base`: rsync compares times to the second, so an entry made in the second its source was
/// made would look up to date to it.
fn age(root: &Path, base: i64) {
    for (i, p) in treediff::walk(root).unwrap().iter().rev().enumerate() {
        set_times(&root.join(p), base + i as i64, 0);
    }
}

/// Everything about a tree that any change would disturb: names, types, inodes, sizes, modes,
/// mtimes and ctimes (nanoseconds), symlink targets, file contents.
fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in treediff::walk(root).unwrap() {
        let full = if p.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&p)
        };
        let m = fs::symlink_metadata(&full).unwrap();
        let extra = if m.is_file() {
            format!("{:?}", fs::read(&full).unwrap())
        } else if m.file_type().is_symlink() {
            fs::read_link(&full).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} ino={} mode={:o} size={} m={}.{} c={}.{} x={:?} {extra}",
            p.display(),
            m.ino(),
            m.mode(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            treediff::xattrs(&full)
        ));
    }
    out
}

/// A source tree for the filter and delete cases: object files, caches, logs at several depths,
/// a symlink, names with classes of characters.
fn filter_tree(root: &Path) {
    for (p, data) in [
        ("top.txt", "t"),
        ("a.o", "o"),
        ("keep.log", "k"),
        ("x.log", "x"),
        ("ab.txt", "ab"),
        ("cd.txt", "cd"),
        ("src/main.c", "c"),
        ("src/main.o", "o"),
        ("src/cache/blob", "b"),
        ("src/deep/er/z", "z"),
        ("src/deep/er/y.c", "y"),
        ("cache", "a file named cache"),
        ("doc/cache/page", "p"),
        ("doc/readme", "r"),
        ("keep/one", "1"),
        ("keep/sub/two", "2"),
        ("a/b/z", "z"),
        ("a/z", "z"),
    ] {
        let f = root.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        write(&f, data.as_bytes());
    }
    symlink("top.txt", root.join("link.o")).unwrap();
}

#[test]
fn filters_select_what_rsync_selects() {
    if !require_rsync("filters_select_what_rsync_selects") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    filter_tree(&src);
    let list = s.path().join("excludes.txt");
    fs::write(&list, "# comment\n; another\n\n*.log\n/doc/\n").unwrap();
    let list_arg = format!("--exclude-from={}", list.display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["--exclude=*.o"],
        vec!["--exclude=/top.txt", "--exclude=/src/main.c"],
        vec!["--exclude=cache/"],
        vec!["--exclude=cache"],
        vec!["--include=*/", "--include=*.c", "--exclude=*"],
        vec!["--exclude=src/**/z"],
        vec!["--exclude=a/**/z"],
        vec!["--filter=- [ab]?.txt"],
        vec!["--filter=+ /keep/***", "--filter=- /*"],
        vec!["--include=keep.log", "--exclude=*.log"],
        vec!["--exclude=deep/er"],
        vec!["--filter=-! */", "--filter=+ *"],
        vec!["--exclude=*", "--include=*.c"],
        vec![&list_arg],
        vec!["--filter=exclude *.o", "--filter=!", "--exclude=*.c"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a", "-i"];
        args.extend(flags.iter().copied());
        // What rsync would transfer into an empty destination, and what it actually copies.
        let want_dst = s.path().join(format!("rsync{i}"));
        let got_dst = s.path().join(format!("arsync{i}"));
        let mut dry = args.clone();
        dry.push("-n");
        let want = rsync(&dry, &src, &want_dst);
        assert_eq!(code(&want), 0, "rsync {flags:?}: {}", err(&want));
        let got = copy_contents(&dry, &src, &got_dst);
        assert_eq!(code(&got), 0, "arsync {flags:?}: {}", err(&got));
        assert_eq!(items(&got), items(&want), "-n -i with {flags:?}");
        assert!(!got_dst.exists(), "-n created {}", got_dst.display());
        let want = rsync(&args, &src, &want_dst);
        assert_eq!(code(&want), 0, "{}", err(&want));
        let got = copy_contents(&args, &src, &got_dst);
        assert_eq!(code(&got), 0, "{}", err(&got));
        assert_eq!(listing(&got_dst), listing(&want_dst), "copy with {flags:?}");
    }
    // The same anchoring when the source is named without a trailing slash (the transfer root
    // is then its parent: `/src/...`).
    let named = |tool: &str, dst: &Path| -> Output {
        let mut c = if tool == "rsync" {
            Command::new("rsync")
        } else {
            arsync()
        };
        c.args(["-a", "--exclude=/src/top.txt", "--exclude=src/src/deep/"])
            .arg(&src)
            .arg(dst)
            .output()
            .unwrap()
    };
    let (w, g) = (s.path().join("nw"), s.path().join("ng"));
    assert_eq!(code(&named("rsync", &w)), 0);
    assert_eq!(code(&named("arsync", &g)), 0);
    assert_eq!(listing(&g), listing(&w));
    assert!(!g.join("src/top.txt").exists() && g.join("src/src/main.c").exists());
}

/// Two rule modifiers arsync refused before session 26, against rsync: `p` (perishable: such a
/// rule, and `-C`'s default list, does not keep a directory that is being deleted, so `-C
/// --delete` removes a directory gone from the source with its object files and `.git`, where
/// arsync left it with "cannot delete non-empty directory") and `/` (matched against the
/// absolute path, on the sending side the source's and on the receiving side the
/// destination's).
#[test]
fn perishable_and_absolute_rules_select_and_delete_as_rsync_does() {
    if !require_rsync("perishable_and_absolute_rules_select_and_delete_as_rsync_does") {
        return;
    }
    let s = Scratch::new();
    let base = fs::canonicalize(s.path()).unwrap();
    let src = base.join("src");
    filter_tree(&src);
    // What the destination held: a directory gone from the source with build output and a
    // repository in it; a directory where the source has a file; extraneous files.
    let dest = |d: &Path| {
        named_files(
            d,
            &[
                "gone/x.o",
                "gone/.git/config",
                "gone/sub/core",
                "gone/sub/y.o",
                "top.txt/.git/HEAD",
                "top.txt/z.o",
                "spare.o",
                "spare.txt",
                "keep/mine",
            ],
        );
    };
    let abs_src = format!("--filter=-/ {}/src/*/main.c", base.display());
    let abs_dst = format!("--filter=P/ {}/*/keep/mine", base.display());
    let abs_tail = "--filter=-/ src/doc".to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["-C", "--delete"],
        vec!["-C", "--force"],
        vec!["-C", "--delete", "--delete-excluded"],
        vec!["--filter=-p *.o", "--filter=-p .git/", "--delete"],
        vec!["--filter=-p *.o", "--exclude=core", "--delete"],
        vec!["--filter=-p *.o", "--filter=-p .git/", "--force"],
        vec![
            "--filter=Pp *.o",
            "--filter=-p .git/",
            "--filter=- core",
            "--delete",
        ],
        vec![&abs_src, &abs_dst, "--delete"],
        vec![&abs_tail, "--delete"],
        vec!["--filter=-/ /nowhere/*", "--delete"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        let (want, got) = (
            base.join(format!("rsync{i}")),
            base.join(format!("arsync{i}")),
        );
        dest(&want);
        dest(&got);
        let w = rsync(&args, &src, &want);
        let g = copy_contents(&args, &src, &got);
        assert_eq!(code(&g), code(&w), "{flags:?}: {} / {}", err(&g), err(&w));
        assert_eq!(listing(&got), listing(&want), "{flags:?}");
    }
    // The cases do what they are meant to: `gone` goes under -C --delete, the absolute rules
    // leave out src/*/main.c and keep keep/mine.
    assert!(!base.join("arsync0/gone").exists());
    assert!(base.join("arsync0/spare.o").exists());
    assert!(!base.join("arsync7/src/main.c").exists());
    assert!(base.join("arsync7/keep/mine").exists());
    assert!(!base.join("arsync8/doc").exists());
}

/// A pattern that starts with `**` (rsync's `FILTRULE_WILD2_PREFIX`) also matches with its `**/`
/// standing for no directory at all: `--exclude='**/node_modules/'` leaves out the top-level
/// `node_modules` too, and `**/x/b` the top-level `x/b`. Before, arsync matched such patterns
/// only below the top, so `SRC/ DEST/` with `--exclude='**/.git/'` copied `SRC/.git`.
#[test]
fn double_star_prefixed_patterns_match_at_the_top_as_in_rsync() {
    if !require_rsync("double_star_prefixed_patterns_match_at_the_top_as_in_rsync") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(
        &src,
        &[
            "b",
            "x/b",
            "x/y/b",
            "a/x/b",
            "node_modules/m.js",
            "web/node_modules/n.js",
            "web/app.js",
            "keep",
            "d/keep",
        ],
    );
    let cases: Vec<Vec<&str>> = vec![
        vec!["--exclude=**/b"],
        vec!["--exclude=**/x/b"],
        vec!["--exclude=**/node_modules/"],
        vec!["--exclude=**/x/***"],
        vec!["--exclude=/**/b"],
        vec!["--exclude=**b"],
        vec!["--include=**/keep", "--include=*/", "--exclude=*"],
        vec!["--filter=P **/b", "--delete"],
        vec!["--exclude=**/b", "--delete", "--delete-excluded"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        same_listing_as_rsync(base, i, (&args, &src), |dst| {
            named_files(dst, &["q/b", "spare"])
        });
    }
    // The cases do what they are meant to.
    assert!(!base.join("arsync0/b").exists() && !base.join("arsync0/a/x/b").exists());
    assert!(
        !base.join("arsync2/node_modules").exists() && base.join("arsync2/web/app.js").exists()
    );
    assert!(base.join("arsync4/b").exists() && !base.join("arsync4/x/b").exists());
    assert!(base.join("arsync7/q/b").exists() && !base.join("arsync7/spare").exists());
    assert!(!base.join("arsync8/q/b").exists() && base.join("arsync8/x/y").exists());
}

/// A directory being deleted (gone from the source, or in the way of a file) is emptied under
/// its own per-directory merge files too, read from the destination, as rsync reads them
/// (`push_local_filters` in `delete_dir_contents`): what a `.cvsignore` or `.rsync-filter` in
/// it excludes keeps it. Before session 26 arsync applied only what the directory inherited and
/// deleted all of it.
#[test]
fn a_directory_being_deleted_is_emptied_under_its_own_merge_files() {
    if !require_rsync("a_directory_being_deleted_is_emptied_under_its_own_merge_files") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    filter_tree(&src);
    let dest = |d: &Path| {
        named_files(
            d,
            &[
                "gone/keep1",
                "gone/other",
                "gone/x.o",
                "gone/sub/mine2",
                "gone/sub/other",
                "gone/deeper/x/mine3",
                "top.txt/z.o",
                "top.txt/y.c",
            ],
        );
        write(&d.join("gone/.cvsignore"), b"keep* other.o\n");
        write(&d.join("gone/sub/.rsync-filter"), b"- mine*\n");
        write(&d.join("gone/deeper/.rsync-filter"), b"- x/mine*\n");
        write(&d.join("top.txt/.cvsignore"), b"y.c\n");
    };
    let cases: [&[&str]; 6] = [
        &["-C", "--delete"],
        &["-C", "--force"],
        &["-F", "--delete"],
        &["-FF", "--delete"],
        &["-F", "--delete-after"],
        &["-C", "-F", "--delete", "--delete-excluded"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        let (want, got) = (
            s.path().join(format!("r{i}")),
            s.path().join(format!("a{i}")),
        );
        dest(&want);
        dest(&got);
        let w = rsync(&args, &src, &want);
        let g = copy_contents(&args, &src, &got);
        assert_eq!(code(&g), code(&w), "{flags:?}: {} / {}", err(&g), err(&w));
        assert_eq!(listing(&got), listing(&want), "{flags:?}");
    }
    // What the files kept: -C --delete keeps gone/keep1 (its .cvsignore), not gone/x.o; -C keeps
    // top.txt a directory (its .cvsignore names y.c), so the file cannot go there; -F keeps
    // gone/sub/mine2 and gone/deeper/x/mine3.
    assert!(s.path().join("a0/gone/keep1").exists());
    assert!(!s.path().join("a0/gone/x.o").exists());
    assert!(s.path().join("a0/top.txt/y.c").exists());
    assert!(s.path().join("a2/gone/sub/mine2").exists());
    assert!(s.path().join("a2/gone/deeper/x/mine3").exists());
    assert!(!s.path().join("a2/gone/other").exists());
}

/// A merge file may hold `dir-merge` rules of its own (nested), as rsync allows: each reads its
/// file in the directory where it was named and below, its rules tried where it stands. Before
/// session 26 arsync refused such a file ("not supported") and went on without its rules.
/// And a per-directory merge file with a bad rule stops the run with rsync's code 1 ("syntax
/// or usage error"), where arsync went on without the file's rules (which could copy what they
/// exclude, or with `--delete` delete what they protect) and ended with 23.
#[test]
fn nested_dir_merges_apply_and_a_bad_rule_stops_the_run_as_in_rsync() {
    if !require_rsync("nested_dir_merges_apply_and_a_bad_rule_stops_the_run_as_in_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(
        &src,
        &[
            "a1", "a9", "x1", "b1", "d/a1", "d/a2", "d/b1", "d/c1", "d/x.log", "d/x2", "d/dd/a1",
            "d/dd/c2", "d/dd/b3", "e/q1", "e/z1", "e/k1", "e/sub/q2", "e/sub/k2", "e/sub/z2",
        ],
    );
    for (file, text) in [
        (".rsync-filter", "- *.log\n+ a9\n: .inner\n- x*\n"),
        (".inner", "- a*\n"),
        ("d/.inner", "+ a1\n- b*\n"),
        ("d/dd/.inner", "- c*\n"),
        ("e/.rsync-filter", "dir-merge,n .local\n- z*\n"),
        ("e/.local", "- q*\n"),
        ("e/sub/.local", "- k*\n"),
        // Names a merge already in force: left out, as rsync leaves it.
        ("e/sub/.rsync-filter", ": .rsync-filter\n- k2\n"),
    ] {
        write(&src.join(file), text.as_bytes());
    }
    let global = s.path().join("global.rules");
    write(&global, b"+ a9\n: .inner\n- x*\n");
    let global_arg = format!("--filter=. {}", global.display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["-F"],
        vec!["-FF"],
        vec!["--filter=:e .rsync-filter"],
        vec![&global_arg],
        vec!["-F", "--delete"],
        vec!["-F", "--delete-after"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        let (want, got) = (
            s.path().join(format!("r{i}")),
            s.path().join(format!("a{i}")),
        );
        // (A destination to delete from: extraneous names the nested rules protect or not.)
        named_files(&want, &["d/b9", "d/zz", "e/sub/k9"]);
        named_files(&got, &["d/b9", "d/zz", "e/sub/k9"]);
        let w = rsync(&args, &src, &want);
        let g = copy_contents(&args, &src, &got);
        assert_eq!(code(&w), 0, "{flags:?}: {}", err(&w));
        assert_eq!(code(&g), 0, "{flags:?}: {}", err(&g));
        assert_eq!(listing(&got), listing(&want), "{flags:?}");
    }
    // The nested rules did their part: d/a2 left out by d/.inner's "- a*" inherited from the
    // top's .inner, d/a1 kept by d/.inner's "+ a1"; e/sub/k2 left out by e/sub/.local.
    assert!(!s.path().join("a0/d/a2").exists() && s.path().join("a0/d/a1").exists());
    assert!(!s.path().join("a0/e/sub/k2").exists());

    // A bad rule in a per-directory file: exit 1 from both, and arsync says which file.
    write(&src.join("d/dd/.inner"), b"this is no rule\n");
    let (want, got) = (s.path().join("rbad"), s.path().join("abad"));
    let w = rsync(&["-a", "-F", "--delete"], &src, &want);
    let g = copy_contents(&["-a", "-F", "--delete"], &src, &got);
    assert_eq!(code(&w), 1, "{}", err(&w));
    assert_eq!(code(&g), 1, "{}", err(&g));
    assert!(
        err(&g).contains(".inner") && err(&g).contains("d/dd"),
        "{}",
        err(&g)
    );
    assert!(
        err(&g).contains("syntax or usage error (code 1)"),
        "{}",
        err(&g)
    );
}

/// A directory named on the command line without a trailing slash (`SRC DEST/`) meets whatever
/// `DEST/SRC` is: a file or a symlink there is replaced by the directory, as rsync replaces it,
/// and a symlink is never followed (but with `-K`, to a directory). Before, a file there failed
/// the source (`opendir ...: Not a directory`, exit 11) and a symlink to a directory was
/// followed: the copy went into the symlink's target, outside the destination.
#[test]
fn a_non_directory_where_a_named_directory_goes_is_replaced_not_followed() {
    if !require_rsync("a_non_directory_where_a_named_directory_goes_is_replaced_not_followed") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    named_files(&base.join("src"), &["d/f", "e/g"]);
    let cases: Vec<Vec<&str>> = vec![
        vec!["-a"],
        vec!["-a", "-i", "-n"],
        vec!["-a", "-b"],
        vec!["-a", "--delete"],
        vec!["-a", "-d", "--no-r"],
        // (rsync 3.5 follows the symlink under -K but then fails to stat `e/g`: "Too many
        // levels of symbolic links", 23; arsync's outcome is checked below.)
        vec!["-a", "-K"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let run = |tool: &str| {
            let at = run_dir(base, &format!("{tool}{i}"), true);
            write(&at.join("DEST/d"), b"a file where a directory goes");
            fs::create_dir(at.join("elsewhere")).unwrap();
            symlink("../elsewhere", at.join("DEST/e")).unwrap();
            let out = tool_command(tool)
                .args(flags)
                .args(sources_into(base, &at, &["src/d", "src/e", "DEST/"]))
                .output()
                .unwrap();
            let said: BTreeSet<String> = items(&out)
                .into_iter()
                .filter(|l| !l.starts_with(".d"))
                .collect();
            (code(&out), said, listing(&at))
        };
        if flags.contains(&"-K") {
            assert_eq!(run("arsync").0, 0);
        } else {
            same_as_rsync(flags, run);
        }
    }
    assert!(base.join("arsync0/DEST/d/f").exists() && base.join("arsync0/DEST/e/g").exists());
    assert!(
        fs::read_dir(base.join("arsync0/elsewhere"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(base.join("arsync2/DEST/d~").exists());
    assert!(base.join("arsync5/elsewhere/g").exists() && base.join("arsync5/DEST/d/f").exists());
}

/// `dir-merge /NAME` (`-F`) reads the merge files above the transfer root too; their anchored
/// rules are anchored where each file stands, wildcards included, as rsync matches them. Before,
/// the transfer root's own file (`src/.rsync-filter` for `src/e DEST/`) lost every anchored rule,
/// and one further up lost those with a wildcard in the part above the transfer root.
#[test]
fn anchored_rules_in_merge_files_above_the_transfer_root_apply_as_in_rsync() {
    if !require_rsync("anchored_rules_in_merge_files_above_the_transfer_root_apply_as_in_rsync") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    named_files(
        &base.join("top/src/e"),
        &["a/x/f", "b/g", "c/h", "d/i", "k"],
    );
    let cases: Vec<(&str, &str)> = vec![
        ("top/src/.rsync-filter", "- /e/a/x/\n- /e/k\n"),
        ("top/src/.rsync-filter", "- /**a/x/\n- /*/b\n"),
        ("top/.rsync-filter", "- /src/e/b\n- /s*/e/c\n- /src/**/x/\n"),
        ("top/.rsync-filter", "- /**/d\n+ /src/e/k\n- k\n"),
    ];
    for (i, (file, rules)) in cases.iter().enumerate() {
        write(&base.join(file), rules.as_bytes());
        same_as_rsync(&(file, rules), |tool| {
            let dst = base.join(format!("{tool}{i}"));
            let out = tool_command(tool)
                .arg("-a")
                .arg("-F")
                .arg(base.join("top/src/e"))
                .arg(format!("{}/", dst.display()))
                .output()
                .unwrap();
            (code(&out), listing(&dst))
        });
        fs::remove_file(base.join(file)).unwrap();
    }
    assert!(!base.join("arsync0/e/a/x").exists() && base.join("arsync0/e/b/g").exists());
    assert!(!base.join("arsync2/e/c").exists() && !base.join("arsync2/e/a/x").exists());
    assert!(!base.join("arsync3/e/d").exists() && base.join("arsync3/e/k").exists());
}

/// `-b` with `--delete`: a backup this run makes beside its original (`x~`) is not then deleted
/// as extraneous, and an older backup that is extraneous is removed, not backed up again, as
/// rsync does (`is_backup_file`). Before, with `--delete-excluded` (where no `P *~` rule
/// protects backups) the update's backup `x~` was renamed to `x~~` by the deletion pass, and an
/// older `d/x~` became `d/x~~`.
#[test]
fn backups_are_neither_deleted_nor_backed_up_again_by_delete() {
    if !require_rsync("backups_are_neither_deleted_nor_backed_up_again_by_delete") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    let put = |p: &Path, text: &[u8]| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        write(p, text);
    };
    put(&src.join("x"), b"new");
    put(&src.join("d/z"), b"new z");
    let cases: Vec<Vec<&str>> = vec![
        vec!["-b", "--delete", "--delete-excluded"],
        vec!["-b", "--delete"],
        vec!["-b", "--suffix=.old", "--delete", "--delete-excluded"],
        // (rsync 3.5 then deletes the backups its own updates made, `x~` and `d/z~`, as old
        // backups; arsync keeps them: checked below.)
        vec!["-b", "--delete-after", "--delete-excluded"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        let run = |tool: &str| {
            let dst = base.join(format!("{tool}{i}"));
            for (f, text) in [
                ("x", "old x"),
                ("y", "gone"),
                ("d/z", "old z"),
                ("d/x~", "older x"),
                ("d/x.old", "older x"),
            ] {
                put(&dst.join(f), text.as_bytes());
                set_times(&dst.join(f), 1_000_000_000, 0);
            }
            let out = by_tool(tool, &args, &src, &dst);
            let files: BTreeSet<(String, String)> = listing(&dst)
                .into_iter()
                .filter_map(|l| l.strip_prefix("f ").map(str::to_string))
                .map(|f| {
                    let text = fs::read_to_string(dst.join(&f)).unwrap();
                    (f, text)
                })
                .collect();
            (code(&out), files)
        };
        if flags.contains(&"--delete-after") {
            assert_eq!(run("arsync").0, 0);
        } else {
            same_as_rsync(flags, run);
        }
    }
    assert_eq!(fs::read(base.join("arsync0/x~")).unwrap(), b"old x");
    assert_eq!(fs::read(base.join("arsync3/x~")).unwrap(), b"old x");
    assert_eq!(fs::read(base.join("arsync3/d/z~")).unwrap(), b"old z");
    assert!(!base.join("arsync3/d/x~").exists() && !base.join("arsync3/y").exists());
    assert!(!base.join("arsync0/x~~").exists() && !base.join("arsync0/d/x~").exists());
}

/// `--files-from` meeting filters, as rsync's sender meets them. Each case failed before:
/// a named directory the rules exclude still has the named paths below it sent, itself as an
/// implied directory (arsync left them all out); per-directory merge files are read only in
/// directories whose contents are sent, so not without `-r` and not in the base directory
/// unless `.` is named (arsync applied them to every named path); with `-L` a named symlink that
/// leads nowhere makes no implied directory (arsync made them); with `-m` and no `-r` a named
/// directory with nothing named below it is pruned with the directories on its way.
#[test]
fn files_from_selections_meet_filters_as_in_rsync() {
    if !require_rsync("files_from_selections_meet_filters_as_in_rsync") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(
        &src,
        &["b/x", "b/y", "d/x", "d/e/y", "d/e/z", "top", "q/r/s"],
    );
    write(&src.join(".f"), b"- d\n- z\n- top\n");
    write(&src.join("d/.f"), b"- x\n- y\n");
    fs::create_dir_all(src.join("l/m")).unwrap();
    symlink("nowhere", src.join("l/m/dangling")).unwrap();
    fs::create_dir_all(src.join("empty/inner")).unwrap();
    let list = |name: &str, text: &str| {
        let p = base.join(name);
        write(&p, text.as_bytes());
        format!("--files-from={}", p.display())
    };
    let cases: Vec<Vec<String>> = vec![
        vec![list("l0", "b\nb/x\n"), "--exclude=b".into()],
        vec![list("l1", "b\nb/x\n"), "--exclude=b".into(), "-r".into()],
        // (Without -r rsync 3.5's use of per-directory files depends on the order of the list:
        // `d/e/y` alone is sent, after `d/x` it is not. arsync reads none then.)
        vec![list("l2", "d/e/y\ntop\nd/e/z\n"), "--filter=: .f".into()],
        vec![
            list("l3", "d/x\nd/e/y\ntop\nd/e/z\n"),
            "--filter=: .f".into(),
            "-r".into(),
        ],
        vec![list("l4", "d\n"), "--filter=: .f".into(), "-r".into()],
        vec![list("l5", "l/m/dangling\nq/r/s\n"), "-L".into()],
        vec![list("l6", "empty/inner\nq/r/s\nq\n"), "-m".into()],
        // A named directory walked whole (-r) with a named path below an excluded directory.
        vec![
            list("l7", "q\nq/r/s\nd\n"),
            "--exclude=r".into(),
            "-r".into(),
        ],
        vec![
            list("l8", "q\nd/e/y\nd\n"),
            "--filter=-s e".into(),
            "-r".into(),
        ],
        // -m without -r: a named directory whose named paths below are all excluded is pruned.
        vec![
            list("l9", "q/r\nq/r/s\nb/x\n"),
            "--exclude=s".into(),
            "-m".into(),
        ],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args: Vec<&str> = vec!["-lptgoD"];
        args.extend(flags.iter().map(String::as_str));
        same_listing_as_rsync(base, i, (&args, &src), |_| {});
    }
    assert!(base.join("arsync0/b/x").exists() && !base.join("arsync0/b/y").exists());
    assert!(base.join("arsync2/d/e/y").exists() && base.join("arsync2/top").exists());
    assert!(!base.join("arsync3/d/x").exists() && base.join("arsync3/d/e/z").exists());
    assert!(!base.join("arsync5/l").exists() && base.join("arsync5/q/r/s").exists());
    assert!(!base.join("arsync6/empty").exists() && base.join("arsync6/q/r/s").exists());
    assert!(base.join("arsync7/q/r/s").exists() && base.join("arsync7/d/e/z").exists());
    assert!(base.join("arsync8/d/e/y").exists() && !base.join("arsync8/d/e/z").exists());
    assert!(!base.join("arsync9/q").exists() && base.join("arsync9/b/x").exists());
}

/// With `-L` the rules see what a symlink points to, as rsync's: `dir/` rules take a symlink to a
/// directory, and a symlink that leads nowhere is left out without an error when the rules
/// exclude it as a file or as a directory. Before, arsync matched the symlink as a symlink:
/// `--exclude='*/'` copied the directory a symlink leads to, and a dangling `x.o` under
/// `--exclude='*.o/'` failed the run (23) where rsync ends with 0.
#[test]
fn copy_links_rules_see_what_a_symlink_points_to() {
    if !require_rsync("copy_links_rules_see_what_a_symlink_points_to") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(&src, &["d/f", "g", "x.c"]);
    symlink("d", src.join("to-dir")).unwrap();
    symlink("g", src.join("to-file")).unwrap();
    symlink("nowhere", src.join("gone.o")).unwrap();
    symlink("nowhere", src.join("gone.c")).unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["-aL", "--exclude=*/", "--exclude=gone.c"],
        vec!["-aL", "--exclude=*.o/", "--exclude=*.c"],
        vec!["-aL", "--include=*/", "--exclude=*"],
        vec![
            "-aL",
            "--exclude=*.o",
            "--exclude=gone.c",
            "--delete-excluded",
        ],
    ];
    for (i, args) in cases.iter().enumerate() {
        same_listing_as_rsync(base, i, (args, &src), |dst| {
            named_files(dst, &["gone.o/old"])
        });
    }
    assert!(!base.join("arsync0/to-dir").exists() && base.join("arsync0/to-file").exists());
    assert!(base.join("arsync2/to-dir").is_dir() && !base.join("arsync3/gone.o").exists());
}

/// The `e` modifier of a merge rule excludes the merge file's own name ahead of the rules it
/// reads, as rsync adds that exclude before the merge: a `+ *` in the file does not take the file
/// in again. Before, arsync tried a `dir-merge`'s rules first (so `:e .f` with `+ *` in `.f`
/// copied `.f`), and a plain `merge` (`.e FILE`) excluded nothing.
#[test]
fn merge_files_excluded_by_e_stay_out_whatever_they_include() {
    if !require_rsync("merge_files_excluded_by_e_stay_out_whatever_they_include") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(&src, &["a", "d/b", "d/e/c", "g.rules"]);
    write(&src.join(".f"), b"+ *\n");
    write(&src.join("d/.f"), b"+ .f\n- b\n");
    write(&src.join("d/e/g.rules"), b"+ g.rules\n");
    let global = src.join("d/e/g.rules");
    let global_arg = format!("--filter=.e {}", global.display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["--filter=:e .f"],
        vec!["--filter=:ne .f"],
        vec!["--filter=dir-merge,e .f", "--delete", "--delete-excluded"],
        vec![&global_arg],
        vec![&global_arg, "--filter=:e .f"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        same_listing_as_rsync(base, i, (&args, &src), |dst| {
            named_files(dst, &["spare"]);
            write(&dst.join(".f"), b"- nothing\n");
        });
    }
    assert!(!base.join("arsync0/d/.f").exists() && base.join("arsync0/d/e/c").exists());
    assert!(!base.join("arsync2/d/.f").exists() && !base.join("arsync2/d/b").exists());
    assert!(!base.join("arsync3/g.rules").exists() && !base.join("arsync3/d/e/g.rules").exists());
}

/// `--delete-after` with per-directory merge files: what protects a destination entry is the
/// destination's merge files as the copy has left them, read at the end, as rsync reads them.
/// Before, arsync judged by the source's merge files, which is the same only where the copy
/// puts them there: with `:e` or `-FF` (the files kept out of the transfer), or a merge file
/// whose own rules exclude it, it kept what rsync deletes and deleted what the destination's
/// older merge file protects.
#[test]
fn delete_after_judges_by_the_merge_files_the_destination_ends_with() {
    if !require_rsync("delete_after_judges_by_the_merge_files_the_destination_ends_with") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(&src, &["a", "d/b", "e/c"]);
    write(&src.join(".rsync-filter"), b"P keep*\n");
    write(&src.join("d/.rsync-filter"), b"P *.bak\n- .rsync-filter\n");
    let cases: Vec<Vec<&str>> = vec![
        vec!["--filter=:e .rsync-filter", "--delete-after"],
        vec!["-FF", "--delete-after"],
        vec!["-F", "--delete-after"],
        vec!["-F", "--delete-after", "-n"],
        vec!["-FF", "--delete"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a", "-i"];
        args.extend(flags.iter().copied());
        same_as_rsync(flags, |tool| {
            let dst = base.join(format!("{tool}{i}"));
            named_files(&dst, &["keep1", "old1", "d/x.bak", "d/y", "e/old2"]);
            // The destination's own older merge files.
            write(&dst.join(".rsync-filter"), b"P old*\n");
            write(&dst.join("e/.rsync-filter"), b"P old*\n");
            let out = by_tool(tool, &args, &src, &dst);
            // (The deletions said; directory time lines differ by rsync's same-second compare.)
            let deleting: BTreeSet<String> = items(&out)
                .into_iter()
                .filter(|l| l.starts_with("*deleting"))
                .collect();
            (code(&out), deleting, listing(&dst))
        });
    }
    // With the files kept out, rsync's deletions see only the destination's: keep1 goes, old1
    // stays; with -F the copied top file replaces the old one: keep1 stays, old1 goes.
    assert!(!base.join("arsync0/keep1").exists() && base.join("arsync0/old1").exists());
    assert!(base.join("arsync2/keep1").exists() && !base.join("arsync2/old1").exists());
}

/// Filter rules with the `x` modifier are about extended attribute names (`-X`), as rsync's:
/// an excluded name is not copied, and on an existing destination file it is neither changed
/// nor removed; `+x` stops the search; the rules never select entries. Before session 26 arsync
/// refused the modifier (exit 1).
#[test]
fn x_rules_select_extended_attributes_as_rsync_does() {
    if !require_rsync("x_rules_select_extended_attributes_as_rsync_does") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"data");
    write(&src.join("user.mime"), b"a file named like an attribute");
    setxattr(&src.join("f"), "user.keep1", b"k");
    setxattr(&src.join("f"), "user.mime", b"new");
    set_times(&src.join("f"), 1_600_000_000, 0);
    let cases: [&[&str]; 4] = [
        &["--filter=-x user.*"],
        &["--filter=+x user.keep*", "--filter=-x user.*"],
        &["--filter=-x user.dest"],
        &["--filter=-x *"],
    ];
    for (i, rules) in cases.iter().enumerate() {
        let mut args = vec!["-aX"];
        args.extend(rules.iter().copied());
        // A new copy, and an existing one with the same data and time (attributes only).
        for existing in [false, true] {
            let tag = format!("{i}{}", if existing { "e" } else { "n" });
            let (want, got) = (
                s.path().join(format!("r{tag}")),
                s.path().join(format!("a{tag}")),
            );
            if existing {
                for d in [&want, &got] {
                    fs::create_dir(d).unwrap();
                    write(&d.join("f"), b"data");
                    setxattr(&d.join("f"), "user.mime", b"old");
                    setxattr(&d.join("f"), "user.dest", b"d");
                    set_times(&d.join("f"), 1_600_000_000, 0);
                }
            }
            let w = rsync(&args, &src, &want);
            let g = copy_contents(&args, &src, &got);
            assert_eq!(code(&w), 0, "{rules:?}: {}", err(&w));
            assert_eq!(code(&g), 0, "{rules:?}: {}", err(&g));
            assert_eq!(
                treediff::xattrs(&got.join("f")),
                treediff::xattrs(&want.join("f")),
                "{rules:?} {tag}"
            );
            assert!(
                got.join("user.mime").exists(),
                "an x rule selected an entry"
            );
        }
    }
    // What the rules did: `-x user.*` left the existing copy's attributes as they were.
    let a = treediff::xattrs(&s.path().join("a0e/f"));
    assert!(
        a.contains(&(b"user.mime".to_vec(), b"old".to_vec())),
        "{a:?}"
    );
    assert!(a.contains(&(b"user.dest".to_vec(), b"d".to_vec())), "{a:?}");
}

#[test]
fn prune_empty_dirs_prunes_what_rsync_prunes() {
    if !require_rsync("prune_empty_dirs_prunes_what_rsync_prunes") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    filter_tree(&src);
    // Directories with nothing but directories, at any depth, or only what a rule excludes.
    for d in [
        "empty",
        "chain/a/b/c",
        "only-o/sub",
        "wide/1",
        "wide/2",
        "wide/3/4",
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    write(&src.join("only-o/x.o"), b"o");
    write(&src.join("only-o/sub/y.o"), b"o");
    fs::create_dir_all(src.join("links")).unwrap();
    symlink("nowhere", src.join("links/dangling")).unwrap();
    write(&src.join("wide/3/4/leaf"), b"leaf");
    let cases: Vec<Vec<&str>> = vec![
        vec!["-m"],
        vec!["-m", "--exclude=*.o"],
        vec!["-m", "--include=*/", "--include=*.c", "--exclude=*"],
        vec!["--prune-empty-dirs", "--exclude=links/", "--exclude=leaf"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a", "-i"];
        args.extend(flags.iter().copied());
        let want_dst = s.path().join(format!("rsync{i}"));
        let got_dst = s.path().join(format!("arsync{i}"));
        let mut dry = args.clone();
        dry.push("-n");
        let want = rsync(&dry, &src, &want_dst);
        assert_eq!(code(&want), 0, "rsync {flags:?}: {}", err(&want));
        let got = copy_contents(&dry, &src, &got_dst);
        assert_eq!(code(&got), 0, "arsync {flags:?}: {}", err(&got));
        assert_eq!(items(&got), items(&want), "-n -i with {flags:?}");
        let want = rsync(&args, &src, &want_dst);
        assert_eq!(code(&want), 0, "{}", err(&want));
        let got = copy_contents(&args, &src, &got_dst);
        assert_eq!(code(&got), 0, "{}", err(&got));
        assert_eq!(listing(&got_dst), listing(&want_dst), "copy with {flags:?}");
        assert!(!got_dst.join("empty").exists() && !got_dst.join("chain").exists());
    }
    // With --delete a pruned directory is extraneous: its destination counterpart goes, with
    // what it holds (an excluded file in it is protected, which keeps the directory too).
    let mut dsts = Vec::new();
    for tool in ["rsync", "arsync"] {
        let dst = s.path().join(format!("del-{tool}"));
        let out = by_tool(tool, &["-a"], &src, &dst);
        assert_eq!(code(&out), 0, "{}", err(&out));
        write(&dst.join("chain/a/b/stale"), b"stale");
        write(&dst.join("wide/2/stale"), b"stale");
        dsts.push(dst);
    }
    let flags = ["-a", "-i", "-m", "--delete", "--exclude=*.o"];
    let want = rsync(&flags, &src, &dsts[0]);
    assert_eq!(code(&want), 0, "{}", err(&want));
    let got = copy_contents(&flags, &src, &dsts[1]);
    assert_eq!(code(&got), 0, "{}", err(&got));
    assert_eq!(items(&got), items(&want));
    assert_eq!(listing(&dsts[1]), listing(&dsts[0]));
    assert!(!dsts[1].join("chain").exists() && !dsts[1].join("empty").exists());
    assert!(
        dsts[1].join("only-o/x.o").exists(),
        "an excluded file was deleted"
    );
}

/// `-m` with a directory named on the command line (`SRC`, not `SRC/`): one that holds nothing
/// but directories once the rules are applied is left out, as rsync leaves it out, and an
/// existing destination counterpart keeps what it holds under `--delete`. Before, arsync made it
/// (`DEST/empty`) and walked it, so `-m --delete src DEST/` emptied `DEST/src` where rsync
/// deletes nothing. And a directory the receiving side's rules exclude (`P`, `-r`) is not
/// pruned, nor are the directories on its way, as rsync's receiver keeps them (before, arsync
/// pruned them).
#[test]
fn prune_empty_dirs_leaves_out_directories_named_on_the_command_line() {
    if !require_rsync("prune_empty_dirs_leaves_out_directories_named_on_the_command_line") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    for d in ["src/e/f", "empty", "full/sub"] {
        fs::create_dir_all(base.join(d)).unwrap();
    }
    write(&base.join("src/e/f/x.o"), b"o");
    write(&base.join("full/sub/kept"), b"kept");
    let cases: Vec<Vec<&str>> = vec![
        vec!["-a", "-m", "--delete", "--exclude=*.o", "src", "DEST/"],
        vec!["-a", "-m", "empty", "DEST/"],
        vec!["-a", "-m", "--exclude=*.o", "src/e", "full", "DEST/"],
        vec!["-a", "-m", "--delete", "--exclude=*.o", "src/", "DEST/"],
        vec!["-a", "-m", "--exclude=*.o", "src/e/f/", "DEST/"],
        vec!["-a", "-m", "--exclude=*.o", "--filter=P f", "src", "DEST/"],
        vec![
            "-a",
            "-m",
            "--exclude=*.o",
            "--filter=-r e/",
            "src/",
            "DEST/",
        ],
        vec![
            "-a",
            "-m",
            "--exclude=*.o",
            "--filter=P src",
            "src",
            "DEST/",
        ],
        vec!["-a", "-m", "--exclude=*.o", "--filter=H f", "src", "DEST/"],
        vec![
            "-a",
            "-m",
            "--delete",
            "--exclude=*.o",
            "-R",
            "./src",
            "DEST/",
        ],
        vec![
            "-a",
            "-m",
            "--exclude=*.o",
            "-R",
            "./src/e/f",
            "./full",
            "DEST/",
        ],
        vec![
            "-a",
            "-m",
            "--exclude=*.o",
            "-R",
            "--filter=P f",
            "./src/e/f",
            "DEST/",
        ],
        vec!["-a", "-m", "-d", "--no-r", "src/e", "full", "DEST/"],
        vec![
            "-a",
            "-m",
            "-d",
            "--no-r",
            "--filter=P full",
            "src/e",
            "full",
            "DEST/",
        ],
    ];
    for (i, args) in cases.iter().enumerate() {
        same_as_rsync(args, |tool| {
            let at = run_dir(base, &format!("{tool}{i}"), false);
            named_files(&at, &["DEST/src/old/x", "DEST/src/y", "DEST/z"]);
            let (flags, paths): (Vec<&str>, Vec<&str>) =
                args.iter().partition(|a| a.starts_with('-'));
            let out = tool_command(tool)
                .args(flags)
                .args(sources_into(base, &at, &paths))
                .current_dir(base)
                .output()
                .unwrap();
            (code(&out), listing(&at))
        });
    }
    assert!(base.join("arsync0/DEST/src/old/x").exists());
    assert!(!base.join("arsync1/DEST/empty").exists());
    assert!(
        base.join("arsync2/DEST/full/sub/kept").exists() && !base.join("arsync2/DEST/e").exists()
    );
    assert!(base.join("arsync5/DEST/src/e/f").exists() && base.join("arsync6/DEST/e").exists());
    assert!(base.join("arsync9/DEST/src/old/x").exists());
    assert!(
        !base.join("arsync10/DEST/src/e").exists()
            && base.join("arsync10/DEST/full/sub/kept").exists()
    );
}

#[test]
fn bad_filter_rules_and_unreadable_rules_files_refuse_the_run() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    let dst = s.path().join("dst");
    // (A rules file that cannot be read is rsync's file I/O error, 11: "failed to open exclude
    // file"; the others are usage errors.)
    for (bad, want) in [
        ("--filter=Q x", 1),
        ("--filter=dir-merge sub/.rules", 1),
        ("--filter=merge /nonexistent/rules", 11),
        ("--filter=:x .rules", 1),
        ("--filter=-", 1),
        ("--exclude-from=/nonexistent/list", 11),
    ] {
        let out = copy_contents(&["-a", bad], &src, &dst);
        assert_eq!(code(&out), want, "{bad}: {}", err(&out));
        assert!(err(&out).starts_with("arsync: "), "{bad}: {}", err(&out));
        assert!(!dst.exists());
    }
    let out = copy_contents(&["-t", "--delete"], &src, &dst);
    assert_eq!(code(&out), 1, "--delete without -r: {}", err(&out));
}

/// The destination of an earlier copy, then changed: extraneous files and a whole subtree, a file
/// where the source has a directory, a non-empty directory where the source has a file, a
/// symlink to a directory outside the tree, an excluded file.
fn stale_destination(s: &Path, src: &Path, dst: &Path) -> PathBuf {
    let out = copy_contents(&["-a"], src, dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    write(&dst.join("extra.txt"), b"extra");
    write(&dst.join("src/extra.c"), b"extra");
    fs::create_dir_all(dst.join("gone/deeper/still")).unwrap();
    write(&dst.join("gone/deeper/still/f"), b"f");
    write(&dst.join("gone/g"), b"g");
    fs::remove_dir_all(dst.join("keep/sub")).unwrap();
    write(
        &dst.join("keep/sub"),
        b"a file where the source has a directory",
    );
    fs::remove_file(dst.join("ab.txt")).unwrap();
    fs::create_dir_all(dst.join("ab.txt/inner")).unwrap();
    write(
        &dst.join("ab.txt/inner/f"),
        b"a directory where the source has a file",
    );
    let outside = s.join("outside");
    fs::create_dir_all(&outside).unwrap();
    write(&outside.join("precious"), b"must survive");
    symlink(&outside, dst.join("escape")).unwrap();
    write(&dst.join("junk.o"), b"excluded on both sides");
    outside
}

#[test]
fn delete_removes_exactly_the_extraneous_entries() {
    if !require_rsync("delete_removes_exactly_the_extraneous_entries") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    filter_tree(&src);
    for (mode, tag) in [
        ("--delete", "d"),
        ("--delete-before", "b"),
        ("--delete-after", "a"),
        ("--delete-delay", "y"),
    ] {
        let dst = s.path().join(format!("dst-{tag}"));
        let ref_dst = s.path().join(format!("ref-{tag}"));
        let outside = stale_destination(&s.path().join(tag), &src, &dst);
        stale_destination(&s.path().join(format!("r{tag}")), &src, &ref_dst);
        // What rsync would delete (its own dry run on an identical destination).
        let flags = ["-a", "-i", mode, "--exclude=*.o"];
        let mut dry = flags.to_vec();
        dry.push("-n");
        let want = rsync(&dry, &src, &ref_dst);
        assert_eq!(code(&want), 0, "{}", err(&want));
        let before = snapshot(&dst);
        let got = copy_contents(&dry, &src, &dst);
        assert_eq!(code(&got), 0, "{}", err(&got));
        assert_eq!(snapshot(&dst), before, "{mode} -n changed the destination");
        let deleting = |o: &Output| -> BTreeSet<String> {
            items(o)
                .into_iter()
                .filter(|l| l.starts_with("*deleting"))
                .collect()
        };
        assert_eq!(deleting(&got), deleting(&want), "{mode} -n -i deletions");
        assert!(!deleting(&got).is_empty());
        let got = copy_contents(&flags, &src, &dst);
        assert_eq!(code(&got), 0, "{mode}: {}", err(&got));
        if mode == "--delete-before" {
            // The top directory's deletions come before any of its files is written.
            let lines: Vec<String> = text(&got).lines().map(str::to_string).collect();
            let top = |l: &String, tag: &str| {
                l.strip_prefix(tag)
                    .is_some_and(|n| !n.trim_end_matches('/').contains('/'))
            };
            let last_delete = lines.iter().rposition(|l| top(l, "*deleting   "));
            let first_write = lines.iter().position(|l| top(l, ">f"));
            assert!(last_delete.is_some(), "{lines:?}");
            if let (Some(d), Some(w)) = (last_delete, first_write) {
                assert!(d < w, "{lines:?}");
            }
        }
        // Everything but the excluded (hence protected) file is now exactly the source.
        assert!(dst.join("junk.o").exists(), "an excluded file was deleted");
        let mtime = |p: &Path| {
            let m = fs::symlink_metadata(p).unwrap();
            (m.mtime(), m.mtime_nsec())
        };
        assert_eq!(
            mtime(&dst),
            mtime(&src),
            "{mode}: root mtime after deletions"
        );
        fs::remove_file(dst.join("junk.o")).unwrap();
        let (sec, ns) = mtime(&src);
        set_times(&dst, sec, ns);
        for o in ["a.o", "src/main.o", "link.o"] {
            // Excluded from the transfer but present from the first copy: kept too.
            assert!(fs::symlink_metadata(dst.join(o)).is_ok(), "{o} was deleted");
        }
        assert_same(&src, &dst, treediff::Check::archive());
        assert_eq!(
            fs::read(outside.join("precious")).unwrap(),
            b"must survive",
            "deletion followed a destination symlink"
        );
        // --delete-excluded removes the excluded ones as well.
        let out = copy_contents(&["-a", "--delete-excluded", "--exclude=*.o"], &src, &dst);
        assert_eq!(code(&out), 0, "{}", err(&out));
        for o in ["a.o", "src/main.o", "link.o"] {
            assert!(fs::symlink_metadata(dst.join(o)).is_err(), "{o} was kept");
        }
    }
    // Two deletion timings at once: refused, as rsync refuses them.
    for pair in [
        ["--delete-before", "--delete-after"],
        ["--del", "--delete-before"],
        ["--delete-delay", "--delete-after"],
    ] {
        let dst = s.path().join("two-whens");
        let mut flags = vec!["-a"];
        flags.extend(pair);
        assert_eq!(code(&rsync(&flags, &src, &dst)), 1, "rsync {pair:?}");
        let out = copy_contents(&flags, &src, &dst);
        assert_eq!(code(&out), 1, "{pair:?}: {}", err(&out));
        assert!(!dst.exists());
    }
}

#[test]
fn protect_rules_and_max_delete() {
    let s = Scratch::new();
    let src = s.path().join("src");
    filter_tree(&src);
    let dst = s.path().join("dst");
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    for i in 0..5 {
        write(&dst.join(format!("extra{i}")), b"x");
    }
    write(&dst.join("src/precious.db"), b"keep me");
    // P protects from deletion without excluding anything from the copy.
    let out = copy_contents(
        &["-a", "--delete", "--filter=P *.db", "--max-delete=2"],
        &src,
        &dst,
    );
    assert_eq!(code(&out), 25, "--max-delete reached: {}", err(&out));
    assert!(err(&out).contains("--max-delete"), "{}", err(&out));
    let left = (0..5)
        .filter(|i| dst.join(format!("extra{i}")).exists())
        .count();
    assert_eq!(left, 3, "exactly 2 deletions");
    assert!(dst.join("src/precious.db").exists());
    let json = s.path().join("s.json");
    let out = copy_contents(
        &[
            "-a",
            "--delete",
            "--filter=P *.db",
            "--stats-json",
            json.to_str().unwrap(),
        ],
        &src,
        &dst,
    );
    assert_eq!(code(&out), 0, "{}", err(&out));
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["deleted"], 3, "{v}");
    assert!(dst.join("src/precious.db").exists());
    fs::remove_file(dst.join("src/precious.db")).unwrap();
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    assert_same(&src, &dst, treediff::Check::archive());
}

#[test]
fn dry_run_changes_nothing_and_itemizes_like_rsync() {
    if !require_rsync("dry_run_changes_nothing_and_itemizes_like_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    build_tree(
        &src,
        &TreeOpts {
            root_only: false,
            wide: 30,
            depth: 4,
        },
    );
    // An empty destination: every line of rsync's -n -i listing, the same.
    let want = rsync(&["-a", "-n", "-i"], &src, &s.path().join("r0"));
    let got = copy_contents(&["-a", "-n", "-i"], &src, &s.path().join("a0"));
    assert_eq!(code(&got), 0, "{}", err(&got));
    assert_eq!(items(&got), items(&want));
    assert!(!s.path().join("a0").exists());
    // A stale destination: -n leaves it bit-identical.
    let dst = s.path().join("dst");
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    write(&dst.join("data0.bin"), b"Z");
    write(&dst.join("stray"), b"stray");
    fs::remove_dir_all(dst.join("links")).unwrap();
    chmod(&dst.join("ro"), 0o600);
    let before = snapshot(&dst);
    let got = copy_contents(&["-a", "-n", "-i", "--delete"], &src, &dst);
    assert_eq!(code(&got), 0, "{}", err(&got));
    assert_eq!(snapshot(&dst), before, "-n changed the destination");
    let lines = items(&got);
    for l in [
        ">f..t...... data0.bin",
        ".f...p..... ro",
        "*deleting   stray",
        "cd+++++++++ links/",
        "cL+++++++++ links/rel -> ../data0.bin",
    ] {
        assert!(lines.contains(l), "missing {l:?} in {lines:#?}");
    }
    // The real run then does exactly that, and a further -n -i lists nothing.
    let out = copy_contents(&["-a", "--delete"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
    let again = copy_contents(&["-a", "-n", "-i", "--delete"], &src, &dst);
    assert!(items(&again).is_empty(), "{:#?}", items(&again));
}

#[test]
fn xattrs_and_acls_are_compared_on_a_resync() {
    let name = "xattrs_and_acls_are_compared_on_a_resync";
    if !require_rsync(name) {
        return;
    }
    if !have("setfacl") {
        assert!(
            !is_root(),
            "setfacl is missing: the test command installs acl"
        );
        return skip(name, "setfacl is not installed");
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    let d = src.join("d");
    fs::create_dir_all(&d).unwrap();
    write(&d.join("f"), b"file");
    write(&d.join("plain"), b"no attributes");
    symlink("f", d.join("l")).unwrap();
    mkfifo(&d.join("p"));
    setxattr(&d.join("f"), "user.a", b"1");
    setxattr(&d.join("f"), "user.b", b"1");
    setxattr(&d, "user.d", b"1");
    if is_root() {
        // user.* cannot exist on a symlink; trusted.* can (as root).
        setxattr(&d.join("l"), "trusted.t", b"1");
    }
    let (ours, theirs) = (s.path().join("ours"), s.path().join("theirs"));
    assert_eq!(code(&copy_contents(&["-aAX"], &src, &ours)), 0);
    assert_eq!(code(&rsync(&["-aAX"], &src, &theirs)), 0);
    assert_same(&src, &ours, treediff::Check::full());

    // Nothing changed: nothing listed, nothing touched (ctimes and attributes as they were).
    let before = snapshot(&ours);
    let again = copy_contents(&["-aAXi"], &src, &ours);
    assert_eq!(code(&again), 0, "{}", err(&again));
    assert!(items(&again).is_empty(), "{:#?}", items(&again));
    assert_eq!(
        snapshot(&ours),
        before,
        "an unchanged re-sync touched the destination"
    );

    // Attributes change without the mtime moving: one value changed, one removed, an ACL added.
    setxattr(&d.join("f"), "user.a", b"2");
    let c = std::ffi::CString::new(d.join("f").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        // SAFETY: valid path and attribute name.
        unsafe { libc::removexattr(c.as_ptr(), c"user.b".as_ptr()) },
        0
    );
    setxattr(&d, "user.d", b"2");
    for f in ["f", "p"] {
        let out = Command::new("setfacl")
            .args(["-m", "u:nobody:r"])
            .arg(d.join(f))
            .output()
            .unwrap();
        assert!(out.status.success(), "setfacl: {}", err(&out));
    }
    if is_root() {
        setxattr(&d.join("l"), "trusted.t", b"2");
    }
    let want = rsync(&["-aAXi"], &src, &theirs);
    assert_eq!(code(&want), 0, "{}", err(&want));
    let got = copy_contents(&["-aAXi"], &src, &ours);
    assert_eq!(code(&got), 0, "{}", err(&got));
    assert_eq!(items(&got), items(&want));
    assert!(
        items(&got).contains(".f.......ax d/f"),
        "{:#?}",
        items(&got)
    );
    assert_same(&src, &ours, treediff::Check::full());
    assert_eq!(
        treediff::xattrs(&ours.join("d/f")),
        treediff::xattrs(&d.join("f"))
    );
    let before = snapshot(&ours);
    let again = copy_contents(&["-aAXi"], &src, &ours);
    assert!(items(&again).is_empty(), "{:#?}", items(&again));
    assert_eq!(snapshot(&ours), before);
}

#[test]
fn checksum_finds_what_size_and_mtime_miss() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    for (i, len) in [10usize, 5000, 3 << 20].iter().enumerate() {
        write(&src.join(format!("f{i}")), &content(i as u64 + 9, *len));
        set_times(&src.join(format!("f{i}")), 1_700_000_000, 123_456_789);
    }
    let dst = s.path().join("dst");
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    // Same size, same mtime, different bytes (the last byte of each file).
    for i in 0..3 {
        let p = dst.join(format!("f{i}"));
        let mut d = fs::read(&p).unwrap();
        *d.last_mut().unwrap() ^= 0xff;
        fs::write(&p, &d).unwrap();
        set_times(&p, 1_700_000_000, 123_456_789);
    }
    let out = copy_contents(&["-a", "-i"], &src, &dst);
    assert_eq!(code(&out), 0);
    assert!(items(&out).is_empty(), "the quick check saw a change");
    assert_ne!(
        fs::read(dst.join("f0")).unwrap(),
        fs::read(src.join("f0")).unwrap()
    );
    let out = copy_contents(&["-a", "-i", "-c"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    let lines = items(&out);
    for i in 0..3 {
        assert!(lines.contains(&format!(">fc........ f{i}")), "{lines:#?}");
    }
    assert_same(&src, &dst, treediff::Check::archive());
    let out = copy_contents(&["-a", "-i", "-c"], &src, &dst);
    assert!(
        items(&out).is_empty(),
        "-c found a difference after the copy"
    );
}

#[test]
fn update_existing_ignore_existing_and_modify_window() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("newdir")).unwrap();
    write(&src.join("old"), b"source");
    set_times(&src.join("old"), 1_600_000_000, 0);
    write(&src.join("new"), b"source");
    set_times(&src.join("new"), 1_700_000_000, 0);
    write(&src.join("fresh"), b"only in source");
    write(&src.join("newdir/f"), b"f");
    let mk = |name: &str| {
        let d = s.path().join(name);
        fs::create_dir(&d).unwrap();
        write(&d.join("old"), b"dest!!");
        set_times(&d.join("old"), 1_650_000_000, 0); // newer than the source
        write(&d.join("new"), b"dest!!");
        set_times(&d.join("new"), 1_650_000_000, 0); // older than the source
        d
    };
    let d = mk("u");
    assert_eq!(code(&copy_contents(&["-a", "-u"], &src, &d)), 0);
    assert_eq!(
        fs::read(d.join("old")).unwrap(),
        b"dest!!",
        "-u replaced a newer file"
    );
    assert_eq!(fs::read(d.join("new")).unwrap(), b"source");
    assert!(d.join("fresh").exists());
    let d = mk("existing");
    assert_eq!(code(&copy_contents(&["-a", "--existing"], &src, &d)), 0);
    assert!(!d.join("fresh").exists() && !d.join("newdir").exists());
    assert_eq!(fs::read(d.join("old")).unwrap(), b"source");
    let d = mk("ignore");
    assert_eq!(
        code(&copy_contents(&["-a", "--ignore-existing"], &src, &d)),
        0
    );
    assert_eq!(fs::read(d.join("old")).unwrap(), b"dest!!");
    assert_eq!(fs::read(d.join("new")).unwrap(), b"dest!!");
    assert!(d.join("fresh").exists() && d.join("newdir/f").exists());
    // --modify-window: an mtime one second off (same size and data) is "the same" with a window
    // of 1, copied again by default (nanosecond comparison).
    let d = s.path().join("mw");
    assert_eq!(code(&copy_contents(&["-a"], &src, &d)), 0);
    set_times(&d.join("fresh"), 1_000_000_001, 0);
    set_times(&src.join("fresh"), 1_000_000_000, 5);
    let json = s.path().join("mw.json");
    let j = json.to_str().unwrap();
    let out = copy_contents(&["-a", "--modify-window=1", "--stats-json", j], &src, &d);
    assert_eq!(code(&out), 0);
    let files = |p: &Path| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
        v["counts"]["files"].as_u64().unwrap()
    };
    assert_eq!(files(&json), 0, "--modify-window=1 copied a file");
    let out = copy_contents(&["-a", "--stats-json", j], &src, &d);
    assert_eq!(code(&out), 0);
    assert_eq!(
        files(&json),
        1,
        "the nanosecond default did not see the change"
    );
}

/// A source directory whose name holds a non-directory in the destination (a file, a dangling
/// symlink) under `--existing` and `--ignore-existing`, against rsync: `--existing` replaces it
/// (the name exists; what is new inside is still left out), `--ignore-existing` keeps it and
/// fails the contents it cannot copy there (exit 23), with or without `--delete`. Before,
/// `--existing` left the non-directory and `--ignore-existing` deleted it for a new directory:
/// an existing destination file lost under the flag that promises to leave existing files
/// alone.
#[test]
fn a_directory_meeting_a_non_directory_under_existing_and_ignore_existing() {
    let name = "a_directory_meeting_a_non_directory_under_existing_and_ignore_existing";
    if !require_rsync(name) {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("full")).unwrap();
    write(&src.join("full/f"), b"f");
    fs::create_dir(src.join("empty")).unwrap();
    fs::create_dir(src.join("empty2")).unwrap();
    write(&src.join("kept"), b"new data");
    // What a destination holds: `full` and `empty` files, `empty2` a dangling symlink.
    let dest = |d: &Path| {
        fs::create_dir(d).unwrap();
        write(&d.join("full"), b"existing file");
        write(&d.join("empty"), b"existing too");
        symlink("nowhere", d.join("empty2")).unwrap();
        write(&d.join("kept"), b"old");
    };
    let kind = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        if m.is_dir() {
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("symlink {}", fs::read_link(p).unwrap().display())
        } else {
            format!("file {}", String::from_utf8_lossy(&fs::read(p).unwrap()))
        }
    };
    for flags in [
        &["-a", "--existing"][..],
        &["-a", "--existing", "--delete"],
        &["-a", "--ignore-existing"],
        &["-a", "--ignore-existing", "--delete"],
    ] {
        let case = s.path().join(flags.join("").replace('-', "_"));
        fs::create_dir(&case).unwrap();
        let (want, got) = (case.join("by-rsync"), case.join("by-arsync"));
        dest(&want);
        dest(&got);
        let w = rsync(flags, &src, &want);
        let g = copy_contents(flags, &src, &got);
        assert_eq!(code(&g), code(&w), "{flags:?}: {} / {}", err(&g), err(&w));
        for e in ["full", "empty", "empty2", "kept"] {
            assert_eq!(kind(&got.join(e)), kind(&want.join(e)), "{flags:?} {e}");
        }
        assert_eq!(listing(&got), listing(&want), "{flags:?}");
        if flags[1] == "--ignore-existing" {
            assert_eq!(code(&g), 23, "{flags:?}");
            assert_eq!(kind(&got.join("full")), "file existing file");
        } else {
            assert_eq!(kind(&got.join("full")), "dir");
        }
    }
}

/// A non-empty directory where the source has a file (no `--delete`, no `--force`): the file is
/// not copied and the run ends with 23, and nothing of it is left behind under any mode that
/// writes elsewhere first. Before, arsync copied the data and failed only at the final rename,
/// leaving `.f.~arsync-partial` (`--partial`) or `.~tmp~/f` (`--delay-updates`) in the
/// destination, where rsync's generator decides before any transfer. An empty directory in
/// the way goes, as in rsync, under `--existing` too (the first form of the fix removed it on
/// a first look and then, finding nothing on the second, skipped the file).
#[test]
fn a_directory_that_may_not_go_leaves_no_copy_of_the_file_behind() {
    if !require_rsync("a_directory_that_may_not_go_leaves_no_copy_of_the_file_behind") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), &content(7, 70_000));
    write(&src.join("g"), b"goes where an empty directory was");
    write(&src.join("other"), b"copied");
    let dest = |d: &Path| {
        fs::create_dir_all(d.join("f/inner")).unwrap();
        write(&d.join("f/inner/x"), b"theirs");
        fs::create_dir(d.join("g")).unwrap();
    };
    for flags in [
        &["-a"][..],
        &["-a", "--partial"],
        &["-a", "--partial-dir=.pd"],
        &["-a", "--delay-updates"],
        &["-a", "--inplace"],
        &["-a", "-b"],
        &["-aH", "--partial", "--delay-updates"],
        // (The empty directory exists, so the file replaces it here too.)
        &["-a", "--existing"],
    ] {
        let case = s.path().join(flags.join("").replace(['-', '='], "_"));
        fs::create_dir(&case).unwrap();
        let (want, got) = (case.join("by-rsync"), case.join("by-arsync"));
        dest(&want);
        dest(&got);
        let w = rsync(flags, &src, &want);
        let g = copy_contents(flags, &src, &got);
        assert_eq!(code(&w), 23, "{flags:?}: {}", err(&w));
        assert_eq!(code(&g), 23, "{flags:?}: {}", err(&g));
        assert!(
            err(&g).contains(&format!("\"{}\"", got.join("f").display())),
            "{flags:?}: {}",
            err(&g)
        );
        assert_eq!(listing(&got), listing(&want), "{flags:?}");
        assert_eq!(fs::read(got.join("f/inner/x")).unwrap(), b"theirs");
        assert_eq!(
            fs::read(got.join("g")).unwrap(),
            fs::read(src.join("g")).unwrap()
        );
        let other = fs::read(got.join("other")).ok();
        if flags.contains(&"--existing") {
            assert_eq!(other, None);
        } else {
            assert_eq!(other.as_deref(), Some(&b"copied"[..]));
        }
    }
}

/// The same meeting in a dry run, and what both runs say: a regular file, a symlink and a
/// FIFO whose names non-empty directories hold are not made (exit 23, rsync's "cannot delete
/// non-empty directory: NAME" on standard output), an empty directory is replaced; the `-n -i`
/// listing is the real run's. Before, a dry run listed all three as made and ended with 0 (and a
/// further hard-linked name as linked).
#[test]
fn a_dry_run_meets_directories_in_the_way_as_the_real_run_does() {
    if !require_rsync("a_dry_run_meets_directories_in_the_way_as_the_real_run_does") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"file");
    write(&src.join("e"), b"goes where an empty directory is");
    symlink("target", src.join("l")).unwrap();
    mkfifo(&src.join("p"));
    let dest = |d: &Path| {
        for n in ["f", "l", "p"] {
            fs::create_dir_all(d.join(n).join("inner")).unwrap();
        }
        fs::create_dir(d.join("e")).unwrap();
        age(d, 1_500_000_000);
    };
    age(&src, 1_400_000_000);
    for flags in [&["-a", "-i", "-n"][..], &["-a", "-i"]] {
        let case = s.path().join(flags.join("").replace('-', "_"));
        fs::create_dir(&case).unwrap();
        let (want, got) = (case.join("by-rsync"), case.join("by-arsync"));
        dest(&want);
        dest(&got);
        let w = rsync(flags, &src, &want);
        let g = copy_contents(flags, &src, &got);
        assert_eq!(code(&w), 23, "{flags:?}: {}", err(&w));
        assert_eq!(code(&g), 23, "{flags:?}: {}", err(&g));
        assert_eq!(items(&g), items(&w), "{flags:?}");
        assert!(
            items(&g).contains("cannot delete non-empty directory: l"),
            "{:?}",
            items(&g)
        );
        assert_eq!(listing(&got), listing(&want), "{flags:?}");
    }
    // A further name of a hard-linked file (-H) meeting one: the dry run lists what the real
    // run does and ends the same. (Against arsync's own real run: rsync 3.5.0 hangs here.)
    let linked = s.path().join("linked");
    fs::create_dir(&linked).unwrap();
    write(&linked.join("h1"), b"linked");
    fs::hard_link(linked.join("h1"), linked.join("h2")).unwrap();
    // (Times set apart: made within one clock tick, the roots could have equal mtimes.)
    set_times(&linked, 1_400_000_000, 0);
    let runs: Vec<(i32, BTreeSet<String>)> = [&["-aH", "-i", "-n"][..], &["-aH", "-i"]]
        .iter()
        .map(|flags| {
            let d = s.path().join(format!("h{}", flags.len()));
            fs::create_dir_all(d.join("h2/inner")).unwrap();
            set_times(&d, 1_500_000_000, 0);
            let o = copy_contents(flags, &linked, &d);
            (code(&o), items(&o))
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[1].0, 23);
    assert!(
        runs[1].1.contains("cannot delete non-empty directory: h2"),
        "{:?}",
        runs[1].1
    );
}

/// `-u` leaves a newer destination *file* only: a symlink or special that is newer in the
/// destination is still updated, as rsync does ("this does not affect the copying of dirs,
/// symlinks, or other special files"). Before, arsync left a newer symlink with its old target.
#[test]
fn update_leaves_newer_files_but_updates_newer_symlinks_and_specials() {
    if !require_rsync("update_leaves_newer_files_but_updates_newer_symlinks_and_specials") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"source");
    symlink("new target", src.join("l")).unwrap();
    mkfifo(&src.join("p"));
    for n in ["f", "l", "p"] {
        set_times(&src.join(n), 1_500_000_000, 0);
    }
    let mut seen = Vec::new();
    for tool in ["rsync", "arsync"] {
        let dst = s.path().join(tool);
        fs::create_dir(&dst).unwrap();
        write(&dst.join("f"), b"newer destination");
        symlink("old target", dst.join("l")).unwrap();
        mkfifo(&dst.join("p"));
        for n in ["f", "l", "p"] {
            set_times(&dst.join(n), 1_600_000_000, 0);
        }
        let out = by_tool(tool, &["-a", "-u"], &src, &dst);
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        let mtime = |n: &str| fs::symlink_metadata(dst.join(n)).unwrap().mtime();
        seen.push((
            fs::read(dst.join("f")).unwrap(),
            fs::read_link(dst.join("l")).unwrap(),
            [mtime("f"), mtime("l"), mtime("p")],
        ));
    }
    assert_eq!(
        seen[1], seen[0],
        "(f, l's target, mtimes): arsync against rsync"
    );
    assert_eq!(seen[1].0, b"newer destination");
    assert_eq!(seen[1].1, Path::new("new target"));
}

/// `-u -H`: a newer destination file is left as it is whichever name of a hard-linked group it
/// has, as rsync judges every name before linking it; the group's other names get the source's
/// data. Before, a newer file under a further name was replaced by a link to the first name's
/// copy (the newer data lost). Run with each name newer in turn (which name arsync meets first
/// depends on the directory's order), in one directory and in two.
#[test]
fn update_leaves_a_newer_hard_linked_name_as_rsync() {
    if !require_rsync("update_leaves_a_newer_hard_linked_name_as_rsync") {
        return;
    }
    let s = Scratch::new();
    for (i, (names, newer)) in [
        (["a", "b"], "a"),
        (["a", "b"], "b"),
        (["x/a", "y/b"], "x/a"),
        (["x/a", "y/b"], "y/b"),
    ]
    .into_iter()
    .enumerate()
    {
        let src = s.path().join(format!("src{i}"));
        named_files(&src, &names[..1]);
        fs::create_dir_all(src.join(names[1]).parent().unwrap()).unwrap();
        fs::hard_link(src.join(names[0]), src.join(names[1])).unwrap();
        set_times(&src.join(names[0]), 1_500_000_000, 0);
        let seen = same_as_rsync(&(names, newer), |tool| {
            let dst = s.path().join(format!("{tool}{i}"));
            fs::create_dir_all(dst.join(newer).parent().unwrap()).unwrap();
            write(&dst.join(newer), b"newer destination");
            set_times(&dst.join(newer), 1_600_000_000, 0);
            let out = by_tool(tool, &["-rH", "-u"], &src, &dst);
            let of = |n: &str| {
                let m = fs::metadata(dst.join(n)).unwrap();
                (fs::read(dst.join(n)).unwrap(), m.nlink(), m.mtime())
            };
            (code(&out), of(names[0]).0, of(names[1]).0, of(newer))
        });
        assert_eq!(seen.3, (b"newer destination".to_vec(), 1, 1_600_000_000));
    }
}

/// `--append` (and `--append-verify`) with files that do not grow: one up to date (same size
/// and mtime) with other permissions gets them, as rsync gives them; one the same size with
/// another mtime, and one longer, are left as they are. Before, arsync left all three.
#[test]
fn append_fixes_the_attributes_of_files_that_are_up_to_date() {
    if !require_rsync("append_fixes_the_attributes_of_files_that_are_up_to_date") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    for n in ["same", "longer", "other-time"] {
        write(&src.join(n), b"abcd");
        chmod(&src.join(n), 0o755);
        set_times(&src.join(n), 1_000_000_000, 0);
    }
    for flag in ["--append", "--append-verify"] {
        let mut seen = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{flag}"));
            fs::create_dir(&dst).unwrap();
            write(&dst.join("same"), b"abcd");
            write(&dst.join("longer"), b"abcdefgh");
            write(&dst.join("other-time"), b"abcd");
            for (n, t) in [("same", 0), ("longer", 0), ("other-time", 5)] {
                chmod(&dst.join(n), 0o644);
                set_times(&dst.join(n), 1_000_000_000 + t, 0);
            }
            let out = by_tool(tool, &["-a", flag], &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flag}: {}", err(&out));
            let state: Vec<_> = ["same", "longer", "other-time"]
                .iter()
                .map(|n| {
                    let m = fs::metadata(dst.join(n)).unwrap();
                    (m.mode() & 0o7777, m.len(), m.mtime())
                })
                .collect();
            seen.push(state);
        }
        assert_eq!(
            seen[1], seen[0],
            "{flag}: (mode, size, mtime) of each, against rsync"
        );
        assert_eq!(seen[1][0].0, 0o755, "{flag}");
    }
}

/// Several sources into one destination whose trees overlap (`A/ B/ DEST`: the same
/// subdirectory in both; `SRC/x SRC/ DEST`), against rsync: the trees merge, a name both have
/// ends as the first source gives it (file and directory attributes; a directory wins over a
/// non-directory, as in rsync), and `--delete` removes
/// only what none of them has. Before, the second source's new subdirectory failed to take its
/// place (`rename (new directory) ... File exists`, left under a temporary name, exit 23), and
/// with `--delete` each source deleted the other's files: exit 0 with half the tree gone.
#[test]
fn overlapping_sources_merge_as_rsync_merges_them() {
    if !require_rsync("overlapping_sources_merge_as_rsync_merges_them") {
        return;
    }
    let s = Scratch::new();
    let (a, b) = (s.path().join("a"), s.path().join("b"));
    fs::create_dir_all(a.join("common/only-a")).unwrap();
    fs::create_dir_all(b.join("common/only-b")).unwrap();
    write(&a.join("common/same"), b"from a");
    write(&b.join("common/same"), b"from b, longer");
    write(&a.join("common/only-a/f"), b"a");
    write(&b.join("common/only-b/f"), b"b");
    write(&a.join("top-a"), b"a");
    write(&b.join("top-b"), b"b");
    // A file in the first, a directory in the second: the directory is kept (rsync keeps the
    // directory of duplicate names, else the first).
    write(&a.join("common/kind"), b"a file");
    fs::create_dir(b.join("common/kind")).unwrap();
    write(&b.join("common/kind/inside"), b"b");
    chmod(&a.join("common"), 0o750);
    chmod(&b.join("common"), 0o705);
    for (i, root) in [&a, &b].iter().enumerate() {
        for p in ["common/same", "common", ""] {
            set_times(&root.join(p), 1_500_000_000 + i as i64 * 1000, 0);
        }
    }
    let tree = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = contents(d).into_iter().collect();
        for p in ["", "common", "common/same"] {
            let m = fs::metadata(d.join(p)).unwrap();
            v.push(format!("{p}: {:o} {}", m.mode() & 0o7777, m.mtime()));
        }
        v
    };
    let arg = |p: &Path, slash: &str| format!("{}{slash}", p.display());
    // Into a new destination, and with --delete into one that has an extra file and a copy of
    // each source's own files from an earlier run.
    // With -b into one that has an older `common/same`: one backup of it, of what was there.
    for (delete, backup) in [(false, false), (true, false), (false, true)] {
        let mut seen = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}-{delete}-{backup}"));
            if delete {
                fs::create_dir(&dst).unwrap();
                write(&dst.join("extra"), b"x");
                write(&dst.join("top-a"), b"a");
                write(&dst.join("top-b"), b"b");
            }
            if backup {
                fs::create_dir_all(dst.join("common")).unwrap();
                write(&dst.join("common/same"), b"old");
            }
            let mut args = vec!["-a".to_string()];
            if delete {
                args.push("--delete".into());
            }
            if backup {
                args.push("-b".into());
            }
            args.extend([arg(&a, "/"), arg(&b, "/"), arg(&dst, "")]);
            let out = if tool == "rsync" {
                Command::new("rsync").args(&args).output().unwrap()
            } else {
                arsync().args(&args).output().unwrap()
            };
            assert_eq!(code(&out), 0, "{tool} {args:?}: {}", err(&out));
            seen.push(tree(&dst));
        }
        if backup {
            // (rsync leaves the directories it made backups in with the time of the run; arsync
            // gives them the source's: compared without directory times.)
            for v in &mut seen {
                for l in v.iter_mut() {
                    if l.starts_with(": ") || l.starts_with("common: ") {
                        l.truncate(l.rfind(' ').unwrap());
                    }
                }
            }
        }
        assert_eq!(
            seen[1], seen[0],
            "--delete {delete} -b {backup}: arsync against rsync"
        );
        assert!(seen[1].contains(&"f common/same [102, 114, 111, 109, 32, 97]".to_string()));
    }
    // A directory given alone and again inside its parent's contents.
    let mut seen = Vec::new();
    for tool in ["rsync", "arsync"] {
        let dst = s.path().join(format!("{tool}-nested"));
        let args = [arg(&a.join("common"), ""), arg(&a, "/"), arg(&dst, "")];
        let out = if tool == "rsync" {
            Command::new("rsync").arg("-a").args(args).output().unwrap()
        } else {
            arsync().arg("-a").args(args).output().unwrap()
        };
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        seen.push(tree(&dst));
    }
    assert_eq!(seen[1], seen[0], "SRC/x SRC/ DEST: arsync against rsync");
}

/// `-R` into a new destination inside the current directory (the transfer's source root): the
/// destination gets a new directory's permissions, as rsync's mkdir gives them, not the 0700 it
/// was made with (it was left so when the destination could not be staged).
#[test]
fn relative_paths_into_a_new_destination_inside_the_source() {
    let s = Scratch::new();
    fs::create_dir_all(s.path().join("src/a")).unwrap();
    write(&s.path().join("src/a/f"), b"f");
    let out = arsync()
        .current_dir(s.path())
        .args(["-aR", "src/", "made"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", err(&out));
    let mode = fs::metadata(s.path().join("made")).unwrap().mode() & 0o7777;
    // (The mask the child inherits, read without changing it: other tests run meanwhile.)
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    assert_eq!(mode, 0o777 & !umask, "{mode:o}");
    assert_eq!(fs::read(s.path().join("made/src/a/f")).unwrap(), b"f");
}

/// Without `-t` the quick check still compares mtimes, as rsync's does ("a missing -t (or -a)
/// will cause the next transfer to behave as if it used --ignore-times"): a file of the same
/// size whose mtime differs is copied again; `--size-only` leaves it. Before, arsync left every
/// file of the same size: a changed file was never updated by `-rlpgoD` or `-a --no-t`.
#[test]
fn without_times_a_file_of_the_same_size_and_another_mtime_is_copied_again() {
    if !require_rsync("without_times_a_file_of_the_same_size_and_another_mtime_is_copied_again") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"new");
    set_times(&src.join("f"), 1_600_000_000, 0);
    for flags in [
        &["-rlpgoD"][..],
        &["-a", "--no-t"],
        &["-rlpgoD", "--size-only"],
    ] {
        let mut seen = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{}", flags.join("")));
            fs::create_dir(&dst).unwrap();
            write(&dst.join("f"), b"old");
            set_times(&dst.join("f"), 1_500_000_000, 0);
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            seen.push(fs::read(dst.join("f")).unwrap());
        }
        assert_eq!(seen[1], seen[0], "{flags:?}: arsync against rsync");
        let want: &[u8] = if flags.contains(&"--size-only") {
            b"old"
        } else {
            b"new"
        };
        assert_eq!(seen[1], want, "{flags:?}");
    }
}

#[test]
fn stats_and_destination_inside_an_excluded_source_dir() {
    let s = Scratch::new();
    let src = s.path().join("src");
    filter_tree(&src);
    let out = run(&[
        OsStr::new("-a"),
        OsStr::new("--stats"),
        OsStr::new(&format!("{}/", src.display())),
        s.path().join("d").as_os_str(),
    ]);
    assert_eq!(code(&out), 0, "{}", err(&out));
    let t = text(&out);
    assert!(
        t.contains("Number of files: 30 (reg: 18, dir: 11, link: 1)"),
        "{t}"
    );
    assert!(t.contains("Number of regular files transferred: 18"), "{t}");
    assert!(t.contains("Number of deleted files: 0"), "{t}");
    // A destination inside the source is fine when the filters keep it out of the scan.
    let inner = src.join("backup");
    let out = copy_contents(&["-a", "--exclude=/backup/"], &src, &inner);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert!(inner.join("src/main.c").exists() && !inner.join("backup").exists());
    let out = copy_contents(&["-a"], &src, &src.join("backup2"));
    assert_eq!(
        code(&out),
        1,
        "unexcluded destination inside the source must be refused"
    );
}

/// SIGKILL a copy once `ready(pid)` says it is under way.
fn kill_mid_copy(args: &[&str], src: &Path, dst: &Path, ready: impl Fn(u32) -> bool) {
    use std::os::unix::process::ExitStatusExt;
    let status = signal_mid_copy(args, src, dst, libc::SIGKILL, ready);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not killed mid-copy: {status}"
    );
}

/// A source with one big file (slow to copy with small buffers) and a few small ones.
fn big_source(root: &Path, mib: usize) -> u64 {
    fs::create_dir_all(root.join("sub")).unwrap();
    let mut data = content(77, 1 << 20);
    let f = root.join("big");
    {
        use std::io::Write;
        let mut w = fs::File::create(&f).unwrap();
        for i in 0..mib {
            data[0] = i as u8;
            w.write_all(&data).unwrap();
        }
    }
    set_times(&f, 1_650_000_000, 42);
    for i in 0..5 {
        write(
            &root.join(format!("sub/s{i}")),
            format!("small {i}").as_bytes(),
        );
    }
    (mib as u64) << 20
}

fn file_size(p: &Path) -> Option<u64> {
    fs::symlink_metadata(p).ok().map(|m| m.len())
}

const SLOW: [&str; 4] = [
    "--copy-method=uring",
    "--buffer-size=4K",
    "--queue-depth=1",
    "--threads=1",
];

#[test]
fn killed_run_leaves_nothing_half_written_and_a_rerun_is_exact() {
    let s = Scratch::new();
    let src = s.path().join("src");
    big_source(&src, 192);
    // Default staging: an unnamed O_TMPFILE file, visible only as an open fd of the process.
    // (In a destination that exists: one the run makes is made under a temporary name, below.)
    let dst = s.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    let mut args = vec!["-a"];
    args.extend(SLOW);
    let dst_str = dst.display().to_string();
    kill_mid_copy(&args, &src, &dst, |pid| {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_link(e.path()).ok())
            .any(|t| {
                let t = t.to_string_lossy();
                t.starts_with(&dst_str) && t.ends_with("(deleted)")
            })
    });
    assert!(
        !dst.join("big").exists(),
        "a half-written file under its final name"
    );
    // The big file left nothing (its data was in an unnamed file). A new subtree is made under a
    // temporary name and renamed into place when finished, so if the kill came first, `sub` is
    // still there under that name: a whole-subtree temporary, never a file under a final name.
    for p in temporaries(&dst) {
        let top = p.components().next().unwrap().as_os_str().to_string_lossy();
        assert!(top.starts_with(".~arsync-"), "{p:?}");
    }
    for p in treediff::walk(&dst).unwrap() {
        let under_final_names = !p.to_string_lossy().contains("~arsync");
        if under_final_names && fs::symlink_metadata(dst.join(&p)).unwrap().is_file() {
            assert_eq!(
                fs::read(dst.join(&p)).unwrap(),
                fs::read(src.join(&p)).unwrap()
            );
        }
    }
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert!(temporaries(&dst).is_empty(), "{:?}", temporaries(&dst));
    assert_same(&src, &dst, treediff::Check::archive());
    // Named staging (--temp-names): the killed run leaves its temporary; the next one removes it.
    let dst = s.path().join("dst-named");
    let mut args = vec!["-a", "--temp-names"];
    args.extend(SLOW);
    kill_mid_copy(&args, &src, &dst, |_| {
        !temporaries(&dst).is_empty()
            && temporaries(&dst)
                .iter()
                .any(|p| file_size(&dst.join(p)).unwrap_or(0) > 0)
    });
    assert!(!dst.join("big").exists());
    // The big file's temporary (and, if the kill landed between a small file's create and
    // rename, that one's too): only temporaries, nothing under a final name.
    let left = temporaries(&dst);
    assert!(
        !left.is_empty()
            && left.iter().all(|p| p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".~arsync-")),
        "{left:?}"
    );
    let out = copy_contents(&["-a", "--temp-names"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert!(temporaries(&dst).is_empty(), "{:?}", temporaries(&dst));
    assert_same(&src, &dst, treediff::Check::archive());
}

/// A new subtree is made under a temporary directory name and its files under their final
/// names inside it: a killed run leaves that temporary directory (never a final path to a
/// half-written file), and the next run removes it and copies exactly.
#[test]
fn killed_run_in_a_new_subtree_leaves_only_a_temporary_directory() {
    let s = Scratch::new();
    let src = s.path().join("src");
    big_source(&src.join("tree"), 192);
    let dst = s.path().join("dst");
    // The destination exists and is up to date at its top, so only `tree` is new.
    fs::create_dir_all(&dst).unwrap();
    let mut args = vec!["-a"];
    args.extend(SLOW);
    kill_mid_copy(&args, &src, &dst, |_| {
        temporaries(&dst)
            .iter()
            .any(|p| p.ends_with("big") && file_size(&dst.join(p)).unwrap_or(0) > (1 << 20))
    });
    assert!(
        !dst.join("tree").exists(),
        "the new subtree is visible before it is complete"
    );
    let temps = temporaries(&dst);
    assert!(
        temps.iter().any(|p| p.components().count() == 1),
        "no temporary directory: {temps:?}"
    );
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
    assert!(temporaries(&dst).is_empty(), "{:?}", temporaries(&dst));
    // SIGINT instead: the run stops cleanly (exit 20), renames the subtree into place with the
    // files it completed, and removes the half-written one.
    let dst = s.path().join("dst-int");
    fs::create_dir_all(&dst).unwrap();
    let status = signal_mid_copy(&args, &src, &dst, libc::SIGINT, |_| {
        temporaries(&dst)
            .iter()
            .any(|p| p.ends_with("big") && file_size(&dst.join(p)).unwrap_or(0) > (1 << 20))
    });
    assert_eq!(status.code(), Some(20), "{status}");
    assert!(temporaries(&dst).is_empty(), "{:?}", temporaries(&dst));
    assert!(
        !dst.join("tree/big").exists(),
        "a half-written file under its final name"
    );
    for i in 0..5 {
        let name = format!("tree/sub/s{i}");
        if let Ok(got) = fs::read(dst.join(&name)) {
            assert_eq!(got, fs::read(src.join(&name)).unwrap(), "{name}");
        }
    }
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
}

/// A destination directory the run makes (`SRC/ DEST`, DEST absent) is made beside its final
/// name under a temporary one and renamed into place when complete, so a killed run leaves no
/// DEST at all, only that temporary, which the next run removes; a stopped run (SIGINT) renames
/// it into place with the files it completed.
#[test]
fn killed_run_into_a_new_destination_leaves_only_a_temporary_beside_it() {
    let s = Scratch::new();
    let src = s.path().join("src");
    big_source(&src, 192);
    let out_dir = s.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let dst = out_dir.join("dst");
    let mut args = vec!["-a"];
    args.extend(SLOW);
    let big_in_temporary = |_: u32| {
        temporaries(&out_dir)
            .iter()
            .any(|p| p.ends_with("big") && file_size(&out_dir.join(p)).unwrap_or(0) > (1 << 20))
    };
    kill_mid_copy(&args, &src, &dst, big_in_temporary);
    assert!(
        fs::symlink_metadata(&dst).is_err(),
        "the destination is visible before it is complete"
    );
    let left: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.len() == 1 && left[0].starts_with(".~arsync-") && left[0].contains("-root-"),
        "{left:?}"
    );
    // A temporary of another destination (same parent) is not this run's to remove.
    let other = out_dir.join(".~arsync-7ffffffe-0-0-root-0000000000000000");
    fs::create_dir_all(other.join("inner")).unwrap();
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
    let mut left: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".~arsync-7ffffffe-0-0-root-0000000000000000", "dst"]);
    fs::remove_dir_all(&other).unwrap();
    // SIGINT: exit 20, DEST in place with what was complete, nothing under a temporary name.
    let dst = out_dir.join("dst-int");
    let status = signal_mid_copy(&args, &src, &dst, libc::SIGINT, big_in_temporary);
    assert_eq!(status.code(), Some(20), "{status}");
    assert!(
        temporaries(&out_dir).is_empty(),
        "{:?}",
        temporaries(&out_dir)
    );
    assert!(dst.is_dir());
    assert!(
        !dst.join("big").exists(),
        "a half-written file under its final name"
    );
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
}

/// The sweep for a killed run's temporaries never touches an entry the source has, even one
/// whose name looks like ours (a process id that is not running).
#[test]
fn sources_named_like_our_temporaries_are_copied_and_kept() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join(".~arsync-7ffffffe-0-0/inner")).unwrap();
    write(&src.join(".~arsync-7ffffffe-0-0/inner/f"), b"user data");
    write(&src.join(".~arsync-7ffffffe-0-1"), b"a user file");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("sub/.~arsync-7ffffffe-1-0"), b"another");
    let dst = s.path().join("dst");
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
    // A change in each directory: the re-run finds their mtimes changed and sweeps them.
    write(&src.join("new"), b"n");
    write(&src.join("sub/new"), b"n");
    let out = copy_contents(&["-a"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
}

#[test]
fn partial_resumes_with_only_the_missing_bytes() {
    let s = Scratch::new();
    let src = s.path().join("src");
    let total = big_source(&src, 192);
    for (tag, flags, partial) in [
        (
            "p",
            vec!["--partial"],
            PathBuf::from(".big.~arsync-partial"),
        ),
        (
            "pd",
            vec!["--partial-dir=.rsync-partial"],
            PathBuf::from(".rsync-partial/big"),
        ),
    ] {
        let dst = s.path().join(tag);
        // The small files first, so the interrupted run is left with only the big one to do.
        let mut first = vec!["-a", "--exclude=big"];
        first.extend(flags.iter().copied());
        let out = copy_contents(&first, &src, &dst);
        assert_eq!(code(&out), 0, "{tag}: {}", err(&out));
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        args.extend(SLOW);
        let p = dst.join(&partial);
        kill_mid_copy(&args, &src, &dst, |_| {
            file_size(&p).unwrap_or(0) > (1 << 20)
        });
        assert!(
            !dst.join("big").exists(),
            "{tag}: half-written file under its final name"
        );
        let kept = file_size(&p).expect("the partial file was kept");
        assert!(kept > 0 && kept < total, "{tag}: kept {kept}");
        let json = s.path().join(format!("{tag}.json"));
        let mut again = vec!["-a", "--stats-json", json.to_str().unwrap()];
        again.extend(flags.iter().copied());
        let out = copy_contents(&again, &src, &dst);
        assert_eq!(code(&out), 0, "{}", err(&out));
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        let bytes = v["bytes"].as_u64().unwrap();
        assert!(
            bytes <= total - kept,
            "{tag}: the re-run wrote {bytes} bytes, only {} were missing",
            total - kept
        );
        assert!(bytes > 0);
        assert!(
            !p.exists() && temporaries(&dst).is_empty(),
            "{tag}: partial file left"
        );
        assert!(
            !dst.join(".rsync-partial").exists(),
            "{tag}: empty partial dir left"
        );
        assert_same(&src, &dst, treediff::Check::archive());
    }
}

#[test]
fn inplace_keeps_the_inode_and_appends_to_a_matching_prefix() {
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = content(5, 3 << 20);
    write(&src.join("grow"), &data);
    write(&src.join("other"), b"new content");
    let dst = s.path().join("dst");
    fs::create_dir(&dst).unwrap();
    write(&dst.join("grow"), &data[..1 << 20]);
    write(&dst.join("other"), b"old");
    fs::hard_link(dst.join("other"), s.path().join("outside-link")).unwrap();
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    let (g, o) = (ino(&dst.join("grow")), ino(&dst.join("other")));
    let json = s.path().join("s.json");
    let out = copy_contents(
        &["-a", "--inplace", "--stats-json", json.to_str().unwrap()],
        &src,
        &dst,
    );
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_eq!(ino(&dst.join("grow")), g, "--inplace made a new file");
    assert_eq!(ino(&dst.join("other")), o);
    assert_eq!(
        fs::read(s.path().join("outside-link")).unwrap(),
        b"new content",
        "in place means every link sees the new content"
    );
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        v["bytes"].as_u64().unwrap(),
        (2 << 20) + 11,
        "only the missing 2 MiB of the grown file (and the other file) were written"
    );
    assert_same(&src, &dst, treediff::Check::archive());
    // Without --inplace the update is a new inode (atomic replacement).
    write(&src.join("other"), b"newer content");
    assert_eq!(code(&copy_contents(&["-a"], &src, &dst)), 0);
    assert_ne!(ino(&dst.join("other")), o);
    let out = copy_contents(&["-a", "--inplace", "--partial-dir=x"], &src, &dst);
    assert_eq!(code(&out), 1, "--inplace with --partial-dir: {}", err(&out));
}

#[test]
fn link_dest_links_unchanged_files() {
    if !require_rsync("link_dest_links_unchanged_files") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    filter_tree(&src);
    let b1 = s.path().join("backup1");
    assert_eq!(code(&copy_contents(&["-a"], &src, &b1)), 0);
    write(&src.join("src/main.c"), b"changed");
    write(&src.join("new.txt"), b"new");
    chmod(&src.join("doc/readme"), 0o600);
    for (tool, dst) in [("arsync", "b2"), ("rsync", "r2")] {
        let dst = s.path().join(dst);
        let flags = ["-a", "--link-dest=../backup1"];
        let out = by_tool(tool, &flags, &src, &dst);
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        if tool == "arsync" {
            // (rsync 3.2 leaves some directory mtimes unset here: the comparison with it is on
            // which files are linked.)
            assert_same(&src, &dst, treediff::Check::archive());
        }
    }
    let linked = |d: &str| -> BTreeSet<String> {
        treediff::walk(&s.path().join(d))
            .unwrap()
            .into_iter()
            .filter(|p| {
                let a = fs::symlink_metadata(s.path().join(d).join(p)).unwrap();
                a.is_file() && fs::symlink_metadata(b1.join(p)).is_ok_and(|b| b.ino() == a.ino())
            })
            .map(|p| p.display().to_string())
            .collect()
    };
    let got = linked("b2");
    assert_eq!(got, linked("r2"), "linked the same files as rsync");
    assert!(got.contains("top.txt") && !got.contains("src/main.c") && !got.contains("doc/readme"));
}

#[test]
fn a_file_copied_from_a_reference_gets_the_sources_extended_attributes() {
    // With -X, a --link-dest/--copy-dest reference that differs from the source in its
    // extended attributes alone is not linked: its data is copied locally, and the attributes
    // must be the source's. The copy took the reference's (here: none), where rsync gives the
    // source's.
    if !require_rsync("a_file_copied_from_a_reference_gets_the_sources_extended_attributes") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("f"), b"same data");
    let reference = s.path().join("ref");
    assert_eq!(code(&copy_contents(&["-a"], &src, &reference)), 0);
    setxattr(&src.join("f"), "user.k", b"v");
    for mode in ["--link-dest", "--copy-dest"] {
        for (tool, dst) in [("arsync", "ours"), ("rsync", "theirs")] {
            let dst = s.path().join(format!("{dst}{mode}"));
            let flag = format!("{mode}={}", reference.display());
            let out = by_tool(tool, &["-aX", &flag], &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {mode}: {}", err(&out));
            assert_eq!(
                treediff::xattrs(&dst.join("f")),
                vec![(b"user.k".to_vec(), b"v".to_vec())],
                "{tool} {mode}"
            );
            let (a, b) = (
                fs::metadata(dst.join("f")).unwrap(),
                fs::metadata(reference.join("f")).unwrap(),
            );
            assert_ne!(
                a.ino(),
                b.ino(),
                "{tool} {mode}: linked to a reference that differs"
            );
            assert_eq!(fs::read(dst.join("f")).unwrap(), b"same data");
        }
    }
}

#[test]
fn size_limits_leave_files_alone_as_rsync_does() {
    if !require_rsync("size_limits_leave_files_alone_as_rsync_does") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    for (p, len) in [
        ("small", 100),
        ("big", 5000),
        ("sub/k2", 2048),
        ("sub/k2p", 2049),
        ("sub/empty", 0),
        ("sub/d/k1", 1024),
    ] {
        let f = src.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        write(&f, &content(len as u64, len));
    }
    symlink("big", src.join("link")).unwrap();
    // Whole seconds everywhere: rsync compares times to the second, arsync to the nanosecond.
    let stamp = |root: &Path| {
        for (i, p) in treediff::walk(root).unwrap().into_iter().rev().enumerate() {
            set_times(&root.join(&p), 1_700_000_000 + i as i64 * 7, 0);
        }
    };
    stamp(&src);
    // A destination from an earlier run, since changed: `big` holds other data (of another
    // size), and `extra` is not in the source.
    let base = s.path().join("base");
    assert_eq!(code(&rsync(&["-a"], &src, &base)), 0);
    write(&base.join("big"), b"older content");
    write(&base.join("extra"), b"x");
    stamp(&base);
    let cases: Vec<Vec<&str>> = vec![
        vec!["--max-size=2K"],
        vec!["--min-size=2K"],
        vec!["--max-size=2K-1"],
        vec!["--max-size=2KB"],
        vec!["--max-size=1.5k"],
        vec!["--min-size=1", "--max-size=4.9K"],
        vec!["--max-size=0"],
        vec!["--min-size=2049b", "--max-size=5000"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let (want, got) = (
            s.path().join(format!("rsync{i}")),
            s.path().join(format!("arsync{i}")),
        );
        for d in [&want, &got] {
            assert_eq!(code(&rsync(&["-a"], &base, d)), 0);
        }
        let mut args = vec!["-a", "-i", "--delete"];
        args.extend(flags.iter().copied());
        let mut dry = args.clone();
        dry.push("-n");
        let w = rsync(&dry, &src, &want);
        assert_eq!(code(&w), 0, "rsync {flags:?}: {}", err(&w));
        let g = copy_contents(&dry, &src, &got);
        assert_eq!(code(&g), 0, "arsync {flags:?}: {}", err(&g));
        assert_eq!(items(&g), items(&w), "-n -i with {flags:?}");
        let w = rsync(&args, &src, &want);
        assert_eq!(code(&w), 0, "{}", err(&w));
        let g = copy_contents(&args, &src, &got);
        assert_eq!(code(&g), 0, "{}", err(&g));
        assert_eq!(listing(&got), listing(&want), "copy with {flags:?}");
        for p in treediff::walk(&want).unwrap() {
            let m = fs::symlink_metadata(want.join(&p)).unwrap();
            if m.is_file() {
                assert_eq!(
                    fs::read(got.join(&p)).unwrap(),
                    fs::read(want.join(&p)).unwrap(),
                    "{} with {flags:?}",
                    p.display()
                );
            }
        }
    }
    // The files left alone are named with -vv, as rsync names them.
    let out = copy_contents(&["-a", "-n", "-vv", "--max-size=2K"], &src, &base);
    assert_eq!(code(&out), 0);
    let t = text(&out);
    assert!(t.contains("big is over max-size\n"), "{t}");
    assert!(t.contains("sub/k2p is over max-size\n"), "{t}");
    let out = copy_contents(&["-a", "-n", "--max-size=2Q"], &src, &base);
    assert_eq!(code(&out), 1, "a size rsync would refuse is a usage error");
}

#[test]
fn remove_source_files_removes_what_rsync_removes() {
    if !require_rsync("remove_source_files_removes_what_rsync_removes") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    for (p, len) in [
        ("a", 10),
        ("sub/b", 20),
        ("sub/deeper/c", 30),
        ("same", 40),
        ("attr", 50),
        ("big", 5000),
        ("h1", 60),
    ] {
        let f = src.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        write(&f, &content(len as u64, len));
    }
    fs::hard_link(src.join("h1"), src.join("sub/h2")).unwrap();
    symlink("a", src.join("link")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    // Whole seconds: rsync compares times to the second.
    for (i, p) in treediff::walk(&src).unwrap().into_iter().rev().enumerate() {
        set_times(&src.join(&p), 1_700_000_000 + i as i64 * 7, 0);
    }
    // The destination already has `same` (identical) and `attr` (another mode).
    let base = s.path().join("base");
    fs::create_dir(&base).unwrap();
    for f in ["same", "attr"] {
        assert!(
            Command::new("cp")
                .arg("-a")
                .arg(src.join(f))
                .arg(base.join(f))
                .status()
                .unwrap()
                .success()
        );
    }
    fs::set_permissions(
        base.join("attr"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let flags = ["-aH", "--max-size=1K", "--remove-source-files"];
    let mut runs = Vec::new();
    for tool in ["rsync", "arsync"] {
        let (from, to) = (s.path().join(format!("src-{tool}")), s.path().join(tool));
        for (a, b) in [(&src, &from), (&base, &to)] {
            assert_eq!(code(&rsync(&["-aH"], a, b)), 0);
        }
        // A dry run removes nothing.
        let mut dry = flags.to_vec();
        dry.push("-n");
        let out = by_tool(tool, &dry, &from, &to);
        assert_eq!(code(&out), 0, "{tool} -n: {}", err(&out));
        assert_eq!(listing(&from), listing(&src), "{tool} -n removed something");
        let out = by_tool(tool, &flags, &from, &to);
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        runs.push((listing(&from), listing(&to), to));
    }
    let (rsync_left, rsync_dst, _) = &runs[0];
    let (left, dst, to) = &runs[1];
    assert_eq!(left, rsync_left, "what stays in the source");
    assert_eq!(dst, rsync_dst, "what the destination holds");
    // Only directories and the file over --max-size stay.
    assert_eq!(
        left.iter()
            .filter(|l| l.starts_with("f "))
            .collect::<Vec<_>>(),
        vec!["f big"]
    );
    // The copies are whole, and the hard link survived the removal of its other name.
    assert_eq!(fs::read(to.join("sub/h2")).unwrap(), content(60, 60));
    assert_eq!(
        fs::metadata(to.join("h1")).unwrap().ino(),
        fs::metadata(to.join("sub/h2")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(to.join("attr")).unwrap().mode() & 0o777,
        fs::metadata(src.join("attr")).unwrap().mode() & 0o777
    );
}

/// Every path under `root` with its type, and a file's content or a symlink's target.
fn contents(root: &Path) -> BTreeSet<String> {
    if !root.exists() {
        return BTreeSet::new();
    }
    treediff::walk(root)
        .unwrap()
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| {
            let full = root.join(&p);
            let m = fs::symlink_metadata(&full).unwrap();
            if m.is_dir() {
                format!("d {}", p.display())
            } else if m.file_type().is_symlink() {
                format!(
                    "l {} -> {}",
                    p.display(),
                    fs::read_link(&full).unwrap().display()
                )
            } else {
                format!("f {} {:?}", p.display(), fs::read(&full).unwrap())
            }
        })
        .collect()
}

/// `-b` and `--backup-dir` with a symlink and a FIFO that differ from the source in their mtime
/// only: rsync changes them in place and backs nothing up; arsync makes them anew (to set what
/// differs) and, before, backed the old ones up as if they had been replaced.
#[test]
fn attribute_changes_of_symlinks_and_specials_make_no_backups() {
    if !require_rsync("attribute_changes_of_symlinks_and_specials_make_no_backups") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    symlink("target", src.join("l")).unwrap();
    mkfifo(&src.join("p"));
    symlink("new target", src.join("changed")).unwrap();
    for flags in [&["-a", "-b"][..], &["-a", "--backup-dir=../bak"]] {
        let mut seen = Vec::new();
        for tool in ["rsync", "arsync"] {
            let top = s
                .path()
                .join(format!("{tool}{}", flags.len() + flags[1].len()));
            let dst = top.join("d");
            fs::create_dir_all(&dst).unwrap();
            symlink("target", dst.join("l")).unwrap();
            mkfifo(&dst.join("p"));
            symlink("old target", dst.join("changed")).unwrap();
            for (i, n) in ["l", "p", "changed"].iter().enumerate() {
                set_times(&src.join(n), 1_600_000_000 + i as i64, 5);
                set_times(&dst.join(n), 1_500_000_000, 0);
            }
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            for n in ["l", "p"] {
                let m = fs::symlink_metadata(dst.join(n)).unwrap();
                assert_eq!(
                    (m.mtime(), m.mtime_nsec()),
                    (1_600_000_000 + (n == "p") as i64, 5)
                );
            }
            let bak = top.join("bak");
            let backups = if bak.exists() {
                listing(&bak)
            } else {
                BTreeSet::new()
            };
            seen.push((listing(&dst), backups));
        }
        assert_eq!(
            seen[1], seen[0],
            "{flags:?}: (destination, backup directory)"
        );
        // The symlink whose target changed is backed up by both.
        assert!(
            seen[1].0.contains("l changed~") || seen[1].1.contains("l changed"),
            "{flags:?}: {:?}",
            seen[1]
        );
    }
}

/// Whether a test that must run as root and with rsync as its oracle can run; if not, it is
/// skipped with `why` (or rsync's absence) said.
fn root_and_rsync(name: &str, why: &str) -> bool {
    if !is_root() {
        skip(name, why);
        return false;
    }
    require_rsync(name)
}

/// A symlink and a FIFO that differ from the source in their mtime only, under `--no-o
/// --no-g` and under `--no-g` alone (as root): the owner and group not preserved stay the
/// existing entry's, as rsync (which changes the entry in place) leaves them. arsync makes such
/// an entry anew, and before it took the owner of a new entry (root's).
#[test]
fn attribute_changes_of_symlinks_and_specials_keep_an_owner_not_preserved() {
    if !root_and_rsync(
        "attribute_changes_of_symlinks_and_specials_keep_an_owner_not_preserved",
        "needs root to give entries another owner",
    ) {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    symlink("target", src.join("l")).unwrap();
    mkfifo(&src.join("p"));
    for n in ["l", "p"] {
        // (An owner and group that are not root's: a new entry's would be.)
        std::os::unix::fs::lchown(src.join(n), Some(2), Some(1000)).unwrap();
        set_times(&src.join(n), 1_600_000_000, 7);
    }
    for (flags, want) in [
        (&["-a", "--no-o", "--no-g"][..], (1, 1)),
        (&["-a", "--no-g"], (2, 1)),
    ] {
        let mut seen = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{}", flags.len()));
            fs::create_dir(&dst).unwrap();
            symlink("target", dst.join("l")).unwrap();
            mkfifo(&dst.join("p"));
            for n in ["l", "p"] {
                std::os::unix::fs::lchown(dst.join(n), Some(1), Some(1)).unwrap();
                set_times(&dst.join(n), 1_500_000_000, 0);
            }
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            let state: Vec<_> = ["l", "p"]
                .iter()
                .map(|n| {
                    let m = fs::symlink_metadata(dst.join(n)).unwrap();
                    (m.uid(), m.gid(), m.mtime())
                })
                .collect();
            seen.push(state);
        }
        assert_eq!(
            seen[1], seen[0],
            "{flags:?}: (uid, gid, mtime) of l and p, against rsync"
        );
        assert_eq!(seen[1][0], (want.0, want.1, 1_600_000_000), "{flags:?}");
    }
}

#[test]
fn backups_are_kept_as_rsync_keeps_them() {
    if !require_rsync("backups_are_kept_as_rsync_keeps_them") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("t")).unwrap();
    fs::create_dir_all(src.join("keep")).unwrap();
    write(&src.join("f"), b"new content");
    write(&src.join("s"), b"same");
    write(&src.join("keep/g"), b"new g, longer");
    symlink("new", src.join("l")).unwrap();
    // The destination of an earlier run, since changed at the source.
    let base = s.path().join("base");
    fs::create_dir_all(base.join("gone/sub")).unwrap();
    fs::create_dir_all(base.join("keep")).unwrap();
    write(&base.join("f"), b"old");
    write(&base.join("s"), b"same");
    write(&base.join("keep/g"), b"old g");
    symlink("old", base.join("l")).unwrap();
    write(&base.join("t"), b"a file where a directory goes");
    write(&base.join("gone/a"), b"a");
    write(&base.join("gone/sub/b"), b"b");
    write(&base.join("extra"), b"x");
    for root in [&src, &base] {
        for (i, p) in treediff::walk(root).unwrap().into_iter().rev().enumerate() {
            let full = root.join(&p);
            if !fs::symlink_metadata(&full)
                .unwrap()
                .file_type()
                .is_symlink()
            {
                set_times(&full, 1_700_000_000 + i as i64 * 7, 0);
            }
        }
    }
    // `s` is the same file on both sides.
    set_times(&base.join("s"), 1_600_000_000, 0);
    set_times(&src.join("s"), 1_600_000_000, 0);
    let cases: Vec<Vec<&str>> = vec![
        vec!["-b", "--delete"],
        vec!["--backup-dir=../bak", "--delete"],
        vec!["--backup-dir=../bak", "--suffix=.old"],
        vec!["-b", "--suffix=.old"],
        vec!["-b", "--inplace"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let mut args = vec!["-a"];
        args.extend(flags.iter().copied());
        let mut got = Vec::new();
        for tool in ["rsync", "arsync"] {
            let top = s.path().join(format!("{tool}{i}"));
            let dst = top.join("d");
            fs::create_dir(&top).unwrap();
            assert_eq!(code(&rsync(&["-a"], &base, &dst)), 0);
            let ino = fs::metadata(dst.join("f")).unwrap().ino();
            let out = by_tool(tool, &args, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            if flags.contains(&"--inplace") {
                assert_eq!(fs::metadata(dst.join("f")).unwrap().ino(), ino, "{tool}");
            }
            got.push((contents(&dst), contents(&top.join("bak"))));
        }
        assert_eq!(got[1].0, got[0].0, "the destination with {flags:?}");
        assert_eq!(got[1].1, got[0].1, "the backup directory with {flags:?}");
        assert!(
            got[1].0.iter().chain(&got[1].1).any(|l| l.contains("old")),
            "no backup was made with {flags:?}: {:?}",
            got[1]
        );
    }
    // A dry run makes no backup.
    let dst = s.path().join("dry");
    assert_eq!(code(&rsync(&["-a"], &base, &dst)), 0);
    let before = contents(&dst);
    let out = copy_contents(&["-a", "-n", "-b", "--delete"], &src, &dst);
    assert_eq!(code(&out), 0);
    assert_eq!(contents(&dst), before);
    // A backup directory inside the destination is not deleted by the next --delete run.
    let dst = s.path().join("inside");
    assert_eq!(code(&rsync(&["-a"], &base, &dst)), 0);
    for _ in 0..2 {
        let out = copy_contents(&["-a", "--backup-dir=.bk", "--delete"], &src, &dst);
        assert_eq!(code(&out), 0, "{}", err(&out));
    }
    assert_eq!(fs::read(dst.join(".bk/f")).unwrap(), b"old");
    assert_eq!(fs::read(dst.join(".bk/gone/sub/b")).unwrap(), b"b");
    // A suffix that cannot work is a usage error.
    for bad in [&["-b", "--suffix="][..], &["-b", "--suffix=a/b"]] {
        let mut args = vec!["-a"];
        args.extend(bad.iter().copied());
        assert_eq!(code(&copy_contents(&args, &src, &dst)), 1, "{bad:?}");
    }
}

#[test]
fn omit_dir_and_link_times_as_rsync_does() {
    if !require_rsync("omit_dir_and_link_times_as_rsync_does") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    write(&src.join("d/f"), b"f");
    write(&src.join("d/e/g"), b"g");
    symlink("f", src.join("d/l")).unwrap();
    for (i, p) in treediff::walk(&src).unwrap().into_iter().rev().enumerate() {
        set_times(&src.join(&p), 1_500_000_000 + i as i64 * 11, 0);
    }
    let mtime = |p: &Path| fs::symlink_metadata(p).unwrap().mtime();
    for flag in ["-O", "-J"] {
        let mut kept = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{flag}"));
            let args = ["-a", "-i", flag];
            let first = by_tool(tool, &args, &src, &dst);
            assert_eq!(code(&first), 0, "{tool} {flag}: {}", err(&first));
            // Which entries got the source's mtime.
            kept.push(
                treediff::walk(&src)
                    .unwrap()
                    .into_iter()
                    .map(|p| (p.clone(), mtime(&src.join(&p)) == mtime(&dst.join(&p))))
                    .collect::<Vec<_>>(),
            );
            // And a second run has nothing to say.
            let again = by_tool(tool, &args, &src, &dst);
            assert_eq!(items(&again), BTreeSet::new(), "{tool} {flag} again");
        }
        assert_eq!(kept[1], kept[0], "{flag}: which mtimes were kept");
        let dir_kept = kept[1].iter().any(|(p, k)| *k && p.as_os_str() == "d/e");
        let link_kept = kept[1].iter().any(|(p, k)| *k && p.as_os_str() == "d/l");
        assert_eq!(
            (dir_kept, link_kept),
            (flag == "-J", flag == "-O"),
            "{flag}"
        );
    }
}

#[test]
fn missing_source_args_are_ignored_or_deleted_as_rsync_does() {
    if !require_rsync("missing_source_args_are_ignored_or_deleted_as_rsync_does") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("a"), b"a");
    let base = s.path().join("base");
    fs::create_dir_all(base.join("gone")).unwrap();
    fs::create_dir_all(base.join("gdir")).unwrap();
    write(&base.join("gone/x"), b"x");
    write(&base.join("gfile"), b"y");
    let arg = |n: &str| src.join(n).display().to_string();
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec!["--ignore-missing-args"], vec![arg("a"), arg("nope")]),
        (
            vec!["--delete-missing-args"],
            vec![
                arg("a"),
                arg("gfile"),
                arg("gdir"),
                arg("gone"),
                arg("nope"),
            ],
        ),
        (vec!["--delete-missing-args", "--force"], vec![arg("gone")]),
        (
            vec!["--ignore-missing-args"],
            vec![format!("{}/", arg("nope"))],
        ),
        (vec![], vec![arg("a"), arg("nope")]),
    ];
    for (i, (flags, sources)) in cases.iter().enumerate() {
        let mut results = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{i}"));
            assert_eq!(code(&rsync(&["-a"], &base, &dst)), 0);
            let mut c = if tool == "rsync" {
                Command::new("rsync")
            } else {
                arsync()
            };
            c.args(["-a", "-i"]).args(flags).args(sources);
            let out = c.arg(format!("{}/", dst.display())).output().unwrap();
            results.push((code(&out), items(&out), listing(&dst)));
        }
        assert_eq!(results[1], results[0], "{flags:?} {sources:?}");
    }
}

#[test]
fn chmod_gives_the_modes_rsync_gives() {
    if !require_rsync("chmod_gives_the_modes_rsync_gives") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let src = s.path().join("src");
    for (dir, mode) in [("d755", 0o755), ("d700", 0o700), ("d2775", 0o2775)] {
        fs::create_dir_all(src.join(dir)).unwrap();
        for (file, fmode) in [
            ("f644", 0o644),
            ("f755", 0o755),
            ("f600", 0o600),
            ("f4750", 0o4750),
        ] {
            let f = src.join(dir).join(file);
            write(&f, file.as_bytes());
            fs::set_permissions(&f, fs::Permissions::from_mode(fmode)).unwrap();
        }
        fs::set_permissions(src.join(dir), fs::Permissions::from_mode(mode)).unwrap();
    }
    let modes = |root: &Path| {
        treediff::walk(root)
            .unwrap()
            .into_iter()
            .map(|p| {
                let m = fs::symlink_metadata(root.join(&p)).unwrap().mode();
                format!("{} {:o}", p.display(), m & 0o7777)
            })
            .collect::<Vec<_>>()
    };
    let specs = [
        "Dg+s,ug+w,Fo-w,+X",
        "D755,F644",
        "go-rwx",
        "u=rwX,go=rX",
        "+w",
        "a+t",
        "Fu+s,Dg-s",
        "o=",
        "ug=rw,Da+x",
        "-x,u+X",
        "g=u,o=g",
        "g+u,u-o",
        "u=g",
        "o+u,g-u",
        "=",
    ];
    for (i, spec) in specs.iter().enumerate() {
        let arg = format!("--chmod={spec}");
        // With -p (in -a) the modes are the tweaked source's; without it new entries get the
        // tweaked mode less the umask.
        for (j, base) in [&["-a"][..], &["-rt"]].iter().enumerate() {
            let mut args = base.to_vec();
            args.push(&arg);
            let (want, got) = (
                s.path().join(format!("rsync{i}-{j}")),
                s.path().join(format!("arsync{i}-{j}")),
            );
            let w = rsync(&args, &src, &want);
            assert_eq!(code(&w), 0, "rsync {args:?}: {}", err(&w));
            let g = copy_contents(&args, &src, &got);
            assert_eq!(code(&g), 0, "arsync {args:?}: {}", err(&g));
            assert_eq!(modes(&got), modes(&want), "{args:?}");
            // A second run with the same --chmod has nothing to change.
            let again = copy_contents(&[&["-i"][..], &args].concat(), &src, &got);
            assert_eq!(items(&again), BTreeSet::new(), "{args:?} again");
        }
    }
    for bad in [
        "--chmod=u",
        "--chmod=u+q",
        "--chmod=D8",
        "--chmod=DFu+x",
        "--chmod=Fu",
    ] {
        let w = rsync(&["-a", bad], &src, &s.path().join("rbad"));
        assert_ne!(code(&w), 0, "rsync accepted {bad}");
        let g = copy_contents(&["-a", bad], &src, &s.path().join("abad"));
        assert_eq!(code(&g), 1, "{bad}");
    }
}

#[test]
fn usermap_groupmap_and_chown_give_the_owners_rsync_gives() {
    if !is_root() {
        skip(
            "usermap_groupmap_and_chown_give_the_owners_rsync_gives",
            "changing owners needs root",
        );
        return;
    }
    if !require_rsync("usermap_groupmap_and_chown_give_the_owners_rsync_gives") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for (name, uid, gid) in [
        ("root", 0, 0),
        ("daemon", 1, 1),
        ("u1000", 1000, 1000),
        ("u1500", 1500, 100),
        ("u2000", 2000, 2),
        ("d/inner", 1200, 1200),
    ] {
        let f = src.join(name);
        write(&f, name.as_bytes());
        std::os::unix::fs::lchown(&f, Some(uid), Some(gid)).unwrap();
    }
    std::os::unix::fs::lchown(src.join("d"), Some(1100), Some(1100)).unwrap();
    symlink("root", src.join("link")).unwrap();
    std::os::unix::fs::lchown(src.join("link"), Some(1300), Some(1300)).unwrap();
    let owners = |root: &Path| {
        treediff::walk(root)
            .unwrap()
            .into_iter()
            .map(|p| {
                let m = fs::symlink_metadata(root.join(&p)).unwrap();
                format!("{} {}:{}", p.display(), m.uid(), m.gid())
            })
            .collect::<Vec<_>>()
    };
    let cases: Vec<Vec<&str>> = vec![
        vec!["--usermap=1000-1999:daemon,0:2", "--groupmap=*:users"],
        vec!["--chown=bin:users"],
        vec!["--chown=:daemon"],
        vec!["--chown=1234"],
        vec![
            "--usermap=daemon:1234,2000-2100:3",
            "--groupmap=1000-1300:7",
        ],
    ];
    // Without -o/-g too: --usermap turns -o on, --groupmap -g, --chown what it names, where
    // they stand on the command line (before, nothing changed owners without -o/-g).
    let mut runs: Vec<(&str, Vec<&str>)> = cases.iter().map(|c| ("-a", c.clone())).collect();
    runs.extend(cases.iter().map(|c| ("-rlpt", c.clone())));
    runs.push(("-rlpt", vec!["--chown=bin:users", "--no-o"]));
    runs.push(("-rlpt", vec!["--no-g", "--chown=bin:users"]));
    // One --chown for the user, another for the group (each turning on what it names).
    runs.push(("-rlpt", vec!["--chown=1234", "--chown=:daemon"]));
    for (i, (base, flags)) in runs.iter().enumerate() {
        let mut args = vec![*base];
        args.extend(flags.iter().copied());
        let (want, got) = (
            s.path().join(format!("rsync{i}")),
            s.path().join(format!("arsync{i}")),
        );
        let w = rsync(&args, &src, &want);
        assert_eq!(code(&w), 0, "rsync {flags:?}: {}", err(&w));
        let g = copy_contents(&args, &src, &got);
        assert_eq!(code(&g), 0, "arsync {flags:?}: {}", err(&g));
        assert_eq!(owners(&got), owners(&want), "{base} {flags:?}");
        let again = copy_contents(&[&["-i"][..], &args].concat(), &src, &got);
        assert_eq!(items(&again), BTreeSet::new(), "{base} {flags:?} again");
    }
    for bad in [
        &["--usermap=1000"][..],
        &["--usermap=2000-:3"],
        &["--chown=no-such-user-here"],
        &["--groupmap=*:no-such-group-here"],
        &["--chown=bin", "--usermap=*:daemon"],
    ] {
        let mut args = vec!["-a"];
        args.extend(bad.iter().copied());
        let g = copy_contents(&args, &src, &s.path().join("bad"));
        assert_eq!(code(&g), 1, "{bad:?}");
    }
    // A map given twice, by its own option or by --chown, is refused in rsync's words (before,
    // the last one given won).
    for twice in [
        &["--usermap=1:2", "--usermap=3:4"][..],
        &["--groupmap=1:2", "--groupmap=3:4"],
        &["--chown=1:2", "--chown=3"],
        &["--chown=1:2", "--chown=:2"],
        &["--chown=1", "--usermap=2:3"],
        &["--usermap=1:2", "--chown=3"],
        &["--chown=:1", "--groupmap=2:3"],
        &["--groupmap=1:2", "--chown=:3"],
    ] {
        let mut args = vec!["-a"];
        args.extend(twice.iter().copied());
        let w = rsync(&args, &src, &s.path().join("twice-r"));
        let g = copy_contents(&args, &src, &s.path().join("twice-a"));
        assert_eq!((code(&g), code(&w)), (1, 1), "{twice:?}");
        let said = err(&w);
        let rsync_says = said
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("rsync: "))
            .unwrap();
        assert!(err(&g).contains(rsync_says), "{twice:?}: {}", err(&g));
        assert!(!s.path().join("twice-a").exists(), "{twice:?}: wrote");
    }
}

/// rsync 3.5 judges a link target as its fix of the `--safe-links` bypass (CVE-2024-12088) does:
/// a `..` after any other component (`sub/../f`, `./../x`) or a last `..` after anything
/// (`../..`) is unsafe wherever the link is; leading `..`s count against the link's depth.
/// Before, arsync kept such links under `--safe-links` (and did not follow them under
/// `--copy-unsafe-links`, which takes the same judgement). rsync is the oracle over 30 targets
/// at four depths.
#[test]
fn safe_links_judge_targets_as_rsync_3_5() {
    if !require_rsync("safe_links_judge_targets_as_rsync_3_5") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    let dirs = ["", "d1", "d1/d2", "d1/d2/d3"];
    fs::create_dir_all(src.join(dirs[3])).unwrap();
    let targets = [
        "a",
        "./a",
        "a/./b",
        "a//b",
        "...",
        "..a",
        "a..b",
        ".",
        "./",
        "a/",
        "..",
        "../",
        "../x",
        "../../x",
        "../../../x",
        "..//../x",
        "../sub/x",
        "sub/../f",
        "sub/..",
        "a/../b",
        "./../x",
        "./..",
        "a/b/../../c",
        "../a/../b",
        "../..",
        "..//..",
        "../../",
        ".././../x",
        "x/..//..",
        "../../..",
    ];
    for (i, t) in targets.iter().enumerate() {
        for d in dirs {
            symlink(t, src.join(d).join(format!("l{i}"))).unwrap();
        }
    }
    let (_, kept) = same_listing_as_rsync(s.path(), 0, (&["-rl", "--safe-links"], &src), |_| {});
    // (The probe is only worth something if both kinds are there.)
    assert!(
        kept.contains("l l0") && !kept.contains("l l17") && kept.len() > 40,
        "{kept:?}"
    );
}

/// `--safe-links` and `--copy-unsafe-links` measure a link from the top of the names rsync
/// sends: `SRC DEST/` sends `src/...`, so `src/a -> ../a` stays in the destination and is safe;
/// `-R` counts the whole relative path. Before, arsync measured from inside the root directory
/// and left such links out. rsync is the oracle, over the path forms.
#[test]
fn safe_links_are_measured_from_the_names_rsync_sends() {
    if !require_rsync("safe_links_are_measured_from_the_names_rsync_sends") {
        return;
    }
    let s = Scratch::new();
    let top = s.path().join("top");
    let src = top.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    // (Each leads somewhere, for --copy-unsafe-links to copy.)
    write(&top.join("a"), b"a");
    write(&top.join("x"), b"x");
    symlink("../a", src.join("a")).unwrap();
    symlink("../../top/a", src.join("b")).unwrap();
    symlink("../../x", src.join("d/c")).unwrap();
    let forms: [&[&str]; 7] = [
        &["src"],
        &["src/"],
        &["-R", "./src"],
        &["-R", "./src/d"],
        &["src/d"],
        &["src/a"],
        &["-R", "./src/a"],
    ];
    let mut compared = 0;
    for mode in ["--safe-links", "--copy-unsafe-links"] {
        for (i, form) in forms.iter().enumerate() {
            let mut got = Vec::new();
            for tool in ["rsync", "arsync"] {
                let dst = s.path().join(format!("{tool}{mode}{i}"));
                fs::create_dir(&dst).unwrap();
                let out = tool_command(tool)
                    .current_dir(&top)
                    .args(["-a", mode])
                    .args(*form)
                    .arg(format!("{}/", dst.display()))
                    .output()
                    .unwrap();
                assert_eq!(code(&out), 0, "{tool} {mode} {form:?}: {}", err(&out));
                got.push(listing(&dst));
            }
            assert_eq!(
                got[1], got[0],
                "{mode} {form:?}: arsync (left) against rsync"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 14);
}

/// `-U` with `--link-dest`: a reference that differs from the source in its access time only is
/// still linked, as rsync's `unchanged_attrs` asks nothing of access times. Before (since `-U`
/// compared access times, this session), the file was copied instead. rsync is the oracle.
#[test]
fn atimes_do_not_keep_a_reference_from_being_linked_as_rsync() {
    if !require_rsync("atimes_do_not_keep_a_reference_from_being_linked_as_rsync") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new();
    let (src, reference) = (s.path().join("src"), s.path().join("ref"));
    for d in [&src, &reference] {
        fs::create_dir(d).unwrap();
        write(&d.join("f"), b"same");
        chmod(&d.join("f"), 0o644);
    }
    // The same mtime to the second (`--modify-window=0`), atimes a year apart.
    set_times(&src.join("f"), 1_600_000_000, 500);
    set_times(&reference.join("f"), 1_600_000_000, 0);
    fs::File::options()
        .write(true)
        .open(reference.join("f"))
        .unwrap()
        .set_times(
            fs::FileTimes::new().set_accessed(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_570_000_000),
            ),
        )
        .unwrap();
    let ino = fs::metadata(reference.join("f")).unwrap().ino();
    let mut got = Vec::new();
    // (arsync first: rsync gives the linked inode, the reference's, the source's access time.)
    for tool in ["arsync", "rsync"] {
        let dst = s.path().join(tool);
        let out = by_tool(
            tool,
            &[
                "-rlgU",
                "--modify-window=0",
                "--open-noatime",
                "--link-dest=../ref",
            ],
            &src,
            &dst,
        );
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        got.push(fs::metadata(dst.join("f")).unwrap().ino() == ino);
    }
    assert_eq!(
        got,
        [true, true],
        "linked to the reference: [arsync, rsync]"
    );
}

/// `-H`: a further name of a hard-linked file that replaces an existing file of its own is
/// itemized against that file, as rsync (`hf.stp.....`, with `T` for a time not kept). Before,
/// arsync showed such a link as unchanged (`hf          `). rsync is the oracle for the codes and
/// the names, compared apart: which name is copied and which linked differs (rsync prefers a name
/// whose copy is up to date, else goes by its order; arsync takes the first a core meets, which
/// with two cores may be either: the test failed once in CI on that alone).
#[test]
fn hard_links_replacing_existing_files_are_itemized_as_rsync() {
    if !require_rsync("hard_links_replacing_existing_files_are_itemized_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("ab"), b"data");
    fs::hard_link(src.join("ab"), src.join("b")).unwrap();
    chmod(&src.join("ab"), 0o644);
    set_times(&src.join("ab"), 1_600_000_000, 0);
    let mut compared = 0;
    for flags in [&["-aH", "-i"][..], &["-rlH", "-i"]] {
        for pre in ["both", "same"] {
            let mut got = Vec::new();
            for tool in ["rsync", "arsync"] {
                let dst = s.path().join(format!("{tool}{pre}{}", flags.concat()));
                fs::create_dir(&dst).unwrap();
                match pre {
                    "both" => {
                        write(&dst.join("ab"), b"x");
                        chmod(&dst.join("ab"), 0o600);
                        write(&dst.join("b"), b"yy");
                        chmod(&dst.join("b"), 0o640);
                    }
                    _ => {
                        write(&dst.join("ab"), b"data");
                        write(&dst.join("b"), b"data");
                    }
                }
                for n in ["ab", "b"] {
                    set_times(&dst.join(n), 1_500_000_000, 0);
                }
                let out = by_tool(tool, flags, &src, &dst);
                assert_eq!(code(&out), 0, "{tool} {pre} {flags:?}: {}", err(&out));
                // (Which of the two names is copied and which linked is each program's order,
                // and for arsync the order its cores meet them in: the codes and the names are
                // compared apart.)
                let lines: Vec<String> = items(&out)
                    .into_iter()
                    .filter(|l| !l.starts_with(".d"))
                    .collect();
                let mut codes: Vec<&str> = lines.iter().map(|l| &l[..11]).collect();
                codes.sort();
                let mut names: Vec<&str> = lines.iter().map(|l| &l[12..]).collect();
                names.sort();
                got.push(format!("{codes:?} {names:?}"));
            }
            assert_eq!(
                got[1], got[0],
                "{pre} {flags:?}: arsync (left) against rsync"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 4);
}

/// `-H` on a re-sync: a new name of an inode whose copy in the destination is up to date is
/// linked to that copy, with no data written, whichever name a core meets first (the one
/// without a copy puts its copy off until the other arrives), as rsync links further names to a
/// name whose copy is up to date: in one directory and across two, the old copy's inode kept.
/// Before, a core that met the new name first copied the data again and relinked the old
/// names to the new copy. One core, so that the other name comes while the first waits.
#[test]
fn a_new_name_of_an_up_to_date_hard_linked_file_is_linked_not_copied() {
    if !require_rsync("a_new_name_of_an_up_to_date_hard_linked_file_is_linked_not_copied") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    // A new name is made after the old one (so a directory lists it last, and one core meets
    // it first); across two directories both ways round (p's new name is q's old file, q's
    // new name p's old file), so whichever directory comes first holds a new name.
    named_files(&src, &["d/old", "p/old", "q/old"]);
    age(&src, 1_600_000_000);
    let pairs = [("d/new", "d/old"), ("p/new", "q/old"), ("q/new", "p/old")];
    let seen = same_as_rsync(&"new names", |tool| {
        let dst = s.path().join(tool);
        for (new, _) in pairs {
            let _ = fs::remove_file(src.join(new));
        }
        for d in ["d", "p", "q"] {
            set_times(&src.join(d), 1_600_000_000, 0);
        }
        assert_eq!(code(&by_tool(tool, &["-aH"], &src, &dst)), 0);
        let ino = |n: &str| fs::metadata(dst.join(n)).unwrap().ino();
        let olds = || pairs.map(|(_, old)| ino(old));
        let before = olds();
        for (new, old) in pairs {
            fs::hard_link(src.join(old), src.join(new)).unwrap();
        }
        let flags: &[&str] = if tool == "rsync" {
            &["-aH", "--stats"]
        } else {
            &["-aH", "--stats", "--threads=1"]
        };
        let out = by_tool(tool, flags, &src, &dst);
        let transferred = text(&out)
            .lines()
            .find(|l| l.starts_with("Number of regular files transferred"))
            .map(str::to_string);
        (
            code(&out),
            transferred,
            olds() == before,
            pairs.iter().all(|(new, old)| ino(new) == ino(old)),
        )
    });
    assert_eq!(
        seen,
        (
            0,
            Some("Number of regular files transferred: 0".to_string()),
            true,
            true
        )
    );
}

/// `-H`: two groups of hard-linked files with the same data and times but other modes, whose
/// copies in the destination are all one inode (links the source does not have): each group
/// gets its own mode. Setting the mode in place on the shared inode changed the other group's
/// too, so one group ended with the other's mode (rsync 3.5 does that: the last group set wins
/// for all four names); now the group whose attributes differ is copied anew, which breaks the
/// extra links, as rsync's manual says an update does. A second run changes nothing.
#[test]
fn a_hard_linked_groups_attributes_are_not_set_through_another_groups_links() {
    let s = Scratch::new();
    let src = s.path().join("src");
    let dst = s.path().join("dst");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    for (first, second, mode) in [("a", "b", 0o640), ("c", "d", 0o644)] {
        write(&src.join(first), b"same");
        fs::hard_link(src.join(first), src.join(second)).unwrap();
        chmod(&src.join(first), mode);
        set_times(&src.join(first), 1_600_000_000, 0);
    }
    write(&dst.join("a"), b"same");
    chmod(&dst.join("a"), 0o644);
    set_times(&dst.join("a"), 1_600_000_000, 0);
    for n in ["b", "c", "d"] {
        fs::hard_link(dst.join("a"), dst.join(n)).unwrap();
    }
    let out = copy_contents(&["-aH"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    let m = |n: &str| fs::metadata(dst.join(n)).unwrap();
    assert_eq!(m("a").mode() & 0o7777, 0o640);
    assert_eq!(m("c").mode() & 0o7777, 0o644);
    assert_eq!(m("a").ino(), m("b").ino());
    assert_eq!(m("c").ino(), m("d").ino());
    assert_ne!(m("a").ino(), m("c").ino());
    let again = copy_contents(&["-aH", "--stats"], &src, &dst);
    assert!(
        text(&again).contains("Number of regular files transferred: 0"),
        "{}",
        text(&again)
    );
}

/// With `-p` a directory takes its source's setgid bit before anything is made in it, as
/// rsync gives a directory its mode first: what is made there without `-g` then has the group
/// rsync gives it. Before, the bit came when the directory was finished, so entries made in an
/// existing setgid directory losing the bit took its group, and those made in one gaining it
/// did not (and a new directory inherited the bit from a setgid parent while being filled).
/// rsync is the oracle: the group of every entry.
#[test]
fn a_directorys_setgid_bit_is_given_before_it_is_filled_as_rsync() {
    if !root_and_rsync(
        "a_directorys_setgid_bit_is_given_before_it_is_filled_as_rsync",
        "giving directories another group needs root",
    ) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new();
    let src = s.path().join("src");
    for (d, setgid) in [
        ("keeps", false),
        ("gains", true),
        ("new", false),
        ("newsg", true),
    ] {
        fs::create_dir_all(src.join(d).join("sub")).unwrap();
        write(&src.join(d).join("f"), b"f");
        write(&src.join(d).join("sub/g"), b"g");
        chmod(&src.join(d), if setgid { 0o2755 } else { 0o755 });
    }
    for p in treediff::walk(&src).unwrap() {
        set_times(&src.join(p), 1_600_000_000, 0);
    }
    let groups = |root: &Path| {
        treediff::walk(root)
            .unwrap()
            .into_iter()
            .map(|p| {
                let m = fs::symlink_metadata(root.join(&p)).unwrap();
                format!("{} {:o} {}", p.display(), m.mode() & 0o7777, m.gid())
            })
            .collect::<Vec<_>>()
    };
    let mut compared = 0;
    // (With -i, what is itemized is compared too: the bit given early is still a change.)
    for flags in [
        &["-rlpt"][..],
        &["-a", "--no-g"],
        &["-rlpt", "--chmod=Dg+s", "-i"],
    ] {
        let mut got = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{}", flags.concat()));
            // The destination: setgid and group 1234 itself, so what is made in it inherits
            // both; "keeps" there already, setgid; "gains" there already, not setgid.
            fs::create_dir(&dst).unwrap();
            lchown(&dst, 0, 1234);
            chmod(&dst, 0o2775);
            for (d, mode) in [("keeps", 0o2755), ("gains", 0o755)] {
                fs::create_dir(dst.join(d)).unwrap();
                lchown(&dst.join(d), 0, 4321);
                chmod(&dst.join(d), mode);
            }
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            got.push((groups(&dst), items(&out)));
        }
        assert_eq!(got[1], got[0], "{flags:?}: arsync (left) against rsync");
        compared += 1;
    }
    assert_eq!(compared, 3);
}

/// `--inplace -b`: the backup is a copy of the old file, given what the run preserves of its
/// owner, group and times, as rsync's: with `-a` its owner stays (before, it became root's);
/// without `-t` it has the time it was made (before, always the old file's). rsync is the
/// oracle.
#[test]
fn inplace_backups_keep_what_the_run_preserves_as_rsync() {
    if !root_and_rsync(
        "inplace_backups_keep_what_the_run_preserves_as_rsync",
        "giving the old file another owner needs root",
    ) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"new content");
    let mut compared = 0;
    for flags in [
        &["-r", "--inplace", "-b"][..],
        &["-rt", "--inplace", "-b"],
        &["-a", "--inplace", "-b"],
        &["-rlg", "--inplace", "-b"],
        &["-rlo", "--inplace", "-b"],
    ] {
        let mut got = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{}", flags.concat()));
            fs::create_dir(&dst).unwrap();
            write(&dst.join("f"), b"old");
            chmod(&dst.join("f"), 0o640);
            lchown(&dst.join("f"), 1234, 4321);
            set_times(&dst.join("f"), 1_500_000_000, 0);
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            let m = fs::symlink_metadata(dst.join("f~")).unwrap();
            // (A time this run gave is the run's: only a kept one is compared.)
            let kept = Some(m.mtime()).filter(|&t| t < 1_700_000_000);
            got.push((
                fs::read(dst.join("f~")).unwrap(),
                m.mode(),
                m.uid(),
                m.gid(),
                kept,
            ));
        }
        assert_eq!(got[1], got[0], "{flags:?}: arsync (left) against rsync");
        compared += 1;
    }
    assert_eq!(compared, 5);
}

/// A symlink, device, FIFO or socket taking the place of another non-directory entry, as rsync
/// takes it: without `-p` it keeps the old entry's permission bits (rsync's `dest_mode`; before,
/// the source's: a FIFO over a `0604` file came out `0640`); one of the same kind (a FIFO over a
/// socket, a device over another device) is itemized as a change (`cSc.T......`, was
/// `cS+++++++++`); and one made anew only for its owner (`-rlDo`, the same entry under another
/// owner) keeps the times `-t` does not give it (rsync changes it in place; before, it took the
/// time of the run). rsync is the oracle.
#[test]
fn specials_take_the_place_of_other_entries_as_rsync() {
    if !root_and_rsync(
        "specials_take_the_place_of_other_entries_as_rsync",
        "making devices needs root",
    ) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    mknod(&src.join("c"), libc::S_IFCHR | 0o640, libc::makedev(1, 3));
    mkfifo(&src.join("p"));
    chmod(&src.join("p"), 0o640);
    symlink("tgt", src.join("l")).unwrap();
    for n in ["c", "p", "l"] {
        set_times(&src.join(n), 1_600_000_000, 0);
    }
    let make = |kind: &str, p: &Path| match kind {
        "fifo" => mkfifo(p),
        "device" => mknod(p, libc::S_IFCHR | 0o600, libc::makedev(1, 5)),
        "symlink" => symlink("elsewhere", p).unwrap(),
        "file" => write(p, b"x"),
        // What the source has, under another owner (made anew for it, its times kept).
        "same" => match p.file_name().and_then(|n| n.to_str()) {
            Some("c") => mknod(p, libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
            Some("p") => mkfifo(p),
            _ => symlink("tgt", p).unwrap(),
        },
        _ => {
            std::os::unix::net::UnixListener::bind(p).unwrap();
        }
    };
    let mut compared = 0;
    for kind in ["fifo", "device", "symlink", "file", "socket", "same"] {
        for flags in [&["-rlD", "-i"][..], &["-a", "-i"], &["-rlDo", "-i"]] {
            let mut got = Vec::new();
            for tool in ["rsync", "arsync"] {
                let dst = s.path().join(format!("{tool}-{kind}{}", flags.concat()));
                fs::create_dir(&dst).unwrap();
                for n in ["c", "p", "l"] {
                    make(kind, &dst.join(n));
                    if !fs::symlink_metadata(dst.join(n)).unwrap().is_symlink() {
                        chmod(&dst.join(n), 0o604);
                    }
                    lchown(&dst.join(n), 1234, 1234);
                    set_times(&dst.join(n), 1_500_000_000, 0);
                }
                let out = by_tool(tool, flags, &src, &dst);
                assert_eq!(code(&out), 0, "{tool} {kind} {flags:?}: {}", err(&out));
                let entries: Vec<_> = ["c", "p", "l"]
                    .iter()
                    .map(|n| {
                        let m = fs::symlink_metadata(dst.join(n)).unwrap();
                        // (A time this run gave is the run's: only kept ones are compared.)
                        let kept = Some(m.mtime()).filter(|&t| t < 1_700_000_000);
                        (m.mode(), m.uid(), kept, m.rdev())
                    })
                    .collect();
                // (The directories' times are compared to the second by rsync, to the
                // nanosecond by arsync: not this test's subject.)
                let lines: BTreeSet<String> = items(&out)
                    .into_iter()
                    .filter(|l| !l.starts_with(".d"))
                    .collect();
                got.push((lines, entries));
            }
            assert_eq!(
                got[1], got[0],
                "{kind} {flags:?}: arsync (left) against rsync"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 18);
}

/// An existing destination entry whose source changed only its owner or group gets the source's
/// (rsync's): root's uid 0 and gid 0 included, which a fresh entry made by root already has and
/// so is never chowned to. Every kind of entry, with rsync as the oracle.
#[test]
fn existing_entries_take_the_sources_new_owner_root_included() {
    if !root_and_rsync(
        "existing_entries_take_the_sources_new_owner_root_included",
        "changing owners needs root",
    ) {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::create_dir_all(src.join("e")).unwrap();
    write(&src.join("f"), b"file");
    write(&src.join("d/g"), b"another");
    symlink("f", src.join("link")).unwrap();
    mkfifo(&src.join("fifo"));
    let entries = ["d", "d/sub", "e", "f", "d/g", "link", "fifo"];
    let owners = |root: &Path| {
        entries
            .iter()
            .map(|e| {
                let m = fs::symlink_metadata(root.join(e)).unwrap();
                format!("{e} {}:{}", m.uid(), m.gid())
            })
            .collect::<Vec<_>>()
    };
    let (want, got) = (s.path().join("rsync"), s.path().join("arsync"));
    let rounds: [fn(u32) -> (u32, u32); 5] = [
        // First every entry owned by someone other than root ...
        |i| (2000 + i, 3000 + i),
        // ... then root's uid and gid (what a fresh entry made by root gets) ...
        |_| (0, 0),
        // ... only the uid back to root, the group another ...
        |i| (0, 3000 + i),
        // ... only the group root's, the uid another ...
        |i| (4000 + i, 0),
        // ... and others again.
        |i| (5000 + i, 6000 + i),
    ];
    for (round, owner) in rounds.into_iter().enumerate() {
        for (i, e) in entries.iter().enumerate() {
            let (u, g) = owner(i as u32);
            lchown(&src.join(e), u, g);
        }
        let w = rsync(&["-a"], &src, &want);
        assert_eq!(code(&w), 0, "rsync round {round}: {}", err(&w));
        let g = copy_contents(&["-a"], &src, &got);
        assert_eq!(code(&g), 0, "arsync round {round}: {}", err(&g));
        assert_eq!(owners(&want), owners(&src), "rsync round {round}");
        assert_eq!(owners(&got), owners(&want), "round {round}");
    }
}

/// `--delete` by a user who is not root, of read-only directories the user owns: each is opened
/// to its owner to be emptied and removed, as rsync does (before, every entry in one failed with
/// EACCES and the run ended with code 23). One that stays (a protected entry in it) gets its
/// mode back.
#[test]
fn delete_empties_read_only_directories_the_user_owns() {
    let name = "delete_empties_read_only_directories_the_user_owns";
    if !require_rsync(name) {
        return;
    }
    let s = Scratch::new();
    let bin = reachable_binary(s.path());
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("kept"), b"stays");
    let make_dst = |d: &Path| {
        fs::create_dir_all(d.join("gone/ro/sub")).unwrap();
        fs::create_dir_all(d.join("stays/ro")).unwrap();
        write(&d.join("kept"), b"stays");
        write(&d.join("gone/ro/f"), b"read only");
        write(&d.join("gone/ro/sub/g"), b"deeper");
        write(&d.join("stays/ro/keep"), b"protected");
        write(&d.join("stays/ro/drop"), b"not protected");
        chmod(&d.join("gone/ro/f"), 0o444);
        chmod(&d.join("gone/ro/sub"), 0o500);
        chmod(&d.join("gone/ro"), 0o555);
        chmod(&d.join("stays/ro"), 0o555);
    };
    let (want, got) = (s.path().join("by-rsync"), s.path().join("by-arsync"));
    make_dst(&want);
    make_dst(&got);
    if is_root() {
        if !have("setpriv") {
            panic!("setpriv (util-linux) is missing");
        }
        for root in [&src, &want, &got] {
            give_to_nobody(root);
        }
    } else {
        skip(name, "not root: runs as the calling user");
    }
    let run = |tool: &Path, dst: &Path| {
        as_user(tool)
            .args(["-a", "--delete", "-f", "P /stays/ro/keep"])
            .arg(format!("{}/", src.display()))
            .arg(dst)
            .output()
            .unwrap()
    };
    let r = run(Path::new("rsync"), &want);
    assert_eq!(code(&r), 0, "rsync: {}", err(&r));
    let a = run(&bin, &got);
    assert_eq!(code(&a), 0, "arsync: {}", err(&a));
    let names = |root: &Path| treediff::walk(root).unwrap();
    assert_eq!(names(&got), names(&want));
    assert!(!got.join("gone").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(got.join("stays/ro"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o555,
        "a directory that stays gets its mode back"
    );
}

/// For a test that needs a destination file system keeping whole seconds only: a loop-mounted
/// ext4 with 128-byte inodes (as Lustre and HFS+ keep times) under scratch `s`, with the mount
/// lock held; `None` (the test skipped, said) without root or rsync.
fn coarse_time_mount(name: &str, s: &Scratch) -> Option<(MountLock, Mount)> {
    if !root_and_rsync(name, "needs root to loop-mount an ext4 image") {
        return None;
    }
    let lock = mount_lock();
    let m = Mount::new(
        &s.path().join("coarse.img"),
        16,
        &["mkfs.ext4", "-q", "-F", "-I", "128"],
        &s.path().join("mnt"),
    );
    Some((lock, m))
}

/// Files `a`, `b` and `d/c` under `root`, with times that have nanoseconds.
fn fine_time_tree(root: &Path) {
    fs::create_dir_all(root.join("d")).unwrap();
    for (i, f) in ["a", "b", "d/c"].iter().enumerate() {
        write(&root.join(f), f.as_bytes());
        set_times(&root.join(f), 1_600_000_000 + i as i64, 123_456_789);
    }
}

/// A destination file system that keeps whole seconds only (ext4 with 128-byte inodes, as
/// Lustre and HFS+ do): a re-sync with nothing changed transfers nothing, as rsync's. Before, the
/// source's nanoseconds never matched the truncated copy, and every file was copied again on
/// every run. A change of content at the same size within the same second is not seen there (as
/// by rsync); on a file system with nanoseconds it still is.
#[test]
fn a_destination_without_subsecond_times_is_in_sync_after_one_run() {
    let s = Scratch::new();
    let Some((_l, m)) = coarse_time_mount(
        "a_destination_without_subsecond_times_is_in_sync_after_one_run",
        &s,
    ) else {
        return;
    };
    let src = s.path().join("src");
    fine_time_tree(&src);
    set_times(&src.join("d"), 1_600_000_100, 987_654_321);
    let (want, got) = (m.dir.join("by-rsync"), m.dir.join("by-arsync"));
    for round in 0..2 {
        let w = rsync(&["-ai"], &src, &want);
        assert_eq!(code(&w), 0, "rsync: {}", err(&w));
        let g = copy_contents(&["-ai"], &src, &got);
        assert_eq!(code(&g), 0, "arsync: {}", err(&g));
        if round == 0 {
            // The copy keeps whole seconds only.
            let t = fs::metadata(got.join("a")).unwrap();
            assert_eq!((t.mtime(), t.mtime_nsec()), (1_600_000_000, 0));
            assert!(!items(&g).is_empty());
        } else {
            assert_eq!(items(&w), BTreeSet::new(), "rsync again");
            assert_eq!(items(&g), BTreeSet::new(), "arsync again");
        }
    }
    // A change within the second at the same size on a file system with nanoseconds is still
    // seen (the source's own directory: ext4 with large inodes).
    let fine = s.path().join("fine");
    assert_eq!(code(&copy_contents(&["-a"], &src, &fine)), 0);
    write(&src.join("a"), b"A");
    set_times(&src.join("a"), 1_600_000_000, 223_456_789);
    let g = copy_contents(&["-ai"], &src, &fine);
    assert_eq!(fs::read(fine.join("a")).unwrap(), b"A");
    assert!(
        items(&g).iter().any(|l| l.ends_with(" a")),
        "{:?}",
        items(&g)
    );
}

/// `--remove-source-files` onto a file system that keeps whole seconds (ext4 with 128-byte
/// inodes, as Lustre and HFS+): a copy that holds its source's second is in sync, and the
/// source goes, as with rsync (which checks the source against its own earlier stat). Before,
/// the copy's time was compared to the nanosecond: every source was kept and reported as
/// changed since it was copied, and the run ended with 23. Plain, with `-H` (a multi-link
/// file's names go at the end of the run) and with `--delay-updates` (after the renames).
#[test]
fn remove_source_files_onto_a_destination_without_subsecond_times() {
    let s = Scratch::new();
    let Some((_l, m)) = coarse_time_mount(
        "remove_source_files_onto_a_destination_without_subsecond_times",
        &s,
    ) else {
        return;
    };
    let source = |root: &Path| {
        fine_time_tree(root);
        fs::hard_link(root.join("a"), root.join("d/a2")).unwrap();
    };
    let left = |root: &Path| -> Vec<String> {
        let mut v: Vec<String> = listing(root)
            .into_iter()
            .filter(|l| !l.starts_with("d "))
            .collect();
        v.sort();
        v
    };
    for flags in [
        &["-a", "--remove-source-files"][..],
        &["-aH", "--remove-source-files"],
        &["-a", "--delay-updates", "--remove-source-files"],
    ] {
        let case = s.path().join(flags.join("").replace('-', "_"));
        let (src_w, src_g) = (case.join("src-rsync"), case.join("src-arsync"));
        source(&src_w);
        source(&src_g);
        let dst = m.dir.join(case.file_name().unwrap());
        fs::create_dir(&dst).unwrap();
        let (want, got) = (dst.join("by-rsync"), dst.join("by-arsync"));
        let w = rsync(flags, &src_w, &want);
        assert_eq!(code(&w), 0, "rsync {flags:?}: {}", err(&w));
        let g = copy_contents(flags, &src_g, &got);
        assert_eq!(code(&g), 0, "arsync {flags:?}: {}", err(&g));
        assert_eq!(left(&src_g), left(&src_w), "{flags:?}: sources left");
        assert_eq!(left(&src_g), Vec::<String>::new(), "{flags:?}");
        for f in ["a", "b", "d/c", "d/a2"] {
            assert_eq!(
                fs::read(got.join(f)).unwrap(),
                fs::read(want.join(f)).unwrap(),
                "{flags:?} {f}"
            );
        }
    }
}

/// `--inplace` and `--append` by a user who is not root, onto read-only copies the user owns
/// (a read-only source copied before): the copy is made writable for the write and gets its
/// mode back, as rsync does. Before, the open failed with EACCES and the run ended with 23.
#[test]
fn in_place_updates_of_read_only_copies_the_user_owns() {
    let name = "in_place_updates_of_read_only_copies_the_user_owns";
    if !require_rsync(name) {
        return;
    }
    let s = Scratch::new();
    let bin = reachable_binary(s.path());
    if !is_root() {
        skip(name, "not root: runs as the calling user");
    }
    for flag in ["--inplace", "--append"] {
        let case = s.path().join(flag.trim_start_matches('-'));
        let src = case.join("src");
        fs::create_dir_all(&src).unwrap();
        write(&src.join("f"), b"one\n");
        chmod(&src.join("f"), 0o444);
        let (want, got) = (case.join("by-rsync"), case.join("by-arsync"));
        if is_root() {
            give_to_nobody(&case);
            chmod(&case, 0o755);
        }
        let run = |tool: &Path, dst: &Path, extra: &[&str]| {
            as_user(tool)
                .arg("-a")
                .args(extra)
                .arg(format!("{}/", src.display()))
                .arg(dst)
                .output()
                .unwrap()
        };
        for (tool, dst) in [(Path::new("rsync"), &want), (bin.as_path(), &got)] {
            let o = run(tool, dst, &[]);
            assert_eq!(code(&o), 0, "{flag} first {tool:?}: {}", err(&o));
        }
        // The source grows (for --append) and changes: written where it is, read-only.
        chmod(&src.join("f"), 0o644);
        write(&src.join("f"), b"one\nand more\n");
        chmod(&src.join("f"), 0o444);
        for (tool, dst) in [(Path::new("rsync"), &want), (bin.as_path(), &got)] {
            let o = run(tool, dst, &[flag]);
            assert_eq!(code(&o), 0, "{flag} {tool:?}: {}", err(&o));
        }
        use std::os::unix::fs::PermissionsExt;
        for dst in [&want, &got] {
            assert_eq!(
                fs::read(dst.join("f")).unwrap(),
                b"one\nand more\n",
                "{flag} {dst:?}"
            );
            assert_eq!(
                fs::metadata(dst.join("f")).unwrap().permissions().mode() & 0o7777,
                0o444,
                "{flag} {dst:?}"
            );
        }
    }
}

/// `tool` (rsync or arsync) with exactly these arguments, run in `cwd`.
fn in_dir(tool: &str, args: &[&str], cwd: &Path) -> Output {
    let mut c = if tool == "rsync" {
        Command::new("rsync")
    } else {
        arsync()
    };
    c.args(args).current_dir(cwd).output().unwrap()
}

/// Names, types, modes and (but for the top) mtimes of a tree: what `--files-from` and `-R`
/// runs of two tools must agree on.
fn shape(root: &Path, times: bool) -> BTreeSet<String> {
    treediff::walk(root)
        .unwrap()
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| {
            let m = fs::symlink_metadata(root.join(&p)).unwrap();
            let t = if times && !m.file_type().is_symlink() {
                format!(" {}.{}", m.mtime(), m.mtime_nsec())
            } else {
                String::new()
            };
            format!("{} {:o}{t}", p.display(), m.mode())
        })
        .collect()
}

#[test]
fn files_from_and_relative_select_what_rsync_selects() {
    if !require_rsync("files_from_and_relative_select_what_rsync_selects") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(
        &src,
        &[
            "a/b/f1",
            "a/b/f9",
            "a/top",
            "c/cf",
            "c/sub/csf",
            "d/df",
            "d/sub/dsf",
            "e/f2",
            "y/yf",
        ],
    );
    symlink("f1", src.join("a/b/link")).unwrap();
    // Implied directories carry their own attributes, which must reach the destination.
    chmod(&src.join("a"), 0o750);
    // (Old times everywhere: rsync compares them to the second, so a directory made in the
    // second its source was made would keep its creation time.)
    for (i, p) in treediff::walk(&src).unwrap().iter().rev().enumerate() {
        if !fs::symlink_metadata(src.join(p))
            .unwrap()
            .file_type()
            .is_symlink()
        {
            set_times(&src.join(p), 1_000_000_000 + i as i64, 5);
        }
    }
    let list = |name: &str, text: &str| -> String {
        let p = base.join(name);
        fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let plain = list(
        "plain",
        "a/b/f1\na/b/link\nc\nd/\n/e/f2\n# a comment\n\n; another\nmissing\ny/yf\n",
    );
    let cleaned = list("cleaned", "x/../y/yf\n./a/./b/f9\n");
    let nul = list("nul", "a/b/f1\0c/\0");
    let dot = list("dot", ".\n");
    let ff = |l: &str| format!("--files-from={l}");
    let (plain_ff, cleaned_ff, nul_ff, dot_ff) = (ff(&plain), ff(&cleaned), ff(&nul), ff(&dot));
    let cases: Vec<(Vec<&str>, bool)> = vec![
        (vec!["-a", "-i", &plain_ff, "src"], true),
        (vec!["-a", "-r", "-i", &plain_ff, "src"], true),
        (
            vec!["-a", "-i", "--no-implied-dirs", &plain_ff, "src"],
            false,
        ),
        (vec!["-a", "-i", &cleaned_ff, "src"], true),
        (vec!["-a", "-i", "--from0", &nul_ff, "src"], true),
        (vec!["-a", "-i", &dot_ff, "src"], true),
        (
            vec!["-a", "-i", "--ignore-missing-args", &plain_ff, "src"],
            true,
        ),
        (
            vec!["-a", "-i", "-R", "src/a/b/f1", "src/./c", "src/d/"],
            true,
        ),
        (vec!["-a", "-i", "--relative", "src/./a/./b"], true),
        (vec!["-a", "-i", "-R", "--no-R", "src/a/b"], true),
    ];
    for (i, (args, times)) in cases.iter().enumerate() {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = format!("{tool}-{i}");
            let mut a = args.clone();
            a.push(&dst);
            outs.push((in_dir(tool, &a, base), base.join(&dst)));
        }
        let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
        assert_eq!(code(got), code(want), "{args:?}: {}", err(got));
        assert_eq!(items(got), items(want), "{args:?}");
        assert_eq!(shape(got_dst, *times), shape(want_dst, *times), "{args:?}");
        if args.contains(&plain_ff.as_str()) && !args.contains(&"--ignore-missing-args") {
            assert_eq!(code(got), 23);
            assert!(err(got).contains("link_stat") && err(got).contains("missing"));
        }
    }
    // --delete goes only into the directories whose whole listing is in the transfer; a
    // missing listed name is deleted from the destination with --delete-missing-args.
    for (i, flags) in [
        vec!["-a", "-r", "-i", "--delete", &plain_ff, "src"],
        vec!["-a", "-r", "-i", "--delete", &dot_ff, "src"],
        vec!["-a", "-i", "--delete-missing-args", &plain_ff, "src"],
    ]
    .iter()
    .enumerate()
    {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = base.join(format!("del-{tool}-{i}"));
            for f in ["c/stale", "a/b/stale", "topstale", "zz/inside", "missing"] {
                fs::create_dir_all(dst.join(f).parent().unwrap()).unwrap();
                write(&dst.join(f), b"stale");
            }
            let mut a = flags.clone();
            let d = dst.display().to_string();
            a.push(&d);
            outs.push((in_dir(tool, &a, base), dst));
        }
        let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
        assert_eq!(code(got), code(want), "{flags:?}: {}", err(got));
        assert_eq!(items(got), items(want), "{flags:?}");
        assert_eq!(listing(got_dst), listing(want_dst), "{flags:?}");
    }
    // Usage: one SRC only, a readable list, no `..` in a -R path; a base that is not a
    // directory is rsync's exit 3. Nothing is written.
    let dst = base.join("refused");
    let dst_s = dst.display().to_string();
    for (args, want) in [
        (vec!["-a", &plain_ff, "src", "src", &dst_s], 1),
        (
            vec!["-a", "--files-from=/nonexistent/list", "src", &dst_s],
            1,
        ),
        (vec!["-a", "-R", "../x/y", &dst_s], 1),
        (vec!["-a", &plain_ff, "src/a/b/f1", &dst_s], 3),
        (vec!["-a", &plain_ff, "nonexistent", &dst_s], 3),
    ] {
        let w = in_dir("rsync", &args, base);
        assert_eq!(code(&w), want, "rsync {args:?}");
        let g = in_dir("arsync", &args, base);
        assert_eq!(code(&g), want, "{args:?}: {}", err(&g));
        assert!(!dst.exists(), "{args:?} wrote");
    }
}

/// Names, types, link counts, modes, sizes and file contents of a tree (not times: a fresh
/// directory's mtime is the second it was made, which rsync compares to the second).
fn linked_shape(root: &Path) -> BTreeSet<String> {
    treediff::walk(root)
        .unwrap()
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| {
            let full = root.join(&p);
            let m = fs::symlink_metadata(&full).unwrap();
            let data = if m.is_file() {
                String::from_utf8_lossy(&fs::read(&full).unwrap()).into_owned()
            } else {
                String::new()
            };
            format!(
                "{} n={} {:o} {} {data}",
                p.display(),
                m.nlink(),
                m.mode(),
                m.size()
            )
        })
        .collect()
}

#[test]
fn reference_trees_act_as_rsync_link_compare_and_copy_dest() {
    if !require_rsync("reference_trees_act_as_rsync_link_compare_and_copy_dest") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    let (r1, r2) = (base.join("ref1"), base.join("ref2"));
    for (p, data) in [
        ("same", "same"),
        ("quick-same", "data"),
        ("perm", "permdiff"),
        ("size", "content g"),
        ("only-src", "new"),
        ("replaced", "longer content"),
        ("sub/deep", "deep"),
        ("second", "in ref2 only"),
    ] {
        fs::create_dir_all(src.join(p).parent().unwrap()).unwrap();
        write(&src.join(p), data.as_bytes());
    }
    fs::create_dir_all(src.join("emptydir")).unwrap();
    symlink("same", src.join("link")).unwrap();
    mkfifo(&src.join("fifo"));
    age(&src, 1_500_000_000);
    // ref1: mostly the source; one file with other data of the same size and mtime (the quick
    // check calls it the same), one with other permissions, one of another size, a directory
    // with other permissions, a file the source lacks. ref2 holds what ref1 lacks.
    let out = by_tool("rsync", &["-a", "--exclude=second"], &src, &r1);
    assert_eq!(code(&out), 0, "{}", err(&out));
    let keep = fs::metadata(r1.join("quick-same")).unwrap();
    write(&r1.join("quick-same"), b"DATA");
    set_times(&r1.join("quick-same"), keep.mtime(), keep.mtime_nsec());
    chmod(&r1.join("perm"), 0o600);
    write(&r1.join("size"), b"x");
    chmod(&r1.join("emptydir"), 0o700);
    write(&r1.join("only-ref"), b"only in the reference");
    let out = by_tool(
        "rsync",
        &["-a", "--include=second", "--exclude=*"],
        &src,
        &r2,
    );
    assert_eq!(code(&out), 0, "{}", err(&out));
    let refs = [
        format!("../{}", r1.file_name().unwrap().to_str().unwrap()),
        r2.display().to_string(),
    ];
    for kind in ["link", "compare", "copy"] {
        for extra in [&[][..], &["-n"], &["-c"], &["--size-only"]] {
            let mut outs = Vec::new();
            for tool in ["rsync", "arsync"] {
                let dst = base.join(format!("{tool}-{kind}-{}", extra.join("")));
                fs::create_dir_all(&dst).unwrap();
                // An existing file the reference matches exactly, and one already up to date.
                write(&dst.join("replaced"), b"old");
                let cp = Command::new("cp")
                    .arg("-a")
                    .arg(src.join("same"))
                    .arg(dst.join("same"))
                    .status()
                    .unwrap();
                assert!(cp.success());
                let mut flags = vec!["-a", "-i"];
                flags.extend(extra.iter().copied());
                let r1_flag = format!("--{kind}-dest={}", refs[0]);
                let r2_flag = format!("--{kind}-dest={}", refs[1]);
                flags.extend([r1_flag.as_str(), r2_flag.as_str()]);
                let out = by_tool(tool, &flags, &src, &dst);
                assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
                outs.push((out, dst));
            }
            let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
            let what = format!("--{kind}-dest {extra:?}");
            assert_eq!(items(got), items(want), "{what}");
            assert_eq!(linked_shape(got_dst), linked_shape(want_dst), "{what}");
        }
    }
    let out = copy_contents(
        &["-a", "--link-dest=x", "--copy-dest=y"],
        &src,
        &base.join("refused"),
    );
    assert_eq!(code(&out), 1, "{}", err(&out));
    assert!(err(&out).contains("conflicts") && !base.join("refused").exists());
}

#[test]
fn dirs_without_recursion_copy_what_rsync_copies() {
    if !require_rsync("dirs_without_recursion_copy_what_rsync_copies") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(&src, &["a/top", "c/cf", "c/sub/csf", "file"]);
    chmod(&src.join("c"), 0o750);
    age(&src, 1_200_000_000);
    for (i, args) in [
        vec!["-a", "--no-r", "-d", "-i", "src"],
        vec!["-a", "--no-r", "-d", "-i", "src/"],
        vec!["-a", "--no-r", "--dirs", "-i", "--delete", "src/"],
        vec!["-lptgoD", "-d", "-i", "src/file", "src/c/"],
        vec!["-a", "--no-r", "-i", "src/"],
    ]
    .iter()
    .enumerate()
    {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = base.join(format!("{tool}-{i}"));
            // Stale entries: one at the top (deleted with --delete), one in a directory whose
            // contents are not in the transfer (kept).
            fs::create_dir_all(dst.join("c")).unwrap();
            write(&dst.join("stale"), b"stale");
            write(&dst.join("c/kept"), b"kept");
            for p in ["stale", "c/kept", "c"] {
                set_times(&dst.join(p), 1_100_000_000, 0);
            }
            let mut a = args.clone();
            let d = format!("{}/", dst.display());
            a.push(&d);
            outs.push((in_dir(tool, &a, base), dst));
        }
        let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
        assert_eq!(code(got), code(want), "{args:?}: {}", err(got));
        assert_eq!(items(got), items(want), "{args:?}");
        assert_eq!(shape(got_dst, true), shape(want_dst, true), "{args:?}");
    }
}

#[test]
fn copy_dirlinks_follows_only_links_to_directories_as_rsync() {
    if !require_rsync("copy_dirlinks_follows_only_links_to_directories_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["real/inner/file", "real/top"]);
    symlink("real/inner", src.join("dirlink")).unwrap();
    symlink("real/top", src.join("filelink")).unwrap();
    symlink("nowhere", src.join("dangling")).unwrap();
    // A link back up: followed once it would loop, and refused there.
    symlink("..", src.join("real/up")).unwrap();
    let mut outs = Vec::new();
    for tool in ["rsync", "arsync"] {
        let dst = s.path().join(tool);
        outs.push((
            by_tool(tool, &["-a", "-k", "-i", "--exclude=up"], &src, &dst),
            dst,
        ));
    }
    let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
    assert_eq!(code(got), code(want), "{}", err(got));
    assert_eq!(items(got), items(want));
    assert_eq!(listing(got_dst), listing(want_dst));
    assert!(got_dst.join("dirlink/file").is_file());
    assert!(
        fs::symlink_metadata(got_dst.join("filelink"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Without the exclude the loop through `up` is refused with an error, not followed forever.
    let out = copy_contents(&["-a", "-k"], &src, &s.path().join("loop"));
    assert_eq!(code(&out), 23, "{}", err(&out));
}

/// `--files-from` and `-R` paths that go through a symlink to a directory: rsync (since 3.0)
/// sends the implied directories on the way as real directories, so the symlink is made a
/// directory in the copy and the named paths below it are copied, also when the symlink is
/// named itself, and with `--no-implied-dirs`. Before, arsync copied the symlink and left the
/// named paths out without a word (exit 0): a file list through a symlinked directory lost
/// its files.
#[test]
fn named_paths_through_a_symlinked_directory_are_copied_as_rsync() {
    if !require_rsync("named_paths_through_a_symlinked_directory_are_copied_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["real/sub/f", "real/other"]);
    named_files(&s.path().join("out/od"), &["g", "h"]);
    symlink("real", src.join("lnk")).unwrap();
    symlink("../out/od", src.join("ext")).unwrap();
    let lists = ["lnk/sub/f\next/g\n", "lnk\nlnk/sub/f\n", "lnk\n"];
    let mut i = 0;
    for list in lists {
        let from = s.path().join(format!("list{i}"));
        write(&from, list.as_bytes());
        let from = format!("--files-from={}", from.display());
        for extra in [&[][..], &["-r"], &["--no-implied-dirs"]] {
            let mut flags = vec!["-a", "-i", from.as_str()];
            flags.extend_from_slice(extra);
            let got = same_as_rsync(&flags, |tool| {
                let dst = s.path().join(format!("{tool}{i}"));
                let o = by_tool(tool, &flags, &src, &dst);
                (code(&o), items(&o), listing(&dst))
            });
            if list.starts_with("lnk/sub/f") {
                assert!(
                    got.2.contains("f lnk/sub/f") && got.2.contains("f ext/g"),
                    "{got:?}"
                );
            }
            i += 1;
        }
    }
    // -R names the same paths on the command line; an unsafe link that --copy-unsafe-links
    // follows, named with a path below it, is a directory of its own, copied whole (-a: -r).
    for (i, names) in [
        &["lnk/sub/f", "ext/g"][..],
        &["--copy-unsafe-links", "ext", "ext/g", "lnk", "lnk/sub/f"],
    ]
    .into_iter()
    .enumerate()
    {
        let got = same_as_rsync(&names, |tool| {
            let dst = s.path().join(format!("{tool}-R{i}"));
            let o = tool_command(tool)
                .current_dir(&src)
                .args(["-a", "-i", "-R"])
                .args(names)
                .arg(format!("{}/", dst.display()))
                .output()
                .unwrap();
            (code(&o), items(&o), listing(&dst))
        });
        assert!(
            got.2.contains("d lnk") && got.2.contains("f lnk/sub/f"),
            "{got:?}"
        );
        assert_eq!(got.2.contains("f ext/h"), i == 1, "{got:?}");
    }
}

/// `--no-implied-dirs`: a directory on the way to a listed path that is a symlink to a
/// directory in the destination is left as it is and the listed path goes through it, as
/// rsync's manual says ("even ... a symlink to a directory on the receiving side"; rsync 3.5
/// keeps the symlink but refuses to go through it, exit 23). Before, arsync replaced the
/// destination's symlink with a directory. Without the option the implied directory is made
/// a real one, as rsync makes it.
#[test]
fn no_implied_dirs_goes_through_a_destination_symlink_to_a_directory() {
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["a/sub/f"]);
    let list = s.path().join("list");
    write(&list, b"a/sub/f\n");
    let from = format!("--files-from={}", list.display());
    for (flags, through) in [
        (&["-a", "--no-implied-dirs", &from][..], true),
        (&["-a", &from], false),
    ] {
        let dst = s.path().join(format!("dst{through}"));
        let elsewhere = s.path().join(format!("elsewhere{through}"));
        fs::create_dir_all(&dst).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        symlink(&elsewhere, dst.join("a")).unwrap();
        let out = copy_contents(flags, &src, &dst);
        assert_eq!(code(&out), 0, "{flags:?}: {}", err(&out));
        let link = fs::symlink_metadata(dst.join("a"))
            .unwrap()
            .file_type()
            .is_symlink();
        assert_eq!(link, through, "{flags:?}");
        let at = if through {
            elsewhere.join("sub/f")
        } else {
            dst.join("a/sub/f")
        };
        assert_eq!(
            fs::read(&at).unwrap(),
            fs::read(src.join("a/sub/f")).unwrap(),
            "{flags:?}"
        );
    }
}

/// `--no-implied-dirs`: a file where a directory on the way to a listed path would go is left
/// as it is and the listed path fails (exit 23), as rsync leaves it, in a dry run too. Before,
/// arsync replaced the file with a directory: the user's file was lost.
#[test]
fn no_implied_dirs_leaves_a_file_in_the_way_as_rsync() {
    if !require_rsync("no_implied_dirs_leaves_a_file_in_the_way_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["c/f2", "top"]);
    let list = s.path().join("list");
    write(&list, b"c/f2\ntop\n");
    let from = format!("--files-from={}", list.display());
    for (i, extra) in [&[][..], &["-n"]].into_iter().enumerate() {
        let mut flags = vec!["-a", "--no-implied-dirs", from.as_str()];
        flags.extend_from_slice(extra);
        let got = same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{i}"));
            fs::create_dir_all(&dst).unwrap();
            write(&dst.join("c"), b"the user's file");
            let o = by_tool(tool, &flags, &src, &dst);
            (code(&o), listing(&dst), fs::read(dst.join("c")).ok())
        });
        assert_eq!(got.0, 23, "{flags:?}");
        assert_eq!(got.2.as_deref(), Some(&b"the user's file"[..]), "{flags:?}");
    }
}

/// One entry that is no directory as the transfer sees it goes to the name DEST (no trailing
/// slash, not a directory), as rsync copies "file to file": a symlink to a directory named
/// without `/` (`SRC/link DEST` made DEST that symlink; arsync made DEST a directory holding
/// it), and `-R`/`--files-from` naming a single top-level entry (arsync made DEST a directory).
#[test]
fn a_single_entry_goes_to_the_name_dest_as_rsync() {
    if !require_rsync("a_single_entry_goes_to_the_name_dest_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["real/f", "top"]);
    symlink("real", src.join("lnk")).unwrap();
    let one = s.path().join("one");
    write(&one, b"top\n");
    let lnk = s.path().join("lnk-list");
    write(&lnk, b"lnk\n");
    let (one, lnk) = (
        format!("--files-from={}", one.display()),
        format!("--files-from={}", lnk.display()),
    );
    let cases: [(&[&str], &[&str]); 6] = [
        (&["-a", "-i"], &["lnk"]),
        (&["-a", "-i", "-L"], &["lnk"]),
        (&["-a", "-i", "-R"], &["top"]),
        (&["-a", "-i", "-R"], &["real/f"]),
        (&["-a", "-i", &one], &["."]),
        (&["-a", "-i", &lnk], &["."]),
    ];
    for (i, (flags, names)) in cases.into_iter().enumerate() {
        let got = same_as_rsync(&(flags, names), |tool| {
            let dst = s.path().join(format!("{tool}{i}"));
            let o = tool_command(tool)
                .current_dir(&src)
                .args(flags)
                .args(names)
                .arg(&dst)
                .output()
                .unwrap();
            let kind = fs::symlink_metadata(&dst).map(|m| format!("{:?}", m.file_type()));
            (code(&o), items(&o), kind.ok(), listing(&dst))
        });
        assert_eq!(got.0, 0, "{flags:?} {names:?}");
    }
}

/// `-m` with `-L`, `-k` or `--copy-unsafe-links`: a symlink counts as what it is sent as. One
/// that cannot be followed (dangling, a loop) is reported and left out by rsync's sender, so a
/// directory holding only such links is pruned (and the run still ends with 23); one followed
/// to a file is content. Before, arsync counted every symlink as content and made those
/// directories.
#[test]
fn prune_empty_dirs_counts_symlinks_as_what_they_are_sent_as() {
    if !require_rsync("prune_empty_dirs_counts_symlinks_as_what_they_are_sent_as") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["top", "full/x"]);
    for d in ["z", "e/e2", "lp/inner", "keep"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    symlink("nowhere", src.join("z/f")).unwrap();
    symlink("../nowhere", src.join("e/e2/f")).unwrap();
    symlink("../../lp", src.join("lp/inner/loop")).unwrap();
    symlink("../top", src.join("keep/t")).unwrap();
    symlink("../full", src.join("keep/d")).unwrap();
    // A symlink sent as a directory (-L, -k) that holds nothing but directories is pruned too.
    fs::create_dir_all(s.path().join("out/empty/sub")).unwrap();
    symlink("../out/empty", src.join("to_empty")).unwrap();
    for (i, flags) in [
        &["-a", "-L", "-m"][..],
        &["-a", "-k", "-m"],
        &["-a", "--copy-unsafe-links", "-m"],
        &["-a", "-L", "-m", "--delete-before"],
        &["-a", "-m"],
    ]
    .into_iter()
    .enumerate()
    {
        let (rc, made) = same_listing_as_rsync(s.path(), i, (flags, &src), |_| {});
        if i == 0 {
            assert_eq!(rc, 23);
            assert!(
                made.contains("f keep/t") && !made.iter().any(|l| l.contains(" z")),
                "{made:?}"
            );
        }
        if i < 2 {
            assert!(!made.iter().any(|l| l.contains("to_empty")), "{made:?}");
        }
    }
}

/// `--ignore-existing` with `--files-from` (no `-r`): a named directory whose place in the
/// destination holds a file is left alone without a word, as rsync leaves it (its contents are
/// not sent, so nothing needs to go below it); a directory whose contents are sent still fails
/// there as in rsync. Before, arsync failed the first too (exit 23).
#[test]
fn ignore_existing_passes_a_named_directory_over_a_file_as_rsync() {
    if !require_rsync("ignore_existing_passes_a_named_directory_over_a_file_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["g/f", "h/f", "k"]);
    for (i, (list, extra)) in [
        ("g\nk\n", &[][..]),
        ("g\nh/f\n", &[][..]),
        ("g\n", &["-r"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let from = s.path().join(format!("list{i}"));
        write(&from, list.as_bytes());
        let flag = format!("--files-from={}", from.display());
        let mut flags = vec!["-a", "--ignore-existing", "-i", &flag];
        flags.extend_from_slice(extra);
        same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{i}"));
            named_files(&dst, &["g", "h"]);
            let o = by_tool(tool, &flags, &src, &dst);
            (code(&o), items(&o), listing(&dst))
        });
    }
}

/// A named source symlink that is followed (`-L`, `--copy-unsafe-links`) onto a destination
/// symlink to the same directory: the destination symlink is replaced by a copy of the
/// directory, as rsync does, and without `-L` the symlink is brought up to date. Before, arsync
/// took the two for one directory copied onto itself and dropped the root without a word (exit
/// 0, nothing copied).
#[test]
fn a_followed_root_meeting_a_symlink_to_the_same_directory_is_copied_as_rsync() {
    if !require_rsync("a_followed_root_meeting_a_symlink_to_the_same_directory_is_copied_as_rsync")
    {
        return;
    }
    let s = Scratch::new();
    let od = s.path().join("out/od");
    named_files(&od, &["f2", "inner/f3"]);
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    symlink(&od, src.join("a")).unwrap();
    for (i, flags) in [
        &["-a", "-L", "-i"][..],
        &["-a", "--copy-unsafe-links", "-i"],
        &["-a", "-i"],
    ]
    .into_iter()
    .enumerate()
    {
        let got = same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{i}"));
            fs::create_dir(&dst).unwrap();
            symlink(&od, dst.join("a")).unwrap();
            set_times(&dst.join("a"), 1_900_000_000, 0);
            let o = tool_command(tool)
                .args(flags)
                .arg(src.join("a"))
                .arg(format!("{}/", dst.display()))
                .output()
                .unwrap();
            (code(&o), items(&o), listing(&dst))
        });
        assert!(!got.1.is_empty(), "{flags:?}: nothing done");
    }
    assert_eq!(
        listing(&od).len(),
        3,
        "the directory pointed to is left as it was"
    );
}

/// `-k` is decided before `--safe-links` and `--copy-unsafe-links`, as rsync's `link_stat`
/// does: a symlink to a directory outside the tree is copied as that directory (it was skipped
/// as unsafe under `--safe-links`), without the unsafe-link notice; links to files are still
/// judged safe or not.
#[test]
fn copy_dirlinks_comes_before_the_safe_link_options_as_rsync() {
    if !require_rsync("copy_dirlinks_comes_before_the_safe_link_options_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let out = s.path().join("out");
    named_files(&out, &["od/f2", "od/inner/f3", "of"]);
    let src = s.path().join("src");
    named_files(&src, &["sub/f"]);
    symlink("../out/od", src.join("up_dir")).unwrap();
    symlink(out.join("od"), src.join("abs_dir")).unwrap();
    symlink("../out/of", src.join("up_file")).unwrap();
    symlink("sub", src.join("in_dir")).unwrap();
    symlink("../../out/od", src.join("sub/deep_up_dir")).unwrap();
    for (i, flags) in [
        &["-rlt", "--safe-links", "-k", "-i"][..],
        &["-rlt", "--copy-unsafe-links", "-k", "-i"],
        &["-rt", "--safe-links", "-k", "-i"],
        &["-rlt", "--safe-links", "--copy-unsafe-links", "-k", "-i"],
    ]
    .into_iter()
    .enumerate()
    {
        let got = same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{i}"));
            let o = by_tool(tool, flags, &src, &dst);
            (code(&o), items(&o), listing(&dst))
        });
        assert!(
            got.2.iter().any(|l| l.contains("up_dir/inner/f3")),
            "{flags:?}: {got:?}"
        );
    }
}

#[test]
fn merge_and_per_directory_filter_files_act_as_rsync() {
    if !require_rsync("merge_and_per_directory_filter_files_act_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    let src = base.join("src");
    named_files(
        &src,
        &[
            "top.txt",
            "top.o",
            "a/x.log",
            "a/keep.log",
            "a/b/deep.log",
            "a/b/z.tmp",
            "c/c.tmp",
            "c/c.txt",
            "d/core",
            "d/foo.o",
            "d/bar.c",
            "d/baz.old",
            "d/qux.h",
        ],
    );
    // Per-directory files: inherited, overridden by a subdirectory's, cleared with `!`, anchored
    // at their own directory; a .cvsignore; a static merge file; a home .cvsignore.
    fs::write(src.join(".rsync-filter"), "- *.tmp\n").unwrap();
    fs::write(src.join("a/.rsync-filter"), "+ keep.log\n- *.log\n").unwrap();
    fs::write(src.join("a/b/.rsync-filter"), "!\n- deep.log\n").unwrap();
    fs::write(src.join("d/.cvsignore"), "bar.c\n").unwrap();
    fs::write(src.join("c/.rules"), "- /c.txt\n").unwrap();
    fs::write(base.join("static.rules"), "# comment\n- top.txt\n").unwrap();
    fs::write(base.join(".cvsignore"), "*.h\n").unwrap();
    age(&src, 1_300_000_000);
    let run = |tool: &str, args: &[&str], dst: &Path| -> Output {
        let mut c = if tool == "rsync" {
            Command::new("rsync")
        } else {
            arsync()
        };
        c.env("HOME", base)
            .env_remove("CVSIGNORE")
            .args(args)
            .arg("src/")
            .arg(format!("{}/", dst.display()))
            .current_dir(base)
            .output()
            .unwrap()
    };
    let cases: Vec<Vec<&str>> = vec![
        vec!["-F"],
        vec!["-FF"],
        vec!["-F", "--exclude=c", "-F"],
        vec!["--filter=: .rules"],
        vec!["--filter=:e .rules"],
        vec!["--filter=dir-merge,n- .rsync-filter"],
        vec!["--filter=. static.rules"],
        vec!["--filter=merge static.rules", "-F"],
        vec!["-C"],
        vec!["--filter=:C"],
        vec!["--include=*.old", "-C"],
    ];
    for (i, extra) in cases.iter().enumerate() {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = base.join(format!("{tool}-{i}"));
            let mut args = vec!["-a", "-i"];
            args.extend(extra.iter().copied());
            outs.push((run(tool, &args, &dst), dst));
        }
        let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
        assert_eq!(code(got), code(want), "{extra:?}: {}", err(got));
        assert_eq!(items(got), items(want), "{extra:?}");
        assert_eq!(listing(got_dst), listing(want_dst), "{extra:?}");
    }
    // What --delete may remove: with --delete, --delete-before and --delete-delay the
    // destination's own merge files (as they were before the copy) protect, with --delete-after
    // the ones just copied. (Before, --delete-delay was --delete-after's other name, so the
    // copied files protected what rsync deletes.)
    for mode in [
        "--delete",
        "--delete-before",
        "--delete-after",
        "--delete-delay",
    ] {
        for old_rules in [false, true] {
            let mut outs = Vec::new();
            for tool in ["rsync", "arsync"] {
                let dst = base.join(format!("del-{tool}{mode}-{old_rules}"));
                for f in ["a/b/stale.log", "a/stale.tmp", "stale.txt", "c/c.tmp"] {
                    fs::create_dir_all(dst.join(f).parent().unwrap()).unwrap();
                    write(&dst.join(f), b"stale");
                }
                if old_rules {
                    fs::write(dst.join(".rsync-filter"), "- stale.txt\n").unwrap();
                    fs::write(dst.join("c/.rsync-filter"), "- c.tmp\n").unwrap();
                }
                outs.push((run(tool, &["-a", "-i", "-F", mode], &dst), dst));
            }
            let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
            let what = format!("{mode} (old rules: {old_rules})");
            assert_eq!(code(got), code(want), "{what}: {}", err(got));
            assert_eq!(items(got), items(want), "{what}");
            assert_eq!(listing(got_dst), listing(want_dst), "{what}");
        }
    }
    // A merge file that cannot be read: rsync's file I/O error (11), before anything is
    // written.
    for tool in ["rsync", "arsync"] {
        let dst = base.join(format!("refused-{tool}"));
        let out = run(tool, &["-a", "--filter=. /nonexistent/rules"], &dst);
        assert_eq!(code(&out), 11, "{tool}: {}", err(&out));
        assert!(
            err(&out).contains(
                "failed to open exclude file /nonexistent/rules: No such file or directory (2)"
            ),
            "{tool}: {}",
            err(&out)
        );
        assert!(!dst.exists());
    }
}

#[test]
fn without_perms_existing_modes_are_kept_and_executability_follows_with_e() {
    if !require_rsync("without_perms_existing_modes_are_kept_and_executability_follows_with_e") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // f, g: content changes; u, v: up to date (only -E may touch their bits); n: new.
    for (name, data, mode) in [
        ("f", "new f", 0o755),
        ("g", "new g", 0o644),
        ("u", "same", 0o755),
        ("v", "same", 0o644),
        ("n", "new", 0o751),
    ] {
        write(&src.join(name), data.as_bytes());
        chmod(&src.join(name), mode);
        set_times(&src.join(name), 1_400_000_000, 0);
    }
    // Directories that exist in the destination with other modes and times: the time is
    // copied, the mode stays (a private directory was opened to 0755, and a setgid one lost
    // its bit, whenever its time was updated).
    for (name, mode) in [("private", 0o755), ("shared", 0o755), ("same", 0o700)] {
        fs::create_dir(src.join(name)).unwrap();
        chmod(&src.join(name), mode);
        set_times(&src.join(name), 1_400_000_000, 0);
    }
    set_times(&src, 1_400_000_000, 0);
    for flags in [
        &["-rt"][..],
        &["-rtE"],
        &["-rtI"],
        &["-rtE", "--inplace"],
        &["-rtE", "--chmod=o-r"],
        &["-rtp"],
    ] {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{}", flags.join("")));
            fs::create_dir_all(&dst).unwrap();
            for (name, data, mode) in [
                ("f", "old", 0o600),
                ("g", "old", 0o700),
                ("u", "same", 0o640),
                ("v", "same", 0o751),
            ] {
                write(&dst.join(name), data.as_bytes());
                chmod(&dst.join(name), mode);
                set_times(&dst.join(name), 1_400_000_000, 0);
            }
            for (name, mode) in [("private", 0o700), ("shared", 0o2770), ("same", 0o700)] {
                fs::create_dir(dst.join(name)).unwrap();
                chmod(&dst.join(name), mode);
                set_times(&dst.join(name), 1_300_000_000, 0);
            }
            let mut args = flags.to_vec();
            args.push("-i");
            outs.push((by_tool(tool, &args, &src, &dst), dst));
        }
        let ((want, want_dst), (got, got_dst)) = (&outs[0], &outs[1]);
        assert_eq!(code(got), code(want), "{flags:?}: {}", err(got));
        let files = |o: &Output| -> BTreeSet<String> {
            items(o)
                .into_iter()
                .filter(|l| !l.ends_with("./"))
                .collect()
        };
        assert_eq!(files(got), files(want), "{flags:?}");
        assert_eq!(shape(got_dst, true), shape(want_dst, true), "{flags:?}");
        if !flags.contains(&"-rtp") {
            let mode = |n: &str| fs::metadata(got_dst.join(n)).unwrap().mode() & 0o7777;
            assert_eq!(mode("private"), 0o700, "{flags:?}");
            assert_eq!(mode("shared"), 0o2770, "{flags:?}");
        }
    }
}

#[test]
fn double_itemize_lists_unchanged_entries_as_rsync() {
    if !require_rsync("double_itemize_lists_unchanged_entries_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    named_files(&src, &["a", "b", "sub/c", "sub/deeper/d"]);
    symlink("a", src.join("link")).unwrap();
    mkfifo(&src.join("fifo"));
    fs::create_dir_all(src.join("empty")).unwrap();
    age(&src, 1_450_000_000);
    let mut outs = Vec::new();
    for tool in ["rsync", "arsync"] {
        let dst = s.path().join(tool);
        let out = by_tool("rsync", &["-a"], &src, &dst);
        assert_eq!(code(&out), 0);
        // One file with other data (and an old mtime), one with other permissions.
        write(&dst.join("b"), b"other data");
        set_times(&dst.join("b"), 1_000_000_000, 0);
        chmod(&dst.join("sub/c"), 0o600);
        outs.push(by_tool(tool, &["-a", "-ii"], &src, &dst));
    }
    assert_eq!(code(&outs[1]), 0, "{}", err(&outs[1]));
    assert_eq!(items(&outs[1]), items(&outs[0]));
    assert!(
        items(&outs[1]).contains(".f          a"),
        "{:?}",
        items(&outs[1])
    );
    // Files matched in a reference tree: `hf`, `.f` and `cf` with nothing else to say.
    for kind in ["link", "compare", "copy"] {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}-{kind}"));
            let flag = format!("--{kind}-dest={}", s.path().join("rsync").display());
            outs.push(by_tool(
                tool,
                &["-a", "-ii", "--exclude=link", &flag],
                &src,
                &dst,
            ));
        }
        assert_eq!(code(&outs[1]), 0, "{}", err(&outs[1]));
        let files = |o: &Output| -> BTreeSet<String> {
            items(o)
                .into_iter()
                .filter(|l| l.as_bytes()[1] == b'f')
                .collect()
        };
        assert_eq!(files(&outs[1]), files(&outs[0]), "--{kind}-dest");
    }
}

/// The tree of the `--delay-updates` cases: `(source, destination)` after a first copy and
/// then changes to the source (changed files, one of them hard-linked from another directory,
/// one in a read-only directory, a new file, a new directory, a file where the destination has
/// an empty directory), all with old whole-second times.
fn delay_tree(s: &Path) -> (PathBuf, PathBuf) {
    let (src, dst) = (s.join("src"), s.join("dst"));
    for (p, data) in [
        ("f1", &b"one"[..]),
        ("keep", b"keep"),
        ("d/e/g", b"g"),
        ("ro/r", b"r"),
    ] {
        fs::create_dir_all(src.join(p).parent().unwrap()).unwrap();
        write(&src.join(p), data);
    }
    fs::hard_link(src.join("f1"), src.join("d/e/f1link")).unwrap();
    fs::create_dir(src.join("way")).unwrap();
    chmod(&src.join("ro"), 0o555);
    age(&src, 1_600_000_000);
    assert_eq!(code(&rsync(&["-aH"], &src, &dst)), 0);
    chmod(&src.join("ro"), 0o755);
    for (p, data) in [
        ("f1", &b"one, longer now"[..]),
        ("d/e/g", b"g2"),
        ("ro/r", b"r2"),
        ("new", b"new"),
        ("nd/n", b"n"),
    ] {
        fs::create_dir_all(src.join(p).parent().unwrap()).unwrap();
        write(&src.join(p), data);
    }
    fs::remove_dir(src.join("way")).unwrap();
    write(&src.join("way"), b"a file now");
    chmod(&src.join("ro"), 0o555);
    age(&src, 1_600_100_000);
    (src, dst)
}

#[test]
fn delay_updates_puts_every_file_in_place_as_rsync_does() {
    // Before, --delay-updates was an unknown option (exit 1, nothing copied).
    if !require_rsync("delay_updates_puts_every_file_in_place_as_rsync_does") {
        return;
    }
    for flags in [
        &["-aH", "--delay-updates"][..],
        &["-aH", "--delay-updates", "--partial-dir=.waiting"],
        &["-aH", "--delay-updates", "--remove-source-files"],
        // The replaced files are kept as NAME~ (before, arsync made no backup of a file staged
        // in a partial directory).
        &["-aH", "--delay-updates", "-b"],
        &["-aH", "--partial-dir=.waiting", "-b"],
    ] {
        let mut got = Vec::new();
        for tool in ["rsync", "arsync"] {
            let s = Scratch::new();
            let (src, dst) = delay_tree(s.path());
            let before = contents(&src);
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            if flags.contains(&"--remove-source-files") {
                assert_eq!(
                    contents(&src)
                        .iter()
                        .filter(|l| l.starts_with("f "))
                        .count(),
                    0,
                    "{tool} {flags:?}: every source file is removed"
                );
            } else if flags.contains(&"-b") {
                assert!(
                    dst.join("d/e/g~").exists() && dst.join("f1~").exists(),
                    "{tool} {flags:?}: no backup"
                );
                if tool == "arsync" {
                    for d in ["", "d", "d/e", "ro", "nd"] {
                        let t = |r: &Path| fs::metadata(r.join(d)).unwrap().mtime();
                        assert_eq!(t(&dst), t(&src), "{flags:?}: time of {d:?}");
                    }
                }
            } else {
                assert_same(&src, &dst, treediff::Check::archive());
            }
            // Everything in place, nothing left waiting; the link group whole.
            let after = contents(&dst);
            assert!(
                !after
                    .iter()
                    .any(|l| l.contains("~tmp~") || l.contains(".waiting")),
                "{tool} {flags:?}: {after:?}"
            );
            for l in before.iter().filter(|l| l.starts_with("f ")) {
                assert!(after.contains(l), "{tool} {flags:?}: {l} missing");
            }
            assert_eq!(
                fs::metadata(dst.join("f1")).unwrap().ino(),
                fs::metadata(dst.join("d/e/f1link")).unwrap().ino(),
                "{tool} {flags:?}"
            );
            let times: Vec<_> = ["", "d", "d/e", "ro", "nd"]
                .iter()
                .map(|d| {
                    let m = fs::metadata(dst.join(d)).unwrap();
                    (m.mtime(), m.mode())
                })
                .collect();
            got.push((after, times));
        }
        if flags.contains(&"-b") {
            // rsync 3.5.0 leaves most directories with the time its backups gave them; arsync
            // sets the source's again (checked against the source in the other cases).
            assert_eq!(got[1].0, got[0].0, "{flags:?}: arsync and rsync differ");
        } else {
            assert_eq!(got[1], got[0], "{flags:?}: arsync and rsync differ");
        }
    }
}

#[test]
fn delay_updates_holds_every_file_until_the_end_and_a_stopped_run_resumes() {
    // A test hook holds one file's copy until the run is stopped: the files copied meanwhile
    // wait in .~tmp~ (the old versions still in place), a stop leaves them there (exit 20),
    // and the next run puts everything in place.
    use std::io::{BufRead, BufReader};
    if !has_hooks() {
        skip(
            "delay_updates_holds_every_file_until_the_end_and_a_stopped_run_resumes",
            "binary built without --features arsync/test-hooks (scripts/test.sh builds it with them)",
        );
        return;
    }
    let s = Scratch::new();
    let (src, dst) = delay_tree(s.path());
    write(&src.join("held"), b"held");
    // One file in flight per core: the hold blocks its core's thread, and any other file that
    // core had in flight (the hard link `d/e/f1link` waiting for its leader, at times) would
    // wait with it and never be listed (seen once in a full run under load).
    let mut child = arsync()
        .env("ARSYNC_TEST_HOOK", "before-open=held:hold")
        .args([
            "-aHv",
            "--delay-updates",
            "--threads=2",
            "--files-in-flight=1",
        ])
        .arg(format!("{}/", src.display()))
        .arg(&dst)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let errs = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("held: hold") {
                let _ = tx.send(true);
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = tx.send(false);
        seen
    });
    // Every file but the held one is listed by -v once it is copied. (A bounded wait: a run
    // that fails a file is held by the hook for good; it is killed and the test fails.)
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let mut listed = BTreeSet::new();
    let want = ["f1", "d/e/g", "ro/r", "new", "nd/n", "way", "d/e/f1link"];
    let bound = std::time::Duration::from_secs(120);
    while !want.iter().all(|w| listed.contains(*w)) {
        let Ok(line) = out_rx.recv_timeout(bound) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("not every file was copied: {listed:?}");
        };
        listed.insert(line.split(" => ").next().unwrap().to_string());
    }
    if rx.recv_timeout(bound) != Ok(true) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the hook never held the copy");
    }
    // Mid-run: the old versions are in place, the new ones wait.
    for (p, old, new) in [
        ("f1", &b"one"[..], &b"one, longer now"[..]),
        ("d/e/f1link", b"one", b"one, longer now"),
        ("d/e/g", b"g", b"g2"),
        ("ro/r", b"r", b"r2"),
    ] {
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        assert_eq!(fs::read(dst.join(p)).unwrap(), old, "{p} replaced early");
        assert_eq!(
            fs::read(dst.join(dir).join(".~tmp~").join(name)).unwrap(),
            new,
            "{p} not waiting"
        );
    }
    for p in ["new", "nd/n"] {
        assert!(!dst.join(p).exists(), "{p} in place early");
    }
    // (The empty directory in its way is gone already, as rsync's generator removes it before
    // the transfer.)
    assert!(!dst.join("way").is_file(), "way in place early");
    // SAFETY: a signal to the child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = wait_bounded(&mut child, 60, "stopped --delay-updates run");
    let seen = errs.join().unwrap();
    assert_eq!(status.code(), Some(20), "{seen}");
    assert_eq!(fs::read(dst.join("d/e/g")).unwrap(), b"g", "{seen}");
    assert_eq!(fs::read(dst.join("d/e/.~tmp~/g")).unwrap(), b"g2");
    // The next run finishes the job.
    let out = copy_contents(&["-aH", "--delay-updates"], &src, &dst);
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert_same(&src, &dst, treediff::Check::archive());
    assert_eq!(
        fs::metadata(dst.join("f1")).unwrap().ino(),
        fs::metadata(dst.join("d/e/f1link")).unwrap().ino()
    );
    assert!(
        !contents(&dst).iter().any(|l| l.contains("~tmp~")),
        "{:?}",
        contents(&dst)
    );
}

#[test]
fn append_and_append_verify_grow_files_as_rsync_does() {
    // Before, both were unknown options (exit 1, nothing copied).
    if !require_rsync("append_and_append_verify_grow_files_as_rsync_does") {
        return;
    }
    let big = content(5, 3 << 20);
    let mut big_bad = big[..1 << 20].to_vec();
    big_bad[10] ^= 0xff;
    let src_files: [(&str, &[u8]); 7] = [
        ("grow", b"abcdef"),
        ("same_len", b"abc"),
        ("shorter", b"ab"),
        ("bad", b"hello world"),
        ("new", b"new"),
        ("big", &big),
        ("big_bad", &big),
    ];
    let dst_files: [(&str, &[u8]); 6] = [
        ("grow", b"abc"),
        ("same_len", b"xyz"),
        ("shorter", b"xyz"),
        ("bad", b"HELLO"),
        ("big", &big[..1 << 20]),
        ("big_bad", &big_bad),
    ];
    for flag in ["--append", "--append-verify"] {
        let mut got = Vec::new();
        for tool in ["rsync", "arsync"] {
            let s = Scratch::new();
            let (src, dst) = (s.path().join("src"), s.path().join("dst"));
            fs::create_dir_all(&src).unwrap();
            fs::create_dir_all(&dst).unwrap();
            for (p, data) in src_files {
                write(&src.join(p), data);
                set_times(&src.join(p), 1_600_000_000, 0);
            }
            for (p, data) in dst_files {
                write(&dst.join(p), data);
                // (A file left alone keeps this time: the same for both tools, whichever second
                // each wrote its tree in.)
                set_times(&dst.join(p), 1_500_000_000, 0);
            }
            chmod(&dst.join("same_len"), 0o600);
            let inode = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
            let before = (inode("grow"), inode("big"));
            let out = by_tool(tool, &["-a", flag], &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flag}: {}", err(&out));
            // Appended in place.
            assert_eq!((inode("grow"), inode("big")), before, "{tool} {flag}");
            let mut state = Vec::new();
            for (p, _) in src_files {
                let m = fs::metadata(dst.join(p)).unwrap();
                let data = fs::read(dst.join(p)).unwrap();
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&data, &mut h);
                state.push(format!(
                    "{p} {:o} {} {} {:x}",
                    m.mode(),
                    m.mtime(),
                    data.len(),
                    std::hash::Hasher::finish(&h)
                ));
            }
            got.push(state);
        }
        assert_eq!(got[1], got[0], "{flag}: arsync and rsync differ");
    }
}

/// A loop device over an image file (root only), detached when dropped.
struct LoopDev {
    dev: PathBuf,
}

impl LoopDev {
    fn new(img: &Path, data: &[u8]) -> LoopDev {
        write(img, data);
        let out = sh(
            "losetup",
            &[OsStr::new("-f"), OsStr::new("--show"), img.as_os_str()],
        );
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        LoopDev { dev }
    }

    fn rdev(&self) -> u64 {
        fs::metadata(&self.dev).unwrap().rdev()
    }

    fn bytes(&self) -> Vec<u8> {
        fs::read(&self.dev).unwrap()
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn copy_devices_and_write_devices_do_what_rsync_does() {
    // Before: both flags were unknown options (exit 1, nothing copied). A disk image is backed
    // up from its device (--copy-devices) and restored onto one (--write-devices).
    let t = "copy_devices_and_write_devices_do_what_rsync_does";
    if !is_root() {
        skip(t, "devices and loop devices need root");
        return;
    }
    if !require_rsync(t) {
        return;
    }
    let _lock = mount_lock();
    let s = Scratch::new();
    let disk = content(41, 3 << 20);
    let src_dev = LoopDev::new(&s.path().join("disk.img"), &disk);
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    mknod(&src.join("blk"), libc::S_IFBLK | 0o640, src_dev.rdev());
    mknod(
        &src.join("null"),
        libc::S_IFCHR | 0o604,
        libc::makedev(1, 3),
    );
    write(&src.join("reg"), b"a regular file");
    set_times(&src.join("blk"), 1_000_000_000, 0);
    set_times(&src.join("null"), 1_000_000_000, 123_456_789);
    set_times(&src.join("reg"), 1_000_000_000, 5);

    // --copy-devices: each device becomes a regular file of its content (a device that cannot
    // seek: empty), with the time of the copy (rsync: the seconds of now, the nanoseconds of the
    // device's), so that the next run copies it again; -D or not.
    for flags in [
        &["-a", "-i", "--copy-devices"][..],
        &["-r", "-i", "--copy-devices"],
    ] {
        let mut seen = Vec::new();
        for tool in ["arsync", "rsync"] {
            let dst = s.path().join(format!("copy.{}.{tool}", flags[0]));
            let before = now_secs();
            let out = by_tool(tool, flags, &src, &dst);
            let after = now_secs();
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            assert_eq!(fs::read(dst.join("blk")).unwrap(), disk, "{tool} {flags:?}");
            assert_eq!(fs::read(dst.join("reg")).unwrap(), b"a regular file");
            let mut facts = Vec::new();
            for name in ["blk", "null", "reg"] {
                let m = fs::symlink_metadata(dst.join(name)).unwrap();
                assert!(m.file_type().is_file(), "{tool} {flags:?}: {name} {m:?}");
                if name != "reg" && flags[0] == "-a" {
                    // (A second's grace below: rsync's time() and the kernel's file times read
                    // the coarse clock, up to a tick behind the precise one `now_secs` reads,
                    // so a copy made just after a second begins can be dated the one before.
                    // Seen once in CI; the point is "now", not the device's 2001 date.)
                    assert!(
                        (before - 1..=after).contains(&m.mtime()),
                        "{tool}: {name} dated {} (the copy ran {before}..={after})",
                        m.mtime()
                    );
                }
                // (Without -t every file is dated when it was written.)
                let nsec = if flags[0] == "-a" { m.mtime_nsec() } else { 0 };
                facts.push((name, m.len(), m.mode() & 0o7777, nsec));
            }
            seen.push((facts, items(&out)));
        }
        assert_eq!(seen[0], seen[1], "{flags:?}: arsync, then rsync");
    }

    // --write-devices: the device at a file's name is written into from its start (the rest of
    // it kept: never truncated), and keeps being that device, with the file's mode and times.
    let fill = vec![0xAAu8; 4 << 20];
    let data = content(42, 300_000);
    let src2 = s.path().join("src2");
    fs::create_dir(&src2).unwrap();
    write(&src2.join("big"), &data);
    set_times(&src2.join("big"), 1_100_000_000, 42);
    let mut seen = Vec::new();
    for tool in ["arsync", "rsync"] {
        let dev = LoopDev::new(&s.path().join(format!("w.{tool}.img")), &fill);
        let dst = s.path().join(format!("w.{tool}"));
        fs::create_dir(&dst).unwrap();
        mknod(&dst.join("big"), libc::S_IFBLK | 0o600, dev.rdev());
        // (The directories alike: rsync compares their times to the second, arsync to the
        // nanosecond.)
        set_times(&src2, 1_100_000_000, 7);
        set_times(&dst, 1_100_000_000, 7);
        let out = by_tool(tool, &["-a", "-i", "--write-devices"], &src2, &dst);
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        let m = fs::symlink_metadata(dst.join("big")).unwrap();
        assert!(
            m.file_type().is_block_device() && m.rdev() == dev.rdev(),
            "{tool}: {m:?}"
        );
        let mut want = data.clone();
        want.extend_from_slice(&fill[data.len()..]);
        assert!(dev.bytes() == want, "{tool}: the device holds other bytes");
        seen.push((m.mode(), m.mtime(), m.mtime_nsec(), items(&out)));
        // A file named as the destination (rsync's `cp FILE /dev/sdX`), with -b: the backup is
        // a regular file of the device's old content.
        let small = s.path().join("small");
        write(&small, b"0123456789");
        let out = Command::new(if tool == "rsync" {
            "rsync"
        } else {
            env!("CARGO_BIN_EXE_arsync")
        })
        .args(["-a", "-i", "-b", "--write-devices"])
        .arg(&small)
        .arg(dst.join("big"))
        .output()
        .unwrap();
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        assert_eq!(
            fs::read(dst.join("big~")).unwrap(),
            want,
            "{tool}: the backup"
        );
        want[..10].copy_from_slice(b"0123456789");
        assert!(
            dev.bytes() == want,
            "{tool}: the device after the small file"
        );
        assert!(
            fs::symlink_metadata(dst.join("big"))
                .unwrap()
                .file_type()
                .is_block_device()
        );
        seen.push((0, 0, 0, items(&out)));
    }
    assert_eq!(seen[0], seen[2], "--write-devices: arsync, then rsync");
    assert_eq!(seen[1], seen[3], "a file onto a device: arsync, then rsync");

    // -S: a hole in the source is written as zeros (skipping it would leave the device's old
    // bytes; rsync 3.5 fails the file here with EINVAL, exit 11).
    let dev = LoopDev::new(&s.path().join("sparse.img"), &fill);
    let sparse = s.path().join("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(&sparse).unwrap();
        f.write_all_at(b"end", (2 << 20) - 3).unwrap();
    }
    let out = arsync()
        .args(["-aS", "--write-devices"])
        .arg(&sparse)
        .arg(&dev.dev)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", err(&out));
    let got = dev.bytes();
    assert_eq!(
        &got[..2 << 20],
        &fs::read(&sparse).unwrap()[..],
        "-S onto a device"
    );
    assert_eq!(&got[2 << 20..], &fill[2 << 20..]);

    // Both at once: device to device. And the usage errors rsync gives, before anything is
    // written.
    let to = LoopDev::new(&s.path().join("to.img"), &fill);
    let out = arsync()
        .args(["--copy-devices", "--write-devices"])
        .arg(&src_dev.dev)
        .arg(&to.dev)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", err(&out));
    assert!(to.bytes()[..disk.len()] == disk[..], "device to device");
    for extra in ["--delay-updates", "--partial-dir=.p"] {
        let dst = s.path().join("refused");
        let out = copy_contents(&["-a", "--write-devices", extra], &src2, &dst);
        assert_eq!(code(&out), 1, "{extra}: {}", err(&out));
        assert!(!dst.exists(), "{extra}: nothing is written");
    }
}

#[test]
fn itemize_reports_rewritten_entries_and_renamed_files_as_rsync_does() {
    // Before: without -t a rewritten file showed `>f.........` where rsync shows `>f..T......`
    // (its time is the copy's: rsync's `T`), a symlink or device made again `cLc........` for
    // `cLc.T......`; and a file copied to another name was listed under the destination's name,
    // where rsync lists the source's.
    let t = "itemize_reports_rewritten_entries_and_renamed_files_as_rsync_does";
    if !require_rsync(t) {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("f"), b"one");
    write(&src.join("g"), b"two");
    write(&src.join("h"), b"three");
    symlink("t1", src.join("l")).unwrap();
    if is_root() {
        mknod(&src.join("dev"), libc::S_IFCHR | 0o644, libc::makedev(1, 3));
    }
    let mut seen = Vec::new();
    for tool in ["arsync", "rsync"] {
        let dst = s.path().join(tool);
        let out = by_tool(tool, &["-rlpD"], &src, &dst);
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        seen.push(dst);
    }
    write(&src.join("f"), b"ONE");
    chmod(&src.join("h"), 0o600);
    chmod(&src.join("d"), 0o700);
    fs::remove_file(src.join("l")).unwrap();
    symlink("t2", src.join("l")).unwrap();
    if is_root() {
        fs::remove_file(src.join("dev")).unwrap();
        mknod(&src.join("dev"), libc::S_IFCHR | 0o644, libc::makedev(1, 5));
    }
    // (-I: every file is copied again, whatever the times say.)
    let a = by_tool("arsync", &["-rlpD", "-i", "-I"], &src, &seen[0]);
    let r = by_tool("rsync", &["-rlpD", "-i", "-I"], &src, &seen[1]);
    assert_eq!((code(&a), code(&r)), (0, 0), "{}", err(&a));
    assert_eq!(items(&a), items(&r));
    assert!(items(&a).contains(">f..T...... g"), "{:?}", items(&a));
    // One file to another name, twice (the second run rewrites it).
    let mut lines = Vec::new();
    for tool in ["arsync", "rsync"] {
        let to = s.path().join(format!("renamed.{tool}"));
        for _ in 0..2 {
            let out = tool_command(tool)
                .args(["-i", "-I"])
                .arg(src.join("f"))
                .arg(&to)
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
            lines.push(text(&out));
        }
    }
    assert_eq!(lines[..2], lines[2..], "arsync, then rsync");
    assert_eq!(lines[1], ">f..T...... f\n");
}

/// rsync's quick check decides in one order: another size, then `-c`'s checksum, then
/// `--size-only`, then `-I`, then the mtime; and `-I` concerns regular files only (an unchanged
/// symlink and FIFO stay). Before: `-I` won over `--size-only` and over `-c` (files with the
/// same data copied again).
#[test]
fn ignore_times_size_only_and_checksum_decide_in_rsyncs_order() {
    if !require_rsync("ignore_times_size_only_and_checksum_decide_in_rsyncs_order") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // other: same size, other data; same: same data; both with another mtime than the copy.
    write(&src.join("other"), b"aaaa");
    write(&src.join("same"), b"same");
    symlink("target", src.join("link")).unwrap();
    mkfifo(&src.join("fifo"));
    age(&src, 1_500_000_000);
    for flags in [
        &["-a", "-I"][..],
        &["-a", "-I", "--size-only"],
        &["-a", "-c", "-I"],
        &["-a", "-c", "--size-only"],
        &["-a", "-I", "-c", "--size-only"],
    ] {
        let mut outs = Vec::new();
        for tool in ["rsync", "arsync"] {
            let dst = s.path().join(format!("{tool}{}", flags.join("")));
            assert_eq!(code(&rsync(&["-a"], &src, &dst)), 0);
            write(&dst.join("other"), b"bbbb");
            set_times(&dst.join("other"), 1_400_000_000, 0);
            set_times(&dst.join("same"), 1_400_000_000, 0);
            let mut args = flags.to_vec();
            args.push("-i");
            let out = by_tool(tool, &args, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            outs.push((items(&out), fs::read(dst.join("other")).unwrap(), dst));
        }
        let ((want, want_data, want_dst), (got, got_data, got_dst)) = (&outs[0], &outs[1]);
        assert_eq!(got, want, "{flags:?}");
        assert_eq!(got_data, want_data, "{flags:?}");
        assert_eq!(shape(got_dst, true), shape(want_dst, true), "{flags:?}");
    }
}

/// `--existing` passes over a name the destination lacks, `--ignore-existing` one it has, before
/// anything looks at the entry's type: a symlink without `-l` or a FIFO without `--specials`
/// says "skipping non-regular file" only where neither applies, as in rsync (before, always).
#[test]
fn existing_and_ignore_existing_pass_over_non_regular_entries_silently() {
    if !require_rsync("existing_and_ignore_existing_pass_over_non_regular_entries_silently") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("file"), b"data");
    symlink("file", src.join("here-link")).unwrap();
    symlink("file", src.join("new-link")).unwrap();
    mkfifo(&src.join("here-fifo"));
    mkfifo(&src.join("new-fifo"));
    for flags in [
        &["-r", "--existing"][..],
        &["-r", "--ignore-existing"],
        &["-r"],
        &["-r", "--existing", "--ignore-existing"],
    ] {
        let said_arsync = same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{}", flags.join("")));
            fs::create_dir_all(&dst).unwrap();
            write(&dst.join("here-link"), b"a file");
            write(&dst.join("here-fifo"), b"a file");
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            let mut lines: Vec<String> = text(&out).lines().map(str::to_string).collect();
            lines.sort();
            lines
        });
        if flags == ["-r"] {
            assert_eq!(
                said_arsync.len(),
                4,
                "the notices are there without the options"
            );
        }
    }
}

/// A reference directory named relative to a destination this run makes (`--link-dest=../ref`
/// into a new `DEST`) is found and used without a warning, as rsync makes the destination
/// before it looks; one that is missing is still warned of, in rsync's words. Before: every run
/// into a new destination said "--link-dest arg does not exist" (and then used it).
#[test]
fn a_reference_beside_a_new_destination_is_used_without_a_warning() {
    if !require_rsync("a_reference_beside_a_new_destination_is_used_without_a_warning") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("f"), b"data");
    set_times(&src.join("f"), 1_500_000_000, 0);
    assert_eq!(code(&rsync(&["-a"], &src, &s.path().join("ref"))), 0);
    for (flag, warned) in [("--link-dest=../ref", false), ("--link-dest=../gone", true)] {
        let said_arsync = same_as_rsync(&flag, |tool| {
            let dst = s.path().join(format!("into-{tool}-{warned}"));
            let out = by_tool(tool, &["-a", flag], &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flag}: {}", err(&out));
            let links = fs::metadata(dst.join("f")).unwrap().nlink();
            // (Linked to the reference's file where it was found.)
            assert_eq!(links > 1, !warned, "{tool} {flag}: {links} links");
            err(&out).replace(&format!("into-{tool}-"), "into-")
        });
        assert_eq!(
            said_arsync.contains("arg does not exist"),
            warned,
            "{flag}: {}",
            said_arsync
        );
    }
}

/// `-R` (and `--files-from`) take the directories on the way to a named path only when the path
/// exists, as rsync's sender adds a path's implied directories when it finds the path. Before:
/// `-R src/a/b/c` with `src/a/b` a file copied that file and ended with 0 (rsync: `link_stat
/// failed: Not a directory`, 23, nothing copied), and a missing `-R src/a/gone` made `src/a/`.
#[test]
fn relative_paths_that_do_not_exist_make_none_of_their_way() {
    if !require_rsync("relative_paths_that_do_not_exist_make_none_of_their_way") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    fs::create_dir_all(base.join("src/a")).unwrap();
    fs::create_dir_all(base.join("src/x/y")).unwrap();
    write(&base.join("src/a/b"), b"a file on the way");
    write(&base.join("src/x/y/z"), b"z");
    let list = base.join("list");
    write(&list, b"src/a/b/c\nsrc/a/gone\n");
    for (i, args) in [
        &["src/a/b/c"][..],
        &["src/a/gone"],
        &["src/a/b/c", "src/x/y/z"],
        &["--ignore-missing-args", "src/a/gone", "src/x/y/z"],
        &["--ignore-missing-args", "src/a/b/c"],
        &["--files-from=list", "."],
    ]
    .iter()
    .enumerate()
    {
        same_as_rsync(&args, |tool| {
            let dst = base.join(format!("{tool}{i}"));
            let out = tool_command(tool)
                .current_dir(base)
                .arg("-R")
                .args(*args)
                .arg(&dst)
                .output()
                .unwrap();
            let made = if dst.exists() {
                listing(&dst)
            } else {
                BTreeSet::new()
            };
            let complaints = err(&out)
                .lines()
                .filter(|l| l.contains("link_stat"))
                .map(|l| l.rsplit_once("failed: ").map(|(_, e)| e.to_string()))
                .collect::<Vec<_>>();
            (code(&out), made, complaints)
        });
    }
    assert!(!base.join("arsync0/src").exists());
}

/// `--delay-updates` with a file named on the command line: the file takes its name at the end
/// and the partial directory goes, as in rsync. Before: the pseudo directory of a top-level file
/// never applied its delayed files, so `SRC/FILE DEST/` left the copy in `DEST/.~tmp~/FILE`
/// (and `SRC/FILE NEW` in `./.~tmp~/NEW`), with exit 0.
#[test]
fn delayed_updates_of_files_named_on_the_command_line_take_their_names() {
    if !require_rsync("delayed_updates_of_files_named_on_the_command_line_take_their_names") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    fs::create_dir_all(base.join("src/a")).unwrap();
    write(&base.join("src/f1"), b"one");
    write(&base.join("src/a/g"), b"gee");
    for (i, (args, premade)) in [
        (&["src/f1", "src/a", "DEST"][..], false),
        (&["src/f1", "DEST/"], true),
        (&["src/f1", "DEST"], false),
        (&["src/f1", "DEST/"], false),
    ]
    .iter()
    .enumerate()
    {
        let seen_arsync = same_as_rsync(&args, |tool| {
            let at = run_dir(base, &format!("{tool}{i}"), *premade);
            fs::create_dir_all(at.join("src")).unwrap();
            for f in ["src/f1", "src/a"] {
                let out = Command::new("cp")
                    .arg("-a")
                    .arg(base.join(f))
                    .arg(at.join(f))
                    .output();
                assert!(out.unwrap().status.success());
            }
            let out = tool_command(tool)
                .current_dir(&at)
                .args(["-r", "--delay-updates"])
                .args(*args)
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{tool} {args:?}: {}", err(&out));
            let mut files: Vec<String> = treediff::walk(&at)
                .unwrap()
                .into_iter()
                .filter(|p| !p.starts_with("src"))
                .map(|p| {
                    let full = at.join(&p);
                    match fs::read(&full) {
                        Ok(data) => format!("{} {}", p.display(), String::from_utf8_lossy(&data)),
                        Err(_) => p.display().to_string(),
                    }
                })
                .collect();
            files.sort();
            files
        });
        assert!(
            !seen_arsync.iter().any(|p| p.contains("~tmp~")),
            "{:?}",
            seen_arsync
        );
    }
}

/// `--existing` makes no directory the destination lacks, a directory named on the command
/// line included (rsync: "not creating new directory"); before, `--existing SRC/FILE SRC/DIR
/// DEST` made `DEST/DIR`.
#[test]
fn existing_makes_no_directory_named_on_the_command_line() {
    if !require_rsync("existing_makes_no_directory_named_on_the_command_line") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    fs::create_dir_all(base.join("src/a/sub")).unwrap();
    write(&base.join("src/f1"), b"one");
    write(&base.join("src/a/g"), b"gee");
    for (i, (args, premade)) in [
        (&["src/f1", "src/a", "DEST"][..], false),
        (&["src/f1", "src/a", "DEST"], true),
        (&["src", "DEST"], true),
        (&["src/a", "DEST"], true),
        (&["src/", "DEST"], true),
    ]
    .iter()
    .enumerate()
    {
        same_as_rsync(&args, |tool| {
            let at = run_dir(base, &format!("{tool}{i}"), *premade);
            let out = tool_command(tool)
                .args(["-r", "--existing"])
                .args(sources_into(base, &at, args))
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{tool} {args:?}: {}", err(&out));
            listing(&at)
        });
    }
}

/// A relative `-T DIR` is taken from the destination directory, once: before, the command line
/// joined it to the destination and the engine joined it again, so `-T ../stage SRC DEST/`
/// failed as `DEST/DEST/../stage` (exit 11, nothing copied); and into a destination the run
/// makes, `DEST/../stage` is looked through by its text.
#[test]
fn a_relative_temp_dir_is_taken_from_the_destination_once() {
    let s = Scratch::new();
    let base = s.path();
    fs::create_dir_all(base.join("src/a")).unwrap();
    fs::create_dir_all(base.join("stage")).unwrap();
    write(&base.join("src/a/f"), b"data");
    for premade in [true, false] {
        let dst = base.join(format!("dst-{premade}"));
        if premade {
            fs::create_dir(&dst).unwrap();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_arsync"))
            .current_dir(base)
            .args(["-a", "--temp-dir=../stage", "src"])
            .arg(format!("dst-{premade}/"))
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "premade {premade}: {}", err(&out));
        assert_eq!(fs::read(dst.join("src/a/f")).unwrap(), b"data");
        assert_eq!(fs::read_dir(base.join("stage")).unwrap().count(), 0);
    }
    // One that is not there, from the destination, is rsync's usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_arsync"))
        .current_dir(base)
        .args(["-a", "--temp-dir=stage", "src", "dst-true/"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", err(&out));
}

/// `--link-dest`, `--compare-dest` and `--copy-dest` serve files named on the command line, and
/// a file copied to a new name is matched by that name, as in rsync. Before: a top-level file was
/// always copied (its pseudo directory had no references), and the engine matched references
/// by the source's name.
#[test]
fn references_serve_files_named_on_the_command_line() {
    if !require_rsync("references_serve_files_named_on_the_command_line") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    fs::create_dir_all(base.join("src/a")).unwrap();
    write(&base.join("src/f1"), b"one");
    write(&base.join("src/a/g"), b"gee");
    symlink("f1", base.join("src/l1")).unwrap();
    age(&base.join("src"), 1_500_000_000);
    assert_eq!(
        code(&rsync(&["-a"], &base.join("src"), &base.join("ref"))),
        0
    );
    for kind in ["link", "compare", "copy"] {
        for (i, (args, premade)) in [
            (&["src/f1", "src/l1", "src/a", "DEST"][..], false),
            (&["src/f1", "DEST/"], true),
            (&["src/f1", "DEST/new"], true),
            (&["src/l1", "DEST/newl"], true),
        ]
        .iter()
        .enumerate()
        {
            same_as_rsync(&(kind, args), |tool| {
                let at = run_dir(base, &format!("{tool}-{kind}{i}"), *premade);
                let out = tool_command(tool)
                    .args([
                        "-a",
                        "-i",
                        &format!("--{kind}-dest={}", base.join("ref").display()),
                    ])
                    .args(sources_into(base, &at, args))
                    .output()
                    .unwrap();
                assert_eq!(code(&out), 0, "{tool} {kind} {args:?}: {}", err(&out));
                let linked: BTreeSet<String> = treediff::walk(&at)
                    .unwrap()
                    .into_iter()
                    .filter(|p| {
                        fs::symlink_metadata(at.join(p)).is_ok_and(|m| m.is_file() && m.nlink() > 1)
                    })
                    .map(|p| p.display().to_string())
                    .collect();
                (items(&out), listing(&at), linked)
            });
        }
    }
}

/// Filter rules see a source file's own name when it is copied to another name (`SRC/f1
/// DEST/new`: `--exclude='f*'` leaves it out, `--exclude='new*'` does not), as rsync's sender;
/// before, arsync matched the destination's name.
#[test]
fn filters_see_the_source_name_of_a_file_copied_to_another_name() {
    if !require_rsync("filters_see_the_source_name_of_a_file_copied_to_another_name") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    fs::create_dir_all(base.join("src")).unwrap();
    write(&base.join("src/f1"), b"one");
    symlink("f1", base.join("src/l1")).unwrap();
    for rule in [
        "--exclude=f*",
        "--exclude=new*",
        "--exclude=l*",
        "--include=f1",
    ] {
        for (from, to) in [("src/f1", "new"), ("src/l1", "newl")] {
            same_as_rsync(&(rule, from), |tool| {
                let dst = base.join(format!("{tool}{rule}{to}"));
                fs::create_dir(&dst).unwrap();
                let out = tool_command(tool)
                    .args(["-rl", rule])
                    .arg(base.join(from))
                    .arg(dst.join(to))
                    .output()
                    .unwrap();
                assert_eq!(code(&out), 0, "{tool} {rule}: {}", err(&out));
                listing(&dst)
            });
        }
    }
}

/// The directories on the way to a path named with `-R` or in `--files-from` are not subject
/// to the filter rules (rsync's sender adds them unfiltered): `--exclude=a/` with a listed
/// `a/b/c/deep` copies it. Before, arsync dropped every such path without a word; the named
/// path itself is still filtered.
#[test]
fn filters_do_not_drop_the_directories_on_the_way_to_named_paths() {
    if !require_rsync("filters_do_not_drop_the_directories_on_the_way_to_named_paths") {
        return;
    }
    let s = Scratch::new();
    let base = s.path();
    fs::create_dir_all(base.join("src/a/b/c")).unwrap();
    write(&base.join("src/a/b/c/deep"), b"d");
    write(&base.join("src/a/top"), b"t");
    write(&base.join("list"), b"a/b/c/deep\na/top\n");
    for args in [
        &["-R", "--exclude=a/", "src/a/b/c"][..],
        &["-R", "--exclude=b/", "src/a/b/c"],
        &["-R", "--exclude=c/", "src/a/b/c"],
        &["-R", "--exclude=deep", "src/a/b/c"],
        &["--files-from=list", "--exclude=a/", "src/"],
        &["--files-from=list", "--exclude=b/", "src/"],
        &["--files-from=list", "--exclude=top", "src/"],
    ] {
        same_as_rsync(&args, |tool| {
            let dst = base.join(format!("{tool}-dst"));
            let _ = fs::remove_dir_all(&dst);
            let out = tool_command(tool)
                .current_dir(base)
                .arg("-r")
                .args(args)
                .arg(&dst)
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{tool} {args:?}: {}", err(&out));
            if dst.exists() {
                listing(&dst)
            } else {
                BTreeSet::new()
            }
        });
    }
}

/// With `-X`, a file whose data is copied again is itemized with its extended attributes
/// against the file it replaces (`>f.s......x`), as rsync does; before, the `x` was shown only
/// for files whose attributes alone changed.
#[test]
fn a_transferred_file_is_itemized_with_its_extended_attributes() {
    if !require_rsync("a_transferred_file_is_itemized_with_its_extended_attributes") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("same-data"), b"a");
    write(&src.join("new-data"), b"b");
    write(&src.join("no-xattr"), b"c");
    age(&src, 1_500_000_000);
    let mut seen = Vec::new();
    for tool in ["rsync", "arsync"] {
        let dst = s.path().join(tool);
        assert_eq!(code(&rsync(&["-aX"], &src, &dst)), 0);
        seen.push(dst);
    }
    setxattr(&src.join("same-data"), "user.n", b"1");
    setxattr(&src.join("new-data"), "user.n", b"1");
    write(&src.join("new-data"), b"bigger");
    write(&src.join("no-xattr"), b"longer");
    age(&src, 1_500_000_000);
    for flags in [&["-aX", "-i"][..], &["-aX", "-I", "-i"]] {
        let mut items_of = Vec::new();
        for (tool, base) in ["rsync", "arsync"].iter().zip(&seen) {
            let dst = s.path().join(format!("{tool}{}", flags.len()));
            assert_eq!(code(&rsync(&["-aX"], base, &dst)), 0);
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
            items_of.push(items(&out));
        }
        assert_eq!(items_of[1], items_of[0], "{flags:?}");
        assert!(
            items_of[1]
                .iter()
                .any(|l| l.starts_with(">f") && l.contains("x new-data"))
        );
    }
}

/// Without `-l`, `--safe-links` changes nothing: every symlink, unsafe ones included, is a
/// non-regular file skipped with rsync's notice (before, the unsafe ones were passed over without
/// a word).
#[test]
fn safe_links_without_links_skips_every_symlink_with_the_notice() {
    if !require_rsync("safe_links_without_links_skips_every_symlink_with_the_notice") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("ok"), b"ok");
    symlink("ok", src.join("safe")).unwrap();
    symlink("/etc/hostname", src.join("absolute")).unwrap();
    symlink("../../outside", src.join("above")).unwrap();
    for flags in [&["-r", "--safe-links"][..], &["-rl", "--safe-links", "-v"]] {
        same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{}", flags.len()));
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
            let mut lines: Vec<String> = text(&out)
                .lines()
                .filter(|l| l.starts_with("ignoring") || l.starts_with("skipping"))
                .map(str::to_string)
                .collect();
            lines.sort();
            (lines, listing(&dst))
        });
    }
}

/// A file whose name a directory holds that may not go (`--max-delete` spent) is not left
/// behind as a partial or waiting copy, as rsync leaves none; before, `--partial-dir` and
/// `--delay-updates` left the complete copy in `DIR/.pd/NAME` or `DIR/.~tmp~/NAME`.
#[test]
fn a_copy_that_cannot_take_its_name_leaves_no_partial_file() {
    if !require_rsync("a_copy_that_cannot_take_its_name_leaves_no_partial_file") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    write(&src.join("a/b"), b"now a file");
    for flags in [
        &["-a", "--partial-dir=.pd", "--max-delete=0", "--delete"][..],
        &["-a", "--delay-updates", "--max-delete=0", "--delete"],
        &["-a", "--partial", "--max-delete=0", "--delete"],
    ] {
        same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{}", flags[1]));
            fs::create_dir_all(dst.join("a/b/c")).unwrap();
            write(&dst.join("a/b/c/deep"), b"in the way");
            let out = by_tool(tool, flags, &src, &dst);
            (code(&out), listing(&dst))
        });
    }
}

/// Free bytes of the file system holding `p`, as an unprivileged user sees them.
fn free_bytes(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is plain data; zeroed is valid for the kernel to fill.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live buffer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut v) }, 0);
    v.f_bavail * v.f_frsize
}

#[test]
fn temp_dir_stages_files_there_and_saves_room_as_rsync_does() {
    // Before: -T/--temp-dir was an unknown option (exit 1, nothing copied).
    let t = "temp_dir_stages_files_there_and_saves_room_as_rsync_does";
    if !is_root() {
        skip(
            t,
            "needs root for an immutable directory and a loop-mounted ext4",
        );
        return;
    }
    if !require_rsync(t) {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"new f");
    write(&src.join("sub/g"), &content(7, 200_000));
    let old = |dst: &Path| {
        fs::create_dir_all(dst.join("sub")).unwrap();
        write(&dst.join("f"), b"old");
        fs::hard_link(dst.join("f"), dst.join("f.link")).unwrap();
        fs::create_dir(dst.join(".tmp")).unwrap();
    };
    // A relative DIR is the destination's; files are made there: where nothing can be made
    // (an immutable directory), no file is copied, unnamed or under a temporary name.
    for flags in [
        &["-a", "-T", ".tmp"][..],
        &["-a", "-T", ".tmp", "--temp-names"],
    ] {
        let dst = s.path().join(format!("d{}", flags.len()));
        old(&dst);
        let tmp = dst.join(".tmp");
        if !Command::new("chattr")
            .arg("+i")
            .arg(&tmp)
            .status()
            .unwrap()
            .success()
        {
            skip(t, "chattr +i is refused on this file system");
            return;
        }
        let out = copy_contents(flags, &src, &dst);
        let e = err(&out);
        let _ = Command::new("chattr").arg("-i").arg(&tmp).status();
        assert_eq!(code(&out), 23, "{flags:?}: {e}");
        assert!(e.contains("create (temp-dir)"), "{flags:?}: {e}");
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"old", "{flags:?}");
        assert!(!dst.join("sub/g").exists(), "{flags:?}");
        // Now it can: the files are linked or renamed into place from it (a new inode for the
        // replaced file, as a staged copy gives; its other name keeps the old content).
        let out = copy_contents(flags, &src, &dst);
        assert_eq!(code(&out), 0, "{flags:?}: {}", err(&out));
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"new f");
        assert_eq!(fs::read(dst.join("f.link")).unwrap(), b"old");
        assert_eq!(fs::read(dst.join("sub/g")).unwrap(), content(7, 200_000));
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "{flags:?}: left in .tmp"
        );
    }
    // A DIR that does not exist: rsync's usage error, nothing written.
    let dst = s.path().join("none");
    let out = copy_contents(&["-a", "-T", "nowhere"], &src, &dst);
    assert_eq!(code(&out), 1, "{}", err(&out));
    assert!(
        err(&out).contains("The temp-dir does not exist: nowhere"),
        "{}",
        err(&out)
    );
    assert!(!dst.exists());

    // DIR on another file system, rsync's use of it: the destination has no room for a second
    // copy of a file. Without -T the copy fails and the old file stays whole; with -T the old
    // file goes first and the new one fits.
    let _lock = mount_lock();
    let m = Mount::new(
        &s.path().join("img"),
        16,
        &["mkfs.ext4", "-q", "-F", "-m", "0"],
        &s.path().join("mnt"),
    );
    let size = (free_bytes(&m.dir) * 3 / 5) as usize;
    let big = s.path().join("big");
    fs::create_dir(&big).unwrap();
    write(&big.join("data"), &content(8, size));
    set_times(&big.join("data"), 1_500_000_000, 0);
    let elsewhere = s.path().join("scratch");
    fs::create_dir(&elsewhere).unwrap();
    for tool in ["arsync", "rsync"] {
        let dst = m.dir.join(tool);
        fs::create_dir(&dst).unwrap();
        let stale = content(9, size);
        write(&dst.join("data"), &stale);
        let out = by_tool(tool, &["-a"], &big, &dst);
        assert_ne!(code(&out), 0, "{tool}: two copies cannot fit");
        assert!(
            fs::read(dst.join("data")).unwrap() == stale,
            "{tool}: the old file is whole"
        );
        let dir = elsewhere.display().to_string();
        let out = by_tool(tool, &["-a", "-T", &dir], &big, &dst);
        assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
        assert!(fs::read(dst.join("data")).unwrap() == fs::read(big.join("data")).unwrap());
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "{tool}: left in DIR"
        );
        fs::remove_dir_all(&dst).unwrap();
    }
}

#[test]
fn inplace_no_whole_file_writes_only_the_changed_chunks() {
    // Before: --no-whole-file was an unknown option (exit 1), and --inplace rewrote a file of the
    // destination's size whole for one changed byte. Now, as rsync's delta transfer into the file
    // itself, only the chunks that differ are written (a VM image with a few changed blocks).
    if !require_rsync("inplace_no_whole_file_writes_only_the_changed_chunks") {
        return;
    }
    let s = Scratch::new();
    let old = content(21, 8 << 20);
    let mut new = old.clone();
    for at in [100, (3 << 20) + 5, (8 << 20) - 1] {
        new[at] ^= 0x5a;
    }
    // (new, grown by 100 bytes, cut to 5 MB, new again): bytes written for each.
    let steps: [(Vec<u8>, u64); 4] = [
        (new.clone(), 3 * 65536),
        ([&new[..], &content(22, 100)].concat(), 100),
        (new[..5_000_000].to_vec(), 0),
        // (From the chunk the old end cut short.)
        (new.clone(), (8 << 20) - 5_000_000 / 65536 * 65536),
    ];
    let mut inodes = Vec::new();
    for tool in ["arsync", "rsync"] {
        let (src, dst) = (
            s.path().join(format!("s.{tool}")),
            s.path().join(format!("d.{tool}")),
        );
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        write(&dst.join("img"), &old);
        set_times(&dst.join("img"), 1_500_000_000, 0);
        let ino = fs::metadata(dst.join("img")).unwrap().ino();
        for (i, (data, want)) in steps.iter().enumerate() {
            write(&src.join("img"), data);
            set_times(&src.join("img"), 1_600_000_000 + i as i64, 0);
            let json = s.path().join(format!("{tool}{i}.json"));
            let j = json.display().to_string();
            let out = if tool == "rsync" {
                rsync(&["-a", "--inplace", "--no-W"], &src, &dst)
            } else {
                let flags = [
                    "-a",
                    "--inplace",
                    "--no-W",
                    "--buffer-size=64K",
                    "--stats-json",
                    &j,
                ];
                copy_contents(&flags, &src, &dst)
            };
            assert_eq!(code(&out), 0, "{tool} step {i}: {}", err(&out));
            assert!(
                fs::read(dst.join("img")).unwrap() == *data,
                "{tool} step {i}"
            );
            if tool == "arsync" {
                let v: serde_json::Value =
                    serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
                assert_eq!(v["bytes"].as_u64(), Some(*want), "step {i}: bytes written");
            }
        }
        inodes.push(fs::metadata(dst.join("img")).unwrap().ino() == ino);
    }
    assert_eq!(inodes, [true, true], "written in place, as rsync");
    // -W after it (the later counts), or no --inplace: written whole.
    for flags in [
        &["-a", "--inplace", "--no-W", "-W"][..],
        &["-a", "--no-whole-file"],
    ] {
        let (src, dst) = (s.path().join("s.arsync"), s.path().join("d.arsync"));
        write(&dst.join("img"), &old);
        set_times(&dst.join("img"), 1_500_000_000, 0);
        let json = s.path().join("whole.json");
        let j = json.display().to_string();
        let mut args = flags.to_vec();
        args.extend(["--stats-json", &j]);
        let out = copy_contents(&args, &src, &dst);
        assert_eq!(code(&out), 0, "{flags:?}: {}", err(&out));
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["bytes"].as_u64(), Some(8 << 20), "{flags:?}");
        assert!(fs::read(dst.join("img")).unwrap() == new);
    }
}

#[test]
fn munge_links_reads_munged_targets_as_rsync_does() {
    // Before: --munge-links was an unknown option (exit 1, nothing copied). A tree backed up by
    // an rsync daemon with `munge symlinks` holds links whose targets start with
    // /rsyncd-munged/; a local copy with --munge-links restores, compares, checks and lists
    // them without it (a target no longer than the prefix is left alone), as rsync 3.5 does.
    let t = "munge_links_reads_munged_targets_as_rsync_does";
    if !require_rsync(t) {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"data");
    for (name, target) in [
        ("absm", "/rsyncd-munged//etc/passwd"),
        ("relm", "/rsyncd-munged/rel"),
        ("only", "/rsyncd-munged/"),
        ("short", "/rsyncd-munged"),
        ("plain", "plain"),
    ] {
        symlink(target, src.join(name)).unwrap();
    }
    let targets = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                fs::read_link(e.path())
                    .ok()
                    .map(|l| format!("{} -> {}", e.file_name().to_string_lossy(), l.display()))
            })
            .collect()
    };
    let flag_sets: [&[&str]; 4] = [
        &["-ai", "--munge-links"],
        &["-ai", "--munge-links", "--safe-links"],
        &["-ai", "--munge-links", "--no-munge-links"],
        &["-ai"],
    ];
    let mut first = Vec::new();
    for (i, flags) in flag_sets.iter().enumerate() {
        let mut seen = Vec::new();
        for tool in ["arsync", "rsync"] {
            let dst = s.path().join(format!("{tool}.{i}"));
            let out = by_tool(tool, flags, &src, &dst);
            assert_eq!(code(&out), 0, "{tool} {flags:?}: {}", err(&out));
            seen.push((items(&out), targets(&dst)));
        }
        assert_eq!(seen[0], seen[1], "{flags:?}");
        first.push(seen.swap_remove(0).1);
    }
    assert!(first[0].contains("absm -> /etc/passwd"), "{:?}", first[0]);
    assert!(first[0].contains("relm -> rel"), "{:?}", first[0]);
    assert!(
        first[0].contains("only -> /rsyncd-munged/"),
        "{:?}",
        first[0]
    );
    assert!(
        !first[1].iter().any(|l| l.starts_with("absm")),
        "unsafe: {:?}",
        first[1]
    );
    assert!(
        first[2].contains("relm -> /rsyncd-munged/rel"),
        "{:?}",
        first[2]
    );
    // A copy made without it, run again with it: the munged links are made again, unmunged;
    // and the other way round.
    for (i, flags) in [(3, &["-ai", "--munge-links"][..]), (0, &["-ai"][..])] {
        let mut seen = Vec::new();
        for tool in ["arsync", "rsync"] {
            let out = by_tool(tool, flags, &src, &s.path().join(format!("{tool}.{i}")));
            assert_eq!(code(&out), 0, "{tool}: {}", err(&out));
            seen.push((items(&out), targets(&s.path().join(format!("{tool}.{i}")))));
        }
        assert_eq!(seen[0], seen[1], "{flags:?} over set {i}");
        assert!(
            seen[0]
                .0
                .iter()
                .any(|l| l.starts_with("cL") && l.contains("relm -> ")),
            "{:?}",
            seen[0].0
        );
    }
    // The listing shows the unmunged targets.
    let lists: Vec<String> = [env!("CARGO_BIN_EXE_arsync"), "rsync"]
        .iter()
        .map(|exe| {
            text(
                &Command::new(exe)
                    .args(["--list-only", "-l", "--munge-links"])
                    .arg(format!("{}/", src.display()))
                    .output()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(lists[0], lists[1]);
    assert!(lists[0].contains(" absm -> /etc/passwd\n"), "{}", lists[0]);
}

/// Everything a re-sync may change in a tree, per entry: type, permission bits, size, content
/// (hashed), mtime to the nanosecond (`NEW` for a time the run gave), link count, symlink
/// target.
fn resync_state(root: &Path) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    if !root.exists() {
        return out;
    }
    for p in treediff::walk(root).unwrap() {
        let full = root.join(&p);
        let m = fs::symlink_metadata(&full).unwrap();
        let t = m.mtime();
        let time = if t >= 1_700_000_000 {
            "NEW".to_string()
        } else {
            format!("{t}.{:09}", m.mtime_nsec())
        };
        let what = if m.file_type().is_symlink() {
            format!("-> {}", fs::read_link(&full).unwrap().display())
        } else if m.is_file() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            fs::read(&full).unwrap().hash(&mut h);
            format!("{:x} n{}", h.finish(), m.nlink())
        } else {
            String::new()
        };
        let mode = if m.file_type().is_symlink() {
            0
        } else {
            m.mode()
        };
        out.push(format!(
            "{} {:o} {} {} {what}",
            p.display(),
            mode,
            if m.is_dir() { 0 } else { m.size() },
            if m.is_dir() { "-".to_string() } else { time }
        ));
    }
    out
}

/// `TOOL FLAGS SRC/ DEST` for rsync, then arsync, each into `base/TOOL-case` made by
/// `prepare` first; their exit codes, item lines (directories' own lines left out: rsync
/// compares their times to the second, arsync to the nanosecond), `--stats` lines named in
/// `stats`, and [`resync_state`] of the destination and of `also` (paths below `base/TOOL-case`
/// besides `DEST`) must agree.
fn resync_as_rsync(
    base: &Path,
    case: &str,
    (flags, src): (&[&str], &Path),
    prepare: impl Fn(&Path),
    also: &[&str],
) {
    let stats_of = |o: &Output| -> Vec<String> {
        text(o)
            .lines()
            .filter(|l| {
                l.starts_with("Number of files:")
                    || l.starts_with("Total file size")
                    || l.starts_with("Total transferred file size")
                    || l.starts_with("Number of regular files transferred")
                    || l.starts_with("Number of deleted files")
            })
            .map(str::to_string)
            .collect()
    };
    same_as_rsync(&(case, flags), |tool| {
        let at = base.join(format!("{tool}-{case}"));
        fs::create_dir_all(&at).unwrap();
        prepare(&at);
        let flags: Vec<String> = flags
            .iter()
            .map(|f| f.replace("{at}", at.to_str().unwrap()))
            .collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = by_tool(tool, &flags, src, &at.join("DEST"));
        // (Item lines only: each tool's closing lines are its own.)
        let lines: BTreeSet<String> = items(&out)
            .into_iter()
            .filter(|l| {
                let b = l.as_bytes();
                l.starts_with("*deleting")
                    || (b.len() > 12
                        && b"<>ch.".contains(&b[0])
                        && b"fLDS".contains(&b[1])
                        && b[11] == b' ')
            })
            .collect();
        let mut states = vec![resync_state(&at.join("DEST"))];
        states.extend(also.iter().map(|p| resync_state(&at.join(p))));
        (code(&out), lines, stats_of(&out), states)
    });
}

/// `at/DEST` holding one file per `(name, seconds, nanoseconds)`, each of `data`, its mtime that
/// many seconds and nanoseconds after 1,600,000,000.
fn dest_files_at(at: &Path, data: &[u8], times: &[(&str, i64, i64)]) {
    let d = at.join("DEST");
    fs::create_dir_all(&d).unwrap();
    for &(n, sec, nsec) in times {
        write(&d.join(n), data);
        set_times(&d.join(n), 1_600_000_000 + sec, nsec);
    }
}

/// `-u` under `--modify-window=N` as rsync 3.5's generator judges it: a destination file is
/// left unless the source is newer by N seconds or more (whole seconds), so one within the
/// window, or newer by any amount, stays. Before, arsync left only a destination newer by more
/// than the window: with `-u --modify-window=2` a destination two seconds newer than the source
/// was overwritten, what `-u` exists to prevent. rsync is the oracle, over offsets from three
/// seconds older to three newer and windows 0, 1 and 2.
#[test]
fn update_under_a_modify_window_leaves_what_rsync_leaves() {
    if !require_rsync("update_under_a_modify_window_leaves_what_rsync_leaves") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    let offsets: [(&str, i64, i64); 9] = [
        ("m3", -3, 0),
        ("m1", -1, 0),
        ("m05", -1, 500_000_000),
        ("z", 0, 0),
        ("p05", 0, 500_000_000),
        ("p1", 1, 0),
        ("p15", 1, 500_000_000),
        ("p2", 2, 0),
        ("p3", 3, 0),
    ];
    for (n, _, _) in offsets {
        write(&src.join(n), b"the source's data");
        set_times(&src.join(n), 1_600_000_000, 0);
    }
    for w in ["0", "1", "2"] {
        let window = format!("--modify-window={w}");
        let flags = ["-a", "-u", window.as_str(), "-i"];
        resync_as_rsync(
            s.path(),
            &format!("w{w}"),
            (&flags, &src),
            |at| dest_files_at(at, b"destination", &offsets),
            &[],
        );
    }
}

/// `--link-dest`/`--compare-dest` with a destination file that differs from the source and a
/// reference that matches it: what `--ignore-existing`, `-u` (the destination newer),
/// `--max-size` and `--min-size` leave is left, as rsync's generator decides those before it
/// looks at the references. Before, the destination file was replaced by a link to the
/// reference (`--link-dest`) or deleted (`--compare-dest`) whatever those options said. rsync
/// is the oracle.
#[test]
fn references_leave_what_update_ignore_existing_and_size_limits_leave() {
    if !require_rsync("references_leave_what_update_ignore_existing_and_size_limits_leave") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"data of f");
    write(&src.join("g"), &content(3, 3000));
    for n in ["f", "g"] {
        set_times(&src.join(n), 1_600_000_000, 0);
    }
    for (i, limit) in [
        "--ignore-existing",
        "-u",
        "--max-size=2",
        "--min-size=5k",
        "-c",
    ]
    .into_iter()
    .enumerate()
    {
        for refs in ["--link-dest={at}/ref", "--compare-dest={at}/ref"] {
            let flags = ["-a", limit, refs, "-i"];
            resync_as_rsync(
                s.path(),
                &format!("{i}{}", &refs[2..6]),
                (&flags, &src),
                |at| {
                    let (d, r) = (at.join("DEST"), at.join("ref"));
                    fs::create_dir_all(&d).unwrap();
                    fs::create_dir_all(&r).unwrap();
                    for n in ["f", "g"] {
                        fs::copy(src.join(n), r.join(n)).unwrap();
                        set_times(&r.join(n), 1_600_000_000, 0);
                        write(&d.join(n), b"other data");
                        set_times(&d.join(n), 1_650_000_000, 0);
                    }
                },
                &["ref"],
            );
        }
    }
}

/// `-c` finding a file's data the same gives it the source's mtime exactly, as rsync sets the
/// times of a file its checksum found up to date (`ATTRS_ACCURATE_TIME`), even where the
/// mtimes count as equal under `--modify-window` (half a second apart with a window of 0, a
/// second with 2); nothing is itemized for it. Before, such a file kept its time. rsync is the
/// oracle.
#[test]
fn checksum_gives_an_up_to_date_file_the_exact_time() {
    if !require_rsync("checksum_gives_an_up_to_date_file_the_exact_time") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    for n in ["half", "one", "three"] {
        write(&src.join(n), b"same data");
        set_times(&src.join(n), 1_600_000_000, 0);
    }
    for w in ["0", "2"] {
        let window = format!("--modify-window={w}");
        for flags in [
            &["-a", "-c", window.as_str(), "-i"][..],
            &["-a", window.as_str(), "-i"],
        ] {
            resync_as_rsync(
                s.path(),
                &format!("w{w}{}", flags.len()),
                (flags, &src),
                |at| {
                    let times = [("half", 0, 500_000_000), ("one", 1, 0), ("three", 3, 0)];
                    dest_files_at(at, b"same data", &times)
                },
                &[],
            );
        }
    }
}

/// A file found up to date leaves no partial copy of itself behind: `DIR/.pd/NAME`
/// (`--partial-dir`) or `DIR/.~tmp~/NAME` (`--delay-updates`) is removed, and the partial
/// directory with it once empty, as rsync's generator removes it when the quick check passes.
/// Before, a stale partial file stayed for ever (and a later run could resume a changed file
/// from it). rsync is the oracle.
#[test]
fn an_up_to_date_file_leaves_no_stale_partial_file() {
    if !require_rsync("an_up_to_date_file_leaves_no_stale_partial_file") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for n in ["a", "b", "sub/c", "sub/d"] {
        write(&src.join(n), &content(n.len() as u64, 4000));
        set_times(&src.join(n), 1_600_000_000, 0);
    }
    for (flags, pd) in [
        (&["-a", "--partial-dir=.pd", "-i"][..], ".pd"),
        (&["-a", "--delay-updates", "-i"], ".~tmp~"),
        (&["-a", "--partial-dir=.pd", "-c", "-i"], ".pd"),
    ] {
        resync_as_rsync(
            s.path(),
            &format!("{}{}", pd.len(), flags.len()),
            (flags, &src),
            |at| {
                let d = at.join("DEST");
                let cp = Command::new("cp")
                    .arg("-a")
                    .arg(&src)
                    .arg(&d)
                    .status()
                    .unwrap();
                assert!(cp.success());
                // `b` needs a transfer (other data); the others are up to date. Each has a
                // partial file, and `sub/.pd` holds only stale ones.
                write(&d.join("b"), &content(99, 4000));
                set_times(&d.join("b"), 1_500_000_000, 0);
                for n in ["a", "b", "sub/c", "sub/d"] {
                    let p = Path::new(n);
                    let pdir = d.join(p.parent().unwrap()).join(pd);
                    fs::create_dir_all(&pdir).unwrap();
                    write(
                        &pdir.join(p.file_name().unwrap()),
                        &content(n.len() as u64, 2000),
                    );
                }
            },
            &[],
        );
    }
}

/// `--stats` counts as rsync counts: "Total file size" holds the symlinks' target lengths too
/// (with `-l` or without, where they are skipped), "Total transferred file size" each
/// transferred file whole (however little `--append` or a resumed partial file wrote), a file
/// copied from a `--copy-dest` reference (`cf`) is not transferred, and the base directory of
/// `--files-from` paths is not one of the files. Before, arsync counted regular files alone,
/// the bytes written, the reference's copies, and that directory. rsync is the oracle.
#[test]
fn stats_count_sizes_and_transfers_as_rsync() {
    if !require_rsync("stats_count_sizes_and_transfers_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("log"), &content(1, 5000));
    write(&src.join("same"), &content(2, 3000));
    write(&src.join("new"), &content(3, 700));
    symlink("a-target-of-23-bytes...", src.join("l")).unwrap();
    symlink("log", src.join("l2")).unwrap();
    for n in ["log", "same", "new"] {
        set_times(&src.join(n), 1_600_000_000, 0);
    }
    for (i, flags) in [
        &["-a", "--stats", "-i"][..],
        &["-r", "--stats", "-i"],
        &["-a", "--append", "--stats", "-i"],
        &["-a", "--partial-dir=.pd", "--stats", "-i"],
        &["-a", "-c", "--copy-dest={at}/ref", "--stats", "-i"],
        &["-a", "--files-from={at}/list", "--stats", "-i"],
    ]
    .into_iter()
    .enumerate()
    {
        resync_as_rsync(
            s.path(),
            &format!("{i}"),
            (flags, &src),
            |at| {
                write(&at.join("list"), b"log\nl\nnew\n");
                let (d, r) = (at.join("DEST"), at.join("ref"));
                fs::create_dir_all(&d).unwrap();
                fs::create_dir_all(&r).unwrap();
                // A prefix of `log` (what --append and a partial file resume from).
                let pd = d.join(".pd");
                fs::create_dir_all(&pd).unwrap();
                for p in [d.join("log"), pd.join("log")] {
                    write(&p, &content(1, 5000)[..2000]);
                }
                // The same data under another mtime in the reference (-c: a local copy).
                write(&r.join("new"), &content(3, 700));
                set_times(&r.join("new"), 1_500_000_000, 0);
                write(&d.join("same"), &content(2, 3000));
                set_times(&d.join("same"), 1_600_000_000, 0);
            },
            &[],
        );
    }
}

/// `--remove-source-files --compare-dest`: a file the reference holds as it is (so the
/// destination does without it) is in sync, and its source is removed, as rsync's generator
/// reports it a success. Before, arsync refused it ("the file changed since it was copied",
/// exit 23) and kept it. rsync is the oracle.
#[test]
fn remove_source_files_takes_what_a_compare_dest_holds() {
    if !require_rsync("remove_source_files_takes_what_a_compare_dest_holds") {
        return;
    }
    let s = Scratch::new();
    let flags = [
        "-a",
        "--remove-source-files",
        "--compare-dest={at}/ref",
        "-i",
    ];
    let mut got = Vec::new();
    for tool in ["rsync", "arsync"] {
        let at = s.path().join(tool);
        let src = at.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(at.join("ref")).unwrap();
        for (n, in_ref) in [("kept-in-ref", true), ("copied", false)] {
            write(&src.join(n), n.as_bytes());
            set_times(&src.join(n), 1_600_000_000, 0);
            if in_ref {
                write(&at.join("ref").join(n), n.as_bytes());
                set_times(&at.join("ref").join(n), 1_600_000_000, 0);
            }
        }
        let flags: Vec<String> = flags
            .iter()
            .map(|f| f.replace("{at}", at.to_str().unwrap()))
            .collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = by_tool(tool, &flags, &src, &at.join("DEST"));
        got.push((
            code(&out),
            resync_state(&src),
            resync_state(&at.join("DEST")),
        ));
    }
    assert_eq!(got[1], got[0], "arsync (left) against rsync");
    assert!(got[1].1.len() == 1, "the source keeps only its directory");
}

/// `--max-delete` spares, within a directory, what rsync spares: rsync deletes a directory's
/// extraneous entries from the end of its sorted list (its subdirectories, then its other
/// entries, each by name from the last), and a directory in the way of a file is emptied in
/// the same order. Before, arsync went by the order the directory listed them. rsync is the
/// oracle.
#[test]
fn max_delete_spares_what_rsync_spares_in_a_directory() {
    if !require_rsync("max_delete_spares_what_rsync_spares_in_a_directory") {
        return;
    }
    let s = Scratch::new();
    // Extraneous entries of one directory; then a directory in the way of a file.
    let cases: [(&str, &[&str]); 2] = [
        ("keep", &["zeta", "alpha", "mid", "d2/x", "d1/y", "d1/z"]),
        (
            "was-a-dir",
            &["was-a-dir/w", "was-a-dir/a", "was-a-dir/sub/u"],
        ),
    ];
    for (c, (file, extra)) in cases.into_iter().enumerate() {
        let src = s.path().join(format!("src{c}"));
        fs::create_dir(&src).unwrap();
        write(&src.join(file), b"a file");
        for max in ["1", "2", "3", "5"] {
            let limit = format!("--max-delete={max}");
            for mode in ["--delete", "--delete-after"] {
                let flags = ["-a", mode, limit.as_str(), "-i"];
                resync_as_rsync(
                    s.path(),
                    &format!("{c}{max}{mode}"),
                    (&flags, &src),
                    |at| {
                        let d = at.join("DEST");
                        for n in extra {
                            let p = d.join(n);
                            fs::create_dir_all(p.parent().unwrap()).unwrap();
                            write(&p, n.as_bytes());
                        }
                    },
                    &[],
                );
            }
        }
    }
}

/// A symlink in the place of a file that a reference holds exactly: rsync's generator removes
/// it first, then links the reference's file (`--link-dest`) or leaves the name free
/// (`--compare-dest`), backing the symlink up with `-b`. A symlink source meeting a file in its
/// place is made anew, the references not looked at. Before, arsync's link failed on the taken
/// name and the file was copied from the reference instead, or with `--compare-dest` the old
/// symlink stayed. rsync is the oracle.
#[test]
fn entries_in_a_files_place_make_way_for_a_reference() {
    if !require_rsync("entries_in_a_files_place_make_way_for_a_reference") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"data");
    symlink("target", src.join("l")).unwrap();
    set_times(&src.join("f"), 1_600_000_000, 0);
    set_times(&src.join("l"), 1_600_000_000, 0);
    for (i, flags) in [
        &["-a", "--link-dest={at}/ref", "-i"][..],
        &["-a", "--compare-dest={at}/ref", "-i"],
        &["-a", "--compare-dest={at}/ref", "-b", "-i"],
        &["-a", "--link-dest={at}/ref", "-b", "-i"],
    ]
    .into_iter()
    .enumerate()
    {
        resync_as_rsync(
            s.path(),
            &format!("ref{i}"),
            (flags, &src),
            |at| {
                let (d, r) = (at.join("DEST"), at.join("ref"));
                fs::create_dir_all(&d).unwrap();
                fs::create_dir_all(&r).unwrap();
                write(&r.join("f"), b"data");
                set_times(&r.join("f"), 1_600_000_000, 0);
                symlink("target", r.join("l")).unwrap();
                set_times(&r.join("l"), 1_600_000_000, 0);
                symlink("elsewhere", d.join("f")).unwrap();
                write(&d.join("l"), b"a file where the symlink goes");
            },
            &["ref"],
        );
    }
}

/// `-c` with `--copy-dest`: a file whose reference holds the same data under another mtime is
/// copied from the reference (rsync's `cf`) on every data path, with or without `-t`. Before, a file large enough for
/// the kernel's copy (`copy_file_range`) was checked for changes against the source's mtime
/// while the data came from the reference, failed as "changed while being copied" (exit 23)
/// and was not copied. rsync is the oracle.
#[test]
fn checksum_copies_from_a_reference_on_every_path() {
    if !require_rsync("checksum_copies_from_a_reference_on_every_path") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("big"), &content(7, 3 << 20));
    write(&src.join("small"), &content(8, 3000));
    for n in ["big", "small"] {
        set_times(&src.join(n), 1_600_000_000, 0);
    }
    // (Without -t a copy from the reference keeps the time it was made: `cf..T......`, as
    // rsync; until session 33 the `T` was missing.)
    for (i, (refs, times)) in ["--copy-dest={at}/ref", "--link-dest={at}/ref"]
        .into_iter()
        .flat_map(|r| [(r, "-t"), (r, "--no-t")])
        .enumerate()
    {
        let flags = ["-a", times, "-c", refs, "-i"];
        resync_as_rsync(
            s.path(),
            &format!("c{i}"),
            (&flags, &src),
            |at| {
                let r = at.join("ref");
                fs::create_dir_all(&r).unwrap();
                for n in ["big", "small"] {
                    fs::copy(src.join(n), r.join(n)).unwrap();
                    set_times(&r.join(n), 1_500_000_000, 0);
                }
            },
            &["ref"],
        );
    }
}

/// `--stats` breaks the numbers of files, created files and deleted files down by kind as
/// rsync does (`reg`, `dir`, `link`, `dev`, `special`, the kinds there are). Before, arsync
/// counted devices with FIFOs and sockets as `special` and gave no breakdown of the created and
/// deleted files. rsync is the oracle.
#[test]
fn stats_break_counts_down_by_kind_as_rsync() {
    if !root_and_rsync(
        "stats_break_counts_down_by_kind_as_rsync",
        "making devices needs root",
    ) {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src.join("f"), b"f");
    symlink("f", src.join("l")).unwrap();
    mknod(&src.join("c"), libc::S_IFCHR | 0o600, libc::makedev(1, 3));
    mkfifo(&src.join("p"));
    same_as_rsync(&"--stats by kind", |tool| {
        let dst = s.path().join(tool);
        for n in ["old", "gone/x"] {
            fs::create_dir_all(dst.join(n).parent().unwrap()).unwrap();
            write(&dst.join(n), b"extraneous");
        }
        symlink("x", dst.join("oldlink")).unwrap();
        mknod(
            &dst.join("olddev"),
            libc::S_IFBLK | 0o600,
            libc::makedev(7, 0),
        );
        mkfifo(&dst.join("oldfifo"));
        let out = by_tool(tool, &["-a", "--delete", "--stats"], &src, &dst);
        let lines: Vec<String> = text(&out)
            .lines()
            .filter(|l| {
                l.starts_with("Number of files:")
                    || l.starts_with("Number of created files:")
                    || l.starts_with("Number of deleted files:")
            })
            .map(str::to_string)
            .collect();
        (code(&out), lines)
    });
}

/// `-S` makes holes of zeros the source holds as data, as rsync's receiver does (it skips
/// writing runs of zeros and sets the size at the end): a dense file of zeros, zero tails, heads
/// and middles, a partial last block, with and without `--inplace` over older data. Compared
/// with rsync by content, size and allocated blocks on the same file system. Before, arsync
/// kept only the source's own holes, and a dense zero-filled file (a preallocated image) came
/// out fully allocated where rsync's copy takes no blocks.
#[test]
fn sparse_makes_holes_of_zeros_as_rsync() {
    if !require_rsync("sparse_makes_holes_of_zeros_as_rsync") {
        return;
    }
    let s = Scratch::new();
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = |n: usize| content(n as u64, n);
    let files: [(&str, Vec<u8>); 7] = [
        ("zero1000", vec![0; 1000]),
        ("zero9000", vec![0; 9000]),
        ("tail", [data(100), vec![0; 20000]].concat()),
        ("mid", [data(5000), vec![0; 9000], data(5000)].concat()),
        ("head", [vec![0; 8192], data(10)].concat()),
        ("one", [vec![0; 4095], vec![1]].concat()),
        (
            "big",
            [data(3 << 20), vec![0; 2 << 20], data(1 << 20)].concat(),
        ),
    ];
    for (n, bytes) in &files {
        write(&src.join(n), bytes);
    }
    for (i, flags) in [&["-aS"][..], &["-aS", "--inplace"], &["-a"]]
        .into_iter()
        .enumerate()
    {
        same_as_rsync(&flags, |tool| {
            let dst = s.path().join(format!("{tool}{i}"));
            fs::create_dir(&dst).unwrap();
            for (n, _) in &files {
                // Older data in place: --inplace writes over it.
                write(&dst.join(n), &content(9, 30000));
            }
            let out = by_tool(tool, flags, &src, &dst);
            let got: Vec<(String, u64, u64, bool)> = files
                .iter()
                .map(|(n, bytes)| {
                    let m = fs::metadata(dst.join(n)).unwrap();
                    let same = fs::read(dst.join(n)).unwrap() == *bytes;
                    (n.to_string(), m.size(), m.blocks(), same)
                })
                .collect();
            (code(&out), got)
        });
    }
}
