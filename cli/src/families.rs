//! The family (architecture) of each model a plan names, read from the
//! model's own file on this machine (a folder's `model_type`, a GGUF's
//! `general.architecture`), so that results say which pairs of a
//! cross-model grid share an architecture. A model this machine does not
//! hold (a store key, a path on another machine) has no family here and is
//! shown by its name alone.

use std::collections::BTreeMap;
use std::path::Path;

use subliminal_shared::plan::Plan;
use subliminal_worker::llm::load;

/// Model name (as the sweep names it) → family, for every model of `plan`
/// found on this machine.
pub fn families(plan: &Plan, data_dir: &Path) -> BTreeMap<String, String> {
    let names: std::collections::BTreeSet<&String> = plan
        .measurements
        .iter()
        .filter_map(|m| m.models.as_ref())
        .flat_map(|(t, s)| [t, s])
        .collect();
    names
        .into_iter()
        .filter_map(|name| {
            let path = load::model_path(data_dir, name).ok()?;
            let family = load::family(&path).ok()?;
            Some((name.clone(), family))
        })
        .collect()
}

/// How a plot names each of `names`: its file or folder name (the whole
/// name where two would share one), and its family where known.
pub fn labels<'a>(
    names: impl IntoIterator<Item = &'a String>,
    families: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let names: std::collections::BTreeSet<&String> = names.into_iter().collect();
    let short = |name: &str| {
        Path::new(name)
            .file_name()
            .map_or(name.to_owned(), |n| n.to_string_lossy().into_owned())
    };
    names
        .iter()
        .map(|&name| {
            let shared = names
                .iter()
                .filter(|&&other| short(other) == short(name))
                .count()
                > 1;
            let shown = if shared { name.clone() } else { short(name) };
            let label = match families.get(name) {
                Some(family) => format!("{shown} ({family})"),
                None => shown,
            };
            (name.clone(), label)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_shorten_paths_name_families_and_keep_two_models_apart() {
        let names = ["/a/tiny-qwen3", "/a/model", "/b/model", "stage:ab12"].map(String::from);
        let families = BTreeMap::from([
            ("/a/tiny-qwen3".to_owned(), "qwen3".to_owned()),
            ("/b/model".to_owned(), "llama".to_owned()),
        ]);
        let labels = labels(&names, &families);
        assert_eq!(labels["/a/tiny-qwen3"], "tiny-qwen3 (qwen3)");
        assert_eq!(labels["/a/model"], "/a/model");
        assert_eq!(labels["/b/model"], "/b/model (llama)");
        assert_eq!(labels["stage:ab12"], "stage:ab12");
    }
}
