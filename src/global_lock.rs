//! Global locks: the mutexes that every thread of the process, or every
//! scheduler thread of a runtime, may take (the injector, the idle list,
//! the free lists of cells and stacks, the reactor's slab, ...).
//!
//! They are all taken through [`lock`], which counts, per thread, how many
//! times the thread took one. The hot paths (spawn, yield, channel
//! hand-offs, timers) are meant to take none in steady state: the free
//! lists are reached once per batch, the injector only when actors come
//! from outside. `tests/steady_state.rs` reads the count
//! (`smarm::__private::thread_global_locks`) to check that claim.
//!
//! Per-worker locks (a worker's timer heap, its inbox) and per-object
//! locks (a channel's, a registration's waiters) are not global and are
//! not counted here.

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard};

thread_local! {
    /// Global locks this thread has taken.
    static TAKEN: Cell<u64> = const { Cell::new(0) };
}

/// Locks the global mutex `m`, ignoring poisoning (no critical section of
/// smarm's leaves its data inconsistent when it panics), and counts the
/// lock against this thread.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    count();
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Not inlined, so that the thread-local it writes is always this
/// thread's, even in a caller that switched threads before calling.
#[inline(never)]
fn count() {
    // During thread teardown the count is gone: nothing to record.
    let _ = TAKEN.try_with(|t| t.set(t.get() + 1));
}

/// Global locks the calling thread has taken so far. (For tests:
/// `smarm::__private::thread_global_locks`.)
#[doc(hidden)]
#[inline(never)]
pub fn thread_count() -> u64 {
    TAKEN.try_with(Cell::get).unwrap_or(0)
}
