//! Crash consistency of the local-filesystem blob store, tested with real kills.
//!
//! A child process (this test binary, re-run) uploads blobs `0, 1, 2, …` whose
//! content is derived from their number, printing `ACK i` after each upload
//! finished. The parent sends SIGKILL at random moments, reopens the store and
//! checks that every acknowledged blob is there, that every visible blob reads back
//! exactly, and that every unfinished upload resumes to the right blob: no visible
//! blob is partial and no staged chunk is half-written.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deed_store::blob::{download, upload, BlobStore};
use deed_store::{BlobLimits, Cid, FsBlobStore, Manifest};

const CHILD_ENV: &str = "DEED_STORE_BLOB_CRASH_CHILD_DIR";
const TEST_NAME: &str = "kill_9_during_uploads_leaves_only_whole_blobs";
const ROUNDS: usize = 10;
const CHUNK: u32 = 8 * 1024;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Blob `i`: 1 byte to ~96 KiB, so some fit one chunk and some span a dozen.
fn blob(i: u64) -> Vec<u8> {
    let r = splitmix(i);
    let len = 1 + (r % (96 * 1024)) as usize;
    let mut data = vec![(r >> 8) as u8; len];
    for (j, b) in data.iter_mut().enumerate().step_by(997) {
        *b = splitmix(r ^ j as u64) as u8;
    }
    data
}

fn limits() -> BlobLimits {
    BlobLimits {
        max_blob_size: 1 << 20,
        max_chunk_size: CHUNK,
        min_chunk_size: CHUNK,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn child(dir: &Path) -> ! {
    let rt = runtime();
    rt.block_on(async {
        let store = FsBlobStore::open(dir, limits()).expect("child: open");
        println!("READY");
        let mut i = 0u64;
        loop {
            upload(&store, &blob(i), CHUNK)
                .await
                .expect("child: upload");
            println!("ACK {i}");
            i += 1;
        }
    })
}

/// Returns the last complete blob and whether an upload was caught half-staged.
fn verify(dir: &Path, acked: Option<u64>) -> (Option<u64>, bool) {
    let rt = runtime();
    rt.block_on(async {
        let store = FsBlobStore::open(dir, limits()).expect("reopen after kill");
        let mut last_complete = None;
        let mut half_staged = false;
        // Blobs past the in-flight one were never started.
        let upto = acked.map_or(0, |a| a + 1);
        for i in 0..=upto {
            let data = blob(i);
            let id = Cid::of(&data);
            match store.manifest(&id).await.expect("manifest") {
                Some(m) => {
                    assert_eq!(m, Manifest::build(&data, CHUNK).expect("build"), "blob {i}");
                    assert!(
                        download(&store, &id).await.expect("download") == data,
                        "blob {i} reads back different bytes"
                    );
                    last_complete = Some(i);
                }
                None => {
                    assert!(
                        acked.is_none_or(|a| i > a),
                        "acknowledged blob {i} is missing"
                    );
                    let all = Manifest::build(&data, CHUNK).expect("build");
                    let missing = store.missing_chunks(&all).await.expect("missing");
                    half_staged |= missing.len() < all.chunks.len();
                    // Whatever chunks the crash left staged must complete the blob.
                    let m = upload(&store, &data, CHUNK).await.unwrap_or_else(|e| {
                        panic!("resuming blob {i} after the crash failed: {e}")
                    });
                    assert_eq!(m.id, id);
                    assert!(download(&store, &id).await.expect("download") == data);
                }
            }
            let staged = store
                .missing_chunks(&Manifest::build(&data, CHUNK).expect("build"))
                .await
                .expect("missing");
            assert!(staged.is_empty());
        }
        assert_eq!(
            std::fs::read_dir(dir.join("tmp")).expect("tmp").count(),
            0,
            "scratch files survive reopening"
        );
        (last_complete, half_staged)
    })
}

#[test]
fn kill_9_during_uploads_leaves_only_whole_blobs() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let mut rng = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    println!("blob crash test seed: {rng}");
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut progressed = 0;
    let mut half_staged = 0;
    for round in 0..ROUNDS {
        // Each round starts from an empty store so the child's numbering and the
        // parent's expectations line up.
        let root = dir.path().join(format!("round{round}"));
        rng = splitmix(rng);
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("READY") {
                    let _ = ready_tx.send(());
                }
                if let Some(i) = line
                    .strip_prefix("ACK ")
                    .and_then(|i| i.parse::<u64>().ok())
                {
                    acked = Some(i);
                }
            }
            acked
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50 + rng % 300));
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        let acked = reader.join().expect("reader thread");
        if !root.exists() {
            continue;
        }
        let (last, half) = verify(&root, acked);
        progressed += usize::from(last.is_some());
        half_staged += usize::from(half);
    }
    println!("{ROUNDS} kills: {progressed} after a finished blob, {half_staged} mid-upload");
    assert!(
        progressed >= 2,
        "only {progressed} rounds finished a blob; the child is not uploading"
    );
}
