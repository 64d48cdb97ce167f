//! ONNX protobuf builders shared by the runtime's integration tests.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use tract_onnx::pb;

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;

fn dims_of(dims: &[Result<i64, &str>]) -> pb::TensorShapeProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Ok(n) => Value::DimValue(*n),
                    Err(p) => Value::DimParam((*p).to_owned()),
                }),
                ..Default::default()
            })
            .collect(),
    }
}

/// A graph input or output of a tensor type; `Err(name)` is a symbolic dimension.
pub fn value(name: &str, elem_type: i32, dims: &[Result<i64, &str>]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(dims_of(dims)),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node with its attributes.
pub fn node(
    name: &str,
    op_type: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        name: name.into(),
        op_type: op_type.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        attribute,
        ..Default::default()
    }
}

/// A model of `graph` at IR version 8, default opset 17.
pub fn model(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "deed-tests".into(),
        graph: Some(graph),
        ..Default::default()
    }
}

fn attr(name: &str, kind: pb::attribute_proto::AttributeType) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

/// An `INT` attribute.
pub fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        i,
        ..attr(name, pb::attribute_proto::AttributeType::Int)
    }
}

/// A `FLOAT` attribute.
pub fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        f,
        ..attr(name, pb::attribute_proto::AttributeType::Float)
    }
}

/// An `INTS` attribute.
pub fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        ints: ints.to_vec(),
        ..attr(name, pb::attribute_proto::AttributeType::Ints)
    }
}

/// A `STRING` attribute.
pub fn attr_string(name: &str, s: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        s: s.as_bytes().to_vec(),
        ..attr(name, pb::attribute_proto::AttributeType::String)
    }
}

/// A `TENSOR` attribute.
pub fn attr_tensor(name: &str, t: pb::TensorProto) -> pb::AttributeProto {
    pb::AttributeProto {
        t: Some(t),
        ..attr(name, pb::attribute_proto::AttributeType::Tensor)
    }
}
