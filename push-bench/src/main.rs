//! push-bench: load generator for Push and any peer reachable through URL templates.
//!
//! Layout:
//! - `cli`: the command line.
//! - `scenario`: idle, fanout and max; subscriber fleet, readiness probes, measurement windows.
//! - `subscriber`: WebSocket and SSE subscriber tasks.
//! - `publisher`: pipelined HTTP/1.1 keep-alive publishers.
//! - `stats`: counters and latency histograms shared by the tasks.
//! - `marker`: the payload that carries sequence numbers and send times through any server.
//! - `http`, `net`, `target`, `procfs`: small helpers (HTTP framing, source addresses,
//!   URL templates, /proc readings).
//! - `report`: JSON lines → Markdown table.

mod cli;
mod http;
mod marker;
mod net;
mod procfs;
mod publisher;
mod report;
mod scenario;
mod stats;
mod subscriber;
mod target;

use std::io::Write;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;

use cli::{Cli, Command, Common};

fn main() -> Result<()> {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::Idle { common, .. }
        | Command::Fanout { common, .. }
        | Command::Max { common, .. } => common.clone(),
        Command::Report(args) => return report::run(args),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = common.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let records = runtime.block_on(async {
        match &cli.command {
            Command::Idle { common, args } => scenario::idle(common, args).await,
            Command::Fanout { common, args } => scenario::fanout(common, args).await,
            Command::Max { common, args } => scenario::max(common, args).await,
            Command::Report(_) => Ok(Vec::new()),
        }
    })?;
    emit(&common, &records)?;
    // Dropping thousands of connections one task at a time is slow and measures nothing.
    runtime.shutdown_background();
    Ok(())
}

/// JSON lines to stdout (and `--out`), a human summary to stderr.
fn emit(common: &Common, records: &[Value]) -> Result<()> {
    let mut file = match &common.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    for rec in records {
        let line = serde_json::to_string(rec)?;
        writeln!(stdout, "{line}")?;
        if let Some(f) = file.as_mut() {
            writeln!(f, "{line}")?;
        }
        eprintln!("{}", report::summary_line(rec));
    }
    Ok(())
}
