//! Stages and their content-addressed ids.
//!
//! A stage id is the SHA-256 of the experiment, the stage kind, the stage's
//! parameters in canonical JSON (keys sorted, no whitespace) and the ids of its
//! inputs. Equal work therefore gets equal ids in every trial, sweep, process
//! and machine: one teacher serves many students, and a re-submitted or
//! extended sweep finds its finished stages already in the store.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The content address of a stage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId([u8; 32]);

impl StageId {
    /// The first 12 hex digits: enough to tell stages apart in a table or a log.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StageId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StageId({})", self.short())
    }
}

impl FromStr for StageId {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes =
            hex::decode(s).map_err(|e| anyhow::anyhow!("stage id {s:?} is not hex: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("stage id {s:?} is not 64 hex digits"))?;
        Ok(Self(bytes))
    }
}

impl Serialize for StageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a stage does, named by its experiment kind: `teacher`, `generate`,
/// `judge`, ... . The name is part of the stage id, so it never changes for
/// work that has been done; each kind lists its own (see
/// [`crate::stage_kinds!`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StageKind(Cow<'static, str>);

impl StageKind {
    /// The longest name a stage kind may have.
    pub const MAX_LEN: usize = 32;

    /// A kind's own stage name, fixed at compile time.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// A stage kind read from outside (a task body, a manifest): lowercase
    /// ASCII letters, digits, '-' and '_'.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        anyhow::ensure!(
            ok,
            "stage kind {name:?} is not a stage name: expected 1 to {} lowercase letters, digits, '-' or '_'",
            Self::MAX_LEN
        );
        Ok(Self(Cow::Owned(name.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StageKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StageKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Declares an experiment kind's stages as an enum, with the [`StageKind`]
/// each one is named by, so that a kind's code matches on its own stages and
/// the names live in one place.
///
/// ```
/// subliminal_shared::stage_kinds! {
///     /// The stages of a two-step experiment.
///     pub enum Stage { Train = "train", Score = "score" }
/// }
/// assert_eq!(Stage::Train.kind().as_str(), "train");
/// assert_eq!(Stage::of(&Stage::Score.kind()), Some(Stage::Score));
/// ```
#[macro_export]
macro_rules! stage_kinds {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every stage of the kind, in pipeline order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name the stage is known by in ids, tasks and manifests.
            pub const fn kind(self) -> $crate::stage::StageKind {
                match self {
                    $($name::$variant => $crate::stage::StageKind::from_static($text)),+
                }
            }

            /// The stage a [`StageKind`]($crate::stage::StageKind) names, if it is one of these.
            pub fn of(kind: &$crate::stage::StageKind) -> Option<Self> {
                match kind.as_str() {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Every stage kind, in pipeline order.
            pub fn kinds() -> Vec<$crate::stage::StageKind> {
                Self::ALL.iter().map(|s| s.kind()).collect()
            }
        }
    };
}

/// One unit of work: what to run, with which parameters, on which inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    pub id: StageId,
    pub experiment: String,
    pub kind: StageKind,
    pub params: serde_json::Value,
    pub inputs: Vec<StageId>,
}

impl StageSpec {
    /// Builds a stage and derives its id from everything that defines its work.
    pub fn new(
        experiment: &str,
        kind: StageKind,
        params: &impl Serialize,
        inputs: Vec<StageId>,
    ) -> Self {
        let params = serde_json::to_value(params).expect("stage parameters serialise to JSON");
        let id = stage_id(experiment, &kind, &params, &inputs);
        Self {
            id,
            experiment: experiment.to_owned(),
            kind,
            params,
            inputs,
        }
    }

    /// The parameters as the experiment's own type.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.params.clone()).map_err(|e| {
            anyhow::anyhow!(
                "stage {} ({} {}) has parameters this worker cannot read: {e}",
                self.id.short(),
                self.experiment,
                self.kind
            )
        })
    }

    /// True when the id matches the content: a task body that was altered is refused.
    pub fn verify_id(&self) -> bool {
        stage_id(&self.experiment, &self.kind, &self.params, &self.inputs) == self.id
    }
}

fn stage_id(
    experiment: &str,
    kind: &StageKind,
    params: &serde_json::Value,
    inputs: &[StageId],
) -> StageId {
    let mut text = String::new();
    text.push_str("{\"experiment\":");
    write_canonical(&serde_json::Value::from(experiment), &mut text);
    text.push_str(",\"inputs\":[");
    for (i, input) in inputs.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        text.push_str(&input.to_string());
        text.push('"');
    }
    text.push_str("],\"kind\":\"");
    text.push_str(kind.as_str());
    text.push_str("\",\"params\":");
    write_canonical(params, &mut text);
    text.push('}');
    StageId(Sha256::digest(text.as_bytes()).into())
}

/// JSON with object keys sorted at every depth, so that the bytes (and so the
/// id) do not depend on how the value was built.
pub fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The queues a stage can wait in: what kind of machine it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Training and generation.
    Gpu,
    /// Evaluation, filtering and other light work.
    Cpu,
}

impl Queue {
    pub const fn as_str(self) -> &'static str {
        match self {
            Queue::Gpu => "gpu",
            Queue::Cpu => "cpu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TEACHER: StageKind = StageKind::from_static("teacher");
    const STUDENT: StageKind = StageKind::from_static("student");
    const EVALUATE: StageKind = StageKind::from_static("evaluate");

    #[test]
    fn id_ignores_key_order_and_formatting() {
        let a = StageSpec::new(
            "exp-a",
            TEACHER,
            &json!({"a": 1, "b": {"x": 2, "y": 3}}),
            vec![],
        );
        let b = StageSpec::new(
            "exp-a",
            TEACHER,
            &json!({"b": {"y": 3, "x": 2}, "a": 1}),
            vec![],
        );
        assert_eq!(a.id, b.id);
    }

    #[test]
    fn id_changes_with_every_part() {
        let base = StageSpec::new("exp-a", STUDENT, &json!({"lr": 0.0003}), vec![]);
        let other_param = StageSpec::new("exp-a", STUDENT, &json!({"lr": 0.0004}), vec![]);
        let other_kind = StageSpec::new("exp-a", TEACHER, &json!({"lr": 0.0003}), vec![]);
        let other_exp = StageSpec::new("exp-b", STUDENT, &json!({"lr": 0.0003}), vec![]);
        let with_input = StageSpec::new("exp-a", STUDENT, &json!({"lr": 0.0003}), vec![base.id]);
        let ids = [
            base.id,
            other_param.id,
            other_kind.id,
            other_exp.id,
            with_input.id,
        ];
        for i in 0..ids.len() {
            for j in 0..i {
                assert_ne!(ids[i], ids[j], "stages {i} and {j} share an id");
            }
        }
    }

    #[test]
    fn id_round_trips_through_text_and_verifies() {
        let s = StageSpec::new("exp-a", EVALUATE, &json!({"k": [1, 2]}), vec![]);
        let text = s.id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<StageId>().unwrap(), s.id);
        assert!(s.verify_id());
        let mut altered = s.clone();
        altered.params = json!({"k": [1, 3]});
        assert!(!altered.verify_id());
        assert!("zz".parse::<StageId>().is_err());
        assert!("abcd".parse::<StageId>().is_err());
    }

    #[test]
    fn stage_kinds_read_from_outside_are_checked() {
        assert_eq!(
            StageKind::parse("judge").unwrap(),
            StageKind::from_static("judge")
        );
        for bad in [
            "",
            "Teacher",
            "a b",
            "x/y",
            &"k".repeat(StageKind::MAX_LEN + 1),
        ] {
            assert!(StageKind::parse(bad).is_err(), "{bad:?} accepted");
        }
        let json = serde_json::to_string(&TEACHER).unwrap();
        assert_eq!(json, "\"teacher\"");
        assert_eq!(serde_json::from_str::<StageKind>(&json).unwrap(), TEACHER);
        assert!(serde_json::from_str::<StageKind>("\"../x\"").is_err());
    }
}
