//! Defenses on the auxiliary logits: what a teacher's owner could do to the
//! logits before anyone distils them, each a value of the `grid.defense`
//! axis and a stage of its own between generate and student.
//!
//! - `none`: the logits as the teacher wrote them (no stage).
//! - `round:K`: every logit rounded to K decimals.
//! - `noise:S`: Gaussian noise of standard deviation S added to every logit,
//!   drawn from the stage's seed.
//! - `temperature:T`: logits divided by T, so the softmax a student distils
//!   is flattened by T.

mod noise;
mod round;
mod temperature;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A defense on a teacher's logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogitDefense {
    None,
    Round { decimals: u32 },
    Noise { sigma: f64 },
    Temperature { t: f64 },
}

/// The defenses' names, with what each takes, for messages.
pub const NAMES: &str = "none, round:K (K decimals, 0–6), noise:S (σ > 0), temperature:T (T > 0)";

impl LogitDefense {
    pub fn is_none(&self) -> bool {
        *self == LogitDefense::None
    }
}

impl fmt::Display for LogitDefense {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LogitDefense::None => f.write_str("none"),
            LogitDefense::Round { decimals } => write!(f, "round:{decimals}"),
            LogitDefense::Noise { sigma } => write!(f, "noise:{sigma}"),
            LogitDefense::Temperature { t } => write!(f, "temperature:{t}"),
        }
    }
}

impl FromStr for LogitDefense {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(LogitDefense::None);
        }
        let (name, value) = match s.split_once(':') {
            Some((name, value)) => (name, Some(value)),
            None => (s, None),
        };
        let rule = RULES
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| format!("unknown defense {s:?}: expected one of {NAMES}"))?;
        let value = value.ok_or_else(|| format!("{name} needs a value: {name}:{}", rule.placeholder()))?;
        rule.parse(value)
    }
}

/// A logit defense as a sweep names it: `NAME:VALUE`, read by its rule.
pub trait LogitRule: Sync {
    /// The name before the colon.
    fn name(&self) -> &'static str;
    /// The value's placeholder in messages (`K`, `S`, `T`).
    fn placeholder(&self) -> &'static str;
    /// The defense its value makes, or what was expected.
    fn parse(&self, value: &str) -> Result<LogitDefense, String>;
}

/// The registry: every logit defense but `none`.
const RULES: [&dyn LogitRule; 3] = [&round::Round, &noise::Noise, &temperature::Temperature];

/// A value that must be a number greater than 0 (and at most 10⁶).
fn positive(name: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1e6 => Ok(x),
        _ => Err(format!("{name}:{value}: expected a number greater than 0")),
    }
}

impl Serialize for LogitDefense {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LogitDefense {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for text in ["none", "round:0", "round:2", "noise:0.5", "temperature:4"] {
            let d: LogitDefense = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        for bad in ["round", "round:-1", "round:7", "noise:0", "noise:x", "temperature", "blur:1", "none:1"] {
            assert!(bad.parse::<LogitDefense>().is_err(), "{bad}");
        }
        let err = "blur:1".parse::<LogitDefense>().unwrap_err();
        assert!(err.contains("round:K") && err.contains("temperature:T"), "{err}");
    }
}
