//! The stack pool keeps a bounded number of idle stacks warm and gives the
//! memory of the rest back. (Its own test binary: the pool is process-wide,
//! so no other test may move stacks while this one counts them.)

use smarm::__private::{pool_stats, trim_stacks, MAX_WARM};
use smarm::runtime::{self, Config, Runtime};

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
