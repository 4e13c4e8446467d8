//! The small-file path allocates nothing per file: a copy of ten times as many small files (in
//! the same directories) makes no more than a few heap allocations more, counted by a global
//! allocator in this test binary (it holds this one test, so nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::{Config, NullObserver, Root};

/// The system allocator, counting every allocation and reallocation.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; counting has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by this allocator (that is, by `System`) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (that is, by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `dirs` directories of `per_dir` files of 1–3 KiB each (names of up to 30 bytes).
fn tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("directory-{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let len = 1024 + (f * 37 + d * 101) % 2048;
            std::fs::write(
                dir.join(format!("a-small-file-{f:05}.dat")),
                vec![b'x'; len],
            )
            .unwrap();
        }
    }
}

/// Heap allocations of one `-a` copy of `src` into a new `dst`, and the files it copied.
fn allocations_of_a_copy(src: &Path, dst: &Path) -> (u64, u64) {
    let mut config = Config::archive();
    config.threads = 2;
    config.create_dest_dir = Some(dst.to_path_buf());
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    config.roots.push(Root {
        src: s.into(),
        dst: dst.to_path_buf(),
        rel: "".into(),
        select: None,
    });
    let observer = Arc::new(NullObserver);
    let before = ALLOCS.load(Ordering::Relaxed);
    let report = engine::run(&config, observer);
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(report.errors, 0);
    (n, report.files)
}

#[test]
fn small_files_cost_no_allocation_each() {
    let tmp = tempfile::tempdir().unwrap();
    let (few, many) = (tmp.path().join("few"), tmp.path().join("many"));
    tree(&few, 10, 30);
    tree(&many, 10, 300);
    // Once to warm what is set up once per process, then the two copies measured.
    allocations_of_a_copy(&few, &tmp.path().join("warmup"));
    let (a, files_a) = allocations_of_a_copy(&few, &tmp.path().join("d1"));
    let (b, files_b) = allocations_of_a_copy(&many, &tmp.path().join("d2"));
    assert_eq!((files_a, files_b), (300, 3000));
    let extra = b.saturating_sub(a);
    let per_file = extra as f64 / (files_b - files_a) as f64;
    println!(
        "allocations: {a} for {files_a} files, {b} for {files_b}: {per_file:.3} per further file"
    );
    // The directories are the same in both; what grows with the files is the work-stealing
    // deque (its buffer doubles while a listing is pushed and halves while it is drained: a few
    // allocations per directory, more for a longer listing), never an allocation per file.
    assert!(
        per_file < 0.25,
        "{per_file:.3} allocations per file ({a} for {files_a} files, {b} for {files_b})"
    );
}
