//! Results → text: one-line summaries for the terminal and Markdown tables for
//! `docs/benchmarks.md` (the part between `BEGIN`/`END` markers is replaced, the prose around
//! it is kept).

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cli::ReportArgs;

pub const BEGIN: &str = "<!-- push-bench:results:begin -->";
pub const END: &str = "<!-- push-bench:results:end -->";

pub fn run(args: &ReportArgs) -> Result<()> {
    let mut records = Vec::new();
    for path in &args.inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let rec: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            records.push(rec);
        }
    }
    let tables = tables(&records);
    match &args.doc {
        None => print!("{tables}"),
        Some(doc) => {
            let text = std::fs::read_to_string(doc)
                .with_context(|| format!("reading {}", doc.display()))?;
            let updated = splice(&text, &tables)?;
            std::fs::write(doc, updated).with_context(|| format!("writing {}", doc.display()))?;
        }
    }
    Ok(())
}

/// Replaces what lies between the markers.
fn splice(doc: &str, tables: &str) -> Result<String> {
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("the document has no {BEGIN} … {END} section");
    };
    if e < b {
        bail!("{END} comes before {BEGIN}");
    }
    Ok(format!("{}{BEGIN}\n{tables}{}", &doc[..b], &doc[e..]))
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn num(v: &Value, digits: usize) -> String {
    f(v).map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn count(v: &Value) -> String {
    match f(v) {
        Some(x) if x >= 10_000.0 => format!("{:.0}", x),
        Some(x) => format!("{x:.0}"),
        None => "–".into(),
    }
}

/// "broadcast 1×1000 @100/s" style description of a message scenario.
fn describe(rec: &Value) -> String {
    format!(
        "{} {}×{} @{}/s",
        rec["shape"].as_str().unwrap_or("?"),
        rec["channels"],
        rec["connections"].as_u64().unwrap_or(0) / rec["channels"].as_u64().unwrap_or(1).max(1),
        count(&rec["rate"])
    )
}

fn loss(rec: &Value) -> String {
    let loss = rec["loss"].as_u64().unwrap_or(0);
    let expected = rec["expected"].as_u64().unwrap_or(0);
    if loss == 0 {
        "0".into()
    } else {
        format!(
            "{loss} ({:.2}%)",
            loss as f64 * 100.0 / expected.max(1) as f64
        )
    }
}

fn latency(rec: &Value) -> String {
    let l = &rec["latency_ms"];
    format!(
        "{} / {} / {}",
        num(&l["p50"], 2),
        num(&l["p99"], 2),
        num(&l["max"], 1)
    )
}

fn notes(rec: &Value) -> String {
    let mut notes = Vec::new();
    for (key, what) in [
        ("connect_failed", "connects failed"),
        ("disconnected", "disconnected"),
        ("publish_failed", "publishes failed"),
        ("publish_skipped", "publishes skipped"),
        ("duplicates", "duplicates"),
    ] {
        if let Some(n) = rec[key].as_u64().filter(|&n| n > 0) {
            notes.push(format!("{n} {what}"));
        }
    }
    if let (Some(ready), Some(connected)) = (rec["ready"].as_u64(), rec["connected"].as_u64()) {
        if ready < connected {
            notes.push(format!("{} not ready", connected - ready));
        }
    }
    if let Some(verdict) = rec["verdict"].as_str().filter(|v| *v != "good") {
        notes.push(format!("stopped: {verdict}"));
    }
    if let Some(ratio) = f(&rec["achieved_ratio"]).filter(|&r| r < 0.95) {
        notes.push(format!("achieved {:.0}% of rate", ratio * 100.0));
    }
    notes.join("; ")
}

/// What makes two records the same row of a table: one per round when `bench/run.sh` runs
/// several (`BENCH_ROUNDS`).
fn row_key(rec: &Value) -> String {
    [
        "scenario",
        "label",
        "transport",
        "shape",
        "channels",
        "connections",
        "rate",
    ]
    .iter()
    .map(|k| rec[*k].to_string())
    .collect::<Vec<_>>()
    .join("|")
}

/// Records grouped by [`row_key`], groups in order of first appearance, each group in input
/// (round) order.
fn groups<'a>(records: &[&'a Value]) -> Vec<Vec<&'a Value>> {
    let mut out: Vec<Vec<&Value>> = Vec::new();
    for &r in records {
        let key = row_key(r);
        match out.iter_mut().find(|g| row_key(g[0]) == key) {
            Some(g) => g.push(r),
            None => out.push(vec![r]),
        }
    }
    out
}

/// The median record of a group by `key` (the upper one of an even count): the row shown.
fn median<'a>(group: &[&'a Value], key: fn(&Value) -> Option<f64>) -> &'a Value {
    let mut sorted = group.to_vec();
    sorted.sort_by(|a, b| {
        key(a)
            .unwrap_or(f64::INFINITY)
            .total_cmp(&key(b).unwrap_or(f64::INFINITY))
    });
    sorted[sorted.len() / 2]
}

fn cpu(rec: &Value) -> Option<f64> {
    f(&rec["server_cpu_s_per_million"])
}

fn p99(rec: &Value) -> Option<f64> {
    f(&rec["latency_ms"]["p99"])
}

fn rss(rec: &Value) -> Option<f64> {
    f(&rec["rss_kib_per_conn"])
}

fn fixed(x: Option<f64>, digits: usize) -> String {
    x.map(|x| format!("{x:.digits$}")).unwrap_or("–".into())
}

/// "a, b, c" of one figure over a group's rounds.
fn each(group: &[&Value], key: fn(&Value) -> Option<f64>, digits: usize) -> String {
    group
        .iter()
        .map(|r| fixed(key(r), digits))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One figure of a group's median round (by that figure).
fn median_of(group: &[&Value], key: fn(&Value) -> Option<f64>, digits: usize) -> String {
    fixed(key(median(group, key)), digits)
}

/// The note of a row shown for several rounds.
fn rounds_note(group: &[&Value], idle: bool) -> String {
    if group.len() < 2 {
        return String::new();
    }
    if idle {
        format!("{} rounds: {} KiB", group.len(), each(group, rss, 2))
    } else {
        format!(
            "{} rounds: {} s/M; p99 {} ms",
            group.len(),
            each(group, cpu, 1),
            each(group, p99, 1)
        )
    }
}

fn join_notes(a: String, b: String) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b,
        (_, true) => a,
        _ => format!("{a}; {b}"),
    }
}

/// Each Push row against the same row of its peer (`push` → `nchan`, `push-redis` →
/// `nchan-redis`), round by round: efficiency (the peer's CPU per delivery over Push's) and
/// whether Push's p99 was no worse; idle rows by memory per connection.
fn comparison(groups: &[Vec<&Value>]) -> String {
    let mut out = String::new();
    let peer_of = |g: &Vec<&Value>| {
        let label = g[0]["label"].as_str()?;
        let peer = label
            .strip_prefix("push")
            .map(|rest| format!("nchan{rest}"))?;
        let mut want = g[0].clone();
        want["label"] = Value::from(peer);
        let key = row_key(&want);
        groups.iter().find(|p| row_key(p[0]) == key)
    };
    let mut rows = Vec::new();
    for g in groups {
        let Some(p) = peer_of(g) else { continue };
        let idle = g[0]["scenario"] == "idle";
        let what = if idle {
            format!("idle {}", g[0]["connections"])
        } else {
            describe(g[0])
        };
        let pairs: Vec<(&Value, &Value)> = p.iter().copied().zip(g.iter().copied()).collect();
        // nchan's figure over Push's, round by round.
        let ratios = |key: fn(&Value) -> Option<f64>| -> Vec<f64> {
            pairs
                .iter()
                .filter_map(|(n, m)| Some(key(n)? / key(m)?))
                .collect()
        };
        let head = format!(
            "| {what} | {} | {}",
            g[0]["label"].as_str().unwrap_or("?"),
            g[0]["transport"].as_str().unwrap_or("?")
        );
        if idle {
            rows.push(format!(
                "{head} | {} KiB | {} KiB | {} less memory | – | |",
                median_of(p, rss, 2),
                median_of(g, rss, 2),
                range(&ratios(rss)),
            ));
        } else {
            let no_worse = pairs
                .iter()
                .filter(|(n, m)| matches!((p99(n), p99(m)), (Some(a), Some(b)) if b <= a))
                .count();
            rows.push(format!(
                "{head} | {} | {} | {} | {} / {} ms, {no_worse} of {} rounds | {} |",
                median_of(p, cpu, 1),
                median_of(g, cpu, 1),
                range(&ratios(cpu)),
                median_of(p, p99, 1),
                median_of(g, p99, 1),
                pairs.len(),
                join_notes(
                    comparable(median(p, cpu), "nchan"),
                    comparable(median(g, cpu), "Push")
                ),
            ));
        }
    }
    if !rows.is_empty() {
        out.push_str("\n### Push against nchan, round by round\n\n");
        out.push_str("Fan-out rows: nchan's server CPU per delivery over Push's in each round (\"1.50×\": Push does the work on two thirds of the CPU), medians of the rounds, and the rounds in which Push's p99 was no worse than nchan's. Idle rows: nchan's memory per connection over Push's.\n\n");
        out.push_str("| row | server | transport | nchan | Push | nchan ÷ Push, by round | p99 nchan / Push (medians), Push no worse in | notes |\n");
        out.push_str("|---|---|---|---:|---:|---|---|---|\n");
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

/// Why a row's ratio says little: the generator, not the server, was the limit (at 95 % of
/// its core or more), or the server fell behind the rate. With a reader that is never idle a
/// server can spend less per write (nobody to wake; nchan's SSE rows read below the cost of
/// one write per delivery), so its CPU per delivery is not the same measure.
fn comparable(rec: &Value, who: &str) -> String {
    let mut why = Vec::new();
    if let Some(g) = f(&rec["gen_cpu_pct"]).filter(|&g| g >= 95.0) {
        why.push(format!("generator at {g:.0} %"));
    }
    let wanted = f(&rec["rate"]).unwrap_or(0.0) * rec["connections"].as_f64().unwrap_or(0.0)
        / rec["channels"].as_f64().unwrap_or(1.0).max(1.0);
    if let Some(got) = f(&rec["deliveries_per_s"]).filter(|&d| wanted > 0.0 && d < 0.95 * wanted) {
        why.push(format!(
            "{:.0} % of the rate delivered",
            got * 100.0 / wanted
        ));
    }
    if why.is_empty() {
        String::new()
    } else if why[0].starts_with("generator") {
        format!("not comparable: {who}'s {}", why.join(", "))
    } else {
        // The server itself could not keep up: its figure is a floor under its cost.
        format!("{who} fell behind: {}", why.join(", "))
    }
}

/// "1.52×" or "1.40–1.66× (median 1.52×)".
fn range(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "–".into();
    }
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (lo, hi, mid) = (
        sorted[0],
        sorted[sorted.len() - 1],
        sorted[sorted.len() / 2],
    );
    if sorted.len() == 1 {
        format!("{mid:.2}×")
    } else {
        format!("{lo:.2}–{hi:.2}× (median {mid:.2}×)")
    }
}

/// The Markdown tables for a set of records: one row per server and scenario (the median
/// round's, when there are several), in input order, then Push against nchan.
pub fn tables(records: &[Value]) -> String {
    let mut out = String::new();
    let all: Vec<&Value> = records.iter().collect();
    let grouped = groups(&all);
    let idle: Vec<(&Value, String)> = grouped
        .iter()
        .filter(|g| g[0]["scenario"] == "idle")
        .map(|g| (median(g, rss), rounds_note(g, true)))
        .collect();
    let shown = |scenario: &str| -> Vec<(&Value, String)> {
        grouped
            .iter()
            .filter(|g| g[0]["scenario"] == scenario)
            .map(|g| (median(g, cpu), rounds_note(g, false)))
            .collect()
    };
    let fanout = shown("fanout");
    let max = shown("max");
    if !idle.is_empty() {
        out.push_str("\n### Idle connections\n\n");
        out.push_str("| connections | server | transport | opened/s | server RSS/conn KiB | server RSS after MiB | notes |\n");
        out.push_str("|---:|---|---|---:|---:|---:|---|\n");
        for (r, rounds) in idle {
            let rss_after = f(&r["server_rss_kib_after"])
                .map(|k| format!("{:.1}", k / 1024.0))
                .unwrap_or("–".into());
            let mut note = join_notes(notes(r), rounds);
            if f(&r["hold_s"]).is_some_and(|h| h > 0.0) {
                let _ = write!(
                    note,
                    "{}held {:.0}s, RSS {}–{} MiB",
                    if note.is_empty() { "" } else { "; " },
                    f(&r["hold_s"]).unwrap_or(0.0),
                    f(&r["hold_rss_kib_min"])
                        .map(|k| format!("{:.1}", k / 1024.0))
                        .unwrap_or("–".into()),
                    f(&r["hold_rss_kib_max"])
                        .map(|k| format!("{:.1}", k / 1024.0))
                        .unwrap_or("–".into()),
                );
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r["connected"],
                r["label"].as_str().unwrap_or("?"),
                r["transport"].as_str().unwrap_or("?"),
                count(&r["conns_per_s"]),
                num(&r["rss_kib_per_conn"], 1),
                rss_after,
                note
            );
        }
    }
    for (title, rows) in [
        ("Fan-out at a fixed rate", fanout),
        ("Maximum rate (last good step)", max),
    ] {
        if rows.is_empty() {
            continue;
        }
        let _ = write!(out, "\n### {title}\n\n");
        out.push_str("| scenario | server | transport | deliveries/s | loss | p50 / p99 / max ms | server CPU s per M deliveries | server core busy | generator CPU | server RSS MiB | notes |\n");
        out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for (r, rounds) in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {}% | {} | {} |",
                describe(r),
                r["label"].as_str().unwrap_or("?"),
                r["transport"].as_str().unwrap_or("?"),
                count(&r["deliveries_per_s"]),
                loss(r),
                latency(r),
                num(&r["server_cpu_s_per_million"], 1),
                f(&r["server_core_busy_pct"])
                    .map(|b| format!(
                        "{b:.0}% ({:.0}% softirq)",
                        f(&r["server_core_softirq_pct"]).unwrap_or(0.0)
                    ))
                    .unwrap_or("–".into()),
                num(&r["gen_cpu_pct"], 0),
                f(&r["server_rss_kib"])
                    .map(|k| format!("{:.1}", k / 1024.0))
                    .unwrap_or("–".into()),
                join_notes(notes(r), rounds)
            );
        }
    }
    out.push_str(&comparison(&grouped));
    out
}

/// One line for the terminal.
pub fn summary_line(rec: &Value) -> String {
    let head = format!(
        "[{} {} {}]",
        rec["label"].as_str().unwrap_or("?"),
        rec["transport"].as_str().unwrap_or("?"),
        rec["scenario"].as_str().unwrap_or("?")
    );
    if rec["scenario"] == "idle" {
        return format!(
            "{head} {} connected ({} failed) at {} conn/s; server RSS/conn {} KiB; {}",
            rec["connected"],
            rec["connect_failed"],
            count(&rec["conns_per_s"]),
            num(&rec["rss_kib_per_conn"], 2),
            notes(rec)
        );
    }
    format!(
        "{head} {}: {} deliveries/s, received {}/{} (loss {}), latency p50/p99/max {} ms, server CPU {} s/M, generator CPU {}% {}",
        describe(rec),
        count(&rec["deliveries_per_s"]),
        rec["received"],
        rec["expected"],
        loss(rec),
        latency(rec),
        num(&rec["server_cpu_s_per_million"], 1),
        num(&rec["gen_cpu_pct"], 0),
        notes(rec)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splices_between_markers() {
        let doc = format!("intro\n{BEGIN}\nold\n{END}\noutro\n");
        let new = splice(&doc, "NEW\n").unwrap();
        assert_eq!(new, format!("intro\n{BEGIN}\nNEW\n{END}\noutro\n"));
        assert!(splice("no markers", "x").is_err());
    }

    #[test]
    fn renders_rows() {
        let recs = vec![
            json!({"scenario":"idle","label":"nchan","transport":"ws","connected":10000,"conns_per_s":5000.0,
                   "rss_kib_per_conn":11.2,"server_rss_kib_after":120000,"hold_s":0.0}),
            json!({"scenario":"fanout","label":"push","transport":"sse","shape":"broadcast","channels":1,
                   "connections":1000,"rate":100.0,"deliveries_per_s":100000.0,"loss":0,"expected":1000000,
                   "latency_ms":{"p50":1.0,"p99":4.0,"max":9.0},"server_cpu_s_per_million":3.2,"gen_cpu_pct":40.0,
                   "connected":1000,"ready":1000}),
        ];
        let t = tables(&recs);
        assert!(
            t.contains("| 10000 | nchan | ws | 5000 | 11.2 | 117.2 |  |"),
            "{t}"
        );
        assert!(t.contains("| broadcast 1×1000 @100/s | push | sse | 100000 | 0 | 1.00 / 4.00 / 9.0 | 3.2 | – | 40% |"), "{t}");
        assert!(summary_line(&recs[1]).contains("100000 deliveries/s"));
        assert!(
            !t.contains("Push against nchan"),
            "no pair, no comparison: {t}"
        );
    }

    fn personal(label: &str, cpu: f64, p99: f64) -> Value {
        json!({"scenario":"fanout","label":label,"transport":"ws","shape":"personal","channels":10000,
               "connections":10000,"rate":20000.0,"deliveries_per_s":20000.0,"loss":0,"expected":80000,
               "latency_ms":{"p50":0.5,"p99":p99,"max":20.0},"server_cpu_s_per_million":cpu,
               "gen_cpu_pct":30.0,"connected":10000,"ready":10000})
    }

    fn idle(label: &str, kib: f64) -> Value {
        json!({"scenario":"idle","label":label,"transport":"ws","connected":10000,"connections":10000,
               "channels":10000,"conns_per_s":15000.0,"rss_kib_per_conn":kib,"server_rss_kib_after":1000})
    }

    #[test]
    fn a_saturated_generator_or_a_missed_rate_is_not_compared() {
        let mut n = personal("nchan", 5.0, 900.0);
        n["gen_cpu_pct"] = json!(99.0);
        n["deliveries_per_s"] = json!(17000.0);
        let t = tables(&[n, personal("push", 8.0, 15.0)]);
        assert!(
            t.contains("| not comparable: nchan's generator at 99 %, 85 % of the rate delivered |"),
            "{t}"
        );
        let mut n = personal("nchan", 30.0, 9.0);
        n["deliveries_per_s"] = json!(17000.0);
        let t = tables(&[n, personal("push", 8.0, 15.0)]);
        assert!(
            t.contains("| nchan fell behind: 85 % of the rate delivered |"),
            "{t}"
        );
        let t = tables(&[personal("nchan", 5.0, 9.0), personal("push", 8.0, 15.0)]);
        assert!(
            t.contains("| 0.62× | 9.0 / 15.0 ms, 0 of 1 rounds |  |"),
            "{t}"
        );
    }

    #[test]
    fn rounds_show_the_median_row_and_push_against_nchan_round_by_round() {
        // Three rounds, as bench/run.sh writes them: every server once per round.
        let recs = vec![
            idle("nchan", 11.2),
            personal("nchan", 28.0, 5.0),
            idle("push", 3.8),
            personal("push", 20.0, 2.0),
            idle("nchan", 11.0),
            personal("nchan", 24.0, 3.0),
            idle("push", 3.7),
            personal("push", 15.0, 4.0),
            idle("nchan", 11.1),
            personal("nchan", 33.0, 9.0),
            idle("push", 3.9),
            personal("push", 18.0, 1.0),
        ];
        let t = tables(&recs);
        // One row per server: the median round's (push: 18.0 of 15, 18, 20).
        assert_eq!(
            t.matches("| personal 10000×1 @20000/s | push | ws | 20000 |")
                .count(),
            1,
            "{t}"
        );
        assert!(
            t.contains("| 18.0 |")
                && t.contains("3 rounds: 20.0, 15.0, 18.0 s/M; p99 2.0, 4.0, 1.0 ms"),
            "{t}"
        );
        assert!(t.contains("3 rounds: 3.80, 3.70, 3.90 KiB"), "{t}");
        // Round by round: 28/20, 24/15, 33/18; p99 no worse in rounds 1 and 3 (4.0 > 3.0).
        assert!(
            t.contains("| personal 10000×1 @20000/s | push | ws | 28.0 | 18.0 | 1.40–1.83× (median 1.60×) | 5.0 / 2.0 ms, 2 of 3 rounds |  |"),
            "{t}"
        );
        // Idle: 11.2/3.8, 11.0/3.7, 11.1/3.9.
        assert!(
            t.contains("| idle 10000 | push | ws | 11.10 KiB | 3.80 KiB | 2.85–2.97× (median 2.95×) less memory | – | |"),
            "{t}"
        );
    }
}
