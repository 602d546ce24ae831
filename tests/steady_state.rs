//! The hot paths allocate nothing in steady state: after a warm-up, a
//! thousand more spawns (joined, detached or supervised), yields, channel
//! hand-offs, armed and cancelled timers and fired timers make no
//! allocation on the scheduler thread that runs them (counted by smarm's allocator hook, which the
//! default `global-allocator` feature registers).
//!
//! One scheduler thread, so every actor of a test runs on the thread whose
//! count the test reads.

use std::time::{Duration, Instant};

use smarm::__private::thread_allocations;
use smarm::runtime::{self, Config, Runtime};

fn one_thread() -> Runtime {
    runtime::init(Config::default().threads(1))
}

/// Runs `op` `n` times to warm up, then `n` times more, and returns the
/// allocations the second `n` made on this thread.
fn allocations_in_steady_state(n: usize, mut op: impl FnMut()) -> u64 {
    for _ in 0..n {
        op();
    }
    let before = thread_allocations();
    for _ in 0..n {
        op();
    }
    thread_allocations() - before
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
fn spawn_and_join_allocate_nothing() {
    let rt = one_thread();
    let n = rt.block_on(|| {
        allocations_in_steady_state(1_000, || {
            let h = smarm::spawn(|| 7u64);
            assert_eq!(h.join().expect("child failed"), 7);
        })
    });
    assert_eq!(n, 0, "allocations in 1,000 spawn + join");
}

#[test]
fn yield_allocates_nothing() {
    let rt = one_thread();
    let n = rt.block_on(|| {
        let other = smarm::spawn(|| {
            for _ in 0..4_000 {
                smarm::yield_now();
            }
        });
        let n = allocations_in_steady_state(1_000, smarm::yield_now);
        other.join().expect("yielder failed");
        n
    });
    assert_eq!(n, 0, "allocations in 1,000 yields");
}

#[test]
fn channel_hand_offs_allocate_nothing() {
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
            counts.push(allocations_in_steady_state(1_000, || {
                ping_tx.send(v).expect("echo gone");
                v = pong_rx.recv().expect("echo gone");
            }));
            drop(ping_tx);
            echo.join().expect("echo failed");
        }
        (counts[0], counts[1])
    });
    assert_eq!(bounded, 0, "allocations in 1,000 bounded round trips");
    assert_eq!(unbounded, 0, "allocations in 1,000 unbounded round trips");
}

#[test]
fn timers_allocate_nothing() {
    let rt = one_thread();
    let (cancelled, fired) = rt.block_on(|| {
        // Armed and cancelled: a receive with a timeout that a message
        // beats. The echo yields once before it answers, so the receiver
        // (which yields once to ready actors before it blocks) finds the
        // channel still empty, arms its timer and parks; the answer then
        // wakes it and it cancels the timer.
        let (ping_tx, ping_rx) = smarm::channel::<u64>();
        let (pong_rx, echo) = echo(ping_rx, 1);
        let cancelled = allocations_in_steady_state(1_000, || {
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
        let fired = allocations_in_steady_state(1_000, || {
            smarm::sleep_until(Instant::now());
            smarm::sleep(Duration::from_nanos(1));
        });
        (cancelled, fired)
    });
    assert_eq!(cancelled, 0, "allocations in 1,000 timed receives");
    assert_eq!(fired, 0, "allocations in 1,000 fired timers");
}

#[test]
fn supervised_and_detached_spawns_allocate_nothing() {
    let rt = one_thread();
    let (supervised, detached) = rt.block_on(|| {
        // A child under a supervisor channel: its exit is a `Signal::Exit`
        // sent there, received here.
        let (sup_tx, sup_rx) = smarm::channel::<smarm::Signal>();
        let supervised = allocations_in_steady_state(1_000, || {
            drop(smarm::spawn_under(sup_tx.clone(), || {}));
            match sup_rx.recv().expect("signal lost") {
                smarm::Signal::Exit(_) => {}
                other => panic!("unexpected signal {other:?}"),
            }
        });
        // A detached child (its handle dropped at once) that reports back.
        let (tx, rx) = smarm::channel::<u64>();
        let detached = allocations_in_steady_state(1_000, || {
            let tx = tx.clone();
            drop(smarm::spawn(move || tx.send(1).expect("receiver here")));
            rx.recv().expect("child gone");
        });
        (supervised, detached)
    });
    assert_eq!(supervised, 0, "allocations in 1,000 supervised spawns");
    assert_eq!(detached, 0, "allocations in 1,000 detached spawns");
}
