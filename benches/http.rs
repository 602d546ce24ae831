//! HTTP/1.1 keep-alive "hello world": smarm against tokio.
//!
//! The same responder (one actor / one task per connection, keep-alive,
//! pipelining-safe parsing) runs on smarm (`smarm::net`) and on tokio
//! (`tokio::net`), each with N = available cores scheduler threads, and is
//! driven by the same in-process load generator on plain threads: 100
//! keep-alive connections, one request in flight per connection (no
//! pipelining), a warm-up, then a fixed measuring window. Prints requests
//! per second for both and the ratio smarm / tokio.
//!
//! ```text
//! cargo bench --bench http                 # 3 rounds: 1 s warm-up, 3 s measured, each
//! HTTP_BENCH_SECS=10 HTTP_BENCH_ROUNDS=5 cargo bench --bench http
//! ```
//!
//! The generator uses epoll directly (level-triggered, non-blocking
//! sockets) on max(1, N / 2) threads so that it costs as little CPU as
//! possible; both servers share the machine with it in the same way.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 100;
const WARMUP: Duration = Duration::from_secs(1);
const BODY: &[u8] = b"Hello, world!\n";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: smarm-bench\r\n\r\n";
const MAX_HEAD: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// The responder logic shared by both servers
// ---------------------------------------------------------------------------

struct Request {
    len: usize,
    close: bool,
}

fn parse(buf: &[u8]) -> Result<Option<Request>, ()> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let mut close = lines.next().ok_or(())?.ends_with("HTTP/1.0");
    let mut body = 0usize;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(())?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close")
                || close && !value.eq_ignore_ascii_case("keep-alive");
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().map_err(|_| ())?;
        }
    }
    let len = head_end + 4 + body;
    Ok((buf.len() >= len).then_some(Request { len, close }))
}

fn respond(out: &mut Vec<u8>, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14");
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(BODY);
}

fn response_len() -> usize {
    let mut v = Vec::new();
    respond(&mut v, false);
    v.len()
}

/// Answers every complete request in `buf[..filled]`; returns bytes consumed
/// and whether the connection must close.
fn answer(buf: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
    let mut start = 0;
    loop {
        match parse(&buf[start..]) {
            Ok(Some(r)) => {
                respond(out, r.close);
                start += r.len;
                if r.close {
                    return (start, true);
                }
            }
            Ok(None) => return (start, false),
            Err(()) => {
                out.extend_from_slice(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return (start, true);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// smarm
// ---------------------------------------------------------------------------

fn serve_smarm(mut s: smarm::net::TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        let (used, close) = answer(&buf[..filled], &mut out);
        if !out.is_empty() {
            s.write_all(&out)?;
            out.clear();
        }
        if close {
            return s.shutdown(std::net::Shutdown::Write);
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = s.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

fn run_smarm(threads: usize, secs: Duration) -> f64 {
    let rt = smarm::runtime::init(smarm::runtime::Config::default().threads(threads));
    let listener = rt.block_on(|| smarm::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    rt.spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let _ = s.set_nodelay(true);
            smarm::spawn(move || {
                let _ = serve_smarm(s);
            });
        }
    });
    let rps = load(addr, threads, secs);
    // The accepting actor never returns: shutdown unwinds it.
    drop(rt);
    rps
}

// ---------------------------------------------------------------------------
// tokio
// ---------------------------------------------------------------------------

async fn serve_tokio(mut s: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        let (used, close) = answer(&buf[..filled], &mut out);
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if close {
            return s.shutdown().await;
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = s.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

fn run_tokio(threads: usize, secs: Duration) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let _ = serve_tokio(s).await;
            });
        }
    });
    let rps = load(addr, threads, secs);
    rt.shutdown_timeout(Duration::from_secs(1));
    rps
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// Drives `addr` with CONNECTIONS keep-alive connections; returns requests
/// per second over the measuring window after the warm-up.
fn load(addr: SocketAddr, server_threads: usize, secs: Duration) -> f64 {
    let gen_threads = (server_threads / 2).max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let per = CONNECTIONS.div_ceil(gen_threads);
    let hs: Vec<_> = (0..gen_threads)
        .map(|g| {
            let n = per.min(CONNECTIONS - (g * per).min(CONNECTIONS));
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || generator(addr, n, &stop, &done))
        })
        .collect();
    std::thread::sleep(WARMUP);
    let (c0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(secs);
    let (c1, t1) = (done.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

fn generator(addr: SocketAddr, n: usize, stop: &AtomicBool, done: &AtomicU64) {
    let resp = response_len();
    // SAFETY: epoll_create1 takes no pointers; the descriptor is closed below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut conns: Vec<(std::net::TcpStream, usize)> = (0..n)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(REQUEST).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: a live event for an open socket and epoll instance.
            assert_eq!(
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) },
                0
            );
            (s, 0)
        })
        .collect();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 128];
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `events` is a writable buffer of its length.
        let k = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 50) };
        let mut completed = 0;
        for ev in events.iter().take(k.max(0) as usize) {
            let (s, pending) = &mut conns[ev.u64 as usize];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => panic!("server closed a keep-alive connection"),
                    Ok(m) => *pending += m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("load generator read: {e}"),
                }
            }
            while *pending >= resp {
                *pending -= resp;
                completed += 1;
                // One request in flight: the next goes out after the response.
                // A small write into an empty send buffer does not block.
                s.write_all(REQUEST).unwrap();
            }
        }
        if completed > 0 {
            done.fetch_add(completed, Ordering::Relaxed);
        }
    }
    drop(conns);
    // SAFETY: our epoll descriptor, closed once.
    unsafe { libc::close(ep) };
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep it short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("HTTP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(if quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        });
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("http keep-alive hello: {CONNECTIONS} connections, {threads} server threads, {secs:?} measured after {WARMUP:?} warm-up");
    // HTTP_BENCH_ONLY=smarm|tokio runs one server (for profiling).
    let only = std::env::var("HTTP_BENCH_ONLY").unwrap_or_default();
    // The two servers alternate for HTTP_BENCH_ROUNDS rounds (3; 1 when
    // quick) so that a slow spell of the machine hits both; the figures
    // are the medians of the rounds.
    let rounds: usize = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(if quick { 1 } else { 3 });
    let (mut sm, mut tk) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        if only != "tokio" {
            let r = run_smarm(threads, secs);
            println!("round {round}: smarm {r:>12.0} req/s");
            sm.push(r);
        }
        if only != "smarm" {
            let r = run_tokio(threads, secs);
            println!("round {round}: tokio {r:>12.0} req/s");
            tk.push(r);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let smarm = median(&mut sm);
    let tokio = median(&mut tk);
    if let Some(s) = smarm {
        println!("smarm  {s:>12.0} req/s (median of {rounds})");
    }
    if let Some(t) = tokio {
        println!("tokio  {t:>12.0} req/s (median of {rounds})");
    }
    if let (Some(s), Some(t)) = (smarm, tokio) {
        println!("ratio smarm/tokio {:.3}", s / t);
    }
}
