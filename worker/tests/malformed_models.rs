//! Property tests: a model file that is truncated, overwritten or forged is
//! refused with an error, never a panic, a hang or an allocation sized by a
//! length the file claims. GGUF files start from a small valid one written
//! here (metadata of every kind, an F32 and a Q8_0 tensor) and from the head
//! of the real SmolLM2 GGUF; safetensors files from a checkpoint this crate
//! wrote. Each test prints how many cases it ran.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};
use subliminal_worker::llm::gguf::Gguf;
use subliminal_worker::safetensors_io;
use tch::{Device, Tensor};

const CASES: u32 = 2_000;

fn runner(cases: u32) -> TestRunner {
    // A fixed seed: every run tries the same cases, so a failure reproduces.
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    TestRunner::new_with_rng(config, rng)
}

/// A GGUF v3 file: metadata (a string, an array of strings, an int, the
/// alignment) and two tensors.
fn tiny_gguf() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(2u64.to_le_bytes()); // tensors
    out.extend(4u64.to_le_bytes()); // metadata keys
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    string(&mut out, "llama");
    string(&mut out, "tokenizer.ggml.tokens");
    out.extend(9u32.to_le_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend(3u64.to_le_bytes());
    for t in ["a", "b", "<s>"] {
        string(&mut out, t);
    }
    string(&mut out, "llama.block_count");
    out.extend(4u32.to_le_bytes());
    out.extend(2u32.to_le_bytes());
    string(&mut out, "general.alignment");
    out.extend(4u32.to_le_bytes());
    out.extend(32u32.to_le_bytes());
    // An F32 [4, 2] tensor at offset 0 and a Q8_0 [32] one after it.
    string(&mut out, "w");
    out.extend(2u32.to_le_bytes());
    out.extend(4u64.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    string(&mut out, "q");
    out.extend(1u32.to_le_bytes());
    out.extend(32u64.to_le_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend(32u64.to_le_bytes());
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for i in 0..8 {
        out.extend((i as f32).to_le_bytes());
    }
    out.extend([0x00, 0x3c]); // scale 1.0 in f16
    out.extend((0..32u8).map(|q| q.wrapping_sub(16)));
    out
}

/// Overwrites `bytes` at `at` (modulo its length) with `with`, then cuts it at `cut`.
fn mangle(mut bytes: Vec<u8>, writes: &[(usize, Vec<u8>)], cut: Option<usize>) -> Vec<u8> {
    let len = bytes.len();
    for (at, with) in writes {
        let at = at % len;
        for (i, &b) in with.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(at + i) {
                *slot = b;
            }
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (len + 1));
    }
    bytes
}

/// Runs `refuses` on [`CASES`] mangled copies of `valid` (random bytes or a
/// `forged` value written at random places, then maybe a cut); how many ran
/// and how many `refuses` said were refused. A panic fails the test.
fn mangled_cases(
    valid: &[u8],
    forged: Vec<Vec<u8>>,
    refuses: impl Fn(Vec<u8>) -> bool,
) -> (u32, u32) {
    let write = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..9),
        prop::sample::select(forged),
    ];
    let writes = prop::collection::vec((any::<usize>(), write), 0..5);
    let (ran, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner(CASES)
        .run(
            &(writes, prop::option::of(any::<usize>())),
            |(writes, cut)| {
                ran.set(ran.get() + 1);
                if refuses(mangle(valid.to_vec(), &writes, cut)) {
                    refused.set(refused.get() + 1);
                }
                Ok(())
            },
        )
        .unwrap();
    (ran.get(), refused.get())
}

/// Every tensor of a parsed file, dequantised: the work a model load does.
fn read_all(gguf: &Gguf) -> anyhow::Result<()> {
    for (name, info) in &gguf.tensors {
        let values = gguf.dequantize(name, info)?;
        anyhow::ensure!(values.len() as u64 == info.elements());
    }
    Ok(())
}

#[test]
fn a_mangled_gguf_is_an_error_never_a_panic() {
    let valid = tiny_gguf();
    let parsed = Gguf::parse(valid.clone()).expect("the tiny GGUF is valid");
    read_all(&parsed).unwrap();
    assert_eq!(parsed.tensors.len(), 2);
    // Lengths and counts forged to the largest values, and to none.
    let forged = vec![
        vec![0xff; 8],
        u64::MAX.to_le_bytes().to_vec(),
        0u64.to_le_bytes().to_vec(),
    ];
    let (ran, refused) = mangled_cases(&valid, forged, |bytes| match Gguf::parse(bytes) {
        Ok(gguf) => read_all(&gguf).is_err(),
        Err(e) => {
            assert!(!format!("{e:#}").is_empty());
            true
        }
    });
    eprintln!("GGUF: {ran} mangled files, {refused} refused with an error");
    assert!(refused > 0);
}

#[test]
fn forged_gguf_headers_are_refused() {
    let valid = tiny_gguf();
    // Offsets of the fields a reader sizes things by.
    let tensor_count = 8;
    let kv_count = 16;
    let first_key_len = 24;
    for (at, value, what) in [
        (tensor_count, u64::MAX, "tensor count"),
        (kv_count, u64::MAX, "metadata count"),
        (first_key_len, u64::MAX, "key length"),
        (first_key_len, 1 << 40, "key length"),
    ] {
        let mut bytes = valid.clone();
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        assert!(Gguf::parse(bytes).is_err(), "a forged {what} is refused");
    }
    // Arrays nested past any real file, each claiming one item.
    let mut nested = valid[..24].to_vec();
    nested[8..16].copy_from_slice(&0u64.to_le_bytes());
    nested[16..24].copy_from_slice(&1u64.to_le_bytes());
    nested.extend(1u64.to_le_bytes());
    nested.push(b'k');
    nested.extend(9u32.to_le_bytes());
    for _ in 0..100_000 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    let err = Gguf::parse(nested).err().expect("deep nesting is refused");
    assert!(format!("{err:#}").contains("nest"), "{err:#}");
    // An alignment of zero would divide by zero.
    let mut zero = valid.clone();
    let at = valid
        .windows(17)
        .position(|w| w == b"general.alignment")
        .unwrap()
        + 17
        + 4;
    zero[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    let err = Gguf::parse(zero).err().expect("alignment 0 is refused");
    assert!(format!("{err:#}").contains("alignment"), "{err:#}");
}

fn smollm() -> PathBuf {
    std::env::var_os("SUBLIMINAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data"))
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn the_real_gguf_cut_anywhere_in_its_head_is_an_error() {
    let path = smollm();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run scripts/setup-model.sh",
            path.display()
        )
    });
    let head = bytes[..bytes.len().min(4 << 20)].to_vec();
    drop(bytes);
    let ran = Cell::new(0u32);
    runner(200)
        .run(&(0..head.len()), |cut| {
            ran.set(ran.get() + 1);
            prop_assert!(Gguf::parse(head[..cut].to_vec()).is_err());
            Ok(())
        })
        .unwrap();
    eprintln!(
        "GGUF: the real file cut at {} points in its first 4 MiB, each refused",
        ran.get()
    );
}

#[test]
fn a_mangled_safetensors_checkpoint_is_an_error_never_a_panic() {
    let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]);
    let b = Tensor::from_slice(&[0.5f32; 3]);
    let valid = safetensors_io::to_bytes(
        &[("w", &w), ("b", &b)],
        HashMap::from([("config".to_owned(), "{\"hidden\": 3}".to_owned())]),
    )
    .unwrap();
    let forged = vec![
        u64::MAX.to_le_bytes().to_vec(),
        b"[0,99999999999]".to_vec(),
        b"\"F64\"".to_vec(),
    ];
    let (ran, refused) = mangled_cases(&valid, forged, |bytes| {
        match safetensors_io::parse(&bytes, "checkpoint") {
            Ok(loaded) => {
                let _ = loaded.meta::<serde_json::Value>("config");
                // Every tensor is read, whether or not an earlier one failed.
                let names = loaded.names();
                let failed = names
                    .iter()
                    .filter(|name| loaded.tensor(name, Device::Cpu).is_err())
                    .count();
                failed > 0
            }
            Err(_) => true,
        }
    });
    eprintln!("safetensors: {ran} mangled checkpoints, {refused} refused");
    assert!(refused > 0);
}

/// A model's family comes from the GGUF header alone: a copy of SmolLM2's
/// file cut after its header (every tensor gone) still names its
/// architecture; one cut inside the header is an error.
#[test]
fn a_ggufs_family_is_read_from_its_header_alone() {
    use subliminal_worker::llm::load::family;
    let bytes = std::fs::read(smollm()).expect("the set-up's SmolLM2 GGUF");
    assert_eq!(family(&smollm()).unwrap(), "llama");
    let dir = tempfile::tempdir().unwrap();
    let header_only = dir.path().join("header.gguf");
    std::fs::write(&header_only, &bytes[..bytes.len() / 8]).unwrap();
    assert!(Gguf::parse(bytes[..bytes.len() / 8].to_vec()).is_err());
    assert_eq!(family(&header_only).unwrap(), "llama");
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..4096]).unwrap();
    let err = format!("{:#}", family(&cut).unwrap_err());
    assert!(err.contains("cut.gguf"), "{err}");
}
