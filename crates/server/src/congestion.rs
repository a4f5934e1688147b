//! The congestion handshake between the router and one connection's writer, in one place.
//!
//! The router never waits on a client: it queues packets in the connection's outbox and
//! counts their bytes here. Past the high-water mark the connection is *congested*: the
//! router tells core it is not writable (`Broker::set_writable(false)`), so core queues
//! that session's messages instead of sending them. The writer counts the bytes it wrote;
//! once at or below the low-water mark (half the high-water mark) it clears the mark and
//! sends the router one `RouterMsg::Drained`, on which core is told it is writable again.
//!
//! Two threads touch the same two atomics, and the protocol must guarantee:
//!
//! - **no lost wake-up**: core is never left believing the connection not writable while
//!   nothing is left for the writer to write (it would never send `Drained`, and the
//!   session would stall for good);
//! - **no double `Drained`**: each mark the router reports is cleared exactly once, by one
//!   side;
//! - **no stale `Drained`**: a `Drained` that reaches the router after the router marked the
//!   connection congested again does not make it writable (the next drain reports it).
//!
//! The race the re-check in [`Congestion::queue`] closes: the router adds a packet's bytes
//! (over high water) and hands it to the writer; before the router sets the mark, the writer
//! takes everything, writes it and finds no mark to clear (so sends no `Drained`). If the
//! router then set the mark and reported it, the queue would be empty, the writer idle and
//! core would never hear that the connection is writable. So after setting the mark the
//! router looks at the count again: at or below low water it takes the mark back itself
//! (with a swap, so that exactly one of the router and the writer clears a mark) and
//! reports nothing. `tests::every_interleaving_*` run every interleaving of the two sides'
//! atomic steps and fail without the re-check.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// Queued bytes and the congestion mark of one connection, shared by the router and the
/// connection's writer (in the same allocation as its outbox).
#[derive(Debug, Default)]
pub(crate) struct Congestion {
    /// Estimated bytes handed to the outbox and not yet written to the socket.
    queued: AtomicUsize,
    /// Whether the router reported this connection to core as not writable (and no one
    /// cleared the mark since).
    congested: AtomicBool,
}

/// The writer reports `Drained` at or below this many bytes (half the high-water mark).
pub(crate) fn low_water(high_water: usize) -> usize {
    high_water / 2
}

impl Congestion {
    /// Router: count `weight` bytes, then hand the packet over with `send` (the writer may
    /// take, write and count it as written before this returns). `Ok(true)` means the
    /// connection just became congested: tell core it is not writable. A failed `send`
    /// (the writer is gone) is given back.
    pub(crate) fn queue<E>(
        &self,
        weight: usize,
        high_water: usize,
        send: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        // counted before the hand-over, so the writer never subtracts what was not added
        let queued = self.queued.fetch_add(weight, SeqCst) + weight;
        hook::at("queue: counted");
        send()?;
        hook::at("queue: sent");
        if queued <= high_water || self.congested.load(SeqCst) {
            return Ok(false);
        }
        hook::at("queue: not yet marked");
        self.congested.store(true, SeqCst);
        hook::at("queue: marked");
        // the re-check (module comment): the writer may have drained everything since
        // `queued` was read and found no mark to clear
        if self.queued.load(SeqCst) <= low_water(high_water) {
            hook::at("queue: drained meanwhile");
            if self.congested.swap(false, SeqCst) {
                return Ok(false);
            }
            // the writer cleared the mark after all and sends `Drained`: report it, so
            // that `Drained` pairs with a report
        }
        Ok(true)
    }

    /// Writer: `weight` bytes were written. True means the mark was cleared here: send the
    /// router `Drained` (exactly once for this mark).
    pub(crate) fn written(&self, weight: usize, high_water: usize) -> bool {
        let left = self.queued.fetch_sub(weight, SeqCst) - weight;
        hook::at("written: counted");
        if left > low_water(high_water) || !self.congested.load(SeqCst) {
            return false;
        }
        hook::at("written: saw the mark");
        self.congested.swap(false, SeqCst)
    }

    /// Router, on `Drained`: whether to tell core the connection is writable. False when
    /// the router marked it congested again after the writer cleared the mark (that mark
    /// was reported and gets its own `Drained`).
    pub(crate) fn drained(&self) -> bool {
        !self.congested.load(SeqCst)
    }

    /// Bytes queued and not yet written (estimated).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(SeqCst)
    }
}

/// Points between the atomic steps where a test can run the other side (no-ops outside
/// tests).
#[cfg(not(test))]
mod hook {
    #[inline(always)]
    pub(super) fn at(_: &'static str) {}
}

#[cfg(test)]
mod hook {
    use std::cell::RefCell;

    type Hook = Box<dyn Fn(&'static str)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    pub(super) fn at(point: &'static str) {
        HOOK.with(|h| {
            if let Some(f) = &*h.borrow() {
                f(point)
            }
        });
    }

    /// Call `f` at every point this thread passes.
    pub(super) fn set(f: impl Fn(&'static str) + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Condvar, Mutex, mpsc};

    const HIGH: usize = 100;

    /// What the router knows: core's writable flag for the connection, reports and
    /// `Drained` messages counted.
    #[derive(Debug)]
    struct Core {
        writable: bool,
        reports: usize,
        drained: usize,
    }

    impl Core {
        fn new(writable: bool) -> Core {
            Core {
                writable,
                reports: 0,
                drained: 0,
            }
        }

        /// The router queues one packet of `w` bytes into `outbox`.
        fn push(&mut self, c: &Congestion, outbox: &Mutex<Vec<usize>>, w: usize) {
            let report = c
                .queue(w, HIGH, || {
                    outbox.lock().unwrap().push(w);
                    Ok::<_, ()>(())
                })
                .unwrap();
            if report {
                self.reports += 1;
                self.writable = false;
            }
            // backpressure is never lost: a mark the router sees was reported
            assert!(!c.congested.load(SeqCst) || !self.writable, "{self:?}");
        }

        /// The router handles one `Drained`.
        fn on_drained(&mut self, c: &Congestion) {
            self.drained += 1;
            if c.drained() {
                self.writable = true;
            }
        }
    }

    /// The writer takes everything queued and writes it; true if it sends `Drained`.
    fn write_all(c: &Congestion, outbox: &Mutex<Vec<usize>>) -> bool {
        let w: usize = std::mem::take(&mut *outbox.lock().unwrap()).iter().sum();
        w > 0 && c.written(w, HIGH)
    }

    /// Hands the turn between two threads at their hook points, in the order a schedule
    /// names (a tiny deterministic scheduler, loom's idea without the dependency).
    struct Turnstile {
        state: Mutex<Turns>,
        cv: Condvar,
    }

    #[derive(Default)]
    struct Turns {
        turn: Option<usize>,
        parked: [bool; 2],
        done: [bool; 2],
    }

    impl Turnstile {
        fn pause(&self, me: usize) {
            let mut s = self.state.lock().unwrap();
            s.parked[me] = true;
            self.cv.notify_all();
            while s.turn != Some(me) {
                s = self.cv.wait(s).unwrap();
            }
            s.turn = None;
            s.parked[me] = false;
        }

        fn finish(&self, me: usize) {
            let mut s = self.state.lock().unwrap();
            s.done[me] = true;
            self.cv.notify_all();
        }

        /// Let `who` (or the other one if `who` finished) run to its next point; false
        /// when both finished.
        fn step(&self, who: usize) -> bool {
            let mut s = self.state.lock().unwrap();
            while !(s.parked[0] || s.done[0]) || !(s.parked[1] || s.done[1]) {
                s = self.cv.wait(s).unwrap();
            }
            let who = match (s.done[who], s.done[1 - who]) {
                (false, _) => who,
                (true, false) => 1 - who,
                (true, true) => return false,
            };
            s.turn = Some(who);
            self.cv.notify_all();
            while s.turn.is_some() || !(s.parked[who] || s.done[who]) {
                s = self.cv.wait(s).unwrap();
            }
            true
        }
    }

    /// One concurrent round from a starting state: the router pushes `pushes` while the
    /// writer writes what is queued once, interleaved as `schedule` says (bit i: who takes
    /// step i). Then, sequentially, the writer writes the rest and the router handles the
    /// `Drained` messages. Checks the three guarantees of the module comment.
    fn round(
        queued: usize,
        marked: bool,
        pushes: &'static [usize],
        schedule: u32,
    ) -> Result<(), String> {
        let c = Arc::new(Congestion::default());
        let outbox = Arc::new(Mutex::new(Vec::new()));
        if queued > 0 {
            c.queued.store(queued, SeqCst);
            outbox.lock().unwrap().push(queued);
        }
        c.congested.store(marked, SeqCst);
        let mut core = Core::new(!marked);
        if marked {
            core.reports = 1;
        }
        let t = Arc::new(Turnstile {
            state: Mutex::new(Turns::default()),
            cv: Condvar::new(),
        });
        let (drained_tx, drained_rx) = mpsc::channel();
        let router = {
            let (c, outbox, t) = (c.clone(), outbox.clone(), t.clone());
            std::thread::spawn(move || {
                let t2 = t.clone();
                hook::set(move |_| t2.pause(0));
                hook::at("start");
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    for &w in pushes {
                        core.push(&c, &outbox, w);
                    }
                    core
                }));
                t.finish(0);
                r
            })
        };
        let writer = {
            let (c, outbox, t) = (c.clone(), outbox.clone(), t.clone());
            std::thread::spawn(move || {
                let t2 = t.clone();
                hook::set(move |_| t2.pause(1));
                hook::at("start");
                if write_all(&c, &outbox) {
                    drained_tx.send(()).unwrap();
                }
                t.finish(1);
                drained_tx
            })
        };
        let mut i = 0;
        while t.step(((schedule >> (i % 32)) & 1) as usize) {
            i += 1;
        }
        let mut core = router
            .join()
            .unwrap()
            .map_err(|_| "router invariant".to_string())?;
        let drained_tx = writer.join().unwrap();
        // quiesce: the writer writes what is left, the router handles every Drained
        if write_all(&c, &outbox) {
            drained_tx.send(()).unwrap();
        }
        drop(drained_tx);
        for () in drained_rx {
            core.on_drained(&c);
        }
        if c.queued() != 0 {
            return Err(format!("{} bytes still counted", c.queued()));
        }
        if !core.writable {
            return Err(format!(
                "lost wake-up: queue empty, core not writable ({core:?})"
            ));
        }
        if core.drained != core.reports {
            return Err(format!("Drained per report: {core:?}"));
        }
        Ok(())
    }

    /// Every interleaving (2^10 schedules cover the up to 10 steps) of each start.
    fn every_interleaving(queued: usize, marked: bool, pushes: &'static [usize]) {
        let mut failures = Vec::new();
        for schedule in 0..1u32 << 10 {
            if let Err(e) = round(queued, marked, pushes, schedule) {
                failures.push(format!("schedule {schedule:#012b}: {e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of 1024 schedules failed, first: {}",
            failures.len(),
            failures[0]
        );
    }

    #[test]
    fn every_interleaving_of_one_big_packet_and_a_drain() {
        // the race of the module comment: the writer may write the packet that made the
        // connection congested before the router sets the mark
        every_interleaving(0, false, &[HIGH + 1]);
    }

    #[test]
    fn every_interleaving_of_crossing_high_water_and_a_drain() {
        every_interleaving(HIGH, false, &[1, 1]);
    }

    #[test]
    fn every_interleaving_of_a_congested_drain_and_a_remark() {
        // the writer clears the mark while the router marks again: one Drained per report,
        // and a stale Drained does not make it writable
        every_interleaving(HIGH + 1, true, &[HIGH + 1]);
    }

    /// The same guarantees with two free-running threads (many rounds, random sizes,
    /// yields at the hook points to widen the races).
    #[test]
    fn free_running_router_and_writer_never_lose_a_wakeup() {
        for round in 0..30u64 {
            let c = Arc::new(Congestion::default());
            let outbox = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (drained_tx, drained_rx) = mpsc::channel();
            let writer = {
                let (c, outbox, stop) = (c.clone(), outbox.clone(), stop.clone());
                let drained_tx = drained_tx.clone();
                std::thread::spawn(move || {
                    hook::set(|_| std::thread::yield_now());
                    while !stop.load(SeqCst) {
                        if write_all(&c, &outbox) {
                            drained_tx.send(()).unwrap();
                        }
                    }
                })
            };
            hook::set(|_| std::thread::yield_now());
            let mut core = Core::new(true);
            let mut seed = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for _ in 0..300 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                core.push(&c, &outbox, 1 + (seed % 80) as usize);
                while let Ok(()) = drained_rx.try_recv() {
                    core.on_drained(&c);
                }
            }
            stop.store(true, SeqCst);
            writer.join().unwrap();
            hook::set(|_| {});
            if write_all(&c, &outbox) {
                drained_tx.send(()).unwrap();
            }
            drop(drained_tx);
            for () in drained_rx {
                core.on_drained(&c);
            }
            assert_eq!(c.queued(), 0);
            assert!(core.writable, "round {round}: lost wake-up {core:?}");
            assert_eq!(core.drained, core.reports, "round {round}");
        }
    }
}
