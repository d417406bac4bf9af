//! The worker's artifact cache on local disk: base models and datasets that
//! many stages read are fetched from the store once per machine.
//!
//! Files are named by their SHA-256, so an entry never goes stale: a changed
//! artifact has another name. Entries are checked on every read; a damaged
//! one is dropped and fetched again. When the cache grows past its budget,
//! the least recently used files go first.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use subliminal_shared::manifest::{sha256_hex, ArtifactCache};

#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl DiskCache {
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the artifact cache {}: {e}", dir.display())
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.dir.join(&sha256[..2]).join(sha256))
    }

    /// Every cached file with its size and last use.
    fn entries(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                if let Ok(meta) = file.metadata() {
                    let used = meta
                        .accessed()
                        .or_else(|_| meta.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((file.path(), meta.len(), used));
                }
            }
        }
        out
    }

    fn evict(&self) {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        for (path, size, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

impl ArtifactCache for DiskCache {
    fn get(&self, sha256: &str) -> Option<Bytes> {
        let path = self.path(sha256)?;
        let bytes = std::fs::read(&path).ok()?;
        if sha256_hex(&bytes) != sha256 {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Mark as used for eviction (atime may be off on this filesystem).
        let _ = std::fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Some(Bytes::from(bytes))
    }

    fn put(&self, sha256: &str, bytes: &Bytes) {
        let Some(path) = self.path(sha256) else {
            return;
        };
        if bytes.len() as u64 > self.max_bytes || path.exists() {
            return;
        }
        let Some(parent) = path.parent() else { return };
        let tmp = parent.join(format!(".{sha256}.{}", std::process::id()));
        let written = std::fs::create_dir_all(parent)
            .and_then(|_| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!("cannot cache artifact {sha256}: {e}");
            return;
        }
        self.evict();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_verifies_and_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 10).unwrap();
        let a = Bytes::from_static(b"hello");
        let sha_a = sha256_hex(&a);
        cache.put(&sha_a, &a);
        assert_eq!(cache.get(&sha_a), Some(a.clone()));
        // A damaged entry is dropped, not served.
        std::fs::write(cache.path(&sha_a).unwrap(), b"jello").unwrap();
        assert_eq!(cache.get(&sha_a), None);
        assert!(!cache.path(&sha_a).unwrap().exists());
        // Over budget: the oldest goes.
        cache.put(&sha_a, &a);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = Bytes::from_static(b"world!");
        let sha_b = sha256_hex(&b);
        cache.put(&sha_b, &b);
        assert_eq!(cache.get(&sha_b), Some(b));
        assert_eq!(cache.get(&sha_a), None, "evicted to stay within 10 bytes");
        assert_eq!(cache.get("../../etc/passwd"), None, "names are hashes only");
    }
}
