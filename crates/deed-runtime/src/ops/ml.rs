//! `ai.onnx.ml` operators as scikit-learn exporters (skl2onnx) emit them: tree
//! ensembles, linear models and the preprocessing operators around them.
//!
//! Their arithmetic (summation order of tree leaves, dot products, post transforms) is
//! written in `docs/canonical-semantics.md`. `ZipMap` is refused as
//! unsupported: it returns a sequence of maps, which Deed's tensors do not represent
//! (export with `zipmap=False`).

use deed_types::{DType, Tensor, TensorData};

use super::{NodeInfo, Op, Registry};
use crate::attrs::Attr;
use crate::error::OpError;

pub mod ensemble;
pub mod linear;
pub mod post;
pub mod prep;
pub mod tree;

const ML: &str = "ai.onnx.ml";

pub(crate) fn register(r: &mut Registry) {
    r.add_domain(ML, "TreeEnsembleRegressor", tree::build_regressor);
    r.add_domain(ML, "TreeEnsembleClassifier", tree::build_classifier);
    r.add_domain(ML, "TreeEnsemble", ensemble::build);
    r.add_domain(ML, "LinearRegressor", linear::build_regressor);
    r.add_domain(ML, "LinearClassifier", linear::build_classifier);
    r.add_domain(ML, "Scaler", prep::build_scaler);
    r.add_domain(ML, "Normalizer", prep::build_normalizer);
    r.add_domain(ML, "Binarizer", prep::build_binarizer);
    r.add_domain(ML, "Imputer", prep::build_imputer);
    r.add_domain(
        ML,
        "ArrayFeatureExtractor",
        prep::build_array_feature_extractor,
    );
    r.add_domain(ML, "LabelEncoder", prep::build_label_encoder);
    r.add_domain(ML, "OneHotEncoder", prep::build_one_hot_encoder);
    r.add_domain(ML, "FeatureVectorizer", prep::build_feature_vectorizer);
    r.add_domain(ML, "ZipMap", build_zipmap);
}

fn build_zipmap(_: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Err(OpError::unsupported(
        "ZipMap returns a sequence of maps, which is not a tensor; export without it \
         (skl2onnx: options={'zipmap': False})",
    ))
}

/// Reads a numeric tensor as `f64`, the way the ML operators compare features:
/// f32 and f64 exactly, integers through f32 (as onnxruntime casts them).
pub(crate) fn features_f64(t: &Tensor, index: usize) -> Result<Vec<f64>, OpError> {
    Ok(match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::F64(v) => v.clone(),
        TensorData::I64(v) => v.iter().map(|&x| f64::from(x as f32)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| f64::from(x as f32)).collect(),
        _ => {
            return Err(OpError::DType {
                index,
                dtype: t.dtype(),
            })
        }
    })
}

/// Reads a numeric tensor as `f32` (f64 and integers rounded to nearest).
pub(crate) fn features_f32(t: &Tensor, index: usize) -> Result<Vec<f32>, OpError> {
    Ok(match t.data() {
        TensorData::F32(v) => v.clone(),
        TensorData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        _ => {
            return Err(OpError::DType {
                index,
                dtype: t.dtype(),
            })
        }
    })
}

/// True for the numeric input dtypes the ML operators accept.
pub(crate) fn numeric(dt: DType) -> bool {
    matches!(dt, DType::F32 | DType::F64 | DType::I64 | DType::I32)
}

/// `[N, F]` of a feature matrix; a vector `[F]` is one row.
pub(crate) fn rows_cols(shape: &[usize]) -> Result<(usize, usize), OpError> {
    match shape {
        [f] => Ok((1, *f)),
        [n, f] => Ok((*n, *f)),
        _ => Err(OpError::shape(format!(
            "expected a feature vector or matrix, got shape {shape:?}"
        ))),
    }
}

/// A list of floats given either as `NAME` (floats) or `NAME_as_tensor` (a float or
/// double tensor). Returns the values as `f64` and whether they were doubles.
pub(crate) fn floats_or_tensor(
    n: &NodeInfo<'_>,
    name: &str,
) -> Result<Option<(Vec<f64>, bool)>, OpError> {
    let tname = format!("{name}_as_tensor");
    if let Some(t) = n.attrs.tensor(&tname)? {
        return match t.data() {
            TensorData::F32(v) => Ok(Some((v.iter().map(|&x| f64::from(x)).collect(), false))),
            TensorData::F64(v) => Ok(Some((v.clone(), true))),
            _ => Err(OpError::bad_attr(
                &tname,
                "expected a float or double tensor",
            )),
        };
    }
    Ok(n.attrs
        .floats(name)?
        .map(|v| (v.into_iter().map(f64::from).collect(), false)))
}

/// A required integer list attribute.
pub(crate) fn req_ints(n: &NodeInfo<'_>, name: &str) -> Result<Vec<i64>, OpError> {
    n.attrs
        .ints(name)?
        .ok_or_else(|| OpError::MissingAttribute {
            name: name.to_owned(),
        })
}

/// A string list attribute whose elements may not be UTF-8 (kept as lossy text only
/// for mode names, which are ASCII).
pub(crate) fn strings_attr(n: &NodeInfo<'_>, name: &str) -> Result<Option<Vec<String>>, OpError> {
    match n.attrs.get(name) {
        Some(Attr::Strings(_)) | None => n.attrs.strings(name),
        Some(_) => Err(OpError::bad_attr(name, "expected a list of strings")),
    }
}
