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

/// The variable that tells a re-executed test binary to play the child.
const CHILD: &str = "SMARM_UNWIND_PARK_CHILD";

/// An application's panic hook, installed after the runtime started,
/// replaces smarm's. Actors that panic and then park in a destructor must
/// still resume on their own thread: std counts panics per OS thread, and
/// an unwind that ended on another thread would leave one thread's count
/// raised (every later actor panic there aborts the process) and the
/// other's wrapped below zero. Run in a child process: the hook is
/// process-wide, and a broken count aborts.
#[test]
fn mid_unwind_parks_stay_put_under_an_application_panic_hook() {
    if std::env::var_os(CHILD).is_some() {
        return replaced_hook_child();
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "mid_unwind_parks_stay_put_under_an_application_panic_hook",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("CHILD_DONE"),
        "child failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
}

fn replaced_hook_child() {
    let rt = runtime::init(Config::default().threads(2));
    // The application's hook, after smarm's was installed: it reports
    // only the panics this test does not make on purpose.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
        if !["on purpose", "again", "a panic in flight"]
            .iter()
            .any(|p| msg.starts_with(p))
        {
            eprintln!("unexpected panic: {info}");
        }
    }));
    // A busy actor per round keeps one worker occupied, so that the
    // injected wake-up of a parked panicker may be taken by either thread.
    for _ in 0..100 {
        let (parked_tx, parked_rx) = smarm::channel::<()>();
        let (gate_tx, gate_rx) = smarm::channel::<()>();
        let panicker = rt.spawn(move || {
            let _d = GatedDrop {
                parked: parked_tx,
                gate: gate_rx,
            };
            panic!("on purpose, with a destructor that parks");
        });
        let busy = rt.spawn(|| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(200) {
                smarm::check!();
            }
        });
        parked_rx.recv().expect("the panicker parked mid-unwind");
        gate_tx.send(()).expect("the panicker waits at its gate");
        assert!(panicker.join().is_err(), "the panic reaches join");
        busy.join().expect("busy actor");
    }
    // std answers `thread::panicking()` from a process-wide count first and
    // reads the thread's own count only while some panic is in flight
    // somewhere: put one in flight on a plain thread (parked in a destructor
    // of its unwind), then no actor on either scheduler thread may see one.
    let (in_drop_tx, in_drop_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    struct Blocks(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>);
    impl Drop for Blocks {
        fn drop(&mut self) {
            let _ = self.0.send(());
            let _ = self.1.recv();
        }
    }
    let plain = std::thread::spawn(move || {
        let _b = Blocks(in_drop_tx, release_rx);
        panic!("a panic in flight on a plain thread");
    });
    in_drop_rx.recv().expect("the plain thread is mid-unwind");
    let wrong = (0..200)
        .map(|_| rt.spawn(std::thread::panicking))
        .collect::<Vec<_>>()
        .into_iter()
        .filter(|_| true)
        .map(|h| h.join().expect("a fresh actor"))
        .filter(|&p| p)
        .count();
    release_tx.send(()).expect("the plain thread waits");
    assert!(plain.join().is_err());
    assert_eq!(
        wrong, 0,
        "fresh actors see a stale panic count of their thread"
    );
    println!("CHILD_DONE");
}
