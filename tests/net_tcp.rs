//! TCP over the reactor: echo with many clients, large transfers through
//! small buffers, resets, timeouts, accept storms, shutdown and kill.
//! Loopback only; every loop is bounded; clients are std sockets on plain
//! threads unless a test says otherwise.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smarm::net::{TcpListener, TcpStream};
use smarm::runtime::{self, Config, Runtime};

/// A safety net: no test may wait longer than this for anything.
const LONG: Duration = Duration::from_secs(20);

fn rt() -> Runtime {
    runtime::init(Config::default().threads(2))
}

fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts an echo server on `rt`: an accepting actor, one actor per connection.
fn echo_server(rt: &Runtime) -> SocketAddr {
    let listener = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    rt.spawn(move || {
        for s in listener.incoming() {
            let s = s.expect("accept");
            smarm::spawn(move || echo(s));
        }
    });
    addr
}

/// A small send buffer, so that writes are partial. (A small *receive*
/// buffer would shrink the TCP window until delayed acknowledgements make
/// loopback crawl: that tests TCP, not the runtime.)
fn small_send_buffer(fd: i32) {
    let bytes: libc::c_int = 4096;
    // SAFETY: a live c_int option value on an open socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            4,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn echo_with_hundreds_of_concurrent_plain_thread_clients() {
    let rt = rt();
    let addr = echo_server(&rt);
    const THREADS: usize = 16;
    const CONNS: usize = 20; // per thread: 320 connections open at once
    const ROUNDS: usize = 5;
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut conns: Vec<std::net::TcpStream> = (0..CONNS)
                    .map(|_| {
                        let s = std::net::TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(LONG)).unwrap();
                        s
                    })
                    .collect();
                for round in 0..ROUNDS {
                    for (i, c) in conns.iter_mut().enumerate() {
                        c.write_all(format!("t{t} c{i} r{round}\n").as_bytes())
                            .unwrap();
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        let want = format!("t{t} c{i} r{round}\n");
                        let mut got = vec![0u8; want.len()];
                        c.read_exact(&mut got).unwrap();
                        assert_eq!(got, want.as_bytes());
                    }
                }
                done.fetch_add(conns.len(), Ordering::Relaxed);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), THREADS * CONNS);
}

#[test]
fn large_payload_through_small_buffers_partial_reads_and_writes() {
    let rt = rt();
    let listener = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    rt.spawn(move || {
        let (s, _) = listener.accept().unwrap();
        small_send_buffer(s.as_raw_fd());
        echo(s);
    });
    const LEN: usize = 6 << 20;
    let data: Arc<Vec<u8>> = Arc::new((0..LEN).map(|i| (i * 7 + i / 4096) as u8).collect());
    let d = data.clone();
    // The client is two actors on one connection: a writer and a reader.
    let back: Vec<u8> = rt.block_on(move || {
        let s = TcpStream::connect(addr).unwrap();
        small_send_buffer(s.as_raw_fd());
        s.set_read_timeout(Some(LONG)).unwrap();
        s.set_write_timeout(Some(LONG)).unwrap();
        let w = s.try_clone().unwrap();
        let writer = smarm::spawn(move || {
            let mut w = w;
            // Uneven chunks: many partial writes.
            for chunk in d.chunks(100_003) {
                w.write_all(chunk).unwrap();
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::with_capacity(LEN);
        let mut buf = vec![0u8; 7919];
        loop {
            let n = (&s).read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            back.extend_from_slice(&buf[..n]);
            assert!(back.len() <= LEN);
        }
        writer.join().unwrap();
        back
    });
    assert_eq!(back.len(), LEN);
    assert!(back == *data, "payload corrupted");
}

#[test]
fn peer_reset_is_reported_to_a_waiting_reader() {
    let rt = rt();
    let listener = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let server = rt.spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut buf = [0u8; 16];
        // First a byte, then the reset arrives while we wait.
        assert_eq!(s.read(&mut buf).unwrap(), 1);
        let r = s.read(&mut buf);
        // A later write fails too (no SIGPIPE: std ignores it).
        let w = s
            .write_all(&[0u8; 1 << 16])
            .and_then(|_| s.write_all(&[0u8; 1 << 16]));
        (r.map_err(|e| e.kind()), w.is_err())
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a live linger struct on an open socket.
    let r = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    drop(c); // RST
    let (r, write_failed) = server.join().unwrap();
    assert_eq!(r, Err(io::ErrorKind::ConnectionReset));
    assert!(write_failed);
}

#[test]
fn read_timeout_fires_with_std_error_kind() {
    // What std reports for a read timeout on this platform.
    let std_kind = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _peer = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        (&c).read(&mut [0u8; 4]).unwrap_err().kind()
    };
    let rt = rt();
    let listener = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let keep = std::thread::spawn(move || {
        // Plain thread using smarm's listener: keep the peer open until the
        // read has timed out (were it closed first, the read would see the
        // end of the stream instead).
        let (s, _) = listener.accept().unwrap();
        let _ = done_rx.recv();
        drop(s);
    });
    let timeout = Duration::from_millis(150);
    let (kind, elapsed, other_ran) = rt.block_on(move || {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t2 = ticks.clone();
        // Another actor keeps running while this one waits: the thread is free.
        let bg = smarm::spawn(move || {
            for _ in 0..5 {
                smarm::sleep(Duration::from_millis(10));
                t2.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        assert_eq!(s.read_timeout().unwrap(), Some(timeout));
        let t = Instant::now();
        let e = s.read(&mut [0u8; 8]).unwrap_err();
        let elapsed = t.elapsed();
        bg.join().unwrap();
        (e.kind(), elapsed, ticks.load(Ordering::Relaxed))
    });
    drop(done_tx);
    keep.join().unwrap();
    assert_eq!(kind, std_kind);
    assert!(
        elapsed >= timeout,
        "timed out after {elapsed:?}, before {timeout:?}"
    );
    assert_eq!(other_ran, 5);
}

#[test]
fn read_timeout_on_a_plain_thread() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_peer, _) = l.accept().unwrap();
    let timeout = Duration::from_millis(60);
    c.set_read_timeout(Some(timeout)).unwrap();
    let t = Instant::now();
    let e = (&c).read(&mut [0u8; 4]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(t.elapsed() >= timeout);
    assert_eq!(
        c.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn write_timeout_fires_when_the_peer_does_not_read() {
    let rt = rt();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (kind, elapsed, timeout) = rt.block_on(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        small_send_buffer(s.as_raw_fd());
        let _peer = l.accept().unwrap(); // never reads
        let timeout = Duration::from_millis(100);
        s.set_write_timeout(Some(timeout)).unwrap();
        let chunk = vec![1u8; 64 * 1024];
        let t = Instant::now();
        // Bounded: the buffers hold at most a few MiB.
        for _ in 0..1000 {
            if let Err(e) = s.write(&chunk) {
                return (e.kind(), t.elapsed(), timeout);
            }
        }
        panic!("64 MiB written into a socket nobody reads");
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(elapsed >= timeout);
}

#[test]
fn accept_storm() {
    let rt = rt();
    let listener = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    const THREADS: usize = 8;
    const PER: usize = 100;
    let served = Arc::new(AtomicUsize::new(0));
    let sv = served.clone();
    rt.spawn(move || {
        for _ in 0..THREADS * PER {
            let (mut s, peer) = listener.accept().unwrap();
            assert!(peer.ip().is_loopback());
            let sv = sv.clone();
            smarm::spawn(move || {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                s.write_all(&[b[0].wrapping_add(1)]).unwrap();
                sv.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                // Connect all first (the storm), then talk.
                let mut cs: Vec<_> = (0..PER)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect();
                for (i, c) in cs.iter_mut().enumerate() {
                    c.set_read_timeout(Some(LONG)).unwrap();
                    let v = (t * PER + i) as u8;
                    c.write_all(&[v]).unwrap();
                    let mut b = [0u8; 1];
                    c.read_exact(&mut b).unwrap();
                    assert_eq!(b[0], v.wrapping_add(1));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    drop(rt); // joins everything; the counter is final
    assert_eq!(served.load(Ordering::Relaxed), THREADS * PER);
}

#[test]
fn connect_from_actor_to_plain_listener_and_refused() {
    let rt = rt();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hi").unwrap();
    });
    let (got, refused) = rt.block_on(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        assert_eq!(s.peer_addr().unwrap(), addr);
        s.set_nodelay(true).unwrap();
        assert!(s.nodelay().unwrap());
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        // A port nobody listens on (bound then closed).
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = TcpStream::connect(free).unwrap_err().kind();
        let refused_t = TcpStream::connect_timeout(&free, Duration::from_secs(5))
            .unwrap_err()
            .kind();
        assert_eq!(refused, refused_t);
        (b, refused)
    });
    t.join().unwrap();
    assert_eq!(got, b"hi");
    assert_eq!(refused, io::ErrorKind::ConnectionRefused);
}

#[test]
fn plain_threads_use_the_same_types() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        echo(s);
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    t.join().unwrap();
}

#[test]
fn shutdown_wakes_a_waiting_reader_with_end_of_stream() {
    let rt = rt();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let r = rt.block_on(move || {
        let s = Arc::new(TcpStream::connect(addr).unwrap());
        let _peer = l.accept().unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let s2 = s.clone();
        let reader = smarm::spawn(move || (&*s2).read(&mut [0u8; 8]).map_err(|e| e.kind()));
        smarm::sleep(Duration::from_millis(30));
        s.shutdown(Shutdown::Read).unwrap();
        reader.join().unwrap()
    });
    assert_eq!(r, Ok(0));
}

#[test]
fn killed_reader_unwinds_and_the_stream_is_used_again() {
    let rt = rt();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (killed, got) = rt.block_on(move || {
        let s = Arc::new(TcpStream::connect(addr).unwrap());
        let mut peer = l.accept().unwrap().0;
        let s2 = s.clone();
        struct Dropped(Arc<AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let d = Dropped(drops.clone());
        let reader = smarm::spawn(move || {
            let _d = d;
            (&*s2).read(&mut [0u8; 8])
        });
        smarm::sleep(Duration::from_millis(30));
        smarm::kill(reader.pid());
        let payload = reader.join().unwrap_err();
        let killed = payload.is::<smarm::Killed>() && drops.load(Ordering::Relaxed) == 1;
        // The stream still works: another actor reads what the peer sends.
        let s3 = s.clone();
        let again = smarm::spawn(move || {
            s3.set_read_timeout(Some(LONG)).unwrap();
            let mut b = [0u8; 5];
            (&*s3).read_exact(&mut b).map(|_| b)
        });
        smarm::sleep(Duration::from_millis(10));
        peer.write_all(b"again").unwrap();
        (killed, again.join().unwrap().unwrap())
    });
    assert!(killed);
    assert_eq!(&got, b"again");
}

#[test]
fn two_actors_reading_one_stream_both_finish() {
    let rt = rt();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let total = rt.block_on(move || {
        let s = Arc::new(TcpStream::connect(addr).unwrap());
        s.set_read_timeout(Some(LONG)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                smarm::spawn(move || (&*s).read(&mut [0u8; 1]).unwrap())
            })
            .collect();
        smarm::sleep(Duration::from_millis(20));
        // One byte, then (once one reader has it) the next: each gets one.
        peer.write_all(b"x").unwrap();
        for _ in 0..4000 {
            if readers.iter().any(|h| h.is_finished()) {
                break;
            }
            smarm::sleep(Duration::from_millis(5));
        }
        peer.write_all(b"y").unwrap();
        readers
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(total, 2);
}

#[test]
fn nonblocking_mode_returns_would_block() {
    let rt = rt();
    let kinds = rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let a = l.accept().unwrap_err().kind();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        let r = (&c).read(&mut [0u8; 1]).unwrap_err().kind();
        (a, r)
    });
    assert_eq!(
        kinds,
        (io::ErrorKind::WouldBlock, io::ErrorKind::WouldBlock)
    );
}

/// A short read clears readiness (the buffer is drained), but an end of
/// stream that arrived with the last data is reported only by the next
/// read, which must not wait for an event that never comes.
#[test]
fn end_of_stream_after_a_short_read_is_seen_at_once() {
    let rt = rt();
    let listener = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = smarm::channel::<()>();
    let peer = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        go_rx.recv().unwrap();
        c.write_all(b"abc").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        done_tx.send(()).unwrap();
        go_rx.recv().ok(); // keep the socket open until the reader is done
    });
    let (got, reads) = rt.block_on(move || {
        let (s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        // Nothing is sent before `go`: this read waits, which registers the
        // socket with the reactor, and times out.
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let e = (&s).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        s.set_read_timeout(Some(LONG)).unwrap();
        go_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        // Let the reactor report the data and the end of stream before the
        // reads (the order that used to lose the end of stream).
        smarm::sleep(Duration::from_millis(20));
        let mut got = Vec::new();
        let mut reads = 0;
        loop {
            let n = (&s)
                .read(&mut buf)
                .expect("end of stream lost: read timed out");
            reads += 1;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        drop(go_tx);
        (got, reads)
    });
    peer.join().unwrap();
    assert_eq!(got, b"abc");
    assert_eq!(reads, 2);
}
