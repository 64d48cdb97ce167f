//! Node attributes, converted from protobuf once at load time, with typed accessors
//! that report a clear [`OpError`] when an attribute is missing or of the wrong kind.

use std::collections::BTreeMap;

use deed_types::Tensor;
use tract_onnx::pb;

use crate::error::{OpError, RuntimeError};
use crate::proto::tensor_from_proto;

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Tensor>),
    /// A subgraph, validated (see [`crate::model::Graph`]).
    Graph(std::sync::Arc<crate::model::Graph>),
    /// Kinds Deed does not use (sparse tensors, type protos).
    Other,
}

/// The attributes of one node, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(pub BTreeMap<String, Attr>);

impl Attrs {
    /// Converts protobuf attributes, decoding tensor attributes.
    pub fn from_proto(list: &[pb::AttributeProto]) -> Result<Attrs, RuntimeError> {
        use pb::attribute_proto::AttributeType as T;
        let mut map = BTreeMap::new();
        for a in list {
            let kind = T::try_from(a.r#type).unwrap_or(T::Undefined);
            let v = match kind {
                T::Float => Attr::Float(a.f),
                T::Int => Attr::Int(a.i),
                T::String => Attr::String(a.s.clone()),
                T::Tensor => match &a.t {
                    Some(t) => Attr::Tensor(tensor_from_proto(t)?),
                    None => Attr::Other,
                },
                T::Floats => Attr::Floats(a.floats.clone()),
                T::Ints => Attr::Ints(a.ints.clone()),
                T::Strings => Attr::Strings(a.strings.clone()),
                T::Tensors => Attr::Tensors(
                    a.tensors
                        .iter()
                        .map(tensor_from_proto)
                        .collect::<Result<_, _>>()?,
                ),
                // The loader validates subgraphs and puts them in place.
                T::Graph | T::Graphs => Attr::Other,
                // Old exporters leave the type unset; infer it from the filled field.
                T::Undefined => {
                    if !a.ints.is_empty() {
                        Attr::Ints(a.ints.clone())
                    } else if !a.floats.is_empty() {
                        Attr::Floats(a.floats.clone())
                    } else if !a.s.is_empty() {
                        Attr::String(a.s.clone())
                    } else if let Some(t) = &a.t {
                        Attr::Tensor(tensor_from_proto(t)?)
                    } else if a.f != 0.0 {
                        Attr::Float(a.f)
                    } else {
                        Attr::Int(a.i)
                    }
                }
                _ => Attr::Other,
            };
            map.insert(a.name.clone(), v);
        }
        Ok(Attrs(map))
    }

    /// The raw attribute, if present.
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    /// True when the attribute is present.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn wrong(name: &str, want: &str) -> OpError {
        OpError::bad_attr(name, format!("expected {want}"))
    }

    /// A required subgraph attribute.
    pub fn graph(&self, name: &str) -> Result<std::sync::Arc<crate::model::Graph>, OpError> {
        match self.get(name) {
            None => Err(OpError::MissingAttribute {
                name: name.to_owned(),
            }),
            Some(Attr::Graph(g)) => Ok(g.clone()),
            Some(_) => Err(Self::wrong(name, "a graph")),
        }
    }

    /// An integer attribute, or `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, OpError> {
        match self.get(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(Self::wrong(name, "an int")),
        }
    }

    /// A required integer attribute.
    pub fn req_int(&self, name: &str) -> Result<i64, OpError> {
        match self.get(name) {
            None => Err(OpError::MissingAttribute {
                name: name.to_owned(),
            }),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(Self::wrong(name, "an int")),
        }
    }

    /// An optional integer attribute.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(_) => Err(Self::wrong(name, "an int")),
        }
    }

    /// A float attribute, or `default` when absent.
    pub fn float(&self, name: &str, default: f32) -> Result<f32, OpError> {
        match self.get(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(_) => Err(Self::wrong(name, "a float")),
        }
    }

    /// An optional float attribute.
    pub fn opt_float(&self, name: &str) -> Result<Option<f32>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(_) => Err(Self::wrong(name, "a float")),
        }
    }

    /// An integer-list attribute, if present.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(_) => Err(Self::wrong(name, "a list of ints")),
        }
    }

    /// A float-list attribute, if present.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(Attr::Float(v)) => Ok(Some(vec![*v])),
            Some(_) => Err(Self::wrong(name, "a list of floats")),
        }
    }

    /// A string attribute (UTF-8), or `default` when absent.
    pub fn string(&self, name: &str, default: &str) -> Result<String, OpError> {
        match self.get(name) {
            None => Ok(default.to_owned()),
            Some(Attr::String(v)) => String::from_utf8(v.clone())
                .map_err(|_| OpError::bad_attr(name, "string is not UTF-8")),
            Some(_) => Err(Self::wrong(name, "a string")),
        }
    }

    /// A string-list attribute, if present.
    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Strings(v)) => v
                .iter()
                .map(|s| {
                    String::from_utf8(s.clone())
                        .map_err(|_| OpError::bad_attr(name, "string is not UTF-8"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(Self::wrong(name, "a list of strings")),
        }
    }

    /// A tensor attribute, if present.
    pub fn tensor(&self, name: &str) -> Result<Option<&Tensor>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t)),
            Some(_) => Err(Self::wrong(name, "a tensor")),
        }
    }
}
