//! Conversions from ONNX protobuf messages (parsed by `tract-onnx`'s prost types) into
//! Deed's own tensors and attributes.

use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};
use tract_onnx::pb;

use crate::error::RuntimeError;

fn bad(name: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::BadTensor {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// Converts an ONNX `TensorProto` (raw or typed-field storage) into a [`Tensor`].
///
/// Refuses external data, segments and dtypes Deed does not support, and checks that the
/// element count matches the dimensions.
pub fn tensor_from_proto(t: &pb::TensorProto) -> Result<Tensor, RuntimeError> {
    let name = t.name.as_str();
    if !t.external_data.is_empty() || t.data_location == Some(1) {
        return Err(bad(
            name,
            "external data is not supported; embed the weights in the model",
        ));
    }
    if t.segment.is_some() {
        return Err(bad(name, "segmented tensors are not supported"));
    }
    let dtype = DType::from_onnx_code(t.data_type).ok_or(RuntimeError::UnsupportedDType {
        name: name.to_owned(),
        code: t.data_type,
    })?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(name, format!("negative dimension {d}")))?;
        shape.push(d);
    }
    let n = deed_types::tensor::numel(&shape).ok_or_else(|| bad(name, "dimensions overflow"))?;
    let raw = &t.raw_data;
    let data = if !raw.is_empty() || (n == 0 && dtype != DType::Str) && typed_len(t) == 0 {
        from_raw(name, dtype, raw, n)?
    } else {
        from_typed(name, dtype, t, n)?
    };
    Tensor::new(shape, data).map_err(|e| bad(name, e.to_string()))
}

fn typed_len(t: &pb::TensorProto) -> usize {
    t.float_data.len()
        + t.int32_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len()
        + t.string_data.len()
}

fn from_raw(name: &str, dtype: DType, raw: &[u8], n: usize) -> Result<TensorData, RuntimeError> {
    if dtype == DType::Str {
        return Err(bad(name, "string tensors cannot use raw_data"));
    }
    let need = n
        .checked_mul(dtype.size_of())
        .ok_or_else(|| bad(name, "size overflow"))?;
    if raw.len() != need {
        return Err(bad(
            name,
            format!("raw_data holds {} bytes, the shape needs {need}", raw.len()),
        ));
    }
    macro_rules! le {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(
                raw.chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| {
                        let mut a = [0u8; std::mem::size_of::<$t>()];
                        a.copy_from_slice(c);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        };
    }
    Ok(match dtype {
        DType::F32 => le!(f32, F32),
        DType::F64 => le!(f64, F64),
        DType::F16 => le!(f16, F16),
        DType::BF16 => le!(bf16, BF16),
        DType::I8 => le!(i8, I8),
        DType::I16 => le!(i16, I16),
        DType::I32 => le!(i32, I32),
        DType::I64 => le!(i64, I64),
        DType::U8 => TensorData::U8(raw.to_vec()),
        DType::U16 => le!(u16, U16),
        DType::U32 => le!(u32, U32),
        DType::U64 => le!(u64, U64),
        DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        _ => return Err(bad(name, format!("dtype {dtype} cannot use raw_data"))),
    })
}

fn from_typed(
    name: &str,
    dtype: DType,
    t: &pb::TensorProto,
    n: usize,
) -> Result<TensorData, RuntimeError> {
    let check = |len: usize| -> Result<(), RuntimeError> {
        if len != n {
            Err(bad(
                name,
                format!("holds {len} elements, the shape needs {n}"),
            ))
        } else {
            Ok(())
        }
    };
    // ONNX stores the small integer types and float16 widened into int32_data.
    let i32s = &t.int32_data;
    Ok(match dtype {
        DType::F32 => {
            check(t.float_data.len())?;
            TensorData::F32(t.float_data.clone())
        }
        DType::F64 => {
            check(t.double_data.len())?;
            TensorData::F64(t.double_data.clone())
        }
        DType::I64 => {
            check(t.int64_data.len())?;
            TensorData::I64(t.int64_data.clone())
        }
        DType::I32 => {
            check(i32s.len())?;
            TensorData::I32(i32s.clone())
        }
        DType::I16 => {
            check(i32s.len())?;
            TensorData::I16(i32s.iter().map(|&v| v as i16).collect())
        }
        DType::I8 => {
            check(i32s.len())?;
            TensorData::I8(i32s.iter().map(|&v| v as i8).collect())
        }
        DType::U8 => {
            check(i32s.len())?;
            TensorData::U8(i32s.iter().map(|&v| v as u8).collect())
        }
        DType::U16 => {
            check(i32s.len())?;
            TensorData::U16(i32s.iter().map(|&v| v as u16).collect())
        }
        DType::Bool => {
            check(i32s.len())?;
            TensorData::Bool(i32s.iter().map(|&v| v != 0).collect())
        }
        DType::F16 => {
            check(i32s.len())?;
            TensorData::F16(i32s.iter().map(|&v| f16::from_bits(v as u16)).collect())
        }
        DType::BF16 => {
            check(i32s.len())?;
            TensorData::BF16(i32s.iter().map(|&v| bf16::from_bits(v as u16)).collect())
        }
        DType::U32 => {
            check(t.uint64_data.len())?;
            TensorData::U32(t.uint64_data.iter().map(|&v| v as u32).collect())
        }
        DType::U64 => {
            check(t.uint64_data.len())?;
            TensorData::U64(t.uint64_data.clone())
        }
        DType::Str => {
            check(t.string_data.len())?;
            let mut v = Vec::with_capacity(n);
            for s in &t.string_data {
                v.push(
                    String::from_utf8(s.clone())
                        .map_err(|_| bad(name, "string element is not UTF-8"))?,
                );
            }
            TensorData::Str(v)
        }
        _ => return Err(bad(name, format!("unsupported dtype {dtype}"))),
    })
}

/// Decodes a serialized `TensorProto` (the `.pb` files of the ONNX test suites).
pub fn tensor_from_pb_bytes(bytes: &[u8]) -> Result<(String, Tensor), RuntimeError> {
    use prost::Message;
    let t = pb::TensorProto::decode(bytes).map_err(|e| RuntimeError::Decode(e.to_string()))?;
    let tensor = tensor_from_proto(&t)?;
    Ok((t.name, tensor))
}
