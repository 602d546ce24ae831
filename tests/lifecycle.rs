//! Creating and dropping runtimes leaks nothing the process can count: no
//! thread, no file descriptor, no memory mapping survives a runtime that
//! ran actors, timers, channels and sockets and was then dropped. (One test
//! in its own binary, so that no other test's runtimes are counted.)

use std::io::{Read, Write};
use std::time::Duration;

use smarm::runtime::{self, Config};

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).expect(path).count()
}

/// (threads, open descriptors, memory mappings) of this process.
fn resources() -> (usize, usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    (
        count_dir("/proc/self/task"),
        count_dir("/proc/self/fd"),
        maps.lines().count(),
    )
}

/// One runtime's life: actors that sleep, talk over channels, panic, and
/// serve a TCP echo to a client actor; then the runtime is dropped with
/// actors still blocked in it (on a channel, in `accept`, in a `read`).
fn one_life(threads: usize) {
    let rt = runtime::init(Config::default().threads(threads));
    let (echoed, keep_tx) = rt.block_on(|| {
        let listener = smarm::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = smarm::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).expect("server read");
            s.write_all(&buf).expect("server write");
        });
        let mut c = smarm::net::TcpStream::connect(addr).expect("connect");
        c.write_all(b"hello").expect("client write");
        let mut back = [0u8; 5];
        c.read_exact(&mut back).expect("client read");
        server.join().expect("server");
        let (tx, rx) = smarm::channel::<u64>();
        for i in 0..100 {
            let tx = tx.clone();
            smarm::spawn(move || {
                smarm::sleep(Duration::from_micros(i));
                tx.send(i).expect("receiver here");
            });
        }
        let sum: u64 = (0..100).map(|_| rx.recv().expect("a sender")).sum();
        assert_eq!(sum, 4950);
        assert!(smarm::spawn(|| panic!("on purpose")).join().is_err());
        // Left blocked in IO for the shutdown to unwind: an accept that no
        // client comes to, and a read of a connection that never writes.
        let idle = smarm::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        smarm::spawn(move || {
            let _ = idle.accept();
        });
        let quiet_server = smarm::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let quiet_addr = quiet_server.local_addr().expect("local addr");
        let quiet = smarm::net::TcpStream::connect(quiet_addr).expect("connect");
        let (held, _) = quiet_server.accept().expect("accept");
        smarm::spawn(move || {
            let mut b = [0u8; 1];
            let _ = (&quiet).read(&mut b);
            drop(held);
        });
        // Left blocked for the shutdown to unwind (their channel's sender
        // outlives the runtime).
        let (keep_tx, keep_rx) = smarm::channel::<()>();
        for _ in 0..10 {
            let keep_rx = keep_rx.clone();
            smarm::spawn(move || {
                let _ = keep_rx.recv();
            });
        }
        (back, keep_tx)
    });
    assert_eq!(&echoed, b"hello");
    drop(rt);
    drop(keep_tx);
}

#[test]
fn dropped_runtimes_leave_no_threads_descriptors_or_mappings() {
    // glibc gives new threads malloc arenas of their own (a mapping each,
    // up to 8 per CPU, reused after their threads exit): one arena for all
    // keeps its bookkeeping out of the count.
    // SAFETY: mallopt only changes an allocator limit, which applies to
    // the arenas of threads created from now on.
    assert_eq!(unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) }, 1);
    // After smarm's hook is installed (by the first runtime), so that ours
    // replaces it and the panics made on purpose print nothing.
    drop(runtime::init(Config::default().threads(1)));
    std::panic::set_hook(Box::new(|info| {
        if info.payload().downcast_ref::<&str>() != Some(&"on purpose") {
            eprintln!("unexpected panic: {info}");
        }
    }));
    // The first lives set up what is process-wide and kept on purpose
    // (the stack pool's arenas, the cell slab, the signal stack handler).
    for threads in [1, 2] {
        one_life(threads);
    }
    let before = resources();
    for i in 0..100 {
        one_life(1 + i % 2);
    }
    let after = resources();
    assert_eq!(
        after, before,
        "(threads, descriptors, mappings) before and after 100 runtimes"
    );
}
