//! Several producers and consumers; every message must arrive exactly once.

use std::thread;

use smarm::{bounded, channel, Receiver, Sender};

const PRODUCERS: usize = 4;
const CONSUMERS: usize = 3;
const PER_PRODUCER: usize = 20_000;

fn run(tx: Sender<usize>, rx: Receiver<usize>, batch: bool) {
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    tx.send(p * PER_PRODUCER + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                if batch {
                    while rx.recv_many(&mut got, 64).is_ok() {}
                } else {
                    while let Ok(v) = rx.recv() {
                        got.push(v);
                    }
                }
                got
            })
        })
        .collect();
    drop(rx);
    for p in producers {
        p.join().unwrap();
    }
    let mut seen = vec![false; PRODUCERS * PER_PRODUCER];
    for c in consumers {
        let got = c.join().unwrap();
        // Each producer's messages arrive in order at any one consumer.
        let mut last = [None; PRODUCERS];
        for v in got {
            assert!(!seen[v], "{v} received twice");
            seen[v] = true;
            let p = v / PER_PRODUCER;
            assert!(last[p] < Some(v));
            last[p] = Some(v);
        }
    }
    assert!(seen.iter().all(|&s| s), "a message was lost");
}

#[test]
fn stress_unbounded() {
    let (tx, rx) = channel();
    run(tx, rx, false);
}

#[test]
fn stress_bounded_small() {
    let (tx, rx) = bounded(3);
    run(tx, rx, false);
}

#[test]
fn stress_bounded_recv_many() {
    let (tx, rx) = bounded(64);
    run(tx, rx, true);
}

#[test]
fn stress_unbounded_recv_many() {
    let (tx, rx) = channel();
    run(tx, rx, true);
}

#[test]
fn stress_rendezvous() {
    let (tx, rx) = bounded(0);
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..2000 {
                    tx.send(p * 2000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || rx.iter().collect::<Vec<usize>>())
        })
        .collect();
    drop(rx);
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<usize> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..6000).collect::<Vec<_>>());
}

#[test]
fn stress_timeouts_lose_nothing() {
    // Receivers that time out often must neither lose a value nor leave a
    // notification unused while another receiver sleeps.
    let (tx, rx) = bounded(2);
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                let mut n = 0usize;
                loop {
                    match rx.recv_timeout(std::time::Duration::from_micros(50)) {
                        Ok(_) => n += 1,
                        Err(smarm::RecvTimeoutError::Timeout) => {}
                        Err(smarm::RecvTimeoutError::Disconnected) => return n,
                    }
                }
            })
        })
        .collect();
    drop(rx);
    for i in 0..20_000 {
        tx.send(i).unwrap();
    }
    drop(tx);
    let total: usize = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(total, 20_000);
}
