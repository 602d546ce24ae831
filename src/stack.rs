//! Actor stacks: carved from large mappings, guarded, pooled.
//!
//! # Layout
//! A *slot* is one guard page followed by the usable stack (which grows down
//! from the slot's end towards the guard):
//!
//! ```text
//!   slot base                                                 slot end = top
//!   | guard page | ......... usable stack (grows downwards) <- |
//! ```
//!
//! Slots of one size are carved from *arenas*: single anonymous mappings of
//! many slots (`MAP_NORESERVE`, so untouched stack costs no memory). Guard
//! pages are installed with `madvise(MADV_GUARD_INSTALL)` where the kernel
//! has it (Linux 6.13+): the guard lives in the page tables, so an arena of
//! a thousand stacks stays one mapping and 200,000 stacks fit easily under
//! the default `vm.max_map_count`. On older kernels the guard is a
//! `mprotect(PROT_NONE)` page (two mappings per stack; detected at run time).
//!
//! # Pooling
//! A stack is carved (one `madvise`) the first time its slot is needed and
//! then recycled forever: spawn and exit only move a pointer between a
//! per-thread cache and, in batches, a global per-size free list. In steady
//! state neither makes a system call or takes a global lock.
//!
//! The global free list keeps at most [`MAX_WARM`] stacks *warm* (their
//! memory resident). [`trim`], called by scheduler threads that have been
//! idle for a while, hands the memory of the others back to the kernel
//! (`MADV_DONTNEED`, which keeps guard-region guards) and moves them to the
//! *cold* list, from which they are reused before new slots are carved.
//!
//! # Who touches what
//! The arena table ([`ARENAS`]) is append-only and read by the SIGSEGV
//! handler (async-signal-safe: atomics only). The free lists are behind one
//! mutex per size class, taken once per batch of [`BATCH`] stacks.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Page size (x86-64 Linux base pages).
pub(crate) const PAGE: usize = 4096;
/// Stacks moved between a thread cache and the global list at a time.
const BATCH: usize = 32;
/// A thread cache holds at most this many stacks per size class.
const THREAD_CACHE: usize = 2 * BATCH;
/// The global list keeps at most this many stacks with resident memory.
pub const MAX_WARM: usize = 1024;
/// Bytes per arena mapping (rounded to a multiple of the slot size).
const ARENA_BYTES: usize = 64 << 20;
/// `madvise` advice numbers not yet in every libc.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// One usable stack of a slot. Owned: exactly one actor uses it at a time.
pub(crate) struct Stack {
    /// Lowest address of the slot (the guard page).
    base: *mut u8,
    /// Index of the size class that owns the slot.
    class: u8,
}

// SAFETY: a Stack is a unique handle to a memory region; moving it between
// threads moves that ownership.
unsafe impl Send for Stack {}

impl Stack {
    /// One past the highest usable byte; 16-byte aligned.
    #[inline]
    pub(crate) fn top(&self) -> *mut u8 {
        let c = class(self.class);
        self.base.wrapping_add(c.slot_size)
    }
}

// ---------------------------------------------------------------------------
// Arena table: read by the fault handler.
// ---------------------------------------------------------------------------

const MAX_ARENAS: usize = 4096;

/// An arena's range and slot size, published once (start last, Release).
struct ArenaInfo {
    start: AtomicUsize,
    len: AtomicUsize,
    slot_size: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const ARENA_INIT: ArenaInfo = ArenaInfo {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    slot_size: AtomicUsize::new(0),
};
static ARENAS: [ArenaInfo; MAX_ARENAS] = [ARENA_INIT; MAX_ARENAS];
static ARENA_COUNT: AtomicUsize = AtomicUsize::new(0);

/// If `addr` lies in the guard page of an actor stack slot, returns the
/// slot's usable stack size. Async-signal-safe (atomic loads only).
pub(crate) fn guard_hit(addr: usize) -> Option<usize> {
    let n = ARENA_COUNT.load(Ordering::Acquire).min(MAX_ARENAS);
    for a in &ARENAS[..n] {
        let start = a.start.load(Ordering::Acquire);
        let len = a.len.load(Ordering::Relaxed);
        if start != 0 && addr >= start && addr < start + len {
            let slot = a.slot_size.load(Ordering::Relaxed);
            return ((addr - start) % slot < PAGE).then_some(slot - PAGE);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Guard installation
// ---------------------------------------------------------------------------

const GUARD_UNKNOWN: u8 = 0;
const GUARD_MADVISE: u8 = 1;
const GUARD_MPROTECT: u8 = 2;
static GUARD_MODE: AtomicU8 = AtomicU8::new(GUARD_UNKNOWN);

/// How guard pages are installed on this kernel: `"madvise"` or `"mprotect"`.
pub fn guard_mode() -> &'static str {
    match GUARD_MODE.load(Ordering::Relaxed) {
        GUARD_MPROTECT => "mprotect",
        GUARD_MADVISE => "madvise",
        _ => "unknown",
    }
}

fn install_guard(page: *mut u8) -> io::Result<()> {
    let mode = GUARD_MODE.load(Ordering::Relaxed);
    if mode != GUARD_MPROTECT {
        // SAFETY: `page` is a page-aligned page of an arena mapping we own.
        let r = unsafe { libc::madvise(page.cast(), PAGE, MADV_GUARD_INSTALL) };
        if r == 0 {
            GUARD_MODE.store(GUARD_MADVISE, Ordering::Relaxed);
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if mode == GUARD_MADVISE || err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
        GUARD_MODE.store(GUARD_MPROTECT, Ordering::Relaxed);
    }
    // SAFETY: as above.
    if unsafe { libc::mprotect(page.cast(), PAGE, libc::PROT_NONE) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------
// Size classes and the global free lists
// ---------------------------------------------------------------------------

const MAX_CLASSES: usize = 64;

struct Class {
    slot_size: usize,
    lists: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    /// Idle stacks whose memory may be resident.
    warm: Vec<usize>,
    /// Idle stacks whose memory was given back.
    cold: Vec<usize>,
    /// The arena being carved: next free slot and its end.
    carve_next: usize,
    carve_end: usize,
    /// Stacks handed to thread caches since the last idle trim: the recent
    /// demand.
    taken: usize,
    /// How many warm stacks an idle trim keeps ([`trim_idle`]).
    keep: usize,
}

static CLASSES: OnceLock<Box<[OnceLock<Class>]>> = OnceLock::new();
static CLASS_LOCK: Mutex<()> = Mutex::new(());

fn classes() -> &'static [OnceLock<Class>] {
    CLASSES.get_or_init(|| (0..MAX_CLASSES).map(|_| OnceLock::new()).collect())
}

#[inline]
fn class(i: u8) -> &'static Class {
    // SAFETY-free: a Stack only exists for an initialised class.
    classes()[i as usize]
        .get()
        .expect("stack class initialised")
}

/// The usable size that a request for `size` bytes of stack gets.
pub(crate) fn round_size(size: usize) -> usize {
    size.max(PAGE).div_ceil(PAGE) * PAGE
}

/// Finds or creates the size class for `size` usable bytes.
pub(crate) fn class_for(size: usize) -> io::Result<u8> {
    let slot = round_size(size) + PAGE;
    let all = classes();
    for (i, c) in all.iter().enumerate() {
        match c.get() {
            Some(c) if c.slot_size == slot => return Ok(i as u8),
            Some(_) => continue,
            None => break,
        }
    }
    let _g = crate::global_lock::lock(&CLASS_LOCK);
    for (i, c) in all.iter().enumerate() {
        if let Some(c) = c.get() {
            if c.slot_size == slot {
                return Ok(i as u8);
            }
            continue;
        }
        let _ = c.set(Class {
            slot_size: slot,
            lists: Mutex::new(Lists::default()),
        });
        return Ok(i as u8);
    }
    Err(io::Error::other(format!(
        "smarm: too many distinct actor stack sizes (at most {MAX_CLASSES}); round the requested sizes"
    )))
}

impl Class {
    /// Moves up to `n` idle or new stacks into `out`.
    fn take(&self, out: &mut Vec<usize>, n: usize) -> io::Result<()> {
        let mut l = crate::global_lock::lock(&self.lists);
        let had = out.len();
        while out.len() < n {
            if let Some(s) = l.warm.pop().or_else(|| l.cold.pop()) {
                out.push(s);
                continue;
            }
            if l.carve_next == l.carve_end {
                let (start, len) = self.new_arena()?;
                l.carve_next = start;
                l.carve_end = start + len;
            }
            let base = l.carve_next;
            install_guard(base as *mut u8)?;
            l.carve_next += self.slot_size;
            out.push(base);
        }
        l.taken += out.len() - had;
        Ok(())
    }

    fn give(&self, stacks: &mut Vec<usize>) {
        let mut l = crate::global_lock::lock(&self.lists);
        l.warm.append(stacks);
    }

    fn new_arena(&self) -> io::Result<(usize, usize)> {
        let slots = (ARENA_BYTES / self.slot_size).max(16);
        let len = slots * self.slot_size;
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = p as usize;
        let i = ARENA_COUNT.load(Ordering::Relaxed);
        if i < MAX_ARENAS {
            let a = &ARENAS[i];
            a.len.store(len, Ordering::Relaxed);
            a.slot_size.store(self.slot_size, Ordering::Relaxed);
            a.start.store(start, Ordering::Release);
            ARENA_COUNT.store(i + 1, Ordering::Release);
        }
        Ok((start, len))
    }

    /// Gives back the memory of warm stacks beyond [`MAX_WARM`], or, for an
    /// idle trim, beyond what recent demand says to keep (see [`trim_idle`]).
    fn trim(&self, idle: bool) -> usize {
        let mut excess = {
            let mut l = crate::global_lock::lock(&self.lists);
            let keep = if idle {
                let demand = l.taken.min(l.warm.len());
                let keep = MAX_WARM.max(demand).max(l.keep / 2);
                l.keep = keep;
                l.taken = 0;
                keep
            } else {
                MAX_WARM
            };
            if l.warm.len() <= keep {
                return 0;
            }
            l.warm.split_off(keep)
        };
        excess.sort_unstable();
        let n = excess.len();
        // Coalesce adjacent slots into one madvise; guards survive DONTNEED
        // (guard regions) or are skipped harmlessly (PROT_NONE pages).
        let mut i = 0;
        while i < n {
            let start = excess[i];
            let mut end = start + self.slot_size;
            let mut j = i + 1;
            while j < n && excess[j] == end {
                end += self.slot_size;
                j += 1;
            }
            // The first slot's guard page stays untouched: start after it.
            // SAFETY: [start+PAGE, end) is memory of idle stacks we own.
            unsafe {
                libc::madvise(
                    (start + PAGE) as *mut libc::c_void,
                    end - start - PAGE,
                    libc::MADV_DONTNEED,
                )
            };
            i = j;
        }
        let mut l = crate::global_lock::lock(&self.lists);
        l.cold.append(&mut excess);
        n
    }
}

/// Counts of the stack pool (all size classes, global lists only; thread
/// caches hold at most a few dozen more per thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle stacks whose memory may be resident.
    pub warm: usize,
    /// Idle stacks whose memory was given back to the kernel.
    pub cold: usize,
}

/// Serialises trims: a trim moves stacks from the warm list to the cold one
/// outside the lists' lock (its `madvise` calls are slow), so counts are only
/// consistent between trims.
static TRIM: Mutex<()> = Mutex::new(());

/// The stack pool's counts (diagnostics and tests); waits for a trim in
/// progress to finish.
pub fn pool_stats() -> PoolStats {
    let _t = crate::global_lock::lock(&TRIM);
    let mut st = PoolStats::default();
    for c in classes().iter().filter_map(|c| c.get()) {
        let l = crate::global_lock::lock(&c.lists);
        st.warm += l.warm.len();
        st.cold += l.cold.len();
    }
    st
}

/// Gives back the memory of idle stacks beyond the warm bound
/// ([`MAX_WARM`]), for every size class, at once. Returns how many stacks
/// were trimmed. Not a hot path.
pub fn trim() -> usize {
    trim_classes(false)
}

/// The trim of a scheduler thread that has been idle for a while: like
/// [`trim`], but it keeps warm as many stacks as were taken from the pool
/// since the previous idle trim (at most as many as are idle), or half of
/// what that trim kept, whichever is more, and never fewer than
/// [`MAX_WARM`]. A workload that comes in bursts (10,000 actors at a time,
/// say) with idle gaps of up to about one trim period then finds its stacks
/// resident at every burst, instead of faulting 9,000 stacks' top pages
/// back in each time; over a longer gap, or once the bursts stop, what is
/// kept halves at each idle trim, down to the bound (10,000 -> 1,024 in
/// four more trims, two seconds at the workers' idle period). Returns how
/// many stacks were trimmed.
pub fn trim_idle() -> usize {
    trim_classes(true)
}

fn trim_classes(idle: bool) -> usize {
    let _t = crate::global_lock::lock(&TRIM);
    classes()
        .iter()
        .filter_map(|c| c.get())
        .map(|c| c.trim(idle))
        .sum()
}

// ---------------------------------------------------------------------------
// Thread caches
// ---------------------------------------------------------------------------

struct Cache {
    /// Per size class, idle stack bases.
    lists: Vec<Vec<usize>>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        for (i, l) in self.lists.iter_mut().enumerate() {
            if !l.is_empty() {
                class(i as u8).give(l);
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache { lists: Vec::new() }) };
}

/// Takes a stack of size class `c`. No system call unless the pool has to
/// carve new slots.
pub(crate) fn alloc(c: u8) -> io::Result<Stack> {
    let taken = CACHE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        let ci = c as usize;
        if cache.lists.len() <= ci {
            cache.lists.resize_with(ci + 1, Vec::new);
        }
        let list = &mut cache.lists[ci];
        if list.is_empty() {
            list.reserve(THREAD_CACHE);
            class(c).take(list, BATCH)?;
        }
        let base = list.pop().expect("refilled");
        let slot = class(c).slot_size;
        if let Some(&next) = list.last() {
            prefetch_top(next + slot);
        }
        if list.len() % WALK_GROUP == 0 && list.len() > WALK_GROUP {
            // The group after `next`: the last WALK_GROUP stacks but one.
            let n = list.len();
            start_walks(&list[n - 1 - WALK_GROUP..n - 1], slot);
        }
        Ok::<usize, io::Error>(base)
    });
    let base = match taken {
        Ok(r) => r?,
        // The thread is exiting: go to the global list directly.
        Err(_) => {
            let mut v = Vec::with_capacity(1);
            class(c).take(&mut v, 1)?;
            v[0]
        }
    };
    Ok(Stack {
        base: base as *mut u8,
        class: c,
    })
}

/// Bytes at the top of a stack that a starting actor touches first (its
/// initial frame and the first frames of its body).
const PREFETCH_TOP: usize = 1024;

/// Starts loading the top of the stack the next `alloc` on this thread will
/// hand out (the last of the thread cache), so that the actor that gets it
/// does not stall on a cold line and page-table walk when it first runs:
/// with thousands of live actors (10,000 sleepers), a pooled stack was last
/// touched milliseconds ago.
#[inline]
fn prefetch_top(top: usize) {
    // A fixed count, so that the loop unrolls into bare prefetch
    // instructions with immediate offsets.
    for line in 0..PREFETCH_TOP / 64 {
        prefetch_line(top - 64 - line * 64);
    }
}

/// Starts loading the cache line at `addr` (of an idle pooled stack).
#[inline(always)]
fn prefetch_line(addr: usize) {
    // SAFETY: `_mm_prefetch` has no memory-safety preconditions: a prefetch
    // never faults (and this is mapped memory of an idle stack).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
}

/// Stacks whose page walks [`start_walks`] starts together.
const WALK_GROUP: usize = 4;

/// Starts the page-table walks for the top pages of `bases` (stacks the
/// next few `alloc`s on this thread hand out), all at once: one prefetch
/// of each top line. With thousands of live actors their stacks' top pages
/// (one per actor) outnumber the second-level TLB's entries, so a pooled
/// stack's page is rarely mapped there, and a prefetch that misses the TLB
/// holds up the core until its walk ends. [`prefetch_top`] one stack ahead
/// therefore waited for one walk per stack; walks started together
/// overlap (the core has several page walkers), so the group's cost is
/// about one walk. Measured (with and without, alternating in one process)
/// on 10,000 actors spawned at once by one actor on one worker: 6-9% less
/// time per round when each sleeps 1-10 ms (`many_timers`), 11-16% less
/// when each yields once; stack `alloc` fell from 17% of the worker's
/// samples to 10% (`perf record -e cpu-clock`).
#[inline]
fn start_walks(bases: &[usize], slot: usize) {
    for &b in bases {
        prefetch_line(b + slot - 64);
    }
}

/// Returns a stack to the pool (dropping a `Stack` does the same).
pub(crate) fn free(s: Stack) {
    drop(s);
}

impl Drop for Stack {
    /// Gives the slot back: to this thread's cache, half of which moves to
    /// the global list when it is full (or straight to the global list when
    /// the thread is exiting).
    fn drop(&mut self) {
        let (c, base) = (self.class, self.base as usize);
        let r = CACHE.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let ci = c as usize;
            if cache.lists.len() <= ci {
                cache.lists.resize_with(ci + 1, Vec::new);
            }
            let list = &mut cache.lists[ci];
            list.push(base);
            if list.len() >= THREAD_CACHE {
                let mut half = list.split_off(THREAD_CACHE - BATCH);
                class(c).give(&mut half);
            }
        });
        if r.is_err() {
            class(c).give(&mut vec![base]);
        }
    }
}
