//! Text operators: `StringConcat` (opset 20), the elementwise concatenation of two
//! string tensors with numpy broadcasting (strings are UTF-8 and joined byte for
//! byte); `StringNormalizer` (opset 10, `normalize.rs`), `StringSplit` (opset 20,
//! `split.rs`), `RegexFullMatch` (opset 20, `pattern.rs`) and `TfIdfVectorizer`
//! (opset 9, `tfidf.rs`), n-gram counts of token rows.

use deed_types::{DType, Tensor, TensorData};

use super::util::{
    broadcast_offsets, broadcast_shapes, check_count, check_dtype, infer_input, input, one,
};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

mod normalize;
mod pattern;
mod split;
mod tfidf;

/// A string tensor of `shape` holding `v`, for the text operators' tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn strs(shape: Vec<usize>, v: &[&str]) -> Tensor {
    Tensor::new(
        shape,
        TensorData::Str(v.iter().map(|s| (*s).to_owned()).collect()),
    )
    .unwrap()
}

pub(crate) fn register(r: &mut Registry) {
    r.add("StringNormalizer", normalize::build);
    r.add("StringSplit", split::build);
    r.add("RegexFullMatch", pattern::build);
    r.add("TfIdfVectorizer", tfidf::build);
    r.add("StringConcat", |n: &NodeInfo<'_>| {
        check_count(n.num_inputs, 2, 2)?;
        Ok(Box::new(StringConcat))
    });
}

/// `StringConcat`: `Y = X + Y` for every (broadcast) pair of strings.
#[derive(Debug)]
struct StringConcat;

impl Op for StringConcat {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let (x, y) = (infer_input(inputs, 0)?, infer_input(inputs, 1)?);
        check_dtype(0, x.ty.dtype, &[DType::Str])?;
        check_dtype(1, y.ty.dtype, &[DType::Str])?;
        one(DType::Str, broadcast_shapes(&x.ty.shape, &y.ty.shape)?)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let (x, y) = (input(inputs, 0)?, input(inputs, 1)?);
        let (TensorData::Str(a), TensorData::Str(b)) = (x.data(), y.data()) else {
            return Err(OpError::DType {
                index: usize::from(x.dtype() == DType::Str),
                dtype: if x.dtype() == DType::Str {
                    y.dtype()
                } else {
                    x.dtype()
                },
            });
        };
        let shape = broadcast_shapes(x.shape(), y.shape())?;
        let (oa, ob) = (
            broadcast_offsets(x.shape(), &shape),
            broadcast_offsets(y.shape(), &shape),
        );
        let out: Vec<String> = oa
            .iter()
            .zip(&ob)
            .map(|(&i, &j)| {
                let mut s = String::with_capacity(a[i].len() + b[j].len());
                s.push_str(&a[i]);
                s.push_str(&b[j]);
                s
            })
            .collect();
        Ok(vec![Tensor::new(shape, TensorData::Str(out))?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenates_with_broadcasting() {
        let s = |v: &[&str], shape: Vec<usize>| {
            Tensor::from_vec(shape, v.iter().map(|x| x.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let x = s(&["a", "bé", ""], vec![3, 1]);
        let y = s(&["1", "2"], vec![2]);
        let out = StringConcat
            .run(&[Some(&x), Some(&y)], &Ctx::default())
            .unwrap();
        assert_eq!(out[0].shape(), &[3, 2]);
        assert_eq!(
            out[0].as_slice::<String>().unwrap(),
            &["a1", "a2", "bé1", "bé2", "1", "2"].map(String::from)
        );
        let n = Tensor::from_vec(vec![1], vec![1.0f32]).unwrap();
        assert!(StringConcat
            .run(&[Some(&x), Some(&n)], &Ctx::default())
            .is_err());
    }
}
