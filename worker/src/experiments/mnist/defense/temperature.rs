//! `temperature:T`: logits divided by T, flattening the softmax a student
//! distils.

use tch::Tensor;

use super::ApplyLogits;

pub(super) struct Temperature {
    pub t: f64,
}

impl ApplyLogits for Temperature {
    fn apply(&self, logits: &Tensor, _seed: u64, _stream: u64) -> Tensor {
        logits / self.t
    }
}
