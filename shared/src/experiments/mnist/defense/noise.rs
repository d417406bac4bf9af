//! `noise:S`: Gaussian noise of standard deviation S added to every logit,
//! drawn from the stage's seed.

use super::{positive, LogitDefense, LogitRule};

/// The `noise` defense's rule.
pub struct Noise;

impl LogitRule for Noise {
    fn name(&self) -> &'static str {
        "noise"
    }

    fn placeholder(&self) -> &'static str {
        "S"
    }

    fn parse(&self, value: &str) -> Result<LogitDefense, String> {
        Ok(LogitDefense::Noise { sigma: positive("noise", value)? })
    }
}
