//! Lists of blocked contexts, and the register / re-check / park protocol
//! that every blocking channel operation follows.
//!
//! A [`Waiters`] list holds one entry per blocked operation: the operation's
//! id (an address on the waiter's stack, unique while it waits) and the
//! [`Unparker`] of its context. A notifier removes an entry and unparks it;
//! the removal *is* the per-entry "notified" flag: a waiter that finds its
//! entry gone when it deregisters knows it was chosen.
//!
//! # Lost wake-ups
//! The race to avoid is: the waiter sees the channel empty, a sender pushes
//! and sees no waiter, the waiter registers and parks forever. Both sides
//! follow the store-then-load (Dekker) pattern on two locations:
//!
//! - the waiter stores `nonempty = true` (SeqCst, inside the list lock) and
//!   then re-checks the channel (SeqCst loads of its indices / flags);
//! - the notifier publishes (SeqCst read-modify-write of the channel's
//!   index, or SeqCst store of its disconnected flag) and then loads
//!   `nonempty` (SeqCst).
//!
//! All four accesses are in the single SeqCst order, so at least one side
//! sees the other's store: either the waiter's re-check sees the value (and
//! it does not park) or the notifier sees the flag (and takes the lock,
//! where it finds the entry, because the entry was pushed before the flag was
//! stored under the same lock). On x86-64 the SeqCst load is a plain `mov`
//! and the read-modify-write is the `lock`-prefixed instruction the queue
//! needs anyway, so the fast path pays nothing for this.
//!
//! # Forwarding
//! A notified waiter owes the channel one attempt. If it leaves without
//! taking a value (timeout, a `select!` that took another arm, a kill that
//! unwinds out of `park`), it passes the notification on with
//! [`Waiters::notify_one`], so another waiter is not left parked beside a
//! queued value.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::park::{self, Unparker};
use crate::preempt;

/// A test-and-test-and-set spin lock whose critical section also disables
/// preemption, so that no other actor of the same OS thread can run (and
/// spin on it) while it is held. Sections under it are a few instructions
/// long and never park.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through `lock`, which gives one context
// at a time exclusive access; T moves between threads, hence T: Send.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: owning the lock owns the T.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(data: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            data: UnsafeCell::new(data),
        }
    }

    /// Runs `f` with exclusive access to the data, preemption disabled.
    #[inline]
    pub(crate) fn lock<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _np = preempt::disable();
        let mut spins = 0u32;
        // Acquire pairs with the Release store of the previous holder's
        // unlock, so its writes to the data are visible.
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    // The holder's OS thread may be descheduled.
                    std::thread::yield_now();
                }
            }
        }
        struct Unlock<'a>(&'a AtomicBool);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                // Release pairs with the next holder's Acquire.
                self.0.store(false, Ordering::Release);
            }
        }
        let _unlock = Unlock(&self.locked);
        // SAFETY: the lock is held until `_unlock` drops, after `f` returns
        // (or unwinds), so this is the only reference to the data.
        f(unsafe { &mut *self.data.get() })
    }
}

struct Entry {
    id: usize,
    unparker: Unparker,
}

/// A FIFO of entries whose oldest one is kept inline: the common case (one
/// blocked receiver, one blocked sender) never allocates, and a channel
/// that never has two waiters at once never allocates for waiting.
/// Invariant: `head` is `None` only when `rest` is empty.
#[derive(Default)]
struct WaitList {
    head: Option<Entry>,
    rest: VecDeque<Entry>,
}

impl WaitList {
    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn push_back(&mut self, e: Entry) {
        if self.head.is_none() {
            self.head = Some(e);
        } else {
            self.rest.push_back(e);
        }
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let h = self.head.take();
        self.head = self.rest.pop_front();
        h
    }

    /// Removes the entry `id`; true if it was there.
    fn remove(&mut self, id: usize) -> bool {
        if self.head.as_ref().is_some_and(|h| h.id == id) {
            self.head = self.rest.pop_front();
            return true;
        }
        match self.rest.iter().position(|x| x.id == id) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.head.iter().chain(self.rest.iter())
    }

    fn take(&mut self) -> impl Iterator<Item = Entry> {
        let head = self.head.take();
        head.into_iter().chain(std::mem::take(&mut self.rest))
    }
}

/// A FIFO list of blocked operations with a lock-free "anyone here?" flag.
pub(crate) struct Waiters {
    /// `!entries.is_empty()`, stored under the lock with SeqCst (see the
    /// module docs for the pairing), read without the lock by notifiers.
    nonempty: AtomicBool,
    entries: SpinLock<WaitList>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Waiters {
            nonempty: AtomicBool::new(false),
            entries: SpinLock::new(WaitList {
                head: None,
                rest: VecDeque::new(),
            }),
        }
    }

    /// Adds an entry. The SeqCst store of `nonempty` pairs with the SeqCst
    /// load in the notify functions (module docs).
    pub(crate) fn register(&self, id: usize, unparker: Unparker) {
        self.entries.lock(|e| {
            debug_assert!(
                !e.iter()
                    .any(|x| x.id == id && x.unparker.same_context(&unparker)),
                "one operation registered twice in one waiter list"
            );
            e.push_back(Entry { id, unparker });
            self.nonempty.store(true, Ordering::SeqCst);
        });
    }

    /// Removes the entry `id`. Returns true if it was still there, false if
    /// a notifier removed it (the waiter was notified).
    pub(crate) fn unregister(&self, id: usize) -> bool {
        self.entries.lock(|e| {
            let found = e.remove(id);
            self.nonempty.store(!e.is_empty(), Ordering::SeqCst);
            found
        })
    }

    /// True when someone may be waiting. SeqCst: the load half of the
    /// pattern in the module docs.
    #[inline]
    pub(crate) fn may_have_waiters(&self) -> bool {
        self.nonempty.load(Ordering::SeqCst)
    }

    /// Wakes the oldest waiter, if any.
    #[inline]
    pub(crate) fn notify_one(&self) {
        if self.may_have_waiters() {
            self.notify_one_slow();
        }
    }

    #[cold]
    fn notify_one_slow(&self) {
        let woken = self.entries.lock(|e| {
            let w = e.pop_front();
            self.nonempty.store(!e.is_empty(), Ordering::SeqCst);
            w
        });
        // Unpark outside the lock: keeps the section short and the lock
        // order trivial (no scheduler lock is taken under a channel lock).
        if let Some(w) = woken {
            w.unparker.unpark_owned();
        }
    }

    /// Wakes up to `n` waiters, taking the lock once per four of them.
    #[inline]
    pub(crate) fn notify_n(&self, mut n: usize) {
        while n > 0 && self.may_have_waiters() {
            let mut batch: [Option<Unparker>; 4] = [None, None, None, None];
            self.entries.lock(|e| {
                for slot in batch.iter_mut().take(n) {
                    match e.pop_front() {
                        Some(w) => *slot = Some(w.unparker),
                        None => break,
                    }
                }
                self.nonempty.store(!e.is_empty(), Ordering::SeqCst);
            });
            for u in batch.into_iter().flatten() {
                u.unpark_owned();
                n -= 1;
            }
            if n > 0 && !self.may_have_waiters() {
                break;
            }
        }
    }

    /// Wakes every waiter (used on disconnection).
    pub(crate) fn notify_all(&self) {
        if !self.may_have_waiters() {
            return;
        }
        let all: Vec<Entry> = self.entries.lock(|e| {
            self.nonempty.store(false, Ordering::SeqCst);
            e.take().collect()
        });
        for w in all {
            w.unparker.unpark_owned();
        }
    }
}

/// A registration that removes itself if `park` unwinds (actor killed) and
/// forwards a notification it received but will not use.
pub(crate) struct Registration<'a> {
    waiters: &'a Waiters,
    id: usize,
    armed: bool,
}

impl<'a> Registration<'a> {
    pub(crate) fn new(waiters: &'a Waiters, id: usize, unparker: Unparker) -> Self {
        waiters.register(id, unparker);
        Registration {
            waiters,
            id,
            armed: true,
        }
    }

    /// Deregisters; returns true if this waiter had been notified.
    pub(crate) fn finish(mut self) -> bool {
        self.armed = false;
        !self.waiters.unregister(self.id)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.armed && !self.waiters.unregister(self.id) {
            self.waiters.notify_one();
        }
    }
}

/// An id for a blocked operation: the address of a local of the waiting
/// frame, unique among live waiters.
#[inline]
pub(crate) fn op_id(local: &u8) -> usize {
    local as *const u8 as usize
}

/// Parks until `deadline` (or without one). Returns false when the deadline
/// has passed before the call.
#[inline]
pub(crate) fn park_or_timeout(deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            park::park();
            true
        }
        Some(d) => {
            if Instant::now() >= d {
                return false;
            }
            park::park_until(d);
            true
        }
    }
}

/// The blocking loop shared by the array and list flavours.
///
/// `attempt` returns `Some` when the operation is complete (done or
/// disconnected) and `None` when it must wait. Returns `None` on timeout.
/// Protocol: attempt; once, if other actors are ready on this worker, yield
/// to them and attempt again (`scheduler::yield_before_blocking`); register;
/// attempt again (the re-check that closes the lost wake-up race); park;
/// deregister; repeat. A notification received and not used is forwarded.
pub(crate) fn block_on<R>(
    waiters: &Waiters,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Option<R>,
) -> Option<R> {
    let mut owed = false;
    let marker = 0u8;
    let id = op_id(&marker);
    let mut unparker: Option<Unparker> = None;
    let mut parked = false;
    let mut yielded = false;
    loop {
        if let Some(r) = attempt() {
            return Some(r);
        }
        // Before the first registration, let the actors ready on this
        // worker run once: they may complete the operation, which then
        // costs no registration and no wake-up.
        if !yielded {
            yielded = true;
            if crate::scheduler::yield_before_blocking() {
                continue;
            }
        }
        // The deadline was computed from the clock just before the first
        // attempt, so it is only re-read after a park (a zero timeout
        // still times out: its timer is due at once).
        if let (Some(d), true) = (deadline, parked) {
            if Instant::now() >= d {
                if owed {
                    waiters.notify_one();
                }
                return None;
            }
        }
        let u = unparker.get_or_insert_with(park::current).clone();
        let reg = Registration::new(waiters, id, u);
        if let Some(r) = attempt() {
            // A notification that arrived since registering is used by
            // this very attempt.
            let _ = reg.finish();
            return Some(r);
        }
        // Unwinds with `Killed` in a killed actor: `reg` forwards then.
        // No clock read here: a deadline already past makes `park_until`
        // return at once (thread) or fire at the next timer check (actor),
        // and the check above then reports the timeout.
        match deadline {
            None => park::park(),
            Some(d) => {
                park::park_until(d);
            }
        }
        parked = true;
        owed = reg.finish();
    }
}
