//! Conversions from ONNX protobuf messages (parsed by `tract-onnx`'s prost types) into
//! Deed's own tensors and attributes.

use deed_types::tensor::{
    F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F8E8M0, I2, I4, U2, U4,
};
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

/// Elements per byte of ONNX's storage of `dtype`: 2 for the 4-bit types, 4 for the
/// 2-bit ones (packed from the low bits up), 1 for everything else.
fn per_byte(dtype: DType) -> usize {
    match dtype {
        DType::U4 | DType::I4 | DType::F4E2M1 => 2,
        DType::U2 | DType::I2 => 4,
        _ => 1,
    }
}

/// The low-bit elements held in ONNX's storage bytes `bytes`, which must be exactly
/// the `⌈n / per_byte⌉` bytes that `n` elements need. In a packed byte the first
/// element is in the lowest bits; the unused high bits of a last, partly filled byte
/// are ignored. Every byte is a float8's bits.
fn low_bit(
    name: &str,
    dtype: DType,
    bytes: &[u8],
    n: usize,
    field: &str,
) -> Result<TensorData, RuntimeError> {
    let per = per_byte(dtype);
    let need = n.div_ceil(per);
    if bytes.len() != need {
        return Err(bad(
            name,
            format!(
                "{field} holds {} bytes, {n} {dtype} elements need {need}",
                bytes.len()
            ),
        ));
    }
    let bits = 8 / per;
    let codes = (0..n).map(|i| bytes[i / per] >> (bits * (i % per)));
    Ok(match dtype {
        DType::F8E4M3FN => TensorData::F8E4M3FN(codes.map(F8E4M3FN::from_bits).collect()),
        DType::F8E4M3FNUZ => TensorData::F8E4M3FNUZ(codes.map(F8E4M3FNUZ::from_bits).collect()),
        DType::F8E5M2 => TensorData::F8E5M2(codes.map(F8E5M2::from_bits).collect()),
        DType::F8E5M2FNUZ => TensorData::F8E5M2FNUZ(codes.map(F8E5M2FNUZ::from_bits).collect()),
        DType::F8E8M0 => TensorData::F8E8M0(codes.map(F8E8M0::from_bits).collect()),
        DType::F4E2M1 => TensorData::F4E2M1(codes.map(F4E2M1::from_bits).collect()),
        DType::U4 => TensorData::U4(codes.map(U4::from_bits).collect()),
        DType::I4 => TensorData::I4(codes.map(I4::from_bits).collect()),
        DType::U2 => TensorData::U2(codes.map(U2::from_bits).collect()),
        DType::I2 => TensorData::I2(codes.map(I2::from_bits).collect()),
        other => return Err(bad(name, format!("{other} is not a low-bit dtype"))),
    })
}

fn from_raw(name: &str, dtype: DType, raw: &[u8], n: usize) -> Result<TensorData, RuntimeError> {
    if dtype == DType::Str {
        return Err(bad(name, "string tensors cannot use raw_data"));
    }
    if dtype.is_low_bit() {
        return low_bit(name, dtype, raw, n, "raw_data");
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
    if dtype.is_low_bit() {
        // One storage byte per int32 (its low 8 bits, as ONNX's reader takes them):
        // a float8 each, or two 4-bit / four 2-bit elements packed.
        let bytes: Vec<u8> = i32s.iter().map(|&v| v as u8).collect();
        return low_bit(name, dtype, &bytes, n, "int32_data");
    }
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
    let t =
        pb::TensorProto::decode(bytes).map_err(|e| RuntimeError::DecodeTensor(e.to_string()))?;
    let tensor = tensor_from_proto(&t)?;
    Ok((t.name, tensor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(code: i32, dims: &[i64], raw: &[u8], i32s: &[i32]) -> pb::TensorProto {
        pb::TensorProto {
            name: "t".into(),
            data_type: code,
            dims: dims.to_vec(),
            raw_data: raw.to_vec(),
            int32_data: i32s.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn packed_low_bit_tensors_unpack_low_bits_first() {
        // int4 [-8, 7, -1] packed: 0x78, then 0x0F (the high nibble of the last byte is
        // padding and ignored).
        let t = tensor_from_proto(&proto(22, &[3], &[0x78, 0xAF], &[])).unwrap();
        assert_eq!(t.low_bit_values::<I4>().unwrap(), [-8.0, 7.0, -1.0]);
        // The same bytes from int32_data.
        let u = tensor_from_proto(&proto(22, &[3], &[], &[0x78, 0xAF])).unwrap();
        assert_eq!(u, t);
        // uint2 [1, 2, 3, 0, 3]: 0b00_11_10_01, 0b11.
        let t = tensor_from_proto(&proto(25, &[5], &[0x39, 0x03], &[])).unwrap();
        assert_eq!(t.low_bit_values::<U2>().unwrap(), [1.0, 2.0, 3.0, 0.0, 3.0]);
        let t = tensor_from_proto(&proto(26, &[4], &[0x39], &[])).unwrap();
        assert_eq!(t.low_bit_values::<I2>().unwrap(), [1.0, -2.0, -1.0, 0.0]);
        // float4e2m1 [0.5, -6]: codes 0x1, 0xF.
        let t = tensor_from_proto(&proto(23, &[2], &[0xF1], &[])).unwrap();
        assert_eq!(t.low_bit_values::<F4E2M1>().unwrap(), [0.5, -6.0]);
        // float8: one byte (or one int32) per element.
        let t = tensor_from_proto(&proto(17, &[2], &[0x7E, 0xFF], &[])).unwrap();
        let u = tensor_from_proto(&proto(17, &[2], &[], &[0x7E, 0xFF])).unwrap();
        assert_eq!(t, u);
        assert_eq!(t.as_slice::<F8E4M3FN>().unwrap()[0].to_f32(), 448.0);
        // Empty tensors need no bytes.
        assert_eq!(
            tensor_from_proto(&proto(21, &[0], &[], &[])).unwrap().len(),
            0
        );
    }

    #[test]
    fn malformed_low_bit_tensors_are_refused() {
        for (code, dims, raw, i32s) in [
            (22, vec![3], vec![0x78], vec![]),       // too few bytes
            (22, vec![3], vec![0x78, 0, 0], vec![]), // too many
            (25, vec![5], vec![0x39], vec![]),       // 5 two-bit elements need 2
            (17, vec![2], vec![], vec![1]),          // int32_data too short
            (21, vec![4], vec![], vec![1, 2, 3]),    // 4 nibbles are 2 bytes
            (24, vec![-1], vec![], vec![]),          // negative dimension
        ] {
            let e = tensor_from_proto(&proto(code, &dims, &raw, &i32s)).unwrap_err();
            assert!(matches!(e, RuntimeError::BadTensor { .. }), "{code}: {e}");
        }
        let e = tensor_from_proto(&proto(27, &[1], &[0], &[])).unwrap_err();
        assert!(
            matches!(e, RuntimeError::UnsupportedDType { code: 27, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_tensor_file_that_is_not_a_tensor_proto_says_so() {
        // Field 2 (data_type) with a 32-bit wire type where a varint belongs.
        let e = tensor_from_pb_bytes(&[0x15, 0, 0, 0, 0]).unwrap_err();
        assert!(matches!(e, RuntimeError::DecodeTensor(_)), "{e}");
        assert!(
            e.to_string().starts_with("malformed ONNX TensorProto"),
            "{e}"
        );
        // Cut short inside a length-delimited field.
        let e = tensor_from_pb_bytes(&[0x4a, 8, 0]).unwrap_err();
        assert!(matches!(e, RuntimeError::DecodeTensor(_)), "{e}");
    }
}
