//! `UdpSocket`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::tcp::fd_traits;
use super::Opts;
use crate::io::{Interest, Source};

/// A UDP socket (as `std::net::UdpSocket`); receives and sends park the
/// calling actor while the socket is not ready.
pub struct UdpSocket {
    // Dropped before `inner`: the registration goes while the fd is open.
    source: Source,
    inner: std::net::UdpSocket,
    opts: Arc<Opts>,
}

impl UdpSocket {
    /// Creates a socket bound to `addr` (the first address that can be bound).
    ///
    /// # Errors
    /// As `std::net::UdpSocket::bind`.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        UdpSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Wraps a std socket, switching it to non-blocking mode.
    ///
    /// # Errors
    /// If the mode cannot be set.
    pub fn from_std(s: std::net::UdpSocket) -> io::Result<UdpSocket> {
        s.set_nonblocking(true)?;
        Ok(UdpSocket {
            source: Source::new(s.as_raw_fd()),
            inner: s,
            opts: Arc::default(),
        })
    }

    fn read_io<R>(&self, op: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        self.source.io(
            Interest::Readable,
            self.opts.read_timeout(),
            self.opts.nonblocking(),
            op,
        )
    }

    fn write_io<R>(&self, op: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        self.source.io(
            Interest::Writable,
            self.opts.write_timeout(),
            self.opts.nonblocking(),
            op,
        )
    }

    /// Receives one datagram, waiting for it; returns its length and sender.
    ///
    /// # Errors
    /// As `recvfrom(2)`; `WouldBlock` after the read timeout.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_io(|| self.inner.recv_from(buf))
    }

    /// Like [`UdpSocket::recv_from`], leaving the datagram queued.
    ///
    /// # Errors
    /// As [`UdpSocket::recv_from`].
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_io(|| self.inner.peek_from(buf))
    }

    /// Sends `buf` to `addr` (its first address), waiting for buffer space.
    ///
    /// # Errors
    /// As `sendto(2)`; `InvalidInput` when `addr` resolves to nothing;
    /// `WouldBlock` after the write timeout.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let a = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        self.write_io(|| self.inner.send_to(buf, a))
    }

    /// Sets the default peer and filters received datagrams to it.
    ///
    /// # Errors
    /// As `connect(2)`.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        self.inner.connect(addr)
    }

    /// Sends `buf` to the connected peer.
    ///
    /// # Errors
    /// As `send(2)` (`NotConnected`, `ConnectionRefused` after an ICMP error);
    /// `WouldBlock` after the write timeout.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_io(|| self.inner.send(buf))
    }

    /// Receives one datagram from the connected peer.
    ///
    /// # Errors
    /// As `recv(2)`; `WouldBlock` after the read timeout.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_io(|| self.inner.recv(buf))
    }

    /// Like [`UdpSocket::recv`], leaving the datagram queued.
    ///
    /// # Errors
    /// As [`UdpSocket::recv`].
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_io(|| self.inner.peek(buf))
    }

    /// The local address.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    /// `NotConnected` when not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Sets the read timeout (None: wait forever); a receive that waits
    /// longer fails with `WouldBlock`, as std on Linux.
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        Opts::set(&self.opts.read_timeout, dur)
    }

    /// Sets the write timeout (None: wait forever).
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`.
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

    /// A new handle to the same socket; timeouts and mode are shared.
    ///
    /// # Errors
    /// As `fcntl(F_DUPFD_CLOEXEC)`.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let inner = self.inner.try_clone()?;
        Ok(UdpSocket {
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

    /// Sets `SO_BROADCAST`.
    ///
    /// # Errors
    /// As `setsockopt(2)`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.inner.set_broadcast(on)
    }

    /// Reads `SO_BROADCAST`.
    ///
    /// # Errors
    /// As `getsockopt(2)`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.broadcast()
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

    /// In non-blocking mode sends and receives return `WouldBlock` instead
    /// of waiting.
    ///
    /// # Errors
    /// Never; the `Result` is std's signature.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.opts.nonblocking.store(nonblocking, Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

fd_traits!(UdpSocket);
