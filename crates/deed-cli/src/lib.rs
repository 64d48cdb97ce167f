//! Library half of the `deed` tool: tensor file formats and the conformance runner,
//! shared by the binary and its tests.

pub mod commands;
pub mod conformance;
pub mod devnode;
pub mod keystore;
pub mod modelinfo;
pub mod scenario;
pub mod tensor_io;
pub mod testnet;

/// A tensor name made safe as a file name: anything but letters, digits, `_`, `-`
/// and `.` becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
