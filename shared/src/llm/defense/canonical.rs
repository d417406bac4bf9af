//! `canonical`: every completion parsed and written again as `a, b, c`, so
//! that no formatting habit of the teacher's survives.

use super::{Rewrite, RowDefense};
use crate::llm::filter;

/// The `canonical` defense.
pub struct Canonical;

impl RowDefense for Canonical {
    fn rewrite(&self) -> Option<Rewrite> {
        Some(|completion, _, _, _| canonical(completion))
    }
}

/// The separator a canonical row is written with.
pub const CANONICAL_SEPARATOR: &str = ", ";

/// A completion's numbers written again as `a, b, c`, or `None` when it
/// holds no list of numbers (under the lenient rule, so any row a filter
/// kept parses).
pub fn canonical(completion: &str) -> Option<String> {
    let numbers = filter::check_lenient(completion, &[]).ok()?;
    Some(
        numbers
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(CANONICAL_SEPARATOR),
    )
}
