//! `TcpListener` and `TcpStream`.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{cvt, each_addr, from_raw, socket, to_raw, Opts, LISTEN_BACKLOG};
use crate::io::{Interest, Source};

/// A TCP socket server, listening for connections (as `std::net::TcpListener`).
///
/// `accept` parks the calling actor until a connection arrives.
pub struct TcpListener {
    // Dropped before `inner`: the registration goes while the fd is open.
    source: Source,
    inner: std::net::TcpListener,
    opts: Arc<Opts>,
}

/// A TCP connection (as `std::net::TcpStream`); reads, writes and connects
/// park the calling actor while the socket is not ready.
pub struct TcpStream {
    // Dropped before `inner`: the registration goes while the fd is open.
    source: Source,
    inner: std::net::TcpStream,
    opts: Arc<Opts>,
}

impl TcpListener {
    /// Creates a listener bound to `addr` (the first of its addresses that
    /// can be bound), with `SO_REUSEADDR` as std, listening with a backlog
    /// of [`LISTEN_BACKLOG`]. Port 0 asks for an ephemeral port.
    ///
    /// # Errors
    /// The last error of `socket`, `bind` or `listen`, or `InvalidInput`
    /// when `addr` resolves to nothing.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let fd = socket(a, libc::SOCK_STREAM)?;
            let one: libc::c_int = 1;
            // SAFETY: the option value is a live c_int of the given size.
            cvt(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&one as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            })?;
            let (st, len) = to_raw(a);
            // SAFETY: `st` holds a valid sockaddr of `len` bytes.
            cvt(unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&st as *const libc::sockaddr_storage).cast(),
                    len,
                )
            })?;
            // SAFETY: listen takes no pointers.
            cvt(unsafe { libc::listen(fd.as_raw_fd(), LISTEN_BACKLOG) })?;
            Ok(TcpListener::from_owned(std::net::TcpListener::from(fd)))
        })
    }

    fn from_owned(inner: std::net::TcpListener) -> TcpListener {
        TcpListener {
            source: Source::new(inner.as_raw_fd()),
            inner,
            opts: Arc::default(),
        }
    }

    /// Wraps a std listener, switching it to non-blocking mode.
    ///
    /// # Errors
    /// If the mode cannot be set.
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        Ok(TcpListener::from_owned(l))
    }

    /// Accepts a new connection, waiting (parking the actor) until one
    /// arrives. The new stream is non-blocking underneath, like every
    /// stream of this module.
    ///
    /// # Errors
    /// As `accept4(2)`: e.g. `EMFILE` when out of descriptors; `WouldBlock`
    /// in non-blocking mode when no connection is pending.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.source
            .io(Interest::Readable, None, self.opts.nonblocking(), || {
                // SAFETY: an all-zero sockaddr_storage is valid.
                let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
                let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                // SAFETY: `st`/`len` describe a writable buffer of `len` bytes.
                let fd = cvt(unsafe {
                    libc::accept4(
                        self.inner.as_raw_fd(),
                        (&mut st as *mut libc::sockaddr_storage).cast(),
                        &mut len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                })?;
                // SAFETY: a fresh descriptor owned by nobody else.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                let addr = from_raw(&st)?;
                Ok((
                    TcpStream::from_owned(std::net::TcpStream::from(owned)),
                    addr,
                ))
            })
    }

    /// An iterator over incoming connections; never returns `None`.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The local address this listener is bound to.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// A new handle to the same socket (a duplicated descriptor).
    ///
    /// # Errors
    /// As `fcntl(F_DUPFD_CLOEXEC)`.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let inner = self.inner.try_clone()?;
        Ok(TcpListener {
            source: Source::new(inner.as_raw_fd()),
            inner,
            opts: self.opts.clone(),
        })
    }

    /// Sets `IP_TTL`.
    ///
    /// # Errors
    /// As `setsockopt(2)`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    ///
    /// # Errors
    /// As `getsockopt(2)`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Takes the pending socket error (`SO_ERROR`).
    ///
    /// # Errors
    /// As `getsockopt(2)`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// In non-blocking mode `accept` returns `WouldBlock` instead of waiting.
    ///
    /// # Errors
    /// Never; the `Result` is std's signature.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.opts.nonblocking.store(nonblocking, Ordering::Relaxed);
        Ok(())
    }
}

/// The iterator of [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

impl TcpStream {
    fn from_owned(inner: std::net::TcpStream) -> TcpStream {
        TcpStream {
            source: Source::new(inner.as_raw_fd()),
            inner,
            opts: Arc::default(),
        }
    }

    /// Wraps a std stream, switching it to non-blocking mode.
    ///
    /// # Errors
    /// If the mode cannot be set.
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        s.set_nonblocking(true)?;
        Ok(TcpStream::from_owned(s))
    }

    /// Opens a connection to `addr` (each of its addresses in turn), waiting
    /// (parking the actor) while the handshake is in progress.
    ///
    /// # Errors
    /// The last address's error (`ConnectionRefused`, `TimedOut` from the
    /// kernel, ...), or `InvalidInput` when `addr` resolves to nothing.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(addr, |a| TcpStream::connect_one(a, None))
    }

    /// Opens a connection to `addr`, giving up after `timeout`.
    ///
    /// # Errors
    /// `TimedOut` when the timeout passes first; `InvalidInput` for a zero
    /// timeout (as std); otherwise as [`TcpStream::connect`].
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        TcpStream::connect_one(addr, Some(timeout))
    }

    fn connect_one(a: &SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        let fd = socket(a, libc::SOCK_STREAM)?;
        let (st, len) = to_raw(a);
        // SAFETY: `st` holds a valid sockaddr of `len` bytes.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&st as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        let s = TcpStream::from_owned(std::net::TcpStream::from(fd));
        if r == 0 {
            return Ok(s);
        }
        let e = io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::EINPROGRESS) | Some(libc::EINTR)
        ) {
            return Err(e);
        }
        // Writable means the handshake finished; SO_ERROR says how.
        let r = s.source.io(Interest::Writable, timeout, false, || {
            if let Some(e) = s.inner.take_error()? {
                return Err(e);
            }
            match s.inner.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(()) => Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            )),
            Err(e) => Err(e),
        }
    }

    /// The remote address.
    ///
    /// # Errors
    /// As `getpeername(2)` (`NotConnected`).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Shuts down the read, write or both halves. Actors waiting on this
    /// socket are woken: a read returns `Ok(0)`, a write fails.
    ///
    /// # Errors
    /// As `shutdown(2)` (`NotConnected`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// As `setsockopt(2)`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Reads `TCP_NODELAY`.
    ///
    /// # Errors
    /// As `getsockopt(2)`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    /// Sets `IP_TTL`.
    ///
    /// # Errors
    /// As `setsockopt(2)`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Reads `IP_TTL`.
    ///
    /// # Errors
    /// As `getsockopt(2)`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Sets the read timeout (None: wait forever). A read that waits longer
    /// fails with `WouldBlock`, as std on Linux.
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`, as std.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        Opts::set(&self.opts.read_timeout, dur)
    }

    /// Sets the write timeout (None: wait forever).
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`, as std.
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        Opts::set(&self.opts.write_timeout, dur)
    }

    /// The read timeout.
    ///
    /// # Errors
    /// Never; the `Result` is std's signature.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.opts.read_timeout())
    }

    /// The write timeout.
    ///
    /// # Errors
    /// Never; the `Result` is std's signature.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.opts.write_timeout())
    }

    /// A new handle to the same connection (a duplicated descriptor); the
    /// timeouts and the non-blocking mode are shared with the original.
    ///
    /// # Errors
    /// As `fcntl(F_DUPFD_CLOEXEC)`.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let inner = self.inner.try_clone()?;
        Ok(TcpStream {
            source: Source::new(inner.as_raw_fd()),
            inner,
            opts: self.opts.clone(),
        })
    }

    /// Takes the pending socket error (`SO_ERROR`).
    ///
    /// # Errors
    /// As `getsockopt(2)`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// In non-blocking mode reads and writes return `WouldBlock` instead of
    /// waiting.
    ///
    /// # Errors
    /// Never; the `Result` is std's signature.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.opts.nonblocking.store(nonblocking, Ordering::Relaxed);
        Ok(())
    }

    /// Reads without removing the data from the queue, waiting as `read`.
    ///
    /// # Errors
    /// As [`Read::read`].
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.io(
            Interest::Readable,
            self.opts.read_timeout(),
            self.opts.nonblocking(),
            || self.inner.peek(buf),
        )
    }

    /// A read or write of `len` bytes (see [`Source::io_stream`]).
    fn stream_io(
        &self,
        interest: Interest,
        len: usize,
        op: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let timeout = match interest {
            Interest::Readable => self.opts.read_timeout(),
            Interest::Writable => self.opts.write_timeout(),
        };
        self.source
            .io_stream(interest, timeout, self.opts.nonblocking(), len, op)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s: &TcpStream = self;
        let len = buf.len();
        s.stream_io(Interest::Readable, len, || (&s.inner).read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let s: &TcpStream = self;
        let len = bufs.iter().map(|b| b.len()).sum();
        s.stream_io(Interest::Readable, len, || (&s.inner).read_vectored(bufs))
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let s: &TcpStream = self;
        s.stream_io(Interest::Writable, buf.len(), || (&s.inner).write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let s: &TcpStream = self;
        let len = bufs.iter().map(|b| b.len()).sum();
        s.stream_io(Interest::Writable, len, || (&s.inner).write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("inner", &self.inner)
            .finish()
    }
}

macro_rules! fd_traits {
    ($t:ident) => {
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.as_raw_fd()
            }
        }

        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.as_fd()
            }
        }

        impl IntoRawFd for $t {
            /// Deregisters the socket and gives up its (non-blocking) descriptor.
            fn into_raw_fd(self) -> RawFd {
                let $t { source, inner, .. } = self;
                drop(source);
                inner.into_raw_fd()
            }
        }
    };
}

fd_traits!(TcpStream);
fd_traits!(TcpListener);
pub(super) use fd_traits;
