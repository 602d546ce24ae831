//! Quick end-to-end checks of the runtime's main paths.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smarm::runtime::{self, Config};

#[test]
fn spawn_join_values() {
    let rt = runtime::init(Config::default().threads(2));
    let v = rt.block_on(|| {
        let hs: Vec<_> = (0..1000u64).map(|i| smarm::spawn(move || i * 2)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(v, 999 * 1000);
}

#[test]
fn join_panics_and_kill() {
    let rt = runtime::init(Config::default().threads(2));
    let h = rt.spawn(|| -> u32 { panic!("boom") });
    let e = h.join().unwrap_err();
    assert_eq!(*e.downcast_ref::<&str>().unwrap(), "boom");
    let (tx, rx) = smarm::channel::<u32>();
    let h = rt.spawn(move || rx.recv().unwrap());
    smarm::kill(h.pid());
    let e = h.join().unwrap_err();
    assert!(e.is::<smarm::Killed>());
    drop(tx);
}

#[test]
fn sleep_is_never_early() {
    let rt = runtime::init(Config::default().threads(2));
    rt.block_on(|| {
        let hs: Vec<_> = (0..100u64)
            .map(|i| {
                smarm::spawn(move || {
                    let d = Duration::from_millis(1 + i % 10);
                    let t = Instant::now();
                    smarm::sleep(d);
                    assert!(t.elapsed() >= d);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
}

#[test]
fn shutdown_unwinds_suspended_actors() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct D;
    impl Drop for D {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    let rt = runtime::init(Config::default().threads(2));
    let (tx, rx) = smarm::channel::<()>();
    let rx = Arc::new(rx);
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let rx = rx.clone();
        let started = started.clone();
        rt.spawn(move || {
            let _d = D;
            started.fetch_add(1, Ordering::SeqCst);
            let _ = rx.recv();
        });
    }
    for _ in 0..100 {
        let started = started.clone();
        rt.spawn(move || {
            let _d = D;
            started.fetch_add(1, Ordering::SeqCst);
            smarm::sleep(Duration::from_secs(3600));
        });
    }
    // Shut down only once all have started (and so are blocked or about to).
    while started.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(rt);
    assert_eq!(DROPS.load(Ordering::SeqCst), 200);
    drop(tx);
}

#[test]
fn yield_ping_pong_one_thread() {
    let rt = runtime::init(Config::default().threads(1));
    let n = rt.block_on(|| {
        let c = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                smarm::spawn(move || {
                    for _ in 0..10_000 {
                        c.fetch_add(1, Ordering::Relaxed);
                        smarm::yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        c.load(Ordering::Relaxed)
    });
    assert_eq!(n, 40_000);
}
