//! Manifests: the last file a stage writes, and the only proof that it is done.
//!
//! A manifest records the stage's inputs, parameters, the code version, the
//! size and SHA-256 of each artifact, and timing. It is written with
//! create-if-absent after every artifact, so a stage that died half-way has no
//! manifest, and a second completion of the same stage changes nothing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::stage::{StageId, StageKind};
use crate::store::{keys, Store};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: StageId,
    pub experiment: String,
    pub kind: StageKind,
    pub params: serde_json::Value,
    pub inputs: Vec<StageId>,
    pub code_version: String,
    pub artifacts: Vec<ArtifactEntry>,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    pub finished_at: f64,
    /// For a stage that ran in a group, its share of the group's time.
    pub duration_s: f64,
    pub device: String,
    pub host: String,
    /// How many stages ran in the batched pass that made this one (absent: alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl ArtifactEntry {
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where a stage stands in the store.
#[derive(Debug)]
pub enum StageState {
    /// The manifest exists and every artifact matches it.
    Done(Box<VerifiedStage>),
    /// No manifest: the stage never finished.
    Missing,
    /// A manifest exists but does not verify; the reason says what is wrong.
    Corrupt(String),
}

/// A finished stage with its artifacts, already checked against the manifest.
#[derive(Debug, Clone)]
pub struct VerifiedStage {
    pub manifest: Manifest,
    pub artifacts: Vec<(String, Bytes)>,
}

impl VerifiedStage {
    pub fn artifact(&self, name: &str) -> anyhow::Result<&Bytes> {
        self.artifacts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "stage {} has no artifact {name:?} (it has: {})",
                    self.manifest.stage.short(),
                    self.artifacts
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// A local copy of artifacts, by SHA-256: a worker keeps base models and
/// datasets here so that each is fetched from the store once.
pub trait ArtifactCache: Send + Sync + std::fmt::Debug {
    /// The bytes whose SHA-256 is `sha256`, if held (and still intact).
    fn get(&self, sha256: &str) -> Option<Bytes>;
    fn put(&self, sha256: &str, bytes: &Bytes);
}

/// Reads a stage's manifest and checks every artifact it lists.
pub async fn inspect(store: &Store, stage: StageId) -> anyhow::Result<StageState> {
    inspect_cached(store, stage, None).await
}

/// [`inspect`], taking artifacts from `cache` where it holds them (checked
/// against the manifest all the same) and keeping what it fetches there.
pub async fn inspect_cached(
    store: &Store,
    stage: StageId,
    cache: Option<&dyn ArtifactCache>,
) -> anyhow::Result<StageState> {
    let Some(bytes) = store.get_opt(&keys::manifest(stage)).await? else {
        return Ok(StageState::Missing);
    };
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            return Ok(StageState::Corrupt(format!(
                "manifest is not valid JSON: {e}"
            )))
        }
    };
    if manifest.stage != stage {
        return Ok(StageState::Corrupt(format!(
            "manifest names stage {}, expected {stage}",
            manifest.stage
        )));
    }
    let mut artifacts = Vec::with_capacity(manifest.artifacts.len());
    for entry in &manifest.artifacts {
        let Some(bytes) = store.get_opt(&keys::artifact(stage, &entry.name)).await? else {
            return Ok(StageState::Corrupt(format!(
                "artifact {} is missing",
                entry.name
            )));
        };
        if bytes.len() as u64 != entry.size {
            return Ok(StageState::Corrupt(format!(
                "artifact {} has {} bytes, the manifest says {}",
                entry.name,
                bytes.len(),
                entry.size
            )));
        }
        if sha256_hex(&bytes) != entry.sha256 {
            return Ok(StageState::Corrupt(format!(
                "artifact {} does not match its SHA-256 in the manifest",
                entry.name
            )));
        }
        if let Some(cache) = cache {
            cache.put(&entry.sha256, &bytes);
        }
        artifacts.push((entry.name.clone(), bytes));
    }
    Ok(StageState::Done(Box::new(VerifiedStage {
        manifest,
        artifacts,
    })))
}

/// Why a stage's last attempt failed; kept beside its artifacts so that
/// `results` can show it. A later success leaves it as history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub stage: StageId,
    pub kind: StageKind,
    pub error: String,
    pub at: f64,
    pub host: String,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}
