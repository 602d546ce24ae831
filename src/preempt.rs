//! Preemption (placeholder: the no-preempt guard only).
use std::cell::Cell;
use std::marker::PhantomData;

thread_local! {
    static NO_PREEMPT: Cell<u32> = const { Cell::new(0) };
}

/// While a `NoPreempt` lives, the current thread makes no involuntary yield.
/// Guards nest. Voluntary blocking calls still work.
pub struct NoPreempt {
    _not_send: PhantomData<*const ()>,
}

/// Returns a guard during which no involuntary yield happens.
#[inline]
pub fn disable() -> NoPreempt {
    NO_PREEMPT.with(|c| c.set(c.get() + 1));
    NoPreempt { _not_send: PhantomData }
}

impl Drop for NoPreempt {
    #[inline]
    fn drop(&mut self) {
        NO_PREEMPT.with(|c| c.set(c.get() - 1));
    }
}
