//! Unbounded flavour: a linked list of blocks of slots, the structure of
//! crossbeam-channel's list flavour (itself a descendant of Dmitry Vyukov's
//! unbounded MPMC queue designs): one allocation per block of
//! [`BLOCK_CAP`] messages, positions claimed by CAS, blocks freed by the
//! last reader to leave them.
//!
//! # Algorithm
//! `head` and `tail` are positions. Position `p` names offset `p % LAP` of
//! some block; offsets `0..BLOCK_CAP` are slots and offset `BLOCK_CAP`
//! (= `LAP - 1`) is a gap meaning "the context that took the last slot of
//! this block is installing the next one; wait".
//!
//! 1. Send: read `tail` and `tail_block`; if at the gap, spin. Claim the
//!    position by CAS `tail -> tail + 1`. The claimer of the last slot
//!    allocates the next block *before* its CAS (so no allocation happens
//!    between claim and publication), then installs it: `tail_block =
//!    next`, `tail += 1` (skip the gap), `block.next = next`. Write the
//!    value, set the slot's `written` flag (Release).
//! 2. Receive: read `head` and `head_block`; if at the gap, spin; if
//!    `head == tail`, empty. Claim by CAS `head -> head + 1`. The claimer of
//!    the last slot waits for `block.next`, then moves `head_block` and
//!    skips the gap. Wait for `written`, read the value, set `read`.
//! 3. Freeing a block: the reader of the last slot frees it, after waiting
//!    for the `read` flag of every other slot. Each of those readers has
//!    already claimed its slot and is a few instructions (a copy, no
//!    allocation, so never a preemption point) from setting its flag, so
//!    the wait is short; it backs off to `yield_now` if the OS descheduled
//!    that reader. (crossbeam hands the walk over with a `DESTROY` bit
//!    instead, which costs every reader a read-modify-write; here `written`
//!    and `read` are plain Release stores, so a message costs one RMW per
//!    side: the claiming CAS.)
//!
//! Positions only grow, so a stale (`index`, `block`) pair read by a
//! context always fails its CAS: the index is published after the block
//! (Release) and read before it (Acquire).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::time::Instant;

use super::array::backoff;
use super::waiters::{block_on, Waiters};
use super::{CachePadded, RecvTimeoutError, TryRecvError};

/// Positions per block, including the gap.
const LAP: usize = 32;
/// Messages per block (one allocation per this many messages).
pub(crate) const BLOCK_CAP: usize = LAP - 1;

struct Slot<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    /// Set (Release) by the writer once the value is in place.
    written: AtomicBool,
    /// Set (Release) by the reader once the value has been moved out.
    read: AtomicBool,
}

struct Block<T> {
    next: AtomicPtr<Block<T>>,
    slots: [Slot<T>; BLOCK_CAP],
}

impl<T> Block<T> {
    fn new() -> Box<Self> {
        Box::new(Block {
            next: AtomicPtr::new(ptr::null_mut()),
            slots: std::array::from_fn(|_| Slot {
                value: UnsafeCell::new(MaybeUninit::uninit()),
                written: AtomicBool::new(false),
                read: AtomicBool::new(false),
            }),
        })
    }

    /// Waits until the next block is linked, and returns it.
    fn wait_next(&self) -> *mut Block<T> {
        let mut step = 0;
        loop {
            // Acquire pairs with the Release store of `next` by the sender
            // that claimed this block's last slot.
            let n = self.next.load(Ordering::Acquire);
            if !n.is_null() {
                return n;
            }
            backoff(&mut step);
        }
    }

    /// Waits until every slot but the last has been read; the caller owns
    /// the block from then on.
    ///
    /// # Safety
    /// `this` is a live block whose last slot the caller has read (so every
    /// slot of it has been claimed by a reader).
    unsafe fn wait_all_read(this: *mut Block<T>) {
        for i in 0..BLOCK_CAP - 1 {
            // SAFETY: the block is alive until the caller frees it: only the
            // reader of the last slot (the caller) does.
            let slot = unsafe { &(*this).slots[i] };
            let mut step = 0;
            // Acquire pairs with the reader's Release store of `read`: its
            // copy out of the slot happens before the caller's reuse or free.
            while !slot.read.load(Ordering::Acquire) {
                backoff(&mut step);
            }
        }
    }
}

struct Position<T> {
    index: AtomicUsize,
    block: AtomicPtr<Block<T>>,
}

pub(crate) struct Channel<T> {
    head: CachePadded<Position<T>>,
    tail: CachePadded<Position<T>>,
    disconnected: AtomicBool,
    /// One retired block kept for the next sender that needs one, so a
    /// steady stream allocates nothing (Acquire/Release swaps hand it over
    /// with its zeroed contents).
    spare: AtomicPtr<Block<T>>,
    /// Receivers blocked on an empty channel (senders never block).
    pub(crate) receivers: Waiters,
}

// SAFETY: values of T move between threads through slots that one context
// at a time owns (claimed by CAS); blocks are freed exactly once.
unsafe impl<T: Send> Send for Channel<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Channel<T> {}

impl<T> Channel<T> {
    pub(crate) fn new() -> Self {
        let first = Box::into_raw(Block::<T>::new());
        Channel {
            head: CachePadded(Position {
                index: AtomicUsize::new(0),
                block: AtomicPtr::new(first),
            }),
            tail: CachePadded(Position {
                index: AtomicUsize::new(0),
                block: AtomicPtr::new(first),
            }),
            disconnected: AtomicBool::new(false),
            spare: AtomicPtr::new(ptr::null_mut()),
            receivers: Waiters::new(),
        }
    }

    /// A fresh block: the spare one if there is one, else a new allocation.
    fn new_block(&self) -> Box<Block<T>> {
        let p = self.spare.swap(ptr::null_mut(), Ordering::Acquire);
        if p.is_null() {
            Block::new()
        } else {
            // SAFETY: the spare block was zeroed and handed over by `retire`
            // (Release swap, paired with our Acquire); it is ours now.
            unsafe { Box::from_raw(p) }
        }
    }

    /// Retires a fully read block: keeps it as the spare, or frees it.
    ///
    /// # Safety
    /// As [`Block::wait_all_read`].
    unsafe fn retire(&self, block: *mut Block<T>) {
        // SAFETY: forwarded contract.
        unsafe { Block::wait_all_read(block) };
        // A spare already there: free this one without resetting it first.
        if self.spare.load(Ordering::Relaxed).is_null() {
            // SAFETY: every slot has been read (Acquire above) and no one
            // else touches the block any more: it is ours to reset. All
            // zero bytes is a fresh block: `next` null, every flag false,
            // values uninitialised.
            unsafe { ptr::write_bytes(block, 0, 1) };
            if self
                .spare
                .compare_exchange(ptr::null_mut(), block, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        // SAFETY: the block is ours (all read) and not the spare.
        drop(unsafe { Box::from_raw(block) });
    }

    /// The common case, inlined into `send`: a slot that is neither the
    /// last of its block nor the gap, claimed by the first CAS. Everything
    /// else (a new block, the gap, contention) goes to [`push_slow`].
    ///
    /// [`push_slow`]: Self::push_slow
    #[inline]
    fn push(&self, value: T) {
        // Acquire, and this order of the two loads: as in `push_slow`.
        let tail = self.tail.index.load(Ordering::Acquire);
        let block = self.tail.block.load(Ordering::Acquire);
        let offset = tail % LAP;
        // SeqCst: the publishing half of the lost wake-up pattern.
        if offset + 1 < BLOCK_CAP
            && self
                .tail
                .index
                .compare_exchange_weak(tail, tail + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: the CAS gave this context slot `offset` of `block`
            // (the pair was current: see the module docs), which is alive
            // until the slot is read.
            unsafe {
                let slot = &(*block).slots[offset];
                (*slot.value.get()).write(value);
                // Release pairs with the reader's Acquire.
                slot.written.store(true, Ordering::Release);
            }
            return;
        }
        self.push_slow(value);
    }

    #[cold]
    #[inline(never)]
    fn push_slow(&self, value: T) {
        let mut step = 0;
        let mut next_block: Option<Box<Block<T>>> = None;
        // Acquire on the index pairs with the Release `fetch_add` that
        // skips the gap, so the block read after it is the current one.
        let mut tail = self.tail.index.load(Ordering::Acquire);
        let mut block = self.tail.block.load(Ordering::Acquire);
        loop {
            let offset = tail % LAP;
            if offset == BLOCK_CAP {
                backoff(&mut step);
                tail = self.tail.index.load(Ordering::Acquire);
                block = self.tail.block.load(Ordering::Acquire);
                continue;
            }
            if offset + 1 == BLOCK_CAP && next_block.is_none() {
                next_block = Some(self.new_block());
            }
            // SeqCst: the publishing half of the lost wake-up pattern.
            match self.tail.index.compare_exchange_weak(
                tail,
                tail + 1,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if offset + 1 == BLOCK_CAP {
                        let nb = Box::into_raw(next_block.take().expect("allocated above"));
                        self.tail.block.store(nb, Ordering::Release);
                        self.tail.index.fetch_add(1, Ordering::Release);
                        // SAFETY: `block` stays alive until its last slot
                        // (ours, unwritten) has been read.
                        unsafe { (*block).next.store(nb, Ordering::Release) };
                    }
                    // SAFETY: the CAS gave this context slot `offset` of
                    // `block`, which is alive until the slot is read.
                    unsafe {
                        let slot = &(*block).slots[offset];
                        (*slot.value.get()).write(value);
                        // Release pairs with the reader's Acquire.
                        slot.written.store(true, Ordering::Release);
                    }
                    return;
                }
                Err(t) => {
                    tail = t;
                    block = self.tail.block.load(Ordering::Acquire);
                    backoff(&mut step);
                }
            }
        }
    }

    #[inline]
    fn pop(&self) -> Result<T, TryRecvError> {
        match self.claim_fast() {
            // SAFETY: claimed by this context.
            Some(slot) => Ok(unsafe { Self::take_claimed(slot) }),
            None => self.pop_slow(),
        }
    }

    /// The common case, inlined into `recv`: a queued message in a slot that
    /// is not the last of its block, claimed by the first CAS. Returns the
    /// claimed slot (its value may still be being written); `None` leaves
    /// everything else (empty, the block's end, contention) to
    /// [`pop_slow`](Self::pop_slow).
    #[inline]
    fn claim_fast(&self) -> Option<&Slot<T>> {
        let head = self.head.index.load(Ordering::Acquire);
        let block = self.head.block.load(Ordering::Acquire);
        let offset = head % LAP;
        if offset + 1 < BLOCK_CAP {
            // SeqCst: as in `pop_slow` (the re-check half of the lost
            // wake-up pattern).
            let tail = self.tail.index.load(Ordering::SeqCst);
            if head != tail
                && self
                    .head
                    .index
                    .compare_exchange_weak(head, head + 1, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                // SAFETY: the CAS gave this context slot `offset` of
                // `block` (not its last), which lives until that slot is
                // read, so at least as long as `self` is borrowed here.
                // `head.block` always names a live block, never null (which
                // the hint tells the compiler, sparing a test).
                return Some(unsafe {
                    std::hint::assert_unchecked(!block.is_null());
                    &(*block).slots[offset]
                });
            }
        }
        None
    }

    /// Moves the value out of a slot this context claimed (not the last of
    /// its block: see `pop_slow`), waiting for its writer if need be, and
    /// marks the slot read.
    ///
    /// # Safety
    /// The caller claimed `slot` by CAS of `head` and has not read it.
    #[inline]
    unsafe fn take_claimed(slot: &Slot<T>) -> T {
        // Acquire pairs with the writer's Release `written`.
        if !slot.written.load(Ordering::Acquire) {
            Self::wait_written(slot);
        }
        // SAFETY: the slot is ours (the contract) and written.
        unsafe { Self::take_written(slot) }
    }

    /// Moves the value out of a claimed slot whose `written` flag this
    /// context has seen set (Acquire), and marks the slot read.
    ///
    /// # Safety
    /// The caller claimed `slot` by CAS of `head`, has not read it, and saw
    /// it written.
    #[inline(always)]
    unsafe fn take_written(slot: &Slot<T>) -> T {
        // SAFETY: the contract.
        let v = unsafe { (*slot.value.get()).assume_init_read() };
        // Release pairs with the Acquire in `Block::wait_all_read`.
        slot.read.store(true, Ordering::Release);
        v
    }

    /// `take_claimed` for a slot whose writer has not finished yet, out of
    /// line so that `recv`'s fast path keeps no state across a call.
    ///
    /// # Safety
    /// As `take_claimed`.
    #[cold]
    #[inline(never)]
    unsafe fn recv_unwritten(slot: &Slot<T>) -> Result<T, RecvTimeoutError> {
        // SAFETY: forwarded contract.
        Ok(unsafe { Self::take_claimed(slot) })
    }

    /// Waits for the writer that claimed `slot` to finish writing it.
    #[cold]
    #[inline(never)]
    fn wait_written(slot: &Slot<T>) {
        let mut step = 0;
        // Acquire pairs with the writer's Release `written`.
        while !slot.written.load(Ordering::Acquire) {
            backoff(&mut step);
        }
    }

    #[cold]
    #[inline(never)]
    fn pop_slow(&self) -> Result<T, TryRecvError> {
        let mut step = 0;
        let mut head = self.head.index.load(Ordering::Acquire);
        let mut block = self.head.block.load(Ordering::Acquire);
        loop {
            let offset = head % LAP;
            if offset == BLOCK_CAP {
                backoff(&mut step);
                head = self.head.index.load(Ordering::Acquire);
                block = self.head.block.load(Ordering::Acquire);
                continue;
            }
            // SeqCst: the re-check half of the lost wake-up pattern. A
            // receiver never passes the tail: the claimer of a block's last
            // slot moves `head` past the gap only after it saw `next`, which
            // the sender links after moving `tail` past the gap.
            let tail = self.tail.index.load(Ordering::SeqCst);
            if head == tail {
                // SeqCst pairs with `disconnect`; see array.rs.
                if self.disconnected.load(Ordering::SeqCst) {
                    if self.tail.index.load(Ordering::SeqCst) == head {
                        return Err(TryRecvError::Disconnected);
                    }
                    head = self.head.index.load(Ordering::Acquire);
                    block = self.head.block.load(Ordering::Acquire);
                    continue;
                }
                return Err(TryRecvError::Empty);
            }
            match self.head.index.compare_exchange_weak(
                head,
                head + 1,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // SAFETY: the CAS gave this context slot `offset` of
                    // `block`; the block lives until that slot is read.
                    unsafe {
                        if offset + 1 == BLOCK_CAP {
                            let next = (*block).wait_next();
                            self.head.block.store(next, Ordering::Release);
                            self.head.index.fetch_add(1, Ordering::Release);
                        }
                        let slot = &(*block).slots[offset];
                        if offset + 1 < BLOCK_CAP {
                            return Ok(Self::take_claimed(slot));
                        }
                        // The last slot: its reader retires the block
                        // instead of marking the slot read.
                        if !slot.written.load(Ordering::Acquire) {
                            Self::wait_written(slot);
                        }
                        let v = (*slot.value.get()).assume_init_read();
                        self.retire(block);
                        return Ok(v);
                    }
                }
                Err(h) => {
                    head = h;
                    block = self.head.block.load(Ordering::Acquire);
                    backoff(&mut step);
                }
            }
        }
    }

    #[inline]
    pub(crate) fn send(&self, value: T) -> Result<(), T> {
        // SeqCst pairs with `disconnect`.
        if self.disconnected.load(Ordering::SeqCst) {
            return Err(value);
        }
        self.push(value);
        self.receivers.notify_one();
        Ok(())
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        self.pop()
    }

    #[inline]
    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        // Fast path: a queued message needs none of the blocking machinery;
        // anything else is one call (no state kept across it).
        match self.claim_fast() {
            // Acquire pairs with the writer's Release `written`.
            // SAFETY: just claimed; the value is written.
            Some(slot) if slot.written.load(Ordering::Acquire) => {
                Ok(unsafe { Self::take_written(slot) })
            }
            // SAFETY: just claimed.
            Some(slot) => unsafe { Self::recv_unwritten(slot) },
            None => self.recv_slow(deadline),
        }
    }

    #[inline(never)]
    fn recv_slow(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        match self.pop_slow() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let r = block_on(&self.receivers, deadline, || match self.pop() {
            Ok(v) => Some(Ok(v)),
            Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            Err(TryRecvError::Empty) => None,
        });
        r.unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    pub(crate) fn recv_batch(&self, buf: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.pop() {
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
        self.disconnected.load(Ordering::SeqCst)
    }

    pub(crate) fn is_ready(&self) -> bool {
        let head = self.head.index.load(Ordering::SeqCst);
        let tail = self.tail.index.load(Ordering::SeqCst);
        head != tail || self.disconnected.load(Ordering::SeqCst)
    }

    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.index.load(Ordering::SeqCst);
            let head = self.head.index.load(Ordering::SeqCst);
            if self.tail.index.load(Ordering::SeqCst) == tail {
                let t = tail - tail / LAP;
                let h = head - head / LAP;
                return t.saturating_sub(h);
            }
        }
    }

    pub(crate) fn disconnect(&self) {
        if !self.disconnected.swap(true, Ordering::SeqCst) {
            self.receivers.notify_all();
        }
    }
}

impl<T> Drop for Channel<T> {
    fn drop(&mut self) {
        let tail = *self.tail.index.get_mut();
        let mut head = *self.head.index.get_mut();
        let block = self.head.block.get_mut();
        let spare = self.spare.get_mut();
        // Yields the unread slots and frees each block once passed; at the
        // end frees the last block and the spare, so that this also happens
        // when a message's destructor panics (the guard calls it again).
        let mut next = || loop {
            if head == tail {
                for b in [
                    std::mem::replace(block, ptr::null_mut()),
                    std::mem::replace(spare, ptr::null_mut()),
                ] {
                    if !b.is_null() {
                        // SAFETY: the last block and the spare are owned by
                        // the channel; each pointer is cleared as it is freed.
                        drop(unsafe { Box::from_raw(b) });
                    }
                }
                return None;
            }
            let offset = head % LAP;
            head += 1;
            if offset < BLOCK_CAP {
                // SAFETY: the head block is owned by the channel.
                return Some(unsafe { (**block).slots[offset].value.get() });
            }
            // The gap: every slot of the head block has been yielded (and
            // dropped); the next block is installed before a gap is passed.
            // SAFETY: the head block is owned by the channel, freed once.
            unsafe {
                let next = *(**block).next.get_mut();
                drop(Box::from_raw(std::mem::replace(block, next)));
            }
        };
        // SAFETY: no handle remains, so no operation is in flight; every
        // slot in head..tail is written and unread, and yielded once.
        unsafe { super::drop_unread::<T>(&mut next) };
    }
}
