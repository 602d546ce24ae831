//! When a backlog is worth stealing.
//!
//! A worker that runs out of actors looks at the other workers' local
//! queues. Taking actors from a worker that is cycling through short ones
//! costs more than it gains: the actors' cache lines (cells, stacks, the
//! channel slots they share with their partners) move to the thief's core,
//! and every later message between a moved actor and a partner left behind
//! crosses cores. Measured on the two-core machine of BENCHMARKS.md: five
//! producers and one consumer on a bounded channel took 90-110 µs a round
//! on one worker, 130-160 µs on two workers when the cores were close and
//! 400-650 µs when they were not, every hand-off a cache-line transfer
//! between the cores.
//!
//! So a thief *watches* a short backlog before it steals, and steals only
//! if waiting would leave actors queued for long (a queue of
//! [`LONG_BACKLOG`] or more is stolen from at once):
//! - it notes the victim's queue `tail` when it first sees the queue
//!   non-empty;
//! - once the victim's `head` has passed that mark, every actor queued then
//!   has been taken (by the owner, normally): the owner keeps up, and the
//!   watch starts again from the current tail;
//! - if the mark is still ahead after [`PATIENCE_CYCLES`], the backlog is
//!   real: steal (half, as always);
//! - if the victim has made no hand-off at all for [`STALL_CYCLES`] (its
//!   published switch count stood still), one long actor holds it and the
//!   queue behind it waits the whole of that actor's run: steal at once
//!   rather than wait out the patience (a few compute-bound actors queued
//!   behind a long one spread over the workers within microseconds).
//!
//! The watch is the thief's own state; the victim pays one relaxed store of
//! its switch count per hand-off (`WorkerShared::switches`), on a line only
//! thieves read.

/// How long (TSC cycles, ~40 µs at 2.6 GHz) the actors queued on a worker
/// may wait, while that worker keeps switching, before another worker takes
/// some of them.
pub(crate) const PATIENCE_CYCLES: u64 = 100_000;

/// How long (TSC cycles, ~5 µs) a worker may go without a single hand-off
/// before its queue is stolen from regardless of the patience.
pub(crate) const STALL_CYCLES: u64 = 13_000;

/// A queue this long is a backlog worth sharing whatever its owner does (a
/// fan-out, a crowd of independent actors yielding in turn): stolen from at
/// once.
pub(crate) const LONG_BACKLOG: u32 = 16;

/// A thief's view of one victim's queue.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Watch {
    /// The victim's queue tail when the watch began: the backlog then.
    mark: u32,
    /// When the watch began (TSC); 0 = not watching.
    since: u64,
    /// The victim's switch count when last seen, and since when it has stood.
    switches: u32,
    switches_since: u64,
}

impl Watch {
    /// Decides, from one look at a victim (`head`, `tail` of its queue and
    /// its switch count, at TSC `now`), whether to steal from it now.
    pub(crate) fn worth_stealing(&mut self, head: u32, tail: u32, switches: u32, now: u64) -> bool {
        let len = tail.wrapping_sub(head);
        if len == 0 || len > i32::MAX as u32 {
            // Empty (or a torn read: head moved past the tail we read).
            self.since = 0;
            return false;
        }
        if len >= LONG_BACKLOG {
            self.since = 0;
            return true;
        }
        // The head has reached the mark (wrapping compare): everything that
        // was queued when the watch began has been taken.
        if self.since == 0 || head.wrapping_sub(self.mark) as i32 >= 0 {
            *self = Watch {
                mark: tail,
                since: now.max(1),
                switches,
                switches_since: now,
            };
            return false;
        }
        if switches != self.switches {
            self.switches = switches;
            self.switches_since = now;
        }
        let steal = now.wrapping_sub(self.since) >= PATIENCE_CYCLES
            || now.wrapping_sub(self.switches_since) >= STALL_CYCLES;
        if steal {
            self.since = 0;
        }
        steal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    #[test]
    fn an_empty_queue_is_never_stolen_from() {
        let mut w = Watch::default();
        assert!(!w.worth_stealing(5, 5, 0, T0));
        assert!(!w.worth_stealing(5, 5, 0, T0 + 10 * PATIENCE_CYCLES));
    }

    #[test]
    fn a_long_queue_is_stolen_from_at_once() {
        let mut w = Watch::default();
        assert!(w.worth_stealing(100, 100 + LONG_BACKLOG, 0, T0));
        assert!(!w.worth_stealing(100, 100 + LONG_BACKLOG - 1, 0, T0));
    }

    #[test]
    fn a_torn_read_is_not_a_backlog() {
        let mut w = Watch::default();
        // head read after the owner popped past the tail we read.
        assert!(!w.worth_stealing(10, 8, 0, T0));
    }

    #[test]
    fn a_backlog_first_seen_is_watched_not_stolen() {
        let mut w = Watch::default();
        assert!(!w.worth_stealing(0, 8, 0, T0));
    }

    #[test]
    fn an_owner_that_keeps_up_is_left_alone() {
        let mut w = Watch::default();
        let mut now = T0;
        let (mut head, mut tail, mut switches) = (0u32, 4u32, 0u32);
        // The owner takes its backlog within the patience again and again,
        // while new actors keep arriving: never a steal, however long.
        for _ in 0..1000 {
            assert!(!w.worth_stealing(head, tail, switches, now));
            now += PATIENCE_CYCLES / 3;
            head += 4;
            tail += 4;
            switches += 10;
        }
    }

    #[test]
    fn a_backlog_older_than_the_patience_is_stolen() {
        let mut w = Watch::default();
        let (head, tail) = (10u32, 20u32);
        assert!(!w.worth_stealing(head, tail, 0, T0));
        // The owner switches often (hand-offs that do not touch its queue)
        // but does not get through the backlog.
        let mut now = T0;
        let mut k = 1;
        while now + STALL_CYCLES / 2 < T0 + PATIENCE_CYCLES {
            now += STALL_CYCLES / 2;
            assert!(!w.worth_stealing(head + k / 4, tail, k, now));
            k += 1;
        }
        assert!(w.worth_stealing(head + k / 4, tail, k, T0 + PATIENCE_CYCLES));
        // A steal ends the watch: the next look starts a new one.
        assert!(!w.worth_stealing(head + k / 4, tail, k, T0 + PATIENCE_CYCLES + 1));
    }

    #[test]
    fn a_stalled_owner_is_stolen_from_before_the_patience() {
        let mut w = Watch::default();
        assert!(!w.worth_stealing(0, 3, 7, T0));
        assert!(!w.worth_stealing(0, 3, 7, T0 + STALL_CYCLES - 1));
        assert!(w.worth_stealing(0, 3, 7, T0 + STALL_CYCLES));
    }

    #[test]
    fn switching_resets_the_stall_clock() {
        let mut w = Watch::default();
        assert!(!w.worth_stealing(0, 10, 1, T0));
        assert!(!w.worth_stealing(0, 10, 2, T0 + STALL_CYCLES - 1));
        assert!(!w.worth_stealing(0, 10, 2, T0 + 2 * STALL_CYCLES - 2));
        assert!(w.worth_stealing(0, 10, 2, T0 + 2 * STALL_CYCLES - 1));
    }

    #[test]
    fn queue_indices_that_wrap_are_compared_correctly() {
        let mut w = Watch::default();
        let head = u32::MAX - 2;
        let tail = head.wrapping_add(6);
        assert!(!w.worth_stealing(head, tail, 0, T0));
        // The owner passed the mark across the wrap: it keeps up.
        let head2 = tail.wrapping_add(1);
        assert!(!w.worth_stealing(head2, head2.wrapping_add(2), 50, T0 + STALL_CYCLES));
        // The watch restarted at that look: not stalled yet.
        assert!(!w.worth_stealing(head2, head2.wrapping_add(2), 50, T0 + 2 * STALL_CYCLES - 1));
    }
}
