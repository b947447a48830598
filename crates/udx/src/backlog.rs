//! Datagrams the kernel refused (its send buffer full), waiting in order for the socket to
//! drain. Bounded in bytes: beyond the bound a datagram is dropped, as the kernel would
//! drop it, so a peer that makes us answer faster than we can send cannot grow our memory.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What waits at most (the C libudx's socket send buffer is about this size).
pub(crate) const BACKLOG_MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct Backlog {
    queue: VecDeque<(Vec<u8>, SocketAddr)>,
    bytes: usize,
    /// A task is sending the queue; it clears this when it leaves the queue empty.
    draining: bool,
    /// Shared, so that a metrics registry can read it without holding the socket.
    dropped: Arc<AtomicU64>,
}

/// What `push` asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; a drain task runs already.
    Queued,
    /// Queued; the caller must start the drain task.
    StartDraining,
    /// Dropped: the backlog is full.
    Dropped,
}

impl Backlog {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn push(&mut self, data: &[u8], addr: SocketAddr) -> Pushed {
        if self.bytes + data.len() > BACKLOG_MAX_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Pushed::Dropped;
        }
        self.bytes += data.len();
        self.queue.push_back((data.to_vec(), addr));
        if self.draining {
            Pushed::Queued
        } else {
            self.draining = true;
            Pushed::StartDraining
        }
    }

    /// The next datagram to send; `None` (and the drain task ends) when empty.
    pub(crate) fn pop(&mut self) -> Option<(Vec<u8>, SocketAddr)> {
        let next = self.queue.pop_front();
        match &next {
            Some((data, _)) => self.bytes -= data.len(),
            None => self.draining = false,
        }
        next
    }

    /// A datagram the kernel refused again goes back to the front.
    pub(crate) fn unpop(&mut self, data: Vec<u8>, addr: SocketAddr) {
        self.bytes += data.len();
        self.queue.push_front((data, addr));
    }

    /// The socket closed: nothing more is sent.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
        self.draining = false;
    }

    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn keeps_order_and_starts_one_drain() {
        let mut backlog = Backlog::default();
        assert_eq!(backlog.push(b"one", addr(1)), Pushed::StartDraining);
        assert_eq!(backlog.push(b"two", addr(2)), Pushed::Queued);
        let (first, to) = backlog.pop().expect("first");
        assert_eq!((first.as_slice(), to), (&b"one"[..], addr(1)));
        backlog.unpop(first, to); // refused again: still first
        assert_eq!(backlog.pop().map(|d| d.0), Some(b"one".to_vec()));
        assert_eq!(backlog.pop().map(|d| d.0), Some(b"two".to_vec()));
        assert_eq!(backlog.pop(), None);
        assert_eq!(backlog.push(b"three", addr(3)), Pushed::StartDraining, "the drain ended with the queue");
    }

    #[test]
    fn bounded_in_bytes() {
        let mut backlog = Backlog::default();
        let datagram = vec![0u8; 1500];
        let fit = BACKLOG_MAX_BYTES / datagram.len();
        for _ in 0..fit {
            assert_ne!(backlog.push(&datagram, addr(1)), Pushed::Dropped);
        }
        assert_eq!(backlog.push(&datagram, addr(1)), Pushed::Dropped);
        assert_eq!(backlog.dropped_counter().load(Ordering::Relaxed), 1);
        backlog.pop();
        assert_ne!(backlog.push(&datagram, addr(1)), Pushed::Dropped, "room again once one left");
        backlog.clear();
        assert!(backlog.is_empty());
        assert_eq!(backlog.push(&datagram, addr(1)), Pushed::StartDraining);
    }
}
