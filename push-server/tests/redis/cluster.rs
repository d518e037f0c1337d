//! A 3-master Redis Cluster with sharded pub/sub.

use std::collections::HashMap;

use crate::common::{publish, ws_subscribed};
use crate::nodes::{history_ids, node, ws_messages};
use crate::procs::{cli, Cluster};

#[tokio::test]
async fn channels_on_every_shard() {
    let cluster = Cluster::start().await;
    let addrs = cluster.addrs();
    let a = node(&["--redis-cluster", &addrs]).await;
    let b = node(&["--redis-cluster", &addrs]).await;
    let names: Vec<String> = (0..30).map(|i| format!("shard{i}")).collect();
    let mut ws = ws_subscribed(&a, &names.join(",")).await;
    let mut ws_b = ws_subscribed(&b, &names.join(",")).await;
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for round in 0..3 {
        for ch in &names {
            let from = if round % 2 == 0 { &b } else { &a };
            sent.entry(ch.clone())
                .or_default()
                .push(publish(from, ch, &round.to_string()).await);
        }
    }
    for ws in [&mut ws, &mut ws_b] {
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        for (ch, id, _) in ws_messages(ws, names.len() * 3).await {
            got.entry(ch).or_default().push(id);
        }
        assert_eq!(got, sent, "same ids, same order per channel");
    }
    // Every master holds some channels' history and sharded subscriptions.
    for n in &cluster.nodes {
        let keys: u64 = cli(n.port, &["DBSIZE"]).await.parse().unwrap_or(0);
        assert!(keys > 0, "node {} holds no channel", n.port);
        let shard_channels = cli(n.port, &["PUBSUB", "SHARDCHANNELS"]).await;
        assert!(
            !shard_channels.is_empty(),
            "node {} has no sharded subscription",
            n.port
        );
    }
    // History reads route to the right shard too.
    let ids = history_ids(&a, "shard7/messages").await;
    assert_eq!(ids, sent["shard7"]);
}
