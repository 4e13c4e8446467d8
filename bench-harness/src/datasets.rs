//! Reproducible datasets: the same kind, scale and seed give a byte-identical tree (content,
//! names, modes, nanosecond mtimes, links, xattrs), so every tool copies the same thing.
//!
//! Reference sizes (scale 1) are those of `shared/bench/RESULTS-2026-11-24.md`: `small` 20,000
//! files of 0–16 KiB, `large` 8 × 256 MiB, `mixed` 20,000 files; `flat` 100,000 files in one
//! directory; `deep` 4 chains of 64 directories; `hardlinks` 5,000 inodes of 3 names; `sparse` 8
//! files of 256 MiB with 3 data extents each.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Every dataset kind the harness knows, in report order.
pub const KINDS: &[&str] = &[
    "small",
    "large",
    "mixed",
    "deep",
    "flat",
    "hardlinks",
    "sparse",
];

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) -> Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| p.display().to_string());
    }
    Ok(())
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: valid path, name and value buffer for the call.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setxattr {}", p.display()));
    }
    Ok(())
}

/// Builder state shared by the generators: the RNG, a scratch buffer, a clock for mtimes, and
/// the directories whose times are set last.
struct Gen {
    rng: Rng,
    buf: Vec<u8>,
    t: i64,
    dirs: Vec<PathBuf>,
}

impl Gen {
    fn stamp(&mut self, p: &Path) -> Result<()> {
        self.t += 1 + self.rng.below(1000) as i64;
        // A nanosecond part that is not a multiple of 1000, to catch µs truncation.
        set_mtime(p, self.t, (self.rng.below(1_000_000) * 1000 + 123) as i64)
    }

    fn file(&mut self, p: &Path, len: usize) -> Result<()> {
        if self.buf.len() < len.min(1 << 20) {
            self.buf.resize(len.min(1 << 20), 0);
        }
        let f = fs::File::create(p).with_context(|| p.display().to_string())?;
        let mut off = 0usize;
        while off < len {
            let n = (len - off).min(1 << 20);
            self.rng.fill(&mut self.buf[..n]);
            f.write_all_at(&self.buf[..n], off as u64)?;
            off += n;
        }
        drop(f);
        if self.rng.below(10) == 0 {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
        }
        self.stamp(p)
    }

    fn dir(&mut self, p: &Path) -> Result<()> {
        fs::create_dir_all(p)?;
        self.dirs.push(p.to_path_buf());
        Ok(())
    }

    /// Log-uniform size in 0..=16 KiB, about 7% empty.
    fn small_size(&mut self) -> usize {
        if self.rng.below(14) == 0 {
            return 0;
        }
        let base = 1usize << self.rng.below(15);
        base + self.rng.below(base as u64) as usize
    }

    /// Source-tree-like sizes: median ~3 KiB, a tail to 8 MiB.
    fn mixed_size(&mut self) -> usize {
        let r = self.rng.below(1000);
        match r {
            0..=59 => 0,
            60..=949 => 256 + self.rng.below(12 * 1024) as usize,
            950..=994 => 16 * 1024 + self.rng.below(240 * 1024) as usize,
            _ => 256 * 1024 + self.rng.below(8 * 1024 * 1024) as usize,
        }
    }

    fn finish(mut self, root: &Path) -> Result<()> {
        self.dirs.push(root.to_path_buf());
        self.dirs.sort();
        self.dirs.dedup();
        self.dirs
            .sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in std::mem::take(&mut self.dirs) {
            self.stamp(&d)?;
        }
        Ok(())
    }
}

/// Write dataset `kind` at `scale` into `dir` (which must not exist).
pub fn generate(kind: &str, dir: &Path, scale: f64, seed: u64) -> Result<()> {
    if dir.exists() {
        bail!("{} exists: choose a new directory", dir.display());
    }
    fs::create_dir_all(dir)?;
    let n = |base: usize| ((base as f64 * scale).round() as usize).max(1);
    let mut g = Gen {
        rng: Rng::new(seed ^ kind.len() as u64),
        buf: Vec::new(),
        t: 1_650_000_000,
        dirs: Vec::new(),
    };
    match kind {
        "small" => {
            let files = n(20_000);
            for leaf in 0..files.div_ceil(100) {
                let d = dir.join(format!(
                    "d{}/d{}/d{}/d{}",
                    leaf / 1000 % 10,
                    leaf / 100 % 10,
                    leaf / 10 % 10,
                    leaf % 10
                ));
                let mut p = d.clone();
                while p != dir {
                    g.dir(&p)?;
                    p.pop();
                }
                for i in 0..100.min(files - leaf * 100) {
                    let len = g.small_size();
                    g.file(&d.join(format!("f{i:03}.dat")), len)?;
                }
            }
        }
        "large" => {
            let size = (256.0 * scale).max(1.0) as usize * 1024 * 1024;
            for i in 0..8 {
                g.file(&dir.join(format!("large{i}.bin")), size)?;
            }
        }
        "mixed" => {
            let files = n(20_000);
            let mut dirs = vec![dir.to_path_buf()];
            let mut made = 0;
            while made < files {
                // Grow the tree: a new directory under a random existing one, depth up to 9.
                let parent = dirs[g.rng.below(dirs.len() as u64) as usize].clone();
                let depth = parent
                    .strip_prefix(dir)
                    .map(|p| p.components().count())
                    .unwrap_or(0);
                let d = if depth < 9 {
                    let d = parent.join(format!("dir{}", dirs.len()));
                    g.dir(&d)?;
                    dirs.push(d.clone());
                    d
                } else {
                    parent
                };
                for _ in 0..(5 + g.rng.below(25)) {
                    if made >= files {
                        break;
                    }
                    let len = g.mixed_size();
                    let ext =
                        ["c", "h", "rs", "md", "json", "txt", "png", "o"][g.rng.below(8) as usize];
                    g.file(&d.join(format!("file_{made}.{ext}")), len)?;
                    made += 1;
                }
            }
            for i in 0..3 {
                g.file(&dir.join(format!("big{i}.bin")), 100 << 20)?;
            }
            // Symlinks: relative, absolute, dangling, to a directory.
            for i in 0..200u64 {
                let d = &dirs[g.rng.below(dirs.len() as u64) as usize];
                let target = match i % 4 {
                    0 => "../file_1.c".to_string(),
                    1 => "/etc/hostname".to_string(),
                    2 => format!("missing_{i}"),
                    _ => ".".to_string(),
                };
                let l = d.join(format!("link_{i}"));
                std::os::unix::fs::symlink(&target, &l)?;
                g.stamp(&l)?;
            }
            // Hard-link groups, empty directories, a few xattrs.
            for i in 0..20 {
                let a =
                    dirs[g.rng.below(dirs.len() as u64) as usize].join(format!("hardlink_{i}_0"));
                g.file(&a, 1000 + i * 10)?;
                let b =
                    dirs[g.rng.below(dirs.len() as u64) as usize].join(format!("hardlink_{i}_1"));
                fs::hard_link(&a, &b)?;
            }
            for i in 0..30 {
                let d = dirs[g.rng.below(dirs.len() as u64) as usize].join(format!("empty_{i}"));
                g.dir(&d)?;
            }
            for i in 0..4 {
                let f = dir.join(format!("xattr_{i}.txt"));
                g.file(&f, 100)?;
                set_xattr(&f, "user.bench", format!("value {i}").as_bytes())?;
            }
        }
        "deep" => {
            for chain in 0..4 {
                let mut d = dir.join(format!("chain{chain}"));
                for level in 0..64 {
                    d.push(format!("level_{level:02}_{}", "x".repeat(30)));
                    g.dir(&d)?;
                    for f in 0..3 {
                        let len = g.small_size();
                        g.file(&d.join(format!("f{f}")), len)?;
                    }
                }
            }
        }
        "flat" => {
            for i in 0..n(100_000) {
                let len = g.small_size() / 4;
                g.file(&dir.join(format!("f{i:07}")), len)?;
            }
        }
        "hardlinks" => {
            let inodes = n(5_000);
            for d in 0..10 {
                g.dir(&dir.join(format!("d{d}")))?;
            }
            for i in 0..inodes {
                let a = dir.join(format!("d{}/i{i}_a", i % 10));
                let len = g.small_size();
                g.file(&a, len)?;
                fs::hard_link(&a, dir.join(format!("d{}/i{i}_b", (i + 3) % 10)))?;
                fs::hard_link(&a, dir.join(format!("d{}/i{i}_c", (i + 7) % 10)))?;
            }
        }
        "sparse" => {
            let size = (256.0 * scale).max(1.0) as u64 * 1024 * 1024;
            for i in 0..8 {
                let p = dir.join(format!("sparse{i}.img"));
                let f = fs::File::create(&p)?;
                for off in [0, size / 2, size - (1 << 20)] {
                    let mut b = vec![0u8; 1 << 20];
                    g.rng.fill(&mut b);
                    f.write_all_at(&b, off)?;
                }
                f.set_len(size)?;
                drop(f);
                g.stamp(&p)?;
            }
        }
        other => bail!("unknown dataset kind {other:?} (one of {KINDS:?})"),
    }
    g.finish(dir)
}
