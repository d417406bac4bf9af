//! Tensors to and from safetensors bytes, with a JSON config in the metadata.
//!
//! Artifacts go through the store as bytes, so checkpoints and datasets are
//! (de)serialised in memory rather than through files.

use std::collections::HashMap;

use anyhow::Context;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{Device, Kind, Tensor};

/// Serialises float tensors (stored as f32) with string metadata.
pub fn to_bytes(
    tensors: &[(&str, &Tensor)],
    metadata: HashMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let cpu = tensor
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let shape: Vec<usize> = cpu.size().iter().map(|&d| d as usize).collect();
        let values = Vec::<f32>::try_from(&cpu.flatten(0, -1))
            .with_context(|| format!("cannot read tensor {name}"))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((name.to_string(), shape, bytes));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    Ok(safetensors::tensor::serialize(views, &Some(metadata))?)
}

/// [`to_bytes`] of tensors held with their names (a var store's, an optimiser's state).
pub fn named_to_bytes(
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    to_bytes(&named, metadata)
}

/// Safetensors bytes, parsed, with their metadata.
pub struct Loaded<'a> {
    tensors: SafeTensors<'a>,
    pub metadata: HashMap<String, String>,
    what: String,
}

pub fn parse<'a>(bytes: &'a [u8], what: &str) -> anyhow::Result<Loaded<'a>> {
    let tensors = SafeTensors::deserialize(bytes)
        .with_context(|| format!("{what} is not a valid safetensors file"))?;
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    Ok(Loaded {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
        what: what.to_owned(),
    })
}

impl Loaded<'_> {
    /// An f32 tensor by name, on `device`.
    pub fn tensor(&self, name: &str, device: Device) -> anyhow::Result<Tensor> {
        let view = self
            .tensors
            .tensor(name)
            .with_context(|| format!("{} has no tensor {name:?}", self.what))?;
        anyhow::ensure!(
            view.dtype() == Dtype::F32,
            "{}: tensor {name:?} is {:?}, expected F32",
            self.what,
            view.dtype()
        );
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let shape: Vec<i64> = view
            .shape()
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: tensor {name:?} has a dimension past 2^63", self.what))?;
        Ok(Tensor::from_slice(&values)
            .f_view(shape.as_slice())
            .with_context(|| format!("{}: tensor {name:?} does not fit its shape", self.what))?
            .to_device(device))
    }

    /// The names of every tensor.
    pub fn names(&self) -> Vec<String> {
        self.tensors.names().into_iter().cloned().collect()
    }

    /// A metadata entry parsed as JSON.
    pub fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<T> {
        let text = self
            .metadata
            .get(key)
            .with_context(|| format!("{} has no metadata {key:?}", self.what))?;
        serde_json::from_str(text)
            .with_context(|| format!("{}: metadata {key:?} is malformed", self.what))
    }
}
