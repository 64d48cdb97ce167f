//! The chunked upload protocol as a state machine, against a node keeping its state
//! and blobs on disk and restarted at random, and against one keeping them in memory.
//!
//! A seeded generator drives a few blobs (empty, one byte, several chunks) through
//! random steps: a manifest posted under one of several chunkings (the same blob cut
//! otherwise replaces the upload in progress), a chunk sent exact, flipped, cut,
//! lengthened, out of range or cut for another chunking, the upload's status asked,
//! the upload finished, the blob or a range of it read, the node stopped and started
//! again. A model of what the node must hold predicts every answer: which chunks an
//! upload lacks, which requests are refused and with which code, which blobs exist
//! and their bytes. At the end every blob is uploaded and finished, and no staged
//! chunk or scratch file is left on disk.
//!
//! `DEED_UPLOAD_FUZZ_STEPS` (default 400) and `DEED_UPLOAD_FUZZ_SEED` (default 1)
//! choose the run; a failure names the seed, the step and what was sent.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use common::*;
use deed_client::api::{BlobInfo, ChunkStored, ErrorBody, ErrorCode, UploadStatus};
use deed_node::{Running, Storage};
use deed_store::Manifest;
use deed_types::Cid;
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// Chunk sizes a blob may be cut into.
const CHUNKINGS: [u32; 3] = [1024, 2048, 4096];

/// A blob the generator uploads: its bytes and its manifest under each chunking.
struct Blob {
    data: Vec<u8>,
    manifests: Vec<Manifest>,
}

impl Blob {
    /// A blob of `len` random bytes.
    fn random(rng: &mut TestRng, len: usize) -> Blob {
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let manifests = CHUNKINGS
            .iter()
            .map(|&c| Manifest::build(&data, c).unwrap())
            .collect();
        Blob { data, manifests }
    }

    fn chunk(&self, chunking: usize, index: u32) -> Vec<u8> {
        let r = self.manifests[chunking].chunk_range(index).unwrap();
        self.data[r.start as usize..r.end as usize].to_vec()
    }
}

/// What the node must hold, as the protocol promises it, by blob id (two slots may
/// hold the same bytes: the empty blob, say).
#[derive(Default)]
struct Model {
    /// Finished blobs.
    finished: BTreeSet<Cid>,
    /// The chunking of each blob's upload in progress.
    open: HashMap<Cid, usize>,
    /// Chunks staged for each blob's upload in progress (of its current chunking).
    staged: HashMap<Cid, BTreeSet<u32>>,
}

impl Model {
    fn missing(&self, blob: &Blob) -> Vec<u32> {
        let id = blob.manifests[0].id;
        let staged = self.staged.get(&id).cloned().unwrap_or_default();
        (0..blob.manifests[self.open[&id]].chunk_count())
            .filter(|i| !staged.contains(i))
            .collect()
    }
}

/// Asserts a typed error with `code`, naming the step on failure.
fn refused(r: &Resp, code: ErrorCode, step: &str) {
    let e: ErrorBody = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{step}: status {} body {:?} is not an ErrorBody: {e}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )
    });
    assert_eq!(
        (e.code, r.status),
        (code, code.status()),
        "{step}: {}",
        e.message
    );
}

fn ok<T: serde::de::DeserializeOwned>(r: &Resp, step: &str) -> T {
    assert_eq!(
        r.status,
        200,
        "{step}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

/// Files under `dir`, recursively (none when it does not exist).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
            if std::fs::read_dir(&path).unwrap().next().is_none() {
                out.push(format!("{} (empty directory)", path.display()));
            }
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// A chunk body broken one way: not the chunk, so it must be refused.
fn broken_chunk(rng: &mut TestRng, chunk: &[u8]) -> (&'static str, Vec<u8>) {
    let mut bytes = chunk.to_vec();
    match rng.random_range(0..3) {
        0 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
            ("one bit flipped", bytes)
        }
        1 if !bytes.is_empty() => {
            bytes.truncate(rng.random_range(0..bytes.len()));
            ("cut short", bytes)
        }
        _ => {
            bytes.push(rng.random());
            ("one byte longer", bytes)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_interleaved_with_restarts_do_what_the_protocol_says() {
    run(true).await;
}

/// The same steps against a node keeping its blobs in memory (no restarts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_a_node_in_memory_do_what_the_protocol_says() {
    run(false).await;
}

/// Drives a node (on disk and restarted now and then, or in memory) through the
/// random steps, checking each answer against the model.
async fn run(on_disk: bool) {
    let steps: usize = std::env::var("DEED_UPLOAD_FUZZ_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("DEED_UPLOAD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(b"uploads!");
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);

    // Slots of blobs; a finished one is now and then replaced by a new blob, so that
    // uploads in progress never run out.
    let mut blobs: Vec<Blob> = [0usize, 1, 1024, 3000, 9000, 20_000]
        .iter()
        .map(|&len| Blob::random(&mut rng, len))
        .collect();
    // How often each kind of answer came, printed at the end.
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut count = |what: &'static str| *tally.entry(what).or_default() += 1;
    let dir = tempfile::tempdir().unwrap();
    let cfg = disk_storage_config(&dir);
    let store = dir.path().join("blobs");
    let storage = || {
        if on_disk {
            Storage::Disk
        } else {
            Storage::Memory
        }
    };
    let mut node: Running = start_node(cfg.clone(), storage()).await;
    let mut c = Client::new(&node);
    let mut model = Model::default();
    let mut restarts = 0;

    for n in 0..steps {
        let roll = rng.random_range(0..100);
        // Reads go mostly to finished blobs, the other steps mostly to unfinished ones.
        let reading = roll >= 87;
        let fits: Vec<usize> = (0..blobs.len())
            .filter(|&i| model.finished.contains(&blobs[i].manifests[0].id) == reading)
            .collect();
        let b = if !fits.is_empty() && rng.random_range(0..4) > 0 {
            fits[rng.random_range(0..fits.len())]
        } else {
            rng.random_range(0..blobs.len())
        };
        if !reading
            && model.finished.contains(&blobs[b].manifests[0].id)
            && rng.random_range(0..3) == 0
        {
            let len = match rng.random_range(0..3) {
                0 => [0, 1, 1023, 1024, 1025, 2048, 4096][rng.random_range(0..7)],
                _ => rng.random_range(0..24_000),
            };
            blobs[b] = Blob::random(&mut rng, len);
            count("new blob in a slot");
        }
        let blob = &blobs[b];
        let id = blob.manifests[0].id;
        let uploads = format!("/v1/blobs/uploads/{id}");
        if roll < 3 {
            if !on_disk {
                continue;
            }
            let step = format!("seed {seed} step {n}: restart");
            drop(c);
            node.stop().await;
            node = start_node(cfg.clone(), storage()).await;
            c = Client::new(&node);
            restarts += 1;
            count("restart");
            let scratch = files_under(&store.join("tmp"));
            assert!(scratch.is_empty(), "{step}: scratch files {scratch:?}");
        } else if roll < 20 {
            // Mostly the chunking in progress; now and then another.
            let chunking = match model.open.get(&id) {
                Some(&open) if rng.random_range(0..4) > 0 => open,
                _ => rng.random_range(0..CHUNKINGS.len()),
            };
            let step = format!("seed {seed} step {n}: manifest of blob {b} cut in {chunking}");
            let st: UploadStatus = ok(
                &c.post_json("/v1/blobs/uploads", &blob.manifests[chunking])
                    .await,
                &step,
            );
            assert_eq!(st.cid, id, "{step}");
            if model.finished.contains(&id) {
                assert!(st.complete && st.missing.is_empty(), "{step}: {st:?}");
                count("manifest of a finished blob");
                continue;
            }
            match model.open.insert(id, chunking) {
                Some(open) if open == chunking => count("manifest posted again"),
                Some(_) => {
                    // Another chunking replaces the upload and what it had staged.
                    model.staged.remove(&id);
                    count("manifest replacing another chunking");
                }
                None => count("manifest beginning an upload"),
            }
            assert!(!st.complete, "{step}");
            assert_eq!(st.missing, model.missing(blob), "{step}");
        } else if roll < 25 {
            // Every chunk the upload in progress lacks, as a client resuming sends them.
            let Some(&open) = model.open.get(&id) else {
                continue;
            };
            for index in model.missing(blob) {
                let step = format!("seed {seed} step {n}: missing chunk {index} of blob {b}");
                let r = c
                    .put(
                        &format!("{uploads}/chunks/{index}"),
                        blob.chunk(open, index),
                    )
                    .await;
                let stored: ChunkStored = ok(&r, &step);
                assert_eq!((stored.cid, stored.index), (id, index), "{step}");
                model.staged.entry(id).or_default().insert(index);
            }
            count("every missing chunk sent");
        } else if roll < 65 {
            // A chunk of the chunking in progress (mostly), exact or broken.
            let chunking = match model.open.get(&id) {
                Some(&open) if rng.random_range(0..5) > 0 => open,
                _ => rng.random_range(0..CHUNKINGS.len()),
            };
            let chunks = blob.manifests[chunking].chunk_count();
            let index = if chunks == 0 || rng.random_range(0..10) == 0 {
                chunks + rng.random_range(0..3)
            } else {
                rng.random_range(0..chunks)
            };
            let exact = if index < chunks {
                blob.chunk(chunking, index)
            } else {
                Vec::new()
            };
            let (how, body) = if rng.random_range(0..3) == 0 {
                broken_chunk(&mut rng, &exact)
            } else {
                ("exact", exact)
            };
            let step = format!(
                "seed {seed} step {n}: chunk {index} of blob {b} cut in {chunking}, {how} ({} bytes)",
                body.len()
            );
            let r = c
                .put(&format!("{uploads}/chunks/{index}"), body.clone())
                .await;
            let Some(&open) = model.open.get(&id) else {
                // No upload in progress (never begun or finished).
                refused(&r, ErrorCode::NotFound, &step);
                count("chunk refused: no upload");
                continue;
            };
            let m = &blob.manifests[open];
            if index >= m.chunk_count() {
                refused(&r, ErrorCode::BadRequest, &step);
                count("chunk refused: index out of range");
            } else if body == blob.chunk(open, index) {
                let stored: ChunkStored = ok(&r, &step);
                assert_eq!((stored.cid, stored.index), (id, index), "{step}");
                let fresh = model.staged.entry(id).or_default().insert(index);
                count(if fresh {
                    "chunk stored"
                } else {
                    "chunk stored again"
                });
            } else if body.len() as u64 != {
                let range = m.chunk_range(index).unwrap();
                range.end - range.start
            } {
                refused(&r, ErrorCode::BadRequest, &step);
                count("chunk refused: wrong length");
            } else {
                refused(&r, ErrorCode::HashMismatch, &step);
                count("chunk refused: wrong hash");
            }
        } else if roll < 75 {
            let step = format!("seed {seed} step {n}: status of blob {b}'s upload");
            let r = c.get(&uploads).await;
            match model.open.get(&id) {
                Some(_) => {
                    let st: UploadStatus = ok(&r, &step);
                    assert_eq!(st.missing, model.missing(blob), "{step}");
                    assert!(!st.complete, "{step}");
                    count("status of an upload");
                }
                None => {
                    refused(&r, ErrorCode::NotFound, &step);
                    count("status refused: no upload");
                }
            }
        } else if roll < 87 {
            let step = format!("seed {seed} step {n}: finish blob {b}");
            let r = c.post_raw(&format!("{uploads}/finish"), Vec::new()).await;
            if model.finished.contains(&id) {
                let info: BlobInfo = ok(&r, &step);
                assert_eq!(
                    (info.cid, info.size),
                    (id, blob.data.len() as u64),
                    "{step}"
                );
                count("finish of a finished blob");
            } else if !model.open.contains_key(&id) {
                refused(&r, ErrorCode::NotFound, &step);
                count("finish refused: no upload");
            } else if model.missing(blob).is_empty() {
                let info: BlobInfo = ok(&r, &step);
                assert_eq!(
                    (info.cid, info.size),
                    (id, blob.data.len() as u64),
                    "{step}"
                );
                model.finished.insert(id);
                model.open.remove(&id);
                model.staged.remove(&id);
                count("finish");
            } else {
                refused(&r, ErrorCode::BadRequest, &step);
                count("finish refused: chunks missing");
            }
        } else {
            let len = blob.data.len() as u64;
            let (lo, hi) = if len > 0 && rng.random() {
                let lo = rng.random_range(0..len);
                (lo, rng.random_range(lo..len))
            } else {
                (0, len.saturating_sub(1))
            };
            let ranged = len > 0 && (lo, hi) != (0, len - 1);
            let step = format!("seed {seed} step {n}: read blob {b}, bytes {lo}-{hi}");
            let path = format!("/v1/blobs/{id}");
            let r = if ranged {
                c.get_with(&path, ("range", &format!("bytes={lo}-{hi}")))
                    .await
            } else {
                c.get(&path).await
            };
            if !model.finished.contains(&id) {
                refused(&r, ErrorCode::NotFound, &step);
                count("read refused: no blob");
            } else if ranged {
                assert_eq!(r.status, 206, "{step}");
                assert_eq!(r.body, blob.data[lo as usize..=hi as usize], "{step}");
                count("range read");
            } else {
                assert_eq!(r.status, 200, "{step}");
                assert_eq!(r.body, blob.data, "{step}");
                count("whole read");
            }
        }
    }

    // Every blob uploaded to the end, through the client's resuming upload, whatever
    // chunking its upload in progress had.
    let client = deed_client::Client::new(&c.base).unwrap();
    for (b, blob) in blobs.iter().enumerate() {
        let up = client.upload_chunked(&blob.data, 2048, None).await.unwrap();
        assert_eq!(up.info.cid, blob.manifests[0].id, "blob {b}");
        assert_eq!(
            c.get(&format!("/v1/blobs/{}", up.info.cid)).await.body,
            blob.data
        );
    }
    drop(c);
    node.stop().await;
    eprintln!("seed {seed}, {steps} steps: {tally:#?}");
    let left: Vec<String> = ["tmp", "staging"]
        .iter()
        .flat_map(|d| files_under(&store.join(d)))
        .collect();
    assert!(
        left.is_empty(),
        "seed {seed}: {steps} steps, {restarts} restarts, {} blobs finished in the run; left on disk: {left:#?}",
        model.finished.len()
    );
}

/// Chunks of one cut of a blob in flight while a manifest of another cut replaces
/// the upload: once the blob is uploaded nothing staged is left (a chunk stored under
/// an upload replaced while it arrived is discarded with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_racing_a_replacement_leave_nothing_staged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = disk_storage_config(&dir);
    let node = start_node(cfg, Storage::Disk).await;
    let c = std::sync::Arc::new(Client::new(&node));
    let client = deed_client::Client::new(&c.base).unwrap();
    for round in 0..8u32 {
        let data: Vec<u8> = (0..1024 * 1024u32)
            .map(|i| (i.wrapping_mul(round + 3) % 251) as u8)
            .collect();
        let (first, second) = (
            Manifest::build(&data, 64 * 1024).unwrap(),
            Manifest::build(&data, 4096).unwrap(),
        );
        let id = first.id;
        let r = c.post_json("/v1/blobs/uploads", &first).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let puts: Vec<_> = (0..first.chunk_count())
            .map(|i| {
                let range = first.chunk_range(i).unwrap();
                let part = data[range.start as usize..range.end as usize].to_vec();
                let c = c.clone();
                tokio::spawn(async move {
                    c.put(&format!("/v1/blobs/uploads/{id}/chunks/{i}"), part)
                        .await
                        .status
                })
            })
            .collect();
        let r = c.post_json("/v1/blobs/uploads", &second).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        for put in puts {
            // Stored, or refused once the other cut is in progress.
            let status = put.await.unwrap();
            assert!(status == 200 || (400..500).contains(&status), "{status}");
        }
        client.upload_chunked(&data, 4096, None).await.unwrap();
        assert_eq!(c.get(&format!("/v1/blobs/{id}")).await.body, data);
    }
    drop(client);
    node.stop().await;
    let left = files_under(&dir.path().join("blobs").join("staging"));
    assert!(left.is_empty(), "left staged: {left:#?}");
}

/// Clients uploading the same blob at once (in the same cut, as the CLI always
/// cuts) all end with the blob stored, and nothing staged is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_uploading_one_blob_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = disk_storage_config(&dir);
    let node = start_node(cfg, Storage::Disk).await;
    let c = Client::new(&node);
    for round in 0..4u32 {
        let data: Vec<u8> = (0..512 * 1024u32)
            .map(|i| (i.wrapping_mul(round + 7) % 253) as u8)
            .collect();
        let uploads: Vec<_> = (0..6)
            .map(|_| {
                let (base, data) = (c.base.clone(), data.clone());
                tokio::spawn(async move {
                    let client = deed_client::Client::new(&base).unwrap();
                    client.upload_chunked(&data, 4096, None).await
                })
            })
            .collect();
        let id = Manifest::build(&data, 4096).unwrap().id;
        for (k, u) in uploads.into_iter().enumerate() {
            let up = u.await.unwrap();
            let up = up.unwrap_or_else(|e| panic!("round {round} client {k}: {e}"));
            assert_eq!(up.info.cid, id);
        }
        assert_eq!(c.get(&format!("/v1/blobs/{id}")).await.body, data);
    }
    drop(c);
    node.stop().await;
    let left = files_under(&dir.path().join("blobs").join("staging"));
    assert!(left.is_empty(), "left staged: {left:#?}");
}
