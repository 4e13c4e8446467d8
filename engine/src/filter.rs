//! rsync's include/exclude/protect rules: parsing (`--exclude`, `--include`, `--filter` rule
//! strings and the lines of `--exclude-from`/`--include-from` files) and matching a path relative to
//! the transfer root.
//!
//! Semantics follow rsync's "FILTER RULES" and "INCLUDE/EXCLUDE PATTERN RULES": the first matching
//! rule decides; a leading `/` anchors a pattern at the transfer root; a trailing `/` matches only
//! directories; a pattern with a `/` (other than a trailing one) or a `**` is matched against the
//! whole relative path (unanchored: against any tail of it that starts after a `/`), other patterns
//! against the last component only; `*` matches within one component, `**` across components, `?`
//! one character other than `/`, `[...]` a character class (`!` or `^` negates, ranges), `\` quotes
//! the next character; `dir/***` matches `dir` itself and everything below it.
//!
//! Each rule applies to the sending side (what is copied: `-`/`+`, `H`/`S`, or a rule with the `s`
//! modifier), the receiving side (what `--delete` may remove: `-`/`+`, `P`/`R`, or the `r`
//! modifier), or both. `--delete-excluded` makes plain `-`/`+` rules sending-side only.
//!
//! Merge rules: `merge FILE` (`. FILE`) reads FILE's rules into the list where it stands;
//! `dir-merge NAME` (`: NAME`, `-F`) reads NAME in every source directory as it is walked, its
//! rules tried at the place of the `dir-merge` rule, newest directory first, inherited by
//! subdirectories (not with `n`), anchored at their own directory ([`DirRules`]).

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Exclude (on the sending side: not copied; on the receiving side: protected from deletion).
    Exclude,
    /// Include (stops the search: the entry is copied / may be deleted).
    Include,
}

/// Where a rule came from: how `--debug=filter` names it (rsync 3.5's words).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// The command line: its pattern is shown.
    #[default]
    Arg,
    /// `-C`'s list: shown, then ` [global CVS]`.
    Cvs,
    /// A file (`--exclude-from`, `--include-from`, a merge file): rsync 3.5 does not show what
    /// a file said.
    File,
    /// A per-directory file of this name: not shown, then ` [per-dir NAME]`.
    PerDir(Arc<str>),
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What it does when it matches.
    pub action: Action,
    /// Applies to what is sent (copied).
    pub sender: bool,
    /// Applies to what may be deleted in the destination.
    pub receiver: bool,
    /// The `!` modifier: the rule applies when the pattern does *not* match.
    pub negate: bool,
    /// The `p` modifier (and `-C`'s default list): ignored while a directory that is being
    /// deleted is emptied, so what it matches does not keep that directory.
    pub perishable: bool,
    /// The `x` modifier: a rule for extended attribute names (`-X`), never for entries.
    pub xattr: bool,
    /// The `/` modifier: matched against the entry's absolute path (its directory's physical
    /// path, as rsync's working directory gives it, and its name) instead of the path below the
    /// transfer root.
    pub abs: bool,
    /// The pattern as written (for messages).
    pub text: String,
    /// Where it came from (for `--debug=filter`).
    pub origin: Origin,
    /// Anchored at the transfer root (leading `/`).
    anchored: bool,
    /// Matches directories only (trailing `/`).
    dir_only: bool,
    /// Matched against the whole relative path (the pattern has a `/` or `**`).
    full_path: bool,
    /// The pattern bytes (leading and trailing `/` removed); a `dir/***` rule holds `dir` here and
    /// sets `and_below`.
    pat: Vec<u8>,
    /// `dir/***`: the directory itself and everything below it.
    and_below: bool,
    /// `pat` has a wildcard (else it is compared byte for byte, backslashes included, as rsync).
    wild: bool,
    /// A per-directory rule: the directory (relative to the transfer root) its anchor is at.
    base: Vec<u8>,
    /// A rule read above the transfer root (`dir-merge /NAME`): the path from its directory down
    /// to the transfer root, put before an entry's path when an anchored pattern is matched.
    above: Vec<u8>,
}

/// What a rule list is asked about an entry.
#[derive(Clone, Copy)]
enum Ask {
    /// Whether it is left out of the transfer (sending-side rules).
    Send,
    /// Whether `--delete` leaves it (receiving-side rules).
    Delete,
    /// Whether it stays in a directory being deleted (receiving-side rules but perishable ones).
    Emptying,
}

/// How the rules of a merge file are read (the modifiers of a `merge`/`dir-merge` rule).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MergeMods {
    /// `-` or `+`: every line is a pattern of this kind.
    only: Option<Action>,
    /// `w`: split on whitespace, no comments.
    words: bool,
    /// `n`: not inherited by subdirectories.
    no_inherit: bool,
    /// `C`: CVS style (`n`, `w`, `-`, and `!` clears).
    cvs: bool,
    /// `s`/`r`: the sides every rule of the file applies to.
    sides: Option<(bool, bool)>,
    /// `p`: every rule of the file is perishable.
    perishable: bool,
    /// `/`: every rule of the file matches absolute paths.
    abs: bool,
}

/// A `dir-merge` rule.
#[derive(Clone, Debug)]
struct DirMerge {
    /// Its rules are tried just before `rules[at]`.
    at: usize,
    /// The file name looked for in each directory.
    name: CString,
    /// The name was given with a leading `/`: the directories above each transfer root are read
    /// too, from `/` down.
    prescan: bool,
    mods: MergeMods,
}

/// The per-directory rules in force in one source directory: for each `dir-merge` rule, the
/// rules of this directory's file and those inherited from its parents' (newest first).
///
/// A merge file may itself hold `dir-merge` rules (nested, as rsync allows): each adds a
/// per-directory merge of its own for the directory where it was read and those below it
/// (`extra`, numbered after the run's own in `per_merge`), its rules tried where its rule stands
/// in the file that named it. One whose name a merge in force already reads is left out, as
/// rsync leaves it.
#[derive(Clone, Debug, Default)]
pub struct DirRules {
    per_merge: Vec<Option<Arc<Level>>>,
    extra: Vec<DirMerge>,
}

#[derive(Debug)]
struct Level {
    rules: Vec<Rule>,
    /// The nested `dir-merge` rules of this file: (their place in `rules`, their number in
    /// [`DirRules::per_merge`]).
    nested: Vec<(usize, usize)>,
    parent: Option<Arc<Level>>,
}

/// A merge file's text, parsed.
struct Parsed {
    rules: Vec<Rule>,
    /// Its `dir-merge` rules, `at` their place in `rules`.
    nested: Vec<DirMerge>,
    /// It cleared what it inherits (`!`).
    cleared: bool,
}

/// The ordered rule list of a run. Empty = everything is copied and everything extraneous may
/// be deleted.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    rules: Vec<Rule>,
    merges: Vec<DirMerge>,
    /// Nesting of merge files being read (a loop of merges is refused).
    depth: usize,
    /// `--delete-excluded`: rules read later (per-directory files) are sending-side only too.
    sender_only: bool,
    /// How the merge files named on the command line are read (see [`Filters::set_reader`]).
    reader: Option<Reader>,
    /// A merge file could not be read: rsync's file I/O error (exit 11), not a bad rule.
    read_failed: bool,
}

/// Reads a merge file named by a rule.
pub type Reader = fn(&std::path::Path) -> std::io::Result<Vec<u8>>;

impl Filters {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read the merge files that rules name with `reader` instead of `std::fs::read` (the
    /// command line's check of the paths an operator names; not the per-directory files).
    pub fn set_reader(&mut self, reader: Reader) {
        self.reader = Some(reader);
    }

    /// Whether a rule was refused because its merge file could not be read (rsync's file I/O
    /// error, exit 11) rather than for its syntax.
    pub fn read_failed(&self) -> bool {
        self.read_failed
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.merges.is_empty()
    }

    /// Whether a `dir-merge` rule reads per-directory files.
    pub fn has_dir_merges(&self) -> bool {
        !self.merges.is_empty()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// `--exclude=PATTERN` (rsync also honours a leading `- ` or `+ ` here).
    pub fn exclude(&mut self, pattern: &str) -> Result<(), String> {
        self.plain(pattern, Action::Exclude)
    }

    /// `--include=PATTERN` (rsync also honours a leading `- ` or `+ ` here).
    pub fn include(&mut self, pattern: &str) -> Result<(), String> {
        self.plain(pattern, Action::Include)
    }

    fn plain(&mut self, pattern: &str, action: Action) -> Result<(), String> {
        if let Some(p) = pattern.strip_prefix("- ") {
            return self.push(Action::Exclude, true, true, false, p);
        }
        if let Some(p) = pattern.strip_prefix("+ ") {
            return self.push(Action::Include, true, true, false, p);
        }
        self.push(action, true, true, false, pattern)
    }

    /// The lines of an `--exclude-from`/`--include-from` file: blank lines and lines starting
    /// with `;` or `#` are ignored.
    pub fn from_lines(&mut self, text: &str, action: Action) -> Result<(), String> {
        for line in text.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            self.plain(line, action)?;
            if let Some(r) = self.rules.last_mut() {
                r.origin = Origin::File;
            }
        }
        Ok(())
    }

    /// `--filter=RULE`: `-`/`exclude`, `+`/`include`, `P`/`protect`, `R`/`risk`, `H`/`hide`,
    /// `S`/`show`, each optionally followed by modifiers `!`, `s`, `r` (e.g. `-s`, `+!`), then one
    /// space or `_` and the pattern; or `!`/`clear` alone, which drops every rule so far.
    pub fn rule(&mut self, rule: &str) -> Result<(), String> {
        let (head, pattern) = match rule.find([' ', '_']) {
            Some(i) => (&rule[..i], Some(&rule[i + 1..])),
            None => (rule, None),
        };
        const WORDS: [&str; 10] = [
            "exclude",
            "include",
            "protect",
            "risk",
            "hide",
            "show",
            "clear",
            "merge",
            "dir-merge",
            "",
        ];
        let (word, mods) = match WORDS
            .iter()
            .find(|w| !w.is_empty() && head.starts_with(**w))
        {
            Some(w) => head.split_at(w.len()),
            None => head.split_at(head.chars().next().map_or(0, char::len_utf8)),
        };
        let mods = mods.strip_prefix(',').unwrap_or(mods);
        if matches!(word, "-" | "exclude") && mods == "C" && pattern.is_none_or(str::is_empty) {
            self.cvs_excludes();
            return Ok(());
        }
        if matches!(word, ":" | "." | "dir-merge" | "merge") {
            return self.merge_rule(rule, word == ":" || word == "dir-merge", mods, pattern);
        }
        let (action, mut sender, mut receiver) = match word {
            "-" | "exclude" => (Action::Exclude, true, true),
            "+" | "include" => (Action::Include, true, true),
            "P" | "protect" => (Action::Exclude, false, true),
            "R" | "risk" => (Action::Include, false, true),
            "H" | "hide" => (Action::Exclude, true, false),
            "S" | "show" => (Action::Include, true, false),
            "!" | "clear" => {
                if pattern.is_some_and(|p| !p.is_empty()) || !mods.is_empty() {
                    return Err(format!(
                        "filter rule {rule:?}: a clear rule takes no pattern"
                    ));
                }
                self.rules.clear();
                self.merges.clear();
                return Ok(());
            }
            _ => return Err(format!("unknown filter rule: {rule:?}")),
        };
        let mut negate = false;
        let (mut perishable, mut abs, mut xattr) = (false, false, false);
        for m in mods.chars() {
            match m {
                '!' => negate = true,
                'p' => perishable = true,
                '/' => abs = true,
                'x' => xattr = true,
                's' => {
                    sender = true;
                    receiver = false;
                }
                'r' => {
                    receiver = true;
                    sender = false;
                }
                _ => {
                    return Err(format!(
                        "filter rule {rule:?}: unsupported modifier {m:?} (supported: !, /, p, s, r, x)"
                    ));
                }
            }
        }
        let Some(pattern) = pattern.filter(|p| !p.is_empty()) else {
            return Err(format!("filter rule {rule:?} has no pattern"));
        };
        if xattr && (!sender || !receiver || abs) {
            return Err(format!(
                "filter rule {rule:?}: an x rule applies to both sides, by name (no s, r, /, or hide/show/protect/risk)"
            ));
        }
        self.push(action, sender, receiver, negate, pattern)?;
        if let Some(r) = self.rules.last_mut() {
            r.perishable = perishable;
            r.abs = abs;
            r.xattr = xattr;
        }
        Ok(())
    }

    fn push(
        &mut self,
        action: Action,
        sender: bool,
        receiver: bool,
        negate: bool,
        pattern: &str,
    ) -> Result<(), String> {
        if pattern.is_empty() {
            return Err("empty filter pattern".into());
        }
        let mut p = pattern.as_bytes();
        let anchored = p.starts_with(b"/");
        if anchored {
            p = &p[1..];
        }
        let mut dir_only = false;
        while p.len() > 1 && p.ends_with(b"/") {
            dir_only = true;
            p = &p[..p.len() - 1];
        }
        let mut and_below = false;
        if p.ends_with(b"/***") || p == b"***" {
            and_below = true;
            p = p.strip_suffix(b"/***").unwrap_or(b"");
        }
        let full_path = anchored
            || p.contains(&b'/')
            || p.windows(2).any(|w| w == b"**")
            || (and_below && p.is_empty());
        let wild = p.iter().any(|c| matches!(c, b'*' | b'?' | b'['));
        self.rules.push(Rule {
            action,
            sender,
            receiver,
            negate,
            perishable: false,
            abs: false,
            xattr: false,
            text: pattern.to_string(),
            origin: Origin::Arg,
            anchored,
            dir_only,
            full_path,
            pat: p.to_vec(),
            and_below,
            wild,
            base: Vec::new(),
            above: Vec::new(),
        });
        Ok(())
    }

    /// `-C` (the rule `-C`): CVS's default ignore list, then the names in `$HOME/.cvsignore`
    /// and in `$CVSIGNORE` (whitespace-separated), as excludes; a `!` among them clears the
    /// list so far, as in CVS.
    pub fn cvs_excludes(&mut self) {
        const DEFAULT: &str = "RCS SCCS CVS CVS.adm RCSLOG cvslog.* tags TAGS .make.state \
            .nse_depinfo *~ #* .#* ,* _$* *$ *.old *.bak *.BAK *.orig *.rej .del-* *.a *.olb \
            *.o *.obj *.so *.exe *.Z *.elc *.ln core .svn/ .git/ .hg/ .bzr/";
        let home = std::env::var_os("HOME")
            .and_then(|h| std::fs::read(std::path::Path::new(&h).join(".cvsignore")).ok())
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        let env = std::env::var("CVSIGNORE").unwrap_or_default();
        let words = DEFAULT.split_whitespace().map(|w| (w, true));
        let more = home.split_whitespace().chain(env.split_whitespace());
        for (word, perishable) in words.chain(more.map(|w| (w, false))) {
            if word == "!" {
                self.rules.clear();
                self.merges.clear();
            } else {
                // (A word is never empty, so this cannot fail.) The default list is perishable,
                // as rsync (protocol 30 and later) marks it: a directory deleted from the
                // source goes from the destination with its object files and `.git`.
                let _ = self.push(Action::Exclude, true, true, false, word);
                if let Some(r) = self.rules.last_mut() {
                    r.perishable = perishable;
                    r.origin = Origin::Cvs;
                }
            }
        }
    }

    /// `merge`/`.` and `dir-merge`/`:` with their modifiers (`-`, `+`, `C`, `e`, `n`, `w`, `/`,
    /// `p`, `s`, `r`).
    fn merge_rule(
        &mut self,
        rule: &str,
        per_dir: bool,
        mods: &str,
        file: Option<&str>,
    ) -> Result<(), String> {
        let mut m = MergeMods::default();
        let mut exclude_self = false;
        for c in mods.chars() {
            match c {
                '-' => m.only = Some(Action::Exclude),
                '+' => m.only = Some(Action::Include),
                'C' => {
                    m.cvs = true;
                    m.words = true;
                    m.no_inherit = true;
                    m.only = Some(Action::Exclude);
                }
                'e' => exclude_self = true,
                'n' => m.no_inherit = true,
                'w' => m.words = true,
                's' => m.sides = Some((true, m.sides.is_some_and(|s| s.1))),
                'r' => m.sides = Some((m.sides.is_some_and(|s| s.0), true)),
                'p' => m.perishable = true,
                '/' => m.abs = true,
                _ => {
                    return Err(format!(
                        "filter rule {rule:?}: unsupported merge modifier {c:?} (supported: -, +, C, e, n, w, /, p, s, r)"
                    ));
                }
            }
        }
        let file = match file.filter(|f| !f.is_empty()) {
            Some(f) => f,
            None if m.cvs => ".cvsignore",
            None => return Err(format!("filter rule {rule:?} names no file")),
        };
        if !per_dir {
            if self.depth > 16 {
                return Err(format!("filter rule {rule:?}: merge files nest too deep"));
            }
            let text = if file == "-" {
                let mut t = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut t).map(|_| t)
            } else {
                self.reader.unwrap_or(|p| std::fs::read(p))(std::path::Path::new(file))
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    self.read_failed = true;
                    // (rsync's words, and its "text (errno)".)
                    let text = e.to_string();
                    let text = text.split(" (os error").next().unwrap_or(&text);
                    return Err(match e.raw_os_error() {
                        Some(n) => format!("failed to open exclude file {file}: {text} ({n})"),
                        None => format!("failed to open exclude file {file}: {text}"),
                    });
                }
            };
            let parsed = self.parse_merge(&text, m, b"", &Origin::File)?;
            if exclude_self {
                // (Its last component, ahead of its rules, as rsync.)
                let own = file.rsplit('/').next().unwrap_or(file);
                if !own.is_empty() && file != "-" {
                    self.push(Action::Exclude, true, true, false, own)?;
                }
            }
            // Its dir-merge rules join the run's, at their places among its rules.
            let at = self.rules.len();
            for mut dm in parsed.nested {
                if !self.merges.iter().any(|x| x.name == dm.name) {
                    dm.at += at;
                    self.merges.push(dm);
                }
            }
            self.rules.extend(parsed.rules);
            return Ok(());
        }
        let prescan = file.starts_with('/');
        let name = file.trim_start_matches('/');
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "filter rule {rule:?}: a per-directory merge file is one name (or /NAME)"
            ));
        }
        // `e`: the file's own name is excluded ahead of its rules, as rsync adds that rule
        // before the merge (so a `+ *` in the file does not take it in again).
        if exclude_self {
            self.push(Action::Exclude, true, true, false, name)?;
        }
        self.merges.push(DirMerge {
            at: self.rules.len(),
            name: CString::new(name).map_err(|_| format!("filter rule {rule:?}: NUL in name"))?,
            prescan,
            mods: m,
        });
        Ok(())
    }

    /// The rules of a merge file's text (`base`: the directory its anchors are relative to), and
    /// whether it cleared the rules inherited so far (`!`).
    fn parse_merge(
        &self,
        text: &[u8],
        m: MergeMods,
        base: &[u8],
        origin: &Origin,
    ) -> Result<Parsed, String> {
        let text = String::from_utf8_lossy(text);
        let mut tmp = Filters {
            depth: self.depth + 1,
            ..Filters::default()
        };
        let mut cleared = false;
        let tokens: Vec<&str> = if m.words {
            text.split_whitespace().collect()
        } else {
            text.lines()
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
                .collect()
        };
        for t in tokens {
            if t == "!" && (m.cvs || m.only.is_none()) {
                tmp.rules.clear();
                cleared = true;
                continue;
            }
            match m.only {
                Some(a) => tmp.push(a, true, true, false, t)?,
                None => tmp.rule(t)?,
            }
        }
        for r in &mut tmp.rules {
            r.base = base.to_vec();
            r.origin = origin.clone();
            r.perishable |= m.perishable;
            r.abs |= m.abs;
            if let Some((sender, receiver)) = m.sides {
                r.sender = sender;
                r.receiver = receiver;
            }
            if self.sender_only && r.sender {
                r.receiver = false;
            }
        }
        Ok(Parsed {
            rules: tmp.rules,
            nested: tmp.merges,
            cleared,
        })
    }

    /// The per-directory rules of the source directory at `rel` (relative to the transfer root)
    /// whose parent directory has `parent` (`None`: a transfer root), each merge file read with
    /// `read` (`None`: there is none). A file with a bad rule is left out; its error is returned.
    pub fn dir_rules(
        &self,
        parent: Option<&DirRules>,
        rel: &[u8],
        read: &mut dyn FnMut(&CStr) -> Option<Vec<u8>>,
    ) -> (DirRules, Vec<String>) {
        let mut errors = Vec::new();
        let own = self.merges.len();
        let mut extra = parent.map(|p| p.extra.clone()).unwrap_or_default();
        let mut per_merge = Vec::with_capacity(own + extra.len());
        // (Nested merges found here are read here too: the loop runs until no new one comes.)
        let mut i = 0;
        while let Some(dm) = self.merges.get(i).or_else(|| extra.get(i - own)).cloned() {
            i += 1;
            let inherited = parent
                .and_then(|p| p.per_merge.get(i - 1).cloned().flatten())
                .filter(|_| !dm.mods.no_inherit);
            let Some(text) = read(&dm.name) else {
                per_merge.push(inherited);
                continue;
            };
            let origin = Origin::PerDir(dm.name.to_string_lossy().into());
            match self.parse_merge(&text, dm.mods, rel, &origin) {
                Ok(parsed) => {
                    let mut nested = Vec::new();
                    for n in parsed.nested {
                        let known = |m: &DirMerge| m.name == n.name;
                        if self.merges.iter().any(known) || extra.iter().any(known) {
                            continue;
                        }
                        nested.push((n.at, own + extra.len()));
                        extra.push(n);
                    }
                    per_merge.push(Some(Arc::new(Level {
                        rules: parsed.rules,
                        nested,
                        parent: if parsed.cleared { None } else { inherited },
                    })));
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", dm.name.to_string_lossy()));
                    per_merge.push(inherited);
                }
            }
        }
        (DirRules { per_merge, extra }, errors)
    }

    /// The rules inherited by a transfer root from the directories above it (`dir-merge` names
    /// given with a leading `/`): `ancestors` are those directories from `/` down, each with the
    /// path from it to the root. Anchored rules there are anchored at their own directory: an
    /// entry's path is matched with that path put before it.
    pub fn prescan_rules(
        &self,
        ancestors: &[(std::path::PathBuf, Vec<u8>)],
    ) -> (Option<DirRules>, Vec<String>) {
        if !self.merges.iter().any(|m| m.prescan) {
            return (None, Vec::new());
        }
        let mut errors = Vec::new();
        let mut acc = DirRules {
            per_merge: vec![None; self.merges.len()],
            extra: Vec::new(),
        };
        for (dir, down) in ancestors {
            for (i, dm) in self.merges.iter().enumerate() {
                if !dm.prescan || dm.mods.no_inherit {
                    continue;
                }
                let path = dir.join(std::ffi::OsStr::from_bytes(dm.name.to_bytes()));
                let Ok(text) = std::fs::read(path) else {
                    continue;
                };
                // (Nested dir-merge rules in the files above the root are not followed.)
                let origin = Origin::PerDir(dm.name.to_string_lossy().into());
                match self.parse_merge(&text, dm.mods, b"", &origin) {
                    Ok(Parsed { rules, cleared, .. }) => {
                        // An anchor above the transfer root is matched against the path from
                        // there (wildcards in the part above included, as rsync matches it); the
                        // transfer root's own file (`SRC`'s parent's for `SRC DEST`) anchors
                        // where it stands.
                        let rules = rules
                            .into_iter()
                            .map(|mut r| {
                                if r.anchored && !r.abs {
                                    r.above = down.clone();
                                }
                                r
                            })
                            .collect();
                        acc.per_merge[i] = Some(Arc::new(Level {
                            rules,
                            nested: Vec::new(),
                            parent: if cleared {
                                None
                            } else {
                                acc.per_merge[i].take()
                            },
                        }));
                    }
                    Err(e) => errors.push(format!("{}: {e}", dm.name.to_string_lossy())),
                }
            }
        }
        (Some(acc), errors)
    }

    /// `--delete-excluded`: plain exclude/include rules stop protecting destination entries.
    pub fn sender_only(&mut self) {
        self.sender_only = true;
        for r in &mut self.rules {
            if r.sender {
                r.receiver = false;
            }
        }
    }

    /// Whether any rule concerns the receiving side (deletion).
    pub fn has_receiver_rules(&self) -> bool {
        self.rules.iter().any(|r| r.receiver && !r.xattr) || !self.merges.is_empty()
    }

    /// Whether any rule concerns the sending side (what is copied).
    pub fn has_sender_rules(&self) -> bool {
        self.rules.iter().any(|r| r.sender && !r.xattr) || !self.merges.is_empty()
    }

    /// Whether any rule has the `x` modifier (extended attribute names).
    pub fn has_xattr_rules(&self) -> bool {
        self.rules.iter().any(|r| r.xattr)
    }

    /// Whether the `x` rules leave extended attribute `name` alone (the first that matches
    /// decides; an include stops the search). Rules in per-directory merge files are not
    /// consulted.
    pub fn xattr_excluded(&self, name: &[u8]) -> bool {
        self.rules
            .iter()
            .filter(|r| r.xattr)
            .find(|r| r.matches(name, false) != r.negate)
            .is_some_and(|r| r.action == Action::Exclude)
    }

    /// Whether the sending side skips `path` (relative to the transfer root, no leading `/`).
    /// Rules with the `/` modifier see `path` as absolute here; the engine uses
    /// [`Filters::excludes_at`].
    pub fn excludes(&self, path: &[u8], is_dir: bool) -> bool {
        self.decide(path, is_dir, Ask::Send, None, &|| path.to_vec())
    }

    /// Whether the receiving side protects `path` from deletion (as [`Filters::excludes`]).
    pub fn protects(&self, path: &[u8], is_dir: bool) -> bool {
        self.decide(path, is_dir, Ask::Delete, None, &|| path.to_vec())
    }

    /// [`Filters::excludes`] in a directory with per-directory rules `dir`, `abs` giving the
    /// entry's absolute path without its leading `/` (asked only by a rule with the `/`
    /// modifier).
    pub fn excludes_at(
        &self,
        path: &[u8],
        is_dir: bool,
        dir: Option<&DirRules>,
        abs: &dyn Fn() -> Vec<u8>,
    ) -> bool {
        self.decide(path, is_dir, Ask::Send, dir, abs)
    }

    /// [`Filters::protects`] in a directory with per-directory rules `dir` (`abs` as in
    /// [`Filters::excludes_at`]).
    pub fn protects_at(
        &self,
        path: &[u8],
        is_dir: bool,
        dir: Option<&DirRules>,
        abs: &dyn Fn() -> Vec<u8>,
    ) -> bool {
        self.decide(path, is_dir, Ask::Delete, dir, abs)
    }

    /// [`Filters::protects_at`] for an entry inside a directory that is itself being deleted
    /// (extraneous, or in the way of a non-directory): perishable rules do not count there, as
    /// in rsync, so what only they match does not keep the directory.
    pub fn protects_while_emptying(
        &self,
        path: &[u8],
        is_dir: bool,
        dir: Option<&DirRules>,
        abs: &dyn Fn() -> Vec<u8>,
    ) -> bool {
        self.decide(path, is_dir, Ask::Emptying, dir, abs)
    }

    fn decide(
        &self,
        path: &[u8],
        is_dir: bool,
        ask: Ask,
        dir: Option<&DirRules>,
        abs: &dyn Fn() -> Vec<u8>,
    ) -> bool {
        self.deciding(path, is_dir, ask, dir, abs)
            .is_some_and(|r| r.action == Action::Exclude)
    }

    /// The first rule that matches (`None`: none does, the entry is sent / may be deleted).
    fn deciding<'a>(
        &'a self,
        path: &[u8],
        is_dir: bool,
        ask: Ask,
        dir: Option<&'a DirRules>,
        abs: &dyn Fn() -> Vec<u8>,
    ) -> Option<&'a Rule> {
        let applies = |r: &Rule| {
            !r.xattr
                && match ask {
                    Ask::Send => r.sender,
                    Ask::Delete => r.receiver,
                    Ask::Emptying => r.receiver && !r.perishable,
                }
        };
        let full = std::cell::OnceCell::new();
        let hit = |r: &Rule| {
            let p = if r.abs {
                full.get_or_init(abs).as_slice()
            } else {
                path
            };
            applies(r) && r.matches(p, is_dir) != r.negate
        };
        let mut merges = self.merges.iter().enumerate().peekable();
        for (i, r) in self.rules.iter().enumerate() {
            while let Some((m, _)) = merges.next_if(|(_, dm)| dm.at <= i) {
                if let Some(hit) = Self::decide_merge(m, &hit, dir) {
                    return Some(hit);
                }
            }
            if hit(r) {
                return Some(r);
            }
        }
        for (m, _) in merges {
            if let Some(hit) = Self::decide_merge(m, &hit, dir) {
                return Some(hit);
            }
        }
        None
    }

    /// The rule that decides whether the sending side skips `path` (as
    /// [`Filters::excludes_at`], which is whether it is an exclude), for `--debug=filter`.
    pub fn sending_rule_at<'a>(
        &'a self,
        path: &[u8],
        is_dir: bool,
        dir: Option<&'a DirRules>,
        abs: &dyn Fn() -> Vec<u8>,
    ) -> Option<&'a Rule> {
        self.deciding(path, is_dir, Ask::Send, dir, abs)
    }

    /// The rule that decides whether the receiving side protects `path` (as
    /// [`Filters::protects_at`]; `emptying`: as [`Filters::protects_while_emptying`]).
    pub fn deleting_rule_at<'a>(
        &'a self,
        path: &[u8],
        is_dir: bool,
        emptying: bool,
        dir: Option<&'a DirRules>,
        abs: &dyn Fn() -> Vec<u8>,
    ) -> Option<&'a Rule> {
        let ask = if emptying { Ask::Emptying } else { Ask::Delete };
        self.deciding(path, is_dir, ask, dir, abs)
    }

    fn decide_merge<'a>(
        m: usize,
        hit: &dyn Fn(&Rule) -> bool,
        dir: Option<&'a DirRules>,
    ) -> Option<&'a Rule> {
        let dir = dir?;
        let mut level = dir.per_merge.get(m)?.as_deref();
        while let Some(l) = level {
            // (A nested merge is numbered after the one whose file named it: this ends.)
            let mut nested = l.nested.iter().peekable();
            for (i, r) in l.rules.iter().enumerate() {
                while let Some(&(_, n)) = nested.next_if(|(at, _)| *at <= i) {
                    if let Some(h) = Self::decide_merge(n, hit, Some(dir)) {
                        return Some(h);
                    }
                }
                if hit(r) {
                    return Some(r);
                }
            }
            for &(_, n) in nested {
                if let Some(h) = Self::decide_merge(n, hit, Some(dir)) {
                    return Some(h);
                }
            }
            level = l.parent.as_deref();
        }
        None
    }
}

impl Rule {
    /// How `--debug=filter` names the rule: its pattern (or, for one read from a file, rsync
    /// 3.5's `<rule from a file read earlier>`), then where it came from.
    pub fn shown(&self) -> String {
        let text = match self.origin {
            Origin::Arg | Origin::Cvs => self.text.as_str(),
            Origin::File | Origin::PerDir(_) => "<rule from a file read earlier>",
        };
        match &self.origin {
            Origin::Cvs => format!("{text} [global CVS]"),
            Origin::PerDir(name) => format!("{text} [per-dir {name}]"),
            _ => text.to_string(),
        }
    }

    /// Whether the pattern matches `path` (the `!` modifier not applied).
    pub fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        // A per-directory rule's anchor is its own directory (an absolute rule's is `/`).
        let path = if self.anchored && !self.base.is_empty() && !self.abs {
            match path
                .strip_prefix(&self.base[..])
                .and_then(|p| p.strip_prefix(b"/"))
            {
                Some(p) => p,
                None => return false,
            }
        } else {
            path
        };
        let from_above;
        let path = if self.above.is_empty() {
            path
        } else {
            from_above = [&self.above[..], b"/", path].concat();
            &from_above[..]
        };
        // rsync's `FILTRULE_WILD2_PREFIX`: an unanchored pattern that starts with `**` is matched
        // against the path with a `/` before it, so that `**/x` also matches a top-level `x`
        // (the `**/` matching no directory at all). That only ever adds matches: the `**` can
        // take the `/` too.
        let slashed;
        let path = if self.full_path && !self.anchored && !self.abs && self.pat.starts_with(b"**") {
            slashed = [b"/", path].concat();
            &slashed[..]
        } else {
            path
        };
        if self.and_below {
            // `dir/***`: the directory itself, or anything whose path has it as a prefix.
            if self.pat.is_empty() {
                return true;
            }
            let hit = |p: &[u8]| {
                if self.one(p) && is_dir {
                    return true;
                }
                // A prefix ending at some '/'.
                p.iter()
                    .enumerate()
                    .any(|(i, &c)| c == b'/' && self.one(&p[..i]))
            };
            return self.tails(path).any(hit);
        }
        if self.dir_only && !is_dir {
            return false;
        }
        if !self.full_path {
            let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
            return self.one(base);
        }
        self.tails(path).any(|t| self.one(t))
    }

    /// The parts of `path` the pattern is tried against: the whole path when anchored, else the
    /// whole path and every tail after a `/`.
    fn tails<'a>(&'a self, path: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let anchored = self.anchored;
        std::iter::once(path).chain(
            path.iter()
                .enumerate()
                .filter(move |&(_, &c)| c == b'/' && !anchored)
                .map(move |(i, _)| &path[i + 1..]),
        )
    }

    fn one(&self, s: &[u8]) -> bool {
        if self.wild {
            wildmatch(&self.pat, s)
        } else {
            self.pat == s
        }
    }
}

/// rsync's wildmatch over bytes: `*` (not `/`), `**` (anything), `?` (one byte, not `/`),
/// `[...]` classes with `!`/`^`, ranges and `[:alpha:]`-style names, `\` quoting.
pub fn wildmatch(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    // Backtracking point for the last single `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() || pi < p.len() {
        let mut step: Option<(usize, usize)> = None; // (pattern advance, string advance)
        if pi < p.len() {
            match p[pi] {
                b'*' if p.get(pi + 1) == Some(&b'*') => {
                    // `**`: try every tail (recursion keeps this simple; patterns are short).
                    let mut rest = pi + 2;
                    while p.get(rest) == Some(&b'*') {
                        rest += 1;
                    }
                    if (si..=s.len()).any(|k| wildmatch(&p[rest..], &s[k..])) {
                        return true;
                    }
                }
                b'*' => {
                    star = Some((pi + 1, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    if si < s.len() && s[si] != b'/' {
                        step = Some((1, 1));
                    }
                }
                b'[' => match (si < s.len()).then(|| class(p, pi, s[si])) {
                    Some(Some((true, next))) if s[si] != b'/' => step = Some((next - pi, 1)),
                    Some(None) if s[si] == b'[' => step = Some((1, 1)),
                    _ => {}
                },
                b'\\' if pi + 1 < p.len() => {
                    if si < s.len() && p[pi + 1] == s[si] {
                        step = Some((2, 1));
                    }
                }
                c => {
                    if si < s.len() && c == s[si] {
                        step = Some((1, 1));
                    }
                }
            }
        }
        if let Some((dp, ds)) = step {
            pi += dp;
            si += ds;
            continue;
        }
        // Mismatch: let the last `*` swallow one more byte (never a `/`).
        match star {
            Some((sp, ss)) if ss < s.len() && s[ss] != b'/' => {
                star = Some((sp, ss + 1));
                pi = sp;
                si = ss + 1;
            }
            _ => return false,
        }
    }
    true
}

/// Match byte `c` against the class starting at `p[i] == '['`: (matched, index after `]`), or
/// `None` for an unterminated class (then `[` is literal).
fn class(p: &[u8], i: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = i + 1;
    let negate = matches!(p.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut hit = false;
    let mut first = true;
    while j < p.len() {
        let b = p[j];
        if b == b']' && !first {
            return Some((hit != negate, j + 1));
        }
        first = false;
        if b == b'['
            && p.get(j + 1) == Some(&b':')
            && let Some(end) = p[j + 2..].windows(2).position(|w| w == b":]")
        {
            let name = &p[j + 2..j + 2 + end];
            hit |= match name {
                b"alpha" => c.is_ascii_alphabetic(),
                b"digit" => c.is_ascii_digit(),
                b"alnum" => c.is_ascii_alphanumeric(),
                b"upper" => c.is_ascii_uppercase(),
                b"lower" => c.is_ascii_lowercase(),
                b"space" => c.is_ascii_whitespace(),
                b"punct" => c.is_ascii_punctuation(),
                b"xdigit" => c.is_ascii_hexdigit(),
                b"blank" => c == b' ' || c == b'\t',
                b"cntrl" => c.is_ascii_control(),
                b"print" => (0x20..0x7f).contains(&c),
                b"graph" => c.is_ascii_graphic(),
                _ => false,
            };
            j += 2 + end + 2;
            continue;
        }
        let (lo, mut k) = if b == b'\\' && j + 1 < p.len() {
            (p[j + 1], j + 2)
        } else {
            (b, j + 1)
        };
        if p.get(k) == Some(&b'-') && p.get(k + 1).is_some_and(|&e| e != b']') {
            let (hi, after) = if p[k + 1] == b'\\' && k + 2 < p.len() {
                (p[k + 2], k + 3)
            } else {
                (p[k + 1], k + 2)
            };
            hit |= lo <= c && c <= hi;
            k = after;
        } else {
            hit |= lo == c;
        }
        j = k;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rules: &[&str]) -> Filters {
        let mut f = Filters::new();
        for r in rules {
            f.rule(r).unwrap();
        }
        f
    }

    #[test]
    fn wildcards() {
        assert!(wildmatch(b"*.o", b"x.o"));
        assert!(!wildmatch(b"*.o", b"d/x.o"));
        assert!(wildmatch(b"**.o", b"d/x.o"));
        assert!(wildmatch(b"a?c", b"abc"));
        assert!(!wildmatch(b"a?c", b"a/c"));
        assert!(wildmatch(b"[a-c]x", b"bx"));
        assert!(!wildmatch(b"[!a-c]x", b"bx"));
        assert!(wildmatch(b"[[:digit:]]*", b"7up"));
        // As rsync (unlike git): `a/**/b` needs a directory between.
        assert!(!wildmatch(b"a/**/b", b"a/b"));
        assert!(wildmatch(b"a/**/b", b"a/x/y/b"));
        assert!(wildmatch(b"\\*", b"*"));
        assert!(!wildmatch(b"\\*", b"x"));
        assert!(wildmatch(b"*", b""));
        assert!(wildmatch(b"f*o*o", b"foo-bar-o"));
    }

    #[test]
    fn rsync_rule_semantics() {
        // Basename patterns match at any depth.
        let x = f(&["- *.tmp"]);
        assert!(x.excludes(b"a/b/c.tmp", false));
        assert!(!x.excludes(b"a/b/c.txt", false));
        // Anchored.
        let x = f(&["- /top"]);
        assert!(x.excludes(b"top", true));
        assert!(!x.excludes(b"a/top", true));
        // Unanchored with a slash matches any tail.
        let x = f(&["- sub/f"]);
        assert!(x.excludes(b"a/sub/f", false));
        assert!(!x.excludes(b"a/xsub/f", false));
        // Directory only.
        let x = f(&["- cache/"]);
        assert!(x.excludes(b"a/cache", true));
        assert!(!x.excludes(b"a/cache", false));
        // First match wins.
        let x = f(&["+ keep.log", "- *.log"]);
        assert!(!x.excludes(b"keep.log", false));
        assert!(x.excludes(b"other.log", false));
        // A leading `**/` may stand for no directory (rsync's WILD2_PREFIX); elsewhere `/**/`
        // needs one, and an anchored `/**/` is not a prefix.
        let x = f(&["- **/b"]);
        assert!(x.excludes(b"b", false) && x.excludes(b"x/y/b", false));
        let x = f(&["- **/x/b", "- /**/c", "- a/**/d", "- **/e/***"]);
        assert!(x.excludes(b"x/b", false) && x.excludes(b"q/x/b", false));
        assert!(!x.excludes(b"c", false) && x.excludes(b"q/c", false));
        assert!(!x.excludes(b"a/d", false) && x.excludes(b"a/q/d", false));
        assert!(x.excludes(b"e", true) && x.excludes(b"e/f/g", false));
        // dir/*** includes the directory and all below.
        let x = f(&["+ /src/***", "- *"]);
        assert!(!x.excludes(b"src", true));
        assert!(!x.excludes(b"src/a/b", false));
        assert!(x.excludes(b"doc", true));
        // Negation.
        let x = f(&["-! *.rs"]);
        assert!(x.excludes(b"a.c", false));
        assert!(!x.excludes(b"a.rs", false));
        // Sides.
        let x = f(&["P keep", "H hidden"]);
        assert!(x.protects(b"keep", false));
        assert!(!x.excludes(b"keep", false));
        assert!(x.excludes(b"hidden", false));
        assert!(!x.protects(b"hidden", false));
        let mut x = f(&["- *.o"]);
        assert!(x.protects(b"x.o", false));
        x.sender_only();
        assert!(!x.protects(b"x.o", false));
        assert!(x.excludes(b"x.o", false));
    }

    #[test]
    fn perishable_rules_do_not_keep_a_directory_being_emptied() {
        let none = |p: &[u8]| {
            let p = p.to_vec();
            move || p.clone()
        };
        let x = f(&["-p *.o", "P keep", "- core"]);
        let asks = |path: &[u8]| {
            let abs = none(path);
            (
                x.protects_at(path, false, None, &abs),
                x.protects_while_emptying(path, false, None, &abs),
            )
        };
        // A perishable exclude protects from --delete, but not inside a directory being deleted.
        assert_eq!(asks(b"d/x.o"), (true, false));
        // Ordinary excludes and protect rules count in both.
        assert_eq!(asks(b"d/keep"), (true, true));
        assert_eq!(asks(b"d/core"), (true, true));
        assert_eq!(asks(b"d/other"), (false, false));
        assert!(
            x.excludes(b"d/x.o", false),
            "perishable still excludes from the transfer"
        );
        // -C's default list is perishable.
        let mut c = Filters::new();
        c.rule("-C").unwrap();
        let abs = none(b"d/.git");
        assert!(c.protects_at(b"d/.git", true, None, &abs));
        assert!(!c.protects_while_emptying(b"d/.git", true, None, &abs));
        // A merge rule's `p` makes the rules of its file perishable.
        let rules = f(&[])
            .parse_merge(
                b"- *.tmp\n+ a\n",
                MergeMods {
                    perishable: true,
                    ..MergeMods::default()
                },
                b"",
                &Origin::File,
            )
            .unwrap()
            .rules;
        assert!(rules.iter().all(|r| r.perishable));
    }

    #[test]
    fn absolute_rules_match_the_absolute_path() {
        let x = f(&["-/ /etc/passwd", "-/ sub/foo", "- /top"]);
        let at = |rel: &[u8], abs: &[u8]| {
            let abs = abs.to_vec();
            x.excludes_at(rel, false, None, &move || abs.clone())
        };
        // Anchored at `/`, whatever the transfer root.
        assert!(at(b"passwd", b"etc/passwd"));
        assert!(!at(b"etc/passwd", b"home/u/etc/passwd"));
        // Unanchored: any tail of the absolute path, even one above the transfer root.
        assert!(at(b"foo", b"home/u/sub/foo"));
        assert!(!at(b"foo", b"home/u/other/foo"));
        // Rules without the modifier see the relative path.
        assert!(at(b"top", b"home/u/top"));
        assert!(!at(b"a/top", b"top"));
        // Not asked unless a rule needs it.
        let y = f(&["- *.o"]);
        assert!(y.excludes_at(b"x.o", false, None, &|| unreachable!()));
    }

    #[test]
    fn x_rules_are_for_attribute_names_only() {
        let x = f(&["+x user.keep*", "-x user.*", "-x security.selinux", "- *.o"]);
        assert!(x.has_xattr_rules());
        assert!(x.xattr_excluded(b"user.mime"));
        assert!(!x.xattr_excluded(b"user.keep.this"));
        assert!(x.xattr_excluded(b"security.selinux"));
        assert!(!x.xattr_excluded(b"trusted.x"));
        // They never match entries, and plain rules never match attribute names.
        assert!(!x.excludes(b"user.mime", false));
        assert!(!x.protects(b"security.selinux", false));
        assert!(x.excludes(b"a.o", false));
        assert!(!x.xattr_excluded(b"trusted.a.o"));
        let y = f(&["- *.o"]);
        assert!(!y.has_xattr_rules() && !y.xattr_excluded(b"user.x"));
    }

    #[test]
    fn parsing() {
        let mut x = Filters::new();
        assert!(x.rule("exclude *.o").is_ok());
        assert!(x.rule("+_keep").is_ok());
        assert!(x.rule("!").is_ok());
        assert!(x.is_empty());
        assert!(x.rule("- ").is_err());
        assert!(x.rule("dir-merge .rsync-filter").is_ok() && x.has_dir_merges());
        assert!(x.rule("dir-merge a/.rsync-filter").is_err());
        assert!(x.rule(":Q .rsync-filter").is_err());
        assert!(x.rule(". /nonexistent/merge-file").is_err());
        assert!(x.rule("Q foo").is_err());
        assert!(x.rule("Hx foo").is_err());
        assert!(x.rule("-xs foo").is_err());
        let mut y = Filters::new();
        y.exclude("+ inc").unwrap();
        assert_eq!(y.rules()[0].action, Action::Include);
        y.from_lines("# comment\n\n; also\n*.bak\n", Action::Exclude)
            .unwrap();
        assert_eq!(y.rules().len(), 2);
    }
}
