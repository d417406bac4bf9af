//! Summary statistics for result tables, and the tests that say whether an
//! arm differs from its control: Fisher's exact test over answers, a paired
//! t-test over seeds, Benjamini–Hochberg across a table, and the smallest
//! shift a run could have detected.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
use statrs::function::factorial::ln_factorial;

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

/// 95% interval for the difference of two proportions x1/n1 − x0/n0, by
/// Newcombe's hybrid score method (his method 10: Wilson intervals of each
/// proportion, combined), which keeps its coverage near 0 and 1 where the
/// Wald interval does not.
pub fn newcombe_diff(x1: u64, n1: u64, x0: u64, n0: u64) -> Option<(f64, f64)> {
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let (p1, p0) = (x1 as f64 / n1 as f64, x0 as f64 / n0 as f64);
    let (l1, u1) = wilson(p1, n1);
    let (l0, u0) = wilson(p0, n0);
    let d = p1 - p0;
    Some((
        d - ((p1 - l1).powi(2) + (u0 - p0).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p0 - l0).powi(2)).sqrt(),
    ))
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

/// The two-sided p-value of Fisher's exact test on a 2×2 table: `x1` of
/// `n1` answers in one arm against `x0` of `n0` in the other. Tables as
/// likely as the observed one or less add up, as in scipy's `fisher_exact`.
pub fn fisher_exact(x1: u64, n1: u64, x0: u64, n0: u64) -> Option<f64> {
    if x1 > n1 || x0 > n0 || n1 == 0 || n0 == 0 {
        return None;
    }
    let successes = x1 + x0;
    let total = n1 + n0;
    let ln_choose = |n: u64, k: u64| ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k);
    let ln_denominator = ln_choose(total, n1);
    let ln_p =
        |x: u64| ln_choose(successes, x) + ln_choose(total - successes, n1 - x) - ln_denominator;
    let observed = ln_p(x1);
    // scipy's relative tolerance for "as likely as the observed table".
    let threshold = observed + (1.0 + 1e-7f64).ln();
    let low = successes.saturating_sub(n0);
    let high = successes.min(n1);
    let p: f64 = (low..=high)
        .map(ln_p)
        .filter(|&lp| lp <= threshold)
        .map(f64::exp)
        .fold(0.0, |sum, p| sum + p);
    Some(p.min(1.0))
}

/// Benjamini–Hochberg adjusted p-values (q-values), in the order given: the
/// smallest false discovery rate at which each test would be rejected.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p_values[i] * m as f64 / (rank + 1) as f64);
        adjusted[i] = running.min(1.0);
    }
    adjusted
}

/// The two-sided p-value of a paired t-test that the mean difference is 0:
/// one difference per seed. None with fewer than two, or no spread.
pub fn paired_t(differences: &[f64]) -> Option<f64> {
    let s = summarise(differences)?;
    let std = s.std?;
    if std.is_nan() || std <= 0.0 {
        return None;
    }
    let t = s.mean / (std / (s.n as f64).sqrt());
    let dist = StudentsT::new(0.0, 1.0, (s.n - 1) as f64).ok()?;
    Some((2.0 * (1.0 - dist.cdf(t.abs()))).min(1.0))
}

/// Welch's two-sided t-test that two samples have the same mean: the
/// p-value, the standard error of the difference and the Welch–Satterthwaite
/// degrees of freedom. None with fewer than two values in either sample, or
/// no spread in both.
pub fn welch_t(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    two_arm_t(a, b, true).map(|t| (t.p_value, t.se, t.df))
}

/// A two-sided t-test of two arms' difference: [`welch_t`]'s, or
/// [`replicate_t`]'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwoArmTest {
    /// Mean of `a` minus mean of `b`.
    pub shift: f64,
    pub p_value: f64,
    pub se: f64,
    pub df: f64,
    pub ci95: (f64, f64),
}

/// A two-sided test that two arms' statistic is the same, from replicates
/// of it that are each computed on a bootstrap draw of the arm's data (a
/// student trained on a resample of the arm's rows). Unlike [`welch_t`],
/// the standard error is the replicates' own spread, √(s_a² + s_b²), not
/// divided by their number: the arm's statistic varies with which rows it
/// happened to get as much as one replicate does, and averaging replicates
/// removes only the training noise. The degrees of freedom are
/// Welch–Satterthwaite's for those variances. None with fewer than two
/// replicates in either arm, or no spread in both.
pub fn replicate_t(a: &[f64], b: &[f64]) -> Option<TwoArmTest> {
    two_arm_t(a, b, false)
}

/// The t-test of mean(a) − mean(b) whose arms vary as s² / n (`of_means`,
/// Welch's) or as s² (replicates of the arm's statistic), with
/// Welch–Satterthwaite degrees of freedom.
fn two_arm_t(a: &[f64], b: &[f64], of_means: bool) -> Option<TwoArmTest> {
    let (sa, sb) = (summarise(a)?, summarise(b)?);
    let variance = |std: f64, n: usize| {
        if of_means {
            std.powi(2) / n as f64
        } else {
            std.powi(2)
        }
    };
    let (va, vb) = (variance(sa.std?, sa.n), variance(sb.std?, sb.n));
    let se = (va + vb).sqrt();
    if !se.is_finite() || se <= 0.0 {
        return None;
    }
    let df =
        (va + vb).powi(2) / (va.powi(2) / (sa.n as f64 - 1.0) + vb.powi(2) / (sb.n as f64 - 1.0));
    let shift = sa.mean - sb.mean;
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let half = dist.inverse_cdf(0.975) * se;
    Some(TwoArmTest {
        shift,
        p_value: (2.0 * (1.0 - dist.cdf((shift / se).abs()))).min(1.0),
        se,
        df,
        ci95: (shift - half, shift + half),
    })
}

/// The smallest difference of means that Welch's test at `alpha` would
/// detect with `power`, given its standard error and degrees of freedom.
pub fn detectable_welch_shift(se: f64, df: f64, alpha: f64, power: f64) -> Option<f64> {
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some((dist.inverse_cdf(1.0 - alpha / 2.0) + dist.inverse_cdf(power)) * se)
}

/// The smallest mean difference that a two-sided paired t-test at `alpha`
/// would detect with `power`, for `n` pairs whose differences spread with
/// standard deviation `std` (the usual approximation: the sum of the two
/// t quantiles, in standard errors). None with fewer than two pairs.
pub fn detectable_paired_shift(std: f64, n: usize, alpha: f64, power: f64) -> Option<f64> {
    if n < 2 || !std.is_finite() {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    let quantiles = dist.inverse_cdf(1.0 - alpha / 2.0) + dist.inverse_cdf(power);
    Some(quantiles * std / (n as f64).sqrt())
}

/// The smallest rise above a control share `p0` (of `n0` answers) that a
/// two-sided two-proportion z-test at `alpha` would detect with `power`,
/// with `n1` answers in the tested arm: what a null result rules out.
pub fn detectable_shift(p0: f64, n0: u64, n1: u64, alpha: f64, power: f64) -> Option<f64> {
    if n0 == 0 || n1 == 0 || !(0.0..1.0).contains(&p0) {
        return None;
    }
    let normal = Normal::new(0.0, 1.0).ok()?;
    let z_alpha = normal.inverse_cdf(1.0 - alpha / 2.0);
    let (n0, n1) = (n0 as f64, n1 as f64);
    let power_at = |delta: f64| {
        let p1 = p0 + delta;
        let pooled = (p0 * n0 + p1 * n1) / (n0 + n1);
        let se_null = (pooled * (1.0 - pooled) * (1.0 / n0 + 1.0 / n1)).sqrt();
        let se_alt = (p0 * (1.0 - p0) / n0 + p1 * (1.0 - p1) / n1).sqrt();
        if se_alt == 0.0 {
            return if delta > z_alpha * se_null { 1.0 } else { 0.0 };
        }
        normal.cdf((delta - z_alpha * se_null) / se_alt)
    };
    let (mut lo, mut hi) = (0.0, 1.0 - p0);
    if power_at(hi) < power {
        return None;
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if power_at(mid) >= power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newcombes_interval_matches_his_worked_example() {
        // Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 − 48/80.
        let (lo, hi) = newcombe_diff(56, 70, 48, 80).unwrap();
        assert!(
            (lo - 0.0524).abs() < 5e-4 && (hi - 0.3339).abs() < 5e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = newcombe_diff(0, 200, 0, 200).unwrap();
        assert!(lo < 0.0 && hi > 0.0 && (lo + hi).abs() < 1e-12);
        assert!(newcombe_diff(1, 0, 1, 2).is_none());
    }

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

    #[test]
    fn fisher_and_bh_agree_with_hand_computations() {
        // 1 of 1 against 0 of 1: both tables are equally likely, p = 1.
        assert!((fisher_exact(1, 1, 0, 1).unwrap() - 1.0).abs() < 1e-12);
        // 3 of 3 against 0 of 3: p = 2 / C(6, 3) = 0.1.
        assert!((fisher_exact(3, 3, 0, 3).unwrap() - 0.1).abs() < 1e-12);
        assert!(fisher_exact(4, 3, 0, 3).is_none());
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.5]);
        let expected = [0.04, 0.04 * 4.0 / 3.0, 0.04 * 4.0 / 3.0, 0.5];
        for (a, b) in q.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
    }

    #[test]
    fn a_detectable_shift_is_what_the_test_would_see_most_of_the_time() {
        let d = detectable_shift(0.1, 1000, 1000, 0.05, 0.8).unwrap();
        // The textbook approximation: (1.96 + 0.84) · sqrt(2 · 0.1 · 0.9 / 1000) ≈ 0.0376.
        assert!((0.03..0.05).contains(&d), "{d}");
        assert!(detectable_shift(0.1, 10_000, 10_000, 0.05, 0.8).unwrap() < d);
        assert!(paired_t(&[0.1, 0.2, 0.15]).unwrap() < 0.05);
        assert!(paired_t(&[0.1]).is_none());
    }

    #[test]
    fn welch_matches_a_hand_computed_case() {
        // a: mean 2, var 1 (n 3); b: mean 0, var 1 (n 3): t = 2 / sqrt(2/3) = 2.449, df = 4.
        let (p, se, df) = welch_t(&[1.0, 2.0, 3.0], &[-1.0, 0.0, 1.0]).unwrap();
        assert!((se - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((df - 4.0).abs() < 1e-12);
        // scipy.stats.ttest_ind(..., equal_var=False).pvalue = 0.0704
        assert!((p - 0.0704).abs() < 5e-4, "{p}");
        assert!(welch_t(&[1.0], &[0.0, 1.0]).is_none());
        let d = detectable_welch_shift(se, df, 0.05, 0.8).unwrap();
        assert!(d > 2.0 && d < 4.0, "{d}");
    }

    #[test]
    fn replicate_t_uses_the_replicates_spread_undivided() {
        // The same samples as Welch's case: se = sqrt(1 + 1), not sqrt(2/3); df = 4;
        // t = 1.414 at 4 df: p = 0.2302 (numerical integration of the t density).
        let test = replicate_t(&[1.0, 2.0, 3.0], &[-1.0, 0.0, 1.0]).unwrap();
        assert!((test.shift - 2.0).abs() < 1e-12);
        assert!((test.se - 2f64.sqrt()).abs() < 1e-12);
        assert!((test.df - 4.0).abs() < 1e-12);
        assert!((test.p_value - 0.2302).abs() < 5e-4, "{test:?}");
        // t(4) 0.975 quantile 2.7764
        assert!(
            (test.ci95.1 - (2.0 + 2.7764 * 2f64.sqrt())).abs() < 1e-3,
            "{test:?}"
        );
        assert!(replicate_t(&[1.0], &[0.0, 1.0]).is_none());
        assert!(
            replicate_t(&[1.0, 1.0], &[0.0, 0.0]).is_none(),
            "no spread in either arm"
        );
    }
}
