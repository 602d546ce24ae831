//! Panics inside actors: naming the actor, and room for the panic hook.
//!
//! smarm wraps the panic hook that is installed when the first runtime
//! starts (std's default one, unless the application set its own). When a
//! panic starts in an actor, the wrapper
//! 1. prints a line naming the actor (pid and name) and its thread, then
//! 2. runs the previous hook on the scheduler thread's own stack (below the
//!    scheduler context's saved stack pointer, which is idle while the actor
//!    runs), because symbolising a backtrace (`RUST_BACKTRACE=full`) needs far
//!    more than an actor's 64 KiB. The switch to that stack is
//!    `smarm_call_on_stack`, whose CFI lets the backtrace walk back onto the
//!    actor's stack, so the printed trace still shows the actor's frames.
//!
//! Preemption is disabled while the hook runs. An application that installs
//! its own hook after starting a runtime replaces the wrapper: its hook then
//! runs on the actor's stack.
//!
//! The runtime itself drops values that belong to the application: the
//! result or panic payload of an actor nobody joins, the closure of an actor
//! killed before it ran, the supervisor signal of a supervisor that is gone.
//! It does so where no panic may escape (a scheduler context, the end of an
//! actor below its `catch_unwind`, a runtime's shutdown), so a destructor
//! that panics there is contained by [`contain`].

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use crate::actor::Pid;

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

static INSTALL: Once = Once::new();
/// Serialises the reports of panics on different scheduler threads, so a
/// header line and the trace after it stay together.
static REPORT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes left free below the scheduler context's saved sp (its red zone and
/// then some).
const GAP: usize = 1024;

pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        let prev: &'static Hook = Box::leak(Box::new(std::panic::take_hook()));
        std::panic::set_hook(Box::new(move |info| hook(prev, info)));
    });
}

struct Call<'a, 'b> {
    prev: &'a Hook,
    info: &'a PanicHookInfo<'b>,
}

unsafe extern "C" fn run_prev(arg: *mut u8) {
    // SAFETY: `arg` is the `Call` built by `hook`, alive during this call.
    let call = unsafe { &*(arg as *const Call<'_, '_>) };
    // A panicking hook must not unwind through the assembly.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (call.prev)(call.info)));
}

fn hook(prev: &'static Hook, info: &PanicHookInfo<'_>) {
    let Some(c) = crate::scheduler::current_cell() else {
        return prev(info);
    };
    let _np = crate::preempt::disable();
    // The actor is unwinding from now on (until its panic is caught).
    c.unwinding.set(true);
    let _report = crate::global_lock::lock(&REPORT);
    let thread = std::thread::current();
    let tname = thread.name().unwrap_or("?");
    // SAFETY: the running actor's name is immutable while it runs.
    let line = match unsafe { c.name() } {
        Some(n) => format!(
            "smarm: actor {} \"{n}\" panicked (on thread '{tname}'):\n",
            c.pid()
        ),
        None => format!("smarm: actor {} panicked (on thread '{tname}'):\n", c.pid()),
    };
    // One write, so the line is never split by another thread's output.
    let _ = std::io::stderr().write_all(line.as_bytes());
    match crate::scheduler::sched_stack_top() {
        Some(sp) => {
            let top = ((sp as usize - GAP) & !15) as *mut u8;
            let call = Call { prev, info };
            // SAFETY: the scheduler context is suspended while its actor
            // runs, so the stack below its saved sp (minus a gap) is unused;
            // it is the 8 MiB stack of a scheduler thread. `run_prev` does
            // not unwind.
            unsafe {
                crate::arch::call_on_stack(&call as *const Call<'_, '_> as *mut u8, run_prev, top)
            };
        }
        None => prev(info),
    }
}

/// Runs `work`, in which the runtime drops (or hands on) something the
/// application owns on behalf of actor `pid`, where no panic may escape.
/// A panic out of it (a destructor that panics) has been reported by the
/// panic hook like any other; here it is caught, a line says what the
/// runtime was doing for which actor, and the panic's own payload is dropped
/// the same way (and leaked, should its destructor panic as well). The
/// runtime carries on: the value is gone either way, as in tokio, where std
/// would abort the process.
pub(crate) fn contain(pid: Pid, what: &str, work: impl FnOnce()) {
    let Err(payload) = catch_unwind(AssertUnwindSafe(work)) else {
        return;
    };
    let line = format!(
        "smarm: a panic while {what} of actor {pid} was contained; the runtime carries on\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
