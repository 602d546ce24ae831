//! A single-use channel: one value from one [`Sender`] to one [`Receiver`].
//!
//! One allocation per channel (an `Arc` holding the state word, the value
//! slot and the receiver's unparker), no lock. The state word holds four
//! bits, each set once:
//!
//! | bit | set by | meaning |
//! | --- | --- | --- |
//! | `RX_WAITING` | receiver | the unparker slot is filled; wake it |
//! | `VALUE` | sender | the value slot is filled |
//! | `TX_GONE` | sender's drop | no value will come |
//! | `RX_GONE` | receiver's drop | nobody will take the value |
//!
//! Ownership of the value follows from who set their bit second: a sender
//! that sees `RX_GONE` in the word it replaced takes its value back; a
//! receiver that sees `VALUE` when it leaves drops the value. Each slot is
//! written by one side before it sets its bit (Release) and read by the
//! other only after it saw the bit (Acquire), through `fetch_or` with
//! AcqRel, which both publishes and observes.
//!
//! ```
//! let (tx, rx) = smarm::oneshot::channel();
//! std::thread::spawn(move || tx.send(5).unwrap());
//! assert_eq!(rx.recv(), Ok(5));
//! ```

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::waiters::park_or_timeout;
use super::{RecvError, RecvTimeoutError, TryRecvError};
use crate::park::{self, Unparker};

const RX_WAITING: u8 = 1;
const VALUE: u8 = 2;
const TX_GONE: u8 = 4;
const RX_GONE: u8 = 8;

struct Inner<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
    unparker: UnsafeCell<Option<Unparker>>,
}

// SAFETY: the value moves from the sender's thread to the receiver's
// (T: Send); the slots are each written by one side before it publishes a
// state bit and read by the other only after observing that bit.
unsafe impl<T: Send> Send for Inner<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Inner<T> {}

/// Sends the one value. Dropping it unsent disconnects the receiver.
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

/// Receives the one value.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
    /// The value has been taken by `try_recv`.
    taken: bool,
}

/// Creates a oneshot channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: AtomicU8::new(0),
        value: UnsafeCell::new(MaybeUninit::uninit()),
        unparker: UnsafeCell::new(None),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver {
            inner,
            taken: false,
        },
    )
}

impl<T> Sender<T> {
    /// Sends `v` and wakes the receiver if it waits. Never blocks.
    ///
    /// # Errors
    /// Returns `v` back when the receiver is gone.
    pub fn send(self, v: T) -> Result<(), T> {
        let inner = &*self.inner;
        // Acquire: cheap early out when the receiver is already gone.
        if inner.state.load(Ordering::Acquire) & RX_GONE != 0 {
            return Err(v);
        }
        // SAFETY: only the sender writes the value slot, once (send
        // consumes self); the receiver reads it only after seeing VALUE.
        unsafe { (*inner.value.get()).write(v) };
        // AcqRel: Release publishes the value to the receiver; Acquire
        // makes the receiver's unparker (written before RX_WAITING)
        // visible.
        let prev = inner.state.fetch_or(VALUE, Ordering::AcqRel);
        let result = if prev & RX_GONE != 0 {
            // SAFETY: the receiver left before VALUE was set, so it will
            // never read the slot: the value is still ours.
            Err(unsafe { (*inner.value.get()).assume_init_read() })
        } else {
            if prev & RX_WAITING != 0 {
                // SAFETY: RX_WAITING was set after the slot was written and
                // the receiver never writes it again.
                if let Some(u) = unsafe { &*inner.unparker.get() } {
                    u.unpark();
                }
            }
            Ok(())
        };
        // Skip Drop: the TX_GONE bit must not be set after a send.
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again; its Arc is dropped once here.
        drop(unsafe { std::ptr::read(&this.inner) });
        result
    }

    /// True when the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) & RX_GONE != 0
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // AcqRel: Acquire to read the unparker, Release so that the
        // receiver's view is ordered after everything the sender did.
        let prev = self.inner.state.fetch_or(TX_GONE, Ordering::AcqRel);
        if prev & RX_WAITING != 0 {
            // SAFETY: as in `send`.
            if let Some(u) = unsafe { &*self.inner.unparker.get() } {
                u.unpark();
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Takes the value if it has arrived.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when it has not arrived yet and
    /// [`TryRecvError::Disconnected`] when the sender was dropped without
    /// sending, or the value was already taken.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if self.taken {
            return Err(TryRecvError::Disconnected);
        }
        // Acquire pairs with the sender's Release (fetch_or VALUE).
        let s = self.inner.state.load(Ordering::Acquire);
        if s & VALUE != 0 {
            self.taken = true;
            // SAFETY: VALUE was observed with Acquire: the slot holds the
            // value, and `taken` ensures it is read only once.
            Ok(unsafe { (*self.inner.value.get()).assume_init_read() })
        } else if s & TX_GONE != 0 {
            Err(TryRecvError::Disconnected)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    /// Waits for the value.
    ///
    /// # Errors
    /// [`RecvError`] when the sender was dropped without sending.
    pub fn recv(mut self) -> Result<T, RecvError> {
        self.wait(None).map_err(|_| RecvError)
    }

    /// Waits for the value at most `d`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when `d` elapsed first, and
    /// [`RecvTimeoutError::Disconnected`] when the sender was dropped
    /// without sending.
    pub fn recv_timeout(mut self, d: Duration) -> Result<T, RecvTimeoutError> {
        self.wait(crate::time::deadline_after(d))
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        match self.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let s = self.inner.state.load(Ordering::Acquire);
        if s & RX_WAITING == 0 {
            // SAFETY: RX_WAITING is not set, so the sender does not read
            // the slot; only this receiver (one owner) writes it, once.
            unsafe { *self.inner.unparker.get() = Some(park::current()) };
            // AcqRel: Release publishes the unparker to the sender;
            // Acquire observes a VALUE or TX_GONE set meanwhile.
            self.inner.state.fetch_or(RX_WAITING, Ordering::AcqRel);
        }
        loop {
            match self.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            // Unwinds with `Killed` in a killed actor: `Receiver::drop`
            // then sets RX_GONE and drops any value.
            if !park_or_timeout(deadline) {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // AcqRel: Acquire to see a value the sender published.
        let prev = self.inner.state.fetch_or(RX_GONE, Ordering::AcqRel);
        if prev & VALUE != 0 && !self.taken {
            // SAFETY: the value was published and not taken; the sender no
            // longer touches it, so the receiver drops it, once.
            unsafe { (*self.inner.value.get()).assume_init_drop() };
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("oneshot::Sender { .. }")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("oneshot::Receiver { .. }")
    }
}
