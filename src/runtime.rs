//! Runtimes: configuration, start-up, `block_on`, and shutdown.
//!
//! ```no_run
//! use smarm::runtime::{self, Config};
//! let rt = runtime::init(Config::default().threads(2));
//! let sum: u64 = rt.block_on(|| {
//!     let hs: Vec<_> = (0..10u64).map(|i| smarm::spawn(move || i * i)).collect();
//!     hs.into_iter().map(|h| h.join().unwrap()).sum()
//! });
//! assert_eq!(sum, 285);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::actor::{spawn_on, JoinHandle};
use crate::scheduler::{self, Settings, Shared};

/// Default usable stack bytes per actor.
pub const DEFAULT_STACK_SIZE: usize = 64 * 1024;
/// Default allocation interval of the preemption hook.
pub const DEFAULT_ALLOC_INTERVAL: u32 = 128;
/// Default timeslice in TSC cycles.
pub const DEFAULT_TIMESLICE_CYCLES: u64 = 300_000;
/// Most scheduler threads a runtime may have.
pub const MAX_THREADS: usize = 1024;
/// Smallest and largest accepted stack sizes.
pub const MIN_STACK_SIZE: usize = 16 * 1024;
/// See [`MIN_STACK_SIZE`].
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// How long shutdown waits, without any actor finishing, before it reports
/// the actors that never reach a suspension point and abandons them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runtime settings. Precedence: built-in default < `SMARM_*` environment
/// variable < explicit builder call. Values are validated by [`try_init`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    threads: Option<usize>,
    stack_size: Option<usize>,
    alloc_interval: Option<u32>,
    timeslice_cycles: Option<u64>,
}

impl Config {
    /// Scheduler threads (`SMARM_THREADS`; default: available parallelism;
    /// 1 to 1024).
    pub fn threads(mut self, n: usize) -> Config {
        self.threads = Some(n);
        self
    }

    /// Usable stack bytes per actor (`SMARM_STACK_SIZE`; default 65536; 16 KiB
    /// to 1 GiB, rounded up to pages; one guard page is added).
    pub fn stack_size(mut self, bytes: usize) -> Config {
        self.stack_size = Some(bytes);
        self
    }

    /// Every `n`-th allocation of an actor checks its timeslice
    /// (`SMARM_ALLOC_INTERVAL`; default 128; 0 turns the hook off).
    pub fn alloc_interval(mut self, n: u32) -> Config {
        self.alloc_interval = Some(n);
        self
    }

    /// Timeslice in TSC cycles after which an actor is preempted at its next
    /// preemption point (`SMARM_TIMESLICE_CYCLES`; default 300,000; >= 1).
    pub fn timeslice_cycles(mut self, c: u64) -> Config {
        self.timeslice_cycles = Some(c);
        self
    }

    /// Resolves the settings: builder value, else environment, else default.
    pub(crate) fn resolve(&self) -> Result<Settings, ConfigError> {
        self.resolve_with(|k| std::env::var(k).ok())
    }

    pub(crate) fn resolve_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let threads = knob(self.threads, "SMARM_THREADS", "threads", &env, || {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        })?;
        check(
            threads as u64,
            1,
            MAX_THREADS as u64,
            "SMARM_THREADS",
            "threads",
            self.threads.is_some(),
        )?;
        let stack_size = knob(
            self.stack_size,
            "SMARM_STACK_SIZE",
            "stack_size",
            &env,
            || DEFAULT_STACK_SIZE,
        )?;
        check(
            stack_size as u64,
            MIN_STACK_SIZE as u64,
            MAX_STACK_SIZE as u64,
            "SMARM_STACK_SIZE",
            "stack_size",
            self.stack_size.is_some(),
        )?;
        let alloc_interval = knob(
            self.alloc_interval,
            "SMARM_ALLOC_INTERVAL",
            "alloc_interval",
            &env,
            || DEFAULT_ALLOC_INTERVAL,
        )?;
        let timeslice_cycles = knob(
            self.timeslice_cycles,
            "SMARM_TIMESLICE_CYCLES",
            "timeslice_cycles",
            &env,
            || DEFAULT_TIMESLICE_CYCLES,
        )?;
        check(
            timeslice_cycles,
            1,
            u64::MAX,
            "SMARM_TIMESLICE_CYCLES",
            "timeslice_cycles",
            self.timeslice_cycles.is_some(),
        )?;
        Ok(Settings {
            threads,
            stack_size,
            alloc_interval,
            timeslice_cycles,
        })
    }
}

fn knob<T: std::str::FromStr + Copy>(
    set: Option<T>,
    var: &'static str,
    _field: &'static str,
    env: &impl Fn(&str) -> Option<String>,
    default: impl FnOnce() -> T,
) -> Result<T, ConfigError> {
    if let Some(v) = set {
        return Ok(v);
    }
    match env(var) {
        None => Ok(default()),
        Some(raw) => raw.trim().parse::<T>().map_err(|_| ConfigError {
            source: Source::Env(var),
            value: raw.clone(),
            reason: "not a non-negative integer",
        }),
    }
}

fn check(
    x: u64,
    min: u64,
    max: u64,
    var: &'static str,
    field: &'static str,
    from_builder: bool,
) -> Result<(), ConfigError> {
    if x < min || x > max {
        let reason = if x < min {
            "below the minimum"
        } else {
            "above the maximum"
        };
        return Err(ConfigError {
            source: if from_builder {
                Source::Builder(field)
            } else {
                Source::Env(var)
            },
            value: x.to_string(),
            reason,
        }
        .with_range(min, max));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Env(&'static str),
    Builder(&'static str),
}

/// A configuration value that cannot be used: which knob, the value, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    source: Source,
    value: String,
    reason: &'static str,
}

impl ConfigError {
    fn with_range(mut self, min: u64, max: u64) -> ConfigError {
        let r = format!("{} (accepted: {min} to {max})", self.reason);
        self.reason = Box::leak(r.into_boxed_str());
        self
    }

    /// The environment variable (e.g. `SMARM_THREADS`) or builder method
    /// (e.g. `threads`) that holds the bad value.
    pub fn knob(&self) -> &str {
        match &self.source {
            Source::Env(v) | Source::Builder(v) => v,
        }
    }

    /// The rejected value, as given.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Env(var) => write!(f, "invalid {var}={:?}: {}", self.value, self.reason),
            Source::Builder(m) => write!(f, "invalid Config::{m}({}): {}", self.value, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A running smarm runtime. Dropping it shuts it down: no new actors start,
/// every suspended actor is unwound with [`crate::Killed`] (its destructors
/// run), and the scheduler threads are joined. An actor that never reaches
/// a suspension point is reported on stderr by pid and abandoned. Dropped
/// in one of its own actors, it starts the shutdown and returns; the
/// threads are joined by a thread of its own.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("settings", &self.shared.settings)
            .finish()
    }
}

/// Starts a runtime.
///
/// # Panics
/// With the [`ConfigError`] message when a setting is invalid, or if the
/// scheduler threads cannot be started.
pub fn init(cfg: Config) -> Runtime {
    try_init(cfg).unwrap_or_else(|e| panic!("smarm::runtime::init: {e}"))
}

/// Starts a runtime, or says which setting is invalid.
///
/// # Errors
/// A [`ConfigError`] naming the variable (or builder method) and the value.
///
/// # Panics
/// If the operating system refuses to start the scheduler threads.
pub fn try_init(cfg: Config) -> Result<Runtime, ConfigError> {
    let settings = cfg.resolve()?;
    crate::panic::install_hook();
    crate::overflow::install_handler();
    let shared = Shared::new(settings.clone()).expect("smarm: cannot set up the stack pool");
    let threads = (0..settings.threads)
        .map(|i| {
            let sh = shared.clone();
            std::thread::Builder::new()
                .name(format!("smarm-{i}"))
                .stack_size(8 << 20)
                .spawn(move || scheduler::worker_main(sh, i))
                .expect("smarm: cannot start a scheduler thread")
        })
        .collect();
    Ok(Runtime { shared, threads })
}

impl Runtime {
    /// Runs `f` as an actor on this runtime and blocks the calling thread
    /// until it returns; re-raises its panic.
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _enter = scheduler::enter(Arc::as_ptr(&self.shared));
        let wakes = self.shared.idle_wakes();
        let h = spawn_on(&self.shared, f, None, None, None);
        let woke = self.shared.idle_wakes() != wakes;
        match h.wait(woke) {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Spawns `f` as an actor of this runtime, from anywhere.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_on(&self.shared, f, None, None, None)
    }

    /// The number of scheduler threads.
    pub fn threads(&self) -> usize {
        self.shared.settings.threads
    }
}

impl Drop for Runtime {
    /// Shuts the runtime down (see the type's documentation). Dropped on one
    /// of its own scheduler threads (in one of its actors, say, holding the
    /// last `Arc<Runtime>`), it cannot wait there for its threads, one of
    /// which is the waiting one: the shutdown then goes on in a thread of
    /// its own, and the drop returns at once; the actor that dropped it is
    /// unwound with `Killed` at its next suspension point, like every other.
    fn drop(&mut self) {
        let threads = std::mem::take(&mut self.threads);
        if scheduler::on_thread_of(&self.shared) {
            let shared = self.shared.clone();
            let helper = std::thread::Builder::new()
                .name("smarm-shutdown".into())
                .spawn(move || {
                    report_stuck(&scheduler::shutdown(&shared, threads, SHUTDOWN_GRACE));
                });
            if let Err(e) = helper {
                // The scheduler threads' handles went with the closure:
                // they are detached, and leave once their actors are gone.
                scheduler::begin_shutdown(&self.shared);
                eprintln!(
                    "smarm: runtime shutdown: no thread to wait for the scheduler threads ({e}); they were detached"
                );
            }
            return;
        }
        report_stuck(&scheduler::shutdown(&self.shared, threads, SHUTDOWN_GRACE));
    }
}

/// Reports the actors a shutdown abandoned (see [`SHUTDOWN_GRACE`]).
fn report_stuck(stuck: &[crate::Pid]) {
    if !stuck.is_empty() {
        let pids: Vec<String> = stuck.iter().map(|p| p.to_string()).collect();
        eprintln!(
            "smarm: runtime shutdown: actor(s) {} never reached a suspension point; their scheduler threads were abandoned",
            pids.join(", ")
        );
    }
}
