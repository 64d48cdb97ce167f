//! A node that is not running is a clear error with its own exit code.

use std::process::Command;

use deed_cli::devnode::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_deed");

#[test]
fn node_down_is_a_clear_error() {
    let port = free_port().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["status", "--node", &format!("http://127.0.0.1:{port}")])
        .env("DEED_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Deed node"), "{err}");
}
