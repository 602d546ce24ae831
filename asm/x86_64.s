# smarm context switching for x86-64 (System V ABI, Linux).
#
# ============================================================================
# The essay
# ============================================================================
#
# An actor is a closure running on a stack of its own. "Switching" from one
# execution context to another (actor to actor, actor to the scheduler
# thread's own stack, or back) means: save what the System V ABI says a called
# function must preserve, remember where the old stack is, load the new stack
# and restore what was saved on it. Everything else (rax, rcx, rdx, rsi, rdi,
# r8-r11, the vector registers, the flags) is caller-saved: the Rust code that
# calls `smarm_switch` already assumes it is clobbered, as for any call.
#
# Callee-saved state on x86-64 SysV, and therefore saved here:
#   rbx, rbp, r12, r13, r14, r15, rsp  - general purpose
#   MXCSR control bits (rounding mode, exception masks, FTZ/DAZ)
#   the x87 control word (precision, rounding, exception masks)
# The MXCSR status bits (the sticky exception flags, bits 0-5) are not
# callee-saved, so they may flow from one context to the next.
#
# Switching the floating-point control registers is the expensive part
# (`ldmxcsr` and `fldcw` each cost more than the rest of the switch), and the
# new context's control bits almost always equal the old one's. So the
# routine always *saves* both and only *loads* them when they differ.
#
# How a switch returns, and why it does not pay a mispredict. A switch is
# entered by a `call` and must continue at the *other* context's resume
# address. The CPU predicts `ret` targets with a return stack buffer (RSB):
# the address pushed by the matching `call`. The RSB top at the end of a
# switch is the address pushed by *this* side's `call smarm_switch`; the
# actual target is where the *other* side called it from.
#   - If both sides call the switch from different places (a bare ping-pong
#     between a main loop and a coroutine), a `ret` mispredicts every time
#     (about 14 ns instead of about 3 ns per switch on our machines). Ending
#     with `pop; jmp` avoids that mispredict, but leaves the RSB one entry
#     off per switch, so every later `ret` of the resumed code mispredicts.
#   - smarm's scheduler switches from actor to actor from ONE call site
#     (`switch_away` in src/scheduler.rs): the resumed actor was suspended
#     by that same `call`, so the RSB top IS the right target and `ret` is
#     predicted, and the RSB stays balanced for the returns that follow.
#     Measured on our machines, the `ret` ending makes a yield between two
#     actors about 1.5x faster than the `jmp` ending.
# So `smarm_switch` ends in `ret`. `smarm_switch_jmp` ends in `pop; jmp`; it
# exists for the bench that measures the raw floor of a two-site ping-pong
# (`switch/raw_floor`), where it is the faster of the two.

# ============================================================================
# A suspended context
# ============================================================================
#
# The saved stack pointer of a suspended context points at this frame
# (addresses grow upwards; each row is 8 bytes):
#
#        +------------------------------+
#  sp+56 | resume address               |  <- pushed by the `call` of the switch
#  sp+48 | rbp                          |
#  sp+40 | rbx                          |
#  sp+32 | r12                          |
#  sp+24 | r13                          |
#  sp+16 | r14                          |
#  sp+8  | r15                          |
#  sp+0  | MXCSR (4 bytes) | x87 CW (2) | pad (2) |
#        +------------------------------+
#
# The caller of `smarm_switch` had rsp 16-byte aligned before its `call`;
# the call pushed 8 bytes and we push 7 x 8 = 56 more, so sp is 16-byte
# aligned in the saved frame (the `call` pushed 8, total 64 from the aligned
# rsp). After the frame is popped and the resume address is popped too, rsp
# is again exactly what the caller had before its `call`: 16-byte aligned.
#
# ============================================================================
# A fresh context (made by `init_stack` in src/arch/x86_64.rs)
# ============================================================================
#
# A new actor's stack is laid out so that it looks suspended, with
# `smarm_trampoline` as its resume address:
#
#        +------------------------------+  <- top (16-byte aligned)
#  top-8 | smarm_trampoline             |  resume address
# top-16 | rbp = 0                      |  ends frame-pointer walks
# top-24 | rbx = argument               |  handed to the entry function
# top-32 | r12 = entry function         |  extern "C" fn(arg) -> !
# top-40 | r13 = 0                      |
# top-48 | r14 = 0                      |
# top-56 | r15 = 0                      |
# top-64 | MXCSR 0x1F80 | x87 CW 0x037F |  the ABI's default FP environment
#        +------------------------------+  <- saved sp = top-64
#
# The first switch into it pops all of that and jumps to smarm_trampoline
# with rsp = top (16-byte aligned), rbx = argument, r12 = entry function.
#
# ============================================================================
# The trampoline
# ============================================================================
#
# smarm_trampoline calls `entry(argument)` with rsp 16-byte aligned at the
# `call`, as the ABI demands. The entry function never returns (an actor's
# last act is a switch away from its stack, which is then recycled), so a
# `ud2` follows the call to make any return a loud crash.
#
# Its CFI marks the return address as undefined. Unwinders (the one behind
# std::backtrace, gdb, perf) stop there: a backtrace taken inside an actor
# ends cleanly at the actor's entry instead of walking into garbage. Panics
# never unwind through here: the entry function catches every panic.

    .text

# ----------------------------------------------------------------------------
# SWITCH_SAVE_AND_RESTORE: the common body of both switch routines (an
# assembler macro, so the two cannot drift apart). On entry the registers
# are as at the call of the switch (rdi, rsi, rdx as described below); on
# exit the new context's frame has been popped, except its resume address,
# which is at [rsp]. Uses local labels 2 and 3.
# ----------------------------------------------------------------------------
.macro SWITCH_SAVE_AND_RESTORE
    push rbp                        # save callee-saved registers ...
    .cfi_adjust_cfa_offset 8
    push rbx
    .cfi_adjust_cfa_offset 8
    push r12
    .cfi_adjust_cfa_offset 8
    push r13
    .cfi_adjust_cfa_offset 8
    push r14
    .cfi_adjust_cfa_offset 8
    push r15
    .cfi_adjust_cfa_offset 8
    sub rsp, 8                      # ... and room for MXCSR + x87 CW
    .cfi_adjust_cfa_offset 8
    stmxcsr [rsp]                   # save MXCSR (control + status bits)
    fnstcw [rsp + 4]                # save the x87 control word
    mov r8, [rsp]                   # r8 = old MXCSR | old CW << 32 (+ pad)
    mov [rdi], rsp                  # publish the suspended context's sp
    mov rsp, rsi                    # --- now on the new context's stack ---
                                    # (the CFI above describes the pushes of
                                    # the old stack only; nothing unwinds
                                    # through a switch: it calls nothing)
    xor r8, [rsp]                   # r8 = bits that differ, old vs new
    test r8d, 0xFFC0                # do the MXCSR control bits (6-15) differ?
    jz 2f                           # no: skip the expensive load
    ldmxcsr [rsp]                   # yes: load the new MXCSR
2:
    shr r8, 32                      # r8w = x87 CW difference (pad bytes above
    test r8w, r8w                   #   bit 47 are never compared)
    jz 3f                           # same control word: skip the load
    fldcw [rsp + 4]                 # differs: load the new x87 control word
3:
    add rsp, 8                      # pop the FP slot
    pop r15                         # restore callee-saved registers
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
.endm

# ----------------------------------------------------------------------------
# smarm_switch(save: *mut *mut u8, to: *mut u8, arg: usize) -> usize
#
#   rdi = where to store the current context's saved sp
#   rsi = the saved sp of the context to resume
#   rdx = a word handed to the resumed context; it is the return value (rax)
#         of the `smarm_switch` call that suspended that context (a fresh
#         context ignores it)
#
# Clobbers: rax, r8 (caller-saved). Preserves everything the
# ABI makes callee-saved, as described above.
# ----------------------------------------------------------------------------
    .globl smarm_switch
    .type smarm_switch,@function
    .p2align 4
smarm_switch:
    .cfi_startproc
    SWITCH_SAVE_AND_RESTORE
    mov rax, rdx                    # hand `arg` over as the return value
    ret                             # resume (predicted: see the essay)
    .cfi_endproc
    .size smarm_switch, .-smarm_switch

# ----------------------------------------------------------------------------
# smarm_switch_jmp(save: *mut *mut u8, to: *mut u8, arg: usize) -> usize
#
# Same contract and frame as smarm_switch, but ends in `pop rcx; jmp rcx`
# (see the essay). Used only to measure the raw switch floor.
# Clobbers: rax, rcx, r8 (all caller-saved).
# ----------------------------------------------------------------------------
    .globl smarm_switch_jmp
    .type smarm_switch_jmp,@function
    .p2align 4
smarm_switch_jmp:
    .cfi_startproc
    SWITCH_SAVE_AND_RESTORE
    pop rcx                         # rcx = resume address; rsp is now what
                                    # the resumed side had before its call
    mov rax, rdx                    # hand `arg` over as the return value
    jmp rcx                         # resume (a jmp, not a ret: see the essay)
    .cfi_endproc
    .size smarm_switch_jmp, .-smarm_switch_jmp

# ----------------------------------------------------------------------------
# smarm_trampoline: first code a fresh context runs (see the essay).
#
# On entry: rsp = top of the stack (16-byte aligned), rbx = argument,
# r12 = entry function, rbp = 0. It calls entry(argument), which never
# returns.
# ----------------------------------------------------------------------------
    .globl smarm_trampoline
    .type smarm_trampoline,@function
    .p2align 4
smarm_trampoline:
    .cfi_startproc
    .cfi_undefined rip              # no caller: unwinders stop here
    mov rdi, rbx                    # first argument = the context's argument
    call r12                        # rsp is 16-byte aligned at this call
    ud2                             # entry functions never return
    .cfi_endproc
    .size smarm_trampoline, .-smarm_trampoline

# ----------------------------------------------------------------------------
# smarm_call_on_stack(arg: *mut u8, f: extern "C" fn(*mut u8), top: *mut u8)
#
#   rdi = argument for f
#   rsi = function to call; it must not unwind
#   rdx = top of the stack to run f on (16-byte aligned)
#
# Runs f(arg) on another stack and comes back. Used to run stack-hungry work
# (the panic hook's backtrace symbolisation) off an actor's small stack.
# The frame is a classic rbp frame, and its CFI computes the caller's frame
# from rbp, so a backtrace taken inside f walks from the borrowed stack back
# onto the original one:
#
#   original stack                 borrowed stack
#   | return address |             |                  | <- top
#   | saved rbp      | <- rbp      | return into here | <- f's frame ...
#
# Clobbers what a call clobbers; preserves rbp (saved and restored) and rsp.
# ----------------------------------------------------------------------------
    .globl smarm_call_on_stack
    .type smarm_call_on_stack,@function
    .p2align 4
smarm_call_on_stack:
    .cfi_startproc
    push rbp                        # save the caller's frame pointer
    .cfi_def_cfa_offset 16
    .cfi_offset rbp, -16
    mov rbp, rsp                    # rbp = this frame, on the original stack
    .cfi_def_cfa_register rbp       # unwinders: CFA = rbp + 16 from here on
    mov rsp, rdx                    # switch to the borrowed stack (aligned)
    call rsi                        # f(arg); rdi still holds arg
    mov rsp, rbp                    # back to the original stack
    pop rbp                         # restore the caller's frame pointer
    .cfi_def_cfa rsp, 8
    ret                             # a real call/ret pair: predicted well
    .cfi_endproc
    .size smarm_call_on_stack, .-smarm_call_on_stack
