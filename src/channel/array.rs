//! Bounded flavour: a fixed ring of slots, Dmitry Vyukov's bounded MPMC
//! queue (1024cores.net, "Bounded MPMC queue"), the algorithm that
//! crossbeam-channel's array flavour also uses, with smarm's waiter lists
//! for blocking.
//!
//! # Algorithm
//! Each slot has a `stamp`. `head` and `tail` are positions `lap + index`
//! where `index < cap` and `lap` is a multiple of `one_lap` (the smallest
//! power of two above `cap`), so a position says both which slot and which
//! turn around the ring it is.
//!
//! 1. Slot `i` starts with stamp `i`: ready to be written at lap 0.
//! 2. A sender at `tail` finds stamp `== tail`: the slot is free for this
//!    lap. It claims it by CAS of `tail` to the next position, writes the
//!    value, then stores stamp `tail + 1` (Release): "full at this lap".
//! 3. A receiver at `head` finds stamp `== head + 1`: the slot holds this
//!    lap's value. It claims it by CAS of `head`, reads the value, then
//!    stores stamp `head + one_lap` (Release): "free for the next lap".
//! 4. A sender seeing stamp `== tail + 1 - one_lap` (last lap's value not
//!    yet taken) compares with `head`: if `head + one_lap == tail` the
//!    channel is full. A receiver seeing stamp `== head` compares with
//!    `tail`: if equal the channel is empty. Otherwise another context is
//!    between its CAS and its stamp store: spin briefly.
//!
//! The only shared writes per message are one CAS and one stamp store per
//! side; nothing is allocated after construction.
//!
//! [`Channel::recv_batch`] claims up to a whole run of ready slots with one
//! CAS of `head` and wakes blocked senders once per batch.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use super::waiters::{block_on, Waiters};
use super::{CachePadded, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

pub(crate) struct Channel<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    buffer: Box<[Slot<T>]>,
    cap: usize,
    one_lap: usize,
    /// Set once when either side is gone (both sides test it).
    disconnected: AtomicBool,
    /// Receivers blocked on an empty channel.
    pub(crate) receivers: Waiters,
    /// Senders blocked on a full channel.
    senders: Waiters,
}

// SAFETY: values of T move between threads through the slots; every slot
// is accessed by one context at a time (the one whose CAS claimed it),
// which the stamps enforce.
unsafe impl<T: Send> Send for Channel<T> {}
// SAFETY: as above; shared access goes through atomics and claimed slots.
unsafe impl<T: Send> Sync for Channel<T> {}

/// Short exponential spin used while another context finishes the step
/// between its CAS and its stamp store (a few instructions, never a park).
#[inline]
pub(crate) fn backoff(step: &mut u32) {
    if *step < 6 {
        for _ in 0..(1u32 << *step) {
            std::hint::spin_loop();
        }
        *step += 1;
    } else {
        std::thread::yield_now();
    }
}

impl<T> Channel<T> {
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0, "array flavour needs a capacity of at least 1");
        // Positions carry the lap above the index: the lap needs room.
        let one_lap = cap
            .checked_add(1)
            .and_then(usize::checked_next_power_of_two)
            .filter(|&l| l <= usize::MAX / 4)
            .unwrap_or_else(|| {
                panic!("smarm::bounded({cap}): the capacity is too large for a bounded channel")
            });
        let mut buffer = Vec::new();
        if let Err(e) = buffer.try_reserve_exact(cap) {
            panic!(
                "smarm::bounded({cap}): cannot allocate the channel's ring of {cap} slots of {} \
                 bytes ({e}); a bounded channel allocates its whole capacity when it is created",
                std::mem::size_of::<Slot<T>>()
            );
        }
        buffer.extend((0..cap).map(|i| Slot {
            stamp: AtomicUsize::new(i),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }));
        let buffer = buffer.into_boxed_slice();
        Channel {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            buffer,
            cap,
            one_lap,
            disconnected: AtomicBool::new(false),
            receivers: Waiters::new(),
            senders: Waiters::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// The position after `pos`.
    #[inline]
    fn next(&self, pos: usize) -> usize {
        let index = pos & (self.one_lap - 1);
        if index + 1 < self.cap {
            pos + 1
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// The slot of position `pos`.
    #[inline]
    fn slot(&self, pos: usize) -> &Slot<T> {
        let index = pos & (self.one_lap - 1);
        debug_assert!(index < self.cap);
        // SAFETY: every position's index part is below `cap` (positions
        // are built by `next` from 0), and `buffer` has `cap` slots.
        unsafe { self.buffer.get_unchecked(index) }
    }

    /// The common case of a send, inlined: the tail slot is free for this
    /// lap and the first CAS claims it. Gives `value` back for anything else
    /// (full, disconnected, contention), which [`push`](Self::push) sorts
    /// out.
    #[inline]
    fn push_fast(&self, value: T) -> Result<(), T> {
        // SeqCst: as in `push`.
        if self.disconnected.load(Ordering::SeqCst) {
            return Err(value);
        }
        let tail = self.tail.load(Ordering::Relaxed);
        let slot = self.slot(tail);
        // Acquire, SeqCst CAS and Release: as in `push`.
        if slot.stamp.load(Ordering::Acquire) == tail
            && self
                .tail
                .compare_exchange_weak(tail, self.next(tail), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: the CAS gave this context the slot for this lap; its
            // stamp says it is empty.
            unsafe { (*slot.value.get()).write(value) };
            slot.stamp.store(tail + 1, Ordering::Release);
            return Ok(());
        }
        Err(value)
    }

    /// The common case of a receive, inlined: the head slot holds this lap's
    /// value and the first CAS claims it. `None` for anything else (empty,
    /// disconnected, contention), which [`pop`](Self::pop) sorts out.
    #[inline]
    fn pop_fast(&self) -> Option<T> {
        let head = self.head.load(Ordering::Relaxed);
        let slot = self.slot(head);
        // Acquire, SeqCst CAS and Release: as in `pop`.
        if slot.stamp.load(Ordering::Acquire) == head + 1
            && self
                .head
                .compare_exchange_weak(head, self.next(head), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: the CAS gave this context the slot; its stamp says the
            // value of this lap is in it.
            let v = unsafe { (*slot.value.get()).assume_init_read() };
            slot.stamp
                .store(head.wrapping_add(self.one_lap), Ordering::Release);
            return Some(v);
        }
        None
    }

    /// Pushes without waiting and without notifying.
    #[inline]
    fn push(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut step = 0;
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            // SeqCst: pairs with the SeqCst store of `disconnected` in
            // `disconnect` (a blocked sender's re-check must see it).
            if self.disconnected.load(Ordering::SeqCst) {
                return Err(TrySendError::Disconnected(value));
            }
            let slot = &self.buffer[tail & (self.one_lap - 1)];
            // Acquire pairs with the receiver's Release stamp store: the
            // slot's previous value has been moved out.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                // SeqCst CAS: the publishing half of the lost wake-up
                // pattern (waiters.rs), ordered before the `nonempty` load
                // in `notify_one`.
                match self.tail.compare_exchange_weak(
                    tail,
                    self.next(tail),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the CAS gave this context the slot for
                        // this lap; its stamp says it is empty.
                        unsafe { (*slot.value.get()).write(value) };
                        // Release pairs with the Acquire stamp load of the
                        // receiver that will read the value.
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(t) => {
                        tail = t;
                        backoff(&mut step);
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                // SeqCst: the re-check half for a blocked sender; pairs
                // with the receiver's SeqCst CAS of `head`.
                let head = self.head.load(Ordering::SeqCst);
                if head.wrapping_add(self.one_lap) == tail {
                    return Err(TrySendError::Full(value));
                }
                backoff(&mut step);
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                backoff(&mut step);
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Pops without waiting and without notifying.
    #[inline]
    fn pop(&self) -> Result<T, TryRecvError> {
        let mut step = 0;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.buffer[head & (self.one_lap - 1)];
            // Acquire pairs with the sender's Release stamp store.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head + 1 {
                // SeqCst CAS: publishing half for blocked senders.
                match self.head.compare_exchange_weak(
                    head,
                    self.next(head),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the CAS gave this context the slot; its
                        // stamp says the value of this lap is in it.
                        let v = unsafe { (*slot.value.get()).assume_init_read() };
                        // Release pairs with the next sender's Acquire.
                        slot.stamp
                            .store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return Ok(v);
                    }
                    Err(h) => {
                        head = h;
                        backoff(&mut step);
                    }
                }
            } else if stamp == head {
                // SeqCst: the re-check half for a blocked receiver; pairs
                // with the sender's SeqCst CAS of `tail`.
                let tail = self.tail.load(Ordering::SeqCst);
                if tail == head {
                    // SeqCst pairs with `disconnect`'s store: a receiver
                    // that sees it also sees every value pushed before the
                    // last sender left, so it pops once more.
                    if self.disconnected.load(Ordering::SeqCst) {
                        return if self.tail.load(Ordering::SeqCst) == head {
                            Err(TryRecvError::Disconnected)
                        } else {
                            head = self.head.load(Ordering::Relaxed);
                            continue;
                        };
                    }
                    return Err(TryRecvError::Empty);
                }
                backoff(&mut step);
                head = self.head.load(Ordering::Relaxed);
            } else {
                backoff(&mut step);
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.push(value)?;
        self.receivers.notify_one();
        Ok(())
    }

    /// Sends, waiting while full. The fast path keeps no state across a
    /// call: each way out of it is a tail call.
    #[inline]
    pub(crate) fn send(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        match self.push_fast(value) {
            Ok(()) if self.receivers.may_have_waiters() => self.wake_receiver(),
            Ok(()) => Ok(()),
            Err(v) => self.send_slow(v, deadline),
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_receiver(&self) -> Result<(), SendTimeoutError<T>> {
        self.receivers.notify_one();
        Ok(())
    }

    #[inline(never)]
    fn send_slow(&self, value: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        let value = match self.try_send(value) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(v)) => return Err(SendTimeoutError::Disconnected(v)),
            Err(TrySendError::Full(v)) => v,
        };
        let mut value = Some(value);
        let r = block_on(&self.senders, deadline, || {
            let v = value.take().expect("value present while sending");
            match self.push(v) {
                Ok(()) => Some(Ok(())),
                Err(TrySendError::Disconnected(v)) => Some(Err(SendTimeoutError::Disconnected(v))),
                Err(TrySendError::Full(v)) => {
                    value = Some(v);
                    None
                }
            }
        });
        match r {
            Some(Ok(())) => {
                self.receivers.notify_one();
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err(SendTimeoutError::Timeout(
                value.take().expect("value kept on timeout"),
            )),
        }
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let v = self.pop()?;
        self.senders.notify_one();
        Ok(v)
    }

    /// Receives, waiting while empty. The fast path keeps no state across a
    /// call: each way out of it is a tail call.
    #[inline]
    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        match self.pop_fast() {
            Some(v) if self.senders.may_have_waiters() => self.wake_sender(v),
            Some(v) => Ok(v),
            None => self.recv_slow(deadline),
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_sender(&self, v: T) -> Result<T, RecvTimeoutError> {
        self.senders.notify_one();
        Ok(v)
    }

    #[inline(never)]
    fn recv_slow(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        match self.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let r = block_on(&self.receivers, deadline, || match self.pop() {
            Ok(v) => Some(Ok(v)),
            Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            Err(TryRecvError::Empty) => None,
        });
        match r {
            Some(Ok(v)) => {
                self.senders.notify_one();
                Ok(v)
            }
            Some(Err(e)) => Err(e),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Moves up to `max` queued values into `buf` without waiting; claims a
    /// run of ready slots with one CAS and wakes senders once. Returns how
    /// many were taken.
    pub(crate) fn recv_batch(&self, buf: &mut Vec<T>, max: usize) -> usize {
        let mut taken = 0;
        let mut step = 0;
        'outer: while taken < max {
            let head = self.head.load(Ordering::Relaxed);
            let index = head & (self.one_lap - 1);
            let lap = head & !(self.one_lap - 1);
            // Count the ready slots from `head` to the end of the ring.
            let limit = (max - taken).min(self.cap - index);
            let mut n = 0;
            while n < limit {
                // Acquire pairs with each sender's Release stamp store.
                let stamp = self.buffer[index + n].stamp.load(Ordering::Acquire);
                if stamp != head + n + 1 {
                    break;
                }
                n += 1;
            }
            if n == 0 {
                match self.pop() {
                    Ok(v) => {
                        buf.push(v);
                        taken += 1;
                        continue 'outer;
                    }
                    Err(_) => break 'outer,
                }
            }
            let new_head = if index + n == self.cap {
                lap.wrapping_add(self.one_lap)
            } else {
                head + n
            };
            // SeqCst as in `pop`. Success gives this context slots
            // `index..index + n` of this lap.
            if self
                .head
                .compare_exchange(head, new_head, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                backoff(&mut step);
                continue;
            }
            buf.reserve(n);
            for k in 0..n {
                let slot = &self.buffer[index + k];
                // SAFETY: claimed by the CAS above; the stamp checked before
                // it (Acquire) says the value of this lap is present.
                let v = unsafe { (*slot.value.get()).assume_init_read() };
                buf.push(v);
                // Release pairs with the next sender's Acquire.
                slot.stamp
                    .store((head + k).wrapping_add(self.one_lap), Ordering::Release);
            }
            taken += n;
        }
        if taken > 0 {
            self.senders.notify_n(taken);
        }
        taken
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::SeqCst)
    }

    /// True when a receive would not block (a value or disconnection).
    pub(crate) fn is_ready(&self) -> bool {
        // SeqCst loads: the re-check half of the select protocol.
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.tail.load(Ordering::SeqCst);
        head != tail || self.disconnected.load(Ordering::SeqCst)
    }

    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                let hix = head & (self.one_lap - 1);
                let tix = tail & (self.one_lap - 1);
                return if hix < tix {
                    tix - hix
                } else if hix > tix {
                    self.cap - hix + tix
                } else if tail == head {
                    0
                } else {
                    self.cap
                };
            }
        }
    }

    /// Marks the channel disconnected and wakes everyone. SeqCst store:
    /// pairs with the SeqCst loads of `disconnected` in waiters' re-checks.
    pub(crate) fn disconnect(&self) {
        if !self.disconnected.swap(true, Ordering::SeqCst) {
            self.senders.notify_all();
            self.receivers.notify_all();
        }
    }
}

impl<T> Drop for Channel<T> {
    fn drop(&mut self) {
        let tail = *self.tail.get_mut();
        let mut pos = *self.head.get_mut();
        let mut next = || {
            if pos == tail {
                return None;
            }
            let slot = self.buffer[pos & (self.one_lap - 1)].value.get();
            pos = self.next(pos);
            Some(slot)
        };
        // SAFETY: no handle remains, so no operation is in flight; every
        // position in head..tail holds a written value, yielded once.
        unsafe { super::drop_unread(&mut next) }
    }
}
