//! smarm against tokio: the general suite described in BENCHES.md.
//!
//! Every bench is a criterion group named after it (a sub-variant is appended with `/`), whose
//! benchmark ids are `<runtime>/<config>`: `smarm/st` and `tokio/st` run a one-thread smarm
//! runtime against tokio's current-thread runtime, `smarm/mt` and `tokio/mt` both runtimes with one
//! worker per available core. `multi_thread_scaling` uses `t1` ... `tN` as configs and `switch`
//! compares smarm with the bare register switch (`raw_floor`). `benches/sweep.py` pairs the ids and
//! prints the smarm / tokio ratios.
//!
//! Runtimes are built once per benchmark, lazily (a benchmark that the command-line filter skips
//! builds nothing), and one timed iteration is the whole workload. The tokio twins run their root
//! future as a spawned task, as smarm's `block_on` runs its closure as an actor on a scheduler
//! thread.
//!
//! The compute-bound pair (`fan_out_compute`, `multi_thread_scaling`) sits at parity, and
//! `deep_recursion` (a working set of 500 stacks) and `many_timers` (first runs on 10,000 stacks)
//! run at speeds that change with the machine for seconds at a time; so these are measured
//! `paired`: both runtimes alive, each criterion sample of one also timing as many runs of the
//! other right after it, and a `paired:` line with the medians of those samples and of their
//! ratios, which sweep.py reports for them. `switch` is paired with its raw floor the same way.
//!
//! `cargo bench --bench general -- --quick` runs the suite in a few minutes; `cargo bench --bench
//! general -- skynet` runs one bench.

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, Bencher, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use smarm::runtime::{Config, Runtime as SmarmRt};
use tokio::runtime::Runtime as TokioRt;

// Constants of tokio's benches/rt_multi_threaded.rs and benches/sync_mpsc.rs.
const CHAIN_LEN: usize = 1_000;
const NUM_PINGS: usize = 1_000;
const NUM_SPAWN: usize = 10_000;
const STALL: Duration = Duration::from_micros(10);
const YIELD_TASKS: usize = 200;
const NUM_YIELD: usize = 1_000;
const PRODUCERS: u64 = 5;
const PER_PRODUCER: u64 = 1_000;
const FULL_CAP: usize = 100;
const UNCONTENDED: u64 = 5_000;

const HOT_YIELDS: usize = 1_000_000;
const NUM_TIMERS: u64 = 10_000;
/// Messages passed back and forth (half of them round trips' pings, half pongs).
const CHURN_MESSAGES: u64 = 100_000;
const CHURN_TIMEOUT: Duration = Duration::from_secs(1);
const FAN_OUT: u64 = 64;
/// Inner-loop steps between two preemption checks of `compute`.
const CHECK_EVERY: u64 = 1_000;
/// Chunks of CHECK_EVERY steps in one `compute` call: about 200 µs on a 3 GHz x86-64 core.
const COMPUTE_CHUNKS: u64 = 130;
const DEPTH: u32 = 500;
const SPSC_MSGS: u64 = 1_000_000;
const SPSC_CAP: usize = 1_024;
const PANICS: usize = 10_000;
const SKYNET_LEAVES: u64 = 1_000_000;
const SKYNET_SUM: u64 = 499_999_500_000;
/// Hand-offs between the two actors of `switch` (each actor yields half of them).
const SWITCHES: u64 = 1_000_000;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sum of `0..n`.
fn triangle(n: u64) -> u64 {
    n * (n - 1) / 2
}

#[derive(Clone, Copy)]
enum Cfg {
    St,
    Mt,
}

impl Cfg {
    const ALL: [Cfg; 2] = [Cfg::St, Cfg::Mt];

    fn name(self) -> &'static str {
        match self {
            Cfg::St => "st",
            Cfg::Mt => "mt",
        }
    }

    fn threads(self) -> usize {
        match self {
            Cfg::St => 1,
            Cfg::Mt => cores(),
        }
    }

    fn smarm(self) -> SmarmRt {
        smarm_rt(self.threads())
    }

    fn tokio(self) -> TokioRt {
        match self {
            Cfg::St => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            Cfg::Mt => tokio_mt(self.threads()),
        }
    }
}

/// `Config::default()` so that SMARM_ALLOC_INTERVAL and SMARM_TIMESLICE_CYCLES apply.
fn smarm_rt(threads: usize) -> SmarmRt {
    smarm::runtime::init(Config::default().threads(threads))
}

fn tokio_mt(threads: usize) -> TokioRt {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` as a task of `rt` and waits for its output.
fn tk_root<F>(rt: &TokioRt, f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async move { tokio::spawn(f).await.expect("root task panicked") })
}

/// Times `iters` runs of `work` and keeps the time per run in `log` (for the summaries printed
/// beside criterion's own report).
fn timed(b: &mut Bencher<'_, WallTime>, log: &mut Vec<f64>, mut work: impl FnMut()) {
    b.iter_custom(|iters| {
        let t = Instant::now();
        for _ in 0..iters {
            work();
        }
        let el = t.elapsed();
        log.push(el.as_secs_f64() / iters as f64);
        el
    });
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Per-run times (seconds) of one paired benchmark's samples, smarm's and tokio's, taken in turns.
#[derive(Default)]
struct Pairs {
    /// (smarm per run, tokio per run) of every call criterion made, warm-up included.
    calls: Vec<(f64, f64)>,
}

impl Pairs {
    /// Runs `sm` and `tk` `iters` times each, smarm's first when criterion is measuring smarm
    /// (`smarm_side`), tokio's first otherwise; keeps both per-run times and returns the elapsed
    /// time of the side criterion is measuring.
    fn call(&mut self, iters: u64, smarm_side: bool, sm: impl Fn(), tk: impl Fn()) -> Duration {
        let time = |f: &dyn Fn()| {
            // One untimed run first: the other side's turn has left this side's threads asleep
            // and its data out of the caches (see the note on `paired`).
            f();
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed()
        };
        let (sm_d, tk_d) = if smarm_side {
            let s = time(&sm);
            (s, time(&tk))
        } else {
            let t = time(&tk);
            (time(&sm), t)
        };
        let per_run = |d: Duration| d.as_secs_f64() / iters as f64;
        self.calls.push((per_run(sm_d), per_run(tk_d)));
        if smarm_side {
            sm_d
        } else {
            tk_d
        }
    }

    /// Medians of smarm's and tokio's per-run times (ns) and of the ratios smarm / tokio of the
    /// pairs, and the number of pairs. Every call counts, criterion's warm-up included: its runs
    /// are runs of the same workload, timed beside the other side's as the measured ones are (and
    /// `--quick` has no separate warm-up at all).
    fn medians(&self) -> Option<(f64, f64, f64, usize)> {
        let mut sm: Vec<f64> = self.calls.iter().map(|c| c.0 * 1e9).collect();
        let mut tk: Vec<f64> = self.calls.iter().map(|c| c.1 * 1e9).collect();
        let mut ratio: Vec<f64> = self.calls.iter().map(|c| c.0 / c.1).collect();
        Some((
            median(&mut sm)?,
            median(&mut tk)?,
            median(&mut ratio)?,
            self.calls.len(),
        ))
    }
}

/// Benchmarks `sm` as `smarm/<config>` and `tk` as `tokio/<config>` with both runtimes alive:
/// every sample of either also times as many runs of the other right after it (tokio's after
/// smarm's in smarm's benchmark, the other way round in tokio's). A compute-bound bench sits at
/// parity, where the machine's speed drifting by a percent or two between two criterion
/// benchmarks (seconds apart on a shared machine) would decide the ratio; runs a fraction of a
/// second apart share the drift. Prints the medians of these paired samples and of their ratios
/// as a `paired:` line, which `benches/sweep.py` takes in place of criterion's medians and their
/// ratio, and returns the two medians (ns).
///
/// Each side's turn starts with one untimed run. Without it the turn's first run carried the cost
/// of the switch between runtimes, which falls on one side only: while tokio's `current_thread`
/// twin ran on the calling thread, smarm's worker slept on the other CPU, and the first
/// `deep_recursion` round after 20 of tokio's took 260-420 µs against 130-175 for the rounds after
/// it (the worker's wake-up on an idle virtual CPU, then a slow start on it). How much of that a
/// sample carried depended on how many runs criterion put in it. The turns now compare the two in
/// the steady state that the unpaired benches measure; the cost of a cold `block_on` is recorded in
/// LOOM.md's limitations and in BENCHMARKS.md.
fn paired(
    g: &mut BenchmarkGroup<'_, WallTime>,
    bench: &str,
    config: &str,
    (sm_rt, tk_rt): (impl Fn() -> SmarmRt, impl Fn() -> TokioRt),
    sm: impl Fn(&SmarmRt),
    tk: impl Fn(&TokioRt),
) -> Option<(f64, f64)> {
    let rts = std::cell::OnceCell::new();
    let rt = || rts.get_or_init(|| (sm_rt(), tk_rt()));
    let medians = interleaved(g, bench, config, "tokio", || sm(&rt().0), || tk(&rt().1));
    drop(rts);
    medians.map(|(sm_ns, tk_ns, _, _)| (sm_ns, tk_ns))
}

/// Benchmarks `sm` as `smarm/<config>` and `theirs` as `<other>/<config>` in interleaved pairs
/// (as [`paired`] describes), prints the `paired:` line and returns the medians (ns) of both
/// sides, the median of the pairs' ratios and the number of pairs.
fn interleaved(
    g: &mut BenchmarkGroup<'_, WallTime>,
    bench: &str,
    config: &str,
    other: &str,
    sm: impl Fn(),
    theirs: impl Fn(),
) -> Option<(f64, f64, f64, usize)> {
    let mut pairs = Pairs::default();
    for smarm_side in [true, false] {
        let id = format!("{}/{config}", if smarm_side { "smarm" } else { other });
        g.bench_function(id, |b| {
            b.iter_custom(|iters| pairs.call(iters, smarm_side, &sm, &theirs));
        });
    }
    let (sm_ns, their_ns, ratio, n) = pairs.medians()?;
    // The format is read by benches/sweep.py (PAIRED_LINE).
    eprintln!(
        "paired: {bench}/{config} smarm {sm_ns:.0} ns {other} {their_ns:.0} ns ratio {ratio:.4} ({n} pairs)"
    );
    Some((sm_ns, their_ns, ratio, n))
}

/// [`paired`] in both configurations (`st`, `mt`).
fn paired_configs(
    g: &mut BenchmarkGroup<'_, WallTime>,
    bench: &str,
    sm: impl Fn(&SmarmRt),
    tk: impl Fn(&TokioRt),
) {
    for cfg in Cfg::ALL {
        paired(
            g,
            bench,
            cfg.name(),
            (|| cfg.smarm(), || cfg.tokio()),
            &sm,
            &tk,
        );
    }
}

/// A group for a workload of milliseconds or more: 10 samples of equal iteration counts.
fn heavy(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
}

/// Benchmarks `sm` on smarm and `tk` on tokio, in both configurations. Each runtime is built on
/// first use and dropped once its benchmark is done.
fn pair<A, B>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    sm: impl Fn(&SmarmRt) -> A,
    tk: impl Fn(&TokioRt) -> B,
) {
    for cfg in Cfg::ALL {
        let mut rt = None;
        g.bench_function(format!("smarm/{}", cfg.name()), |b| {
            let rt = rt.get_or_insert_with(|| cfg.smarm());
            b.iter(|| black_box(sm(rt)));
        });
        drop(rt);
        let mut rt = None;
        g.bench_function(format!("tokio/{}", cfg.name()), |b| {
            let rt = rt.get_or_insert_with(|| cfg.tokio());
            b.iter(|| black_box(tk(rt)));
        });
        drop(rt);
    }
}

// ------------------------------------------------------------------------------------------------
// chained_spawn: each actor spawns the next; the last one signals done.

fn chained_spawn(c: &mut Criterion) {
    fn sm_link(done: smarm::oneshot::Sender<()>, n: usize) {
        if n == 0 {
            done.send(()).expect("done receiver gone");
        } else {
            smarm::spawn(move || sm_link(done, n - 1));
        }
    }
    fn tk_link(done: tokio::sync::oneshot::Sender<()>, n: usize) {
        if n == 0 {
            done.send(()).expect("done receiver gone");
        } else {
            tokio::spawn(async move { tk_link(done, n - 1) });
        }
    }
    let mut g = c.benchmark_group("chained_spawn");
    pair(
        &mut g,
        |rt| {
            rt.block_on(|| {
                let (tx, rx) = smarm::oneshot::channel();
                smarm::spawn(move || sm_link(tx, CHAIN_LEN));
                rx.recv().expect("chain broken")
            })
        },
        |rt| {
            tk_root(rt, async {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move { tk_link(tx, CHAIN_LEN) });
                rx.await.expect("chain broken")
            })
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// ping_pong_oneshot: 1,000 pairs exchange a ping and a pong over two oneshots.

fn ping_pong_oneshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("ping_pong_oneshot");
    pair(
        &mut g,
        |rt| {
            rt.block_on(|| {
                let (done_tx, done_rx) = smarm::channel::<()>();
                let rem = Arc::new(AtomicUsize::new(NUM_PINGS));
                smarm::spawn(move || {
                    for _ in 0..NUM_PINGS {
                        let rem = rem.clone();
                        let done_tx = done_tx.clone();
                        smarm::spawn(move || {
                            let (tx1, rx1) = smarm::oneshot::channel::<()>();
                            let (tx2, rx2) = smarm::oneshot::channel::<()>();
                            smarm::spawn(move || {
                                rx1.recv().expect("ping lost");
                                tx2.send(()).expect("pong receiver gone");
                            });
                            tx1.send(()).expect("ping receiver gone");
                            rx2.recv().expect("pong lost");
                            if rem.fetch_sub(1, Relaxed) == 1 {
                                done_tx.send(()).expect("done receiver gone");
                            }
                        });
                    }
                });
                done_rx.recv().expect("pairs never finished")
            })
        },
        |rt| {
            tk_root(rt, async {
                let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
                let rem = Arc::new(AtomicUsize::new(NUM_PINGS));
                tokio::spawn(async move {
                    for _ in 0..NUM_PINGS {
                        let rem = rem.clone();
                        let done_tx = done_tx.clone();
                        tokio::spawn(async move {
                            let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
                            let (tx2, rx2) = tokio::sync::oneshot::channel::<()>();
                            tokio::spawn(async move {
                                rx1.await.expect("ping lost");
                                tx2.send(()).expect("pong receiver gone");
                            });
                            tx1.send(()).expect("ping receiver gone");
                            rx2.await.expect("pong lost");
                            if rem.fetch_sub(1, Relaxed) == 1 {
                                done_tx.send(()).expect("done receiver gone");
                            }
                        });
                    }
                });
                done_rx.recv().await.expect("pairs never finished")
            })
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// spawn_storm_busy: 10,000 empty actors spawned from outside and joined while 2*N actors keep
// every scheduler thread busy (yield, then spin 10 µs).

fn stall() {
    let t = Instant::now();
    while t.elapsed() < STALL {
        std::hint::spin_loop();
    }
}

fn spawn_storm_busy(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_storm_busy");
    for cfg in Cfg::ALL {
        let busy = 2 * cfg.threads();

        let mut state: Option<(SmarmRt, Arc<AtomicBool>, Vec<smarm::JoinHandle<()>>)> = None;
        g.bench_function(format!("smarm/{}", cfg.name()), |b| {
            let (rt, _, _) = state.get_or_insert_with(|| {
                let rt = cfg.smarm();
                let run = Arc::new(AtomicBool::new(true));
                let bg = (0..busy)
                    .map(|_| {
                        let run = run.clone();
                        rt.spawn(move || {
                            while run.load(Relaxed) {
                                smarm::yield_now();
                                stall();
                            }
                        })
                    })
                    .collect();
                (rt, run, bg)
            });
            b.iter(|| {
                let handles: Vec<_> = (0..NUM_SPAWN).map(|_| rt.spawn(|| {})).collect();
                rt.block_on(move || {
                    for h in handles {
                        h.join().expect("empty actor failed");
                    }
                });
            });
        });
        if let Some((rt, run, bg)) = state.take() {
            run.store(false, Relaxed);
            for h in bg {
                h.join().expect("busy actor failed");
            }
            drop(rt);
        }

        let mut state: Option<(TokioRt, Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>)> = None;
        g.bench_function(format!("tokio/{}", cfg.name()), |b| {
            let (rt, _, _) = state.get_or_insert_with(|| {
                let rt = cfg.tokio();
                let run = Arc::new(AtomicBool::new(true));
                let bg = (0..busy)
                    .map(|_| {
                        let run = run.clone();
                        rt.spawn(async move {
                            while run.load(Relaxed) {
                                tokio::task::yield_now().await;
                                stall();
                            }
                        })
                    })
                    .collect();
                (rt, run, bg)
            });
            b.iter(|| {
                let handles: Vec<_> = (0..NUM_SPAWN).map(|_| rt.spawn(async {})).collect();
                rt.block_on(async move {
                    for h in handles {
                        h.await.expect("empty task failed");
                    }
                });
            });
        });
        if let Some((rt, run, bg)) = state.take() {
            run.store(false, Relaxed);
            rt.block_on(async move {
                for h in bg {
                    h.await.expect("busy task failed");
                }
            });
            drop(rt);
        }
    }
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// yield_many: 200 actors each yield 1,000 times, then signal done.

fn yield_many(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield_many");
    pair(
        &mut g,
        |rt| {
            rt.block_on(|| {
                let (tx, rx) = smarm::channel::<()>();
                for _ in 0..YIELD_TASKS {
                    let tx = tx.clone();
                    smarm::spawn(move || {
                        for _ in 0..NUM_YIELD {
                            smarm::yield_now();
                        }
                        tx.send(()).expect("done receiver gone");
                    });
                }
                for _ in 0..YIELD_TASKS {
                    rx.recv().expect("a yielder vanished");
                }
            })
        },
        |rt| {
            tk_root(rt, async {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
                for _ in 0..YIELD_TASKS {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        for _ in 0..NUM_YIELD {
                            tokio::task::yield_now().await;
                        }
                        tx.send(()).expect("done receiver gone");
                    });
                }
                for _ in 0..YIELD_TASKS {
                    rx.recv().await.expect("a yielder vanished");
                }
            })
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// yield_in_hot_loop: one actor yields 1,000,000 times.

fn yield_in_hot_loop(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield_in_hot_loop");
    heavy(&mut g);
    pair(
        &mut g,
        |rt| {
            rt.block_on(|| {
                for _ in 0..HOT_YIELDS {
                    smarm::yield_now();
                }
            })
        },
        |rt| {
            tk_root(rt, async {
                for _ in 0..HOT_YIELDS {
                    tokio::task::yield_now().await;
                }
            })
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// many_timers: 10,000 actors sleep 1 to 10 ms, all joined.

fn timer_ms(i: u64) -> Duration {
    Duration::from_millis(1 + i % 10)
}

fn many_timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("many_timers");
    heavy(&mut g);
    // Paired: its time is 10 ms of sleep plus the first runs of 10,000 actors on 10,000 stacks,
    // and how fast the machine serves those misses swings for seconds at a time.
    paired_configs(
        &mut g,
        "many_timers",
        |rt| {
            rt.block_on(|| {
                let hs: Vec<_> = (0..NUM_TIMERS)
                    .map(|i| smarm::spawn(move || smarm::sleep(timer_ms(i))))
                    .collect();
                for h in hs {
                    h.join().expect("sleeper failed");
                }
            })
        },
        |rt| {
            tk_root(rt, async {
                let hs: Vec<_> = (0..NUM_TIMERS)
                    .map(|i| tokio::spawn(async move { tokio::time::sleep(timer_ms(i)).await }))
                    .collect();
                for h in hs {
                    h.await.expect("sleeper failed");
                }
            })
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// timer_churn: a ping-pong of 100,000 messages, every receive under a 1 s timeout.

fn timer_churn(c: &mut Criterion) {
    const ROUNDS: u64 = CHURN_MESSAGES / 2;
    let mut g = c.benchmark_group("timer_churn");
    heavy(&mut g);
    pair(
        &mut g,
        |rt| {
            let sum = rt.block_on(|| {
                let (ping_tx, ping_rx) = smarm::channel::<u64>();
                let (pong_tx, pong_rx) = smarm::channel::<u64>();
                let ponger = smarm::spawn(move || {
                    for _ in 0..ROUNDS {
                        let v = ping_rx.recv_timeout(CHURN_TIMEOUT).expect("ping timed out");
                        pong_tx.send(v).expect("pinger gone");
                    }
                });
                let mut sum = 0;
                for i in 0..ROUNDS {
                    ping_tx.send(i).expect("ponger gone");
                    sum += pong_rx.recv_timeout(CHURN_TIMEOUT).expect("pong timed out");
                }
                ponger.join().expect("ponger failed");
                sum
            });
            assert_eq!(sum, triangle(ROUNDS));
        },
        |rt| {
            let sum = tk_root(rt, async {
                let (ping_tx, mut ping_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                let (pong_tx, mut pong_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                let ponger = tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        let v = tokio::time::timeout(CHURN_TIMEOUT, ping_rx.recv())
                            .await
                            .expect("ping timed out")
                            .expect("pinger gone");
                        pong_tx.send(v).expect("pinger gone");
                    }
                });
                let mut sum = 0;
                for i in 0..ROUNDS {
                    ping_tx.send(i).expect("ponger gone");
                    sum += tokio::time::timeout(CHURN_TIMEOUT, pong_rx.recv())
                        .await
                        .expect("pong timed out")
                        .expect("ponger gone");
                }
                ponger.await.expect("ponger failed");
                sum
            });
            assert_eq!(sum, triangle(ROUNDS));
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// fan_out_compute and multi_thread_scaling: 64 actors each run ~200 µs of arithmetic.

/// A fixed amount of non-allocating arithmetic on one dependency chain; `check` runs every
/// CHECK_EVERY steps (smarm passes its preemption check, tokio nothing).
#[inline(always)]
fn compute(seed: u64, check: impl Fn()) -> u64 {
    let mut x = black_box(seed) | 1;
    for _ in 0..COMPUTE_CHUNKS {
        x = compute_chunk(x);
        check();
    }
    black_box(x)
}

/// CHECK_EVERY steps of `compute`, one copy of the machine code for both runtimes: inlined into
/// each twin, the loop was two pieces of code at different addresses, and changes that did not
/// touch it moved the smarm/tokio ratio by up to 1%.
#[inline(never)]
fn compute_chunk(mut x: u64) -> u64 {
    for _ in 0..CHECK_EVERY {
        x = (x ^ (x >> 29))
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    x
}

fn fan_out_expected() -> u64 {
    (0..FAN_OUT).fold(0u64, |s, i| s.wrapping_add(compute(i, || {})))
}

fn sm_fan_out(rt: &SmarmRt, expected: u64) {
    let sum = rt.block_on(|| {
        let (tx, rx) = smarm::channel::<u64>();
        for i in 0..FAN_OUT {
            let tx = tx.clone();
            smarm::spawn(move || tx.send(compute(i, || smarm::check!())).expect("root gone"));
        }
        (0..FAN_OUT).fold(0u64, |s, _| {
            s.wrapping_add(rx.recv().expect("a worker vanished"))
        })
    });
    assert_eq!(sum, expected);
}

fn tk_fan_out(rt: &TokioRt, expected: u64) {
    let sum = tk_root(rt, async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        for i in 0..FAN_OUT {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(compute(i, || {})).expect("root gone") });
        }
        let mut sum = 0u64;
        for _ in 0..FAN_OUT {
            sum = sum.wrapping_add(rx.recv().await.expect("a worker vanished"));
        }
        sum
    });
    assert_eq!(sum, expected);
}

fn fan_out_compute(c: &mut Criterion) {
    let expected = fan_out_expected();
    let mut g = c.benchmark_group("fan_out_compute");
    heavy(&mut g);
    paired_configs(
        &mut g,
        "fan_out_compute",
        |rt| sm_fan_out(rt, expected),
        |rt| tk_fan_out(rt, expected),
    );
    g.finish();
}

fn multi_thread_scaling(c: &mut Criterion) {
    let expected = fan_out_expected();
    let n = cores();
    let mut g = c.benchmark_group("multi_thread_scaling");
    heavy(&mut g);
    let medians: Vec<_> = (1..=n)
        .map(|t| {
            paired(
                &mut g,
                "multi_thread_scaling",
                &format!("t{t}"),
                (|| smarm_rt(t), || tokio_mt(t)),
                |rt| sm_fan_out(rt, expected),
                |rt| tk_fan_out(rt, expected),
            )
        })
        .collect();
    g.finish();
    if let (Some(Some(one)), Some(Some(all))) = (medians.first(), medians.last()) {
        for (name, one, all) in [("smarm", one.0, all.0), ("tokio", one.1, all.1)] {
            eprintln!(
                "multi_thread_scaling: {name} speed-up t1 -> t{n}: {:.2}x",
                one / all
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// deep_recursion: a chain of 500 actors, each spawning and joining the next.

fn deep_recursion(c: &mut Criterion) {
    fn sm_level(n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            smarm::spawn(move || sm_level(n - 1))
                .join()
                .expect("level failed")
                + 1
        }
    }
    // Not an `async fn`: the explicit `Send` bound is what lets a future that spawns itself
    // type-check.
    #[allow(clippy::manual_async_fn)]
    fn tk_level(n: u32) -> impl Future<Output = u32> + Send + 'static {
        async move {
            if n == 0 {
                0
            } else {
                tokio::spawn(tk_level(n - 1)).await.expect("level failed") + 1
            }
        }
    }
    let mut g = c.benchmark_group("deep_recursion");
    paired_configs(
        &mut g,
        "deep_recursion",
        |rt| assert_eq!(rt.block_on(|| sm_level(DEPTH)), DEPTH),
        |rt| assert_eq!(tk_root(rt, tk_level(DEPTH)), DEPTH),
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// mpsc_contention: 5 producers send 1,000 u64 each to one receiver.

fn mpsc_contention(c: &mut Criterion) {
    let expected = PRODUCERS * triangle(PER_PRODUCER);
    let total = PRODUCERS * PER_PRODUCER;

    fn sm_contention(rt: &SmarmRt, (tx, rx): (smarm::Sender<u64>, smarm::Receiver<u64>)) -> u64 {
        rt.block_on(move || {
            for _ in 0..PRODUCERS {
                let tx = tx.clone();
                smarm::spawn(move || {
                    for i in 0..PER_PRODUCER {
                        tx.send(i).expect("receiver gone");
                    }
                });
            }
            (0..PRODUCERS * PER_PRODUCER)
                .map(|_| rx.recv().expect("producers vanished"))
                .sum()
        })
    }

    let mut g = c.benchmark_group("mpsc_contention/unbounded");
    pair(
        &mut g,
        |rt| assert_eq!(sm_contention(rt, smarm::channel()), expected),
        |rt| {
            let sum = tk_root(rt, async move {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                for _ in 0..PRODUCERS {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        for i in 0..PER_PRODUCER {
                            tx.send(i).expect("receiver gone");
                        }
                    });
                }
                let mut sum = 0;
                for _ in 0..total {
                    sum += rx.recv().await.expect("producers vanished");
                }
                sum
            });
            assert_eq!(sum, expected);
        },
    );
    g.finish();

    let mut g = c.benchmark_group("mpsc_contention/bounded_full");
    pair(
        &mut g,
        |rt| assert_eq!(sm_contention(rt, smarm::bounded(FULL_CAP)), expected),
        |rt| {
            let sum = tk_root(rt, async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(FULL_CAP);
                for _ in 0..PRODUCERS {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        for i in 0..PER_PRODUCER {
                            tx.send(i).await.expect("receiver gone");
                        }
                    });
                }
                let mut sum = 0;
                for _ in 0..total {
                    sum += rx.recv().await.expect("producers vanished");
                }
                sum
            });
            assert_eq!(sum, expected);
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// uncontended_channel: one actor sends 5,000 u64, then receives them.
//
// tokio's own bench gives its bounded channel a capacity of 1,000,000; tokio allocates a bounded
// channel's slots as it fills, whereas smarm's bounded channel is a ring allocated up front, so
// both get the capacity the workload uses (5,000) and neither measures a 16 MB allocation.

fn uncontended_channel(c: &mut Criterion) {
    let expected = triangle(UNCONTENDED);

    fn sm_uncontended(
        rt: &SmarmRt,
        make: fn() -> (smarm::Sender<u64>, smarm::Receiver<u64>),
    ) -> u64 {
        rt.block_on(move || {
            let (tx, rx) = make();
            for i in 0..UNCONTENDED {
                tx.send(i).expect("receiver gone");
            }
            (0..UNCONTENDED)
                .map(|_| rx.recv().expect("message lost"))
                .sum()
        })
    }

    let mut g = c.benchmark_group("uncontended_channel/unbounded");
    pair(
        &mut g,
        |rt| assert_eq!(sm_uncontended(rt, smarm::channel), expected),
        |rt| {
            let sum = tk_root(rt, async {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                for i in 0..UNCONTENDED {
                    tx.send(i).expect("receiver gone");
                }
                let mut sum = 0;
                for _ in 0..UNCONTENDED {
                    sum += rx.recv().await.expect("message lost");
                }
                sum
            });
            assert_eq!(sum, expected);
        },
    );
    g.finish();

    let mut g = c.benchmark_group("uncontended_channel/bounded");
    pair(
        &mut g,
        |rt| {
            assert_eq!(
                sm_uncontended(rt, || smarm::bounded(UNCONTENDED as usize)),
                expected
            )
        },
        |rt| {
            let sum = tk_root(rt, async {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(UNCONTENDED as usize);
                for i in 0..UNCONTENDED {
                    tx.send(i).await.expect("receiver gone");
                }
                let mut sum = 0;
                for _ in 0..UNCONTENDED {
                    sum += rx.recv().await.expect("message lost");
                }
                sum
            });
            assert_eq!(sum, expected);
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// spsc_throughput: 1,000,000 u64 from a producer to a consumer over bounded(1,024).

fn spsc_throughput(c: &mut Criterion) {
    let expected = triangle(SPSC_MSGS);

    fn sm_spsc(rt: &SmarmRt, many: bool) -> u64 {
        rt.block_on(move || {
            let (tx, rx) = smarm::bounded::<u64>(SPSC_CAP);
            smarm::spawn(move || {
                for i in 0..SPSC_MSGS {
                    tx.send(i).expect("consumer gone");
                }
            });
            let mut sum = 0;
            if many {
                let mut buf = Vec::with_capacity(SPSC_CAP);
                let mut got = 0;
                while got < SPSC_MSGS {
                    buf.clear();
                    got += rx.recv_many(&mut buf, SPSC_CAP).expect("producer vanished") as u64;
                    sum += buf.iter().sum::<u64>();
                }
            } else {
                for _ in 0..SPSC_MSGS {
                    sum += rx.recv().expect("producer vanished");
                }
            }
            sum
        })
    }

    async fn tk_spsc(many: bool) -> u64 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(SPSC_CAP);
        tokio::spawn(async move {
            for i in 0..SPSC_MSGS {
                tx.send(i).await.expect("consumer gone");
            }
        });
        let mut sum = 0;
        if many {
            let mut buf = Vec::with_capacity(SPSC_CAP);
            let mut got = 0;
            while got < SPSC_MSGS {
                buf.clear();
                let n = rx.recv_many(&mut buf, SPSC_CAP).await;
                assert!(n > 0, "producer vanished");
                got += n as u64;
                sum += buf.iter().sum::<u64>();
            }
        } else {
            for _ in 0..SPSC_MSGS {
                sum += rx.recv().await.expect("producer vanished");
            }
        }
        sum
    }

    for (variant, many) in [("recv", false), ("recv_many", true)] {
        let mut g = c.benchmark_group(format!("spsc_throughput/{variant}"));
        heavy(&mut g);
        g.throughput(Throughput::Elements(SPSC_MSGS));
        let mut rates = Vec::new();
        for cfg in Cfg::ALL {
            let mut rt = None;
            let mut log = Vec::new();
            g.bench_function(format!("smarm/{}", cfg.name()), |b| {
                let rt = rt.get_or_insert_with(|| cfg.smarm());
                timed(b, &mut log, || assert_eq!(sm_spsc(rt, many), expected));
            });
            drop(rt);
            rates.push((format!("smarm/{}", cfg.name()), median(&mut log)));

            let mut rt = None;
            let mut log = Vec::new();
            g.bench_function(format!("tokio/{}", cfg.name()), |b| {
                let rt = rt.get_or_insert_with(|| cfg.tokio());
                timed(b, &mut log, || {
                    assert_eq!(tk_root(rt, tk_spsc(many)), expected)
                });
            });
            drop(rt);
            rates.push((format!("tokio/{}", cfg.name()), median(&mut log)));
        }
        g.finish();
        for (id, secs) in rates {
            if let Some(s) = secs {
                eprintln!(
                    "spsc_throughput/{variant}/{id}: {:.1} M messages/s",
                    SPSC_MSGS as f64 / s / 1e6
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// catch_unwind_panics: 10,000 actors panic; their ends are observed by a supervisor channel
// (smarm) or by their JoinHandles (tokio).

const PANIC_MESSAGE: &str = "deliberate panic of the catch_unwind_panics bench";

fn deliberate_panic() {
    panic!("{}", PANIC_MESSAGE);
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Silences the bench's own panics; any other panic still reaches the hook that was in place, so
/// that a failure inside this bench is not silent. smarm wraps the hook that is in place when its
/// first runtime starts, so one is started first: the silencer then replaces smarm's hook rather
/// than being wrapped by it (which would print a line per panic).
fn silence_deliberate_panics() -> Arc<PanicHook> {
    drop(smarm_rt(1));
    let prev: Arc<PanicHook> = Arc::from(std::panic::take_hook());
    let fallback = prev.clone();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| p.downcast_ref::<String>().map(String::as_str));
        if msg != Some(PANIC_MESSAGE) {
            fallback(info);
        }
    }));
    prev
}

fn restore_panic_hook(prev: Arc<PanicHook>) {
    drop(std::panic::take_hook()); // the silencer, and its reference to `prev`
    match Arc::try_unwrap(prev) {
        Ok(hook) => std::panic::set_hook(hook),
        Err(_) => unreachable!("the silencing hook was dropped"),
    }
}

fn catch_unwind_panics(c: &mut Criterion) {
    let mut g = c.benchmark_group("catch_unwind_panics");
    let prev_hook = silence_deliberate_panics();
    pair(
        &mut g,
        |rt| {
            let panics = rt.block_on(|| {
                let (sup_tx, sup_rx) = smarm::channel::<smarm::Signal>();
                for _ in 0..PANICS {
                    drop(smarm::spawn_under(sup_tx.clone(), deliberate_panic));
                }
                (0..PANICS)
                    .filter(|_| {
                        matches!(
                            sup_rx.recv().expect("signal lost"),
                            smarm::Signal::Panic(..)
                        )
                    })
                    .count()
            });
            assert_eq!(panics, PANICS);
        },
        |rt| {
            let panics = tk_root(rt, async {
                let hs: Vec<_> = (0..PANICS)
                    .map(|_| tokio::spawn(async { deliberate_panic() }))
                    .collect();
                let mut panics = 0;
                for h in hs {
                    if h.await.expect_err("task did not panic").is_panic() {
                        panics += 1;
                    }
                }
                panics
            });
            assert_eq!(panics, PANICS);
        },
    );
    g.finish();
    restore_panic_hook(prev_hook);
}

// ------------------------------------------------------------------------------------------------
// skynet: 1,000,000 leaves of a 10-ary tree send their number up; every parent sums 10 replies.

fn sm_skynet(num: u64, size: u64, up: smarm::Sender<u64>) {
    if size == 1 {
        up.send(num).expect("parent gone");
        return;
    }
    let sub = size / 10;
    let (tx, rx) = smarm::channel::<u64>();
    for i in 0..10 {
        let tx = tx.clone();
        smarm::spawn(move || sm_skynet(num + i * sub, sub, tx));
    }
    drop(tx);
    let sum = (0..10).map(|_| rx.recv().expect("child vanished")).sum();
    up.send(sum).expect("parent gone");
}

// Not an `async fn`: see `tk_level`.
#[allow(clippy::manual_async_fn)]
fn tk_skynet(
    num: u64,
    size: u64,
    up: tokio::sync::mpsc::UnboundedSender<u64>,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        if size == 1 {
            up.send(num).expect("parent gone");
            return;
        }
        let sub = size / 10;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        for i in 0..10 {
            tokio::spawn(tk_skynet(num + i * sub, sub, tx.clone()));
        }
        drop(tx);
        let mut sum = 0;
        for _ in 0..10 {
            sum += rx.recv().await.expect("child vanished");
        }
        up.send(sum).expect("parent gone");
    }
}

fn skynet(c: &mut Criterion) {
    let mut g = c.benchmark_group("skynet");
    heavy(&mut g);
    pair(
        &mut g,
        |rt| {
            let total = rt.block_on(|| {
                let (tx, rx) = smarm::channel::<u64>();
                smarm::spawn(move || sm_skynet(0, SKYNET_LEAVES, tx));
                rx.recv().expect("skynet root vanished")
            });
            assert_eq!(total, SKYNET_SUM);
        },
        |rt| {
            let total = tk_root(rt, async {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                tokio::spawn(tk_skynet(0, SKYNET_LEAVES, tx));
                rx.recv().await.expect("skynet root vanished")
            });
            assert_eq!(total, SKYNET_SUM);
        },
    );
    g.finish();
}

// ------------------------------------------------------------------------------------------------
// switch: two actors of a one-thread runtime pass control back and forth with yield_now,
// beside the bare register switch between two stacks.

fn switch(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch");
    heavy(&mut g);
    g.throughput(Throughput::Elements(SWITCHES));
    let rt = std::cell::OnceCell::new();
    let sm = || {
        rt.get_or_init(|| smarm_rt(1)).block_on(|| {
            let yielder = || {
                for _ in 0..SWITCHES / 2 {
                    smarm::yield_now();
                }
            };
            let a = smarm::spawn(yielder);
            let b = smarm::spawn(yielder);
            a.join().expect("yielder failed");
            b.join().expect("yielder failed");
        })
    };
    // A round trip of raw_switch_pingpong is two switches.
    let raw = || {
        black_box(smarm::__private::raw_switch_pingpong(SWITCHES / 2));
    };
    // Paired like the compute benches: the two code paths slow down unequally in the machine's
    // slow spells (the wide switch path more than the two-instruction floor), so each sample of
    // one is timed beside as many runs of the other.
    let medians = interleaved(&mut g, "switch", "st", "raw_floor", sm, raw);
    g.finish();
    drop(rt);

    if let Some((sm_ns, raw_ns, ratio, n)) = medians {
        let per = |ns: f64| ns / SWITCHES as f64;
        eprintln!(
            "switch: smarm {:.2} ns per switch, raw floor {:.2} ns per switch ({ratio:.2}x, the median of {n} interleaved pairs)",
            per(sm_ns),
            per(raw_ns)
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = general;
    config = config();
    targets = chained_spawn, ping_pong_oneshot, spawn_storm_busy, yield_many, yield_in_hot_loop,
        many_timers, timer_churn, fan_out_compute, multi_thread_scaling, deep_recursion,
        mpsc_contention, uncontended_channel, spsc_throughput, catch_unwind_panics, skynet, switch
}
criterion_main!(general);
