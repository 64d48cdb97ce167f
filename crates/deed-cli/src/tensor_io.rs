//! Reading and writing tensors as files: numpy `.npy`, ONNX `TensorProto` `.pb`, and
//! JSON (`{"shape": [...], "dtype": "f32", "data": [...]}`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use deed_types::{DType, Tensor, TensorData};
use half::f16;
use npyz::{TypeChar, WriterBuilder};

/// Reads a tensor from a file, choosing the format by extension.
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let t = match ext.as_str() {
        "npy" => read_npy(&bytes),
        "pb" => deed_runtime::proto::tensor_from_pb_bytes(&bytes)
            .map(|(_, t)| t)
            .map_err(anyhow::Error::from),
        "json" => read_json(&bytes),
        _ => bail!("unknown tensor file type `.{ext}`: use .npy, .pb or .json"),
    };
    t.with_context(|| format!("cannot read tensor from {}", path.display()))
}

/// Parses numpy `.npy` bytes (C order; numbers, bools).
pub fn read_npy(bytes: &[u8]) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(bytes)?;
    if npy.order() != npyz::Order::C {
        bail!("Fortran-ordered .npy arrays are not supported; save with C order");
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| anyhow!("dimension {d} too large")))
        .collect::<Result<_>>()?;
    let ts = match npy.dtype() {
        npyz::DType::Plain(ts) => ts,
        other => bail!("unsupported .npy dtype {}", other.descr()),
    };
    let size = ts.size_field();
    let data = match (ts.type_char(), size) {
        (TypeChar::Float, 4) => TensorData::F32(npy.into_vec()?),
        (TypeChar::Float, 8) => TensorData::F64(npy.into_vec()?),
        (TypeChar::Float, 2) => TensorData::F16(npy.into_vec::<f16>()?),
        (TypeChar::Int, 1) => TensorData::I8(npy.into_vec()?),
        (TypeChar::Int, 2) => TensorData::I16(npy.into_vec()?),
        (TypeChar::Int, 4) => TensorData::I32(npy.into_vec()?),
        (TypeChar::Int, 8) => TensorData::I64(npy.into_vec()?),
        (TypeChar::Uint, 1) => TensorData::U8(npy.into_vec()?),
        (TypeChar::Uint, 2) => TensorData::U16(npy.into_vec()?),
        (TypeChar::Uint, 4) => TensorData::U32(npy.into_vec()?),
        (TypeChar::Uint, 8) => TensorData::U64(npy.into_vec()?),
        (TypeChar::Bool, 1) => TensorData::Bool(npy.into_vec()?),
        _ => bail!("unsupported .npy dtype {}", ts),
    };
    Ok(Tensor::new(shape, data)?)
}

/// Encodes a tensor as `.npy` bytes.
pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    macro_rules! write {
        ($v:expr, $ty:ty) => {{
            let mut w = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()?;
            w.extend($v.iter().cloned())?;
            w.finish()?;
        }};
    }
    match t.data() {
        TensorData::F32(v) => write!(v, f32),
        TensorData::F64(v) => write!(v, f64),
        TensorData::F16(v) => write!(v, f16),
        TensorData::I8(v) => write!(v, i8),
        TensorData::I16(v) => write!(v, i16),
        TensorData::I32(v) => write!(v, i32),
        TensorData::I64(v) => write!(v, i64),
        TensorData::U8(v) => write!(v, u8),
        TensorData::U16(v) => write!(v, u16),
        TensorData::U32(v) => write!(v, u32),
        TensorData::U64(v) => write!(v, u64),
        TensorData::Bool(v) => write!(v, bool),
        TensorData::BF16(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            write!(f, f32)
        }
        TensorData::Str(_) => bail!("string tensors cannot be written as .npy"),
    }
    Ok(out)
}

/// Writes a tensor as `.npy`.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let bytes = npy_bytes(t)?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[derive(serde::Deserialize)]
struct JsonTensor {
    shape: Vec<usize>,
    dtype: String,
    data: Vec<serde_json::Value>,
}

/// Parses the JSON tensor form.
pub fn read_json(bytes: &[u8]) -> Result<Tensor> {
    let j: JsonTensor = serde_json::from_slice(bytes)
        .context("expected {\"shape\": [...], \"dtype\": \"f32\", \"data\": [...]}")?;
    let dtype = DType::from_name(&j.dtype).ok_or_else(|| anyhow!("unknown dtype `{}`", j.dtype))?;
    let num = |v: &serde_json::Value| -> Result<f64> {
        v.as_f64().ok_or_else(|| anyhow!("`{v}` is not a number"))
    };
    let int = |v: &serde_json::Value| -> Result<i64> {
        v.as_i64().ok_or_else(|| anyhow!("`{v}` is not an integer"))
    };
    macro_rules! ints {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(
                j.data
                    .iter()
                    .map(|v| {
                        let i = int(v)?;
                        <$t>::try_from(i).map_err(|_| anyhow!("{i} does not fit {}", j.dtype))
                    })
                    .collect::<Result<_>>()?,
            )
        };
    }
    let data = match dtype {
        DType::F32 => TensorData::F32(
            j.data
                .iter()
                .map(|v| num(v).map(|x| x as f32))
                .collect::<Result<_>>()?,
        ),
        DType::F64 => TensorData::F64(j.data.iter().map(num).collect::<Result<_>>()?),
        DType::F16 => TensorData::F16(
            j.data
                .iter()
                .map(|v| num(v).map(f16::from_f64))
                .collect::<Result<_>>()?,
        ),
        DType::I8 => ints!(i8, I8),
        DType::I16 => ints!(i16, I16),
        DType::I32 => ints!(i32, I32),
        DType::I64 => TensorData::I64(j.data.iter().map(int).collect::<Result<_>>()?),
        DType::U8 => ints!(u8, U8),
        DType::U16 => ints!(u16, U16),
        DType::U32 => ints!(u32, U32),
        DType::U64 => ints!(u64, U64),
        DType::Bool => TensorData::Bool(
            j.data
                .iter()
                .map(|v| v.as_bool().ok_or_else(|| anyhow!("`{v}` is not a bool")))
                .collect::<Result<_>>()?,
        ),
        DType::Str => TensorData::Str(
            j.data
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("`{v}` is not a string"))
                })
                .collect::<Result<_>>()?,
        ),
        other => bail!("dtype {other} is not accepted in JSON"),
    };
    Ok(Tensor::new(j.shape, data)?)
}

/// The first `n` elements as text, for human output.
pub fn preview(t: &Tensor, n: usize) -> String {
    let items: Vec<String> =
        deed_types::with_data!(t.data(), v => v.iter().take(n).map(|x| format!("{x:?}")).collect());
    let more = if t.len() > n { ", …" } else { "" };
    format!("[{}{more}]", items.join(", "))
}

/// The first `n` elements as JSON values.
pub fn preview_json(t: &Tensor, n: usize) -> Vec<serde_json::Value> {
    use serde_json::json;
    match t.data() {
        TensorData::F32(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::F64(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::F16(v) => v.iter().take(n).map(|x| json!(x.to_f32())).collect(),
        TensorData::BF16(v) => v.iter().take(n).map(|x| json!(x.to_f32())).collect(),
        TensorData::I8(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::I16(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::I32(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::I64(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::U8(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::U16(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::U32(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::U64(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::Bool(v) => v.iter().take(n).map(|x| json!(x)).collect(),
        TensorData::Str(v) => v.iter().take(n).map(|x| json!(x)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip() {
        let t = Tensor::from_vec(vec![2, 3], vec![1.0f32, -2.5, 3.0, f32::NAN, 0.0, 7.0]).unwrap();
        let back = read_npy(&npy_bytes(&t).unwrap()).unwrap();
        assert_eq!(back.encode(), t.encode());
        let b = Tensor::from_vec(vec![3], vec![true, false, true]).unwrap();
        assert_eq!(read_npy(&npy_bytes(&b).unwrap()).unwrap(), b);
        let i = Tensor::from_vec(vec![], vec![-5i64]).unwrap();
        assert_eq!(read_npy(&npy_bytes(&i).unwrap()).unwrap(), i);
    }

    #[test]
    fn json_forms() {
        let t = read_json(br#"{"shape":[2],"dtype":"i64","data":[1,-2]}"#).unwrap();
        assert_eq!(t, Tensor::from_vec(vec![2], vec![1i64, -2]).unwrap());
        assert!(read_json(br#"{"shape":[3],"dtype":"f32","data":[1]}"#).is_err());
        assert!(read_json(br#"{"shape":[1],"dtype":"u8","data":[300]}"#).is_err());
        assert!(read_json(br#"{"shape":[1],"dtype":"quux","data":[1]}"#).is_err());
    }
}
