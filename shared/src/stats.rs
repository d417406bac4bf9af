//! Summary statistics for result tables.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean, sample standard deviation and a 95% confidence interval of the mean.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub std: Option<f64>,
    /// Student's t interval; absent with fewer than two values.
    pub ci95: Option<(f64, f64)>,
}

/// The Wilson score interval (95%) of a share `p` of `n` samples: a
/// confidence interval for one measured proportion, sound near 0 and 1.
pub fn wilson(p: f64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n = n as f64;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    // The bounds enclose p exactly, whatever the rounding at 0 and 1.
    ((centre - half).clamp(0.0, p), (centre + half).clamp(p, 1.0))
}

pub fn summarise(values: &[f64]) -> Option<Summary> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(Summary {
            n,
            mean,
            std: None,
            ci95: None,
        });
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .map(|d| d.inverse_cdf(0.975))
        .unwrap_or(f64::NAN);
    let half = t * std / (n as f64).sqrt();
    Some(Summary {
        n,
        mean,
        std: Some(std),
        ci95: Some((mean - half, mean + half)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_matches_a_t_table() {
        // Two values: t(0.975, 1) = 12.706.
        let s = summarise(&[0.4, 0.6]).unwrap();
        assert!((s.mean - 0.5).abs() < 1e-12);
        let (lo, hi) = s.ci95.unwrap();
        let half = 12.7062 * (0.02f64).sqrt() / 2f64.sqrt();
        assert!((hi - 0.5 - half).abs() < 1e-3, "{hi}");
        assert!((0.5 - lo - half).abs() < 1e-3, "{lo}");
        assert!(summarise(&[0.3]).unwrap().ci95.is_none());
        assert!(summarise(&[]).is_none());
    }

    #[test]
    fn wilson_matches_known_values_and_encloses_the_share() {
        // 10 of 100: the textbook Wilson interval is [0.0552, 0.1744].
        let (lo, hi) = wilson(0.1, 100);
        assert!(
            (lo - 0.0552).abs() < 1e-4 && (hi - 0.1744).abs() < 1e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0.0, 6).0, 0.0);
        assert_eq!(wilson(1.0, 6).1, 1.0);
        assert!(wilson(0.0, 6).1 > 0.3);
    }
}
