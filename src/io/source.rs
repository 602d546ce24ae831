//! `Source`: the registration of a descriptor owned by a net object.
//!
//! A `Source` is created with its socket and registers the descriptor with
//! the reactor of the first runtime whose actor has to wait on it (a socket
//! only used from plain threads is never registered). It is dropped before
//! the socket (field order in the net types), so the registration is
//! removed while the descriptor is still open.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::epoll;
use super::reactor::{self, IoEntry, Reactor, READ, WRITE};
use super::Interest;

struct Registered {
    reactor: Arc<Reactor>,
    entry: Arc<IoEntry>,
}

/// The reactor registration of one owned, non-blocking descriptor.
pub(crate) struct Source {
    fd: RawFd,
    reg: OnceLock<Registered>,
}

/// The error of a read or write that reaches its timeout: `EAGAIN`, which is
/// what std's sockets return on Linux (`ErrorKind::WouldBlock`).
pub(crate) fn io_timeout() -> io::Error {
    io::Error::from_raw_os_error(libc::EAGAIN)
}

impl Source {
    /// A source for `fd`, which must be non-blocking and outlive the source.
    pub(crate) fn new(fd: RawFd) -> Source {
        Source {
            fd,
            reg: OnceLock::new(),
        }
    }

    /// Runs `op` until it does not return `WouldBlock`, waiting for
    /// `interest` in between, at most `timeout` in all (then `EAGAIN`, as std).
    /// `nonblocking`: the user asked for non-blocking mode; `op` runs once.
    pub(crate) fn io<R>(
        &self,
        interest: Interest,
        timeout: Option<Duration>,
        nonblocking: bool,
        op: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        self.io_until(interest, timeout, nonblocking, op, |_| false)
    }

    /// As [`io`](Self::io), for a read or write of `len` bytes on a stream
    /// socket: a transfer shorter than asked (but not empty) means the
    /// kernel's buffer is drained (read) or full (write), so the readiness
    /// bit is cleared right away (if no event arrived meanwhile) and the
    /// next call waits for the next edge instead of paying a system call
    /// that fails with `WouldBlock`. Linux's TCP and Unix stream sockets
    /// copy everything available up to `len`, and data or space that
    /// appears later comes with a new edge-triggered event.
    pub(crate) fn io_stream(
        &self,
        interest: Interest,
        timeout: Option<Duration>,
        nonblocking: bool,
        len: usize,
        op: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.io_until(interest, timeout, nonblocking, op, |&n| n > 0 && n < len)
    }

    fn io_until<R>(
        &self,
        interest: Interest,
        timeout: Option<Duration>,
        nonblocking: bool,
        mut op: impl FnMut() -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> io::Result<R> {
        crate::check!();
        if nonblocking {
            return op();
        }
        let b = reactor::bit(interest);
        let mut deadline: Option<Option<Instant>> = None;
        let Some(current) = super::current_reactor() else {
            // A plain thread: poll(2).
            loop {
                match op() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => return r,
                }
                let dl =
                    *deadline.get_or_insert_with(|| timeout.and_then(crate::time::deadline_after));
                let remaining = match dl {
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Err(io_timeout());
                        }
                        Some(d - now)
                    }
                    None => None,
                };
                epoll::poll_one(self.fd, interest.poll_events(), remaining)?;
            }
        };
        loop {
            let reg = self.reg.get();
            let snap = reg.map_or(READ | WRITE, |r| r.entry.readiness());
            if snap & b != 0 {
                match op() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Some(r) = reg {
                            r.entry.clear(b, snap);
                        }
                    }
                    Ok(v) => {
                        if let Some(r) = reg.filter(|_| drained(&v)) {
                            r.entry.clear(b, snap);
                        }
                        return Ok(v);
                    }
                    r => return r,
                }
            }
            let dl = *deadline.get_or_insert_with(|| timeout.and_then(crate::time::deadline_after));
            if dl.is_some_and(|d| Instant::now() >= d) {
                return Err(io_timeout());
            }
            let reg = match reg {
                Some(r) => r,
                None => {
                    let r = self.register(current)?;
                    // The operation just failed with WouldBlock before the
                    // registration existed; registering reports any
                    // readiness from then on, so start with the bit clear.
                    r.entry.clear(b, READ | WRITE);
                    r
                }
            };
            if !Arc::ptr_eq(&reg.reactor, current) {
                // Registered with another runtime: wait as for a raw descriptor.
                super::wait_fd(self.fd, interest, dl).map_err(|e| {
                    if e.kind() == io::ErrorKind::TimedOut {
                        io_timeout()
                    } else {
                        e
                    }
                })?;
                continue;
            }
            reg.entry.wait(b, dl)?;
        }
    }

    fn register(&self, reactor: &Arc<Reactor>) -> io::Result<&Registered> {
        let entry = match reactor.register(self.fd) {
            Ok(e) => e,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Another actor is registering this socket with the same
                // reactor right now; its `set` follows its `epoll_ctl`.
                loop {
                    if let Some(r) = self.reg.get() {
                        return Ok(r);
                    }
                    crate::yield_now();
                }
            }
            Err(e) => return Err(e),
        };
        let mine = Registered {
            reactor: reactor.clone(),
            entry,
        };
        if let Err(lost) = self.reg.set(mine) {
            // Another actor registered first (on the same socket).
            lost.reactor.deregister(&lost.entry);
        }
        Ok(self.reg.get().expect("registered"))
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(r) = self.reg.get() {
            r.reactor.deregister(&r.entry);
        }
    }
}
