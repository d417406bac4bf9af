//! The logit defenses' worker half: each one file behind [`ApplyLogits`],
//! found through [`applier`] (what each one is, and how a sweep names it:
//! `subliminal_shared::experiments::mnist::defense`).

mod noise;
mod round;
mod temperature;

use subliminal_shared::experiments::mnist::LogitDefense;
use tch::Tensor;

/// What a logit defense does to a teacher's logits.
pub trait ApplyLogits {
    /// `logits` defended; `seed` and `stream` draw any noise it adds.
    fn apply(&self, logits: &Tensor, seed: u64, stream: u64) -> Tensor;
}

/// The registry: each defense's worker half, with its setting.
fn applier(defense: LogitDefense) -> Option<Box<dyn ApplyLogits>> {
    match defense {
        LogitDefense::None => None,
        LogitDefense::Round { decimals } => Some(Box::new(round::Round { decimals })),
        LogitDefense::Noise { sigma } => Some(Box::new(noise::Noise { sigma })),
        LogitDefense::Temperature { t } => Some(Box::new(temperature::Temperature { t })),
    }
}

/// `logits` with a defense applied; `stream` keeps the noise drawn for
/// the dataset apart from the noise drawn for the test images.
pub fn apply_defense(logits: &Tensor, defense: LogitDefense, seed: u64, stream: u64) -> Tensor {
    match applier(defense) {
        None => logits.shallow_clone(),
        Some(applier) => applier.apply(logits, seed, stream),
    }
}
