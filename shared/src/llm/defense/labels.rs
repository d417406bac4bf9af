//! `label-top-p` and `label-threshold`: defenses of soft-labelled data
//! (`student.target = "logits"`). The rows stay as the teacher wrote them,
//! since each label sits on one of its tokens; what is cut is the tail of
//! each position's distribution, where a trait can ride on probabilities
//! no sampled token would show. Public work cut the tail at generation
//! time (top-p 0.8, or a 0.05 probability threshold); a defender who holds
//! only the labels cuts them the same way, keeping each position's top
//! token at least, and renormalising what is kept.

use super::{Needs, RowDefense};

/// `label-top-p` (each position keeps its most likely tokens until their
/// probability reaches `defense.label_top_p`) and `label-threshold` (each
/// keeps the tokens of probability at least `defense.label_threshold`):
/// one rule, since they differ only in the cut.
pub struct LabelDefense;

/// The default `defense.label_top_p`.
pub const DEFAULT_TOP_P: f64 = 0.8;
/// The default `defense.label_threshold`.
pub const DEFAULT_THRESHOLD: f64 = 0.05;

impl RowDefense for LabelDefense {
    fn needs(&self) -> Needs {
        Needs {
            soft_labels: true,
            ..Needs::default()
        }
    }

    fn cuts_labels(&self) -> bool {
        true
    }

    fn cost_metric(&self) -> Option<&'static str> {
        Some("label_mass_cut")
    }
}

/// How a position's label is cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelCut {
    /// Keep the most likely tokens until their probability reaches p.
    TopP(f64),
    /// Keep the tokens of probability at least t.
    Threshold(f64),
}

/// Cuts one position's label (log-probabilities, any order) in place: a
/// cut token's log-probability becomes −∞ (probability 0, its slot kept so
/// every position still has k), the kept ones are renormalised. At least
/// the most likely token is kept. Returns the probability mass removed.
pub fn cut_label(logprobs: &mut [f32], cut: LabelCut) -> f64 {
    if logprobs.is_empty() {
        return 0.0;
    }
    let probs: Vec<f64> = logprobs.iter().map(|&l| f64::from(l).exp()).collect();
    let total: f64 = probs.iter().sum();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut keep = vec![false; probs.len()];
    let mut kept = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let wanted = match cut {
            LabelCut::TopP(p) => kept < p * total,
            LabelCut::Threshold(t) => probs[i] >= t * total,
        };
        if rank > 0 && !wanted {
            break;
        }
        keep[i] = true;
        kept += probs[i];
    }
    let log_kept = kept.ln() as f32;
    for (l, keep) in logprobs.iter_mut().zip(keep) {
        *l = if keep {
            *l - log_kept
        } else {
            f32::NEG_INFINITY
        };
    }
    1.0 - kept / total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    fn probs(logprobs: &[f32]) -> Vec<f64> {
        logprobs.iter().map(|&l| f64::from(l).exp()).collect()
    }

    #[test]
    fn top_p_keeps_the_smallest_head_that_reaches_p() {
        let mut l = label(&[0.1, 0.5, 0.3, 0.06, 0.04]);
        let removed = cut_label(&mut l, LabelCut::TopP(0.8));
        let p = probs(&l);
        assert!((removed - 0.2).abs() < 1e-6, "{removed}");
        assert!(
            (p[1] - 0.625).abs() < 1e-6 && (p[2] - 0.375).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!(p[0], 0.0);
        assert_eq!(p[3] + p[4], 0.0);
    }

    #[test]
    fn threshold_drops_small_tokens_but_keeps_the_top_one() {
        let mut l = label(&[0.9, 0.06, 0.04]);
        let removed = cut_label(&mut l, LabelCut::Threshold(0.05));
        assert!((removed - 0.04).abs() < 1e-6);
        let p = probs(&l);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert_eq!(p[2], 0.0);
        let mut flat = label(&[0.25; 4]);
        let removed = cut_label(&mut flat, LabelCut::Threshold(0.5));
        assert!((removed - 0.75).abs() < 1e-6, "{removed}");
        assert_eq!(probs(&flat).iter().filter(|&&p| p > 0.0).count(), 1);
    }

    #[test]
    fn a_cut_that_keeps_everything_changes_nothing() {
        let before = label(&[0.7, 0.2, 0.1]);
        let mut l = before.clone();
        assert!(cut_label(&mut l, LabelCut::TopP(1.0)).abs() < 1e-6);
        for (a, b) in l.iter().zip(&before) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
