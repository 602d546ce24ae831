//! Panics in actors: isolation, payloads, messages naming the actor, panics
//! with `RUST_BACKTRACE=full` on the default stack, and backtraces that end
//! cleanly at the actor's entry.
//!
//! Whatever prints to stderr or could crash the process (a broken unwinder)
//! runs in a child process: this test binary re-executed with a filter.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use smarm::runtime::{self, Config, Runtime};

const ROLE: &str = "SMARM_TESTS_CHILD_ROLE";

fn run_child(name: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, name)
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the child test process")
}

fn is_child(name: &str) -> bool {
    std::env::var(ROLE).is_ok_and(|r| r == name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn rt(threads: usize) -> Runtime {
    runtime::init(Config::default().threads(threads))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_string()
    }
}

// ---------------------------------------------------------------------------
// Isolation and payloads
// ---------------------------------------------------------------------------

#[test]
fn a_panic_never_takes_down_the_thread_or_other_actors() {
    // One scheduler thread: if a panic killed it, nothing would run after.
    let rt = rt(1);
    let ok = Arc::new(AtomicUsize::new(0));
    let o = ok.clone();
    let (panicked, fine) = rt.block_on(move || {
        let (_keep, rx) = smarm::channel::<()>();
        // Blocked actors survive panics of others.
        let waiter = smarm::spawn(move || {
            rx.recv_timeout(std::time::Duration::from_millis(50))
                .is_err()
        });
        let hs: Vec<_> = (0..60u32)
            .map(|i| {
                let o = o.clone();
                smarm::spawn(move || {
                    smarm::yield_now();
                    if i % 3 == 0 {
                        panic!("actor {i} fails");
                    }
                    smarm::yield_now();
                    o.fetch_add(1, Ordering::SeqCst);
                    i
                })
            })
            .collect();
        let mut panicked = 0;
        let mut fine = 0;
        for (i, h) in hs.into_iter().enumerate() {
            match h.join() {
                Ok(v) => {
                    assert_eq!(v as usize, i);
                    fine += 1;
                }
                Err(p) => {
                    assert_eq!(panic_message(p.as_ref()), format!("actor {i} fails"));
                    panicked += 1;
                }
            }
        }
        assert!(waiter.join().unwrap());
        (panicked, fine)
    });
    assert_eq!((panicked, fine), (20, 40));
    assert_eq!(ok.load(Ordering::SeqCst), 40);
    // The runtime is intact.
    assert_eq!(rt.block_on(|| smarm::spawn(|| 1).join().unwrap()), 1);
}

#[test]
fn payloads_reach_join_and_the_supervisor() {
    #[derive(Debug)]
    struct Custom(u64);
    let rt = rt(2);
    rt.block_on(|| {
        let (sup_tx, sup_rx) = smarm::channel();
        let a = smarm::spawn_under(sup_tx.clone(), || -> () { panic!("plain str") });
        let b = smarm::spawn_under(sup_tx.clone(), || -> () { panic!("with {}", "format") });
        let c = smarm::spawn_under(sup_tx, || -> () { std::panic::panic_any(Custom(77)) });
        let pids = [a.pid(), b.pid(), c.pid()];
        assert_eq!(panic_message(a.join().unwrap_err().as_ref()), "plain str");
        assert_eq!(panic_message(b.join().unwrap_err().as_ref()), "with format");
        assert!(c.join().is_err());
        let mut seen = 0;
        for _ in 0..3 {
            match sup_rx.recv().unwrap() {
                smarm::Signal::Panic(pid, p) if pid == pids[0] => {
                    assert_eq!(panic_message(p.as_ref()), "plain str");
                    seen |= 1;
                }
                smarm::Signal::Panic(pid, p) if pid == pids[1] => {
                    assert_eq!(panic_message(p.as_ref()), "with format");
                    seen |= 2;
                }
                smarm::Signal::Panic(pid, p) if pid == pids[2] => {
                    // The supervisor receives the original payload.
                    assert_eq!(p.downcast_ref::<Custom>().map(|c| c.0), Some(77));
                    seen |= 4;
                }
                s => panic!("unexpected {s:?}"),
            }
        }
        assert_eq!(seen, 7);
    });
}

#[test]
fn custom_payload_reaches_join_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Custom(Vec<u8>);
    let rt = rt(1);
    let got = rt.block_on(|| {
        let h = smarm::spawn(|| -> () { std::panic::panic_any(Custom(vec![1, 2, 3])) });
        h.join().unwrap_err().downcast::<Custom>().map(|b| *b).ok()
    });
    assert_eq!(got, Some(Custom(vec![1, 2, 3])));
}

#[test]
fn caught_panics_leave_the_actor_usable() {
    let rt = rt(2);
    let n = rt.block_on(|| {
        smarm::spawn(|| {
            let mut caught = 0;
            for i in 0..20 {
                let r = std::panic::catch_unwind(|| {
                    smarm::yield_now();
                    if i % 2 == 0 {
                        panic!("inner {i}");
                    }
                });
                if r.is_err() {
                    caught += 1;
                }
                smarm::yield_now();
            }
            caught
        })
        .join()
        .unwrap()
    });
    assert_eq!(n, 10);
}

// ---------------------------------------------------------------------------
// Messages (child processes)
// ---------------------------------------------------------------------------

#[inline(never)]
fn distinctive_failing_function(depth: u32) -> u32 {
    // Use some stack before panicking, as real code would.
    let mut pad = [depth as u8; 256];
    std::hint::black_box(&mut pad);
    if depth == 0 {
        panic!("boom-from-the-actor");
    }
    distinctive_failing_function(depth - 1) + pad[0] as u32
}

#[test]
fn child_named_and_unnamed_panics() {
    if !is_child("child_named_and_unnamed_panics") {
        return;
    }
    let rt = rt(2);
    rt.block_on(|| {
        let h = smarm::Builder::new()
            .name("worker-7")
            .spawn(|| -> () { panic!("named-boom") });
        println!("NAMED_PID {}", h.pid());
        assert!(h.join().is_err());
        let h = smarm::spawn(|| -> () { panic!("anonymous-boom") });
        println!("ANON_PID {}", h.pid());
        assert!(h.join().is_err());
    });
    println!("CARRIED_ON");
}

fn value_after<'a>(out: &'a str, key: &str) -> &'a str {
    let i = out
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in child output:\n{out}"));
    out[i + key.len()..].split_whitespace().next().unwrap()
}

#[test]
fn panic_messages_name_the_actor() {
    let out = run_child("child_named_and_unnamed_panics", &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("CARRIED_ON"));
    let named = value_after(&stdout, "NAMED_PID ");
    let anon = value_after(&stdout, "ANON_PID ");
    let named_line = stderr
        .lines()
        .find(|l| l.contains(named) && l.contains("\"worker-7\""))
        .unwrap_or_else(|| panic!("no line names actor {named} \"worker-7\":\n{stderr}"));
    assert!(named_line.contains("panicked"), "{named_line}");
    assert!(stderr.contains("named-boom"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(anon) && l.contains("panicked")),
        "unnamed actor {anon}:\n{stderr}"
    );
    assert!(stderr.contains("anonymous-boom"), "{stderr}");
}

#[test]
fn child_backtrace_full_panics() {
    if !is_child("child_backtrace_full_panics") {
        return;
    }
    // One scheduler thread: the reports cannot interleave (that is tested
    // separately by `concurrent_panic_reports_do_not_interleave`).
    let rt = rt(1);
    rt.block_on(|| {
        // Several in a row, on the default stack and on the smallest one.
        let mut hs = Vec::new();
        for i in 0..8u32 {
            let b = smarm::Builder::new().name(format!("bt-{i}"));
            let b = if i % 2 == 0 {
                b
            } else {
                b.stack_size(16 * 1024)
            };
            hs.push(b.spawn(move || distinctive_failing_function(3 + i % 3)));
        }
        for h in hs {
            let p = h.join().unwrap_err();
            assert_eq!(panic_message(p.as_ref()), "boom-from-the-actor");
        }
        // Still working afterwards.
        assert_eq!(smarm::spawn(|| 5).join().unwrap(), 5);
    });
    println!("CARRIED_ON");
}

#[test]
fn panic_with_full_backtrace_on_the_default_stack_carries_on() {
    let out = run_child("child_backtrace_full_panics", &[("RUST_BACKTRACE", "full")]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the process must carry on:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("CARRIED_ON"), "{stdout}");
    assert_eq!(stderr.matches("boom-from-the-actor").count(), 8, "{stderr}");
    assert!(stderr.contains("stack backtrace"), "{stderr}");
    // The trace walks from the hook's borrowed stack back onto the actor's.
    assert!(stderr.contains("distinctive_failing_function"), "{stderr}");
    assert!(stderr.contains("smarm_trampoline"), "{stderr}");
    for i in 0..8 {
        assert!(
            stderr.contains(&format!("\"bt-{i}\"")),
            "actor bt-{i} named:\n{stderr}"
        );
    }
    // Each trace ends at the trampoline; at most the unwinder's customary
    // terminating null frame (as on any thread) follows it.
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("- smarm_trampoline") {
            let next_frame = lines[i + 1..].iter().find(|l| {
                let t = l.trim_start();
                t.split(':')
                    .next()
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            });
            if let Some(n) = next_frame {
                let frame_no_prev: usize =
                    l.trim_start().split(':').next().unwrap().parse().unwrap();
                let frame_no_next: usize =
                    n.trim_start().split(':').next().unwrap().parse().unwrap();
                if frame_no_next == frame_no_prev + 1 {
                    assert!(
                        n.contains("0x0 - <unknown>"),
                        "garbage frame after the trampoline: {n}"
                    );
                }
            }
        }
    }
}

#[test]
fn child_many_concurrent_panics() {
    if !is_child("child_many_concurrent_panics") {
        return;
    }
    let rt = rt(2);
    let n = rt.block_on(|| {
        let hs: Vec<_> = (0..200u32)
            .map(|i| {
                smarm::Builder::new().name(format!("c-{i}")).spawn(move || {
                    smarm::yield_now();
                    if i % 2 == 0 {
                        panic!("many-{i}");
                    }
                })
            })
            .collect();
        for h in &hs {
            println!(
                "PID {} c-{}",
                h.pid(),
                hs.iter().position(|x| x.pid() == h.pid()).unwrap()
            );
        }
        hs.into_iter()
            .map(|h| h.join().is_err() as u32)
            .sum::<u32>()
    });
    println!("PANICKED {n}");
}

fn check_concurrent_reports(backtrace: &str) {
    let out = run_child(
        "child_many_concurrent_panics",
        &[("RUST_BACKTRACE", backtrace)],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(value_after(&stdout, "PANICKED "), "100");
    let lines: Vec<&str> = stderr.lines().collect();
    for l in stdout
        .lines()
        .filter_map(|l| l.find("PID ").map(|i| &l[i + 4..]))
    {
        let (pid, name) = l.split_once(' ').unwrap();
        let i: u32 = name[2..].parse().unwrap();
        if i % 2 != 0 {
            continue;
        }
        // Each report is intact: a whole line naming the actor, and the
        // message on a line of its own.
        assert!(
            lines.iter().any(|l| l.starts_with("smarm: actor ")
                && l.contains(&format!("{pid} \"{name}\" panicked"))),
            "no intact report line for {pid} {name}:\n{stderr}"
        );
        assert!(
            lines.contains(&format!("many-{i}").as_str()),
            "no intact message many-{i}:\n{stderr}"
        );
    }
}

#[test]
fn many_concurrent_panics_leave_the_process_running() {
    // Only the outcome: the text of concurrent reports is checked by
    // `concurrent_panic_reports_do_not_interleave`.
    let out = run_child("child_many_concurrent_panics", &[("RUST_BACKTRACE", "1")]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(value_after(&stdout, "PANICKED "), "100");
}

#[test]
fn concurrent_panic_reports_do_not_interleave() {
    for bt in ["0", "full"] {
        check_concurrent_reports(bt);
    }
}

// ---------------------------------------------------------------------------
// Backtraces taken inside actors
// ---------------------------------------------------------------------------

/// Function names of a captured backtrace, innermost first.
fn frame_names(bt: &std::backtrace::Backtrace) -> Vec<String> {
    let dbg = format!("{bt:?}");
    dbg.split("{ fn: \"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap_or(s.len())].to_string())
        .collect()
}

#[inline(never)]
fn capture_here(tag: &str) -> String {
    let bt = std::backtrace::Backtrace::force_capture();
    format!("TRACE {tag} {}", frame_names(&bt).join(" | "))
}

#[inline(never)]
fn capture_deeper(n: u32, tag: &str) -> String {
    if n == 0 {
        capture_here(tag)
    } else {
        let s = capture_deeper(n - 1, tag);
        std::hint::black_box(s)
    }
}

#[test]
fn child_backtraces_in_actors() {
    if !is_child("child_backtraces_in_actors") {
        return;
    }
    let rt = rt(2);
    let traces = rt.block_on(|| {
        let mut out = vec![capture_here("block_on")];
        out.push(smarm::spawn(|| capture_here("fresh")).join().unwrap());
        out.push(
            smarm::spawn(|| {
                for _ in 0..50 {
                    smarm::yield_now();
                }
                capture_deeper(5, "after_yields")
            })
            .join()
            .unwrap(),
        );
        out.push(
            smarm::spawn(|| {
                smarm::sleep(std::time::Duration::from_millis(2));
                capture_here("after_sleep")
            })
            .join()
            .unwrap(),
        );
        out.push(
            smarm::Builder::new()
                .stack_size(16 * 1024)
                .spawn(|| capture_here("small_stack"))
                .join()
                .unwrap(),
        );
        out.push(
            smarm::spawn(|| smarm::spawn(|| capture_here("nested")).join().unwrap())
                .join()
                .unwrap(),
        );
        // During a Killed unwind.
        let (tx, rx) = smarm::channel();
        let (ready_tx, ready_rx) = smarm::channel::<()>();
        let h = smarm::spawn(move || {
            struct OnDrop(smarm::Sender<String>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    let _ = self.0.send(capture_here("killed_unwind"));
                }
            }
            let _d = OnDrop(tx);
            ready_tx.send(()).unwrap();
            smarm::sleep(std::time::Duration::from_secs(3600));
        });
        // Killed before it ran, the actor would have no OnDrop to capture in.
        ready_rx.recv().unwrap();
        smarm::kill(h.pid());
        assert!(h.join().is_err());
        out.push(rx.recv().unwrap());
        out
    });
    for t in traces {
        println!("{t}");
    }
    println!("CARRIED_ON");
}

#[test]
fn backtraces_end_cleanly_at_the_actor_entry() {
    let out = run_child("child_backtraces_in_actors", &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "capturing backtraces must not crash:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("CARRIED_ON"));
    let tags = [
        "block_on",
        "fresh",
        "after_yields",
        "after_sleep",
        "small_stack",
        "nested",
        "killed_unwind",
    ];
    for tag in tags {
        let line = stdout
            .lines()
            .find_map(|l| l.find(&format!("TRACE {tag} ")).map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("no trace {tag}:\n{stdout}"));
        let frames: Vec<&str> = line[format!("TRACE {tag} ").len()..].split(" | ").collect();
        assert!(
            frames.iter().any(|f| f.contains("capture_here")),
            "{tag}: {line}"
        );
        let n = frames.len();
        assert!(n >= 3, "{tag}: {line}");
        assert_eq!(
            frames[n - 1],
            "smarm_trampoline",
            "{tag}: the trace ends at the trampoline: {line}"
        );
        assert!(
            frames[n - 2].contains("actor_entry"),
            "{tag}: just above it, the actor entry: {line}"
        );
        assert!(
            frames
                .iter()
                .all(|f| !f.is_empty() && !f.contains("<unknown>")),
            "{tag}: no unresolved frames: {line}"
        );
    }
}

// ---------------------------------------------------------------------------
// Destructors that panic when the runtime drops an application's values
// ---------------------------------------------------------------------------

/// Counts its drops; its destructor panics (unless already unwinding).
struct Bomb(&'static AtomicUsize);

impl Drop for Bomb {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        if !std::thread::panicking() {
            panic!("a destructor that panics");
        }
    }
}

/// Waits (without a deadline) until `n` bombs have been dropped.
fn wait_for_drops(count: &AtomicUsize, n: usize) {
    while count.load(Ordering::SeqCst) < n {
        std::thread::yield_now();
    }
}

#[test]
fn child_panicking_destructors_in_the_runtime() {
    if !is_child("child_panicking_destructors_in_the_runtime") {
        return;
    }
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    // One worker: had a panic killed it, everything after would hang.
    let rt = rt(1);
    // The result of an actor nobody joins, dropped when the actor ends.
    drop(rt.spawn(|| Bomb(&DROPS)));
    wait_for_drops(&DROPS, 1);
    assert_eq!(rt.block_on(|| 1), 1);
    // The panic payload of an actor nobody joins.
    drop(rt.spawn(|| std::panic::panic_any(Bomb(&DROPS))));
    wait_for_drops(&DROPS, 2);
    assert_eq!(rt.block_on(|| 2), 2);
    // A child's result dropped while its parent runs: the parent is not
    // hurt, nor left unwinding.
    let v = rt.block_on(|| {
        drop(smarm::spawn(|| Bomb(&DROPS)));
        while DROPS.load(Ordering::SeqCst) < 3 {
            smarm::yield_now();
        }
        assert!(!std::thread::panicking());
        3
    });
    assert_eq!(v, 3);
    // A panic signal for a supervisor that is gone, dropped at the end of
    // the actor; its joiner still gets the panic.
    let joined = rt.block_on(|| {
        let (tx, rx) = smarm::channel::<smarm::Signal>();
        drop(rx);
        smarm::spawn_under(tx, || std::panic::panic_any(Bomb(&DROPS))).join()
    });
    assert!(joined.is_err());
    wait_for_drops(&DROPS, 4);
    // The closure of an actor killed before it ran, dropped by the worker.
    static STARTED: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let spinner = rt.spawn(|| {
        STARTED.store(true, Ordering::SeqCst);
        // No allocation and no check!(): the worker stays here.
        while !RELEASE.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
    });
    while !STARTED.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let bomb = Bomb(&DROPS);
    let h = rt.spawn(move || drop(bomb));
    smarm::kill(h.pid());
    RELEASE.store(true, Ordering::SeqCst);
    let e = h.join().expect_err("killed before it ran");
    assert!(e.is::<smarm::Killed>());
    spinner.join().expect("the spinner");
    assert_eq!(DROPS.load(Ordering::SeqCst), 5);
    assert_eq!(rt.block_on(|| 5), 5);
    drop(rt);
    assert_eq!(DROPS.load(Ordering::SeqCst), 5);
}

#[test]
fn panicking_destructors_in_the_runtime_are_contained() {
    let out = run_child("child_panicking_destructors_in_the_runtime", &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "child failed: {err}");
    for what in [
        "dropping the result",
        "dropping the panic payload",
        "sending the exit signal",
        "dropping the closure",
    ] {
        assert!(
            err.contains(&format!("smarm: a panic while {what} of actor")),
            "no report of {what}: {err}"
        );
    }
    assert_eq!(
        err.matches("was contained; the runtime carries on").count(),
        5,
        "{err}"
    );
}
