//! Zero-capacity flavour: a rendezvous with waiter hand-off, the scheme of
//! crossbeam-channel's zero flavour and Go's unbuffered channels.
//!
//! # Algorithm
//! One lock (a preemption-free spin lock, held for a few instructions)
//! guards two FIFO queues of blocked operations. Each blocked operation
//! owns a [`Packet`] on its own stack: a value slot and a `done` flag.
//!
//! - A sender that finds a blocked receiver moves its value into the
//!   receiver's packet, sets `done` (Release), and unparks it. Otherwise it
//!   queues its own packet (value inside), wakes one `select!` waiter, and
//!   parks until a receiver has taken the value (`done`, Acquire).
//! - A receiver symmetrically takes the value out of the first queued
//!   sender's packet, or queues an empty packet and parks.
//! - Every move between packets happens under the lock, and `done` is the
//!   last write to a packet by the other side, so the owner may return (and
//!   its stack frame die) as soon as it sees `done`.
//! - Timeout, disconnection and kill: the owner takes the lock and removes
//!   its entry. If the entry is gone, the exchange has already happened.
//!
//! `send` therefore returns only after a receiver took the value.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::waiters::{park_or_timeout, SpinLock, Waiters};
use super::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};
use crate::park::{self, Unparker};

struct Packet<T> {
    value: UnsafeCell<Option<T>>,
    done: AtomicBool,
}

struct Entry<T> {
    packet: *const Packet<T>,
    unparker: Unparker,
}

struct Inner<T> {
    senders: VecDeque<Entry<T>>,
    receivers: VecDeque<Entry<T>>,
    disconnected: bool,
}

pub(crate) struct Channel<T> {
    inner: SpinLock<Inner<T>>,
    /// `select!` operations waiting for a sender to queue.
    pub(crate) selects: Waiters,
}

// SAFETY: packet pointers in the queues point into frames of blocked
// operations, which stay alive until their entry leaves the queue (they
// remove it themselves or wait for `done`). Values cross threads: T: Send.
unsafe impl<T: Send> Send for Channel<T> {}
// SAFETY: as above; all queue access is under the lock.
unsafe impl<T: Send> Sync for Channel<T> {}

/// Removes the entry for `packet`, if still queued.
fn remove<T>(q: &mut VecDeque<Entry<T>>, packet: *const Packet<T>) -> bool {
    match q.iter().position(|e| std::ptr::eq(e.packet, packet)) {
        Some(i) => {
            q.remove(i);
            true
        }
        None => false,
    }
}

impl<T> Channel<T> {
    pub(crate) fn new() -> Self {
        Channel {
            inner: SpinLock::new(Inner {
                senders: VecDeque::new(),
                receivers: VecDeque::new(),
                disconnected: false,
            }),
            selects: Waiters::new(),
        }
    }

    /// Hands `value` to a blocked receiver, if there is one.
    fn hand_to_receiver(&self, inner: &mut Inner<T>, value: T) -> Result<Unparker, T> {
        match inner.receivers.pop_front() {
            Some(r) => {
                // SAFETY: a queued receiver's packet is alive (it waits for
                // `done` or removes itself under this lock, which we hold).
                unsafe {
                    *(*r.packet).value.get() = Some(value);
                    // Release pairs with the receiver's Acquire load; last
                    // access to the packet.
                    (*r.packet).done.store(true, Ordering::Release);
                }
                Ok(r.unparker)
            }
            None => Err(value),
        }
    }

    /// Takes the value of a blocked sender, if there is one.
    fn take_from_sender(inner: &mut Inner<T>) -> Option<(T, Unparker)> {
        let s = inner.senders.pop_front()?;
        // SAFETY: as in `hand_to_receiver`; a queued sender's packet holds
        // its value until taken here.
        let v = unsafe {
            let v = (*(*s.packet).value.get())
                .take()
                .expect("queued sender has a value");
            (*s.packet).done.store(true, Ordering::Release);
            v
        };
        Some((v, s.unparker))
    }

    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let r = self.inner.lock(|inner| {
            if inner.disconnected {
                return Err(TrySendError::Disconnected(value));
            }
            self.hand_to_receiver(inner, value)
                .map_err(TrySendError::Full)
        });
        r.map(Unparker::unpark_owned)
    }

    pub(crate) fn send(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let packet = Packet {
            value: UnsafeCell::new(None),
            done: AtomicBool::new(false),
        };
        let pp: *const Packet<T> = &packet;
        let first = self.inner.lock(|inner| {
            if inner.disconnected {
                return Err(Err(SendTimeoutError::Disconnected(value)));
            }
            match self.hand_to_receiver(inner, value) {
                Ok(u) => Err(Ok(u)),
                Err(value) => {
                    // SAFETY: the packet is ours and not yet shared.
                    unsafe { *packet.value.get() = Some(value) };
                    inner.senders.push_back(Entry {
                        packet: pp,
                        unparker: park::current(),
                    });
                    Ok(())
                }
            }
        });
        match first {
            Err(Ok(u)) => {
                u.unpark_owned();
                return Ok(());
            }
            Err(Err(e)) => return Err(e),
            Ok(()) => {}
        }
        // A select! may be waiting for a sender to show up.
        self.selects.notify_one();
        let guard = Dequeue {
            chan: self,
            packet: pp,
            senders: true,
        };
        loop {
            // Acquire pairs with the receiver's Release store of `done`.
            if packet.done.load(Ordering::Acquire) {
                std::mem::forget(guard);
                return Ok(());
            }
            let timed_out = !park_or_timeout(deadline);
            let out = self.inner.lock(|inner| {
                if packet.done.load(Ordering::Acquire) {
                    return Some(Ok(()));
                }
                if inner.disconnected || timed_out {
                    remove(&mut inner.senders, pp);
                    // SAFETY: dequeued under the lock: the packet is ours.
                    let v = unsafe { (*packet.value.get()).take().expect("value not taken") };
                    return Some(Err(if inner.disconnected {
                        SendTimeoutError::Disconnected(v)
                    } else {
                        SendTimeoutError::Timeout(v)
                    }));
                }
                None
            });
            if let Some(r) = out {
                std::mem::forget(guard);
                return r;
            }
        }
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let r = self
            .inner
            .lock(|inner| match Self::take_from_sender(inner) {
                Some(x) => Ok(x),
                None if inner.disconnected => Err(TryRecvError::Disconnected),
                None => Err(TryRecvError::Empty),
            });
        r.map(|(v, u)| {
            u.unpark_owned();
            v
        })
    }

    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let packet = Packet {
            value: UnsafeCell::new(None),
            done: AtomicBool::new(false),
        };
        let pp: *const Packet<T> = &packet;
        let first = self.inner.lock(|inner| {
            if let Some(x) = Self::take_from_sender(inner) {
                return Err(Ok(x));
            }
            if inner.disconnected {
                return Err(Err(RecvTimeoutError::Disconnected));
            }
            inner.receivers.push_back(Entry {
                packet: pp,
                unparker: park::current(),
            });
            Ok(())
        });
        match first {
            Err(Ok((v, u))) => {
                u.unpark_owned();
                return Ok(v);
            }
            Err(Err(e)) => return Err(e),
            Ok(()) => {}
        }
        let guard = Dequeue {
            chan: self,
            packet: pp,
            senders: false,
        };
        let take = |p: &Packet<T>| {
            // SAFETY: `done` was observed (Acquire): the sender's write of
            // the value happened before, and no one touches the packet now.
            unsafe { (*p.value.get()).take().expect("done packet holds a value") }
        };
        loop {
            // Acquire pairs with the sender's Release store of `done`.
            if packet.done.load(Ordering::Acquire) {
                std::mem::forget(guard);
                return Ok(take(&packet));
            }
            let timed_out = !park_or_timeout(deadline);
            let out = self.inner.lock(|inner| {
                if packet.done.load(Ordering::Acquire) {
                    return Some(true);
                }
                if inner.disconnected || timed_out {
                    remove(&mut inner.receivers, pp);
                    return Some(false);
                }
                None
            });
            match out {
                Some(true) => {
                    std::mem::forget(guard);
                    return Ok(take(&packet));
                }
                Some(false) => {
                    std::mem::forget(guard);
                    return Err(if timed_out {
                        RecvTimeoutError::Timeout
                    } else {
                        RecvTimeoutError::Disconnected
                    });
                }
                None => {}
            }
        }
    }

    pub(crate) fn recv_batch(&self, buf: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.try_recv() {
                Ok(v) => {
                    buf.push(v);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        self.inner.lock(|i| i.disconnected)
    }

    /// True when a receive would not block: a sender is queued, or every
    /// sender is gone. Taken under the lock, which orders it with a
    /// sender's enqueue (the sender notifies `selects` after unlocking).
    pub(crate) fn is_ready(&self) -> bool {
        self.inner.lock(|i| !i.senders.is_empty() || i.disconnected)
    }

    pub(crate) fn disconnect(&self) {
        let woken = self.inner.lock(|inner| {
            if inner.disconnected {
                return Vec::new();
            }
            inner.disconnected = true;
            inner
                .senders
                .iter()
                .chain(inner.receivers.iter())
                .map(|e| e.unparker.clone())
                .collect()
        });
        for u in woken {
            u.unpark_owned();
        }
        self.selects.notify_all();
    }
}

/// Removes a blocked operation's entry if `park` unwinds (actor killed).
/// A sender's value is then dropped with its packet, unless a receiver
/// already took it. A receiver's entry that was already filled drops the
/// delivered value with the packet (the sender's `send` has returned `Ok`:
/// the value was delivered to a context that is being killed).
struct Dequeue<'a, T> {
    chan: &'a Channel<T>,
    packet: *const Packet<T>,
    senders: bool,
}

impl<T> Drop for Dequeue<'_, T> {
    fn drop(&mut self) {
        self.chan.inner.lock(|inner| {
            let q = if self.senders {
                &mut inner.senders
            } else {
                &mut inner.receivers
            };
            remove(q, self.packet);
        });
    }
}
