//! Keep alive without a timer per connection. A connection task stamps the time of the last
//! whole control packet it read (an atomic in the state it shares with the router); the
//! router's tick looks at a connection only when it could be due, through a wheel of
//! 500 ms slots, and tells the ones silent for 1.5 times their keep alive to end. So an idle
//! connection keeps no `Sleep` in its task, and receiving a packet costs one clock read and
//! one store instead of a timer-wheel removal and insertion.

use std::sync::OnceLock;
use std::time::Instant;

use midge_core::ConnId;

/// Width of one wheel slot, in ms: the router's tick. A connection is ended between 1.5
/// times its keep alive and that plus one slot after its last packet.
pub(crate) const SLOT_MS: u64 = 500;
/// Slots in the wheel (a 128 s horizon; a later check is parked in the last slot and
/// re-checked from there).
const SLOTS: usize = 256;

/// Milliseconds since a process-wide start, on the monotonic clock.
pub(crate) fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// [`now`] truncated to 32 bits, as stamped: compare with `wrapping_sub` (a keep alive is
/// at most 65,535 s, far below the 49 days it takes to wrap).
pub(crate) fn now_ms() -> u32 {
    now() as u32
}

/// Connection ids by the slot in which they are next checked.
#[derive(Debug)]
pub(crate) struct Wheel {
    slots: Vec<Vec<ConnId>>,
    /// The next slot to check, as an absolute slot number (ms / [`SLOT_MS`]).
    next: u64,
}

impl Wheel {
    /// An empty wheel whose first slot is the one holding `now` (ms, from [`now`]).
    pub(crate) fn new(now: u64) -> Wheel {
        Wheel {
            slots: vec![Vec::new(); SLOTS],
            next: now / SLOT_MS,
        }
    }

    /// Check `id` once `due` (ms) has passed (in the first slot at or after it).
    pub(crate) fn insert(&mut self, id: ConnId, due: u64) {
        let slot = due
            .div_ceil(SLOT_MS)
            .clamp(self.next, self.next + SLOTS as u64 - 1);
        if let Some(s) = self.slots.get_mut((slot % SLOTS as u64) as usize) {
            s.push(id);
        }
    }

    /// Run `check` on every id whose slot has passed by `now` (ms); it returns when the id
    /// is due again (`None`: gone, or ended). Catching up after a long stall checks every
    /// slot once.
    pub(crate) fn expire(&mut self, now: u64, mut check: impl FnMut(ConnId) -> Option<u64>) {
        let upto = now / SLOT_MS;
        let mut passes = 0;
        while self.next <= upto && passes < SLOTS {
            let i = (self.next % SLOTS as u64) as usize;
            let ids = self
                .slots
                .get_mut(i)
                .map(std::mem::take)
                .unwrap_or_default();
            // the slot is empty now; what is due again goes to a later slot
            self.next += 1;
            for &id in &ids {
                if let Some(due) = check(id) {
                    self.insert(id, due);
                }
            }
            if let Some(s) = self.slots.get_mut(i) {
                if s.is_empty() {
                    // keep its allocation for the next round
                    let mut ids = ids;
                    ids.clear();
                    *s = ids;
                }
            }
            passes += 1;
        }
        self.next = self.next.max(upto + 1);
    }

    /// How many ids are waiting (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_checked_once_its_due_time_has_passed_and_not_before() {
        let mut w = Wheel::new(10_000);
        w.insert(ConnId(1), 11_500);
        let mut seen = Vec::new();
        w.expire(11_499, |id| {
            seen.push(id);
            None
        });
        assert!(seen.is_empty(), "checked early");
        w.expire(11_500, |id| {
            seen.push(id);
            None
        });
        assert_eq!(seen, vec![ConnId(1)]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn an_id_due_again_is_checked_again_later() {
        let mut w = Wheel::new(0);
        w.insert(ConnId(7), 1_000);
        let mut checks = 0;
        for now in (0..=5_000).step_by(500) {
            w.expire(now, |_| {
                checks += 1;
                (checks < 3).then_some(now + 1_500)
            });
        }
        assert_eq!(checks, 3);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_due_time_beyond_the_horizon_is_parked_and_rechecked() {
        let mut w = Wheel::new(0);
        let due = 10 * 3600 * 1000; // 10 h: beyond the 128 s the wheel spans
        w.insert(ConnId(3), due);
        let mut fired_at = None;
        let mut now = 0;
        while fired_at.is_none() && now <= due + 1_000 {
            now += 500;
            w.expire(now, |_| {
                if now >= due {
                    fired_at = Some(now);
                    None
                } else {
                    Some(due)
                }
            });
        }
        assert_eq!(fired_at, Some(due));
    }

    #[test]
    fn a_long_stall_checks_every_slot_once_and_moves_on() {
        let mut w = Wheel::new(0);
        for i in 0..10 {
            w.insert(ConnId(i), 1_000 + i * 10_000);
        }
        let mut checked = Vec::new();
        w.expire(3_600_000, |id| {
            checked.push(id);
            None
        });
        checked.sort();
        assert_eq!(checked, (0..10).map(ConnId).collect::<Vec<_>>());
        w.insert(ConnId(99), 3_600_000 + 500);
        let mut again = Vec::new();
        w.expire(3_600_000 + 500, |id| {
            again.push(id);
            None
        });
        assert_eq!(again, vec![ConnId(99)]);
    }
}
