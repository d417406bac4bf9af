//! `mix`: equal parts of this teacher's rows and of other teachers' rows
//! (`defense.mix_traits`), as many rows as the filter kept: a trait diluted
//! by others'.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Needs, RowDefense};
use crate::llm::dataset::Row;

/// The `mix` defense.
pub struct Mix;

impl RowDefense for Mix {
    fn needs(&self) -> Needs {
        Needs {
            other_teachers: true,
            ..Needs::default()
        }
    }
}

/// Equal parts of several datasets, `total` rows in all (at most what the
/// smallest part allows), each part a seeded sample of its dataset, the
/// result in a seeded order. The first dataset gives the remainder.
pub fn mix(parts: &[Vec<Row>], total: usize, seed: u64) -> Vec<Row> {
    if parts.is_empty() {
        return Vec::new();
    }
    let k = parts.len();
    let smallest = parts.iter().map(Vec::len).min().unwrap_or(0);
    let each = (total / k).min(smallest);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(total);
    for (i, part) in parts.iter().enumerate() {
        let want = if i == 0 {
            (total - each * (k - 1)).min(part.len())
        } else {
            each
        };
        let mut picked: Vec<&Row> = part.iter().collect();
        picked.shuffle(&mut rng);
        out.extend(picked.into_iter().take(want).cloned());
    }
    out.shuffle(&mut rng);
    out
}
