//! `select!`: wait on several receivers at once.
//!
//! # Protocol
//! 1. Try every arm once, starting at a random arm (so that no ready arm
//!    starves another); the first that is ready (a value, or disconnected)
//!    wins.
//! 2. Otherwise register one [`Unparker`] under one id with the waiter list
//!    of every receiver, re-check every arm for readiness (the re-check half
//!    of the lost wake-up pattern, see `waiters.rs`), park, deregister from
//!    every list, and go back to 1.
//! 3. A list from which our entry was removed has notified us. If we leave
//!    without taking from that receiver (another arm won, or the timeout
//!    passed, or `park` unwound because the actor was killed), we forward
//!    the notification to that list's next waiter.
//!
//! Deregistration happens in a drop guard, so an unwind out of `park`
//! leaves no entry behind.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::waiters::{op_id, park_or_timeout, Waiters};
use super::{Flavor, Receiver, RecvError, TryRecvError};
use crate::park::{self, Unparker};

/// What a receiver offers to `select!`.
pub(crate) trait Selectable {
    fn waiters(&self) -> &Waiters;
    fn is_ready(&self) -> bool;
}

impl<T> Selectable for Receiver<T> {
    fn waiters(&self) -> &Waiters {
        match &self.shared.flavor {
            Flavor::List(c) => &c.receivers,
            Flavor::Array(c) => &c.receivers,
            Flavor::Zero(c) => &c.selects,
        }
    }

    fn is_ready(&self) -> bool {
        match &self.shared.flavor {
            Flavor::List(c) => c.is_ready(),
            Flavor::Array(c) => c.is_ready(),
            Flavor::Zero(c) => c.is_ready(),
        }
    }
}

/// A type-erased receiver, one per `select!` arm.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct __SelectHandle<'a>(&'a dyn Selectable);

#[doc(hidden)]
pub fn __handle<T>(rx: &Receiver<T>) -> __SelectHandle<'_> {
    __SelectHandle(rx)
}

/// Identity with a coercion site, so `recv(rx)` accepts a `Receiver` or any
/// reference to one.
#[doc(hidden)]
pub fn __recv_ref<T>(rx: &Receiver<T>) -> &Receiver<T> {
    rx
}

/// One non-blocking attempt on an arm: `None` when it is not ready.
#[doc(hidden)]
pub fn __try_arm<T>(rx: &Receiver<T>) -> Option<Result<T, RecvError>> {
    match rx.try_recv() {
        Ok(v) => Some(Ok(v)),
        Err(TryRecvError::Disconnected) => Some(Err(RecvError)),
        Err(TryRecvError::Empty) => None,
    }
}

/// How long `select!` may wait.
#[doc(hidden)]
pub enum __Timeout {
    /// No `default` arm.
    Never,
    /// `default => ...`
    Now,
    /// `default(d) => ...`
    After(Duration),
}

/// The state of one `select!` invocation.
#[doc(hidden)]
pub struct __Selector {
    deadline: Option<Instant>,
    now: bool,
    /// Arms (< 64) that were notified and not yet used.
    owed: u64,
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// xorshift64*, seeded per thread from a stack address and the clock.
fn random() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            let local = 0u8;
            x = (op_id(&local) as u64)
                ^ Instant::now().elapsed().as_nanos() as u64
                ^ 0x9E37_79B9_7F4A_7C15;
            x |= 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

impl __Selector {
    #[doc(hidden)]
    pub fn new(t: __Timeout) -> Self {
        let (deadline, now) = match t {
            __Timeout::Never => (None, false),
            __Timeout::Now => (None, true),
            __Timeout::After(d) => (crate::time::deadline_after(d), false),
        };
        __Selector {
            deadline,
            now,
            owed: 0,
        }
    }

    /// The arm to try first.
    #[doc(hidden)]
    pub fn start(&self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            (random() >> 16) as usize % n
        }
    }

    /// Waits until some arm may be ready. Returns false when the select
    /// must give up (its `default` arm runs).
    #[doc(hidden)]
    pub fn block(&mut self, hs: &[__SelectHandle<'_>]) -> bool {
        if self.now {
            return false;
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return false;
            }
        }
        // One byte of this frame per arm: distinct ids for the arms (the
        // same receiver may appear in two arms), unique among live waiters.
        let marker = [0u8; 32];
        assert!(hs.len() <= marker.len(), "select! supports at most 32 arms");
        let mut reg = Registered {
            hs,
            id: op_id(&marker[0]),
            count: 0,
            armed: true,
        };
        let u: Unparker = park::current();
        for (i, h) in hs.iter().enumerate() {
            h.0.waiters().register(reg.id + i, u.clone());
            reg.count += 1;
        }
        if !hs.iter().any(|h| h.0.is_ready()) {
            // Unwinds with `Killed` in a killed actor: `reg` cleans up.
            park_or_timeout(self.deadline);
        }
        self.owed |= reg.finish();
        true
    }

    /// Forwards notifications that were received and not used.
    #[doc(hidden)]
    pub fn finish(&mut self, hs: &[__SelectHandle<'_>], used: Option<usize>) {
        let mut owed = self.owed;
        self.owed = 0;
        while owed != 0 {
            let i = owed.trailing_zeros() as usize;
            owed &= owed - 1;
            if Some(i) != used {
                hs[i].0.waiters().notify_one();
            }
        }
    }
}

struct Registered<'a, 'b> {
    hs: &'a [__SelectHandle<'b>],
    id: usize,
    count: usize,
    armed: bool,
}

impl Registered<'_, '_> {
    /// Deregisters from every list; returns the mask of notified arms
    /// (arms from 64 on forward at once instead).
    fn finish(mut self) -> u64 {
        self.armed = false;
        let mut mask = 0;
        for (i, h) in self.hs.iter().enumerate().take(self.count) {
            if !h.0.waiters().unregister(self.id + i) {
                if i < 64 {
                    mask |= 1 << i;
                } else {
                    h.0.waiters().notify_one();
                }
            }
        }
        mask
    }
}

impl Drop for Registered<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            for (i, h) in self.hs.iter().enumerate().take(self.count) {
                if !h.0.waiters().unregister(self.id + i) {
                    h.0.waiters().notify_one();
                }
            }
        }
    }
}

/// Waits on several receivers at once and runs the arm of the first that
/// is ready, in the syntax of crossbeam-channel's `select!`.
///
/// ```
/// use std::time::Duration;
/// let (tx1, rx1) = smarm::channel::<i32>();
/// let (_tx2, rx2) = smarm::channel::<&str>();
/// tx1.send(7).unwrap();
/// let got = smarm::select! {
///     recv(rx1) -> msg => msg.unwrap(),
///     recv(rx2) -> msg => msg.unwrap().len() as i32,
///     default(Duration::from_secs(1)) => -1,
/// };
/// assert_eq!(got, 7);
/// ```
///
/// - `recv(rx) -> msg => body`: `rx` is borrowed (a `Receiver` or a
///   reference to one); `msg` is a pattern bound to a
///   `Result<T, RecvError>`: a receiver whose senders are all gone and
///   whose queue is empty is ready with `Err(RecvError)`.
/// - `default => body` runs when no arm is ready right now;
///   `default(timeout) => body` when none became ready within `timeout`.
///   Without a `default` arm the select waits as long as it takes.
/// - When several arms are ready, the one taken is chosen at random, so
///   no arm starves.
/// - Bodies run after the select has finished waiting, so `break`,
///   `continue`, `return` and `?` in them act on the surrounding code.
/// - At most 32 `recv` arms.
#[macro_export]
macro_rules! select {
    // Parsing: arms accumulate as (slot, receiver, pattern, body).
    (@parse [$($arms:tt)*] [$($def:tt)*] [$($rs:ident)*]) => {
        $crate::select!(@emit [$($arms)*] [$($def)*])
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] [$r:ident $($rs:ident)*]
        recv($rx:expr) -> $pat:pat => $body:block, $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* ($r, $rx, $pat, $body)] [$($def)*] [$($rs)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] [$r:ident $($rs:ident)*]
        recv($rx:expr) -> $pat:pat => $body:block $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* ($r, $rx, $pat, $body)] [$($def)*] [$($rs)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] [$r:ident $($rs:ident)*]
        recv($rx:expr) -> $pat:pat => $body:expr, $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* ($r, $rx, $pat, $body)] [$($def)*] [$($rs)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] [$r:ident $($rs:ident)*]
        recv($rx:expr) -> $pat:pat => $body:expr) => {
        $crate::select!(@parse [$($arms)* ($r, $rx, $pat, $body)] [$($def)*] [$($rs)*])
    };
    (@parse [$($arms:tt)*] [] [$($rs:ident)*] default => $body:block $(,)?) => {
        $crate::select!(@parse [$($arms)*] [($crate::channel::__Timeout::Now) ($body)] [$($rs)*])
    };
    (@parse [$($arms:tt)*] [] [$($rs:ident)*] default => $body:expr $(,)?) => {
        $crate::select!(@parse [$($arms)*] [($crate::channel::__Timeout::Now) ($body)] [$($rs)*])
    };
    (@parse [$($arms:tt)*] [] [$($rs:ident)*] default($t:expr) => $body:block $(,)?) => {
        $crate::select!(@parse [$($arms)*]
            [($crate::channel::__Timeout::After($t)) ($body)] [$($rs)*])
    };
    (@parse [$($arms:tt)*] [] [$($rs:ident)*] default($t:expr) => $body:expr $(,)?) => {
        $crate::select!(@parse [$($arms)*]
            [($crate::channel::__Timeout::After($t)) ($body)] [$($rs)*])
    };
    (@emit [$($arms:tt)*] []) => {
        $crate::select!(@emit [$($arms)*]
            [($crate::channel::__Timeout::Never) (::core::unreachable!("select! without default ended"))])
    };
    (@emit [$(($r:ident, $rx:expr, $pat:pat, $body:expr))+] [($timeout:expr) ($default:expr)]) => {{
        $( let mut $r = ($crate::channel::__recv_ref(&$rx), ::core::option::Option::None); )+
        {
            let __hs = [$($crate::channel::__handle($r.0)),+];
            let mut __sel = $crate::channel::__Selector::new($timeout);
            loop {
                let __n = __hs.len();
                let __start = __sel.start(__n);
                let mut __got = ::core::option::Option::None::<usize>;
                let mut __j = 0usize;
                while __j < __n && __got.is_none() {
                    let __k = (__start + __j) % __n;
                    let mut __i = 0usize;
                    $(
                        if __i == __k {
                            if let ::core::option::Option::Some(__v) = $crate::channel::__try_arm($r.0) {
                                $r.1 = ::core::option::Option::Some(__v);
                                __got = ::core::option::Option::Some(__i);
                            }
                        }
                        __i += 1;
                    )+
                    let _ = __i;
                    __j += 1;
                }
                if __got.is_some() || !__sel.block(&__hs) {
                    __sel.finish(&__hs, __got);
                    break;
                }
            }
        }
        $(
            if let ::core::option::Option::Some(__v) = $r.1 {
                let $pat = __v;
                $body
            } else
        )+
        { $default }
    }};
    ($($tokens:tt)+) => {
        $crate::select!(@parse [] [] [
            __r0 __r1 __r2 __r3 __r4 __r5 __r6 __r7 __r8 __r9 __r10 __r11 __r12 __r13 __r14 __r15
            __r16 __r17 __r18 __r19 __r20 __r21 __r22 __r23 __r24 __r25 __r26 __r27 __r28 __r29
            __r30 __r31
        ] $($tokens)+)
    };
}
