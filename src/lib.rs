//! smarm: a stackful, preemptive actor runtime with Erlang-style supervision.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("smarm supports x86-64 Linux only: its context switch is x86-64 assembly and its stacks, parking and IO use Linux system calls");

pub mod channel;
pub(crate) mod park;
pub mod preempt;
pub(crate) mod scheduler;

