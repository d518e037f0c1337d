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

/// The Markdown tables for a set of records, in input order.
pub fn tables(records: &[Value]) -> String {
    let mut out = String::new();
    let idle: Vec<&Value> = records.iter().filter(|r| r["scenario"] == "idle").collect();
    let fanout: Vec<&Value> = records
        .iter()
        .filter(|r| r["scenario"] == "fanout")
        .collect();
    let max: Vec<&Value> = records.iter().filter(|r| r["scenario"] == "max").collect();
    if !idle.is_empty() {
        out.push_str("\n### Idle connections\n\n");
        out.push_str("| connections | server | transport | opened/s | server RSS/conn KiB | server RSS after MiB | notes |\n");
        out.push_str("|---:|---|---|---:|---:|---:|---|\n");
        for r in idle {
            let rss_after = f(&r["server_rss_kib_after"])
                .map(|k| format!("{:.1}", k / 1024.0))
                .unwrap_or("–".into());
            let mut note = notes(r);
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
        for r in rows {
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
                notes(r)
            );
        }
    }
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
    }
}
