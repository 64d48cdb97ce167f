//! Reading and writing tensors as files: numpy `.npy`, ONNX `TensorProto` `.pb`, and
//! JSON (`{"shape": [...], "dtype": "f32", "data": [...]}`). Image files and `.bin`
//! are read as their bytes, a 1-D u8 tensor (what `ImageDecoder` takes).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use deed_types::lowbit::LowBit;
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
        "bin" | "png" | "bmp" | "pbm" | "pgm" | "ppm" | "pnm" | "pam" | "tif" | "tiff" | "webp"
        | "jpg" | "jpeg" => Ok(Tensor::from_vec(vec![bytes.len()], bytes)?),
        _ => bail!(
            "unknown tensor file type `.{ext}`: use .npy, .pb or .json, or .bin or an \
             image file for its bytes"
        ),
    };
    t.with_context(|| format!("cannot read tensor from {}", path.display()))
}

/// Parses numpy `.npy` bytes (C order; numbers, bools, and strings: numpy's `<U`
/// arrays, or `|S` arrays of UTF-8 bytes).
pub fn read_npy(bytes: &[u8]) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => anyhow!("the file ends inside its .npy header"),
        _ => anyhow::Error::from(e),
    })?;
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
        other => bail!("unsupported .npy dtype {}{}", other.descr(), LOW_BIT_NPY),
    };
    let size = ts.size_field();
    let elements = shape
        .iter()
        .try_fold(1u128, |n, &d| n.checked_mul(d as u128));
    let cut_short = |needed: Option<u128>| {
        let needed = needed.map_or_else(|| "more than 2^128".to_owned(), |n| n.to_string());
        anyhow!(
            "the file ends before its data does: shape {shape:?} of dtype {ts} holds \
             {needed} bytes"
        )
    };
    // The data must be in the file before anything is allocated for it. An element
    // counts as a byte at least: a zero-width string dtype (`<U0`, `|S0`) would
    // otherwise let a header of any shape through, and its strings fill memory.
    let needed = elements.and_then(|n| n.checked_mul(size.max(1) as u128));
    match needed {
        Some(n) if n <= npy_data_len(bytes) as u128 => {}
        _ => {
            return Err(cut_short(
                elements.and_then(|n| n.checked_mul(size as u128)),
            ))
        }
    }
    let data = read_npy_data(npy, ts.clone()).map_err(|e| {
        match e.downcast_ref::<std::io::Error>() {
            // A file cut short: say what it lacks, not the reader's "failed to fill
            // whole buffer".
            Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                cut_short(elements.and_then(|n| n.checked_mul(size as u128)))
            }
            _ => e,
        }
    })?;
    Ok(Tensor::new(shape, data)?)
}

/// How many bytes follow the header of the `.npy` file `bytes` (whose header has
/// been read): format 1 gives the header's length in two bytes, formats 2 and 3 in
/// four.
fn npy_data_len(bytes: &[u8]) -> usize {
    let header_end = match bytes.get(6) {
        Some(1) => bytes
            .get(8..10)
            .map(|b| 10 + usize::from(u16::from_le_bytes([b[0], b[1]]))),
        Some(_) => bytes.get(8..12).and_then(|b| {
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            usize::try_from(len).ok().and_then(|l| l.checked_add(12))
        }),
        None => None,
    };
    header_end.map_or(0, |end| bytes.len().saturating_sub(end))
}

/// The elements of a `.npy` array of the plain dtype `ts`.
fn read_npy_data(npy: npyz::NpyFile<&[u8]>, ts: npyz::TypeStr) -> Result<TensorData> {
    let size = ts.size_field();
    Ok(match (ts.type_char(), size) {
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
        (TypeChar::UnicodeStr, _) => TensorData::Str(npy.into_vec::<String>()?),
        (TypeChar::ByteStr, _) => TensorData::Str(
            npy.into_vec::<Vec<u8>>()?
                .into_iter()
                .map(|b| String::from_utf8(b).map_err(|_| anyhow!("a |S string is not UTF-8")))
                .collect::<Result<_>>()?,
        ),
        (TypeChar::RawData, 1) => {
            bail!("unsupported .npy dtype {ts}{LOW_BIT_NPY}")
        }
        _ => bail!("unsupported .npy dtype {}", ts),
    })
}

/// Why a one-byte `.npy` dtype numpy does not name is refused: `ml_dtypes` arrays
/// (`float8_e4m3fn`, `int4`, …) are saved as bare bytes without their type.
const LOW_BIT_NPY: &str = "; .npy has no standard encoding of the low-bit dtypes \
    (float8, float4, int4, uint4, int2, uint2, as ml_dtypes saves them): give these \
    tensors as TensorProto .pb or JSON";

/// Encodes a tensor as `.npy` bytes. The low-bit dtypes, which `.npy` cannot name, are
/// written as the standard type that holds their values exactly: the 8- and 4-bit
/// floats as f32, the 4- and 2-bit integers as i8 or u8 (as bf16 is written as f32).
/// Strings are written as numpy writes `str` arrays, `<UN` with `N` the longest
/// string's code points; as in numpy, a string's trailing NULs do not survive.
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
        TensorData::Str(v) => {
            let width = v
                .iter()
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max(1);
            let dtype = npyz::DType::Plain(format!("<U{width}").parse::<npyz::TypeStr>()?);
            let mut w = npyz::WriteOptions::<String>::new()
                .dtype(dtype)
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()?;
            w.extend(v.iter().cloned())?;
            w.finish()?;
        }
        TensorData::U4(v) => write!(v.iter().map(|x| x.get()).collect::<Vec<u8>>(), u8),
        TensorData::U2(v) => write!(v.iter().map(|x| x.get()).collect::<Vec<u8>>(), u8),
        TensorData::I4(v) => write!(v.iter().map(|x| x.get()).collect::<Vec<i8>>(), i8),
        TensorData::I2(v) => write!(v.iter().map(|x| x.get()).collect::<Vec<i8>>(), i8),
        TensorData::F8E4M3FN(v) => write!(low_bit_f32(v), f32),
        TensorData::F8E4M3FNUZ(v) => write!(low_bit_f32(v), f32),
        TensorData::F8E5M2(v) => write!(low_bit_f32(v), f32),
        TensorData::F8E5M2FNUZ(v) => write!(low_bit_f32(v), f32),
        TensorData::F8E8M0(v) => write!(low_bit_f32(v), f32),
        TensorData::F4E2M1(v) => write!(low_bit_f32(v), f32),
    }
    Ok(out)
}

/// The values of low-bit floats as `f32`s (exact).
fn low_bit_f32<T: LowBit>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f64() as f32).collect()
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
        d if d.is_low_bit() => {
            // Numbers converted as `Cast` converts f64 to the dtype (default
            // saturation and rounding), so a value the dtype holds stays exact.
            let v: Vec<f64> = j.data.iter().map(num).collect::<Result<_>>()?;
            let n = v.len();
            let wide = Tensor::from_vec(vec![n], v)?;
            let t = deed_runtime::ops::cast::cast(&wide, d)
                .map_err(|e| anyhow!("cannot convert to {d}: {e}"))?;
            t.into_parts().1
        }
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
        TensorData::U4(v) => v.iter().take(n).map(|x| json!(x.get())).collect(),
        TensorData::I4(v) => v.iter().take(n).map(|x| json!(x.get())).collect(),
        TensorData::U2(v) => v.iter().take(n).map(|x| json!(x.get())).collect(),
        TensorData::I2(v) => v.iter().take(n).map(|x| json!(x.get())).collect(),
        TensorData::F8E4M3FN(v) => low_bit_json(v, n),
        TensorData::F8E4M3FNUZ(v) => low_bit_json(v, n),
        TensorData::F8E5M2(v) => low_bit_json(v, n),
        TensorData::F8E5M2FNUZ(v) => low_bit_json(v, n),
        TensorData::F8E8M0(v) => low_bit_json(v, n),
        TensorData::F4E2M1(v) => low_bit_json(v, n),
    }
}

/// The first `n` low-bit floats as JSON numbers (NaN and infinities as `null`, as
/// for the other floats).
fn low_bit_json<T: LowBit>(v: &[T], n: usize) -> Vec<serde_json::Value> {
    v.iter()
        .take(n)
        .map(|x| serde_json::json!(x.to_f64()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `.npy` file with `descr`, `shape` (Python tuple text) and `data`, its header
    /// written as numpy writes one.
    fn npy_file(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let py = if fortran { "True" } else { "False" };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': {py}, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&u16::try_from(h.len()).unwrap().to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    /// Tensor files of every kind `deed run` reads, valid, to break.
    fn valid_files() -> Vec<(&'static str, Vec<u8>)> {
        let f = Tensor::new(vec![2, 3], TensorData::F32(vec![1.5; 6])).unwrap();
        let s = Tensor::new(vec![2], TensorData::Str(vec!["ab".into(), "ü".into()])).unwrap();
        let pb = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deed-runtime/tests/fixtures/function-ops/",
            "test_affine_grid_2d_align_corners/test_data_set_0/input_0.pb"
        ))
        .unwrap();
        vec![
            ("npy", npy_bytes(&f).unwrap()),
            ("npy", npy_bytes(&s).unwrap()),
            (
                "json",
                br#"{"shape": [2, 2], "dtype": "i8", "data": [1, -2, 3, 4]}"#.to_vec(),
            ),
            (
                "json",
                br#"{"shape": [1], "dtype": "f8e4m3fn", "data": [0.5]}"#.to_vec(),
            ),
            ("pb", pb),
        ]
    }

    fn read_kind(kind: &str, bytes: &[u8]) -> Result<Tensor> {
        match kind {
            "npy" => read_npy(bytes),
            "json" => read_json(bytes),
            _ => deed_runtime::proto::tensor_from_pb_bytes(bytes)
                .map(|(_, t)| t)
                .map_err(anyhow::Error::from),
        }
    }

    /// A string dtype of width 0 needs no data bytes, so a 128-byte header could
    /// claim 2^61 strings, and reading them filled memory until the process died.
    #[test]
    fn zero_width_strings_cannot_claim_any_shape() {
        for descr in ["<U0", "|S0"] {
            let bytes = npy_file(descr, false, "(2305843009213693951,)", &[]);
            let e = read_npy(&bytes).unwrap_err().to_string();
            assert!(e.contains("ends before its data"), "{e}");
            let none = read_npy(&npy_file(descr, false, "(0,)", &[])).unwrap();
            assert_eq!((none.shape(), none.len()), (&[0][..], 0));
        }
        let huge = npy_file(
            "<f4",
            false,
            "(4294967296, 4294967296, 4294967296, 4294967296, 4294967296)",
            &[],
        );
        let e = read_npy(&huge).unwrap_err().to_string();
        assert!(e.contains("more than 2^128"), "{e}");
    }

    proptest! {
        /// Tensor files with bytes flipped, set, inserted or cut out are read or
        /// refused, never a panic; what is read holds as many elements as its shape.
        #[test]
        fn broken_tensor_files_are_refused_or_read_whole(
            file in 0..5usize,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 1..8),
        ) {
            let (kind, mut bytes) = valid_files().swap_remove(file);
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] ^= 1 << (byte % 8),
                    1 if i < bytes.len() => bytes[i] = byte,
                    2 => bytes.insert(i, byte),
                    _ if i < bytes.len() => { bytes.remove(i); }
                    _ => bytes.truncate(i / 2),
                }
            }
            if let Ok(t) = read_kind(kind, &bytes) {
                prop_assert_eq!(t.shape().iter().product::<usize>(), t.len());
            }
        }

        /// `.npy` headers of every dtype numpy names (and some it does not) with
        /// hostile shapes, over data of any length: read or refused, never a panic or
        /// an allocation the data cannot fill.
        #[test]
        fn npy_headers_with_hostile_shapes_are_refused_or_read_whole(
            descr in prop::sample::select(vec![
                "<f4", ">f4", "<f8", "<f2", "<i8", "|i1", "<u2", "|b1", "<U3", "<U0", "|S2",
                "|S0", "|V4", "<c8", "O", "<m8", "<M8[s]", "|u1", "<i16", "f4", "",
            ]),
            fortran in any::<bool>(),
            shape in prop::sample::select(vec![
                "()", "(0,)", "(3,)", "(2, 3)", "(-1,)", "(18446744073709551616,)",
                "(4294967296, 4294967296)", "(4294967296, 4294967296, 0)",
                "(2305843009213693951,)", "(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
                "(3.5,)", "[3]", "(3)", "x", "(0, 18446744073709551615)",
            ]),
            data in prop::collection::vec(any::<u8>(), 0..48),
        ) {
            let bytes = npy_file(descr, fortran, shape, &data);
            if let Ok(t) = read_npy(&bytes) {
                prop_assert_eq!(t.shape().iter().product::<usize>(), t.len());
            }
        }
    }

    #[test]
    fn a_cut_npy_file_says_what_it_lacks() {
        let t = Tensor::new(vec![2, 3], TensorData::F32(vec![1.0; 6])).unwrap();
        let bytes = npy_bytes(&t).unwrap();
        assert_eq!(read_npy(&bytes).unwrap(), t);
        for cut in [1, 4, 24] {
            let e = read_npy(&bytes[..bytes.len() - cut])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("ends before its data")
                    && e.contains("[2, 3]")
                    && e.contains("24 bytes"),
                "{e}"
            );
        }
        let header = bytes.len() - 24;
        for len in [8, 12, header - 1] {
            let e = read_npy(&bytes[..len]).unwrap_err().to_string();
            assert!(e.contains("ends inside its .npy header"), "{len}: {e}");
        }
    }

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
    fn image_and_bin_files_are_read_as_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["photo.PNG", "frame.webp", "scan.tiff", "raw.bin"] {
            let path = dir.path().join(name);
            std::fs::write(&path, b"\x89PNG any bytes").unwrap();
            let t = read_tensor(&path).unwrap();
            assert_eq!(t.shape(), [14]);
            assert_eq!(t.as_slice::<u8>().unwrap(), b"\x89PNG any bytes");
        }
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"x").unwrap();
        let e = read_tensor(&other).unwrap_err().to_string();
        assert!(e.contains(".txt") && e.contains(".bin"), "{e}");
    }

    #[test]
    fn string_tensors_round_trip_as_numpy_str_arrays() {
        let words = ["", "grüße", "a b", "日本語のテキスト", "x"];
        let t = Tensor::new(
            vec![5, 1],
            TensorData::Str(words.iter().map(|w| (*w).to_owned()).collect()),
        )
        .unwrap();
        let bytes = npy_bytes(&t).unwrap();
        // numpy's header for a str array as wide as the longest string (8 code points).
        let header = String::from_utf8_lossy(&bytes[..128]);
        assert!(header.contains("'descr': '<U8'"), "{header}");
        assert_eq!(read_npy(&bytes).unwrap(), t);
        let empty = Tensor::new(vec![0], TensorData::Str(Vec::new())).unwrap();
        assert_eq!(read_npy(&npy_bytes(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn low_bit_tensors_write_as_npy_exactly_and_read_as_json() {
        use deed_types::tensor::{F8E4M3FN, I4};
        let f8 = Tensor::from_vec(
            vec![3],
            vec![
                F8E4M3FN::from_bits(0x7E),
                F8E4M3FN::from_bits(0x81),
                F8E4M3FN::from_bits(0x38),
            ],
        )
        .unwrap();
        let back = read_npy(&npy_bytes(&f8).unwrap()).unwrap();
        assert_eq!(
            back.as_slice::<f32>().unwrap(),
            &[448.0, -(2f32.powi(-9)), 1.0]
        );
        let i4 =
            Tensor::from_vec(vec![2], vec![I4::new(-8).unwrap(), I4::new(7).unwrap()]).unwrap();
        let back = read_npy(&npy_bytes(&i4).unwrap()).unwrap();
        assert_eq!(back.as_slice::<i8>().unwrap(), &[-8, 7]);
        let j =
            read_json(br#"{"shape":[3],"dtype":"float8e4m3fn","data":[448,1000,-0.5]}"#).unwrap();
        // 1000 saturates to the largest finite value, 448 (code 0x7E).
        assert_eq!(
            j.low_bit_values::<F8E4M3FN>().unwrap(),
            [448.0, 448.0, -0.5]
        );
        let j = read_json(br#"{"shape":[2],"dtype":"int4","data":[-3,7]}"#).unwrap();
        assert_eq!(j, i4_of(&[-3, 7]));
        // A one-byte dtype numpy does not know is refused with a reason, not a panic.
        let mut raw = npy_bytes(&Tensor::from_vec(vec![1], vec![1u8]).unwrap()).unwrap();
        let at = raw.windows(3).position(|w| w == b"|u1").unwrap();
        raw[at..at + 3].copy_from_slice(b"|V1");
        let e = read_npy(&raw).unwrap_err().to_string();
        assert!(e.contains("low-bit"), "{e}");
    }

    fn i4_of(v: &[i8]) -> Tensor {
        use deed_types::tensor::I4;
        Tensor::from_vec(
            vec![v.len()],
            v.iter().map(|&x| I4::new(x).unwrap()).collect(),
        )
        .unwrap()
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
