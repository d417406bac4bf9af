//! What every stage function is given and gives back.
//!
//! A stage function takes its parameters, its verified inputs and the
//! machine's settings ([`StageEnv`]), reports [`Progress`], and returns named
//! [`Artifact`]s (bytes). It never touches the store: [`crate::execute`]
//! does, the same way in local and distributed mode. The functions
//! themselves belong to the experiment kinds ([`crate::experiments`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use subliminal_shared::manifest::{ArtifactCache, VerifiedStage};
use subliminal_shared::stage::StageSpec;
use tch::Device;

/// What a stage may use on this machine.
#[derive(Debug, Clone)]
pub struct StageEnv {
    pub device: Device,
    /// Where datasets shipped by packages live (MNIST under `mnist/`).
    pub data_dir: PathBuf,
    /// Set from outside (a lost lease, a cancelled sweep, a shutdown) to stop
    /// a running stage at its next training step.
    pub stop: Arc<AtomicBool>,
    /// Where inputs are kept between stages on this machine (worker daemons).
    pub cache: Option<Arc<dyn ArtifactCache>>,
}

impl StageEnv {
    pub fn new(device: Device, data_dir: PathBuf) -> Self {
        Self {
            device,
            data_dir,
            stop: Arc::new(AtomicBool::new(false)),
            cache: None,
        }
    }

    /// The same machine settings with a stop flag of its own.
    pub fn with_own_stop(&self) -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            ..self.clone()
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How far a running stage has come.
#[derive(Debug, Clone)]
pub struct Progress {
    /// 0.0 to 1.0.
    pub fraction: f64,
    pub message: String,
    /// The latest epoch's mean loss, when training.
    pub loss: Option<f64>,
    /// Training samples per second over the latest epoch.
    pub samples_per_second: Option<f64>,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A named output of a stage.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Artifact {
    pub fn new(name: &str, bytes: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            bytes,
        }
    }

    pub fn json(name: &str, value: &serde_json::Value) -> anyhow::Result<Self> {
        Ok(Self::new(name, serde_json::to_vec_pretty(value)?))
    }
}

/// Input `i` of a stage, or an error naming the stage.
pub fn input<'a>(
    spec: &StageSpec,
    inputs: &'a [VerifiedStage],
    i: usize,
) -> anyhow::Result<&'a VerifiedStage> {
    inputs.get(i).ok_or_else(|| {
        anyhow::anyhow!(
            "{} stage {} is missing input {i}",
            spec.kind,
            spec.id.short()
        )
    })
}
