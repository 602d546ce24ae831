//! A two-level supervision tree with a flaky worker.
//!
//! ```text
//! root (OneForOne, at most 1 restart in 10 s)
//! ├── logger                 Permanent: prints what the workers report
//! └── workers (OneForAll, at most 2 restarts in 10 s)   a nested supervisor
//!     ├── steady             Permanent: reports a tick every 100 ms
//!     └── flaky              Permanent: panics after a few ticks
//! ```
//!
//! `flaky` keeps failing. Each failure makes `workers` restart both of its
//! children (OneForAll). The third failure exceeds its intensity: `workers`
//! stops its children and panics. `root` restarts `workers` once; when the
//! new `workers` escalates too, `root` exceeds its own intensity, stops
//! `logger`, and panics: the whole tree is down and the program ends.
//!
//! Run it with `cargo run --example supervision_tree`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smarm::runtime::{self, Config};
use smarm::supervisor::{Restart, Strategy, Supervisor};
use smarm::Receiver;

fn main() {
    let rt = runtime::init(Config::default());
    let t0 = Instant::now();
    let (log_tx, log_rx) = smarm::channel::<String>();
    let say = move |who: &str, what: &str| {
        let _ = log_tx.send(format!(
            "[{:>5} ms] {who:<7} {what}",
            t0.elapsed().as_millis()
        ));
    };

    let result = rt.block_on(move || {
        let root = Supervisor::new(Strategy::OneForOne)
            .intensity(1, Duration::from_secs(10))
            .name("root")
            .child("logger", Restart::Permanent, logger(log_rx))
            .child("workers", Restart::Permanent, workers(say))
            .spawn();
        root.join()
    });

    match result {
        Ok(()) => println!("root returned"),
        Err(p) => {
            let msg = p.downcast_ref::<String>().map_or("?", String::as_str);
            println!("\nroot escalated (nobody supervises it, so the program ends):\n  {msg}");
        }
    }
}

/// The logger child: prints every line it receives until it is stopped.
fn logger(rx: Receiver<String>) -> impl Fn() + Send + Sync + 'static {
    move || {
        println!("logger  started");
        for line in rx.iter() {
            println!("{line}");
        }
    }
}

/// The nested supervisor child: each (re)start builds a fresh supervisor
/// and runs it in this child actor, so stopping the child stops its
/// workers, and its escalation is this child's panic.
fn workers(
    say: impl Fn(&str, &str) + Clone + Send + Sync + 'static,
) -> impl Fn() + Send + Sync + 'static {
    let generation = Arc::new(AtomicU32::new(0));
    move || {
        let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
        say("workers", &format!("supervisor started (generation {g})"));
        let (s1, s2) = (say.clone(), say.clone());
        Supervisor::new(Strategy::OneForAll)
            .intensity(2, Duration::from_secs(10))
            .child("steady", Restart::Permanent, move || {
                ticker("steady", None, &s1)
            })
            .child("flaky", Restart::Permanent, move || {
                ticker("flaky", Some(3), &s2)
            })
            .run()
    }
}

/// Reports a tick every 100 ms; with `fail_after`, panics after that many.
fn ticker(name: &str, fail_after: Option<u32>, say: &(impl Fn(&str, &str) + ?Sized)) {
    struct Bye<'a, F: Fn(&str, &str) + ?Sized>(&'a str, &'a F);
    impl<F: Fn(&str, &str) + ?Sized> Drop for Bye<'_, F> {
        fn drop(&mut self) {
            (self.1)(self.0, "stopped");
        }
    }
    say(name, "started");
    let _bye = Bye(name, say);
    for n in 1.. {
        smarm::sleep(Duration::from_millis(100));
        if fail_after == Some(n) {
            panic!("{name} gave up after {n} ticks");
        }
        say(name, &format!("tick {n}"));
    }
}
