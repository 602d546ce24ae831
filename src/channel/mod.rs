//! Multi-producer multi-consumer channels whose blocking operations park
//! the calling actor (or block the calling plain thread).
//!
//! Three flavours sit behind one [`Sender`] / [`Receiver`] pair:
//!
//! | constructor | flavour | file |
//! | --- | --- | --- |
//! | [`channel`] | unbounded, linked blocks of slots | `list.rs` |
//! | [`bounded`]`(n)`, `n > 0` | Vyukov's bounded ring | `array.rs` |
//! | [`bounded`]`(0)` | rendezvous with waiter hand-off | `zero.rs` |
//!
//! Blocking uses `crate::park` only, through the waiter lists of
//! `waiters.rs`. [`oneshot`] is a separate single-use channel, and
//! [`select!`](crate::select) waits on several receivers at once.
//!
//! ```
//! let (tx, rx) = smarm::bounded(4);
//! let t = std::thread::spawn(move || {
//!     for i in 0..10 {
//!         tx.send(i).unwrap();
//!     }
//! });
//! let got: Vec<i32> = rx.iter().collect();
//! assert_eq!(got, (0..10).collect::<Vec<_>>());
//! t.join().unwrap();
//! ```

mod array;
mod error;
mod list;
pub mod oneshot;
mod select;
mod waiters;
mod zero;

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::time::deadline_after;

/// Drops the unread messages of a channel that no handle refers to any
/// more: `next` yields each one's slot in turn, having already moved the
/// channel's position past it, and None at the end. When a message's
/// destructor panics, a guard goes on calling `next` for the rest, so every
/// message is dropped exactly once, as a `Vec` drops its other elements (a
/// second panic aborts, as there).
///
/// # Safety
/// Every slot `next` yields holds an initialised message that nothing else
/// reads or drops.
pub(crate) unsafe fn drop_unread<T>(next: &mut dyn FnMut() -> Option<*mut MaybeUninit<T>>) {
    type Next<'a, T> = dyn FnMut() -> Option<*mut MaybeUninit<T>> + 'a;
    struct Resume<'a, 'b, T>(&'a mut Next<'b, T>);
    impl<T> Drop for Resume<'_, '_, T> {
        fn drop(&mut self) {
            // SAFETY: the caller's contract, passed on; reached only when a
            // message's destructor unwinds, and `next` has moved past it.
            unsafe { drop_unread(self.0) }
        }
    }
    while let Some(slot) = next() {
        let resume = Resume(next);
        // SAFETY: by the contract, `slot` holds a message that is ours.
        unsafe { (*slot).assume_init_drop() };
        std::mem::forget(resume);
    }
}

pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
#[doc(hidden)]
pub use select::{__SelectHandle, __Selector, __Timeout, __handle, __recv_ref, __try_arm};

/// Aligns its content to 128 bytes (two cache lines: the adjacent-line
/// prefetcher of x86-64 pulls pairs), so head and tail never share a line.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for CachePadded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

enum Flavor<T> {
    Array(array::Channel<T>),
    List(list::Channel<T>),
    Zero(zero::Channel<T>),
}

/// The allocation shared by every handle of one channel.
struct Shared<T> {
    senders: AtomicUsize,
    receivers: AtomicUsize,
    /// Set by the first side (senders or receivers) to lose its last
    /// handle; the second one frees the allocation.
    destroy: AtomicBool,
    flavor: Flavor<T>,
}

/// A handle's pointer to its channel's `Shared`. Not an `Arc`: the per-side
/// counts already say when the allocation can go, so a clone or a drop is
/// one atomic operation on one cache line, not two on two (a supervisor
/// `Sender` cloned for each child on one thread and dropped on another
/// paid both lines' trips between cores).
struct Handle<T>(NonNull<Shared<T>>);

// SAFETY: a handle only gives shared access to `Shared`, whose flavours are
// Send + Sync for T: Send (values move between threads through them).
unsafe impl<T: Send> Send for Handle<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Handle<T> {}

impl<T> Deref for Handle<T> {
    type Target = Shared<T>;
    fn deref(&self) -> &Shared<T> {
        // SAFETY: the allocation lives while any handle does: it is freed
        // only after both counts reached zero (`Handle::release`).
        unsafe { self.0.as_ref() }
    }
}

impl<T> Handle<T> {
    fn ptr_eq(&self, other: &Handle<T>) -> bool {
        self.0 == other.0
    }

    /// One side lost its last handle: disconnects, and frees the
    /// allocation if the other side had already let go.
    ///
    /// # Safety
    /// Called once per side, by the handle whose decrement reached zero;
    /// the handle is not used afterwards.
    unsafe fn release(&self) {
        self.disconnect();
        // AcqRel: the second side to arrive acquires the first side's
        // release (its last uses of the channel happen before the free).
        if self.destroy.swap(true, Ordering::AcqRel) {
            // SAFETY: both sides are gone: no handle refers to it any more;
            // it was made by `Box::into_raw` in `make`. Dropping it drops
            // the values still queued, once.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }
}

impl<T> Shared<T> {
    fn disconnect(&self) {
        match &self.flavor {
            Flavor::Array(c) => c.disconnect(),
            Flavor::List(c) => c.disconnect(),
            Flavor::Zero(c) => c.disconnect(),
        }
    }
}

/// Creates an unbounded channel: `send` never blocks.
///
/// Memory is allocated one block of 31 messages at a time.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    make(Flavor::List(list::Channel::new()))
}

/// Creates a channel holding at most `cap` messages: `send` blocks while it
/// is full. With `cap == 0` every `send` waits until a receiver takes the
/// value (a rendezvous).
///
/// A bounded channel allocates once, at creation.
///
/// # Panics
/// When `cap` slots cannot be allocated (or `cap` is beyond what positions
/// can count, about `usize::MAX / 4`); the message names the capacity.
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    if cap == 0 {
        make(Flavor::Zero(zero::Channel::new()))
    } else {
        make(Flavor::Array(array::Channel::new(cap)))
    }
}

fn make<T>(flavor: Flavor<T>) -> (Sender<T>, Receiver<T>) {
    let shared = Box::into_raw(Box::new(Shared {
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
        destroy: AtomicBool::new(false),
        flavor,
    }));
    // SAFETY: Box::into_raw never returns null.
    let shared = unsafe { NonNull::new_unchecked(shared) };
    (
        Sender {
            shared: Handle(shared),
        },
        Receiver {
            shared: Handle(shared),
        },
    )
}

/// The sending half of a channel. Clone it for more producers.
pub struct Sender<T> {
    shared: Handle<T>,
}

/// The receiving half of a channel. Clone it for more consumers; each
/// message goes to exactly one of them.
pub struct Receiver<T> {
    shared: Handle<T>,
}

impl<T> Sender<T> {
    /// Sends `v`, waiting while a bounded channel is full (and, for a
    /// zero-capacity channel, until a receiver has taken it).
    ///
    /// # Errors
    /// [`SendError`] holding `v` when every receiver is gone.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        match &self.shared.flavor {
            Flavor::List(c) => c.send(v).map_err(SendError),
            Flavor::Array(c) => c.send(v, None).map_err(|e| SendError(e.into_inner())),
            Flavor::Zero(c) => c.send(v, None).map_err(|e| SendError(e.into_inner())),
        }
    }

    /// Sends `v` if that is possible without waiting.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when a bounded channel is full (for capacity
    /// 0: when no receiver is blocked in `recv`), and
    /// [`TrySendError::Disconnected`] when every receiver is gone; both hold
    /// `v`.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        match &self.shared.flavor {
            Flavor::List(c) => c.send(v).map_err(TrySendError::Disconnected),
            Flavor::Array(c) => c.try_send(v),
            Flavor::Zero(c) => c.try_send(v),
        }
    }

    /// Like [`send`](Self::send), giving up after `d`.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] when `d` elapsed first and
    /// [`SendTimeoutError::Disconnected`] when every receiver is gone; both
    /// hold `v`.
    pub fn send_timeout(&self, v: T, d: Duration) -> Result<(), SendTimeoutError<T>> {
        let deadline = deadline_after(d);
        match &self.shared.flavor {
            Flavor::List(c) => c.send(v).map_err(SendTimeoutError::Disconnected),
            Flavor::Array(c) => c.send(v, deadline),
            Flavor::Zero(c) => c.send(v, deadline),
        }
    }

    /// Number of queued messages (always 0 for capacity 0).
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// True when no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity: `None` for an unbounded channel.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.capacity()
    }

    /// True when every receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.is_disconnected()
    }

    /// True when both handles belong to the same channel.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        self.shared.ptr_eq(&other.shared)
    }
}

impl<T> Shared<T> {
    fn len(&self) -> usize {
        match &self.flavor {
            Flavor::List(c) => c.len(),
            Flavor::Array(c) => c.len(),
            Flavor::Zero(_) => 0,
        }
    }

    fn capacity(&self) -> Option<usize> {
        match &self.flavor {
            Flavor::List(_) => None,
            Flavor::Array(c) => Some(c.capacity()),
            Flavor::Zero(_) => Some(0),
        }
    }

    fn is_disconnected(&self) -> bool {
        match &self.flavor {
            Flavor::List(c) => c.is_disconnected(),
            Flavor::Array(c) => c.is_disconnected(),
            Flavor::Zero(c) => c.is_disconnected(),
        }
    }
}

impl<T> Receiver<T> {
    /// Receives a message, waiting while the channel is empty. Messages
    /// queued before the last sender left are still delivered.
    ///
    /// # Errors
    /// [`RecvError`] when the channel is empty and every sender is gone.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_deadline(None).map_err(|_| RecvError)
    }

    /// Receives a message if one is queued.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is queued, and
    /// [`TryRecvError::Disconnected`] when also every sender is gone.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        match &self.shared.flavor {
            Flavor::List(c) => c.try_recv(),
            Flavor::Array(c) => c.try_recv(),
            Flavor::Zero(c) => c.try_recv(),
        }
    }

    /// Like [`recv`](Self::recv), giving up after `d`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when `d` elapsed first and
    /// [`RecvTimeoutError::Disconnected`] when the channel is empty and
    /// every sender is gone.
    pub fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(deadline_after(d))
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        match &self.shared.flavor {
            Flavor::List(c) => c.recv(deadline),
            Flavor::Array(c) => c.recv(deadline),
            Flavor::Zero(c) => c.recv(deadline),
        }
    }

    /// Waits for at least one message, then moves it and up to `max - 1`
    /// more that are already queued into `buf`, without waiting again.
    /// Returns how many were appended. On a bounded channel the run of
    /// queued messages is claimed with one atomic operation and blocked
    /// senders are woken once per call, which makes this the fast way to
    /// drain a busy channel.
    ///
    /// Returns `Ok(0)` at once when `max == 0`.
    ///
    /// # Errors
    /// [`RecvError`] when the channel is empty and every sender is gone.
    pub fn recv_many(&self, buf: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        let n = self.try_batch(buf, max);
        if n > 0 {
            return Ok(n);
        }
        let first = self.recv()?;
        buf.push(first);
        Ok(1 + self.try_batch(buf, max - 1))
    }

    fn try_batch(&self, buf: &mut Vec<T>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        match &self.shared.flavor {
            Flavor::List(c) => c.recv_batch(buf, max),
            Flavor::Array(c) => c.recv_batch(buf, max),
            Flavor::Zero(c) => c.recv_batch(buf, max),
        }
    }

    /// A blocking iterator: yields messages until the channel is empty and
    /// every sender is gone.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// A non-blocking iterator over the messages queued right now.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// Number of queued messages (always 0 for capacity 0).
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// True when no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity: `None` for an unbounded channel.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.capacity()
    }

    /// True when every sender is gone (messages may still be queued).
    pub fn is_disconnected(&self) -> bool {
        self.shared.is_disconnected()
    }

    /// True when both handles belong to the same channel.
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        self.shared.ptr_eq(&other.shared)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        // Relaxed: a new handle is made from a live one, so the count is
        // already non-zero; nothing is published by the increment.
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: Handle(self.shared.0),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // AcqRel: the last sender's decrement acquires every other
        // sender's (Release) decrement, so all their sends happen before
        // `disconnect`'s SeqCst store, which receivers pair with.
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the last sender, once.
            unsafe { self.shared.release() };
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        // Relaxed: as for Sender.
        self.shared.receivers.fetch_add(1, Ordering::Relaxed);
        Receiver {
            shared: Handle(self.shared.0),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // AcqRel: as for Sender. Queued values are dropped with the shared
        // allocation, when the last handle of either kind is gone.
        if self.shared.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the last receiver, once.
            unsafe { self.shared.release() };
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("Sender { .. }")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("Receiver { .. }")
    }
}

/// Blocking iterator returned by [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

/// Non-blocking iterator returned by [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// Owning blocking iterator returned by `Receiver::into_iter`.
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
