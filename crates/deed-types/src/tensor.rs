//! Tensors as Deed exchanges and commits to them: a dtype, a shape and dense row-major
//! data, with one canonical byte encoding (the bytes that are hashed into traces and
//! receipts).
//!
//! Canonical encoding, version 1 (all integers little-endian):
//!
//! ```text
//! magic    "DTN1"                        4 bytes
//! dtype    ONNX TensorProto.DataType     u8
//! rank     number of dimensions          u32
//! dims     each dimension                u64 × rank
//! data     row-major elements:
//!            numbers  little-endian IEEE-754 / two's complement bytes
//!            bool     one byte, 0 or 1
//!            string   u32 byte length, then UTF-8 bytes
//!            low-bit  one byte per element (codes 17 to 26; see `lowbit`):
//!                       float8 (17–20, 24)  the element's 8 bits
//!                       float4e2m1 (23)     its 4-bit code, high 4 bits zero
//!                       uint4, uint2 (21, 25)  the value, 0..=15 / 0..=3
//!                       int4, int2 (22, 26)    the value as a two's-complement
//!                                              i8, -8..=7 / -2..=1 (sign-extended)
//!                     any other byte is malformed. ONNX packs the 4- and 2-bit types
//!                     two and four to a byte; Deed's encoding does not.
//! ```
//!
//! The hash of a tensor is `blake3(encoding)`, computed by streaming so no copy of the
//! data is made.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::lowbit::LowBit;
pub use crate::lowbit::{F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F8E8M0, I2, I4, U2, U4};

/// Element types, numbered as ONNX's `TensorProto.DataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 8-bit unsigned integer.
    U8,
    /// 8-bit signed integer.
    I8,
    /// 16-bit unsigned integer.
    U16,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// UTF-8 string.
    Str,
    /// Boolean.
    Bool,
    /// 16-bit IEEE float.
    F16,
    /// 64-bit IEEE float.
    F64,
    /// 32-bit unsigned integer.
    U32,
    /// 64-bit unsigned integer.
    U64,
    /// bfloat16.
    BF16,
    /// 8-bit float, 4 exponent and 3 mantissa bits, no infinity ([`F8E4M3FN`]).
    F8E4M3FN,
    /// 8-bit float, 4 exponent and 3 mantissa bits, no infinity or −0, one NaN ([`F8E4M3FNUZ`]).
    F8E4M3FNUZ,
    /// 8-bit float, 5 exponent and 2 mantissa bits, IEEE-like ([`F8E5M2`]).
    F8E5M2,
    /// 8-bit float, 5 exponent and 2 mantissa bits, no infinity or −0, one NaN ([`F8E5M2FNUZ`]).
    F8E5M2FNUZ,
    /// 4-bit unsigned integer ([`U4`]).
    U4,
    /// 4-bit signed integer ([`I4`]).
    I4,
    /// 4-bit float, 2 exponent and 1 mantissa bit, no infinity or NaN ([`F4E2M1`]).
    F4E2M1,
    /// 8-bit power of two, the scale of the microscaling formats ([`F8E8M0`]).
    F8E8M0,
    /// 2-bit unsigned integer ([`U2`]).
    U2,
    /// 2-bit signed integer ([`I2`]).
    I2,
}

impl DType {
    /// Every dtype, in ONNX code order.
    pub const ALL: [DType; 24] = [
        DType::F32,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::Str,
        DType::Bool,
        DType::F16,
        DType::F64,
        DType::U32,
        DType::U64,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::U4,
        DType::I4,
        DType::F4E2M1,
        DType::F8E8M0,
        DType::U2,
        DType::I2,
    ];

    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Str => 8,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U32 => 12,
            DType::U64 => 13,
            DType::BF16 => 16,
            DType::F8E4M3FN => 17,
            DType::F8E4M3FNUZ => 18,
            DType::F8E5M2 => 19,
            DType::F8E5M2FNUZ => 20,
            DType::U4 => 21,
            DType::I4 => 22,
            DType::F4E2M1 => 23,
            DType::F8E8M0 => 24,
            DType::U2 => 25,
            DType::I2 => 26,
        }
    }

    /// The dtype for an ONNX `TensorProto.DataType` code, if Deed supports it.
    pub fn from_onnx_code(code: i32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.onnx_code() == code)
    }

    /// Bytes per element (strings: 0, they are variable-sized).
    pub fn size_of(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            // The low-bit types take one byte per element, in memory and in the
            // canonical encoding (ONNX's packing of 4- and 2-bit types is undone when
            // a `TensorProto` is read).
            DType::F8E4M3FN
            | DType::F8E4M3FNUZ
            | DType::F8E5M2
            | DType::F8E5M2FNUZ
            | DType::U4
            | DType::I4
            | DType::F4E2M1
            | DType::F8E8M0
            | DType::U2
            | DType::I2 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::Str => 0,
        }
    }

    /// Floating-point dtypes.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// The ONNX low-bit dtypes (codes 17 to 26): the 8- and 4-bit floats and the 4-
    /// and 2-bit integers. They are storage types: casts, quantization and data
    /// movement take them, arithmetic does not, and neither [`DType::is_float`] nor
    /// [`DType::is_int`] counts them.
    pub fn is_low_bit(self) -> bool {
        matches!(
            self,
            DType::F8E4M3FN
                | DType::F8E4M3FNUZ
                | DType::F8E5M2
                | DType::F8E5M2FNUZ
                | DType::U4
                | DType::I4
                | DType::F4E2M1
                | DType::F8E8M0
                | DType::U2
                | DType::I2
        )
    }

    /// Integer dtypes (signed or unsigned; not bool).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::U8
                | DType::I8
                | DType::U16
                | DType::I16
                | DType::I32
                | DType::I64
                | DType::U32
                | DType::U64
        )
    }

    /// Short lowercase name: `f32`, `i64`, `bool`, …
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Str => "str",
            DType::Bool => "bool",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::BF16 => "bf16",
            DType::F8E4M3FN => "f8e4m3fn",
            DType::F8E4M3FNUZ => "f8e4m3fnuz",
            DType::F8E5M2 => "f8e5m2",
            DType::F8E5M2FNUZ => "f8e5m2fnuz",
            DType::U4 => "u4",
            DType::I4 => "i4",
            DType::F4E2M1 => "f4e2m1",
            DType::F8E8M0 => "f8e8m0",
            DType::U2 => "u2",
            DType::I2 => "i2",
        }
    }

    /// Parses a short name (`f32`, `float32`, `int64`, …).
    pub fn from_name(s: &str) -> Option<DType> {
        Some(match s {
            "f32" | "float32" | "float" => DType::F32,
            "f64" | "float64" | "double" => DType::F64,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            "i8" | "int8" => DType::I8,
            "i16" | "int16" => DType::I16,
            "i32" | "int32" => DType::I32,
            "i64" | "int64" => DType::I64,
            "u8" | "uint8" => DType::U8,
            "u16" | "uint16" => DType::U16,
            "u32" | "uint32" => DType::U32,
            "u64" | "uint64" => DType::U64,
            "bool" => DType::Bool,
            "str" | "string" => DType::Str,
            "f8e4m3fn" | "float8e4m3fn" | "float8_e4m3fn" => DType::F8E4M3FN,
            "f8e4m3fnuz" | "float8e4m3fnuz" | "float8_e4m3fnuz" => DType::F8E4M3FNUZ,
            "f8e5m2" | "float8e5m2" | "float8_e5m2" => DType::F8E5M2,
            "f8e5m2fnuz" | "float8e5m2fnuz" | "float8_e5m2fnuz" => DType::F8E5M2FNUZ,
            "f8e8m0" | "float8e8m0" | "float8_e8m0fnu" => DType::F8E8M0,
            "f4e2m1" | "float4e2m1" | "float4_e2m1fn" => DType::F4E2M1,
            "u4" | "uint4" => DType::U4,
            "i4" | "int4" => DType::I4,
            "u2" | "uint2" => DType::U2,
            "i2" | "int2" => DType::I2,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dense, row-major tensor storage, one variant per dtype.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum TensorData {
    F32(Vec<f32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Str(Vec<String>),
    Bool(Vec<bool>),
    F16(Vec<f16>),
    F64(Vec<f64>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    BF16(Vec<bf16>),
    F8E4M3FN(Vec<F8E4M3FN>),
    F8E4M3FNUZ(Vec<F8E4M3FNUZ>),
    F8E5M2(Vec<F8E5M2>),
    F8E5M2FNUZ(Vec<F8E5M2FNUZ>),
    U4(Vec<U4>),
    I4(Vec<I4>),
    F4E2M1(Vec<F4E2M1>),
    F8E8M0(Vec<F8E8M0>),
    U2(Vec<U2>),
    I2(Vec<I2>),
}

/// Invokes `$body` with `$v` bound to the typed vector inside a [`TensorData`].
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::Str($v) => $body,
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::F16($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::BF16($v) => $body,
            $crate::tensor::TensorData::F8E4M3FN($v) => $body,
            $crate::tensor::TensorData::F8E4M3FNUZ($v) => $body,
            $crate::tensor::TensorData::F8E5M2($v) => $body,
            $crate::tensor::TensorData::F8E5M2FNUZ($v) => $body,
            $crate::tensor::TensorData::U4($v) => $body,
            $crate::tensor::TensorData::I4($v) => $body,
            $crate::tensor::TensorData::F4E2M1($v) => $body,
            $crate::tensor::TensorData::F8E8M0($v) => $body,
            $crate::tensor::TensorData::U2($v) => $body,
            $crate::tensor::TensorData::I2($v) => $body,
        }
    };
}

impl TensorData {
    /// The dtype of the stored elements.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::U16(_) => DType::U16,
            TensorData::I16(_) => DType::I16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Str(_) => DType::Str,
            TensorData::Bool(_) => DType::Bool,
            TensorData::F16(_) => DType::F16,
            TensorData::F64(_) => DType::F64,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F8E4M3FN(_) => DType::F8E4M3FN,
            TensorData::F8E4M3FNUZ(_) => DType::F8E4M3FNUZ,
            TensorData::F8E5M2(_) => DType::F8E5M2,
            TensorData::F8E5M2FNUZ(_) => DType::F8E5M2FNUZ,
            TensorData::U4(_) => DType::U4,
            TensorData::I4(_) => DType::I4,
            TensorData::F4E2M1(_) => DType::F4E2M1,
            TensorData::F8E8M0(_) => DType::F8E8M0,
            TensorData::U2(_) => DType::U2,
            TensorData::I2(_) => DType::I2,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zero (or false, or empty-string) elements of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::U16 => TensorData::U16(vec![0; n]),
            DType::I16 => TensorData::I16(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::Str => TensorData::Str(vec![String::new(); n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::F64 => TensorData::F64(vec![0.0; n]),
            DType::U32 => TensorData::U32(vec![0; n]),
            DType::U64 => TensorData::U64(vec![0; n]),
            DType::BF16 => TensorData::BF16(vec![bf16::ZERO; n]),
            DType::F8E4M3FN => TensorData::F8E4M3FN(vec![F8E4M3FN::default(); n]),
            DType::F8E4M3FNUZ => TensorData::F8E4M3FNUZ(vec![F8E4M3FNUZ::default(); n]),
            DType::F8E5M2 => TensorData::F8E5M2(vec![F8E5M2::default(); n]),
            DType::F8E5M2FNUZ => TensorData::F8E5M2FNUZ(vec![F8E5M2FNUZ::default(); n]),
            DType::U4 => TensorData::U4(vec![U4::default(); n]),
            DType::I4 => TensorData::I4(vec![I4::default(); n]),
            DType::F4E2M1 => TensorData::F4E2M1(vec![F4E2M1::default(); n]),
            DType::F8E8M0 => TensorData::F8E8M0(vec![F8E8M0::default(); n]),
            DType::U2 => TensorData::U2(vec![U2::default(); n]),
            DType::I2 => TensorData::I2(vec![I2::default(); n]),
        }
    }
}

/// A native element type that can live in a [`TensorData`].
pub trait Element: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Wraps a vector of elements.
    fn wrap(v: Vec<Self>) -> TensorData;
    /// Borrows the elements when `data` holds this type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    /// Mutably borrows the elements when `data` holds this type.
    fn slice_mut(data: &mut TensorData) -> Option<&mut Vec<Self>>;
    /// Takes the elements when `data` holds this type.
    fn unwrap_data(data: TensorData) -> Option<Vec<Self>>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(data: &mut TensorData) -> Option<&mut Vec<Self>> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn unwrap_data(data: TensorData) -> Option<Vec<Self>> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

element!(f32, F32);
element!(u8, U8);
element!(i8, I8);
element!(u16, U16);
element!(i16, I16);
element!(i32, I32);
element!(i64, I64);
element!(String, Str);
element!(bool, Bool);
element!(f16, F16);
element!(f64, F64);
element!(u32, U32);
element!(u64, U64);
element!(bf16, BF16);
element!(F8E4M3FN, F8E4M3FN);
element!(F8E4M3FNUZ, F8E4M3FNUZ);
element!(F8E5M2, F8E5M2);
element!(F8E5M2FNUZ, F8E5M2FNUZ);
element!(U4, U4);
element!(I4, I4);
element!(F4E2M1, F4E2M1);
element!(F8E8M0, F8E8M0);
element!(U2, U2);
element!(I2, I2);

/// Why a tensor could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// The element count does not match the product of the shape.
    #[error("shape {shape:?} holds {expected} elements but {actual} were given")]
    LengthMismatch {
        /// The shape given.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// The shape's element count overflows `usize`.
    #[error("shape {0:?} is too large")]
    ShapeOverflow(Vec<usize>),
    /// The encoding is malformed.
    #[error("malformed tensor encoding: {0}")]
    Malformed(&'static str),
    /// The dtype code is not one Deed knows.
    #[error("unknown dtype code {0}")]
    UnknownDType(i32),
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Product of `shape`, or `None` on overflow.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

const MAGIC: &[u8; 4] = b"DTN1";

impl Tensor {
    /// Builds a tensor, checking that the data fills the shape exactly.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let expected = numel(&shape).ok_or_else(|| TensorError::ShapeOverflow(shape.clone()))?;
        if expected != data.len() {
            return Err(TensorError::LengthMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// Builds a tensor from a typed vector.
    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, T::wrap(v))
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = numel(&shape).ok_or_else(|| TensorError::ShapeOverflow(shape.clone()))?;
        Ok(Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        })
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Takes the shape and storage apart.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// Typed view of the elements, if the dtype is `T`'s.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    /// The elements' values (exact) when the dtype is the low-bit type `T`'s: the
    /// number an integer or float code stands for, NaN for a NaN code.
    pub fn low_bit_values<T: Element + LowBit>(&self) -> Option<Vec<f64>> {
        Some(self.as_slice::<T>()?.iter().map(|x| x.to_f64()).collect())
    }

    /// Takes the typed elements, if the dtype is `T`'s.
    pub fn into_vec<T: Element>(self) -> Option<Vec<T>> {
        T::unwrap_data(self.data)
    }

    /// The same data under another shape with the same element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, self.data)
    }

    /// Replaces every NaN of a floating-point tensor by the canonical quiet NaN of its
    /// dtype (positive, no payload: f32 `0x7FC00000`, f64 `0x7FF8000000000000`, f16
    /// `0x7E00`, bf16 `0x7FC0`). Hardware differs in which NaN bits an operation
    /// produces; canonicalizing every tensor a node outputs makes NaN bits part of the
    /// specification. Returns true when anything changed.
    ///
    /// The 8-bit float types are left as they are: no hardware computes them, every
    /// operator that writes one defines its bits exactly (a NaN's sign included, as
    /// ONNX's `Cast` tables do), so their NaNs need no rewriting.
    pub fn canonicalize_nans(&mut self) -> bool {
        fn fix<T: Copy>(v: &mut [T], is_nan: impl Fn(T) -> bool, nan: T) -> bool {
            let mut changed = false;
            for x in v.iter_mut() {
                if is_nan(*x) {
                    *x = nan;
                    changed = true;
                }
            }
            changed
        }
        match &mut self.data {
            TensorData::F32(v) => {
                let canon = f32::from_bits(0x7FC0_0000);
                fix(v, |x| x.is_nan() && x.to_bits() != 0x7FC0_0000, canon)
            }
            TensorData::F64(v) => {
                let canon = f64::from_bits(0x7FF8_0000_0000_0000);
                fix(
                    v,
                    |x| x.is_nan() && x.to_bits() != 0x7FF8_0000_0000_0000,
                    canon,
                )
            }
            TensorData::F16(v) => fix(
                v,
                |x| x.is_nan() && x.to_bits() != 0x7E00,
                f16::from_bits(0x7E00),
            ),
            TensorData::BF16(v) => fix(
                v,
                |x| x.is_nan() && x.to_bits() != 0x7FC0,
                bf16::from_bits(0x7FC0),
            ),
            _ => false,
        }
    }

    /// Approximate bytes held (strings count their UTF-8 length).
    pub fn byte_size(&self) -> usize {
        match &self.data {
            TensorData::Str(v) => v.iter().map(|s| s.len() + 8).sum(),
            d => d.len() * d.dtype().size_of(),
        }
    }

    /// Length in bytes of the canonical encoding ([`Tensor::encode`]), computed
    /// without encoding.
    pub fn encoded_len(&self) -> usize {
        let data = match &self.data {
            TensorData::Str(v) => v.iter().map(|s| 4 + s.len()).sum(),
            d => d.len() * d.dtype().size_of(),
        };
        9 + 8 * self.shape.len() + data
    }

    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(9 + 8 * self.shape.len());
        h.extend_from_slice(MAGIC);
        h.push(self.dtype().onnx_code() as u8);
        h.extend_from_slice(&(self.shape.len() as u32).to_le_bytes());
        for &d in &self.shape {
            h.extend_from_slice(&(d as u64).to_le_bytes());
        }
        h
    }

    /// Feeds the canonical encoding to `sink` in pieces (no full copy).
    pub fn encode_into(&self, sink: &mut dyn FnMut(&[u8])) {
        sink(&self.header());
        // Numbers are written in bounded chunks so that a large tensor is never copied
        // whole, yet the output is byte-for-byte the canonical little-endian form on any
        // host.
        const CHUNK: usize = 4096;
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 8);
        macro_rules! numbers {
            ($v:expr) => {
                for c in $v.chunks(CHUNK) {
                    buf.clear();
                    for x in c {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                    sink(&buf);
                }
            };
        }
        macro_rules! bytes {
            ($v:expr) => {
                for c in $v.chunks(CHUNK) {
                    buf.clear();
                    buf.extend(c.iter().map(|x| x.byte()));
                    sink(&buf);
                }
            };
        }
        match &self.data {
            TensorData::F32(v) => numbers!(v),
            TensorData::U8(v) => sink(v),
            TensorData::I8(v) => numbers!(v),
            TensorData::U16(v) => numbers!(v),
            TensorData::I16(v) => numbers!(v),
            TensorData::I32(v) => numbers!(v),
            TensorData::I64(v) => numbers!(v),
            TensorData::F16(v) => numbers!(v),
            TensorData::F64(v) => numbers!(v),
            TensorData::U32(v) => numbers!(v),
            TensorData::U64(v) => numbers!(v),
            TensorData::BF16(v) => numbers!(v),
            TensorData::F8E4M3FN(v) => bytes!(v),
            TensorData::F8E4M3FNUZ(v) => bytes!(v),
            TensorData::F8E5M2(v) => bytes!(v),
            TensorData::F8E5M2FNUZ(v) => bytes!(v),
            TensorData::U4(v) => bytes!(v),
            TensorData::I4(v) => bytes!(v),
            TensorData::F4E2M1(v) => bytes!(v),
            TensorData::F8E8M0(v) => bytes!(v),
            TensorData::U2(v) => bytes!(v),
            TensorData::I2(v) => bytes!(v),
            TensorData::Bool(v) => {
                for c in v.chunks(CHUNK) {
                    buf.clear();
                    buf.extend(c.iter().map(|&b| b as u8));
                    sink(&buf);
                }
            }
            TensorData::Str(v) => {
                for s in v {
                    sink(&(s.len() as u32).to_le_bytes());
                    sink(s.as_bytes());
                }
            }
        }
    }

    /// The canonical encoding as one buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_size() + 16 + 8 * self.rank());
        self.encode_into(&mut |b| out.extend_from_slice(b));
        out
    }

    /// Feeds the canonical encoding into a running blake3 hasher.
    pub fn hash_into(&self, hasher: &mut blake3::Hasher) {
        self.encode_into(&mut |b| {
            hasher.update(b);
        });
    }

    /// blake3 of the canonical encoding.
    pub fn hash(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        self.hash_into(&mut h);
        h.finalize().into()
    }

    /// Decodes a canonical encoding, rejecting anything malformed or trailing.
    pub fn decode(bytes: &[u8]) -> Result<Tensor, TensorError> {
        let mut r = Reader { b: bytes };
        if r.take(4)? != MAGIC {
            return Err(TensorError::Malformed("bad magic"));
        }
        let code = r.take(1)?[0] as i32;
        let dtype = DType::from_onnx_code(code).ok_or(TensorError::UnknownDType(code))?;
        let rank = u32::from_le_bytes(r.array()?) as usize;
        if rank > 64 {
            return Err(TensorError::Malformed("rank above 64"));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            let d = u64::from_le_bytes(r.array()?);
            shape.push(usize::try_from(d).map_err(|_| TensorError::Malformed("dimension"))?);
        }
        let n = numel(&shape).ok_or_else(|| TensorError::ShapeOverflow(shape.clone()))?;
        let need = n
            .checked_mul(dtype.size_of())
            .ok_or(TensorError::Malformed("size overflow"))?;
        if dtype != DType::Str && r.b.len() != need {
            return Err(TensorError::Malformed("data length does not match shape"));
        }
        macro_rules! nums {
            ($t:ty, $variant:ident) => {{
                let v: Vec<$t> =
                    r.b.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect();
                TensorData::$variant(v)
            }};
        }
        let data = match dtype {
            DType::F32 => nums!(f32, F32),
            DType::U8 => TensorData::U8(r.b.to_vec()),
            DType::I8 => nums!(i8, I8),
            DType::U16 => nums!(u16, U16),
            DType::I16 => nums!(i16, I16),
            DType::I32 => nums!(i32, I32),
            DType::I64 => nums!(i64, I64),
            DType::F16 => nums!(f16, F16),
            DType::F64 => nums!(f64, F64),
            DType::U32 => nums!(u32, U32),
            DType::U64 => nums!(u64, U64),
            DType::BF16 => nums!(bf16, BF16),
            DType::F8E4M3FN => TensorData::F8E4M3FN(low_bit(r.b)?),
            DType::F8E4M3FNUZ => TensorData::F8E4M3FNUZ(low_bit(r.b)?),
            DType::F8E5M2 => TensorData::F8E5M2(low_bit(r.b)?),
            DType::F8E5M2FNUZ => TensorData::F8E5M2FNUZ(low_bit(r.b)?),
            DType::U4 => TensorData::U4(low_bit(r.b)?),
            DType::I4 => TensorData::I4(low_bit(r.b)?),
            DType::F4E2M1 => TensorData::F4E2M1(low_bit(r.b)?),
            DType::F8E8M0 => TensorData::F8E8M0(low_bit(r.b)?),
            DType::U2 => TensorData::U2(low_bit(r.b)?),
            DType::I2 => TensorData::I2(low_bit(r.b)?),

            DType::Bool => {
                let mut v = Vec::with_capacity(n);
                for &b in r.b {
                    match b {
                        0 => v.push(false),
                        1 => v.push(true),
                        _ => return Err(TensorError::Malformed("bool byte not 0 or 1")),
                    }
                }
                TensorData::Bool(v)
            }
            DType::Str => {
                let mut v = Vec::new();
                while !r.b.is_empty() {
                    let len = u32::from_le_bytes(r.array()?) as usize;
                    let s = std::str::from_utf8(r.take(len)?)
                        .map_err(|_| TensorError::Malformed("string not UTF-8"))?;
                    v.push(s.to_owned());
                }
                TensorData::Str(v)
            }
        };
        Tensor::new(shape, data)
    }
}

/// Elements of a low-bit type from their canonical bytes, refusing any byte that is
/// not one (see [`crate::lowbit`]).
fn low_bit<T: LowBit>(b: &[u8]) -> Result<Vec<T>, TensorError> {
    b.iter()
        .map(|&x| {
            T::from_byte(x).ok_or(TensorError::Malformed("low-bit element byte out of range"))
        })
        .collect()
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TensorError> {
        if self.b.len() < n {
            return Err(TensorError::Malformed("truncated"));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TensorError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

/// The canonical encoding of a tensor list (a job's inputs, an inference's outputs, in
/// graph order): the borsh encoding of the list of each tensor's [`Tensor::encode`].
/// A job's input hash and a receipt's output hash are blake3 of these bytes.
pub fn encode_list(tensors: &[Tensor]) -> Vec<u8> {
    let list: Vec<Vec<u8>> = tensors.iter().map(Tensor::encode).collect();
    crate::encoding::encode(&list)
}

/// Decodes [`encode_list`] bytes of at most `max` bytes.
pub fn decode_list(bytes: &[u8], max: usize) -> Result<Vec<Tensor>, TensorError> {
    let list: Vec<Vec<u8>> = crate::encoding::decode("tensor list", bytes, max)
        .map_err(|_| TensorError::Malformed("not a tensor list"))?;
    list.iter().map(|b| Tensor::decode(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_tensor() -> impl Strategy<Value = Tensor> {
        prop::collection::vec(0usize..4, 0..4).prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            prop_oneof![
                prop::collection::vec(any::<f32>(), n).prop_map(TensorData::F32),
                prop::collection::vec(any::<i64>(), n).prop_map(TensorData::I64),
                prop::collection::vec(any::<u8>(), n).prop_map(TensorData::U8),
                prop::collection::vec(any::<bool>(), n).prop_map(TensorData::Bool),
                prop::collection::vec(".{0,5}", n).prop_map(TensorData::Str),
                low_bit_data(n),
            ]
            .prop_map(move |d| Tensor::new(shape.clone(), d).unwrap())
        })
    }

    /// Any low-bit dtype's data of `n` elements, every code possible.
    fn low_bit_data(n: usize) -> impl Strategy<Value = TensorData> {
        let bytes = prop::collection::vec(any::<u8>(), n);
        (0usize..10, bytes).prop_map(|(k, b)| {
            let it = b.into_iter();
            match k {
                0 => TensorData::F8E4M3FN(it.map(F8E4M3FN::from_bits).collect()),
                1 => TensorData::F8E4M3FNUZ(it.map(F8E4M3FNUZ::from_bits).collect()),
                2 => TensorData::F8E5M2(it.map(F8E5M2::from_bits).collect()),
                3 => TensorData::F8E5M2FNUZ(it.map(F8E5M2FNUZ::from_bits).collect()),
                4 => TensorData::F8E8M0(it.map(F8E8M0::from_bits).collect()),
                5 => TensorData::F4E2M1(it.map(F4E2M1::from_bits).collect()),
                6 => TensorData::U4(it.map(U4::from_bits).collect()),
                7 => TensorData::I4(it.map(I4::from_bits).collect()),
                8 => TensorData::U2(it.map(U2::from_bits).collect()),
                _ => TensorData::I2(it.map(I2::from_bits).collect()),
            }
        })
    }

    proptest! {
        /// A low-bit tensor decodes to the same elements, and every byte of its data
        /// is the element's canonical byte.
        #[test]
        fn low_bit_encoding_round_trips(d in (0usize..40).prop_flat_map(low_bit_data)) {
            let t = Tensor::new(vec![d.len()], d).unwrap();
            let bytes = t.encode();
            prop_assert_eq!(bytes.len(), 9 + 8 + t.len());
            prop_assert_eq!(&Tensor::decode(&bytes).unwrap(), &t);
        }

        /// Bytes that are not a canonical element of the dtype are refused, whichever
        /// element they stand at.
        #[test]
        fn non_canonical_low_bit_bytes_are_refused(
            code in prop::sample::select(vec![21u8, 22, 23, 25, 26]),
            data in prop::collection::vec(any::<u8>(), 1..12),
        ) {
            let mut bytes = b"DTN1".to_vec();
            bytes.push(code);
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&data);
            let canonical = |b: u8| match code {
                21 | 23 => b < 16,
                25 => b < 4,
                22 => (-8..=7).contains(&(b as i8)),
                _ => (-2..=1).contains(&(b as i8)),
            };
            let decoded = Tensor::decode(&bytes);
            prop_assert_eq!(decoded.is_ok(), data.iter().all(|&b| canonical(b)));
            if let Ok(t) = decoded {
                prop_assert_eq!(t.encode(), bytes);
            }
        }
    }

    #[test]
    fn low_bit_dtypes_have_their_onnx_codes_and_names() {
        for (code, name) in (17..=26).zip([
            "f8e4m3fn",
            "f8e4m3fnuz",
            "f8e5m2",
            "f8e5m2fnuz",
            "u4",
            "i4",
            "f4e2m1",
            "f8e8m0",
            "u2",
            "i2",
        ]) {
            let d = DType::from_onnx_code(code).unwrap();
            assert_eq!(d.name(), name);
            assert_eq!(DType::from_name(name), Some(d));
            assert!(d.is_low_bit() && !d.is_float() && !d.is_int());
            assert_eq!(d.size_of(), 1);
        }
        assert_eq!(DType::from_name("float8_e4m3fn"), Some(DType::F8E4M3FN));
        assert_eq!(DType::from_onnx_code(27), None);
        // An int4 of -3 is the byte 0xFD; its 4-bit code 0x0D is not canonical.
        let t = Tensor::from_vec(vec![2], vec![I4::new(-3).unwrap(), I4::new(5).unwrap()]).unwrap();
        let bytes = t.encode();
        assert_eq!(&bytes[bytes.len() - 2..], &[0xFD, 0x05]);
        let mut bad = bytes.clone();
        let at = bad.len() - 2;
        bad[at] = 0x0D;
        assert!(matches!(
            Tensor::decode(&bad),
            Err(TensorError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn encoding_round_trips(t in arb_tensor()) {
            let bytes = t.encode();
            let back = Tensor::decode(&bytes).unwrap();
            // Compare encodings, so NaN payloads count as equal bit patterns.
            prop_assert_eq!(back.encode(), bytes.clone());
            prop_assert_eq!(back.hash(), t.hash());
            prop_assert_eq!(t.encoded_len(), bytes.len());
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Tensor::decode(&bytes);
        }
    }

    #[test]
    fn nans_become_canonical() {
        let mut t =
            Tensor::from_vec(vec![3], vec![f32::from_bits(0xFFC0_0001), 1.0, f32::NAN]).unwrap();
        t.canonicalize_nans();
        let v = t.as_slice::<f32>().unwrap();
        assert_eq!(v[0].to_bits(), 0x7FC0_0000);
        assert_eq!(v[1], 1.0);
        assert_eq!(v[2].to_bits(), 0x7FC0_0000);
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let e = Tensor::from_vec(vec![2, 2], vec![1.0f32; 3]).unwrap_err();
        assert!(matches!(
            e,
            TensorError::LengthMismatch {
                expected: 4,
                actual: 3,
                ..
            }
        ));
    }

    #[test]
    fn hash_distinguishes_shape_and_dtype() {
        let a = Tensor::from_vec(vec![4], vec![0u8; 4]).unwrap();
        let b = Tensor::from_vec(vec![2, 2], vec![0u8; 4]).unwrap();
        let c = Tensor::from_vec(vec![4], vec![0i8; 4]).unwrap();
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }

    #[test]
    fn tensor_lists_round_trip_and_reject_garbage() {
        let a = Tensor::from_vec(vec![2], vec![1.5f32, -0.0]).unwrap();
        let b = Tensor::from_vec(vec![1, 3], vec![1i64, 2, 3]).unwrap();
        let bytes = encode_list(&[a.clone(), b.clone()]);
        assert_eq!(decode_list(&bytes, usize::MAX).unwrap(), vec![a, b]);
        assert!(decode_list(&bytes[..bytes.len() - 1], usize::MAX).is_err());
        assert!(decode_list(&bytes, 8).is_err());
        assert_eq!(decode_list(&encode_list(&[]), 64).unwrap(), vec![]);
    }
}
