//! Panic isolation at scale: many actors panicking at once under one
//! supervisor channel.

use std::collections::HashSet;
use std::time::Duration;

use smarm::runtime::{self, Config};
use smarm::supervisor::{Restart, Strategy, Supervisor};
use smarm::{Builder, Signal};

const N: usize = 10_000;

/// Silences panic output for the 10,000 panics (after the runtime has
/// installed its hook, which this replaces; the hook's own output is
/// checked by `panic_output_names_the_actor`, in a process of its own).
fn quiet() {
    std::panic::set_hook(Box::new(|_| {}));
}

#[test]
fn ten_thousand_panics_are_all_reported() {
    let rt = runtime::init(Config::default().threads(2));
    quiet();
    rt.block_on(|| {
        let (tx, rx) = smarm::channel();
        let mut pids = HashSet::new();
        let mut handles = Vec::with_capacity(N);
        for i in 0..N {
            let h = Builder::new()
                .name(format!("panicker-{i}"))
                .spawn_under(tx.clone(), move || -> () { panic!("panicker {i} fails") });
            pids.insert(h.pid());
            handles.push(h);
        }
        drop(tx);
        let mut seen = HashSet::new();
        for sig in rx.iter() {
            match sig {
                Signal::Panic(pid, payload) => {
                    assert!(pids.contains(&pid), "a signal for an unknown pid {pid}");
                    assert!(seen.insert(pid), "a second signal for {pid}");
                    assert!(payload
                        .downcast_ref::<String>()
                        .is_some_and(|s| s.ends_with(" fails")));
                }
                s => panic!("expected a panic, got {s:?}"),
            }
        }
        assert_eq!(seen.len(), N);
        assert!(handles.into_iter().all(|h| h.join().is_err()));
        // The runtime is still healthy.
        let sum: usize = (0..100)
            .map(|i| smarm::spawn(move || i))
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(sum, 4950);
    });
}

#[test]
fn a_supervisor_of_ten_thousand_panicking_children() {
    let rt = runtime::init(Config::default().threads(2));
    quiet();
    rt.block_on(|| {
        let mut sup = Supervisor::new(Strategy::OneForOne);
        for i in 0..N {
            sup = sup.child(format!("temp-{i}"), Restart::Temporary, move || {
                panic!("temp {i} fails")
            });
        }
        // Temporary children are never restarted: once all have panicked
        // the supervisor has nothing left and returns.
        assert!(sup.spawn().join().is_ok());
        assert_eq!(smarm::spawn(|| 42).join().unwrap(), 42);
    });
}

#[test]
fn panic_output_names_the_actor() {
    // Re-run this test binary with only the child test selected, and read
    // what smarm's panic hook printed.
    if std::env::var_os("SMARM_SUPERVISION_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "panic_output_child",
            "--nocapture",
            "--include-ignored",
        ])
        .env("SMARM_SUPERVISION_CHILD", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // libtest prints "test name ... " in front of the child's first line
    // when it runs one test at a time (one CPU), so search within lines.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid = stdout
        .lines()
        .find_map(|l| {
            l.find("child pid ")
                .map(|i| l[i + "child pid ".len()..].to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "the child printed no pid:
{stdout}"
            )
        });
    let want = format!("smarm: actor {pid} \"flaky-worker\" panicked");
    assert!(err.contains(&want), "no line {want:?} in:\n{err}");
}

#[test]
#[ignore = "run by panic_output_names_the_actor"]
fn panic_output_child() {
    let rt = runtime::init(Config::default().threads(2));
    rt.block_on(|| {
        let (tx, rx) = smarm::channel();
        let h = Builder::new()
            .name("flaky-worker")
            .spawn_under(tx, || -> () { panic!("on purpose") });
        println!("child pid {}", h.pid());
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(60)),
            Ok(Signal::Panic(..))
        ));
    });
}
