//! Shutdown in the middle of everything, driven by proptest: a random
//! population of actors (senders and receivers on bounded, unbounded and
//! rendezvous channels, timed waits, `select!`, sleepers, yielders,
//! allocating and checking spinners, panickers, spawners, killers, values
//! whose destructors park in the middle of an unwind) runs on a
//! runtime that is dropped at a random moment. Every value that exists
//! (each message, each actor's closure) carries a token that counts its
//! creation and its drop: once the runtime is gone, every token has been
//! dropped exactly once, whether its actor finished, panicked, was killed,
//! or never started, and whether its message was received, still queued, or
//! in the hands of a blocked sender. Nothing hangs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use smarm::runtime::{self, Config};
use smarm::{Pid, Receiver, Sender};

/// Counts the tokens created and the tokens dropped: equal once everything
/// is gone (a lost drop or a double drop makes them differ).
#[derive(Default)]
struct Ledger {
    created: AtomicU64,
    dropped: AtomicU64,
}

struct Token(Arc<Ledger>);

impl Token {
    fn new(l: &Arc<Ledger>) -> Token {
        l.created.fetch_add(1, Ordering::Relaxed);
        Token(l.clone())
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    TrySend(usize),
    SendTimeout(usize, u64),
    Recv(usize),
    RecvTimeout(usize, u64),
    Select(usize, usize, u64),
    Sleep(u64),
    Yield(u8),
    Alloc(u16),
    Spin(u16),
    Panic,
    Spawn(u8),
    Kill(usize),
    /// Holds, until the script ends or unwinds, a value whose destructor
    /// sleeps this many µs (so unwinds park midway).
    ParkingDrop(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let ch = 0..CHANNELS;
    prop_oneof![
        4 => ch.clone().prop_map(Op::Send),
        1 => ch.clone().prop_map(Op::TrySend),
        1 => (ch.clone(), 0u64..300).prop_map(|(c, us)| Op::SendTimeout(c, us)),
        4 => ch.clone().prop_map(Op::Recv),
        2 => (ch.clone(), 0u64..300).prop_map(|(c, us)| Op::RecvTimeout(c, us)),
        1 => (ch.clone(), ch, 0u64..300).prop_map(|(a, b, us)| Op::Select(a, b, us)),
        2 => (0u64..500).prop_map(Op::Sleep),
        2 => (1u8..20).prop_map(Op::Yield),
        1 => (1u16..2_000).prop_map(Op::Alloc),
        1 => (1u16..5_000).prop_map(Op::Spin),
        1 => Just(Op::Panic),
        1 => (1u8..4).prop_map(Op::Spawn),
        1 => (0usize..64).prop_map(Op::Kill),
        1 => (0u64..300).prop_map(Op::ParkingDrop),
    ]
}

/// Channels of each case: two unbounded, two bounded(2), one rendezvous.
const CHANNELS: usize = 5;

/// Everything an actor of a case shares with the others.
#[derive(Clone)]
struct World {
    ledger: Arc<Ledger>,
    ends: Arc<Vec<(Sender<Token>, Receiver<Token>)>>,
    pids: Arc<Mutex<Vec<Pid>>>,
}

/// A value whose destructor parks (sleeps), with a token of its own.
struct ParksOnDrop {
    sleep_us: u64,
    _token: Token,
}

impl Drop for ParksOnDrop {
    fn drop(&mut self) {
        smarm::sleep(Duration::from_micros(self.sleep_us));
    }
}

fn run_script(w: &World, script: &[Op]) {
    let _mine = Token::new(&w.ledger);
    let mut parking = Vec::new();
    for op in script {
        match *op {
            Op::Send(c) => {
                let _ = w.ends[c].0.send(Token::new(&w.ledger));
            }
            Op::TrySend(c) => {
                let _ = w.ends[c].0.try_send(Token::new(&w.ledger));
            }
            Op::SendTimeout(c, us) => {
                let d = Duration::from_micros(us);
                let _ = w.ends[c].0.send_timeout(Token::new(&w.ledger), d);
            }
            Op::Recv(c) => {
                let _ = w.ends[c].1.recv();
            }
            Op::RecvTimeout(c, us) => {
                let _ = w.ends[c].1.recv_timeout(Duration::from_micros(us));
            }
            Op::Select(a, b, us) => {
                let (ra, rb) = (&w.ends[a].1, &w.ends[b].1);
                smarm::select! {
                    recv(ra) -> m => drop(m),
                    recv(rb) -> m => drop(m),
                    default(Duration::from_micros(us)) => {},
                }
            }
            Op::Sleep(us) => smarm::sleep(Duration::from_micros(us)),
            Op::Yield(n) => {
                for _ in 0..n {
                    smarm::yield_now();
                }
            }
            Op::Alloc(n) => {
                let v: Vec<Box<u64>> = (0..n as u64).map(Box::new).collect();
                drop(std::hint::black_box(v));
            }
            Op::Spin(n) => {
                let mut x = 1u64;
                for _ in 0..n {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    smarm::check!();
                }
            }
            Op::Panic => panic!("chaos: on purpose"),
            Op::Spawn(n) => {
                let tail: Vec<Op> = script.iter().take(n as usize).cloned().collect();
                spawn_script(
                    w,
                    tail.into_iter()
                        .filter(|o| !matches!(o, Op::Spawn(_)))
                        .collect(),
                );
            }
            Op::ParkingDrop(us) => parking.push(ParksOnDrop {
                sleep_us: us,
                _token: Token::new(&w.ledger),
            }),
            Op::Kill(k) => {
                let target = {
                    let _np = smarm::preempt::disable();
                    let pids = w.pids.lock().unwrap();
                    (!pids.is_empty()).then(|| pids[k % pids.len()])
                };
                if let Some(p) = target {
                    smarm::kill(p);
                }
            }
        }
    }
}

fn spawn_script(w: &World, script: Vec<Op>) {
    let w2 = w.clone();
    // The closure carries a token of its own: dropped when it runs to its
    // end, unwinds, or is dropped unstarted at shutdown.
    let carried = Token::new(&w.ledger);
    let h = smarm::spawn(move || {
        let _carried = carried;
        run_script(&w2, &script);
    });
    // No preemption while the std lock is held: a preempted holder stays
    // on its thread, where another actor would then block the thread on
    // the lock (see LOOM.md, "Preemption").
    let _np = smarm::preempt::disable();
    w.pids.lock().unwrap().push(h.pid());
}

/// Replaces the panic hook (smarm's, installed by the first runtime) with
/// one that reports only the panics not made on purpose, as an application
/// might: smarm must not depend on its hook staying installed. Without
/// smarm's unwinder entry it does (LOOM.md, "Unwinding actors": a kill
/// reaching an actor parked mid-panic-unwind would abort), so there the
/// hook stays and the panics made on purpose are printed.
#[cfg(all(feature = "fast-unwind", not(target_feature = "crt-static")))]
fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let on_purpose = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|s| s.starts_with("chaos:"));
            if !on_purpose {
                eprintln!("unexpected panic: {info}");
            }
        }));
    });
}

#[cfg(not(all(feature = "fast-unwind", not(target_feature = "crt-static"))))]
fn quiet() {}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn shutdown_at_any_moment_drops_everything_once(
        threads in 1usize..=2,
        short_slices in any::<bool>(),
        scripts in proptest::collection::vec(proptest::collection::vec(op(), 0..8), 1..16),
        lifetime_us in 0u64..2_000,
    ) {
        let ledger = Arc::new(Ledger::default());
        let mut cfg = Config::default().threads(threads);
        if short_slices {
            cfg = cfg.timeslice_cycles(10_000);
        }
        let rt = runtime::init(cfg);
        quiet();
        {
            let ledger = ledger.clone();
            rt.block_on(move || {
                let ends: Vec<_> = (0..CHANNELS)
                    .map(|c| match c {
                        0 | 1 => smarm::channel(),
                        2 | 3 => smarm::bounded(2),
                        _ => smarm::bounded(0),
                    })
                    .collect();
                let w = World {
                    ledger,
                    ends: Arc::new(ends),
                    pids: Arc::new(Mutex::new(Vec::new())),
                };
                for s in scripts {
                    spawn_script(&w, s);
                }
                smarm::sleep(Duration::from_micros(lifetime_us));
            });
        }
        drop(rt);
        let (c, d) = (
            ledger.created.load(Ordering::Relaxed),
            ledger.dropped.load(Ordering::Relaxed),
        );
        prop_assert_eq!(c, d, "tokens created {} but dropped {}", c, d);
    }
}
