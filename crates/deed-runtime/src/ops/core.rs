//! Graph plumbing operators: `Constant` and `Identity`.

use deed_types::{Tensor, TensorData};

use super::util::{infer_input, input, one};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::attrs::Attr;
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("Constant", build_constant);
    r.add("Identity", |_| Ok(Box::new(Identity)));
}

/// `Constant`: a tensor fixed in the graph.
#[derive(Debug)]
pub struct Constant(pub Tensor);

fn build_constant(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let a = n.attrs;
    let t = if let Some(t) = a.tensor("value")? {
        t.clone()
    } else if let Some(Attr::Float(v)) = a.get("value_float") {
        Tensor::scalar(*v)
    } else if let Some(Attr::Int(v)) = a.get("value_int") {
        Tensor::scalar(*v)
    } else if let Some(v) = a.floats("value_floats")? {
        Tensor::from_vec(vec![v.len()], v)?
    } else if let Some(v) = a.ints("value_ints")? {
        Tensor::from_vec(vec![v.len()], v)?
    } else if a.has("value_string") {
        Tensor::scalar(a.string("value_string", "")?)
    } else if let Some(v) = a.strings("value_strings")? {
        Tensor::new(vec![v.len()], TensorData::Str(v))?
    } else if a.has("sparse_value") {
        return Err(OpError::unsupported("sparse constant values"));
    } else {
        return Err(OpError::MissingAttribute {
            name: "value".into(),
        });
    };
    Ok(Box::new(Constant(t)))
}

impl Op for Constant {
    fn infer(&self, _: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        Ok(vec![TypeInfo::of(&self.0)])
    }
    fn run(&self, _: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![self.0.clone()])
    }
}

/// `Identity`: its input, unchanged.
#[derive(Debug)]
pub struct Identity;

impl Op for Identity {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        one(x.ty.dtype, x.ty.shape.clone())
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![input(inputs, 0)?.clone()])
    }
}
