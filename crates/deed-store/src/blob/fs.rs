//! The local-filesystem [`BlobStore`].
//!
//! Layout under the root directory:
//!
//! - `staging/<upload key>/<index>.chunk`: verified chunks of an unfinished upload.
//!   Each is written under `tmp/` and renamed into place, so a chunk file is never
//!   partial; staged chunks survive restarts, which is what lets uploads resume.
//! - `blobs/<cid>/<index>.chunk` and `blobs/<cid>/manifest`: a complete blob. `finish`
//!   checks the whole content against the id, syncs the staged chunks, adds the
//!   manifest and renames the whole staging directory to `blobs/<cid>` in one step,
//!   so a blob is either entirely present or absent, and its bytes are never copied.
//!   Each staged chunk is synced in the background as soon as it is written.
//!   Chunks this process verified on arrival are not read back: with the manifest
//!   checked against the id, they are the blob. Chunks staged before the store was
//!   opened are read back and checked again.
//! - A complete blob's chunks are served (`read_chunk_unverified`) from mappings of
//!   their files, neither copied nor hashed again: whoever receives them checks them.
//! - `tmp/`: scratch space, emptied when the store is opened.
//!
//! One process owns a root at a time. Blocking file I/O runs on tokio's blocking
//! pool, so the store must be used inside a tokio runtime.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deed_types::Hash;

use super::{
    append_chunk_part, check_range, check_stored_length, verify_stored_chunk, BlobError,
    BlobLimits, BlobStore, Cid, Manifest,
};

/// Locks that serialize the changes to one upload's staging directory (a chunk
/// stored, the upload aborted or finished), picked by upload key.
const UPLOAD_LOCKS: usize = 64;

/// Threads that sync a finished blob's chunk files at once: the file system commits
/// concurrent syncs together, so a few in parallel cost little more than one.
const SYNC_THREADS: usize = 4;

/// A [`BlobStore`] in a local directory.
#[derive(Clone, Debug)]
pub struct FsBlobStore {
    limits: BlobLimits,
    root: Arc<Root>,
}

#[derive(Debug)]
struct Root {
    path: PathBuf,
    next_tmp: AtomicU64,
    /// The chunks this process verified and staged, by upload key. Lost on
    /// restart, which only means `finish` reads those chunks back.
    verified: Mutex<HashMap<Hash, HashSet<u32>>>,
    /// Background syncs of staged chunks, by upload key, for `finish` to wait for.
    syncs: Mutex<HashMap<Hash, Vec<(u32, ChunkSync)>>>,
    /// [`UPLOAD_LOCKS`] locks: an upload's staging directory changes under the one
    /// its key picks ([`Root::upload_lock`]), so that an abort or a finish never
    /// meets a chunk half stored (removing a directory a file is being added to
    /// fails, and a chunk renamed into a directory just removed is lost or left
    /// behind).
    upload_locks: Vec<Mutex<()>>,
}

/// The sync of one staged chunk file, running on the blocking pool.
type ChunkSync = tokio::task::JoinHandle<io::Result<()>>;

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> BlobError {
    move |source| BlobError::Io { op, source }
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `path`, and discards scratch files
    /// a crash may have left.
    pub fn open(path: impl AsRef<Path>, limits: BlobLimits) -> Result<Self, BlobError> {
        let path = path.as_ref().to_path_buf();
        let tmp = path.join("tmp");
        match fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("clear scratch directory")(e)),
        }
        for dir in ["blobs", "staging", "tmp"] {
            fs::create_dir_all(path.join(dir)).map_err(io_err("create store directories"))?;
        }
        Ok(FsBlobStore {
            limits,
            root: Arc::new(Root {
                path,
                next_tmp: AtomicU64::new(0),
                verified: Mutex::new(HashMap::new()),
                syncs: Mutex::new(HashMap::new()),
                upload_locks: (0..UPLOAD_LOCKS).map(|_| Mutex::new(())).collect(),
            }),
        })
    }

    /// Runs blocking file work on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, BlobError>
    where
        T: Send + 'static,
        F: FnOnce(&Root) -> Result<T, BlobError> + Send + 'static,
    {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| BlobError::Io {
                op: "blocking file task",
                source: io::Error::other(e.to_string()),
            })?
    }
}

impl Root {
    fn blob_dir(&self, id: &Cid) -> PathBuf {
        self.path.join("blobs").join(id.to_string())
    }

    fn staging_dir(&self, m: &Manifest) -> PathBuf {
        self.path.join("staging").join(m.upload_key().to_hex())
    }

    fn chunk_path(&self, m: &Manifest, index: u32) -> PathBuf {
        self.staging_dir(m).join(chunk_name(index))
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.path
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, HashSet<u32>>> {
        // Every critical section leaves the map consistent.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock of the upload `m`'s staging directory.
    fn upload_lock(&self, m: &Manifest) -> std::sync::MutexGuard<'_, ()> {
        let key = m.upload_key();
        let i = usize::from(key.0[0]) % self.upload_locks.len();
        // The lock guards no data: a panic while it was held leaves nothing to mend.
        self.upload_locks[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn syncs(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, Vec<(u32, ChunkSync)>>> {
        self.syncs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what this process verified of an upload (finished or aborted).
    fn forget(&self, m: &Manifest) {
        self.verified().remove(&m.upload_key());
        // Dropping a handle detaches its sync, which ends on its own.
        self.syncs().remove(&m.upload_key());
    }

    fn is_complete(&self, id: &Cid) -> bool {
        self.blob_dir(id).is_dir()
    }

    fn staged_indices(&self, m: &Manifest) -> Result<Vec<bool>, BlobError> {
        let mut present = vec![false; m.chunks.len()];
        let entries = match fs::read_dir(self.staging_dir(m)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(present),
            Err(e) => return Err(io_err("list staged chunks")(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list staged chunks"))?;
            let name = entry.file_name();
            let index = name
                .to_str()
                .and_then(|n| n.strip_suffix(".chunk"))
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(slot) = index.and_then(|i| present.get_mut(i)) {
                *slot = true;
            }
        }
        Ok(present)
    }

    fn read_manifest(&self, id: &Cid) -> Result<Option<Manifest>, BlobError> {
        let bytes = match fs::read(self.blob_dir(id).join("manifest")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read manifest")(e)),
        };
        let m = Manifest::decode(&bytes).map_err(|e| BlobError::Corrupt {
            id: *id,
            detail: format!("stored manifest: {e}"),
        })?;
        if m.id != *id {
            return Err(BlobError::Corrupt {
                id: *id,
                detail: format!("stored manifest names blob {}", m.id),
            });
        }
        Ok(Some(m))
    }
}

fn chunk_name(index: u32) -> String {
    format!("{index}.chunk")
}

/// Writes `data` to a new file at `path` and syncs it.
fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Checks that `parts`, joined, are chunk `index` of `m`: right length, right value.
fn check_parts(m: &Manifest, index: u32, parts: &[bytes::Bytes]) -> Result<(), BlobError> {
    if let [one] = parts {
        return m.check_chunk(index, one);
    }
    let range = m.chunk_range(index)?;
    let got: u64 = parts.iter().map(|p| p.len() as u64).sum();
    if got != range.end - range.start {
        return Err(BlobError::ChunkLength {
            index,
            expected: range.end - range.start,
            got,
        });
    }
    let mut hasher = m.chunk_hasher(index);
    for part in parts {
        hasher.update(part);
    }
    m.check_chunk_value(index, hasher.finish())
}

/// Writes `parts` one after another to a new file at `path` (not synced).
fn write_parts(path: &Path, parts: &[bytes::Bytes]) -> io::Result<()> {
    let mut f = File::create(path)?;
    for part in parts {
        f.write_all(part)?;
    }
    Ok(())
}

/// Makes a rename or a new entry in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn finish_blocking(
    root: &Root,
    m: &Manifest,
    synced: &HashMap<u32, bool>,
) -> Result<(), BlobError> {
    let _staging_lock = root.upload_lock(m);
    let staging = root.staging_dir(m);
    let final_dir = root.blob_dir(&m.id);
    if final_dir.is_dir() {
        remove_dir_if_present(&staging).map_err(io_err("remove staged chunks"))?;
        root.forget(m);
        return Ok(());
    }
    let present = root.staged_indices(m)?;
    let missing: Vec<u32> = (0..m.chunk_count())
        .filter(|&i| !present.get(i as usize).copied().unwrap_or(false))
        .collect();
    if let Some(&first) = missing.first() {
        return Err(BlobError::Incomplete {
            missing: missing.len() as u32,
            first,
        });
    }
    verify_staged(root, m)?;
    sync_chunks(root, m, synced)?;
    fs::create_dir_all(&staging).map_err(io_err("create staging directory"))?;
    let tmp = root.tmp_path();
    write_synced(&tmp, &m.encode()).map_err(io_err("write manifest"))?;
    fs::rename(&tmp, staging.join("manifest")).map_err(io_err("write manifest"))?;
    sync_dir(&staging).map_err(io_err("sync staging directory"))?;
    if let Err(e) = fs::rename(&staging, &final_dir) {
        // Another finish of the same blob won the race: the blob is there, as wanted.
        if !final_dir.is_dir() {
            return Err(io_err("publish blob")(e));
        }
        remove_dir_if_present(&staging).map_err(io_err("remove staged chunks"))?;
    }
    root.forget(m);
    sync_dir(&root.path.join("blobs")).map_err(io_err("sync blob directory"))
}

/// Checks that the staged chunks of `m` make up the blob `m` names (whose chunk
/// values `finish` checked against the id). Chunks this process verified on arrival
/// count as checked; any other chunk (staged before a restart, which a power cut may
/// have damaged since it was not synced) is read back and checked again.
fn verify_staged(root: &Root, m: &Manifest) -> Result<(), BlobError> {
    let known: HashSet<u32> = root
        .verified()
        .get(&m.upload_key())
        .cloned()
        .unwrap_or_default();
    for index in (0..m.chunk_count()).filter(|i| !known.contains(i)) {
        read_staged_chunk(root, m, index)?;
    }
    Ok(())
}

/// Reads staged chunk `index` of `m` back and checks it; a damaged one is dropped
/// so that the uploader is asked for it again.
fn read_staged_chunk(root: &Root, m: &Manifest, index: u32) -> Result<Vec<u8>, BlobError> {
    let path = root.chunk_path(m, index);
    let mut chunk = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut chunk))
        .map_err(io_err("read staged chunk"))?;
    if let Err(e) = m.check_chunk(index, &chunk) {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(chunk)
}

/// Syncs every staged chunk file of `m` that no background sync has, a few at a
/// time.
fn sync_chunks(root: &Root, m: &Manifest, synced: &HashMap<u32, bool>) -> Result<(), BlobError> {
    let paths: Vec<PathBuf> = (0..m.chunk_count())
        .filter(|i| synced.get(i) != Some(&true))
        .map(|i| root.chunk_path(m, i))
        .collect();
    let per_thread = paths.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .try_for_each(|p| File::open(p).and_then(|f| f.sync_data()))
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("sync thread panicked")))
        })
    })
    .map_err(io_err("sync staged chunk"))
}

fn read_range_blocking(root: &Root, id: &Cid, range: Range<u64>) -> Result<Vec<u8>, BlobError> {
    let m = root
        .read_manifest(id)?
        .ok_or(BlobError::NotFound { id: *id })?;
    check_range(&range, m.size)?;
    let dir = root.blob_dir(id);
    let mut out = Vec::new();
    for index in m.chunks_for(&range) {
        let chunk = match fs::read(dir.join(chunk_name(index))) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::Corrupt {
                    id: *id,
                    detail: format!("chunk {index} file is missing"),
                })
            }
            Err(e) => return Err(io_err("read blob chunk")(e)),
        };
        verify_stored_chunk(&m, index, &chunk)?;
        if out.is_empty() && m.chunk_range(index)? == range {
            // The range is this whole chunk (how blob responses read): the file's
            // bytes are the answer, without copying them.
            return Ok(chunk);
        }
        if out.capacity() == 0 {
            out.reserve(usize::try_from(range.end - range.start).unwrap_or(0));
        }
        append_chunk_part(&m, index, &chunk, &range, &mut out)?;
    }
    Ok(out)
}

/// Chunk `index` of the complete blob `m` describes, mapped from its file rather than
/// copied out of it (a blob response then copies it once, into the socket).
fn map_chunk(root: &Root, m: &Manifest, index: u32) -> Result<bytes::Bytes, BlobError> {
    let dir = root.blob_dir(&m.id);
    let file = match File::open(dir.join(chunk_name(index))) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if dir.is_dir() {
                BlobError::Corrupt {
                    id: m.id,
                    detail: format!("chunk {index} file is missing"),
                }
            } else {
                BlobError::NotFound { id: m.id }
            });
        }
        Err(e) => return Err(io_err("open blob chunk")(e)),
    };
    let len = file.metadata().map_err(io_err("open blob chunk"))?.len();
    check_stored_length(m, index, len)?;
    if len == 0 {
        return Ok(bytes::Bytes::new());
    }
    // SAFETY: a mapping is sound while nothing changes the file under it. Chunk
    // files of a complete blob are never written again: they were renamed into
    // `blobs/` whole and are only ever removed whole, and removing a file leaves
    // its mapped pages valid. One process owns the store's root (module docs).
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) };
    match map {
        Ok(map) => Ok(bytes::Bytes::from_owner(map)),
        // A file system that cannot map files: read it instead.
        Err(_) => {
            let mut data = Vec::new();
            (&file)
                .read_to_end(&mut data)
                .map_err(io_err("read blob chunk"))?;
            check_stored_length(m, index, data.len() as u64)?;
            Ok(data.into())
        }
    }
}

impl BlobStore for FsBlobStore {
    fn limits(&self) -> BlobLimits {
        self.limits
    }

    async fn missing_chunks(&self, manifest: &Manifest) -> Result<Vec<u32>, BlobError> {
        manifest.validate(&self.limits)?;
        let m = manifest.clone();
        self.blocking(move |root| {
            if root.is_complete(&m.id) {
                return Ok(Vec::new());
            }
            let present = root.staged_indices(&m)?;
            Ok((0..m.chunk_count())
                .filter(|&i| !present.get(i as usize).copied().unwrap_or(false))
                .collect())
        })
        .await
    }

    async fn put_chunk(
        &self,
        manifest: &Manifest,
        index: u32,
        data: &[u8],
    ) -> Result<(), BlobError> {
        let part = bytes::Bytes::copy_from_slice(data);
        self.put_chunk_parts(manifest, index, vec![part]).await
    }

    async fn put_chunk_parts(
        &self,
        manifest: &Manifest,
        index: u32,
        parts: Vec<bytes::Bytes>,
    ) -> Result<(), BlobError> {
        manifest.check_shape(&self.limits)?;
        let m = manifest.clone();
        let staged = self
            .blocking(move |root| {
                // Hashed here rather than on the caller's task: a chunk is up to
                // several MiB.
                check_parts(&m, index, &parts)?;
                if root.is_complete(&m.id) {
                    return Ok(None);
                }
                // Not synced here but in the background (below); `finish` waits for it
                // and re-verifies any chunk staged before a restart. Written to a
                // scratch file first, outside the upload's lock, so that the chunks of
                // one upload are written side by side.
                let tmp = root.tmp_path();
                write_parts(&tmp, &parts).map_err(io_err("write chunk"))?;
                let _staging = root.upload_lock(&m);
                let path = root.chunk_path(&m, index);
                let stored = if root.is_complete(&m.id) {
                    Ok(false)
                } else {
                    fs::create_dir_all(root.staging_dir(&m))
                        .map_err(io_err("create staging directory"))
                        .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("store chunk")))
                        .map(|()| true)
                };
                if !matches!(stored, Ok(true)) {
                    let _ = fs::remove_file(&tmp);
                }
                if !stored? {
                    return Ok(None);
                }
                root.verified()
                    .entry(m.upload_key())
                    .or_default()
                    .insert(index);
                Ok(Some((m.upload_key(), path)))
            })
            .await?;
        // The chunk goes to disk now, while the rest of the upload arrives, rather
        // than all at once in `finish`, which waits for these syncs.
        if let Some((key, path)) = staged {
            let sync = tokio::task::spawn_blocking(move || File::open(path)?.sync_data());
            self.root
                .syncs()
                .entry(key)
                .or_default()
                .push((index, sync));
        }
        Ok(())
    }

    async fn finish(&self, manifest: &Manifest) -> Result<(), BlobError> {
        if let Err(e) = manifest.validate(&self.limits) {
            if manifest.check_shape(&self.limits).is_ok() {
                // The chunk values lie about the id: the upload can never finish.
                self.abort(manifest).await?;
            }
            return Err(e);
        }
        let m = manifest.clone();
        // Chunks whose background sync succeeded need no other; a failed one is
        // synced again below, and its error reported if it fails again.
        let pending = self
            .root
            .syncs()
            .remove(&m.upload_key())
            .unwrap_or_default();
        let mut synced: HashMap<u32, bool> = HashMap::new();
        for (index, sync) in pending {
            let ok = matches!(sync.await, Ok(Ok(())));
            let entry = synced.entry(index).or_insert(true);
            *entry &= ok;
        }
        self.blocking(move |root| finish_blocking(root, &m, &synced))
            .await
    }

    async fn abort(&self, manifest: &Manifest) -> Result<(), BlobError> {
        let m = manifest.clone();
        self.blocking(move |root| {
            let _staging = root.upload_lock(&m);
            root.forget(&m);
            remove_dir_if_present(&root.staging_dir(&m)).map_err(io_err("remove staged chunks"))
        })
        .await
    }

    async fn manifest(&self, id: &Cid) -> Result<Option<Manifest>, BlobError> {
        let id = *id;
        self.blocking(move |root| root.read_manifest(&id)).await
    }

    async fn read_range(&self, id: &Cid, range: Range<u64>) -> Result<Vec<u8>, BlobError> {
        let id = *id;
        self.blocking(move |root| read_range_blocking(root, &id, range))
            .await
    }

    async fn read_chunk_unverified(
        &self,
        manifest: &Manifest,
        index: u32,
    ) -> Result<bytes::Bytes, BlobError> {
        manifest.chunk_range(index)?;
        let m = manifest.clone();
        self.blocking(move |root| map_chunk(root, &m, index)).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = AtomicU64::new(0);
        rt().block_on(conformance::suite(|| {
            let path = dir
                .path()
                .join(format!("store{}", n.fetch_add(1, Ordering::Relaxed)));
            async move { FsBlobStore::open(path, conformance::limits()).expect("open") }
        }));
    }

    #[test]
    fn upload_resumes_after_reopen_and_scratch_is_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let m = Manifest::build(&data, 1024).expect("build");
        rt().block_on(async {
            let store = FsBlobStore::open(dir.path(), conformance::limits()).expect("open");
            for i in [0u32, 3, 9] {
                let r = m.chunk_range(i).expect("range");
                store
                    .put_chunk(&m, i, &data[r.start as usize..r.end as usize])
                    .await
                    .expect("put");
            }
            // Leftovers of a crashed assembly.
            fs::write(dir.path().join("tmp").join("999-0"), b"junk").expect("junk");
        });
        rt().block_on(async {
            let store = FsBlobStore::open(dir.path(), conformance::limits()).expect("reopen");
            assert_eq!(
                fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
                0,
                "scratch cleared on open"
            );
            assert_eq!(
                store.missing_chunks(&m).await.expect("missing"),
                vec![1, 2, 4, 5, 6, 7, 8]
            );
            let m2 = super::super::upload(&store, &data, 1024)
                .await
                .expect("upload");
            assert_eq!(m2, m);
            assert_eq!(
                super::super::download(&store, &m.id)
                    .await
                    .expect("download"),
                data
            );
            assert!(
                !store.root.staging_dir(&m).exists(),
                "staging removed after finish"
            );
        });
    }

    #[test]
    fn upload_finishes_from_chunks_verified_before_and_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..9_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let m = Manifest::build(&data, 1024).expect("build");
        let put = |store: FsBlobStore, indices: Vec<u32>| {
            let (m, data) = (m.clone(), data.clone());
            async move {
                for i in indices {
                    let r = m.chunk_range(i).expect("range");
                    store
                        .put_chunk(&m, i, &data[r.start as usize..r.end as usize])
                        .await
                        .expect("put");
                }
                store
            }
        };
        rt().block_on(async {
            let store = FsBlobStore::open(dir.path(), conformance::limits()).expect("open");
            put(store, vec![0, 2, 5, 8]).await;
        });
        rt().block_on(async {
            let store = FsBlobStore::open(dir.path(), conformance::limits()).expect("reopen");
            let store = put(store, vec![1, 3, 4, 6, 7]).await;
            store.finish(&m).await.expect("finish");
            assert_eq!(
                super::super::download(&store, &m.id)
                    .await
                    .expect("download"),
                data
            );
            assert!(
                store.root.verified().is_empty(),
                "nothing kept after finish"
            );
        });
    }

    #[test]
    fn damaged_blob_file_is_reported_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![42u8; 5000];
        rt().block_on(async {
            let store = FsBlobStore::open(dir.path(), conformance::limits()).expect("open");
            let m = super::super::upload(&store, &data, 1024)
                .await
                .expect("upload");
            let path = store.root.blob_dir(&m.id).join(chunk_name(2));
            let mut bytes = fs::read(&path).expect("read");
            bytes[500] ^= 1;
            fs::write(&path, bytes).expect("write");
            let err = store
                .read_range(&m.id, 2400..2600)
                .await
                .expect_err("corrupt");
            assert!(matches!(err, BlobError::Corrupt { .. }), "{err:?}");
            assert!(!err.is_retryable());
            // Chunks the damage does not touch still read fine.
            assert_eq!(
                store.read_range(&m.id, 0..1000).await.expect("clean chunk"),
                vec![42u8; 1000]
            );
            // Served as stored, for the receiver to check; a chunk cut short or
            // gone is an error even unhashed.
            let served = store.read_chunk_unverified(&m, 2).await.expect("served");
            assert_eq!(served.len(), 1024);
            assert_ne!(m.check_chunk(2, &served).map_err(|e| e.to_string()), Ok(()));
            fs::write(&path, [42u8; 1000]).expect("truncate");
            let err = store.read_chunk_unverified(&m, 2).await.expect_err("short");
            assert!(matches!(err, BlobError::Corrupt { .. }), "{err:?}");
            fs::remove_file(&path).expect("remove");
            let err = store.read_chunk_unverified(&m, 2).await.expect_err("gone");
            assert!(matches!(err, BlobError::Corrupt { .. }), "{err:?}");
        });
    }

    #[test]
    fn damaged_staged_chunk_is_dropped_at_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let m = Manifest::build(&data, 1024).expect("build");
        rt().block_on(async {
            let store = FsBlobStore::open(dir.path(), conformance::limits()).expect("open");
            for i in 0..3u32 {
                let r = m.chunk_range(i).expect("range");
                store
                    .put_chunk(&m, i, &data[r.start as usize..r.end as usize])
                    .await
                    .expect("put");
            }
            fs::write(store.root.chunk_path(&m, 1), vec![0u8; 1024]).expect("damage");
        });
        // Damage to a staged chunk means a power cut, so a restart, in between.
        rt().block_on(async {
            let store = FsBlobStore::open(dir.path(), conformance::limits()).expect("reopen");
            let err = store.finish(&m).await.expect_err("damaged chunk");
            assert!(
                matches!(err, BlobError::ChunkHashMismatch { index: 1, .. }),
                "{err:?}"
            );
            assert_eq!(store.manifest(&m.id).await.expect("manifest"), None);
            assert_eq!(store.missing_chunks(&m).await.expect("missing"), vec![1]);
        });
    }
}
