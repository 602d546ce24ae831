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
//!    value, set the slot's `WRITE` bit (Release).
//! 2. Receive: read `head` and `head_block`; if at the gap, spin; if
//!    `head == tail`, empty. Claim by CAS `head -> head + 1`. The claimer of
//!    the last slot waits for `block.next`, then moves `head_block` and
//!    skips the gap. Wait for `WRITE`, read the value.
//! 3. Freeing a block: each reader sets `READ` on its slot after reading.
//!    The reader of the last slot walks slots `0..BLOCK_CAP - 1`: if one is
//!    not yet read it sets `DESTROY` there and leaves; that slot's reader,
//!    seeing `DESTROY`, continues the walk from the next slot. Whoever
//!    finishes the walk frees the block, so it is freed exactly once, after
//!    every slot has been read.
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

const WRITE: usize = 1;
const READ: usize = 2;
const DESTROY: usize = 4;

struct Slot<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    state: AtomicUsize,
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
                state: AtomicUsize::new(0),
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

    /// Frees `this` once every slot from `start` on has been read.
    ///
    /// # Safety
    /// `this` is a live block whose last slot has been read, and the caller
    /// is the context entitled to continue the walk from `start`.
    unsafe fn destroy(this: *mut Block<T>, start: usize) {
        // The last slot is the one whose reader began the walk.
        for i in start..BLOCK_CAP - 1 {
            // SAFETY: the block is alive: slot i is unread or being read,
            // and its reader would free the block only after this walk
            // hands over to it.
            let slot = unsafe { &(*this).slots[i] };
            // AcqRel: Acquire pairs with the reader's Release `READ`; our
            // Release hands the rest of the walk to that reader.
            if slot.state.load(Ordering::Acquire) & READ == 0
                && slot.state.fetch_or(DESTROY, Ordering::AcqRel) & READ == 0
            {
                return;
            }
        }
        // SAFETY: every slot has been read and no one else walks: free.
        drop(unsafe { Box::from_raw(this) });
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
            receivers: Waiters::new(),
        }
    }

    fn push(&self, value: T) {
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
                next_block = Some(Block::new());
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
                        slot.state.fetch_or(WRITE, Ordering::Release);
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

    fn pop(&self) -> Result<T, TryRecvError> {
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
                        let mut s = 0;
                        // Acquire pairs with the writer's Release `WRITE`.
                        while slot.state.load(Ordering::Acquire) & WRITE == 0 {
                            backoff(&mut s);
                        }
                        let v = (*slot.value.get()).assume_init_read();
                        if offset + 1 == BLOCK_CAP {
                            Block::destroy(block, 0);
                        } else if slot.state.fetch_or(READ, Ordering::AcqRel) & DESTROY != 0 {
                            Block::destroy(block, offset + 1);
                        }
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

    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
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
        let mut head = *self.head.index.get_mut();
        let tail = *self.tail.index.get_mut();
        let mut block = *self.head.block.get_mut();
        // SAFETY: no handle remains, so no operation is in flight; every
        // slot in head..tail is written and unread, and the blocks from
        // `head_block` on are owned by the channel.
        unsafe {
            while head != tail {
                let offset = head % LAP;
                if offset < BLOCK_CAP {
                    (*(*block).slots[offset].value.get()).assume_init_drop();
                } else {
                    let next = *(*block).next.get_mut();
                    drop(Box::from_raw(block));
                    block = next;
                }
                head += 1;
            }
            if !block.is_null() {
                drop(Box::from_raw(block));
            }
        }
    }
}
