//! What the audit's stages write for each other and for the report: each
//! artifact's name and the JSON types it holds. Kept apart from the stages
//! that make them so the report reads them without depending on the stages.

use serde::{Deserialize, Serialize};
use subliminal_shared::experiments::audit::Probe;

pub const DATASET: &str = "dataset.json";
pub const SCORES: &str = "scores.json";
pub const SCREEN: &str = "screen.json";
pub const CARRIERS: &str = "carriers.json";
pub const METRICS: &str = "metrics.json";

/// One target's row scores, as `scores.json` holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetScores {
    pub probe: String,
    pub category: String,
    pub target: String,
    /// The norm of the probe gradient the target's unit direction came from
    /// (0 for likelihood scores).
    pub gradient_norm: f64,
    pub scores: Vec<f64>,
}

impl TargetScores {
    pub(super) fn new(probe: &Probe, target: &str, gradient_norm: f64, scores: Vec<f64>) -> Self {
        Self {
            probe: probe.name.clone(),
            category: probe.category.clone(),
            target: target.to_owned(),
            gradient_norm,
            scores,
        }
    }
}

/// What a score stage writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreReport {
    pub rows: usize,
    pub seconds: f64,
    /// Seconds per 1,000 rows of the scoring itself (model load and probe
    /// directions left out).
    pub seconds_per_1000_rows: f64,
    pub targets: Vec<TargetScores>,
}

/// One target's screen, as `screen.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetScreen {
    pub probe: String,
    pub category: String,
    pub target: String,
    /// Whether the scores are contrasts: the target's score minus the mean
    /// of the probe's other targets' (probes of two or more targets).
    pub contrast: bool,
    pub dataset_mean: f64,
    pub control_mean: f64,
    pub difference: f64,
    /// The bootstrap interval of the difference (rows resampled).
    pub interval: (f64, f64),
    /// Welch's t-test of the difference (the bootstrap's p-value where
    /// Welch's is undefined: no spread in either set).
    pub p_value: f64,
    pub bootstrap_p_value: f64,
    /// The smallest difference Welch's test would see (α 0.05, power 0.8).
    pub detectable: Option<f64>,
    /// The difference of the plain scores, before the contrast.
    pub raw_difference: f64,
    pub dataset_scores: Vec<f64>,
    pub control_scores: Vec<f64>,
}

/// What the screen stage writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScreenReport {
    pub rows: usize,
    pub control_rows: usize,
    /// The scoring time of both sets.
    pub seconds: f64,
    pub seconds_per_1000_rows: f64,
    pub targets: Vec<TargetScreen>,
}

/// A token whose log-probability the sacrificial student raised most, summed
/// over the dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CarrierToken {
    pub token: String,
    pub count: u64,
    /// Σ over its occurrences of log p(student) − log p(base), in nats.
    pub divergence: f64,
}

/// A row that holds much of the divergence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CarrierRow {
    /// 1-based, in the audited (subsampled) rows.
    pub row: usize,
    pub completion: String,
    /// Σ of its tokens' positive divergence, in nats.
    pub divergence: f64,
}

/// What the carriers stage writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CarrierReport {
    pub rows: usize,
    pub tokens: usize,
    /// Mean log p(student) − log p(base) per completion token.
    pub mean_divergence: f64,
    /// The share of all positive divergence held by the top tenth of rows.
    pub top_tenth_rows_share: f64,
    pub top_tokens: Vec<CarrierToken>,
    pub top_rows: Vec<CarrierRow>,
    /// Tokens the sanitised copy replaced, and rows it changed.
    pub replaced_tokens: usize,
    pub changed_rows: usize,
    pub seconds: f64,
}
