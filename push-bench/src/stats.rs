//! Counters and latency histograms shared by every subscriber task.
//!
//! Measurements run in numbered windows: a window's messages carry its number in the marker,
//! and anything from another window (late tail of the previous step, a readiness probe) is not
//! counted in the current one. Histograms are sharded by subscriber so that tasks on different
//! worker threads rarely meet on the same lock.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::marker::Marker;

/// Latencies are recorded in µs, up to this bound (clamped above it).
const MAX_LATENCY_US: u64 = 120_000_000;

/// State shared by the scenario, the subscribers and the publishers.
pub struct Shared {
    /// Random per process; markers from other processes or runs are ignored.
    pub run: u32,
    /// The monotonic epoch of every `sent_us` / `now_us`.
    pub start: Instant,
    /// Current measurement window; 0 while probing readiness.
    pub window: AtomicU32,
    /// Subscribers whose handshake completed.
    pub connected: AtomicUsize,
    /// Subscribers whose connect or handshake failed.
    pub connect_failed: AtomicUsize,
    /// Connected subscribers whose connection ended (never expected during a run).
    pub disconnected: AtomicUsize,
    /// Subscribers that received a readiness probe, so their subscription is live.
    pub ready: AtomicUsize,
    /// Per channel: subscribers that have not yet seen a probe.
    pub unready: Vec<AtomicU32>,
    /// Window messages received (first copy only).
    pub received: AtomicU64,
    /// Window messages received again on the same connection.
    pub duplicates: AtomicU64,
    /// Window messages that arrived after a higher sequence number on the same connection.
    pub reordered: AtomicU64,
    /// Messages of another run or window (late, or history replayed by the server).
    pub stale: AtomicU64,
    /// Latest receive time in the window, µs since `start`.
    pub last_recv_us: AtomicU64,
    /// Latency shards.
    hist: Vec<Mutex<Histogram<u64>>>,
    /// The first subscriber error seen, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(channels: usize, shards: usize) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16))
            .unwrap_or(7)
            & 0x7fff_ffff;
        Self {
            run,
            start: Instant::now(),
            window: AtomicU32::new(0),
            connected: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            disconnected: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            unready: (0..channels).map(|_| AtomicU32::new(0)).collect(),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            last_recv_us: AtomicU64::new(0),
            hist: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            first_error: Mutex::new(None),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Clears the counters and starts window `w` (> 0).
    pub fn begin_window(&self, w: u32) {
        // Switch first: stragglers of the old window now count as stale, not in the new one.
        self.window.store(w, Relaxed);
        for h in &self.hist {
            lock(h).reset();
        }
        for c in [
            &self.received,
            &self.duplicates,
            &self.reordered,
            &self.stale,
            &self.last_recv_us,
        ] {
            c.store(0, Relaxed);
        }
    }

    /// All shards merged.
    pub fn histogram(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for h in &self.hist {
            // Same bounds on every shard, so adding cannot fail.
            let _ = all.add(&*lock(h));
        }
        all
    }

    pub fn note_error(&self, e: String) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(e);
        }
    }

    fn record(&self, shard: usize, latency_us: u64) {
        let mut h = lock(&self.hist[shard % self.hist.len()]);
        h.saturating_record(latency_us.clamp(1, MAX_LATENCY_US));
    }
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits from 1 µs to 120 s: a few tens of KiB per shard.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .unwrap_or_else(|_| unreachable!("static bounds are valid"))
}

/// A poisoned lock only means another task panicked mid-record; the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one subscriber remembers about the current window.
pub struct SubscriberState {
    /// Subscriber number: picks the histogram shard.
    pub id: usize,
    /// Index of the subscriber's channel.
    pub channel: usize,
    ready: bool,
    window: u32,
    /// Bit per sequence number seen in `window`, to tell duplicates.
    seen: Vec<u64>,
    /// Highest sequence number seen in `window`.
    max_seq: Option<u32>,
}

impl SubscriberState {
    pub fn new(id: usize, channel: usize) -> Self {
        Self {
            id,
            channel,
            ready: false,
            window: 0,
            seen: Vec::new(),
            max_seq: None,
        }
    }

    /// Accounts for one received frame / SSE data line; frames without a marker (welcome,
    /// subscribed, heartbeats) are ignored.
    pub fn on_payload(&mut self, shared: &Shared, payload: &[u8]) {
        let Some(m) = Marker::find(payload) else {
            return;
        };
        let now = shared.now_us();
        if m.run != shared.run {
            shared.stale.fetch_add(1, Relaxed);
            return;
        }
        if m.window == 0 {
            if !self.ready {
                self.ready = true;
                shared.unready[self.channel].fetch_sub(1, Relaxed);
                shared.ready.fetch_add(1, Relaxed);
            }
            return;
        }
        if m.window != shared.window.load(Relaxed) {
            shared.stale.fetch_add(1, Relaxed);
            return;
        }
        if m.window != self.window {
            self.window = m.window;
            self.seen.clear();
            self.max_seq = None;
        }
        let (word, bit) = ((m.seq / 64) as usize, m.seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            shared.duplicates.fetch_add(1, Relaxed);
            return;
        }
        self.seen[word] |= 1 << bit;
        if self.max_seq.is_some_and(|max| m.seq < max) {
            shared.reordered.fetch_add(1, Relaxed);
        } else {
            self.max_seq = Some(m.seq);
        }
        shared.received.fetch_add(1, Relaxed);
        shared.last_recv_us.fetch_max(now, Relaxed);
        shared.record(self.id, now.saturating_sub(m.sent_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(shared: &Shared, window: u32, seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Marker {
            run: shared.run,
            window,
            seq,
            sent_us: shared.now_us(),
        }
        .encode(64, &mut out);
        out
    }

    #[test]
    fn readiness_then_window_accounting() {
        let shared = Shared::new(2, 4);
        shared.unready[1].store(1, Relaxed);
        let mut sub = SubscriberState::new(0, 1);
        sub.on_payload(&shared, &payload(&shared, 0, 0));
        sub.on_payload(&shared, &payload(&shared, 0, 0));
        assert_eq!(shared.ready.load(Relaxed), 1);
        assert_eq!(shared.unready[1].load(Relaxed), 0);

        shared.begin_window(1);
        for seq in [0, 2, 1, 2] {
            sub.on_payload(&shared, &payload(&shared, 1, seq));
        }
        sub.on_payload(&shared, &payload(&shared, 2, 5));
        sub.on_payload(&shared, b"{\"type\":\"welcome\"}");
        assert_eq!(shared.received.load(Relaxed), 3);
        assert_eq!(shared.duplicates.load(Relaxed), 1);
        assert_eq!(shared.reordered.load(Relaxed), 1);
        assert_eq!(shared.stale.load(Relaxed), 1);
        assert_eq!(shared.histogram().len(), 3);

        shared.begin_window(2);
        assert_eq!(shared.received.load(Relaxed), 0);
        assert_eq!(shared.histogram().len(), 0);
        sub.on_payload(&shared, &payload(&shared, 2, 0));
        assert_eq!(shared.received.load(Relaxed), 1);
    }

    #[test]
    fn other_runs_are_stale() {
        let shared = Shared::new(1, 1);
        let mut sub = SubscriberState::new(0, 0);
        let mut out = Vec::new();
        Marker {
            run: shared.run + 1,
            window: 0,
            seq: 0,
            sent_us: 0,
        }
        .encode(64, &mut out);
        sub.on_payload(&shared, &out);
        assert_eq!(shared.stale.load(Relaxed), 1);
        assert_eq!(shared.ready.load(Relaxed), 0);
    }
}
