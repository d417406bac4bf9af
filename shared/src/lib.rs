//! The core of subliminal: what a sweep is and what it expands to, and
//! where its work is kept.
//!
//! A sweep file ([`sweep`], read with [`spec`]'s helpers) names an experiment
//! kind ([`experiments`], each behind one trait) and expands into a [`plan`]:
//! a DAG of content-addressed stages ([`stage`]) plus the measurements that
//! make up its results table. Stages read and write artifacts in a [`store`]
//! (a local folder or any S3 bucket), and a stage is done exactly when its
//! [`manifest`] exists and verifies. The kinds share the language-model
//! pipeline's settings and stage builders ([`llm`]), the judges ([`judge`])
//! and the statistics ([`stats`]).
//!
//! Nothing here links libtorch, talks to Redis or draws: the broker
//! (`subliminal-broker`), results and tracking (`subliminal-results`) and
//! the stages (`subliminal-worker`) are crates of their own, so that the
//! scheduler links the core and the broker alone.

pub mod chat;
pub mod experiments;
pub mod files;
pub mod judge;
pub mod llm;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod process;
pub mod spec;
pub mod stage;
pub mod stats;
pub mod store;
pub mod sweep;

/// The version of the code that produced an artifact, recorded in every manifest.
pub const CODE_VERSION: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));
