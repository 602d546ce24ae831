//! TCP and UDP sockets with std's API whose blocking calls park the actor.
//!
//! [`TcpListener`], [`TcpStream`] and [`UdpSocket`] have the method names and
//! meanings of their `std::net` namesakes. Underneath, every socket is in
//! non-blocking mode and each operation is a loop: try the system call; on
//! `WouldBlock`, wait for readiness in the runtime's reactor (the actor
//! parks, its scheduler thread runs others); retry. From a plain thread the
//! same types block the thread in `poll(2)`.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! let rt = smarm::runtime::init(smarm::runtime::Config::default());
//! rt.block_on(|| {
//!     let listener = smarm::net::TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     smarm::spawn(move || {
//!         let (mut s, _) = listener.accept().unwrap();
//!         let mut buf = [0u8; 5];
//!         s.read_exact(&mut buf).unwrap();
//!         s.write_all(&buf).unwrap();
//!     });
//!     let mut c = smarm::net::TcpStream::connect(addr).unwrap();
//!     c.write_all(b"hello").unwrap();
//!     let mut back = [0u8; 5];
//!     c.read_exact(&mut back).unwrap();
//!     assert_eq!(&back, b"hello");
//! });
//! ```
//!
//! # Differences from std
//! - Timeouts (`set_read_timeout`, ...) are kept by the object and measured
//!   with the runtime's timers, not set as `SO_RCVTIMEO`; a clone made by
//!   `try_clone` shares them with its original, as in std. A read or write
//!   that times out fails with `WouldBlock` (`EAGAIN`), as std on Linux;
//!   `connect_timeout` fails with `TimedOut`.
//! - `set_nonblocking(true)` makes operations return `WouldBlock` instead of
//!   waiting; the descriptor itself is always non-blocking.
//! - Name resolution (`ToSocketAddrs` on a host name) calls `getaddrinfo`,
//!   which blocks the scheduler thread; addresses and IP literals do not.
//! - `TcpListener::bind` listens with a backlog of [`LISTEN_BACKLOG`]
//!   (std: 128), capped by the kernel's `net.core.somaxconn`.

mod tcp;
mod udp;

pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The listen backlog of [`TcpListener::bind`].
pub const LISTEN_BACKLOG: libc::c_int = 1024;

/// Per-socket options shared by a socket and its `try_clone`s.
#[derive(Default)]
struct Opts {
    /// Read timeout in nanoseconds; 0: none.
    read_timeout: AtomicU64,
    /// Write timeout in nanoseconds; 0: none.
    write_timeout: AtomicU64,
    /// The user asked for non-blocking mode.
    nonblocking: AtomicBool,
}

impl Opts {
    fn get(slot: &AtomicU64) -> Option<Duration> {
        match slot.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    fn set(slot: &AtomicU64, d: Option<Duration>) -> io::Result<()> {
        let n = match d {
            None => 0,
            Some(d) if d.is_zero() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot set a 0 duration timeout",
                ))
            }
            Some(d) => d.as_nanos().clamp(1, u64::MAX as u128) as u64,
        };
        slot.store(n, Ordering::Relaxed);
        Ok(())
    }

    fn read_timeout(&self) -> Option<Duration> {
        Self::get(&self.read_timeout)
    }

    fn write_timeout(&self) -> Option<Duration> {
        Self::get(&self.write_timeout)
    }

    fn nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new non-blocking, close-on-exec socket.
fn socket(addr: &SocketAddr, ty: libc::c_int) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket takes no pointers.
    let fd =
        cvt(unsafe { libc::socket(family, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `addr` as a `sockaddr_storage` and its length.
fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                (&mut st as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe {
                (&mut st as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// The address in a `sockaddr_storage` filled by the kernel.
fn from_raw(st: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match st.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(st as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(st as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unsupported address family",
        )),
    }
}

/// Runs `f` on each address of `addr` until one succeeds; the last error
/// otherwise (as std does).
fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(&SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(&a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}
