//! Crash consistency of the local-filesystem blob store, tested with real kills.
//!
//! A child process (this test binary, re-run) uploads blobs `0, 1, 2, …` whose
//! content is derived from their number, printing `ACK i` after each upload
//! finished. The parent sends SIGKILL at random moments, reopens the store and
//! checks that every acknowledged blob is there, that every visible blob reads back
//! exactly, and that every unfinished upload resumes to the right blob: no visible
//! blob is partial and no staged chunk is half-written.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{splitmix, Victim};

use deed_store::blob::{download, upload, BlobStore};
use deed_store::{BlobLimits, Cid, FsBlobStore, Manifest};

const CHILD_ENV: &str = "DEED_STORE_BLOB_CRASH_CHILD_DIR";
const TEST_NAME: &str = "kill_9_during_uploads_leaves_only_whole_blobs";
const ROUNDS: usize = 10;
const CHUNK: u32 = 8 * 1024;

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
    let mut rng = common::seed("DEED_STORE_BLOB_CRASH_SEED");
    println!("blob crash test seed: {rng} (rerun with DEED_STORE_BLOB_CRASH_SEED={rng})");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut progressed = 0;
    let mut half_staged = 0;
    for round in 0..ROUNDS {
        // Each round starts from an empty store so the child's numbering and the
        // parent's expectations line up.
        let root = dir.path().join(format!("round{round}"));
        rng = splitmix(rng);
        let child = Victim::spawn(TEST_NAME, &[(CHILD_ENV, root.as_os_str())], false);
        child.wait_ready(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50 + rng % 300));
        let acked = child.kill().acked;
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
