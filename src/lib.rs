//! smarm: a stackful, preemptive actor runtime with Erlang-style supervision.
//!
//! Actors are plain closures on their own small stacks: they block in
//! `recv()`, `sleep()` or a socket read like ordinary threads, cost a cell of
//! bookkeeping and a pooled 64 KiB stack, and switch in nanoseconds.
//!
//! ```no_run
//! use smarm::runtime::{self, Config};
//! let rt = runtime::init(Config::default());
//! let answer = rt.block_on(|| {
//!     let (tx, rx) = smarm::channel();
//!     smarm::spawn(move || tx.send(42).unwrap());
//!     rx.recv().unwrap()
//! });
//! assert_eq!(answer, 42);
//! ```
//!
//! The design is described in LOOM.md.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("smarm supports x86-64 Linux only: its context switch is x86-64 assembly and its stacks, parking and IO use Linux system calls");

mod actor;
mod arch;
mod cell;
pub mod channel;
mod global_lock;
pub mod io;
pub mod net;
mod overflow;
mod panic;
pub(crate) mod park;
mod parker;
pub mod preempt;
mod runqueue;
pub mod runtime;
pub(crate) mod scheduler;
mod stack;
mod steal;
pub mod supervisor;
mod time;
mod timer;
#[cfg(all(feature = "fast-unwind", not(target_feature = "crt-static")))]
mod unwind;
/// Without smarm's unwinder every panic goes to the system unwinder.
#[cfg(not(all(feature = "fast-unwind", not(target_feature = "crt-static"))))]
mod unwind {
    /// No unwinder entry sees panics start: only smarm's panic hook marks
    /// an actor as unwinding, so the runtime also goes by the thread's
    /// panic state to keep actors on their thread (see
    /// `scheduler::maybe_unwinding`).
    pub(crate) const SEES_PANIC_RAISES: bool = false;
    pub(crate) fn init() {}
    pub(crate) fn stats() -> Option<(usize, usize)> {
        None
    }
}

pub use actor::{
    kill, self_pid, spawn, spawn_under, yield_now, Builder, JoinHandle, Killed, Pid, Signal,
};
pub use channel::oneshot;
pub use channel::{
    bounded, channel, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender,
    TryRecvError, TrySendError,
};
pub use time::{sleep, sleep_until};

#[doc(hidden)]
pub mod __private {
    //! Support for smarm's own benchmarks and tests; not a public API.
    pub use crate::global_lock::thread_count as thread_global_locks;
    pub use crate::preempt::thread_allocations;
    pub use crate::runqueue::LOCAL_CAP as LOCAL_QUEUE_CAP;
    pub use crate::scheduler::scheduler_entries;
    pub use crate::stack::{
        guard_mode, pool_stats, trim as trim_stacks, trim_idle as trim_stacks_idle, PoolStats,
        MAX_WARM,
    };
    pub use crate::time::raw_switch_pingpong;

    /// For the calling thread: (actor panics unwound by smarm's own
    /// unwinder, actor panics it handed to the system unwinder); None
    /// without the `fast-unwind` feature.
    pub fn unwind_stats() -> Option<(usize, usize)> {
        crate::unwind::stats()
    }
}
