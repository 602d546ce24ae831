//! Stack overflow reporting.
//!
//! Every actor stack has a guard page below it (see `stack.rs`). A SIGSEGV
//! or SIGBUS handler, running on an alternate signal stack, recognises a
//! fault inside an actor's guard page, writes which actor overflowed (pid,
//! name), its stack size and the knobs that raise it, and aborts. Any other
//! fault is passed on to the handler that was installed before ours (std's,
//! which reports overflows of OS-thread stacks), or to the default action.
//!
//! Only the process can die here, not just the actor: the overflowing code
//! may have been inside the allocator or holding a lock, so resuming anything
//! on that thread would not be sound.
//!
//! Everything the handler does is async-signal-safe: atomic loads, reads of
//! the faulting thread's own thread-locals (const-initialised, no lazy
//! registration), `write(2)` and `abort`.

use std::mem::MaybeUninit;
use std::sync::Once;

use crate::stack;

static INSTALL: Once = Once::new();
static mut PREV_SEGV: MaybeUninit<libc::sigaction> = MaybeUninit::zeroed();
static mut PREV_BUS: MaybeUninit<libc::sigaction> = MaybeUninit::zeroed();

/// Installs the handler (once per process).
pub(crate) fn install_handler() {
    INSTALL.call_once(|| {
        for (sig, prev) in [
            (libc::SIGSEGV, &raw mut PREV_SEGV),
            (libc::SIGBUS, &raw mut PREV_BUS),
        ] {
            // SAFETY: a zeroed sigaction is valid; we fill in the handler and
            // flags; `prev` is written by the kernel before any signal can
            // reach our handler (which only reads it).
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = handler as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, (*prev).as_mut_ptr());
            }
        }
    });
}

/// Gives the calling scheduler thread an alternate signal stack if it has
/// none (std gives its threads one when its own handler is installed).
pub(crate) fn install_for_thread() {
    // SAFETY: querying and setting the calling thread's sigaltstack with
    // valid pointers; the new stack is leaked for the thread's lifetime (a
    // scheduler thread lives as long as its runtime).
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut old);
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return;
        }
        let size = 64 * 1024;
        let p = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return;
        }
        let st = libc::stack_t {
            ss_sp: p,
            ss_flags: 0,
            ss_size: size,
        };
        libc::sigaltstack(&st, std::ptr::null_mut());
    }
}

/// A fixed buffer for building the message without allocating.
struct Buf {
    b: [u8; 512],
    n: usize,
}

impl Buf {
    fn s(&mut self, s: &str) -> &mut Self {
        for &c in s.as_bytes() {
            if self.n < self.b.len() {
                self.b[self.n] = c;
                self.n += 1;
            }
        }
        self
    }
    fn u(&mut self, mut v: u64) -> &mut Self {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        // SAFETY-free: ASCII digits are valid UTF-8.
        self.s(std::str::from_utf8(&d[i..]).unwrap_or("?"))
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(size) = stack::guard_hit(addr) {
        let mut m = Buf { b: [0; 512], n: 0 };
        m.s("\nsmarm: stack overflow in actor ");
        match crate::scheduler::current_cell() {
            Some(c) => {
                let raw = c.pid().raw();
                m.s("<").u(raw & 0xFFFF_FFFF).s(".").u(raw >> 32).s(">");
                // SAFETY: the running actor's name is immutable while it lives.
                if let Some(n) = unsafe { c.name() } {
                    m.s(" \"").s(n).s("\"");
                }
            }
            None => {
                m.s("(unknown)");
            }
        }
        m.s(": its stack of ")
            .u(size as u64)
            .s(" bytes is exhausted (fault at guard page address 0x");
        let mut hex = [0u8; 16];
        for (i, h) in hex.iter_mut().enumerate() {
            let nib = (addr >> ((15 - i) * 4)) & 0xF;
            *h = b"0123456789abcdef"[nib];
        }
        m.s(std::str::from_utf8(&hex).unwrap_or("?"));
        m.s(").\nsmarm: raise it with smarm::Builder::stack_size(..) for this actor, or Config::stack_size(..) / SMARM_STACK_SIZE for all actors.\n");
        // SAFETY: write(2) and abort are async-signal-safe.
        unsafe {
            libc::write(2, m.b.as_ptr().cast(), m.n);
            libc::abort();
        }
    }
    // Not ours: chain to the previous disposition.
    let prev = if sig == libc::SIGSEGV {
        &raw const PREV_SEGV
    } else {
        &raw const PREV_BUS
    };
    // SAFETY: written once at installation, before the handler could run.
    let prev = unsafe { (*prev).assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction
        // runs again and the default action (a core dump) takes place.
        // SAFETY: resetting a signal disposition is async-signal-safe.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed as an SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was installed as a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}
