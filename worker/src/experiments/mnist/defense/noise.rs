//! `noise:S`: Gaussian noise of standard deviation S added to every logit,
//! from the stage's seed and the stream of what is defended.

use tch::Tensor;

use super::ApplyLogits;
use crate::tensor_rng::{normal, rng, Purpose};

pub(super) struct Noise {
    pub sigma: f64,
}

impl ApplyLogits for Noise {
    fn apply(&self, logits: &Tensor, seed: u64, stream: u64) -> Tensor {
        let mut rng = rng(seed.wrapping_mul(1_000_003).wrapping_add(stream), Purpose::DefenseNoise);
        logits + normal(&mut rng, &logits.size(), self.sigma).to_device(logits.device())
    }
}
