//! Every timer of the broker in one place: keep alive, delayed wills, session expiry,
//! retained-message expiry and periodic housekeeping, on one min-heap of deadlines.
//!
//! The caller asks [`crate::Broker::poll_timeout`] for the earliest deadline, sleeps until
//! then (or until packets arrive) and calls [`crate::Broker::handle_timeout`] with the time
//! it woke, as quinn-proto's protocol core does: core reads no clock, and tests drive every
//! timer with a fake one.
//!
//! Entries are never removed when what they watch changes: each is checked when it fires
//! (lazy deletion). A keep-alive entry finds its connection's last packet and re-arms for
//! `last packet + 1.5 × keep alive` if the client spoke since; a session entry carries the
//! `disconnected_at` it was armed for and is stale once the session reconnected (or another
//! session took its slot). So updating activity on every packet costs one store, and each
//! connection or disconnected session has at most one live entry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::{ConnId, SessionId};

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A connection's keep alive.
    KeepAlive(ConnId),
    /// A disconnected session's delayed will or expiry; `since` is the `disconnected_at`
    /// it was armed for.
    Session { sid: SessionId, since: Instant },
    /// The earliest retained message with a Message Expiry Interval.
    Retained,
    /// Periodic work (copying out the last values that pin read buffers).
    Housekeeping,
}

/// How often [`Timer::Housekeeping`] runs.
pub(crate) const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// The heap of deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Fire `timer` at `at` (or at the first [`Timers::due`] after it).
    pub(crate) fn arm(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next timer due at `now`, removed from the heap.
    pub(crate) fn due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries in the heap (live or stale).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_out_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.arm(t0 + Duration::from_secs(3), Timer::KeepAlive(ConnId(3)));
        t.arm(t0 + Duration::from_secs(1), Timer::KeepAlive(ConnId(1)));
        t.arm(t0 + Duration::from_secs(2), Timer::Retained);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.due(t0), None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(t.due(now).map(|e| e.1), Some(Timer::KeepAlive(ConnId(1))));
        assert_eq!(t.due(now).map(|e| e.1), Some(Timer::Retained));
        assert_eq!(t.due(now), None);
        assert_eq!(t.len(), 1);
    }
}
