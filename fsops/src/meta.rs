//! The metadata model and the order it is applied in.
//!
//! # Order (DESIGN.md section 5)
//!
//! Regular file: create under a temporary name → write content → `fchown` (it clears
//! setuid/setgid and `security.capability`, so it comes first) → xattrs, then ACLs → `fchmod` with the final
//! mode including the special bits → `futimens` (mtime; atime only with `-U`) → the caller renames
//! it into place. The create mode is private (0600) unless the final owner is already the creator's
//! and the final mode has no special bits: then the file is created with its final permission bits
//! (the process umask is 0 during a run) and the `fchmod` is skipped, one syscall less per file.
//! Not for a read-only file copied with `-X` by a user who is not root: the kernel gives `user.*`
//! attributes only to a writer of the inode, so it is made 0600 too. An *existing* read-only
//! entry that needs attributes gets its owner's write bit while they are set
//! ([`with_owner_write`], as rsync), and an existing entry's owner is compared as it is
//! ([`apply_fd_existing`]), not as a fresh entry would have it.
//!
//! A refused `chown` (super-user activities asked for, `--super`, by a user who lacks them) does
//! not stop the rest: mode and times are still given and the refusal is the result, so the
//! entry's error is reported while it keeps what could be given.
//!
//! Directory: created 0700, filled, then the same steps after its last child, so its mtime holds
//! and a 0555 directory never blocks its own children; with `-p` only its setgid bit is given
//! before it is filled (the engine's `dest_dir_facts`, as rsync gives a directory its mode
//! first), so what is made in it gets the group rsync's copy gets. Symlink: `fchownat`/`utimensat` with
//! `AT_SYMLINK_NOFOLLOW`, no mode. Device, FIFO, socket: created 0600 by `mknodat`, then by name.
//!
//! Without `-p` a new entry gets the source's permission bits masked by what its directory allows
//! ([`MadeIn`]: the directory's default ACL where it has one, else the umask the process had),
//! special bits dropped, but for the setgid bit a directory made in a setgid one has from the
//! kernel (rsync's `dest_mode` and `set_file_attrs`). Without `-o`/`-g`, or when not root for `-o`, the
//! owner is left as created (rsync is silent about it too).

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::{self, Time};

/// The attributes of one entry, from `stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Number of hard links.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status change time (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

impl Stat {
    /// From a kernel `stat64`.
    pub fn from_stat(st: &libc::stat64) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: (st.st_atime, st.st_atime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// The file type.
    pub fn file_type(&self) -> crate::FileType {
        crate::FileType::from_mode(self.mode)
    }

    /// Permission and special bits (`mode & 07777`).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// `--chmod`: rsync's permission modifiers, applied to a source entry's mode before it is used
/// for the destination: comma-separated items, each optionally `D` (directories only) or `F`
/// (everything else), then either octal digits (`D755`) or `[ugoa]*` and one of `+`, `-`, `=`
/// with `[rwxXst]*` (`go-w`, `Fa+r`, `u=rwX`). Without `ugoa`, rsync applies the umask to the
/// bits (`+w` under umask 022 is `u+w`). A port of rsync's `parse_chmod`/`tweak_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chmod {
    rules: [ChmodRule; Chmod::MAX],
    len: u8,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ChmodRule {
    /// An octal item: the exact permission bits.
    set: Option<u32>,
    /// `ugoa` as rsync encodes them (0o100, 0o010, 0o001 each), 0o111 when none was given.
    who: u32,
    op: u8,
    /// `rwx` as 4, 2, 1.
    what: u32,
    /// `g=u` and the like: the bits are copied from this class (a shift: 6, 3 or 0).
    copy: Option<u32>,
    /// The set-id bits of the classes named (`u`: setuid, `g`: setgid).
    top: u32,
    /// The set-id and sticky bits the item sets (`s`, `t`).
    top_oct: u32,
    /// Without `ugoa`: the complement of the umask.
    mask: u32,
    dirs_only: bool,
    files_only: bool,
    /// `X`: execute only for directories and files that have some execute bit.
    x_keep: bool,
}

impl Chmod {
    /// At most this many items in all.
    pub const MAX: usize = 32;

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add the items of one `--chmod` value; `umask` is the process's (for items without
    /// `ugoa`).
    pub fn parse(&mut self, spec: &str, umask: u32) -> Result<(), String> {
        let bad = || format!("invalid --chmod value: {spec:?}");
        for item in spec.split(',') {
            let b = item.as_bytes();
            let mut i = 0;
            let mut rule = ChmodRule {
                mask: 0o7777,
                ..ChmodRule::default()
            };
            while i < b.len() && matches!(b[i], b'D' | b'F') {
                match b[i] {
                    b'D' if !rule.files_only => rule.dirs_only = true,
                    b'F' if !rule.dirs_only => rule.files_only = true,
                    _ => return Err(bad()),
                }
                i += 1;
            }
            if i < b.len() && b[i].is_ascii_digit() {
                let digits = &item[i..];
                if !digits.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
                    return Err(bad());
                }
                let v = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
                if v > 0o7777 {
                    return Err(bad());
                }
                rule.set = Some(v);
            } else {
                while i < b.len() && matches!(b[i], b'u' | b'g' | b'o' | b'a') {
                    match b[i] {
                        b'u' => {
                            rule.who |= 0o100;
                            rule.top |= 0o4000;
                        }
                        b'g' => {
                            rule.who |= 0o010;
                            rule.top |= 0o2000;
                        }
                        b'o' => rule.who |= 0o001,
                        _ => rule.who |= 0o111,
                    }
                    i += 1;
                }
                rule.op = *b.get(i).ok_or_else(bad)?;
                if !matches!(rule.op, b'+' | b'-' | b'=') {
                    return Err(bad());
                }
                i += 1;
                let rest = &b[i..];
                match rest {
                    b"u" => rule.copy = Some(6),
                    b"g" => rule.copy = Some(3),
                    b"o" => rule.copy = Some(0),
                    _ => {
                        for &c in rest {
                            match c {
                                b'r' => rule.what |= 4,
                                b'w' => rule.what |= 2,
                                b'x' => rule.what |= 1,
                                b'X' => {
                                    rule.x_keep = true;
                                    rule.what |= 1;
                                }
                                b's' => {
                                    rule.top_oct |= if rule.top != 0 { rule.top } else { 0o4000 }
                                }
                                b't' => rule.top_oct |= 0o1000,
                                _ => return Err(bad()),
                            }
                        }
                    }
                }
                if rule.who == 0 {
                    rule.who = 0o111;
                    rule.mask = !umask & 0o7777;
                }
            }
            if usize::from(self.len) == Self::MAX {
                return Err(format!("at most {} --chmod items", Self::MAX));
            }
            self.rules[usize::from(self.len)] = rule;
            self.len += 1;
        }
        Ok(())
    }

    /// `mode` (type bits included) with the items applied in order.
    pub fn apply(&self, mode: u32) -> u32 {
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        let was_x = mode & 0o111 != 0;
        let kind = mode & !0o7777;
        let all = 0o7777;
        let mut m = mode & all;
        for r in &self.rules[..usize::from(self.len)] {
            if r.dirs_only && !is_dir || r.files_only && is_dir {
                continue;
            }
            if let Some(v) = r.set {
                m = v;
                continue;
            }
            // A copied class (`g=u`) brings its rwx bits only; `=` then clears the set-id bits
            // of the classes named too (as rsync 3.5 does).
            let (what, top_oct, clear_top) = match r.copy {
                Some(shift) => ((m >> shift) & 7, 0, r.top),
                None => (r.what, r.top_oct, if r.top_oct != 0 { r.top } else { 0 }),
            };
            let bits = (r.who * what) & r.mask;
            let (and, or) = match r.op {
                b'+' => (all, bits | top_oct),
                b'-' => (all & !(bits | top_oct), 0),
                _ => (all & !(r.who * 7) & !clear_top, bits | top_oct),
            };
            m &= and;
            m |= if r.x_keep && !was_x && !is_dir {
                or & !0o111
            } else {
                or
            };
        }
        m | kind
    }
}

/// `--usermap`/`--groupmap`/`--chown`: which destination id a source id becomes. Rules are
/// tried in order, the first that matches wins, and an id no rule matches stays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// (lowest, highest, new id) of each rule.
    rules: [(u32, u32, u32); IdMap::MAX],
    len: u8,
}

impl IdMap {
    /// At most this many rules.
    pub const MAX: usize = 32;

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The id `id` becomes.
    pub fn map(&self, id: u32) -> u32 {
        self.rules[..usize::from(self.len)]
            .iter()
            .find(|r| (r.0..=r.1).contains(&id))
            .map_or(id, |r| r.2)
    }

    /// Add the rules of one `--usermap`/`--groupmap` value, rsync's `FROM:TO[,FROM:TO...]`:
    /// FROM is `*` (every id), a number, a range `LOW-HIGH`, or a name (the id it has here: a
    /// local copy has one user database); TO is a name or a number. `id_of` looks a name up.
    /// Name patterns other than `*` are refused.
    pub fn parse(&mut self, spec: &str, id_of: impl Fn(&str) -> Option<u32>) -> Result<(), String> {
        for item in spec.split(',') {
            let (from, to) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("{item:?} is not FROM:TO"))?;
            let to = Self::id(to, &id_of)?;
            let (lo, hi) = if from == "*" {
                (0, u32::MAX)
            } else if let Some((a, b)) = from.split_once('-')
                && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
            {
                let bad = || format!("bad range {from:?} (LOW-HIGH, both given)");
                (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
            } else if from.bytes().any(|c| matches!(c, b'*' | b'?' | b'[')) {
                return Err(format!(
                    "name patterns other than * are not supported: {from:?}"
                ));
            } else {
                let id = Self::id(from, &id_of)?;
                (id, id)
            };
            self.push(lo, hi, to)?;
        }
        Ok(())
    }

    /// Map every id to `to` (`--chown`).
    pub fn all_to(&mut self, to: u32) -> Result<(), String> {
        self.push(0, u32::MAX, to)
    }

    fn push(&mut self, lo: u32, hi: u32, to: u32) -> Result<(), String> {
        if usize::from(self.len) == Self::MAX {
            return Err(format!("at most {} id mapping rules", Self::MAX));
        }
        self.rules[usize::from(self.len)] = (lo, hi, to);
        self.len += 1;
        Ok(())
    }

    fn id(s: &str, id_of: &impl Fn(&str) -> Option<u32>) -> Result<u32, String> {
        if is_number(s) {
            return s.parse().map_err(|_| format!("bad id {s:?}"));
        }
        id_of(s).ok_or_else(|| format!("unknown user or group {s:?}"))
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// A user or group as rsync reads one on its command line: all digits is the id itself, else
/// a name looked up with `id_of` (`None`: no such name, or a number out of range).
pub fn name_or_id(s: &str, id_of: impl Fn(&str) -> Option<u32>) -> Option<u32> {
    if is_number(s) {
        s.parse().ok()
    } else {
        id_of(s)
    }
}

/// rsync's `x` filter rules: the extended attribute names a run leaves alone (not copied, not
/// compared, not removed from a destination). A test made once per process (the run's rules),
/// kept for the life of the process so that the policy stays `Copy`.
#[derive(Clone, Copy, Default)]
pub struct XattrFilter(Option<&'static NameTest>);

/// A test of an attribute name.
type NameTest = dyn Fn(&[u8]) -> bool + Send + Sync;

impl XattrFilter {
    /// A filter leaving alone the names `excluded` says.
    pub fn new(excluded: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Box::leak(Box::new(excluded))))
    }

    /// Whether the run leaves attribute `name` alone.
    pub fn excludes(&self, name: &[u8]) -> bool {
        self.0.is_some_and(|f| f(name))
    }
}

impl std::fmt::Debug for XattrFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "XattrFilter(rules)"
        } else {
            "XattrFilter(none)"
        })
    }
}

/// What an entry made in a destination directory gets from that directory (one `fstat`, and
/// without `-p` one `fgetxattr`, per directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadeIn {
    /// The group it is created with: the directory's own when the directory is setgid, else
    /// the process's effective gid.
    pub gid: u32,
    /// The directory is setgid, so a directory made in it is too: without `-p` it keeps the
    /// bit, as rsync's `set_file_attrs` keeps it (a shared group directory stays shared).
    pub setgid: bool,
    /// The permission bits a new entry may have without `-p` (rsync's `dflt_perms`): those of
    /// the directory's default ACL where it has one (its owner's, mask's and others' entries),
    /// else `0777` less the umask.
    pub perms: u32,
    /// The directory has a default ACL: the mode a file is created with is then cut by that
    /// ACL instead of the umask, so a copy's bits are set by `fchmod` after the create.
    pub default_acl: bool,
}

impl MadeIn {
    /// For a directory with neither setgid nor a default ACL, whose new entries get `gid`.
    pub fn plain(gid: u32, umask: u32) -> Self {
        MadeIn {
            gid,
            setgid: false,
            perms: 0o777 & !umask,
            default_acl: false,
        }
    }

    /// The mode a directory made without a source of its own (one on the way to a path, the
    /// destination itself) is given, where these are its own facts: what `mkdir` alone would
    /// leave, the setgid bit it inherited included.
    pub fn default_dir_mode(&self) -> u32 {
        if self.setgid {
            self.perms | libc::S_ISGID
        } else {
            self.perms
        }
    }
}

/// Which attributes to preserve and the facts about the process that decide how.
#[derive(Clone, Copy, Debug)]
pub struct MetaPolicy {
    /// `-p`: permissions, including setuid/setgid/sticky.
    pub perms: bool,
    /// `-t`: modification times.
    pub times: bool,
    /// `-O`: not for directories.
    pub omit_dir_times: bool,
    /// `-J`: not for symlinks.
    pub omit_link_times: bool,
    /// `-U`: access times.
    pub atimes: bool,
    /// `-o`: owner (honoured only when running as root, as rsync).
    pub owner: bool,
    /// `-g`: group.
    pub group: bool,
    /// The umask the process had before the run set it to 0.
    pub umask: u32,
    /// Effective uid of the process.
    pub euid: u32,
    /// Super-user activities (rsync's `am_root`): owners set with `-o`, every group with `-g`,
    /// devices made with `-D`, every extended attribute namespace with `-X`, and a refused
    /// `chown` an error. Root's unless `--super` (a user who may do them, or wants the errors)
    /// or `--no-super` (root acting as a user) says otherwise.
    pub root: bool,
    /// The groups the process is in (its effective and supplementary groups, sorted): without
    /// super-user activities, the only ones a copy is given (rsync's `is_in_group`).
    pub groups: &'static [u32],
    /// Effective gid of the process.
    pub egid: u32,
    /// `-X`: extended attributes.
    pub xattrs: bool,
    /// `-A`: POSIX ACLs.
    pub acls: bool,
    /// `--chmod`: applied to the source's permission bits first.
    pub chmod: Chmod,
    /// `--usermap`/`--chown`: applied to the source's uid first.
    pub uid_map: IdMap,
    /// `--groupmap`/`--chown`: applied to the source's gid first.
    pub gid_map: IdMap,
    /// `-E`: without `-p`, a regular file's executability follows the source's.
    pub executability: bool,
    /// The `x` filter rules: attribute names left alone (ACLs are not among the names they
    /// see, as in rsync).
    pub xattr_filter: XattrFilter,
}

impl MetaPolicy {
    /// The owner and group a copy of `src` should have: its own, through `--usermap`,
    /// `--groupmap` and `--chown`.
    pub fn ids(&self, src: &Stat) -> (u32, u32) {
        (self.uid_map.map(src.uid), self.gid_map.map(src.gid))
    }

    /// The uid/gid to pass to `chown` (`u32::MAX` = leave), given what a fresh entry got at
    /// creation (`created_gid`: the egid, or the parent's gid under a setgid directory).
    pub fn chown_ids(&self, src: &Stat, created_gid: u32) -> Option<(u32, u32)> {
        let (src_uid, src_gid) = self.ids(src);
        let uid = if self.owner && self.root && src_uid != self.euid {
            src_uid
        } else {
            u32::MAX
        };
        let gid = if self.group && src_gid != created_gid && self.may_set_group(src_gid) {
            src_gid
        } else {
            u32::MAX
        };
        (uid != u32::MAX || gid != u32::MAX).then_some((uid, gid))
    }

    /// The uid/gid to pass to `chown` (`u32::MAX` = leave) to give an *existing* file `dst`
    /// (made by anyone) the owner and group of `src`; `None` when both already match.
    pub fn chown_existing(&self, dst: &Stat, src: &Stat) -> Option<(u32, u32)> {
        let (src_uid, src_gid) = self.ids(src);
        let uid = if self.owner && self.root && dst.uid != src_uid {
            src_uid
        } else {
            u32::MAX
        };
        let gid = if self.group && dst.gid != src_gid && self.may_set_group(src_gid) {
            src_gid
        } else {
            u32::MAX
        };
        (uid != u32::MAX || gid != u32::MAX).then_some((uid, gid))
    }

    /// Whether `--usermap`, `--groupmap` or `--chown` change ids on the way.
    pub fn maps_ids(&self) -> bool {
        !self.uid_map.is_empty() || !self.gid_map.is_empty()
    }

    /// The id an ACL entry naming user (`user`) or group `id` gets in the copy: the maps' (as
    /// rsync's `match_acl_ids` gives them, `--chown`'s `*:NAME` included).
    pub fn acl_id(&self, user: bool, id: u32) -> u32 {
        if user {
            self.uid_map.map(id)
        } else {
            self.gid_map.map(id)
        }
    }

    /// Whether a copy may be given group `gid`: any with super-user activities, else one of the
    /// process's own (a copy keeps the group it was made with otherwise, as rsync's).
    pub fn may_set_group(&self, gid: u32) -> bool {
        self.root || self.groups.binary_search(&gid).is_ok()
    }

    /// Whether attribute `name` is copied: ACLs with `-A`; with `-X` every namespace the caller
    /// may set (all of `user.*`, `trusted.*`, `security.*` as root; `user.*` otherwise).
    pub fn xattr_wanted(&self, name: &[u8]) -> bool {
        if crate::xattr::is_acl(name) {
            return self.acls;
        }
        if !self.xattrs || self.xattr_filter.excludes(name) {
            return false;
        }
        if self.root {
            name.starts_with(b"user.")
                || name.starts_with(b"trusted.")
                || name.starts_with(b"security.")
        } else {
            name.starts_with(b"user.")
        }
    }

    /// The permission bits `-p` gives a copy of `src`: its own, through `--chmod`.
    pub fn perm_bits(&self, src: &Stat) -> u32 {
        if self.chmod.is_empty() {
            src.perm()
        } else {
            self.chmod.apply(src.mode) & 0o7777
        }
    }

    /// The final permission bits of a new entry made in a directory that gives it `made_in`
    /// (rsync's `dest_mode` for a new file): with `-p` [`MetaPolicy::perm_bits`]; without, those
    /// bits less the special ones, within what the directory allows (its default ACL, else the
    /// umask), and a directory made in a setgid one keeps the setgid bit it was made with.
    pub fn final_perm(&self, src: &Stat, made_in: &MadeIn) -> u32 {
        let perm = self.perm_bits(src);
        if self.perms {
            perm
        } else if made_in.setgid && src.file_type() == crate::FileType::Dir {
            perm & made_in.perms | libc::S_ISGID
        } else {
            perm & made_in.perms
        }
    }

    /// The permission bits a copy of `src` gets where the destination had an entry with
    /// permissions `old` (rsync's `dest_mode`): without `-p` the entry keeps its own, with `-E`
    /// made executable (an `x` for each `r`) or not as the source is; with `-p`
    /// [`MetaPolicy::perm_bits`].
    pub fn existing_perm(&self, src: &Stat, old: u32) -> u32 {
        if self.perms {
            return self.perm_bits(src);
        }
        let mut m = old & 0o7777;
        if self.executability && src.file_type() == crate::FileType::File {
            if src.mode & 0o111 == 0 {
                m &= !0o111;
            } else if old & 0o111 == 0 {
                m |= (m & 0o444) >> 2;
            }
        }
        m
    }

    /// [`MetaPolicy::existing_perm`] where the destination had an entry with permissions
    /// `existing`, else [`MetaPolicy::final_perm`] for a new one made where `made_in` says.
    pub fn dest_perm(&self, src: &Stat, existing: Option<u32>, made_in: &MadeIn) -> u32 {
        match existing {
            Some(old) => self.existing_perm(src, old),
            None => self.final_perm(src, made_in),
        }
    }

    /// The mode to create a new regular file with, and whether a later `fchmod` is needed.
    pub fn create_mode(&self, src: &Stat, needs_chown: bool, made_in: &MadeIn) -> (u32, bool) {
        let fin = self.final_perm(src, made_in);
        // (A user sets `user.*` attributes only on a file it may write: see `with_owner_write`.
        // A default ACL would cut the bits instead of the umask, which is 0 during a run.)
        let private = needs_chown
            || fin & 0o7000 != 0
            || (self.xattrs && self.lacks_write(fin))
            || made_in.default_acl;
        if private { (0o600, true) } else { (fin, false) }
    }

    /// Whether this process, not being root, may not write an entry of mode `perm` it owns:
    /// the kernel then refuses it `user.*` attributes (it asks for write access to the inode,
    /// whatever the descriptor was opened for), which root's `CAP_DAC_OVERRIDE` passes.
    pub fn lacks_write(&self, perm: u32) -> bool {
        self.euid != 0 && perm & 0o200 == 0
    }

    /// Whether the mtime of an entry of type `ft` is preserved: `-t`, less directories with
    /// `-O` and symlinks with `-J`.
    pub fn keeps_mtime(&self, ft: crate::FileType) -> bool {
        self.times
            && !(ft == crate::FileType::Dir && self.omit_dir_times)
            && !(ft == crate::FileType::Symlink && self.omit_link_times)
    }

    /// The (atime, mtime) to set on a copy of `src`, or `None` when neither is preserved.
    pub fn times(&self, src: &Stat) -> Option<(Time, Time)> {
        let keep_m = self.keeps_mtime(src.file_type());
        if !keep_m && !self.atimes {
            return None;
        }
        let m = if keep_m {
            Time::At(src.mtime.0, src.mtime.1)
        } else {
            Time::Omit
        };
        let a = if self.atimes {
            Time::At(src.atime.0, src.atime.1)
        } else {
            Time::Omit
        };
        Some((a, m))
    }
}

/// Whether an existing destination entry `dst` already has every attribute the policy would give
/// it from `src` (permission bits with `-p`, owner as root with `-o`, group with `-g`, mtime with
/// `-t`), so that touching it can be skipped (extended attributes are not compared).
pub fn matches(dst: &Stat, src: &Stat, policy: &MetaPolicy, is_symlink: bool) -> bool {
    (is_symlink || !policy.perms || dst.perm() == policy.perm_bits(src))
        && (!policy.owner || !policy.root || dst.uid == policy.ids(src).0)
        && (!policy.group
            || !policy.may_set_group(policy.ids(src).1)
            || dst.gid == policy.ids(src).1)
        && (!policy.keeps_mtime(src.file_type()) || dst.mtime == src.mtime)
}

/// Run `f` (which sets extended attributes on `fd`, an entry of mode `perm`) with the owner's
/// write bit added for its duration when the process lacks it ([`MetaPolicy::lacks_write`]),
/// and `perm` back after, as rsync does for a read-only file it gives attributes to. Not the
/// owner: the mode stays and `f` reports what the kernel says.
pub fn with_owner_write<T>(
    fd: BorrowedFd<'_>,
    perm: u32,
    policy: &MetaPolicy,
    f: impl FnOnce() -> T,
) -> T {
    let added = policy.xattrs && policy.lacks_write(perm) && sys::fchmod(fd, perm | 0o200).is_ok();
    let r = f();
    if added {
        let _ = sys::fchmod(fd, perm);
    }
    r
}

/// Which metadata step failed, for the error report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaOp {
    /// chown / fchown / fchownat.
    Chown,
    /// Extended attributes or ACLs.
    Xattr,
    /// chmod / fchmod / fchmodat.
    Chmod,
    /// futimens / utimensat.
    Utimes,
    /// Reading the source's extended attributes or ACLs (to compare them).
    ReadSrcXattrs,
    /// Reading the destination's extended attributes or ACLs (to compare them).
    ReadDstXattrs,
}

impl MetaOp {
    /// The syscall name for messages.
    pub fn name(self) -> &'static str {
        match self {
            MetaOp::Chown => "chown",
            MetaOp::Xattr => "set xattr",
            MetaOp::Chmod => "chmod",
            MetaOp::Utimes => "utimes",
            MetaOp::ReadSrcXattrs | MetaOp::ReadDstXattrs => "get xattr",
        }
    }
}

/// Attributes the destination file system does not support (`EOPNOTSUPP`): not a failure of the
/// entry; the engine warns once per run.
pub type Unsupported = Option<crate::xattr::XattrError>;

/// Where a new entry's extended attributes and ACLs come from (with `-X`/`-A`).
#[derive(Clone, Copy)]
pub enum Xattrs<'a> {
    /// None are copied (neither option, or no source to read them from).
    None,
    /// Copied from this source onto an entry that has none of its own.
    Copy(crate::xattr::Target<'a>),
    /// Made equal to this source's: the entry may already carry some (an access ACL inherited
    /// from its directory's default ACL), which are replaced or removed.
    Match(crate::xattr::Target<'a>),
}

impl<'a> Xattrs<'a> {
    /// `Match` when the new entry may have inherited an ACL (its directory has a default ACL and
    /// ACLs are preserved), else `Copy`.
    pub fn from(src: crate::xattr::Target<'a>, inherits_acl: bool) -> Self {
        if inherits_acl {
            Xattrs::Match(src)
        } else {
            Xattrs::Copy(src)
        }
    }
}

fn copy_xattrs(
    src: Xattrs<'_>,
    dst: crate::xattr::Target<'_>,
    policy: &MetaPolicy,
    is_symlink: bool,
) -> Result<(Unsupported, bool), (MetaOp, io::Error)> {
    if !policy.xattrs && !policy.acls {
        return Ok((None, false));
    }
    // user.* attributes cannot exist on symlinks (the kernel refuses them).
    let want = |n: &[u8]| policy.xattr_wanted(n) && !(is_symlink && n.starts_with(b"user."));
    let ids = |user: bool, id: u32| policy.acl_id(user, id);
    let ids = policy
        .maps_ids()
        .then_some(&ids as &dyn Fn(bool, u32) -> u32);
    let r = match src {
        Xattrs::None => return Ok((None, false)),
        Xattrs::Copy(src) => crate::xattr::copy(src, dst, want, ids),
        Xattrs::Match(src) => crate::xattr::Plan::between(src, dst, want, ids)
            .map_err(|e| e.error)
            .and_then(|p| {
                p.apply(dst)?;
                Ok(p.touches_acl())
            }),
    };
    match r {
        Ok(acl) => Ok((None, acl)),
        Err(e) if e.unsupported => Ok((Some(e), false)),
        Err(e) => Err((MetaOp::Xattr, e.error)),
    }
}

/// How the attributes (`-X`) and ACLs (`-A`) of an existing destination entry `dst` differ from
/// its source's: empty when neither is preserved or both sides match. An unsupported side has
/// none.
pub fn xattr_plan(
    src: crate::xattr::Target<'_>,
    dst: crate::xattr::Target<'_>,
    policy: &MetaPolicy,
    is_symlink: bool,
) -> Result<crate::xattr::Plan, (MetaOp, io::Error)> {
    if !policy.xattrs && !policy.acls {
        return Ok(crate::xattr::Plan::default());
    }
    let want = |n: &[u8]| policy.xattr_wanted(n) && !(is_symlink && n.starts_with(b"user."));
    let ids = |user: bool, id: u32| policy.acl_id(user, id);
    let ids = policy
        .maps_ids()
        .then_some(&ids as &dyn Fn(bool, u32) -> u32);
    crate::xattr::Plan::between(src, dst, want, ids).map_err(|e| {
        let op = if e.in_dst {
            MetaOp::ReadDstXattrs
        } else {
            MetaOp::ReadSrcXattrs
        };
        (op, e.error.error)
    })
}

/// Apply owner, mode and times to an open regular file or directory, in the documented order.
/// `chmod_needed` is false when the entry was created with its final bits already.
///
/// `xsrc` is where extended attributes and ACLs come from (with `-X`/`-A`).
pub fn apply_fd(
    fd: BorrowedFd<'_>,
    src: &Stat,
    policy: &MetaPolicy,
    made_in: &MadeIn,
    chmod_needed: bool,
    xsrc: Xattrs<'_>,
) -> Result<Unsupported, (MetaOp, io::Error)> {
    let perm = policy.final_perm(src, made_in);
    apply_fd_perm(fd, src, policy, made_in.gid, (perm, chmod_needed), xsrc)
}

/// [`apply_fd`] with the permission bits to set given (`perm`, and whether the entry needs a
/// `fchmod` to get them): [`MetaPolicy::dest_perm`] for a file that replaces another.
pub fn apply_fd_perm(
    fd: BorrowedFd<'_>,
    src: &Stat,
    policy: &MetaPolicy,
    created_gid: u32,
    perm: (u32, bool),
    xsrc: Xattrs<'_>,
) -> Result<Unsupported, (MetaOp, io::Error)> {
    let chown = policy.chown_ids(src, created_gid);
    apply_fd_chown(fd, src, policy, chown, perm, xsrc)
}

/// [`apply_fd`] for an entry that was already there (an existing directory whose attributes
/// differ): its owner and group are compared with the source's as they are (`dst`, its stat),
/// not as a fresh entry would have them, so a source that became root's (uid or gid 0, what an
/// entry made by root already has) is followed too. Its mode is rsync's `dest_mode`
/// ([`MetaPolicy::existing_perm`]): without `-p` it keeps its own (a private `0700` directory whose
/// time was updated was opened to the new-entry mode `0755` before), and it is only changed
/// where it differs.
pub fn apply_fd_existing(
    fd: BorrowedFd<'_>,
    dst: &Stat,
    src: &Stat,
    policy: &MetaPolicy,
    xsrc: Xattrs<'_>,
) -> Result<Unsupported, (MetaOp, io::Error)> {
    let chown = policy.chown_existing(dst, src);
    let perm = policy.existing_perm(src, dst.perm());
    apply_fd_chown(fd, src, policy, chown, (perm, perm != dst.perm()), xsrc)
}

/// Owner (`chown`: the ids to pass, `u32::MAX` = leave), xattrs/ACLs, mode and times of an open
/// entry, in the documented order.
fn apply_fd_chown(
    fd: BorrowedFd<'_>,
    src: &Stat,
    policy: &MetaPolicy,
    chown: Option<(u32, u32)>,
    (perm, chmod_needed): (u32, bool),
    xsrc: Xattrs<'_>,
) -> Result<Unsupported, (MetaOp, io::Error)> {
    let (chowned, refused) = match chown {
        Some((u, g)) => chown_outcome(sys::fchown(fd, u, g), policy),
        None => (false, None),
    };
    let (unsupported, acl_set) = copy_xattrs(xsrc, crate::xattr::Target::Fd(fd), policy, false)?;
    // An ACL moves the group bits; the final chmod makes mode and mask agree with the source.
    if chmod_needed || chowned || acl_set {
        sys::fchmod(fd, perm).map_err(|e| (MetaOp::Chmod, e))?;
    }
    if let Some((a, m)) = policy.times(src) {
        sys::futimens(fd, a, m).map_err(|e| (MetaOp::Utimes, e))?;
    }
    match refused {
        Some(e) => Err((MetaOp::Chown, e)),
        None => Ok(unsupported),
    }
}

/// What a `chown` came to: whether it was done, and its error where it is one. A group the user
/// is not in is refused silently when not root, as rsync goes on; a refusal with super-user
/// activities asked for is the error, the rest of the attributes still given.
fn chown_outcome(r: io::Result<()>, policy: &MetaPolicy) -> (bool, Option<io::Error>) {
    match r {
        Ok(()) => (true, None),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !policy.root => (false, None),
        Err(e) => (false, Some(e)),
    }
}

/// Apply owner, mode (unless a symlink) and times to `name` in `dir` without following it.
///
/// `xsrc` is where extended attributes and ACLs come from (with `-X`/`-A`).
pub fn apply_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    src: &Stat,
    policy: &MetaPolicy,
    made_in: &MadeIn,
    is_symlink: bool,
    xsrc: Xattrs<'_>,
) -> Result<Unsupported, (MetaOp, io::Error)> {
    let refused = match policy.chown_ids(src, made_in.gid) {
        Some((u, g)) => chown_outcome(sys::lchown_at(dir, name, u, g), policy).1,
        None => None,
    };
    let (unsupported, _) = copy_xattrs(
        xsrc,
        crate::xattr::Target::At(dir, name),
        policy,
        is_symlink,
    )?;
    if !is_symlink {
        sys::chmod_at(dir, name, policy.final_perm(src, made_in))
            .map_err(|e| (MetaOp::Chmod, e))?;
    }
    if let Some((a, m)) = policy.times(src) {
        sys::lutimens_at(dir, name, a, m).map_err(|e| (MetaOp::Utimes, e))?;
    }
    match refused {
        Some(e) => Err((MetaOp::Chown, e)),
        None => Ok(unsupported),
    }
}
