//! A sweep file read into a checked sweep of its kind.
//!
//! The file's `kind` picks the [`Experiment`] from the registry; the kind
//! reads the rest. What comes back is a [`Sweep`]: its name, its kind, and a
//! plan on demand. Nothing is run or queued here.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::experiments::{self, CheckedSweep, Experiment};
use crate::plan::Plan;
use crate::spec::{Source, SpecError};

/// A checked sweep of some experiment kind.
#[derive(Debug, Clone)]
pub struct Sweep {
    experiment: &'static dyn Experiment,
    checked: Arc<dyn CheckedSweep>,
}

impl Sweep {
    pub fn name(&self) -> &str {
        self.checked.name()
    }

    pub fn experiment(&self) -> &'static dyn Experiment {
        self.experiment
    }

    pub fn plan(&self) -> Plan {
        self.checked.plan()
    }

    /// The kind's own sweep type, for code that knows the kind.
    pub fn downcast_ref<T: CheckedSweep>(&self) -> Option<&T> {
        // Through the trait object: the Arc itself is `Any` too.
        let checked: &dyn CheckedSweep = self.checked.as_ref();
        checked.as_any().downcast_ref()
    }
}

/// Reads, checks and returns a sweep file; nothing is run or queued.
pub fn load(path: &Path) -> Result<Sweep, SpecError> {
    let source = Source::read(path)?;
    parse(&source)
}

/// Parses a sweep from text already read (used by `results` on a stored spec).
pub fn parse(source: &Source) -> Result<Sweep, SpecError> {
    #[derive(Deserialize)]
    struct Header {
        kind: Option<toml::Spanned<String>>,
    }
    let header: Header = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    let Some(kind) = header.kind else {
        return Err(source.error_at_top(format!(
            "missing key `kind`: expected one of {}",
            experiments::names()
        )));
    };
    let Some(experiment) = experiments::find(kind.get_ref()) else {
        return Err(source.error_at(
            kind.span(),
            "kind",
            format!(
                "unknown experiment kind {:?}: expected one of {}",
                kind.get_ref(),
                experiments::names()
            ),
        ));
    };
    let checked = experiment.parse(source)?;
    Ok(Sweep {
        experiment,
        checked: Arc::from(checked),
    })
}
