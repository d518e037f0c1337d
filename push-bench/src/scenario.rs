//! The scenarios: `idle`, `fanout`, `max`. Each builds the subscriber set, waits until it is
//! connected (and, for message scenarios, until every subscription provably receives), then
//! measures in windows. Everything is bounded: connect deadline, readiness deadline, drain
//! deadline, step count.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::cli::{Common, FanoutArgs, IdleArgs, MaxArgs};
use crate::net::SourceAddrs;
use crate::procfs::{self, ServerProcs};
use crate::publisher::{Job, Publisher, PublisherSpec};
use crate::stats::Shared;
use crate::subscriber::{self, SubscriberSpec, Transport};
use crate::target::Template;

/// The subscriber side of a run.
struct Fleet {
    shared: Arc<Shared>,
    channels: Arc<Vec<String>>,
    procs: ServerProcs,
    common: Common,
    /// Subscribers per channel as started.
    per_channel: Vec<u32>,
}

impl Fleet {
    fn new(common: &Common, publishers: usize) -> Result<Self> {
        let n = common.connections;
        let c = common.channels.clamp(1, n.max(1));
        if let Some(limit) = procfs::open_files_limit() {
            let need = (n + publishers + 32) as u64;
            if need > limit {
                bail!("{n} connections need about {need} file descriptors; this process may open {limit}");
            }
        }
        let channels: Vec<String> = (0..c)
            .map(|i| format!("{}{i}", common.channel_prefix))
            .collect();
        let shards = 4 * std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(2);
        let shared = Arc::new(Shared::new(c, shards));
        let mut per_channel = vec![0u32; c];
        for i in 0..n {
            per_channel[i % c] += 1;
        }
        for (slot, count) in shared.unready.iter().zip(&per_channel) {
            slot.store(*count, Relaxed);
        }
        Ok(Self {
            shared,
            channels: Arc::new(channels),
            procs: ServerProcs {
                pids: common.server_pids(),
            },
            common: common.clone(),
            per_channel,
        })
    }

    fn url(&self) -> Result<Template> {
        match self.common.transport {
            Transport::Ws => Template::parse(&self.common.ws_url),
            Transport::Sse => Template::parse(&self.common.sse_url),
        }
    }

    /// Starts every subscriber and waits until each has connected or failed. Returns the
    /// wall time it took.
    async fn connect_all(&self) -> Result<Duration> {
        let spec = Arc::new(SubscriberSpec {
            transport: self.common.transport,
            url: self.url()?,
            channels: self.channels.clone(),
            sources: SourceAddrs {
                count: self.common.source_ips,
            },
            connect_permits: Arc::new(Semaphore::new(self.common.connect_concurrency.max(1))),
            connect_timeout: Duration::from_secs_f64(self.common.connect_timeout),
        });
        let n = self.common.connections;
        let c = self.channels.len();
        let t0 = Instant::now();
        for i in 0..n {
            subscriber::spawn(spec.clone(), self.shared.clone(), i, i % c);
        }
        let deadline = t0 + Duration::from_secs_f64(self.common.connect_deadline);
        loop {
            let done =
                self.shared.connected.load(Relaxed) + self.shared.connect_failed.load(Relaxed);
            if done >= n {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("connect deadline reached with {done} of {n} attempts finished");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(t0.elapsed())
    }

    fn server_cpu(&self) -> Option<f64> {
        (!self.procs.is_empty())
            .then(|| self.procs.cpu_seconds().ok())
            .flatten()
    }

    fn server_rss(&self) -> Option<u64> {
        (!self.procs.is_empty())
            .then(|| self.procs.rss_kib().ok())
            .flatten()
    }

    fn base_record(&self, scenario: &str) -> Value {
        json!({
            "scenario": scenario,
            "label": self.common.label,
            "transport": self.common.transport.name(),
            "connections": self.common.connections,
            "channels": self.channels.len(),
            "shape": shape(self.channels.len(), self.common.connections),
            "url": self.url().map(|t| t.raw).unwrap_or_default(),
            "connected": self.shared.connected.load(Relaxed),
            "connect_failed": self.shared.connect_failed.load(Relaxed),
            "disconnected": self.shared.disconnected.load(Relaxed),
            "first_error": self.shared.first_error.lock().ok().and_then(|e| e.clone()),
        })
    }
}

fn shape(channels: usize, connections: usize) -> &'static str {
    if channels == 1 {
        "broadcast"
    } else if channels >= connections {
        "personal"
    } else {
        "grouped"
    }
}

/// `idle`: open N connections, report connection rate and server RSS per connection, then
/// optionally hold them (heartbeats running) while sampling RSS.
pub async fn idle(common: &Common, args: &IdleArgs) -> Result<Vec<Value>> {
    let fleet = Fleet::new(common, 0)?;
    let rss_before = fleet.server_rss();
    let cpu_before = fleet.server_cpu();
    let gen_before = procfs::cpu_seconds("self")?;
    let took = fleet.connect_all().await?;
    let connected = fleet.shared.connected.load(Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after = fleet.server_rss();
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    let (mut rss_min, mut rss_max) = (rss_after, rss_after);
    let hold_start = Instant::now();
    while hold_start.elapsed().as_secs_f64() < args.hold {
        let left = args.hold - hold_start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(
            args.sample_every.min(left).max(0.01),
        ))
        .await;
        if let Some(rss) = fleet.server_rss() {
            rss_min = rss_min.map(|m| m.min(rss));
            rss_max = rss_max.map(|m| m.max(rss));
            eprintln!(
                "  hold {:>5.0}s: server RSS {} KiB, connected {}, disconnected {}",
                hold_start.elapsed().as_secs_f64(),
                rss,
                connected,
                fleet.shared.disconnected.load(Relaxed)
            );
        }
    }
    let mut rec = fleet.base_record("idle");
    let extra = json!({
        "connect_s": took.as_secs_f64(),
        "conns_per_s": connected as f64 / took.as_secs_f64().max(1e-9),
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "rss_kib_per_conn": per_conn,
        "hold_s": args.hold,
        "hold_rss_kib_min": rss_min,
        "hold_rss_kib_max": rss_max,
        "server_cpu_s": diff(fleet.server_cpu(), cpu_before),
        "gen_cpu_s": procfs::cpu_seconds("self")? - gen_before,
        "disconnected": fleet.shared.disconnected.load(Relaxed),
    });
    merge(&mut rec, extra);
    Ok(vec![rec])
}

fn diff(after: Option<f64>, before: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// Subscribers plus publishers, ready to run measurement windows.
struct Rig {
    fleet: Fleet,
    publisher: Publisher,
    subscribers: Arc<Vec<AtomicU32>>,
    fanout: FanoutArgs,
    window: u32,
}

impl Rig {
    async fn start(common: &Common, fanout: &FanoutArgs) -> Result<Self> {
        let fleet = Fleet::new(common, fanout.publishers)?;
        let subscribers: Arc<Vec<AtomicU32>> = Arc::new(
            fleet
                .per_channel
                .iter()
                .map(|_| AtomicU32::new(0))
                .collect(),
        );
        let publisher = Publisher::start(
            PublisherSpec {
                url: Template::parse(&common.publish_url).context("--publish-url")?,
                channels: fleet.channels.clone(),
                subscribers: subscribers.clone(),
                payload_bytes: fanout.payload_bytes,
                headers: fanout.publish_header.clone(),
                content_type: fanout.content_type.clone(),
                max_inflight: fanout.max_inflight,
                sources: SourceAddrs {
                    count: common.source_ips,
                },
            },
            fanout.publishers,
            fleet.shared.clone(),
        );
        let took = fleet.connect_all().await?;
        let connected = fleet.shared.connected.load(Relaxed);
        eprintln!(
            "  {connected} of {} subscribers connected in {:.2}s",
            common.connections,
            took.as_secs_f64()
        );
        if connected == 0 {
            bail!(
                "no subscriber connected: {}",
                fleet
                    .shared
                    .first_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_default()
            );
        }
        let mut rig = Self {
            fleet,
            publisher,
            subscribers,
            fanout: fanout.clone(),
            window: 0,
        };
        rig.probe_readiness().await;
        Ok(rig)
    }

    /// Publishes probes to every channel with a subscriber that has not yet received one,
    /// until all have (or the deadline passes). This proves each subscription is live before
    /// counting, whatever the server's subscribe handshake looks like.
    async fn probe_readiness(&mut self) {
        let shared = &self.fleet.shared;
        let deadline = Instant::now() + Duration::from_secs_f64(self.fleet.common.ready_timeout);
        let target = shared.connected.load(Relaxed);
        loop {
            let pending: Vec<u32> = (0..shared.unready.len())
                .filter(|&c| shared.unready[c].load(Relaxed) > 0)
                .map(|c| c as u32)
                .collect();
            if shared.ready.load(Relaxed) >= target
                || pending.is_empty()
                || Instant::now() > deadline
            {
                break;
            }
            self.publisher
                .submit(pending.into_iter().map(|channel| Job {
                    channel,
                    seq: 0,
                    window: 0,
                }));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for (c, slot) in self.subscribers.iter().enumerate() {
            let ready = self.fleet.per_channel[c].saturating_sub(shared.unready[c].load(Relaxed));
            slot.store(ready, Relaxed);
        }
        eprintln!(
            "  {} of {target} subscribers ready",
            shared.ready.load(Relaxed)
        );
    }

    /// One measurement window at `rate` messages/s for `duration` seconds.
    async fn window(&mut self, scenario: &str, rate: f64, duration: f64) -> Result<Value> {
        self.window += 1;
        let w = self.window;
        let shared = self.fleet.shared.clone();
        let stats = self.publisher.stats.clone();
        stats.reset();
        shared.begin_window(w);
        let c = self.fleet.channels.len() as u64;
        let total = (rate * duration).round() as u64;
        let server_cpu0 = self.fleet.server_cpu();
        let cores0 = procfs::cores_seconds(&self.fleet.common.server_core);
        let gen_cpu0 = procfs::cpu_seconds("self")?;
        let t0 = Instant::now();
        let t0_us = shared.now_us();

        // Pacing: every millisecond, publish what is due by now. A late tick catches up in
        // one batch rather than silently lowering the rate.
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut next = 0u64;
        while next < total {
            tick.tick().await;
            let due = ((t0.elapsed().as_secs_f64() * rate) as u64).min(total);
            if due > next {
                self.publisher.submit((next..due).map(|g| Job {
                    channel: (g % c) as u32,
                    seq: (g / c) as u32,
                    window: w,
                }));
                next = due;
            }
        }
        let publish_s = t0.elapsed().as_secs_f64();

        // Drain: wait for every answer and every expected delivery, bounded.
        let drain_deadline = Instant::now() + Duration::from_secs_f64(self.fanout.drain_timeout);
        loop {
            let received = shared.received.load(Relaxed);
            if stats.settled() && received >= stats.expected.load(Relaxed) {
                break;
            }
            if Instant::now() > drain_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wall_s = t0.elapsed().as_secs_f64();
        let server_cpu = diff(self.fleet.server_cpu(), server_cpu0);
        let gen_cpu = procfs::cpu_seconds("self")? - gen_cpu0;
        let cores = procfs::cores_seconds(&self.fleet.common.server_core)
            .zip(cores0)
            .filter(|_| !self.fleet.common.server_core.is_empty())
            .map(|((b1, s1), (b0, s0))| (b1 - b0, s1 - s0));

        let received = shared.received.load(Relaxed);
        let expected = stats.expected.load(Relaxed);
        let ok = stats.ok.load(Relaxed);
        let last_us = shared.last_recv_us.load(Relaxed);
        let deliver_s = if last_us > t0_us {
            (last_us - t0_us) as f64 / 1e6
        } else {
            publish_s
        };
        let hist = shared.histogram();
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let mut rec = self.fleet.base_record(scenario);
        let per_million = server_cpu
            .filter(|_| received > 0)
            .map(|s| s / received as f64 * 1e6);
        merge(
            &mut rec,
            json!({
                "window": w,
                "rate": rate,
                "duration_s": duration,
                "payload_bytes": self.fanout.payload_bytes,
                "ready": shared.ready.load(Relaxed),
                "published_ok": ok,
                "publish_failed": stats.failed.load(Relaxed),
                "publish_skipped": stats.skipped.load(Relaxed),
                "achieved_rate": ok as f64 / publish_s,
                "achieved_ratio": if total > 0 { ok as f64 / total as f64 } else { 1.0 },
                "expected": expected,
                "received": received,
                "loss": expected.saturating_sub(received),
                "duplicates": shared.duplicates.load(Relaxed),
                "reordered": shared.reordered.load(Relaxed),
                "stale": shared.stale.load(Relaxed),
                "deliveries_per_s": received as f64 / deliver_s.max(1e-9),
                "latency_ms": {
                    "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
                    "max": hist.max() as f64 / 1000.0,
                },
                "wall_s": wall_s,
                "server_cpu_s": server_cpu,
                "server_cpu_s_per_million": per_million,
                "gen_cpu_s": gen_cpu,
                "server_core_busy_pct": cores.map(|(busy, _)| busy / wall_s * 100.0),
                "server_core_softirq_pct": cores.map(|(_, softirq)| softirq / wall_s * 100.0),
                "gen_cpu_pct": gen_cpu / wall_s * 100.0,
                "server_rss_kib": self.fleet.server_rss(),
                "publish_error": stats.first_error.lock().ok().and_then(|e| e.clone()),
            }),
        );
        Ok(rec)
    }
}

/// `fanout`: one measurement window at the given rate.
pub async fn fanout(common: &Common, args: &FanoutArgs) -> Result<Vec<Value>> {
    let mut rig = Rig::start(common, args).await?;
    let rec = rig.window("fanout", args.rate, args.duration).await?;
    Ok(vec![rec])
}

/// `max`: raise the rate step by step until a step is bad; the last good step is the result.
pub async fn max(common: &Common, args: &MaxArgs) -> Result<Vec<Value>> {
    let mut rig = Rig::start(common, &args.fanout).await?;
    let mut out = Vec::new();
    let mut last_good: Option<Value> = None;
    let mut rate = args.start_rate;
    for _ in 0..args.max_steps {
        let rec = rig.window("max-step", rate, args.fanout.duration).await?;
        let verdict = judge(&rec, args);
        eprintln!(
            "  step {rate:.0} msg/s: {}",
            verdict.as_deref().unwrap_or("good")
        );
        let mut rec = rec;
        merge(
            &mut rec,
            json!({ "verdict": verdict.clone().unwrap_or_else(|| "good".into()) }),
        );
        out.push(rec.clone());
        if verdict.is_some() {
            break;
        }
        last_good = Some(rec);
        rate *= args.factor;
        // Let the server settle between steps.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // With no good step, report the first (failed) one so the row still names the server,
    // with the verdict saying why.
    let mut summary = last_good
        .or_else(|| out.first().cloned())
        .unwrap_or_else(|| json!({}));
    merge(
        &mut summary,
        json!({ "scenario": "max", "steps": out.len() }),
    );
    out.push(summary);
    Ok(out)
}

/// Why a step is not good, if it is not.
fn judge(rec: &Value, args: &MaxArgs) -> Option<String> {
    let p99 = rec["latency_ms"]["p99"].as_f64().unwrap_or(f64::INFINITY);
    let loss = rec["loss"].as_u64().unwrap_or(0);
    let expected = rec["expected"].as_u64().unwrap_or(0).max(1);
    let achieved = rec["achieved_ratio"].as_f64().unwrap_or(0.0);
    if p99 > args.p99_limit_ms {
        return Some(format!("p99 {p99:.1} ms > {} ms", args.p99_limit_ms));
    }
    if loss as f64 / expected as f64 > args.max_loss {
        return Some(format!("loss {loss} of {expected}"));
    }
    if achieved < args.min_achieved {
        return Some(format!(
            "achieved {:.1}% of the target rate",
            achieved * 100.0
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_args() -> MaxArgs {
        MaxArgs {
            fanout: FanoutArgs::default(),
            start_rate: 100.0,
            factor: 2.0,
            max_steps: 3,
            p99_limit_ms: 100.0,
            max_loss: 0.0,
            min_achieved: 0.95,
        }
    }

    #[test]
    fn judging_steps() {
        let args = max_args();
        let good =
            json!({"latency_ms": {"p99": 3.0}, "loss": 0, "expected": 10, "achieved_ratio": 1.0});
        assert_eq!(judge(&good, &args), None);
        let slow =
            json!({"latency_ms": {"p99": 300.0}, "loss": 0, "expected": 10, "achieved_ratio": 1.0});
        assert!(judge(&slow, &args).unwrap().contains("p99"));
        let lossy =
            json!({"latency_ms": {"p99": 3.0}, "loss": 1, "expected": 10, "achieved_ratio": 1.0});
        assert!(judge(&lossy, &args).unwrap().contains("loss"));
        let short =
            json!({"latency_ms": {"p99": 3.0}, "loss": 0, "expected": 10, "achieved_ratio": 0.5});
        assert!(judge(&short, &args).unwrap().contains("achieved"));
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(1, 1000), "broadcast");
        assert_eq!(shape(1000, 1000), "personal");
        assert_eq!(shape(10, 1000), "grouped");
    }
}
