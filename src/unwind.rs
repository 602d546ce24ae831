//! A caching unwinder for panics on actor stacks.
//!
//! An actor that panics is unwound by the system unwinder (libgcc_s) in two
//! walks over the same frames, a search for the `catch_unwind` of the
//! actor's entry and a cleanup walk that runs destructors, and every step of
//! every walk finds the frame's FDE, decodes its CIE and runs its CFA
//! program from the start of the function. That is ~1,000 instructions a
//! frame and 85-90% of what a panicking actor costs (callgrind). The frames
//! between a panic and the actor's entry are nearly always the same few
//! return addresses (the panic machinery of std, the actor's own code), so
//! this module decodes each return address once, into a [`Row`] (where the
//! caller's frame and registers are), keeps the rows in a per-thread cache,
//! and walks with them.
//!
//! # How it is woven in
//! smarm defines `_Unwind_RaiseException` and `_Unwind_Resume` (asm/
//! unwind_x86_64.s), which the static linker prefers to libgcc_s's for the
//! Rust code of the executable. Both hand over to libgcc_s's own functions
//! (a tail jump, so libgcc sees the original call) unless *all* of these
//! hold, checked before anything is changed:
//! - the calling thread is running an actor (so the walk ends at smarm's
//!   trampoline, whose CFI marks the end of the stack);
//! - every frame up to the handler has an FDE found by `_dl_find_object`,
//!   a CFA program of the forms compilers emit for ordinary functions
//!   (CFA = register + offset; registers saved at CFA + offset), and either
//!   no personality routine or Rust's (`rust_eh_personality`).
//!
//! Rust's personality routine reads and writes our frame context through
//! the `_Unwind_Get*`/`_Unwind_Set*` accessors, which smarm therefore
//! defines too. A context of ours starts with a word that is not a
//! canonical address ([`MAGIC`]); libgcc's starts with a register slot
//! pointer. Every accessor called with a context that is not ours forwards
//! to libgcc_s's function of the same name, so panics on plain threads,
//! backtraces and foreign code are served by the system unwinder as before.
//!
//! The protocol is the Itanium C++ ABI's, with libgcc's conventions for
//! the private words of the exception: `private_1` = 0 (not a forced
//! unwind) and `private_2` = the handler frame's stack pointer at its call
//! site (libgcc's `uw_identify_context`), so that either unwinder can
//! continue the other's cleanup walk.
//!
//! Only on x86-64 Linux with glibc's dynamic libgcc_s (not with
//! `crt-static`, where libgcc's unwinder is linked in statically and the
//! symbols would clash), and only with the `fast-unwind` feature (default).

use core::ffi::{c_int, c_void};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

core::arch::global_asm!(include_str!("../asm/unwind_x86_64.s"));

/// Every Rust panic raised in an actor passes through
/// [`smarm_unwind_raise`], which marks the actor as unwinding: the runtime
/// can tell which actor of a thread unwinds even when an application's
/// panic hook has replaced smarm's.
pub(crate) const SEES_PANIC_RAISES: bool = true;

/// The first word of every [`Context`] of ours. Bits 47..=63 are not all
/// equal, so it is not a canonical x86-64 address: libgcc's context starts
/// with a pointer (or null), which can never equal it.
const MAGIC: u64 = 0x5EA5_0000_0000_A55E;

// Itanium ABI reason codes and actions.
const URC_FATAL_PHASE2_ERROR: u64 = 2;
const URC_FATAL_PHASE1_ERROR: u64 = 3;
const URC_END_OF_STACK: u64 = 5;
const URC_HANDLER_FOUND: c_int = 6;
const URC_INSTALL_CONTEXT: c_int = 7;
const URC_CONTINUE_UNWIND: c_int = 8;
const UA_SEARCH_PHASE: c_int = 1;
const UA_CLEANUP_PHASE: c_int = 2;
const UA_HANDLER_FRAME: c_int = 4;

// DWARF register numbers (x86-64 SysV psABI).
const RSP: usize = 7;
const RIP: usize = 16;
/// The callee-saved registers a frame may have saved, then the return
/// address: the registers a walk tracks, in `Row::saved` order.
const TRACKED: [usize; 7] = [3, 6, 12, 13, 14, 15, RIP];
/// `Row::saved` value: the register keeps its value in the caller.
const SAME: i32 = i32::MIN;
/// `Row::saved` value of the return address: there is no caller.
const UNDEFINED: i32 = i32::MIN + 1;

/// The registers the entry stubs capture (asm/unwind_x86_64.s).
#[repr(C)]
pub struct Regs {
    rbx: u64,
    rbp: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rsp: u64,
    rip: u64,
}

/// What the entry stubs do next: return `code`, or (when `fallback` is not
/// 0) tail-jump to the system function at that address.
#[repr(C)]
pub struct Ret {
    code: u64,
    fallback: usize,
}

/// The exception header of the Itanium ABI (the part we use).
#[repr(C)]
pub struct Exception {
    class: u64,
    cleanup: usize,
    private_1: usize,
    private_2: usize,
}

/// A frame as the personality routine sees it. Layout relied on by
/// `smarm_unwind_install` (asm): `regs` at +8, DWARF numbering.
#[repr(C)]
struct Context {
    magic: u64,
    regs: [u64; 17],
    lsda: u64,
    func_start: u64,
}

impl Context {
    fn new(r: &Regs) -> Context {
        let mut regs = [0u64; 17];
        regs[3] = r.rbx;
        regs[6] = r.rbp;
        regs[RSP] = r.rsp;
        regs[12] = r.r12;
        regs[13] = r.r13;
        regs[14] = r.r14;
        regs[15] = r.r15;
        regs[RIP] = r.rip;
        Context {
            magic: MAGIC,
            regs,
            lsda: 0,
            func_start: 0,
        }
    }
}

/// How to find the caller of a frame that is at a given return address.
#[derive(Clone, Copy)]
struct Row {
    /// The return address this row is for.
    pc: u64,
    /// CFA = regs[cfa_reg] + cfa_off.
    cfa_reg: u8,
    cfa_off: i64,
    /// Per `TRACKED` register: saved at CFA + offset, or `SAME`/`UNDEFINED`.
    saved: [i32; 7],
    personality: usize,
    lsda: u64,
    func_start: u64,
}

/// Sets of the row cache (a power of two).
const SETS: usize = 64;
/// Rows per set.
const WAYS: usize = 4;

/// Decoded rows by return address: `SETS` sets of `WAYS` rows, the set
/// chosen by a hash of the return address, the oldest row of a full set
/// replaced first.
///
/// Not direct-mapped: which slot a return address falls in depends on
/// where the executable was loaded, and with one row per slot two of the
/// dozen return addresses every panic passes (std's panic machinery, the
/// actor's entry) sharing a slot evicted each other on every walk. That
/// happened in some processes and not in others of the same build, which
/// then decoded two rows on every panic all their life: catch_unwind_panics
/// st took ~6 ms instead of ~3.6 in 8 of 20 fresh processes of one build of
/// the bench, in none of 22 with this cache. Here five of them must fall
/// into one set before any is decoded twice.
struct RowCache {
    /// Per set, the return address of each way's row (0: empty): what a
    /// lookup compares, 32 bytes a set.
    tags: [[u64; WAYS]; SETS],
    rows: [[Row; WAYS]; SETS],
    /// Per set, the way its next miss fills (round robin).
    next: [u8; SETS],
}

impl RowCache {
    /// An empty cache, made on the heap (20 KiB would not fit a small actor
    /// stack).
    fn new() -> Box<RowCache> {
        let layout = std::alloc::Layout::new::<RowCache>();
        // SAFETY: the layout is RowCache's, which is not zero-sized.
        let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<RowCache>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `p` is a fresh allocation of RowCache's layout, from the
        // global allocator as `Box` expects. Every field is plain integers
        // (a `Row` too), for which all-zero bytes are a valid value; with
        // all tags 0 no row is read before one is written.
        unsafe { Box::from_raw(p) }
    }

    /// The set of return address `pc`: the top bits of a multiplicative
    /// hash, which depend on every bit of `pc`.
    fn set_of(pc: u64) -> usize {
        (pc.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SETS.trailing_zeros())) as usize
    }

    /// The row for return address `pc`: cached, or made by `decode` and
    /// cached. None (the cache unchanged) when `decode` gives none.
    #[inline]
    fn get(&mut self, pc: u64, decode: impl FnOnce(u64) -> Option<Row>) -> Option<&Row> {
        let s = Self::set_of(pc);
        if pc != 0 {
            if let Some(w) = self.tags[s].iter().position(|&t| t == pc) {
                return Some(&self.rows[s][w]);
            }
        }
        self.fill(s, pc, decode)
    }

    /// A miss: decodes `pc` into the next way of set `s`. Out of line, so
    /// that a hit is a few instructions with no stack frame.
    #[cold]
    #[inline(never)]
    fn fill(&mut self, s: usize, pc: u64, decode: impl FnOnce(u64) -> Option<Row>) -> Option<&Row> {
        let row = decode(pc)?;
        let w = usize::from(self.next[s]) % WAYS;
        self.next[s] = ((w + 1) % WAYS) as u8;
        self.tags[s][w] = row.pc;
        self.rows[s][w] = row;
        Some(&self.rows[s][w])
    }
}

thread_local! {
    /// This thread's row cache. Made by the first unwind on a thread (only
    /// scheduler threads unwind here), freed when the thread ends.
    static CACHE: UnsafeCell<Option<Box<RowCache>>> = const { UnsafeCell::new(None) };
}

// ---------------------------------------------------------------------------
// The system functions we hand over to, resolved once
// ---------------------------------------------------------------------------

/// A lazily resolved function of the next object in the lookup order
/// (libgcc_s for the unwinder, libc for `_dl_find_object`).
struct Next {
    name: &'static core::ffi::CStr,
    addr: AtomicUsize,
}

/// `addr` value: looked up, not found.
const MISSING: usize = 1;

impl Next {
    const fn new(name: &'static core::ffi::CStr) -> Next {
        Next {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The function's address, or None if no later object defines it.
    fn get(&self) -> Option<usize> {
        let mut a = self.addr.load(Ordering::Acquire);
        if a == 0 {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT searches
            // the objects after this one.
            let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
            a = if p == 0 { MISSING } else { p };
            self.addr.store(a, Ordering::Release);
        }
        (a != MISSING).then_some(a)
    }

    /// The address, which must exist (the unwinder symbols of libgcc_s,
    /// linked by std): aborts with a message otherwise.
    fn must(&self) -> usize {
        match self.get() {
            Some(a) => a,
            None => die(b"smarm: the system unwinder lacks a function smarm forwards to\n"),
        }
    }
}

/// Writes `msg` to stderr (async-signal-safe, allocation-free) and aborts.
fn die(msg: &[u8]) -> ! {
    // SAFETY: write(2) of a live buffer.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

static REAL_RAISE: Next = Next::new(c"_Unwind_RaiseException");
static REAL_RESUME: Next = Next::new(c"_Unwind_Resume");
static REAL_GET_LSDA: Next = Next::new(c"_Unwind_GetLanguageSpecificData");
static REAL_GET_IP_INFO: Next = Next::new(c"_Unwind_GetIPInfo");
static REAL_GET_IP: Next = Next::new(c"_Unwind_GetIP");
static REAL_GET_GR: Next = Next::new(c"_Unwind_GetGR");
static REAL_GET_CFA: Next = Next::new(c"_Unwind_GetCFA");
static REAL_GET_REGION_START: Next = Next::new(c"_Unwind_GetRegionStart");
static REAL_GET_TEXT_REL_BASE: Next = Next::new(c"_Unwind_GetTextRelBase");
static REAL_GET_DATA_REL_BASE: Next = Next::new(c"_Unwind_GetDataRelBase");
static REAL_SET_GR: Next = Next::new(c"_Unwind_SetGR");
static REAL_SET_IP: Next = Next::new(c"_Unwind_SetIP");
static DL_FIND_OBJECT: Next = Next::new(c"_dl_find_object");

/// Resolves every system function up front (a runtime starts), so that no
/// `dlsym` runs in the middle of a panic.
pub(crate) fn init() {
    for n in [
        &REAL_RAISE,
        &REAL_RESUME,
        &REAL_GET_LSDA,
        &REAL_GET_IP_INFO,
        &REAL_GET_IP,
        &REAL_GET_GR,
        &REAL_GET_CFA,
        &REAL_GET_REGION_START,
        &REAL_GET_TEXT_REL_BASE,
        &REAL_GET_DATA_REL_BASE,
        &REAL_SET_GR,
        &REAL_SET_IP,
        &DL_FIND_OBJECT,
    ] {
        n.get();
    }
}

extern "C" {
    fn rust_eh_personality();
    fn smarm_unwind_install(ctx: *const Context) -> !;
}

type Personality = unsafe extern "C" fn(c_int, c_int, u64, *mut Exception, *mut Context) -> c_int;

// ---------------------------------------------------------------------------
// Entry points (called by the stubs in asm/unwind_x86_64.s)
// ---------------------------------------------------------------------------

thread_local! {
    /// Raises on actor stacks of this thread that this unwinder handled, and
    /// that it handed over to the system unwinder (`__private::unwind_stats`).
    /// Per thread: a shared counter would be one more contended cache line
    /// per panic.
    static STATS: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// This thread's (raises handled here, raises handed to the system unwinder).
pub(crate) fn stats() -> Option<(usize, usize)> {
    Some(STATS.with(|s| s.get()))
}

/// Hands a raise on an actor stack over to the system unwinder.
fn hand_over() -> Ret {
    STATS.with(|s| s.set((s.get().0, s.get().1 + 1)));
    fallback(&REAL_RAISE)
}

fn fallback(f: &Next) -> Ret {
    Ret {
        code: 0,
        fallback: f.must(),
    }
}

fn ret(code: u64) -> Ret {
    Ret { code, fallback: 0 }
}

/// `_Unwind_RaiseException` for the frame `regs` describes.
///
/// # Safety
/// Called only by the stub, with the exception the caller raised and the
/// registers of the caller's frame.
#[no_mangle]
pub unsafe extern "C" fn smarm_unwind_raise(exc: *mut Exception, regs: &Regs) -> Ret {
    let Some(c) = crate::scheduler::current_cell() else {
        return fallback(&REAL_RAISE);
    };
    // The actor unwinds from here on, whichever unwinder walks it: marked
    // here as well as in smarm's panic hook, which an application may have
    // replaced (see `SEES_PANIC_RAISES`).
    c.unwinding.set(true);
    // Phase 1: find the handler, changing nothing.
    let mut rows = Rows::of_this_thread();
    let mut ctx = Context::new(regs);
    let handler = loop {
        let Some(row) = rows.get(ctx.regs[RIP]) else {
            return hand_over();
        };
        if row.personality != 0 {
            ctx.lsda = row.lsda;
            ctx.func_start = row.func_start;
            // SAFETY: `row.personality` is Rust's personality routine
            // (`run_fde` rejects others); the exception is the caller's.
            let code = unsafe {
                personality(row.personality)(1, UA_SEARCH_PHASE, (*exc).class, exc, &mut ctx)
            };
            match code {
                URC_HANDLER_FOUND => break ctx.regs[RSP],
                URC_CONTINUE_UNWIND => {}
                _ => return ret(URC_FATAL_PHASE1_ERROR),
            }
        }
        // SAFETY: the row describes the live frame `ctx` is at.
        match unsafe { step(&mut ctx, row) } {
            Step::Caller => {}
            Step::End => return ret(URC_END_OF_STACK),
            Step::Unsupported => return hand_over(),
        }
    };
    // SAFETY: the exception header is the caller's to fill.
    unsafe {
        (*exc).private_1 = 0;
        (*exc).private_2 = handler as usize;
    }
    STATS.with(|s| s.set((s.get().0 + 1, s.get().1)));
    // Phase 2: run the cleanups from the same frame on.
    // SAFETY: as above; the frames are still live.
    unsafe { cleanup(exc, Context::new(regs), rows, &REAL_RAISE) }
}

/// `_Unwind_Resume`: continues the cleanup walk from a landing pad's frame.
///
/// # Safety
/// Called only by the stub, from the end of a landing pad, with an exception
/// whose cleanup walk is in progress.
#[no_mangle]
pub unsafe extern "C" fn smarm_unwind_resume(exc: *mut Exception, regs: &Regs) -> Ret {
    // SAFETY: the exception header is readable (its walk is in progress).
    if !crate::scheduler::in_actor() || unsafe { (*exc).private_1 } != 0 {
        return fallback(&REAL_RESUME);
    }
    // SAFETY: as above.
    let r = unsafe {
        cleanup(
            exc,
            Context::new(regs),
            Rows::of_this_thread(),
            &REAL_RESUME,
        )
    };
    if r.fallback == 0 {
        // libgcc aborts here too: the walk lost its handler frame.
        die(b"smarm: unwinding failed to reach its handler frame\n");
    }
    r
}

/// Phase 2 from `ctx` up to the handler frame (`private_2`). Installs the
/// first landing pad a personality routine asks for; hands over to `system`
/// (before any side effect) if a frame is not supported.
unsafe fn cleanup(exc: *mut Exception, mut ctx: Context, mut rows: Rows, system: &Next) -> Ret {
    // SAFETY: the caller's contract.
    let target = unsafe { (*exc).private_2 } as u64;
    loop {
        let Some(row) = rows.get(ctx.regs[RIP]) else {
            return fallback(system);
        };
        let at_handler = ctx.regs[RSP] == target;
        if row.personality != 0 {
            ctx.lsda = row.lsda;
            ctx.func_start = row.func_start;
            let actions = UA_CLEANUP_PHASE | if at_handler { UA_HANDLER_FRAME } else { 0 };
            // SAFETY: see phase 1.
            let code =
                unsafe { personality(row.personality)(1, actions, (*exc).class, exc, &mut ctx) };
            match code {
                // SAFETY: the personality routine set the landing pad and
                // its registers; the frame is live, below us on the stack.
                URC_INSTALL_CONTEXT => unsafe { smarm_unwind_install(&ctx) },
                URC_CONTINUE_UNWIND if !at_handler => {}
                _ => return ret(URC_FATAL_PHASE2_ERROR),
            }
        } else if at_handler {
            return ret(URC_FATAL_PHASE2_ERROR);
        }
        // SAFETY: as in phase 1.
        match unsafe { step(&mut ctx, row) } {
            Step::Caller => {}
            Step::End => return ret(URC_FATAL_PHASE2_ERROR),
            Step::Unsupported => return fallback(system),
        }
    }
}

fn personality(addr: usize) -> Personality {
    // SAFETY: `addr` is the address of `rust_eh_personality`, whose ABI is
    // the personality routine's.
    unsafe { core::mem::transmute::<usize, Personality>(addr) }
}

enum Step {
    Caller,
    End,
    Unsupported,
}

/// Moves `ctx` from its frame to the caller's.
///
/// # Safety
/// `row` must describe the live frame `ctx` is at.
unsafe fn step(ctx: &mut Context, row: &Row) -> Step {
    if row.saved[6] == UNDEFINED {
        return Step::End;
    }
    let cfa = ctx.regs[row.cfa_reg as usize].wrapping_add(row.cfa_off as u64);
    for (k, &reg) in TRACKED.iter().enumerate() {
        match row.saved[k] {
            SAME => {}
            UNDEFINED => return Step::Unsupported,
            off => {
                // SAFETY: the frame's CFI says the register is saved there,
                // inside the live stack. (Reads do not depend on registers
                // already updated: the CFA is computed first.)
                ctx.regs[reg] = unsafe { *(cfa.wrapping_add(off as i64 as u64) as *const u64) };
            }
        }
    }
    ctx.regs[RSP] = cfa;
    Step::Caller
}

// ---------------------------------------------------------------------------
// Rows: the cache and the decoding of CFI
// ---------------------------------------------------------------------------

/// This thread's row cache, taken once per walk (a walk never suspends:
/// only the landing pads it enters can, and each resume starts a new walk).
struct Rows(*mut RowCache);

impl Rows {
    fn of_this_thread() -> Rows {
        CACHE.with(|c| {
            // SAFETY: the cache is this thread's and no reference to it is
            // live outside a walk.
            let cache = unsafe { &mut *c.get() }.get_or_insert_with(RowCache::new);
            Rows(&mut **cache)
        })
    }

    /// The row for return address `pc`, from the cache or decoded; None
    /// when the frame is not one this unwinder supports.
    fn get(&mut self, pc: u64) -> Option<&Row> {
        // SAFETY: this thread's cache, which lives until the thread ends;
        // `&mut self` keeps one row borrowed at a time.
        unsafe { &mut *self.0 }.get(pc, decode)
    }
}

/// glibc's `struct dl_find_object`.
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    link_map: *mut c_void,
    eh_frame: *mut c_void,
    reserved: [u64; 7],
}

type DlFindObjectFn = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;

/// Decodes the row for return address `pc` (the state at `pc - 1`, inside
/// the call instruction).
fn decode(pc: u64) -> Option<Row> {
    let find = DL_FIND_OBJECT.get()?;
    // SAFETY: `find` is glibc's `_dl_find_object`.
    let find = unsafe { core::mem::transmute::<usize, DlFindObjectFn>(find) };
    // SAFETY: an all-zero DlFindObject is valid plain data.
    let mut obj: DlFindObject = unsafe { core::mem::zeroed() };
    // SAFETY: `obj` is a writable result struct; the address is only looked up.
    if unsafe { find(pc.wrapping_sub(1) as *mut c_void, &mut obj) } != 0 || obj.eh_frame.is_null() {
        return None;
    }
    // SAFETY: `eh_frame` is the object's mapped PT_GNU_EH_FRAME segment.
    let fde = unsafe { find_fde(obj.eh_frame as *const u8, pc.wrapping_sub(1))? };
    // SAFETY: `fde` points at a mapped FDE of that object.
    unsafe { run_fde(fde, pc) }
}

/// A cursor over mapped DWARF data.
struct Reader(*const u8);

impl Reader {
    unsafe fn u8(&mut self) -> u8 {
        // SAFETY: the caller keeps the cursor inside mapped CFI.
        let v = unsafe { *self.0 };
        self.0 = self.0.wrapping_add(1);
        v
    }
    unsafe fn fixed<T: Copy>(&mut self) -> T {
        // SAFETY: as above; CFI fields are not aligned.
        let v = unsafe { (self.0 as *const T).read_unaligned() };
        self.0 = self.0.wrapping_add(core::mem::size_of::<T>());
        v
    }
    /// A LEB128 number: its low 64 bits, how many bits it had, its last
    /// byte (whose bit 6 is the sign of a signed one).
    unsafe fn leb(&mut self) -> (u64, u32, u8) {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            // SAFETY: as above.
            let b = unsafe { self.u8() };
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return (v, shift, b);
            }
        }
    }
    unsafe fn uleb(&mut self) -> u64 {
        // SAFETY: as above.
        unsafe { self.leb() }.0
    }
    unsafe fn sleb(&mut self) -> i64 {
        // SAFETY: as above.
        let (v, bits, last) = unsafe { self.leb() };
        if bits < 64 && last & 0x40 != 0 {
            (v | (u64::MAX << bits)) as i64
        } else {
            v as i64
        }
    }
    /// A pointer in `DW_EH_PE` encoding `enc` (absolute or pc-relative,
    /// optionally indirect). None for encodings ordinary code never uses.
    unsafe fn pointer(&mut self, enc: u8) -> Option<u64> {
        let at = self.0 as u64;
        // SAFETY: as above.
        let v = unsafe {
            match enc & 0x0f {
                0x00 => self.fixed::<u64>(),
                0x01 => self.uleb(),
                0x02 => u64::from(self.fixed::<u16>()),
                0x03 => u64::from(self.fixed::<u32>()),
                0x04 => self.fixed::<u64>(),
                0x09 => self.sleb() as u64,
                0x0a => self.fixed::<i16>() as i64 as u64,
                0x0b => self.fixed::<i32>() as i64 as u64,
                0x0c => self.fixed::<i64>() as u64,
                _ => return None,
            }
        };
        let v = match enc & 0x70 {
            0x00 => v,
            0x10 => at.wrapping_add(v),
            _ => return None,
        };
        if enc & 0x80 != 0 {
            // SAFETY: an indirect pointer points at a mapped word (GOT).
            Some(unsafe { *(v as *const u64) })
        } else {
            Some(v)
        }
    }
}

/// Finds the FDE covering `addr` through the object's `.eh_frame_hdr`
/// search table.
///
/// # Safety
/// `hdr` must point at a mapped `.eh_frame_hdr`.
unsafe fn find_fde(hdr: *const u8, addr: u64) -> Option<*const u8> {
    // SAFETY: the header's fixed fields are mapped.
    let (version, ptr_enc, count_enc, table_enc) =
        unsafe { (*hdr, *hdr.add(1), *hdr.add(2), *hdr.add(3)) };
    // The table must be sorted 4-byte offsets from the header.
    if version != 1 || table_enc != 0x3b {
        return None;
    }
    let mut r = Reader(hdr.wrapping_add(4));
    // SAFETY: the encoded fields follow the fixed ones.
    unsafe { r.pointer(ptr_enc)? };
    // SAFETY: as above.
    let count = unsafe { r.pointer(count_enc)? } as usize;
    let table = r.0 as *const [i32; 2];
    let base = hdr as u64;
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // SAFETY: mid < count: inside the table.
        let start = base.wrapping_add(unsafe { (*table.add(mid))[0] } as i64 as u64);
        if start <= addr {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return None;
    }
    // SAFETY: lo - 1 < count.
    let fde = base.wrapping_add(unsafe { (*table.add(lo - 1))[1] } as i64 as u64);
    Some(fde as *const u8)
}

/// Register rules while a CFA program runs.
#[derive(Clone, Copy)]
struct State {
    cfa_reg: u8,
    cfa_off: i64,
    saved: [i32; 7],
}

fn tracked(reg: u64) -> Option<usize> {
    TRACKED.iter().position(|&r| r as u64 == reg)
}

/// Decodes the FDE at `fde` (its CIE included) into the row for `pc`.
///
/// # Safety
/// `fde` must point at a mapped FDE.
unsafe fn run_fde(fde: *const u8, pc: u64) -> Option<Row> {
    // SAFETY (whole body): every read stays inside the FDE and its CIE, as
    // their length fields delimit them.
    unsafe {
        let mut r = Reader(fde);
        let len = r.fixed::<u32>();
        if len == 0 || len == u32::MAX {
            return None;
        }
        let fde_end = fde.wrapping_add(4 + len as usize);
        let cie_ptr_at = r.0;
        let cie_off = r.fixed::<u32>();
        if cie_off == 0 {
            return None; // a CIE, not an FDE
        }
        let cie = cie_ptr_at.wrapping_sub(cie_off as usize);

        // The CIE.
        let mut c = Reader(cie);
        let cie_len = c.fixed::<u32>();
        if cie_len == 0 || cie_len == u32::MAX {
            return None;
        }
        let cie_end = cie.wrapping_add(4 + cie_len as usize);
        if c.fixed::<u32>() != 0 {
            return None;
        }
        let version = c.u8();
        if version != 1 && version != 3 {
            return None;
        }
        let aug_start = c.0;
        while *c.0 != 0 {
            c.0 = c.0.add(1);
        }
        let aug = core::slice::from_raw_parts(aug_start, c.0 as usize - aug_start as usize);
        c.0 = c.0.add(1);
        let code_align = c.uleb();
        let data_align = c.sleb();
        let ra_reg = if version == 1 {
            u64::from(c.u8())
        } else {
            c.uleb()
        };
        if ra_reg != RIP as u64 || aug.first() != Some(&b'z') {
            return None;
        }
        let aug_len = c.uleb();
        let aug_data_end = c.0.wrapping_add(aug_len as usize);
        let (mut fde_enc, mut lsda_enc, mut personality) = (0u8, 0xffu8, 0usize);
        for &a in &aug[1..] {
            match a {
                b'R' => fde_enc = c.u8(),
                b'L' => lsda_enc = c.u8(),
                b'P' => {
                    let enc = c.u8();
                    personality = c.pointer(enc)? as usize;
                }
                _ => return None, // 'S' (signal frames) and the rest
            }
        }
        c.0 = aug_data_end;
        if personality != 0 && personality != rust_eh_personality as unsafe extern "C" fn() as usize
        {
            return None;
        }

        // The FDE's range and LSDA.
        let func_start = r.pointer(fde_enc)?;
        let range = r.pointer(fde_enc & 0x0f)?;
        if !(func_start..func_start.wrapping_add(range)).contains(&pc.wrapping_sub(1)) {
            return None;
        }
        let fde_aug_len = r.uleb();
        let fde_aug_end = r.0.wrapping_add(fde_aug_len as usize);
        let lsda = if lsda_enc != 0xff {
            r.pointer(lsda_enc)?
        } else {
            0
        };
        r.0 = fde_aug_end;

        // The CFA programs: the CIE's initial rules, then the FDE's up to pc.
        let mut st = State {
            cfa_reg: RSP as u8,
            cfa_off: 0,
            saved: [SAME; 7],
        };
        let mut loc = func_start;
        let ctx = Cfa {
            code_align,
            data_align,
            fde_enc,
        };
        ctx.run(&mut c, cie_end, &mut loc, u64::MAX, &mut st, None)?;
        let initial = st;
        ctx.run(&mut r, fde_end, &mut loc, pc, &mut st, Some(&initial))?;
        Some(Row {
            pc,
            cfa_reg: st.cfa_reg,
            cfa_off: st.cfa_off,
            saved: st.saved,
            personality,
            lsda,
            func_start,
        })
    }
}

/// The parameters a CFA program is interpreted with.
struct Cfa {
    code_align: u64,
    data_align: i64,
    fde_enc: u8,
}

const STATE_STACK: usize = 8;

impl Cfa {
    /// Runs instructions from `r` to `end` while `loc < pc`. None on an
    /// instruction this unwinder does not support for a tracked register.
    ///
    /// # Safety
    /// `r..end` must be a mapped CFA program.
    unsafe fn run(
        &self,
        r: &mut Reader,
        end: *const u8,
        loc: &mut u64,
        pc: u64,
        st: &mut State,
        initial: Option<&State>,
    ) -> Option<()> {
        let mut stack = [*st; STATE_STACK];
        let mut depth = 0;
        let set = |st: &mut State, reg: u64, off: i64| {
            if let Some(k) = tracked(reg) {
                st.saved[k] = i32::try_from(off).ok().filter(|&o| o > UNDEFINED)?;
            }
            Some(())
        };
        let restore = |st: &mut State, reg: u64| {
            if let Some(k) = tracked(reg) {
                st.saved[k] = initial.map_or(SAME, |i| i.saved[k]);
            }
        };
        // SAFETY (whole loop): the caller's contract.
        unsafe {
            while r.0 < end && *loc < pc {
                let op = r.u8();
                match op >> 6 {
                    1 => *loc += u64::from(op & 0x3f) * self.code_align,
                    2 => {
                        let off = r.uleb() as i64 * self.data_align;
                        set(st, u64::from(op & 0x3f), off)?;
                    }
                    3 => restore(st, u64::from(op & 0x3f)),
                    _ => match op {
                        0x00 => {}
                        0x01 => *loc = r.pointer(self.fde_enc)?,
                        0x02 => *loc += u64::from(r.u8()) * self.code_align,
                        0x03 => *loc += u64::from(r.fixed::<u16>()) * self.code_align,
                        0x04 => *loc += u64::from(r.fixed::<u32>()) * self.code_align,
                        0x05 => {
                            let reg = r.uleb();
                            let off = r.uleb() as i64 * self.data_align;
                            set(st, reg, off)?;
                        }
                        0x06 => {
                            let reg = r.uleb();
                            restore(st, reg);
                        }
                        0x07 => {
                            let reg = r.uleb();
                            if let Some(k) = tracked(reg) {
                                st.saved[k] = UNDEFINED;
                            }
                        }
                        0x08 => {
                            let reg = r.uleb();
                            if let Some(k) = tracked(reg) {
                                st.saved[k] = SAME;
                            }
                        }
                        0x09 => {
                            let reg = r.uleb();
                            r.uleb();
                            if tracked(reg).is_some() {
                                return None;
                            }
                        }
                        0x0a => {
                            if depth == STATE_STACK {
                                return None;
                            }
                            stack[depth] = *st;
                            depth += 1;
                        }
                        0x0b => {
                            if depth == 0 {
                                return None;
                            }
                            depth -= 1;
                            // The CFA rule is part of the remembered state.
                            *st = stack[depth];
                        }
                        0x0c => {
                            st.cfa_reg = u8::try_from(r.uleb()).ok()?;
                            st.cfa_off = r.uleb() as i64;
                        }
                        0x0d => st.cfa_reg = u8::try_from(r.uleb()).ok()?,
                        0x0e => st.cfa_off = r.uleb() as i64,
                        0x10 | 0x16 => {
                            // (val_)expression: fine for an untracked register.
                            let reg = r.uleb();
                            let len = r.uleb();
                            r.0 = r.0.wrapping_add(len as usize);
                            if tracked(reg).is_some() {
                                return None;
                            }
                        }
                        0x11 => {
                            let reg = r.uleb();
                            let off = r.sleb() * self.data_align;
                            set(st, reg, off)?;
                        }
                        0x12 => {
                            st.cfa_reg = u8::try_from(r.uleb()).ok()?;
                            st.cfa_off = r.sleb() * self.data_align;
                        }
                        0x13 => st.cfa_off = r.sleb() * self.data_align,
                        0x14 | 0x15 => {
                            let reg = r.uleb();
                            if op == 0x14 {
                                r.uleb();
                            } else {
                                r.sleb();
                            }
                            if tracked(reg).is_some() {
                                return None;
                            }
                        }
                        0x2e => {
                            // GNU_args_size: no effect on x86-64 landing pads.
                            r.uleb();
                        }
                        _ => return None, // def_cfa_expression and the rest
                    },
                }
            }
        }
        // A CFA computed from a register the walk does not track.
        if !matches!(st.cfa_reg as usize, 3 | 6 | RSP | 12..=15) {
            return None;
        }
        Some(())
    }
}

// ---------------------------------------------------------------------------
// The context accessors (called by the personality routine)
// ---------------------------------------------------------------------------

/// `ctx` as ours, or None for a libgcc context.
///
/// # Safety
/// `ctx` must be a live unwind context (ours or libgcc's).
unsafe fn ours<'a>(ctx: *mut c_void) -> Option<&'a mut Context> {
    // SAFETY: both kinds of context start with a readable word.
    if unsafe { *(ctx as *const u64) } == MAGIC {
        // SAFETY: the magic word marks one of our contexts.
        Some(unsafe { &mut *(ctx as *mut Context) })
    } else {
        None
    }
}

macro_rules! forward {
    ($next:expr, fn($($t:ty),*) -> $r:ty, $($a:expr),*) => {{
        // SAFETY: the symbol is libgcc_s's function of that signature.
        let f = unsafe { core::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>($next.must()) };
        // SAFETY: forwarded with the caller's arguments.
        unsafe { f($($a),*) }
    }};
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetLanguageSpecificData(ctx: *mut c_void) -> *mut c_void {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => c.lsda as *mut c_void,
        None => forward!(REAL_GET_LSDA, fn(*mut c_void) -> *mut c_void, ctx),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context, `before` writable.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetIPInfo(ctx: *mut c_void, before: *mut c_int) -> usize {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => {
            // SAFETY: the ABI contract.
            unsafe { *before = 0 };
            c.regs[RIP] as usize
        }
        None => forward!(
            REAL_GET_IP_INFO,
            fn(*mut c_void, *mut c_int) -> usize,
            ctx,
            before
        ),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetIP(ctx: *mut c_void) -> usize {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => c.regs[RIP] as usize,
        None => forward!(REAL_GET_IP, fn(*mut c_void) -> usize, ctx),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetCFA(ctx: *mut c_void) -> usize {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => c.regs[RSP] as usize,
        None => forward!(REAL_GET_CFA, fn(*mut c_void) -> usize, ctx),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetGR(ctx: *mut c_void, index: c_int) -> usize {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => usize::try_from(index)
            .ok()
            .and_then(|i| c.regs.get(i))
            .map_or(0, |&v| v as usize),
        None => forward!(REAL_GET_GR, fn(*mut c_void, c_int) -> usize, ctx, index),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetRegionStart(ctx: *mut c_void) -> usize {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => c.func_start as usize,
        None => forward!(REAL_GET_REGION_START, fn(*mut c_void) -> usize, ctx),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetTextRelBase(ctx: *mut c_void) -> usize {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        // As libgcc on x86-64: no text-relative base.
        Some(_) => 0,
        None => forward!(REAL_GET_TEXT_REL_BASE, fn(*mut c_void) -> usize, ctx),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_GetDataRelBase(ctx: *mut c_void) -> usize {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        // As libgcc on x86-64: no data-relative base.
        Some(_) => 0,
        None => forward!(REAL_GET_DATA_REL_BASE, fn(*mut c_void) -> usize, ctx),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_SetGR(ctx: *mut c_void, index: c_int, value: usize) {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => {
            if let Some(r) = usize::try_from(index).ok().and_then(|i| c.regs.get_mut(i)) {
                *r = value as u64;
            }
        }
        None => forward!(
            REAL_SET_GR,
            fn(*mut c_void, c_int, usize) -> (),
            ctx,
            index,
            value
        ),
    }
}

/// # Safety
/// Unwinder ABI: `ctx` is a live unwind context.
#[no_mangle]
pub unsafe extern "C" fn _Unwind_SetIP(ctx: *mut c_void, ip: usize) {
    // SAFETY: the ABI contract.
    match unsafe { ours(ctx) } {
        Some(c) => c.regs[RIP] = ip as u64,
        None => forward!(REAL_SET_IP, fn(*mut c_void, usize) -> (), ctx, ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T>(bytes: &[u8], f: impl FnOnce(&mut Reader) -> T) -> (T, usize) {
        let mut r = Reader(bytes.as_ptr());
        let v = f(&mut r);
        (v, r.0 as usize - bytes.as_ptr() as usize)
    }

    /// `n` return addresses that all fall in one set of the row cache.
    fn colliding(n: usize) -> Vec<u64> {
        let set = RowCache::set_of(0x55_5555_1234);
        (0x55_5555_1234u64..)
            .filter(|&pc| RowCache::set_of(pc) == set)
            .take(n)
            .collect()
    }

    fn fake_row(pc: u64) -> Option<Row> {
        Some(Row {
            pc,
            cfa_reg: RSP as u8,
            cfa_off: pc as i64,
            saved: [SAME; 7],
            personality: 0,
            lsda: 0,
            func_start: 0,
        })
    }

    #[test]
    fn the_row_cache_keeps_as_many_colliding_addresses_as_it_has_ways() {
        let mut cache = RowCache::new();
        let pcs = colliding(WAYS);
        let mut decoded = 0;
        for _ in 0..3 {
            for &pc in &pcs {
                let row = cache
                    .get(pc, |pc| {
                        decoded += 1;
                        fake_row(pc)
                    })
                    .expect("a row");
                assert_eq!((row.pc, row.cfa_off), (pc, pc as i64));
            }
        }
        assert_eq!(decoded, WAYS, "each address is decoded once");
    }

    #[test]
    fn a_full_set_replaces_its_oldest_row() {
        let mut cache = RowCache::new();
        let pcs = colliding(WAYS + 1);
        for &pc in &pcs {
            cache.get(pc, fake_row).expect("a row");
        }
        // The newest WAYS are cached; the first was replaced.
        for &pc in &pcs[1..] {
            let row = cache
                .get(pc, |_| panic!("{pc:#x} was evicted"))
                .expect("a row");
            assert_eq!(row.pc, pc);
        }
        let mut decoded = false;
        let row = cache
            .get(pcs[0], |pc| {
                decoded = true;
                fake_row(pc)
            })
            .expect("a row");
        assert!(decoded && row.pc == pcs[0]);
    }

    #[test]
    fn a_frame_that_cannot_be_decoded_is_not_cached() {
        let mut cache = RowCache::new();
        let pc = 0x7f00_0000_1000;
        assert!(cache.get(pc, |_| None).is_none());
        assert!(cache.get(pc, |_| None).is_none(), "looked up again");
        // An empty row (pc 0) never matches a lookup of address 0.
        let mut decoded = 0;
        for _ in 0..2 {
            assert!(cache
                .get(0, |_| {
                    decoded += 1;
                    None
                })
                .is_none());
        }
        assert_eq!(decoded, 2);
    }

    #[test]
    fn leb128_numbers_decode_as_dwarf_defines_them() {
        // SAFETY (all): each reader stays inside its byte slice.
        assert_eq!(
            read(&[0xe5, 0x8e, 0x26], |r| unsafe { r.uleb() }),
            (624_485, 3)
        );
        assert_eq!(read(&[0x02], |r| unsafe { r.uleb() }), (2, 1));
        assert_eq!(read(&[0x7f], |r| unsafe { r.sleb() }), (-1, 1));
        assert_eq!(read(&[0x80, 0x7f], |r| unsafe { r.sleb() }), (-128, 2));
        assert_eq!(
            read(&[0xc0, 0xbb, 0x78], |r| unsafe { r.sleb() }),
            (-123_456, 3)
        );
        assert_eq!(read(&[0x3f], |r| unsafe { r.sleb() }), (63, 1));
    }

    #[test]
    fn pointers_decode_absolute_and_pc_relative() {
        let bytes = 0x10u32.to_le_bytes();
        let base = bytes.as_ptr() as u64;
        // pc-relative signed 4-byte (0x1b): relative to the field's address.
        let (v, n) = read(&bytes, |r| unsafe { r.pointer(0x1b) });
        assert_eq!((v, n), (Some(base + 0x10), 4));
        // absolute unsigned 4-byte (0x03).
        assert_eq!(read(&bytes, |r| unsafe { r.pointer(0x03) }).0, Some(0x10));
        // data-relative (0x3b) is not an encoding ordinary FDEs use here.
        assert_eq!(read(&bytes, |r| unsafe { r.pointer(0x3b) }).0, None);
    }

    #[test]
    fn a_context_of_ours_is_told_from_a_pointer() {
        let regs = Regs {
            rbx: 1,
            rbp: 2,
            r12: 3,
            r13: 4,
            r14: 5,
            r15: 6,
            rsp: 7,
            rip: 8,
        };
        let mut ctx = Context::new(&regs);
        // SAFETY: a live context of ours.
        assert!(unsafe { ours((&mut ctx as *mut Context).cast()) }.is_some());
        // A libgcc context starts with a register-slot pointer (or null).
        let mut slot = 0u64;
        let mut foreign: [*mut u64; 4] = [
            &mut slot,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        // SAFETY: a readable first word.
        assert!(unsafe { ours(foreign.as_mut_ptr().cast()) }.is_none());
        assert_eq!(ctx.regs[RIP], 8);
        assert_eq!(ctx.regs[RSP], 7);
    }
}
