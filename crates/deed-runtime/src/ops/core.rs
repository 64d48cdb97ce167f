//! Graph plumbing operators: `Constant`, `Identity`, and `OptionalHasElement` and
//! `OptionalGetElement` on tensors (optional values themselves are not supported: a
//! present input is a tensor, an absent one is empty).

use deed_types::{DType, Tensor, TensorData};

use super::util::{check_count, infer_input, input, one};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::attrs::Attr;
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("Constant", build_constant);
    r.add("Identity", |_| Ok(Box::new(Identity)));
    r.add("OptionalHasElement", |n| {
        check_count(n.num_inputs, 0, 1)?;
        Ok(Box::new(OptionalHasElement))
    });
    r.add("OptionalGetElement", |n| {
        check_count(n.num_inputs, 1, 1)?;
        Ok(Box::new(Identity))
    });
}

/// `OptionalHasElement`: whether its input is there. An input that is there is a
/// tensor (or, opset 18, a tensor given where an optional may be); an absent or
/// empty-named input is the empty optional.
#[derive(Debug)]
struct OptionalHasElement;

impl Op for OptionalHasElement {
    fn infer(&self, _: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        one(DType::Bool, vec![])
    }
    fn cost(&self, _: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        1
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![Tensor::scalar(
            inputs.first().copied().flatten().is_some(),
        )])
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn optional_operators_on_tensors() {
        let x = Tensor::from_vec(vec![2], vec![1.5f32, -2.0]).unwrap();
        let has = |ins: &[Option<&Tensor>]| {
            OptionalHasElement.run(ins, &Ctx::default()).unwrap()[0]
                .as_slice::<bool>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(has(&[Some(&x)]), [true]);
        assert_eq!(has(&[None]), [false]);
        assert_eq!(has(&[]), [false]);
        let ty = TypeInfo::of(&x);
        assert_eq!(
            OptionalHasElement
                .infer(&[Some(InferInput {
                    ty: &ty,
                    value: None
                })])
                .unwrap(),
            vec![TypeInfo::new(DType::Bool, vec![])]
        );
        // OptionalGetElement of a tensor is the tensor; of nothing, an error.
        let get = super::super::registry()
            .get("", "OptionalGetElement")
            .unwrap();
        let attrs = crate::attrs::Attrs::default();
        let info = |num_inputs| NodeInfo {
            name: "get",
            op_type: "OptionalGetElement",
            domain: "",
            opset: 18,
            attrs: &attrs,
            num_inputs,
            num_outputs: 1,
        };
        let op = get(&info(1)).unwrap();
        assert_eq!(op.run(&[Some(&x)], &Ctx::default()).unwrap(), vec![x]);
        assert!(op.infer(&[None]).is_err());
        assert!(get(&info(0)).is_err());
    }
}
