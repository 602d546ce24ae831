//! A model-based property test of scheduling through the public API.
//!
//! The run queues (the per-thread `LocalQueue` ring with its LIFO slot and
//! overflow to the injector, the injector, stealing) are crate-private, so
//! they are covered here: random programs of spawn / yield / join / detach
//! (including bursts far larger than a local queue's 256 slots, so that
//! overflow and stealing happen) run on one- and two-thread runtimes, and
//! every actor must run exactly once and every joined result must equal the
//! result the model computes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use smarm::runtime::{self, Config};

/// One step of an actor's program.
#[derive(Clone, Debug)]
enum Step {
    Yield,
    /// Spawn a child running this program; keep its handle.
    Spawn(Box<Prog>),
    /// Spawn `n` trivial children at once, then join them all.
    Burst(u16),
    /// Join the oldest / newest unjoined child (no-op if none).
    JoinOldest,
    JoinNewest,
    /// Drop the newest handle: the child is detached but must still run.
    Detach,
}

#[derive(Clone, Debug)]
struct Prog {
    steps: Vec<Step>,
}

fn prog_strategy() -> impl Strategy<Value = Prog> {
    let leaf = prop::collection::vec(
        prop_oneof![
            4 => Just(Step::Yield),
            1 => (1u16..600).prop_map(Step::Burst),
            2 => Just(Step::JoinOldest),
            2 => Just(Step::JoinNewest),
        ],
        0..4,
    )
    .prop_map(|steps| Prog { steps });
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop::collection::vec(
            prop_oneof![
                3 => Just(Step::Yield),
                4 => inner.prop_map(|p| Step::Spawn(Box::new(p))),
                1 => (1u16..600).prop_map(Step::Burst),
                2 => Just(Step::JoinOldest),
                2 => Just(Step::JoinNewest),
                1 => Just(Step::Detach),
            ],
            0..8,
        )
        .prop_map(|steps| Prog { steps })
    })
}

/// Numbers the actors a program creates (preorder of Spawn steps), so that
/// each has a fixed id known to both the model and the real run.
fn count(p: &Prog) -> usize {
    1 + p
        .steps
        .iter()
        .map(|s| if let Step::Spawn(c) = s { count(c) } else { 0 })
        .sum::<usize>()
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// What the model says actor `id` running `p` returns. Joins fold the
/// children's results in join order; a detached child contributes nothing;
/// children never joined explicitly are joined at the end, oldest first.
fn model(p: &Prog, id: usize) -> u64 {
    let mut h = id as u64;
    let mut next = id + 1;
    let mut live: Vec<(usize, &Prog)> = Vec::new();
    for s in &p.steps {
        match s {
            Step::Yield => h = mix(h, 1),
            Step::Spawn(c) => {
                live.push((next, c));
                next += count(c);
            }
            Step::Burst(n) => h = mix(h, (0..*n as u64).sum()),
            Step::JoinOldest => {
                if !live.is_empty() {
                    let (cid, c) = live.remove(0);
                    h = mix(h, model(c, cid));
                }
            }
            Step::JoinNewest => {
                if let Some((cid, c)) = live.pop() {
                    h = mix(h, model(c, cid));
                }
            }
            Step::Detach => {
                live.pop();
            }
        }
    }
    for (cid, c) in live {
        h = mix(h, model(c, cid));
    }
    h
}

/// The real run: actor `id` runs `p`, counting its run in `runs[id]`.
fn run(p: Arc<Prog>, id: usize, runs: Arc<Vec<AtomicU32>>) -> u64 {
    runs[id].fetch_add(1, Ordering::SeqCst);
    let mut h = id as u64;
    let mut next = id + 1;
    let mut live: Vec<smarm::JoinHandle<u64>> = Vec::new();
    for s in &p.steps {
        match s {
            Step::Yield => {
                smarm::yield_now();
                h = mix(h, 1);
            }
            Step::Spawn(c) => {
                let c = Arc::new((**c).clone());
                let n = count(&c);
                let runs = runs.clone();
                let cid = next;
                live.push(smarm::spawn(move || run(c, cid, runs)));
                next += n;
            }
            Step::Burst(n) => {
                let hs: Vec<_> = (0..*n as u64).map(|i| smarm::spawn(move || i)).collect();
                h = mix(h, hs.into_iter().map(|h| h.join().unwrap()).sum());
            }
            Step::JoinOldest => {
                if !live.is_empty() {
                    h = mix(h, live.remove(0).join().unwrap());
                }
            }
            Step::JoinNewest => {
                if let Some(c) = live.pop() {
                    h = mix(h, c.join().unwrap());
                }
            }
            Step::Detach => drop(live.pop()),
        }
    }
    for c in live {
        h = mix(h, c.join().unwrap());
    }
    h
}

fn check(p: Prog, threads: usize, from_outside: bool) -> Result<(), TestCaseError> {
    let n = count(&p);
    let want = model(&p, 0);
    let runs: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
    let rt = runtime::init(Config::default().threads(threads));
    let p = Arc::new(p);
    let got = if from_outside {
        // The root is spawned from a plain thread (through the injector).
        let (p, r) = (p.clone(), runs.clone());
        rt.spawn(move || run(p, 0, r)).join().unwrap()
    } else {
        let (p, r) = (p.clone(), runs.clone());
        rt.block_on(move || run(p, 0, r))
    };
    prop_assert_eq!(got, want);
    // Detached actors finish on their own; wait for them (hang guard only).
    let t = Instant::now();
    while runs.iter().any(|r| r.load(Ordering::SeqCst) == 0)
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(rt);
    for (id, r) in runs.iter().enumerate() {
        prop_assert_eq!(
            r.load(Ordering::SeqCst),
            1,
            "actor {} ran a wrong number of times",
            id
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn one_thread_matches_the_model(p in prog_strategy()) {
        check(p, 1, false)?;
    }

    #[test]
    fn two_threads_match_the_model(p in prog_strategy()) {
        check(p, 2, false)?;
    }

    #[test]
    fn spawned_from_outside_matches_the_model(p in prog_strategy()) {
        check(p, 2, true)?;
    }
}

/// A burst far beyond one local queue from a single actor that never
/// yields: half the ring moves to the injector repeatedly.
#[test]
fn burst_overflows_the_local_queue() {
    let rt = runtime::init(Config::default().threads(1));
    let sum = rt.block_on(|| {
        let _g = smarm::preempt::disable();
        let hs: Vec<_> = (0..5000u64).map(|i| smarm::spawn(move || i)).collect();
        drop(_g);
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, (0..5000u64).sum());
}

/// Fairness of yield on one thread: actors that keep yielding take turns
/// round-robin, so none runs a second round before every other ran its first.
#[test]
fn yield_is_fair_on_one_thread() {
    const N: usize = 50;
    const ROUNDS: usize = 20;
    let rt = runtime::init(Config::default().threads(1).alloc_interval(0));
    let log = rt.block_on(|| {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let start = Arc::new(AtomicU32::new(0));
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let log = log.clone();
                let start = start.clone();
                smarm::spawn(move || {
                    // Wait until everyone is spawned and queued.
                    while start.load(Ordering::SeqCst) == 0 {
                        smarm::yield_now();
                    }
                    for r in 0..ROUNDS {
                        log.lock().unwrap().push((r, i));
                        smarm::yield_now();
                    }
                })
            })
            .collect();
        smarm::yield_now();
        start.store(1, Ordering::SeqCst);
        for h in hs {
            h.join().unwrap();
        }
        let v = log.lock().unwrap().clone();
        v
    });
    assert_eq!(log.len(), N * ROUNDS);
    // Round r of every actor comes before round r + 1 of any actor.
    let mut last_round = vec![-1i64; N];
    for (k, &(r, i)) in log.iter().enumerate() {
        let r = r as i64;
        for (j, &m) in last_round.iter().enumerate() {
            assert!(
                j == i || m + 1 >= r,
                "entry {k}: actor {i} ran round {r} while actor {j} had only done {m}"
            );
        }
        last_round[i] = r;
    }
}
