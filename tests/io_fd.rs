//! The raw-descriptor API: `io::wait_readable`, `wait_writable`,
//! `block_on_io`, and their defined results for bad descriptors, closed
//! descriptors, shared descriptors and killed waiters.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use smarm::io::{block_on_io, wait_readable, wait_writable, Interest};
use smarm::runtime::{self, Config, Runtime};

fn rt() -> Runtime {
    runtime::init(Config::default().threads(2))
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// As [`pair`], with the first end moved to a descriptor number far above
/// what parallel tests open, so that once it is closed no other test can be
/// given the same number while a waiter still polls it.
fn pair_high() -> (UnixStream, UnixStream) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let (a, b) = pair();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let floor = (lim.rlim_cur / 2).min(4096) as i32;
    let raw = a.into_raw_fd();
    // SAFETY: `raw` is open and owned here; F_DUPFD_CLOEXEC takes an int.
    let high = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, floor) };
    assert!(high >= floor, "F_DUPFD_CLOEXEC failed");
    // SAFETY: `raw` is owned here and no longer used; `high` is a new
    // descriptor owned by nobody else.
    unsafe {
        libc::close(raw);
        (UnixStream::from_raw_fd(high), b)
    }
}

/// A descriptor number that is not open (far above anything this process
/// opens, so that parallel tests cannot reuse it).
fn closed_fd() -> i32 {
    1 << 20
}

#[test]
fn invalid_descriptors_are_ebadf_in_actors_and_threads() {
    let bad = closed_fd();
    for fd in [-1, bad] {
        assert_eq!(
            wait_readable(fd).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(
            wait_writable(fd).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
    let rt = rt();
    let errs = rt.block_on(move || {
        [-1, bad].map(|fd| {
            (
                wait_readable(fd).unwrap_err().raw_os_error(),
                wait_writable(fd).unwrap_err().raw_os_error(),
            )
        })
    });
    assert_eq!(errs, [(Some(libc::EBADF), Some(libc::EBADF)); 2]);
}

#[test]
fn block_on_io_parks_until_data_arrives() {
    let rt = rt();
    let got = rt.block_on(|| {
        let (a, b) = pair();
        let writer = smarm::spawn(move || {
            smarm::sleep(Duration::from_millis(20));
            (&b).write_all(b"late").unwrap();
            b
        });
        let mut buf = [0u8; 4];
        let n = block_on_io(a.as_raw_fd(), Interest::Readable, || (&a).read(&mut buf)).unwrap();
        drop(writer.join().unwrap());
        buf[..n].to_vec()
    });
    assert_eq!(got, b"late");
}

#[test]
fn wait_writable_on_a_full_socket_until_drained() {
    let rt = rt();
    let written = rt.block_on(|| {
        let (a, b) = pair();
        // Fill a's send path (bounded: a few MiB at most).
        let chunk = vec![7u8; 65536];
        let mut filled = 0usize;
        for _ in 0..10_000 {
            match (&a).write(&chunk) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let drainer = smarm::spawn(move || {
            smarm::sleep(Duration::from_millis(20));
            let mut buf = vec![0u8; 1 << 20];
            let mut drained = 0;
            while drained < filled {
                match (&b).read(&mut buf) {
                    Ok(n) => drained += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        wait_readable(b.as_raw_fd()).unwrap()
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            b
        });
        wait_writable(a.as_raw_fd()).unwrap();
        let n = (&a).write(&chunk).unwrap();
        drop(drainer.join().unwrap());
        n
    });
    assert!(written > 0);
}

#[test]
fn closing_the_descriptor_while_an_actor_waits_is_an_error() {
    let rt = rt();
    let r = rt.block_on(|| {
        let (a, b) = pair_high();
        let fd = a.as_raw_fd();
        let waiter = smarm::spawn(move || wait_readable(fd));
        // Close only once the waiter has registered (and so is waiting).
        while smarm::io::registrations() != Some(1) {
            smarm::sleep(Duration::from_millis(1));
        }
        drop(a); // closes fd while the waiter waits
        let r = waiter.join().unwrap();
        drop(b);
        r
    });
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
}

#[test]
fn closing_the_descriptor_while_a_thread_waits_is_an_error() {
    // Whether the thread starts waiting before or after the close, its
    // wait ends with EBADF: the number is not reused meanwhile.
    let (a, _b) = pair_high();
    let fd = a.as_raw_fd();
    let waiter = std::thread::spawn(move || wait_readable(fd));
    std::thread::sleep(Duration::from_millis(20));
    drop(a);
    assert_eq!(
        waiter.join().unwrap().unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
}

#[test]
fn two_waiters_on_one_descriptor_both_wake() {
    let rt = rt();
    let results = rt.block_on(|| {
        let (a, b) = pair();
        let fd = a.as_raw_fd();
        let base = smarm::io::registrations().unwrap();
        let ws: Vec<_> = (0..2)
            .map(|_| smarm::spawn(move || wait_readable(fd)))
            .collect();
        // Write only once both wait (each registers its own duplicate).
        while smarm::io::registrations() != Some(base + 2) {
            smarm::sleep(Duration::from_millis(1));
        }
        (&b).write_all(b"!").unwrap(); // nobody consumes it: both see it
        let r: Vec<_> = ws.into_iter().map(|h| h.join().unwrap().is_ok()).collect();
        drop(a);
        r
    });
    assert_eq!(results, [true, true]);
}

#[test]
fn killed_waiter_unwinds_and_leaves_no_registration() {
    let rt = rt();
    let (killed, left, later) = rt.block_on(|| {
        let (a, b) = pair();
        let fd = a.as_raw_fd();
        let base = smarm::io::registrations().unwrap();
        let waiter = smarm::spawn(move || wait_readable(fd));
        // Kill only once it waits: a waiter killed before it ran would
        // never have registered.
        while smarm::io::registrations() != Some(base + 1) {
            smarm::sleep(Duration::from_millis(1));
        }
        smarm::kill(waiter.pid());
        let killed = waiter.join().unwrap_err().is::<smarm::Killed>();
        let left = smarm::io::registrations().unwrap() - base;
        // The descriptor is usable again.
        let again = smarm::spawn(move || {
            let mut buf = [0u8; 3];
            let n = block_on_io(fd, Interest::Readable, || (&a).read(&mut buf)).unwrap();
            buf[..n].to_vec()
        });
        while smarm::io::registrations() != Some(base + 1) {
            smarm::sleep(Duration::from_millis(1));
        }
        (&b).write_all(b"yes").unwrap();
        (killed, left, again.join().unwrap())
    });
    assert!(killed);
    assert_eq!(left, 0);
    assert_eq!(later, b"yes");
}

#[test]
fn plain_thread_waits_block_the_thread() {
    let (a, b) = pair();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        (&b).write_all(b"t").unwrap();
        b
    });
    let mut buf = [0u8; 1];
    let n = block_on_io(a.as_raw_fd(), Interest::Readable, || (&a).read(&mut buf)).unwrap();
    assert_eq!((n, buf[0]), (1, b't'));
    drop(t.join().unwrap());
}

#[test]
fn regular_files_are_always_ready() {
    let f = std::fs::File::open("/proc/self/stat").unwrap();
    let rt = rt();
    let fd = f.as_raw_fd();
    let r = rt.block_on(move || (wait_readable(fd).is_ok(), wait_writable(fd).is_ok()));
    assert_eq!(r, (true, true));
}
