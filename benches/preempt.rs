//! The cost of preemption points, measured where they matter:
//! - `alloc_hook`: an allocation-heavy actor (Vec and Box churn) on a runtime
//!   with the hook on (`alloc_interval` 128, the default) and off (0); the
//!   figure of merit is on/off - 1 (target <= 3%);
//! - `check`: the cost of one `smarm::check!()` whose slice has not expired,
//!   in an actor (target <= 2 ns), beside the same loop without it.
//!
//! Run: `cargo bench --bench preempt`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use smarm::runtime::{self, Config, Runtime};

fn alloc_work(n: usize) -> usize {
    let mut total = 0;
    for i in 0..n {
        let v: Vec<u64> = black_box(Vec::with_capacity(8 + i % 8));
        let b = black_box(Box::new(i));
        total += v.capacity() + *b;
    }
    total
}

fn alloc_hook(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_hook");
    // A timeslice long enough that the work is never preempted: this
    // measures the counting path and the TSC reads, not switching.
    let on = runtime::init(
        Config::default()
            .threads(1)
            .alloc_interval(128)
            .timeslice_cycles(u64::MAX / 2),
    );
    let off = runtime::init(Config::default().threads(1).alloc_interval(0));
    for (name, rt) in [("hook_on", &on), ("hook_off", &off)] {
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(|| black_box(alloc_work(100_000))))
        });
    }
    g.finish();
}

fn spin_loop(rt: &Runtime, iters: u64, with_check: bool) -> Duration {
    rt.block_on(move || {
        let t = Instant::now();
        let mut x = 0u64;
        for i in 0..iters {
            x = black_box(x.wrapping_mul(31).wrapping_add(i));
            if with_check {
                smarm::check!();
            }
        }
        black_box(x);
        t.elapsed()
    })
}

fn check(c: &mut Criterion) {
    let mut g = c.benchmark_group("check");
    let rt = runtime::init(Config::default().threads(1).timeslice_cycles(u64::MAX / 2));
    g.bench_function("with_check", |b| {
        b.iter_custom(|iters| spin_loop(&rt, iters, true))
    });
    g.bench_function("without_check", |b| {
        b.iter_custom(|iters| spin_loop(&rt, iters, false))
    });
    g.finish();
}

criterion_group!(benches, alloc_hook, check);
criterion_main!(benches);
