//! Preprocessing operators of `ai.onnx.ml`: Scaler, Normalizer, Binarizer, Imputer,
//! ArrayFeatureExtractor, LabelEncoder, OneHotEncoder and FeatureVectorizer.

use std::collections::HashMap;

use deed_types::{DType, Tensor, TensorData};

use super::{features_f32, numeric, rows_cols};
use crate::attrs::Attr;
use crate::error::OpError;
use crate::ops::util::{check_count, infer_input, input, to_i64s};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// `v[i]` for every `i` of `order` (indices already checked).
fn gather<T: Clone>(v: &[T], order: &[usize]) -> Vec<T> {
    order.iter().map(|&i| v[i].clone()).collect()
}

fn numeric_input(inputs: &[Option<InferInput<'_>>]) -> Result<TypeInfo, OpError> {
    check_count(inputs.len(), 1, 1)?;
    let x = infer_input(inputs, 0)?;
    if !numeric(x.ty.dtype) {
        return Err(OpError::DType {
            index: 0,
            dtype: x.ty.dtype,
        });
    }
    Ok(x.ty.clone())
}

// ---------------------------------------------------------------------------------

/// `Scaler`: `y = (x − offset) · scale` in f32, per feature (or one value for all).
#[derive(Debug)]
pub struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

pub(super) fn build_scaler(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Scaler {
        offset: n.attrs.floats("offset")?.unwrap_or_else(|| vec![0.0]),
        scale: n.attrs.floats("scale")?.unwrap_or_else(|| vec![1.0]),
    }))
}

fn per_feature(v: &[f32], f: usize, name: &str) -> Result<(), OpError> {
    if v.len() == 1 || v.len() == f {
        Ok(())
    } else {
        Err(OpError::shape(format!(
            "{name} has {} values for {f} features",
            v.len()
        )))
    }
}

impl Op for Scaler {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = numeric_input(inputs)?;
        let f = x.shape.last().copied().unwrap_or(1);
        per_feature(&self.offset, f, "offset")?;
        per_feature(&self.scale, f, "scale")?;
        Ok(vec![TypeInfo::new(DType::F32, x.shape)])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let f = x.shape().last().copied().unwrap_or(1).max(1);
        per_feature(&self.offset, f, "offset")?;
        per_feature(&self.scale, f, "scale")?;
        let pick = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i % f] };
        let y: Vec<f32> = features_f32(x, 0)?
            .iter()
            .enumerate()
            .map(|(i, &v)| (v - pick(&self.offset, i)) * pick(&self.scale, i))
            .collect();
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?])
    }
}

// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Norm {
    Max,
    L1,
    L2,
}

/// `Normalizer`: each row divided by its max-abs, L1 or L2 norm (at least 1e−30).
#[derive(Debug)]
pub struct Normalizer(Norm);

pub(super) fn build_normalizer(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Normalizer(
        match n.attrs.string("norm", "MAX")?.as_str() {
            "MAX" => Norm::Max,
            "L1" => Norm::L1,
            "L2" => Norm::L2,
            other => return Err(OpError::bad_attr("norm", format!("unknown value {other}"))),
        },
    )))
}

impl Op for Normalizer {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = numeric_input(inputs)?;
        rows_cols(&x.shape)?;
        Ok(vec![TypeInfo::new(DType::F32, x.shape)])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (_, f) = rows_cols(x.shape())?;
        let mut y = features_f32(x, 0)?;
        for row in y.chunks_mut(f.max(1)) {
            let d = match self.0 {
                Norm::Max => row
                    .iter()
                    .fold(0.0f32, |m, &v| if v.abs() > m { v.abs() } else { m }),
                Norm::L1 => row.iter().fold(0.0f32, |s, &v| s + v.abs()),
                Norm::L2 => row.iter().fold(0.0f32, |s, &v| v.mul_add(v, s)).sqrt(),
            };
            let d = if d > 1e-30 { d } else { 1e-30 };
            row.iter_mut().for_each(|v| *v /= d);
        }
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?])
    }
}

// ---------------------------------------------------------------------------------

/// `Binarizer`: 1 where `x > threshold`, else 0 (NaN gives 0), in the input dtype.
#[derive(Debug)]
pub struct Binarizer(f32);

pub(super) fn build_binarizer(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Binarizer(n.attrs.float("threshold", 0.0)?)))
}

impl Op for Binarizer {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        Ok(vec![numeric_input(inputs)?])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let t = f64::from(self.0);
        let shape = x.shape().to_vec();
        let b = |v: f64| v > t;
        Ok(vec![match x.data() {
            TensorData::F32(v) => Tensor::from_vec(
                shape,
                v.iter()
                    .map(|&e| if b(f64::from(e)) { 1.0f32 } else { 0.0 })
                    .collect(),
            )?,
            TensorData::F64(v) => Tensor::from_vec(
                shape,
                v.iter().map(|&e| if b(e) { 1.0f64 } else { 0.0 }).collect(),
            )?,
            TensorData::I64(v) => {
                Tensor::from_vec(shape, v.iter().map(|&e| i64::from(b(e as f64))).collect())?
            }
            TensorData::I32(v) => Tensor::from_vec(
                shape,
                v.iter().map(|&e| i32::from(b(f64::from(e)))).collect(),
            )?,
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        }])
    }
}

// ---------------------------------------------------------------------------------

/// `Imputer`: replaces the `replaced_value` (NaN matches NaN) per feature.
#[derive(Debug)]
pub struct Imputer {
    floats: Vec<f32>,
    ints: Vec<i64>,
    replaced_f: f32,
    replaced_i: i64,
}

pub(super) fn build_imputer(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let floats = n.attrs.floats("imputed_value_floats")?.unwrap_or_default();
    let ints = n.attrs.ints("imputed_value_int64s")?.unwrap_or_default();
    if floats.is_empty() && ints.is_empty() {
        return Err(OpError::MissingAttribute {
            name: "imputed_value_floats".into(),
        });
    }
    Ok(Box::new(Imputer {
        floats,
        ints,
        replaced_f: n.attrs.float("replaced_value_float", 0.0)?,
        replaced_i: n.attrs.int("replaced_value_int64", 0)?,
    }))
}

impl Op for Imputer {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = numeric_input(inputs)?;
        let (_, f) = rows_cols(&x.shape)?;
        let count = if x.dtype.is_float() {
            self.floats.len()
        } else {
            self.ints.len()
        };
        if count != 1 && count != f {
            return Err(OpError::shape(format!(
                "{count} imputed values for {f} features (dtype {})",
                x.dtype
            )));
        }
        Ok(vec![x])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (_, f) = rows_cols(x.shape())?;
        let f = f.max(1);
        let shape = x.shape().to_vec();
        let fv = |i: usize| -> Result<f32, OpError> {
            let v = &self.floats;
            match v.len() {
                0 => Err(OpError::unsupported(
                    "imputing floats without imputed_value_floats",
                )),
                1 => Ok(v[0]),
                _ => v
                    .get(i % f)
                    .copied()
                    .ok_or_else(|| OpError::shape("feature count")),
            }
        };
        let iv = |i: usize| -> Result<i64, OpError> {
            let v = &self.ints;
            match v.len() {
                0 => Err(OpError::unsupported(
                    "imputing integers without imputed_value_int64s",
                )),
                1 => Ok(v[0]),
                _ => v
                    .get(i % f)
                    .copied()
                    .ok_or_else(|| OpError::shape("feature count")),
            }
        };
        let rf = self.replaced_f;
        let hit = |v: f64| {
            if rf.is_nan() {
                v.is_nan()
            } else {
                v == f64::from(rf)
            }
        };
        Ok(vec![match x.data() {
            TensorData::F32(v) => Tensor::from_vec(
                shape,
                v.iter()
                    .enumerate()
                    .map(|(i, &e)| if hit(f64::from(e)) { fv(i) } else { Ok(e) })
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
            TensorData::F64(v) => Tensor::from_vec(
                shape,
                v.iter()
                    .enumerate()
                    .map(|(i, &e)| if hit(e) { fv(i).map(f64::from) } else { Ok(e) })
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
            TensorData::I64(v) => Tensor::from_vec(
                shape,
                v.iter()
                    .enumerate()
                    .map(|(i, &e)| if e == self.replaced_i { iv(i) } else { Ok(e) })
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
            TensorData::I32(v) => Tensor::from_vec(
                shape,
                v.iter()
                    .enumerate()
                    .map(|(i, &e)| {
                        if i64::from(e) == self.replaced_i {
                            iv(i).map(|x| x as i32)
                        } else {
                            Ok(e)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )?,
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        }])
    }
}

// ---------------------------------------------------------------------------------

/// `ArrayFeatureExtractor`: selects entries of the last axis (onnxruntime's shapes:
/// a vector input gives one row).
#[derive(Debug)]
pub struct ArrayFeatureExtractor;

pub(super) fn build_array_feature_extractor(_: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(ArrayFeatureExtractor))
}

fn afe_shape(x: &[usize], idx: &[usize]) -> Vec<usize> {
    let count: usize = idx.iter().product();
    if x.len() <= 1 {
        vec![1, count]
    } else {
        let mut s = x[..x.len() - 1].to_vec();
        s.push(count);
        s
    }
}

impl Op for ArrayFeatureExtractor {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let x = infer_input(inputs, 0)?;
        let i = infer_input(inputs, 1)?;
        if !matches!(i.ty.dtype, DType::I64 | DType::I32) {
            return Err(OpError::DType {
                index: 1,
                dtype: i.ty.dtype,
            });
        }
        Ok(vec![TypeInfo::new(
            x.ty.dtype,
            afe_shape(&x.ty.shape, &i.ty.shape),
        )])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let idx = to_i64s(input(inputs, 1)?)?;
        let last = x.shape().last().copied().unwrap_or(1);
        let sel: Vec<usize> = idx
            .iter()
            .map(|&i| {
                if i < 0 || i as usize >= last {
                    Err(OpError::value(format!(
                        "index {i} is out of range for a last axis of {last}"
                    )))
                } else {
                    Ok(i as usize)
                }
            })
            .collect::<Result<_, _>>()?;
        let rows = x.len() / last.max(1);
        let order: Vec<usize> = (0..rows)
            .flat_map(|r| sel.iter().map(move |&c| r * last + c))
            .collect();
        let shape = afe_shape(x.shape(), input(inputs, 1)?.shape());
        let data = deed_types::with_data!(x.data(), v => {
            deed_types::tensor::Element::wrap(gather(v, &order))
        });
        Ok(vec![Tensor::new(shape, data)?])
    }
}

// ---------------------------------------------------------------------------------

/// A lookup key: integers, floats (−0 equals +0, every NaN equals every NaN, as in
/// onnxruntime) or strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    I(i64),
    F(u64),
    S(String),
}

fn fkey(v: f64) -> Key {
    if v.is_nan() {
        Key::F(f64::NAN.to_bits())
    } else if v == 0.0 {
        Key::F(0)
    } else {
        Key::F(v.to_bits())
    }
}

fn keys_of(t: &Tensor) -> Result<Vec<Key>, OpError> {
    Ok(match t.data() {
        TensorData::I64(v) => v.iter().map(|&x| Key::I(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| Key::I(i64::from(x))).collect(),
        TensorData::I16(v) => v.iter().map(|&x| Key::I(i64::from(x))).collect(),
        TensorData::F32(v) => v.iter().map(|&x| fkey(f64::from(x))).collect(),
        TensorData::F64(v) => v.iter().map(|&x| fkey(x)).collect(),
        TensorData::Str(v) => v.iter().map(|x| Key::S(x.clone())).collect(),
        _ => {
            return Err(OpError::DType {
                index: 0,
                dtype: t.dtype(),
            })
        }
    })
}

/// `LabelEncoder` (ai.onnx.ml opsets 1 to 4): maps keys to values, or to a default.
#[derive(Debug)]
pub struct LabelEncoder {
    key_dtype: DType,
    map: HashMap<Key, usize>,
    /// Values in key order, plus the default as the last element.
    values: Tensor,
}

fn tensor_from_attr(n: &NodeInfo<'_>, name: &str) -> Result<Option<Tensor>, OpError> {
    Ok(match n.attrs.get(name) {
        None => None,
        Some(Attr::Ints(v)) => Some(Tensor::from_vec(vec![v.len()], v.clone())?),
        Some(Attr::Floats(v)) => Some(Tensor::from_vec(vec![v.len()], v.clone())?),
        Some(Attr::Strings(_)) => {
            let v = n.attrs.strings(name)?.unwrap_or_default();
            Some(Tensor::new(vec![v.len()], TensorData::Str(v))?)
        }
        Some(Attr::Tensor(t)) => Some(t.clone()),
        Some(_) => return Err(OpError::bad_attr(name, "unexpected attribute kind")),
    })
}

fn concat1(a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let data = match (a.data(), b.data()) {
        (TensorData::I64(x), TensorData::I64(y)) => {
            TensorData::I64([x.clone(), y.clone()].concat())
        }
        (TensorData::F32(x), TensorData::F32(y)) => {
            TensorData::F32([x.clone(), y.clone()].concat())
        }
        (TensorData::F64(x), TensorData::F64(y)) => {
            TensorData::F64([x.clone(), y.clone()].concat())
        }
        (TensorData::I32(x), TensorData::I32(y)) => {
            TensorData::I32([x.clone(), y.clone()].concat())
        }
        (TensorData::I16(x), TensorData::I16(y)) => {
            TensorData::I16([x.clone(), y.clone()].concat())
        }
        (TensorData::Str(x), TensorData::Str(y)) => {
            TensorData::Str([x.clone(), y.clone()].concat())
        }
        _ => {
            return Err(OpError::bad_attr(
                "default_tensor",
                "dtype differs from the values",
            ))
        }
    };
    Ok(Tensor::new(vec![a.len() + b.len()], data)?)
}

pub(super) fn build_label_encoder(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    // Opset 1: `classes_strings` maps strings to their index and back.
    if let Some(classes) = n.attrs.strings("classes_strings")? {
        let def_i = n.attrs.int("default_int64", -1)?;
        let def_s = n.attrs.string("default_string", "_Unused")?;
        return Ok(Box::new(LabelEncoderV1 {
            index: classes
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as i64))
                .collect(),
            classes,
            def_i,
            def_s,
        }));
    }
    let keys = ["keys_tensor", "keys_int64s", "keys_floats", "keys_strings"]
        .iter()
        .find_map(|k| tensor_from_attr(n, k).transpose())
        .transpose()?
        .ok_or_else(|| OpError::MissingAttribute {
            name: "keys_*".into(),
        })?;
    let (values, vname) = [
        "values_tensor",
        "values_int64s",
        "values_floats",
        "values_strings",
    ]
    .iter()
    .find_map(|k| {
        tensor_from_attr(n, k)
            .transpose()
            .map(|t| t.map(|t| (t, *k)))
    })
    .transpose()?
    .ok_or_else(|| OpError::MissingAttribute {
        name: "values_*".into(),
    })?;
    if keys.len() != values.len() {
        return Err(OpError::bad_attr(vname, "keys and values differ in length"));
    }
    let default = if let Some(t) = n.attrs.tensor("default_tensor")? {
        if t.len() != 1 {
            return Err(OpError::bad_attr("default_tensor", "must hold one value"));
        }
        t.clone().reshaped(vec![1])?
    } else {
        match values.dtype() {
            DType::I64 => Tensor::from_vec(vec![1], vec![n.attrs.int("default_int64", -1)?])?,
            DType::F32 => Tensor::from_vec(vec![1], vec![n.attrs.float("default_float", -0.0)?])?,
            DType::Str => Tensor::new(
                vec![1],
                TensorData::Str(vec![n.attrs.string("default_string", "_Unused")?]),
            )?,
            DType::F64 => Tensor::from_vec(vec![1], vec![-0.0f64])?,
            DType::I32 => Tensor::from_vec(vec![1], vec![-1i32])?,
            DType::I16 => Tensor::from_vec(vec![1], vec![-1i16])?,
            d => {
                return Err(OpError::unsupported(format!(
                    "LabelEncoder values of dtype {d}"
                )))
            }
        }
    };
    let all = concat1(&values.clone().reshaped(vec![values.len()])?, &default)?;
    let mut map = HashMap::new();
    for (i, k) in keys_of(&keys)?.into_iter().enumerate() {
        // The first occurrence of a key wins.
        map.entry(k).or_insert(i);
    }
    Ok(Box::new(LabelEncoder {
        key_dtype: keys.dtype(),
        map,
        values: all,
    }))
}

impl Op for LabelEncoder {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        let compatible = x.ty.dtype == self.key_dtype
            || (x.ty.dtype.is_int() && self.key_dtype.is_int())
            || (x.ty.dtype.is_float() && self.key_dtype.is_float());
        if !compatible {
            return Err(OpError::DTypeMismatch {
                expected: self.key_dtype,
                actual: x.ty.dtype,
            });
        }
        Ok(vec![TypeInfo::new(self.values.dtype(), x.ty.shape.clone())])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let default = self.values.len() - 1;
        let order: Vec<usize> = keys_of(x)?
            .iter()
            .map(|k| self.map.get(k).copied().unwrap_or(default))
            .collect();
        let data = deed_types::with_data!(self.values.data(), v => {
            deed_types::tensor::Element::wrap(gather(v, &order))
        });
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// `LabelEncoder` of ai.onnx.ml opset 1 (`classes_strings`).
#[derive(Debug)]
pub struct LabelEncoderV1 {
    classes: Vec<String>,
    index: HashMap<String, i64>,
    def_i: i64,
    def_s: String,
}

impl Op for LabelEncoderV1 {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        let out = match x.ty.dtype {
            DType::Str => DType::I64,
            DType::I64 => DType::Str,
            d => return Err(OpError::DType { index: 0, dtype: d }),
        };
        Ok(vec![TypeInfo::new(out, x.ty.shape.clone())])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let shape = x.shape().to_vec();
        Ok(vec![match x.data() {
            TensorData::Str(v) => Tensor::from_vec(
                shape,
                v.iter()
                    .map(|s| self.index.get(s).copied().unwrap_or(self.def_i))
                    .collect(),
            )?,
            TensorData::I64(v) => Tensor::new(
                shape,
                TensorData::Str(
                    v.iter()
                        .map(|&i| {
                            usize::try_from(i)
                                .ok()
                                .and_then(|i| self.classes.get(i))
                                .cloned()
                                .unwrap_or_else(|| self.def_s.clone())
                        })
                        .collect(),
                ),
            )?,
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        }])
    }
}

// ---------------------------------------------------------------------------------

/// `OneHotEncoder`: appends an axis of one-hot f32 over the categories.
#[derive(Debug)]
pub struct OneHotEncoder {
    cats: HashMap<Key, usize>,
    count: usize,
    strings: bool,
    zeros: bool,
}

pub(super) fn build_one_hot_encoder(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let (keys, strings) = match (
        n.attrs.ints("cats_int64s")?,
        n.attrs.strings("cats_strings")?,
    ) {
        (Some(v), _) if !v.is_empty() => (v.into_iter().map(Key::I).collect::<Vec<_>>(), false),
        (_, Some(v)) if !v.is_empty() => (v.into_iter().map(Key::S).collect(), true),
        _ => {
            return Err(OpError::MissingAttribute {
                name: "cats_int64s".into(),
            })
        }
    };
    let count = keys.len();
    let mut cats = HashMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        cats.entry(k).or_insert(i);
    }
    Ok(Box::new(OneHotEncoder {
        cats,
        count,
        strings,
        zeros: n.attrs.int("zeros", 1)? != 0,
    }))
}

impl Op for OneHotEncoder {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        let ok = if self.strings {
            x.ty.dtype == DType::Str
        } else {
            numeric(x.ty.dtype)
        };
        if !ok {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        let mut s = x.ty.shape.clone();
        s.push(self.count);
        Ok(vec![TypeInfo::new(DType::F32, s)])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        // Numeric inputs are categories by their integer value (floats truncated).
        let keys: Vec<Key> = match x.data() {
            TensorData::Str(v) => v.iter().map(|s| Key::S(s.clone())).collect(),
            TensorData::F32(v) => v.iter().map(|&f| Key::I(f as i64)).collect(),
            TensorData::F64(v) => v.iter().map(|&f| Key::I(f as i64)).collect(),
            _ => to_i64s(x)?.into_iter().map(Key::I).collect(),
        };
        let mut out = vec![0.0f32; keys.len() * self.count];
        for (i, k) in keys.iter().enumerate() {
            match self.cats.get(k) {
                Some(&c) => out[i * self.count + c] = 1.0,
                None if !self.zeros => {
                    return Err(OpError::value(format!(
                        "value {k:?} is not a known category and zeros=0"
                    )))
                }
                None => {}
            }
        }
        let mut s = x.shape().to_vec();
        s.push(self.count);
        Ok(vec![Tensor::from_vec(s, out)?])
    }
}

// ---------------------------------------------------------------------------------

/// `FeatureVectorizer`: concatenates inputs as columns, each cut or zero-padded to
/// its `inputdimensions` entry; output f32.
#[derive(Debug)]
pub struct FeatureVectorizer(Vec<usize>);

pub(super) fn build_feature_vectorizer(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let dims = n.attrs.ints("inputdimensions")?.unwrap_or_default();
    if dims.iter().any(|&d| d < 0) {
        return Err(OpError::bad_attr("inputdimensions", "negative dimension"));
    }
    Ok(Box::new(FeatureVectorizer(
        dims.into_iter().map(|d| d as usize).collect(),
    )))
}

fn fv_rows(shape: &[usize]) -> Result<(usize, usize), OpError> {
    match shape {
        [n] => Ok((*n, 1)),
        [n, d] => Ok((*n, *d)),
        _ => Err(OpError::shape(format!(
            "FeatureVectorizer inputs must have 1 or 2 dimensions, got {shape:?}"
        ))),
    }
}

impl Op for FeatureVectorizer {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        if inputs.len() != self.0.len() || inputs.is_empty() {
            return Err(OpError::InputCount {
                min: self.0.len(),
                max: self.0.len(),
                actual: inputs.len(),
            });
        }
        let mut rows = None;
        for i in 0..inputs.len() {
            let x = infer_input(inputs, i)?;
            if !numeric(x.ty.dtype) {
                return Err(OpError::DType {
                    index: i,
                    dtype: x.ty.dtype,
                });
            }
            let (n, _) = fv_rows(&x.ty.shape)?;
            if *rows.get_or_insert(n) != n {
                return Err(OpError::shape("inputs differ in row count"));
            }
        }
        let total: usize = self.0.iter().sum();
        Ok(vec![TypeInfo::new(
            DType::F32,
            vec![rows.unwrap_or(0), total],
        )])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let total: usize = self.0.iter().sum();
        let mut parts = Vec::with_capacity(self.0.len());
        let mut rows = 0;
        for (i, &want) in self.0.iter().enumerate() {
            let x = input(inputs, i)?;
            let (n, d) = fv_rows(x.shape())?;
            if i > 0 && n != rows {
                return Err(OpError::shape("inputs differ in row count"));
            }
            rows = n;
            parts.push((features_f32(x, i)?, d, want));
        }
        let mut out = vec![0.0f32; rows * total];
        for r in 0..rows {
            let mut c0 = 0;
            for (v, d, want) in &parts {
                for c in 0..(*d).min(*want) {
                    out[r * total + c0 + c] = v[r * d + c];
                }
                c0 += want;
            }
        }
        Ok(vec![Tensor::from_vec(vec![rows, total], out)?])
    }
}
