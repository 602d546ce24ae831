//! `spawn_under`: exactly one `Signal` per child, whatever way it ends.

use std::time::Duration;

use smarm::runtime::{self, Config};
use smarm::{Builder, Killed, Signal, TryRecvError};

fn rt() -> runtime::Runtime {
    runtime::init(Config::default().threads(2))
}

/// The one signal that must be waiting, and nothing after it.
fn only_signal(rx: &smarm::Receiver<Signal>) -> Signal {
    let s = rx.recv_timeout(Duration::from_secs(60)).expect("a signal");
    assert!(rx.try_recv().is_err(), "a second signal for one child");
    s
}

#[test]
fn return_sends_exit() {
    rt().block_on(|| {
        let (tx, rx) = smarm::channel();
        let h = smarm::spawn_under(tx, || 7);
        let pid = h.pid();
        assert_eq!(h.join().unwrap(), 7);
        match only_signal(&rx) {
            Signal::Exit(p) => assert_eq!(p, pid),
            s => panic!("expected Exit, got {s:?}"),
        }
    });
}

#[test]
fn panic_sends_its_payload() {
    rt().block_on(|| {
        let (tx, rx) = smarm::channel();
        let h1 = smarm::spawn_under(tx.clone(), || panic!("static message"));
        let h2 = Builder::new()
            .name("formatter")
            .spawn_under(tx.clone(), || {
                let n = std::hint::black_box(42);
                panic!("formatted {n}")
            });
        let h3 = smarm::spawn_under(tx, || std::panic::panic_any(1234u32));
        let pids = [h1.pid(), h2.pid(), h3.pid()];
        assert!(h1.join().is_err() && h2.join().is_err() && h3.join().is_err());
        let mut got = 0;
        for _ in 0..3 {
            match rx.recv_timeout(Duration::from_secs(60)).expect("a signal") {
                Signal::Panic(p, payload) if p == pids[0] => {
                    assert_eq!(*payload.downcast::<&str>().unwrap(), "static message");
                    got |= 1;
                }
                Signal::Panic(p, payload) if p == pids[1] => {
                    assert_eq!(*payload.downcast::<String>().unwrap(), "formatted 42");
                    got |= 2;
                }
                Signal::Panic(p, payload) if p == pids[2] => {
                    assert_eq!(
                        *payload.downcast::<u32>().unwrap(),
                        1234,
                        "the supervisor gets the original payload"
                    );
                    got |= 4;
                }
                s => panic!("unexpected {s:?}"),
            }
        }
        assert_eq!(got, 7);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    });
}

#[test]
fn kill_sends_killed() {
    rt().block_on(|| {
        let (tx, rx) = smarm::channel();
        let h = smarm::spawn_under(tx, || loop {
            smarm::sleep(Duration::from_millis(5));
        });
        let pid = h.pid();
        smarm::sleep(Duration::from_millis(20));
        smarm::kill(pid);
        assert!(h.join().unwrap_err().is::<Killed>());
        match only_signal(&rx) {
            Signal::Panic(p, payload) => {
                assert_eq!(p, pid);
                assert!(payload.is::<Killed>());
            }
            s => panic!("expected Panic(Killed), got {s:?}"),
        }
    });
}

#[test]
fn kill_before_first_run_sends_killed() {
    rt().block_on(|| {
        let (tx, rx) = smarm::channel();
        let h = smarm::spawn_under(tx, || {
            unreachable!("a child killed before it ran must not run")
        });
        smarm::kill(h.pid());
        assert!(h.join().unwrap_err().is::<Killed>());
        assert!(matches!(only_signal(&rx), Signal::Panic(_, p) if p.is::<Killed>()));
    });
}

#[test]
fn kill_before_first_run_waits_for_room_in_a_full_supervisor_channel() {
    // One worker, and a bounded supervisor channel already full: the killed
    // child's signal must wait for room without holding the worker, which
    // the receiver below needs.
    let rt = runtime::init(Config::default().threads(1));
    rt.block_on(|| {
        let (tx, rx) = smarm::bounded::<Signal>(1);
        let first = smarm::spawn_under(tx.clone(), || ());
        let first_pid = first.pid();
        first.join().unwrap();
        let h = smarm::spawn_under(tx, || {
            unreachable!("a child killed before it ran must not run")
        });
        let killed_pid = h.pid();
        smarm::kill(h.pid());
        // Let the child finish first: it finds the channel full.
        smarm::yield_now();
        let receiver = smarm::spawn(move || (rx.recv().unwrap(), rx.recv().unwrap()));
        assert!(h.join().unwrap_err().is::<Killed>());
        let (a, b) = receiver.join().unwrap();
        assert!(matches!(a, Signal::Exit(p) if p == first_pid));
        assert!(
            matches!(b, Signal::Panic(p, payload) if p == killed_pid && payload.is::<Killed>())
        );
    });
}

#[test]
fn a_kill_after_the_closure_returned_does_not_lose_the_signal() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    static STARTED: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    // One worker: the receiver below runs only once the child has parked.
    let rt = runtime::init(Config::default().threads(1));
    let (go, h, receiver) = rt.block_on(|| {
        let (tx, rx) = smarm::bounded::<Signal>(1);
        smarm::spawn_under(tx.clone(), || ()).join().unwrap();
        let (go_tx, go_rx) = smarm::channel::<()>();
        let receiver = smarm::spawn(move || {
            go_rx.recv().unwrap();
            (rx.recv().unwrap(), rx.recv())
        });
        // The channel is full; the child is killed while it runs its last
        // steps (no suspension point left), then waits for room.
        let h = smarm::spawn_under(tx, || {
            STARTED.store(true, SeqCst);
            while !RELEASE.load(SeqCst) {
                std::hint::spin_loop();
            }
            5u32
        });
        (go_tx, h, receiver)
    });
    while !STARTED.load(SeqCst) {
        std::thread::yield_now();
    }
    let pid = h.pid();
    smarm::kill(pid);
    RELEASE.store(true, SeqCst);
    go.send(()).unwrap();
    let (first, second) = receiver.join().unwrap();
    assert!(matches!(first, Signal::Exit(_)));
    assert!(matches!(second.expect("the child's signal"), Signal::Exit(p) if p == pid));
    assert_eq!(h.join().unwrap(), 5);
}

#[test]
fn gone_supervisor_channel_is_not_an_error() {
    rt().block_on(|| {
        let (tx, rx) = smarm::channel::<Signal>();
        drop(rx);
        let ok = smarm::spawn_under(tx.clone(), || 1);
        let bad = smarm::spawn_under(tx, || -> i32 { panic!("nobody listens") });
        assert_eq!(ok.join().unwrap(), 1);
        assert!(bad.join().is_err());
    });
}

#[test]
fn runtime_shutdown_sends_killed() {
    let rt = rt();
    let (tx, rx) = smarm::channel();
    let started = smarm::channel::<()>();
    let h = rt.block_on(move || {
        let ready = started.0.clone();
        let h = smarm::spawn_under(tx, move || {
            ready.send(()).unwrap();
            loop {
                smarm::sleep(Duration::from_secs(1));
            }
        });
        started.1.recv().unwrap();
        h
    });
    let pid = h.pid();
    drop(rt);
    assert!(h.join().unwrap_err().is::<Killed>());
    match only_signal(&rx) {
        Signal::Panic(p, payload) => {
            assert_eq!(p, pid);
            assert!(payload.is::<Killed>());
        }
        s => panic!("expected Panic(Killed), got {s:?}"),
    }
}

const ROLE: &str = "SMARM_TESTS_CHILD_ROLE";

#[test]
fn child_stackless_actor_waits_for_room() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let rt = runtime::init(Config::default().threads(1));
    assert_eq!(rt.block_on(|| 1), 1);
    // From here on no mapping of more than 256 MiB can be made, so a 1 GiB
    // stack cannot be had, while a thread's stack still can.
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    let limit = vm_kib * 1024 + (256 << 20);
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct; it only limits this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    rt.block_on(|| {
        let (tx, rx) = smarm::bounded::<Signal>(1);
        let first = smarm::spawn_under(tx.clone(), || ());
        let first_pid = first.pid();
        first.join().unwrap();
        // No stack: it ends as a panic in the scheduler context, which
        // must not wait there for room in the full channel.
        let h = Builder::new().stack_size(1 << 30).spawn_under(tx, || ());
        let pid = h.pid();
        let err = h.join().unwrap_err();
        let msg = err.downcast_ref::<String>().expect("a message");
        assert!(msg.contains("could not allocate a stack"), "{msg}");
        assert!(matches!(rx.recv().unwrap(), Signal::Exit(p) if p == first_pid));
        assert!(matches!(rx.recv().unwrap(), Signal::Panic(p, _) if p == pid));
    });
}

#[test]
fn stackless_actor_waits_for_room_in_a_full_supervisor_channel() {
    let exe = std::env::current_exe().expect("test binary path");
    let name = "child_stackless_actor_waits_for_room";
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, name)
        .output()
        .expect("run the child test process");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}
