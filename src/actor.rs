//! Actors: spawning, joining, killing, and their identities.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cell::{
    self, ActorCell, BodyVTable, ACTIVE, DONE, JOIN_WAITING, OUT_PANIC, OUT_TAKEN, OUT_VALUE,
    ST_MASK,
};
use crate::channel::Sender;
use crate::park;
use crate::scheduler::{self, Shared};
use crate::stack;

/// An actor's identity: unique among live actors of the process, never
/// reused while a handle that names it could still mistake a new actor for
/// it (a slot index plus a generation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(u64);

impl Pid {
    pub(crate) fn from_raw(raw: u64) -> Pid {
        Pid(raw)
    }
    pub(crate) fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({self})")
    }
}

impl fmt::Display for Pid {
    /// `<index.generation>`, in the manner of Erlang's `<0.42.0>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}>", self.0 & 0xFFFF_FFFF, self.0 >> 32)
    }
}

/// The unwind payload of an actor ended by [`kill`] or by runtime shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Killed;

impl fmt::Display for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("actor killed")
    }
}

impl std::error::Error for Killed {}

/// What a supervisor hears when a child started with [`spawn_under`] ends:
/// exactly one per child.
pub enum Signal {
    /// The actor returned normally.
    Exit(Pid),
    /// The actor panicked (payload as `catch_unwind` gives it); a killed
    /// actor's payload is [`Killed`].
    Panic(Pid, Box<dyn Any + Send + 'static>),
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signal::Exit(p) => write!(f, "Exit({p})"),
            Signal::Panic(p, payload) => {
                write!(f, "Panic({p}, {})", describe_payload(payload.as_ref()))
            }
        }
    }
}

/// A readable description of a panic payload.
pub(crate) fn describe_payload(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        format!("{s:?}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("{s:?}")
    } else if p.is::<Killed>() {
        "Killed".to_string()
    } else {
        "Box<dyn Any>".to_string()
    }
}

/// A copy of a payload for a second receiver (the supervisor takes the
/// original): messages and `Killed` are copied; anything else is described.
fn copy_payload(p: &(dyn Any + Send)) -> Box<dyn Any + Send> {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        Box::new(*s)
    } else if let Some(s) = p.downcast_ref::<String>() {
        Box::new(s.clone())
    } else if p.is::<Killed>() {
        Box::new(Killed)
    } else {
        Box::new("the actor panicked; its payload was delivered to its supervisor")
    }
}

// ---------------------------------------------------------------------------
// Typed bodies
// ---------------------------------------------------------------------------

struct Body<F, T>(PhantomData<(F, T)>);

impl<F: FnOnce() -> T + Send + 'static, T: Send + 'static> Body<F, T> {
    const VTABLE: BodyVTable = BodyVTable {
        run: Self::run,
        drop_closure: Self::drop_closure,
        drop_result: Self::drop_result,
    };

    /// Stores `f` in the cell's payload (inline when it fits, else boxed).
    unsafe fn store(c: &ActorCell, f: F) {
        let p = c.payload.get().cast::<u8>();
        if cell::fits_inline::<F>() {
            // SAFETY: the payload is large and aligned enough for F (checked).
            unsafe { p.cast::<F>().write(f) };
        } else {
            // SAFETY: a pointer fits the payload.
            unsafe { p.cast::<*mut F>().write(Box::into_raw(Box::new(f))) };
        }
    }

    unsafe fn take_closure(c: *const ActorCell) -> F {
        // SAFETY: the payload holds an F, stored by `store` (caller's contract).
        unsafe {
            let p = (*c).payload.get().cast::<u8>();
            if cell::fits_inline::<F>() {
                p.cast::<F>().read()
            } else {
                *Box::from_raw(p.cast::<*mut F>().read())
            }
        }
    }

    unsafe fn run(c: *const ActorCell) -> Result<(), Box<dyn Any + Send>> {
        // SAFETY: called once, with the closure in the payload.
        let f = unsafe { Self::take_closure(c) };
        // The result is written into the payload inside the closure, so it
        // is not copied through the layers of `catch_unwind` on the actor's
        // small stack.
        catch_unwind(AssertUnwindSafe(move || {
            let v = f();
            // SAFETY: the payload is free again (the closure was moved out).
            unsafe {
                let p = (*c).payload.get().cast::<u8>();
                if cell::fits_inline::<T>() {
                    p.cast::<T>().write(v);
                } else {
                    p.cast::<*mut T>().write(Box::into_raw(Box::new(v)));
                }
            }
        }))
    }

    unsafe fn drop_closure(c: *const ActorCell) {
        // SAFETY: the payload holds the closure that never ran.
        drop(unsafe { Self::take_closure(c) });
    }

    unsafe fn drop_result(c: *const ActorCell) {
        // SAFETY: the payload holds an untaken result.
        drop(unsafe { take_result::<T>(c) });
    }
}

unsafe fn take_result<T>(c: *const ActorCell) -> T {
    // SAFETY: the payload holds a T (caller's contract).
    unsafe {
        let p = (*c).payload.get().cast::<u8>();
        if cell::fits_inline::<T>() {
            p.cast::<T>().read()
        } else {
            *Box::from_raw(p.cast::<*mut T>().read())
        }
    }
}

// ---------------------------------------------------------------------------
// Spawning
// ---------------------------------------------------------------------------

/// Per-actor options: a name (shown in panic messages and diagnostics) and
/// a stack size (overrides `Config::stack_size`).
///
/// ```no_run
/// let rt = smarm::runtime::init(smarm::runtime::Config::default());
/// let h = rt.block_on(|| {
///     smarm::Builder::new().name("worker-3").stack_size(256 * 1024).spawn(|| 40 + 2)
/// });
/// assert_eq!(h.join().unwrap(), 42);
/// ```
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// Default options.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the actor.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Usable stack bytes (rounded up to whole pages; one guard page is
    /// added below).
    ///
    /// # Panics
    /// `spawn` panics if the size is below 16 KiB or above 1 GiB.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns `f` as an actor with these options (see [`spawn`]).
    pub fn spawn<F, T>(self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let sh = runtime_for_spawn();
        spawn_on(sh, f, self.name, self.stack_size, None)
    }

    /// Spawns `f` as an actor that reports its end to `supervisor` (see
    /// [`spawn_under`]).
    pub fn spawn_under<F, T>(self, supervisor: Sender<Signal>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let sh = runtime_for_spawn();
        spawn_on(sh, f, self.name, self.stack_size, Some(supervisor))
    }
}

/// Spawns `f` as an actor of the current runtime (the caller's, inside an
/// actor; the one whose `block_on` this thread is in, outside). Only
/// enqueues it: the child never runs before `spawn` returns.
///
/// # Panics
/// When called with no runtime (create one with `smarm::runtime::init`).
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_on(runtime_for_spawn(), f, None, None, None)
}

/// Like [`spawn`], and when the child ends exactly one [`Signal`] for it is
/// sent to `supervisor` (a supervisor channel that is gone is not an error).
pub fn spawn_under<F, T>(supervisor: Sender<Signal>, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_on(runtime_for_spawn(), f, None, None, Some(supervisor))
}

fn runtime_for_spawn() -> &'static Shared {
    match scheduler::current_shared() {
        // SAFETY: the current runtime outlives the running actor / block_on.
        Some(sh) => unsafe { &*sh },
        None => panic!(
            "smarm::spawn called outside a runtime: create one with `smarm::runtime::init(Config::default())` \
             and spawn through `Runtime::spawn` or inside `Runtime::block_on`"
        ),
    }
}

const MIN_STACK: usize = 16 * 1024;
const MAX_STACK: usize = 1 << 30;

pub(crate) fn spawn_on<F, T>(
    sh: &Shared,
    f: F,
    name: Option<String>,
    stack_size: Option<usize>,
    supervisor: Option<Sender<Signal>>,
) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let class = match stack_size {
        None => sh.stack_class,
        Some(s) => {
            assert!(
                (MIN_STACK..=MAX_STACK).contains(&s),
                "smarm: Builder::stack_size({s}) is out of range: use {MIN_STACK} to {MAX_STACK} bytes"
            );
            stack::class_for(s).unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let _np = crate::preempt::disable();
    let c = cell::alloc_cell();
    c.runtime.set(sh);
    c.vtable.set(&Body::<F, T>::VTABLE);
    c.stack_class.set(class);
    c.outcome.set(cell::OUT_NONE);
    // SAFETY: the cell is FREE and ours alone until published below.
    unsafe {
        Body::<F, T>::store(c, f);
        *c.name.get() = name.map(String::into_boxed_str);
        *c.supervisor.get() = supervisor;
    }
    c.refs.store(2, Ordering::Relaxed); // the actor's life + the JoinHandle
    c.state.store(ACTIVE, Ordering::Release);
    let h = JoinHandle {
        cell: c,
        _t: PhantomData,
    };
    if sh.shutdown.load(Ordering::Acquire) {
        // No new actors start once shutdown began: finish it as killed.
        c.state.store(ACTIVE | cell::KILL, Ordering::Release);
    }
    scheduler::schedule_new(sh, c);
    h
}

/// Ends an actor whose closure never ran: drops the closure and makes
/// `payload` (a panic) its outcome. In the actor's first context or in a
/// scheduler context, before its end is reported.
pub(crate) fn drop_unrun(c: &ActorCell, payload: Box<dyn Any + Send>) {
    let vt = c.vtable.get();
    crate::panic::contain(c.pid(), "dropping the closure", || {
        // SAFETY: the actor never ran (outcome NONE): the payload holds its
        // closure, which only the finishing context touches now.
        unsafe { (vt.drop_closure)(c) }
    });
    // SAFETY: as above, nothing else touches the outcome before DONE.
    unsafe { *c.panic.get() = Some(payload) };
    c.outcome.set(OUT_PANIC);
}

/// Sends the supervisor its Signal, at the end of the actor's life, on its
/// own stack: a bounded supervisor channel that is full parks the actor
/// until there is room.
pub(crate) fn report_exit(c: &ActorCell) {
    let Some((sup, sig)) = exit_signal(c) else {
        return;
    };
    // Below the actor's catch_unwind: a signal that cannot be delivered is
    // dropped here, and so is the channel if this was its last handle.
    crate::panic::contain(c.pid(), "sending the exit signal", move || {
        let _ = sup.send(sig);
    });
}

/// Sends the supervisor the Signal of an actor that could not be given a
/// stack, from a scheduler context, which must not block: when the bounded
/// supervisor channel is full, a thread of its own waits for room (without
/// it, the worker would wait for a receiver that may need this very worker
/// to run).
pub(crate) fn report_exit_from_scheduler(c: &ActorCell) {
    let Some((sup, sig)) = exit_signal(c) else {
        return;
    };
    let pid = c.pid();
    crate::panic::contain(pid, "sending the exit signal", move || {
        if let Err(crate::channel::TrySendError::Full(sig)) = sup.try_send(sig) {
            let spawned = std::thread::Builder::new()
                .name("smarm-signal".into())
                .spawn(move || {
                    let _ = sup.send(sig);
                });
            if let Err(e) = spawned {
                let line = format!(
                    "smarm: the exit signal of actor {pid} is lost: its supervisor's channel is full and no thread could wait for room ({e})\n"
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }
        }
    });
}

/// Takes the supervisor of a finishing actor and builds its Signal.
fn exit_signal(c: &ActorCell) -> Option<(crate::channel::Sender<Signal>, Signal)> {
    // SAFETY: only the finishing context touches `supervisor` now.
    let sup = unsafe { (*c.supervisor.get()).take() }?;
    let pid = c.pid();
    let sig = match c.outcome.get() {
        OUT_PANIC => {
            // SAFETY: the outcome is ours until DONE is published.
            let slot = unsafe { &mut *c.panic.get() };
            let orig = slot.take().expect("panic payload");
            // The join result keeps a copy, unless no JoinHandle is left to
            // read it (only the actor's own reference: a dropped handle
            // never comes back).
            if c.refs.load(Ordering::Acquire) > 1 {
                *slot = Some(copy_payload(orig.as_ref()));
            } else {
                *slot = Some(Box::new(()));
            }
            Signal::Panic(pid, orig)
        }
        _ => Signal::Exit(pid),
    };
    Some((sup, sig))
}

// ---------------------------------------------------------------------------
// Join handles
// ---------------------------------------------------------------------------

/// How long (TSC cycles) a plain thread spins in `join` before it parks.
const JOIN_SPIN_CYCLES: u64 = 100_000;
/// The longest spin of a thread in `block_on` on a runtime that leaves a
/// core free (about 0.7 ms): see `wait_plan`.
const JOIN_SPIN_MAX_CYCLES: u64 = 2_000_000;
/// How long before the predicted end of a long `block_on` wait its thread
/// wakes from a timed nap to spin (timer slack, 50 µs by default, plus the
/// wake-up of a sleeping thread, plus the run-to-run spread of the work).
const NAP_LEAD: Duration = Duration::from_micros(300);

/// One `block_on` wait of a thread, in TSC cycles and in time.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Wait {
    cycles: u64,
    time: Duration,
}

thread_local! {
    /// This thread's previous `block_on` wait (None before the first).
    static LAST_BLOCK_ON_WAIT: std::cell::Cell<Option<Wait>> = const { std::cell::Cell::new(None) };
}

/// How a plain thread waits in `join`: first a timed nap of `nap` (if
/// any, with the joiner registered so that an earlier end cuts it short),
/// then a spin of up to `spin` TSC cycles, then an untimed park.
#[derive(Debug, PartialEq)]
struct WaitPlan {
    nap: Option<Duration>,
    spin: u64,
}

/// Waking a parked thread costs a system call and, on virtual machines,
/// 20-50 µs before it runs: a short `block_on` would be mostly that, and a
/// long one pays it at its end. So a thread in `block_on` whose runtime
/// leaves a core free (fewer workers than CPUs: the spin takes no time
/// from the workers) spends its spin where the end is expected, judging by
/// its previous wait:
/// - after a short wait (at most `JOIN_SPIN_MAX_CYCLES`) it spins twice
///   that long, so back-to-back short `block_on`s never sleep;
/// - after a long one it naps until `NAP_LEAD` before that wait's length,
///   then spins up to `JOIN_SPIN_MAX_CYCLES`; an end during the nap wakes
///   it as a plain park would, one later than the spin parks.
///
/// On a runtime that uses every core it parks without spinning when the
/// `block_on`'s spawn woke a sleeping worker (`woke_worker`: the actor
/// cannot end before that worker has run) or when its previous wait was
/// long (the end is not expected within a spin): a spinning caller only
/// holds a CPU the workers need. (Measured on two CPUs after long waits:
/// the second worker of a 64-actor fan-out started 12 µs after the first
/// instead of 16, p90 18 instead of 38, and fan_out_compute mt and
/// multi_thread_scaling t2 went 0.3% faster, in alternating runs of one
/// binary.)
///
/// On a single CPU (`one_cpu`) it never spins: the actor cannot progress
/// while this thread holds the CPU.
///
/// Everywhere else (outside `block_on`, a short previous wait on a runtime
/// that uses every core, the first `block_on` of a thread) it spins the
/// base `JOIN_SPIN_CYCLES` and parks. `spare_core` is None outside `block_on`
/// (`scheduler::block_on_spare_core`).
fn wait_plan(
    one_cpu: bool,
    spare_core: Option<bool>,
    last: Option<Wait>,
    woke_worker: bool,
) -> WaitPlan {
    let base = WaitPlan {
        nap: None,
        spin: JOIN_SPIN_CYCLES,
    };
    match (spare_core, last) {
        _ if one_cpu => WaitPlan { nap: None, spin: 0 },
        (Some(false), _) if woke_worker => WaitPlan { nap: None, spin: 0 },
        (Some(false), Some(last)) if last.cycles > JOIN_SPIN_MAX_CYCLES => {
            WaitPlan { nap: None, spin: 0 }
        }
        (Some(true), Some(last)) if last.cycles <= JOIN_SPIN_MAX_CYCLES => WaitPlan {
            nap: None,
            spin: (2 * last.cycles).clamp(JOIN_SPIN_CYCLES, JOIN_SPIN_MAX_CYCLES),
        },
        (Some(true), Some(last)) => WaitPlan {
            nap: Some(last.time.saturating_sub(NAP_LEAD)),
            spin: JOIN_SPIN_MAX_CYCLES,
        },
        _ => base,
    }
}

/// An owned permission to join an actor (wait for its end and take its
/// result). Dropping it detaches the actor.
pub struct JoinHandle<T> {
    cell: &'static ActorCell,
    _t: PhantomData<fn() -> T>,
}

// SAFETY: the handle only moves the result (T: Send) across threads.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only exposes pid and is_finished (atomics).
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("pid", &self.pid())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// The actor's pid.
    pub fn pid(&self) -> Pid {
        self.cell.pid()
    }

    /// True once the actor has finished (returned, panicked or been killed).
    pub fn is_finished(&self) -> bool {
        self.cell.state.load(Ordering::Acquire) & ST_MASK == DONE
    }

    /// Waits for the actor to finish and returns its result, or the payload
    /// of its panic (as `std::thread::JoinHandle::join`; a killed actor's
    /// payload is [`Killed`]). Works from actors (the actor parks) and plain
    /// threads (the thread blocks).
    ///
    /// # Errors
    /// `Err(payload)` when the actor panicked or was killed.
    ///
    /// # Panics
    /// When an actor joins its own handle (it would wait for ever).
    pub fn join(self) -> Result<T, Box<dyn Any + Send + 'static>> {
        self.wait(false)
    }

    /// `join`. `woke_worker`: spawning the actor woke a sleeping worker
    /// (`Runtime::block_on` knows), which may have been put on this CPU.
    pub(crate) fn wait(self, woke_worker: bool) -> Result<T, Box<dyn Any + Send + 'static>> {
        let this = ManuallyDrop::new(self);
        let c = this.cell;
        // Release the handle's reference however we leave (even by a kill).
        struct Release(&'static ActorCell);
        impl Drop for Release {
            fn drop(&mut self) {
                // SAFETY: the JoinHandle's reference, released once.
                unsafe { self.0.release() };
            }
        }
        let _rel = Release(c);
        // An actor that joins itself would wait for ever (std's join of the
        // current thread fails the same way, with EDEADLK).
        let me = scheduler::current_cell();
        if me.is_some_and(|me| ptr::eq(me, c)) {
            panic!(
                "smarm: actor {} joined its own JoinHandle, which would wait for ever",
                c.pid()
            );
        }
        let plain = me.is_none();
        // Some(..) only for the plain thread of a `block_on`.
        let spare_core = if plain {
            scheduler::block_on_spare_core()
        } else {
            None
        };
        let done = || c.state.load(Ordering::Acquire) & ST_MASK == DONE;
        let mut registered = false;
        let register = || {
            // SAFETY: JOIN_WAITING is not set yet (`registered` is false),
            // so the finishing side does not read `joiner`; we are its only
            // writer.
            unsafe { *c.joiner.get() = Some(park::current()) };
            c.state.fetch_or(JOIN_WAITING, Ordering::AcqRel);
        };
        // The wait is timed only in `block_on` (for the next one's plan).
        let (start_tsc, start_time) = match spare_core {
            Some(_) => (crate::preempt::rdtsc(), Some(Instant::now())),
            None => (0, None),
        };
        if plain {
            // A plain thread (say, in `block_on`) spins first: the actor
            // often finishes within microseconds, and waking a parked thread
            // costs far more than that on virtual machines.
            let plan = wait_plan(
                scheduler::cpus() == 1,
                spare_core,
                LAST_BLOCK_ON_WAIT.with(|l| l.get()),
                woke_worker,
            );
            if let (Some(nap), Some(t0)) = (plan.nap, start_time) {
                register();
                registered = true;
                let wake_at = t0 + nap;
                while !done() {
                    let now = Instant::now();
                    if now >= wake_at {
                        break;
                    }
                    std::thread::park_timeout(wake_at - now);
                }
            }
            // When spawning the actor woke a sleeping worker, the kernel may
            // have put that worker on this CPU, where it would wait out our
            // spin: yield the CPU to it once (measured on 2 CPUs: `block_on`
            // of an idle runtime started its actor 8 µs after the call
            // instead of 30 with one worker, 20 instead of 54 with two). On a
            // runtime using every CPU the plan then has no spin (a yield
            // followed by the spin measured deep_recursion mt at 146-167 µs
            // a round against 101-108). Without a wake, no yield:
            // back-to-back short `block_on`s lost a third of their speed to
            // it.
            if woke_worker && !done() {
                std::thread::yield_now();
            }
            let spin_start = crate::preempt::rdtsc();
            while !done() && crate::preempt::rdtsc().wrapping_sub(spin_start) < plan.spin {
                std::hint::spin_loop();
            }
        }
        if !done() {
            if !registered {
                register();
            }
            while !done() {
                // No second look at the thread-local.
                park::park_in(!plain);
            }
        }
        if let Some(t0) = start_time {
            let cycles = crate::preempt::rdtsc().wrapping_sub(start_tsc);
            LAST_BLOCK_ON_WAIT.with(|l| {
                l.set(Some(Wait {
                    cycles,
                    time: t0.elapsed(),
                }))
            });
        }
        // DONE (Acquire): the outcome is published and no one else touches it.
        match c.outcome.get() {
            OUT_VALUE => {
                c.outcome.set(OUT_TAKEN);
                // SAFETY: the payload holds the T result.
                Ok(unsafe { take_result::<T>(c) })
            }
            OUT_PANIC => {
                c.outcome.set(OUT_TAKEN);
                // SAFETY: as above.
                Err(unsafe { (*c.panic.get()).take() }.expect("panic payload"))
            }
            _ => unreachable!("join of an actor without an outcome"),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the handle's reference.
        unsafe { self.cell.release() };
    }
}

/// Joins several handles: `smarm::join!(h1, h2)` is `(h1.join(), h2.join())`.
#[macro_export]
macro_rules! join {
    ($($h:expr),+ $(,)?) => {
        ( $( $crate::JoinHandle::join($h), )+ )
    };
}

// ---------------------------------------------------------------------------
// Free functions
// ---------------------------------------------------------------------------

/// Lets other actors run; the caller goes to the back of its thread's
/// queue. On a plain thread, `std::thread::yield_now`.
#[inline]
pub fn yield_now() {
    if !scheduler::try_yield() {
        std::thread::yield_now();
    }
}

/// The running actor's pid; None outside an actor.
pub fn self_pid() -> Option<Pid> {
    scheduler::current_cell().map(|c| c.pid())
}

/// Unwinds the actor `pid` (payload [`Killed`]) at its next suspension
/// point, so its destructors run. Killing a finished or unknown pid does
/// nothing. An actor may kill itself: it unwinds at its next suspension.
pub fn kill(pid: Pid) {
    if let Some(c) = cell::lookup(pid) {
        scheduler::kill_cell(c);
        // SAFETY: the reference taken by lookup.
        unsafe { c.release() };
    }
}

/// Kills the actor behind a handle (no pid lookup).
pub(crate) fn kill_handle<T>(h: &JoinHandle<T>) {
    scheduler::kill_cell(h.cell);
}

#[allow(dead_code)]
fn _assert_types() {
    fn send_sync<X: Send + Sync>() {}
    send_sync::<Pid>();
    send_sync::<JoinHandle<u8>>();
    let _ = ptr::null::<u8>();
}

/// The name of the running actor, if it has one (for diagnostics).
pub(crate) fn current_name() -> Option<String> {
    let c = scheduler::current_cell()?;
    // SAFETY: the running actor's cell is live; its name is immutable.
    unsafe { c.name() }.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_spends_its_spin_where_the_end_is_expected() {
        let short = |cycles| {
            Some(Wait {
                cycles,
                time: Duration::from_micros(cycles / 3_000),
            })
        };
        let spin = |spin| WaitPlan { nap: None, spin };
        // Outside block_on, or on a runtime using every core: the base spin.
        assert_eq!(
            wait_plan(false, None, short(1_000), false),
            spin(JOIN_SPIN_CYCLES)
        );
        assert_eq!(
            wait_plan(false, Some(false), short(1_000), false),
            spin(JOIN_SPIN_CYCLES)
        );
        // The first block_on of a thread knows no previous wait.
        assert_eq!(
            wait_plan(false, Some(true), None, false),
            spin(JOIN_SPIN_CYCLES)
        );
        // Short previous waits: twice the last one, never below the base.
        assert_eq!(
            wait_plan(false, Some(true), short(10_000), false),
            spin(JOIN_SPIN_CYCLES)
        );
        assert_eq!(
            wait_plan(false, Some(true), short(300_000), false),
            spin(600_000)
        );
        assert_eq!(
            wait_plan(false, Some(true), short(JOIN_SPIN_MAX_CYCLES), false),
            spin(JOIN_SPIN_MAX_CYCLES)
        );
        // A long previous wait: a nap until shortly before its length, then
        // the longest spin.
        let long = Wait {
            cycles: 36_000_000,
            time: Duration::from_millis(12),
        };
        assert_eq!(
            wait_plan(false, Some(true), Some(long), false),
            WaitPlan {
                nap: Some(Duration::from_millis(12) - NAP_LEAD),
                spin: JOIN_SPIN_MAX_CYCLES
            }
        );
        // A long one on a runtime using every core: no spin.
        assert_eq!(wait_plan(false, Some(false), Some(long), false), spin(0));
        // A short one there: the base.
        assert_eq!(
            wait_plan(false, Some(false), short(JOIN_SPIN_MAX_CYCLES), false),
            spin(JOIN_SPIN_CYCLES)
        );
        // A spawn that woke a worker: no spin on a runtime using every core,
        // the plan unchanged where a core is spare.
        assert_eq!(wait_plan(false, Some(false), short(1_000), true), spin(0));
        assert_eq!(wait_plan(false, Some(false), Some(long), true), spin(0));
        assert_eq!(
            wait_plan(false, Some(true), short(10_000), true),
            spin(JOIN_SPIN_CYCLES)
        );
        // One CPU: never a spin, whatever else holds.
        for spare in [None, Some(false), Some(true)] {
            for last in [None, short(1_000), Some(long)] {
                for woke in [false, true] {
                    assert_eq!(wait_plan(true, spare, last, woke), spin(0));
                }
            }
        }
    }
}
