//! Files that sweeps name by key: a model or a dataset that lives in the store.
//!
//! `subliminal store put FILE` writes a file into the store as a stage of its
//! own (experiment `store`, kind `file`; its parameters are the file's name,
//! size and SHA-256), with a manifest like any stage's. A sweep then names it
//! `stage:<id>`, the same way it names a stage's checkpoint (a fine-tuned
//! teacher of another sweep, say). Because a stage id is derived from its
//! content, a key always means the same bytes; a stage that needs the file
//! lists it as an input, so workers fetch it as they fetch any input, verify
//! it against its manifest, and keep it in their cache by checksum.

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::manifest::{hostname, now, sha256_hex, ArtifactEntry, Manifest};
use crate::stage::{StageId, StageKind, StageSpec};
use crate::store::{keys, Store};

/// The pseudo-experiment that owns stored files.
pub const EXPERIMENT: &str = "store";
/// The stage kind of a stored file.
pub const KIND: StageKind = StageKind::from_static("file");
/// The one artifact of a file stage: the file's bytes.
pub const ARTIFACT: &str = "file";
/// How a sweep names a stage (a stored file or a checkpoint) by its id.
pub const KEY_PREFIX: &str = "stage:";

/// What identifies a stored file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileParams {
    /// The file's name when it was put, for people reading a manifest.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// The stage of a file's bytes.
pub fn spec(name: &str, bytes: &[u8]) -> StageSpec {
    StageSpec::new(
        EXPERIMENT,
        KIND,
        &FileParams {
            name: name.to_owned(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        },
        vec![],
    )
}

/// Whether a stage is a stored file.
pub fn is_file(experiment: &str, kind: &StageKind) -> bool {
    experiment == EXPERIMENT && *kind == KIND
}

/// The key a sweep writes for a stage.
pub fn key(id: StageId) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// The stage a name refers to, when it is a key: `None` for any other
/// name, an error for a key that is not `stage:` and 64 hex digits.
pub fn parse_key(name: &str) -> Option<anyhow::Result<StageId>> {
    let hex = name.strip_prefix(KEY_PREFIX)?;
    Some(hex.parse().with_context(|| {
        format!("{name:?} is not a store key: expected {KEY_PREFIX} and the 64 hex digits that `subliminal store put` prints")
    }))
}

/// `inputs`, and the stage a model names when it is a store key: a stage
/// that runs a stored model (or another sweep's checkpoint) takes it as an
/// input, external to the plan, so that workers fetch it.
pub fn with_model(mut inputs: Vec<StageId>, model: &str) -> Vec<StageId> {
    if let Some(Ok(id)) = parse_key(model) {
        inputs.push(id);
    }
    inputs
}

/// Puts a file into the store (once: a second put of the same bytes
/// changes nothing) and returns its stage id.
pub async fn put(store: &Store, name: &str, bytes: Bytes) -> anyhow::Result<StageId> {
    let spec = spec(name, &bytes);
    let started_at = now();
    let entry = ArtifactEntry::of(ARTIFACT, &bytes);
    store
        .put(&keys::artifact(spec.id, ARTIFACT), bytes)
        .await
        .with_context(|| format!("cannot write {name} into store {}", store.location()))?;
    let manifest = Manifest {
        stage: spec.id,
        experiment: spec.experiment.clone(),
        kind: spec.kind.clone(),
        params: spec.params.clone(),
        inputs: vec![],
        code_version: crate::CODE_VERSION.to_owned(),
        artifacts: vec![entry],
        started_at,
        finished_at: now(),
        duration_s: now() - started_at,
        device: "none".to_owned(),
        host: hostname(),
        group: None,
    };
    store
        .put_if_absent(
            &keys::manifest(spec.id),
            Bytes::from(serde_json::to_vec_pretty(&manifest)?),
        )
        .await?;
    Ok(spec.id)
}

/// A store key, refused at its place when it is not one.
pub fn stored_key(
    source: &crate::spec::Source,
    key: &str,
    value: &toml::Spanned<String>,
) -> Result<StageId, crate::spec::SpecError> {
    match parse_key(value.get_ref()) {
        Some(Ok(id)) => Ok(id),
        Some(Err(e)) => Err(source.error_at(value.span(), key, format!("{e:#}"))),
        None => Err(source.error_at(
            value.span(),
            key,
            format!(
                "expected a dataset in the store (stage: and 64 hex digits, as `subliminal store put FILE` prints), found {:?}",
                value.get_ref()
            ),
        )),
    }
}

/// A model a sweep names (a name, a path or a store key), `default` when
/// absent; a malformed key or an empty name is refused at its place.
pub fn model_name(
    source: &crate::spec::Source,
    key: &str,
    raw: Option<toml::Spanned<String>>,
    default: &str,
) -> Result<String, crate::spec::SpecError> {
    let Some(m) = raw else {
        return Ok(default.to_owned());
    };
    if m.get_ref().trim().is_empty() {
        return Err(source.error_at(m.span(), key, "expected a model name, path or store key"));
    }
    if let Some(Err(e)) = parse_key(m.get_ref()) {
        return Err(source.error_at(m.span(), key, format!("{e:#}")));
    }
    Ok(m.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_the_stage_of_its_content() {
        let a = spec("a.gguf", b"weights");
        assert_eq!(a.id, spec("a.gguf", b"weights").id);
        assert_ne!(a.id, spec("a.gguf", b"other weights").id);
        let key = key(a.id);
        assert_eq!(parse_key(&key).unwrap().unwrap(), a.id);
        assert!(parse_key("smollm2-135m").is_none());
        let err = parse_key("stage:abc").unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("64 hex digits"), "{err:#}");
        assert!(is_file(&a.experiment, &a.kind));
    }

    #[tokio::test]
    async fn a_put_file_is_a_done_stage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let id = put(&store, "rows.jsonl", Bytes::from_static(b"{}\n"))
            .await
            .unwrap();
        match crate::manifest::inspect(&store, id).await.unwrap() {
            crate::manifest::StageState::Done(stage) => {
                assert_eq!(&stage.artifact(ARTIFACT).unwrap()[..], b"{}\n")
            }
            other => panic!("expected a done stage, got {other:?}"),
        }
        assert_eq!(
            put(&store, "rows.jsonl", Bytes::from_static(b"{}\n"))
                .await
                .unwrap(),
            id
        );
    }
}
