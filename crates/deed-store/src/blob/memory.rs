//! The in-memory [`BlobStore`], for tests and ephemeral nodes.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use deed_types::Hash;

use super::{
    append_chunk_part, check_range, check_stored_length, verify_stored_chunk, BlobError,
    BlobLimits, BlobStore, Cid, Manifest,
};

#[derive(Default)]
struct Inner {
    /// Complete blobs: manifest and chunks.
    blobs: HashMap<Cid, (Manifest, Vec<Vec<u8>>)>,
    /// Unfinished uploads by [`Manifest::upload_key`].
    staging: HashMap<Hash, BTreeMap<u32, Vec<u8>>>,
}

/// A [`BlobStore`] held in memory. Nothing survives the process.
#[derive(Default)]
pub struct MemoryBlobStore {
    limits: BlobLimits,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBlobStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl MemoryBlobStore {
    /// An empty store with the given limits.
    pub fn new(limits: BlobLimits) -> Self {
        MemoryBlobStore {
            limits,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change: every
        // mutation below is a single map operation.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlobStore for MemoryBlobStore {
    fn limits(&self) -> BlobLimits {
        self.limits
    }

    async fn missing_chunks(&self, manifest: &Manifest) -> Result<Vec<u32>, BlobError> {
        manifest.validate(&self.limits)?;
        let inner = self.lock();
        if inner.blobs.contains_key(&manifest.id) {
            return Ok(Vec::new());
        }
        let staged = inner.staging.get(&manifest.upload_key());
        Ok((0..manifest.chunk_count())
            .filter(|i| staged.is_none_or(|s| !s.contains_key(i)))
            .collect())
    }

    async fn put_chunk(
        &self,
        manifest: &Manifest,
        index: u32,
        data: &[u8],
    ) -> Result<(), BlobError> {
        manifest.check_shape(&self.limits)?;
        manifest.check_chunk(index, data)?;
        let mut inner = self.lock();
        if inner.blobs.contains_key(&manifest.id) {
            return Ok(());
        }
        inner
            .staging
            .entry(manifest.upload_key())
            .or_default()
            .insert(index, data.to_vec());
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
        let key = manifest.upload_key();
        let mut inner = self.lock();
        if inner.blobs.contains_key(&manifest.id) {
            inner.staging.remove(&key);
            return Ok(());
        }
        let staged = inner.staging.get(&key);
        let missing: Vec<u32> = (0..manifest.chunk_count())
            .filter(|i| staged.is_none_or(|s| !s.contains_key(i)))
            .collect();
        if let Some(&first) = missing.first() {
            return Err(BlobError::Incomplete {
                missing: missing.len() as u32,
                first,
            });
        }
        // Every chunk was checked against its value on arrival, and the values
        // against the id above: the chunks are the blob.
        let chunks: Vec<Vec<u8>> = inner
            .staging
            .remove(&key)
            .map(|s| s.into_values().collect())
            .unwrap_or_default();
        inner.blobs.insert(manifest.id, (manifest.clone(), chunks));
        Ok(())
    }

    async fn abort(&self, manifest: &Manifest) -> Result<(), BlobError> {
        self.lock().staging.remove(&manifest.upload_key());
        Ok(())
    }

    async fn manifest(&self, id: &Cid) -> Result<Option<Manifest>, BlobError> {
        Ok(self.lock().blobs.get(id).map(|(m, _)| m.clone()))
    }

    async fn read_range(&self, id: &Cid, range: Range<u64>) -> Result<Vec<u8>, BlobError> {
        let inner = self.lock();
        let (manifest, chunks) = inner.blobs.get(id).ok_or(BlobError::NotFound { id: *id })?;
        check_range(&range, manifest.size)?;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for index in manifest.chunks_for(&range) {
            let data = chunks.get(index as usize).ok_or(BlobError::Corrupt {
                id: *id,
                detail: format!("chunk {index} missing"),
            })?;
            verify_stored_chunk(manifest, index, data)?;
            append_chunk_part(manifest, index, data, &range, &mut out)?;
        }
        Ok(out)
    }

    async fn read_chunk_unverified(
        &self,
        manifest: &Manifest,
        index: u32,
    ) -> Result<bytes::Bytes, BlobError> {
        manifest.chunk_range(index)?;
        let id = manifest.id;
        let inner = self.lock();
        let (_, chunks) = inner.blobs.get(&id).ok_or(BlobError::NotFound { id })?;
        let data = chunks.get(index as usize).ok_or(BlobError::Corrupt {
            id,
            detail: format!("chunk {index} missing"),
        })?;
        check_stored_length(manifest, index, data.len() as u64)?;
        Ok(bytes::Bytes::copy_from_slice(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Servers (axum) need `Send` futures; the trait promises them, and the helpers
    /// must keep that promise.
    #[test]
    fn helper_futures_are_send() {
        let store = MemoryBlobStore::default();
        let data = vec![1u8; 10];
        let up = super::super::upload(&store, &data, 4);
        assert_send(&up);
        let id = Cid::of(&data);
        let down = super::super::download(&store, &id);
        assert_send(&down);
    }

    #[test]
    fn conformance() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(super::super::conformance::suite(|| async {
            MemoryBlobStore::new(super::super::conformance::limits())
        }));
    }
}
