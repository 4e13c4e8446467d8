//! `--info=FLAGS`: rsync's output words and their levels, and how `-v`, `--stats` and
//! `--progress` set them. Owns the parsing (rsync's `parse_output_words`: comma lists, a level
//! after the word, `ALL`, `NONE`, `HELP`, any case) and the order in which the defaults give way
//! to what the user asked for; the printer asks [`Info::level`] before each kind of message.

use std::fmt::Write as _;

/// One of rsync's `--info` words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// Files backed up (`-b`): "backed up NAME to BACKUP".
    Backup,
    /// Files copied locally on the receiving side (nothing in a local copy).
    Copy,
    /// Deletions: "deleting NAME".
    Del,
    /// File-list building and sending (arsync has no file list: nothing).
    Flist,
    /// Miscellaneous information (nothing in a local copy).
    Misc,
    /// Mount points skipped (`-xx`).
    Mount,
    /// 1: updated names; 2: unchanged names too.
    Name,
    /// Skipped non-regular files (on by default).
    Nonreg,
    /// 1: per-file progress; 2: the whole transfer's.
    Progress,
    /// Source files removed (`--remove-source-files`).
    Remove,
    /// Files skipped by `--max-size`/`--min-size`.
    Skip,
    /// 1: the summary; 2 and 3: rsync's statistics.
    Stats,
    /// Unsafe symlinks copied as files (`--copy-unsafe-links`).
    Symsafe,
}

/// The words in rsync's order, with their help lines.
const WORDS: [(Flag, &str, &str); 13] = [
    (Flag::Backup, "BACKUP", "Mention files backed up"),
    (
        Flag::Copy,
        "COPY",
        "Mention files copied locally on the receiving side",
    ),
    (Flag::Del, "DEL", "Mention deletions on the receiving side"),
    (
        Flag::Flist,
        "FLIST",
        "Mention file-list receiving/sending (levels 1-2)",
    ),
    (
        Flag::Misc,
        "MISC",
        "Mention miscellaneous information (levels 1-2)",
    ),
    (
        Flag::Mount,
        "MOUNT",
        "Mention mounts that were found or skipped",
    ),
    (
        Flag::Name,
        "NAME",
        "Mention 1) updated file/dir names, 2) unchanged names",
    ),
    (
        Flag::Nonreg,
        "NONREG",
        "Mention skipped non-regular files (default 1, 0 disables)",
    ),
    (
        Flag::Progress,
        "PROGRESS",
        "Mention 1) per-file progress or 2) total transfer progress",
    ),
    (
        Flag::Remove,
        "REMOVE",
        "Mention files removed on the sending side",
    ),
    (
        Flag::Skip,
        "SKIP",
        "Mention files skipped due to transfer overrides (levels 1-2)",
    ),
    (
        Flag::Stats,
        "STATS",
        "Mention statistics at end of run (levels 1-3)",
    ),
    (Flag::Symsafe, "SYMSAFE", "Mention symlinks that are unsafe"),
];

/// rsync's `--debug` words (its internal traces; arsync acts on `FILTER` alone).
const DEBUG_WORDS: [(&str, &str); 24] = [
    ("ACL", "Debug extra ACL info"),
    ("BACKUP", "Debug backup actions (levels 1-2)"),
    ("BIND", "Debug socket bind actions"),
    ("CHDIR", "Debug when the current directory changes"),
    ("CONNECT", "Debug connection events (levels 1-2)"),
    ("CMD", "Debug commands+options that are issued (levels 1-2)"),
    ("DEL", "Debug delete actions (levels 1-3)"),
    ("DELTASUM", "Debug delta-transfer checksumming (levels 1-4)"),
    ("DUP", "Debug weeding of duplicate names"),
    ("EXIT", "Debug exit events (levels 1-3)"),
    ("FILTER", "Debug filter actions (levels 1-3)"),
    ("FLIST", "Debug file-list operations (levels 1-4)"),
    ("FUZZY", "Debug fuzzy scoring (levels 1-2)"),
    ("GENR", "Debug generator functions"),
    ("HASH", "Debug hashtable code"),
    ("HLINK", "Debug hard-link actions (levels 1-3)"),
    ("ICONV", "Debug iconv character conversions (levels 1-2)"),
    ("IO", "Debug I/O routines (levels 1-4)"),
    ("NSTR", "Debug negotiation strings"),
    (
        "OWN",
        "Debug ownership changes in users & groups (levels 1-2)",
    ),
    ("PROTO", "Debug protocol information"),
    ("RECV", "Debug receiver functions"),
    ("SEND", "Debug sender functions"),
    ("TIME", "Debug setting of modified times (levels 1-2)"),
];

/// What each `-v` adds to the `--debug` words (rsync's `debug_verbosity`).
const DEBUG_BY_VERBOSITY: [&str; 6] = [
    "",
    "",
    "BIND,CONNECT,CMD,DEL,DELTASUM,DUP,FILTER,FLIST,ICONV",
    "ACL,BACKUP,CONNECT2,DEL2,DELTASUM2,EXIT,FILTER2,FLIST2,FUZZY,GENR,OWN,RECV,SEND,TIME",
    "CMD2,DEL3,DELTASUM3,EXIT2,FLIST3,ICONV2,OWN2,PROTO,TIME2",
    "CHDIR,DELTASUM4,FLIST4,FUZZY2,HASH,HLINK",
];

/// The highest level a word takes (rsync's `MAX_OUT_LEVEL`).
const MAX_LEVEL: u8 = 4;

/// What each `-v` adds (rsync's `info_verbosity`).
const BY_VERBOSITY: [&str; 3] = [
    "NONREG",
    "COPY,DEL,FLIST,MISC,NAME,STATS,SYMSAFE",
    "BACKUP,MISC2,MOUNT,NAME2,REMOVE,SKIP",
];

/// Who set a level: what the user asked for beats what `-v` and the other options imply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Priority {
    #[default]
    Default,
    User,
}

/// The level of every word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    levels: [u8; WORDS.len()],
    set_by: [Priority; WORDS.len()],
    debug: [u8; DEBUG_WORDS.len()],
    debug_set_by: [Priority; DEBUG_WORDS.len()],
}

/// `--info=help` or `--debug=help` was asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Help {
    /// `--info=help`.
    Info,
    /// `--debug=help`.
    Debug,
}

/// How the output options were given.
#[derive(Clone, Copy, Debug, Default)]
pub struct Given<'a> {
    /// The `--info` values, in command-line order.
    pub info: &'a [&'a str],
    /// The `--debug` values, in command-line order.
    pub debug: &'a [&'a str],
    /// The number of `-v`.
    pub verbose: u8,
    /// `--stats`.
    pub stats: bool,
    /// `--progress` or `-P`.
    pub progress: bool,
    /// Whether item lines are written before a file's transfer (rsync's `log_before_transfer`):
    /// `-i`, or an `--out-format` without `%b`/`%c`.
    pub listing_first: bool,
}

impl Info {
    /// The levels rsync 3.5 arrives at for these options.
    pub fn resolve(given: &Given<'_>) -> Result<Result<Info, Help>, String> {
        let mut info = Info::default();
        for words in given.info {
            if info.parse(words, Priority::User)? {
                return Ok(Err(Help::Info));
            }
        }
        for words in given.debug {
            if info.parse_debug(words, Priority::User)? {
                return Ok(Err(Help::Debug));
            }
        }
        for words in BY_VERBOSITY.iter().take(usize::from(given.verbose) + 1) {
            info.parse(words, Priority::Default)?;
        }
        for words in DEBUG_BY_VERBOSITY
            .iter()
            .take(usize::from(given.verbose) + 1)
        {
            info.parse_debug(words, Priority::Default)?;
        }
        if given.stats {
            let words = if given.verbose > 1 {
                "stats3"
            } else {
                "stats2"
            };
            info.parse(words, Priority::Default)?;
        }
        if given.progress {
            if !given.listing_first && info.level(Flag::Name) == 0 {
                info.parse("name", Priority::Default)?;
            }
            info.parse("flist2,progress", Priority::Default)?;
        }
        Ok(Ok(info))
    }

    /// The level of `flag` (0: silent).
    pub fn level(&self, flag: Flag) -> u8 {
        // (WORDS lists the flags in their declared order: a unit test holds it.)
        self.levels[flag as usize]
    }

    /// The `--debug=FILTER` level (`-vv` sets 1): the only rsync trace arsync has a meaning
    /// for, which rule decided about an entry.
    pub fn debug_filter(&self) -> u8 {
        self.debug[DEBUG_WORDS
            .iter()
            .position(|w| w.0 == "FILTER")
            .expect("a debug word")]
    }

    /// One `--info` value; `true` for `HELP`.
    fn parse(&mut self, words: &str, by: Priority) -> Result<bool, String> {
        let names: Vec<&str> = WORDS.iter().map(|w| w.1).collect();
        parse_words(
            &names,
            &mut self.levels,
            &mut self.set_by,
            words,
            by,
            "--info",
        )
    }

    /// One `--debug` value; `true` for `HELP`.
    fn parse_debug(&mut self, words: &str, by: Priority) -> Result<bool, String> {
        let names: Vec<&str> = DEBUG_WORDS.iter().map(|w| w.0).collect();
        parse_words(
            &names,
            &mut self.debug,
            &mut self.debug_set_by,
            words,
            by,
            "--debug",
        )
    }
}

/// One `--info` or `--debug` value (rsync's `parse_output_words`) over the words `names`:
/// comma-separated, any case, each with a level after it; `true` for `HELP`.
fn parse_words(
    names: &[&str],
    levels: &mut [u8],
    set_by: &mut [Priority],
    words: &str,
    by: Priority,
    option: &str,
) -> Result<bool, String> {
    for word in words.split(',').filter(|w| !w.is_empty()) {
        let name_len = if word.starts_with(|c: char| c.is_ascii_digit()) {
            word.len()
        } else {
            word.trim_end_matches(|c: char| c.is_ascii_digit()).len()
        };
        let (name, digits) = word.split_at(name_len);
        let level = if digits.is_empty() {
            1
        } else {
            // (As rsync's atoi: a number too long to hold is the highest level.)
            digits
                .parse::<u32>()
                .map_or(MAX_LEVEL, |l| l.min(u32::from(MAX_LEVEL)) as u8)
        };
        if name.eq_ignore_ascii_case("help") {
            return Ok(true);
        }
        let (all, level) = if name.eq_ignore_ascii_case("none") {
            (true, 0)
        } else {
            (name.eq_ignore_ascii_case("all"), level)
        };
        let mut known = all;
        for (j, word_name) in names.iter().enumerate() {
            if all || word_name.eq_ignore_ascii_case(name) {
                known = true;
                if by >= set_by[j] {
                    set_by[j] = by;
                    levels[j] = level;
                }
            }
        }
        if !known {
            return Err(format!("Unknown {option} item: \"{name}\""));
        }
    }
    Ok(false)
}

/// rsync's `--info=help` or `--debug=help` text.
pub fn help(which: &Help) -> String {
    let (option, words, by_verbosity): (&str, Vec<(&str, &str)>, &[&str]) = match which {
        Help::Info => (
            "--info",
            WORDS.iter().map(|w| (w.1, w.2)).collect(),
            &BY_VERBOSITY,
        ),
        Help::Debug => ("--debug", DEBUG_WORDS.to_vec(), &DEBUG_BY_VERBOSITY),
    };
    let mut s = String::new();
    let line = |s: &mut String, a: &str, b: &str| {
        let _ = writeln!(s, "{a:<10} {b}");
    };
    s.push_str("Use OPT or OPT1 for level 1 output, OPT2 for level 2, etc.; OPT0 silences.\n\n");
    for (name, what) in words {
        line(&mut s, name, what);
    }
    s.push('\n');
    line(
        &mut s,
        "ALL",
        &format!("Set all {option} options (e.g. all{MAX_LEVEL})"),
    );
    line(
        &mut s,
        "NONE",
        &format!("Silence all {option} options (same as all0)"),
    );
    line(&mut s, "HELP", "Output this help message");
    s.push_str("\nOptions added at each level of verbosity:\n");
    for (v, words) in by_verbosity.iter().enumerate() {
        if !words.is_empty() {
            let _ = writeln!(s, "{v}) {words}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(given: Given<'_>) -> Vec<(&'static str, u8)> {
        let info = Info::resolve(&given).unwrap().unwrap();
        WORDS
            .iter()
            .map(|w| (w.1, info.level(w.0)))
            .filter(|w| w.1 > 0)
            .collect()
    }

    #[test]
    fn words_are_listed_in_the_order_of_the_flags() {
        for (i, w) in WORDS.iter().enumerate() {
            assert_eq!(w.0 as usize, i, "{}", w.1);
        }
    }

    #[test]
    fn verbosity_sets_rsync_levels_and_user_words_win() {
        assert_eq!(levels(Given::default()), [("NONREG", 1)]);
        let v2 = levels(Given {
            verbose: 2,
            ..Default::default()
        });
        assert!(
            v2.contains(&("NAME", 2)) && v2.contains(&("MISC", 2)),
            "{v2:?}"
        );
        assert!(
            v2.contains(&("SKIP", 1)) && v2.contains(&("STATS", 1)),
            "{v2:?}"
        );
        // The user's level beats -v's, wherever it stands on the line.
        let quiet_names = levels(Given {
            info: &["name0"],
            verbose: 2,
            ..Default::default()
        });
        assert!(
            !quiet_names.iter().any(|w| w.0 == "NAME"),
            "{quiet_names:?}"
        );
        // Later words win; ALL/NONE take a level; case does not matter.
        assert_eq!(
            levels(Given {
                info: &["all2,none", "Del,STATS3", "progress9"],
                ..Default::default()
            }),
            [("DEL", 1), ("PROGRESS", 4), ("STATS", 3)]
        );
    }

    #[test]
    fn stats_and_progress_imply_what_rsync_implies() {
        let s = levels(Given {
            stats: true,
            ..Default::default()
        });
        assert!(s.contains(&("STATS", 2)), "{s:?}");
        let s = levels(Given {
            stats: true,
            verbose: 2,
            ..Default::default()
        });
        assert!(s.contains(&("STATS", 3)), "{s:?}");
        let p = levels(Given {
            progress: true,
            ..Default::default()
        });
        assert!(
            p.contains(&("NAME", 1)) && p.contains(&("PROGRESS", 1)) && p.contains(&("FLIST", 2)),
            "{p:?}"
        );
        // With -i the names come from the item lines; --info=progress2 stays 2.
        let p = levels(Given {
            info: &["progress2"],
            progress: true,
            listing_first: true,
            ..Default::default()
        });
        assert!(
            !p.iter().any(|w| w.0 == "NAME") && p.contains(&("PROGRESS", 2)),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_words_and_help() {
        let e = Info::resolve(&Given {
            info: &["name,bogus2"],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, "Unknown --info item: \"bogus\"");
        assert!(
            Info::resolve(&Given {
                info: &["2"],
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(
            Info::resolve(&Given {
                info: &["name", "HELP"],
                ..Default::default()
            })
            .unwrap(),
            Err(Help::Info)
        );
        assert!(help(&Help::Info).contains("2) BACKUP,MISC2,MOUNT,NAME2,REMOVE,SKIP\n"));
        // --debug: rsync's words, FILTER at -vv; an unknown one is refused likewise.
        let d = |debug: &[&str], verbose| {
            Info::resolve(&Given {
                debug,
                verbose,
                ..Default::default()
            })
        };
        assert_eq!(d(&[], 1).unwrap().unwrap().debug_filter(), 0);
        assert_eq!(d(&[], 2).unwrap().unwrap().debug_filter(), 1);
        assert_eq!(d(&["filter2"], 0).unwrap().unwrap().debug_filter(), 2);
        assert_eq!(d(&["NONE"], 3).unwrap().unwrap().debug_filter(), 0);
        assert_eq!(d(&["acl,del3"], 0).unwrap().unwrap().debug_filter(), 0);
        assert_eq!(
            d(&["filterx"], 0).unwrap_err(),
            "Unknown --debug item: \"filterx\""
        );
        assert_eq!(d(&["help"], 0).unwrap(), Err(Help::Debug));
    }
}
