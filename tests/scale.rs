//! Many actors: thousands running, 200,000 blocked at once under the default
//! `vm.max_map_count`, and work stealing spreading work over threads.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smarm::runtime::{self, Config, Runtime};

fn rt(threads: usize) -> Runtime {
    runtime::init(Config::default().threads(threads))
}

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_actors_that_yield() {
    let rt = rt(2);
    let sum = rt.block_on(|| {
        let hs: Vec<_> = (0..10_000u64)
            .map(|i| {
                smarm::spawn(move || {
                    for _ in 0..3 {
                        smarm::yield_now();
                    }
                    i
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, (0..10_000u64).sum());
}

#[test]
fn spawn_tree_of_ten_thousand() {
    // A 10-ary tree of depth 4 (11,111 actors), each summing its children.
    fn node(depth: u32, id: u64) -> u64 {
        if depth == 0 {
            return id;
        }
        let hs: Vec<_> = (0..10)
            .map(|k| smarm::spawn(move || node(depth - 1, id * 10 + k)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    }
    let rt = rt(2);
    let sum = rt.block_on(|| node(4, 0));
    assert_eq!(sum, (0..10_000u64).sum());
}

#[test]
fn thousands_of_actors_in_a_ring() {
    // Each actor forwards a token to the next: 2,000 actors, 10 laps.
    const N: usize = 2000;
    const LAPS: u64 = 10;
    let rt = rt(2);
    let total = rt.block_on(|| {
        let (first_tx, mut prev_rx) = smarm::channel::<u64>();
        let mut hs = Vec::new();
        for _ in 0..N - 1 {
            let (tx, rx) = smarm::channel::<u64>();
            let my_rx = std::mem::replace(&mut prev_rx, rx);
            hs.push(smarm::spawn(move || {
                while let Ok(v) = my_rx.recv() {
                    if tx.send(v + 1).is_err() {
                        break;
                    }
                }
            }));
        }
        let mut v = 0;
        for _ in 0..LAPS {
            first_tx.send(v).unwrap();
            v = prev_rx.recv().unwrap();
        }
        drop(first_tx);
        for h in hs {
            h.join().unwrap();
        }
        v
    });
    assert_eq!(total, LAPS * (N as u64 - 1));
}

/// 200,000 actors alive and blocked at the same time, on the default 64 KiB
/// stacks. With two mappings per guarded stack this would need 400,000
/// mappings, far beyond the default `vm.max_map_count` of 65530.
#[test]
fn two_hundred_thousand_blocked_actors() {
    const N: usize = 200_000;
    let rt = rt(2);
    let blocked = Arc::new(AtomicUsize::new(0));
    let mut gates = Vec::with_capacity(N);
    let mut hs = Vec::with_capacity(N);
    for i in 0..N {
        let (tx, rx) = smarm::oneshot::channel::<u64>();
        gates.push(tx);
        let blocked = blocked.clone();
        hs.push(rt.spawn(move || {
            blocked.fetch_add(1, Ordering::Relaxed);
            rx.recv().unwrap() + i as u64
        }));
    }
    while blocked.load(Ordering::Relaxed) < N {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Every actor has started and none can finish: N stacks are in use now.
    assert!(hs.iter().all(|h| !h.is_finished()));
    let maps = map_count();
    assert!(
        maps < 65_530,
        "{maps} mappings with {N} live actors (guard mode {})",
        smarm::__private::guard_mode()
    );
    for g in gates {
        g.send(1).unwrap();
    }
    let mut sum = 0u64;
    for h in hs {
        sum += h.join().unwrap();
    }
    assert_eq!(sum, (0..N as u64).sum::<u64>() + N as u64);
    drop(rt);
}

#[test]
fn stacks_are_reused_across_generations() {
    // 20 waves of 5,000 short actors: the pool serves later waves.
    let rt = rt(2);
    for wave in 0..20u64 {
        let s = rt.block_on(move || {
            let hs: Vec<_> = (0..5000u64)
                .map(|i| smarm::spawn(move || i + wave))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
        assert_eq!(s, (0..5000u64).sum::<u64>() + 5000 * wave);
    }
    assert!(map_count() < 65_530);
}

/// All work is spawned by one actor onto its own thread's queue; the other
/// scheduler thread must steal some of it.
#[test]
fn stealing_spreads_work_over_threads() {
    let rt = rt(2);
    let threads = Arc::new(Mutex::new(HashSet::new()));
    // Each round is a burst of CPU-bound actors spawned from inside one
    // actor. Stealing should show up in the first round; on a loaded machine
    // the other thread may get no processor time for many rounds, so rounds
    // go on until it steals, under a generous hang guard.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let t = threads.clone();
        rt.block_on(move || {
            let hs: Vec<_> = (0..64)
                .map(|_| {
                    let t = t.clone();
                    smarm::spawn(move || {
                        let mut x = 0u64;
                        for k in 0..20_000u64 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(k),
                            );
                            if k % 5000 == 0 {
                                t.lock().unwrap().insert(std::thread::current().id());
                                smarm::yield_now();
                            }
                        }
                        x
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        if threads.lock().unwrap().len() > 1 {
            break;
        }
    }
    assert_eq!(
        threads.lock().unwrap().len(),
        2,
        "all the work stayed on one scheduler thread"
    );
}

/// A blocked actor that is woken from another thread may run anywhere; a
/// long busy actor does not keep the other thread from running queued work,
/// whether the queue behind it is long (stolen from at once) or short (a
/// thief watches a short queue while its owner keeps switching, and steals
/// once the owner has stopped switching).
#[test]
fn a_busy_thread_does_not_strand_queued_actors() {
    for queued in [100, 3, 1] {
        eprintln!("queued {queued}");
        assert_eq!(busy_thread_with_queued(queued), queued);
    }
}

/// Runs one actor that never yields until `n` others, spawned after it onto
/// the same thread, have all run; returns how many ran.
fn busy_thread_with_queued(n: usize) -> usize {
    let rt = rt(2);
    rt.block_on(move || {
        let (tx, rx) = smarm::channel::<()>();
        let busy = smarm::spawn(move || {
            // Spins until the others have all run (never yields).
            let _np = smarm::preempt::disable();
            while rx.try_recv().is_err() {
                std::hint::spin_loop();
            }
        });
        let counter = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let c = counter.clone();
                smarm::spawn(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        tx.send(()).unwrap();
        busy.join().unwrap();
        counter.load(Ordering::SeqCst)
    })
}
