//! The IDX loader against the real MNIST files that the set-up unpacked.

use std::path::PathBuf;

use subliminal_worker::experiments::mnist::idx;

fn data_dir() -> PathBuf {
    std::env::var_os("SUBLIMINAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data"))
}

#[test]
fn the_real_files_load_with_the_official_shapes_and_labels() {
    let mnist = idx::load(&data_dir()).expect("MNIST is set up: run scripts/setup.sh");
    assert_eq!(mnist.train.len(), 60_000);
    assert_eq!(mnist.test.len(), 10_000);
    assert_eq!(mnist.train.images.len(), 60_000 * 784);
    // The first training digit is a 5, the first test digit a 7.
    assert_eq!(mnist.train.labels[..5], [5, 0, 4, 1, 9]);
    assert_eq!(mnist.test.labels[..3], [7, 2, 1]);
    let mut counts = [0usize; 10];
    for &l in &mnist.test.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(
        counts,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let images = mnist.test.images(10, tch::Device::Cpu);
    assert_eq!(images.size(), vec![10, 784]);
    assert_eq!(images.min().double_value(&[]), -1.0);
    assert_eq!(images.max().double_value(&[]), 1.0);
}

#[test]
fn a_corrupt_or_missing_file_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = dir.path().join("mnist");
    std::fs::create_dir(&mnist).unwrap();
    let err = idx::read(&mnist).unwrap_err().to_string();
    assert!(
        err.contains("cannot read MNIST file") && err.contains("scripts/setup.sh"),
        "{err}"
    );
    for (name, _) in idx::FILES {
        std::fs::copy(idx::folder(&data_dir()).join(name), mnist.join(name)).unwrap();
    }
    assert!(idx::read(&mnist).is_ok());
    let labels = mnist.join("t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&labels, bytes).unwrap();
    let err = idx::read(&mnist).unwrap_err().to_string();
    assert!(
        err.contains("is corrupt") && err.contains("expected 27ae3e4e"),
        "{err}"
    );
}
