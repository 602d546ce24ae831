//! The scheduler: scheduler threads, their run queues, switching, parking.
//!
//! # Vocabulary
//! - *runtime*: a set of scheduler threads sharing one [`Shared`];
//! - *worker*: one scheduler thread; its thread-local [`Local`] is "executed
//!   only by the owner thread", its [`WorkerShared`] is visible to the others;
//! - *actor*: a closure with its own stack and [`ActorCell`];
//! - *context*: an actor's stack or a worker's own OS-thread stack (the
//!   *scheduler context*).
//!
//! # Switching directly from actor to actor
//! When an actor yields, parks or exits, the code of [`switch_away`] runs on
//! that actor's stack, picks the next actor and switches straight to it: one
//! context switch per hand-off, not two. Only when nothing is runnable does
//! it switch to the scheduler context, which parks the thread.
//!
//! The actor being left cannot be made runnable (or have its stack recycled)
//! before its registers are saved, or another thread could resume it while it
//! is still running. So the *post-switch action* (requeue, mark parked, or
//! recycle) is recorded in `Local::post` and performed by whichever context
//! runs next, as its very first act ([`finish_switch`]): the resumed actor
//! (when its `switch` call returns), a fresh actor (first thing in
//! [`actor_entry`]), or the scheduler context (in its loop). This is the
//! "finish task switch" of operating-system kernels.
//!
//! # Which code runs on which stack
//! - scheduler loop, thread parking, shutdown: the worker's OS stack;
//! - `switch_away`, `finish_switch`, picking the next actor, stealing, firing
//!   timers: whichever stack is current (actor stacks included; all of it is
//!   small and never recursive);
//! - the panic hook's heavy work: the worker's OS stack, below its saved
//!   stack pointer (see `panic.rs`).
//!
//! # Thread-locals across switches
//! An actor may resume on another OS thread. The compiler may keep the
//! address of a thread-local in a register across a call, so runtime code
//! never uses a thread-local it read before a switch after that switch:
//! every post-switch path re-reads it in a separate `#[inline(never)]`
//! function ([`finish_switch`], [`local`]).
//!
//! # Fairness
//! - yield pushes to the back of the local queue;
//! - spawned and woken actors go to the LIFO slot (message-passing locality),
//!   but at most [`LIFO_MAX`] hand-offs in a row run from it;
//! - every `global_interval` ticks the injector is checked first and due
//!   timers are fired; the interval adapts (between [`MIN_GLOBAL_INTERVAL`]
//!   and [`MAX_GLOBAL_INTERVAL`]) so that the check happens about every
//!   [`GLOBAL_CHECK_CYCLES`], whether actors run for nanoseconds or for
//!   tens of microseconds between switches (tokio adapts its interval the
//!   same way);
//! - actors preempted inside the allocator stay on their thread (the pinned
//!   list) and alternate with the local queue.
//!
//! # Idle workers
//! A worker with nothing to run registers in the idle set, re-checks every
//! queue and timer (so a concurrent push is never missed: both sides issue a
//! SeqCst fence between their write and their read), then sleeps on its
//! futex until woken or until the earliest timer deadline of the whole
//! runtime. Whoever makes work available where another worker could take it
//! wakes one idle worker unless one is already searching for work.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::arch;
use crate::cell::{
    self, ActorCell, ActorRef, ACTIVE, DONE, JOIN_WAITING, KILL, NOTIFIED, PARKED, ST_MASK,
};
use crate::parker::Parker;
use crate::preempt;
use crate::runqueue::{Injector, LocalQueue, SendTask};
use crate::stack;
use crate::steal::Watch;
use crate::timer::{NextDeadline, TimerHeap, NEVER};

/// Consecutive hand-offs served from the LIFO slot before the queue is served.
const LIFO_MAX: u32 = 32;
/// Bounds of the adaptive interval (in ticks) between injector checks.
const MAX_GLOBAL_INTERVAL: u32 = 61;
const MIN_GLOBAL_INTERVAL: u32 = 2;
/// The injector and the timers are checked about this often (TSC cycles,
/// ~100 µs).
const GLOBAL_CHECK_CYCLES: u64 = 250_000;
/// How long (TSC cycles, ~30-50 µs) a worker that ran out of work keeps
/// looking before it sleeps. Waking a sleeping thread costs a system call
/// and, on virtual machines, tens of microseconds of wake-up latency; a
/// short spin catches the next hand-off (the next `block_on`, a reply from
/// another thread) without either.
const SPIN_CYCLES: u64 = 100_000;
/// Ready descriptors in one `epoll_wait` from which the driver wakes another
/// idle worker to share the batch. Measured on the HTTP keep-alive bench (2
/// cores, 100 connections): waking for every batch of 2 or more cost 15-25%
/// of the throughput, waking never and waking from 16 were equal.
const IO_SHARE_BATCH: usize = 16;
/// An idle worker sleeps at most this long before trimming the stack pool.
const TRIM_AFTER: Duration = Duration::from_millis(500);

type Task = *const ActorCell;

/// The resolved settings of one runtime.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub threads: usize,
    pub stack_size: usize,
    pub alloc_interval: u32,
    pub timeslice_cycles: u64,
}

/// What a worker shares with the others.
pub(crate) struct WorkerShared {
    pub queue: LocalQueue,
    pub parker: Parker,
    pub timers: Mutex<TimerHeap>,
    pub next_deadline: NextDeadline,
    /// When this worker, asleep, will wake by itself (NEVER = not before
    /// being woken; 0 = not asleep).
    pub parked_until: AtomicU64,
    /// Pinned actors woken by other threads, for this worker to run (see
    /// "Unwinding actors" in LOOM.md), and their number.
    pub inbox: Mutex<Vec<SendTask>>,
    pub inbox_len: AtomicUsize,
    /// Actors this worker spawned / finished (owner-written counters).
    pub spawned: AtomicU64,
    pub exited: AtomicU64,
    /// This worker's tick count, one per pick of the next actor
    /// (owner-written): thieves read it to tell a worker held by one long
    /// actor from one cycling through short ones (see steal.rs).
    pub switches: AtomicU32,
}

/// State shared by every worker of a runtime and its handles.
pub(crate) struct Shared {
    pub settings: Settings,
    /// The machine has more CPUs than this runtime has workers: a thread
    /// waiting in `block_on` may spin on the spare one (see `JoinHandle::join`).
    pub spare_core: bool,
    pub stack_class: u8,
    pub workers: Box<[WorkerShared]>,
    pub injector: Injector,
    /// Sleeping workers (their indices).
    idle: Mutex<Vec<usize>>,
    num_idle: AtomicUsize,
    num_searching: AtomicUsize,
    /// Sleeping workers woken so far (`Runtime::block_on` compares it
    /// around its spawn to learn whether the spawn woke one).
    idle_wakes: AtomicU64,
    pub shutdown: AtomicBool,
    /// Actors spawned from outside the runtime's threads.
    ext_spawned: AtomicU64,
    /// Workers that have left their loop, and a condvar to wait for it.
    exited_workers: Mutex<usize>,
    exited_cv: Condvar,
    pub epoch: Instant,
    /// The runtime's epoll reactor (see io/reactor.rs).
    pub(crate) reactor: Arc<crate::io::reactor::Reactor>,
}

// SAFETY: the raw pointers inside (queues, heaps) are to cells, which are
// Sync; every field is atomic or behind a lock.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

/// The CPUs this process may run on (`available_parallelism`: its affinity
/// mask and cgroup quota), read once: later changes of the mask are not seen.
pub(crate) fn cpus() -> usize {
    static CPUS: AtomicUsize = AtomicUsize::new(0);
    match CPUS.load(Ordering::Relaxed) {
        0 => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            CPUS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> std::io::Result<Arc<Shared>> {
        crate::unwind::init();
        let stack_class = stack::class_for(settings.stack_size)?;
        let workers = (0..settings.threads)
            .map(|_| WorkerShared {
                queue: LocalQueue::new(settings.threads > 1),
                parker: Parker::new(),
                timers: Mutex::new(TimerHeap::new()),
                next_deadline: NextDeadline::new(),
                parked_until: AtomicU64::new(0),
                inbox: Mutex::new(Vec::new()),
                inbox_len: AtomicUsize::new(0),
                spawned: AtomicU64::new(0),
                exited: AtomicU64::new(0),
                switches: AtomicU32::new(0),
            })
            .collect();
        Ok(Arc::new(Shared {
            spare_core: settings.threads < cpus(),
            settings,
            stack_class,
            workers,
            injector: Injector::new(),
            idle: Mutex::new(Vec::new()),
            num_idle: AtomicUsize::new(0),
            num_searching: AtomicUsize::new(0),
            idle_wakes: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            ext_spawned: AtomicU64::new(0),
            exited_workers: Mutex::new(0),
            exited_cv: Condvar::new(),
            epoch: Instant::now(),
            reactor: Arc::new(crate::io::reactor::Reactor::new()?),
        }))
    }

    /// Nanoseconds since the runtime's epoch.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The runtime clock's value for `t` (saturating at 0).
    pub(crate) fn clock_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(NEVER as u128 - 1) as u64
    }

    /// Actors spawned and not yet finished.
    pub(crate) fn live(&self) -> u64 {
        // Exits first: every exit counted here had its spawn counted before,
        // so the difference never underflows.
        let exited: u64 = self
            .workers
            .iter()
            .map(|w| w.exited.load(Ordering::Acquire))
            .sum();
        let spawned: u64 = self
            .workers
            .iter()
            .map(|w| w.spawned.load(Ordering::Acquire))
            .sum::<u64>()
            + self.ext_spawned.load(Ordering::Acquire);
        spawned.saturating_sub(exited)
    }

    /// Wakes one sleeping worker, unless one is already searching for work.
    #[inline]
    pub(crate) fn notify_one(&self) {
        // SeqCst fence: orders our queue push before the loads below; pairs
        // with the fence a worker issues between joining the idle set and
        // re-checking the queues (`idle`).
        fence(Ordering::SeqCst);
        if self.num_searching.load(Ordering::Relaxed) != 0
            || self.num_idle.load(Ordering::Relaxed) == 0
        {
            return;
        }
        self.wake_one_idle();
    }

    #[cold]
    fn wake_one_idle(&self) {
        let _np = preempt::disable();
        let mut idle = crate::global_lock::lock(&self.idle);
        if let Some(i) = idle.pop() {
            self.num_idle.store(idle.len(), Ordering::Relaxed);
            // The woken worker starts out searching (counted for it here).
            self.num_searching.fetch_add(1, Ordering::SeqCst);
            self.idle_wakes.fetch_add(1, Ordering::Relaxed);
            drop(idle);
            self.unpark_worker(i);
        }
    }

    /// How many sleeping workers have been woken so far.
    pub(crate) fn idle_wakes(&self) -> u64 {
        self.idle_wakes.load(Ordering::Relaxed)
    }

    /// Wakes worker `i` from its futex or, if it is the IO driver blocked in
    /// `epoll_wait`, through the reactor's eventfd. The token goes first:
    /// a driver that announced itself too late for `unpark_driver` to see
    /// consumes it in its re-check (`Parker::take_token`) instead.
    #[inline]
    pub(crate) fn unpark_worker(&self, i: usize) {
        self.workers[i].parker.unpark();
        self.reactor.unpark_driver(i);
    }

    /// Wakes every worker (shutdown).
    pub(crate) fn wake_all(&self) {
        for i in 0..self.workers.len() {
            self.unpark_worker(i);
        }
    }

    /// True if worker `me` must not go to sleep: there may be work for it, or
    /// the runtime is shutting down and empty (it should leave its loop).
    fn must_stay_awake(&self, me: usize, now: u64) -> bool {
        self.has_work(me, now) || self.shutdown.load(Ordering::Acquire) && self.live() == 0
    }

    /// True if worker `me` could find something to do.
    fn has_work(&self, me: usize, now: u64) -> bool {
        !self.injector.is_empty()
            || self.workers[me].inbox_len.load(Ordering::Acquire) != 0
            || self
                .workers
                .iter()
                .any(|w| !w.queue.is_empty() || w.next_deadline.get() <= now)
    }

    /// The IO driver's last look before `epoll_wait`, made after it has
    /// announced itself as blocked: None if worker `me` must not sleep,
    /// else how long it may (`timeout` capped at the earliest deadline).
    fn driver_recheck(&self, me: usize, timeout: Option<Duration>) -> Option<Option<Duration>> {
        let now = self.now();
        // An `unpark` that came before we announced ourselves as the blocked
        // driver went to the futex token only: `epoll_wait` would sleep
        // through it, with this worker already taken out of the idle set and
        // counted as searching, so no later push would wake anyone until the
        // timeout.
        if self.workers[me].parker.take_token() || self.must_stay_awake(me, now) {
            return None;
        }
        let d = Duration::from_nanos(self.earliest_deadline().saturating_sub(now));
        Some(timeout.map(|t| t.min(d)))
    }

    fn earliest_deadline(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.next_deadline.get())
            .min()
            .unwrap_or(NEVER)
    }

    /// Pushes a runnable actor from a thread that is not one of ours.
    pub(crate) fn inject(&self, t: Task) {
        self.inject_all(std::iter::once(t));
    }

    /// Pushes runnable actors to the back of the injector (one lock) and
    /// wakes an idle worker for them.
    pub(crate) fn inject_all(&self, ts: impl Iterator<Item = Task>) {
        self.injector.push_batch(ts);
        self.notify_one();
    }
}

/// A worker's private state. Executed only by the owner thread.
pub(crate) struct Local {
    pub shared: *const Shared,
    pub index: usize,
    /// `&shared.workers[index]`, kept so that the hot paths reach this
    /// worker's shared half with one load (no bounds check, no multiply).
    me: *const WorkerShared,
    /// The actor running on this thread; null in the scheduler context.
    pub current: Task,
    /// Saved stack pointer of the scheduler context.
    sched_sp: *mut u8,
    /// The post-switch action for the context that was just left.
    post: Post,
    lifo: Task,
    lifo_streak: u32,
    tick: u32,
    /// Ticks left before the next injector and timer check.
    global_countdown: u32,
    /// The current interval between those checks, and when the last began.
    global_interval: u32,
    global_tsc: u64,
    rng: u32,
    /// Per other worker: the backlog this one watches before stealing it.
    watch: Box<[Watch]>,
    /// The last look for work left a backlog watched, not stolen: keep
    /// searching rather than sleep.
    watching: bool,
    searching: bool,
    /// Set from the moment an actor starts switching away until the next
    /// context has finished the post-switch action: no preemption then.
    switching: bool,
    /// Actors preempted in the allocator: they stay on this thread.
    pinned_head: Task,
    pinned_tail: Task,
    /// Set while this worker dispatches IO events: the actors they wake
    /// are queued here without waking other workers for each of them (the
    /// driver decides once per batch; see `idle`).
    dispatching: bool,
    /// Counters mirrored into `WorkerShared` (owner-written).
    spawned: u64,
    exited: u64,
    /// Times the scheduler context took control back from an actor (what
    /// the test of the exit-to-joiner hand-off reads).
    sched_entries: u64,
}

#[derive(Clone, Copy)]
enum Post {
    None,
    Yield(Task),
    Park(Task),
    Exit(Task),
}

/// Why the running actor switches away; decides the post-switch action and
/// how the next actor is looked for (`switch_away`).
#[derive(Clone, Copy, PartialEq)]
enum Leave {
    /// It stays runnable: nothing else to run here means it just goes on,
    /// and no other worker is searched (except at the periodic check).
    Yield,
    /// It waits to be woken.
    Park,
    /// It has finished: its waiting joiner may be the next to run.
    Exit,
}

thread_local! {
    static LOCAL: Cell<*mut Local> = const { Cell::new(ptr::null_mut()) };
    /// The runtime whose `block_on` this thread is in (for `spawn`).
    static ENTERED: Cell<*const Shared> = const { Cell::new(ptr::null()) };
}

/// This thread's worker state, if it is a scheduler thread. Re-read after
/// every switch (never cache it across one).
#[inline(never)]
pub(crate) fn local() -> *mut Local {
    LOCAL.with(|l| l.get())
}

/// True on a scheduler thread of the runtime `sh` (in one of its actors or
/// in its scheduler context).
pub(crate) fn on_thread_of(sh: &Arc<Shared>) -> bool {
    let l = local();
    // SAFETY: a non-null LOCAL is this thread's live worker state.
    !l.is_null() && ptr::eq(unsafe { (*l).shared }, Arc::as_ptr(sh))
}

/// Same as [`local`]: every read of the worker thread-local goes through a
/// call that the compiler cannot merge with one made before a switch.
#[inline(always)]
fn local_fast() -> *mut Local {
    local()
}

impl Local {
    #[inline]
    fn shared(&self) -> &'static Shared {
        // SAFETY: a worker's Shared outlives its loop and every actor that
        // runs on it (the thread holds an Arc until it leaves the loop).
        unsafe { &*self.shared }
    }

    #[inline]
    fn me(&self) -> &'static WorkerShared {
        // SAFETY: `me` points into the worker table of `shared`, which lives
        // as long as `shared()` says and is never resized.
        unsafe { &*self.me }
    }

    fn next_rand(&mut self) -> u32 {
        // xorshift32
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    /// Makes `t` runnable on this worker. `lifo`: run it next (spawn, wake).
    #[inline]
    fn schedule(&mut self, t: Task, lifo: bool) {
        let sh = self.shared();
        let pushed = if lifo {
            let prev = std::mem::replace(&mut self.lifo, t);
            if prev.is_null() {
                false
            } else {
                self.me().queue.push(prev, &sh.injector);
                true
            }
        } else {
            self.me().queue.push(t, &sh.injector);
            true
        };
        if pushed && !self.dispatching && sh.workers.len() > 1 {
            sh.notify_one();
        }
    }

    /// Puts a suspended actor back to run later: on the pinned list if it
    /// must stay on this thread, else at the back of the local queue.
    #[inline]
    fn requeue(&mut self, t: Task) {
        // SAFETY: `t` is a live cell (its own reference) that was just
        // switched away from on this thread.
        if unsafe { (*t).pinned.get() } {
            self.push_pinned(t);
        } else {
            self.schedule(t, false);
        }
    }

    fn push_pinned(&mut self, t: Task) {
        // SAFETY: `t` is a live cell owned by this worker while pinned.
        unsafe { (*t).next.store(ptr::null_mut(), Ordering::Relaxed) };
        if self.pinned_tail.is_null() {
            self.pinned_head = t;
        } else {
            // SAFETY: as above.
            unsafe {
                (*self.pinned_tail)
                    .next
                    .store(t as *mut _, Ordering::Relaxed)
            };
        }
        self.pinned_tail = t;
    }

    fn pop_pinned(&mut self) -> Option<Task> {
        if self.me().inbox_len.load(Ordering::Acquire) != 0 {
            self.drain_inbox();
        }
        let t = self.pinned_head;
        if t.is_null() {
            return None;
        }
        // SAFETY: as in push_pinned.
        self.pinned_head = unsafe { (*t).next.load(Ordering::Relaxed) };
        if self.pinned_head.is_null() {
            self.pinned_tail = ptr::null();
        }
        Some(t)
    }

    /// Moves pinned actors woken by other threads to the pinned list.
    #[cold]
    fn drain_inbox(&mut self) {
        let w = self.me();
        let woken: Vec<SendTask> = {
            let _np = preempt::disable();
            let mut inbox = w.inbox.lock().unwrap_or_else(|e| e.into_inner());
            w.inbox_len.store(0, Ordering::Release);
            std::mem::take(&mut *inbox)
        };
        for t in woken {
            self.push_pinned(t.0);
        }
    }

    /// Picks the next actor to run, or None.
    /// `remote`: also look beyond this worker (injector, timers, other
    /// workers' queues) when nothing is runnable here. A yield passes false:
    /// a lonely yielding actor just continues, and looks further only at the
    /// periodic global check.
    /// `exiting`: the finishing actor that is switching away for the last
    /// time; when nothing else is runnable here, its joiner may run next
    /// ([`claim_joiner`]) before anything is looked for beyond this worker.
    #[inline(always)]
    fn find_next(&mut self, remote: bool, exiting: Option<&ActorCell>) -> Option<Task> {
        self.tick = self.tick.wrapping_add(1);
        let sh = self.shared();
        self.me().switches.store(self.tick, Ordering::Relaxed);
        self.global_countdown -= 1;
        let global = self.global_countdown == 0;
        if global {
            if let Some(t) = self.global_check() {
                return Some(t);
            }
        }
        if !self.lifo.is_null() {
            if self.lifo_streak < LIFO_MAX {
                self.lifo_streak += 1;
                return Some(std::mem::replace(&mut self.lifo, ptr::null()));
            }
            let l = std::mem::replace(&mut self.lifo, ptr::null());
            self.me().queue.push(l, &sh.injector);
        }
        self.lifo_streak = 0;
        if self.tick & 1 == 1 {
            if let Some(t) = self.pop_pinned() {
                return Some(t);
            }
        }
        if let Some(t) = self.me().queue.pop() {
            return Some(t);
        }
        if let Some(t) = self.pop_pinned() {
            return Some(t);
        }
        if let Some(t) = exiting.and_then(|c| claim_joiner(sh, c)) {
            return Some(t);
        }
        if remote || global {
            self.find_remote()
        } else {
            None
        }
    }

    /// The periodic check of `find_next` (see "Fairness" in LOOM.md): due
    /// timers, the reactor when no idle worker drives it, and the injector,
    /// whose first actor it returns to run before anything local.
    #[cold]
    #[inline(never)]
    fn global_check(&mut self) -> Option<Task> {
        let sh = self.shared();
        self.adapt_global_interval();
        self.fire_own_timers();
        // Busy workers poll the reactor when no idle worker drives it.
        self.dispatching = true;
        sh.reactor.poll_busy();
        self.dispatching = false;
        let t = self.pop_injector()?;
        if !self.lifo.is_null() {
            let l = std::mem::replace(&mut self.lifo, ptr::null());
            self.me().queue.push(l, &sh.injector);
        }
        Some(t)
    }

    /// Re-arms the injector check so that it comes about every
    /// [`GLOBAL_CHECK_CYCLES`], from the mean tick length since the last one.
    #[cold]
    fn adapt_global_interval(&mut self) {
        let now = preempt::rdtsc();
        let per_tick = (now.wrapping_sub(self.global_tsc) / self.global_interval as u64).max(1);
        let want = (GLOBAL_CHECK_CYCLES / per_tick)
            .clamp(MIN_GLOBAL_INTERVAL as u64, MAX_GLOBAL_INTERVAL as u64)
            as u32;
        // Move halfway, so one odd interval does not swing it.
        self.global_interval = ((self.global_interval + want) / 2).max(MIN_GLOBAL_INTERVAL);
        self.global_countdown = self.global_interval;
        self.global_tsc = now;
    }

    /// Takes a fair share of the injector's backlog (as tokio), at most half
    /// a local queue: returns one actor and queues the rest locally.
    #[inline]
    fn pop_injector(&self) -> Option<Task> {
        let sh = self.shared();
        let batch = (sh.injector.len() / sh.workers.len() + 1).min(crate::runqueue::LOCAL_CAP / 2);
        sh.injector.pop_batch(batch, Some(&self.me().queue))
    }

    /// The slow part of `find_next`: injector, timers, stealing.
    #[cold]
    fn find_remote(&mut self) -> Option<Task> {
        if let Some(t) = self.pop_injector() {
            return Some(t);
        }
        if self.fire_own_timers() {
            if let Some(t) = std::mem::replace(&mut self.lifo, ptr::null()).into_option() {
                return Some(t);
            }
            if let Some(t) = self.me().queue.pop() {
                return Some(t);
            }
        }
        self.steal()
    }

    fn steal(&mut self) -> Option<Task> {
        self.watching = false;
        let n = self.shared().workers.len();
        if n == 1 {
            return None;
        }
        if !self.searching {
            // At most half of the workers search at once (as Go and tokio).
            let sh = self.shared();
            if 2 * sh.num_searching.load(Ordering::SeqCst) >= n {
                return None;
            }
            sh.num_searching.fetch_add(1, Ordering::SeqCst);
            self.searching = true;
        }
        let start = self.next_rand() as usize % n;
        let now = preempt::rdtsc();
        // A thief watches before it steals (steal.rs) only where it may
        // spin while it watches: not on a runtime doing IO ("Idle workers").
        let patient = self.shared().reactor.registrations() == 0;
        for k in 0..n {
            let i = (start + k) % n;
            if i == self.index {
                continue;
            }
            let sh = self.shared();
            let victim = &sh.workers[i];
            let (head, tail) = victim.queue.bounds();
            let switches = victim.switches.load(Ordering::Relaxed);
            if patient && !self.watch[i].worth_stealing(head, tail, switches, now) {
                self.watching |= head != tail;
                continue;
            }
            if let Some(t) = victim.queue.steal_into(&sh.workers[self.index].queue) {
                return Some(t);
            }
        }
        self.pop_injector()
    }

    /// Called when this worker found work: it stops searching, and if it was
    /// the last searcher it wakes another worker so that remaining work is
    /// not left unattended.
    #[inline]
    fn found_work(&mut self) {
        if self.searching {
            self.searching = false;
            let sh = self.shared();
            if sh.num_searching.fetch_sub(1, Ordering::SeqCst) == 1 {
                sh.notify_one();
            }
        }
    }

    /// Fires this worker's due timers. True if any fired.
    fn fire_own_timers(&mut self) -> bool {
        let sh = self.shared();
        let w = self.me();
        if w.next_deadline.get() == NEVER {
            return false;
        }
        let now = sh.now();
        if w.next_deadline.get() > now {
            return false;
        }
        fire_timers(sh, self.index, now) > 0
    }
}

trait IntoOption {
    fn into_option(self) -> Option<Task>;
}
impl IntoOption for Task {
    fn into_option(self) -> Option<Task> {
        (!self.is_null()).then_some(self)
    }
}

/// Timers taken out of a heap per lock hold in `fire_timers`.
const FIRE_BATCH: usize = 32;

/// Fires the due timers of worker `wi`'s heap: the actors are unparked in
/// deadline order, in batches of up to [`FIRE_BATCH`] taken under the heap's
/// lock (a fixed array: firing allocates nothing). Returns how many fired.
///
/// Where a woken actor queues: first come, first served. Normally at the
/// back of the calling thread's local queue (when it is a worker of this
/// runtime; not the LIFO slot, which would run the last one fired first).
/// But when the injector holds actors, those were runnable before these
/// deadlines passed, and a local queue runs ahead of the injector (which a
/// worker visits only at its periodic check or when it runs dry): the woken
/// go to the back of the injector then, one lock per batch, behind that
/// backlog. Measured on 10,000 actors spawned at once by one actor, each
/// sleeping 1-10 ms on one worker: 2,000-2,600 of the early sleepers woke
/// and finished before the last of the 10,000 first ran, each one delaying
/// it; with this order, none.
pub(crate) fn fire_timers(sh: &Shared, wi: usize, now: u64) -> usize {
    let _np = preempt::disable();
    let w = &sh.workers[wi];
    let mut n = 0;
    loop {
        let mut batch = [ptr::null::<ActorCell>(); FIRE_BATCH];
        let mut k = 0;
        {
            let mut heap = w.timers.lock().unwrap_or_else(|e| e.into_inner());
            while k < FIRE_BATCH {
                let Some(c) = heap.pop_due(now) else { break };
                batch[k] = c;
                k += 1;
            }
            w.next_deadline.set(heap.peek());
        }
        let behind_backlog = !sh.injector.is_empty();
        // The actors for the injector are gathered at the front of `batch`
        // (m <= i: each entry is read before its slot is reused).
        let mut m = 0;
        for i in 0..k {
            let c = batch[i];
            // SAFETY: the heap held a reference on `c`; it is ours now (and
            // released at the end of this iteration: a woken actor's own
            // reference keeps its cell live while it is queued).
            let r = ActorRef::from_owned(unsafe { &*c });
            if !claim_wake(r.0) {
                continue;
            }
            // After the claim's Acquire: `pinned` as the actor left it.
            if behind_backlog && !r.0.pinned.get() {
                batch[m] = c;
                m += 1;
            } else {
                wake_queued(sh, r.0, false);
            }
        }
        if m > 0 {
            sh.inject_all(batch[..m].iter().copied());
        }
        n += k;
        if k < FIRE_BATCH {
            return n;
        }
    }
}

// ---------------------------------------------------------------------------
// Switching
// ---------------------------------------------------------------------------

/// Prepares `t` to run on this worker: marks it running and returns the
/// stack pointer to switch to, or None if no stack could be had for its
/// first run (then it has been finished here, as a panic). An actor killed
/// before it ran still gets its stack: it finishes there (`actor_entry`),
/// where reporting its end to a supervisor may block.
#[inline(always)]
fn prepare(l: &mut Local, t: Task) -> Option<*mut u8> {
    // SAFETY: a queued cell is live (the actor's own reference).
    let c = unsafe { &*t };
    // Queued and running are the same state (ACTIVE): nothing to publish.
    let s = c.state.load(Ordering::Acquire);
    debug_assert_eq!(s & ST_MASK, ACTIVE);
    // SAFETY: only the thread switching the actor in touches `sp`.
    let sp = unsafe { *c.sp.get() };
    if !sp.is_null() {
        return Some(sp);
    }
    prepare_first_run(l, c)
}

/// [`prepare`] for an actor that has not run yet: it gets a stack, with
/// the initial frame that enters `actor_entry`.
#[inline(never)]
fn prepare_first_run(l: &mut Local, c: &'static ActorCell) -> Option<*mut u8> {
    let t: Task = c;
    match stack::alloc(c.stack_class.get()) {
        Ok(st) => {
            let top = st.top();
            // SAFETY: the stack is fresh and ours; top is aligned; the entry
            // never returns or unwinds.
            let sp = unsafe { arch::init_stack(top, actor_entry, t as usize) };
            // SAFETY: the actor is not running yet; we own these fields.
            unsafe { *c.stack.get() = Some(st) };
            Some(sp)
        }
        Err(e) => {
            no_stack(l, c, e);
            None
        }
    }
}

/// Finishes an actor that could not get a stack for its first run, as a
/// panic that says why. Out of line: its message formatting would otherwise
/// enlarge `prepare`'s frame, which every switch builds on the stack of the
/// actor leaving.
#[cold]
#[inline(never)]
fn no_stack(l: &mut Local, c: &'static ActorCell, e: std::io::Error) {
    let msg = format!(
        "smarm: could not allocate a stack for actor {}: {e}",
        c.pid()
    );
    finish_unstarted(l, c, Box::new(msg));
}

/// Finishes an actor that never ran, in the scheduler context: its closure
/// is dropped and its outcome is `payload` (a panic). Its supervisor is told
/// without blocking this thread (`actor::report_exit_from_scheduler`).
fn finish_unstarted(l: &mut Local, c: &'static ActorCell, payload: Box<dyn std::any::Any + Send>) {
    crate::actor::drop_unrun(c, payload);
    crate::actor::report_exit_from_scheduler(c);
    finalize(l, c);
}

/// Switches away from the current actor, which then yields, parks or exits
/// (`how`): the matching post-switch action is performed by whoever runs
/// next. Runs on the actor's stack. `lp` is this thread's [`local`], read
/// by the caller with no switch since (a yield reads it once for the whole
/// path: three reads cost about 9 of a yield's 240 instructions).
#[inline(never)]
fn switch_away(lp: *mut Local, how: Leave) {
    // SAFETY: in an actor, LOCAL is this worker's live state (read on this
    // thread, by the contract); no other reference to it is active during
    // this call.
    let l = unsafe { &mut *lp };
    let me = l.current;
    // SAFETY: `me` is the running actor's live cell.
    unsafe { (*me).no_preempt.set(preempt::save_count()) };
    let mut next = None;
    // Picking and preparing may allocate: no preemption from here until the
    // next context has run `finish_switch` (a flag of this worker, not a
    // no-preempt guard, because it spans the switch).
    l.switching = true;
    let yielding = how == Leave::Yield;
    // SAFETY: `me` is the running actor's live cell.
    let exiting = (how == Leave::Exit).then(|| unsafe { &*me });
    while let Some(t) = l.find_next(!yielding, exiting) {
        if let Some(sp) = prepare(l, t) {
            next = Some((t, sp));
            break;
        }
    }
    if next.is_none() && yielding {
        // Nothing else to run here: a yield just goes on (no switch).
        l.switching = false;
        // SAFETY: `me` is the running actor's live cell.
        preempt::enter_actor(unsafe { (*me).no_preempt.get() });
        return;
    }
    // SAFETY: `me` is the running actor: its `sp` slot is ours to write.
    let save = unsafe { (*me).sp.get() };
    l.post = match how {
        Leave::Yield => Post::Yield(me),
        Leave::Park => Post::Park(me),
        Leave::Exit => Post::Exit(me),
    };
    let to = match next {
        Some((t, sp)) => {
            l.found_work();
            l.current = t;
            sp
        }
        None => {
            l.current = ptr::null();
            l.sched_sp
        }
    };
    // One call site for every actor-to-actor switch: the resumed actor was
    // suspended by this very call, so the `ret` that ends the switch is
    // predicted (see the essay in asm/x86_64.s).
    // SAFETY: `to` is the saved context of the actor this thread just
    // popped from a queue (so no other thread resumes it), or of the
    // scheduler context, suspended in `run_actor`. Our own stack stays valid
    // until we are resumed: the post action makes us resumable only after
    // the switch has saved us.
    unsafe { arch::switch(save, to, 0) };
    // A call, never inlined: the post-switch action reaches thread-locals
    // (the preemption state, the stack cache), and this actor may have
    // resumed on another thread; inlined, their addresses could be the ones
    // computed before the switch, on the thread we left (see "Thread-locals
    // across switches" in LOOM.md; tests/preempt.rs's two-thread
    // thread-local test failed with it inlined).
    finish_switch();
}

/// Performs the post-switch action left by the previous context. Called
/// first thing by every context that was just switched to.
#[inline(never)]
pub(crate) fn finish_switch() {
    let lp = local();
    // SAFETY: we are on a worker thread (only workers switch).
    let l = unsafe { &mut *lp };
    let post = std::mem::replace(&mut l.post, Post::None);
    match post {
        Post::None => {}
        Post::Yield(t) => l.requeue(t),
        Post::Park(t) => {
            // SAFETY: `t` is live (its own reference) and now suspended.
            let c = unsafe { &*t };
            let mut s = c.state.load(Ordering::Relaxed);
            loop {
                let (new, requeue) = if s & NOTIFIED != 0 {
                    (s & !NOTIFIED, true)
                } else {
                    (s - ACTIVE + PARKED, false)
                };
                // Release: the actor's saved context (written by the switch)
                // is visible to whoever resumes it after seeing PARKED.
                match c
                    .state
                    .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => {
                        if requeue {
                            l.requeue(t);
                        }
                        break;
                    }
                    Err(x) => s = x,
                }
            }
        }
        Post::Exit(t) => {
            // SAFETY: as above; the actor will never run again.
            let c = unsafe { &*t };
            // SAFETY: the actor's stack is no longer in use.
            if let Some(st) = unsafe { (*c.stack.get()).take() } {
                stack::free(st);
            }
            finalize(l, c);
        }
    }
    l.switching = false;
    if l.current.is_null() {
        preempt::leave_actor();
    } else {
        // SAFETY: the current actor's cell is live while it runs.
        preempt::enter_actor(unsafe { (*l.current).no_preempt.get() });
    }
}

/// The joiner of the finished actor `c`, claimed to run next on this worker
/// instead of being woken by `finalize` after the switch: `c` is switching
/// away for the last time and nothing else is runnable here, so the wake-up
/// would only make the joiner the next actor by way of the scheduler
/// context (a switch there, an empty search of the injector, the timers and
/// the other workers, and a switch back). Returns it only when it is an
/// actor of this runtime, parked (not pinned to another thread) and the
/// claim `PARKED -> ACTIVE` succeeded: it is then ours to run, exactly as if
/// an unpark had queued it here, and `c`'s joiner slot is emptied so that
/// `finalize` does not wake it a second time. When the claim fails (a kill
/// or another wake-up came first), `finalize` wakes it as usual.
///
/// The joiner resumes in `park` after the switch, whose post action first
/// finalizes `c` (DONE): its join loop then finds `c` finished.
fn claim_joiner(sh: &Shared, c: &ActorCell) -> Option<Task> {
    if c.state.load(Ordering::Acquire) & JOIN_WAITING == 0 {
        return None;
    }
    // SAFETY: JOIN_WAITING was set (Release, read above with Acquire) after
    // the joiner wrote the slot; from then on only the finishing side
    // touches it, and that is `c`, which is running this.
    let slot = unsafe { &mut *c.joiner.get() };
    let j = slot.as_ref()?.actor()?;
    if !ptr::eq(j.runtime.get(), sh) {
        return None;
    }
    // Acquire: what the joiner's thread wrote before publishing PARKED (its
    // saved context, its `pinned` flag) is visible; while it stays PARKED
    // no one writes them, and the CAS below fails if it did not stay so.
    let s = j.state.load(Ordering::Acquire);
    if s & (ST_MASK | NOTIFIED) != PARKED || j.pinned.get() {
        return None;
    }
    j.state
        .compare_exchange(s, s - PARKED + ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    // Its waker's reference: never the last (the joiner's own one is held
    // until it finishes).
    drop(slot.take());
    Some(j)
}

/// Marks a finished actor DONE, wakes its joiner and drops its own reference.
fn finalize(l: &mut Local, c: &'static ActorCell) {
    let mut s = c.state.load(Ordering::Relaxed);
    loop {
        let new = (s & !ST_MASK) | DONE;
        // Release: the outcome is visible to a joiner that sees DONE.
        match c
            .state
            .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(x) => s = x,
        }
    }
    if s & JOIN_WAITING != 0 {
        // SAFETY: the joiner wrote `joiner` before setting JOIN_WAITING
        // (Release; our AcqRel CAS read it) and never touches it again.
        if let Some(j) = unsafe { (*c.joiner.get()).take() } {
            // Finalizing in the scheduler context, the joiner takes the LIFO
            // slot and runs next. In the context of the actor that runs
            // next, "next" would mean after that actor, and the LIFO slot is
            // the one place no other worker can take it from: behind an
            // actor that does not yield (no allocation, no `check!()`), the
            // joiner would wait for as long as it runs. The queue is open
            // to thieves.
            j.unpark_owned_as(l.current.is_null());
        }
    }
    l.exited += 1;
    l.me().exited.store(l.exited, Ordering::Release);
    // SAFETY: the actor's own reference.
    unsafe { c.release() };
}

/// Entry of every actor (called by the trampoline on its fresh stack).
unsafe extern "C" fn actor_entry(arg: usize) -> ! {
    finish_switch();
    // SAFETY: `arg` is the cell pointer given to init_stack; the actor's own
    // reference keeps it live.
    let c: &'static ActorCell = unsafe { &*(arg as *const ActorCell) };
    if c.state.load(Ordering::Acquire) & KILL != 0 {
        // Killed before it ran (by `kill` or a shutdown): the closure never
        // runs, and the end is reported from here, where it may block.
        c.kill_delivered.set(true);
        crate::actor::drop_unrun(c, Box::new(crate::actor::Killed));
    } else {
        let vt = c.vtable.get();
        // SAFETY: the payload holds the closure (outcome NONE).
        let r = unsafe { (vt.run)(c) };
        match r {
            Ok(()) => c.outcome.set(cell::OUT_VALUE),
            Err(p) => {
                // SAFETY: only the actor touches its outcome before DONE.
                unsafe { *c.panic.get() = Some(p) };
                c.outcome.set(cell::OUT_PANIC);
            }
        }
        // The closure is over: a kill that comes now has nothing left to
        // stop, and must not unwind the report below out of a wait for room
        // in a full supervisor channel (the signal would be lost).
        c.kill_delivered.set(true);
    }
    {
        let _np = preempt::disable();
        crate::actor::report_exit(c);
    }
    switch_away(local(), Leave::Exit);
    unreachable!("a finished actor was resumed");
}

/// Runs `t` from the scheduler context until control comes back to it.
fn run_actor(lp: *mut Local, t: Task) {
    // SAFETY: lp is this worker's state; no other reference is live.
    let l = unsafe { &mut *lp };
    let Some(sp) = prepare(l, t) else { return };
    l.found_work();
    l.current = t;
    let save: *mut *mut u8 = &mut l.sched_sp;
    // SAFETY: `sp` is `t`'s saved context, now owned by this thread.
    unsafe { arch::switch(save, sp, 0) };
    finish_switch();
    // SAFETY: back in the scheduler context: lp is this worker's state.
    unsafe { (*lp).sched_entries += 1 };
}

/// How many times the scheduler context of the calling worker thread has
/// taken control back from an actor; None off a scheduler thread. (For
/// tests: `smarm::__private::scheduler_entries`.)
#[doc(hidden)]
pub fn scheduler_entries() -> Option<u64> {
    let l = local();
    // SAFETY: a non-null LOCAL is this thread's live worker state; the
    // counter is only written by this thread.
    (!l.is_null()).then(|| unsafe { (*l).sched_entries })
}

// ---------------------------------------------------------------------------
// The worker loop
// ---------------------------------------------------------------------------

pub(crate) fn worker_main(shared: Arc<Shared>, index: usize) {
    let sh: &Shared = &shared;
    let mut local = Box::new(Local {
        shared: sh,
        index,
        me: &sh.workers[index],
        current: ptr::null(),
        sched_sp: ptr::null_mut(),
        post: Post::None,
        lifo: ptr::null(),
        lifo_streak: 0,
        tick: 0,
        global_countdown: MAX_GLOBAL_INTERVAL,
        global_interval: MAX_GLOBAL_INTERVAL,
        global_tsc: preempt::rdtsc(),
        rng: 0x9E37_79B9 ^ (index as u32 + 1).wrapping_mul(0x85EB_CA6B),
        watch: vec![Watch::default(); sh.workers.len()].into_boxed_slice(),
        watching: false,
        searching: false,
        switching: false,
        pinned_head: ptr::null(),
        pinned_tail: ptr::null(),
        spawned: 0,
        exited: 0,
        dispatching: false,
        sched_entries: 0,
    });
    let lp: *mut Local = &mut *local;
    LOCAL.with(|l| l.set(lp));
    preempt::worker_started(sh.settings.alloc_interval, sh.settings.timeslice_cycles);
    crate::overflow::install_for_thread();
    // Timer wake-ups to the nanosecond: the default 50 µs of timer slack
    // would make every idle sleep until a deadline that much late.
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    loop {
        // SAFETY: lp is live for the whole loop; no other reference is held
        // across this statement.
        let next = unsafe { (*lp).find_next(true, None) };
        if let Some(t) = next {
            run_actor(lp, t);
            continue;
        }
        if sh.shutdown.load(Ordering::Acquire) && sh.live() == 0 {
            break;
        }
        if let Some(t) = spin_for_work(lp) {
            run_actor(lp, t);
            continue;
        }
        idle(lp);
    }
    LOCAL.with(|l| l.set(ptr::null_mut()));
    drop(local);
    let mut n = crate::global_lock::lock(&sh.exited_workers);
    *n += 1;
    sh.exited_cv.notify_all();
    drop(n);
    // Let the others see that the runtime is empty, too.
    sh.wake_all();
}

/// Looks for work for up to [`SPIN_CYCLES`] before the worker sleeps. The
/// spinning worker counts as searching, so pushers do not wake sleepers for
/// work it is about to take (at most half the workers search at once).
fn spin_for_work(lp: *mut Local) -> Option<Task> {
    // SAFETY: lp is this worker's state, no other reference is live.
    let l = unsafe { &mut *lp };
    let sh = l.shared();
    // Not on a runtime doing IO: its work arrives through the reactor, and
    // spinning threads there only take CPU time from the threads (ours or
    // the peer's) that produce it (measured: an HTTP responder lost 20%).
    // Nor on a single CPU: the thread that would hand it work (a woken
    // `block_on` caller, another worker) can run only when the spin ends,
    // because the kernel does not preempt a running thread for a woken one
    // at once (measured with `taskset -c 0`: a `block_on` of 64 short actors
    // took 99 µs with the spin, tokio's twin 15 µs).
    if sh.shutdown.load(Ordering::Acquire) || sh.reactor.registrations() != 0 || cpus() == 1 {
        return None;
    }
    if !l.searching {
        if 2 * sh.num_searching.load(Ordering::SeqCst) >= sh.workers.len().max(2) {
            return None;
        }
        sh.num_searching.fetch_add(1, Ordering::SeqCst);
        l.searching = true;
    }
    let mut start = preempt::rdtsc();
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        if let Some(t) = l.find_next(true, None) {
            return Some(t);
        }
        if sh.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        let now = preempt::rdtsc();
        if l.watching {
            // A backlog is being watched: it ends in a steal or drains.
            start = now;
        } else if now.wrapping_sub(start) > SPIN_CYCLES {
            return None;
        }
    }
}

/// Sleeps until there may be work. Runs on the worker's own stack.
fn idle(lp: *mut Local) {
    // SAFETY: lp is this worker's state, no other reference is live.
    let l = unsafe { &mut *lp };
    let sh = l.shared();
    let me = l.index;
    if l.searching {
        l.searching = false;
        sh.num_searching.fetch_sub(1, Ordering::SeqCst);
    }
    // Registrations with IO events, when this worker drove the reactor.
    let mut events = 0;
    {
        let mut idle = crate::global_lock::lock(&sh.idle);
        idle.push(me);
        sh.num_idle.store(idle.len(), Ordering::Relaxed);
    }
    // Pairs with the fence in `notify_one`: either the pusher sees us idle,
    // or we see its push below.
    fence(Ordering::SeqCst);
    let now = sh.now();
    if !sh.must_stay_awake(me, now) {
        let deadline = sh.earliest_deadline();
        let mut timeout =
            (deadline != NEVER).then(|| Duration::from_nanos(deadline.saturating_sub(now)));
        let trim = timeout.is_none_or(|t| t > TRIM_AFTER);
        if trim {
            timeout = Some(TRIM_AFTER);
        }
        let until = deadline
            .min(now.saturating_add(TRIM_AFTER.as_nanos() as u64))
            .max(1);
        sh.workers[me].parked_until.store(until, Ordering::SeqCst);
        // IO: one idle worker at a time (the driver) waits in epoll_wait
        // instead of on its futex; it re-checks for work after announcing
        // itself, and sleeps until the (re-read) earliest deadline.
        // While it dispatches, this worker is still in the idle set, so its
        // pushes must not wake anyone (they could pick this very worker).
        l.dispatching = true;
        let drove = sh
            .reactor
            .park_driver(me, || sh.driver_recheck(me, timeout));
        l.dispatching = false;
        match drove {
            None => sh.workers[me].parker.park(timeout),
            Some(n) => events = n,
        }
        sh.workers[me].parked_until.store(0, Ordering::Relaxed);
        // Trim only after a whole quiet period, not after any idle wake-up.
        let woke = sh.now();
        if trim
            && woke.saturating_sub(now) >= TRIM_AFTER.as_nanos() as u64
            && !sh.has_work(me, woke)
        {
            stack::trim_idle();
        }
    }
    let mut idle = crate::global_lock::lock(&sh.idle);
    if let Some(pos) = idle.iter().position(|&i| i == me) {
        idle.swap_remove(pos);
        sh.num_idle.store(idle.len(), Ordering::Relaxed);
    } else {
        // A notifier took us out of the set and counted us as searching.
        l.searching = true;
    }
    drop(idle);
    // Events: the woken actors are on this worker's queues. A big batch also
    // wakes another idle worker (now that this one has left the idle set) to
    // share it and take over the driver slot; a small one runs here, which
    // saves a wake-up that on a busy machine costs more than it returns.
    if events >= IO_SHARE_BATCH {
        sh.notify_one();
    }
    // Fire every worker's due timers: a busy worker's timers must not wait
    // for its long-running actor.
    let now = sh.now();
    for i in 0..sh.workers.len() {
        if sh.workers[i].next_deadline.get() <= now {
            fire_timers(sh, i, now);
        }
    }
}

// ---------------------------------------------------------------------------
// Entry points used by the rest of the crate
// ---------------------------------------------------------------------------

/// True when the caller runs inside an actor.
#[inline]
pub(crate) fn in_actor() -> bool {
    let l = local_fast();
    // SAFETY: a non-null LOCAL is this thread's live worker state.
    !l.is_null() && unsafe { !(*l).current.is_null() }
}

/// True when an involuntary yield may happen here: in an actor, outside
/// the scheduler's own switching code.
#[inline]
pub(crate) fn may_preempt() -> bool {
    let l = local_fast();
    // SAFETY: a non-null LOCAL is this thread's live worker state.
    !l.is_null() && unsafe { !(*l).current.is_null() && !(*l).switching }
}

/// The running actor's cell, if any.
#[inline]
pub(crate) fn current_cell() -> Option<&'static ActorCell> {
    current_of(local_fast())
}

/// The running actor's cell, given this thread's [`local`] (read since the
/// last switch).
#[inline(always)]
fn current_of(l: *mut Local) -> Option<&'static ActorCell> {
    if l.is_null() {
        return None;
    }
    // SAFETY: as in in_actor; the current actor's cell is live while it runs.
    unsafe { (*l).current.as_ref() }
}

/// A waker for the running actor.
#[inline]
pub(crate) fn current_actor_ref() -> Option<ActorRef> {
    current_cell().map(|c| {
        c.retain();
        ActorRef::from_owned(c)
    })
}

/// The runtime that `spawn` should use from here.
pub(crate) fn current_shared() -> Option<*const Shared> {
    let l = local_fast();
    if !l.is_null() {
        // SAFETY: as in in_actor.
        return Some(unsafe { (*l).shared });
    }
    entered()
}

/// True when the runtime of the calling actor (or `block_on`) is being
/// shut down.
pub(crate) fn shutting_down() -> bool {
    // SAFETY: `current_shared` is this worker's runtime, or the runtime the
    // thread's `block_on` borrows: live for the call.
    current_shared().is_some_and(|sh| unsafe { (*sh).shutdown.load(Ordering::Acquire) })
}

/// The runtime whose `block_on` this thread is in, if any.
fn entered() -> Option<*const Shared> {
    let e = ENTERED.with(|e| e.get());
    (!e.is_null()).then_some(e)
}

/// For a plain thread inside `block_on`: whether that runtime leaves a core
/// free (`Shared::spare_core`). None outside `block_on`.
pub(crate) fn block_on_spare_core() -> Option<bool> {
    // SAFETY: ENTERED is set only for the duration of `block_on`, which
    // borrows the Runtime (and so its Shared) for all of it.
    entered().map(|e| unsafe { (*e).spare_core })
}

/// Marks this thread as being inside `block_on` of `sh` until the guard drops.
pub(crate) fn enter(sh: *const Shared) -> impl Drop {
    struct Guard(*const Shared);
    impl Drop for Guard {
        fn drop(&mut self) {
            ENTERED.with(|e| e.set(self.0));
        }
    }
    Guard(ENTERED.with(|e| e.replace(sh)))
}

/// Publishes a freshly spawned actor (state ACTIVE, refs set) on `sh`.
pub(crate) fn schedule_new(sh: &Shared, c: &'static ActorCell) {
    let l = local_fast();
    // SAFETY: a non-null LOCAL is this thread's live worker state; no other
    // reference to it is active here (we are not inside a switch).
    if !l.is_null() && ptr::eq(unsafe { (*l).shared }, sh) {
        let l = unsafe { &mut *l };
        l.spawned += 1;
        l.me().spawned.store(l.spawned, Ordering::Release);
        l.schedule(c, true);
    } else {
        sh.ext_spawned.fetch_add(1, Ordering::AcqRel);
        sh.inject(c);
    }
}

/// Wakes a parked actor, or leaves its token set (see cell.rs). A woken
/// actor runs next on this thread (the LIFO slot) when this is a worker of
/// its runtime.
#[inline]
pub(crate) fn unpark_cell(c: &ActorCell) {
    unpark_cell_as(c, true)
}

/// [`unpark_cell`], choosing whether a woken actor takes the LIFO slot or
/// goes to the back of the queue.
pub(crate) fn unpark_cell_as(c: &ActorCell, lifo: bool) {
    if claim_wake(c) {
        // SAFETY: a PARKED actor's cell is live (own reference) and its
        // runtime outlives it.
        let sh = unsafe { &*c.runtime.get() };
        wake_queued(sh, c, lifo);
    }
}

/// The state change of a wake: PARKED -> ACTIVE (true: the caller must
/// queue the actor). False when there is nothing to queue: the token was
/// set on a running actor, or it was set already, or the actor is done.
#[inline]
fn claim_wake(c: &ActorCell) -> bool {
    let mut s = c.state.load(Ordering::Acquire);
    loop {
        if s & NOTIFIED != 0 {
            return false;
        }
        let (new, wake) = match s & ST_MASK {
            PARKED => (s - PARKED + ACTIVE, true),
            ACTIVE => (s | NOTIFIED, false),
            _ => return false,
        };
        match c
            .state
            .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return wake,
            Err(x) => s = x,
        }
    }
}

fn wake_queued(sh: &Shared, c: &ActorCell, lifo: bool) {
    if c.pinned.get() {
        return wake_pinned(sh, c);
    }
    let l = local_fast();
    // SAFETY: see schedule_new.
    if !l.is_null() && ptr::eq(unsafe { (*l).shared }, sh) {
        unsafe { (*l).schedule(c, lifo) };
    } else {
        sh.inject(c);
    }
}

/// Wakes a pinned actor on its home worker (see "Unwinding actors").
#[cold]
fn wake_pinned(sh: &Shared, c: &ActorCell) {
    let home = c.home.get();
    let l = local_fast();
    // SAFETY: see schedule_new.
    if !l.is_null() && ptr::eq(unsafe { (*l).shared }, sh) && unsafe { (*l).index } == home {
        unsafe { (*l).push_pinned(c) };
        return;
    }
    let w = &sh.workers[home];
    {
        let _np = preempt::disable();
        let mut inbox = w.inbox.lock().unwrap_or_else(|e| e.into_inner());
        inbox.push(SendTask(c));
        w.inbox_len.store(inbox.len(), Ordering::Release);
    }
    sh.unpark_worker(home);
}

/// True while the running actor `c` unwinds (from a panic it started or
/// from its kill). Per actor, not per thread: `std::thread::panicking()`
/// counts per OS thread, so it also says true for an actor that runs while
/// another actor of its thread is parked in the middle of an unwind.
#[inline]
pub(crate) fn cell_unwinding(c: &ActorCell) -> bool {
    if !c.unwinding.get() {
        return false;
    }
    if std::thread::panicking() {
        return true;
    }
    // The panic was caught inside the actor: it runs normally again.
    c.unwinding.set(false);
    false
}

/// True while the running actor `c` may be in the middle of an unwind, for
/// deciding whether it must stay on its thread: [`cell_unwinding`], which
/// smarm's panic hook and unwinder entry keep exact. Without the unwinder
/// entry (the `fast-unwind` feature off, or a static C runtime) only the
/// hook marks a panicking actor, and an application may replace the hook;
/// then any panic in flight on this thread counts, which errs on the safe
/// side (an actor kept on its thread needlessly costs only locality). Kill
/// delivery keeps to the exact state: delaying a kill for another actor's
/// unwind could leave it undelivered (LOOM.md, "Unwinding actors").
#[inline]
fn maybe_unwinding(c: &ActorCell) -> bool {
    cell_unwinding(c) || (!crate::unwind::SEES_PANIC_RAISES && std::thread::panicking())
}

/// Requests that `c` be unwound with `Killed` at its next suspension point.
pub(crate) fn kill_cell(c: &ActorCell) {
    c.state.fetch_or(KILL, Ordering::AcqRel);
    unpark_cell(c);
}

/// Unwinds the running actor with `Killed` if it has been killed (once).
#[inline]
fn check_kill(c: &ActorCell) {
    if c.state.load(Ordering::Acquire) & KILL != 0 && !c.kill_delivered.get() && !cell_unwinding(c)
    {
        c.kill_delivered.set(true);
        c.unwinding.set(true);
        std::panic::resume_unwind(Box::new(crate::actor::Killed));
    }
}

/// Parks the running actor (see park.rs), with an optional deadline.
pub(crate) fn park_actor(deadline: Option<Instant>) -> bool {
    let c = current_cell().expect("park_actor outside an actor");
    pin_if_unwinding(c);
    // Fast path: the token is already there.
    let s = c.state.load(Ordering::Acquire);
    if s & NOTIFIED != 0 {
        c.state.fetch_and(!NOTIFIED, Ordering::AcqRel);
        check_kill(c);
        return false;
    }
    check_kill(c);
    let armed = match deadline {
        Some(d) => {
            // SAFETY: the running actor's runtime is live.
            let sh = unsafe { &*c.runtime.get() };
            // A deadline already past is armed all the same (no clock read
            // here): it is due, so the next timer check fires it.
            arm_timer(sh, c, sh.clock_of(d));
            true
        }
        None => false,
    };
    switch_away(local(), Leave::Park);
    // `c` is still our own cell (never re-derive it from a thread-local
    // read made before the switch: we may be on another thread now).
    // A timer that is no longer armed has fired: `fire_timers` pops only
    // entries due at a clock value it read, so the deadline has passed.
    let fired = armed && !cancel_timer(c);
    check_kill(c);
    fired
}

/// At a voluntary suspension an actor may move to another thread, unless it
/// is in the middle of an unwind: std's panic count is per OS thread, so it
/// must resume on this same thread or the count would be wrong on both (see
/// "Unwinding actors" in LOOM.md).
fn pin_if_unwinding(c: &ActorCell) {
    let unwinding = maybe_unwinding(c);
    if unwinding {
        // SAFETY: in an actor, LOCAL is this worker's live state.
        c.home.set(unsafe { (*local_fast()).index });
    }
    c.pinned.set(unwinding);
}

/// Called by an actor about to block on a channel: if other actors are
/// ready on this worker, yields to them once (and returns true) so that the
/// caller tries again after they have run. They are often the ones that
/// will satisfy it (the children a parent waits for, the producers of a
/// consumer), and an operation they satisfy in the meantime costs no
/// registration, no wake-up and no second switch. On a runtime with more
/// than one worker only when none is idle or searching: such a worker
/// would steal the yielded actor from the queue, away from the actors and
/// the data it waits on (measured: a one-producer, one-consumer bounded
/// channel on two workers ran 4x slower with the yield and an idle
/// worker).
pub(crate) fn yield_before_blocking() -> bool {
    let l = local_fast();
    if l.is_null() {
        return false;
    }
    // SAFETY: a non-null LOCAL is this thread's live worker state; only
    // plain reads here, no reference outlives the block.
    let (in_actor, ready, sh) = unsafe {
        let l = &*l;
        (
            !l.current.is_null(),
            !l.lifo.is_null() || !l.me().queue.is_empty(),
            l.shared(),
        )
    };
    if !in_actor || !ready {
        return false;
    }
    if sh.workers.len() > 1
        && (sh.num_searching.load(Ordering::Relaxed) != 0
            || sh.num_idle.load(Ordering::Relaxed) != 0)
    {
        return false;
    }
    yield_actor();
    true
}

/// Voluntary yield of the running actor.
pub(crate) fn yield_actor() {
    assert!(try_yield(), "yield outside an actor");
}

/// `yield_now`: yields the running actor; false (and nothing done) outside
/// an actor.
pub(crate) fn try_yield() -> bool {
    let lp = local();
    let Some(c) = current_of(lp) else {
        return false;
    };
    pin_if_unwinding(c);
    switch_away(lp, Leave::Yield);
    check_kill(c);
    true
}

/// True when the running actor has a kill waiting to be delivered.
pub(crate) fn kill_pending() -> bool {
    current_cell().is_some_and(|c| {
        c.state.load(Ordering::Relaxed) & KILL != 0 && !c.kill_delivered.get() && !cell_unwinding(c)
    })
}

/// Involuntary yield (timeslice expired at a preemption point): the actor
/// stays on this thread until its next voluntary suspension.
pub(crate) fn preempt_actor() {
    let lp = local();
    let c = current_of(lp).expect("preempt outside an actor");
    // SAFETY: in an actor, LOCAL is this worker's live state.
    c.home.set(unsafe { (*lp).index });
    c.pinned.set(true);
    switch_away(lp, Leave::Yield);
}

fn arm_timer(sh: &Shared, c: &'static ActorCell, at: u64) {
    let _np = preempt::disable();
    let l = local_fast();
    // SAFETY: we run in an actor, so LOCAL is this worker's live state.
    let wi = unsafe { (*l).index };
    let w = &sh.workers[wi];
    c.retain(); // the heap's reference
    let root = {
        let mut heap = w.timers.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: timer fields are guarded by the heap lock, held.
        unsafe {
            let slot = &mut *c.timer.get();
            slot.deadline = at;
            slot.owner = wi + 1;
        }
        heap.push(c);
        let root = heap.peek();
        w.next_deadline.set(root);
        root
    };
    // A sleeping worker may have computed its wake-up before this deadline
    // existed: wake one whose sleep would outlast it.
    if root == at && sh.num_idle.load(Ordering::SeqCst) != 0 {
        for (i, o) in sh.workers.iter().enumerate() {
            let until = o.parked_until.load(Ordering::SeqCst);
            if i != wi && until != 0 && until > at {
                sh.unpark_worker(i);
                break;
            }
        }
    }
}

/// Removes the running actor's timer if it is still armed; false if it had
/// fired (or there was none).
fn cancel_timer(c: &'static ActorCell) -> bool {
    let _np = preempt::disable();
    // SAFETY: the running actor's runtime is live.
    let sh = unsafe { &*c.runtime.get() };
    // `owner` only goes from a worker to 0 under that worker's heap lock, so
    // a stale read is re-checked under the lock.
    // SAFETY: a racy read of a word, validated below under the lock.
    let owner = unsafe { std::ptr::read_volatile(&(*c.timer.get()).owner) };
    if owner == 0 {
        return false;
    }
    let w = &sh.workers[owner - 1];
    let removed = {
        let mut heap = w.timers.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: guarded by the heap lock, held.
        let slot = unsafe { &*c.timer.get() };
        if slot.owner == owner {
            let pos = slot.pos;
            let r = heap.remove(pos);
            w.next_deadline.set(heap.peek());
            Some(r)
        } else {
            None
        }
    };
    match removed {
        Some(r) => {
            // SAFETY: the heap's reference is ours now.
            unsafe { (*r).release() };
            true
        }
        None => false,
    }
}

/// The scheduler context's stack pointer of this worker (for running the
/// panic hook on the worker's own stack), if the caller is in an actor.
pub(crate) fn sched_stack_top() -> Option<*mut u8> {
    let l = local_fast();
    // SAFETY: as in in_actor.
    if l.is_null() || unsafe { (*l).current.is_null() } {
        return None;
    }
    // SAFETY: as above; the scheduler context is suspended while an actor runs.
    Some(unsafe { (*l).sched_sp })
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

/// The first half of [`shutdown`]: no new actor starts, every live one is
/// killed, every worker is woken to unwind them and then leave.
pub(crate) fn begin_shutdown(sh: &Arc<Shared>) {
    sh.shutdown.store(true, Ordering::SeqCst);
    let me = Arc::as_ptr(sh);
    cell::for_each_live(|c| {
        if ptr::eq(c.runtime.get(), me) && c.state.load(Ordering::Acquire) & ST_MASK != DONE {
            kill_cell(c);
        }
    });
    sh.wake_all();
}

/// Kills every actor of `sh` and waits for the workers to leave. Returns the
/// pids of actors that never reached a suspension point (their threads are
/// abandoned).
pub(crate) fn shutdown(
    sh: &Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    grace: Duration,
) -> Vec<crate::Pid> {
    begin_shutdown(sh);
    let me = Arc::as_ptr(sh);
    let n = threads.len();
    let mut last_live = u64::MAX;
    let mut last_progress = Instant::now();
    let mut exited = crate::global_lock::lock(&sh.exited_workers);
    while *exited < n {
        let (g, _) = sh
            .exited_cv
            .wait_timeout(exited, Duration::from_millis(20))
            .unwrap_or_else(|e| e.into_inner());
        exited = g;
        let live = sh.live();
        if live < last_live {
            last_live = live;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > grace {
            break;
        }
        sh.wake_all();
    }
    let all_exited = *exited == n;
    drop(exited);
    if all_exited {
        for t in threads {
            let _ = t.join();
        }
        // Timers still armed (none normally) hold references: give them back.
        for w in sh.workers.iter() {
            let entries = w.timers.lock().unwrap_or_else(|e| e.into_inner()).drain();
            for c in entries {
                // SAFETY: the heap's reference.
                unsafe { (*c).release() };
            }
        }
        return Vec::new();
    }
    let mut stuck = Vec::new();
    cell::for_each_live(|c| {
        if ptr::eq(c.runtime.get(), me) && c.state.load(Ordering::Acquire) & ST_MASK == ACTIVE {
            stuck.push(c.pid());
        }
    });
    // The abandoned threads keep `sh` alive through their own Arc.
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_workers() -> Arc<Shared> {
        Shared::new(Settings {
            threads: 2,
            stack_size: 64 * 1024,
            alloc_interval: 128,
            timeslice_cycles: 300_000,
        })
        .expect("runtime state")
    }

    /// A worker woken (taken out of the idle set) just before it announced
    /// itself as the blocked IO driver must not go on to sleep in
    /// `epoll_wait`: the wake-up is in its futex token, which the re-check
    /// consumes. Before this held, the driver slept through it (up to the
    /// idle timeout), and meanwhile every push saw a "searching" worker and
    /// woke nobody.
    #[test]
    fn driver_sees_an_unpark_that_came_before_it_blocked() {
        let sh = two_workers();
        let hour = Some(Duration::from_secs(3600));
        // Nothing to do and no token: the driver may sleep.
        assert!(sh.driver_recheck(0, hour).is_some());
        // Woken before blocking: `unpark_driver` finds no blocked driver and
        // only the token records the wake-up.
        sh.unpark_worker(0);
        assert!(sh.driver_recheck(0, hour).is_none());
        // The token was consumed: the next idle round may sleep again.
        assert!(sh.driver_recheck(0, hour).is_some());
        // The whole driver path: returns at once instead of polling for an
        // hour (a regression here hangs this test).
        sh.unpark_worker(0);
        assert_eq!(
            sh.reactor.park_driver(0, || sh.driver_recheck(0, hour)),
            Some(0)
        );
        // Woken while blocked: the eventfd interrupts the poll.
        let sh2 = Arc::clone(&sh);
        let waker = std::thread::spawn(move || {
            while sh2.reactor.blocked_driver() != Some(1) {
                std::thread::yield_now();
            }
            sh2.unpark_worker(1);
        });
        assert_eq!(
            sh.reactor.park_driver(1, || sh.driver_recheck(1, hour)),
            Some(0)
        );
        waker.join().expect("waker thread");
    }
}
