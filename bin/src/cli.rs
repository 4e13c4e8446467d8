//! The command line: one clap definition (with its help text) per flag, rsync's order-sensitive
//! flag semantics (`-a --no-p` turns perms off, `--no-p -a` leaves them on), and rsync's path
//! semantics turning `SRC... DEST` into engine roots.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Arg, ArgAction, Command, value_parser};

/// An argument error rsync reports with a specific exit code before transferring anything.
#[derive(Debug)]
pub struct ArgError {
    pub message: String,
    pub code: i32,
    /// Notices rsync prints on stdout before this error (e.g. "skipping directory src").
    pub notices: Vec<String>,
}

/// Flags that map to engine toggles: (clap id, help, short, long, toggles set on, toggles set off)
/// Each entry names the toggles it switches; order on the command line decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Toggle {
    Recursive,
    Links,
    Perms,
    Times,
    OmitDirTimes,
    OmitLinkTimes,
    Atimes,
    Owner,
    Group,
    Devices,
    Specials,
    HardLinks,
    Xattrs,
    Acls,
    Sparse,
    CopyLinks,
    CopyUnsafeLinks,
    SafeLinks,
    KeepDirlinks,
    /// `--super`/`--no-super` (`Config::super_user`).
    SuperUser,
    /// `-W`/`--no-W` (`Config::changed_only` is its opposite).
    WholeFile,
}

struct FlagDef {
    id: &'static str,
    short: Option<char>,
    long: &'static str,
    help: &'static str,
    on: &'static [Toggle],
    value: bool,
}

const ARCHIVE: &[Toggle] = &[
    Toggle::Recursive,
    Toggle::Links,
    Toggle::Perms,
    Toggle::Times,
    Toggle::Group,
    Toggle::Owner,
    Toggle::Devices,
    Toggle::Specials,
];

/// What `--usermap`, `--groupmap` and `--chown` turn on where they stand (see [`toggles`]);
/// not options of their own (never looked up by name).
const IMPLY_OWNER: FlagDef = FlagDef {
    id: "usermap",
    short: None,
    long: "",
    help: "",
    on: &[Toggle::Owner],
    value: true,
};
const IMPLY_GROUP: FlagDef = FlagDef {
    on: &[Toggle::Group],
    ..IMPLY_OWNER
};
const IMPLY_BOTH: FlagDef = FlagDef {
    on: &[Toggle::Owner, Toggle::Group],
    ..IMPLY_OWNER
};
const IMPLY_NONE: FlagDef = FlagDef {
    on: &[],
    ..IMPLY_OWNER
};

/// Every toggling flag and its `--no-` form, in the order of rsync's help.
const FLAGS: &[FlagDef] = &[
    FlagDef {
        id: "archive",
        short: Some('a'),
        long: "archive",
        help: "archive mode: -rlptgoD (no -A, -X, -U, -N, -H) [default: off]",
        on: ARCHIVE,
        value: true,
    },
    FlagDef {
        id: "recursive",
        short: Some('r'),
        long: "recursive",
        help: "recurse into directories [default: off]",
        on: &[Toggle::Recursive],
        value: true,
    },
    FlagDef {
        id: "no-recursive",
        short: None,
        long: "no-recursive",
        help: "turn off -r (also --no-r)",
        on: &[Toggle::Recursive],
        value: false,
    },
    FlagDef {
        id: "links",
        short: Some('l'),
        long: "links",
        help: "copy symlinks as symlinks [default: off: symlinks are skipped]",
        on: &[Toggle::Links],
        value: true,
    },
    FlagDef {
        id: "no-links",
        short: None,
        long: "no-links",
        help: "turn off -l (also --no-l)",
        on: &[Toggle::Links],
        value: false,
    },
    FlagDef {
        id: "perms",
        short: Some('p'),
        long: "perms",
        help: "preserve permissions, including setuid/setgid/sticky [default: off: source mode masked by the umask]",
        on: &[Toggle::Perms],
        value: true,
    },
    FlagDef {
        id: "no-perms",
        short: None,
        long: "no-perms",
        help: "turn off -p (also --no-p)",
        on: &[Toggle::Perms],
        value: false,
    },
    FlagDef {
        id: "times",
        short: Some('t'),
        long: "times",
        help: "preserve modification times, to the nanosecond [default: off]",
        on: &[Toggle::Times],
        value: true,
    },
    FlagDef {
        id: "no-times",
        short: None,
        long: "no-times",
        help: "turn off -t (also --no-t)",
        on: &[Toggle::Times],
        value: false,
    },
    FlagDef {
        id: "omit-dir-times",
        short: Some('O'),
        long: "omit-dir-times",
        help: "with -t, leave directories' modification times alone [default: off]",
        on: &[Toggle::OmitDirTimes],
        value: true,
    },
    FlagDef {
        id: "no-omit-dir-times",
        short: None,
        long: "no-omit-dir-times",
        help: "turn off -O (also --no-O)",
        on: &[Toggle::OmitDirTimes],
        value: false,
    },
    FlagDef {
        id: "omit-link-times",
        short: Some('J'),
        long: "omit-link-times",
        help: "with -t, leave symlinks' modification times alone [default: off]",
        on: &[Toggle::OmitLinkTimes],
        value: true,
    },
    FlagDef {
        id: "no-omit-link-times",
        short: None,
        long: "no-omit-link-times",
        help: "turn off -J (also --no-J)",
        on: &[Toggle::OmitLinkTimes],
        value: false,
    },
    FlagDef {
        id: "atimes",
        short: Some('U'),
        long: "atimes",
        help: "preserve access (use) times [default: off]",
        on: &[Toggle::Atimes],
        value: true,
    },
    FlagDef {
        id: "no-atimes",
        short: None,
        long: "no-atimes",
        help: "turn off -U (also --no-U)",
        on: &[Toggle::Atimes],
        value: false,
    },
    FlagDef {
        id: "group",
        short: Some('g'),
        long: "group",
        help: "preserve group [default: off]",
        on: &[Toggle::Group],
        value: true,
    },
    FlagDef {
        id: "no-group",
        short: None,
        long: "no-group",
        help: "turn off -g (also --no-g)",
        on: &[Toggle::Group],
        value: false,
    },
    FlagDef {
        id: "owner",
        short: Some('o'),
        long: "owner",
        help: "preserve owner (super-user only) [default: off]",
        on: &[Toggle::Owner],
        value: true,
    },
    FlagDef {
        id: "no-owner",
        short: None,
        long: "no-owner",
        help: "turn off -o (also --no-o)",
        on: &[Toggle::Owner],
        value: false,
    },
    FlagDef {
        id: "D",
        short: Some('D'),
        long: "D",
        help: "same as --devices --specials",
        on: &[Toggle::Devices, Toggle::Specials],
        value: true,
    },
    FlagDef {
        id: "no-D",
        short: None,
        long: "no-D",
        help: "turn off -D",
        on: &[Toggle::Devices, Toggle::Specials],
        value: false,
    },
    FlagDef {
        id: "devices",
        short: None,
        long: "devices",
        help: "preserve device files (super-user only) [default: off]",
        on: &[Toggle::Devices],
        value: true,
    },
    FlagDef {
        id: "no-devices",
        short: None,
        long: "no-devices",
        help: "turn off --devices",
        on: &[Toggle::Devices],
        value: false,
    },
    FlagDef {
        id: "specials",
        short: None,
        long: "specials",
        help: "preserve special files (FIFOs, sockets) [default: off]",
        on: &[Toggle::Specials],
        value: true,
    },
    FlagDef {
        id: "no-specials",
        short: None,
        long: "no-specials",
        help: "turn off --specials",
        on: &[Toggle::Specials],
        value: false,
    },
    FlagDef {
        id: "hard-links",
        short: Some('H'),
        long: "hard-links",
        help: "preserve hard links: data copied once per inode, other names linked [default: off]",
        on: &[Toggle::HardLinks],
        value: true,
    },
    FlagDef {
        id: "no-hard-links",
        short: None,
        long: "no-hard-links",
        help: "turn off -H (also --no-H)",
        on: &[Toggle::HardLinks],
        value: false,
    },
    FlagDef {
        id: "acls",
        short: Some('A'),
        long: "acls",
        help: "preserve POSIX ACLs (implies -p) [default: off]",
        on: &[Toggle::Acls, Toggle::Perms],
        value: true,
    },
    FlagDef {
        id: "no-acls",
        short: None,
        long: "no-acls",
        help: "turn off -A (also --no-A)",
        on: &[Toggle::Acls],
        value: false,
    },
    FlagDef {
        id: "xattrs",
        short: Some('X'),
        long: "xattrs",
        help: "preserve extended attributes (user.*; trusted.* and security.* as root) [default: off]",
        on: &[Toggle::Xattrs],
        value: true,
    },
    FlagDef {
        id: "no-xattrs",
        short: None,
        long: "no-xattrs",
        help: "turn off -X (also --no-X)",
        on: &[Toggle::Xattrs],
        value: false,
    },
    FlagDef {
        id: "sparse",
        short: Some('S'),
        long: "sparse",
        help: "keep holes of sparse files as holes [default: off: holes are written as zeros]",
        on: &[Toggle::Sparse],
        value: true,
    },
    FlagDef {
        id: "no-sparse",
        short: None,
        long: "no-sparse",
        help: "turn off -S (also --no-S)",
        on: &[Toggle::Sparse],
        value: false,
    },
    FlagDef {
        id: "copy-links",
        short: Some('L'),
        long: "copy-links",
        help: "transform symlinks into what they point to [default: off]",
        on: &[Toggle::CopyLinks],
        value: true,
    },
    FlagDef {
        id: "no-copy-links",
        short: None,
        long: "no-copy-links",
        help: "turn off -L (also --no-L)",
        on: &[Toggle::CopyLinks],
        value: false,
    },
    FlagDef {
        id: "copy-unsafe-links",
        short: None,
        long: "copy-unsafe-links",
        help: "only symlinks pointing outside the tree are transformed [default: off]",
        on: &[Toggle::CopyUnsafeLinks],
        value: true,
    },
    FlagDef {
        id: "safe-links",
        short: None,
        long: "safe-links",
        help: "ignore symlinks pointing outside the tree [default: off]",
        on: &[Toggle::SafeLinks],
        value: true,
    },
    FlagDef {
        id: "keep-dirlinks",
        short: Some('K'),
        long: "keep-dirlinks",
        help: "treat a symlinked directory in DEST as that directory [default: off]",
        on: &[Toggle::KeepDirlinks],
        value: true,
    },
    FlagDef {
        id: "no-keep-dirlinks",
        short: None,
        long: "no-keep-dirlinks",
        help: "turn off -K (also --no-K)",
        on: &[Toggle::KeepDirlinks],
        value: false,
    },
    FlagDef {
        id: "whole-file",
        short: Some('W'),
        long: "whole-file",
        help: "write whole files: a file that differs is written anew (with --inplace: all of it) [default: on]",
        on: &[Toggle::WholeFile],
        value: true,
    },
    FlagDef {
        id: "no-whole-file",
        short: None,
        long: "no-whole-file",
        help: "with --inplace, compare an existing destination file with its source chunk by chunk (--buffer-size) and write only the chunks that differ, as rsync's delta transfer into the file does; without --inplace a new file is still written whole, as by rsync (also --no-W) [default: off]",
        on: &[Toggle::WholeFile],
        value: false,
    },
    FlagDef {
        id: "super",
        short: None,
        long: "super",
        help: "do what only the super-user may even when not run as root (set owners with -o, every group with -g, make devices with -D, every xattr namespace with -X), and report each refusal as an error (exit 23) [default: as root only]",
        on: &[Toggle::SuperUser],
        value: true,
    },
    FlagDef {
        id: "no-super",
        short: None,
        long: "no-super",
        help: "as root, copy as a user would: no owners, only one's groups, no devices, only user.* xattrs [default: off]",
        on: &[Toggle::SuperUser],
        value: false,
    },
];

fn short_alias(id: &str) -> Option<&'static str> {
    Some(match id {
        "no-whole-file" => "no-W",
        "no-recursive" => "no-r",
        "no-links" => "no-l",
        "no-perms" => "no-p",
        "no-times" => "no-t",
        "no-atimes" => "no-U",
        "no-omit-dir-times" => "no-O",
        "no-omit-link-times" => "no-J",
        "no-group" => "no-g",
        "no-owner" => "no-o",
        "no-hard-links" => "no-H",
        "no-acls" => "no-A",
        "no-xattrs" => "no-X",
        "no-sparse" => "no-S",
        "no-copy-links" => "no-L",
        "no-keep-dirlinks" => "no-K",
        _ => return None,
    })
}

/// The clap command: the single definition of every flag, used for parsing, `--help`, and (later)
/// the man page and completions.
pub fn command() -> Command {
    let mut cmd = Command::new("arsync")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Copy and synchronise directory trees like rsync -a, on a thread-per-core io_uring engine")
        .override_usage("arsync [OPTIONS] SRC... DEST")
        .after_help(
            "Path semantics are rsync's: `arsync -a src dst` copies the directory src into dst \
             (dst/src); `arsync -a src/ dst` copies the contents of src into dst. DEST is created \
             if missing (one level). Exit codes are rsync's: 0 ok, 1 usage, 3 bad input/output \
             path, 11 file I/O (destination), 23 partial transfer, 24 source files vanished.",
        )
        .disable_version_flag(true)
        // `-h` is rsync's --human-readable (alone, it asks for help: see `parse`).
        .disable_help_flag(true)
        .args_override_self(true)
        .arg(
            Arg::new("help")
                .long("help")
                .action(ArgAction::Help)
                .help("print this help (-h alone too, as rsync), then exit")
                .help_heading("Info"),
        )
        .arg(
            Arg::new("version")
                .short('V')
                .long("version")
                .action(ArgAction::SetTrue)
                .help("print the version, io_uring status and features, then exit")
                .help_heading("Info"),
        )
        .arg(
            Arg::new("gen-man")
                .long("gen-man")
                .action(ArgAction::SetTrue)
                .help("print the man page (roff) to stdout, then exit: arsync --gen-man > /usr/local/share/man/man1/arsync.1")
                .help_heading("Info"),
        )
        .arg(
            Arg::new("gen-completions")
                .long("gen-completions")
                .value_name("SHELL")
                .value_parser(["bash", "zsh", "fish"])
                .help("print the shell completion script to stdout, then exit (see the README for where to put it)")
                .help_heading("Info"),
        )
        .arg(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .action(ArgAction::Count)
                .help("increase verbosity: -v lists every item copied (rsync's --info=copy,del,flist,misc,name,stats,symsafe), -vv adds unchanged names, backups, skips and removals (backup,misc2,mount,name2,remove,skip), the filter rule that decided about each entry (--debug=filter) and the engine's settings and totals, -vvv every directory and file it handles, -vvvv each data path (RUST_LOG overrides) [default: off]")
                .help_heading("Info"),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("suppress non-error messages [default: off]")
                .help_heading("Info"),
        )
        .arg(
            Arg::new("human-readable")
                .short('h')
                .long("human-readable")
                .action(ArgAction::Count)
                .help("print sizes and counts (--stats, -v, --progress, --list-only) in units: -h of 1000 (1.24M), -hh of 1024 (1.18M), as rsync [default: digits grouped by commas]")
                .help_heading("Info"),
        )
        .arg(
            Arg::new("no-human-readable")
                .long("no-human-readable")
                .visible_alias("no-h")
                .action(ArgAction::SetTrue)
                .help("print sizes and counts as plain digits (each -h after it raises the level again)")
                .help_heading("Info"),
        );
    for f in FLAGS {
        let mut a = Arg::new(f.id)
            .long(f.long)
            .action(ArgAction::SetTrue)
            .help(f.help)
            .help_heading("What to copy");
        if let Some(s) = f.short {
            a = a.short(s);
        }
        if let Some(alias) = short_alias(f.id) {
            a = a.alias(alias);
        }
        if f.id.starts_with("no-") {
            a = a.hide_short_help(true);
        }
        cmd = cmd.arg(a);
    }
    cmd = cmd.arg(
        Arg::new("open-noatime")
            .long("open-noatime")
            .action(ArgAction::SetTrue)
            .help("open source files with O_NOATIME, so reading them leaves their atime [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("drop-D")
            .long("drop-D")
            .action(ArgAction::SetTrue)
            .help("make no devices or special files, whatever -D, --devices or --specials say: they are skipped with \"skipping non-regular file\", as rsync's --drop-D [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("insecure-links")
            .long("insecure-links")
            .action(ArgAction::SetTrue)
            .help("follow any symlink in the paths you name (the destination, --backup-dir, -T, --link-dest, --log-file, --files-from, --exclude-from, merge files): by default, as rsync 3.5, one owned by a user other than root or you is refused [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("munge-links")
            .long("munge-links")
            .action(ArgAction::SetTrue)
            .overrides_with("no-munge-links")
            .help("a source symlink whose target starts with /rsyncd-munged/ (an rsync daemon's munged link) is copied, compared and listed without that prefix, as rsync's local copy does [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("no-munge-links")
            .long("no-munge-links")
            .action(ArgAction::SetTrue)
            .overrides_with("munge-links")
            .help("turn off --munge-links")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("one-file-system")
            .short('x')
            .long("one-file-system")
            .action(ArgAction::Count)
            .help("don't cross file system boundaries: the mount point is created empty; -xx leaves it out too [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("numeric-ids")
            .long("numeric-ids")
            .action(ArgAction::SetTrue)
            .help("don't map uid/gid values by user/group name (ids are always kept as numbers on one host) [default: on]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("reflink")
            .long("reflink")
            .value_name("WHEN")
            .value_parser(["auto", "always", "never"])
            .help("clone file data (FICLONE) where the file system can: auto falls back to a copy, always fails a file that cannot be cloned, never shares no extents (no copy_file_range either) [default: auto]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("copy-method")
            .long("copy-method")
            .value_name("HOW")
            .value_parser(["auto", "copy-file-range", "uring"])
            .help("how file data that is not cloned moves: auto = inline read/write for small files, copy_file_range for larger ones on one file system, else the io_uring pipeline; copy-file-range or uring force that path for every file [default: auto]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("direct")
            .long("direct")
            .action(ArgAction::SetTrue)
            .help("read and write large files with O_DIRECT through the io_uring pipeline, bypassing the page cache (cold bulk moves; --buffer-size must be a multiple of 4K) [default: off]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("queue-depth")
            .long("queue-depth")
            .value_name("N")
            .value_parser(value_parser!(u32).range(1..=256))
            .help("reads and writes in flight per large file in the io_uring pipeline [default: 4]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("buffer-size")
            .long("buffer-size")
            .value_name("SIZE")
            .value_parser(parse_size)
            .help("size of each io_uring pipeline buffer, e.g. 256K or 4M (4K..=64M) [default: 1M]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("max-alloc")
            .long("max-alloc")
            .value_name("SIZE")
            .help("the most memory any one allocation may take, as rsync's (at least 1M; 0 = no limit; also from RSYNC_MAX_ALLOC): arsync's largest single allocations are its I/O buffers, so --buffer-size and --inline-max must fit in it [default: 1G]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("files-in-flight")
            .long("files-in-flight")
            .value_name("N")
            .value_parser(value_parser!(u32).range(1..=65536))
            .help("entries each core works on at once (bounds open fds: about 3 per entry) [default: 32]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("large-files-in-flight")
            .long("large-files-in-flight")
            .value_name("N")
            .value_parser(value_parser!(u32).range(1..=1024))
            .help("large files each core streams through the io_uring pipeline at once (buffer memory per core: N x queue depth x buffer size) [default: 2]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("inline-max")
            .long("inline-max")
            .value_name("SIZE")
            .value_parser(parse_size)
            .help("with --copy-method=auto, files up to SIZE are copied with inline read/write syscalls on the core (0..=64M) [default: 256K]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("split-chunk")
            .long("split-chunk")
            .value_name("SIZE")
            .value_parser(parse_size)
            .help("a file copied with copy_file_range that is at least twice SIZE is cut into chunks of SIZE that several cores copy at once (a cold one: pieces that cold-copy threads copy, several at once while it is the only cold file); 0 never splits (1M..=1G) [default: 64M; by default a warm file is split only where the destination's file system can write one file's ranges at once, not on ext4, XFS, btrfs, tmpfs, F2FS or bcachefs; given, it is split everywhere]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("route")
            .long("route")
            .value_name("CLASS=PATH")
            .action(ArgAction::Append)
            .help("where a class of per-file calls runs: CLASS is stat, open, create, meta, read (small-file data) or all; PATH is inline (a syscall on the core), ring (io_uring; not for meta), worker (a metadata worker thread; not for read) or auto (open, read: on the core when the page cache can answer, else the ring), e.g. --route stat=ring,meta=worker (see docs/tuning.md) [default: open=auto,read=auto, the rest inline]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("mpi")
            .long("mpi")
            .action(ArgAction::SetTrue)
            .help("run as one rank of a multi-node copy launched by mpirun (mpirun -np N arsync --mpi -a SRC/ DST/): ranks share the tree by work stealing and split large files; needs a build with --features mpi (see docs/scaling.md)")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("meta-workers")
            .long("meta-workers")
            .value_name("N")
            .value_parser(value_parser!(u32).range(0..=1024))
            .help("metadata worker threads for the classes --route sends to workers; 0 = one per core thread [default: 0]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("iowq-workers")
            .long("iowq-workers")
            .value_name("N")
            .value_parser(value_parser!(u32).range(0..=4096))
            .help("cap each core's io_uring kernel worker threads (IORING_REGISTER_IOWQ_MAX_WORKERS); 0 keeps the kernel's default [default: 4]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("checksum")
            .short('c')
            .long("checksum")
            .action(ArgAction::SetTrue)
            .help("skip files by content, not mtime: a destination file of the same size is compared by hash (XXH3-128) [default: size and mtime]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("modify-window")
            .short('@')
            .long("modify-window")
            .value_name("NUM")
            .value_parser(value_parser!(i64).range(-1..=i64::from(u32::MAX)))
            .allow_negative_numbers(true)
            .help("mtimes within NUM seconds count as equal (whole seconds, as rsync); -1 compares nanoseconds [default: nanoseconds, rsync's default is 0]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("update")
            .short('u')
            .long("update")
            .action(ArgAction::SetTrue)
            .help("skip entries that are newer in the destination [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("existing")
            .long("existing")
            .alias("ignore-non-existing")
            .action(ArgAction::SetTrue)
            .help("skip creating new entries in the destination: only update what is there [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("ignore-missing-args")
            .long("ignore-missing-args")
            .action(ArgAction::SetTrue)
            .help("a source argument that does not exist is no error: it is passed over [default: off: exit code 23]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("delete-missing-args")
            .long("delete-missing-args")
            .action(ArgAction::SetTrue)
            .help("a source argument that does not exist deletes its name in the destination (a non-empty directory only with --delete or --force) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("chmod")
            .long("chmod")
            .value_name("CHMOD")
            .action(ArgAction::Append)
            .help("change the permissions the destination gets, as rsync does: comma-separated [D|F][ugoa][+-=][rwxXst] items or [D|F]octal, e.g. Dg+s,ug+w,Fo-w,+X or D755,F644 (repeatable) [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("usermap")
            .long("usermap")
            .action(ArgAction::Append)
            .value_name("FROM:TO,...")
            .help("give copies of files owned by FROM the owner TO (as root; turns -o on, as rsync); FROM is *, a uid, a range LOW-HIGH or a user name, TO a name or uid; first match wins [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("groupmap")
            .long("groupmap")
            .action(ArgAction::Append)
            .value_name("FROM:TO,...")
            .help("the same for groups (turns -g on) [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("chown")
            .long("chown")
            .action(ArgAction::Append)
            .value_name("USER:GROUP")
            .help("every copy gets this owner and/or group (either may be empty; turns -o and/or -g on, as rsync) [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("copy-as")
            .long("copy-as")
            .value_name("USER[:GROUP]")
            .help("as root: do the whole copy as USER (a name or a number), with GROUP or else USER's groups, so that no file is read or written with root's rights, as rsync's --copy-as [default: as the user running arsync]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("mkpath")
            .long("mkpath")
            .action(ArgAction::SetTrue)
            .help("create the destination's missing parent directories (not in a dry run) [default: off: a missing parent is an error]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("backup")
            .short('b')
            .long("backup")
            .action(ArgAction::SetTrue)
            .help("keep every destination file that is replaced or deleted under a backup name: NAME~ beside it, or DIR/PATH with --backup-dir [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("backup-dir")
            .long("backup-dir")
            .value_name("DIR")
            .value_parser(value_parser!(PathBuf))
            .help("with -b (implied): keep the backups in DIR under their paths in the destination (a relative DIR is relative to the destination directory; on the destination's file system) [default: beside the file]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("suffix")
            .long("suffix")
            .value_name("SUFFIX")
            .value_parser(value_parser!(OsString))
            .allow_hyphen_values(true)
            .help("appended to backup names [default: ~, or nothing with --backup-dir]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("remove-source-files")
            .long("remove-source-files")
            .action(ArgAction::SetTrue)
            .help("remove from the source every non-directory that is in sync in the destination (copied, linked or already up to date); a file that changed since it was copied is kept and reported [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("ignore-existing")
            .long("ignore-existing")
            .action(ArgAction::SetTrue)
            .help("skip updating entries that already exist in the destination [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("delete")
            .long("delete")
            .action(ArgAction::SetTrue)
            .help("delete destination entries the source does not have, in each directory once it is copied [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("delete-during")
            .long("delete-during")
            .alias("del")
            .action(ArgAction::SetTrue)
            .help("--delete, in each directory as the copy goes (the default --delete mode)")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("delete-before")
            .long("delete-before")
            .action(ArgAction::SetTrue)
            .help("--delete, in each directory before its entries are copied (frees the space first; its source listing is read twice) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("delete-after")
            .long("delete-after")
            .action(ArgAction::SetTrue)
            .help("--delete, after everything is copied: per-directory merge files protect as the copy has left them [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("delete-delay")
            .long("delete-delay")
            .action(ArgAction::SetTrue)
            .help("--delete, found during the walk (merge files protect as they were before the copy) and made after everything is copied [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("inc-recursive")
            .long("inc-recursive")
            .visible_alias("i-r")
            .action(ArgAction::SetTrue)
            .help("scan directories while files are copied: arsync always does (no file list is built up front; accepted for compatibility) [default: on]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("no-inc-recursive")
            .long("no-inc-recursive")
            .visible_alias("no-i-r")
            .action(ArgAction::SetTrue)
            .help("rsync: build the whole file list before copying. The copy arsync makes is the same either way, so it is accepted and the scan stays incremental (its memory is bounded by the directories in flight, not the tree) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("preallocate")
            .long("preallocate")
            .action(ArgAction::SetTrue)
            .help("allocate destination files before writing: arsync always fallocates the data ranges of files it streams (accepted for compatibility) [default: on]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("delete-excluded")
            .long("delete-excluded")
            .action(ArgAction::SetTrue)
            .help("also delete destination entries that are excluded (implies --delete) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("bwlimit")
            .long("bwlimit")
            .value_name("RATE")
            .value_parser(parse_rate)
            .help("write at most RATE bytes of file data per second, all cores together (KiB unless a suffix says otherwise, e.g. 500, 1.5M, 20MB; 0 = no limit; as rsync's). Files then move in chunks read and written on the cores [default: no limit]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("max-size")
            .long("max-size")
            .value_name("SIZE")
            .value_parser(parse_size)
            .help("leave regular files larger than SIZE alone: not copied, not updated, not deleted (e.g. 100M, 1.5G, 2K-1; K = 1024, KB = 1000) [default: no limit]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("min-size")
            .long("min-size")
            .value_name("SIZE")
            .value_parser(parse_size)
            .help("leave regular files smaller than SIZE alone, as --max-size does larger ones [default: no limit]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("8-bit-output")
            .short('8')
            .long("8-bit-output")
            .action(ArgAction::SetTrue)
            .help("print bytes of names that are not UTF-8 as they are, not escaped as \\#ooo [default: off]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("list-only")
            .long("list-only")
            .action(ArgAction::SetTrue)
            .help("list the sources (mode, size, mtime, name) instead of copying; also what one path alone does [default: off]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("timeout")
            .long("timeout")
            .value_name("SECONDS")
            .value_parser(value_parser!(u64))
            .help("stop the run when it has done nothing for SECONDS (no data written, no file checked, nothing deleted, no directory finished: a stuck file system), with exit code 30, as rsync's I/O timeout; 0 = never [default: 0]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("stop-after")
            .long("stop-after")
            .visible_alias("time-limit")
            .value_name("MINS")
            .help("stop after MINS minutes (a fraction allowed): files being written are discarded, the run ends with exit code 30, a re-run goes on [default: no limit]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("stop-at")
            .long("stop-at")
            .value_name("y-m-dTh:m")
            .help("stop at this local time (rsync's format: 2030-12-31T23:59, or abbreviated: 23:59, 12-31, :30); as --stop-after otherwise [default: no limit]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("max-delete")
            .long("max-delete")
            .value_name("NUM")
            .value_parser(value_parser!(u64))
            .help("delete at most NUM entries; the rest are kept and the run ends with exit code 25 [default: no limit]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("ignore-errors")
            .long("ignore-errors")
            .action(ArgAction::SetTrue)
            .help("delete even in a directory whose source could not be read, or was read only in part (its destination entries then count as extraneous) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("prune-empty-dirs")
            .short('m')
            .long("prune-empty-dirs")
            .action(ArgAction::SetTrue)
            .help("leave out source directories that hold nothing but directories once the filter rules are applied [default: off]")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("force")
            .long("force")
            .action(ArgAction::SetTrue)
            .help("replace a non-empty directory by a non-directory even without --delete [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("verify")
            .long("verify")
            .action(ArgAction::SetTrue)
            .help("read every written file back and compare it with the source before publishing it; a mismatch is an error (exit 23) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("fsync")
            .long("fsync")
            .action(ArgAction::SetTrue)
            .help("flush every written file to its storage (fsync) before it takes its name, as rsync's --fsync; the core goes on with other files while the kernel flushes [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("link-dest")
            .long("link-dest")
            .value_name("DIR")
            .action(ArgAction::Append)
            .value_parser(value_parser!(PathBuf))
            .help("hard link files that are unchanged relative to DIR (a relative DIR is relative to the destination directory; up to 20, tried in order) instead of copying them [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("compare-dest")
            .long("compare-dest")
            .value_name("DIR")
            .action(ArgAction::Append)
            .value_parser(value_parser!(PathBuf))
            .help("leave out of the destination what is unchanged relative to DIR (and remove a destination file equal to it); like --link-dest otherwise [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("copy-dest")
            .long("copy-dest")
            .value_name("DIR")
            .action(ArgAction::Append)
            .value_parser(value_parser!(PathBuf))
            .help("copy from DIR (instead of from the source) what is unchanged relative to it; like --link-dest otherwise [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("inplace")
            .long("inplace")
            .action(ArgAction::SetTrue)
            .help("write into destination files directly instead of staging a new file (an interrupted file stays partly written under its name) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("append")
            .long("append")
            .action(ArgAction::SetTrue)
            .help("only for files known to grow: a destination file shorter than its source gets the source's remaining bytes appended in place (its content is not checked); one at least as long is left alone, attributes too (implies --inplace) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("append-verify")
            .long("append-verify")
            .action(ArgAction::SetTrue)
            .help("like --append, but the destination's part is first compared with the source's and rewritten from where it differs [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("partial")
            .long("partial")
            .action(ArgAction::SetTrue)
            .help("keep a partly written file (as .NAME.~arsync-partial) when a copy fails or is killed; the next run checks its prefix against the source and copies only the rest [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("partial-dir")
            .long("partial-dir")
            .value_name("DIR")
            .value_parser(value_parser!(OsString))
            .help("like --partial, but keep partial files as DIR/NAME in each destination directory (DIR is one name, e.g. .rsync-partial; excluded from the transfer and from --delete) [default: none]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("delay-updates")
            .long("delay-updates")
            .action(ArgAction::SetTrue)
            .help("put each updated file in the partial directory (--partial-dir, .~tmp~ unless given) of its destination directory and rename them all into place at the end of the run, in rapid succession (needs room for a second copy of the updated files; a stopped run leaves them there to resume from) [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("stderr")
            .long("stderr")
            .value_name("e|a|c")
            .help("where messages go: errors (only errors on stderr, the rest on stdout), all (everything on stderr), client (as errors: a local copy has no remote side); any prefix [default: errors]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("msgs2stderr")
            .long("msgs2stderr")
            .action(ArgAction::SetTrue)
            .help("the same as --stderr=all")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("no-msgs2stderr")
            .long("no-msgs2stderr")
            .action(ArgAction::SetTrue)
            .help("the same as --stderr=client")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("outbuf")
            .long("outbuf")
            .value_name("N|L|B")
            .help("how output on stdout is buffered: N none (each piece written at once), L line by line, B blocks of 64 KiB (fewer writes into a file or pipe) [default: L]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("compress")
            .short('z')
            .long("compress")
            .action(ArgAction::Count)
            .help("accepted for rsync's command lines (-avz): a local copy has no network link to compress data over, so nothing changes [default: off]")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("no-compress")
            .long("no-compress")
            .visible_alias("no-z")
            .action(ArgAction::SetTrue)
            .help("accepted (see -z)")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("compress-choice")
            .long("compress-choice")
            .visible_alias("zc")
            .value_name("STR")
            .help("accepted (see -z); STR must be one of rsync's: zstd, lz4, zlibx, zlib, none")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("compress-level")
            .long("compress-level")
            .visible_alias("zl")
            .value_name("NUM")
            .allow_negative_numbers(true)
            .value_parser(value_parser!(i32))
            .help("accepted (see -z)")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("compress-threads")
            .long("compress-threads")
            .visible_alias("zt")
            .value_name("NUM")
            .value_parser(value_parser!(u32))
            .help("accepted (see -z)")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("skip-compress")
            .long("skip-compress")
            .value_name("LIST")
            .help("accepted (see -z)")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("old-compress")
            .long("old-compress")
            .action(ArgAction::SetTrue)
            .help("accepted (see -z)")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("new-compress")
            .long("new-compress")
            .action(ArgAction::SetTrue)
            .help("accepted (see -z)")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("fuzzy")
            .short('y')
            .long("fuzzy")
            .action(ArgAction::Count)
            .help("accepted for rsync's command lines: rsync looks for a similar file as the basis of a delta transfer; a local copy writes whole files (as rsync's local copy), so nothing changes [default: off]")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("crtimes")
            .short('N')
            .long("crtimes")
            .action(ArgAction::SetTrue)
            .help("refused, as by rsync on Linux: creation times cannot be set here")
            .help_heading("Compatibility"),
    )
    .arg(
        Arg::new("copy-devices")
            .long("copy-devices")
            .action(ArgAction::SetTrue)
            .help("copy the content of a character or block device in the source into a regular file (its size: the device's end; 0 for one that cannot seek), dated the time of the copy so the next run copies it again, as rsync [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("write-devices")
            .long("write-devices")
            .action(ArgAction::SetTrue)
            .help("write a file's data into the character or block device already at its destination name (from its start, never truncated; its mode, owner and times set as a file's) instead of replacing the device; implies --inplace [default: off]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("exclude")
            .long("exclude")
            .value_name("PATTERN")
            .action(ArgAction::Append)
            .help("exclude entries matching PATTERN (rsync's pattern rules)")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("include")
            .long("include")
            .value_name("PATTERN")
            .action(ArgAction::Append)
            .help("don't exclude entries matching PATTERN (the first matching rule wins)")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("files-from")
            .long("files-from")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .help("transfer exactly the paths listed in FILE (one per line, relative to the one SRC; - for stdin); implies -R and, as rsync, -a does not imply -r with it")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("from0")
            .short('0')
            .long("from0")
            .action(ArgAction::SetTrue)
            .help("the lines of --files-from, --exclude-from and --include-from files end with a NUL byte, not a newline")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("executability")
            .short('E')
            .long("executability")
            .action(ArgAction::SetTrue)
            .help("without -p: make a destination file executable (an x for each r) or not, as its source is [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("copy-dirlinks")
            .short('k')
            .long("copy-dirlinks")
            .action(ArgAction::SetTrue)
            .help("copy a symlink to a directory as that directory (other symlinks stay symlinks) [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("dirs")
            .short('d')
            .long("dirs")
            .action(ArgAction::SetTrue)
            .overrides_with_all(["no-dirs", "old-dirs"])
            .help("without -r: make the directories named (with their attributes), and copy the entries of one named with a trailing slash, one level down [default: off: skipped]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("no-dirs")
            .long("no-dirs")
            .visible_alias("no-d")
            .action(ArgAction::SetTrue)
            .overrides_with_all(["dirs", "old-dirs"])
            .help("turn off -d")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("old-dirs")
            .long("old-dirs")
            .visible_alias("old-d")
            .action(ArgAction::SetTrue)
            .overrides_with_all(["dirs", "no-dirs"])
            .help("rsync's --dirs for old rsyncs: -r with the rule - /*/* after the others, so the top level's directories are made and left empty [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("relative")
            .short('R')
            .long("relative")
            .action(ArgAction::SetTrue)
            .overrides_with("no-relative")
            .help("use the source paths as given below DEST (a /./ in a path marks where the copied part starts) [default: off]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("no-relative")
            .long("no-relative")
            .visible_alias("no-R")
            .action(ArgAction::SetTrue)
            .overrides_with("relative")
            .help("turn off -R (also implied by --files-from)")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("no-implied-dirs")
            .long("no-implied-dirs")
            .action(ArgAction::SetTrue)
            .help("with -R: directories on the way to a listed path keep their destination attributes (made, they get default permissions)")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("F")
            .short('F')
            .action(ArgAction::Count)
            .help("read filter rules from .rsync-filter in every directory (--filter='dir-merge /.rsync-filter'); twice: also leave the .rsync-filter files out (--filter='- .rsync-filter')")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("cvs-exclude")
            .short('C')
            .long("cvs-exclude")
            .action(ArgAction::SetTrue)
            .help("leave out what CVS ignores: its default list, $HOME/.cvsignore, $CVSIGNORE and each directory's .cvsignore (after every other rule)")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("exclude-from")
            .long("exclude-from")
            .value_name("FILE")
            .action(ArgAction::Append)
            .value_parser(value_parser!(PathBuf))
            .help("read exclude patterns from FILE, one per line (- for stdin)")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("include-from")
            .long("include-from")
            .value_name("FILE")
            .action(ArgAction::Append)
            .value_parser(value_parser!(PathBuf))
            .help("read include patterns from FILE, one per line (- for stdin)")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("filter")
            .short('f')
            .long("filter")
            .value_name("RULE")
            .action(ArgAction::Append)
            .help("add a filter rule: '- PATTERN' exclude, '+ PATTERN' include, 'P PATTERN' protect from deletion, 'R', 'H', 'S', '!' (as rsync)")
            .help_heading("Filters"),
    )
    .arg(
        Arg::new("dry-run")
            .short('n')
            .long("dry-run")
            .action(ArgAction::SetTrue)
            .help("show what would be done, change nothing [default: off]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("itemize-changes")
            .short('i')
            .long("itemize-changes")
            .action(ArgAction::Count)
            .help("list every change as rsync's 11-letter code and the name, e.g. >f+++++++++ or .d..t...... [default: off]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("progress")
            .long("progress")
            .action(ArgAction::SetTrue)
            .help("show each file as it completes, with its size, the overall rate and how many files are left, as rsync's --progress [default: off]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("partial-progress")
            .short('P')
            .action(ArgAction::SetTrue)
            .help("same as --partial --progress")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("info")
            .long("info")
            .value_name("FLAGS")
            .action(ArgAction::Append)
            .help("rsync's output words, comma-separated, each with a level (NAME2, DEL0, ALL, NONE; --info=help lists them): e.g. progress2 for one line for the whole transfer (bytes, percent, rate, ETA, files left), a live bar on a terminal, a line a second otherwise; name0 for no item names [default: what -v, --stats and --progress imply]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("debug")
            .long("debug")
            .value_name("FLAGS")
            .action(ArgAction::Append)
            .help("rsync's trace words (--debug=help lists them; -vv sets FILTER): arsync acts on FILTER, which says the rule that decided about each entry a rule matched ([sender] hiding file NAME because of pattern P); its own traces are -vvv and RUST_LOG [default: what -v implies]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("stats")
            .long("stats")
            .action(ArgAction::SetTrue)
            .help("print rsync's end-of-run statistics (files considered, created, deleted, transferred, bytes) [default: off]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("ignore-times")
            .short('I')
            .long("ignore-times")
            .action(ArgAction::SetTrue)
            .help("don't skip files that match in size and mtime: copy every file [default: skip them]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("size-only")
            .long("size-only")
            .action(ArgAction::SetTrue)
            .help("skip files that match in size, whatever their mtime [default: size and mtime must match, to the nanosecond]")
            .help_heading("What to copy"),
    )
    .arg(
        Arg::new("temp-dir")
            .short('T')
            .long("temp-dir")
            .value_name("DIR")
            .value_parser(value_parser!(PathBuf))
            .help("stage new files in DIR (relative: to the destination directory), then link or rename them into place; on another file system (for want of room at the destination) the file replaced goes first, so old and new never take room together [default: beside each file]")
            .help_heading("Sync"),
    )
    .arg(
        Arg::new("temp-names")
            .long("temp-names")
            .action(ArgAction::SetTrue)
            .help("stage new files under temporary names and rename them into place, instead of unnamed O_TMPFILE files linked into place [default: O_TMPFILE where supported]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("threads")
            .long("threads")
            .value_name("N")
            .value_parser(value_parser!(usize))
            .help("core threads, one io_uring runtime each [default: one per available CPU]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("stats-json")
            .long("stats-json")
            .value_name("FILE")
            .value_parser(value_parser!(std::path::PathBuf))
            .help("write the run's statistics as JSON to FILE (schema: docs/stats-json.md) [default: none]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("log-file")
            .long("log-file")
            .value_name("FILE")
            .value_parser(value_parser!(std::path::PathBuf))
            .help("append what is done to FILE: every item and deletion (see --log-file-format), errors, a start and an end line, each prefixed with the time and PID [default: none]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("log-file-format")
            .long("log-file-format")
            .value_name("FMT")
            .help("the item lines of --log-file: %i itemize code, %n name, %L link target, %l size, %b bytes copied, %o operation, %f path, %B perms, %U uid, %G gid, %M mtime, %t time, %p PID; %'l adds commas, %-10n pads [default: '%i %n%L']")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("out-format")
            .long("out-format")
            .value_name("FMT")
            .help("print each item changed to stdout in FMT (escapes as --log-file-format); -i is --out-format='%i %n%L' [default: none]")
            .help_heading("Info"),
    )
    .arg(
        Arg::new("no-pin")
            .long("no-pin")
            .action(ArgAction::SetTrue)
            .help("do not pin core threads to CPUs [default: pinned]")
            .help_heading("Engine"),
    )
    .arg(
        Arg::new("paths")
            .value_name("SRC... DEST")
            .num_args(0..)
            .value_parser(value_parser!(OsString))
            .help("one or more sources, then the destination"),
    );
    // An option's value may begin with a dash, as rsync (popt) takes it: `-f '- *.log'`,
    // `--exclude -foo`, `--chmod -w`.
    cmd.mut_args(|a| {
        if a.get_action().takes_values() && !a.is_positional() {
            a.allow_hyphen_values(true)
        } else {
            a
        }
    })
}

/// Everything `main` needs from the command line.
/// A file generated from the flag definitions instead of a copy.
pub enum Generate {
    /// `--gen-man`.
    Man,
    /// `--gen-completions SHELL`.
    Completions(String),
    /// `--info=help`, `--debug=help`.
    WordsHelp(crate::info::Help),
}

pub struct Parsed {
    pub config: engine::Config,
    /// `--stderr=all` (or `--msgs2stderr`): all output on stderr.
    pub out_to_stderr: bool,
    /// `--outbuf`: how stdout is buffered.
    pub outbuf: crate::output::OutBuf,
    pub generate: Option<Generate>,
    pub stats_json: Option<PathBuf>,
    /// `--info` levels, with what `-v`, `--stats` and `--progress` imply.
    pub info: crate::info::Info,
    /// The format of the item lines on stdout: `--out-format`, else `%i %n%L` with `-i`, else
    /// `%n%L` at `--info=name` (`-v`, `--progress`); none lists no items.
    pub listing: Option<crate::logfmt::Format>,
    /// `--files-from`: its SRC, the directory `%f` names the listed paths from (as rsync, which
    /// reads them from there).
    pub list_base: Option<PathBuf>,
    /// `--log-file` and its line format.
    pub log_file: Option<(PathBuf, crate::logfmt::Format)>,
    /// The sources and the destination as given.
    pub paths: Vec<OsString>,
    /// `--mkpath`: the missing directories to create (`mkdir -p`) before the run.
    pub make_path: Option<PathBuf>,
    /// `--mpi`: one rank of a multi-node run.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub mpi: bool,
    pub verbose: u8,
    pub quiet: bool,
    /// `-h` level: 0 plain digits, 1 digits grouped by commas, 2 units of 1000, 3 units of 1024.
    pub human: u8,
    pub version: bool,
    /// `--list-only` (or one path alone): list the sources, copy nothing (and whether symlink
    /// targets are shown: with `-l`).
    pub list_only: Option<bool>,
    /// `--stop-after`/`--stop-at`: when the run must stop (seconds since the epoch).
    pub stop_at: Option<i64>,
    /// `--timeout`: how long the run may do nothing before it is stopped.
    pub idle_timeout: Option<std::time::Duration>,
    /// `--copy-as`: the user the run becomes before it touches a file.
    pub copy_as: Option<CopyAs>,
}

/// `--copy-as=USER[:GROUP]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyAs {
    pub uid: u32,
    pub gid: u32,
    /// USER as given, for `initgroups` when no GROUP was given (then the copy has USER's
    /// groups; with GROUP, that group alone).
    pub groups_of: Option<std::ffi::CString>,
}

/// Resolve `--copy-as=USER[:GROUP]` as rsync does: a name, or a number; without GROUP the
/// user's primary group and (at the switch) the groups the user is in.
fn copy_as(spec: &str) -> Result<CopyAs, ArgError> {
    let bad = |what: &str, name: &str| ArgError {
        message: format!("Invalid copy-as {what}: {name}"),
        code: 1,
        notices: Vec::new(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = engine::name_or_id(user, engine::user_id).ok_or_else(|| bad("user", user))?;
    let (gid, groups_of) = match group {
        Some(g) => (
            engine::name_or_id(g, engine::group_id).ok_or_else(|| bad("group", g))?,
            None,
        ),
        None => (
            engine::user_primary_gid(uid).ok_or_else(|| ArgError {
                message: format!("getpwuid failed: no user with uid {uid}"),
                code: 1,
                notices: Vec::new(),
            })?,
            Some(std::ffi::CString::new(user).map_err(|_| bad("user", user))?),
        ),
    };
    Ok(CopyAs {
        uid,
        gid,
        groups_of,
    })
}

/// Apply the toggling flags in command-line order (clap has validated the arguments already;
/// this walk only recovers the order, which clap does not keep for repeated flags).
///
/// `--usermap` turns `-o` on and `--groupmap` `-g`, where they stand, as rsync's option parser
/// does; `--chown=USER:GROUP` (`chown`: whether each, in order, names a user, a group) each
/// that it names.
/// Before, without `-o`/`-g` (`-rlpt --chown=www-data:www-data`, a common deployment line)
/// they changed nothing. Returns what the last `-W`/`--no-W` said, if any was given.
fn toggles(
    events: &[FlagAt<'_>],
    cfg: &mut engine::Config,
    archive_recurses: bool,
    chown: &[(bool, bool)],
) -> Option<bool> {
    let mut whole_file = None;
    let mut chown = chown.iter();
    let events = events.iter().filter_map(|e| match *e {
        FlagAt::Long(b"usermap") => Some(&IMPLY_OWNER),
        FlagAt::Long(b"groupmap") => Some(&IMPLY_GROUP),
        FlagAt::Long(b"chown") => Some(match chown.next().copied().unwrap_or_default() {
            (true, true) => &IMPLY_BOTH,
            (true, false) => &IMPLY_OWNER,
            (false, true) => &IMPLY_GROUP,
            (false, false) => &IMPLY_NONE,
        }),
        FlagAt::Long(name) => FLAGS.iter().find(|f| {
            f.long.as_bytes() == name || short_alias(f.id).is_some_and(|s| s.as_bytes() == name)
        }),
        FlagAt::Short(c) => FLAGS.iter().find(|f| f.short == Some(c as char)),
    });
    for f in events {
        for t in f.on {
            if !archive_recurses && f.id == "archive" && matches!(t, Toggle::Recursive) {
                // --files-from: -a does not imply -r (as rsync).
                continue;
            }
            let v = f.value;
            match t {
                Toggle::Recursive => cfg.recursive = v,
                Toggle::Links => cfg.links = v,
                Toggle::Perms => cfg.perms = v,
                Toggle::Times => cfg.times = v,
                Toggle::OmitDirTimes => cfg.omit_dir_times = v,
                Toggle::OmitLinkTimes => cfg.omit_link_times = v,
                Toggle::Atimes => cfg.atimes = v,
                Toggle::Owner => cfg.owner = v,
                Toggle::Group => cfg.group = v,
                Toggle::Devices => cfg.devices = v,
                Toggle::Specials => cfg.specials = v,
                Toggle::HardLinks => cfg.hard_links = v,
                Toggle::Xattrs => cfg.xattrs = v,
                Toggle::Acls => cfg.acls = v,
                Toggle::Sparse => cfg.sparse = v,
                Toggle::CopyLinks => cfg.copy_links = v,
                Toggle::CopyUnsafeLinks => cfg.copy_unsafe_links = v,
                Toggle::SafeLinks => cfg.safe_links = v,
                Toggle::KeepDirlinks => cfg.keep_dirlinks = v,
                Toggle::SuperUser => cfg.super_user = Some(v),
                Toggle::WholeFile => {
                    cfg.changed_only = !v;
                    whole_file = Some(v);
                }
            }
        }
    }
    whole_file
}

/// One option of the command line: a long name (without `--` or `=VALUE`) or a short letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlagAt<'a> {
    Long(&'a [u8]),
    Short(u8),
}

/// The options of a command line in order, the values of those that take one left out: after
/// `=`, attached to a short letter (`-f'- *.log'`) or as the next argument (`-f '- *.log'`,
/// `--exclude -lx`), a value is never read as flags (before, the `l` and `o` of `*.log` turned
/// on `-l` and `-o`). Stops at `--`.
fn flag_events<'a>(cmd: &Command, args: &'a [OsString]) -> Vec<FlagAt<'a>> {
    let valued = |a: &clap::Arg| a.get_action().takes_values() && !a.is_positional();
    let long_takes_value = |name: &[u8]| {
        cmd.get_arguments().filter(|a| valued(a)).any(|a| {
            a.get_long().is_some_and(|l| l.as_bytes() == name)
                || a.get_all_aliases()
                    .is_some_and(|al| al.iter().any(|x| x.as_bytes() == name))
        })
    };
    let short_takes_value = |c: u8| {
        cmd.get_arguments()
            .filter(|a| valued(a))
            .any(|a| a.get_short() == Some(c as char))
    };
    let mut out = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        if b == b"--" {
            break;
        }
        if let Some(long) = b.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|&c| c == b'=') {
                Some(i) => (&long[..i], true),
                None => (long, false),
            };
            out.push(FlagAt::Long(name));
            if !inline && long_takes_value(name) {
                it.next();
            }
        } else if let Some(shorts) = b.strip_prefix(b"-").filter(|s| !s.is_empty()) {
            for (i, &c) in shorts.iter().enumerate() {
                out.push(FlagAt::Short(c));
                if short_takes_value(c) {
                    if i + 1 == shorts.len() {
                        it.next();
                    }
                    break;
                }
            }
        }
    }
    out
}

/// Why the command line was refused.
pub enum Refused {
    /// clap's verdict (usage error, or help/version display).
    Clap(clap::Error),
    /// An argument rsync refuses with this message and exit code before any transfer.
    Arg(ArgError),
}

/// Parse the arguments.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, Refused> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.len() == 2 && args[1] == "-h" {
        // rsync: -h is help only when it is the one argument.
        args[1] = "--help".into();
    }
    let cmd = command();
    let events = flag_events(&cmd, &args);
    let m = cmd.try_get_matches_from(&args).map_err(Refused::Clap)?;
    // (Before any path the operator names is read.)
    crate::trust::set_insecure(m.get_flag("insecure-links"));
    let mut config = engine::Config::none();
    let chown_names: Vec<(bool, bool)> = m
        .get_many::<String>("chown")
        .into_iter()
        .flatten()
        .map(|s| match s.split_once(':') {
            Some((u, g)) => (!u.is_empty(), !g.is_empty()),
            None => (!s.is_empty(), false),
        })
        .collect();
    let whole_file = toggles(
        &events,
        &mut config,
        !m.contains_id("files-from"),
        &chown_names,
    );
    config.open_noatime = m.get_flag("open-noatime");
    config.munge_links = m.get_flag("munge-links");
    if let Some(n) = m.get_one::<usize>("threads") {
        config.threads = *n;
    }
    config.pin = !m.get_flag("no-pin");
    config.one_file_system = m.get_count("one-file-system");
    config.temp_names = m.get_flag("temp-names");
    // (--size-only decides over -I, as in rsync's quick check; -c over both, in the engine.)
    config.quick_check = if m.get_flag("size-only") {
        engine::QuickCheck::SizeOnly
    } else if m.get_flag("ignore-times") {
        engine::QuickCheck::Never
    } else {
        engine::QuickCheck::SizeAndTime
    };
    config.reflink = match m.get_one::<String>("reflink").map(String::as_str) {
        Some("always") => engine::Reflink::Always,
        Some("never") => engine::Reflink::Never,
        _ => engine::Reflink::Auto,
    };
    config.copy_method = match m.get_one::<String>("copy-method").map(String::as_str) {
        Some("copy-file-range") => engine::CopyMethod::CopyFileRange,
        Some("uring") => engine::CopyMethod::Uring,
        _ => engine::CopyMethod::Auto,
    };
    if let Some(&n) = m.get_one::<u32>("queue-depth") {
        config.ring_depth = n as usize;
    }
    if let Some(&n) = m.get_one::<u64>("buffer-size") {
        if !(4096..=64 << 20).contains(&n) {
            return Err(usage("--buffer-size must be between 4K and 64M"));
        }
        config.chunk_size = n as usize;
    }
    if let Some(&n) = m.get_one::<u32>("files-in-flight") {
        config.inflight_per_core = n as usize;
    }
    if let Some(&n) = m.get_one::<u32>("large-files-in-flight") {
        config.ring_files_per_core = n as usize;
    }
    if let Some(&n) = m.get_one::<u64>("inline-max") {
        if n > 64 << 20 {
            return Err(usage("--inline-max must be at most 64M"));
        }
        config.small_file_max = n;
    }
    // --max-alloc (or RSYNC_MAX_ALLOC): rsync's ceiling on one allocation (1G by default, which
    // no arsync setting reaches). arsync's largest single allocations are a pipeline buffer
    // (--buffer-size) and the ring read of a cold small file (--inline-max and the byte that
    // detects growth); the rest (listing batches, a core's inline buffer of at most 1M, link
    // maps in shards) stay below the least limit rsync allows.
    let max_alloc_arg = m.get_one::<String>("max-alloc").cloned().or_else(|| {
        std::env::var("RSYNC_MAX_ALLOC")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if let Some(arg) = &max_alloc_arg {
        let limit = max_alloc(arg).map_err(Refused::Arg)?;
        // A cold small file is read through the ring into a buffer of its size plus one byte.
        for (flag, need) in [
            ("--buffer-size", config.chunk_size as u64),
            ("--inline-max", config.small_file_max + 1),
        ] {
            if limit > 0 && need > limit {
                return Err(Refused::Arg(ArgError {
                    message: format!(
                        "{flag} needs allocations of {need} bytes, more than --max-alloc={arg} allows"
                    ),
                    code: 1,
                    notices: Vec::new(),
                }));
            }
        }
    }
    if let Some(&n) = m.get_one::<u64>("split-chunk") {
        if n != 0 && !((1 << 20)..=(1 << 30)).contains(&n) {
            return Err(usage("--split-chunk must be 0 or between 1M and 1G"));
        }
        config.split_chunk = n;
        config.split_forced = n > 0;
    }
    if let Some(specs) = m.get_many::<String>("route") {
        let specs: Vec<&str> = specs.map(String::as_str).collect();
        config.routes = engine::Routes::parse(&specs).map_err(|e| usage(&e))?;
    }
    if let Some(&n) = m.get_one::<u32>("meta-workers") {
        config.meta_workers = n as usize;
    }
    if let Some(&n) = m.get_one::<u32>("iowq-workers") {
        config.iowq_max_workers = n;
    }
    config.direct = m.get_flag("direct");
    if config.direct {
        if config.copy_method == engine::CopyMethod::CopyFileRange {
            return Err(usage(
                "--direct moves data through the io_uring pipeline: it cannot be combined with --copy-method=copy-file-range",
            ));
        }
        if config.reflink == engine::Reflink::Always {
            return Err(usage(
                "--direct cannot be combined with --reflink=always (a clone moves no data)",
            ));
        }
        if !config.chunk_size.is_multiple_of(4096) {
            return Err(usage(
                "--direct needs a --buffer-size that is a multiple of 4K",
            ));
        }
    }
    match (config.reflink, config.copy_method) {
        (
            engine::Reflink::Always,
            engine::CopyMethod::CopyFileRange | engine::CopyMethod::Uring,
        ) => {
            return Err(usage(
                "--reflink=always clones every file or fails it: it cannot be combined with --copy-method",
            ));
        }
        (engine::Reflink::Never, engine::CopyMethod::CopyFileRange) => {
            return Err(usage(
                "--reflink=never forbids copy_file_range (it shares extents on XFS and btrfs): it cannot be combined with --copy-method=copy-file-range",
            ));
        }
        _ => {}
    }
    config.checksum = m.get_flag("checksum");
    config.modify_window = match m.get_one::<i64>("modify-window") {
        None | Some(-1) => None,
        Some(&n) => Some(n as u32),
    };
    config.update = m.get_flag("update");
    config.existing = m.get_flag("existing");
    config.ignore_existing = m.get_flag("ignore-existing");
    config.force = m.get_flag("force");
    config.ignore_errors = m.get_flag("ignore-errors");
    config.copy_dirlinks = m.get_flag("copy-dirlinks");
    config.executability = m.get_flag("executability");
    if m.get_flag("8-bit-output") {
        crate::output::EIGHT_BIT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    config.prune_empty_dirs = m.get_flag("prune-empty-dirs");
    config.dry_run = m.get_flag("dry-run");
    config.max_delete = m.get_one::<u64>("max-delete").copied();
    config.max_size = m.get_one::<u64>("max-size").copied();
    config.bwlimit = m.get_one::<u64>("bwlimit").copied().filter(|&r| r > 0);
    config.remove_source_files = m.get_flag("remove-source-files");
    let [users, groups] = owner_maps(&m)?;
    id_map(&mut config.uid_map, users, engine::user_id)?;
    id_map(&mut config.gid_map, groups, engine::group_id)?;
    if let Some(specs) = m.get_many::<String>("chmod") {
        let umask = engine::process_umask();
        for spec in specs {
            config.chmod.parse(spec, umask).map_err(|e| usage(&e))?;
        }
    }
    config.missing_args = if m.get_flag("delete-missing-args") {
        engine::MissingArgs::Delete
    } else if m.get_flag("ignore-missing-args") {
        engine::MissingArgs::Ignore
    } else {
        engine::MissingArgs::Error
    };
    config.min_size = m.get_one::<u64>("min-size").copied();
    let delete_excluded = m.get_flag("delete-excluded");
    if [
        "delete-before",
        "delete-during",
        "delete-after",
        "delete-delay",
    ]
    .iter()
    .filter(|id| m.get_flag(id))
    .count()
        > 1
    {
        return Err(usage(
            "You may not combine multiple --delete-WHEN options (as rsync).",
        ));
    }
    config.delete = if m.get_flag("delete-after") {
        Some(engine::Delete::After)
    } else if m.get_flag("delete-delay") {
        Some(engine::Delete::Delay)
    } else if m.get_flag("delete-before") {
        Some(engine::Delete::Before)
    } else if m.get_flag("delete") || m.get_flag("delete-during") || delete_excluded {
        Some(engine::Delete::During)
    } else {
        None
    };
    // --list-only, or one path alone (rsync lists it): a dry run into nowhere, one level down
    // without -r (as rsync's implied --dirs).
    let list_only = m.get_flag("list-only")
        || m.get_many::<OsString>("paths")
            .is_some_and(|p| p.len() == 1);
    // (rsync lists symlinks, devices and specials whatever -l/-D say; a symlink's target only
    // with -l.)
    let list_targets = config.links;
    if m.get_flag("old-dirs") {
        // As rsync: recursion, and "- /*/*" after the command line's rules (filters()).
        config.recursive = true;
    }
    if m.get_flag("drop-D") {
        // Whatever -D, --devices and --specials said, and wherever they stand.
        config.devices = false;
        config.specials = false;
    }
    if list_only {
        config.dry_run = true;
        config.links = true;
        config.devices = true;
        config.specials = true;
    }
    let dirs = m.get_flag("dirs") || m.contains_id("files-from") || list_only;
    if config.delete.is_some() && !config.recursive && !dirs {
        return Err(usage(
            "--delete does not work without --recursive (-r) or --dirs (-d): nothing says which directory's contents to compare",
        ));
    }
    config.set_filters(filters(&m).map_err(|(e, code)| {
        if code == 1 {
            usage(&e)
        } else {
            Refused::Arg(ArgError {
                message: e,
                code,
                notices: Vec::new(),
            })
        }
    })?);
    if delete_excluded {
        config.filters.sender_only();
    }
    let kinds: Vec<(&str, engine::AltDest)> = [
        ("link-dest", engine::AltDest::Link),
        ("compare-dest", engine::AltDest::Compare),
        ("copy-dest", engine::AltDest::Copy),
    ]
    .into_iter()
    .filter(|(id, _)| m.contains_id(id))
    .collect();
    if let [(a, _), (b, _), ..] = kinds[..] {
        return Err(usage(&format!(
            "the --{b} option conflicts with the --{a} option (as rsync)"
        )));
    }
    if let Some(&(id, kind)) = kinds.first() {
        config.alt_dest = kind;
        config.alt_dest_dirs = m
            .get_many::<PathBuf>(id)
            .map(|v| v.cloned().collect())
            .unwrap_or_default();
        if config.alt_dest_dirs.len() > 20 {
            return Err(usage(&format!(
                "at most 20 --{id} directories are allowed (as rsync)"
            )));
        }
    }
    config.verify = m.get_flag("verify");
    config.fsync = m.get_flag("fsync");
    config.inplace = m.get_flag("inplace");
    config.append = if m.get_flag("append-verify") {
        Some(engine::Append::Verify)
    } else if m.get_flag("append") {
        Some(engine::Append::Trust)
    } else {
        None
    };
    if config.append.is_some() && whole_file == Some(true) {
        // (As rsync: an explicit -W, the last of -W/--no-W; the default whole-file copy of a
        // local run is no conflict.)
        return Err(usage("--append cannot be used with --whole-file"));
    }
    // --stderr=errors|all|client (any prefix, as rsync), --msgs2stderr (all), --no-msgs2stderr
    // (client): the later counts. A local copy has no client side: client is errors.
    let mut out_to_stderr = false;
    let mut stderr_at = None;
    if let Some(mode) = m.get_one::<String>("stderr") {
        let is = |word: &str| !mode.is_empty() && word.starts_with(mode.as_str());
        out_to_stderr = if is("errors") || is("client") {
            false
        } else if is("all") {
            true
        } else {
            return Err(Refused::Arg(ArgError {
                message: format!("--stderr mode \"{mode}\" is not one of errors, all, or client"),
                code: 1,
                notices: Vec::new(),
            }));
        };
        stderr_at = m.index_of("stderr");
    }
    for (id, all) in [("msgs2stderr", true), ("no-msgs2stderr", false)] {
        if m.get_flag(id) && m.index_of(id) > stderr_at {
            out_to_stderr = all;
            stderr_at = m.index_of(id);
        }
    }
    // --outbuf: the first letter, as rsync reads it.
    let outbuf = match m
        .get_one::<String>("outbuf")
        .map(|v| v.chars().next().map(|c| c.to_ascii_uppercase()))
    {
        None => crate::output::OutBuf::Line,
        Some(Some('N' | 'U')) => crate::output::OutBuf::None,
        Some(Some('L')) => crate::output::OutBuf::Line,
        Some(Some('B' | 'F')) => crate::output::OutBuf::Block,
        Some(_) => {
            return Err(Refused::Arg(ArgError {
                message: "Invalid --outbuf setting -- specify N, L, or B.".into(),
                code: 1,
                notices: Vec::new(),
            }));
        }
    };
    if m.get_flag("crtimes") {
        // rsync on Linux: no way to set a file's creation time.
        return Err(Refused::Arg(ArgError {
            message: "This arsync does not support --crtimes (-N)".into(),
            code: 1,
            notices: Vec::new(),
        }));
    }
    if let Some(c) = m.get_one::<String>("compress-choice")
        && !["zstd", "lz4", "zlibx", "zlib", "none"].contains(&c.as_str())
    {
        return Err(Refused::Arg(ArgError {
            message: format!("unknown compress name: {c}"),
            code: 4,
            notices: Vec::new(),
        }));
    }
    config.partial = m.get_flag("partial") || m.get_flag("partial-progress");
    config.delay_updates = m.get_flag("delay-updates");
    if list_only {
        // (Any user's listing shows devices: nothing is made, so nothing is refused.)
        config.super_user = Some(true);
    }
    config.copy_devices = m.get_flag("copy-devices");
    config.write_devices = m.get_flag("write-devices");
    if config.write_devices {
        // As rsync: a device is written where it is.
        config.inplace = true;
    }
    if config.append.is_some() {
        // As rsync: a file appended to is written in place, never staged.
        if config.delay_updates {
            return Err(usage("--append cannot be used with --delay-updates"));
        }
        if m.contains_id("partial-dir") {
            return Err(usage("--append cannot be used with --partial-dir"));
        }
        config.inplace = true;
    }
    if config.delay_updates && config.inplace {
        return Err(usage("--inplace cannot be used with --delay-updates"));
    }
    // rsync: --partial-dir implies --partial; an empty one or "." is none (the partial file
    // stays under its own name); --delay-updates keeps the files in the partial directory,
    // .~tmp~ unless named.
    if m.contains_id("partial-dir") {
        config.partial = true;
    }
    let partial_dir = m
        .get_one::<OsString>("partial-dir")
        .filter(|d| !d.is_empty() && d.as_bytes() != b".")
        .cloned()
        .or_else(|| config.delay_updates.then(|| OsString::from(".~tmp~")));
    if let Some(dir) = &partial_dir {
        let b = dir.as_bytes();
        if b.is_empty() || b.contains(&b'/') || b == b"." || b == b".." {
            return Err(usage(
                "--partial-dir must be one directory name (e.g. .rsync-partial), made in each destination directory",
            ));
        }
        if config.inplace {
            return Err(usage("--partial-dir cannot be used with --inplace"));
        }
        let name = std::ffi::CString::new(b.to_vec())
            .map_err(|_| usage("--partial-dir contains a NUL byte"))?;
        // As rsync: the partial directory is neither sent nor deleted.
        config
            .filters
            .exclude(&format!("{}/", String::from_utf8_lossy(b)))
            .map_err(|e| usage(&e))?;
        config.partial_dir = Some(name);
        config.partial = true;
    } else if config.partial && !config.inplace {
        // Partial files are kept for the next run, not deleted as extraneous.
        config
            .filters
            .rule("P *.~arsync-partial")
            .and_then(|()| config.filters.rule("P .~arsync-partial-*"))
            .map_err(|e| usage(&e))?;
    }
    // (rsync refuses a suffix with a slash whether or not backups are made.)
    if let Some(suffix) = m.get_one::<OsString>("suffix")
        && suffix.as_bytes().contains(&b'/')
    {
        return Err(usage(&format!(
            "--suffix cannot contain slashes: {}",
            suffix.to_string_lossy()
        )));
    }
    let mut backup_dir = m.get_one::<PathBuf>("backup-dir").cloned();
    if m.get_flag("backup") || backup_dir.is_some() {
        let with_dir = backup_dir.is_some();
        let suffix = m
            .get_one::<OsString>("suffix")
            .cloned()
            .unwrap_or_else(|| engine::backup::default_suffix(with_dir));
        engine::backup::check_suffix(&suffix, with_dir).map_err(|e| usage(&e))?;
        // As rsync: a leading "./" is dropped (so that the rule below protects the directory),
        // and a directory that is then "." is the destination itself: backups beside their
        // files, which needs a suffix.
        if let Some(d) = &backup_dir {
            let d: PathBuf = d
                .components()
                .skip_while(|c| *c == std::path::Component::CurDir)
                .collect();
            if d.as_os_str().is_empty() {
                if suffix.is_empty() {
                    return Err(usage(
                        "--suffix cannot be empty when --backup-dir is the same as the dest dir",
                    ));
                }
                backup_dir = None;
            } else {
                backup_dir = Some(d);
            }
        }
        if backup_dir.is_none() && config.delete.is_some() && !delete_excluded {
            // As rsync: the backups made beside their files are not deleted as extraneous.
            let mut rule = b"P *".to_vec();
            rule.extend_from_slice(suffix.as_bytes());
            config
                .filters
                .rule(&String::from_utf8_lossy(&rule))
                .map_err(|e| usage(&e))?;
        }
        if let Some(d) = &backup_dir
            && d.is_relative()
            && d.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            // A backup directory inside the destination is never deleted as extraneous (rsync
            // would delete it, moving its backups into DIR/DIR).
            let mut rule = b"P /".to_vec();
            rule.extend_from_slice(d.as_os_str().as_bytes());
            rule.push(b'/');
            config
                .filters
                .rule(&String::from_utf8_lossy(&rule))
                .map_err(|e| usage(&e))?;
        }
        let beside = backup_dir.is_none();
        config.backup = Some(engine::backup::Backup {
            dir: backup_dir,
            suffix,
            given: None,
            // (Only --delete-excluded deletes what it made: see `Made`.)
            made: if delete_excluded && beside {
                engine::backup::Made::kept()
            } else {
                Default::default()
            },
        });
    }
    let mut paths: Vec<OsString> = m
        .get_many::<OsString>("paths")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let info_words: Vec<&str> = m
        .get_many::<String>("info")
        .map(|v| v.map(String::as_str).collect())
        .unwrap_or_default();
    // (rsync reads --info while it parses the options: an unknown word, or HELP, ends the
    // parse there, whatever else is on the line.)
    let debug_words: Vec<&str> = m
        .get_many::<String>("debug")
        .map(|v| v.map(String::as_str).collect())
        .unwrap_or_default();
    let words_help = crate::info::Info::resolve(&crate::info::Given {
        info: &info_words,
        debug: &debug_words,
        ..Default::default()
    })
    .map_err(|e| usage(&e))?
    .err();
    let generate = if let Some(which) = words_help {
        Some(Generate::WordsHelp(which))
    } else if m.get_flag("gen-man") {
        Some(Generate::Man)
    } else {
        m.get_one::<String>("gen-completions")
            .map(|sh| Generate::Completions(sh.clone()))
    };
    let version = m.get_flag("version") || generate.is_some();
    let mut make_path = None;
    if !version {
        if paths.is_empty() {
            return Err(Refused::Clap(command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "need at least one SRC (and a DEST, or --list-only)",
            )));
        }
        if list_only {
            // As rsync: with two paths or more the last is still DEST, and is not listed.
            if paths.len() > 1 {
                paths.pop();
            }
            paths.push(OsString::from(crate::listing::NOWHERE));
        }
        if config.threads > 4096 {
            return Err(Refused::Clap(command().error(
                clap::error::ErrorKind::ValueValidation,
                "--threads must be between 0 and 4096",
            )));
        }
        let (dest, sources) = paths.split_last().expect("checked above");
        let files_from = m.get_one::<PathBuf>("files-from");
        let relative =
            m.get_flag("relative") || (files_from.is_some() && !m.get_flag("no-relative"));
        config.no_implied_dirs = m.get_flag("no-implied-dirs");
        let listed;
        let sources = match files_from {
            Some(list) => {
                if sources.len() != 1 {
                    return Err(usage(
                        "--files-from takes exactly one SRC: the directory the listed paths are relative to",
                    ));
                }
                let names = read_list(list, m.get_flag("from0")).map_err(|e| usage(&e))?;
                if relative {
                    listed = relative_list(&sources[0], &names);
                } else {
                    // --no-relative: each listed path is an ordinary source.
                    listed = names
                        .iter()
                        .map(|n| {
                            let mut p = sources[0].as_bytes().to_vec();
                            if !p.ends_with(b"/") {
                                p.push(b'/');
                            }
                            p.extend_from_slice(n);
                            OsString::from_vec(p)
                        })
                        .collect();
                }
                &listed[..]
            }
            None => sources,
        };
        let (roots, create, above) = if relative {
            plan_relative(
                sources,
                dest,
                (files_from.is_some(), config.recursive || dirs),
                &config,
                m.get_flag("mkpath"),
            )
        } else {
            plan(
                sources,
                dest,
                config.recursive || dirs,
                &config,
                m.get_flag("mkpath"),
            )
            .map(|(roots, create, above)| {
                if dirs && !config.recursive {
                    (roots.into_iter().map(dirs_only).collect(), create, above)
                } else {
                    (roots, create, above)
                }
            })
        }
        .map_err(Refused::Arg)?;
        // --mkpath makes every missing directory before the run, the destination directory
        // too when it is to be one (as rsync: the transfer then finds it there).
        let premade = m.get_flag("mkpath") && create.is_some() && !config.dry_run;
        make_path = if premade { create.clone() } else { above };
        config.dest_premade = premade;
        config.roots = roots;
        config.create_dest_dir = create;
    }
    if let Some(t) = m.get_one::<PathBuf>("temp-dir") {
        // A relative DIR is relative to the destination directory (rsync's receiver works
        // there); one this run is about to make is looked through by the text of the path.
        let (dir, dest_made) = match config.roots.first() {
            Some(root) if t.is_relative() => {
                let mut d = root.dst.clone();
                for _ in root.rel.components() {
                    d.pop();
                }
                let made = std::fs::symlink_metadata(&d).is_err();
                (d.join(t), made)
            }
            _ => (t.clone(), false),
        };
        let found = dir.is_dir() || (dest_made && engine::without_dot_dots(&dir).is_dir());
        if !found {
            return Err(usage(&format!(
                "The temp-dir does not exist: {}",
                t.display()
            )));
        }
        // As given: the engine takes a relative one from the destination directory (stored
        // joined, it was joined twice: `-T ../tmp` into `DEST/` failed as `DEST/DEST/../tmp`,
        // exit 11).
        config.temp_dir = Some(t.clone());
    }
    // Latency histograms cost two clock reads per timed step: only when someone reads them.
    config.measure = m.get_one::<PathBuf>("stats-json").is_some();
    let format = |id: &str, fallback: Option<&str>| {
        m.get_one::<String>(id)
            .map(String::as_str)
            .or(fallback)
            .map(|f| {
                crate::logfmt::Format::parse(f).map_err(|e| {
                    Refused::Clap(command().error(
                        clap::error::ErrorKind::ValueValidation,
                        format!("--{id}: {e}"),
                    ))
                })
            })
            .transpose()
    };
    // (Both given: the later one counts, as in rsync.)
    let last = |id: &str| m.index_of(id).filter(|_| m.contains_id(id));
    let (after, at) = match (last("stop-after"), last("stop-at")) {
        (Some(a), Some(b)) if a < b => (None, m.get_one::<String>("stop-at")),
        (Some(_), Some(_)) => (m.get_one::<String>("stop-after"), None),
        _ => (
            m.get_one::<String>("stop-after"),
            m.get_one::<String>("stop-at"),
        ),
    };
    let stop_at = match (after, at) {
        (Some(after), _) => {
            let d = crate::deadline::parse_stop_after(after).map_err(|e| usage(&e))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Some((now + d).as_secs() as i64 + i64::from((now + d).subsec_nanos() > 0))
        }
        (None, Some(at)) => Some(crate::deadline::parse_stop_at(at).map_err(|e| usage(&e))?),
        (None, None) => None,
    };
    let copy_as = match m.get_one::<String>("copy-as") {
        Some(spec) => Some(copy_as(spec).map_err(Refused::Arg)?),
        None => None,
    };
    let mpi = m.get_flag("mpi");
    if mpi {
        if !cfg!(feature = "mpi") {
            return Err(usage(
                "--mpi: this arsync was built without MPI support (build it with: cargo build --release --features mpi)",
            ));
        }
        if config.roots.len() != 1 {
            return Err(usage("--mpi copies one source tree: give one SRC and DST"));
        }
        if !config.alt_dest_dirs.is_empty() {
            return Err(usage(
                "--mpi cannot be combined with --link-dest, --compare-dest or --copy-dest",
            ));
        }
        if config.roots.iter().any(|r| r.select.is_some()) {
            return Err(usage(
                "--mpi cannot be combined with --files-from or -R/--relative",
            ));
        }
        if config.remove_source_files {
            return Err(usage("--mpi cannot be combined with --remove-source-files"));
        }
        if config.delay_updates {
            // Each rank's run ends on its own: no one moment puts every file in place.
            return Err(usage("--mpi cannot be combined with --delay-updates"));
        }
        if m.get_one::<u64>("timeout").is_some_and(|&t| t > 0) {
            return Err(usage("--mpi cannot be combined with --timeout"));
        }
        if config.temp_dir.is_some() {
            // Other ranks' pieces of a split file are written into its staged copy.
            return Err(usage("--mpi cannot be combined with -T/--temp-dir"));
        }
        if config.copy_devices || config.write_devices {
            // A device names something on one host only.
            return Err(usage(
                "--mpi cannot be combined with --copy-devices or --write-devices",
            ));
        }
        if config.append.is_some() {
            // The ranks split a large file into pieces written by several hosts.
            return Err(usage(
                "--mpi cannot be combined with --append or --append-verify",
            ));
        }
        if stop_at.is_some() {
            return Err(usage(
                "--mpi cannot be combined with --stop-after or --stop-at",
            ));
        }
        if matches!(
            config.delete,
            Some(engine::Delete::After | engine::Delete::Delay)
        ) {
            return Err(usage(
                "--mpi deletes during the walk: use --delete, not --delete-after/--delete-delay",
            ));
        }
    }
    let out_format = format("out-format", None)?;
    let log_format = format("log-file-format", Some(crate::logfmt::DEFAULT_LOG_FORMAT))?;
    let itemize = m.get_count("itemize-changes") > 0;
    // rsync's stdout_format and log_before_transfer: an --out-format (the item line written
    // before the transfer unless it shows %b or %c), else %i %n%L with -i.
    let listing_first = match &out_format {
        Some(f) => !f.shows(b'b') && !f.shows(b'c') && !f.shows(b'C'),
        None => itemize,
    };
    // %C: the engine reads back each file it writes (or, with -c, compares) to checksum it.
    config.item_checksums = out_format.as_ref().is_some_and(|f| f.shows(b'C'))
        || (m.contains_id("log-file") && log_format.as_ref().is_some_and(|f| f.shows(b'C')));
    let info = crate::info::Info::resolve(&crate::info::Given {
        info: &info_words,
        debug: &debug_words,
        verbose: m.get_count("verbose"),
        stats: m.get_flag("stats"),
        progress: m.get_flag("progress") || m.get_flag("partial-progress"),
        listing_first,
    })
    .map_err(|e| usage(&e))?
    .unwrap_or_default();
    let listing = out_format.or_else(|| {
        let fmt = if itemize {
            "%i %n%L"
        } else if info.level(crate::info::Flag::Name) > 0 {
            "%n%L"
        } else {
            return None;
        };
        Some(crate::logfmt::Format::parse(fmt).expect("a valid built-in format"))
    });
    config.debug_filter = info.debug_filter() > 0;
    // -ii, or --info=name2: unchanged entries are listed too (as item lines with %i, as
    // "NAME is uptodate" without).
    config.itemize_unchanged = m.get_count("itemize-changes") > 1
        || (info.level(crate::info::Flag::Name) > 1 && listing.is_some());
    let list_base = m
        .contains_id("files-from")
        .then(|| paths.first().map(PathBuf::from))
        .flatten();
    Ok(Parsed {
        out_to_stderr,
        outbuf,
        list_base,
        paths,
        log_file: m.get_one::<PathBuf>("log-file").cloned().zip(log_format),
        generate,
        info,
        listing,
        stats_json: m.get_one::<PathBuf>("stats-json").cloned(),
        make_path,
        mpi,
        config,
        verbose: m.get_count("verbose"),
        quiet: m.get_flag("quiet"),
        human: human_level(&events),
        version,
        list_only: list_only.then_some(list_targets),
        stop_at,
        idle_timeout: m
            .get_one::<u64>("timeout")
            .filter(|&&t| t > 0)
            .map(|&t| std::time::Duration::from_secs(t)),
        copy_as,
    })
}

/// The `-h` level, as rsync counts it: 1 by default (digits grouped by commas), one more for each
/// `-h`; `--no-h` sets it to 0 (the `-h`s after it count from there).
fn human_level(events: &[FlagAt<'_>]) -> u8 {
    events.iter().fold(1u8, |level, e| match *e {
        FlagAt::Short(b'h') | FlagAt::Long(b"human-readable") => (level + 1).min(3),
        FlagAt::Long(b"no-human-readable" | b"no-h") => 0,
        _ => level,
    })
}

/// The user and the group map as rsync's option parser takes them, in command-line order: each
/// given once, by `--usermap`/`--groupmap` or by a `--chown` naming that half (as `*:NAME`);
/// a second one is a usage error in rsync's words (before, the last one given won). Each map
/// with the flag it came from.
fn owner_maps(m: &clap::ArgMatches) -> Result<[Option<(&'static str, String)>; 2], Refused> {
    let mut given: Vec<(usize, &str, &String)> = Vec::new();
    for id in ["usermap", "groupmap", "chown"] {
        if let (Some(vals), Some(idx)) = (m.get_many::<String>(id), m.indices_of(id)) {
            given.extend(vals.zip(idx).map(|(v, i)| (i, id, v)));
        }
    }
    given.sort_by_key(|g| g.0);
    let mut maps: [Option<(&'static str, String)>; 2] = [None, None];
    for (_, id, v) in given {
        if id == "chown" {
            let (user, group) = v.split_once(':').unwrap_or((v, ""));
            for (k, part, half, flag) in [
                (0, user, "user", "--usermap"),
                (1, group, "group", "--groupmap"),
            ] {
                if part.is_empty() {
                    continue;
                }
                match &maps[k] {
                    Some(("--chown", _)) => {
                        return Err(usage(&format!(
                            "You can only specify a {half}-affecting --chown once."
                        )));
                    }
                    Some(_) => {
                        return Err(usage(&format!("--chown conflicts with prior {flag}.")));
                    }
                    None => maps[k] = Some(("--chown", format!("*:{part}"))),
                }
            }
        } else {
            let (k, flag) = if id == "usermap" {
                (0, "--usermap")
            } else {
                (1, "--groupmap")
            };
            match &maps[k] {
                Some(("--chown", _)) => {
                    return Err(usage(&format!("{flag} conflicts with prior --chown.")));
                }
                Some(_) => return Err(usage(&format!("You can only specify {flag} once."))),
                None => maps[k] = Some((flag, v.clone())),
            }
        }
    }
    Ok(maps)
}

/// A user or group map (the flag it came from, its spec) into `ids`; `lookup` finds a name's id.
fn id_map(
    ids: &mut engine::IdMap,
    map: Option<(&str, String)>,
    lookup: fn(&str) -> Option<u32>,
) -> Result<(), Refused> {
    let Some((flag, spec)) = map else {
        return Ok(());
    };
    ids.parse(&spec, lookup)
        .map_err(|e| usage(&format!("{flag}: {e}")))
}

/// The filter rules in command-line order, whichever option gave them.
/// The run's filter rules, in command-line order; on failure rsync's message and exit code (1
/// for a bad rule, 11 for a rules file that cannot be read).
fn filters(m: &clap::ArgMatches) -> Result<engine::Filters, (String, i32)> {
    let mut rules: Vec<(usize, &str, String)> = Vec::new();
    for id in ["exclude", "include", "filter"] {
        if let (Some(vals), Some(idx)) = (m.get_many::<String>(id), m.indices_of(id)) {
            for (v, i) in vals.zip(idx) {
                rules.push((i, id, v.clone()));
            }
        }
    }
    for (id, kind) in [("exclude-from", "exclude"), ("include-from", "include")] {
        if let (Some(vals), Some(idx)) = (m.get_many::<PathBuf>(id), m.indices_of(id)) {
            for (file, i) in vals.zip(idx) {
                let text = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())
                } else {
                    crate::trust::read_rules(file).and_then(|b| {
                        String::from_utf8(b)
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                    })
                }
                .map_err(|e| {
                    (
                        format!(
                            "failed to open {kind} file {}: {}",
                            file.display(),
                            crate::output::errno_text(&e)
                        ),
                        11,
                    )
                })?;
                let text = if m.get_flag("from0") {
                    text.replace('\0', "\n")
                } else {
                    text
                };
                rules.push((
                    i,
                    if kind == "exclude" {
                        "exclude-lines"
                    } else {
                        "include-lines"
                    },
                    text,
                ));
            }
        }
    }
    // -F: the first is `dir-merge /.rsync-filter`, a second `- .rsync-filter`, in place.
    // (clap gives one index for `-FF`: the second rule then follows the first in place.)
    let at: Vec<usize> = m.indices_of("F").map(Iterator::collect).unwrap_or_default();
    for k in 0..usize::from(m.get_count("F")).min(2) {
        if let Some(&i) = at.get(k).or(at.last()) {
            let rule = [": /.rsync-filter", "- .rsync-filter"][k];
            rules.push((i, "filter", rule.to_string()));
        }
    }
    rules.sort_by_key(|r| r.0);
    if m.get_flag("old-dirs") {
        rules.push((usize::MAX, "filter", "- /*/*".into()));
    }
    // -C: CVS's excludes and the per-directory .cvsignore files after every other rule.
    if m.get_flag("cvs-exclude") {
        rules.push((usize::MAX, "filter", "-C".into()));
        rules.push((usize::MAX, "filter", ":C".into()));
    }
    let mut f = engine::Filters::new();
    f.set_reader(crate::trust::read_rules);
    for (_, kind, v) in rules {
        match kind {
            "exclude" => f.exclude(&v),
            "include" => f.include(&v),
            "exclude-lines" => f.from_lines(&v, engine::filter::Action::Exclude),
            "include-lines" => f.from_lines(&v, engine::filter::Action::Include),
            _ => f.rule(&v),
        }
        .map_err(|e| (e, if f.read_failed() { 11 } else { 1 }))?;
    }
    Ok(f)
}

fn usage(message: &str) -> Refused {
    Refused::Clap(command().error(clap::error::ErrorKind::ArgumentConflict, message))
}

/// A byte size as rsync reads one: a number with an optional suffix, `K`/`KiB` = 1024 and
/// `KB` = 1000 (likewise M and G).
/// A size as rsync reads one: a number, a fraction allowed (`1.5M`), then an optional unit `B`,
/// `K`, `M`, `G`, `T` or `P` (powers of 1024; `KiB` the same; `KB` powers of 1000; any case),
/// then an optional `+1` or `-1` (one byte more or less).
/// `--bwlimit=RATE`: a size per second, in units of 1024 bytes when it has no suffix, at
/// least 512 bytes unless 0 (rsync's rules).
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let rate = if t.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
        parse_size(&format!("{t}K"))
    } else {
        parse_size(t)
    }
    .map_err(|_| {
        format!("{s:?} is not a rate (e.g. 500 for 500 KiB/s, 1.5M, 20MB, 0 for no limit)")
    })?;
    if rate > 0 && rate < 512 {
        return Err(format!(
            "{s:?} is too small: the least rate is 512 bytes a second"
        ));
    }
    Ok(rate)
}

/// `--max-alloc=SIZE` as rsync reads it: a size (bytes without a unit), 0 for no limit, else
/// at least 1 MiB; rsync's messages.
fn max_alloc(v: &str) -> Result<u64, ArgError> {
    let err = |message: String| ArgError {
        message,
        code: 1,
        notices: Vec::new(),
    };
    let n = parse_size(v).map_err(|_| err(format!("--max-alloc={v} is invalid")))?;
    if n != 0 && n < 1 << 20 {
        return Err(err(format!(
            "--max-alloc={v} is too small (min: 1.00M or 0 for unlimited)"
        )));
    }
    Ok(n)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size (e.g. 4096, 256K, 1.5M, 4GB, 2K-1)");
    let t = s.trim().to_ascii_lowercase();
    let (t, offset) = if let Some(r) = t.strip_suffix("+1") {
        (r, 1i128)
    } else if let Some(r) = t.strip_suffix("-1") {
        (r, -1)
    } else {
        (t.as_str(), 0)
    };
    let num_end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(bad());
    }
    let (letter, rest) = unit.split_at(unit.len().min(1));
    let power = match letter {
        "" | "b" if rest.is_empty() => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(bad()),
    };
    let base: u128 = match rest {
        "" | "ib" => 1024,
        "b" if power > 0 => 1000,
        _ => return Err(bad()),
    };
    let mul = base.pow(power);
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    // The fraction, exactly: digits over their power of ten, rounded down to whole bytes.
    let frac_bytes = if frac.is_empty() {
        0
    } else {
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.checked_pow(frac.len() as u32).ok_or_else(bad)?;
        digits.checked_mul(mul).ok_or_else(bad)? / scale
    };
    let bytes = whole
        .checked_mul(mul)
        .and_then(|b| b.checked_add(frac_bytes))
        .ok_or_else(|| format!("{s:?} is too large"))? as i128
        + offset;
    u64::try_from(bytes).map_err(|_| format!("{s:?} is out of range"))
}

fn has_trailing_slash(p: &OsString) -> bool {
    let b = p.as_bytes();
    b.ends_with(b"/") || b.ends_with(b"/.") || b == b"."
}

/// The name rsync shows for a source root: empty (shown as ".") for `src/`, else its last part.
fn shown_name(s: &OsString) -> PathBuf {
    if has_trailing_slash(s) {
        PathBuf::new()
    } else {
        PathBuf::from(base_name(Path::new(s)).unwrap_or_default())
    }
}

fn base_name(p: &Path) -> Option<OsString> {
    p.file_name().map(|n| n.to_os_string())
}

/// rsync's path semantics: which roots, and whether DEST must be created as a directory.
/// The roots of a run, the destination directory to create (one level, as rsync), and with
/// `--mkpath` the missing directories above it (or above the destination file) to create first.
type Plan = (Vec<engine::Root>, Option<PathBuf>, Option<PathBuf>);

fn plan(
    sources: &[OsString],
    dest: &OsString,
    recursive: bool,
    config: &engine::Config,
    mkpath: bool,
) -> Result<Plan, ArgError> {
    let dest_path = PathBuf::from(dest);
    let dest_is_dir = std::fs::metadata(&dest_path)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    let dest_exists = std::fs::symlink_metadata(&dest_path).is_ok();
    // rsync decides "file to file" on what it will actually transfer: a missing source is
    // reported and does not count, nor does a directory skipped for lack of -r.
    // (As the transfer sees it: a symlink to a directory is one only where it is followed, so
    // `SRC/link DEST` makes DEST the symlink, as rsync does; until session 34 DEST was made a
    // directory holding it.)
    let is_dir = |s: &OsString| copied_as_dir(Path::new(s), config);
    let transferable: Vec<&OsString> = sources
        .iter()
        .filter(|s| std::fs::symlink_metadata(PathBuf::from(s)).is_ok())
        .filter(|s| recursive || !is_dir(s))
        .collect();
    let to_one_name = transferable.len() <= 1
        && !dest_is_dir
        && !has_trailing_slash(dest)
        && transferable.first().is_none_or(|s| !is_dir(s));
    if to_one_name {
        let parent = dest_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let missing_parent = std::fs::metadata(parent).is_err();
        if missing_parent && !mkpath {
            let notices = sources
                .iter()
                .filter(|s| !recursive && is_dir(s))
                .map(|s| format!("skipping directory {}", shown_name(s).display()))
                .collect();
            return Err(ArgError {
                message: format!(
                    "change_dir \"{}\" failed: No such file or directory (2)",
                    parent.display()
                ),
                code: 3,
                notices,
            });
        }
        let roots = sources
            .iter()
            .map(|s| {
                let src = PathBuf::from(s);
                if transferable.first() == Some(&s) {
                    let rel = base_name(&dest_path).unwrap_or_default();
                    engine::Root {
                        src,
                        dst: dest_path.clone(),
                        rel: PathBuf::from(rel),
                        select: None,
                    }
                } else {
                    // Missing (reported by the engine) or a directory it will skip.
                    engine::Root {
                        dst: dest_path.join(base_name(&src).unwrap_or_default()),
                        rel: shown_name(s),
                        src,
                        select: None,
                    }
                }
            })
            .collect();
        return Ok((roots, None, missing_parent.then(|| parent.to_path_buf())));
    }
    if dest_exists && !dest_is_dir {
        // rsync refuses before anything is written (exit 3).
        return Err(ArgError {
            message: "destination must be a directory when copying more than 1 file".into(),
            code: 3,
            notices: Vec::new(),
        });
    }
    let mut roots = Vec::new();
    for s in sources {
        let src = PathBuf::from(s);
        if has_trailing_slash(s) {
            roots.push(engine::Root {
                src,
                dst: dest_path.clone(),
                rel: PathBuf::new(),
                select: None,
            });
            continue;
        }
        let Some(name) = base_name(&src) else {
            return Err(ArgError {
                message: format!("cannot tell the name of source {:?}", src.display()),
                code: 1,
                notices: Vec::new(),
            });
        };
        if name.as_bytes() == b".." {
            return Err(ArgError {
                message: format!(
                    "source {:?} has no name to copy under; add a trailing slash",
                    src.display()
                ),
                code: 1,
                notices: Vec::new(),
            });
        }
        roots.push(engine::Root {
            src,
            dst: dest_path.join(&name),
            rel: PathBuf::from(OsString::from_vec(name.into_vec())),
            select: None,
        });
    }
    if recursive {
        roots = guard_overlap(roots, config)?;
    }
    // rsync creates DEST (one level) when it is to be a directory; --mkpath what is above it.
    let create = (!dest_exists).then(|| dest_path.clone());
    let above = dest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && mkpath && std::fs::metadata(p).is_err())
        .map(Path::to_path_buf);
    Ok((roots, create, above))
}

/// `-d/--dirs` without `-r`: a directory root is made with its attributes and, named with a
/// trailing slash (its contents), its entries one level down (its subdirectories made empty).
fn dirs_only(mut root: engine::Root) -> engine::Root {
    if std::fs::metadata(&root.src).is_ok_and(|m| m.is_dir()) {
        let mut sel = engine::Selection::new();
        sel.add(b"", root.rel.as_os_str().is_empty());
        root.select = Some(Arc::new(sel));
    }
    root
}

/// The names of a `--files-from` list: one per line (per NUL-ended record with `--from0`); a
/// trailing carriage return is dropped; without `--from0`, blank lines and lines starting with
/// `#` or `;` are ignored, as rsync reads the list.
fn read_list(file: &Path, from0: bool) -> Result<Vec<Vec<u8>>, String> {
    use std::io::Read;
    let mut text = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut text)
    } else {
        crate::trust::read(file).map(|t| {
            text = t;
            text.len()
        })
    };
    read.map_err(|e| {
        // (rsync's words: the error's text without its number.)
        let e = crate::output::errno_text(&e);
        let e = e.rsplit_once(" (").map_or(e.as_str(), |(t, _)| t);
        format!("failed to open files-from file {}: {e}", file.display())
    })?;
    let sep = if from0 { 0 } else { b'\n' };
    Ok(text
        .split(|&c| c == sep)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty() && (from0 || !(l.starts_with(b"#") || l.starts_with(b";"))))
        .map(<[u8]>::to_vec)
        .collect())
}

/// The `--files-from` names as `-R` sources: `SRC/PREFIX/./PATH`, cleaned as rsync cleans
/// them (a name's first `/./` moves its prefix into the source directory).
fn relative_list(src: &OsString, names: &[Vec<u8>]) -> Vec<OsString> {
    names
        .iter()
        .map(|n| {
            let (prefix, path, contents) = engine::select::clean_list_name(n);
            let mut p = src.as_bytes().to_vec();
            if !prefix.is_empty() {
                p.push(b'/');
                p.extend_from_slice(&prefix);
            }
            p.extend_from_slice(b"/./");
            p.extend_from_slice(&path);
            if contents && !path.is_empty() {
                p.push(b'/');
            }
            OsString::from_vec(p)
        })
        .collect()
}

/// `-R/--relative` (and `--files-from`): every source is `BASE/./PATH` (or a path whose
/// directories are all replicated: `BASE` is `/` for an absolute one, else `.`); one root per
/// base, walking only the selected paths, all into DEST as a directory.
fn plan_relative(
    sources: &[OsString],
    dest: &OsString,
    (listed, recursive): (bool, bool),
    config: &engine::Config,
    mkpath: bool,
) -> Result<Plan, ArgError> {
    let dest_path = PathBuf::from(dest);
    if let Some(single) = single_top_entry(sources, config)
        && !has_trailing_slash(dest)
        && !std::fs::metadata(&dest_path).is_ok_and(|m| m.is_dir())
    {
        // One entry at the top and nothing else (no directory on its way): rsync copies it to
        // the name DEST, as without -R (until session 34 DEST was made a directory holding it).
        return plan(&[single], dest, recursive, config, mkpath);
    }
    let dest_exists = std::fs::symlink_metadata(&dest_path).is_ok();
    if dest_exists && !std::fs::metadata(&dest_path).is_ok_and(|m| m.is_dir()) {
        return Err(ArgError {
            message: "destination must be a directory when copying with -R/--files-from".into(),
            code: 3,
            notices: Vec::new(),
        });
    }
    let mut bases: Vec<(PathBuf, engine::Selection)> = Vec::new();
    for s in sources {
        let (base, rel) = relative_split(s.as_bytes());
        let contents = rel.is_empty() || rel.ends_with(b"/") || rel.ends_with(b"/.") || rel == b".";
        let mut parts: Vec<&[u8]> = Vec::new();
        for c in rel.split(|&c| c == b'/') {
            match c {
                b"" | b"." => {}
                b".." if !listed => {
                    return Err(ArgError {
                        message: format!(
                            "found \"..\" dir in relative path: {}",
                            s.to_string_lossy()
                        ),
                        code: 1,
                        notices: Vec::new(),
                    });
                }
                b".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        let base = PathBuf::from(OsStr::from_bytes(base));
        match std::fs::metadata(&base) {
            Ok(m) if m.is_dir() => {}
            Ok(_) | Err(_) if listed => {
                let e = std::fs::metadata(&base)
                    .map_or_else(|e| e, |_| std::io::Error::from_raw_os_error(libc::ENOTDIR));
                return Err(ArgError {
                    message: format!(
                        "change_dir \"{}\" failed: {}",
                        base.display(),
                        engine_error_text(&e)
                    ),
                    code: 3,
                    notices: Vec::new(),
                });
            }
            // (A missing -R source is reported by the engine, as any missing name.)
            _ => {}
        }
        let path = parts.join(&b'/');
        match bases.iter_mut().find(|(b, _)| *b == base) {
            Some((_, sel)) => sel.add(&path, contents),
            None => {
                let mut sel = engine::Selection::new();
                sel.add(&path, contents);
                bases.push((base, sel));
            }
        }
    }
    let roots = bases
        .into_iter()
        .map(|(base, sel)| engine::Root {
            src: base,
            dst: dest_path.clone(),
            rel: PathBuf::new(),
            select: Some(Arc::new(sel)),
        })
        .collect();
    let create = (!dest_exists).then(|| dest_path.clone());
    let above = dest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && mkpath && std::fs::metadata(p).is_err())
        .map(Path::to_path_buf);
    Ok((roots, create, above))
}

/// A `-R` source split at its `/./` into the directory the path is relative to and that path
/// (no `/./`: relative to `.`, or to `/` for an absolute path, whose path keeps its `/`).
fn relative_split(b: &[u8]) -> (&[u8], &[u8]) {
    match b.windows(3).position(|w| w == b"/./") {
        Some(0) => (b"/", &b[3..]),
        Some(i) => (&b[..i], &b[i + 3..]),
        None if b.starts_with(b"/") => (b"/", b),
        None => (b".", b),
    }
}

/// `-R`/`--files-from` naming a single entry at the top of its base (`base/./name`), which exists
/// and is no directory as the transfer sees it: the path of that entry.
fn single_top_entry(sources: &[OsString], config: &engine::Config) -> Option<OsString> {
    let [s] = sources else { return None };
    let (base, rel) = relative_split(s.as_bytes());
    let parts: Vec<&[u8]> = rel
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let [name] = parts[..] else { return None };
    if name == b".." || rel.ends_with(b"/") || rel.starts_with(b"/") {
        return None;
    }
    let mut path = base.to_vec();
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    let path = OsString::from_vec(path);
    let there = std::fs::symlink_metadata(&path).is_ok();
    (there && !copied_as_dir(Path::new(&path), config)).then_some(path)
}

/// An OS error as rsync prints it: `Text (errno)`.
fn engine_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match e.raw_os_error() {
        Some(n) => format!("{text} ({n})"),
        None => text,
    }
}

/// Where a path is, symlinks resolved, even if its last component does not exist yet.
fn resolved(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p)
        .ok()
        .or_else(|| in_resolved_parent(p))
}

/// A path's last component in its parent directory, symlinks resolved above it only.
fn in_resolved_parent(p: &Path) -> Option<PathBuf> {
    let parent = p
        .parent()
        .filter(|x| !x.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
}

/// Whether a root is copied as a directory: a directory, or a symlink to one that is followed
/// (a trailing slash, `-L`, `-k`, or `--copy-unsafe-links` for an unsafe one). A symlink copied
/// as a symlink is no directory that could overlap its destination.
fn copied_as_dir(src: &Path, config: &engine::Config) -> bool {
    let Ok(m) = std::fs::symlink_metadata(src) else {
        return false;
    };
    if !m.file_type().is_symlink() {
        return m.is_dir();
    }
    config.follows_symlinks()
        && std::fs::metadata(src).is_ok_and(|m| m.is_dir())
        && (config.copy_links
            || config.copy_dirlinks
            || (config.copy_unsafe_links
                && std::fs::read_link(src)
                    .is_ok_and(|t| engine::unsafe_symlink_target(t.as_os_str().as_bytes(), 0))))
}

/// A directory copied onto itself has nothing to do (its root is dropped); a destination inside
/// the directory being copied would copy its own output again and again, so it is refused before
/// anything is written. A root's destination entry that is a symlink is replaced, not followed
/// (unless `-K`), so it is where it is, not where it points: a followed source symlink and a
/// destination symlink to the same directory are a copy to make, not a copy onto itself (until
/// session 34 the root was dropped without a word, where rsync replaces the symlink).
fn guard_overlap(
    roots: Vec<engine::Root>,
    config: &engine::Config,
) -> Result<Vec<engine::Root>, ArgError> {
    let filters = &config.filters;
    let mut kept = Vec::with_capacity(roots.len());
    for r in roots {
        let src_is_dir = copied_as_dir(&r.src, config);
        let entry = !r.rel.as_os_str().is_empty();
        let dst = if entry
            && !config.keep_dirlinks
            && std::fs::symlink_metadata(&r.dst).is_ok_and(|m| m.file_type().is_symlink())
        {
            in_resolved_parent(&r.dst)
        } else {
            resolved(&r.dst)
        };
        if let (true, Some(src), Some(dst)) = (src_is_dir, resolved(&r.src), dst) {
            if src == dst {
                continue;
            }
            // A destination that the filters keep out of the transfer is never scanned.
            let excluded = dst.strip_prefix(&src).is_ok_and(|below| {
                let (mut path, mut full) = (r.rel.clone(), src.clone());
                below.components().any(|c| {
                    path.push(c);
                    full.push(c);
                    let abs = || full.as_os_str().as_bytes()[1..].to_vec();
                    filters.excludes_at(path.as_os_str().as_bytes(), true, None, &abs)
                })
            });
            if dst.starts_with(&src) && !excluded {
                return Err(ArgError {
                    message: format!(
                        "destination {:?} is inside the source {:?}: refused (the copy would copy itself)",
                        r.dst.display(),
                        r.src.display()
                    ),
                    code: 1,
                    notices: Vec::new(),
                });
            }
        }
        kept.push(r);
    }
    Ok(kept)
}

/// Write the man page or a completion script, generated from the same definitions as `--help`.
pub fn generate(what: &Generate, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = command();
    match what {
        Generate::Man => clap_mangen::Man::new(cmd).render(out),
        Generate::WordsHelp(which) => out.write_all(crate::info::help(which).as_bytes()),
        Generate::Completions(shell) => {
            let shell = match shell.as_str() {
                "zsh" => clap_complete::Shell::Zsh,
                "fish" => clap_complete::Shell::Fish,
                _ => clap_complete::Shell::Bash,
            };
            let mut cmd = cmd;
            clap_complete::generate(shell, &mut cmd, "arsync", out);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_rate, parse_size};

    #[test]
    fn rates_read_as_rsync_reads_them() {
        for (s, want) in [
            ("0", 0),
            ("500", 500 << 10),
            ("1.5", 1536),
            ("1.5M", 3 << 19),
            ("20MB", 20_000_000),
            ("512b", 512),
            ("1g", 1 << 30),
        ] {
            assert_eq!(parse_rate(s), Ok(want), "{s}");
        }
        for s in ["", "fast", "100b", "0.1", "2Q"] {
            assert!(parse_rate(s).is_err(), "{s} was accepted");
        }
    }

    #[test]
    fn sizes_read_as_rsync_reads_them() {
        for (s, want) in [
            ("0", 0),
            ("4096", 4096),
            ("100b", 100),
            ("2K", 2048),
            ("2k", 2048),
            ("2KiB", 2048),
            ("2KB", 2000),
            ("2kb", 2000),
            ("1.5k", 1536),
            ("1.5M", 3 << 19),
            ("2K-1", 2047),
            ("2K+1", 2049),
            ("1G", 1 << 30),
            ("1t", 1 << 40),
            ("1P", 1 << 50),
            ("4.9K", 5017),
            (".5k", 512),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for s in [
            "",
            "abc",
            "2Q",
            "1.2.3",
            "k",
            "2bb",
            "0-1",
            "99999999999P",
            "2Kix",
        ] {
            assert!(parse_size(s).is_err(), "{s} was accepted");
        }
    }
}
