//! Actor control blocks ("cells") and the slab that owns them.
//!
//! Every actor has one [`ActorCell`]: its scheduling state, its saved stack
//! pointer, its closure and then its result, its joiner, its name. Cells live
//! in a process-wide slab of fixed-address chunks and are recycled, never
//! freed: a [`Pid`](crate::Pid) is the cell's index plus a generation, so
//! `kill(pid)` finds its cell in O(1) and recognises a stale pid by its
//! generation. Allocation and release go through a per-thread free list that
//! exchanges batches with a global list, so spawn and exit allocate nothing
//! and take no global lock in steady state.
//!
//! # Reference counting
//! `refs` counts: the actor's own life (released when it has finished), its
//! `JoinHandle` (released on join or drop) and every [`ActorRef`] (wakers held
//! by channels, timers, joiners). The last release recycles the cell: it drops
//! what the cell still owns and bumps the generation.
//!
//! # State word
//! `state` holds the scheduling state in its low bits and flags above:
//!
//! | bits | meaning |
//! |------|---------|
//! | 0-2  | `FREE`, `ACTIVE` (in a run queue, running, or being switched away from), `PARKED` (suspended until unparked), `DONE` |
//! | 3    | `NOTIFIED`: the wake-up token (see `park.rs`) |
//! | 4    | `KILL`: kill requested |
//! | 5    | `JOIN_WAITING`: `joiner` holds the waker of a joiner |
//!
//! Queued and running are one state, `ACTIVE`, on purpose: nobody but the
//! thread that runs an actor needs to tell them apart, so picking an actor
//! and yielding touch no shared word at all. Transitions (who performs each):
//! - spawn: `FREE -> ACTIVE` (the spawner, before publishing the cell);
//! - park: `ACTIVE -> PARKED` by the context switched to, once the actor's
//!   stack is no longer in use (see `scheduler.rs`), unless `NOTIFIED` was
//!   set meanwhile (then the token is consumed and it is re-queued);
//! - unpark: `PARKED -> ACTIVE` and enqueue (whoever wins the CAS), or set
//!   `NOTIFIED` on an `ACTIVE` actor;
//! - exit: `ACTIVE -> DONE` after the switch away from its stack.

use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::mem::{align_of, size_of, MaybeUninit};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::actor::{Pid, Signal};
use crate::channel::Sender;
use crate::panic::contain;
use crate::park::Unparker;
use crate::stack::Stack;

pub(crate) const ST_MASK: u32 = 0b111;
pub(crate) const FREE: u32 = 0;
pub(crate) const ACTIVE: u32 = 1;
pub(crate) const PARKED: u32 = 3;
pub(crate) const DONE: u32 = 4;
pub(crate) const NOTIFIED: u32 = 1 << 3;
pub(crate) const KILL: u32 = 1 << 4;
pub(crate) const JOIN_WAITING: u32 = 1 << 5;

/// Inline storage for the closure and then the result.
pub(crate) type Payload = MaybeUninit<[u128; 4]>;

/// What the cell's payload holds, per the actor's type parameters.
pub(crate) struct BodyVTable {
    /// Takes the closure out of the payload, runs it, stores the result.
    /// Returns the panic payload if it panicked. Runs on the actor's stack.
    pub run: unsafe fn(*const ActorCell) -> Result<(), Box<dyn Any + Send>>,
    /// Drops a closure that never ran.
    pub drop_closure: unsafe fn(*const ActorCell),
    /// Drops a result that was never taken.
    pub drop_result: unsafe fn(*const ActorCell),
}

/// Where an actor's outcome stands (`ActorCell::outcome`).
pub(crate) const OUT_NONE: u8 = 0; // closure not yet run (payload = closure)
pub(crate) const OUT_VALUE: u8 = 1; // payload = result
pub(crate) const OUT_PANIC: u8 = 2; // `panic` holds the payload
pub(crate) const OUT_TAKEN: u8 = 3; // the joiner took it; payload empty

/// The pending timer of a parked actor (owned by a worker's timer heap; all
/// fields are guarded by that heap's lock).
pub(crate) struct TimerSlot {
    /// Worker index + 1 whose heap holds the entry; 0 = none.
    pub owner: usize,
    /// Position in that heap.
    pub pos: usize,
    /// Deadline in the runtime clock's nanoseconds.
    pub deadline: u64,
}

/// An actor's control block. See the module docs for who touches what.
///
/// The fields are laid out by when they are touched (`repr(C)` keeps the
/// order): every run, park and wake-up of the actor reads or writes its
/// first cache line (state, saved stack pointer, runtime, stack, no-preempt
/// count, the flags); a sleep, a join and the queues touch the second
/// (timer slot, joiner, queue link, vtable); the payload fills the third;
/// what only spawn, exit or a kill reads (pid, panic payload, name,
/// supervisor) is in the fourth. Between two steps of an actor that waits
/// behind thousands of others its cell has left the caches, so each line a
/// step touches is a miss.
#[repr(C, align(64))]
pub(crate) struct ActorCell {
    // Line 0: every step.
    pub state: AtomicU32,
    pub refs: AtomicU32,
    /// Saved stack pointer while suspended. Touched only by the thread that
    /// switches the actor in or out.
    pub sp: UnsafeCell<*mut u8>,
    /// The runtime the actor belongs to (`scheduler::Shared`).
    pub runtime: Cell<*const crate::scheduler::Shared>,
    pub stack: UnsafeCell<Option<Stack>>,
    /// The actor's no-preempt count while it is switched out.
    pub no_preempt: Cell<u32>,
    pub outcome: Cell<u8>,
    pub stack_class: Cell<u8>,
    /// Set while the actor was preempted inside the allocator: it resumes on
    /// the same OS thread until its next voluntary suspension.
    pub pinned: Cell<bool>,
    /// The kill has been delivered (the actor is unwinding with `Killed`).
    pub kill_delivered: Cell<bool>,
    /// A panic (or the kill) started unwinding this actor. Only meaningful
    /// while `std::thread::panicking()` also says so (user code may catch).
    pub unwinding: Cell<bool>,
    // Line 1: sleeping, joining, queueing, starting.
    pub timer: UnsafeCell<TimerSlot>,
    /// The worker a pinned actor must resume on.
    pub home: Cell<usize>,
    /// Intrusive link for the injector and pinned queues.
    pub next: AtomicPtr<ActorCell>,
    pub vtable: Cell<&'static BodyVTable>,
    pub joiner: UnsafeCell<Option<Unparker>>,
    // Lines 2-3: the closure, then the result.
    pub payload: UnsafeCell<Payload>,
    // Line 3: spawn, exit, kill.
    /// Current incarnation's pid (index | generation << 32).
    pub pid: AtomicU64,
    pub panic: UnsafeCell<Option<Box<dyn Any + Send>>>,
    pub name: UnsafeCell<Option<Box<str>>>,
    pub supervisor: UnsafeCell<Option<Sender<Signal>>>,
    /// Slab index (immutable).
    index: u32,
}

// SAFETY: cells are shared between threads by design; every field is either
// atomic or documented as owned by one context at a time (the thread running
// or switching the actor, the holder of the relevant lock, or the last
// reference holder).
unsafe impl Sync for ActorCell {}
// SAFETY: as above.
unsafe impl Send for ActorCell {}

static NOOP_VTABLE: BodyVTable = BodyVTable {
    run: |_| Ok(()),
    drop_closure: |_| {},
    drop_result: |_| {},
};

impl ActorCell {
    fn new(index: u32) -> Self {
        ActorCell {
            state: AtomicU32::new(FREE),
            refs: AtomicU32::new(0),
            pid: AtomicU64::new(index as u64),
            sp: UnsafeCell::new(ptr::null_mut()),
            stack: UnsafeCell::new(None),
            next: AtomicPtr::new(ptr::null_mut()),
            runtime: Cell::new(ptr::null()),
            vtable: Cell::new(&NOOP_VTABLE),
            payload: UnsafeCell::new(MaybeUninit::uninit()),
            outcome: Cell::new(OUT_NONE),
            panic: UnsafeCell::new(None),
            joiner: UnsafeCell::new(None),
            name: UnsafeCell::new(None),
            stack_class: Cell::new(0),
            pinned: Cell::new(false),
            kill_delivered: Cell::new(false),
            no_preempt: Cell::new(0),
            unwinding: Cell::new(false),
            home: Cell::new(0),
            timer: UnsafeCell::new(TimerSlot {
                owner: 0,
                pos: 0,
                deadline: 0,
            }),
            supervisor: UnsafeCell::new(None),
            index,
        }
    }

    #[inline]
    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(self.pid.load(Ordering::Relaxed))
    }

    /// The actor's name, if it has one.
    ///
    /// # Safety
    /// The caller holds a reference and no one mutates the name (it is set
    /// before the cell is published and cleared only on recycling).
    pub(crate) unsafe fn name(&self) -> Option<&str> {
        // SAFETY: see the contract.
        unsafe { (*self.name.get()).as_deref() }
    }

    /// Adds a reference.
    #[inline]
    pub(crate) fn retain(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference; the last one recycles the cell.
    ///
    /// # Safety
    /// The caller owns one reference and does not use `self` afterwards.
    #[inline]
    pub(crate) unsafe fn release(&self) {
        if self.refs.fetch_sub(1, Ordering::Release) == 1 {
            std::sync::atomic::fence(Ordering::Acquire);
            // SAFETY: we dropped the last reference: nobody else uses the cell.
            unsafe { recycle(self) };
        }
    }

    /// Takes a reference only if the cell is live and still `pid`'s.
    pub(crate) fn try_retain(&self, pid: u64) -> bool {
        let mut r = self.refs.load(Ordering::Relaxed);
        loop {
            if r == 0 {
                return false;
            }
            match self
                .refs
                .compare_exchange_weak(r, r + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => r = x,
            }
        }
        if self.pid.load(Ordering::Acquire) == pid {
            true
        } else {
            // SAFETY: we own the reference we just took.
            unsafe { self.release() };
            false
        }
    }
}

/// Drops everything a finished cell still owns and returns it to the free list.
///
/// # Safety
/// No reference to the cell remains.
unsafe fn recycle(cell: &ActorCell) {
    debug_assert!(matches!(
        cell.state.load(Ordering::Relaxed) & ST_MASK,
        DONE | FREE
    ));
    let vt = cell.vtable.get();
    let pid = cell.pid();
    // Whatever the application owns is dropped under `contain`: the last
    // reference may go in a scheduler context or during a shutdown.
    match cell.outcome.get() {
        OUT_NONE => contain(pid, "dropping the closure", || {
            // SAFETY: no reference to the cell remains, and OUT_NONE says
            // the payload holds the closure that never ran.
            unsafe { (vt.drop_closure)(cell) }
        }),
        OUT_VALUE => contain(pid, "dropping the result", || {
            // SAFETY: no reference remains, and OUT_VALUE says the payload
            // holds the untaken result.
            unsafe { (vt.drop_result)(cell) }
        }),
        _ => {}
    }
    // SAFETY: as above, the cell is ours alone.
    unsafe {
        if let Some(p) = (*cell.panic.get()).take() {
            contain(pid, "dropping the panic payload", move || drop(p));
        }
        if let Some(sup) = (*cell.supervisor.get()).take() {
            contain(pid, "dropping the supervisor's sender", move || drop(sup));
        }
        *cell.joiner.get() = None;
        *cell.name.get() = None;
        debug_assert!((*cell.stack.get()).is_none());
    }
    cell.outcome.set(OUT_NONE);
    cell.vtable.set(&NOOP_VTABLE);
    cell.pinned.set(false);
    cell.kill_delivered.set(false);
    cell.no_preempt.set(0);
    cell.unwinding.set(false);
    // SAFETY: as above.
    unsafe { *cell.sp.get() = ptr::null_mut() };
    cell.runtime.set(ptr::null());
    // New generation: stale pids no longer match.
    let pid = cell.pid.load(Ordering::Relaxed);
    cell.pid.store(pid.wrapping_add(1 << 32), Ordering::Release);
    cell.state.store(FREE, Ordering::Relaxed);
    free_cell(cell as *const ActorCell as *mut ActorCell);
}

// ---------------------------------------------------------------------------
// The slab
// ---------------------------------------------------------------------------

const CHUNK: usize = 1024;
const MAX_CHUNKS: usize = 16 * 1024; // 16 M cells
const BATCH: usize = 128;

#[allow(clippy::declare_interior_mutable_const)]
const NULL_CHUNK: AtomicPtr<ActorCell> = AtomicPtr::new(ptr::null_mut());
static CHUNKS: [AtomicPtr<ActorCell>; MAX_CHUNKS] = [NULL_CHUNK; MAX_CHUNKS];
static CHUNK_COUNT: AtomicUsize = AtomicUsize::new(0);

struct SendPtr(*mut ActorCell);
// SAFETY: free cells are owned by whichever list holds them.
unsafe impl Send for SendPtr {}
static GLOBAL_FREE: Mutex<Vec<SendPtr>> = Mutex::new(Vec::new());

struct FreeList(Vec<*mut ActorCell>);
impl Drop for FreeList {
    fn drop(&mut self) {
        let mut g = crate::global_lock::lock(&GLOBAL_FREE);
        g.extend(self.0.drain(..).map(SendPtr));
    }
}
thread_local! {
    static FREE_CELLS: RefCell<FreeList> = const { RefCell::new(FreeList(Vec::new())) };
}

fn refill(out: &mut Vec<*mut ActorCell>) {
    let mut g = crate::global_lock::lock(&GLOBAL_FREE);
    if g.is_empty() {
        let n = CHUNK_COUNT.load(Ordering::Relaxed);
        assert!(
            n < MAX_CHUNKS,
            "smarm: more than {} live actors",
            MAX_CHUNKS * CHUNK
        );
        let chunk: Box<[ActorCell]> = (0..CHUNK)
            .map(|i| ActorCell::new((n * CHUNK + i) as u32))
            .collect();
        let base = Box::leak(chunk).as_mut_ptr();
        CHUNKS[n].store(base, Ordering::Release);
        CHUNK_COUNT.store(n + 1, Ordering::Release);
        // Hand out low indices first.
        g.extend((0..CHUNK).rev().map(|i| SendPtr(base.wrapping_add(i))));
    }
    let take = g.len().min(BATCH);
    let at = g.len() - take;
    out.extend(g.drain(at..).map(|p| p.0));
}

/// Takes a free cell. Its `refs` is 0 and its state `FREE`.
pub(crate) fn alloc_cell() -> &'static ActorCell {
    let p = FREE_CELLS
        .try_with(|f| {
            let mut f = f.borrow_mut();
            if f.0.is_empty() {
                f.0.reserve(2 * BATCH);
                refill(&mut f.0);
            }
            f.0.pop().expect("refilled")
        })
        .unwrap_or_else(|_| {
            let mut v = Vec::new();
            refill(&mut v);
            let p = v.pop().expect("refilled");
            crate::global_lock::lock(&GLOBAL_FREE).extend(v.into_iter().map(SendPtr));
            p
        });
    // SAFETY: slab cells are never deallocated.
    unsafe { &*p }
}

fn free_cell(p: *mut ActorCell) {
    let r = FREE_CELLS.try_with(|f| {
        let mut f = f.borrow_mut();
        f.0.push(p);
        if f.0.len() >= 2 * BATCH {
            let at = f.0.len() - BATCH;
            let mut g = crate::global_lock::lock(&GLOBAL_FREE);
            g.extend(f.0.drain(at..).map(SendPtr));
        }
    });
    if r.is_err() {
        crate::global_lock::lock(&GLOBAL_FREE).push(SendPtr(p));
    }
}

/// The cell a pid names, with a reference taken, if that actor is live.
pub(crate) fn lookup(pid: Pid) -> Option<&'static ActorCell> {
    let raw = pid.raw();
    let index = (raw & 0xFFFF_FFFF) as usize;
    let chunk = index / CHUNK;
    if chunk >= CHUNK_COUNT.load(Ordering::Acquire) {
        return None;
    }
    let base = CHUNKS[chunk].load(Ordering::Acquire);
    // SAFETY: published chunks are never freed; the index is within it.
    let cell = unsafe { &*base.add(index % CHUNK) };
    cell.try_retain(raw).then_some(cell)
}

/// Calls `f` on every live cell (with a reference held during the call).
pub(crate) fn for_each_live(mut f: impl FnMut(&'static ActorCell)) {
    let n = CHUNK_COUNT.load(Ordering::Acquire);
    for chunk in &CHUNKS[..n] {
        let base = chunk.load(Ordering::Acquire);
        for i in 0..CHUNK {
            // SAFETY: published chunks are never freed.
            let cell = unsafe { &*base.add(i) };
            let pid = cell.pid.load(Ordering::Acquire);
            if cell.refs.load(Ordering::Relaxed) != 0 && cell.try_retain(pid) {
                f(cell);
                // SAFETY: we own the reference taken by try_retain.
                unsafe { cell.release() };
            }
        }
    }
}

/// Asserts at compile time that a type fits the inline payload.
pub(crate) const fn fits_inline<X>() -> bool {
    size_of::<X>() <= size_of::<Payload>() && align_of::<X>() <= align_of::<Payload>()
}

/// A reference-counted handle on a cell (a waker, in effect).
pub(crate) struct ActorRef(pub(crate) &'static ActorCell);

impl Clone for ActorRef {
    #[inline]
    fn clone(&self) -> Self {
        self.0.retain();
        ActorRef(self.0)
    }
}

impl Drop for ActorRef {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: an ActorRef owns one reference.
        unsafe { self.0.release() };
    }
}

impl ActorRef {
    /// Wraps a cell whose reference the caller already owns.
    #[inline]
    pub(crate) fn from_owned(c: &'static ActorCell) -> Self {
        ActorRef(c)
    }

    #[inline]
    pub(crate) fn ptr_eq(&self, o: &ActorRef) -> bool {
        ptr::eq(self.0, o.0)
    }

    #[inline]
    pub(crate) fn unpark(&self) {
        crate::scheduler::unpark_cell(self.0);
    }

    #[inline]
    pub(crate) fn unpark_owned_as(self, lifo: bool) {
        crate::scheduler::unpark_cell_as(self.0, lifo);
    }
}
