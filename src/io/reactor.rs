//! The reactor: one epoll instance per runtime, driven by idle workers.
//!
//! # Pieces
//! - [`Reactor`]: the epoll descriptor, an eventfd to interrupt a blocked
//!   `epoll_wait`, the *driver slot*, and a slab of registrations;
//! - [`IoEntry`]: one registered descriptor: its readiness word and the
//!   actors waiting to read and to write.
//!
//! # Registration lifecycle
//! A descriptor is added once (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`)
//! with a token `slot index | generation << 32` as its epoll data, and the
//! slab slot holds an `Arc<IoEntry>`. The owner (a net object's `Source`, or
//! a raw-descriptor wait in `io::wait_*`) deregisters it before the
//! descriptor is closed: the entry is marked `CLOSED` (waiters are woken and
//! get `EBADF`), the descriptor is deleted from epoll, and the slot is freed
//! with its generation bumped. An event already taken out of the kernel for
//! the old registration then finds a different generation (or an empty
//! slot) and is dropped; an event that still finds the entry only sets
//! bits on an entry nobody waits on. Because entries are reference counted,
//! no event ever touches freed memory, and because the descriptor is
//! deleted before it is closed, a reused descriptor number never receives
//! the old registration's events.
//!
//! # Readiness and the edge-triggered race
//! `readiness` holds `READ`, `WRITE` and `CLOSED` bits and, above them, a
//! tick counted up by every event. A new entry starts as readable and
//! writable (the operation is simply tried). An operation that fails with
//! `WouldBlock` clears its bit only if the word (tick included) is still
//! what it read before trying: an event that arrived in between bumped the
//! tick, so the bit stays set and the operation is retried. Edge-triggered
//! events are therefore never lost, and nobody re-arms anything.
//!
//! On stream sockets a read or write that moves fewer bytes than asked also
//! clears its bit the same way (`Source::io_stream`): the kernel copies all
//! it has, and later data or space comes with a new edge. The exception is
//! a direction's end: an end of stream that arrived while a short read
//! copied the last data is reported only by the next read, with no new
//! edge, so `READ_FINAL` / `WRITE_FINAL` (set by `EPOLLRDHUP`, `EPOLLHUP`,
//! `EPOLLERR`) keep their bit set for good.
//!
//! # Waiting
//! A waiter takes the entry's lock, checks the bit, and if it is clear
//! pushes `(id, Unparker)` on the read or write list, then parks. The
//! dispatcher sets the bits *before* taking the same lock to drain the
//! lists, so either the waiter sees the bit or the dispatcher sees the
//! waiter. A waiter that is killed (its `park` unwinds) or times out
//! removes itself in a drop guard. Every waiter of the ready direction is
//! woken (two actors reading one socket both retry; one gets the data).
//!
//! # Who calls epoll_wait
//! - The *driver*: an idle worker that finds the driver slot free takes it
//!   and blocks in `epoll_wait` (timeout: its sleep, i.e. the earliest timer
//!   deadline of the runtime, capped by the pool-trim period) instead of on
//!   its futex. Other idle workers sleep on their futex as before.
//! - Busy workers: every `GLOBAL_INTERVAL` ticks a worker polls with a zero
//!   timeout if the slot is free and any descriptor is registered, so a
//!   runtime whose workers are all busy still sees IO.
//!
//! Woken actors go to the calling worker's queues (the LIFO slot first), as
//! with timers, without waking other workers one by one: the driver wakes
//! one more worker only for a large batch (`IO_SHARE_BATCH` in the
//! scheduler).
//!
//! # Waking the driver
//! Work that appears while the driver is blocked must interrupt its
//! `epoll_wait`. The driver publishes `blocked = worker + 1` (SeqCst, then
//! a SeqCst fence) and only then re-checks the run queues and deadlines;
//! the scheduler's `unpark_worker` sets the futex token and then reads
//! `blocked` (after the SeqCst fence of `notify_one` or a SeqCst load): as
//! in the futex protocol, either the driver sees the work and the token
//! (its re-check consumes the token: a wake-up aimed at this very worker,
//! which a notifier has already taken out of the idle set and counted as
//! searching) or the waker sees the driver and writes the eventfd. The
//! waker swaps `blocked` to 0 first, so one wake-up costs at most one
//! `write`, and the common wake path (driver not blocked) costs one atomic
//! load.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::epoll::{self, Event};
use super::Interest;
use crate::park::{self, Unparker};
use crate::preempt;

/// The descriptor is readable (or at end of stream, or in error).
pub(crate) const READ: u64 = 1;
/// The descriptor is writable (or in error).
pub(crate) const WRITE: u64 = 2;
/// The registration was removed: waiting on it is an error.
pub(crate) const CLOSED: u64 = 4;
/// The read side reached its end (end of stream, hang-up or error): `READ`
/// is never cleared again.
const READ_FINAL: u64 = 8;
/// The write side reached its end (hang-up or error): `WRITE` is never
/// cleared again.
const WRITE_FINAL: u64 = 16;
/// One event's increment of the tick above the bits.
const TICK: u64 = 1 << 8;
const BITS: u64 = TICK - 1;

/// The eventfd's token (never a slab token: slot index u32::MAX is never used).
const WAKE_TOKEN: u64 = u64::MAX;
/// Events taken out of the kernel per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// The readiness bit an interest waits for.
#[inline]
pub(crate) fn bit(i: Interest) -> u64 {
    match i {
        Interest::Readable => READ,
        Interest::Writable => WRITE,
    }
}

/// Locks `m`, ignoring poisoning (no critical section here can leave the
/// data inconsistent when it panics).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `EBADF`: the registration was removed (its descriptor closed) while waiting.
pub(crate) fn closed_error() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// One registered descriptor.
pub(crate) struct IoEntry {
    /// The registered descriptor.
    fd: RawFd,
    /// Its epoll data: slab index | generation << 32.
    token: u64,
    /// Readiness bits and tick (see the module docs).
    readiness: AtomicU64,
    /// Parked waiters, by direction.
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    read: Vec<(u64, Unparker)>,
    write: Vec<(u64, Unparker)>,
    next_id: u64,
}

impl Waiters {
    fn list(&mut self, b: u64) -> &mut Vec<(u64, Unparker)> {
        if b == READ {
            &mut self.read
        } else {
            &mut self.write
        }
    }
}

impl IoEntry {
    /// A snapshot of the readiness word (to pass to [`IoEntry::clear`]).
    #[inline]
    pub(crate) fn readiness(&self) -> u64 {
        self.readiness.load(Ordering::Acquire)
    }

    /// Clears bit `b` if the word is still `snap` (no event since), unless
    /// that direction has reached its end: an end of stream that arrived
    /// before a read is reported by the *next* read, and no new event will
    /// announce it, so a direction's final state is never cleared.
    #[inline]
    pub(crate) fn clear(&self, b: u64, snap: u64) {
        let fin = if b == READ { READ_FINAL } else { WRITE_FINAL };
        if snap & fin != 0 {
            return;
        }
        let _ =
            self.readiness
                .compare_exchange(snap, snap & !b, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Records an event (bits `b`) and wakes every waiter of those directions.
    fn dispatch(&self, b: u64) {
        // Release: pairs with the Acquire loads of waiters, so whatever the
        // kernel made visible before reporting the event is seen after.
        let _ = self
            .readiness
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(((w & !BITS).wrapping_add(TICK)) | (w & BITS) | b)
            });
        let _np = preempt::disable();
        let mut w = lock(&self.waiters);
        if b & READ != 0 {
            for (_, u) in w.read.drain(..) {
                u.unpark_owned();
            }
        }
        if b & WRITE != 0 {
            for (_, u) in w.write.drain(..) {
                u.unpark_owned();
            }
        }
    }

    /// Parks the running actor until bit `b` may be set, `deadline` passes,
    /// or a spurious wake-up; returns at once if the bit is set. Callers loop.
    ///
    /// # Errors
    /// `EBADF` when the registration has been removed.
    ///
    /// # Panics
    /// Unwinds with `Killed` when the actor is killed while parked; its
    /// waiter record is removed first.
    pub(crate) fn wait(&self, b: u64, deadline: Option<Instant>) -> io::Result<()> {
        let id = {
            let _np = preempt::disable();
            let mut w = lock(&self.waiters);
            let r = self.readiness.load(Ordering::Acquire);
            if r & CLOSED != 0 {
                return Err(closed_error());
            }
            if r & b != 0 {
                return Ok(());
            }
            let id = w.next_id;
            w.next_id += 1;
            w.list(b).push((id, park::current()));
            id
        };
        let _guard = WaiterGuard { entry: self, b, id };
        match deadline {
            Some(d) => {
                park::park_until(d);
            }
            None => park::park(),
        }
        Ok(())
    }

    /// Marks the entry closed and wakes every waiter.
    fn close(&self) {
        self.readiness.fetch_or(CLOSED, Ordering::AcqRel);
        self.dispatch(READ | WRITE);
    }
}

/// Removes a waiter record when its wait ends (woken, timed out or unwound).
struct WaiterGuard<'a> {
    entry: &'a IoEntry,
    b: u64,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let _np = preempt::disable();
        let mut w = lock(&self.entry.waiters);
        let list = w.list(self.b);
        if let Some(pos) = list.iter().position(|(i, _)| *i == self.id) {
            list.swap_remove(pos);
        }
    }
}

struct Slot {
    generation: u32,
    entry: Option<Arc<IoEntry>>,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

/// Buffers owned by whoever holds the driver slot.
struct DriverBufs {
    events: Vec<Event>,
    ready: Vec<(Arc<IoEntry>, u64)>,
}

/// The epoll reactor of one runtime.
pub(crate) struct Reactor {
    epfd: OwnedFd,
    /// Written to interrupt a driver blocked in `epoll_wait`.
    wakefd: OwnedFd,
    /// The driver slot: whoever holds it may call `epoll_wait` and use `bufs`.
    driver: AtomicBool,
    /// Worker index + 1 of the driver blocked in `epoll_wait`; 0: none.
    blocked: AtomicUsize,
    /// Live registrations (busy workers skip polling while there are none).
    registered: AtomicUsize,
    slab: Mutex<Slab>,
    bufs: UnsafeCell<DriverBufs>,
}

// SAFETY: `bufs` is only touched by the holder of the `driver` flag (taken
// with Acquire, released with Release); every other field is atomic, locked,
// or an immutable descriptor.
unsafe impl Sync for Reactor {}
// SAFETY: as above; the event buffer holds plain data and Arcs.
unsafe impl Send for Reactor {}

impl Reactor {
    /// A new epoll instance with its wake-up eventfd registered.
    ///
    /// # Errors
    /// When the kernel refuses an epoll instance or an eventfd (descriptor limit).
    pub(crate) fn new() -> io::Result<Reactor> {
        let epfd = epoll::create()?;
        let wakefd = epoll::eventfd()?;
        epoll::add(&epfd, wakefd.as_raw_fd(), libc::EPOLLIN as u32, WAKE_TOKEN)?;
        Ok(Reactor {
            epfd,
            wakefd,
            driver: AtomicBool::new(false),
            blocked: AtomicUsize::new(0),
            registered: AtomicUsize::new(0),
            slab: Mutex::new(Slab::default()),
            bufs: UnsafeCell::new(DriverBufs {
                events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT],
                ready: Vec::with_capacity(EVENTS_PER_WAIT),
            }),
        })
    }

    /// Registers `fd` (edge-triggered, both directions). The caller must
    /// call [`Reactor::deregister`] before closing `fd`.
    ///
    /// # Errors
    /// As `epoll_ctl(EPOLL_CTL_ADD)`: `EBADF`, `EPERM` (a regular file), `EEXIST`.
    pub(crate) fn register(&self, fd: RawFd) -> io::Result<Arc<IoEntry>> {
        let entry = {
            let _np = preempt::disable();
            let mut slab = crate::global_lock::lock(&self.slab);
            let idx = match slab.free.pop() {
                Some(i) => i,
                None => {
                    slab.slots.push(Slot {
                        generation: 0,
                        entry: None,
                    });
                    (slab.slots.len() - 1) as u32
                }
            };
            let slot = &mut slab.slots[idx as usize];
            let token = u64::from(idx) | u64::from(slot.generation) << 32;
            let entry = Arc::new(IoEntry {
                fd,
                token,
                readiness: AtomicU64::new(READ | WRITE),
                waiters: Mutex::default(),
            });
            slot.entry = Some(entry.clone());
            entry
        };
        let token = entry.token;
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = epoll::add(&self.epfd, fd, events, token) {
            self.free_slot(token);
            return Err(e);
        }
        self.registered.fetch_add(1, Ordering::Relaxed);
        Ok(entry)
    }

    /// Removes a registration made by [`Reactor::register`]; its waiters get
    /// `EBADF`. Must run while the descriptor is still open.
    pub(crate) fn deregister(&self, entry: &Arc<IoEntry>) {
        entry.close();
        // ENOENT/EBADF: the descriptor was closed behind our back, which
        // already removed it from the interest list.
        let _ = epoll::delete(&self.epfd, entry.fd);
        let _np = preempt::disable();
        let mut slab = crate::global_lock::lock(&self.slab);
        let i = entry.token as u32;
        let slot = &mut slab.slots[i as usize];
        if slot.entry.as_ref().is_some_and(|e| Arc::ptr_eq(e, entry)) {
            slot.entry = None;
            slot.generation = slot.generation.wrapping_add(1);
            slab.free.push(i);
            self.registered.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn free_slot(&self, token: u64) {
        let _np = preempt::disable();
        let mut slab = crate::global_lock::lock(&self.slab);
        let i = token as u32;
        let slot = &mut slab.slots[i as usize];
        slot.entry = None;
        slot.generation = slot.generation.wrapping_add(1);
        slab.free.push(i);
    }

    /// Number of live registrations.
    pub(crate) fn registrations(&self) -> usize {
        self.registered.load(Ordering::Relaxed)
    }

    /// Idle worker `me` tries to become the driver and wait in epoll.
    /// `recheck` runs after the driver is published as blocked: it returns
    /// None when the worker must not sleep (work appeared), else the sleep's
    /// timeout (None: unbounded). Returns None, without waiting, when
    /// another thread holds the driver slot (the caller then parks on its
    /// futex). Runs in the scheduler context.
    /// Returns `Some(n)` when it drove, `n` being the registrations that had
    /// events (their woken actors are on the caller's queues).
    pub(crate) fn park_driver(
        &self,
        me: usize,
        recheck: impl FnOnce() -> Option<Option<Duration>>,
    ) -> Option<usize> {
        if self.driver.load(Ordering::Relaxed) || self.driver.swap(true, Ordering::Acquire) {
            return None;
        }
        self.blocked.store(me + 1, Ordering::SeqCst);
        // Pairs with the SeqCst fence/loads of `unpark_driver`'s callers:
        // either they see `blocked`, or `recheck` sees their work and their
        // futex token.
        fence(Ordering::SeqCst);
        let mut dispatched = 0;
        if let Some(timeout) = recheck() {
            dispatched = self.poll_events(timeout);
        }
        self.blocked.swap(0, Ordering::SeqCst);
        self.driver.store(false, Ordering::Release);
        Some(dispatched)
    }

    /// The worker blocked as the driver, if any (for tests).
    #[cfg(test)]
    pub(crate) fn blocked_driver(&self) -> Option<usize> {
        self.blocked.load(Ordering::SeqCst).checked_sub(1)
    }

    /// Interrupts worker `i`'s `epoll_wait` if it is the blocked driver.
    /// Cheap when it is not (one load).
    #[inline]
    pub(crate) fn unpark_driver(&self, i: usize) {
        if self.blocked.load(Ordering::SeqCst) == i + 1
            && self
                .blocked
                .compare_exchange(i + 1, 0, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            epoll::eventfd_signal(&self.wakefd);
        }
    }

    /// A busy worker's periodic look at the reactor: a zero-timeout poll,
    /// if there are registrations and nobody else drives. Executed on any
    /// worker, in `find_next`.
    #[inline]
    pub(crate) fn poll_busy(&self) {
        if self.registered.load(Ordering::Relaxed) == 0 || self.driver.load(Ordering::Relaxed) {
            return;
        }
        self.poll_busy_slow();
    }

    #[cold]
    fn poll_busy_slow(&self) {
        if self.driver.swap(true, Ordering::Acquire) {
            return;
        }
        let _ = self.poll_events(Some(Duration::ZERO));
        self.driver.store(false, Ordering::Release);
    }

    /// One `epoll_wait` and the dispatch of its events. Only the holder of
    /// the driver slot calls this. Returns how many registrations had events.
    fn poll_events(&self, timeout: Option<Duration>) -> usize {
        let _np = preempt::disable();
        // SAFETY: the caller holds the driver slot, so no other thread
        // touches `bufs` until it is released (Release/Acquire on `driver`).
        let bufs = unsafe { &mut *self.bufs.get() };
        let n = match epoll::wait(&self.epfd, &mut bufs.events, timeout) {
            Ok(n) => n,
            // Only EBADF/EFAULT/EINVAL are possible, all bugs; do not spin.
            Err(e) => panic!("smarm: epoll_wait failed: {e}"),
        };
        // No longer blocked: a wake-up addressed to this worker while it
        // dispatches needs no eventfd write.
        self.blocked.store(0, Ordering::SeqCst);
        if n == 0 {
            return 0;
        }
        let mut woken = false;
        {
            let slab = crate::global_lock::lock(&self.slab);
            for ev in &bufs.events[..n] {
                let token = ev.u64;
                let events = ev.events;
                if token == WAKE_TOKEN {
                    woken = true;
                    continue;
                }
                let Some(slot) = slab.slots.get(token as u32 as usize) else {
                    continue;
                };
                if u64::from(slot.generation) != token >> 32 {
                    continue;
                }
                if let Some(e) = &slot.entry {
                    let mut b = 0;
                    if events & epoll::READ_EVENTS != 0 {
                        b |= READ;
                    }
                    if events & epoll::WRITE_EVENTS != 0 {
                        b |= WRITE;
                    }
                    if events & epoll::READ_FINAL_EVENTS != 0 {
                        b |= READ_FINAL;
                    }
                    if events & epoll::WRITE_FINAL_EVENTS != 0 {
                        b |= WRITE_FINAL;
                    }
                    bufs.ready.push((e.clone(), b));
                }
            }
        }
        if woken {
            epoll::eventfd_drain(&self.wakefd);
        }
        let k = bufs.ready.len();
        for (e, b) in bufs.ready.drain(..) {
            e.dispatch(b);
        }
        k
    }
}
