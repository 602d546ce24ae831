//! Supervisors: actors that start children, watch them end, and restart
//! them by an Erlang/OTP-style strategy.
//!
//! ```no_run
//! use std::time::Duration;
//! use smarm::runtime::{self, Config};
//! use smarm::supervisor::{Restart, Strategy, Supervisor};
//!
//! let rt = runtime::init(Config::default());
//! rt.block_on(|| {
//!     let sup = Supervisor::new(Strategy::OneForOne)
//!         .intensity(3, Duration::from_secs(5))
//!         .child("ticker", Restart::Permanent, || loop {
//!             smarm::sleep(Duration::from_millis(100));
//!         })
//!         .spawn();
//!     smarm::sleep(Duration::from_millis(350));
//!     smarm::kill(sup.pid()); // stops "ticker" first, then ends
//!     assert!(sup.join().unwrap_err().is::<smarm::Killed>());
//! });
//! ```
//!
//! # Model
//!
//! A supervisor is an ordinary actor that owns one `channel::<Signal>()`.
//! Each child is started with
//! `Builder::new().name(child_name).spawn_under(tx.clone(), ..)`, so the
//! runtime sends exactly one [`Signal`] on that channel when the child ends.
//! The supervisor's loop receives those signals and reacts:
//!
//! 1. It maps the signal's pid to the child that currently has that pid. A
//!    pid that belongs to no running child (a child the supervisor has
//!    itself stopped) is ignored: stopping is not failing.
//! 2. It decides by the child's [`Restart`] whether the end calls for a
//!    restart. A child that will not be restarted is simply gone.
//! 3. A restart is counted in the intensity window (a sliding window of
//!    restart times). More than `max_restarts` in `within` escalates: the
//!    supervisor stops every child (reverse start order) and panics, so its
//!    own supervisor sees a `Signal::Panic`.
//! 4. Otherwise the [`Strategy`] picks the children to restart: the one that
//!    ended, all of them, or it and those started after it. The others in
//!    that group are stopped in reverse start order, then the group is
//!    started again in start order.
//!
//! # Stopping
//!
//! A child is stopped by `kill` and then awaited: the supervisor waits for
//! the child's own `Signal` (so every destructor of the child has run) and
//! joins it before it stops the next one. Children are stopped one at a
//! time, in reverse start order, so a child may rely on the children started
//! before it (its dependencies) outliving it.
//!
//! A supervisor that is killed unwinds with [`Killed`] out
//! of its loop. [`Supervisor::run`] catches that unwind, stops every child
//! (its own waits do not unwind again: a kill is delivered once), and then
//! resumes the unwind, so the supervisor still ends with `Killed` and no
//! child outlives it. The stopping is done outside the unwind on purpose: an
//! actor that parks *while unwinding* leaves the thread-local panic count of
//! its scheduler thread raised for whatever runs there next (see
//! docs-supervision.md, "Known runtime issue"). The children also live in a
//! guard whose destructor stops those still running, as a backstop for any
//! other unwind out of the supervisor; nothing in it panics.
//!
//! Killing is cooperative: a child that never reaches a suspension point
//! (a blocking call, `yield_now`, `check!`) cannot be stopped, and its
//! supervisor waits for it.
//!
//! # Nesting
//!
//! A supervisor is a child like any other: give the parent a child whose
//! start function builds the inner supervisor and calls [`Supervisor::run`],
//! which runs the supervisor in the child actor itself:
//!
//! ```no_run
//! use smarm::supervisor::{Restart, Strategy, Supervisor};
//! # let rt = smarm::runtime::init(smarm::runtime::Config::default());
//! # rt.block_on(|| {
//! let root = Supervisor::new(Strategy::OneForOne)
//!     .child("workers", Restart::Permanent, || {
//!         Supervisor::new(Strategy::OneForAll)
//!             .child("a", Restart::Permanent, || { /* work */ })
//!             .child("b", Restart::Permanent, || { /* work */ })
//!             .run()
//!     })
//!     .spawn();
//! # drop(root);
//! # });
//! ```
//!
//! Killing the inner supervisor (as its parent does when it stops it)
//! unwinds `run`, whose guard stops `a` and `b` first; an escalation in the
//! inner supervisor is a panic of the child `workers`, which the root
//! counts like any other failure. [`Supervisor::spawn_under`] starts a
//! supervisor under a hand-written supervising actor.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actor::{describe_payload, kill_handle, Builder, JoinHandle, Killed, Pid, Signal};
use crate::channel::{channel, Receiver, Sender};

/// Which children a supervisor restarts when one of them has to be
/// restarted (as in Erlang/OTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Only the child that ended.
    OneForOne,
    /// Every child: the others are stopped (reverse start order), then all
    /// are started again (start order).
    OneForAll,
    /// The child that ended and every child started after it.
    RestForOne,
}

/// When a child is restarted (as in Erlang/OTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always: after a return, a panic or a kill.
    Permanent,
    /// Only after a panic; not after a normal return or a kill (a payload of
    /// [`Killed`]).
    Transient,
    /// Never. A temporary child that is stopped for a sibling's restart is
    /// not started again either.
    Temporary,
}

/// The start function of a child: called for each (re)start.
type StartFn = Arc<dyn Fn() + Send + Sync + 'static>;

/// One child's specification.
struct Spec {
    /// The actor name of every incarnation of the child.
    name: String,
    /// When the child is restarted.
    restart: Restart,
    /// What the child runs.
    start: StartFn,
}

/// A supervisor, built and then started with [`spawn`](Supervisor::spawn),
/// [`spawn_under`](Supervisor::spawn_under) or [`run`](Supervisor::run).
/// See the [module documentation](self) for the model.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use smarm::supervisor::{Restart, Strategy, Supervisor};
/// # let rt = smarm::runtime::init(smarm::runtime::Config::default());
/// # rt.block_on(|| {
/// let sup = Supervisor::new(Strategy::RestForOne)
///     .intensity(5, Duration::from_secs(10))
///     .child("db", Restart::Permanent, || { /* connection loop */ })
///     .child("cache", Restart::Transient, || { /* uses db */ })
///     .spawn();
/// # drop(sup);
/// # });
/// ```
pub struct Supervisor {
    /// How restarts spread to siblings.
    strategy: Strategy,
    /// More restarts than this within `within` escalate.
    max_restarts: u32,
    /// The length of the intensity window.
    within: Duration,
    /// The actor name used by `spawn` and `spawn_under`.
    name: Option<String>,
    /// The children, in start order.
    children: Vec<Spec>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("strategy", &self.strategy)
            .field("max_restarts", &self.max_restarts)
            .field("within", &self.within)
            .field("name", &self.name)
            .field(
                "children",
                &self
                    .children
                    .iter()
                    .map(|c| (&c.name, c.restart))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// OTP's default intensity: at most 1 restart ...
pub const DEFAULT_MAX_RESTARTS: u32 = 1;
/// ... within 5 seconds.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(5);

impl Supervisor {
    /// A supervisor with no children, the given strategy, and OTP's default
    /// intensity (more than 1 restart within 5 s escalates).
    pub fn new(strategy: Strategy) -> Supervisor {
        Supervisor {
            strategy,
            max_restarts: DEFAULT_MAX_RESTARTS,
            within: DEFAULT_WITHIN,
            name: None,
            children: Vec::new(),
        }
    }

    /// Restart intensity: more than `max_restarts` restarts within any
    /// window of length `within` make the supervisor stop all its children
    /// and then panic (escalate to its own supervisor). `max_restarts` 0
    /// escalates at the first restart.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Supervisor {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Names the supervisor's actor when it is started with
    /// [`spawn`](Supervisor::spawn) or [`spawn_under`](Supervisor::spawn_under)
    /// (with [`run`](Supervisor::run) it keeps the calling actor's name).
    pub fn name(mut self, name: impl Into<String>) -> Supervisor {
        self.name = Some(name.into());
        self
    }

    /// Adds a child, started after those added before it. `start` is called
    /// in a new actor named `name` for each (re)start; the child ends when
    /// `start` returns or panics.
    pub fn child<F>(mut self, name: impl Into<String>, restart: Restart, start: F) -> Supervisor
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.children.push(Spec {
            name: name.into(),
            restart,
            start: Arc::new(start),
        });
        self
    }

    /// Starts the supervisor as a new actor (see [`run`](Supervisor::run)
    /// for what it does). Killing that actor stops its children first.
    ///
    /// # Panics
    /// When called with no runtime (as [`crate::spawn`]).
    pub fn spawn(self) -> JoinHandle<()> {
        self.builder().spawn(move || self.run())
    }

    /// Starts the supervisor as a new actor that reports its end to
    /// `supervisor` (see [`crate::spawn_under`]): an escalation arrives there
    /// as a `Signal::Panic`.
    ///
    /// # Panics
    /// When called with no runtime (as [`crate::spawn`]).
    pub fn spawn_under(self, supervisor: Sender<Signal>) -> JoinHandle<()> {
        self.builder().spawn_under(supervisor, move || self.run())
    }

    fn builder(&self) -> Builder {
        let b = Builder::new();
        match &self.name {
            Some(n) => b.name(n.clone()),
            None => b,
        }
    }

    /// Runs the supervisor in the calling actor: starts the children in
    /// order and supervises them. This is how a supervisor is nested: a
    /// child's start function builds a `Supervisor` and calls `run`.
    ///
    /// Returns when no child is running and none is due to be restarted
    /// (all ended for good: temporary ones, or transient ones that returned
    /// or were killed); with permanent children it returns only by
    /// unwinding. If the calling actor is killed, the children are stopped
    /// (reverse start order) while it unwinds.
    ///
    /// # Panics
    /// When the restart intensity is exceeded, after all children have been
    /// stopped: the message names the supervisor, the limit and the child
    /// whose end was one restart too many. Also when called with no runtime.
    pub fn run(self) {
        let (tx, rx) = channel();
        let mut st = State {
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            within: self.within,
            children: self
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    handle: None,
                    removed: false,
                })
                .collect(),
            restarts: VecDeque::new(),
            pending: VecDeque::new(),
            tx,
            rx,
        };
        // A kill unwinds out of the loop. It is caught here and the
        // children are stopped before the unwind goes on, so the stopping
        // (which parks) never runs inside an unwind: see "Stopping" in the
        // module documentation.
        let r = catch_unwind(AssertUnwindSafe(|| {
            for i in 0..st.children.len() {
                st.start(i);
            }
            st.supervise();
        }));
        if let Err(payload) = r {
            st.stop_all();
            resume_unwind(payload);
        }
    }
}

/// A child of a running supervisor.
struct Child {
    spec: Spec,
    /// The running incarnation; None while not running.
    handle: Option<JoinHandle<()>>,
    /// A temporary child that ended or was stopped: never started again.
    removed: bool,
}

/// How a child ended, from its Signal.
enum End {
    Returned,
    Killed,
    Panicked(Payload),
}

/// A child's panic payload, dropped under `panic::contain`: a destructor of
/// the child's that panics must not take its supervisor down with it.
struct Payload(Pid, Option<Box<dyn Any + Send + 'static>>);

impl Payload {
    /// The payload (present until the drop).
    fn get(&self) -> &(dyn Any + Send) {
        self.1.as_deref().expect("a payload before its drop")
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if let Some(p) = self.1.take() {
            crate::panic::contain(self.0, "dropping the panic payload", move || drop(p));
        }
    }
}

fn pid_of(s: &Signal) -> Pid {
    match s {
        Signal::Exit(p) | Signal::Panic(p, _) => *p,
    }
}

/// A running supervisor's state. Dropping it stops every running child, in
/// reverse start order; that is what happens when the supervisor unwinds
/// (killed, or escalating).
struct State {
    strategy: Strategy,
    max_restarts: u32,
    within: Duration,
    /// In start order.
    children: Vec<Child>,
    /// The times of the restarts inside the intensity window, oldest first.
    restarts: VecDeque<Instant>,
    /// Signals received while waiting for a particular child's end, not yet
    /// handled.
    pending: VecDeque<Signal>,
    /// Cloned into every child (`spawn_under`); keeps `rx` connected.
    tx: Sender<Signal>,
    rx: Receiver<Signal>,
}

impl State {
    /// The supervision loop.
    fn supervise(&mut self) {
        while self.children.iter().any(|c| c.handle.is_some()) {
            let sig = match self.pending.pop_front() {
                Some(s) => s,
                None => match self.rx.recv() {
                    Ok(s) => s,
                    // Unreachable: `self.tx` keeps the channel connected.
                    Err(_) => return,
                },
            };
            self.handle_signal(sig);
        }
    }

    fn handle_signal(&mut self, sig: Signal) {
        let pid = pid_of(&sig);
        // The payload is held as a `Payload` from here on, whichever way
        // this returns.
        let end = match sig {
            Signal::Exit(_) => End::Returned,
            Signal::Panic(_, p) if p.is::<Killed>() => End::Killed,
            Signal::Panic(_, p) => End::Panicked(Payload(pid, Some(p))),
        };
        // A pid of no running child: one that was stopped on purpose.
        let Some(i) = self
            .children
            .iter()
            .position(|c| c.handle.as_ref().is_some_and(|h| h.pid() == pid))
        else {
            return;
        };
        if let Some(h) = self.children[i].handle.take() {
            // It has sent its Signal; this only waits for its last steps.
            let _ = h.join();
        }
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => matches!(end, End::Panicked(_)),
            Restart::Temporary => false,
        };
        if !restart {
            if self.children[i].spec.restart == Restart::Temporary {
                self.children[i].removed = true;
            }
            return;
        }
        if crate::scheduler::shutting_down() {
            // The runtime is being dropped: its kill reached this child
            // first and will reach us too. A restart would only start a
            // child that is killed at once (and count against the
            // intensity); end as killed now, stopping the others (`Drop`).
            std::panic::resume_unwind(Box::new(Killed));
        }
        if !self.note_restart() {
            self.escalate(i, &end);
        }
        let group = match self.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::OneForAll => 0..self.children.len(),
            Strategy::RestForOne => i..self.children.len(),
        };
        for j in group.clone().rev() {
            if self.children[j].handle.is_some() {
                self.stop(j);
                if self.children[j].spec.restart == Restart::Temporary {
                    self.children[j].removed = true;
                }
            }
        }
        for j in group {
            if !self.children[j].removed {
                self.start(j);
            }
        }
    }

    /// Records a restart now; false when that exceeds the intensity.
    fn note_restart(&mut self) -> bool {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.within)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.max_restarts as usize
    }

    /// Stops every child and panics: the end of `children[i]` was one
    /// restart too many.
    fn escalate(&mut self, i: usize, end: &End) -> ! {
        self.stop_all();
        let me = match crate::actor::current_name() {
            Some(n) => format!("supervisor \"{n}\""),
            None => "supervisor".to_string(),
        };
        let how = match end {
            End::Returned => "returned".to_string(),
            End::Killed => "was killed".to_string(),
            End::Panicked(p) => format!("panicked with {}", describe_payload(p.get())),
        };
        panic!(
            "{me}: restart intensity exceeded (more than {} restart(s) within {:?}): child \"{}\" {how}; all children stopped",
            self.max_restarts, self.within, self.children[i].spec.name
        );
    }

    fn start(&mut self, i: usize) {
        let c = &mut self.children[i];
        let f = c.spec.start.clone();
        c.handle = Some(
            Builder::new()
                .name(c.spec.name.clone())
                .spawn_under(self.tx.clone(), move || f()),
        );
    }

    /// Kills child `i` and waits for its end. Runs during unwinds too: must
    /// not panic.
    fn stop(&mut self, i: usize) {
        let Some(h) = &self.children[i].handle else {
            return;
        };
        let pid = h.pid();
        kill_handle(h);
        // The handle stays in place until the child's Signal is in: if this
        // wait is interrupted by our own kill, the guard waits again.
        self.wait_for(pid);
        if let Some(h) = self.children[i].handle.take() {
            let _ = h.join();
        }
    }

    /// Waits for the Signal of `pid`, keeping any other Signal for later.
    fn wait_for(&mut self, pid: Pid) {
        if let Some(k) = self.pending.iter().position(|s| pid_of(s) == pid) {
            self.pending.remove(k);
            return;
        }
        loop {
            match self.rx.recv() {
                Ok(s) if pid_of(&s) == pid => return,
                Ok(s) => self.pending.push_back(s),
                // Unreachable: `self.tx` keeps the channel connected.
                Err(_) => return,
            }
        }
    }

    /// Stops every running child, in reverse start order.
    fn stop_all(&mut self) {
        for i in (0..self.children.len()).rev() {
            self.stop(i);
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.stop_all();
    }
}
