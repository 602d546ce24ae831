//! Two actors bounce a counter back and forth over channels, while a
//! thousand more compute in parallel; then the runtime reports what it did.
//!
//! Run it with `cargo run --release --example ping_pong`.

use std::time::Instant;

use smarm::runtime::{self, Config};

fn main() {
    let rt = runtime::init(Config::default());
    let rounds = 1_000_000u64;
    let t = Instant::now();
    let total = rt.block_on(move || {
        let (to_pong, pong_rx) = smarm::channel::<u64>();
        let (to_ping, ping_rx) = smarm::channel::<u64>();
        let pong = smarm::Builder::new().name("pong").spawn(move || {
            while let Ok(n) = pong_rx.recv() {
                if to_ping.send(n + 1).is_err() {
                    break;
                }
            }
        });
        let mut n = 0;
        for _ in 0..rounds {
            to_pong.send(n).unwrap();
            n = ping_rx.recv().unwrap();
        }
        drop(to_pong);
        pong.join().unwrap();
        // A thousand short-lived actors summing their share in parallel.
        let workers: Vec<_> = (0..1000u64)
            .map(|i| smarm::spawn(move || (i * 1000..(i + 1) * 1000).sum::<u64>()))
            .collect();
        let sum: u64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
        (n, sum)
    });
    let el = t.elapsed();
    println!(
        "ping-pong: {} round trips in {:.1?} ({:.0} ns per round trip)",
        total.0,
        el,
        el.as_nanos() as f64 / rounds as f64
    );
    println!("1000 actors summed 0..1_000_000 = {}", total.1);
    assert_eq!(total.0, rounds);
    assert_eq!(total.1, (0..1_000_000u64).sum::<u64>());
}
