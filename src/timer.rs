//! Timers: one 4-ary min-heap per scheduler thread.
//!
//! Every timed wait of an actor (`sleep`, `sleep_until`, `recv_timeout`,
//! `send_timeout`, `select!` with `default(timeout)`, IO timeouts) is the
//! same thing: the actor parks with a deadline (`park::park_until`). The
//! deadline lives *in the actor's cell* ([`TimerSlot`]); the heap of the
//! scheduler thread that armed it holds a pointer to the cell (and a
//! reference). Arming is a push and sift-up, cancelling a removal at the
//! position the cell records: O(log n), no allocation once the heap's
//! vector has grown, and nothing is left behind by a cancelled timer.
//!
//! Why a heap and not a hierarchical wheel: an actor has at most one pending
//! timer, waits usually end by cancellation (a message came), and the heap
//! is per thread, so it stays small and in cache; a 4-ary heap (as Go's per-P
//! timers) halves the depth of a binary one. A wheel would make insert O(1)
//! but needs cascading and a tick, and its advantage appears only with far
//! more pending timers per thread than our benches and tests show.
//!
//! Each heap is behind its own mutex: the owner thread takes it to arm,
//! cancel and fire; another thread takes it only to cancel a timer that an
//! actor armed before it migrated, or when it is idle and fires expired
//! timers of a busy thread (so no timer is stranded behind a long-running
//! actor). The lock is therefore uncontended in the common case, and no lock
//! is global. The heap's earliest deadline is published in an atomic
//! (`next_deadline`) so that idle threads can compute how long to sleep
//! without taking any lock.
//!
//! Times are nanoseconds since the runtime's epoch (an `Instant`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cell::ActorCell;

/// "No deadline."
pub(crate) const NEVER: u64 = u64::MAX;
const ARITY: usize = 4;

/// A heap entry: the deadline is kept next to the cell pointer, so that
/// sifting compares within the heap's own (contiguous, cache-resident)
/// array instead of chasing each cell.
#[derive(Clone, Copy)]
struct Entry {
    deadline: u64,
    cell: *const ActorCell,
}

pub(crate) struct TimerHeap {
    entries: Vec<Entry>,
}

// SAFETY: the heap holds references to cells (which are Sync) and is only
// used under its mutex.
unsafe impl Send for TimerHeap {}

impl TimerHeap {
    pub(crate) const fn new() -> Self {
        TimerHeap {
            entries: Vec::new(),
        }
    }

    /// Writes `e` at `i` and records the position in its cell.
    ///
    /// # Safety
    /// `i < self.entries.len()`, and the caller holds this heap's lock.
    #[inline(always)]
    unsafe fn put(&mut self, i: usize, e: Entry) {
        // SAFETY: in bounds by the contract.
        unsafe { *self.entries.get_unchecked_mut(i) = e };
        // SAFETY: heap entries are live cells (the heap holds a reference),
        // and their timer slots are guarded by this heap's lock, held.
        unsafe { (*(*e.cell).timer.get()).pos = i };
    }

    /// The deadline of entry `i`.
    ///
    /// # Safety
    /// `i < self.entries.len()`.
    #[inline(always)]
    unsafe fn deadline_at(&self, i: usize) -> u64 {
        // SAFETY: in bounds by the contract.
        unsafe { self.entries.get_unchecked(i).deadline }
    }

    /// Earliest deadline, or NEVER.
    #[inline]
    pub(crate) fn peek(&self) -> u64 {
        self.entries.first().map_or(NEVER, |e| e.deadline)
    }

    /// Inserts `c` (whose `timer.deadline` and `timer.owner` are set); the
    /// heap takes over one reference the caller owns.
    pub(crate) fn push(&mut self, c: *const ActorCell) {
        // SAFETY: the caller set the deadline under this heap's lock.
        let deadline = unsafe { (*(*c).timer.get()).deadline };
        let e = Entry { deadline, cell: c };
        self.entries.push(e);
        // SAFETY: the slot just pushed is in bounds.
        unsafe { self.sift_up(self.entries.len() - 1, e) };
    }

    /// Removes the entry at `pos`; returns the cell (and its reference).
    pub(crate) fn remove(&mut self, pos: usize) -> *const ActorCell {
        let c = self.entries[pos].cell;
        let last = self.entries.pop().expect("non-empty heap");
        if pos < self.entries.len() {
            // SAFETY: `pos` is in bounds of the shortened heap.
            unsafe { self.fill(pos, last) };
        }
        // SAFETY: as in `put`.
        unsafe { (*(*c).timer.get()).owner = 0 };
        c
    }

    /// Pops the earliest entry if it is due at `now`.
    #[inline]
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<*const ActorCell> {
        (self.peek() <= now).then(|| self.remove(0))
    }

    /// Moves `e` up from the hole at `i` to where its parent is no later.
    ///
    /// # Safety
    /// `i < self.entries.len()`.
    #[inline(always)]
    unsafe fn sift_up(&mut self, mut i: usize, e: Entry) {
        while i > 0 {
            let p = (i - 1) / ARITY;
            // SAFETY: a parent index is below `i`, in bounds.
            let pe = unsafe { *self.entries.get_unchecked(p) };
            if pe.deadline <= e.deadline {
                break;
            }
            // SAFETY: `i` is in bounds.
            unsafe { self.put(i, pe) };
            i = p;
        }
        // SAFETY: `i` is in bounds.
        unsafe { self.put(i, e) };
    }

    /// Fills the hole at `i` with `e`: first the hole goes down to a leaf,
    /// the earliest child moving up at each level, then `e` sifts up from
    /// there. The element that fills a hole is the heap's former last one,
    /// which belongs near the bottom, so descending without comparing it
    /// (Floyd's method) saves a comparison per level and the sift-up
    /// usually stops at once. Each child that moves up was in the hole's
    /// subtree, so it is no earlier than the hole's parent: the order above
    /// the hole holds throughout.
    ///
    /// # Safety
    /// `i < self.entries.len()`.
    unsafe fn fill(&mut self, mut i: usize, e: Entry) {
        let n = self.entries.len();
        loop {
            let first = i * ARITY + 1;
            let best = if first + ARITY <= n {
                // SAFETY: the four children are in bounds.
                unsafe {
                    let mut b = first;
                    let mut bd = self.deadline_at(first);
                    for k in 1..ARITY {
                        let kd = self.deadline_at(first + k);
                        if kd < bd {
                            b = first + k;
                            bd = kd;
                        }
                    }
                    b
                }
            } else if first < n {
                let mut b = first;
                for k in first + 1..n {
                    // SAFETY: `k < n` and `b < n`.
                    if unsafe { self.deadline_at(k) < self.deadline_at(b) } {
                        b = k;
                    }
                }
                b
            } else {
                break;
            };
            // SAFETY: `best` and `i` are in bounds.
            unsafe { self.put(i, *self.entries.get_unchecked(best)) };
            i = best;
        }
        // SAFETY: `i` is in bounds (a leaf of the heap).
        unsafe { self.sift_up(i, e) };
    }

    /// Takes every entry out (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<*const ActorCell> {
        std::mem::take(&mut self.entries)
            .into_iter()
            .map(|e| e.cell)
            .collect()
    }
}

/// The published earliest deadline of one heap.
pub(crate) struct NextDeadline(AtomicU64);

impl NextDeadline {
    pub(crate) const fn new() -> Self {
        NextDeadline(AtomicU64::new(NEVER))
    }
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Release)
    }
}

#[cfg(test)]
mod tests {
    //! The timer heap against a sorted-list model: random arms, cancels (by
    //! the position the cell records) and firings of due timers.
    use super::*;
    use crate::cell::{self, TimerSlot};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Arm(u16),
        Cancel(usize),
        Fire(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => any::<u16>().prop_map(|d| Op::Arm(d % 1000)),
            2 => any::<usize>().prop_map(Op::Cancel),
            2 => any::<u16>().prop_map(|n| Op::Fire(n % 1000)),
        ]
    }

    fn slot(c: *const ActorCell) -> &'static mut TimerSlot {
        // SAFETY: test cells are used by this test alone.
        unsafe { &mut *(*c).timer.get() }
    }

    proptest! {
        #[test]
        fn heap_matches_sorted_model(ops in proptest::collection::vec(op(), 1..300)) {
            let mut heap = TimerHeap::new();
            // Model: (deadline, cell) sorted by deadline.
            let mut model: Vec<(u64, *const ActorCell)> = Vec::new();
            for op in ops {
                match op {
                    Op::Arm(d) => {
                        let c: *const ActorCell = cell::alloc_cell();
                        let s = slot(c);
                        s.deadline = d as u64;
                        s.owner = 1;
                        heap.push(c);
                        model.push((d as u64, c));
                        model.sort_by_key(|e| e.0);
                    }
                    Op::Cancel(i) => {
                        if model.is_empty() { continue; }
                        let (_, c) = model.remove(i % model.len());
                        let pos = slot(c).pos;
                        let r = heap.remove(pos);
                        prop_assert_eq!(r, c);
                        prop_assert_eq!(slot(c).owner, 0);
                    }
                    Op::Fire(now) => {
                        let mut fired = Vec::new();
                        while let Some(c) = heap.pop_due(now as u64) {
                            fired.push((slot(c).deadline, c));
                        }
                        // Never early, in deadline order, exactly the due ones.
                        prop_assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0));
                        prop_assert!(fired.iter().all(|e| e.0 <= now as u64));
                        let due: Vec<_> = model.iter().copied().filter(|e| e.0 <= now as u64).collect();
                        model.retain(|e| e.0 > now as u64);
                        let mut a: Vec<usize> = fired.iter().map(|e| e.1 as usize).collect();
                        let mut b: Vec<usize> = due.iter().map(|e| e.1 as usize).collect();
                        a.sort_unstable();
                        b.sort_unstable();
                        prop_assert_eq!(a, b);
                    }
                }
                prop_assert_eq!(heap.peek(), model.first().map_or(NEVER, |e| e.0));
                prop_assert_eq!(heap.entries.len(), model.len());
                // Every cell records its true position.
                for (i, e) in heap.entries.iter().enumerate() {
                    prop_assert_eq!(slot(e.cell).pos, i);
                }
            }
        }
    }
}
