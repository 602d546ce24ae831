//! Unwinding panicking actors (smarm's caching unwinder, src/unwind.rs):
//! destructors run once each and in order, through many frames, through
//! nested `catch_unwind`, through destructors that block (and may resume on
//! another thread), with custom payloads, on small stacks and on many
//! threads at once; and actor panics are handled by smarm's unwinder rather
//! than handed to the system one.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use smarm::runtime::{self, Config, Runtime};

fn rt(threads: usize) -> Runtime {
    runtime::init(Config::default().threads(threads))
}

fn message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Records its number in a shared log when dropped.
struct Guard(u32, Arc<Mutex<Vec<u32>>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0);
    }
}

#[inline(never)]
fn descend(depth: u32, log: &Arc<Mutex<Vec<u32>>>) -> u32 {
    let _g = Guard(depth, log.clone());
    if depth == 0 {
        panic!("bottom reached");
    }
    std::hint::black_box(descend(depth - 1, log)) + 1
}

/// Silences the panics of this binary (they are all deliberate).
fn quiet() {
    std::panic::set_hook(Box::new(|_| {}));
}

#[test]
fn destructors_run_in_order_through_many_frames() {
    quiet();
    let rt = rt(1);
    for depth in [0u32, 1, 7, 60] {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let r = rt.block_on(move || smarm::spawn(move || descend(depth, &l)).join());
        let p = r.expect_err("the actor panicked");
        assert_eq!(message(p.as_ref()), "bottom reached");
        let expected: Vec<u32> = (0..=depth).collect();
        assert_eq!(*log.lock().unwrap(), expected, "depth {depth}");
    }
}

#[test]
fn actor_panics_are_unwound_by_smarm() {
    quiet();
    if smarm::__private::unwind_stats().is_none() {
        return; // built without the fast-unwind feature
    }
    let rt = rt(2);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let (before, after) = rt.block_on(move || {
        // The counters are per thread: panic and read them in one actor,
        // with no suspension point in between (so on one thread).
        let before = smarm::__private::unwind_stats().unwrap();
        for _ in 0..50 {
            assert!(catch_unwind(AssertUnwindSafe(|| descend(5, &l))).is_err());
        }
        (before, smarm::__private::unwind_stats().unwrap())
    });
    assert_eq!(log.lock().unwrap().len(), 50 * 6);
    assert_eq!(after.0, before.0 + 50, "every panic unwound by smarm");
    assert_eq!(after.1, before.1, "no panic handed to the system unwinder");
    // A plain thread's panics are the system unwinder's, and not counted.
    let plain = std::thread::spawn(|| {
        let _ = catch_unwind(|| panic!("on a plain thread"));
        smarm::__private::unwind_stats().unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(plain, (0, 0));
}

#[test]
fn nested_catch_unwind_then_a_second_panic() {
    quiet();
    let rt = rt(1);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let r = rt.block_on(move || {
        smarm::spawn(move || {
            let _outer = Guard(100, l.clone());
            let inner = catch_unwind(AssertUnwindSafe(|| descend(3, &l)));
            let p = inner.expect_err("the inner panic is caught in the actor");
            assert_eq!(message(p.as_ref()), "bottom reached");
            l.lock().unwrap().push(50);
            // The actor carries on, then panics for good.
            let _again = Guard(200, l.clone());
            panic!("second panic");
        })
        .join()
    });
    let p = r.expect_err("the second panic ends the actor");
    assert_eq!(message(p.as_ref()), "second panic");
    assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 50, 200, 100]);
}

#[test]
fn resume_unwind_carries_a_custom_payload() {
    quiet();
    let rt = rt(1);
    let r = rt.block_on(|| {
        smarm::spawn(|| -> u32 {
            let _s = String::from("a live allocation to drop");
            resume_unwind(Box::new(4242u64))
        })
        .join()
    });
    let p = r.expect_err("resume_unwind ends the actor");
    assert_eq!(p.downcast_ref::<u64>(), Some(&4242));
}

/// Blocks in its destructor until a message arrives: the actor parks in
/// the middle of its unwind, and may resume on another thread.
struct BlockingGuard(smarm::Receiver<u32>, Arc<Mutex<Vec<u32>>>);

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        let v = self.0.recv().expect("the sender waits for us");
        self.1.lock().unwrap().push(v);
    }
}

#[test]
fn a_destructor_that_blocks_during_the_unwind() {
    quiet();
    let rt = rt(2);
    for round in 0..200u32 {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let r = rt.block_on(move || {
            let (tx, rx) = smarm::channel();
            let h = smarm::spawn(move || {
                let _top = Guard(1, l.clone());
                let _blocking = BlockingGuard(rx, l.clone());
                descend(2, &l)
            });
            for _ in 0..round % 4 {
                smarm::yield_now();
            }
            tx.send(round + 1000).unwrap();
            h.join()
        });
        let p = r.expect_err("the actor panicked");
        assert_eq!(message(p.as_ref()), "bottom reached");
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, round + 1000, 1]);
    }
}

#[test]
fn panics_on_small_stacks_and_on_many_threads_at_once() {
    quiet();
    let rt = rt(2);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let n = rt.block_on(move || {
        let hs: Vec<_> = (0..2000u32)
            .map(|i| {
                let l = l.clone();
                let b = smarm::Builder::new();
                let b = if i % 2 == 0 {
                    b.stack_size(16 * 1024)
                } else {
                    b
                };
                b.spawn(move || descend(i % 8, &l))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join())
            .filter(|r| matches!(r, Err(p) if message(p.as_ref()) == "bottom reached"))
            .count()
    });
    assert_eq!(n, 2000);
    let expected: usize = (0..2000u32).map(|i| (i % 8 + 1) as usize).sum();
    assert_eq!(log.lock().unwrap().len(), expected);
}

#[test]
fn panics_on_plain_threads_still_unwind() {
    quiet();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let r = std::thread::spawn(move || descend(4, &l)).join();
    let p = r.expect_err("the thread panicked");
    assert_eq!(message(p.as_ref()), "bottom reached");
    assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    // And catch_unwind on this very thread.
    let log = Arc::new(Mutex::new(Vec::new()));
    let r = catch_unwind(AssertUnwindSafe(|| descend(2, &log)));
    assert!(r.is_err());
    assert_eq!(*log.lock().unwrap(), vec![0, 1, 2]);
}
