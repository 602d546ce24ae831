//! Blocking-style IO for actors, over one epoll reactor per runtime.
//!
//! An actor that waits for a descriptor parks; its scheduler thread runs
//! other actors; the reactor makes it runnable again when the descriptor
//! becomes ready. On a plain thread the same calls block the thread in
//! `poll(2)`. The socket types of [`crate::net`] are built on this module.
//!
//! ```no_run
//! use std::io::Read;
//! use std::os::fd::AsRawFd;
//! let rt = smarm::runtime::init(smarm::runtime::Config::default());
//! rt.block_on(|| {
//!     let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
//!     a.set_nonblocking(true).unwrap();
//!     smarm::spawn(move || { use std::io::Write; (&b).write_all(b"hi").unwrap(); });
//!     let mut buf = [0u8; 2];
//!     let fd = a.as_raw_fd();
//!     // Parks this actor (not its thread) until the socket is readable.
//!     let n = smarm::io::block_on_io(fd, smarm::io::Interest::Readable, || a.read(&mut buf)).unwrap();
//!     assert_eq!(&buf[..n], &b"hi"[..n]);
//! });
//! ```
//!
//! # Raw descriptors and closing
//! [`wait_readable`], [`wait_writable`] and [`block_on_io`] take a raw
//! descriptor the caller owns. Linux tells no one when a descriptor is
//! closed, so a raw wait checks every [`REVALIDATE`] that the descriptor
//! still names the same open file; when it does not (it was closed, or
//! closed and its number reused), the wait ends with `EBADF`. The net types
//! own their descriptors, so they need no such check and use a faster path
//! (see `reactor.rs` and `docs-io.md`).

mod epoll;
pub(crate) mod reactor;
mod source;

pub(crate) use source::Source;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scheduler;

/// How often a raw-descriptor wait checks that its descriptor is still open.
pub const REVALIDATE: Duration = Duration::from_millis(50);

/// The direction an actor waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Data (or end of stream, or an error) can be read, or a connection accepted.
    Readable,
    /// Data can be written (or a connection attempt finished, or an error).
    Writable,
}

impl Interest {
    fn poll_events(self) -> libc::c_short {
        match self {
            Interest::Readable => libc::POLLIN | libc::POLLRDHUP,
            Interest::Writable => libc::POLLOUT,
        }
    }
}

/// Waits until `fd` is readable (data, end of stream, a pending connection,
/// or an error condition that the next read reports). In an actor the actor
/// parks; on a plain thread the thread blocks in `poll(2)`.
///
/// # Errors
/// `EBADF` if `fd` is not open, or is closed while waiting (noticed within
/// [`REVALIDATE`]); errors of registering `fd` with epoll.
///
/// # Panics
/// In an actor that is killed while waiting, unwinds with `smarm::Killed`
/// (the wait's registration is removed first).
pub fn wait_readable(fd: RawFd) -> io::Result<()> {
    wait_fd(fd, Interest::Readable, None)
}

/// Waits until `fd` is writable (or in an error condition). See
/// [`wait_readable`].
///
/// # Errors
/// As [`wait_readable`].
///
/// # Panics
/// As [`wait_readable`].
pub fn wait_writable(fd: RawFd) -> io::Result<()> {
    wait_fd(fd, Interest::Writable, None)
}

/// Runs `op` (a non-blocking operation on `fd`) until it returns anything
/// but `WouldBlock`, waiting for `interest` on `fd` in between. `fd` must
/// be in non-blocking mode, or `op` blocks the thread itself.
///
/// # Errors
/// The first error of `op` that is not `WouldBlock`, or an error of the
/// wait (see [`wait_readable`]).
///
/// # Panics
/// As [`wait_readable`].
pub fn block_on_io<R>(
    fd: RawFd,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_fd(fd, interest, None)?,
            r => return r,
        }
    }
}

/// The reactor of the runtime the calling actor runs on, if it runs in one.
fn current_reactor() -> Option<&'static Arc<reactor::Reactor>> {
    if !scheduler::in_actor() {
        return None;
    }
    let sh = scheduler::current_shared()?;
    // SAFETY: the running actor's runtime outlives it (workers hold an Arc
    // of `Shared` until they leave their loop, after every actor ended).
    Some(unsafe { &(*sh).reactor })
}

/// `ErrorKind::TimedOut`, for raw waits that reach their deadline.
pub(crate) fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "timed out waiting for the descriptor",
    )
}

/// Waits for `interest` on a descriptor the caller owns but has not
/// registered, until `deadline` (then `TimedOut`).
pub(crate) fn wait_fd(fd: RawFd, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
    let ident = epoll::identity(fd)?;
    let ev = interest.poll_events();
    if ready_and_same(fd, ev, ident, Some(Duration::ZERO))? {
        return Ok(());
    }
    let Some(reactor) = current_reactor() else {
        // A plain thread: poll in slices, re-validating in between.
        loop {
            let slice = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(timed_out());
                    }
                    (d - now).min(REVALIDATE)
                }
                None => REVALIDATE,
            };
            if ready_and_same(fd, ev, ident, Some(slice))? {
                return Ok(());
            }
        }
    };
    // An actor: register a private duplicate of the descriptor (so that
    // neither another registration of `fd` nor a reuse of its number can
    // collide with ours), wait, deregister. The duplicate is closed after
    // the deregistration (drop order: guard, then `dup`).
    let dup = epoll::dup(fd)?;
    let entry = reactor.register(dup.as_raw_fd())?;
    let _reg = Deregister {
        reactor,
        entry: &entry,
    };
    let b = reactor::bit(interest);
    loop {
        let snap = entry.readiness();
        if ready_and_same(fd, ev, ident, Some(Duration::ZERO))? {
            return Ok(());
        }
        entry.clear(b, snap);
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(timed_out());
        }
        let wake = deadline.map_or(now + REVALIDATE, |d| d.min(now + REVALIDATE));
        entry.wait(b, Some(wake))?;
    }
}

/// Polls `fd` for `ev` (at most `timeout`), then checks that `fd` still
/// names the open file `ident`: true when ready, false when not yet ready.
///
/// The identity is checked after the poll, ready or not, so that a number
/// closed and reused by another open file while we waited is `EBADF` even
/// when the new file happens to be ready (the poll then saw the new file).
fn ready_and_same(
    fd: RawFd,
    ev: libc::c_short,
    ident: (u64, u64),
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let ready = epoll::poll_one(fd, ev, timeout)? == epoll::Polled::Ready;
    if epoll::identity(fd)? != ident {
        return Err(reactor::closed_error());
    }
    Ok(ready)
}

/// Deregisters a temporary registration when the wait ends (also when it
/// unwinds because the actor was killed).
struct Deregister<'a> {
    reactor: &'a reactor::Reactor,
    entry: &'a Arc<reactor::IoEntry>,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.reactor.deregister(self.entry);
    }
}

/// Number of descriptors registered with the calling actor's runtime
/// (diagnostics and tests); None outside an actor.
#[doc(hidden)]
pub fn registrations() -> Option<usize> {
    current_reactor().map(|r| r.registrations())
}
