//! The hot paths allocate nothing, take no global lock and make no system
//! call in steady state: after a warm-up, a thousand more spawns (joined,
//! detached or supervised), yields, channel hand-offs, armed and cancelled
//! timers and fired timers do none of these on the scheduler thread that
//! runs them; allocations through the allocator hook, preempted at its slow
//! path, make no more than their own allocation. Allocations are counted by smarm's allocator hook (which the
//! default `global-allocator` feature registers), global locks by the one
//! function through which smarm takes them, system calls by the kernel's
//! syscall user dispatch (see `kernel_entries`).
//!
//! One scheduler thread, so every actor of a test runs on the thread whose
//! counts the test reads.

use std::time::{Duration, Instant};

use smarm::__private::{thread_allocations, thread_global_locks};
use smarm::runtime::{self, Config, Runtime};

fn one_thread() -> Runtime {
    runtime::init(Config::default().threads(1))
}

/// What `n` repetitions of an operation cost after `n` of warm-up.
#[derive(Debug)]
struct Cost {
    allocations: u64,
    global_locks: u64,
    /// The numbers of the system calls made, in order (the first 64 of
    /// them; None: the kernel cannot count them, and the test says so on
    /// stderr).
    syscalls: Option<Vec<i32>>,
}

impl Cost {
    /// Asserts that `what` allocated nothing, took no global lock and
    /// entered the kernel never.
    fn assert_free(&self, what: &str) {
        self.assert_free_but(what, 0);
    }

    /// Asserts that `what` made `allocations` allocations, took no global
    /// lock and entered the kernel never.
    fn assert_free_but(&self, what: &str, allocations: u64) {
        assert_eq!(self.allocations, allocations, "allocations in {what}");
        assert_eq!(self.global_locks, 0, "global locks taken in {what}");
        match &self.syscalls {
            Some(calls) => assert!(calls.is_empty(), "system calls in {what}: {calls:?}"),
            None => eprintln!(
                "steady_state: system calls in {what} not counted: \
                 this kernel has no syscall user dispatch (Linux 5.11+)"
            ),
        }
    }
}

/// Runs `op` `n` times to warm up, then `n` times more, and returns what
/// the second `n` cost on this thread. Called in an actor, so "this thread"
/// is the scheduler thread that runs it.
fn steady_state(n: usize, mut op: impl FnMut()) -> Cost {
    for _ in 0..n {
        op();
    }
    let watch = kernel_entries::watch();
    let before = (thread_allocations(), thread_global_locks());
    watch.start();
    for _ in 0..n {
        op();
    }
    // Counted before `stop`, which collects the calls into a vector.
    let allocations = thread_allocations() - before.0;
    Cost {
        allocations,
        global_locks: thread_global_locks() - before.1,
        syscalls: watch.stop(),
    }
}

/// Spawns an actor that answers each value received on `ping` with the
/// value + 1 on the returned receiver, yielding `yields` times before each
/// answer; it ends when `ping`'s senders are gone.
fn echo(
    ping: smarm::Receiver<u64>,
    yields: usize,
) -> (smarm::Receiver<u64>, smarm::JoinHandle<()>) {
    let (pong_tx, pong_rx) = smarm::channel::<u64>();
    let h = smarm::spawn(move || {
        for v in ping.iter() {
            for _ in 0..yields {
                smarm::yield_now();
            }
            pong_tx.send(v + 1).expect("pinger gone");
        }
    });
    (pong_rx, h)
}

/// Counts the system calls of one thread with Linux's syscall user
/// dispatch (`PR_SET_SYSCALL_USER_DISPATCH`): while a selector byte says
/// "block", every system call the thread makes outside an allowed code
/// range is turned into a SIGSYS before the kernel runs it. The handler
/// records the call's number and then makes the call itself (selector set
/// to "allow" meanwhile) and puts its result where the interrupted code
/// expects it, so the runtime carries on as if nothing had happened. The
/// allowed range is the C library's signal return trampoline, whose
/// `rt_sigreturn` ends the handler.
///
/// Clock reads are not counted: a timed wait has to read the clock, which
/// the vDSO does without entering the kernel where the clock source allows
/// (TSC, kvm-clock), and a machine whose clock source does not makes it a
/// system call that is the platform's, not the runtime's.
mod kernel_entries {
    use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    const PR_SET_SYSCALL_USER_DISPATCH: libc::c_int = 59;
    const PR_SYS_DISPATCH_OFF: libc::c_ulong = 0;
    const PR_SYS_DISPATCH_ON: libc::c_ulong = 1;
    const ALLOW: u8 = 0;
    const BLOCK: u8 = 1;
    /// Bytes of the signal return trampoline (`mov $15, %eax; syscall`).
    const TRAMPOLINE_LEN: libc::c_ulong = 16;
    /// How many call numbers are kept (the count goes on beyond).
    const KEPT: usize = 64;

    /// The selector byte the kernel reads on every system call of a
    /// watched thread. Only one thread is watched at a time (`LOCK`).
    static SELECTOR: AtomicU8 = AtomicU8::new(ALLOW);
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static CALLS: [AtomicI32; KEPT] = [const { AtomicI32::new(0) }; KEPT];
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The SIGSYS of a dispatched call: siginfo's head and the `_sigsys`
    /// member of its union (x86-64 layout).
    #[repr(C)]
    struct SigsysInfo {
        signo: i32,
        errno: i32,
        code: i32,
        _pad: i32,
        call_addr: *mut libc::c_void,
        syscall: i32,
        arch: u32,
    }

    extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a SIGSYS siginfo (read through its
        // documented x86-64 layout) and the interrupted thread's ucontext,
        // ours to read and change until the handler returns.
        unsafe {
            let nr = (*info.cast::<SigsysInfo>()).syscall;
            if nr != libc::SYS_clock_gettime as i32 {
                let k = COUNT.fetch_add(1, Ordering::Relaxed);
                if k < KEPT {
                    CALLS[k].store(nr, Ordering::Relaxed);
                }
            }
            let g = &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs;
            let arg = |r: libc::c_int| g[r as usize];
            let (a1, a2, a3) = (arg(libc::REG_RDI), arg(libc::REG_RSI), arg(libc::REG_RDX));
            let (a4, a5, a6) = (arg(libc::REG_R10), arg(libc::REG_R8), arg(libc::REG_R9));
            let prev = SELECTOR.swap(ALLOW, Ordering::SeqCst);
            let ret: i64;
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as i64 => ret,
                in("rdi") a1, in("rsi") a2, in("rdx") a3,
                in("r10") a4, in("r8") a5, in("r9") a6,
                lateout("rcx") _, lateout("r11") _,
                options(nostack),
            );
            SELECTOR.store(prev, Ordering::SeqCst);
            g[libc::REG_RAX as usize] = ret;
        }
    }

    /// Installs the SIGSYS handler once; returns the signal return
    /// trampoline's address (the range the kernel always allows).
    fn trampoline() -> usize {
        static TRAMPOLINE: OnceLock<usize> = OnceLock::new();
        *TRAMPOLINE.get_or_init(|| {
            // SAFETY: installing a process-wide SIGSYS handler (nothing else
            // in these tests uses SIGSYS) and reading back the action, which
            // the C library completed with its return trampoline.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_sigsys as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut act.sa_mask);
                assert_eq!(libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()), 0);
                let mut now: libc::sigaction = std::mem::zeroed();
                assert_eq!(libc::sigaction(libc::SIGSYS, std::ptr::null(), &mut now), 0);
                now.sa_restorer.map_or(0, |f| f as usize)
            }
        })
    }

    /// Watches the calling thread's system calls between `start` and `stop`.
    pub struct Watch {
        _one: std::sync::MutexGuard<'static, ()>,
        on: bool,
    }

    /// Turns syscall user dispatch on for the calling thread (selector at
    /// "allow"); `on` is false where the kernel lacks it.
    pub fn watch() -> Watch {
        let one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tramp = trampoline();
        SELECTOR.store(ALLOW, Ordering::SeqCst);
        // Without the trampoline's address the handler could not return:
        // no dispatch then.
        // SAFETY: the selector is a static byte, valid for the thread's
        // life; the allowed range is the trampoline's code.
        let on = tramp != 0
            && unsafe {
                libc::prctl(
                    PR_SET_SYSCALL_USER_DISPATCH,
                    PR_SYS_DISPATCH_ON,
                    tramp as libc::c_ulong,
                    TRAMPOLINE_LEN,
                    SELECTOR.as_ptr() as libc::c_ulong,
                )
            } == 0;
        Watch { _one: one, on }
    }

    impl Watch {
        /// From here on, the thread's system calls are counted.
        pub fn start(&self) {
            COUNT.store(0, Ordering::SeqCst);
            SELECTOR.store(BLOCK, Ordering::SeqCst);
        }

        /// Stops counting; returns the numbers of the calls made since
        /// `start` (None where the kernel cannot count them).
        pub fn stop(self) -> Option<Vec<i32>> {
            SELECTOR.store(ALLOW, Ordering::SeqCst);
            let n = COUNT.load(Ordering::SeqCst);
            self.on.then(|| {
                (0..n.min(KEPT))
                    .map(|k| CALLS[k].load(Ordering::Relaxed))
                    .collect()
            })
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            SELECTOR.store(ALLOW, Ordering::SeqCst);
            if self.on {
                // SAFETY: turning the calling thread's dispatch off.
                unsafe { libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0) };
            }
        }
    }
}

#[test]
fn the_hook_counts_allocations() {
    let rt = one_thread();
    let counted = rt.block_on(|| {
        let before = thread_allocations();
        let v: Vec<u64> = Vec::with_capacity(16);
        drop(std::hint::black_box(v));
        thread_allocations() - before
    });
    assert_eq!(counted, 1);
}

#[test]
fn global_locks_are_counted() {
    let rt = one_thread();
    // A spawn from a plain thread goes through the injector, a global lock.
    let before = thread_global_locks();
    let h = rt.spawn(|| 1);
    let taken = thread_global_locks() - before;
    assert_eq!(h.join().expect("child failed"), 1);
    assert!(taken >= 1, "a spawn from outside took {taken} global locks");
}

#[test]
fn the_watch_counts_system_calls_and_they_still_work() {
    let rt = one_thread();
    let (want, got, calls) = rt.block_on(|| {
        // SAFETY: getppid has no preconditions.
        let want = unsafe { libc::getppid() };
        let watch = kernel_entries::watch();
        watch.start();
        // SAFETY: as above.
        let got = unsafe { libc::getppid() };
        (want, got, watch.stop())
    });
    assert_eq!(got, want, "the dispatched call returned its true result");
    match calls {
        Some(calls) => assert_eq!(calls, vec![libc::SYS_getppid as i32]),
        None => eprintln!("steady_state: no syscall user dispatch on this kernel"),
    }
}

#[test]
fn spawn_and_join_are_free() {
    let rt = one_thread();
    let n = rt.block_on(|| {
        steady_state(1_000, || {
            let h = smarm::spawn(|| 7u64);
            assert_eq!(h.join().expect("child failed"), 7);
        })
    });
    n.assert_free("1,000 spawn + join");
}

#[test]
fn yield_is_free() {
    let rt = one_thread();
    let n = rt.block_on(|| {
        let other = smarm::spawn(|| {
            for _ in 0..4_000 {
                smarm::yield_now();
            }
        });
        let n = steady_state(1_000, smarm::yield_now);
        other.join().expect("yielder failed");
        n
    });
    n.assert_free("1,000 yields");
}

#[test]
fn channel_hand_offs_are_free() {
    let rt = one_thread();
    let (bounded, unbounded) = rt.block_on(|| {
        let mut counts = Vec::new();
        for cap in [Some(8), None] {
            let (ping_tx, ping_rx) = match cap {
                Some(c) => smarm::bounded::<u64>(c),
                None => smarm::channel::<u64>(),
            };
            let (pong_rx, echo) = echo(ping_rx, 0);
            let mut v = 0;
            counts.push(steady_state(1_000, || {
                ping_tx.send(v).expect("echo gone");
                v = pong_rx.recv().expect("echo gone");
            }));
            drop(ping_tx);
            echo.join().expect("echo failed");
        }
        let unbounded = counts.pop().expect("two counts");
        (counts.pop().expect("two counts"), unbounded)
    });
    bounded.assert_free("1,000 bounded round trips");
    unbounded.assert_free("1,000 unbounded round trips");
}

#[test]
fn the_allocator_hook_and_preemption_are_free() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    // A one-cycle timeslice: every 128th allocation of an actor (the hook's
    // slow path) finds its slice over and preempts it.
    let rt = runtime::init(Config::default().threads(1).timeslice_cycles(1));
    let (cost, preemptions) = rt.block_on(|| {
        // Runs, and yields back, each time the allocating actor (the only
        // other one) is preempted: it never yields on its own.
        let runs = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let other = {
            let (runs, stop) = (runs.clone(), stop.clone());
            smarm::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    runs.fetch_add(1, Ordering::Relaxed);
                    smarm::yield_now();
                }
            })
        };
        smarm::yield_now(); // let it start
        let mut before = 0;
        let mut k = 0u64;
        let cost = steady_state(100_000, || {
            if k == 100_000 {
                before = runs.load(Ordering::Relaxed);
            }
            k += 1;
            drop(std::hint::black_box(Box::new(k)));
        });
        let preemptions = runs.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        other.join().expect("the other actor failed");
        (cost, preemptions)
    });
    assert!(preemptions > 0, "the allocating actor was never preempted");
    // One allocation per Box, and nothing else.
    cost.assert_free_but("100,000 boxes through the hook, preempted", 100_000);
}

#[test]
fn timers_are_free() {
    let rt = one_thread();
    let (cancelled, fired) = rt.block_on(|| {
        // Armed and cancelled: a receive with a timeout that a message
        // beats. The echo yields once before it answers, so the receiver
        // (which yields once to ready actors before it blocks) finds the
        // channel still empty, arms its timer and parks; the answer then
        // wakes it and it cancels the timer.
        let (ping_tx, ping_rx) = smarm::channel::<u64>();
        let (pong_rx, echo) = echo(ping_rx, 1);
        let cancelled = steady_state(1_000, || {
            ping_tx.send(1).expect("echo gone");
            pong_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the echo answers long before the timeout");
        });
        drop(ping_tx);
        echo.join().expect("echo failed");
        // Armed and fired: sleeps that run out (the 1 ns one arms a timer
        // that fires at the next timer check; the one until now returns
        // without arming).
        let fired = steady_state(1_000, || {
            smarm::sleep_until(Instant::now());
            smarm::sleep(Duration::from_nanos(1));
        });
        (cancelled, fired)
    });
    cancelled.assert_free("1,000 timed receives");
    fired.assert_free("1,000 fired timers");
}

#[test]
fn supervised_and_detached_spawns_are_free() {
    let rt = one_thread();
    let (supervised, detached) = rt.block_on(|| {
        // A child under a supervisor channel: its exit is a `Signal::Exit`
        // sent there, received here.
        let (sup_tx, sup_rx) = smarm::channel::<smarm::Signal>();
        let supervised = steady_state(1_000, || {
            drop(smarm::spawn_under(sup_tx.clone(), || {}));
            match sup_rx.recv().expect("signal lost") {
                smarm::Signal::Exit(_) => {}
                other => panic!("unexpected signal {other:?}"),
            }
        });
        // A detached child (its handle dropped at once) that reports back.
        let (tx, rx) = smarm::channel::<u64>();
        let detached = steady_state(1_000, || {
            let tx = tx.clone();
            drop(smarm::spawn(move || tx.send(1).expect("receiver here")));
            rx.recv().expect("child gone");
        });
        (supervised, detached)
    });
    supervised.assert_free("1,000 supervised spawns");
    detached.assert_free("1,000 detached spawns");
}
