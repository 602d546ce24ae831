# smarm's unwinder entry points for x86-64 (System V ABI, Linux).
#
# ============================================================================
# The essay
# ============================================================================
#
# A panic reaches the system unwinder through two calls: the panic runtime
# calls `_Unwind_RaiseException(exception)` once, and every landing pad that
# ran destructors calls `_Unwind_Resume(exception)` when it is done. smarm's
# executable defines both symbols, so the static linker binds the Rust code's
# calls to them here instead of to libgcc_s (src/unwind.rs explains when this
# is in effect and why).
#
# Each entry point captures the registers that describe its caller's frame
# (the callee-saved registers, the caller's stack pointer after the return,
# and the return address), hands them to the Rust side, and then does one of
# three things:
#   - never returns: the Rust side found a landing pad and jumped to it
#     through `smarm_unwind_install`;
#   - returns a reason code to the caller (rdx = 0), as the real functions
#     do when unwinding cannot start (end of stack, fatal error);
#   - tail-jumps to the system unwinder's function of the same name
#     (rdx = its address), with the stack and every argument and
#     callee-saved register exactly as on entry, so the system unwinder sees
#     the original call. The Rust side does this for every unwind it does not
#     handle itself (not on an actor stack, a frame it does not support).
#
# The frame both entry points build (addresses grow upwards, 8 bytes a row):
#
#        +------------------------------+
#  sp+72 | return address               |  <- pushed by the caller's `call`
#  sp+64 | rdi (the exception)          |
#  sp+56 | rip: the return address      |  \
#  sp+48 | rsp: sp+80 (caller's rsp     |   |
#        |      after the return)       |   |  struct Regs (src/unwind.rs):
#  sp+40 | r15                          |   |  the caller's frame as the
#  sp+32 | r14                          |   |  unwinder starts from it
#  sp+24 | r13                          |   |
#  sp+16 | r12                          |   |
#  sp+8  | rbp                          |   |
#  sp+0  | rbx                          |  /   <- rsp (16-byte aligned)
#        +------------------------------+
#
# On entry rsp is 8 mod 16 (a call pushed the return address); 72 more bytes
# make it 0 mod 16 for the call into Rust.

.macro UNWIND_ENTRY name, rust
    .globl \name
    .type \name,@function
    .p2align 4
\name:
    .cfi_startproc
    sub rsp, 72                     # room for Regs and the saved rdi
    .cfi_adjust_cfa_offset 72
    mov [rsp], rbx                  # Regs.rbx
    mov [rsp+8], rbp                # Regs.rbp
    mov [rsp+16], r12               # Regs.r12
    mov [rsp+24], r13               # Regs.r13
    mov [rsp+32], r14               # Regs.r14
    mov [rsp+40], r15               # Regs.r15
    lea rax, [rsp+80]               # the caller's rsp once we return
    mov [rsp+48], rax               # Regs.rsp
    mov rax, [rsp+72]               # our return address
    mov [rsp+56], rax               # Regs.rip
    mov [rsp+64], rdi               # keep the exception for a fallback
    mov rsi, rsp                    # second argument: &Regs (first: rdi)
    call \rust                      # -> rax = reason code, rdx = fallback
    mov rdi, [rsp+64]               # the exception again (first argument)
    add rsp, 72                     # the frame is gone: as on entry
    .cfi_adjust_cfa_offset -72
    test rdx, rdx                   # a system function to hand over to?
    jnz 1f
    ret                             # no: return the reason code in rax
1:
    jmp rdx                         # yes: tail-jump, the caller's call intact
    .cfi_endproc
    .size \name, .-\name
.endm

# ----------------------------------------------------------------------------
# _Unwind_RaiseException(exception: *mut _Unwind_Exception) -> reason code
# ----------------------------------------------------------------------------
UNWIND_ENTRY _Unwind_RaiseException, smarm_unwind_raise

# ----------------------------------------------------------------------------
# _Unwind_Resume(exception: *mut _Unwind_Exception) -> ! (returns only in
# the tail-jump case, where the system function does not return either)
# ----------------------------------------------------------------------------
UNWIND_ENTRY _Unwind_Resume, smarm_unwind_resume

# ----------------------------------------------------------------------------
# smarm_unwind_install(ctx: *const Context) -> !
#
#   rdi = the context of the frame that owns the landing pad
#         (src/unwind.rs, `Context`: a magic word, then the DWARF registers
#         0..=16 at 8 + 8 * n, so rax = +8, rdx = +16, rbx = +32, rbp = +56,
#         rsp = +64, r12..r15 = +104..+128, rip = +136)
#
# Loads the frame's callee-saved registers, rax and rdx (the exception and
# selector the personality routine set), then its stack pointer, and jumps
# to the landing pad. The context lives deeper in the stack than the target
# rsp, so every load from it comes before rsp moves.
# ----------------------------------------------------------------------------
    .globl smarm_unwind_install
    .type smarm_unwind_install,@function
    .p2align 4
smarm_unwind_install:
    .cfi_startproc
    mov rbx, [rdi+32]               # rbx of the target frame
    mov rbp, [rdi+56]               # rbp
    mov r12, [rdi+104]              # r12
    mov r13, [rdi+112]              # r13
    mov r14, [rdi+120]              # r14
    mov r15, [rdi+128]              # r15
    mov rax, [rdi+8]                # GR 0: the exception object
    mov rdx, [rdi+16]               # GR 1: the selector
    mov rcx, [rdi+136]              # the landing pad address
    mov rsp, [rdi+64]               # the frame's rsp at its call site
    jmp rcx                         # into the landing pad
    .cfi_endproc
    .size smarm_unwind_install, .-smarm_unwind_install
