//! Semantics of `smarm::oneshot`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use smarm::{oneshot, RecvError, RecvTimeoutError, TryRecvError};

#[test]
fn send_then_recv() {
    let (tx, rx) = oneshot::channel();
    tx.send(1).unwrap();
    assert_eq!(rx.recv(), Ok(1));
}

#[test]
fn recv_waits_for_send() {
    let (tx, rx) = oneshot::channel();
    let t = thread::spawn(move || rx.recv());
    thread::sleep(Duration::from_millis(20));
    tx.send("x").unwrap();
    assert_eq!(t.join().unwrap(), Ok("x"));
}

#[test]
fn dropped_sender_disconnects() {
    let (tx, rx) = oneshot::channel::<u8>();
    let t = thread::spawn(move || rx.recv());
    thread::sleep(Duration::from_millis(20));
    drop(tx);
    assert_eq!(t.join().unwrap(), Err(RecvError));
}

#[test]
fn send_to_dropped_receiver_returns_value() {
    let (tx, rx) = oneshot::channel();
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.send(5), Err(5));
}

#[test]
fn try_recv_states() {
    let (tx, mut rx) = oneshot::channel();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.send(2).unwrap();
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    let (tx, mut rx) = oneshot::channel::<u8>();
    drop(tx);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

#[test]
fn recv_timeout() {
    let (tx, rx) = oneshot::channel::<u8>();
    let start = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(30)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(tx.send(1), Err(1));
    let (tx, rx) = oneshot::channel();
    tx.send(3).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_millis(30)), Ok(3));
    let (tx, rx) = oneshot::channel::<u8>();
    drop(tx);
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(30)),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn value_dropped_exactly_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    // Sent, never received.
    let (tx, rx) = oneshot::channel();
    tx.send(Counted(drops.clone())).unwrap();
    drop(rx);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    // Sent to a dropped receiver: handed back.
    let (tx, rx) = oneshot::channel();
    drop(rx);
    let back = tx.send(Counted(drops.clone())).unwrap_err();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop(back);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    // Received.
    let (tx, rx) = oneshot::channel();
    tx.send(Counted(drops.clone())).unwrap();
    drop(rx.recv().unwrap());
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

#[test]
fn racing_send_and_drop() {
    let drops = Arc::new(AtomicUsize::new(0));
    for _ in 0..2000 {
        let (tx, rx) = oneshot::channel();
        let d = drops.clone();
        let t = thread::spawn(move || match tx.send(Counted(d)) {
            Ok(()) => 0,
            Err(v) => {
                drop(v);
                1
            }
        });
        drop(rx);
        t.join().unwrap();
    }
    assert_eq!(drops.load(Ordering::SeqCst), 2000);
}

#[test]
fn ping_pong() {
    for _ in 0..500 {
        let (tx1, rx1) = oneshot::channel::<u32>();
        let (tx2, rx2) = oneshot::channel::<u32>();
        let t = thread::spawn(move || tx2.send(rx1.recv().unwrap() + 1).unwrap());
        tx1.send(1).unwrap();
        assert_eq!(rx2.recv(), Ok(2));
        t.join().unwrap();
    }
}
