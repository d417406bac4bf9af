//! GGUF files (llama.cpp's format): metadata, tensor directory, and
//! dequantisation of F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors to f32.
//!
//! A GGUF file carries a whole model: its architecture as metadata keys, its
//! BPE vocabulary and merges, its chat template and its weights. Loading one
//! yields the same parts as a Hugging Face folder (see [`super::load`]).

use std::collections::HashMap;

use anyhow::{bail, Context};
use half::{bf16, f16};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// How deep metadata arrays may nest (real files nest none).
const MAX_ARRAY_DEPTH: usize = 8;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// The storage type of a tensor, by its ggml number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl TensorType {
    fn from_ggml(code: u32) -> anyhow::Result<Self> {
        Ok(match code {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            3 => TensorType::Q4_1,
            8 => TensorType::Q8_0,
            30 => TensorType::BF16,
            other => bail!(
                "ggml tensor type {other} is not supported: expected F32, F16, BF16, Q8_0, Q4_0 or Q4_1 \
                 (re-quantise the file with llama.cpp's llama-quantize)"
            ),
        })
    }

    /// (elements per block, bytes per block)
    fn block(self) -> (usize, usize) {
        match self {
            TensorType::F32 => (1, 4),
            TensorType::F16 | TensorType::BF16 => (1, 2),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q4_1 => (32, 20),
            TensorType::Q8_0 => (32, 34),
        }
    }
}

/// Where a tensor lies in the file and how it is stored.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Dimensions fastest-varying first, as ggml lists them.
    pub dims: Vec<u64>,
    pub kind: TensorType,
    offset: u64,
}

impl TensorInfo {
    /// How many values; [`Gguf::parse`] has checked that this does not overflow.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape in PyTorch's order (slowest-varying first).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
}

/// A parsed GGUF file, held in memory.
pub struct Gguf {
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<(String, TensorInfo)>,
    bytes: Vec<u8>,
    data_start: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .with_context(|| format!("file ends at byte {} inside the header", self.bytes.len()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn string(&mut self) -> anyhow::Result<String> {
        let len = self.u64()? as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
    fn value(&mut self, kind: u32) -> anyhow::Result<Value> {
        self.value_at(kind, 0)
    }
    /// A value `depth` arrays deep: nesting is bounded, so a crafted file
    /// cannot exhaust the stack.
    fn value_at(&mut self, kind: u32, depth: usize) -> anyhow::Result<Value> {
        Ok(match kind {
            0 => Value::Int(self.take(1)?[0] as i64),
            1 => Value::Int(self.take(1)?[0] as i8 as i64),
            2 => Value::Int(u16::from_le_bytes(self.take(2)?.try_into()?) as i64),
            3 => Value::Int(i16::from_le_bytes(self.take(2)?.try_into()?) as i64),
            4 => Value::Int(self.u32()? as i64),
            5 => Value::Int(self.u32()? as i32 as i64),
            6 => Value::Float(f32::from_le_bytes(self.take(4)?.try_into()?) as f64),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    bail!(
                        "metadata arrays nest deeper than {MAX_ARRAY_DEPTH} at byte {}",
                        self.pos
                    );
                }
                let item = self.u32()?;
                let count = self.u64()? as usize;
                // Every item takes at least a byte: a count past what is left is a lie.
                if count > self.bytes.len() - self.pos {
                    bail!(
                        "a metadata array at byte {} claims {count} items; only {} bytes are left",
                        self.pos,
                        self.bytes.len() - self.pos
                    );
                }
                let mut items = Vec::with_capacity(count.min(1 << 20));
                for _ in 0..count {
                    items.push(self.value_at(item, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::Int(self.u64()? as i64),
            11 => Value::Int(self.u64()? as i64),
            12 => Value::Float(f64::from_le_bytes(self.take(8)?.try_into()?)),
            other => bail!("metadata value type {other} is not a GGUF type"),
        })
    }
}

/// The header up to the tensor directory: the tensor count and the metadata.
fn read_metadata(r: &mut Reader) -> anyhow::Result<(u64, HashMap<String, Value>)> {
    if r.take(4)? != MAGIC {
        bail!("not a GGUF file: it does not start with \"GGUF\"");
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        bail!("GGUF version {version} is not supported: expected 2 or 3");
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let kind = r.u32()?;
        let value = r
            .value(kind)
            .with_context(|| format!("metadata key {key}"))?;
        metadata.insert(key, value);
    }
    Ok((tensor_count, metadata))
}

impl Gguf {
    /// The metadata alone, from the start of a file (a prefix that holds
    /// the whole header is enough: no tensor is read).
    pub fn metadata(prefix: &[u8]) -> anyhow::Result<HashMap<String, Value>> {
        let mut r = Reader {
            bytes: prefix,
            pos: 0,
        };
        Ok(read_metadata(&mut r)?.1)
    }

    pub fn parse(bytes: Vec<u8>) -> anyhow::Result<Self> {
        let mut r = Reader {
            bytes: &bytes,
            pos: 0,
        };
        let (tensor_count, metadata) = read_metadata(&mut r)?;
        let mut tensors = Vec::new();
        for _ in 0..tensor_count {
            let name = r.string()?;
            let n_dims = r.u32()? as usize;
            if n_dims > 8 {
                bail!("tensor {name} has {n_dims} dimensions: GGUF tensors have at most 8");
            }
            let dims: Vec<u64> = (0..n_dims)
                .map(|_| r.u64())
                .collect::<anyhow::Result<_>>()?;
            if dims.iter().any(|&d| d > i64::MAX as u64) {
                bail!("tensor {name} has a dimension past 2^63: {dims:?}");
            }
            let kind = TensorType::from_ggml(r.u32()?).with_context(|| format!("tensor {name}"))?;
            let offset = r.u64()?;
            tensors.push((name, TensorInfo { dims, kind, offset }));
        }
        let alignment = match metadata.get("general.alignment").and_then(Value::as_int) {
            None => DEFAULT_ALIGNMENT,
            Some(a) if (1..=1 << 20).contains(&a) => a as u64,
            Some(a) => bail!("general.alignment is {a}: expected from 1 to 1048576 bytes"),
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let gguf = Gguf {
            metadata,
            tensors,
            data_start: data_start as usize,
            bytes,
        };
        for (name, info) in &gguf.tensors {
            gguf.raw(name, info)?;
        }
        Ok(gguf)
    }

    pub fn get(&self, key: &str) -> anyhow::Result<&Value> {
        self.metadata
            .get(key)
            .with_context(|| format!("GGUF metadata has no key {key}"))
    }

    pub fn int(&self, key: &str) -> anyhow::Result<i64> {
        self.get(key)?
            .as_int()
            .with_context(|| format!("GGUF metadata {key} is not an integer"))
    }

    pub fn string_array(&self, key: &str) -> anyhow::Result<Vec<String>> {
        self.get(key)?
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .with_context(|| format!("GGUF metadata {key} is not an array of strings"))
    }

    fn raw(&self, name: &str, info: &TensorInfo) -> anyhow::Result<&[u8]> {
        let (per_block, block_bytes) = info.kind.block();
        let elements = info
            .dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
            .with_context(|| {
                format!(
                    "tensor {name} has dimensions {:?}: too many elements",
                    info.dims
                )
            })?;
        if elements % per_block != 0 {
            bail!("tensor {name} has {elements} elements, not a whole number of {per_block}-element blocks");
        }
        let past_end =
            || format!("tensor {name} lies past the end of the file (truncated download?)");
        let len = (elements / per_block)
            .checked_mul(block_bytes)
            .with_context(past_end)?;
        let start = usize::try_from(info.offset)
            .ok()
            .and_then(|o| o.checked_add(self.data_start))
            .with_context(past_end)?;
        let end = start.checked_add(len).with_context(past_end)?;
        self.bytes.get(start..end).with_context(past_end)
    }

    /// A tensor's values as f32, in PyTorch's element order.
    pub fn dequantize(&self, name: &str, info: &TensorInfo) -> anyhow::Result<Vec<f32>> {
        let raw = self.raw(name, info)?;
        Ok(dequantize(info.kind, raw))
    }
}

fn dequantize(kind: TensorType, raw: &[u8]) -> Vec<f32> {
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    match kind {
        TensorType::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        TensorType::F16 => raw.chunks_exact(2).map(|c| f16_at(c, 0)).collect(),
        TensorType::BF16 => raw
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        TensorType::Q8_0 => raw
            .chunks_exact(34)
            .flat_map(|b| {
                let d = f16_at(b, 0);
                b[2..34].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        TensorType::Q4_0 | TensorType::Q4_1 => {
            let block_bytes = kind.block().1;
            let mut out = Vec::with_capacity(raw.len() / block_bytes * 32);
            for b in raw.chunks_exact(block_bytes) {
                let d = f16_at(b, 0);
                let (min, qs) = match kind {
                    TensorType::Q4_1 => (f16_at(b, 2), &b[4..20]),
                    _ => (-8.0 * d, &b[2..18]),
                };
                // The low nibbles hold elements 0..16, the high nibbles 16..32.
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + min));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + min));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_q4_1(d: f32, m: f32, nibbles: [u8; 32]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(f16::from_f32(d).to_le_bytes());
        b.extend(f16::from_f32(m).to_le_bytes());
        for j in 0..16 {
            b.push(nibbles[j] | (nibbles[j + 16] << 4));
        }
        b
    }

    #[test]
    fn q4_1_puts_low_nibbles_first() {
        let mut nibbles = [0u8; 32];
        for (i, n) in nibbles.iter_mut().enumerate() {
            *n = (i % 16) as u8;
        }
        let out = dequantize(TensorType::Q4_1, &block_q4_1(0.5, -1.0, nibbles));
        let expected: Vec<f32> = nibbles.iter().map(|&n| n as f32 * 0.5 - 1.0).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn q4_0_is_centred_on_eight_and_q8_0_is_signed() {
        let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend([0x8f_u8; 16]);
        let out = dequantize(TensorType::Q4_0, &b);
        assert_eq!(out[0], (15.0 - 8.0) * 2.0);
        assert_eq!(out[16], 0.0);
        let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let out = dequantize(TensorType::Q8_0, &b);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[31], 15.0 * 0.25);
    }

    #[test]
    fn refuses_what_is_not_gguf() {
        let err = Gguf::parse(b"GGML\0\0\0\0".to_vec()).err().unwrap();
        assert!(err.to_string().contains("not a GGUF file"), "{err}");
        let err = Gguf::parse(b"GGUF\x03\0\0\0".to_vec()).err().unwrap();
        assert!(err.to_string().contains("inside the header"), "{err}");
    }
}
