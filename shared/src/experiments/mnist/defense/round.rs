//! `round:K`: every logit rounded to K decimals (0 to 6).

use super::{LogitDefense, LogitRule};

/// The `round` defense's rule.
pub struct Round;

impl LogitRule for Round {
    fn name(&self) -> &'static str {
        "round"
    }

    fn placeholder(&self) -> &'static str {
        "K"
    }

    fn parse(&self, value: &str) -> Result<LogitDefense, String> {
        match value.parse::<u32>() {
            Ok(decimals) if decimals <= 6 => Ok(LogitDefense::Round { decimals }),
            _ => Err(format!("round:{value}: expected a whole number of decimals from 0 to 6")),
        }
    }
}
