//! The `push-server` binary: configuration, logging, signals.

use anyhow::Context;
use push_server::config::{Config, LogFormat};
use push_server::Server;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: see docs/benchmarks.md.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = match Config::load() {
        Ok(c) => c,
        Err(push_server::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("push-server: {e}");
            std::process::exit(2);
        }
    };
    let filter = EnvFilter::try_from_env("PUSH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        shutdown_signal().await;
        // A second signal stops at once instead of waiting for the drain.
        tokio::select! {
            () = server.shutdown() => {}
            () = shutdown_signal() => tracing::warn!("second signal: exiting without finishing the drain"),
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
