//! `round:K`: every logit rounded to K decimals.

use tch::Tensor;

use super::ApplyLogits;

pub(super) struct Round {
    pub decimals: u32,
}

impl ApplyLogits for Round {
    fn apply(&self, logits: &Tensor, _seed: u64, _stream: u64) -> Tensor {
        let scale = 10f64.powi(self.decimals as i32);
        (logits * scale).round() / scale
    }
}
