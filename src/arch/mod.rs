//! Architecture seam: the only architecture smarm supports is x86-64
//! (see the `compile_error!` in lib.rs); this module re-exports its routines.
mod x86_64;
pub(crate) use x86_64::*;
