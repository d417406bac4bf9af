//! Everything that two subliminal binaries would otherwise both write.
//!
//! A sweep file ([`sweep`], read with [`spec`]'s helpers) names an experiment
//! kind ([`experiments`], each behind one trait) and expands into a [`plan`]:
//! a DAG of content-addressed stages ([`stage`]) plus the measurements that
//! make up its results table.
//! Stages read and write artifacts in a [`store`] (a local folder or any S3
//! bucket), and a stage is done exactly when its [`manifest`] exists and
//! verifies. [`results`] turns finished evaluations into tables, CSV and JSON.
//!
//! Nothing here links libtorch: the scheduler depends on this crate alone.

pub mod broker;
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
pub mod results;
pub mod spec;
pub mod stage;
pub mod stats;
pub mod store;
pub mod sweep;
pub mod tracking;

/// The version of the code that produced an artifact, recorded in every manifest.
pub const CODE_VERSION: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));
