//! rsync as the oracle: for each single flag and each path form, arsync and rsync produce the same
//! tree (every attribute the flags preserve) and the same exit code, and print the same "skipping"
//! notices.

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use common::*;

/// What a form yields: the SRC... DEST arguments, the directory to compare, and whether the
/// compared root's own attributes come from the source.
type FormArgs = (Vec<OsString>, std::path::PathBuf, bool);

/// A path form: how to build the arguments from (scratch, src dir) and where the result lands.
struct Form {
    name: &'static str,
    args: fn(&Path, &Path, &str) -> FormArgs,
}

fn os(p: impl AsRef<std::ffi::OsStr>) -> OsString {
    p.as_ref().to_os_string()
}

const FORMS: &[Form] = &[
    Form {
        name: "src/ dest (contents)",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-contents"));
            (vec![os(format!("{}/", src.display())), os(&d)], d, true)
        },
    },
    Form {
        name: "src dest (named)",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-named"));
            (vec![os(src), os(&d)], d, false)
        },
    },
    Form {
        name: "src dest/ (trailing slash on dest)",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-destslash"));
            (vec![os(src), os(format!("{}/", d.display()))], d, false)
        },
    },
    Form {
        name: "several sources",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-several"));
            (
                vec![
                    os(src.join("data0.bin")),
                    os(src.join("links")),
                    os(src.join("ro555")),
                    os(&d),
                ],
                d,
                false,
            )
        },
    },
    Form {
        name: "file to file",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-f2f"));
            std::fs::create_dir_all(&d).unwrap();
            (
                vec![os(src.join("setuid")), os(d.join("renamed"))],
                d,
                false,
            )
        },
    },
    Form {
        name: "file into directory",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-f2d"));
            std::fs::create_dir_all(&d).unwrap();
            (vec![os(src.join("odd")), os(&d)], d, false)
        },
    },
    Form {
        name: "symlink as a source",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-link"));
            std::fs::create_dir_all(&d).unwrap();
            (vec![os(src.join("links/rel")), os(&d)], d, false)
        },
    },
    Form {
        name: "missing source among others",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-missing"));
            (
                vec![
                    os(src.join("no-such-entry")),
                    os(src.join("data1.bin")),
                    os(&d),
                ],
                d,
                false,
            )
        },
    },
    Form {
        name: "missing destination parent",
        args: |t, src, tag| {
            let d = t.join(format!("{tag}-noparent/a/b"));
            (
                vec![os(src), os(&d)],
                t.join(format!("{tag}-noparent")),
                false,
            )
        },
    },
];

const FLAGS: &[&str] = &[
    "-a", "-r", "-l", "-p", "-t", "-g", "-o", "-D", "-rl", "-rt", "-rp", "-rlptgoD", "-U", "-rU",
];

fn skipping_lines(out: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with("skipping "))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn flags_times_path_forms_match_rsync() {
    if !require_rsync("flags_times_path_forms_match_rsync") {
        return;
    }
    let t = Scratch::new();
    let src = t.path().join("src");
    build_tree(
        &src,
        &TreeOpts {
            root_only: is_root(),
            wide: 20,
            depth: 4,
        },
    );
    let mut failures = Vec::new();
    let mut cases = 0;
    for (fi, flag) in FLAGS.iter().enumerate() {
        for (pi, form) in FORMS.iter().enumerate() {
            cases += 1;
            let tag_r = format!("r{fi}-{pi}");
            let tag_a = format!("a{fi}-{pi}");
            let (args_r, out_r, root_attrs) = (form.args)(t.path(), &src, &tag_r);
            let (args_a, out_a, _) = (form.args)(t.path(), &src, &tag_a);
            let r = Command::new("rsync")
                .arg(flag)
                .args(&args_r)
                .output()
                .expect("rsync");
            let a = arsync().arg(flag).args(&args_a).output().expect("arsync");
            let what = format!("{flag} / {}", form.name);
            if r.status.code() != a.status.code() {
                failures.push(format!(
                    "{what}: exit rsync {:?} arsync {:?}\n  rsync: {}\n  arsync: {}",
                    r.status.code(),
                    a.status.code(),
                    String::from_utf8_lossy(&r.stderr).trim(),
                    String::from_utf8_lossy(&a.stderr).trim()
                ));
                continue;
            }
            let (sr, sa) = (skipping_lines(&r.stdout), skipping_lines(&a.stdout));
            if sr != sa {
                failures.push(format!(
                    "{what}: skipping notices differ\n  rsync: {sr:?}\n  arsync: {sa:?}"
                ));
            }
            let times = flag.contains('t') || *flag == "-a";
            let check = treediff::Check {
                content: true,
                mode: true,
                owner: true,
                group: true,
                file_mtime: times,
                dir_mtime: times,
                link_mtime: times,
                root_attrs: root_attrs && times,
                xattrs: false,
                hardlinks: false,
                blocks: false,
            };
            match (out_r.exists(), out_a.exists()) {
                (false, false) => {}
                (true, true) => {
                    let d = treediff::diff(&out_r, &out_a, check);
                    if !d.is_empty() {
                        failures.push(format!(
                            "{what}: trees differ:\n  {}",
                            d.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ")
                        ));
                    }
                }
                (er, ea) => failures.push(format!(
                    "{what}: destination exists: rsync {er}, arsync {ea}"
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ from rsync:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
