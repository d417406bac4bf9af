//! Sweep files: reading, the first refusal of bad input, and errors that point
//! at the file, line and key at fault.
//!
//! A sweep is one TOML file. Its `kind` names the experiment; the rest of the
//! file is that experiment's own schema (see [`crate::experiments`]), read
//! with the helpers here. Any setting may be a single value or a list: a list
//! is an axis of the grid. Everything is checked before anything runs, so a
//! typo never costs a half-finished sweep. [`crate::sweep`] reads the `kind`
//! and hands the file to it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IntoDeserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// Why a sweep file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read sweep file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {}{message}", path.display(), key.as_deref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
}

/// The text of a sweep file, kept so that errors can point into it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(path, text))
    }

    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// An error about the value at `span`, whose full key is `key`.
    pub fn error_at(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        let (line, column) = self.position(span.start);
        SpecError::Invalid {
            path: self.path.clone(),
            line,
            column,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// An error about the file as a whole (a missing key, say).
    pub fn error_at_top(&self, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            path: self.path.clone(),
            line: 1,
            column: 1,
            key: None,
            message: message.into(),
        }
    }

    /// Turns a TOML syntax or type error into one that names the key on that line.
    pub fn toml_error(&self, err: toml::de::Error) -> SpecError {
        let message = err.message().trim().to_owned();
        let Some(span) = err.span() else {
            return self.error_at_top(message);
        };
        let (line, column) = self.position(span.start);
        SpecError::Invalid {
            path: self.path.clone(),
            line,
            column,
            key: self.key_on_line(line),
            message,
        }
    }

    /// The key a line assigns (`lr = 1` gives `lr`) or the table it opens.
    fn key_on_line(&self, line: usize) -> Option<String> {
        let text = self.text.lines().nth(line.checked_sub(1)?)?.trim();
        if let Some(table) = text.strip_prefix('[') {
            let table = table.trim_start_matches('[');
            let end = table.find(']')?;
            return Some(table[..end].trim().to_owned());
        }
        let (key, _) = text.split_once('=')?;
        Some(key.trim().trim_matches('"').to_owned())
    }
}

/// One setting of a sweep: a single value, or a list of values to cross.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis<T>(pub Vec<T>);

impl<T> Axis<T> {
    pub fn single(value: T) -> Self {
        Self(vec![value])
    }

    pub fn values(&self) -> &[T] {
        &self.0
    }

    /// True when the sweep crosses more than one value of this setting.
    pub fn varies(&self) -> bool {
        self.0.len() > 1
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Axis<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AxisVisitor<T>(std::marker::PhantomData<T>);

        impl<T> AxisVisitor<T> {
            fn one<'de, E, V>(value: V) -> Result<Axis<T>, E>
            where
                T: Deserialize<'de>,
                E: de::Error,
                V: IntoDeserializer<'de, E>,
            {
                T::deserialize(value.into_deserializer()).map(Axis::single)
            }
        }

        impl<'de, T: Deserialize<'de>> Visitor<'de> for AxisVisitor<T> {
            type Value = Axis<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Self::one(v.to_owned())
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element()? {
                    values.push(value);
                }
                Ok(Axis(values))
            }
        }

        deserializer.deserialize_any(AxisVisitor(std::marker::PhantomData))
    }
}

/// Checks every value of a spanned axis: non-empty, no repeats, each in range.
pub fn check_axis<T: PartialEq + fmt::Display>(
    source: &Source,
    key: &str,
    axis: &toml::Spanned<Axis<T>>,
    expected: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<(), SpecError> {
    let values = axis.get_ref().values();
    if values.is_empty() {
        return Err(source.error_at(
            axis.span(),
            key,
            format!("empty list: expected {expected}, or a list of them"),
        ));
    }
    // Long axes (a sweep of half a million seeds) are checked for repeats by
    // their written form in a hash set; short ones by equality, as before.
    let mut written = std::collections::HashSet::new();
    for (i, value) in values.iter().enumerate() {
        if !ok(value) {
            return Err(source.error_at(
                axis.span(),
                key,
                format!("expected {expected}, found {value}"),
            ));
        }
        let repeated = if values.len() > 64 {
            !written.insert(value.to_string())
        } else {
            values[..i].contains(value)
        };
        if repeated {
            return Err(source.error_at(
                axis.span(),
                key,
                format!("{value} is listed twice: each value of an axis must be distinct"),
            ));
        }
    }
    Ok(())
}

/// Checks the `grid.seeds` axis every experiment has.
pub fn check_seeds(source: &Source, seeds: &toml::Spanned<Axis<u64>>) -> Result<(), SpecError> {
    check_axis(source, "grid.seeds", seeds, "a seed from 0 to 2^32", |s| {
        *s <= u32::MAX as u64
    })
}

/// Checks a sweep name: it becomes a folder name in the store.
pub fn check_name(source: &Source, name: &toml::Spanned<String>) -> Result<(), SpecError> {
    let value = name.get_ref();
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !value.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(source.error_at(
            name.span(),
            "name",
            format!("expected 1 to 64 letters, digits, '-', '_' or '.' (not starting with '.'), found {value:?}"),
        ))
    }
}

/// Takes a setting or its default, after checking every value it lists.
pub fn setting<T: PartialEq + fmt::Display + Clone>(
    source: &Source,
    key: &str,
    raw: Option<toml::Spanned<Axis<T>>>,
    default: T,
    expected: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<Axis<T>, SpecError> {
    match raw {
        None => Ok(Axis::single(default)),
        Some(axis) => {
            check_axis(source, key, &axis, expected, ok)?;
            Ok(axis.into_inner())
        }
    }
}

/// Reads an axis of names (`"a"` or `["a", "b"]`) through `parse`; a name it
/// refuses, or one listed twice, is refused at its own place in the file
/// (the first quoted occurrence within the axis), with `parse`'s message.
pub fn named_axis<T: PartialEq>(
    source: &Source,
    key: &str,
    raw: toml::Spanned<Axis<String>>,
    expected: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Axis<T>, SpecError> {
    let span = raw.span();
    let mut out: Vec<T> = Vec::new();
    for name in raw.get_ref().values() {
        let at = source.text[span.clone()]
            .find(&format!("\"{name}\""))
            .map_or(span.clone(), |i| span.start + i..span.end);
        let value = parse(name).map_err(|e| source.error_at(at.clone(), key, e))?;
        if out.contains(&value) {
            return Err(source.error_at(
                at,
                key,
                format!("{name} is listed twice: each value of an axis must be distinct"),
            ));
        }
        out.push(value);
    }
    if out.is_empty() {
        return Err(source.error_at(
            span,
            key,
            format!("empty list: expected one or more of {expected}"),
        ));
    }
    Ok(Axis(out))
}

/// A settings table with every key at its default (each field has one).
pub fn default_of<T: serde::de::DeserializeOwned>() -> T {
    toml::from_str("").expect("every setting of this table has a default")
}

/// A table's settings, each checked against its range.
pub fn checked_table<T: serde::de::DeserializeOwned>(
    source: &Source,
    key: &str,
    raw: Option<toml::Spanned<T>>,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, SpecError> {
    match raw {
        None => Ok(default_of()),
        Some(v) => match check(v.get_ref()) {
            Ok(()) => Ok(v.into_inner()),
            Err(message) => Err(source.error_at(v.span(), key, message)),
        },
    }
}

/// A flat list of seeds (`seeds = [0, 1]`; one seed, 0, when absent):
/// distinct, from 0 to 2^32.
pub fn seed_list(
    source: &Source,
    raw: Option<toml::Spanned<Vec<u64>>>,
) -> Result<Vec<u64>, SpecError> {
    let Some(s) = raw else {
        return Ok(vec![0]);
    };
    let mut sorted = s.get_ref().clone();
    sorted.sort_unstable();
    sorted.dedup();
    if s.get_ref().is_empty()
        || sorted.len() != s.get_ref().len()
        || sorted.iter().any(|&v| v > u32::MAX as u64)
    {
        return Err(source.error_at(
            s.span(),
            "seeds",
            "expected distinct seeds from 0 to 2^32, at least one",
        ));
    }
    Ok(s.into_inner())
}

/// One lowercase word (a trait, a category), refused at its place otherwise.
pub fn lowercase_word(
    source: &Source,
    key: &str,
    raw: toml::Spanned<String>,
    example: &str,
) -> Result<String, SpecError> {
    let w = raw.get_ref();
    if w.is_empty() || w.len() > 32 || !w.chars().all(|c| c.is_ascii_lowercase()) {
        return Err(source.error_at(
            raw.span(),
            key,
            format!("expected one lowercase word, e.g. \"{example}\""),
        ));
    }
    Ok(raw.into_inner())
}
