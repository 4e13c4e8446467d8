//! Per-operation cost of the fsops paths on the file system holding /var/tmp (warm cache): stat,
//! open, exclusive create, a whole small-file copy, a directory batch, a rename.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::ffi::CString;
use std::hint::black_box;
use std::os::fd::AsFd;

use criterion::{Criterion, criterion_group, criterion_main};
use fsops::{DirReader, sys};

fn ops(c: &mut Criterion) {
    let base = std::path::Path::new("/var/tmp");
    let t = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    std::fs::write(t.path().join("f4k"), vec![7u8; 4096]).unwrap();
    for i in 0..100 {
        std::fs::write(t.path().join(format!("e{i}")), b"").unwrap();
    }
    let d = sys::open_dir_path(t.path()).unwrap();
    let name = CString::new("f4k").unwrap();
    let mut g = c.benchmark_group("fsops");
    g.bench_function("lstat_at", |b| {
        b.iter(|| black_box(sys::lstat_at(d.as_fd(), &name).unwrap()))
    });
    g.bench_function("open_source + fstat + close", |b| {
        b.iter(|| {
            let fd = sys::open_source(d.as_fd(), &name, false).unwrap();
            black_box(sys::fstat(fd.as_fd()).unwrap());
        })
    });
    let tmp = CString::new("tmp").unwrap();
    g.bench_function("create_excl + close + unlink", |b| {
        b.iter(|| {
            drop(sys::create_excl(d.as_fd(), &tmp, 0o600).unwrap());
            sys::unlink_at(d.as_fd(), &tmp, 0).unwrap();
        })
    });
    let mut buf = Vec::with_capacity(256 * 1024);
    g.bench_function(
        "copy 4 KiB inline (open, create, read, write, unlink)",
        |b| {
            b.iter(|| {
                let s = sys::open_source(d.as_fd(), &name, false).unwrap();
                let o = sys::create_excl(d.as_fd(), &tmp, 0o644).unwrap();
                black_box(fsops::copy::copy_inline(&s, &o, 4096, &mut buf, false).unwrap());
                sys::unlink_at(d.as_fd(), &tmp, 0).unwrap();
            })
        },
    );
    g.bench_function("getdents batch of ~100 entries", |b| {
        let mut r = DirReader::default();
        b.iter(|| {
            let dir = sys::open_dir_path(t.path()).unwrap();
            while r.fill(dir.as_fd()).unwrap() {
                black_box(r.entries().count());
            }
        })
    });
    let (a, z) = (
        CString::new("e0").unwrap(),
        CString::new("e0-renamed").unwrap(),
    );
    g.bench_function("rename back and forth", |b| {
        b.iter(|| {
            sys::rename_at(d.as_fd(), &a, d.as_fd(), &z, 0).unwrap();
            sys::rename_at(d.as_fd(), &z, d.as_fd(), &a, 0).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, ops);
criterion_main!(benches);
