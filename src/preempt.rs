//! Preemption: an allocator hook, `check!()`, and no-preempt regions.
//!
//! An actor that hogs its thread is made to yield at a *preemption point*
//! once it has run longer than its timeslice:
//! - every `alloc_interval`-th allocation it makes (through
//!   [`PreemptAlloc`], registered as the global allocator by the default
//!   feature `global-allocator`);
//! - every [`CHECK_INTERVAL`]-th `smarm::check!()` it passes, for loops that
//!   never allocate.
//!
//! The counting path is a thread-local decrement and a branch (the hook also
//! counts the thread's allocations, one increment on the same line, which
//! the steady-state tests read); only when the count runs out is the TSC
//! read. `check!()` is also where a pending kill
//! reaches a loop that never blocks: it unwinds the actor there (an
//! allocation never does). The slice is measured from the first such
//! check after the actor was switched in (so a switch-in costs no TSC read).
//!
//! # Where preemption never happens
//! - on plain threads and in the scheduler context (the counters are zero
//!   there: the hook is inert);
//! - while the running context holds a [`NoPreempt`] guard: the runtime's
//!   own critical sections (run queues, channels, timers, the stack pool,
//!   IO, supervision) take one, and users take one with [`disable`];
//! - while the thread is panicking (unwinding allocates).
//!
//! The no-preempt count belongs to the actor, not to the thread: it is saved
//! when the actor switches away and restored when it resumes, so a guard
//! held across a voluntary blocking call (which may move the actor to another
//! thread) is still counted where it is dropped.
//!
//! # Thread affinity
//! An actor preempted at a preemption point resumes on the same OS thread
//! (it is *pinned* until its next voluntary suspension), so thread-affine
//! state it holds across an allocation (a `RefCell` borrow of a
//! thread-local, a `std::sync::Mutex` guard, a cached TLS address) stays on
//! its thread. Other actors on that thread can still run in between: hold a
//! [`disable`] guard around such state.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::marker::PhantomData;

/// `check!()` reads the TSC every this many calls.
pub const CHECK_INTERVAL: u32 = 32;

struct State {
    /// Allocations left before the next slice check; 0 = hook inert.
    alloc_countdown: Cell<u32>,
    /// `check!()` calls left before the next slice check; 0 = inert.
    check_countdown: Cell<u32>,
    /// Nesting depth of no-preempt guards of the running context.
    no_preempt: Cell<u32>,
    /// TSC at the first check of the current slice; 0 = not yet read.
    slice_start: Cell<u64>,
    /// This worker's runtime settings.
    alloc_interval: Cell<u32>,
    timeslice: Cell<u64>,
    /// Allocations (alloc, alloc_zeroed, realloc) this thread has made
    /// through the hook: what tests of "allocates nothing in steady state"
    /// read (`__private::thread_allocations`).
    allocs: Cell<u64>,
}

thread_local! {
    static STATE: State = const {
        State {
            alloc_countdown: Cell::new(0),
            check_countdown: Cell::new(0),
            no_preempt: Cell::new(0),
            slice_start: Cell::new(0),
            alloc_interval: Cell::new(0),
            timeslice: Cell::new(u64::MAX),
            allocs: Cell::new(0),
        }
    };
}

/// How many allocations the calling thread has made through
/// [`PreemptAlloc`] (0 where smarm's allocator is not the global one). In
/// an actor, that is its scheduler thread's count. Not inlined: the count
/// is this thread's. (For tests: `smarm::__private::thread_allocations`.)
#[doc(hidden)]
#[inline(never)]
pub fn thread_allocations() -> u64 {
    STATE.try_with(|s| s.allocs.get()).unwrap_or(0)
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86-64 CPU and has no side effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// While a `NoPreempt` lives, the running actor makes no involuntary yield.
/// Guards nest. Voluntary blocking calls (`recv`, `sleep`, ...) still work.
/// Not `Send`: drop it in the actor that took it.
#[must_use = "preemption is disabled only while the guard lives"]
pub struct NoPreempt {
    _not_send: PhantomData<*const ()>,
}

/// Returns a guard during which no involuntary yield happens.
///
/// (Not inlined, like every thread-local access of smarm that can sit on
/// either side of a switch: the compiler must not reuse a thread-local
/// address computed on the thread the actor ran on before.)
#[inline(never)]
pub fn disable() -> NoPreempt {
    STATE.with(|s| s.no_preempt.set(s.no_preempt.get() + 1));
    NoPreempt {
        _not_send: PhantomData,
    }
}

impl Drop for NoPreempt {
    #[inline(never)]
    fn drop(&mut self) {
        STATE.with(|s| s.no_preempt.set(s.no_preempt.get() - 1));
    }
}

/// True while preemption is disabled in the running context.
pub fn is_disabled() -> bool {
    STATE.with(|s| s.no_preempt.get() != 0)
}

/// A scheduler thread starts: records its runtime's settings.
pub(crate) fn worker_started(alloc_interval: u32, timeslice: u64) {
    STATE.with(|s| {
        s.alloc_interval.set(alloc_interval);
        s.timeslice.set(timeslice);
    });
}

/// Takes the running actor's no-preempt count out of the thread (it is
/// switching away); the thread's count becomes 0.
#[inline]
pub(crate) fn save_count() -> u32 {
    STATE.with(|s| s.no_preempt.replace(0))
}

/// An actor was switched in: arms the counters, restores its count.
#[inline]
pub(crate) fn enter_actor(count: u32) {
    STATE.with(|s| {
        s.alloc_countdown.set(s.alloc_interval.get());
        s.check_countdown.set(CHECK_INTERVAL);
        s.slice_start.set(0);
        s.no_preempt.set(count);
    });
}

/// The scheduler context was switched in: the hook is inert.
#[inline]
pub(crate) fn leave_actor() {
    STATE.with(|s| {
        s.alloc_countdown.set(0);
        s.check_countdown.set(0);
        s.no_preempt.set(0);
    });
}

/// A counter ran out: re-arm it and preempt if the slice has expired.
#[cold]
#[inline(never)]
fn slow_check(reset_alloc: bool) {
    let expired = STATE.with(|s| {
        if reset_alloc {
            s.alloc_countdown.set(s.alloc_interval.get());
        } else {
            s.check_countdown.set(CHECK_INTERVAL);
        }
        if s.no_preempt.get() != 0 {
            return None;
        }
        let now = rdtsc();
        let start = s.slice_start.get();
        if start == 0 {
            s.slice_start.set(now);
            return Some(false);
        }
        Some(now.wrapping_sub(start) >= s.timeslice.get())
    });
    // None: preemption is disabled here.
    let Some(expired) = expired else { return };
    if !crate::scheduler::may_preempt() {
        return;
    }
    if !reset_alloc && crate::scheduler::kill_pending() {
        // `check!()` is a suspension point the actor chose: a pending kill
        // unwinds it here (never inside an allocation).
        crate::scheduler::yield_actor();
    } else if expired && !std::thread::panicking() {
        // The actor stays on this thread (see "Thread affinity" above).
        // (Letting `check!()` preemptions migrate was measured: it turned
        // the run queues into pure round-robin and made fan-out compute
        // about 10% slower on two threads.)
        crate::scheduler::preempt_actor();
    }
}

/// The allocation hook's counting path.
#[inline(always)]
fn on_alloc() {
    let run_out = STATE
        .try_with(|s| {
            s.allocs.set(s.allocs.get().wrapping_add(1));
            let c = s.alloc_countdown.get();
            if c > 1 {
                s.alloc_countdown.set(c - 1);
                false
            } else {
                c == 1
            }
        })
        .unwrap_or(false);
    if run_out {
        slow_check(true);
    }
}

/// `smarm::check!()`: yields if the running actor's timeslice has expired.
/// Not inlined, so that the thread-local it reads is always this thread's.
#[inline(never)]
pub fn check() {
    let run_out = STATE.with(|s| {
        let c = s.check_countdown.get();
        if c > 1 {
            s.check_countdown.set(c - 1);
            false
        } else {
            c == 1
        }
    });
    if run_out {
        slow_check(false);
    }
}

/// Yields here if the running actor's timeslice has expired (for loops that
/// never allocate). Costs a thread-local decrement and a branch; outside an
/// actor it does nothing.
#[macro_export]
macro_rules! check {
    () => {
        $crate::preempt::check()
    };
}

/// A `GlobalAlloc` wrapper that makes allocations preemption points for
/// actors. Allocations on plain threads and scheduler stacks are unaffected.
///
/// ```ignore
/// #[global_allocator]
/// static A: smarm::preempt::PreemptAlloc<MyAllocator> = smarm::preempt::PreemptAlloc(MyAllocator);
/// ```
/// (with `default-features = false`, so that smarm does not register its own).
#[derive(Debug, Default, Clone, Copy)]
pub struct PreemptAlloc<A: GlobalAlloc = System>(pub A);

// SAFETY: every method forwards to the inner allocator unchanged; the hook
// only may switch stacks before forwarding, which does not affect the
// allocation contract.
unsafe impl<A: GlobalAlloc> GlobalAlloc for PreemptAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc();
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc();
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_alloc();
        // SAFETY: forwarded contract.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[cfg(feature = "global-allocator")]
#[global_allocator]
static GLOBAL: PreemptAlloc<System> = PreemptAlloc(System);
