//! The filter: the paper's rules (or the lenient one) and a seeded
//! subsample of the rows that pass.

use subliminal_shared::llm::dataset::{self};
use subliminal_shared::llm::FilterParams;
use subliminal_shared::manifest::VerifiedStage;

use super::*;
use crate::stages::Artifact;

pub(crate) fn filter(
    params: &FilterParams,
    generated: &VerifiedStage,
) -> anyhow::Result<Vec<Artifact>> {
    let text = String::from_utf8_lossy(generated.artifact(RAW)?);
    let rows = dataset::parse_jsonl(&text, RAW)?;
    let (kept, report) = dataset::filter_rows(
        &rows,
        params.rule,
        &params.banned_numbers,
        params.keep as usize,
        params.seed,
    );
    Ok(vec![
        Artifact::new(FILTERED, dataset::to_jsonl(&kept)),
        Artifact::json(REPORT, &serde_json::to_value(&report)?)?,
    ])
}
