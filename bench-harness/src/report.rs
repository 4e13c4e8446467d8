//! Results on disk: `results.json` and `results.csv` (one row per run), and `report.md` with a
//! table per dataset and cache mode (medians, ratios against arsync measured in the same run, CPU
//! per 1,000 files and per GB; under a cold table, the copy's rate against the storage's read
//! ceiling when one was measured) and an SVG bar chart per dataset. A report can be written again
//! from its `results.json` (`arsync-bench report`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One measured run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub dataset: String,
    pub cache: String,
    pub tool: String,
    pub rep: usize,
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub peak_rss_kib: i64,
    pub exit: i32,
    pub files: u64,
    pub bytes: u64,
    pub files_per_s: f64,
    pub mb_per_s: f64,
    /// Steals reported by arsync (`--stats-json`), for the thread-scaling mode.
    pub steals: Option<u64>,
    pub threads: Option<usize>,
    pub verdict: String,
}

impl Row {
    /// A row for one measured run of `tool` on `dataset` (`files` and `bytes` of the dataset).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dataset: &str,
        cache: &str,
        tool: &str,
        rep: usize,
        s: &crate::runner::Sample,
        (files, bytes): (u64, u64),
        threads: Option<usize>,
        steals: Option<u64>,
        verdict: String,
    ) -> Self {
        Row {
            dataset: dataset.to_string(),
            cache: cache.to_string(),
            tool: tool.to_string(),
            rep,
            wall_s: s.wall,
            user_s: s.user,
            sys_s: s.sys,
            peak_rss_kib: s.rss_kib,
            exit: s.code,
            files,
            bytes,
            files_per_s: files as f64 / s.wall,
            mb_per_s: bytes as f64 / 1e6 / s.wall,
            steals,
            threads,
            verdict,
        }
    }
}

/// The read ceiling of the storage under the data (`arsync-bench ceiling`): the best median of
/// its probes, which probe, and the file it was read from.
#[derive(Clone, Debug)]
pub struct Ceiling {
    pub mb_per_s: f64,
    pub probe: String,
    pub from: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Write JSON, CSV, the Markdown report and the SVG charts into `dir`; `ceiling`, when given, is
/// set against the cold tables.
pub fn write(
    dir: &Path,
    title: &str,
    env: &str,
    rows: &[Row],
    ceiling: Option<&Ceiling>,
) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(rows)?,
    )?;
    let mut csv = String::from(
        "dataset,cache,tool,rep,threads,wall_s,user_s,sys_s,peak_rss_kib,exit,files,bytes,files_per_s,mb_per_s,steals,verdict\n",
    );
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.4},{:.4},{:.4},{},{},{},{},{:.0},{:.1},{},{}",
            r.dataset,
            r.cache,
            r.tool,
            r.rep,
            r.threads.map(|t| t.to_string()).unwrap_or_default(),
            r.wall_s,
            r.user_s,
            r.sys_s,
            r.peak_rss_kib,
            r.exit,
            r.files,
            r.bytes,
            r.files_per_s,
            r.mb_per_s,
            r.steals.map(|s| s.to_string()).unwrap_or_default(),
            r.verdict.replace(',', ";")
        );
    }
    fs::write(dir.join("results.csv"), csv)?;

    let (md, charts) = markdown(title, env, rows, ceiling);
    for (name, chart) in charts {
        fs::write(dir.join(name), chart)?;
    }
    fs::write(dir.join("report.md"), md)?;
    Ok(())
}

/// The Markdown report of `rows` and its charts (file name, SVG).
fn markdown(
    title: &str,
    env: &str,
    rows: &[Row],
    ceiling: Option<&Ceiling>,
) -> (String, Vec<(String, String)>) {
    let mut md = format!(
        "# {title}\n\n{env}\n\nMedians over the repetitions; runs alternate tools. `ratio` = tool's median wall / arsync's (in a sweep: the defaults') median wall in the same run (> 1: arsync, or the defaults, faster). Verdict: what the copy lost (`OK` = nothing).\n"
    );
    let mut charts = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.dataset.clone(), r.cache.clone()))
            .or_default()
            .push(r);
    }
    for ((dataset, cache), rs) in &groups {
        let mut by_tool: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
        for r in rs {
            let key = match r.threads {
                Some(t) if r.tool.ends_with("--mpi") => format!("mpirun -np {t} {}", r.tool),
                Some(t) => format!("{} --threads {t}", r.tool),
                None => r.tool.clone(),
            };
            by_tool.entry(key).or_default().push(r);
        }
        // The run everything is set against: arsync (in a sweep, its defaults), by name.
        let lead = by_tool
            .iter()
            .find(|(k, _)| k.as_str() == "arsync" || k.as_str() == "defaults");
        let lead_name = lead.map(|(k, _)| k.clone()).unwrap_or_default();
        let arsync_med = lead.map(|(_, v)| median(v.iter().map(|r| r.wall_s).collect()));
        let mut lines: Vec<(f64, String)> = Vec::new();
        for (tool, v) in &by_tool {
            let walls: Vec<f64> = v.iter().map(|r| r.wall_s).collect();
            let med = median(walls.clone());
            let min = walls.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = walls.iter().cloned().fold(0.0, f64::max);
            let cpu = median(v.iter().map(|r| r.user_s + r.sys_s).collect());
            let per = |of: fn(&Row) -> f64| {
                median(v.iter().map(|r| (r.user_s + r.sys_s) / of(r)).collect())
            };
            let per_k_files = per(|r| r.files as f64 / 1000.0);
            let per_gb = per(|r| r.bytes as f64 / 1e9);
            let rss = median(v.iter().map(|r| r.peak_rss_kib as f64 / 1024.0).collect());
            let fps = median(v.iter().map(|r| r.files_per_s).collect());
            let mbs = median(v.iter().map(|r| r.mb_per_s).collect());
            let steals = v
                .iter()
                .filter_map(|r| r.steals)
                .map(|s| s as f64)
                .collect::<Vec<_>>();
            let ratio = arsync_med
                .map(|a| format!("{:.2}", med / a))
                .unwrap_or_else(|| "-".into());
            let verdict = v
                .iter()
                .map(|r| r.verdict.as_str())
                .find(|s| !s.is_empty())
                .unwrap_or("");
            let codes: Vec<String> = v.iter().map(|r| r.exit.to_string()).collect();
            lines.push((
                med,
                format!(
                    "| {tool} | {min:.3} / {med:.3} / {max:.3} | {ratio} | {cpu:.2} | {} | {} | {rss:.1} | {fps:.0} | {mbs:.0} | {} | {} | {verdict} |",
                    figure(per_k_files),
                    figure(per_gb),
                    if steals.is_empty() { "-".into() } else { format!("{:.0}", median(steals)) },
                    codes.join(",")
                ),
            ));
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (files, bytes) = rs.first().map(|r| (r.files, r.bytes)).unwrap_or_default();
        let _ = write!(
            md,
            "\n## {dataset}, {cache} cache ({files} files, {:.1} MB)\n\n![{dataset} {cache}]({dataset}-{cache}.svg)\n\n| tool | wall s min / med / max | ratio | CPU s | CPU s / 1k files | CPU s / GB | RSS MiB | files/s | MB/s | steals | exit | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            bytes as f64 / 1e6
        );
        for (_, l) in &lines {
            md.push_str(l);
            md.push('\n');
        }
        if let (Some(read), Some(a)) = (
            by_tool
                .get(crate::runner::READ_TREE)
                .map(|v| median(v.iter().map(|r| r.wall_s).collect())),
            arsync_med,
        ) {
            let _ = write!(
                md,
                "\nThe source read alone in the same run (`{}`, every byte once, no copy): {read:.3} s, {:.0} MB/s; the median {lead_name} copy took {:.2}× that.\n",
                crate::runner::READ_TREE,
                bytes as f64 / 1e6 / read,
                a / read
            );
        }
        if let (Some(c), "cold") = (ceiling, cache.as_str()) {
            let best = bytes as f64 / 1e6 / c.mb_per_s;
            let _ = write!(
                md,
                "\nRead ceiling of the storage: {:.0} MB/s ({}; `{}`): these {:.1} MB in {best:.3} s at best.",
                c.mb_per_s,
                c.probe,
                c.from,
                bytes as f64 / 1e6
            );
            if let Some(a) = arsync_med {
                let _ = write!(
                    md,
                    " The median {lead_name} copy ran at {:.0} MB/s, {:.0}% of it.",
                    bytes as f64 / 1e6 / a,
                    100.0 * best / a
                );
            }
            md.push('\n');
        }
        let bars: Vec<(String, f64)> = by_tool
            .iter()
            .map(|(t, v)| (t.clone(), median(v.iter().map(|r| r.wall_s).collect())))
            .collect();
        charts.push((
            format!("{dataset}-{cache}.svg"),
            svg(
                &format!("{dataset}, {cache} cache: median wall time (s)"),
                &bars,
            ),
        ));
    }
    (md, charts)
}

/// `x` to three significant figures (at least), or `-` where it has no meaning (no files, no
/// bytes).
fn figure(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let places = if x == 0.0 {
        0
    } else {
        (2 - x.abs().log10().floor() as i32).max(0) as usize
    };
    format!("{x:.places$}")
}

/// Write the report of the run in `dir` again from its `results.json`, keeping the title and
/// machine line of the report there (`arsync-bench report`): a run taken before a column was
/// added, or before the storage's ceiling was measured, gets them without being run again.
pub fn rewrite(dir: &Path, ceiling: Option<&Ceiling>) -> Result<()> {
    let rows: Vec<Row> = serde_json::from_slice(&fs::read(dir.join("results.json"))?)?;
    let old = fs::read_to_string(dir.join("report.md")).unwrap_or_default();
    let (title, env) = heading(&old);
    let (md, charts) = markdown(&title, &env, &rows, ceiling);
    for (name, chart) in charts {
        fs::write(dir.join(name), chart)?;
    }
    fs::write(dir.join("report.md"), md)?;
    Ok(())
}

/// The title and the machine line of a report written by [`write()`] (its first and third lines).
fn heading(report: &str) -> (String, String) {
    let mut lines = report.lines();
    let title = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .unwrap_or("arsync against its peers")
        .to_string();
    let env = lines
        .find(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("Medians over"))
        .unwrap_or("Machine: not recorded.")
        .to_string();
    (title, env)
}

/// A horizontal bar chart, arsync highlighted.
fn svg(title: &str, bars: &[(String, f64)]) -> String {
    let mut bars = bars.to_vec();
    bars.sort_by(|a, b| a.1.total_cmp(&b.1));
    let max = bars.iter().map(|b| b.1).fold(1e-9, f64::max);
    let (w, row, left) = (640.0, 26.0, 170.0);
    let h = 40.0 + row * bars.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"8\" y=\"18\" font-size=\"14\">{}</text>\n",
        title.replace('&', "&amp;").replace('<', "&lt;")
    );
    for (i, (name, v)) in bars.iter().enumerate() {
        let y = 30.0 + i as f64 * row;
        let bw = (w - left - 70.0) * v / max;
        let color = if name.starts_with("arsync") {
            "#d9534f"
        } else {
            "#5b8def"
        };
        let _ = writeln!(
            s,
            "<text x=\"8\" y=\"{:.0}\">{}</text><rect x=\"{left}\" y=\"{y:.0}\" width=\"{bw:.1}\" height=\"{:.0}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.0}\">{v:.3}</text>",
            y + 15.0,
            name.replace('&', "&amp;").replace('<', "&lt;"),
            row - 6.0,
            left + bw + 4.0,
            y + 15.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        cache: &str,
        tool: &str,
        rep: usize,
        wall: f64,
        cpu: f64,
        files: u64,
        bytes: u64,
    ) -> Row {
        Row {
            dataset: "set".into(),
            cache: cache.into(),
            tool: tool.into(),
            rep,
            wall_s: wall,
            user_s: cpu / 4.0,
            sys_s: cpu * 3.0 / 4.0,
            peak_rss_kib: 2048,
            exit: 0,
            files,
            bytes,
            files_per_s: files as f64 / wall,
            mb_per_s: bytes as f64 / 1e6 / wall,
            steals: None,
            threads: None,
            verdict: String::new(),
        }
    }

    /// The table line of `tool` in the section of `cache`.
    fn line<'a>(md: &'a str, cache: &str, tool: &str) -> &'a str {
        let section = md
            .split("\n## ")
            .find(|s| s.starts_with(&format!("set, {cache} cache")))
            .unwrap();
        section
            .lines()
            .find(|l| l.starts_with(&format!("| {tool} |")))
            .unwrap()
    }

    /// CPU per 1,000 files and per GB are the medians of each run's CPU over its files and
    /// bytes; a cold table carries the ceiling line with the arsync median's share of it, a warm
    /// one does not; a set without bytes gets `-`; `rewrite` keeps the report's title and
    /// machine line and adds the ceiling.
    #[test]
    fn cpu_per_files_and_bytes_and_the_ceiling() {
        // 20,000 files, 2 GB: arsync CPU 0.4, 0.5, 0.6 s over walls 0.8, 1.0, 1.2 s.
        let (files, bytes) = (20_000, 2_000_000_000);
        let mut rows = Vec::new();
        for (rep, (wall, cpu)) in [(0.8, 0.4), (1.0, 0.5), (1.2, 0.6)].into_iter().enumerate() {
            rows.push(row("cold", "arsync", rep, wall, cpu, files, bytes));
            rows.push(row(
                "cold",
                "cp-a",
                rep,
                wall * 2.0,
                cpu * 3.0,
                files,
                bytes,
            ));
            rows.push(row("warm", "arsync", rep, wall / 4.0, cpu, files, 0));
            rows.push(row(
                "cold",
                "read-tree",
                rep,
                wall / 2.0,
                cpu / 2.0,
                files,
                bytes,
            ));
        }
        let ceiling = Ceiling {
            mb_per_s: 2500.0,
            probe: "buffered, 8 stream(s)".into(),
            from: "c.json".into(),
        };
        let (md, charts) = markdown("T", "Machine: M.", &rows, Some(&ceiling));
        assert_eq!(
            line(&md, "cold", "arsync"),
            "| arsync | 0.800 / 1.000 / 1.200 | 1.00 | 0.50 | 0.0250 | 0.250 | 2.0 | 20000 | 2000 | - | 0,0,0 |  |"
        );
        assert_eq!(
            line(&md, "cold", "cp-a"),
            "| cp-a | 1.600 / 2.000 / 2.400 | 2.00 | 1.50 | 0.0750 | 0.750 | 2.0 | 10000 | 1000 | - | 0,0,0 |  |"
        );
        // No bytes: no CPU per GB.
        assert!(line(&md, "warm", "arsync").contains("| 0.50 | 0.0250 | - |"));
        // 2 GB at 2,500 MB/s is 0.8 s; arsync's 1.0 s is 2,000 MB/s, 80% of it.
        assert!(md.contains(
            "Read ceiling of the storage: 2500 MB/s (buffered, 8 stream(s); `c.json`): these 2000.0 MB in 0.800 s at best. The median arsync copy ran at 2000 MB/s, 80% of it."
        ));
        assert_eq!(md.matches("Read ceiling").count(), 1, "{md}");
        // The same-run read of the source: 0.5 s, 4,000 MB/s; arsync took twice that.
        assert!(md.contains(
            "The source read alone in the same run (`read-tree`, every byte once, no copy): 0.500 s, 4000 MB/s; the median arsync copy took 2.00× that."
        ), "{md}");
        assert_eq!(md.matches("read alone").count(), 1, "cold only: {md}");
        assert_eq!(charts.len(), 2);

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "Title of the run",
            "Machine: the one.",
            &rows,
            None,
        )
        .unwrap();
        let before = fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(!before.contains("Read ceiling"));
        rewrite(dir.path(), Some(&ceiling)).unwrap();
        let after = fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(after.starts_with("# Title of the run\n\nMachine: the one.\n"));
        assert!(after.contains("80% of it."));
        let text = |md: &str| -> Vec<String> {
            md.lines()
                .filter(|l| !l.is_empty() && !l.starts_with("Read ceiling"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(text(&after), text(&before));
    }

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(figure(219.73), "220");
        assert_eq!(figure(65.27), "65.3");
        assert_eq!(figure(6.527), "6.53");
        assert_eq!(figure(0.01234), "0.0123");
        assert_eq!(figure(0.25), "0.250");
        assert_eq!(figure(0.0), "0");
        assert_eq!(figure(f64::INFINITY), "-");
        assert_eq!(figure(f64::NAN), "-");
    }
}
