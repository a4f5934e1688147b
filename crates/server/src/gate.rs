//! The durability gate: core's actions wait here until the store writes they depend on are
//! on disk, so a PUBACK/PUBREC for a message a persistent session must receive means the
//! message is durable (`docs/persistence.md`).
//!
//! Every call to core that described durable changes (`StoreOp`s) has all its actions held
//! for the open batch: its acknowledgement and the deliveries of what it stored. A call
//! without ops is held behind whatever is already held, so everything stays in order per
//! connection [MQTT-4.6.0-2]; with nothing held it passes at once. The open batch's ops go
//! to the store thread once per drained batch of messages ([`Gate::take_batch`]); the store
//! answers with [`Done`], and [`Gate::release`] hands back the actions in order, marking
//! those of failed batches (which the broker then refuses: `Broker::unstored`).
//!
//! A plain type (no I/O, no broker) so its ordering rules have unit tests.

use std::collections::VecDeque;

use midge_core::{Action, StoreOp};

use crate::store_task::Batch;
#[cfg(test)]
use crate::store_task::Done;

/// Actions held until their batch is durable, and the ops of the batch being filled.
#[derive(Debug)]
pub(crate) struct Gate {
    held: VecDeque<(u64, Action)>,
    /// Ops of the batch being filled (number `open`).
    pending: Vec<StoreOp>,
    open: u64,
    /// Whether a call was admitted into the open batch (it may have no store ops: a
    /// cluster's QoS 1/2 forwards or announced filters, `crate::cluster`).
    used: bool,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            held: VecDeque::new(),
            pending: Vec::new(),
            open: 1,
            used: false,
        }
    }
}

impl Gate {
    /// Take in the actions of one call to core. `ops` moves that call's durable changes
    /// into the open batch (it is called only when `has_ops`). Returns true when the
    /// actions were held; false when nothing is held and they may be performed now (they
    /// are left in `actions`).
    pub(crate) fn admit(
        &mut self,
        has_ops: bool,
        ops: impl FnOnce(&mut Vec<StoreOp>),
        actions: &mut Vec<Action>,
    ) -> bool {
        let tag = if has_ops {
            ops(&mut self.pending);
            self.used = true;
            Some(self.open)
        } else {
            self.held.back().map(|(b, _)| *b)
        };
        match tag {
            Some(tag) => {
                self.held.extend(actions.drain(..).map(|a| (tag, a)));
                true
            }
            None => false,
        }
    }

    /// The open batch, to hand to the store thread (`None` when it has no ops); the next
    /// calls fill a new one.
    pub(crate) fn take_batch(&mut self) -> Option<Batch> {
        if !self.used {
            return None;
        }
        self.used = false;
        let batch = Batch {
            id: self.open,
            ops: std::mem::take(&mut self.pending),
        };
        self.open += 1;
        Some(batch)
    }

    /// The store reported `done`: every action held for a batch it covers, in order, with
    /// whether that batch failed.
    #[cfg(test)]
    pub(crate) fn release(&mut self, done: Done, each: impl FnMut(Action, bool)) {
        let (upto, failed_from) = match done {
            Done::Durable(id) => (id, None),
            Done::Failed(from, to) => (to, Some(from)),
        };
        self.release_upto(
            upto,
            |tag| failed_from.is_some_and(|from| tag >= from),
            each,
        );
    }

    /// Every batch up to `upto` is complete (durable, and held by the cluster): hand back
    /// their actions in order, with whether their batch `failed`.
    pub(crate) fn release_upto(
        &mut self,
        upto: u64,
        failed: impl Fn(u64) -> bool,
        mut each: impl FnMut(Action, bool),
    ) {
        while self.held.front().is_some_and(|(tag, _)| *tag <= upto) {
            let Some((tag, action)) = self.held.pop_front() else {
                break;
            };
            each(action, failed(tag));
        }
    }

    /// The batch number the last held action waits for (0: nothing held).
    pub(crate) fn last_tag(&self) -> u64 {
        self.held.back().map_or(0, |(t, _)| *t)
    }

    /// Whether anything waits for the store.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{Packet, PubAck};
    use midge_core::ConnId;

    fn ack(conn: u64, id: u16) -> Action {
        Action::Send(ConnId(conn), Packet::PubAck(PubAck::new(id)))
    }

    fn op() -> StoreOp {
        StoreOp::SessionDelete("t".into())
    }

    fn released(g: &mut Gate, done: Done) -> Vec<(Action, bool)> {
        let mut v = Vec::new();
        g.release(done, |a, failed| v.push((a, failed)));
        v
    }

    #[test]
    fn with_nothing_held_actions_without_ops_pass_at_once() {
        let mut g = Gate::default();
        let mut actions = vec![ack(1, 1)];
        assert!(!g.admit(false, |_| unreachable!(), &mut actions));
        assert_eq!(actions, vec![ack(1, 1)], "left for the caller to perform");
        assert!(g.take_batch().is_none());
    }

    #[test]
    fn acks_wait_until_their_batch_is_durable_and_later_actions_wait_behind_them() {
        let mut g = Gate::default();
        let mut a = vec![ack(1, 1)];
        assert!(g.admit(true, |p| p.push(op()), &mut a));
        assert!(a.is_empty());
        // a later action of the same connection without ops (a PINGRESP) waits behind it:
        // order per connection [MQTT-4.6.0-2]
        let mut b = vec![Action::Send(ConnId(1), Packet::PingResp)];
        assert!(g.admit(false, |_| unreachable!(), &mut b));
        let batch = g.take_batch().unwrap();
        assert_eq!((batch.id, batch.ops.len()), (1, 1));
        // the next call fills batch 2
        let mut c = vec![ack(2, 9)];
        assert!(g.admit(true, |p| p.push(op()), &mut c));
        assert_eq!(g.take_batch().unwrap().id, 2);
        assert!(
            released(&mut g, Done::Durable(0)).is_empty(),
            "nothing durable yet"
        );
        assert_eq!(
            released(&mut g, Done::Durable(1)),
            vec![
                (ack(1, 1), false),
                (Action::Send(ConnId(1), Packet::PingResp), false)
            ]
        );
        assert!(!g.is_empty(), "batch 2 still waits");
        assert_eq!(released(&mut g, Done::Durable(2)), vec![(ack(2, 9), false)]);
        assert!(g.is_empty());
    }

    #[test]
    fn a_failed_batch_marks_its_actions_and_not_those_of_durable_ones() {
        let mut g = Gate::default();
        for (conn, id) in [(1, 1), (2, 2), (3, 3)] {
            let mut a = vec![ack(conn, id)];
            g.admit(true, |p| p.push(op()), &mut a);
            g.take_batch();
        }
        // batch 1 durable, 2..=3 failed (reported together, in order)
        assert_eq!(released(&mut g, Done::Durable(1)), vec![(ack(1, 1), false)]);
        assert_eq!(
            released(&mut g, Done::Failed(2, 3)),
            vec![(ack(2, 2), true), (ack(3, 3), true)]
        );
        assert!(g.is_empty());
    }
}
