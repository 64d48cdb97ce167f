//! Blobs between nodes: a node serves the blobs it holds to its peers, and fetches
//! the ones it lacks (a model a job needs, a job's input) from them over the node
//! network (`deed-net`'s `/deed/blob/1`).
//!
//! A fetch asks the connected peers for the blob's manifest until one has it, then
//! takes the chunks one by one from the peers that answer, trying the next peer
//! when one fails or lacks a chunk. Nothing from a peer is trusted: the blob store
//! checks every chunk against the manifest and the whole blob against its id
//! before it keeps it, so a peer can waste a fetch but never change a byte; a peer
//! whose chunk or manifest fails its hash gets a strike towards a ban
//! ([`NetHandle::penalize`]).

use deed_net::{BlobRequest, BlobResponse, NetHandle};
use deed_store::{BlobError, BlobStore, Manifest};
use deed_types::Cid;

use crate::error::ApiError;
use crate::node::Node;

/// Answers a peer's blob request from this node's store.
pub(crate) async fn serve(node: &Node, request: BlobRequest) -> BlobResponse {
    let data = async {
        let cid = Cid::from_bytes(&request.cid).ok()?;
        let manifest = node.blobs.manifest(&cid).await.ok()??;
        match request.chunk {
            None => Some(manifest.encode()),
            Some(i) => {
                // Not hashed again: the fetching peer checks it against the manifest.
                let mut bytes = node
                    .blobs
                    .read_chunk_unverified(&manifest, i)
                    .await
                    .ok()?
                    .to_vec();
                if node.cfg.faults.bad_blobs() {
                    if let Some(b) = bytes.first_mut() {
                        *b ^= 0xff;
                    }
                }
                node.metrics.blob_bytes_out.inc_by(bytes.len() as u64);
                Some(bytes)
            }
        }
    }
    .await;
    BlobResponse { data }
}

/// Makes sure the store holds blob `cid`, fetching it from peers if it does not.
pub(crate) async fn ensure(node: &Node, cid: &Cid) -> Result<(), ApiError> {
    if node.blobs.manifest(cid).await?.is_some() {
        return Ok(());
    }
    let Some(net) = node.net.get() else {
        return Err(BlobError::NotFound { id: *cid }.into());
    };
    let manifest = find_manifest(node, net, cid).await?;
    let peers = net.connected();
    let mut next_peer = 0usize;
    for index in node.blobs.missing_chunks(&manifest).await? {
        let mut stored = false;
        for _ in 0..peers.len() {
            let peer = peers[next_peer % peers.len()];
            next_peer += 1;
            let request = BlobRequest {
                cid: cid.to_bytes(),
                chunk: Some(index),
            };
            let data = match net.request(peer, request).await {
                Ok(BlobResponse { data: Some(d) }) => d,
                Ok(BlobResponse { data: None }) => continue,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "blob chunk request failed");
                    continue;
                }
            };
            match node.blobs.put_chunk(&manifest, index, &data).await {
                Ok(()) => {
                    node.metrics.blob_bytes_in.inc_by(data.len() as u64);
                    stored = true;
                    break;
                }
                Err(e @ (BlobError::ChunkHashMismatch { .. } | BlobError::ChunkLength { .. })) => {
                    tracing::warn!(%peer, blob = %cid, index, error = %e, "peer sent a bad chunk");
                    net.penalize(peer);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !stored {
            return Err(ApiError::unavailable(format!(
                "no peer served chunk {index} of blob {cid}"
            )));
        }
    }
    node.blobs.finish(&manifest).await?;
    tracing::info!(blob = %cid, size = manifest.size, "blob fetched from peers");
    Ok(())
}

async fn find_manifest(node: &Node, net: &NetHandle, cid: &Cid) -> Result<Manifest, ApiError> {
    for peer in net.connected() {
        let request = BlobRequest {
            cid: cid.to_bytes(),
            chunk: None,
        };
        let Ok(BlobResponse { data: Some(bytes) }) = net.request(peer, request).await else {
            continue;
        };
        match Manifest::decode(&bytes) {
            Ok(m) if m.id == *cid && m.validate(&node.blobs.limits()).is_ok() => return Ok(m),
            _ => {
                tracing::warn!(%peer, blob = %cid, "peer sent a bad manifest");
                net.penalize(peer);
            }
        }
    }
    Err(BlobError::NotFound { id: *cid }.into())
}
