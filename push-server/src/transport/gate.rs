//! The transport's read, polled only after it woke the connection.
//!
//! The core's `select!` polls every branch on every wake-up, and a live
//! connection wakes once per delivery. Polling the read each time, for a
//! client that sent nothing, cost about 300 instructions per delivery over
//! SSE (a socket readiness waiter registered and dropped) and 700 over
//! WebSocket (tungstenite's read path down to the socket), 9 % and 19 % of a
//! broadcast delivery's user-space work (docs/benchmarks.md, "What the
//! profiles show"). Here the read is polled with a waker of its own, which
//! marks it woken in [`ConnShared`] and wakes the task; until that happens
//! the branch is skipped. No state is kept in a future: a transport's
//! [`Transport::poll_recv`] leaves the waker registered when it is pending.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::core::{Received, Transport};
use crate::node::ConnShared;

/// The read's waker: the same `ConnShared` the hub wakes the task through.
impl Wake for ConnShared {
    fn wake(self: Arc<Self>) {
        self.wake_read();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_read();
    }
}

/// What the client sent: `io`'s read, polled only if it was woken since it
/// last returned `Pending`.
///
/// Relies on the task's waker being registered in `shared` by the same
/// poll (the core's queue branch, polled first on every iteration), since
/// a skipped read registers nothing with the caller's context.
pub(super) fn recv<'a, T: Transport>(
    shared: &'a Arc<ConnShared>,
    io: &'a mut T,
) -> impl Future<Output = Received> + 'a {
    std::future::poll_fn(move |_| poll_recv(shared, io))
}

fn poll_recv<T: Transport>(shared: &Arc<ConnShared>, io: &mut T) -> Poll<Received> {
    if !shared.read_woken.swap(false, Ordering::AcqRel) {
        return Poll::Pending;
    }
    let waker = Waker::from(shared.clone());
    match io.poll_recv(&mut Context::from_waker(&waker)) {
        Poll::Ready(received) => {
            // More may be buffered (two frames in one read): poll again on
            // the next iteration, which comes without a wake-up.
            shared.read_woken.store(true, Ordering::Release);
            Poll::Ready(received)
        }
        Poll::Pending => Poll::Pending,
    }
}
