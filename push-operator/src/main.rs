//! `push-operator` binary: `crd`, `render -f pc.yaml`, `redis-boot` (init
//! container of Redis/Sentinel pods) and `run` (the default).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use push_operator::boot::{self, SentinelSettings};
use push_operator::controller::{self, Context, LiveRedis};
use push_operator::leader::{LeaseLock, Timing};
use push_operator::metrics::Metrics;
use push_operator::objects::{self, redis as redis_objects, Settings};
use push_operator::redis_probe::Endpoints;
use push_operator::{crd, http, render};

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes operator for Push (PushCluster, push.dev/v1alpha1)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the PushCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would apply for a PushCluster file.
    Render {
        /// PushCluster manifest (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Run the controller (the default).
    Run(RunArgs),
    /// Init container of Redis and Sentinel pods: decide this pod's role.
    RedisBoot(BootArgs),
}

#[derive(Args, Clone)]
struct SettingsArgs {
    /// Image of the operator, used by the Redis boot init containers.
    #[arg(long, env = "PUSH_OPERATOR_IMAGE")]
    operator_image: Option<String>,
    /// Cluster DNS domain.
    #[arg(long, env = "PUSH_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Namespace of the operator's pods (downward API); the Redis
    /// NetworkPolicies admit the operator from there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "push-system")]
    operator_namespace: String,
}

impl SettingsArgs {
    fn settings(&self) -> Settings {
        let mut s = Settings::default();
        if let Some(image) = &self.operator_image {
            s.operator_image = image.clone();
        }
        s.cluster_domain = self.cluster_domain.clone();
        s.operator_namespace = self.operator_namespace.clone();
        s
    }
}

#[derive(Parser, Clone)]
struct RunArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "PUSH_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// PushClusters reconciled in parallel.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "push-system")]
    lease_namespace: String,
    /// Identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "push-operator")]
    identity: String,
    /// Lease validity in seconds. The leader stops reconciling when it has
    /// not renewed for 2/3 of this (docs/operator.md).
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// JSON logs.
    #[arg(long, env = "PUSH_OPERATOR_LOG_JSON")]
    log_json: bool,
}

#[derive(Args)]
struct BootArgs {
    /// Decide a Redis pod's `replicaof`.
    #[arg(long, conflicts_with = "sentinel")]
    redis: bool,
    /// Write a Sentinel's config.
    #[arg(long)]
    sentinel: bool,
    #[arg(long)]
    instance: String,
    #[arg(long)]
    namespace: String,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Redis pods (master + replicas).
    #[arg(long)]
    redis_pods: usize,
    #[arg(long)]
    sentinels: usize,
    #[arg(long, default_value_t = 5000)]
    down_after_ms: u64,
    /// This pod's name (`<instance>-redis-<ordinal>` or `<instance>-sentinel-<ordinal>`).
    #[arg(long)]
    pod: String,
    /// Where to write the config.
    #[arg(long)]
    out: PathBuf,
    /// Redis data directory (to tell an empty restart from one with data).
    #[arg(long, default_value = "/data")]
    data_dir: PathBuf,
    /// Give up waiting after this many seconds (the pod then restarts).
    #[arg(long, default_value_t = 600)]
    wait_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", crd::crd_yaml()?);
            Ok(())
        }
        Some(Command::Render { file, settings }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            print!("{}", render::render(&text, &settings.settings())?);
            Ok(())
        }
        Some(Command::RedisBoot(args)) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .init();
            tokio::runtime::Runtime::new()?.block_on(redis_boot(args))
        }
        Some(Command::Run(args)) => tokio::runtime::Runtime::new()?.block_on(run(args)),
        None => {
            // No subcommand: `run` with flags taken from the environment only.
            let args = RunArgs::try_parse_from(["push-operator"])?;
            tokio::runtime::Runtime::new()?.block_on(run(args))
        }
    }
}

async fn redis_boot(args: BootArgs) -> anyhow::Result<()> {
    let s = Settings {
        cluster_domain: args.cluster_domain.clone(),
        ..Settings::default()
    };
    let names = objects::Names {
        instance: args.instance.clone(),
        namespace: args.namespace.clone(),
        cluster_domain: s.cluster_domain.clone(),
    };
    let ep = Endpoints {
        pods: (0..args.redis_pods)
            .map(|i| format!("{}:{}", names.redis_pod_host(i), objects::REDIS_PORT))
            .collect(),
        sentinels: (0..args.sentinels)
            .map(|i| format!("{}:{}", names.sentinel_pod_host(i), objects::SENTINEL_PORT))
            .collect(),
        master_name: objects::MASTER_NAME.into(),
        // From the environment (a secretKeyRef), never a flag: argv is
        // visible to every process on the node.
        password: std::env::var("REDIS_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
        ..Endpoints::default()
    };
    let ordinal: usize = args
        .pod
        .rsplit('-')
        .next()
        .and_then(|o| o.parse().ok())
        .with_context(|| format!("pod name {:?} has no ordinal", args.pod))?;
    let text = if args.sentinel {
        boot::sentinel_boot(
            &ep,
            &SentinelSettings {
                port: objects::SENTINEL_PORT as u16,
                announce_host: Some(names.sentinel_pod_host(ordinal)),
                quorum: redis_objects::quorum(args.sentinels as i32) as usize,
                down_after_ms: args.down_after_ms,
                failover_timeout_ms: (args.down_after_ms * 4).max(10_000),
                password: ep.password.clone(),
            },
        )
        .await?
    } else {
        let has_data = boot::data_present(&args.data_dir);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_seconds);
        let fragment = boot::redis_boot(&ep, ordinal, has_data, deadline).await?;
        format!("include {}\n{fragment}", redis_objects::REDIS_CONF)
    };
    write_private(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// Writes a config that may hold the Redis password: readable by the pod's
/// user only (the init and main containers run as the same UID).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let subscriber = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    if args.log_json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, http::router(Arc::new(registry))).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });

    let client = kube::Client::try_default()
        .await
        .context("kubernetes client")?;
    let lock = LeaseLock::new(
        client.clone(),
        &args.lease_namespace,
        "push-operator-leader",
        &args.identity,
        Timing::from_lease(Duration::from_secs(args.lease_seconds)),
    );
    tracing::info!(identity = %args.identity, "waiting for leadership");
    lock.acquire().await?;
    tracing::info!("leading; starting controller");

    let ctx = Arc::new(Context::new(
        client,
        args.settings.settings(),
        metrics,
        Arc::new(LiveRedis),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut controller = tokio::spawn(controller::run(ctx, args.concurrency, async move {
        let _ = stop_rx.await;
    }));
    tokio::select! {
        lost = lock.hold() => {
            // Past the renew deadline another replica may take over soon:
            // stop at once, in-flight reconciles included.
            controller.abort();
            Err(anyhow::anyhow!("leadership lost: {lost}"))
        }
        _ = shutdown_signal() => {
            // Stop reconciling first (in-flight reconciles finish) while
            // still renewing, then hand the Lease over.
            let _ = stop_tx.send(());
            tokio::select! {
                _ = &mut controller => {}
                lost = lock.hold() => {
                    controller.abort();
                    return Err(anyhow::anyhow!("leadership lost while stopping: {lost}"));
                }
            }
            match lock.release().await {
                Ok(()) => tracing::info!("leader lease released"),
                Err(e) => tracing::warn!(error = %e, "could not release the leader lease; it expires"),
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
