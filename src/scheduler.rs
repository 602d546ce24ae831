//! Placeholder: plain threads only (the actor scheduler replaces this file).
use std::time::Instant;

#[derive(Clone)]
pub(crate) struct ActorRef(());
impl ActorRef {
    pub(crate) fn unpark(&self) {}
    pub(crate) fn unpark_owned(self) {}
    pub(crate) fn ptr_eq(&self, _o: &ActorRef) -> bool {
        false
    }
}
pub(crate) fn current_actor_ref() -> Option<ActorRef> {
    None
}
pub(crate) fn in_actor() -> bool {
    false
}
pub(crate) fn park_actor(_deadline: Option<Instant>) {
    unreachable!()
}
