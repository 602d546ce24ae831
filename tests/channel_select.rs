//! `select!`: readiness, disconnection, defaults, fairness, many arms.

use std::thread;
use std::time::{Duration, Instant};

use smarm::{bounded, channel, select, RecvError};

#[test]
fn picks_the_ready_arm() {
    let (tx1, rx1) = channel::<i32>();
    let (_tx2, rx2) = channel::<String>();
    tx1.send(1).unwrap();
    let r = select! {
        recv(rx1) -> m => m.unwrap(),
        recv(rx2) -> m => m.unwrap().len() as i32,
    };
    assert_eq!(r, 1);
}

#[test]
fn disconnected_arm_is_ready_with_err() {
    let (tx1, rx1) = channel::<i32>();
    let (_tx2, rx2) = channel::<i32>();
    drop(tx1);
    let r = select! {
        recv(rx1) -> m => m,
        recv(rx2) -> _m => Ok(0),
    };
    assert_eq!(r, Err(RecvError));
}

#[test]
fn default_runs_when_nothing_ready() {
    let (_tx, rx) = channel::<i32>();
    let r = select! {
        recv(rx) -> _m => 1,
        default => 2,
    };
    assert_eq!(r, 2);
    let start = Instant::now();
    let r = select! {
        recv(rx) -> _m => 1,
        default(Duration::from_millis(30)) => 3,
    };
    assert_eq!(r, 3);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn blocks_until_a_send() {
    for (tx, rx) in [channel::<i32>(), bounded(1), bounded(0)] {
        let (_tx2, rx2) = bounded::<u8>(0);
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(9).unwrap();
        });
        let r = select! {
            recv(rx2) -> _m => 0,
            recv(rx) -> m => m.unwrap(),
        };
        assert_eq!(r, 9);
        t.join().unwrap();
    }
}

#[test]
fn bodies_control_the_surrounding_loop() {
    let (tx, rx) = channel();
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    drop(tx);
    let mut sum = 0;
    loop {
        select! {
            recv(rx) -> m => match m {
                Ok(v) => { sum += v; continue; }
                Err(_) => break,
            },
        }
    }
    assert_eq!(sum, 10);
}

#[test]
fn fair_between_ready_arms() {
    const N: usize = 4000;
    let (tx1, rx1) = bounded(N);
    let (tx2, rx2) = bounded(N);
    let (tx3, rx3) = channel();
    for i in 0..N {
        tx1.send(i).unwrap();
        tx2.send(i).unwrap();
        tx3.send(i).unwrap();
    }
    let mut hits = [0usize; 3];
    for _ in 0..N {
        select! {
            recv(rx1) -> _m => hits[0] += 1,
            recv(rx2) -> _m => hits[1] += 1,
            recv(&rx3) -> _m => hits[2] += 1,
        }
    }
    // Each arm expects N/3; demand at least a fifth of N.
    for h in hits {
        assert!(h > N / 5, "unfair: {hits:?}");
    }
}

#[test]
fn eight_mixed_arms() {
    let (t0, r0) = channel::<u8>();
    let (_t1, r1) = channel::<u16>();
    let (_t2, r2) = bounded::<u32>(1);
    let (_t3, r3) = bounded::<u64>(0);
    let (_t4, r4) = channel::<String>();
    let (_t5, r5) = channel::<()>();
    let (_t6, r6) = bounded::<i8>(3);
    let (t7, r7) = channel::<char>();
    t7.send('z').unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        select! {
            recv(r0) -> m => got.push(format!("{}", m.unwrap())),
            recv(r1) -> _m => unreachable!(),
            recv(r2) -> _m => unreachable!(),
            recv(r3) -> _m => unreachable!(),
            recv(r4) -> _m => unreachable!(),
            recv(r5) -> _m => unreachable!(),
            recv(r6) -> _m => unreachable!(),
            recv(r7) -> m => got.push(format!("{}", m.unwrap())),
        }
        t0.send(5).unwrap();
    }
    got.sort();
    assert_eq!(got, ["5", "z"]);
}

#[test]
fn same_receiver_in_two_arms() {
    let (tx, rx) = channel::<i32>();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        tx.send(4).unwrap();
    });
    let r = select! {
        recv(rx) -> m => m.unwrap(),
        recv(rx) -> m => m.unwrap() * 10,
    };
    assert!(r == 4 || r == 40);
    t.join().unwrap();
}

#[test]
fn unused_notification_is_forwarded() {
    // Two selects wait on the same channel; each message must reach one of
    // them even when the woken select takes a different arm.
    let (tx, rx) = channel::<u32>();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                let (_keep, other) = channel::<u32>();
                let mut n = 0;
                loop {
                    select! {
                        recv(rx) -> m => match m { Ok(_) => n += 1, Err(_) => return n },
                        recv(other) -> _m => {},
                    }
                }
            })
        })
        .collect();
    drop(rx);
    for i in 0..5000 {
        tx.send(i).unwrap();
    }
    drop(tx);
    let total: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 5000);
}
