//! Parking: the one primitive every blocking operation of smarm stands on.
//!
//! A blocking operation (channel receive, join, sleep, IO wait) registers an
//! [`Unparker`] for the current context wherever the event will come from,
//! then calls [`park`] in a loop until its condition holds. The event's
//! producer calls [`Unparker::unpark`]. The protocol is the one of
//! `std::thread::park`: each context owns one wake-up token; `unpark` sets it
//! (and resumes the context if it is parked); `park` consumes it, returning at
//! once if it was already set. Spurious returns are allowed, so callers always
//! re-check their condition.
//!
//! The same calls work for actors and for plain threads:
//! - in an actor, `park` suspends the actor and its scheduler thread runs
//!   others; `unpark` makes it runnable again (on the waker's scheduler
//!   thread when the waker is a worker of the same runtime, no syscall);
//! - on a plain thread, `park` blocks the thread (`std::thread::park`).
//!
//! # Kill
//! In an actor, `park` and `park_until` unwind with a [`crate::Killed`]
//! payload when the actor has been killed (once: code that runs during that
//! unwind may block again normally). Every caller must therefore keep its
//! data structures consistent across a panic out of `park` (deregister
//! waiters in a drop guard).

use std::time::Instant;

use crate::scheduler;

/// Wakes one parked context (actor or plain thread). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Unparker(Inner);

#[derive(Clone)]
enum Inner {
    Actor(crate::cell::ActorRef),
    Thread(std::thread::Thread),
}

impl Unparker {
    /// Sets the context's token and makes it runnable if it is parked.
    #[inline]
    pub(crate) fn unpark(&self) {
        match &self.0 {
            Inner::Actor(a) => a.unpark(),
            Inner::Thread(t) => t.unpark(),
        }
    }

    /// Consumes the handle and wakes its context; saves a reference-count
    /// round trip compared with `unpark` followed by drop.
    #[inline]
    pub(crate) fn unpark_owned(self) {
        self.unpark_owned_as(true)
    }

    /// [`Unparker::unpark_owned`], choosing whether a woken actor takes the
    /// LIFO slot (runs next) or goes to the back of the queue.
    #[inline]
    pub(crate) fn unpark_owned_as(self, lifo: bool) {
        match self.0 {
            Inner::Actor(a) => a.unpark_owned_as(lifo),
            Inner::Thread(t) => t.unpark(),
        }
    }

    /// The actor this handle wakes, if it wakes an actor.
    #[inline]
    pub(crate) fn actor(&self) -> Option<&'static crate::cell::ActorCell> {
        match &self.0 {
            Inner::Actor(a) => Some(a.0),
            Inner::Thread(_) => None,
        }
    }

    /// True when both handles wake the same context.
    pub(crate) fn same_context(&self, other: &Unparker) -> bool {
        match (&self.0, &other.0) {
            (Inner::Actor(a), Inner::Actor(b)) => a.ptr_eq(b),
            (Inner::Thread(a), Inner::Thread(b)) => a.id() == b.id(),
            _ => false,
        }
    }
}

/// The unparker of the calling context (the current actor, else this thread).
#[inline]
pub(crate) fn current() -> Unparker {
    match scheduler::current_actor_ref() {
        Some(a) => Unparker(Inner::Actor(a)),
        None => Unparker(Inner::Thread(std::thread::current())),
    }
}

/// Blocks the calling context until its token is set, then consumes it.
/// May return spuriously. In an actor, may unwind with `Killed`.
#[inline]
pub(crate) fn park() {
    park_in(scheduler::in_actor());
}

/// [`park`] for a caller that already knows whether it runs in an actor
/// (`in_actor`, fixed for a context: an actor stays one when it migrates).
#[inline]
pub(crate) fn park_in(in_actor: bool) {
    if in_actor {
        scheduler::park_actor(None);
    } else {
        std::thread::park();
    }
}

/// Like [`park`], but returns no later than about `deadline`. In an actor
/// the wait is a timer of the runtime's timer mechanism, and the result is
/// true when that timer fired: the deadline has then passed (the runtime
/// clock read when it fired was at or past it), so the caller need not read
/// the clock to know. False when woken otherwise, or on a plain thread.
pub(crate) fn park_until(deadline: Instant) -> bool {
    if scheduler::in_actor() {
        scheduler::park_actor(Some(deadline))
    } else {
        let now = Instant::now();
        if deadline > now {
            std::thread::park_timeout(deadline - now);
        }
        false
    }
}
