//! Acknowledged delivery for WebSocket subscriptions with `ack:true`.
//!
//! Policy (docs/delivery.md), decided here and nowhere else:
//! - At most `ack_window` messages of a subscription are in flight
//!   (sent, not acked). Further messages wait in the subscription's pending
//!   queue, bounded by `outbound_queue`: when it overflows, the connection is
//!   a slow consumer (`reconnect`/`slow_consumer`), and the client resumes
//!   from history with the last id it acked.
//! - An unacked message is sent again after `ack_timeout`, at most
//!   `max_redeliveries` times. After that the server gives up on it: the
//!   client gets an `error` frame with code `ack_timeout` naming the channel
//!   and id, the message leaves the window, and delivery goes on. The message
//!   is still in history (if retained) for the client to fetch.
//! - An ack for an id that is not in flight (late, duplicate) is ignored.
//!
//! Pure logic with explicit time, so it is tested without a socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{Channel, Message, MessageId};

/// Limits of acknowledged delivery.
#[derive(Debug, Clone, Copy)]
pub struct AckLimits {
    pub window: usize,
    pub timeout: Duration,
    pub max_redeliveries: u32,
    /// Pending messages per subscription before the client is a slow consumer.
    pub max_pending: usize,
}

#[derive(Debug)]
struct Inflight {
    msg: Arc<Message>,
    first_sent: Instant,
    due: Instant,
    redeliveries: u32,
}

#[derive(Debug)]
struct SubAcks {
    channel: Channel,
    inflight: VecDeque<Inflight>,
    pending: VecDeque<Arc<Message>>,
}

/// The pending queue overflowed: the client cannot keep up.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// What a timer tick asks the connection to do.
#[derive(Debug, Default)]
pub struct Due {
    /// Send these again (redeliveries).
    pub resend: Vec<Arc<Message>>,
    /// Tell the client these were given up.
    pub given_up: Vec<(Channel, MessageId)>,
    /// Send these for the first time (the window moved).
    pub send: Vec<Arc<Message>>,
}

/// The acknowledged subscriptions of one connection.
#[derive(Debug)]
pub struct Acks {
    limits: AckLimits,
    subs: Vec<SubAcks>,
}

impl Acks {
    pub fn new(limits: AckLimits) -> Acks {
        Acks {
            limits,
            subs: Vec::new(),
        }
    }

    pub fn add(&mut self, channel: Channel) {
        self.remove(&channel);
        self.subs.push(SubAcks {
            channel,
            inflight: VecDeque::new(),
            pending: VecDeque::new(),
        });
    }

    pub fn remove(&mut self, channel: &str) {
        self.subs.retain(|s| &*s.channel != channel);
    }

    /// No subscription asks for acks.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    pub fn is_acked(&self, channel: &str) -> bool {
        self.subs.iter().any(|s| &*s.channel == channel)
    }

    /// A message for an acked subscription: `Some` if it may be sent now.
    pub fn offer(
        &mut self,
        msg: Arc<Message>,
        now: Instant,
    ) -> Result<Option<Arc<Message>>, Overflow> {
        let limits = self.limits;
        let Some(sub) = self.subs.iter_mut().find(|s| s.channel == msg.channel) else {
            return Ok(Some(msg));
        };
        if sub.inflight.len() < limits.window && sub.pending.is_empty() {
            sub.inflight.push_back(Inflight {
                msg: msg.clone(),
                first_sent: now,
                due: now + limits.timeout,
                redeliveries: 0,
            });
            return Ok(Some(msg));
        }
        if sub.pending.len() >= limits.max_pending {
            return Err(Overflow);
        }
        sub.pending.push_back(msg);
        Ok(None)
    }

    /// An ack: returns the ack latency (if the id was in flight) and what
    /// may now be sent.
    pub fn ack(
        &mut self,
        channel: &str,
        id: MessageId,
        now: Instant,
    ) -> (Option<Duration>, Vec<Arc<Message>>) {
        let limits = self.limits;
        let Some(sub) = self.subs.iter_mut().find(|s| &*s.channel == channel) else {
            return (None, Vec::new());
        };
        let Some(i) = sub.inflight.iter().position(|f| f.msg.id == id) else {
            return (None, Vec::new());
        };
        let done = sub.inflight.remove(i);
        let latency = done.map(|d| now.duration_since(d.first_sent));
        (latency, refill(sub, limits, now))
    }

    /// The earliest redelivery deadline.
    pub fn next_due(&self) -> Option<Instant> {
        self.subs
            .iter()
            .flat_map(|s| s.inflight.iter().map(|f| f.due))
            .min()
    }

    /// Redeliveries and give-ups due at `now`.
    pub fn due(&mut self, now: Instant) -> Due {
        let limits = self.limits;
        let mut out = Due::default();
        for sub in &mut self.subs {
            let mut gave_up = false;
            sub.inflight.retain_mut(|f| {
                if f.due > now {
                    return true;
                }
                if f.redeliveries < limits.max_redeliveries {
                    f.redeliveries += 1;
                    f.due = now + limits.timeout;
                    out.resend.push(f.msg.clone());
                    true
                } else {
                    out.given_up.push((sub.channel.clone(), f.msg.id));
                    gave_up = true;
                    false
                }
            });
            if gave_up {
                out.send.extend(refill(sub, limits, now));
            }
        }
        out
    }
}

fn refill(sub: &mut SubAcks, limits: AckLimits, now: Instant) -> Vec<Arc<Message>> {
    let mut out = Vec::new();
    while sub.inflight.len() < limits.window {
        let Some(msg) = sub.pending.pop_front() else {
            break;
        };
        sub.inflight.push_back(Inflight {
            msg: msg.clone(),
            first_sent: now,
            due: now + limits.timeout,
            redeliveries: 0,
        });
        out.push(msg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Arc<Message> {
        Arc::new(Message::new(
            "a".into(),
            MessageId::new(1, seq),
            b"0",
            std::time::Instant::now(),
        ))
    }

    fn limits() -> AckLimits {
        AckLimits {
            window: 2,
            timeout: Duration::from_secs(1),
            max_redeliveries: 2,
            max_pending: 3,
        }
    }

    #[test]
    fn window_holds_and_acks_release() {
        let mut a = Acks::new(limits());
        a.add("a".into());
        let t = Instant::now();
        assert!(a.offer(msg(1), t).unwrap().is_some());
        assert!(a.offer(msg(2), t).unwrap().is_some());
        assert!(a.offer(msg(3), t).unwrap().is_none(), "window of 2 is full");
        assert!(a.offer(msg(4), t).unwrap().is_none());
        let (lat, send) = a.ack("a", MessageId::new(1, 2), t + Duration::from_millis(5));
        assert_eq!(lat, Some(Duration::from_millis(5)));
        assert_eq!(send.iter().map(|m| m.id.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(
            a.ack("a", MessageId::new(1, 2), t).1.len(),
            0,
            "a duplicate ack is ignored"
        );
        assert!(a.offer(msg(5), t).unwrap().is_none());
        assert!(a.offer(msg(6), t).unwrap().is_none());
        assert!(
            matches!(a.offer(msg(7), t), Err(Overflow)),
            "pending is bounded"
        );
    }

    #[test]
    fn redelivers_then_gives_up() {
        let mut a = Acks::new(limits());
        a.add("a".into());
        let t0 = Instant::now();
        a.offer(msg(1), t0).unwrap();
        a.offer(msg(2), t0).unwrap();
        a.offer(msg(3), t0).unwrap();
        let mut resent = 0;
        let t = loop {
            let t = a.next_due().unwrap();
            let due = a.due(t);
            resent += due.resend.len();
            if !due.given_up.is_empty() {
                assert_eq!(due.given_up.len(), 2);
                assert_eq!(due.send.iter().map(|m| m.id.seq).collect::<Vec<_>>(), [3]);
                break t;
            }
        };
        assert_eq!(
            resent,
            2 * 2,
            "each message redelivered exactly max_redeliveries times"
        );
        assert_eq!(t, t0 + Duration::from_secs(3));
    }

    #[test]
    fn unacked_subscriptions_pass_through() {
        let mut a = Acks::new(limits());
        assert!(a.offer(msg(1), Instant::now()).unwrap().is_some());
        assert!(a.next_due().is_none());
    }
}
