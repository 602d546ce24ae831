//! `sleep` and `sleep_until`: timed parks on the runtime's timers.

use std::time::{Duration, Instant};

use crate::park;

/// Suspends the running actor for at least `d` (its thread runs others).
/// On a plain thread, `std::thread::sleep`.
pub fn sleep(d: Duration) {
    if crate::scheduler::in_actor() {
        sleep_until(Instant::now() + d);
    } else {
        std::thread::sleep(d);
    }
}

/// Suspends the running actor until `deadline` (never earlier). On a plain
/// thread, a thread sleep.
pub fn sleep_until(deadline: Instant) {
    if !crate::scheduler::in_actor() {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        return;
    }
    // Wake-ups before the deadline (a stray unpark) just park again.
    while Instant::now() < deadline {
        park::park_until(deadline);
    }
}

/// The raw register-switch floor: `n` round trips between two bare contexts
/// (no scheduler), returning the time taken. Used by the `switch` bench.
pub fn raw_switch_pingpong(n: u64) -> Duration {
    use crate::arch;
    struct Pair {
        main_sp: *mut u8,
        co_sp: *mut u8,
        n: u64,
    }
    unsafe extern "C" fn co(arg: usize) -> ! {
        // SAFETY: `arg` is the Pair below, live for the whole ping-pong.
        let p = unsafe { &mut *(arg as *mut Pair) };
        loop {
            // SAFETY: main_sp is the suspended main context.
            unsafe { arch::switch_jmp(&mut p.co_sp, p.main_sp, 0) };
        }
    }
    let stack = crate::stack::class_for(64 * 1024)
        .and_then(crate::stack::alloc)
        .expect("stack");
    let mut pair = Pair {
        main_sp: std::ptr::null_mut(),
        co_sp: std::ptr::null_mut(),
        n,
    };
    // SAFETY: a fresh stack of ours; `co` never returns.
    pair.co_sp = unsafe { arch::init_stack(stack.top(), co, &mut pair as *mut Pair as usize) };
    let t = Instant::now();
    for _ in 0..pair.n {
        // SAFETY: co_sp is the suspended coroutine context.
        unsafe { arch::switch_jmp(&mut pair.main_sp, pair.co_sp, 0) };
    }
    let el = t.elapsed();
    crate::stack::free(stack);
    el
}
