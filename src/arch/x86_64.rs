//! The only Rust caller of the routines in `asm/x86_64.s`.
//!
//! | routine               | takes                         | clobbers             |
//! |-----------------------|-------------------------------|----------------------|
//! | `smarm_switch`        | rdi = save slot, rsi = new sp, rdx = arg | rax, r8 + everything a call clobbers |
//! | `smarm_switch_jmp`    | as `smarm_switch` (ends in a `jmp`; raw-floor bench only) | rax, rcx, r8 + everything a call clobbers |
//! | `smarm_trampoline`    | (jumped to) rbx = arg, r12 = entry       | never returns        |
//! | `smarm_call_on_stack` | rdi = arg, rsi = fn, rdx = stack top     | what a call clobbers |
//!
//! Read the essay at the top of `asm/x86_64.s` for the stack layouts.

use core::arch::global_asm;

global_asm!(include_str!("../../asm/x86_64.s"));

extern "C" {
    fn smarm_switch(save: *mut *mut u8, to: *mut u8, arg: usize) -> usize;
    fn smarm_switch_jmp(save: *mut *mut u8, to: *mut u8, arg: usize) -> usize;
    fn smarm_trampoline();
    fn smarm_call_on_stack(arg: *mut u8, f: unsafe extern "C" fn(*mut u8), top: *mut u8);
}

/// Default MXCSR (all exceptions masked, round to nearest) and x87 control
/// word (all exceptions masked, 64-bit precision, round to nearest), the FP
/// environment the SysV ABI gives a fresh thread.
const DEFAULT_FP_ENV: u64 = 0x1F80 | (0x037F << 32);

/// Size of the frame that [`init_stack`] writes below the top.
pub(crate) const INIT_FRAME: usize = 64;

/// Lays out a fresh context at the top of a stack, so that switching to the
/// returned sp calls `entry(arg)` on that stack (see the essay in the asm).
///
/// # Safety
/// `top` must be 16-byte aligned and the `INIT_FRAME` bytes below it must be
/// writable memory of a stack that nothing else uses. `entry` must never
/// return and never unwind.
pub(crate) unsafe fn init_stack(
    top: *mut u8,
    entry: unsafe extern "C" fn(usize) -> !,
    arg: usize,
) -> *mut u8 {
    debug_assert_eq!(top as usize % 16, 0);
    let words = top.cast::<u64>();
    // SAFETY: the caller guarantees the 8 words below `top` are ours.
    unsafe {
        words.sub(1).write(smarm_trampoline as *const () as u64); // resume address
        words.sub(2).write(0); // rbp: ends frame-pointer walks
        words.sub(3).write(arg as u64); // rbx: the argument
        words.sub(4).write(entry as *const () as u64); // r12: the entry function
        words.sub(5).write(0); // r13
        words.sub(6).write(0); // r14
        words.sub(7).write(0); // r15
        words.sub(8).write(DEFAULT_FP_ENV); // MXCSR | x87 CW
        top.sub(INIT_FRAME)
    }
}

/// Saves the current context into `*save` and resumes the context whose
/// saved sp is `to`. Returns when something switches back to the saved
/// context, with the `arg` that switch passed.
///
/// # Safety
/// `to` must be the saved sp of a suspended context (made by [`init_stack`]
/// or saved by an earlier `switch`) that no other thread resumes, and the
/// current stack must stay valid until it is resumed. `save` must be valid
/// for a write.
#[inline(always)]
pub(crate) unsafe fn switch(save: *mut *mut u8, to: *mut u8, arg: usize) -> usize {
    // SAFETY: forwarded contract; the routine preserves all callee-saved state.
    unsafe { smarm_switch(save, to, arg) }
}

/// [`switch`] ending in `pop; jmp` instead of `ret`: the faster of the two
/// for a ping-pong between two different call sites (the raw floor).
///
/// # Safety
/// As [`switch`].
#[inline(always)]
pub(crate) unsafe fn switch_jmp(save: *mut *mut u8, to: *mut u8, arg: usize) -> usize {
    // SAFETY: forwarded contract.
    unsafe { smarm_switch_jmp(save, to, arg) }
}

/// Runs `f(arg)` on the stack whose top is `top`, then returns.
///
/// # Safety
/// `top` must be the 16-byte aligned top of a stack big enough for `f`, that
/// nothing else uses during the call. `f` must not unwind.
pub(crate) unsafe fn call_on_stack(arg: *mut u8, f: unsafe extern "C" fn(*mut u8), top: *mut u8) {
    debug_assert_eq!(top as usize % 16, 0);
    // SAFETY: forwarded contract.
    unsafe { smarm_call_on_stack(arg, f, top) }
}
