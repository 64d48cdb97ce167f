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

use crate::api::{BlobInfo, PREFIX};
use crate::client::Client;
use crate::error::ClientError;

/// Called with (bytes done, bytes total) as a transfer proceeds.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Chunk uploads in flight at once: enough to hide one request's round trip behind
/// the next, few enough not to flood a small node.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Received pieces queued for the writer thread of a download.
const WRITES_QUEUED: usize = 64;

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
    /// the chunks the node does not hold yet. The file is read twice, one chunk at a
    /// time (for the manifest, then for the chunks sent), and never held whole in
    /// memory; a file that changes in between fails the node's chunk checks.
    pub async fn upload_file(
        &self,
        path: &Path,
        chunk_size: u32,
        progress: Option<Progress<'_>>,
    ) -> Result<Uploaded, ClientError> {
        let file = path.to_path_buf();
        let manifest = tokio::task::spawn_blocking(move || Manifest::from_path(&file, chunk_size))
            .await
            .map_err(|e| ClientError::Output {
                detail: format!("hashing {} failed: {e}", path.display()),
            })??;
        let source = Source::File(Arc::new(path.to_path_buf()));
        self.upload_from(&manifest, source, progress).await
    }

    async fn upload_from(
        &self,
        manifest: &Manifest,
        source: Source,
        progress: Option<Progress<'_>>,
    ) -> Result<Uploaded, ClientError> {
        let total = manifest.size;
        let status = self.upload_start(manifest).await?;
        let missing = status.missing.clone();
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
            let sent = joined.map_err(|e| ClientError::BadResponse {
                url: self.base().to_owned(),
                reason: format!("upload task failed: {e}"),
            })??;
            done += sent;
            if let Some(p) = progress {
                p(done, total);
            }
        }
        let info = if status.complete {
            BlobInfo {
                cid: manifest.id,
                size: manifest.size,
            }
        } else {
            self.upload_finish(&manifest.id).await?
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
            chunks_sent: missing.len() as u32,
            chunks_total: manifest.chunk_count(),
        })
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

    /// Downloads a whole blob into `out` as it arrives: every chunk is checked against
    /// the manifest (whose values merge to the CID) the moment its last byte arrives.
    /// The bytes are written on a thread of their own, so writing overlaps the
    /// transfer and the hashing. `out` is handed back with the size once the blob
    /// verified; on any error it may hold part of the blob (write to a scratch file
    /// and keep it only on success).
    pub async fn download_to<W>(
        &self,
        cid: &Cid,
        out: W,
        progress: Option<Progress<'_>>,
    ) -> Result<(W, u64), ClientError>
    where
        W: std::io::Write + Send + 'static,
    {
        let manifest = self.checked_manifest(cid).await?;
        self.download_manifest_to(&manifest, out, progress).await
    }

    async fn download_manifest_to<W>(
        &self,
        manifest: &Manifest,
        out: W,
        progress: Option<Progress<'_>>,
    ) -> Result<(W, u64), ClientError>
    where
        W: std::io::Write + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(WRITES_QUEUED);
        let writer = std::thread::Builder::new()
            .name("blob-writer".into())
            .spawn(move || write_all(rx, out))
            .map_err(|e| ClientError::Output {
                detail: format!("cannot start a writer thread: {e}"),
            })?;
        let received = self.stream_chunks(manifest, &tx, progress).await;
        // Closing the channel ends the writer once it has written what is queued.
        drop(tx);
        let written = writer.join().map_err(|_| ClientError::Output {
            detail: "the writer thread panicked".into(),
        })?;
        received?;
        Ok((written?, manifest.size))
    }

    /// Receives a whole blob in one GET, checks each chunk as it completes (hashing
    /// the pieces as they come, so nothing is copied) and queues every piece for
    /// the writer. Stops at the first error.
    async fn stream_chunks(
        &self,
        manifest: &Manifest,
        tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
        progress: Option<Progress<'_>>,
    ) -> Result<(), ClientError> {
        let cid = manifest.id;
        let total = manifest.size;
        if let Some(p) = progress {
            p(0, total);
        }
        if total == 0 {
            return Ok(());
        }
        let path = format!("{PREFIX}/blobs/{cid}");
        let mut resp = self.send(self.request(Method::GET, &path), &path).await?;
        let mut received = 0u64;
        let mut index = 0u32;
        let mut chunk_end = manifest.chunk_range(0)?.end;
        let mut hasher = manifest.chunk_hasher(0);
        loop {
            let Some(piece) = self.next_piece(&mut resp, &path).await? else {
                break;
            };
            if received + piece.len() as u64 > total {
                return Err(ClientError::Integrity {
                    cid,
                    detail: format!("node sent more than the {total} bytes of the blob"),
                });
            }
            let mut rest: &[u8] = &piece;
            while !rest.is_empty() {
                let take = (chunk_end - received).min(rest.len() as u64) as usize;
                let (part, tail) = rest.split_at(take);
                hasher.update(part);
                received += take as u64;
                rest = tail;
                if received == chunk_end {
                    check_chunk_value(manifest, index, hasher.finish())?;
                    index += 1;
                    if index < manifest.chunk_count() {
                        chunk_end = manifest.chunk_range(index)?.end;
                        hasher = manifest.chunk_hasher(index);
                    }
                }
            }
            if tx.send(piece).await.is_err() {
                // The writer stopped: its error is the one to report.
                return Ok(());
            }
            if let Some(p) = progress {
                p(received, total);
            }
        }
        if received < total {
            return Err(ClientError::Integrity {
                cid,
                detail: format!("truncated: got {received} of {total} bytes"),
            });
        }
        Ok(())
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

/// Writes what arrives on `rx` to `out`; returns `out`.
fn write_all<W: std::io::Write>(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    mut out: W,
) -> Result<W, ClientError> {
    while let Some(piece) = rx.blocking_recv() {
        out.write_all(&piece).map_err(|e| ClientError::Output {
            detail: format!("cannot write the blob: {e}"),
        })?;
    }
    out.flush().map_err(|e| ClientError::Output {
        detail: format!("cannot write the blob: {e}"),
    })?;
    Ok(out)
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
}
