//! Actors that park in the middle of an unwind (a destructor that sleeps,
//! joins or receives during a `Killed` unwind). std counts panics per OS
//! thread, so the runtime keeps such an actor on its thread until the unwind
//! ends, and decides kill delivery from the actor's own state rather than
//! from `std::thread::panicking()` (which, while such an actor is parked,
//! also reads true for the other actors of its thread: the documented
//! limitation in LOOM.md, "Unwinding actors").

use std::time::{Duration, Instant};

use smarm::runtime::{self, Config};

/// Polls `h.is_finished()` for up to `limit` (a hang guard for a repro).
fn finishes<T>(h: &smarm::JoinHandle<T>, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if h.is_finished() {
            return true;
        }
        smarm::sleep(Duration::from_millis(5));
    }
    false
}

struct SlowDrop;
impl Drop for SlowDrop {
    fn drop(&mut self) {
        // Parks during the unwind.
        smarm::sleep(Duration::from_millis(300));
    }
}

#[test]
fn kill_is_delivered_while_another_actor_on_the_thread_parks_mid_unwind() {
    let rt = runtime::init(Config::default().threads(1));
    rt.block_on(|| {
        let x = smarm::spawn(|| {
            let _d = SlowDrop;
            loop {
                smarm::sleep(Duration::from_secs(600));
            }
        });
        let y = smarm::spawn(|| loop {
            smarm::sleep(Duration::from_secs(600));
        });
        smarm::sleep(Duration::from_millis(20));
        smarm::kill(x.pid()); // x unwinds and parks in SlowDrop for 300 ms
        smarm::sleep(Duration::from_millis(20));
        smarm::kill(y.pid()); // y must unwind although the thread's count is raised
        assert!(
            finishes(&y, Duration::from_secs(3)),
            "the kill of y was lost"
        );
    });
}

#[test]
fn panic_counts_stay_right_after_mid_unwind_parks_on_two_threads() {
    let rt = runtime::init(Config::default().threads(2));
    rt.block_on(|| {
        // Actors park mid-unwind one after the other; some of them resume
        // on the other thread.
        for i in 0..10 {
            let h = smarm::spawn(|| {
                let _d = SlowDrop;
                loop {
                    smarm::sleep(Duration::from_secs(600));
                }
            });
            smarm::sleep(Duration::from_millis(10));
            smarm::kill(h.pid());
            assert!(
                finishes(&h, Duration::from_secs(3)),
                "the kill of actor {i} was lost"
            );
        }
        // Nothing is unwinding now; fresh actors on either thread must agree.
        let wrong = (0..200)
            .map(|_| smarm::spawn(std::thread::panicking).join().unwrap())
            .filter(|&p| p)
            .count();
        assert_eq!(
            wrong, 0,
            "fresh actors that are not unwinding see std::thread::panicking() == true"
        );
    });
}
