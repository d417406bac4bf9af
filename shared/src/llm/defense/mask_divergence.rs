//! `mask-divergence`: the rows as they are, plus a mask that takes out of
//! the student's loss every completion token where the teacher's greedy
//! choice differs from the base model's. The worker computes the mask, as
//! it runs both models; the student must share the teacher's tokenizer.

use super::{Needs, RowDefense};

/// The `mask-divergence` defense.
pub struct MaskDivergence;

impl RowDefense for MaskDivergence {
    fn needs(&self) -> Needs {
        Needs {
            teacher_and_base: true,
            ..Needs::default()
        }
    }

    fn same_tokenizer(&self) -> bool {
        true
    }

    fn cost_metric(&self) -> Option<&'static str> {
        Some("masked_share")
    }
}
