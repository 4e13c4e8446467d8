//! Results on disk: `results.json` and `results.csv` (one row per run), and `report.md` with a
//! table per dataset and cache mode (medians, ratios against arsync measured in the same run) and
//! an SVG bar chart per dataset.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

/// One measured run.
#[derive(Clone, Debug, Serialize)]
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Write JSON, CSV, the Markdown report and the SVG charts into `dir`.
pub fn write(dir: &Path, title: &str, env: &str, rows: &[Row]) -> Result<()> {
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

    let mut md = format!(
        "# {title}\n\n{env}\n\nMedians over the repetitions; runs alternate tools. `ratio` = tool's median wall / arsync's (in a sweep: the defaults') median wall in the same run (> 1: arsync, or the defaults, faster). Verdict: what the copy lost (`OK` = nothing).\n"
    );
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
        let arsync_med = by_tool
            .iter()
            .find(|(k, _)| k.as_str() == "arsync" || k.as_str() == "defaults")
            .map(|(_, v)| median(v.iter().map(|r| r.wall_s).collect()));
        let mut lines: Vec<(f64, String)> = Vec::new();
        for (tool, v) in &by_tool {
            let walls: Vec<f64> = v.iter().map(|r| r.wall_s).collect();
            let med = median(walls.clone());
            let min = walls.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = walls.iter().cloned().fold(0.0, f64::max);
            let cpu = median(v.iter().map(|r| r.user_s + r.sys_s).collect());
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
                    "| {tool} | {min:.3} / {med:.3} / {max:.3} | {ratio} | {cpu:.2} | {rss:.1} | {fps:.0} | {mbs:.0} | {} | {} | {verdict} |",
                    if steals.is_empty() { "-".into() } else { format!("{:.0}", median(steals)) },
                    codes.join(",")
                ),
            ));
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (files, bytes) = rs.first().map(|r| (r.files, r.bytes)).unwrap_or_default();
        let _ = write!(
            md,
            "\n## {dataset}, {cache} cache ({files} files, {:.1} MB)\n\n![{dataset} {cache}]({dataset}-{cache}.svg)\n\n| tool | wall s min / med / max | ratio | CPU s | RSS MiB | files/s | MB/s | steals | exit | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n",
            bytes as f64 / 1e6
        );
        for (_, l) in &lines {
            md.push_str(l);
            md.push('\n');
        }
        let bars: Vec<(String, f64)> = by_tool
            .iter()
            .map(|(t, v)| (t.clone(), median(v.iter().map(|r| r.wall_s).collect())))
            .collect();
        fs::write(
            dir.join(format!("{dataset}-{cache}.svg")),
            svg(
                &format!("{dataset}, {cache} cache: median wall time (s)"),
                &bars,
            ),
        )?;
    }
    fs::write(dir.join("report.md"), md)?;
    Ok(())
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
