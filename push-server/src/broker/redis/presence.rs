//! Presence across nodes.
//!
//! Each node writes, per channel it has subscribers on, one field of the
//! channel's hash `push:{<channel>}:p`: `<node id>` → `<connections> <users
//! JSON>`. Fields are written when the local numbers change (checked every
//! [`PERIOD`]) and all of them every [`REFRESH`], which also renews the hash's
//! expiry. A node proves it is alive with `push:node:{<id>}` (expires after
//! [`NODE_TTL`]); readers ignore, and remove, the fields of nodes whose key
//! is gone — so a node that dies leaves presence within [`NODE_TTL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{self, FutureExt};
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::Shared;
use crate::broker::{BrokerError, Presence};
use crate::protocol::message::Channel;

/// How often local presence is compared with what was written.
const PERIOD: Duration = Duration::from_secs(1);
/// How often every field is rewritten and the hashes' expiry renewed.
const REFRESH: Duration = Duration::from_secs(20);
/// A node whose heartbeat stops is forgotten after this long.
pub const NODE_TTL: Duration = Duration::from_secs(4);
/// Expiry of a channel's presence hash, renewed every [`REFRESH`].
const HASH_TTL: Duration = Duration::from_secs(60);

fn presence_key(channel: &str) -> String {
    format!("push:{{{channel}}}:p")
}

fn node_key(node: &str) -> String {
    format!("push:node:{{{node}}}")
}

fn encode(connections: usize, users: &[Arc<str>]) -> String {
    let users: Vec<&str> = users.iter().map(|u| &**u).collect();
    format!(
        "{connections} {}",
        serde_json::to_string(&users).unwrap_or_else(|_| "[]".into())
    )
}

fn decode(value: &str) -> Option<(usize, Vec<String>)> {
    let (count, users) = value.split_once(' ')?;
    Some((count.parse().ok()?, serde_json::from_str(users).ok()?))
}

/// Keeps this node's presence fields and liveness key up to date.
pub async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    // What Redis holds for this node, per channel.
    let mut written: HashMap<Channel, String> = HashMap::new();
    let mut refreshed = Instant::now();
    // The hub's subscription version `written` was taken at: while it stays
    // the same, no channel's numbers changed and the scan is skipped (it
    // touches every channel of the node).
    let mut scanned: Option<u64> = None;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let full = refreshed.elapsed() >= REFRESH;
        let node = shared.node_id.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(&node))
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore();
        // Read before the scan: a change during it is seen next time.
        let version = shared.sink.presence_version();
        if !full && version.is_some() && version == scanned {
            let alive = shared.commands.run(move |mut c: Conn| {
                async move { pipe.query_async::<()>(&mut c).await }.boxed()
            });
            if alive.await.is_err() {
                written.clear();
                scanned = None;
            }
            continue;
        }
        let now = local_presence(&shared);
        let mut batch = Batch::new(shared.commands.target().is_cluster());
        changes(&mut batch, &node, &now, &written, full);
        let mut writes = vec![pipe];
        writes.extend(batch.into_pipelines());
        if run_all(&shared, &writes).await {
            written = now;
            scanned = version;
            if full {
                refreshed = Instant::now();
            }
        } else {
            // Redis may have lost it all (restart): write everything again.
            written.clear();
            scanned = None;
        }
    }
}

/// This node's numbers per channel, encoded as Redis holds them.
fn local_presence(shared: &Shared) -> HashMap<Channel, String> {
    let mut now = HashMap::new();
    for channel in shared.sink.channels() {
        let (count, users) = shared.sink.local_presence(&channel);
        if count > 0 {
            now.insert(channel, encode(count, &users));
        }
    }
    now
}

/// The writes that bring Redis from `written` to `now` (all of `now` when
/// `full`).
fn changes(
    batch: &mut Batch,
    node: &str,
    now: &HashMap<Channel, String>,
    written: &HashMap<Channel, String>,
    full: bool,
) {
    for (channel, value) in now {
        if full || written.get(channel) != Some(value) {
            let key = presence_key(channel);
            batch
                .pipe_for(&key)
                .cmd("HSET")
                .arg(&key)
                .arg(node)
                .arg(value)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(HASH_TTL.as_millis() as u64)
                .ignore();
        }
    }
    for channel in written.keys().filter(|c| !now.contains_key(*c)) {
        let key = presence_key(channel);
        batch
            .pipe_for(&key)
            .cmd("HDEL")
            .arg(&key)
            .arg(node)
            .ignore();
    }
}

/// Runs the pipelines, a few in flight at once; whether all succeeded.
async fn run_all(shared: &Shared, writes: &[redis::Pipeline]) -> bool {
    let mut ok = true;
    for wave in writes.chunks(8) {
        let calls = wave.iter().map(|p| {
            let p = p.clone();
            shared
                .commands
                .run(move |mut c: Conn| async move { p.query_async::<()>(&mut c).await }.boxed())
        });
        ok &= future::join_all(calls).await.iter().all(Result::is_ok);
    }
    ok
}

/// Presence writes grouped into few pipelines. One pipeline per key made a
/// full refresh of 10,000 channels 10,000 round trips on the command
/// connection, and publishes queued behind them for tens of milliseconds.
/// On a Cluster a pipeline goes to one node, so writes are grouped by slot.
struct Batch {
    cluster: bool,
    direct: Vec<(redis::Pipeline, usize)>,
    by_slot: HashMap<u16, redis::Pipeline>,
}

/// Keys per pipeline on one Redis: large enough to make a refresh a few
/// round trips, small enough that a publish behind one waits well under a
/// millisecond.
const KEYS_PER_PIPELINE: usize = 256;

impl Batch {
    fn new(cluster: bool) -> Batch {
        Batch {
            cluster,
            direct: Vec::new(),
            by_slot: HashMap::new(),
        }
    }

    /// The pipeline that the commands for `key` go into.
    fn pipe_for(&mut self, key: &str) -> &mut redis::Pipeline {
        if self.cluster {
            return self.by_slot.entry(super::slot(key)).or_default();
        }
        if self
            .direct
            .last()
            .is_none_or(|(_, n)| *n >= KEYS_PER_PIPELINE)
        {
            self.direct.push((redis::pipe(), 0));
        }
        let last = self.direct.len() - 1;
        let (pipe, n) = &mut self.direct[last];
        *n += 1;
        pipe
    }

    fn into_pipelines(self) -> Vec<redis::Pipeline> {
        if self.cluster {
            self.by_slot.into_values().collect()
        } else {
            self.direct.into_iter().map(|(p, _)| p).collect()
        }
    }
}

/// Presence of `channel` across live nodes; this node's part is taken
/// fresh from the hub.
pub async fn read(shared: &Shared, channel: &Channel) -> Result<Presence, BrokerError> {
    let key = presence_key(channel);
    let fields: HashMap<String, String> = shared
        .commands
        .run({
            let key = key.clone();
            move |mut c: Conn| {
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await }.boxed()
            }
        })
        .await?;
    let others: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(node, _)| *node != shared.node_id)
        .collect();
    let alive = future::join_all(others.iter().map(|(node, _)| {
        let nk = node_key(node);
        shared.commands.run(move |mut c: Conn| {
            async move {
                redis::cmd("EXISTS")
                    .arg(nk)
                    .query_async::<bool>(&mut c)
                    .await
            }
            .boxed()
        })
    }))
    .await;
    let (local, local_users) = shared.sink.local_presence(channel);
    let mut connections = local;
    let mut users: Vec<String> = local_users.iter().map(|u| u.to_string()).collect();
    let mut dead = Vec::new();
    for ((node, value), alive) in others.iter().zip(alive) {
        if !alive? {
            dead.push(node.clone());
            continue;
        }
        if let Some((count, more)) = decode(value) {
            connections += count;
            users.extend(more);
        }
    }
    if !dead.is_empty() {
        // Best effort: the next reader retries.
        let _ = shared
            .commands
            .run(move |mut c: Conn| {
                async move {
                    redis::cmd("HDEL")
                        .arg(key)
                        .arg(dead)
                        .query_async::<()>(&mut c)
                        .await
                }
                .boxed()
            })
            .await;
    }
    users.sort();
    users.dedup();
    Ok(Presence { connections, users })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(cluster: bool, channels: usize) -> Vec<redis::Pipeline> {
        let mut batch = Batch::new(cluster);
        for i in 0..channels {
            let key = presence_key(&format!("c{i}"));
            batch.pipe_for(&key).cmd("HSET").arg(&key).arg("n").arg("1");
        }
        batch.into_pipelines()
    }

    #[test]
    fn one_redis_gets_few_large_pipelines() {
        let pipes = fill(false, 600);
        let sizes: Vec<usize> = pipes.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, [256, 256, 88]);
    }

    #[test]
    fn a_cluster_gets_one_pipeline_per_slot() {
        let pipes = fill(true, 600);
        for p in &pipes {
            let slots: std::collections::HashSet<u16> = p
                .cmd_iter()
                .map(|c| {
                    let key = c.args_iter().nth(1).expect("key");
                    let redis::Arg::Simple(key) = key else {
                        panic!("key is a plain argument")
                    };
                    super::super::slot(std::str::from_utf8(key).expect("utf-8"))
                })
                .collect();
            assert_eq!(slots.len(), 1, "one slot per pipeline");
        }
        assert_eq!(pipes.iter().map(|p| p.len()).sum::<usize>(), 600);
    }
}
