//! Preemption on one-thread runtimes: allocating actors and `check!()`
//! loops are preempted, `preempt::disable()` and `alloc_interval(0)` hold it
//! off, and code under constant preemption (timeslice of one cycle, a check
//! at every allocation) neither deadlocks nor loses messages, nor exposes
//! thread-affine state to other actors.
//!
//! A test of a runtime that failed to preempt would spin forever; each such
//! loop gives up after a generous safety limit and then fails (that limit is
//! a hang guard, not a timing assertion: correct behaviour ends at once).

use std::cell::RefCell;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smarm::preempt;
use smarm::runtime::{self, Config, Runtime};

const ROLE: &str = "SMARM_TESTS_CHILD_ROLE";
const HANG_GUARD: Duration = Duration::from_secs(60);

fn run_child(name: &str) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, name)
        .output()
        .expect("run the child test process")
}

fn is_child(name: &str) -> bool {
    std::env::var(ROLE).is_ok_and(|r| r == name)
}

fn one_thread(timeslice: u64, alloc_interval: u32) -> Runtime {
    runtime::init(
        Config::default()
            .threads(1)
            .timeslice_cycles(timeslice)
            .alloc_interval(alloc_interval),
    )
}

fn hammer(threads: usize) -> Runtime {
    runtime::init(
        Config::default()
            .threads(threads)
            .timeslice_cycles(1)
            .alloc_interval(1),
    )
}

/// Allocates and frees a little.
#[inline(never)]
fn churn(k: u64) -> u64 {
    let b = std::hint::black_box(Box::new(k));
    *b
}

/// Runs `hog` after yielding once so that it starts before the caller
/// resumes; the caller then sets `flag`. If `hog` is never preempted, the
/// caller never resumes and `hog` gives up after the hang guard.
fn caller_runs_while_hog_spins(rt: &Runtime, hog: fn(&AtomicBool) -> bool) -> bool {
    rt.block_on(move || {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let h = smarm::spawn(move || hog(&f));
        // The hog starts now; we resume only if it is preempted.
        smarm::yield_now();
        flag.store(true, Ordering::SeqCst);
        h.join().unwrap()
    })
}

#[test]
fn allocating_actor_is_preempted() {
    let rt = one_thread(10_000, 4);
    let seen = caller_runs_while_hog_spins(&rt, |flag| {
        let t = Instant::now();
        let mut k = 0u64;
        while !flag.load(Ordering::SeqCst) {
            k = k.wrapping_add(churn(k));
            if t.elapsed() > HANG_GUARD {
                return false;
            }
        }
        true
    });
    assert!(seen, "an allocating actor was never preempted");
}

#[test]
fn allocating_actor_is_preempted_with_default_interval() {
    let rt = one_thread(10_000, 128);
    let seen = caller_runs_while_hog_spins(&rt, |flag| {
        let t = Instant::now();
        while !flag.load(Ordering::SeqCst) {
            for k in 0..64 {
                churn(k);
            }
            if t.elapsed() > HANG_GUARD {
                return false;
            }
        }
        true
    });
    assert!(seen);
}

#[test]
fn check_macro_preempts_a_loop_that_never_allocates() {
    // The allocator hook is off: only check!() can preempt.
    let rt = one_thread(10_000, 0);
    let seen = caller_runs_while_hog_spins(&rt, |flag| {
        let t = Instant::now();
        let mut n = 0u64;
        while !flag.load(Ordering::SeqCst) {
            smarm::check!();
            n += 1;
            if n % (1 << 20) == 0 && t.elapsed() > HANG_GUARD {
                return false;
            }
        }
        true
    });
    assert!(seen, "a check!() loop was never preempted");
}

#[test]
fn check_macro_outside_an_actor_does_nothing() {
    for _ in 0..10_000 {
        smarm::check!();
    }
    let _g = preempt::disable();
    assert!(preempt::is_disabled());
}

/// Spins for `slices` timeslices of `timeslice` cycles, allocating, and
/// reports whether `other` changed meanwhile.
fn other_ran_during(other: &AtomicUsize, slices: u64, timeslice: u64) -> bool {
    let before = other.load(Ordering::SeqCst);
    let start = preempt::rdtsc();
    let mut k = 0;
    while preempt::rdtsc().wrapping_sub(start) < slices * timeslice {
        k = churn(k) + 1;
        smarm::check!();
    }
    other.load(Ordering::SeqCst) != before
}

#[test]
fn disable_holds_off_preemption() {
    const SLICE: u64 = 10_000;
    let rt = one_thread(SLICE, 1);
    let (held_off, later) = rt.block_on(|| {
        let other = Arc::new(AtomicUsize::new(0));
        let o = other.clone();
        let hog = smarm::spawn(move || {
            let held_off = {
                let _g = preempt::disable();
                let _nested = preempt::disable();
                assert!(preempt::is_disabled());
                !other_ran_during(&o, 200, SLICE)
            };
            // Guard gone: preemption works again.
            let t = Instant::now();
            while o.load(Ordering::SeqCst) == 0 && t.elapsed() < HANG_GUARD {
                churn(1);
            }
            (held_off, o.load(Ordering::SeqCst) != 0)
        });
        let ticker = smarm::spawn(move || {
            other.fetch_add(1, Ordering::SeqCst);
        });
        let r = hog.join().unwrap();
        ticker.join().unwrap();
        r
    });
    assert!(held_off, "another actor ran while preemption was disabled");
    assert!(
        later,
        "preemption did not resume after the guard was dropped"
    );
}

#[test]
fn disable_guard_survives_a_voluntary_block() {
    // The guard belongs to the actor: held across a blocking call (which may
    // run other actors), it still holds off preemption afterwards.
    const SLICE: u64 = 10_000;
    let rt = one_thread(SLICE, 1);
    let held = rt.block_on(|| {
        let other = Arc::new(AtomicUsize::new(0));
        let o = other.clone();
        let ticker = smarm::spawn(move || loop {
            o.fetch_add(1, Ordering::SeqCst);
            smarm::yield_now();
        });
        let _g = preempt::disable();
        smarm::sleep(Duration::from_millis(1));
        smarm::yield_now();
        assert!(preempt::is_disabled());
        let held = !other_ran_during(&other, 100, SLICE);
        smarm::kill(ticker.pid());
        drop(_g);
        let _ = ticker.join();
        held
    });
    assert!(held);
}

#[test]
fn alloc_interval_zero_turns_the_hook_off() {
    const SLICE: u64 = 10_000;
    let rt = one_thread(SLICE, 0);
    let (untouched, after_yield) = rt.block_on(|| {
        let other = Arc::new(AtomicUsize::new(0));
        let o = other.clone();
        let hog = smarm::spawn(move || {
            let before = o.load(Ordering::SeqCst);
            let start = preempt::rdtsc();
            let mut k = 0;
            // Allocates for 200 timeslices without any check!().
            while preempt::rdtsc().wrapping_sub(start) < 200 * SLICE {
                k = churn(k) + 1;
            }
            let untouched = o.load(Ordering::SeqCst) == before;
            smarm::yield_now();
            (untouched, o.load(Ordering::SeqCst) != before)
        });
        smarm::yield_now(); // let the hog start
        other.fetch_add(1, Ordering::SeqCst);
        hog.join().unwrap()
    });
    assert!(untouched, "an allocation preempted with alloc_interval(0)");
    assert!(after_yield);
}

#[test]
fn preempted_actor_resumes_on_its_thread() {
    // Two threads, constant preemption: between two allocations (no
    // voluntary suspension) an actor never changes OS thread.
    let rt = hammer(2);
    let moved = rt.block_on(|| {
        let hs: Vec<_> = (0..50)
            .map(|_| {
                smarm::spawn(|| {
                    let mut moved = 0;
                    for round in 0..20 {
                        let t = std::thread::current().id();
                        for k in 0..50 {
                            churn(k);
                        }
                        if std::thread::current().id() != t {
                            moved += 1;
                        }
                        if round % 5 == 0 {
                            smarm::yield_now();
                        }
                    }
                    moved
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u32>()
    });
    assert_eq!(moved, 0, "a preempted actor resumed on another thread");
}

// ---------------------------------------------------------------------------
// Hammer: everything under constant preemption
// ---------------------------------------------------------------------------

fn hammer_channels_spawn_timers(threads: usize) {
    const PRODUCERS: u64 = 16;
    const PER: u64 = 300;
    let rt = hammer(threads);
    let (count, sum, helpers) = rt.block_on(|| {
        let (tx, rx) = smarm::bounded::<(u64, u64)>(4);
        let helpers = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx = tx.clone();
                let helpers = helpers.clone();
                smarm::spawn(move || {
                    for i in 0..PER {
                        tx.send((p, i)).unwrap();
                        match i % 50 {
                            0 => {
                                let helpers = helpers.clone();
                                let h = smarm::spawn(move || {
                                    let v: Vec<u64> = (0..20).collect();
                                    helpers.fetch_add(1, Ordering::SeqCst);
                                    v.iter().sum::<u64>()
                                });
                                assert_eq!(h.join().unwrap(), 190);
                            }
                            17 => smarm::sleep(Duration::from_micros(50)),
                            33 => smarm::yield_now(),
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..4)
            .map(|c| {
                let rx = rx.clone();
                smarm::spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let r = if c % 2 == 0 {
                            match rx.recv_timeout(Duration::from_micros(100)) {
                                Ok(v) => Some(v),
                                Err(smarm::RecvTimeoutError::Timeout) => continue,
                                Err(smarm::RecvTimeoutError::Disconnected) => None,
                            }
                        } else {
                            rx.recv().ok()
                        };
                        match r {
                            Some(v) => got.push(v),
                            None => break,
                        }
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<(u64, u64)> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(before, all.len(), "a message was delivered twice");
        (
            all.len() as u64,
            all.iter().map(|&(p, i)| p * PER + i).sum::<u64>(),
            helpers.load(Ordering::SeqCst),
        )
    });
    assert_eq!(count, PRODUCERS * PER, "lost messages");
    assert_eq!(sum, (0..PRODUCERS * PER).sum::<u64>());
    assert_eq!(helpers as u64, PRODUCERS * PER.div_ceil(50));
}

#[test]
fn hammer_one_thread() {
    hammer_channels_spawn_timers(1);
}

#[test]
fn hammer_two_threads() {
    hammer_channels_spawn_timers(2);
}

#[test]
fn hammer_mutex_held_under_disable() {
    // A std Mutex held across allocations, protected by disable(): other
    // actors on the same thread never find it locked by a preempted holder.
    let rt = hammer(1);
    let (contended, total) = rt.block_on(|| {
        let m = Arc::new(Mutex::new(Vec::<u64>::new()));
        let contended = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..100u64)
            .map(|i| {
                let m = m.clone();
                let contended = contended.clone();
                smarm::spawn(move || {
                    for k in 0..20 {
                        let _g = preempt::disable();
                        match m.try_lock() {
                            Ok(mut v) => {
                                for j in 0..5 {
                                    v.push(churn(i * 100 + k * 5 + j));
                                }
                            }
                            Err(_) => {
                                contended.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        drop(_g);
                        churn(k);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let total = m.lock().unwrap().len();
        (contended.load(Ordering::SeqCst), total)
    });
    assert_eq!(contended, 0);
    assert_eq!(total, 100 * 20 * 5);
}

thread_local! {
    static TL: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn thread_local_borrow_never_observed(threads: usize) {
    let rt = hammer(threads);
    let conflicts = rt.block_on(|| {
        let conflicts = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..200u64)
            .map(|i| {
                let conflicts = conflicts.clone();
                smarm::spawn(move || {
                    for round in 0..20u64 {
                        {
                            let _g = preempt::disable();
                            TL.with(|t| {
                                let mut b = t.borrow_mut();
                                for k in 0..10 {
                                    // Allocations while the borrow is held.
                                    b.push(churn(i + k));
                                    let s = format!("{i}-{round}-{k}");
                                    std::hint::black_box(s);
                                }
                                b.clear();
                            });
                        }
                        // Outside the guard: the borrow must never be seen.
                        TL.with(|t| {
                            if t.try_borrow_mut().is_err() {
                                conflicts.fetch_add(1, Ordering::SeqCst);
                            }
                        });
                        churn(round);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        conflicts.load(Ordering::SeqCst)
    });
    assert_eq!(
        conflicts, 0,
        "another actor observed a thread-local borrow held under disable()"
    );
}

#[test]
fn thread_local_refcell_under_disable_one_thread() {
    thread_local_borrow_never_observed(1);
}

#[test]
fn thread_local_refcell_under_disable_two_threads() {
    thread_local_borrow_never_observed(2);
}

// ---------------------------------------------------------------------------
// println! from preempted actors (real stdout: a child with --nocapture)
// ---------------------------------------------------------------------------

const PRINTERS: u64 = 300;
const LINES: u64 = 20;

/// A Display that allocates while being formatted (inside stdout's lock).
struct Allocating(u64);
impl std::fmt::Display for Allocating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: String = format!("{:08}", self.0);
        let v: Vec<String> = vec![s.clone(), s];
        f.write_str(&v.concat())
    }
}

/// How the printers print: plain integers; an allocating `Display` under
/// `preempt::disable()` (the documented way to keep stdout's reentrant lock
/// from being re-entered by another actor of the thread); an allocating
/// `Display` without it (lines may interleave, nothing may panic).
#[derive(Clone, Copy, PartialEq)]
enum Print {
    Plain,
    AllocGuarded,
    AllocUnguarded,
}

fn printers(mode: Print) {
    let rt = hammer(1);
    rt.block_on(move || {
        let hs: Vec<_> = (0..PRINTERS)
            .map(|a| {
                smarm::spawn(move || {
                    for l in 0..LINES {
                        let s = format!("{a}:{l}");
                        match mode {
                            Print::Plain => println!("LINE {s} {}", a * LINES + l),
                            Print::AllocGuarded => {
                                let _np = smarm::preempt::disable();
                                println!("LINE {s} {}", Allocating(a * LINES + l));
                            }
                            Print::AllocUnguarded => {
                                println!("LINE {s} {}", Allocating(a * LINES + l))
                            }
                        }
                        churn(l);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    println!("PRINTERS_DONE");
}

#[test]
fn child_println_from_preempted_actors() {
    if is_child("child_println_from_preempted_actors") {
        printers(Print::Plain);
    }
}

#[test]
fn child_println_allocating_display_from_preempted_actors() {
    if is_child("child_println_allocating_display_from_preempted_actors") {
        printers(Print::AllocGuarded);
    }
}

#[test]
fn child_println_allocating_display_unguarded() {
    if is_child("child_println_allocating_display_unguarded") {
        printers(Print::AllocUnguarded);
    }
}

fn check_printer_output(out: &Output, allocating_display: bool) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the printing child failed: {:?}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("PRINTERS_DONE"));
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.find("LINE ").map(|i| &l[i..]))
        .collect();
    assert_eq!(lines.len() as u64, PRINTERS * LINES);
    for l in lines {
        let mut parts = l.split(' ');
        let (_, al, n) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let (a, li) = al.split_once(':').unwrap();
        let v = a.parse::<u64>().unwrap() * LINES + li.parse::<u64>().unwrap();
        let want = if allocating_display {
            format!("{v:08}{v:08}")
        } else {
            v.to_string()
        };
        assert_eq!(n, want, "a garbled line: {l}");
    }
}

#[test]
fn println_from_hundreds_of_preempted_actors() {
    let out = run_child("child_println_from_preempted_actors");
    check_printer_output(&out, false);
}

/// With `preempt::disable()` held around it (the policy README.md and
/// LOOM.md give), a `println!` whose `Display` allocates stays whole.
#[test]
fn println_with_allocating_display_under_disable_stays_whole() {
    let out = run_child("child_println_allocating_display_from_preempted_actors");
    check_printer_output(&out, true);
}

/// Without the guard, an actor preempted inside stdout's (reentrant) lock
/// lets another actor of its thread write in the middle of its line: the
/// documented hazard. Nothing panics and nothing is lost.
#[test]
fn println_with_allocating_display_unguarded_never_panics() {
    let out = run_child("child_println_allocating_display_unguarded");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the printing child failed: {:?}",
        out.status
    );
    assert!(stdout.contains("PRINTERS_DONE"));
    assert_eq!(stdout.matches("LINE ").count() as u64, PRINTERS * LINES);
}

/// `check!()` is a suspension point for kills: an actor looping over a
/// non-allocating computation with `check!()` unwinds with `Killed`.
#[test]
fn kill_reaches_a_check_loop() {
    let rt = runtime::init(Config::default().threads(1).alloc_interval(0));
    rt.block_on(|| {
        let h = smarm::spawn(|| {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
                smarm::check!();
            }
        });
        smarm::yield_now(); // let it start
        smarm::kill(h.pid());
        let e = h.join().unwrap_err();
        assert!(e.is::<smarm::Killed>());
    });
}
