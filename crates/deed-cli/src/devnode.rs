//! Starting `deed dev` as a child process and waiting until it serves: used by
//! `deed quickstart`, the end-to-end tests and the benchmark.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use deed_types::SecretKey;

/// A running dev node, killed when dropped.
#[derive(Debug)]
pub struct DevNode {
    child: Child,
    /// Its API URL.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Secret keys it printed (its funded dev accounts), in order.
    pub keys: Vec<SecretKey>,
    /// Everything it printed on stdout before it was ready.
    pub banner: Vec<String>,
}

/// A free TCP port on 127.0.0.1 (bound and released; a race is possible but rare).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Secret keys printed next to their own address on one line, as `deed dev` lists
/// its funded accounts (`0  0xADDRESS  0xSECRET`). Requiring the address to match
/// keeps hashes and state roots, also 64 hex digits, from passing as keys.
pub fn keys_in(line: &str) -> Vec<SecretKey> {
    let tokens: Vec<&str> = line
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(|t| t.strip_prefix("0x").unwrap_or(t))
        .filter(|t| t.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let addresses: Vec<String> = tokens
        .iter()
        .filter(|t| t.len() == 40)
        .map(|t| t.to_ascii_lowercase())
        .collect();
    tokens
        .iter()
        .filter(|t| t.len() == 64)
        .filter_map(|t| crate::keystore::parse_hex_key(t).ok())
        .filter(|k| addresses.contains(&hex::encode(k.address().as_bytes())))
        .collect()
}

/// The line `deed dev` prints once its API accepts connections.
pub const READY: &str = "listening on http://";

impl DevNode {
    /// Runs `exe dev --data-dir DIR --http 127.0.0.1:PORT` and waits until its API
    /// answers, or fails with what the child printed.
    pub fn start(exe: &Path, data_dir: &Path, port: u16, timeout: Duration) -> Result<DevNode> {
        DevNode::start_with(exe, data_dir, port, timeout, &[])
    }

    /// [`DevNode::start`] with more `deed dev` arguments (`--fault …` in tests).
    pub fn start_with(
        exe: &Path,
        data_dir: &Path,
        port: u16,
        timeout: Duration,
        extra: &[&str],
    ) -> Result<DevNode> {
        let url = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(exe)
            .arg("dev")
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} dev", exe.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, rx) = mpsc::channel::<String>();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, erx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
            drop(tx2);
        });
        let mut node = DevNode {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            keys: Vec::new(),
            banner: Vec::new(),
        };
        let start = Instant::now();
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(20)) {
                node.keys.extend(keys_in(&line));
                node.banner.push(line);
                continue;
            }
            if let Some(status) = node.child.try_wait()? {
                let err: Vec<String> = erx.try_iter().collect();
                bail!(
                    "`deed dev` exited with {status} before serving:\n{}",
                    err.join("\n")
                );
            }
            if node.banner.iter().any(|l| l.contains(READY)) {
                // Keep draining both pipes so the child never blocks on a full pipe.
                std::thread::spawn(move || for _ in rx {});
                std::thread::spawn(move || for _ in erx {});
                return Ok(node);
            }
            if start.elapsed() > timeout {
                bail!("`deed dev` did not serve on port {port} within {timeout:?}");
            }
        }
    }

    /// Stops the node (SIGKILL: the node must survive a crash without losing
    /// committed state).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_banner_lines() {
        let k = SecretKey::from_seed(b"banner");
        let line = format!("  0  {}  0x{}", k.address(), hex::encode(k.to_bytes()));
        let found = keys_in(&line);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address(), k.address());
        let other = SecretKey::from_seed(b"other").address();
        let root = format!("root {other} 0x{}", hex::encode(k.to_bytes()));
        assert!(keys_in(&root).is_empty());
    }
}
