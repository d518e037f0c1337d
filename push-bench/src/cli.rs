//! Command line. Every scenario takes the `Common` options; URL templates hold `{channel}`.

use clap::{Args, Parser, Subcommand};

use crate::subscriber::Transport;

#[derive(Debug, Parser)]
#[command(
    name = "push-bench",
    version,
    about = "Load generator for Push and peers: idle connections, fan-out throughput and latency"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N connections; report connections/s and server RSS per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: IdleArgs,
    },
    /// N subscribers over C channels, publishers at a fixed rate: deliveries/s, loss, latency, CPU.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: FanoutArgs,
    },
    /// Step the publish rate up until p99, loss or the achieved rate fails; report the last good step.
    Max {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: MaxArgs,
    },
    /// Turn JSON-lines results into the Markdown table of docs/benchmarks.md.
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Subscriber transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// WebSocket subscribe URL template.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws?channels={channel}")]
    pub ws_url: String,
    /// SSE subscribe URL template.
    #[arg(long, default_value = "http://127.0.0.1:8080/sse?channels={channel}")]
    pub sse_url: String,
    /// Publish URL template (POST, body = payload).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/api/v1/channels/{channel}/messages"
    )]
    pub publish_url: String,
    /// Subscriber connections (one process may hold at most its open-file limit).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// Channels: 1 = broadcast, = connections for personal channels. Subscriber i joins channel i mod C.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub channels: usize,
    /// Channel names are this prefix plus the channel number.
    #[arg(long, default_value = "bench")]
    pub channel_prefix: String,
    /// Server process ids whose CPU and RSS are measured (repeat or comma-separate; all summed).
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// CPU cores the server is pinned to: their whole busy time (including softirq work that
    /// no process is charged for) is reported too.
    #[arg(long = "server-core", value_delimiter = ',')]
    pub server_core: Vec<usize>,
    /// Name of the server in the results (e.g. push, nchan, push+redis).
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Loopback source addresses 127.0.0.2.. to spread client ports over (0 = kernel's choice).
    #[arg(long, default_value_t = 16)]
    pub source_ips: u8,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Seconds allowed for one connect + handshake.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seconds allowed for all connections to open.
    #[arg(long, default_value_t = 120.0)]
    pub connect_deadline: f64,
    /// Seconds allowed for every subscription to receive a readiness probe.
    #[arg(long, default_value_t = 30.0)]
    pub ready_timeout: f64,
    /// Generator worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also append the JSON lines to this file.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

impl Common {
    pub fn server_pids(&self) -> Vec<String> {
        self.server_pid.iter().map(u32::to_string).collect()
    }
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Seconds to wait after the last connection before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds to keep the connections open afterwards (heartbeats running), sampling RSS.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Seconds between RSS samples while holding.
    #[arg(long, default_value_t = 10.0)]
    pub sample_every: f64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Messages published per second, over all channels (round robin).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Payload size in bytes (the marker is padded to this).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Publisher keep-alive connections (each owns channels c with c mod P = its index).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Pipelined requests outstanding per publisher connection.
    #[arg(long, default_value_t = 256)]
    pub max_inflight: usize,
    /// Content-Type of publish requests.
    #[arg(long, default_value = "text/plain")]
    pub content_type: String,
    /// Extra publish header, e.g. 'Authorization: Bearer KEY' (repeatable).
    #[arg(long)]
    pub publish_header: Vec<String>,
    /// Seconds to wait after publishing for outstanding deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
}

impl Default for FanoutArgs {
    fn default() -> Self {
        Self {
            rate: 100.0,
            duration: 10.0,
            payload_bytes: 64,
            publishers: 4,
            max_inflight: 256,
            content_type: "text/plain".into(),
            publish_header: Vec::new(),
            drain_timeout: 10.0,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MaxArgs {
    /// `--rate` is ignored; `--duration` is each step's length.
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// First step's rate (messages/s).
    #[arg(long, default_value_t = 1000.0)]
    pub start_rate: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// At most this many steps.
    #[arg(long, default_value_t = 12)]
    pub max_steps: usize,
    /// A step with a higher p99 (ms) fails.
    #[arg(long, default_value_t = 100.0)]
    pub p99_limit_ms: f64,
    /// A step losing more than this fraction of deliveries fails.
    #[arg(long, default_value_t = 0.0)]
    pub max_loss: f64,
    /// A step publishing less than this fraction of its target fails.
    #[arg(long, default_value_t = 0.95)]
    pub min_achieved: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// JSON-lines result files.
    #[arg(required = true)]
    pub inputs: Vec<std::path::PathBuf>,
    /// Markdown file whose section between the bench markers is replaced (else print to stdout).
    #[arg(long)]
    pub doc: Option<std::path::PathBuf>,
}
