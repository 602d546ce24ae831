//! Run queues: one bounded local queue per scheduler thread, and one global
//! injector per runtime.
//!
//! # The local queue
//! A ring of [`LOCAL_CAP`] slots with two counters, in the manner of Go's
//! per-P `runq` and tokio's local queue:
//! - `tail` is written only by the owner (push); slots are written only by
//!   the owner, at `tail`, and only while `tail - head < LOCAL_CAP`;
//! - `head` is advanced by CAS, by the owner (pop) or by a thief (steal half).
//!
//! The owner's push is a plain store and a `Release` store of `tail`: no
//! read-modify-write, no lock. Its pop is one uncontended CAS on `head`.
//! A thief reads a batch of slots, then claims them with a CAS of `head`
//! from the value it read; if the CAS fails it retries, so a slot is handed
//! out once. The owner cannot overwrite a slot the thief read before the CAS
//! succeeds: it only writes the slot at `tail`, and only while
//! `tail - head < LOCAL_CAP`, so never a slot in `[head, tail)` for the
//! `head` the thief's CAS validates.
//!
//! Orderings: the owner's `tail.store(Release)` pairs with the thief's
//! `tail.load(Acquire)` (the slot contents are visible); successful `head`
//! CASes are `AcqRel` so the slot reads happen-before the owner may reuse
//! the slots (the owner's `head.load(Acquire)` in push).
//!
//! When the ring is full, the owner moves half of it to the injector in one
//! locked operation (so a burst of spawns costs one lock per
//! `LOCAL_CAP / 2` actors).
//!
//! # The injector
//! A ring of cell pointers behind a mutex, with an atomic length so that
//! empty checks take no lock. Used for actors spawned or woken from outside
//! the runtime's threads, and for local-queue overflow.

use std::collections::VecDeque;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::cell::ActorCell;

/// Slots per local queue.
pub const LOCAL_CAP: usize = 256;
const MASK: u32 = LOCAL_CAP as u32 - 1;

type Task = *const ActorCell;

/// A scheduler thread's local queue. `push`/`pop` are "executed only by the
/// owner thread"; `steal_into` by any other thread of the runtime.
#[repr(align(128))]
pub(crate) struct LocalQueue {
    head: AtomicU32,
    _pad: [u8; 60],
    tail: AtomicU32,
    /// A fixed-size ring: indices masked with [`MASK`] need no bounds check.
    buf: Box<[AtomicPtr<ActorCell>; LOCAL_CAP]>,
    /// False on a one-thread runtime: nobody steals, so the owner's pop
    /// needs no CAS.
    stealable: bool,
}

impl LocalQueue {
    pub(crate) fn new(stealable: bool) -> Self {
        LocalQueue {
            stealable,
            head: AtomicU32::new(0),
            _pad: [0; 60],
            tail: AtomicU32::new(0),
            buf: Box::new([const { AtomicPtr::new(ptr::null_mut()) }; LOCAL_CAP]),
        }
    }

    /// Number of queued tasks (approximate when read by a non-owner).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let t = self.tail.load(Ordering::Acquire);
        let h = self.head.load(Ordering::Acquire);
        t.wrapping_sub(h) as usize
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes at the back. Owner only. On overflow, moves half the queue
    /// plus `task` to `inj`.
    #[inline]
    pub(crate) fn push(&self, task: Task, inj: &Injector) {
        loop {
            let h = self.head.load(Ordering::Acquire);
            let t = self.tail.load(Ordering::Relaxed);
            if t.wrapping_sub(h) < LOCAL_CAP as u32 {
                self.buf[(t & MASK) as usize].store(task as *mut _, Ordering::Relaxed);
                self.tail.store(t.wrapping_add(1), Ordering::Release);
                return;
            }
            if self.overflow(h, t, task, inj) {
                return;
            }
        }
    }

    #[cold]
    fn overflow(&self, h: u32, t: u32, task: Task, inj: &Injector) -> bool {
        let n = (LOCAL_CAP / 2) as u32;
        debug_assert_eq!(t.wrapping_sub(h), LOCAL_CAP as u32);
        if self
            .head
            .compare_exchange(h, h.wrapping_add(n), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false; // a thief made room; retry the push
        }
        // The CAS took slots h..h+n out of every thief's range, and only the
        // owner (this thread, busy here) writes slots: they still hold the
        // tasks, read straight into the injector (no staging copy).
        inj.push_batch(
            (0..n)
                .map(|i| {
                    self.buf[(h.wrapping_add(i) & MASK) as usize].load(Ordering::Relaxed) as Task
                })
                .chain(std::iter::once(task)),
        );
        true
    }

    /// Pushes the tasks of `parts`, which fit: at most `LOCAL_CAP -
    /// self.len()` of them (the caller checked). Owner only. One `tail`
    /// store for the whole batch.
    fn push_fitting(&self, parts: [&[SendTask]; 2]) {
        let t = self.tail.load(Ordering::Relaxed);
        let mut n = 0u32;
        for part in parts {
            debug_assert!(self.len() + n as usize + part.len() <= LOCAL_CAP);
            for task in part {
                self.buf[(t.wrapping_add(n) & MASK) as usize]
                    .store(task.0 as *mut _, Ordering::Relaxed);
                n += 1;
            }
        }
        // Release: a thief that sees the new tail sees the slots.
        self.tail.store(t.wrapping_add(n), Ordering::Release);
    }

    /// Pops from the front. Owner only.
    #[inline]
    pub(crate) fn pop(&self) -> Option<Task> {
        if !self.stealable {
            // Only the owner touches `head`: a plain read-then-write.
            let h = self.head.load(Ordering::Relaxed);
            if h == self.tail.load(Ordering::Relaxed) {
                return None;
            }
            let task = self.buf[(h & MASK) as usize].load(Ordering::Relaxed);
            self.head.store(h.wrapping_add(1), Ordering::Release);
            self.prefetch_after(h);
            return Some(task);
        }
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            let t = self.tail.load(Ordering::Relaxed);
            if h == t {
                return None;
            }
            let task = self.buf[(h & MASK) as usize].load(Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                h,
                h.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.prefetch_after(h);
                    return Some(task);
                }
                Err(x) => h = x,
            }
        }
    }

    /// Starts loading the cell queued after position `h` into the cache:
    /// the actor that will probably run next is usually cold (spawned or
    /// woken long ago), and its first touch otherwise stalls the switch.
    /// Its first three lines: what every step touches, what sleeping,
    /// joining and queueing touch, and the start of the payload (the
    /// closure a first run moves out of it; see `ActorCell`).
    #[inline(always)]
    fn prefetch_after(&self, h: u32) {
        let next = self.buf[(h.wrapping_add(1) & MASK) as usize].load(Ordering::Relaxed);
        // SAFETY-free: a prefetch never faults, whatever the address (the
        // slot may be stale); it only hints the cache.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` has no memory-safety preconditions.
        unsafe {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(next.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(next.cast::<i8>().wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(next.cast::<i8>().wrapping_add(128));
        }
    }

    /// `(head, tail)` as another thread sees them at one moment (each is
    /// exact when read; the pair is approximate).
    #[inline]
    pub(crate) fn bounds(&self) -> (u32, u32) {
        let h = self.head.load(Ordering::Acquire);
        (h, self.tail.load(Ordering::Acquire))
    }

    /// Steals about half of `self` into `dst` (the caller's own queue, which
    /// must be empty), returning one stolen task to run at once.
    pub(crate) fn steal_into(&self, dst: &LocalQueue) -> Option<Task> {
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            let t = self.tail.load(Ordering::Acquire);
            let avail = t.wrapping_sub(h);
            if avail == 0 || avail > LOCAL_CAP as u32 {
                if avail == 0 {
                    return None;
                }
                // Torn read (head moved past our tail read): reload.
                h = self.head.load(Ordering::Acquire);
                continue;
            }
            let n = avail - avail / 2;
            let dt = dst.tail.load(Ordering::Relaxed);
            // Copy into dst's free slots first (dst is ours and empty).
            for i in 0..n {
                let v = self.buf[(h.wrapping_add(i) & MASK) as usize].load(Ordering::Relaxed);
                dst.buf[(dt.wrapping_add(i) & MASK) as usize].store(v, Ordering::Relaxed);
            }
            match self.head.compare_exchange(
                h,
                h.wrapping_add(n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Keep the last one to run now; publish the rest.
                    let last =
                        dst.buf[(dt.wrapping_add(n - 1) & MASK) as usize].load(Ordering::Relaxed);
                    if n > 1 {
                        dst.tail.store(dt.wrapping_add(n - 1), Ordering::Release);
                    }
                    return Some(last);
                }
                Err(x) => h = x,
            }
        }
    }
}

/// The runtime's global queue. Any thread may push or pop.
///
/// A ring of cell pointers behind a mutex (its storage grows to the largest
/// backlog seen and is then reused: no allocation in steady state). Moving
/// actors in and out never touches their cells, which matters when a burst
/// of spawns overflows a local queue with thousands of cold cells.
pub(crate) struct Injector {
    len: AtomicUsize,
    queue: Mutex<VecDeque<SendTask>>,
}

pub(crate) struct SendTask(pub(crate) Task);
// SAFETY: queued cells are Sync; the pointer is only a handle.
unsafe impl Send for SendTask {}

impl Injector {
    pub(crate) fn new() -> Self {
        Injector {
            len: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Queued actors (a snapshot).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn push_batch(&self, tasks: impl Iterator<Item = Task>) {
        let _np = crate::preempt::disable();
        let mut q = crate::global_lock::lock(&self.queue);
        let before = q.len();
        q.extend(tasks.map(SendTask));
        self.len.fetch_add(q.len() - before, Ordering::Release);
    }

    /// Pops up to `max` tasks: returns the first and pushes the rest into
    /// `dst` (the caller's own queue) when given.
    pub(crate) fn pop_batch(&self, max: usize, dst: Option<&LocalQueue>) -> Option<Task> {
        if self.is_empty() {
            return None;
        }
        let _np = crate::preempt::disable();
        let mut q = crate::global_lock::lock(&self.queue);
        let first = q.pop_front()?.0;
        let mut taken = 1;
        if let Some(lq) = dst {
            // Never overflow `lq` (its overflow would re-enter this lock).
            let more = (max.min(LOCAL_CAP - lq.len() + 1) - 1).min(q.len());
            let (a, b) = q.as_slices();
            let from_a = more.min(a.len());
            lq.push_fitting([&a[..from_a], &b[..more - from_a]]);
            // Plain pointers: dropping the drain only moves the ring's head.
            q.drain(..more);
            taken += more;
        }
        self.len.fetch_sub(taken, Ordering::Release);
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    //! The local queue and the injector against a `VecDeque` model: random
    //! pushes (past capacity, so overflow into the injector happens), pops
    //! and steals; every task comes out exactly once, in FIFO order per
    //! source.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashSet, VecDeque};

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        Pop(u8),
        Steal,
        PopInjector(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..=64).prop_map(Op::Push),
            3 => (1u8..=64).prop_map(Op::Pop),
            1 => Just(Op::Steal),
            1 => (1u8..=40).prop_map(Op::PopInjector),
        ]
    }

    /// Fake task pointers: distinct, never dereferenced by the queues.
    fn task(n: usize) -> Task {
        (0x1000 + n * 64) as Task
    }

    proptest! {
        #[test]
        fn queues_match_model(ops in proptest::collection::vec(op(), 1..200)) {
            for stealable in [false, true] {
                let q = LocalQueue::new(stealable);
                let thief = LocalQueue::new(true);
                let inj = Injector::new();
                let mut next = 0usize;
                let mut pushed = HashSet::new();
                let mut seen = HashSet::new();
                // Model of `q` alone (overflow moves its oldest half out).
                let mut model: VecDeque<Task> = VecDeque::new();
                let take = |t: Task, seen: &mut HashSet<usize>| {
                    assert!(seen.insert(t as usize), "task {t:?} delivered twice");
                };
                for op in &ops {
                    match *op {
                        Op::Push(n) => for _ in 0..n {
                            let t = task(next);
                            next += 1;
                            pushed.insert(t as usize);
                            if model.len() == LOCAL_CAP {
                                // Half plus the new task go to the injector.
                                for _ in 0..LOCAL_CAP / 2 { model.pop_front(); }
                                q.push(t, &inj);
                            } else {
                                q.push(t, &inj);
                                model.push_back(t);
                            }
                            prop_assert_eq!(q.len(), model.len());
                        },
                        Op::Pop(n) => for _ in 0..n {
                            let got = q.pop();
                            prop_assert_eq!(got, model.pop_front());
                            if let Some(t) = got { take(t, &mut seen); }
                        },
                        Op::Steal if stealable => {
                            let before = model.len();
                            if let Some(t) = q.steal_into(&thief) {
                                let n = before - before / 2;
                                prop_assert_eq!(q.len(), before - n);
                                // The thief took the oldest `n`, in order.
                                let stolen: Vec<Task> = model.drain(..n).collect();
                                prop_assert_eq!(t, *stolen.last().unwrap());
                                take(t, &mut seen);
                                for s in &stolen[..n - 1] {
                                    prop_assert_eq!(thief.pop(), Some(*s));
                                    take(*s, &mut seen);
                                }
                                prop_assert_eq!(thief.pop(), None);
                            } else {
                                prop_assert_eq!(before, 0);
                            }
                        }
                        Op::Steal => {}
                        Op::PopInjector(n) => {
                            if let Some(t) = inj.pop_batch(n as usize, None) {
                                take(t, &mut seen);
                            }
                        }
                    }
                }
                // Drain everything: all tasks delivered exactly once.
                while let Some(t) = q.pop() { take(t, &mut seen); }
                while let Some(t) = inj.pop_batch(1, None) { take(t, &mut seen); }
                prop_assert_eq!(&seen, &pushed);
            }
        }
    }
}
