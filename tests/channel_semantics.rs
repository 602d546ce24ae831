//! One semantic at a time, for each flavour. Several cases follow the
//! structure of crossbeam-channel's tests/{list,array,zero}.rs
//! (smoke, capacity, len, try_recv, recv_timeout, disconnection, drops),
//! rewritten for smarm's API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use smarm::{
    bounded, channel, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn unbounded_smoke() {
    let (tx, rx) = channel();
    tx.send(7).unwrap();
    assert_eq!(rx.try_recv(), Ok(7));
    tx.send(8).unwrap();
    assert_eq!(rx.recv(), Ok(8));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(rx.recv_timeout(ms(10)), Err(RecvTimeoutError::Timeout));
    assert_eq!(tx.capacity(), None);
}

#[test]
fn unbounded_fifo_across_blocks() {
    let (tx, rx) = channel();
    for i in 0..1000 {
        tx.send(i).unwrap();
    }
    assert_eq!(rx.len(), 1000);
    for i in 0..1000 {
        assert_eq!(rx.recv(), Ok(i));
    }
    assert!(rx.is_empty());
}

#[test]
fn bounded_capacity_and_full() {
    for cap in 1..=4 {
        let (tx, rx) = bounded(cap);
        assert_eq!(tx.capacity(), Some(cap));
        for i in 0..cap {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(99), Err(TrySendError::Full(99)));
        assert_eq!(rx.len(), cap);
        assert_eq!(rx.recv(), Ok(0));
        tx.try_send(cap).unwrap();
        for i in 1..=cap {
            assert_eq!(rx.try_recv(), Ok(i));
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }
}

#[test]
fn bounded_wraps_many_laps() {
    let (tx, rx) = bounded(3);
    for i in 0..100 {
        tx.send(i).unwrap();
        tx.send(i + 1000).unwrap();
        assert_eq!(rx.recv(), Ok(i));
        assert_eq!(rx.recv(), Ok(i + 1000));
    }
}

#[test]
fn bounded_send_blocks_until_space() {
    let (tx, rx) = bounded(1);
    tx.send(1).unwrap();
    let t = thread::spawn(move || {
        tx.send(2).unwrap();
    });
    thread::sleep(ms(20));
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Ok(2));
    t.join().unwrap();
}

#[test]
fn bounded_send_timeout() {
    let (tx, rx) = bounded(1);
    tx.send(1).unwrap();
    let start = Instant::now();
    assert_eq!(
        tx.send_timeout(2, ms(30)),
        Err(SendTimeoutError::Timeout(2))
    );
    assert!(start.elapsed() >= ms(30));
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(tx.send_timeout(3, ms(30)), Ok(()));
    drop(rx);
    assert_eq!(
        tx.send_timeout(4, ms(30)),
        Err(SendTimeoutError::Disconnected(4))
    );
}

#[test]
fn recv_timeout_elapses() {
    for (tx, rx) in [channel::<i32>(), bounded(2), bounded(0)] {
        let start = Instant::now();
        assert_eq!(rx.recv_timeout(ms(30)), Err(RecvTimeoutError::Timeout));
        assert!(start.elapsed() >= ms(30));
        drop(tx);
        assert_eq!(rx.recv_timeout(ms(30)), Err(RecvTimeoutError::Disconnected));
    }
}

#[test]
fn recv_wakes_on_send() {
    for (tx, rx) in [channel::<i32>(), bounded(2), bounded(0)] {
        let t = thread::spawn(move || rx.recv());
        thread::sleep(ms(20));
        tx.send(5).unwrap();
        assert_eq!(t.join().unwrap(), Ok(5));
    }
}

#[test]
fn recv_drains_before_disconnect() {
    for (tx, rx) in [channel::<i32>(), bounded(4)] {
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        drop(tx);
        assert!(rx.is_disconnected());
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }
}

#[test]
fn disconnect_wakes_blocked_receiver() {
    for (tx, rx) in [channel::<i32>(), bounded(1), bounded(0)] {
        let t = thread::spawn(move || rx.recv());
        thread::sleep(ms(20));
        drop(tx);
        assert_eq!(t.join().unwrap(), Err(RecvError));
    }
}

#[test]
fn disconnect_wakes_blocked_sender() {
    for (tx, rx) in [bounded::<i32>(1), bounded(0)] {
        if tx.capacity() == Some(1) {
            tx.send(0).unwrap();
        }
        let t = thread::spawn(move || tx.send(9));
        thread::sleep(ms(20));
        drop(rx);
        assert_eq!(t.join().unwrap(), Err(SendError(9)));
    }
}

#[test]
fn send_to_dropped_receiver_returns_value() {
    for (tx, rx) in [channel::<String>(), bounded(1), bounded(0)] {
        drop(rx);
        assert_eq!(tx.send("a".into()), Err(SendError("a".to_string())));
        assert_eq!(
            tx.try_send("b".into()),
            Err(TrySendError::Disconnected("b".to_string()))
        );
        assert!(tx.is_disconnected());
    }
}

#[test]
fn clones_keep_channel_open() {
    let (tx, rx) = channel();
    let tx2 = tx.clone();
    drop(tx);
    tx2.send(1).unwrap();
    let rx2 = rx.clone();
    drop(rx);
    assert_eq!(rx2.recv(), Ok(1));
    drop(tx2);
    assert_eq!(rx2.recv(), Err(RecvError));
}

#[test]
fn rendezvous_send_returns_after_receive() {
    let (tx, rx) = bounded(0);
    let received = Arc::new(AtomicUsize::new(0));
    let r2 = received.clone();
    let t = thread::spawn(move || {
        thread::sleep(ms(30));
        let v = rx.recv().unwrap();
        r2.store(1, Ordering::SeqCst);
        v
    });
    tx.send(3).unwrap();
    // The value has been taken by the time send returns.
    assert_eq!(t.join().unwrap(), 3);
    assert_eq!(received.load(Ordering::SeqCst), 1);
}

#[test]
fn rendezvous_try_ops_need_a_partner() {
    let (tx, rx) = bounded(0);
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(tx.capacity(), Some(0));
    let t = thread::spawn(move || rx.recv());
    // Retry until the receiver is blocked.
    let mut v = 2;
    loop {
        match tx.try_send(v) {
            Ok(()) => break,
            Err(TrySendError::Full(x)) => {
                v = x;
                thread::sleep(ms(1));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(t.join().unwrap(), Ok(2));
}

#[test]
fn rendezvous_blocked_sender_hands_off_to_try_recv() {
    let (tx, rx) = bounded(0);
    let t = thread::spawn(move || tx.send(4));
    let v = loop {
        match rx.try_recv() {
            Ok(v) => break v,
            Err(TryRecvError::Empty) => thread::sleep(ms(1)),
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(v, 4);
    assert_eq!(t.join().unwrap(), Ok(()));
}

#[test]
fn rendezvous_send_timeout_returns_value() {
    let (tx, _rx) = bounded(0);
    let start = Instant::now();
    assert_eq!(
        tx.send_timeout(1, ms(20)),
        Err(SendTimeoutError::Timeout(1))
    );
    assert!(start.elapsed() >= ms(20));
}

#[test]
fn recv_many_takes_batches() {
    for (tx, rx) in [channel::<u32>(), bounded(8)] {
        for i in 0..6 {
            tx.send(i).unwrap();
        }
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 4), Ok(4));
        assert_eq!(buf, [0, 1, 2, 3]);
        assert_eq!(rx.recv_many(&mut buf, 100), Ok(2));
        assert_eq!(buf, [0, 1, 2, 3, 4, 5]);
        assert_eq!(rx.recv_many(&mut buf, 0), Ok(0));
        drop(tx);
        assert_eq!(rx.recv_many(&mut buf, 4), Err(RecvError));
    }
}

#[test]
fn recv_many_waits_for_one() {
    for (tx, rx) in [channel::<u32>(), bounded(4), bounded(0)] {
        let t = thread::spawn(move || {
            let mut buf = Vec::new();
            let n = rx.recv_many(&mut buf, 10).unwrap();
            (n, buf)
        });
        thread::sleep(ms(20));
        tx.send(1).unwrap();
        let (n, buf) = t.join().unwrap();
        assert!(n >= 1);
        assert_eq!(buf[0], 1);
    }
}

#[test]
fn recv_many_wraps_ring_and_wakes_senders() {
    let (tx, rx) = bounded(4);
    let t = thread::spawn(move || {
        for i in 0..1000u32 {
            tx.send(i).unwrap();
        }
    });
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, 3).is_ok() {}
    assert_eq!(buf, (0..1000).collect::<Vec<_>>());
    t.join().unwrap();
}

#[test]
fn iterators() {
    let (tx, rx) = channel();
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    assert_eq!(rx.try_iter().take(2).collect::<Vec<_>>(), [0, 1]);
    drop(tx);
    assert_eq!(rx.iter().collect::<Vec<_>>(), [2, 3, 4]);
    let (tx, rx) = bounded(2);
    let t = thread::spawn(move || {
        for i in 0..5 {
            tx.send(i).unwrap();
        }
    });
    let mut got = Vec::new();
    for v in &rx {
        got.push(v);
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
    t.join().unwrap();
    let (tx, rx) = channel();
    tx.send(1).unwrap();
    drop(tx);
    assert_eq!(rx.into_iter().collect::<Vec<_>>(), [1]);
}

struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn queued_values_dropped_exactly_once() {
    for cap in [None, Some(1), Some(7), Some(64)] {
        for (n, take) in [(0, 0), (1, 0), (5, 2), (40, 3), (100, 100)] {
            let drops = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = match cap {
                None => channel(),
                Some(c) => bounded(c),
            };
            let n = cap.map_or(n, |c| n.min(c));
            for _ in 0..n {
                tx.send(Counted(drops.clone())).unwrap();
            }
            for _ in 0..take.min(n) {
                drop(rx.recv().unwrap());
            }
            assert_eq!(drops.load(Ordering::SeqCst), take.min(n));
            drop(rx);
            // Still queued, the values go when the last handle does.
            drop(tx);
            assert_eq!(drops.load(Ordering::SeqCst), n, "cap {cap:?} n {n}");
        }
    }
}

#[test]
fn failed_sends_drop_nothing() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = bounded(1);
    tx.send(Counted(drops.clone())).unwrap();
    let e = tx.try_send(Counted(drops.clone())).unwrap_err();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(e);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop((tx, rx));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn error_traits() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    struct NotDebug;
    let e = SendError(NotDebug);
    is_error(&SendError(1));
    assert_eq!(format!("{e:?}"), "SendError { .. }");
    assert_eq!(e.into_inner().type_id_dummy(), ());
    is_error(&TrySendError::Full(1));
    is_error(&SendTimeoutError::Timeout(1));
    is_error(&RecvError);
    is_error(&TryRecvError::Empty);
    is_error(&RecvTimeoutError::Timeout);
    assert_eq!(TrySendError::Full(3).into_inner(), 3);
    assert_eq!(SendTimeoutError::Disconnected(4).into_inner(), 4);
    assert!(!RecvError.to_string().is_empty());
    let a = TryRecvError::Disconnected;
    let b = a;
    assert_eq!(a, b);
}

trait Dummy {
    fn type_id_dummy(&self) {}
}
impl<T> Dummy for T {}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<smarm::Sender<u8>>();
    check::<smarm::Receiver<u8>>();
    check::<smarm::oneshot::Sender<u8>>();
    check::<smarm::oneshot::Receiver<u8>>();
}

/// A message that counts its drops; the one marked `bomb` panics in its
/// destructor.
struct Bomb {
    drops: Arc<AtomicUsize>,
    bomb: bool,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.bomb && !thread::panicking() {
            panic!("a message destructor that panics");
        }
    }
}

#[test]
fn a_panicking_message_destructor_does_not_leak_the_others() {
    // Unbounded over several blocks (the panic in the middle of one),
    // bounded wrapped around its ring.
    for (cap, n, bomb_at) in [(None, 200, 100), (Some(64), 64, 10), (Some(8), 8, 7)] {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = match cap {
            None => smarm::channel(),
            Some(c) => smarm::bounded(c),
        };
        if cap == Some(8) {
            // Move the ring's head off position 0 first.
            for _ in 0..5 {
                tx.send(Bomb {
                    drops: drops.clone(),
                    bomb: false,
                })
                .unwrap();
                drop(rx.recv().unwrap());
            }
        }
        let before = drops.load(Ordering::SeqCst);
        for i in 0..n {
            tx.send(Bomb {
                drops: drops.clone(),
                bomb: i == bomb_at,
            })
            .unwrap();
        }
        drop(tx);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(rx)));
        assert!(r.is_err(), "the bomb's panic reaches the dropper");
        assert_eq!(
            drops.load(Ordering::SeqCst) - before,
            n,
            "cap {cap:?}: every message dropped once"
        );
    }
}

#[test]
fn an_impossible_capacity_is_a_clear_panic() {
    fn message(cap: usize) -> String {
        let err = std::panic::catch_unwind(|| smarm::bounded::<u64>(cap)).expect_err("a panic");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }
    // Beyond any address space: the allocation fails instead of aborting.
    let m = message(1 << 50);
    assert!(
        m.contains(&format!("smarm::bounded({})", 1u64 << 50)),
        "{m}"
    );
    assert!(m.contains("cannot allocate"), "{m}");
    // Beyond what positions can count.
    let m = message(usize::MAX);
    assert!(m.contains("too large"), "{m}");
}
