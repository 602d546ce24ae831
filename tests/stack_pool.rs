//! The stack pool keeps a bounded number of idle stacks warm and gives the
//! memory of the rest back. (Its own test binary: the pool is process-wide,
//! so no other test may move stacks while one counts them; the tests here
//! take turns.)

use std::sync::Mutex;

use smarm::__private::{pool_stats, trim_stacks, trim_stacks_idle, MAX_WARM};
use smarm::runtime::{self, Config, Runtime};

/// Held by each test for its whole run.
static TURN: Mutex<()> = Mutex::new(());

/// Runs `n` actors that each dirty 32 KiB of stack and all hold their stacks
/// at once; `during` runs while they do.
fn wave(rt: &Runtime, n: usize, during: impl FnOnce() + Send + 'static) {
    rt.block_on(move || {
        let (go_tx, go_rx) = smarm::channel::<()>();
        let (up_tx, up_rx) = smarm::channel::<()>();
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let go_rx = go_rx.clone();
                let up_tx = up_tx.clone();
                smarm::spawn(move || {
                    let mut buf = [0u8; 32 * 1024];
                    std::hint::black_box(&mut buf);
                    up_tx.send(()).unwrap();
                    let _ = go_rx.recv();
                    buf[100]
                })
            })
            .collect();
        for _ in 0..n {
            up_rx.recv().unwrap();
        }
        during();
        drop(go_tx);
        for h in hs {
            h.join().unwrap();
        }
    })
}

#[test]
fn idle_stacks_beyond_the_bound_give_their_memory_back_and_are_reused() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime::init(Config::default().threads(2));
    wave(&rt, 4000, || {});
    // The 4,000 stacks are idle now: in thread caches and the global list.
    trim_stacks();
    let st = pool_stats();
    assert!(
        st.warm <= MAX_WARM,
        "more than {MAX_WARM} warm stacks after a trim: {st:?}"
    );
    assert!(st.cold > 0, "nothing was given back: {st:?}");
    // A new wave of 4,000 takes the cold stacks before carving new ones.
    wave(&rt, 4000, move || {
        let now = pool_stats();
        assert!(
            now.cold < st.cold,
            "cold stacks were not reused: {st:?} -> {now:?}"
        );
    });
}

/// The trim of an idle scheduler thread keeps the recent demand warm (a
/// workload that comes in bursts finds its stacks resident) and, while no
/// new demand comes, halves what it keeps at each idle trim, down to the
/// bound.
#[test]
fn an_idle_trim_keeps_recent_demand_warm_then_decays_to_the_bound() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime::init(Config::default().threads(1));
    wave(&rt, 4000, || {});
    // No scheduler threads from here on: only this test trims.
    drop(rt);
    let burst = pool_stats();
    assert!(
        burst.warm >= 4000,
        "the burst's stacks are not warm: {burst:?}"
    );
    trim_stacks_idle();
    let kept = pool_stats();
    // All of the burst stays warm, or half of it if the worker's own idle
    // trim ran between the burst and the runtime's drop.
    assert!(
        kept.warm >= 2000,
        "an idle trim right after a burst of 4,000 gave most of it back: {burst:?} -> {kept:?}"
    );
    let mut prev = kept;
    for _ in 0..8 {
        trim_stacks_idle();
        let now = pool_stats();
        assert!(
            now.warm <= prev.warm && now.warm >= MAX_WARM.min(prev.warm),
            "an idle trim grew the warm stacks or went below the bound: {prev:?} -> {now:?}"
        );
        prev = now;
    }
    assert!(
        prev.warm <= MAX_WARM,
        "eight idle trims without demand did not come down to {MAX_WARM}: {prev:?}"
    );
    assert!(
        prev.cold > kept.cold,
        "nothing was given back: {kept:?} -> {prev:?}"
    );
}
