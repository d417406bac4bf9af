//! The artifact store: a local folder by default, any S3-compatible bucket
//! for clusters, both through `object_store`.
//!
//! Layout under the store's root:
//!
//! ```text
//! stages/<stage id>/<artifact>         datasets, checkpoints, metrics
//! stages/<stage id>/manifest.json      written last, create-if-absent
//! stages/<stage id>/failure.json       why the last attempt failed, if it did
//! sweeps/<sweep name>/sweep.toml       the sweep file as it was run
//! sweeps/<sweep name>/status.json      active, done, failed or cancelled (distributed mode)
//! ```
//!
//! The store is the source of truth: a stage is done exactly when its
//! manifest exists and every artifact it lists matches its size and SHA-256.

use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::stage::StageId;

/// A handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    location: String,
}

impl Store {
    /// Opens `location`: a folder path (created if missing), `file:///path`,
    /// or `s3://bucket/prefix` with credentials from the standard `AWS_*`
    /// environment variables.
    pub fn open(location: &str) -> anyhow::Result<Self> {
        if location.contains("://") {
            let url = url::Url::parse(location)
                .with_context(|| format!("store {location:?} is not a valid URL"))?;
            if url.scheme() == "file" {
                let path = url
                    .to_file_path()
                    .map_err(|_| anyhow::anyhow!("store {location:?} is not a local path"))?;
                return Self::open_folder(&path);
            }
            let options = s3_options(std::env::vars());
            let (inner, root) = object_store::parse_url_opts(&url, options).with_context(|| {
                format!(
                    "cannot open store {location:?}: expected a folder path, file:///path or s3://bucket/prefix"
                )
            })?;
            return Ok(Self {
                inner: Arc::from(inner),
                root,
                location: location.to_owned(),
            });
        }
        Self::open_folder(FsPath::new(location))
    }

    fn open_folder(path: &FsPath) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create store folder {}", path.display()))?;
        let inner = LocalFileSystem::new_with_prefix(path)
            .with_context(|| format!("cannot open store folder {}", path.display()))?;
        Ok(Self {
            inner: Arc::new(inner),
            root: Path::default(),
            location: path.display().to_string(),
        })
    }

    /// Where the store is, as the user gave it.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> Path {
        let mut path = self.root.clone();
        for part in key.split('/') {
            path = path.child(part);
        }
        path
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        self.get_opt(key)
            .await?
            .with_context(|| format!("{key} is not in store {}", self.location))
    }

    /// Reads `key`, or `None` when it does not exist.
    pub async fn get_opt(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        let _timer = timer("get");
        match self.inner.get(&self.path(key)).await {
            Ok(result) => {
                let bytes = result.bytes().await?;
                count_bytes("read", bytes.len());
                Ok(Some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read {key} from store {}", self.location))
            }
        }
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        let _timer = timer("put");
        count_bytes("written", bytes.len());
        self.inner
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await
            .with_context(|| format!("cannot write {key} to store {}", self.location))?;
        Ok(())
    }

    /// Writes `key` only if it does not exist yet; returns whether this call wrote it.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> anyhow::Result<bool> {
        let _timer = timer("put");
        count_bytes("written", bytes.len());
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&self.path(key), PutPayload::from_bytes(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("cannot create {key} in store {}", self.location))
            }
        }
    }

    /// Which of `stages` have a manifest. A few are asked about one by one
    /// (32 requests at a time); many, in one listing of `stages/`, a paged
    /// walk of the store rather than a request per stage of a plan that may
    /// have a million.
    pub async fn stages_with_manifest(
        &self,
        stages: &[StageId],
    ) -> anyhow::Result<std::collections::HashSet<StageId>> {
        use futures::{StreamExt, TryStreamExt};
        /// Up to this many stages, one request each beats listing a big store.
        const ASK_EACH: usize = 2_000;
        if stages.len() > ASK_EACH {
            let listed = self.all_stages_with_manifest().await?;
            return Ok(stages
                .iter()
                .filter(|id| listed.contains(id))
                .copied()
                .collect());
        }
        futures::stream::iter(stages.iter().copied())
            .map(|id| async move {
                self.has(&keys::manifest(id))
                    .await
                    .map(|has| has.then_some(id))
            })
            .buffer_unordered(32)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }

    /// Whether `key` exists.
    pub async fn has(&self, key: &str) -> anyhow::Result<bool> {
        let _timer = timer("head");
        match self.inner.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("cannot look for {key} in store {}", self.location))
            }
        }
    }

    async fn all_stages_with_manifest(&self) -> anyhow::Result<std::collections::HashSet<StageId>> {
        use futures::TryStreamExt;
        let _timer = timer("list");
        let prefix = self.path("stages");
        let mut listing = self.inner.list(Some(&prefix));
        let mut done = std::collections::HashSet::new();
        while let Some(object) = listing
            .try_next()
            .await
            .with_context(|| format!("cannot list stages/ in store {}", self.location))?
        {
            let key = object.location.as_ref();
            let Some(folder) = key.strip_suffix("/manifest.json") else {
                continue;
            };
            let stage = folder.rsplit('/').next().unwrap_or(folder);
            if let Ok(id) = stage.parse() {
                done.insert(id);
            }
        }
        Ok(done)
    }

    /// The names of the folders directly under `prefix` (e.g. every sweep under `sweeps`).
    pub async fn list_folders(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let _timer = timer("list");
        let listing = self
            .inner
            .list_with_delimiter(Some(&self.path(prefix)))
            .await
            .with_context(|| format!("cannot list {prefix} in store {}", self.location))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let _timer = timer("delete");
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot delete {key} from store {}", self.location))
            }
        }
    }
}

fn timer(op: &str) -> prometheus::HistogramTimer {
    crate::metrics::metrics()
        .store_request_duration
        .with_label_values(&[op])
        .start_timer()
}

fn count_bytes(direction: &str, n: usize) {
    crate::metrics::metrics()
        .store_bytes
        .with_label_values(&[direction])
        .inc_by(n as u64);
}

/// S3 settings from the standard `AWS_*` environment variables; where they
/// name no key, from the standard credentials and config files
/// (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`, and
/// `AWS_CONFIG_FILE`, default `~/.aws/config`) for profile `AWS_PROFILE` or
/// `default`. Never from the command line, never logged.
fn s3_options(env: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let env: std::collections::HashMap<String, String> =
        env.filter(|(k, _)| k.starts_with("AWS_")).collect();
    let mut options: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, default: &str| {
        env.get(var)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(default)))
    };
    let profile = env
        .get("AWS_PROFILE")
        .cloned()
        .unwrap_or_else(|| "default".to_owned());
    let has = |options: &[(String, String)], key: &str| options.iter().any(|(k, _)| k == key);
    if !has(&options, "aws_access_key_id") {
        if let Some(path) = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials") {
            for (k, v) in read_profile(&path, &profile) {
                if matches!(
                    k.as_str(),
                    "aws_access_key_id" | "aws_secret_access_key" | "aws_session_token"
                ) {
                    options.push((k, v));
                }
            }
        }
    }
    if !has(&options, "aws_region") {
        let endpoint_set = has(&options, "aws_endpoint");
        if let Some(path) = file("AWS_CONFIG_FILE", ".aws/config") {
            let section = if profile == "default" {
                profile.clone()
            } else {
                format!("profile {profile}")
            };
            for (k, v) in read_profile(&path, &section) {
                match k.as_str() {
                    "region" => options.push(("aws_region".to_owned(), v)),
                    "endpoint_url" if !endpoint_set => options.push(("aws_endpoint".to_owned(), v)),
                    _ => {}
                }
            }
        }
    }
    options
}

/// The `key = value` pairs of one `[section]` of an INI file (AWS's format).
fn read_profile(path: &FsPath, section: &str) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
        } else if current == section {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
    }
    out
}

/// Keys of the store layout, in one place.
pub mod keys {
    use super::StageId;

    pub fn stage_dir(id: StageId) -> String {
        format!("stages/{id}")
    }

    pub fn artifact(id: StageId, name: &str) -> String {
        format!("stages/{id}/{name}")
    }

    pub fn manifest(id: StageId) -> String {
        artifact(id, "manifest.json")
    }

    pub fn failure(id: StageId) -> String {
        artifact(id, "failure.json")
    }

    /// A running stage's progress checkpoint of one part of its work
    /// (`train`, `generate`): not an artifact, deleted when the stage is done.
    pub fn progress(id: StageId, part: &str) -> String {
        format!("progress/{id}/{part}")
    }

    pub fn sweep_file(sweep: &str) -> String {
        format!("sweeps/{sweep}/sweep.toml")
    }

    /// `{"state": "active" | "done" | "failed" | "cancelled", "priority": n}`
    pub fn sweep_status(sweep: &str) -> String {
        format!("sweeps/{sweep}/status.json")
    }

    /// Where a submitted sweep's figures are tracked (`submit --track`).
    pub fn sweep_tracking(sweep: &str) -> String {
        format!("sweeps/{sweep}/tracking.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_if_absent_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        assert!(store
            .put_if_absent("a/b.json", Bytes::from_static(b"1"))
            .await
            .unwrap());
        assert!(!store
            .put_if_absent("a/b.json", Bytes::from_static(b"2"))
            .await
            .unwrap());
        assert_eq!(
            store.get("a/b.json").await.unwrap(),
            Bytes::from_static(b"1")
        );
        assert!(store.get_opt("a/missing").await.unwrap().is_none());
        store.delete("a/b.json").await.unwrap();
        store.delete("a/b.json").await.unwrap();
        assert!(store.get_opt("a/b.json").await.unwrap().is_none());
    }

    #[test]
    fn s3_credentials_come_from_the_environment_or_the_aws_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = SKDEFAULT\n\n[lab]\naws_access_key_id=AKLAB\naws_secret_access_key=SKLAB\n",
        )
        .unwrap();
        let config = dir.path().join("config");
        std::fs::write(&config, "[profile lab]\nregion = eu-west-1\n").unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut all: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            all.push((
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                creds.display().to_string(),
            ));
            all.push(("AWS_CONFIG_FILE".into(), config.display().to_string()));
            all.push(("PATH".into(), "/bin".into()));
            s3_options(all.into_iter())
        };
        let get = |opts: &[(String, String)], key: &str| {
            opts.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        };
        let from_file = env(&[("AWS_PROFILE", "lab")]);
        assert_eq!(
            get(&from_file, "aws_access_key_id").as_deref(),
            Some("AKLAB")
        );
        assert_eq!(
            get(&from_file, "aws_secret_access_key").as_deref(),
            Some("SKLAB")
        );
        assert_eq!(get(&from_file, "aws_region").as_deref(), Some("eu-west-1"));
        assert!(
            get(&from_file, "path").is_none(),
            "only AWS_* variables are read"
        );
        let default = env(&[]);
        assert_eq!(
            get(&default, "aws_access_key_id").as_deref(),
            Some("AKDEFAULT")
        );
        let from_env = env(&[
            ("AWS_ACCESS_KEY_ID", "AKENV"),
            ("AWS_SECRET_ACCESS_KEY", "SKENV"),
        ]);
        assert_eq!(
            get(&from_env, "aws_access_key_id").as_deref(),
            Some("AKENV"),
            "the environment wins"
        );
        assert_eq!(
            from_env
                .iter()
                .filter(|(k, _)| k == "aws_access_key_id")
                .count(),
            1
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_forms_expected() {
        let err = Store::open("gopher://x/y").unwrap_err();
        assert!(format!("{err:#}").contains("s3://bucket/prefix"), "{err:#}");
    }
}
