//! One module per subcommand, plus what they share: finding the store and
//! the sweep.

pub mod results;
pub mod run;
pub mod validate;

use std::path::Path;

use anyhow::Context;
use subliminal_shared::experiments::Sweep;
use subliminal_shared::spec::{self, Source};
use subliminal_shared::store::{keys, Store};

/// Where artifacts go unless `--store` or SUBLIMINAL_STORE says otherwise.
pub const DEFAULT_STORE: &str = "runs";

/// A sweep named by its file, or by its name for a sweep already run in `store`.
pub async fn find_sweep(arg: &str, store: &Store) -> anyhow::Result<Sweep> {
    let path = Path::new(arg);
    if path.exists() {
        return Ok(spec::load_sweep(path)?);
    }
    let key = keys::sweep_file(arg);
    match store.get_opt(&key).await? {
        Some(bytes) => {
            let text = String::from_utf8(bytes.to_vec())
                .with_context(|| format!("{key} in store {} is not UTF-8", store.location()))?;
            let source = Source::new(format!("{}/{key}", store.location()), text);
            Ok(spec::parse_sweep(&source)?)
        }
        None => anyhow::bail!(
            "{arg:?} is neither a sweep file nor a sweep that was run in store {}; give the .toml path, or the store with --store",
            store.location()
        ),
    }
}
