//! The stages of every experiment, written with tch (libtorch), and the code
//! that runs them against the store.
//!
//! One stage is one function from verified input artifacts to output
//! artifacts ([`stages`]), written by its experiment kind ([`experiments`]).
//! [`execute`] wraps it with the store: skip it if its manifest verifies,
//! fetch and check its inputs, run it, write its artifacts and then its
//! manifest. The local runner ([`local`]) and the worker daemon
//! call the same [`execute`], so both modes do the same work.
//!
//! Only this crate (and the binaries that embed it) links libtorch.

pub mod cache;
pub mod daemon;
pub mod device;
pub mod execute;
pub mod experiments;
pub mod fonts;
pub mod gpu;
pub mod judging;
pub mod llm;
pub mod local;
pub mod memory;
pub mod optim;
pub mod progress;
pub mod resume;
pub mod safetensors_io;
pub mod stages;
pub mod tensor_rng;
