//! The system-call seam of the reactor: epoll, eventfd, poll, and the few
//! descriptor queries the reactor needs. Nothing here knows about actors.
//!
//! Every function returns `io::Result` built from `errno`; `EINTR` is
//! retried where a retry is always right (`poll`/`epoll_wait` are not
//! retried here: their callers recompute the remaining timeout).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One readiness event as the kernel reports it.
pub(crate) type Event = libc::epoll_event;

/// Readable side of an epoll event mask (data, end of stream, hang-up, error).
pub(crate) const READ_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Writable side of an epoll event mask (space, hang-up, error).
pub(crate) const WRITE_EVENTS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Events after which reads never block again (end of stream, hang-up, error).
pub(crate) const READ_FINAL_EVENTS: u32 =
    (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Events after which writes never block again (hang-up, error).
pub(crate) const WRITE_FINAL_EVENTS: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new epoll instance (close-on-exec).
pub(crate) fn create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new non-blocking, close-on-exec eventfd with counter 0.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: as in `create`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to `ep` with `events`, tagged with `token`.
pub(crate) fn add(ep: &OwnedFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a live epoll_event for the duration of the call.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

/// Removes `fd` from `ep`.
pub(crate) fn delete(ep: &OwnedFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: as in `add` (the event is ignored by DEL but must be valid on old kernels).
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) }).map(drop)
}

/// Set once `epoll_pwait2` has been found missing (kernels before 5.11).
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// Waits for events on `ep` for at most `timeout` (None: no limit; zero:
/// do not block). Returns how many entries of `events` were filled;
/// `EINTR` is reported as 0 events.
pub(crate) fn wait(
    ep: &OwnedFd,
    events: &mut [Event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as libc::c_int;
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = timeout.map(crate::parker::timespec);
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `events` is a writable buffer of `max` entries; `tsp` is
        // null or points at a live timespec; the signal mask pointer is null.
        let r = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                max,
                tsp,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => return Ok(0),
            Some(libc::ENOSYS) => NO_PWAIT2.store(true, Ordering::Relaxed),
            _ => return Err(e),
        }
    }
    // Milliseconds, rounded up so that a short timeout does not become a
    // busy loop of zero-timeout waits.
    let ms = timeout.map_or(-1, |d| {
        d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
    });
    // SAFETY: as above.
    let r = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(r as usize)
}

/// Adds 1 to an eventfd's counter (makes it readable).
pub(crate) fn eventfd_signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64. EAGAIN (counter saturated)
    // means it is readable already, which is all we want.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter to 0.
pub(crate) fn eventfd_drain(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64; EAGAIN (already 0) is fine.
    unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// What `poll(2)` says about one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    /// The requested direction is ready (or the descriptor has an error or
    /// hang-up condition, which the next operation reports).
    Ready,
    /// Not ready before the timeout.
    Pending,
}

/// `poll(2)` on one descriptor for `events` (POLLIN/POLLOUT), at most
/// `timeout` (None: no limit). `EINTR` is reported as `Pending`.
///
/// # Errors
/// `EBADF` when `fd` is not an open descriptor (POLLNVAL); other `poll`
/// failures as they are.
pub(crate) fn poll_one(
    fd: RawFd,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<Polled> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |d| {
        d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
    });
    // SAFETY: `p` is one live pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(Polled::Pending)
        } else {
            Err(e)
        };
    }
    if r == 0 {
        return Ok(Polled::Pending);
    }
    if p.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(Polled::Ready)
}

/// The identity of the open file behind `fd` (device and inode), to notice
/// that a descriptor number was closed and reused.
///
/// # Errors
/// `EBADF` when `fd` is not open.
pub(crate) fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `stat` into the buffer on success.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// A close-on-exec duplicate of `fd`.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument.
    let d = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `d` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}
