//! [`AnyBlobStore`]: one type for whichever backend the configuration picks.

use std::ops::Range;

use super::{
    BlobError, BlobLimits, BlobStore, Cid, FsBlobStore, Manifest, MemoryBlobStore, ObjectBlobStore,
};

/// Any of this crate's blob stores, chosen at run time (the [`BlobStore`] trait
/// returns `impl Future`, so it cannot be a trait object).
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyBlobStore {
    /// In memory.
    Memory(MemoryBlobStore),
    /// In a local directory.
    Fs(FsBlobStore),
    /// In object storage (S3).
    Object(ObjectBlobStore),
}

impl From<MemoryBlobStore> for AnyBlobStore {
    fn from(s: MemoryBlobStore) -> Self {
        AnyBlobStore::Memory(s)
    }
}

impl From<FsBlobStore> for AnyBlobStore {
    fn from(s: FsBlobStore) -> Self {
        AnyBlobStore::Fs(s)
    }
}

impl From<ObjectBlobStore> for AnyBlobStore {
    fn from(s: ObjectBlobStore) -> Self {
        AnyBlobStore::Object(s)
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyBlobStore::Memory($s) => $call.await,
            AnyBlobStore::Fs($s) => $call.await,
            AnyBlobStore::Object($s) => $call.await,
        }
    };
}

impl BlobStore for AnyBlobStore {
    fn limits(&self) -> BlobLimits {
        match self {
            AnyBlobStore::Memory(s) => s.limits(),
            AnyBlobStore::Fs(s) => s.limits(),
            AnyBlobStore::Object(s) => s.limits(),
        }
    }

    async fn missing_chunks(&self, manifest: &Manifest) -> Result<Vec<u32>, BlobError> {
        delegate!(self, s => s.missing_chunks(manifest))
    }

    async fn put_chunk(
        &self,
        manifest: &Manifest,
        index: u32,
        data: &[u8],
    ) -> Result<(), BlobError> {
        delegate!(self, s => s.put_chunk(manifest, index, data))
    }

    async fn put_chunk_parts(
        &self,
        manifest: &Manifest,
        index: u32,
        parts: Vec<bytes::Bytes>,
    ) -> Result<(), BlobError> {
        delegate!(self, s => s.put_chunk_parts(manifest, index, parts))
    }

    async fn finish(&self, manifest: &Manifest) -> Result<(), BlobError> {
        delegate!(self, s => s.finish(manifest))
    }

    async fn abort(&self, manifest: &Manifest) -> Result<(), BlobError> {
        delegate!(self, s => s.abort(manifest))
    }

    async fn manifest(&self, id: &Cid) -> Result<Option<Manifest>, BlobError> {
        delegate!(self, s => s.manifest(id))
    }

    async fn read_range(&self, id: &Cid, range: Range<u64>) -> Result<Vec<u8>, BlobError> {
        delegate!(self, s => s.read_range(id, range))
    }

    async fn read_chunk_unverified(
        &self,
        manifest: &Manifest,
        index: u32,
    ) -> Result<bytes::Bytes, BlobError> {
        delegate!(self, s => s.read_chunk_unverified(manifest, index))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    #[test]
    fn conformance_through_the_enum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = std::sync::atomic::AtomicU32::new(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(conformance::suite(|| async {
            AnyBlobStore::from(MemoryBlobStore::new(conformance::limits()))
        }));
        rt.block_on(conformance::suite(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.path().join(format!("s{i}"));
            async move {
                AnyBlobStore::from(FsBlobStore::open(path, conformance::limits()).expect("open"))
            }
        }));
    }
}
