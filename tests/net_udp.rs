//! UDP over the reactor: round trips between actors and with plain
//! threads, connected sockets, peeking, receive timeouts.

use std::io;
use std::time::{Duration, Instant};

use smarm::net::UdpSocket;
use smarm::runtime::{self, Config, Runtime};

const LONG: Duration = Duration::from_secs(20);

fn rt() -> Runtime {
    runtime::init(Config::default().threads(2))
}

#[test]
fn round_trips_between_actors() {
    let rt = rt();
    let sum = rt.block_on(|| {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let srv = smarm::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..100 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                buf[..n].reverse();
                server.send_to(&buf[..n], from).unwrap();
            }
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(LONG)).unwrap();
        client.connect(addr).unwrap();
        assert_eq!(client.peer_addr().unwrap(), addr);
        let mut sum = 0usize;
        for i in 0..100u8 {
            client.send(&[i, 1, 2]).unwrap();
            let mut buf = [0u8; 64];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[2, 1, i]);
            sum += buf[2] as usize;
        }
        srv.join().unwrap();
        sum
    });
    assert_eq!(sum, (0..100).sum::<usize>());
}

#[test]
fn actor_server_plain_thread_client_and_peek() {
    let rt = rt();
    let server = rt.block_on(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    let addr = server.local_addr().unwrap();
    let h = rt.spawn(move || {
        let mut buf = [0u8; 16];
        let (n1, from1) = server.peek_from(&mut buf).unwrap();
        let (n2, from2) = server.recv_from(&mut buf).unwrap();
        assert_eq!((n1, from1), (n2, from2));
        server.send_to(&buf[..n2], from2).unwrap();
        n2
    });
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.send_to(b"hello", addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"hello"[..], addr));
    assert_eq!(h.join().unwrap(), 5);
}

#[test]
fn recv_timeout_fires_in_an_actor_and_on_a_thread() {
    let timeout = Duration::from_millis(80);
    let rt = rt();
    let (kind, elapsed) = rt.block_on(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        let t = Instant::now();
        let e = s.recv_from(&mut [0u8; 8]).unwrap_err();
        (e.kind(), t.elapsed())
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(elapsed >= timeout);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let t = Instant::now();
    assert_eq!(
        s.recv(&mut [0u8; 8]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert!(t.elapsed() >= timeout);
}

#[test]
fn many_actors_share_one_socket() {
    let rt = rt();
    let got = rt.block_on(|| {
        let s = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        s.set_read_timeout(Some(LONG)).unwrap();
        let addr = s.local_addr().unwrap();
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                smarm::spawn(move || {
                    let mut b = [0u8; 1];
                    s.recv(&mut b).unwrap();
                    b[0] as usize
                })
            })
            .collect();
        smarm::sleep(Duration::from_millis(20));
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..8u8 {
            c.send_to(&[i], addr).unwrap();
        }
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    assert_eq!(got, (0..8).sum::<usize>());
}
