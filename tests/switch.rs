//! The context switch preserves what the SysV ABI makes callee-saved: rbx,
//! rbp, r12-r15, the MXCSR control bits and the x87 control word; and every
//! actor runs with a 16-byte aligned stack.

use std::arch::{asm, global_asm};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use smarm::runtime::{self, Config, Runtime};

const MXCSR_DEFAULT: u32 = 0x1F80;
/// MXCSR control bits (the low six are sticky status flags, not preserved).
const MXCSR_CONTROL: u32 = 0xFFC0;
const X87_DEFAULT: u16 = 0x037F;

fn rt(threads: usize) -> Runtime {
    runtime::init(Config::default().threads(threads))
}

fn get_mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr writes four bytes to a valid location.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn set_mxcsr(v: u32) {
    // SAFETY: ldmxcsr of a valid control value (all exceptions masked).
    unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack)) };
}

fn get_x87_cw() -> u16 {
    let mut v: u16 = 0;
    // SAFETY: fnstcw writes two bytes to a valid location.
    unsafe { asm!("fnstcw [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn set_x87_cw(v: u16) {
    // SAFETY: fldcw of a control word with every exception masked.
    unsafe { asm!("fldcw [{}]", in(reg) &v, options(nostack)) };
}

/// MXCSR with rounding control `rc` (0 nearest, 1 down, 2 up, 3 toward zero)
/// and optionally flush-to-zero.
fn mxcsr_with(rc: u32, ftz: bool) -> u32 {
    MXCSR_DEFAULT | (rc << 13) | if ftz { 1 << 15 } else { 0 }
}

/// x87 control word with rounding control `rc` and precision control `pc`.
fn x87_with(rc: u16, pc: u16) -> u16 {
    (X87_DEFAULT & !0x0F00) | (rc << 10) | (pc << 8)
}

/// 1/3 computed by SSE under the current rounding mode.
fn sse_third() -> f64 {
    std::hint::black_box(1.0f64) / std::hint::black_box(3.0f64)
}

/// Each of many actors installs its own FP environment (some the default),
/// yields many times interleaved with the others, and must find its own
/// environment (and its own rounding behaviour) every time it resumes.
fn fp_environments_survive_interleaving(threads: usize) {
    let rt = rt(threads);
    let bad = Arc::new(AtomicUsize::new(0));
    let b = bad.clone();
    rt.block_on(move || {
        let hs: Vec<_> = (0..64u32)
            .map(|i| {
                let bad = b.clone();
                smarm::spawn(move || {
                    // A fresh actor starts from the ABI default.
                    if get_mxcsr() & MXCSR_CONTROL != MXCSR_DEFAULT || get_x87_cw() != X87_DEFAULT {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    let rc = i % 4;
                    let mx = if i % 8 < 4 {
                        MXCSR_DEFAULT
                    } else {
                        mxcsr_with(rc, i % 3 == 0)
                    };
                    let cw = if i % 2 == 0 {
                        X87_DEFAULT
                    } else {
                        x87_with((i / 2 % 4) as u16, [0, 2, 3][i as usize % 3])
                    };
                    set_mxcsr(mx);
                    set_x87_cw(cw);
                    let third = sse_third();
                    for _ in 0..300 {
                        smarm::yield_now();
                        if get_mxcsr() & MXCSR_CONTROL != mx & MXCSR_CONTROL
                            || get_x87_cw() != cw
                            || sse_third().to_bits() != third.to_bits()
                        {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Leave without restoring: must not leak into the next actor.
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "an actor saw another's FP environment"
    );
    // Actors started after all that still see the defaults.
    let (mx, cw) = rt.block_on(|| smarm::spawn(|| (get_mxcsr(), get_x87_cw())).join().unwrap());
    assert_eq!((mx & MXCSR_CONTROL, cw), (MXCSR_DEFAULT, X87_DEFAULT));
}

#[test]
fn fp_environment_preserved_one_thread() {
    fp_environments_survive_interleaving(1);
}

#[test]
fn fp_environment_preserved_across_threads() {
    fp_environments_survive_interleaving(2);
}

#[test]
fn rounding_mode_changes_results_and_survives_switches() {
    let rt = rt(1);
    let (down, up, near) = rt.block_on(|| {
        let spawn_with = |rc: u32| {
            smarm::spawn(move || {
                set_mxcsr(mxcsr_with(rc, false));
                let mut last = 0.0;
                for _ in 0..100 {
                    smarm::yield_now();
                    last = sse_third();
                }
                set_mxcsr(MXCSR_DEFAULT);
                last
            })
        };
        let d = spawn_with(1);
        let u = spawn_with(2);
        let n = smarm::spawn(|| {
            let mut last = 0.0;
            for _ in 0..100 {
                smarm::yield_now();
                last = sse_third();
            }
            last
        });
        let (d, u, n) = smarm::join!(d, u, n);
        (d.unwrap(), u.unwrap(), n.unwrap())
    });
    assert!(
        down < up,
        "rounding down and up give different results: {down} {up}"
    );
    assert!(down <= near && near <= up);
    assert_eq!(near, 1.0 / 3.0);
}

#[test]
fn block_on_caller_fp_environment_is_untouched() {
    let rt = rt(1);
    let before = (get_mxcsr() & MXCSR_CONTROL, get_x87_cw());
    rt.block_on(|| {
        set_mxcsr(mxcsr_with(3, true));
        set_x87_cw(x87_with(3, 0));
        smarm::yield_now();
    });
    assert_eq!((get_mxcsr() & MXCSR_CONTROL, get_x87_cw()), before);
}

// ---------------------------------------------------------------------------
// General-purpose callee-saved registers
// ---------------------------------------------------------------------------

// regs_across_call(vals: *const [u64; 6], out: *mut [u64; 6], f: extern "C" fn())
// Loads rbx, rbp, r12-r15 from `vals`, calls `f` with an aligned stack, and
// stores the six registers as `f` left them into `out`.
global_asm!(
    ".globl smarm_tests_regs_across_call",
    ".type smarm_tests_regs_across_call,@function",
    "smarm_tests_regs_across_call:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rsi", // out; rsp is now 16-byte aligned (8 + 7 * 8 = 64)
    "mov rax, rdx",
    "mov rbx, [rdi]",
    "mov rbp, [rdi + 8]",
    "mov r12, [rdi + 16]",
    "mov r13, [rdi + 24]",
    "mov r14, [rdi + 32]",
    "mov r15, [rdi + 40]",
    "call rax",
    "pop rsi",
    "mov [rsi], rbx",
    "mov [rsi + 8], rbp",
    "mov [rsi + 16], r12",
    "mov [rsi + 24], r13",
    "mov [rsi + 32], r14",
    "mov [rsi + 40], r15",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size smarm_tests_regs_across_call, .-smarm_tests_regs_across_call",
);

// entry_rsp() -> usize: the caller's rsp just before its `call` (must be
// 16-byte aligned by the ABI).
global_asm!(
    ".globl smarm_tests_entry_rsp",
    ".type smarm_tests_entry_rsp,@function",
    "smarm_tests_entry_rsp:",
    "lea rax, [rsp + 8]",
    "ret",
    ".size smarm_tests_entry_rsp, .-smarm_tests_entry_rsp",
);

extern "C" {
    fn smarm_tests_regs_across_call(vals: *const [u64; 6], out: *mut [u64; 6], f: extern "C" fn());
    fn smarm_tests_entry_rsp() -> usize;
}

extern "C" fn yield_a_few() {
    for _ in 0..3 {
        smarm::yield_now();
    }
}

#[test]
fn callee_saved_registers_survive_heavy_interleaving() {
    for threads in [1, 2] {
        let rt = rt(threads);
        let bad = Arc::new(AtomicUsize::new(0));
        let b = bad.clone();
        rt.block_on(move || {
            let hs: Vec<_> = (0..100u64)
                .map(|i| {
                    let bad = b.clone();
                    smarm::spawn(move || {
                        for round in 0..50u64 {
                            let vals: [u64; 6] = std::array::from_fn(|k| {
                                0x5A5A_0000_0000_0000 ^ (i << 32) ^ (round << 8) ^ k as u64
                            });
                            let mut out = [0u64; 6];
                            // SAFETY: the routine follows the C ABI and only
                            // reads `vals` and writes `out`.
                            unsafe { smarm_tests_regs_across_call(&vals, &mut out, yield_a_few) };
                            if out != vals {
                                bad.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        assert_eq!(
            bad.load(Ordering::SeqCst),
            0,
            "threads={threads}: a register changed across a switch"
        );
    }
}

/// Register values held by the compiler across yields (many live locals).
#[test]
fn compiler_held_values_survive_switches() {
    let rt = rt(2);
    let sums = rt.block_on(|| {
        let hs: Vec<_> = (0..50u64)
            .map(|i| {
                smarm::spawn(move || {
                    let (mut a, mut b, mut c, mut d, mut e, mut f) =
                        (i, i * 2, i * 3, i * 5, i * 7, i * 11);
                    let mut g = i as f64 * 0.5;
                    for k in 0..200u64 {
                        smarm::yield_now();
                        a = a.wrapping_mul(31).wrapping_add(k);
                        b ^= a;
                        c = c.wrapping_add(b);
                        d = d.rotate_left(3) ^ c;
                        e = e.wrapping_sub(d);
                        f = f.wrapping_add(e);
                        g += 1.25;
                    }
                    (a ^ b ^ c ^ d ^ e ^ f, g)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (i, (s, g)) in sums.into_iter().enumerate() {
        let i = i as u64;
        let (mut a, mut b, mut c, mut d, mut e, mut f) = (i, i * 2, i * 3, i * 5, i * 7, i * 11);
        let mut gg = i as f64 * 0.5;
        for k in 0..200u64 {
            a = a.wrapping_mul(31).wrapping_add(k);
            b ^= a;
            c = c.wrapping_add(b);
            d = d.rotate_left(3) ^ c;
            e = e.wrapping_sub(d);
            f = f.wrapping_add(e);
            gg += 1.25;
        }
        assert_eq!(s, a ^ b ^ c ^ d ^ e ^ f);
        assert_eq!(g, gg);
    }
}

// ---------------------------------------------------------------------------
// Stack alignment
// ---------------------------------------------------------------------------

#[repr(align(16))]
struct Aligned16([u8; 16]);

/// True if the stack is correctly aligned here: the rsp at a `call` is a
/// multiple of 16, and a 16-aligned local really is.
#[inline(never)]
fn aligned_here() -> bool {
    // SAFETY: the routine only reads rsp.
    let rsp = unsafe { smarm_tests_entry_rsp() };
    let local = std::hint::black_box(Aligned16([7; 16]));
    let addr = std::hint::black_box(&local) as *const Aligned16 as usize;
    std::hint::black_box(local.0[0]);
    rsp % 16 == 0 && addr % 16 == 0
}

#[inline(never)]
fn aligned_at_depth(n: u32) -> bool {
    let pad = std::hint::black_box([n as u8; 24]);
    let here = aligned_here();
    let deeper = if n == 0 {
        true
    } else {
        aligned_at_depth(n - 1)
    };
    here && deeper && pad[0] == n as u8
}

#[test]
fn stack_is_aligned_in_actors() {
    let rt = rt(2);
    let bad = Arc::new(AtomicUsize::new(0));
    let b = bad.clone();
    rt.block_on(move || {
        if !aligned_here() {
            b.fetch_add(1, Ordering::SeqCst);
        }
        let hs: Vec<_> = (0..100u32)
            .map(|i| {
                let bad = b.clone();
                smarm::spawn(move || {
                    // First thing on a fresh stack, then after switches
                    // (and possibly migrations), at several depths.
                    if !aligned_here() {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    for k in 0..20 {
                        smarm::yield_now();
                        if !aligned_at_depth((i + k) % 7) {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Formatting floats uses SSE code that faults if misaligned.
                    format!("{:.3} {:e}", i as f64 / 7.0, i as f32)
                })
            })
            .collect();
        for h in hs {
            assert!(!h.join().unwrap().is_empty());
        }
    });
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "misaligned stack in an actor"
    );
}

#[test]
fn stack_is_aligned_after_sleep_and_park() {
    let rt = rt(2);
    let ok = rt.block_on(|| {
        let (tx, rx) = smarm::channel::<u32>();
        let h = smarm::spawn(move || {
            let mut ok = aligned_here();
            for _ in 0..10 {
                ok &= rx.recv().is_ok() && aligned_at_depth(3);
            }
            smarm::sleep(std::time::Duration::from_millis(1));
            ok && aligned_here()
        });
        for i in 0..10 {
            tx.send(i).unwrap();
            smarm::yield_now();
        }
        h.join().unwrap()
    });
    assert!(ok);
}
