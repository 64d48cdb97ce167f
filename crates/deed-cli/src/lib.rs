//! Library half of the `deed` tool: tensor file formats and the conformance runner,
//! shared by the binary and its tests.

pub mod conformance;
pub mod tensor_io;
