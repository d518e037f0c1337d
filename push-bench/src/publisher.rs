//! HTTP/1.1 keep-alive publishers with pipelining.
//!
//! Each publisher connection owns the channels whose number is congruent to its own index, so
//! the messages of one channel leave in sequence order on one connection and the server sees
//! them in that order (pipelined requests are answered in order). Requests are stamped with
//! the send time when they are written, so latency is publish → receive. Each connection is
//! one task that both writes batches and reads responses; at most `max_inflight` requests are
//! outstanding per connection, after which new batches wait in a bounded queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::http::{parse_head, Chunked};
use crate::marker::Marker;
use crate::net::{connect, SourceAddrs};
use crate::stats::Shared;
use crate::target::Template;

/// One message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub channel: u32,
    pub seq: u32,
    pub window: u32,
}

/// Publisher-side counters (window messages only, probes excluded).
#[derive(Default)]
pub struct PubStats {
    /// Handed to a connection.
    pub submitted: AtomicU64,
    /// Answered 2xx.
    pub ok: AtomicU64,
    /// Answered otherwise, or lost with a broken connection.
    pub failed: AtomicU64,
    /// Dropped because the queue was full: the generator or server could not keep up.
    pub skipped: AtomicU64,
    /// Sum over `ok` publishes of the subscribers on the channel.
    pub expected: AtomicU64,
    /// Probes (window 0) answered, any status.
    pub probes_answered: AtomicU64,
    /// The first failure, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl PubStats {
    pub fn reset(&self) {
        for c in [
            &self.submitted,
            &self.ok,
            &self.failed,
            &self.skipped,
            &self.expected,
        ] {
            c.store(0, Relaxed);
        }
    }

    fn note_error(&self, e: String) {
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(e);
        }
    }

    /// Every submitted window message has been answered (or given up on).
    pub fn settled(&self) -> bool {
        self.ok.load(Relaxed) + self.failed.load(Relaxed) >= self.submitted.load(Relaxed)
    }
}

/// Settings shared by the publisher connections.
pub struct PublisherSpec {
    pub url: Template,
    pub channels: Arc<Vec<String>>,
    /// Subscribers counted on each channel (set once readiness is known).
    pub subscribers: Arc<Vec<AtomicU32>>,
    pub payload_bytes: usize,
    /// Extra request header lines, e.g. `Authorization: Bearer …`.
    pub headers: Vec<String>,
    pub content_type: String,
    pub max_inflight: usize,
    pub sources: SourceAddrs,
}

/// The set of publisher connections.
pub struct Publisher {
    queues: Vec<mpsc::Sender<Vec<Job>>>,
    pub stats: Arc<PubStats>,
}

impl Publisher {
    pub fn start(spec: PublisherSpec, connections: usize, shared: Arc<Shared>) -> Self {
        let spec = Arc::new(spec);
        let stats = Arc::new(PubStats::default());
        let queues = (0..connections.max(1))
            .map(|i| {
                // Bounded: a server that stops answering shows up as skipped messages instead
                // of unbounded generator memory.
                let (tx, rx) = mpsc::channel(4096);
                tokio::spawn(run_connection(
                    i,
                    rx,
                    spec.clone(),
                    shared.clone(),
                    stats.clone(),
                ));
                tx
            })
            .collect();
        Self { queues, stats }
    }

    /// Routes jobs to the connection owning their channel.
    pub fn submit(&self, jobs: impl IntoIterator<Item = Job>) {
        let n = self.queues.len();
        let mut batches: Vec<Vec<Job>> = vec![Vec::new(); n];
        for job in jobs {
            batches[job.channel as usize % n].push(job);
        }
        for (queue, batch) in self.queues.iter().zip(batches) {
            if batch.is_empty() {
                continue;
            }
            let window_jobs = batch.iter().filter(|j| j.window > 0).count() as u64;
            match queue.try_send(batch) {
                Ok(()) => {
                    self.stats.submitted.fetch_add(window_jobs, Relaxed);
                }
                Err(_) => {
                    self.stats.skipped.fetch_add(window_jobs, Relaxed);
                }
            }
        }
    }
}

/// One keep-alive connection, reconnecting after failures until the queue closes.
async fn run_connection(
    index: usize,
    mut queue: mpsc::Receiver<Vec<Job>>,
    spec: Arc<PublisherSpec>,
    shared: Arc<Shared>,
    stats: Arc<PubStats>,
) {
    let source = spec.sources.for_conn(spec.url.addr, index);
    loop {
        let stream = match connect(spec.url.addr, source).await {
            Ok(s) => s,
            Err(e) => {
                stats.note_error(format!("publisher connect {}: {e}", spec.url.addr));
                // Fail what is queued so that a dead server ends the run instead of hanging it.
                match queue.recv().await {
                    Some(batch) => fail_jobs(&stats, batch.iter().copied(), "no connection"),
                    None => return,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut session = Session {
            spec: &spec,
            shared: &shared,
            stats: &stats,
            pending: VecDeque::new(),
        };
        let ended = session.run(stream, &mut queue).await;
        let lost = std::mem::take(&mut session.pending);
        fail_jobs(&stats, lost.into_iter(), &ended);
        if queue.is_closed() && queue.is_empty() {
            return;
        }
    }
}

fn fail_jobs(stats: &PubStats, jobs: impl Iterator<Item = Job>, why: &str) {
    let mut failed = 0;
    for job in jobs {
        if job.window > 0 {
            failed += 1;
        }
    }
    if failed > 0 {
        stats.failed.fetch_add(failed, Relaxed);
        stats.note_error(format!("{failed} publishes lost: {why}"));
    }
}

struct Session<'a> {
    spec: &'a PublisherSpec,
    shared: &'a Shared,
    stats: &'a PubStats,
    /// Requests written and not yet answered, in order.
    pending: VecDeque<Job>,
}

impl Session<'_> {
    async fn run(
        &mut self,
        mut stream: tokio::net::TcpStream,
        queue: &mut mpsc::Receiver<Vec<Job>>,
    ) -> String {
        let (mut rd, mut wr) = stream.split();
        let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut body: Vec<u8> = Vec::with_capacity(self.spec.payload_bytes + 64);
        let mut inbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            tokio::select! {
                batch = queue.recv(), if self.pending.len() < self.spec.max_inflight => {
                    let Some(batch) = batch else {
                        if self.pending.is_empty() {
                            return "queue closed".into();
                        }
                        // Finish reading the answers still owed.
                        match self.read_more(&mut rd, &mut inbuf).await {
                            Ok(()) => continue,
                            Err(e) => return e,
                        }
                    };
                    out.clear();
                    for job in batch {
                        self.encode(job, &mut body, &mut out);
                        self.pending.push_back(job);
                    }
                    if let Err(e) = wr.write_all(&out).await {
                        return format!("publish write: {e}");
                    }
                }
                read = rd.read_buf(&mut inbuf) => {
                    match read {
                        Ok(0) => return "publisher connection closed by server".into(),
                        Ok(_) => {
                            if let Err(e) = self.consume(&mut inbuf) {
                                return e;
                            }
                        }
                        Err(e) => return format!("publish read: {e}"),
                    }
                }
            }
        }
    }

    async fn read_more(
        &mut self,
        rd: &mut tokio::net::tcp::ReadHalf<'_>,
        inbuf: &mut Vec<u8>,
    ) -> Result<(), String> {
        match rd.read_buf(inbuf).await {
            Ok(0) => Err("publisher connection closed by server".into()),
            Ok(_) => self.consume(inbuf),
            Err(e) => Err(format!("publish read: {e}")),
        }
    }

    fn encode(&self, job: Job, body: &mut Vec<u8>, out: &mut Vec<u8>) {
        body.clear();
        Marker {
            run: self.shared.run,
            window: job.window,
            seq: job.seq,
            sent_us: self.shared.now_us(),
        }
        .encode(self.spec.payload_bytes, body);
        let path = self
            .spec
            .url
            .path_for(&self.spec.channels[job.channel as usize]);
        let _ = std::io::Write::write_fmt(
            out,
            format_args!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                self.spec.url.authority,
                self.spec.content_type,
                body.len()
            ),
        );
        for h in &self.spec.headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }

    /// Parses every complete response in `inbuf` and settles the matching pending job.
    fn consume(&mut self, inbuf: &mut Vec<u8>) -> Result<(), String> {
        let mut used = 0;
        while let Some((status, n, snippet)) = next_response(&inbuf[used..])? {
            used += n;
            let job = self
                .pending
                .pop_front()
                .ok_or("response without a request")?;
            if job.window == 0 {
                self.stats.probes_answered.fetch_add(1, Relaxed);
                continue;
            }
            if (200..300).contains(&status) {
                self.stats.ok.fetch_add(1, Relaxed);
                let subs = self.spec.subscribers[job.channel as usize].load(Relaxed);
                self.stats.expected.fetch_add(u64::from(subs), Relaxed);
            } else {
                self.stats.failed.fetch_add(1, Relaxed);
                self.stats
                    .note_error(format!("publish status {status}: {snippet}"));
            }
        }
        inbuf.drain(..used);
        Ok(())
    }
}

/// Parses the next complete response at the start of `buf`: (status, bytes used, start of the
/// body). `None` until the whole response is there; nothing is consumed before that, which is
/// cheap because publish responses are small.
fn next_response(buf: &[u8]) -> Result<Option<(u16, usize, String)>, String> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let rest = &buf[head.len..];
    let (body, used) = if head.chunked {
        let mut dechunk = Chunked::default();
        let mut body = Vec::new();
        let n = dechunk.feed(rest, &mut body)?;
        if !dechunk.done() {
            return Ok(None);
        }
        (body, n)
    } else {
        let len = match head.content_length {
            Some(len) => len,
            None if head.status == 204 || head.status == 304 || head.status < 200 => 0,
            None => {
                return Err(format!(
                    "response {} without length: not usable for pipelining",
                    head.status
                ))
            }
        };
        if rest.len() < len {
            return Ok(None);
        }
        (rest[..len].to_vec(), len)
    };
    let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Ok(Some((head.status, head.len + used, snippet)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 4";
        let (s, n, _) = next_response(raw).unwrap().unwrap();
        assert_eq!(s, 200);
        let (s, m, body) = next_response(&raw[n..]).unwrap().unwrap();
        assert_eq!((s, body.as_str()), (202, "abc"));
        assert_eq!(next_response(&raw[n + m..]).unwrap(), None);
    }
}
