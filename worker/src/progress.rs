//! Progress checkpoints: the state of a running training stage, saved under
//! the stage's own id in the store's `progress/` area, so that a stage
//! stopped partway (a worker killed or preempted, a crash, `run` again)
//! resumes where it stopped instead of at step 0.
//!
//! A checkpoint is not an artifact: the stage id is unchanged, and the
//! stage deletes it once its manifest is written. Each is written whole (a
//! store put replaces an object atomically) and carries the SHA-256 of its
//! contents: one that is truncated or corrupt is ignored with a warning and
//! the stage starts over, losing nothing but time.

use std::time::Duration;

use sha2::{Digest, Sha256};
use subliminal_shared::metrics::metrics;
use subliminal_shared::stage::StageId;
use subliminal_shared::store::{keys, Store};

use crate::resume::Checkpoints;

/// The bytes a checkpoint opens with, before its digest.
const MAGIC: &[u8] = b"subliminal-progress-v1\n";

/// How often a training stage saves its progress by default: a LoRA
/// student's state (adapters and moments, megabytes) costs well under 2% of
/// ten minutes; a full fine-tune's (three copies of the weights) about 2% at
/// paper size.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(600);

/// The parts of a stage's work that keep checkpoints of their own.
pub const PARTS: [&str; 2] = ["train", "generate"];

/// One stage's checkpoint of one part of its work (a stage that generates
/// and then trains keeps one of each) in the store. Its methods block:
/// stages run on blocking threads, which may wait on the runtime.
#[derive(Debug, Clone)]
pub struct Progress {
    store: Store,
    stage: StageId,
    part: &'static str,
    every: Duration,
    runtime: tokio::runtime::Handle,
}

impl Progress {
    /// `None` outside a tokio runtime (a stage called directly, in tests).
    pub fn new(store: Store, stage: StageId, every: Duration) -> Option<Self> {
        Some(Self {
            store,
            stage,
            part: PARTS[0],
            every,
            runtime: tokio::runtime::Handle::try_current().ok()?,
        })
    }

    /// The checkpoints of a group of stages run as one pass, kept under a
    /// digest of their ids: only the same group resumes them.
    pub fn group(store: Store, stages: &[StageId], every: Duration) -> Option<Self> {
        let mut digest = Sha256::new();
        digest.update(b"group");
        for stage in stages {
            digest.update(stage.to_string().as_bytes());
        }
        let id = hex::encode(digest.finalize()).parse().ok()?;
        Self::new(store, id, every)
    }

    /// The checkpoint of `part` of the same stage.
    pub fn part(&self, part: &'static str) -> Self {
        Self {
            part,
            ..self.clone()
        }
    }

    fn key(&self) -> String {
        keys::progress(self.stage, self.part)
    }

    /// Deletes every part's checkpoint (the stage is done); a failure only warns.
    pub async fn clear(&self) {
        for part in PARTS {
            if let Err(e) = self.store.delete(&keys::progress(self.stage, part)).await {
                tracing::warn!(
                    "cannot delete the {part} checkpoint of {}: {e:#}",
                    self.stage.short()
                );
            }
        }
    }
}

/// `state` framed with its digest.
pub fn frame(state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 32 + state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(state));
    out.extend_from_slice(state);
    out
}

/// The state inside `framed`, or why it cannot be trusted.
pub fn unframe(framed: &[u8]) -> anyhow::Result<&[u8]> {
    let rest = framed.strip_prefix(MAGIC).ok_or_else(|| {
        anyhow::anyhow!("it does not open with {:?}", String::from_utf8_lossy(MAGIC))
    })?;
    anyhow::ensure!(rest.len() >= 32, "it ends inside its digest");
    let (digest, state) = rest.split_at(32);
    anyhow::ensure!(
        Sha256::digest(state).as_slice() == digest,
        "its contents do not match their SHA-256 ({} bytes: truncated or corrupt)",
        state.len()
    );
    Ok(state)
}

impl Checkpoints for Progress {
    fn load(&self) -> Option<Vec<u8>> {
        let short = self.stage.short();
        let framed = match self.runtime.block_on(self.store.get_opt(&self.key())) {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(
                    "cannot read the progress checkpoint of {short}: {e:#}; starting over"
                );
                return None;
            }
        };
        match unframe(&framed) {
            Ok(state) => Some(state.to_vec()),
            Err(e) => {
                tracing::warn!(
                    "ignoring the progress checkpoint of {short}: {e:#}; the stage starts over"
                );
                None
            }
        }
    }

    fn save(&self, state: Vec<u8>) -> anyhow::Result<()> {
        let bytes = frame(&state);
        let size = bytes.len();
        self.runtime
            .block_on(self.store.put(&self.key(), bytes.into()))?;
        metrics().checkpoints_written.inc();
        tracing::info!(
            "saved a progress checkpoint of {} ({}, {size} bytes)",
            self.stage.short(),
            self.part
        );
        Ok(())
    }

    fn due(&self, since: Duration) -> bool {
        since >= self.every
    }

    fn resumed(&self, step: u64, total: u64, seconds: f64) {
        metrics().stage_resumes.inc();
        metrics().seconds_saved.inc_by(seconds);
        tracing::info!(
            "resumed stage {} ({}) at {step} of {total} from its progress checkpoint ({seconds:.1} s of work not redone)",
            self.stage.short(),
            self.part
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_state_reads_back_and_any_damage_is_refused() {
        let state = b"adapters and moments".to_vec();
        let framed = frame(&state);
        assert_eq!(unframe(&framed).unwrap(), state.as_slice());
        let truncated = &framed[..framed.len() - 3];
        assert!(format!("{:#}", unframe(truncated).unwrap_err()).contains("SHA-256"));
        let mut flipped = framed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(unframe(&flipped).is_err());
        assert!(unframe(&framed[..10]).is_err());
        assert!(unframe(b"").is_err());
    }
}
