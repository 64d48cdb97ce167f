//! The kill harness of the crash tests: the test binary re-runs one of its own tests
//! as a child process, the child reports its progress on stdout (`READY [n]` once it
//! is set up, `ACK n` after each step that must survive a crash), and the parent
//! sends it SIGKILL at a moment of its choosing, then checks what is on disk.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A step of the splitmix64 generator: the crash tests' only randomness, so a seed
/// replays a run.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed in environment variable `var`, or one from the clock.
pub fn seed(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// A progress line from the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Set up, with the number it starts from when it says one.
    Ready(Option<u64>),
    /// Step `n` is durable.
    Ack(u64),
}

/// What the child had reported when it was killed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Its `READY` line, if it got that far.
    pub ready: Option<Option<u64>>,
    /// Its last `ACK`.
    pub acked: Option<u64>,
}

/// A running child that will be killed.
pub struct Victim {
    child: Child,
    progress: Receiver<Progress>,
    reader: JoinHandle<Reported>,
}

impl Victim {
    /// Runs test `test` of this binary alone, with `env` set, as a child process.
    /// `show_stderr` passes its stderr through (to see why a child failed).
    pub fn spawn(test: &str, env: &[(&str, &OsStr)], show_stderr: bool) -> Victim {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new(exe);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(if show_stderr {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, progress) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut seen = Reported::default();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness may print on the same line before the child speaks.
                if let Some(rest) = line.split("READY").nth(1) {
                    let n = rest.trim().parse().ok();
                    seen.ready = Some(n);
                    let _ = tx.send(Progress::Ready(n));
                }
                if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
                    seen.acked = Some(n);
                    let _ = tx.send(Progress::Ack(n));
                }
            }
            seen
        });
        Victim {
            child,
            progress,
            reader,
        }
    }

    /// The next progress line, or `None` once `deadline` passes or the child ends.
    pub fn next(&self, deadline: Instant) -> Option<Progress> {
        self.progress
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }

    /// Waits up to `timeout` for the child's `READY`.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(p) = self.next(deadline) {
            if matches!(p, Progress::Ready(_)) {
                return true;
            }
        }
        false
    }

    /// SIGKILL, then what the child had reported.
    pub fn kill(mut self) -> Reported {
        self.child.kill().expect("SIGKILL child");
        self.child.wait().expect("reap child");
        self.reader.join().expect("reader thread")
    }
}
