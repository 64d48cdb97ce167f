//! The [`BlobStore`] over any `object_store` backend; [`S3Config`] builds the S3 one.
//!
//! Layout under the store's prefix:
//!
//! - `chunks/<upload key>/<index>`: one object per verified chunk. Uploads write
//!   here directly and a finished blob keeps reading its chunks from here.
//! - `blobs/<cid>`: the encoded manifest of a complete blob. It is written last,
//!   after every chunk and the whole content were verified, with one PUT (atomic in
//!   S3), so a blob is visible exactly when this object exists. Chunk objects of an
//!   unfinished upload are never reachable through it.

use std::ops::Range;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{
    append_chunk_part, check_range, check_stored_length, verify_stored_chunk, BlobError,
    BlobLimits, BlobStore, Cid, Manifest,
};

/// Where an S3-compatible bucket is and how to sign requests to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible services (MinIO, moto, R2…); `None` for AWS.
    pub endpoint: Option<String>,
    /// Bucket name. The bucket must exist.
    pub bucket: String,
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Allow plain `http://` endpoints (local test servers).
    pub allow_http: bool,
    /// Key prefix inside the bucket, so several stores can share one bucket.
    pub prefix: String,
}

/// A [`BlobStore`] on object storage.
#[derive(Clone, Debug)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    limits: BlobLimits,
}

fn remote(op: &'static str) -> impl FnOnce(object_store::Error) -> BlobError {
    move |e| BlobError::Remote {
        op,
        source: Box::new(e),
    }
}

impl ObjectBlobStore {
    /// A blob store keeping its objects under `prefix` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>, limits: BlobLimits) -> Self {
        let prefix = prefix.into().trim_matches('/').to_owned();
        ObjectBlobStore {
            store,
            prefix,
            limits,
        }
    }

    /// A blob store in an S3-compatible bucket. Makes no request yet.
    pub fn s3(config: &S3Config, limits: BlobLimits) -> Result<Self, BlobError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            // Path-style requests: S3-compatible servers rarely serve bucket subdomains.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let s3 = builder.build().map_err(remote("configure S3"))?;
        Ok(ObjectBlobStore::new(
            Arc::new(s3),
            config.prefix.clone(),
            limits,
        ))
    }

    fn path(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_path(&self, id: &Cid) -> Path {
        self.path(&format!("blobs/{id}"))
    }

    fn chunk_dir(&self, m: &Manifest) -> Path {
        self.path(&format!("chunks/{}", m.upload_key().to_hex()))
    }

    fn chunk_path(&self, m: &Manifest, index: u32) -> Path {
        self.path(&format!("chunks/{}/{index}", m.upload_key().to_hex()))
    }

    async fn get_bytes(&self, path: &Path, op: &'static str) -> Result<Option<Vec<u8>>, BlobError> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(remote(op))?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(op)(e)),
        }
    }

    async fn stored_manifest(&self, id: &Cid) -> Result<Option<Manifest>, BlobError> {
        let Some(bytes) = self.get_bytes(&self.blob_path(id), "read manifest").await? else {
            return Ok(None);
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

    /// Which chunk objects of `m`'s upload exist.
    async fn staged(&self, m: &Manifest) -> Result<Vec<bool>, BlobError> {
        let mut present = vec![false; m.chunks.len()];
        let listing = self
            .store
            .list_with_delimiter(Some(&self.chunk_dir(m)))
            .await
            .map_err(remote("list chunks"))?;
        for obj in listing.objects {
            let index = obj
                .location
                .filename()
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(slot) = index.and_then(|i| present.get_mut(i)) {
                *slot = true;
            }
        }
        Ok(present)
    }

    async fn delete_chunks(&self, m: &Manifest) -> Result<(), BlobError> {
        for index in 0..m.chunk_count() {
            match self.store.delete(&self.chunk_path(m, index)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remote("delete chunk")(e)),
            }
        }
        Ok(())
    }

    /// Drops the chunks of `m` unless they are the ones a complete blob reads.
    async fn discard_upload(&self, m: &Manifest) -> Result<(), BlobError> {
        match self.stored_manifest(&m.id).await? {
            Some(stored) if stored.upload_key() == m.upload_key() => Ok(()),
            _ => self.delete_chunks(m).await,
        }
    }
}

impl BlobStore for ObjectBlobStore {
    fn limits(&self) -> BlobLimits {
        self.limits
    }

    async fn missing_chunks(&self, manifest: &Manifest) -> Result<Vec<u32>, BlobError> {
        manifest.validate(&self.limits)?;
        if self.stored_manifest(&manifest.id).await?.is_some() {
            return Ok(Vec::new());
        }
        let present = self.staged(manifest).await?;
        Ok((0..manifest.chunk_count())
            .filter(|&i| !present.get(i as usize).copied().unwrap_or(false))
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
        if self.stored_manifest(&manifest.id).await?.is_some() {
            return Ok(());
        }
        self.store
            .put(
                &self.chunk_path(manifest, index),
                PutPayload::from(data.to_vec()),
            )
            .await
            .map_err(remote("put chunk"))?;
        Ok(())
    }

    async fn finish(&self, manifest: &Manifest) -> Result<(), BlobError> {
        if let Err(e) = manifest.validate(&self.limits) {
            if manifest.check_shape(&self.limits).is_ok() {
                // The chunk values lie about the id: the upload can never finish.
                self.discard_upload(manifest).await?;
            }
            return Err(e);
        }
        if self.stored_manifest(&manifest.id).await?.is_some() {
            return self.discard_upload(manifest).await;
        }
        let present = self.staged(manifest).await?;
        let missing: Vec<u32> = (0..manifest.chunk_count())
            .filter(|&i| !present.get(i as usize).copied().unwrap_or(false))
            .collect();
        if let Some(&first) = missing.first() {
            return Err(BlobError::Incomplete {
                missing: missing.len() as u32,
                first,
            });
        }
        // Staged chunks may come from another process or an earlier run: each is
        // checked again against its value, which the id vouches for.
        for index in 0..manifest.chunk_count() {
            let path = self.chunk_path(manifest, index);
            let data = self
                .get_bytes(&path, "read chunk")
                .await?
                .ok_or(BlobError::Incomplete {
                    missing: 1,
                    first: index,
                })?;
            if let Err(e) = manifest.check_chunk(index, &data) {
                // A damaged chunk object is dropped so the uploader is asked again.
                let _ = self.store.delete(&path).await;
                return Err(e);
            }
        }
        self.store
            .put(
                &self.blob_path(&manifest.id),
                PutPayload::from(manifest.encode()),
            )
            .await
            .map_err(remote("publish manifest"))?;
        Ok(())
    }

    async fn abort(&self, manifest: &Manifest) -> Result<(), BlobError> {
        self.discard_upload(manifest).await
    }

    async fn manifest(&self, id: &Cid) -> Result<Option<Manifest>, BlobError> {
        self.stored_manifest(id).await
    }

    async fn read_range(&self, id: &Cid, range: Range<u64>) -> Result<Vec<u8>, BlobError> {
        let m = self
            .stored_manifest(id)
            .await?
            .ok_or(BlobError::NotFound { id: *id })?;
        check_range(&range, m.size)?;
        let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
        for index in m.chunks_for(&range) {
            let data = self
                .get_bytes(&self.chunk_path(&m, index), "read chunk")
                .await?
                .ok_or_else(|| BlobError::Corrupt {
                    id: *id,
                    detail: format!("chunk {index} object is missing"),
                })?;
            verify_stored_chunk(&m, index, &data)?;
            append_chunk_part(&m, index, &data, &range, &mut out)?;
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
        if self.stored_manifest(&id).await?.is_none() {
            return Err(BlobError::NotFound { id });
        }
        let path = self.chunk_path(manifest, index);
        let data = match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(remote("read chunk"))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::Corrupt {
                    id,
                    detail: format!("chunk {index} object is missing"),
                })
            }
            Err(e) => return Err(remote("read chunk")(e)),
        };
        check_stored_length(manifest, index, data.len() as u64)?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same logic over object_store's in-process backend; the S3 server test is
    /// in `tests/s3.rs`.
    #[test]
    fn conformance_over_in_process_object_store() {
        let backend: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let n = std::sync::atomic::AtomicU32::new(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(super::super::conformance::suite(|| {
            let prefix = format!("s{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let store = ObjectBlobStore::new(
                Arc::clone(&backend),
                prefix,
                super::super::conformance::limits(),
            );
            async move { store }
        }));
    }

    #[test]
    fn paths_stay_under_the_prefix() {
        let store = ObjectBlobStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            "/tenant/a/",
            BlobLimits::default(),
        );
        let m = Manifest::build(&[7u8; 3000], 1024).expect("build");
        assert!(store
            .blob_path(&m.id)
            .as_ref()
            .starts_with("tenant/a/blobs/bafkr4i"));
        assert!(store.chunk_path(&m, 1).as_ref().ends_with("/1"));
    }
}
