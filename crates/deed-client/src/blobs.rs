//! Blob transfer over the API: chunked, resumable uploads and verified downloads.
//!
//! An upload builds the blob's [`Manifest`], asks the node which chunks it lacks,
//! sends only those (a few at a time) and finishes; an interrupted upload resumes
//! where it stopped. A download checks the manifest's chunk values against the CID
//! it asked for, then every chunk against its value as it arrives, so a node cannot
//! serve altered bytes, and nothing is hashed twice.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use deed_store::blob::DEFAULT_CHUNK_SIZE;
use deed_store::Manifest;
use deed_types::{Cid, Hash};
use reqwest::Method;
use tokio::task::JoinSet;

use crate::api::{BlobInfo, ErrorCode, PREFIX};
use crate::client::Client;
use crate::error::ClientError;

/// Called with (bytes done, bytes total) as a transfer proceeds.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Chunk uploads in flight at once: enough to hide one request's round trip behind
/// the next, few enough not to flood a small node.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Times an upload asks the node again after the node stopped knowing it part way.
const UPLOAD_ATTEMPTS: u32 = 4;

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The stored blob.
    pub info: BlobInfo,
    /// Chunks sent in this call (fewer than the blob has when resuming).
    pub chunks_sent: u32,
    /// Chunks the blob has.
    pub chunks_total: u32,
}

impl Client {
    /// Uploads `data` as a blob with the default chunk size.
    pub async fn upload(
        &self,
        data: &[u8],
        progress: Option<Progress<'_>>,
    ) -> Result<Uploaded, ClientError> {
        self.upload_chunked(data, DEFAULT_CHUNK_SIZE, progress)
            .await
    }

    /// Uploads `data` cut into chunks of `chunk_size` bytes, sending only the chunks
    /// the node does not hold yet.
    pub async fn upload_chunked(
        &self,
        data: &[u8],
        chunk_size: u32,
        progress: Option<Progress<'_>>,
    ) -> Result<Uploaded, ClientError> {
        self.upload_bytes(bytes::Bytes::copy_from_slice(data), chunk_size, progress)
            .await
    }

    /// Uploads `data` cut into chunks of `chunk_size` bytes, sending only the chunks
    /// the node does not hold yet. The chunks sent are slices of `data`, not copies.
    pub async fn upload_bytes(
        &self,
        data: bytes::Bytes,
        chunk_size: u32,
        progress: Option<Progress<'_>>,
    ) -> Result<Uploaded, ClientError> {
        let manifest = Manifest::build(&data, chunk_size)?;
        self.upload_from(&manifest, Source::Bytes(data), progress)
            .await
    }

    /// Uploads the file at `path` cut into chunks of `chunk_size` bytes, sending only
    /// the chunks the node does not hold yet.
    ///
    /// A regular file is mapped into memory: the manifest is hashed from the mapping
    /// (on several threads) and the chunks are sent from it, so its bytes are never
    /// copied into the process. Any other file (or one that cannot be mapped) is read
    /// twice, one chunk at a time, for the manifest and then for the chunks sent.
    /// Either way it is never held whole in memory. A file that changes during the
    /// upload fails the node's chunk checks; one cut shorter while mapped ends the
    /// process with a bus error, as for any program that maps its input.
    pub async fn upload_file(
        &self,
        path: &Path,
        chunk_size: u32,
        progress: Option<Progress<'_>>,
    ) -> Result<Uploaded, ClientError> {
        let file = path.to_path_buf();
        let mapped = tokio::task::spawn_blocking(move || map_and_hash(&file, chunk_size))
            .await
            .map_err(|e| ClientError::Output {
                detail: format!("hashing {} failed: {e}", path.display()),
            })?;
        if let Some(mapped) = mapped {
            let (manifest, bytes) = mapped?;
            return self
                .upload_from(&manifest, Source::Bytes(bytes), progress)
                .await;
        }
        let file = path.to_path_buf();
        let manifest = tokio::task::spawn_blocking(move || Manifest::from_path(&file, chunk_size))
            .await
            .map_err(|e| ClientError::Output {
                detail: format!("hashing {} failed: {e}", path.display()),
            })??;
        let source = Source::File(Arc::new(path.to_path_buf()));
        self.upload_from(&manifest, source, progress).await
    }

    /// Uploads `manifest`'s blob from `source`: asks the node which chunks it lacks,
    /// sends those, and finishes. When the node no longer knows the upload part way
    /// (another client finished the same blob meanwhile, or the upload expired or
    /// was replaced by another cut), it asks again: the node then says the blob is
    /// complete, or which chunks it still lacks.
    async fn upload_from(
        &self,
        manifest: &Manifest,
        source: Source,
        progress: Option<Progress<'_>>,
    ) -> Result<Uploaded, ClientError> {
        let mut sent = 0u32;
        let mut attempt = 0;
        let info = loop {
            attempt += 1;
            let again = attempt < UPLOAD_ATTEMPTS;
            let status = self.upload_start(manifest).await?;
            if status.complete {
                if let Some(p) = progress {
                    p(manifest.size, manifest.size);
                }
                break BlobInfo {
                    cid: manifest.id,
                    size: manifest.size,
                };
            }
            match self
                .send_chunks(manifest, &source, &status.missing, progress)
                .await
            {
                Ok(n) => sent += n,
                Err(e) if again && e.code() == Some(ErrorCode::NotFound) => continue,
                Err(e) => return Err(e),
            }
            match self.upload_finish(&manifest.id).await {
                Ok(info) => break info,
                Err(e) if again && e.code() == Some(ErrorCode::NotFound) => continue,
                Err(e) => return Err(e),
            }
        };
        if info.cid != manifest.id || info.size != manifest.size {
            return Err(ClientError::BadResponse {
                url: self.base().to_owned(),
                reason: format!(
                    "finished upload reports {} ({} bytes), expected {} ({} bytes)",
                    info.cid, info.size, manifest.id, manifest.size
                ),
            });
        }
        Ok(Uploaded {
            info,
            chunks_sent: sent,
            chunks_total: manifest.chunk_count(),
        })
    }

    /// Sends chunks `missing` of `manifest`'s blob, a few at a time; how many.
    async fn send_chunks(
        &self,
        manifest: &Manifest,
        source: &Source,
        missing: &[u32],
        progress: Option<Progress<'_>>,
    ) -> Result<u32, ClientError> {
        let total = manifest.size;
        let mut done = total.saturating_sub(
            missing
                .iter()
                .filter_map(|i| manifest.chunk_range(*i).ok())
                .map(|r| r.end - r.start)
                .sum(),
        );
        if let Some(p) = progress {
            p(done, total);
        }
        let mut set: JoinSet<Result<u64, ClientError>> = JoinSet::new();
        let mut queue = missing.iter().copied();
        let mut sent = 0u32;
        loop {
            while set.len() < UPLOADS_IN_FLIGHT {
                let Some(index) = queue.next() else { break };
                let range = manifest.chunk_range(index)?;
                let source = source.clone();
                let client = self.clone();
                let cid = manifest.id;
                set.spawn(async move {
                    let bytes = source.read(range).await?;
                    let len = bytes.len() as u64;
                    let stored = client.upload_chunk(&cid, index, bytes).await?;
                    if stored.cid != cid || stored.index != index || u64::from(stored.size) != len {
                        return Err(ClientError::BadResponse {
                            url: client.base().to_owned(),
                            reason: format!(
                                "chunk {index} of {cid} ({len} bytes) acknowledged as chunk {} of {} ({} bytes)",
                                stored.index, stored.cid, stored.size
                            ),
                        });
                    }
                    Ok(len)
                });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let len = joined.map_err(|e| ClientError::BadResponse {
                url: self.base().to_owned(),
                reason: format!("upload task failed: {e}"),
            })??;
            sent += 1;
            done += len;
            if let Some(p) = progress {
                p(done, total);
            }
        }
        Ok(sent)
    }

    /// Downloads a whole blob, verifying every chunk and the content id.
    pub async fn download(
        &self,
        cid: &Cid,
        progress: Option<Progress<'_>>,
    ) -> Result<Vec<u8>, ClientError> {
        let manifest = self.checked_manifest(cid).await?;
        let buf = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
        let (bytes, _) = self.download_manifest_to(&manifest, buf, progress).await?;
        Ok(bytes)
    }

    /// Downloads a whole blob into `out` as it arrives, in one GET: every chunk is
    /// checked against the manifest (whose values merge to the CID) the moment its
    /// last byte arrives. `out` is handed back with the size once the blob verified;
    /// on any error it may hold part of the blob (write to a scratch file and keep it
    /// only on success).
    ///
    /// Each piece is hashed and written on the calling task as soon as it is read,
    /// while it is still in the cache: meant for a local file or memory, as the CLI
    /// uses it. (Handing pieces to a writer thread instead cost a 64 MiB download
    /// about 5 ms more, in thread wake-ups, on a 2-core machine.)
    pub async fn download_to<W>(
        &self,
        cid: &Cid,
        out: W,
        progress: Option<Progress<'_>>,
    ) -> Result<(W, u64), ClientError>
    where
        W: std::io::Write + Send,
    {
        let manifest = self.checked_manifest(cid).await?;
        self.download_manifest_to(&manifest, out, progress).await
    }

    async fn download_manifest_to<W>(
        &self,
        manifest: &Manifest,
        mut out: W,
        progress: Option<Progress<'_>>,
    ) -> Result<(W, u64), ClientError>
    where
        W: std::io::Write + Send,
    {
        let mut checker = ChunkChecker::new(manifest.clone());
        let total = manifest.size;
        if let Some(p) = progress {
            p(0, total);
        }
        if total > 0 {
            let path = format!("{PREFIX}/blobs/{}", manifest.id);
            let mut resp = self.send(self.request(Method::GET, &path), &path).await?;
            while let Some(piece) = self.next_piece(&mut resp, &path).await? {
                checker.feed(&piece)?;
                out.write_all(&piece).map_err(|e| ClientError::Output {
                    detail: format!("cannot write the blob: {e}"),
                })?;
                if let Some(p) = progress {
                    p(checker.received, total);
                }
            }
        }
        if !checker.complete() {
            return Err(ClientError::Integrity {
                cid: manifest.id,
                detail: format!("truncated: got {} of {total} bytes", checker.received),
            });
        }
        out.flush().map_err(|e| ClientError::Output {
            detail: format!("cannot write the blob: {e}"),
        })?;
        Ok((out, total))
    }

    /// Downloads bytes `range` of a blob with an HTTP range request, verifying every
    /// chunk the range touches.
    pub async fn download_range(
        &self,
        cid: &Cid,
        range: Range<u64>,
    ) -> Result<Vec<u8>, ClientError> {
        let manifest = self.checked_manifest(cid).await?;
        if range.start > range.end || range.end > manifest.size {
            return Err(ClientError::Blob(deed_store::BlobError::RangeOutOfBounds {
                start: range.start,
                end: range.end,
                size: manifest.size,
            }));
        }
        if range.start == range.end {
            return Ok(Vec::new());
        }
        let chunks = manifest.chunks_for(&range);
        let first = manifest.chunk_range(chunks.start)?.start;
        let bytes = self.fetch_chunks(&manifest, chunks, None).await?;
        let lo = (range.start - first) as usize;
        let hi = (range.end - first) as usize;
        Ok(bytes[lo..hi].to_vec())
    }

    async fn checked_manifest(&self, cid: &Cid) -> Result<Manifest, ClientError> {
        let manifest = self.blob_manifest(cid).await?;
        if manifest.id != *cid {
            return Err(ClientError::Integrity {
                cid: *cid,
                detail: format!("node sent the manifest of {}", manifest.id),
            });
        }
        // Chunk values that merge to the CID are what makes checking each chunk
        // enough (and they imply a chunk list that fits the size).
        if let Err(e) = manifest.check_values() {
            return Err(ClientError::Integrity {
                cid: *cid,
                detail: format!("node sent a bad manifest: {e}"),
            });
        }
        Ok(manifest)
    }

    /// Fetches chunks `chunks` (one range request) and checks each as it completes.
    async fn fetch_chunks(
        &self,
        manifest: &Manifest,
        chunks: Range<u32>,
        progress: Option<Progress<'_>>,
    ) -> Result<Vec<u8>, ClientError> {
        let cid = manifest.id;
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let start = manifest.chunk_range(chunks.start)?.start;
        let end = manifest.chunk_range(chunks.end - 1)?.end;
        let whole = start == 0 && end == manifest.size;
        let path = format!("{PREFIX}/blobs/{cid}");
        let mut rb = self.request(Method::GET, &path);
        if !whole {
            rb = rb.header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", start, end - 1),
            );
        }
        let mut resp = self.send(rb, &path).await?;
        let total = end - start;
        let mut buf: Vec<u8> = Vec::with_capacity(total as usize);
        let mut next = chunks.start;
        let mut next_end = manifest.chunk_range(next)?.end - start;
        loop {
            let Some(piece) = self.next_piece(&mut resp, &path).await? else {
                break;
            };
            if buf.len() as u64 + piece.len() as u64 > total {
                return Err(ClientError::Integrity {
                    cid,
                    detail: format!("node sent more than the {total} bytes asked for"),
                });
            }
            buf.extend_from_slice(&piece);
            while next < chunks.end && buf.len() as u64 >= next_end {
                let r = manifest.chunk_range(next)?;
                let lo = (r.start - start) as usize;
                let data = &buf[lo..next_end as usize];
                check_chunk(manifest, next, data)?;
                next += 1;
                if next < chunks.end {
                    next_end = manifest.chunk_range(next)?.end - start;
                }
            }
            if let Some(p) = progress {
                p(buf.len() as u64, total);
            }
        }
        if (buf.len() as u64) < total || next < chunks.end {
            return Err(ClientError::Integrity {
                cid,
                detail: format!("truncated: got {} of {total} bytes", buf.len()),
            });
        }
        Ok(buf)
    }
}

/// The manifest and mapped bytes of the regular file at `path`, or `None` when it
/// is not one that can be mapped (a pipe, an empty file, a file system without
/// mappings): the caller reads it instead.
fn map_and_hash(
    path: &Path,
    chunk_size: u32,
) -> Option<Result<(Manifest, bytes::Bytes), ClientError>> {
    let file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    // SAFETY: the mapping is read-only and lives as long as the bytes made from it.
    // Another process changing the file while it is mapped changes what is hashed
    // and sent (which the node's chunk checks catch); cutting it shorter makes a
    // later read fault (a bus error), the hazard every program that maps its input
    // accepts (b3sum, ripgrep) for not copying it.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let bytes = bytes::Bytes::from_owner(map);
    Some(
        Manifest::build(&bytes, chunk_size)
            .map(|m| (m, bytes))
            .map_err(ClientError::from),
    )
}

/// Where the chunks of an upload come from.
#[derive(Clone)]
enum Source {
    /// Bytes in memory: chunks are slices of them.
    Bytes(bytes::Bytes),
    /// A file: each chunk is read when it is about to be sent.
    File(Arc<PathBuf>),
}

impl Source {
    /// Bytes `range` of the blob.
    async fn read(&self, range: Range<u64>) -> Result<bytes::Bytes, ClientError> {
        let bad_range = |size: u64| {
            ClientError::Blob(deed_store::BlobError::RangeOutOfBounds {
                start: range.start,
                end: range.end,
                size,
            })
        };
        match self {
            Source::Bytes(data) => {
                let (lo, hi) = (range.start as usize, range.end as usize);
                if hi > data.len() || lo > hi {
                    return Err(bad_range(data.len() as u64));
                }
                Ok(data.slice(lo..hi))
            }
            Source::File(path) => {
                let path = Arc::clone(path);
                let len = usize::try_from(range.end.saturating_sub(range.start))
                    .map_err(|_| bad_range(range.end))?;
                let read = move || -> std::io::Result<Vec<u8>> {
                    let mut f = std::fs::File::open(path.as_path())?;
                    f.seek(SeekFrom::Start(range.start))?;
                    let mut buf = vec![0u8; len];
                    f.read_exact(&mut buf)?;
                    Ok(buf)
                };
                let bytes = tokio::task::spawn_blocking(read)
                    .await
                    .map_err(|e| ClientError::Output {
                        detail: format!("reading a chunk failed: {e}"),
                    })?
                    .map_err(|source| deed_store::BlobError::Io {
                        op: "read a chunk of the file to upload",
                        source,
                    })?;
                Ok(bytes.into())
            }
        }
    }
}

/// Checks a blob's bytes, in order and in pieces of any size, chunk by chunk
/// against its manifest.
struct ChunkChecker {
    manifest: Manifest,
    /// Bytes checked so far.
    received: u64,
    /// The chunk being hashed, and where it ends.
    index: u32,
    chunk_end: u64,
    hasher: deed_store::blob::ChunkHasher,
}

impl ChunkChecker {
    fn new(manifest: Manifest) -> Self {
        let chunk_end = manifest.chunk_range(0).map_or(0, |r| r.end);
        let hasher = manifest.chunk_hasher(0);
        ChunkChecker {
            manifest,
            received: 0,
            index: 0,
            chunk_end,
            hasher,
        }
    }

    /// Hashes the next `piece`, checking each chunk the moment its last byte comes.
    fn feed(&mut self, piece: &[u8]) -> Result<(), ClientError> {
        let m = &self.manifest;
        if self.received + piece.len() as u64 > m.size {
            return Err(ClientError::Integrity {
                cid: m.id,
                detail: format!("node sent more than the {} bytes of the blob", m.size),
            });
        }
        let mut rest = piece;
        while !rest.is_empty() {
            let take = (self.chunk_end - self.received).min(rest.len() as u64) as usize;
            let (part, tail) = rest.split_at(take);
            self.hasher.update(part);
            self.received += take as u64;
            rest = tail;
            if self.received == self.chunk_end {
                let done = std::mem::replace(&mut self.hasher, m.chunk_hasher(self.index + 1));
                check_chunk_value(m, self.index, done.finish())?;
                self.index += 1;
                if self.index < m.chunk_count() {
                    self.chunk_end = m.chunk_range(self.index)?.end;
                }
            }
        }
        Ok(())
    }

    /// Whether every chunk arrived and checked.
    fn complete(&self) -> bool {
        self.index == self.manifest.chunk_count()
    }
}

fn check_chunk(manifest: &Manifest, index: u32, data: &[u8]) -> Result<(), ClientError> {
    check_chunk_value(
        manifest,
        index,
        manifest.chunk_hasher(index).update(data).finish(),
    )
}

fn check_chunk_value(manifest: &Manifest, index: u32, got: Hash) -> Result<(), ClientError> {
    let expected = manifest
        .chunks
        .get(index as usize)
        .copied()
        .unwrap_or(Hash::ZERO);
    if got != expected {
        return Err(ClientError::Integrity {
            cid: manifest.id,
            detail: format!("chunk {index} hashes to {got}, manifest lists {expected}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_check_names_the_chunk() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        let m = Manifest::build(&data, 1024).unwrap();
        assert!(check_chunk(&m, 1, &data[1024..2048]).is_ok());
        let e = check_chunk(&m, 2, &data[1024..2048]).unwrap_err();
        assert!(e.to_string().contains("chunk 2"), "{e}");
    }

    /// `data` fed to a checker of `m` in pieces ending at `cuts`.
    fn feed_in_pieces(m: &Manifest, data: &[u8], cuts: &[usize]) -> ChunkChecker {
        let mut c = ChunkChecker::new(m.clone());
        let mut ends: Vec<usize> = cuts.iter().map(|&x| x % (data.len() + 1)).collect();
        ends.push(data.len());
        ends.sort_unstable();
        let mut at = 0;
        for end in ends {
            c.feed(&data[at..end]).unwrap();
            at = end;
        }
        c
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Pieces of any size, across chunk boundaries, check as the whole blob does;
        /// one flipped byte is caught in its own chunk, and bytes past the end or a
        /// missing tail are refused.
        #[test]
        fn checker_takes_any_split_and_names_the_bad_chunk(
            len in 1usize..6000,
            cuts in proptest::collection::vec(0usize..6001, 0..12),
            flip in 0usize..6000,
        ) {
            let data: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
            let m = Manifest::build(&data, 1024).unwrap();
            proptest::prop_assert!(feed_in_pieces(&m, &data, &cuts).complete());

            let flip = flip % len;
            let mut bad = data.clone();
            bad[flip] ^= 1;
            let mut c = ChunkChecker::new(m.clone());
            let e = c.feed(&bad).unwrap_err();
            let chunk = format!("chunk {} ", flip / 1024);
            proptest::prop_assert!(e.to_string().contains(&chunk), "{e}");

            let mut c = ChunkChecker::new(m.clone());
            c.feed(&data[..len - 1]).unwrap();
            proptest::prop_assert!(!c.complete());
            proptest::prop_assert!(c.feed(&data[len - 1..]).is_ok() && c.complete());
            proptest::prop_assert!(c.feed(&[0]).is_err(), "a byte past the end");
        }
    }
}
