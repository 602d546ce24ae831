//! Stack overflow: an actor that exhausts its stack hits its guard page and
//! the process aborts with a message naming the actor, its stack size and the
//! knobs that raise it. Faults that are not actor overflows keep their usual
//! outcome (std's message for a thread's stack overflow, SIGSEGV otherwise).
//!
//! Every fault happens in a child process: this test binary re-executed with
//! a filter and a role variable.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use smarm::runtime::{self, Config};

const ROLE: &str = "SMARM_TESTS_CHILD_ROLE";
const SIGABRT: i32 = 6;
const SIGSEGV: i32 = 11;

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

fn is_child(name: &str) -> bool {
    std::env::var(ROLE).is_ok_and(|r| r == name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn value_after<'a>(out: &'a str, key: &str) -> &'a str {
    let i = out
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in child output:\n{out}"));
    out[i + key.len()..].split_whitespace().next().unwrap()
}

/// Recurses until the stack runs out.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let mut pad = [0u8; 256];
    std::hint::black_box(&mut pad);
    if std::hint::black_box(n) == u64::MAX {
        return n;
    }
    recurse(n + 1).wrapping_add(pad[0] as u64)
}

/// Writes to an address that is never mapped.
fn bad_write() {
    // SAFETY: deliberately not safe: the child process must fault here.
    unsafe { std::arch::asm!("mov byte ptr [{}], 1", in(reg) 16usize) };
}

#[test]
fn child_actor_overflow() {
    if !is_child("child_actor_overflow") {
        return;
    }
    let rt = runtime::init(Config::default().threads(2));
    rt.block_on(|| {
        smarm::spawn(|| {
            println!("PID {}", smarm::self_pid().unwrap());
            recurse(0)
        })
        .join()
        .ok();
    });
    println!("UNREACHABLE");
}

#[test]
fn child_named_actor_overflow() {
    if !is_child("child_named_actor_overflow") {
        return;
    }
    let rt = runtime::init(Config::default().threads(1));
    rt.block_on(|| {
        smarm::Builder::new()
            .name("deep-diver")
            .stack_size(128 * 1024)
            .spawn(|| {
                println!("PID {}", smarm::self_pid().unwrap());
                smarm::yield_now();
                recurse(0)
            })
            .join()
            .ok();
    });
    println!("UNREACHABLE");
}

#[test]
fn child_plain_thread_overflow() {
    if !is_child("child_plain_thread_overflow") {
        return;
    }
    // A runtime exists (its fault handler is installed), but the overflow
    // happens on an ordinary thread.
    let rt = runtime::init(Config::default().threads(1));
    assert_eq!(rt.block_on(|| 1), 1);
    std::thread::Builder::new()
        .name("plain-overflower".into())
        .stack_size(256 * 1024)
        .spawn(|| recurse(0))
        .unwrap()
        .join()
        .ok();
    println!("UNREACHABLE");
}

#[test]
fn child_wild_write_in_actor() {
    if !is_child("child_wild_write_in_actor") {
        return;
    }
    let rt = runtime::init(Config::default().threads(1));
    rt.block_on(bad_write);
    println!("UNREACHABLE");
}

#[test]
fn child_wild_write_on_plain_thread() {
    if !is_child("child_wild_write_on_plain_thread") {
        return;
    }
    let rt = runtime::init(Config::default().threads(1));
    assert_eq!(rt.block_on(|| 1), 1);
    bad_write();
    println!("UNREACHABLE");
}

fn assert_actor_overflow(out: &Output, size: &str, name: Option<&str>) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "exit by SIGABRT: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("UNREACHABLE"));
    let pid = value_after(&stdout, "PID ");
    let line = stderr
        .lines()
        .find(|l| l.contains("stack overflow"))
        .unwrap_or_else(|| panic!("no stack overflow message:\n{stderr}"));
    assert!(
        line.contains(pid),
        "the message names the actor {pid}: {line}"
    );
    assert!(
        line.contains(size),
        "the message gives the stack size {size}: {line}"
    );
    if let Some(n) = name {
        assert!(
            line.contains(n),
            "the message gives the actor's name {n}: {line}"
        );
    }
    assert!(
        stderr.contains("SMARM_STACK_SIZE"),
        "the message says how to raise it:\n{stderr}"
    );
    assert!(stderr.contains("stack_size"), "{stderr}");
    assert!(
        !stderr.contains("has overflowed its stack"),
        "not reported as a thread overflow:\n{stderr}"
    );
}

#[test]
fn actor_overflow_aborts_with_a_message() {
    let out = run_child("child_actor_overflow", &[]);
    assert_actor_overflow(&out, "65536", None);
}

#[test]
fn actor_overflow_with_env_stack_size() {
    let out = run_child("child_actor_overflow", &[("SMARM_STACK_SIZE", "32768")]);
    assert_actor_overflow(&out, "32768", None);
}

#[test]
fn named_actor_overflow_names_it() {
    let out = run_child("child_named_actor_overflow", &[]);
    assert_actor_overflow(&out, "131072", Some("deep-diver"));
}

#[test]
fn plain_thread_overflow_keeps_std_message() {
    let out = run_child("child_plain_thread_overflow", &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "{:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
    assert!(stderr.contains("plain-overflower"), "{stderr}");
    assert!(!stderr.contains("smarm: stack overflow"), "{stderr}");
}

#[test]
fn wild_write_in_actor_is_a_segfault_not_an_overflow() {
    let out = run_child("child_wild_write_in_actor", &[]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGSEGV),
        "{:?}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("stack overflow") && !stderr.contains("overflowed"),
        "{stderr}"
    );
}

#[test]
fn wild_write_on_plain_thread_is_a_segfault() {
    let out = run_child("child_wild_write_on_plain_thread", &[]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGSEGV),
        "{:?}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("stack overflow") && !stderr.contains("overflowed"),
        "{stderr}"
    );
}
