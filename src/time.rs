//! `sleep` and `sleep_until`: timed parks on the runtime's timers.

use std::time::{Duration, Instant};

use crate::park;

/// The deadline `d` from now; None when it is too far to represent (as
/// `Duration::MAX`), which every timed wait of smarm takes to mean "no
/// deadline", as std's `thread::sleep` and timeouts do.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Suspends the running actor for at least `d` (its thread runs others;
/// a `d` too large for a deadline, as `Duration::MAX`, never ends). On a
/// plain thread, `std::thread::sleep`.
pub fn sleep(d: Duration) {
    if crate::scheduler::in_actor() {
        let now = Instant::now();
        match now.checked_add(d) {
            Some(deadline) => wait_until(deadline, now),
            // No deadline: a stray unpark parks again; a kill unwinds the
            // actor inside `park`.
            None => loop {
                park::park();
            },
        }
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
    wait_until(deadline, Instant::now());
}

/// Parks the running actor until `deadline`, `now` being the clock's value
/// a moment ago. One clock read a sleep: a wake-up by the timer means the
/// deadline has passed (`park_until`); any other wake-up before it (a stray
/// unpark) reads the clock and parks again.
fn wait_until(deadline: Instant, mut now: Instant) {
    while now < deadline {
        if park::park_until(deadline) {
            return;
        }
        now = Instant::now();
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::park;
    use crate::runtime::{self, Config};

    /// A wake-up that is not the timer's (here: unparks sent while the
    /// actor sleeps) does not end the sleep: it reads the clock and parks
    /// again. Only the lower bound is asserted.
    #[test]
    fn a_sleep_woken_by_a_stray_unpark_sleeps_on() {
        let rt = runtime::init(Config::default().threads(2));
        let early = rt.block_on(|| {
            let d = Duration::from_millis(20);
            let sleepers: Vec<_> = (0..4)
                .map(|_| {
                    let (tx, rx) = crate::channel::<park::Unparker>();
                    let h = crate::spawn(move || {
                        tx.send(park::current()).expect("waker side gone");
                        let t = Instant::now();
                        super::sleep(d);
                        let slept = t.elapsed();
                        let deadline = Instant::now() + Duration::from_millis(5);
                        super::sleep_until(deadline);
                        slept < d || Instant::now() < deadline
                    });
                    (h, rx.recv().expect("sleeper gone"))
                })
                .collect();
            for _ in 0..50 {
                for (_, u) in &sleepers {
                    u.unpark();
                }
                crate::yield_now();
            }
            sleepers
                .into_iter()
                .map(|(h, _)| h.join().expect("sleeper failed"))
                .filter(|&early| early)
                .count()
        });
        assert_eq!(early, 0);
    }
}
