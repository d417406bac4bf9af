//! The experiment kinds a sweep can name, each with its own schema, stage
//! parameters and expansion into a plan.

pub mod mnist;
pub mod numbers;

use crate::plan::Plan;
use crate::spec::{Source, SpecError};

/// The values `kind` may take in a sweep file.
pub const KINDS: &[&str] = &[mnist::EXPERIMENT, numbers::EXPERIMENT];

/// A checked sweep, ready to expand.
#[derive(Debug, Clone)]
pub enum Sweep {
    Mnist(mnist::MnistSweep),
    Numbers(numbers::NumbersSweep),
}

impl Sweep {
    pub fn name(&self) -> &str {
        match self {
            Sweep::Mnist(s) => &s.name,
            Sweep::Numbers(s) => &s.name,
        }
    }

    pub fn experiment(&self) -> &'static str {
        match self {
            Sweep::Mnist(_) => mnist::EXPERIMENT,
            Sweep::Numbers(_) => numbers::EXPERIMENT,
        }
    }

    pub fn plan(&self) -> Plan {
        match self {
            Sweep::Mnist(s) => s.plan(),
            Sweep::Numbers(s) => s.plan(),
        }
    }
}

pub(crate) fn parse(source: &Source, kind: &toml::Spanned<String>) -> Result<Sweep, SpecError> {
    match kind.get_ref().as_str() {
        mnist::EXPERIMENT => mnist::parse(source).map(Sweep::Mnist),
        numbers::EXPERIMENT => numbers::parse(source).map(Sweep::Numbers),
        other => Err(source.error_at(
            kind.span(),
            "kind",
            format!(
                "unknown experiment kind {other:?}: expected one of {}",
                KINDS.join(", ")
            ),
        )),
    }
}
