//! Runtime lifecycle: configuration, `block_on`, spawning from actors and
//! plain threads, joining values and panics, several runtimes in one
//! process, the no-runtime panic, shutdown and `kill`.
//!
//! Tests that must set `SMARM_*` variables run in a child process (this test
//! binary re-executed with a filter), because the environment is shared by
//! every test thread of the process.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smarm::runtime::{self, Config, Runtime};
use smarm::Killed;

/// The variable that tells a re-executed test binary which child role to play.
const ROLE: &str = "SMARM_TESTS_CHILD_ROLE";

/// Runs the test `name` of this binary in a child process with `env` set.
fn run_child(name: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, name);
    for var in [
        "SMARM_THREADS",
        "SMARM_STACK_SIZE",
        "SMARM_ALLOC_INTERVAL",
        "SMARM_TIMESLICE_CYCLES",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the child test process")
}

/// True when this process is the child playing `name`.
fn is_child(name: &str) -> bool {
    std::env::var(ROLE).is_ok_and(|r| r == name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn rt(threads: usize) -> Runtime {
    runtime::init(Config::default().threads(threads))
}

/// Counts its drops.
struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
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
// Lifecycle and block_on
// ---------------------------------------------------------------------------

#[test]
fn block_on_returns_the_value() {
    let rt = rt(2);
    assert_eq!(rt.threads(), 2);
    assert_eq!(rt.block_on(|| 6 * 7), 42);
    let s = rt.block_on(|| String::from("hello"));
    assert_eq!(s, "hello");
}

#[test]
fn block_on_runs_inside_an_actor() {
    let rt = rt(1);
    assert!(
        smarm::self_pid().is_none(),
        "the test thread is not an actor"
    );
    let pid = rt.block_on(smarm::self_pid);
    assert!(pid.is_some(), "block_on's closure runs as an actor");
}

#[test]
fn block_on_can_be_called_repeatedly() {
    let rt = rt(2);
    for i in 0..100u64 {
        assert_eq!(rt.block_on(move || i + 1), i + 1);
    }
}

#[test]
fn block_on_after_long_and_short_waits_returns_every_value() {
    // A one-thread runtime leaves a core free on a multi-core machine, so the
    // waiting thread plans its wait from the previous one: after a long wait
    // it naps first and must still return an earlier end (here: at once),
    // and after a short one it only spins. Every value must come back.
    let rt = rt(1);
    let long = || {
        smarm::sleep(Duration::from_millis(20));
        1u32
    };
    for round in 0..3u32 {
        assert_eq!(rt.block_on(long), 1);
        assert_eq!(rt.block_on(move || round + 10), round + 10);
        assert_eq!(rt.block_on(move || round + 20), round + 20);
        assert_eq!(rt.block_on(long), 1);
    }
    // The same from several plain threads at once, each with its own
    // history of waits.
    let rt = Arc::new(rt);
    let threads: Vec<_> = (0..3u32)
        .map(|t| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                for i in 0..4u32 {
                    assert_eq!(rt.block_on(long), 1);
                    assert_eq!(rt.block_on(move || t * 100 + i), t * 100 + i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a block_on thread failed");
    }
}

#[test]
fn block_on_reraises_the_panic() {
    let rt = rt(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|| -> u32 { panic!("block_on boom") })
    }));
    let p = r.expect_err("block_on must re-raise the actor's panic");
    assert_eq!(panic_message(p.as_ref()), "block_on boom");
    // The runtime is still usable afterwards.
    assert_eq!(rt.block_on(|| 5), 5);
}

#[test]
fn default_config_starts() {
    let rt = runtime::init(Config::default());
    assert!(rt.threads() >= 1);
    assert_eq!(rt.block_on(|| 1), 1);
}

#[test]
fn builder_methods_all_apply() {
    let rt = runtime::try_init(
        Config::default()
            .threads(3)
            .stack_size(128 * 1024)
            .alloc_interval(64)
            .timeslice_cycles(1_000_000),
    )
    .expect("valid config");
    assert_eq!(rt.threads(), 3);
    // A 128 KiB default stack holds an 80 KiB frame (more than 64 KiB).
    #[inline(never)]
    fn big_frame() -> usize {
        let mut big = [1u8; 80 * 1024];
        std::hint::black_box(&mut big);
        big.len()
    }
    assert_eq!(rt.block_on(big_frame), 80 * 1024);
}

// ---------------------------------------------------------------------------
// Config errors
// ---------------------------------------------------------------------------

#[test]
fn config_errors_from_builder_name_the_knob_and_value() {
    let cases: Vec<(Config, &str, &str)> = vec![
        (Config::default().threads(0), "threads", "0"),
        (Config::default().threads(100_000), "threads", "100000"),
        (Config::default().stack_size(0), "stack_size", "0"),
        (Config::default().stack_size(1024), "stack_size", "1024"),
        (
            Config::default().stack_size(usize::MAX),
            "stack_size",
            "18446744073709551615",
        ),
        (
            Config::default().timeslice_cycles(0),
            "timeslice_cycles",
            "0",
        ),
    ];
    for (cfg, knob, value) in cases {
        let e = runtime::try_init(cfg.clone()).expect_err(&format!("{cfg:?} must be rejected"));
        assert_eq!(e.knob(), knob, "{e}");
        assert_eq!(e.value(), value, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(knob) && msg.contains(value),
            "message names the knob and value: {msg}"
        );
        // It is a std error.
        let _: &dyn std::error::Error = &e;
    }
}

#[test]
fn init_panics_with_the_config_error() {
    let r = std::panic::catch_unwind(|| runtime::init(Config::default().threads(0)));
    let msg = panic_message(r.expect_err("init must panic on a bad config").as_ref());
    assert!(msg.contains("threads") && msg.contains('0'), "{msg}");
}

#[test]
fn alloc_interval_zero_is_valid() {
    let rt = runtime::try_init(Config::default().threads(1).alloc_interval(0))
        .expect("0 turns the hook off");
    assert_eq!(rt.block_on(|| vec![1, 2, 3].len()), 3);
}

/// Child: prints how `try_init(Config::default())` resolves under the env.
#[test]
fn child_env_try_init() {
    if !is_child("child_env_try_init") {
        return;
    }
    match runtime::try_init(Config::default()) {
        Ok(rt) => println!("RESULT ok threads={}", rt.threads()),
        Err(e) => println!("RESULT err knob={} value={} msg={}", e.knob(), e.value(), e),
    }
    // A builder value wins over a malformed variable.
    match runtime::try_init(
        Config::default()
            .threads(1)
            .stack_size(64 * 1024)
            .alloc_interval(1)
            .timeslice_cycles(1),
    ) {
        Ok(rt) => println!("BUILDER ok threads={}", rt.threads()),
        Err(e) => println!("BUILDER err {e}"),
    }
}

/// Child: `init` under the env (panics when a variable is malformed).
#[test]
fn child_env_init() {
    if !is_child("child_env_init") {
        return;
    }
    let rt = runtime::init(Config::default());
    println!("RESULT ok threads={}", rt.threads());
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    // libtest may print "test name ... " in front of the child's first line.
    out.lines()
        .find_map(|l| l.find(prefix).map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no {prefix} line in child output:\n{out}"))
}

#[test]
fn malformed_env_values_are_errors_naming_variable_and_value() {
    let cases = [
        ("SMARM_THREADS", "abc"),
        ("SMARM_THREADS", "0"),
        ("SMARM_THREADS", "-3"),
        ("SMARM_STACK_SIZE", "0"),
        ("SMARM_STACK_SIZE", "64k"),
        ("SMARM_ALLOC_INTERVAL", "many"),
        ("SMARM_ALLOC_INTERVAL", "99999999999"),
        ("SMARM_TIMESLICE_CYCLES", "0"),
        ("SMARM_TIMESLICE_CYCLES", "1.5"),
    ];
    for (var, value) in cases {
        let out = run_child("child_env_try_init", &[(var, value)]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{var}={value}: child failed:\n{stdout}\n{}",
            text(&out.stderr)
        );
        let r = line(&stdout, "RESULT");
        assert!(
            r.starts_with("RESULT err"),
            "{var}={value} must be rejected: {r}"
        );
        assert!(
            r.contains(&format!("knob={var}")),
            "{var}={value}: error names the variable: {r}"
        );
        assert!(
            r.contains(&format!("value={value}")),
            "{var}={value}: error names the value: {r}"
        );
        let msg = &r[r.find("msg=").unwrap()..];
        assert!(
            msg.contains(var) && msg.contains(value),
            "{var}={value}: Display names both: {msg}"
        );
        // Explicit builder values take precedence over the environment.
        let b = line(&stdout, "BUILDER");
        assert_eq!(b, "BUILDER ok threads=1", "{var}={value}");
    }
}

#[test]
fn init_panics_naming_a_malformed_variable() {
    let out = run_child("child_env_init", &[("SMARM_THREADS", "abc")]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "init must panic on SMARM_THREADS=abc"
    );
    assert!(
        stderr.contains("SMARM_THREADS") && stderr.contains("abc"),
        "{stderr}"
    );
}

#[test]
fn env_overrides_the_default() {
    let out = run_child(
        "child_env_try_init",
        &[("SMARM_THREADS", "3"), ("SMARM_STACK_SIZE", "131072")],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(line(&stdout, "RESULT"), "RESULT ok threads=3");
    // Surrounding whitespace is tolerated.
    let out = run_child("child_env_try_init", &[("SMARM_THREADS", " 2 ")]);
    let stdout = text(&out.stdout);
    assert_eq!(line(&stdout, "RESULT"), "RESULT ok threads=2");
}

// ---------------------------------------------------------------------------
// Spawning and joining
// ---------------------------------------------------------------------------

#[test]
fn spawn_from_actors_and_join_values() {
    let rt = rt(2);
    let sum = rt.block_on(|| {
        let hs: Vec<_> = (0..100u64).map(|i| smarm::spawn(move || i * i)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, (0..100u64).map(|i| i * i).sum());
}

#[test]
fn spawn_from_nested_actors() {
    let rt = rt(2);
    fn tree(depth: u32) -> u64 {
        if depth == 0 {
            return 1;
        }
        let a = smarm::spawn(move || tree(depth - 1));
        let b = smarm::spawn(move || tree(depth - 1));
        let (a, b) = smarm::join!(a, b);
        a.unwrap() + b.unwrap() + 1
    }
    assert_eq!(rt.block_on(|| tree(8)), (1 << 9) - 1);
}

/// An actor that finishes while its joiner (an actor of the same runtime)
/// waits hands its worker straight to that joiner: a chain of nested
/// spawn-and-join never passes through the scheduler context.
#[test]
fn a_finished_actor_hands_its_worker_to_its_joiner() {
    let rt = rt(1);
    fn level(n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            smarm::spawn(move || level(n - 1)).join().unwrap() + 1
        }
    }
    let (depth, entries) = rt.block_on(|| {
        let before = smarm::__private::scheduler_entries().expect("on a scheduler thread");
        let depth = level(300);
        let after = smarm::__private::scheduler_entries().expect("on a scheduler thread");
        (depth, after - before)
    });
    assert_eq!(depth, 300);
    // Without the hand-off every level went through it once (300).
    assert!(entries <= 2, "{entries} returns to the scheduler context");
}

/// The hand-off and a kill race for the same waiting joiner: whichever
/// comes first wakes it, and every joiner ends (killed or with the value).
#[test]
fn joiners_killed_while_their_child_finishes_all_end() {
    let rt = rt(2);
    let (killed, joined) = rt.block_on(|| {
        let mut killed = 0;
        let mut joined = 0;
        for i in 0..2_000u32 {
            let parent = smarm::spawn(move || {
                let child = smarm::spawn(move || {
                    for _ in 0..i % 3 {
                        smarm::yield_now();
                    }
                    i
                });
                child.join().unwrap()
            });
            let pid = parent.pid();
            let killer = smarm::spawn(move || {
                for _ in 0..i % 4 {
                    smarm::yield_now();
                }
                smarm::kill(pid);
            });
            match parent.join() {
                Ok(v) => {
                    assert_eq!(v, i);
                    joined += 1;
                }
                Err(p) => {
                    assert!(
                        p.downcast_ref::<Killed>().is_some(),
                        "{}",
                        panic_message(&*p)
                    );
                    killed += 1;
                }
            }
            killer.join().unwrap();
        }
        (killed, joined)
    });
    assert_eq!(killed + joined, 2_000);
}

#[test]
fn spawn_from_plain_threads() {
    let rt = Arc::new(rt(2));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..50u64).map(|i| rt.spawn(move || t * 1000 + i)).collect();
                // Joined from the plain thread: the thread blocks.
                hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let want: u64 = (0..4u64)
        .flat_map(|t| (0..50u64).map(move |i| t * 1000 + i))
        .sum();
    assert_eq!(total, want);
}

#[test]
fn join_handle_crosses_threads_and_actors() {
    let rt = rt(2);
    // Spawned from a plain thread, joined inside an actor.
    let h = rt.spawn(|| 11);
    assert_eq!(rt.block_on(move || h.join().unwrap()), 11);
    // Spawned inside an actor, joined on a plain thread.
    let h = rt.block_on(|| smarm::spawn(|| String::from("out")));
    assert_eq!(h.join().unwrap(), "out");
}

#[test]
fn an_actor_joining_itself_panics_instead_of_waiting_for_ever() {
    let rt = rt(1);
    let (handle_tx, handle_rx) = smarm::channel::<smarm::JoinHandle<()>>();
    let (out_tx, out_rx) = smarm::channel::<String>();
    let h = rt.spawn(move || {
        let me = handle_rx.recv().unwrap();
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || me.join()))
            .expect_err("a self-join panics");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        out_tx.send(msg).unwrap();
    });
    handle_tx.send(h).unwrap();
    let msg = out_rx.recv().unwrap();
    assert!(msg.contains("joined its own JoinHandle"), "{msg}");
}

#[test]
fn join_of_a_finished_actor() {
    let rt = rt(1);
    let h = rt.spawn(|| 3);
    while !h.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.join().unwrap(), 3);
}

#[test]
fn join_of_large_and_zero_sized_values() {
    let rt = rt(2);
    let (big, unit, boxed) = rt.block_on(|| {
        let a = smarm::spawn(|| [7u64; 256]);
        let b = smarm::spawn(|| ());
        let c = smarm::spawn(|| Box::new(vec![1u8; 10_000]));
        let (a, b, c) = smarm::join!(a, b, c);
        (a.unwrap(), b.unwrap(), c.unwrap())
    });
    assert!(big.iter().all(|&x| x == 7));
    assert_eq!(unit, ());
    assert_eq!(boxed.len(), 10_000);
}

/// Child: an actor on the default stack returns a 6 KiB value.
#[test]
fn child_large_result() {
    if !is_child("child_large_result") {
        return;
    }
    let rt = rt(1);
    let v = rt.block_on(|| smarm::spawn(|| [7u8; 6 * 1024]).join().unwrap());
    println!("RESULT {}", v.iter().map(|&b| b as usize).sum::<usize>());
}

#[test]
fn join_of_a_6k_value_on_the_default_stack() {
    let out = run_child("child_large_result", &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "child died:\n{stdout}\n{}",
        text(&out.stderr)
    );
    assert_eq!(line(&stdout, "RESULT"), format!("RESULT {}", 7 * 6 * 1024));
}

#[test]
fn join_of_a_panic_returns_the_payload() {
    let rt = rt(2);
    let (s, string, custom) = rt.block_on(|| {
        let a = smarm::spawn(|| -> u8 { panic!("static message") });
        let b = smarm::spawn(|| -> u8 { panic!("formatted {}", 42) });
        #[derive(Debug, PartialEq)]
        struct Custom(u32);
        let c = smarm::spawn(|| -> u8 { std::panic::panic_any(Custom(9)) });
        let (a, b, c) = smarm::join!(a, b, c);
        let custom = c.unwrap_err().downcast::<Custom>().map(|b| b.0).ok();
        (
            panic_message(a.unwrap_err().as_ref()),
            panic_message(b.unwrap_err().as_ref()),
            custom,
        )
    });
    assert_eq!(s, "static message");
    assert_eq!(string, "formatted 42");
    assert_eq!(custom, Some(9));
}

#[test]
fn join_macro_returns_a_tuple_in_order() {
    let rt = rt(2);
    let r = rt.block_on(|| {
        let a = smarm::spawn(|| 1u8);
        let b = smarm::spawn(|| "two");
        let c = smarm::spawn(|| -> u32 { panic!("three") });
        let d = smarm::spawn(|| 4.0f64);
        let (a, b, c, d) = smarm::join!(a, b, c, d,);
        (a.unwrap(), b.unwrap(), c.is_err(), d.unwrap())
    });
    assert_eq!(r, (1, "two", true, 4.0));
    // Also usable from a plain thread.
    let h1 = rt.spawn(|| 1);
    let h2 = rt.spawn(|| 2);
    let (x, y) = smarm::join!(h1, h2);
    assert_eq!((x.unwrap(), y.unwrap()), (1, 2));
}

#[test]
fn spawn_never_runs_the_child_before_returning() {
    let rt = rt(1);
    rt.block_on(|| {
        for _ in 0..100 {
            let ran = Arc::new(AtomicBool::new(false));
            let r = ran.clone();
            let _np = smarm::preempt::disable();
            let h = smarm::spawn(move || r.store(true, Ordering::SeqCst));
            assert!(
                !ran.load(Ordering::SeqCst),
                "spawn ran the child before returning"
            );
            drop(_np);
            h.join().unwrap();
            assert!(ran.load(Ordering::SeqCst));
        }
    });
}

#[test]
fn dropping_a_handle_detaches_the_actor() {
    let rt = rt(2);
    let done = Arc::new(AtomicUsize::new(0));
    rt.block_on({
        let done = done.clone();
        move || {
            for _ in 0..100 {
                let d = done.clone();
                drop(smarm::spawn(move || {
                    smarm::yield_now();
                    d.fetch_add(1, Ordering::SeqCst);
                }));
            }
            while done.load(Ordering::SeqCst) < 100 {
                smarm::sleep(Duration::from_millis(1));
            }
        }
    });
    assert_eq!(done.load(Ordering::SeqCst), 100);
}

#[test]
fn pids_are_distinct_and_match_handles() {
    let rt = rt(2);
    let (pids, handle_pids) = rt.block_on(|| {
        let hs: Vec<_> = (0..200)
            .map(|_| smarm::spawn(|| smarm::self_pid().unwrap()))
            .collect();
        let handle_pids: Vec<_> = hs.iter().map(|h| h.pid()).collect();
        let pids: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        (pids, handle_pids)
    });
    assert_eq!(pids, handle_pids);
    let mut sorted = pids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), pids.len(), "pids of live actors are unique");
    let shown = format!("{} {:?}", pids[0], pids[0]);
    assert!(shown.starts_with('<') && shown.contains("Pid("), "{shown}");
}

#[test]
fn builder_names_and_sizes_actors() {
    let rt = rt(2);
    let depth = rt.block_on(|| {
        // 1 MiB of stack allows recursion that 64 KiB would not.
        // About 1 KiB per frame: 200 frames need far more than 64 KiB.
        #[inline(never)]
        fn recurse(n: u32) -> u32 {
            let mut pad = [0u8; 1024];
            std::hint::black_box(&mut pad);
            if n == 0 {
                pad[0] as u32
            } else {
                recurse(n - 1) + 1 + pad[1] as u32
            }
        }
        smarm::Builder::new()
            .name("deep")
            .stack_size(1 << 20)
            .spawn(|| recurse(200))
            .join()
            .unwrap()
    });
    assert_eq!(depth, 200);
}

#[test]
fn builder_rejects_an_out_of_range_stack_size() {
    let rt = rt(1);
    let msg = rt.block_on(|| {
        let r = std::panic::catch_unwind(|| smarm::Builder::new().stack_size(100).spawn(|| ()));
        panic_message(r.expect_err("a 100-byte stack must be refused").as_ref())
    });
    assert!(msg.contains("stack_size") && msg.contains("100"), "{msg}");
}

// ---------------------------------------------------------------------------
// Several runtimes, and none
// ---------------------------------------------------------------------------

#[test]
fn several_independent_runtimes() {
    let a = rt(1);
    let b = rt(2);
    let ra = a.block_on(|| smarm::spawn(|| 1).join().unwrap());
    let rb = b.block_on(|| smarm::spawn(|| 2).join().unwrap());
    assert_eq!((ra, rb), (1, 2));
    // Actors spawned inside an actor belong to its runtime: their threads are
    // that runtime's threads.
    let names = |r: &Runtime| {
        r.block_on(|| {
            let hs: Vec<_> = (0..20)
                .map(|_| smarm::spawn(|| std::thread::current().name().map(str::to_owned)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    let thread_ids = |r: &Runtime| {
        r.block_on(|| {
            let hs: Vec<_> = (0..20)
                .map(|_| smarm::spawn(|| std::thread::current().id()))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    assert!(names(&a)
        .iter()
        .chain(names(&b).iter())
        .all(|n| n.as_deref().is_some_and(|n| n.starts_with("smarm-"))));
    let ia = thread_ids(&a);
    let ib = thread_ids(&b);
    assert!(
        ia.iter().all(|t| !ib.contains(t)),
        "the runtimes share no thread"
    );
    drop(a);
    // The other one still works after the first is gone.
    assert_eq!(b.block_on(|| smarm::spawn(|| 3).join().unwrap()), 3);
}

#[test]
fn actors_of_different_runtimes_wait_for_each_other() {
    let a = rt(1);
    let b = rt(2);
    let (tx, rx) = smarm::channel::<u32>();
    let hb = b.spawn(move || (0..1000).map(|_| rx.recv().unwrap()).sum::<u32>());
    let sum = a.block_on(move || {
        for i in 0..1000 {
            tx.send(i).unwrap();
            if i % 7 == 0 {
                smarm::yield_now();
            }
        }
        // Join an actor of another runtime from an actor.
        hb.join().unwrap()
    });
    assert_eq!(sum, (0..1000).sum());
}

#[test]
fn runtimes_in_parallel_threads() {
    let ts: Vec<_> = (0..4u64)
        .map(|k| {
            std::thread::spawn(move || {
                let r = rt(1 + (k as usize % 2));
                r.block_on(move || {
                    let hs: Vec<_> = (0..100u64).map(|i| smarm::spawn(move || i + k)).collect();
                    hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
                })
            })
        })
        .collect();
    for (k, t) in ts.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), (0..100u64).sum::<u64>() + 100 * k as u64);
    }
}

#[test]
fn spawn_without_a_runtime_panics_clearly() {
    let r = std::thread::spawn(|| std::panic::catch_unwind(|| drop(smarm::spawn(|| 1))))
        .join()
        .unwrap();
    let msg = panic_message(r.expect_err("spawn with no runtime must panic").as_ref());
    assert!(
        msg.contains("runtime"),
        "the message says a runtime is needed: {msg}"
    );
    assert!(
        msg.contains("init"),
        "the message says how to create one: {msg}"
    );
    let r =
        std::thread::spawn(|| std::panic::catch_unwind(|| drop(smarm::Builder::new().spawn(|| 1))))
            .join()
            .unwrap();
    assert!(r.is_err());
}

#[test]
fn plain_thread_blocking_calls_work_without_a_runtime() {
    smarm::yield_now();
    smarm::sleep(Duration::from_millis(1));
    assert!(smarm::self_pid().is_none());
    let (tx, rx) = smarm::channel();
    std::thread::spawn(move || tx.send(5).unwrap());
    assert_eq!(rx.recv().unwrap(), 5);
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[test]
fn shutdown_unwinds_every_blocked_actor() {
    const N: usize = 500;
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let unwound_with_killed = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    let (keep_tx, rx) = smarm::channel::<()>();
    let mut handles = Vec::new();
    for i in 0..N {
        let guard = DropCount(drops.clone());
        let started = started.clone();
        let killed = unwound_with_killed.clone();
        let rx = rx.clone();
        handles.push(rt.spawn(move || {
            let _g = guard;
            started.fetch_add(1, Ordering::SeqCst);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match i % 3 {
                0 => drop(rx.recv()),
                1 => smarm::sleep(Duration::from_secs(3600)),
                _ => loop {
                    smarm::yield_now();
                },
            }));
            if let Err(p) = r {
                if p.is::<Killed>() {
                    killed.fetch_add(1, Ordering::SeqCst);
                }
                std::panic::resume_unwind(p);
            }
        }));
    }
    while started.load(Ordering::SeqCst) < N {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(rt);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        N,
        "every actor's destructors ran"
    );
    assert_eq!(
        unwound_with_killed.load(Ordering::SeqCst),
        N,
        "the unwind payload is Killed"
    );
    for h in handles {
        assert!(h.is_finished());
        let p = h.join().expect_err("a shut-down actor did not return");
        assert!(p.is::<Killed>(), "join payload is Killed");
    }
    drop(keep_tx);
}

#[test]
fn shutdown_drops_closures_that_never_started() {
    const N: usize = 2000;
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let rt = rt(1);
    // Shut down right after spawning: many of these never get to start.
    let hs: Vec<_> = (0..N)
        .map(|_| {
            let d = DropCount(drops.clone());
            let ran = ran.clone();
            rt.spawn(move || {
                let _d = d;
                ran.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    drop(rt);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        N,
        "each closure dropped exactly once, run or not"
    );
    let mut killed = 0;
    for h in hs {
        match h.join() {
            Ok(()) => {}
            Err(p) => {
                assert!(p.is::<Killed>());
                killed += 1;
            }
        }
    }
    assert_eq!(killed + ran.load(Ordering::SeqCst), N);
}

#[test]
fn dropping_a_runtime_in_its_own_actor_shuts_it_down_without_waiting_there() {
    // In a child: stderr must show no abandoned threads.
    if !is_child("child_drop_in_own_actor") {
        let out = run_child("child_drop_in_own_actor", &[]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("DROPPED_INSIDE_OK"), "{stdout}\n{stderr}");
        assert!(
            !stderr.contains("never reached a suspension point"),
            "the shutdown waited on its own thread and abandoned it:\n{stderr}"
        );
    }
}

#[test]
fn child_drop_in_own_actor() {
    if !is_child("child_drop_in_own_actor") {
        return;
    }
    for threads in [1, 2] {
        let rt = Arc::new(rt(threads));
        let (unwound_tx, unwound_rx) = std::sync::mpsc::channel::<()>();
        struct Unwound(std::sync::mpsc::Sender<()>);
        impl Drop for Unwound {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        // Blocked for ever: the shutdown must unwind it.
        let blocked = rt.spawn(move || {
            let _u = Unwound(unwound_tx);
            loop {
                smarm::sleep(Duration::from_secs(3600));
            }
        });
        // Holds the last reference and drops it: the shutdown starts and
        // the drop returns; this actor is killed at its next suspension.
        let (go_tx, go_rx) = smarm::channel::<()>();
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
        let last = rt.clone();
        let dropper = rt.spawn(move || {
            go_rx.recv().expect("go");
            drop(last);
            dropped_tx.send(()).expect("main waits");
            smarm::sleep(Duration::from_secs(3600));
        });
        drop(rt);
        go_tx.send(()).expect("the dropper waits");
        let hang_guard = Duration::from_secs(60);
        dropped_rx
            .recv_timeout(hang_guard)
            .expect("the drop returned");
        unwound_rx
            .recv_timeout(hang_guard)
            .expect("the blocked actor was unwound");
        let e = dropper.join().expect_err("the dropper was killed");
        assert!(e.downcast_ref::<Killed>().is_some(), "killed, not panicked");
        assert!(blocked.join().expect_err("killed").is::<Killed>());
    }
    println!("DROPPED_INSIDE_OK");
}

#[test]
fn shutdown_of_an_idle_runtime_and_detached_results() {
    let rt = rt(2);
    let drops = Arc::new(AtomicUsize::new(0));
    for _ in 0..50 {
        let d = DropCount(drops.clone());
        // The result is never taken: it must be dropped too.
        drop(rt.spawn(move || d));
    }
    rt.block_on(|| smarm::sleep(Duration::from_millis(5)));
    drop(rt);
    assert_eq!(drops.load(Ordering::SeqCst), 50);
}

#[test]
fn spawn_during_shutdown_is_killed_not_run() {
    let drops = Arc::new(AtomicUsize::new(0));
    let late = Arc::new(Mutex::new(Vec::new()));
    let rt = rt(1);
    let started = Arc::new(AtomicBool::new(false));
    {
        let drops = drops.clone();
        let late = late.clone();
        let started = started.clone();
        drop(rt.spawn(move || {
            struct SpawnOnDrop(Arc<AtomicUsize>, Arc<Mutex<Vec<smarm::JoinHandle<()>>>>);
            impl Drop for SpawnOnDrop {
                fn drop(&mut self) {
                    // Unwinding from the shutdown kill: spawn one more actor.
                    let d = DropCount(self.0.clone());
                    let h = smarm::spawn(move || {
                        let _d = d;
                        unreachable!("no new actor starts once shutdown began");
                    });
                    self.1.lock().unwrap().push(h);
                }
            }
            let _s = SpawnOnDrop(drops, late);
            started.store(true, Ordering::SeqCst);
            loop {
                smarm::sleep(Duration::from_secs(3600));
            }
        }));
    }
    while !started.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(rt);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the late closure was dropped"
    );
    let h = late.lock().unwrap().pop().expect("the late spawn happened");
    assert!(h.join().unwrap_err().is::<Killed>());
}

// ---------------------------------------------------------------------------
// kill
// ---------------------------------------------------------------------------

#[test]
fn kill_unwinds_a_blocked_actor() {
    let rt = rt(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    rt.block_on(move || {
        let (_tx, rx) = smarm::channel::<()>();
        let (ready_tx, ready_rx) = smarm::channel();
        let h = smarm::spawn(move || {
            let _g = DropCount(d);
            ready_tx.send(()).unwrap();
            let _ = rx.recv();
            unreachable!("recv never returns");
        });
        ready_rx.recv().unwrap();
        smarm::kill(h.pid());
        let p = h.join().expect_err("killed");
        assert!(p.is::<Killed>());
    });
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// A receiver that finds its channel empty while other actors are ready on
/// its worker first yields to them; a kill waiting for it is delivered
/// there, before it has registered, and the channel stays usable.
#[test]
fn kill_delivered_before_a_receiver_blocks_leaves_the_channel_usable() {
    let rt = rt(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    rt.block_on(move || {
        let (tx, rx) = smarm::channel::<u32>();
        let rx2 = rx.clone();
        let (ran_tx, ran_rx) = smarm::channel();
        let h = smarm::spawn(move || {
            let _g = DropCount(d);
            // Ready on this worker while the receiver looks at its channel.
            smarm::spawn(move || ran_tx.send(()).unwrap());
            smarm::kill(smarm::self_pid().unwrap());
            let _ = rx2.recv();
            unreachable!("the kill unwinds the receive");
        });
        assert!(h.join().expect_err("killed").is::<Killed>());
        ran_rx.recv().unwrap();
        tx.send(5).unwrap();
        assert_eq!(rx.recv(), Ok(5));
        assert_eq!(rx.try_recv(), Err(smarm::TryRecvError::Empty));
    });
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// A parent that waits for values from children ready on its own worker
/// gets every one of them (the receive yields to them before it blocks).
#[test]
fn receiver_with_ready_senders_on_its_worker_gets_every_value() {
    for threads in [1, 2] {
        let rt = rt(threads);
        let sum = rt.block_on(|| {
            let (tx, rx) = smarm::bounded::<u64>(3);
            for i in 0..50u64 {
                let tx = tx.clone();
                smarm::spawn(move || {
                    for k in 0..10 {
                        tx.send(i * 10 + k).unwrap();
                    }
                });
            }
            drop(tx);
            rx.iter().sum::<u64>()
        });
        assert_eq!(sum, (0..500u64).sum::<u64>());
    }
}

#[test]
fn kill_of_sleeping_yielding_and_unstarted_actors() {
    let rt = rt(2);
    rt.block_on(|| {
        let sleeper = smarm::spawn(|| smarm::sleep(Duration::from_secs(3600)));
        let spinner = smarm::spawn(|| loop {
            smarm::yield_now();
        });
        smarm::yield_now();
        let unstarted = smarm::spawn(|| 1);
        smarm::kill(unstarted.pid());
        smarm::kill(sleeper.pid());
        smarm::kill(spinner.pid());
        assert!(sleeper.join().unwrap_err().is::<Killed>());
        assert!(spinner.join().unwrap_err().is::<Killed>());
        // Killed before it ran, or ran first: either way it ended.
        match unstarted.join() {
            Ok(v) => assert_eq!(v, 1),
            Err(p) => assert!(p.is::<Killed>()),
        }
    });
}

#[test]
fn kill_of_a_finished_pid_does_nothing() {
    let rt = rt(2);
    rt.block_on(|| {
        let h = smarm::spawn(|| 7);
        let pid = h.pid();
        assert_eq!(h.join().unwrap(), 7);
        smarm::kill(pid);
        smarm::kill(pid);
        // The slot may be reused by a new actor; the stale pid must not hit it.
        let hs: Vec<_> = (0..64)
            .map(|i| {
                smarm::spawn(move || {
                    smarm::yield_now();
                    i
                })
            })
            .collect();
        smarm::kill(pid);
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i);
        }
    });
}

#[test]
fn kill_self_unwinds_at_the_next_suspension() {
    let rt = rt(1);
    let reached = Arc::new(AtomicBool::new(false));
    let r = reached.clone();
    let h = rt.spawn(move || {
        smarm::kill(smarm::self_pid().unwrap());
        r.store(true, Ordering::SeqCst); // still running: no suspension yet
        smarm::yield_now();
        unreachable!("unwound at the yield");
    });
    assert!(h.join().unwrap_err().is::<Killed>());
    assert!(reached.load(Ordering::SeqCst));
}

#[test]
fn killed_actor_may_block_while_unwinding() {
    let rt = rt(2);
    let out = rt.block_on(|| {
        let (tx, rx) = smarm::channel::<u32>();
        let (ready_tx, ready_rx) = smarm::channel::<()>();
        let h = smarm::spawn(move || {
            struct Flush(smarm::Sender<u32>);
            impl Drop for Flush {
                fn drop(&mut self) {
                    // Blocking calls keep working during the Killed unwind.
                    smarm::sleep(Duration::from_millis(1));
                    smarm::yield_now();
                    self.0.send(99).unwrap();
                }
            }
            let _f = Flush(tx);
            ready_tx.send(()).unwrap();
            smarm::sleep(Duration::from_secs(3600));
        });
        // Kill only once the guard exists: an actor killed before it starts
        // never runs its body, so there would be no Flush to block in.
        ready_rx.recv().unwrap();
        smarm::kill(h.pid());
        assert!(h.join().unwrap_err().is::<Killed>());
        rx.recv().unwrap()
    });
    assert_eq!(out, 99);
}

#[test]
fn supervisor_sees_killed_payload() {
    let rt = rt(2);
    rt.block_on(|| {
        let (sup_tx, sup_rx) = smarm::channel();
        let h = smarm::spawn_under(sup_tx.clone(), || smarm::sleep(Duration::from_secs(3600)));
        let ok = smarm::spawn_under(sup_tx, || 5);
        let pid = h.pid();
        let ok_pid = ok.pid();
        assert_eq!(ok.join().unwrap(), 5);
        smarm::kill(pid);
        assert!(h.join().unwrap_err().is::<Killed>());
        let mut got = [sup_rx.recv().unwrap(), sup_rx.recv().unwrap()];
        got.sort_by_key(|s| matches!(s, smarm::Signal::Panic(..)));
        match &got[0] {
            smarm::Signal::Exit(p) => assert_eq!(*p, ok_pid),
            s => panic!("unexpected {s:?}"),
        }
        match &got[1] {
            smarm::Signal::Panic(p, payload) => {
                assert_eq!(*p, pid);
                assert!(payload.is::<Killed>());
            }
            s => panic!("unexpected {s:?}"),
        }
        assert!(sup_rx.try_recv().is_err(), "exactly one signal per child");
    });
}
