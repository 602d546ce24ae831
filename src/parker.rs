//! Parking of scheduler threads on a futex.
//!
//! One `Parker` per scheduler thread. Its state word is `EMPTY`, `PARKED`
//! or `NOTIFIED`; `unpark` before `park` makes the next `park` return at
//! once (a token, like `std::thread::park`). `unpark` makes the `futex` wake
//! system call only when the thread is actually asleep.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const EMPTY: u32 = 0;
const PARKED: u32 = 1;
const NOTIFIED: u32 = 2;

pub(crate) struct Parker {
    state: AtomicU32,
}

impl Parker {
    pub(crate) const fn new() -> Self {
        Parker {
            state: AtomicU32::new(EMPTY),
        }
    }

    /// Sleeps until `unpark` or until `timeout` passes (None = no timeout).
    /// May return spuriously. Executed only by the owner thread.
    pub(crate) fn park(&self, timeout: Option<Duration>) {
        // Acquire pairs with the Release swap in `unpark`: whatever the
        // unparker published before is visible after we consume the token.
        if self
            .state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        if self
            .state
            .compare_exchange(EMPTY, PARKED, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            // NOTIFIED arrived in between.
            self.state.store(EMPTY, Ordering::Relaxed);
            return;
        }
        futex_wait(&self.state, PARKED, timeout);
        // Woken, timed out or spurious: consume whatever is there.
        self.state.swap(EMPTY, Ordering::Acquire);
    }

    /// Consumes a pending token without sleeping: true if `unpark` came
    /// since the last `park`. For an owner about to sleep somewhere else
    /// (the IO driver's `epoll_wait`) that must not miss an `unpark`.
    /// SeqCst: see `unpark`.
    pub(crate) fn take_token(&self) -> bool {
        self.state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Wakes the owner (or makes its next park return at once).
    /// SeqCst, not just Release: `Shared::unpark_worker` loads the reactor's
    /// `blocked` word after this swap, and the IO driver stores `blocked`
    /// before `take_token`; in one total order, either the waker sees the
    /// driver blocked (and signals its eventfd) or the driver sees the token.
    pub(crate) fn unpark(&self) {
        if self.state.swap(NOTIFIED, Ordering::SeqCst) == PARKED {
            futex_wake(&self.state);
        }
    }
}

/// A relative timeout as the kernel takes it (futex, epoll_pwait2).
pub(crate) fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(timespec);
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`; `tsp` is null or
    // points at a live timespec (a relative timeout).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}
