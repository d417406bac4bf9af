//! `temperature:T`: logits divided by T, so the softmax a student distils is
//! flattened by T.

use super::{positive, LogitDefense, LogitRule};

/// The `temperature` defense's rule.
pub struct Temperature;

impl LogitRule for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }

    fn placeholder(&self) -> &'static str {
        "T"
    }

    fn parse(&self, value: &str) -> Result<LogitDefense, String> {
        Ok(LogitDefense::Temperature { t: positive("temperature", value)? })
    }
}
