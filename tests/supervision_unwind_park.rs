//! Actors that park in the middle of an unwind (a destructor that sleeps,
//! joins or receives during a `Killed` unwind). std counts panics per OS
//! thread, so the runtime keeps such an actor on its thread until the unwind
//! ends, and decides kill delivery from the actor's own state rather than
//! from `std::thread::panicking()` (which, while such an actor is parked,
//! also reads true for the other actors of its thread: the documented
//! limitation in LOOM.md, "Unwinding actors").

use std::time::{Duration, Instant};

use smarm::runtime::{self, Config};
use smarm::{Receiver, Sender};

/// A hang guard, not a timing expectation: a lost kill never finishes.
const HANG_GUARD: Duration = Duration::from_secs(60);

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

/// Parks during the unwind until its gate closes, having said so first.
struct GatedDrop {
    parked: Sender<()>,
    gate: Receiver<()>,
}
impl Drop for GatedDrop {
    fn drop(&mut self) {
        let _ = self.parked.send(());
        let _ = self.gate.recv();
    }
}

#[test]
fn kill_is_delivered_while_another_actor_on_the_thread_parks_mid_unwind() {
    let rt = runtime::init(Config::default().threads(1));
    rt.block_on(|| {
        let (up_tx, up_rx) = smarm::channel::<()>();
        let (parked_tx, parked_rx) = smarm::channel::<()>();
        let (gate_tx, gate_rx) = smarm::channel::<()>();
        let x = {
            let up = up_tx.clone();
            smarm::spawn(move || {
                let _d = GatedDrop {
                    parked: parked_tx,
                    gate: gate_rx,
                };
                up.send(()).unwrap();
                loop {
                    smarm::sleep(Duration::from_secs(600));
                }
            })
        };
        let y = smarm::spawn(move || {
            up_tx.send(()).unwrap();
            loop {
                smarm::sleep(Duration::from_secs(600));
            }
        });
        // Both have started (killed before their first run, they would not
        // unwind at all).
        up_rx.recv().unwrap();
        up_rx.recv().unwrap();
        smarm::kill(x.pid());
        parked_rx.recv().unwrap(); // x is unwinding and parked in GatedDrop
        smarm::kill(y.pid()); // y must unwind although the thread's count is raised
        assert!(finishes(&y, HANG_GUARD), "the kill of y was lost");
        assert!(!x.is_finished(), "x left its gate early");
        drop(gate_tx);
        assert!(finishes(&x, HANG_GUARD), "x never finished its unwind");
    });
}

#[test]
fn panic_counts_stay_right_after_mid_unwind_parks_on_two_threads() {
    let rt = runtime::init(Config::default().threads(2));
    rt.block_on(|| {
        // Actors park mid-unwind one after the other; some of them resume
        // on the other thread.
        for i in 0..10 {
            let (up_tx, up_rx) = smarm::channel::<()>();
            let h = smarm::spawn(move || {
                let _d = SlowDrop;
                up_tx.send(()).unwrap();
                loop {
                    smarm::sleep(Duration::from_secs(600));
                }
            });
            up_rx.recv().unwrap(); // started: the kill makes it unwind
            smarm::kill(h.pid());
            assert!(finishes(&h, HANG_GUARD), "the kill of actor {i} was lost");
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
