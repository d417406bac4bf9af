//! What every stage function is given and gives back.
//!
//! A stage function takes its parameters, its verified inputs and the
//! machine's settings ([`StageEnv`]), reports [`Progress`], and returns named
//! [`Artifact`]s (bytes). It never touches the store: [`crate::execute`]
//! does, the same way in local and distributed mode. The functions
//! themselves belong to the experiment kinds ([`crate::experiments`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
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
    /// The folders a model path may lie in. `None` in local mode, where the
    /// sweep is the user's own; a worker daemon serves tasks anyone who can
    /// write to its queue may send, so it reads models only under its data
    /// folder and each `--models-dir`.
    pub model_roots: Option<Vec<PathBuf>>,
    /// Where the running stage keeps its progress checkpoint (set by
    /// [`crate::execute`] for each stage), and how often it saves.
    pub progress: Option<crate::progress::Progress>,
    pub checkpoint_every: std::time::Duration,
    /// Set by a stage that saves its progress when stopped: a shutdown
    /// stops it at once rather than after the grace period.
    pub resumable: Arc<AtomicBool>,
}

impl StageEnv {
    pub fn new(device: Device, data_dir: PathBuf) -> Self {
        Self {
            device,
            data_dir,
            stop: Arc::new(AtomicBool::new(false)),
            cache: None,
            model_roots: None,
            progress: None,
            checkpoint_every: crate::progress::DEFAULT_EVERY,
            resumable: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Where the model a stage names lives on this machine, refused when it
    /// lies outside the folders this worker serves.
    pub fn model_path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = crate::llm::load::model_path(&self.data_dir, name)?;
        if let Some(roots) = &self.model_roots {
            check_served(&path, roots)
                .with_context(|| format!("model {name:?} is not served by this worker"))?;
        }
        Ok(path)
    }

    /// The same machine settings with a stop flag of its own.
    pub fn with_own_stop(&self) -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            resumable: Arc::new(AtomicBool::new(false)),
            ..self.clone()
        }
    }

    /// The running stage's checkpoints of `part` of its work (see
    /// [`crate::progress::PARTS`]), where it keeps them; marks the stage as
    /// one that a shutdown may stop at once.
    pub fn checkpoints(&self, part: &'static str) -> Option<crate::progress::Progress> {
        let progress = self.progress.as_ref()?.part(part);
        self.resumable.store(true, Ordering::Relaxed);
        Some(progress)
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

/// Whether `path`, with links and `..` resolved, lies under one of `roots`.
pub fn check_served(path: &Path, roots: &[PathBuf]) -> anyhow::Result<()> {
    let real = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let served = roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .any(|root| real.starts_with(root));
    anyhow::ensure!(
        served,
        "{} lies outside the folders it serves ({}): move the model under one of them, \
         start the worker with --models-dir FOLDER, or put the file in the store \
         (`subliminal store put`) and name its key",
        real.display(),
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_served_only_under_a_served_folder() {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("models");
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(&served).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(served.join("m.gguf"), b"x").unwrap();
        std::fs::write(outside.join("m.gguf"), b"x").unwrap();
        let roots = [served.clone()];
        assert!(check_served(&served.join("m.gguf"), &roots).is_ok());
        let err = check_served(&outside.join("m.gguf"), &roots).unwrap_err();
        assert!(format!("{err:#}").contains("--models-dir"), "{err:#}");
        // `..` and links are resolved before the check.
        assert!(check_served(&served.join("../elsewhere/m.gguf"), &roots).is_err());
        std::os::unix::fs::symlink(outside.join("m.gguf"), served.join("link.gguf")).unwrap();
        assert!(check_served(&served.join("link.gguf"), &roots).is_err());
        // Local mode reads any path; a daemon's environment does not.
        let mut env = StageEnv::new(Device::Cpu, dir.path().join("data"));
        let path = outside.join("m.gguf");
        let name = path.to_str().unwrap();
        assert!(env.model_path(name).is_ok());
        env.model_roots = Some(roots.to_vec());
        assert!(env.model_path(name).is_err());
    }
}
