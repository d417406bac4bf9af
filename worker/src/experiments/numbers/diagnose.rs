//! The diagnose stage: whether the trait teacher wrote anything the control
//! teacher did not (see `subliminal_shared::experiments::numbers::diagnose`),
//! read from the two generate stages' raw rows.

use subliminal_shared::experiments::numbers::diagnose::{self, DiagnoseParams};
use subliminal_shared::llm::dataset;
use subliminal_shared::manifest::VerifiedStage;

use crate::llm::pipeline::{METRICS, RAW};
use crate::stages::Artifact;

/// The trait teacher's rows (`generated`) against the control teacher's.
pub fn diagnose(
    params: &DiagnoseParams,
    generated: &VerifiedStage,
    control: &VerifiedStage,
) -> anyhow::Result<Vec<Artifact>> {
    let rows = |stage: &VerifiedStage| {
        dataset::parse_jsonl(&String::from_utf8_lossy(stage.artifact(RAW)?), RAW)
    };
    let diagnosis = diagnose::diagnose(&rows(generated)?, &rows(control)?, params);
    Ok(vec![Artifact::json(METRICS, &serde_json::to_value(diagnosis)?)?])
}
