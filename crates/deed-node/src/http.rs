//! The HTTP API (axum): every route of `deed_client::api`, typed errors as
//! [`ErrorBody`], body limits, metrics and the OpenAPI document.

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use deed_client::api::{
    self, AccountView, BlobInfo, BlockView, ChunkStored, ConsensusView, DirectRequest,
    DirectResponse, DisputeView, ErrorBody, ErrorCode, ExecutorView, FeesView, JobView,
    LicenceView, ModelView, NamedTensor, ReceiptView, Status, SubmitTx, TxState, TxSubmitted,
    TxView, UploadStatus, VersionView,
};
use deed_ledger::{
    Dispute, DisputePhase, Escrow, Job, JobStatus, Model, State as LedgerState, Version,
};
use deed_store::{BlobStore, Manifest};
use deed_types::{
    Action, Address, Amount, Cid, DisputeId, Hash, JobId, JobInput, Licence, Mode, ModelId, Output,
    Receipt, SignedTransaction, Tensor,
};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ApiError, NodeError, TxRejection};
use crate::node::{lock, Node};
use crate::runner::{self, decode_hex, encode_hex};

type ApiResult<T> = Result<Json<T>, ApiError>;
type Shared = State<Arc<Node>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        (status, Json(body)).into_response()
    }
}

/// The API's router over `node`.
pub fn router(node: Arc<Node>) -> Router {
    let limit = node.cfg.limits.max_body_size;
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/transactions", post(submit_tx))
        .route("/v1/transactions/{hash}", get(transaction))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/models/{id}/versions", get(versions))
        .route("/v1/models/{id}/versions/{n}", get(version))
        .route("/v1/blobs/uploads", post(upload_start))
        .route("/v1/blobs/uploads/{cid}", get(upload_get))
        .route("/v1/blobs/uploads/{cid}/chunks/{index}", put(upload_chunk))
        .route("/v1/blobs/uploads/{cid}/finish", post(upload_finish))
        .route("/v1/blobs/{cid}", get(blob_get).head(blob_head))
        .route("/v1/blobs/{cid}/manifest", get(blob_manifest))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/disputes", get(disputes))
        .route("/v1/disputes/{id}", get(dispute))
        .route("/v1/execute", post(execute))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(node.clone(), observe))
        .layer(middleware::from_fn(close_unread))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(node)
}

async fn observe(State(node): Shared, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &node.metrics;
    m.http_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// Answers a request whose body was not read to its end (a route that takes none,
/// a body over the limit, an error found before reading it) with `Connection: close`.
/// The connection ends after such an answer, since the rest of the body is still on
/// it; without the header, a client that keeps connections would send its next
/// request on one the node is closing.
async fn close_unread(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(&body)));
    let body = Body::new(Tracked {
        inner: body,
        read: read.clone(),
    });
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if !read.load(Ordering::Acquire) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("this route does not take {method}"),
    )
}

// ---- helpers --------------------------------------------------------------------

/// A route's path parameters, as [`Path`] extracts them, but refused with a typed
/// error (a parameter that is not UTF-8 once percent-decoded, say) rather than
/// axum's plain-text one.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// A route's query, as [`Query`] extracts it, but refused with a typed error.
struct Queried<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Queried<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Queried(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::TooLarge, "request body exceeds the node's limit")
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

fn json<T: DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{s:?} is not a valid {what}")))
}

fn decode_tx(hex_tx: &str) -> Result<SignedTransaction, ApiError> {
    let bytes = decode_hex(hex_tx).map_err(|_| ApiError::bad_request("tx is not hex"))?;
    if bytes.len() > deed_types::tx::limits::MAX_TX_BYTES {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "transaction of {} bytes exceeds the limit of {}",
                bytes.len(),
                deed_types::tx::limits::MAX_TX_BYTES
            ),
        ));
    }
    SignedTransaction::decode(&bytes).map_err(|e| match e {
        deed_types::TxDecodeError::Limit(l) => ApiError::new(ErrorCode::TooLarge, l.to_string()),
        other => ApiError::bad_request(format!("not a signed transaction: {other}")),
    })
}

fn need_storage(node: &Node) -> Result<(), ApiError> {
    if node.cfg.roles.storage {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::RoleDisabled,
            "this node does not run the storage role",
        ))
    }
}

// ---- status and accounts ----------------------------------------------------------

async fn status(State(node): Shared) -> ApiResult<Status> {
    let (height, state_root, block_hash, chain_id) = node.with_state(|c| {
        let h = c.head();
        (
            h.height,
            h.state_root,
            h.block_hash,
            c.state().meta().chain_id,
        )
    });
    let roles = &node.cfg.roles;
    Ok(Json(Status {
        chain_id,
        height,
        state_root,
        block_hash,
        roles: roles.names(),
        executor: roles.executor.then(|| node.keys.executor.address()),
        executors: if roles.executor {
            node.keys.executors().map(|k| k.address()).collect()
        } else {
            Vec::new()
        },
        watcher: roles.watcher.then(|| node.keys.watcher.address()),
        mempool: node.mempool_len() as u64,
        validators: node
            .validators()
            .iter()
            .map(|(a, p)| (*a, p.to_string()))
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        consensus: {
            let info = node.consensus_info();
            ConsensusView {
                validator: node.is_validator(),
                height: info.height,
                round: info.round,
                syncing: info.syncing(),
                peers: node.peers() as u64,
            }
        },
    }))
}

async fn block(State(node): Shared, Params(height): Params<String>) -> ApiResult<BlockView> {
    let height: u64 = parse("height", &height)?;
    let b = node
        .with_state(|c| c.block(height))
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))?;
    Ok(Json(BlockView {
        height,
        hash: b.header.hash(),
        prev_hash: b.header.prev_hash,
        state_root: b.header.state_root,
        proposer: b.header.proposer,
        time: b.header.time,
        txs: b.txs.iter().map(|t| t.hash()).collect(),
    }))
}

async fn account(State(node): Shared, Params(address): Params<String>) -> ApiResult<AccountView> {
    let address: Address = parse("address", &address)?;
    let next = node.next_nonce(&address);
    Ok(Json(node.with_state(|c| {
        let s = c.state();
        AccountView {
            address,
            balance: s.balance(&address).to_string(),
            nonce: next,
            executor: s.executor(&address).map(|e| ExecutorView {
                stake: e.stake.to_string(),
                endpoint: e.endpoint.clone(),
                price: e.price.to_string(),
                models: e.models.iter().map(|m| m.0).collect(),
                jailed_until: e.jailed_until,
                unbonding: e
                    .unbonding
                    .iter()
                    .map(|(h, a)| (*h, a.to_string()))
                    .collect(),
            }),
        }
    })))
}

// ---- transactions -------------------------------------------------------------------

async fn submit_tx(
    State(node): Shared,
    b: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TxSubmitted>), ApiError> {
    let req: SubmitTx = json(&body(b)?)?;
    let stx = decode_tx(&req.tx)?;
    let hash = stx.hash();
    if node.with_state(|c| c.tx(&hash))?.is_some() {
        return Err(TxRejection::Duplicate(hash).into());
    }
    let hash = node.submit(stx)?;
    Ok((StatusCode::ACCEPTED, Json(TxSubmitted { hash })))
}

async fn transaction(State(node): Shared, Params(hash): Params<String>) -> ApiResult<TxView> {
    let hash: Hash = parse("transaction hash", &hash)?;
    if let Some((sender, action)) = node.pending_tx(&hash) {
        return Ok(Json(TxView {
            hash,
            sender,
            action,
            state: TxState::Pending,
            created: None,
            events: Vec::new(),
        }));
    }
    let record = node
        .with_state(|c| c.tx(&hash))?
        .ok_or_else(|| ApiError::not_found(format!("transaction {hash} is unknown")))?;
    Ok(Json(TxView {
        hash,
        sender: record.sender.unwrap_or(Address::ZERO),
        action: record.action,
        state: match record.error {
            None => TxState::Included {
                height: record.height,
            },
            Some(error) => TxState::Failed {
                height: record.height,
                error,
            },
        },
        created: record.created,
        events: record.events,
    }))
}

// ---- models ---------------------------------------------------------------------------

fn model_view(id: ModelId, m: &Model) -> ModelView {
    ModelView {
        id: id.0,
        owner: m.owner,
        name: m.name.clone(),
        description: m.description.clone(),
        licence: match &m.licence {
            Licence::Open => LicenceView::Open,
            Licence::Paid => LicenceView::Paid,
            Licence::AllowList(a) => LicenceView::AllowList {
                accounts: a.clone(),
            },
        },
        price: m.price.to_string(),
        parent: m.lineage.map(|l| (l.parent.0, l.upstream_bps)),
        versions: m.versions,
        created: m.created,
    }
}

fn version_view(model: ModelId, n: u32, v: &Version) -> VersionView {
    VersionView {
        model: model.0,
        version: n,
        manifest: v.manifest,
        io_schema: v.io_schema.clone(),
        steps: v.steps,
        cost: v.cost,
        notes: v.notes.clone(),
        deprecated: v.deprecated,
        published: v.published,
    }
}

/// A page of a list ([`api::PAGE_MAX`]): the items whose ids follow `after` (from
/// the first when absent), at most `limit` of them.
struct Page {
    start: u64,
    limit: usize,
}

impl Page {
    fn of(after: Option<u64>, limit: Option<usize>) -> Result<Page, ApiError> {
        let limit = limit.unwrap_or(api::PAGE_DEFAULT);
        if !(1..=api::PAGE_MAX).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit {limit} is outside 1 to {}",
                api::PAGE_MAX
            )));
        }
        Ok(Page {
            // Past the last id there is nothing: an empty page.
            start: after.map_or(0, |a| a.saturating_add(1)),
            limit: if after == Some(u64::MAX) { 0 } else { limit },
        })
    }
}

#[derive(Deserialize)]
struct ModelQuery {
    owner: Option<String>,
    name: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

async fn models(State(node): Shared, Queried(q): Queried<ModelQuery>) -> ApiResult<Vec<ModelView>> {
    let owner: Option<Address> = q
        .owner
        .as_deref()
        .map(|o| parse("address", o))
        .transpose()?;
    let page = Page::of(q.after, q.limit)?;
    Ok(Json(node.with_state(|c| {
        c.state()
            .models()
            .filter(|(id, _)| id.0 >= page.start)
            .filter(|(_, m)| owner.is_none_or(|o| m.owner == o))
            .filter(|(_, m)| q.name.as_ref().is_none_or(|n| &m.name == n))
            .take(page.limit)
            .map(|(id, m)| model_view(id, m))
            .collect()
    })))
}

fn model_id(s: &str) -> Result<ModelId, ApiError> {
    Ok(ModelId(parse("model id", s)?))
}

async fn model(State(node): Shared, Params(id): Params<String>) -> ApiResult<ModelView> {
    let id = model_id(&id)?;
    node.with_state(|c| c.state().model(id).map(|m| model_view(id, m)))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("model {id} does not exist")))
}

async fn versions(State(node): Shared, Params(id): Params<String>) -> ApiResult<Vec<VersionView>> {
    let id = model_id(&id)?;
    node.with_state(|c| {
        let s = c.state();
        s.model(id)?;
        Some(
            s.versions(id)
                .map(|(n, v)| version_view(id, n, v))
                .collect(),
        )
    })
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("model {id} does not exist")))
}

async fn version(
    State(node): Shared,
    Params((id, n)): Params<(String, String)>,
) -> ApiResult<VersionView> {
    let id = model_id(&id)?;
    let n: u32 = parse("version number", &n)?;
    node.with_state(|c| c.state().version(id, n).map(|v| version_view(id, n, v)))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("model {id} has no version {n}")))
}

// ---- blobs ------------------------------------------------------------------------------

async fn upload_status(node: &Node, manifest: &Manifest) -> Result<UploadStatus, ApiError> {
    let missing = node.blobs.missing_chunks(manifest).await?;
    let complete = missing.is_empty() && node.blobs.manifest(&manifest.id).await?.is_some();
    Ok(UploadStatus {
        cid: manifest.id,
        missing,
        complete,
    })
}

async fn upload_start(
    State(node): Shared,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<UploadStatus> {
    need_storage(&node)?;
    let manifest: Manifest = json(&body(b)?)?;
    manifest.validate(&node.blobs.limits())?;
    let status = upload_status(&node, &manifest).await?;
    if !status.complete {
        if let Some(replaced) = node.begin_upload(manifest)? {
            node.blobs.abort(&replaced).await?;
        }
    }
    Ok(Json(status))
}

fn upload_of(node: &Node, cid: &Cid) -> Result<Manifest, ApiError> {
    node.upload(cid).ok_or_else(|| {
        ApiError::not_found(format!(
            "no upload of {cid} in progress; POST its manifest to /v1/blobs/uploads first"
        ))
    })
}

async fn upload_get(State(node): Shared, Params(cid): Params<String>) -> ApiResult<UploadStatus> {
    need_storage(&node)?;
    let cid: Cid = parse("CID", &cid)?;
    let manifest = upload_of(&node, &cid)?;
    Ok(Json(upload_status(&node, &manifest).await?))
}

async fn upload_chunk(
    State(node): Shared,
    Params((cid, index)): Params<(String, String)>,
    body: Body,
) -> ApiResult<ChunkStored> {
    need_storage(&node)?;
    let cid: Cid = parse("CID", &cid)?;
    let index: u32 = parse("chunk index", &index)?;
    let manifest = upload_of(&node, &cid)?;
    let chunk = manifest.chunk_range(index)?;
    let (parts, len) = body_parts(body, index, chunk.end - chunk.start).await?;
    // The body's frames go to the store as they came, not joined into one buffer.
    node.blobs.put_chunk_parts(&manifest, index, parts).await?;
    if node.upload(&cid).as_ref() != Some(&manifest) && node.blobs.manifest(&cid).await?.is_none() {
        // The upload was replaced (or expired) while the chunk arrived, and what it
        // had staged discarded: this chunk goes too.
        node.blobs.abort(&manifest).await?;
        return Err(ApiError::not_found(format!(
            "the upload of {cid} was replaced or expired while chunk {index} arrived; \
             POST its manifest to /v1/blobs/uploads again"
        )));
    }
    node.metrics.blob_bytes_in.inc_by(len);
    Ok(Json(ChunkStored {
        cid,
        index,
        // A stored chunk is at most the manifest's chunk size, a u32.
        size: u32::try_from(len).unwrap_or(u32::MAX),
    }))
}

/// The frames of a chunk upload's body, and their total length, refused as soon as
/// they exceed the chunk's `expected` length.
async fn body_parts(body: Body, index: u32, expected: u64) -> Result<(Vec<Bytes>, u64), ApiError> {
    let mut frames = body.into_data_stream();
    let mut parts = Vec::new();
    let mut len = 0u64;
    while let Some(frame) = frames.next().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        len += frame.len() as u64;
        if len > expected {
            return Err(ApiError::bad_request(format!(
                "chunk {index} is longer than the {expected} bytes its manifest gives it"
            )));
        }
        parts.push(frame);
    }
    Ok((parts, len))
}

async fn upload_finish(State(node): Shared, Params(cid): Params<String>) -> ApiResult<BlobInfo> {
    need_storage(&node)?;
    let cid: Cid = parse("CID", &cid)?;
    let manifest = match node.blobs.manifest(&cid).await? {
        Some(m) => m,
        None => upload_of(&node, &cid)?,
    };
    node.blobs.finish(&manifest).await?;
    node.end_upload(&cid)?;
    Ok(Json(BlobInfo {
        cid,
        size: manifest.size,
    }))
}

async fn stored_manifest(node: &Node, cid: &str) -> Result<Manifest, ApiError> {
    need_storage(node)?;
    let cid: Cid = parse("CID", cid)?;
    // A blob this node lacks may be held by a peer: fetch it (verified) and serve it.
    if let Err(e) = crate::blobnet::ensure(node, &cid).await {
        tracing::debug!(blob = %cid, error = %e.message, "blob not fetched from peers");
    }
    node.blobs
        .manifest(&cid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("blob {cid} is not stored here")))
}

/// Parses a single `bytes=` range against a blob of `size` bytes. `Ok(None)` when
/// there is no range header; an unsatisfiable range is an error.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("unsupported Range header (use one bytes=A-B range)");
    let spec = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().strip_prefix("bytes="))
        .ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| bad())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| bad())?, size),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.parse().map_err(|_| bad())?;
            (a, b.saturating_add(1).min(size))
        }
    };
    if start >= end || start >= size {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("range {spec} is outside the blob of {size} bytes"),
        ));
    }
    Ok(Some((start, end)))
}

async fn blob_get(
    State(node): Shared,
    Params(cid): Params<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let manifest = stored_manifest(&node, &cid).await?;
    let size = manifest.size;
    let range = match parse_range(&headers, size) {
        Ok(r) => r,
        Err(e) => {
            let mut resp = e.into_response();
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let (start, end) = range.unwrap_or((0, size));
    let body = blob_body(&node, &manifest, start..end).await?;
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", manifest.id)) {
        h.insert(header::ETAG, v);
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// Chunk reads queued ahead of the connection in a blob response.
const BLOB_READS_AHEAD: usize = 2;

/// The body of a blob response: bytes `range`, one chunk at a time, each sent as it
/// is read while the next is read. Chunks are sent as stored, not hashed again
/// ([`BlobStore::read_chunk_unverified`]): the client checks every chunk against the
/// manifest (whose values merge to the CID it asked for), so hashing here too would
/// only double the work. The first piece is read before answering, so a blob whose
/// files are missing or cut short gets a typed error; such damage found later ends
/// the body early, which the client sees as a truncated transfer.
async fn blob_body(
    node: &Arc<Node>,
    manifest: &Manifest,
    range: std::ops::Range<u64>,
) -> Result<Body, ApiError> {
    let (lo, hi) = (range.start, range.end);
    let read = move |node: Arc<Node>, manifest: Arc<Manifest>, index: u32| async move {
        let chunk = manifest.chunk_range(index)?;
        let from = lo.max(chunk.start) - chunk.start;
        let to = hi.min(chunk.end) - chunk.start;
        let bytes = node.blobs.read_chunk_unverified(&manifest, index).await?;
        // Within the chunk: the store checked its length against the manifest.
        let piece = bytes.slice(from as usize..to as usize);
        node.metrics.blob_bytes_out.inc_by(piece.len() as u64);
        Ok::<Bytes, deed_store::BlobError>(piece)
    };
    let mut chunks = manifest.chunks_for(&range);
    let Some(first) = chunks.next() else {
        return Ok(Body::empty());
    };
    let manifest = Arc::new(manifest.clone());
    let head = read(node.clone(), manifest.clone(), first).await?;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, deed_store::BlobError>>(BLOB_READS_AHEAD);
    let node = node.clone();
    tokio::spawn(async move {
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        for index in chunks {
            let piece = read(node.clone(), manifest.clone(), index).await;
            if let Err(e) = &piece {
                tracing::warn!(blob = %manifest.id, error = %e, "blob response cut short");
            }
            let failed = piece.is_err();
            // The client hung up, or the body ends on the error.
            if tx.send(piece).await.is_err() || failed {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Body::from_stream(stream))
}

async fn blob_head(State(node): Shared, Params(cid): Params<String>) -> Result<Response, ApiError> {
    let manifest = stored_manifest(&node, &cid).await?;
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(manifest.size));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

async fn blob_manifest(State(node): Shared, Params(cid): Params<String>) -> ApiResult<Manifest> {
    Ok(Json(stored_manifest(&node, &cid).await?))
}

// ---- jobs and disputes -------------------------------------------------------------

fn mode_name(m: Mode) -> String {
    match m {
        Mode::None => "none".to_owned(),
        Mode::Optimistic => "optimistic".to_owned(),
        Mode::Replicated(k) => format!("replicated:{k}"),
    }
}

fn receipt_view(executor: Address, r: &Receipt) -> ReceiptView {
    ReceiptView {
        executor,
        output_hash: r.output.hash(),
        output_inline: match &r.output {
            Output::Inline(b) => Some(encode_hex(b)),
            Output::Hash(_) => None,
        },
        trace_root: r.trace_root,
        steps: r.steps,
    }
}

/// A job as the API shows it. `fees` is the breakdown the index kept from the
/// request (the ledger empties the escrow when it settles); without it, the
/// ledger's escrow.
/// A job view for a list: without the inline input (up to 64 KiB each), which the
/// job's own route gives.
fn without_input(mut view: JobView) -> JobView {
    view.input_inline = None;
    view
}

fn job_view(id: JobId, j: &Job, s: &LedgerState, fees: Option<Escrow>) -> JobView {
    let fees = fees.unwrap_or_else(|| j.escrow.clone());
    let (status, window_end, dispute) = match &j.status {
        JobStatus::Assigned => ("assigned", None, None),
        JobStatus::Committing => ("committing", None, None),
        JobStatus::Revealing => ("revealing", None, None),
        JobStatus::Challengeable { window_end } => ("challengeable", Some(*window_end), None),
        JobStatus::Disputed(d) => ("disputed", None, Some(d.0)),
        JobStatus::Finalized => ("finalized", None, None),
        JobStatus::Refunded => ("refunded", None, None),
        JobStatus::Declined => ("declined", None, None),
    };
    // The last dispute of a closed job, for explorers.
    let dispute = dispute.or_else(|| {
        (0..s.meta().next_dispute)
            .rev()
            .find(|d| s.dispute(DisputeId(*d)).is_some_and(|x| x.job == id))
    });
    JobView {
        id: id.0,
        requester: j.requester,
        model: j.model.0,
        version: j.version,
        manifest: j.manifest,
        input_hash: j.input_hash,
        input_cid: j.input_inline.is_none().then_some(Cid(j.input_hash)),
        input_inline: j.input_inline.as_deref().map(encode_hex),
        mode: mode_name(j.mode),
        executors: j.executors.clone(),
        receipts: j
            .receipts
            .iter()
            .zip(&j.executors)
            .map(|(r, e)| r.as_ref().map(|r| receipt_view(*e, r)))
            .collect(),
        status: status.to_owned(),
        window_end,
        dispute,
        attesters: j.audit.attestations.iter().map(|(a, _)| *a).collect(),
        audit_revealed: j.audit.revealed,
        fees: FeesView {
            royalty: fees.royalty.to_string(),
            executor_fees: fees.executor_fees.iter().map(|f| f.to_string()).collect(),
            protocol_fee: fees.protocol_fee.to_string(),
            total: fees.total().to_string(),
        },
        deadline: j.deadline,
        created: j.created,
    }
}

#[derive(Deserialize)]
struct JobQuery {
    requester: Option<String>,
    executor: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

async fn jobs(State(node): Shared, Queried(q): Queried<JobQuery>) -> ApiResult<Vec<JobView>> {
    let requester: Option<Address> = q
        .requester
        .as_deref()
        .map(|a| parse("address", a))
        .transpose()?;
    let executor: Option<Address> = q
        .executor
        .as_deref()
        .map(|a| parse("address", a))
        .transpose()?;
    let page = Page::of(q.after, q.limit)?;
    Ok(Json(node.with_state(|c| {
        let s = c.state();
        (page.start..s.meta().next_job)
            .filter_map(|i| s.job(JobId(i)).map(|j| (JobId(i), j)))
            .filter(|(_, j)| requester.is_none_or(|r| j.requester == r))
            .filter(|(_, j)| executor.is_none_or(|e| j.executors.contains(&e)))
            .take(page.limit)
            .map(|(id, j)| Ok(without_input(job_view(id, j, s, c.job_fees(id)?))))
            .collect::<Result<Vec<_>, NodeError>>()
    })?))
}

async fn job(State(node): Shared, Params(id): Params<String>) -> ApiResult<JobView> {
    let id = JobId(parse("job id", &id)?);
    node.with_state(|c| {
        c.state()
            .job(id)
            .map(|j| Ok::<_, NodeError>(job_view(id, j, c.state(), c.job_fees(id)?)))
            .transpose()
    })?
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))
}

fn dispute_view(id: DisputeId, d: &Dispute, slashed: Option<Amount>) -> DisputeView {
    let (phase, winner) = match &d.phase {
        DisputePhase::AwaitReveal { .. } => ("await_reveal", None),
        DisputePhase::AwaitResponse { .. } => ("await_response", None),
        DisputePhase::AwaitReferee => ("await_referee", None),
        DisputePhase::Resolved { defender_won } => (
            "resolved",
            Some(
                if *defender_won {
                    "defender"
                } else {
                    "challenger"
                }
                .to_owned(),
            ),
        ),
    };
    DisputeView {
        id: id.0,
        job: d.job.0,
        defender: d.defender,
        challenger: d.challenger,
        steps: d.steps,
        bond: d.bond.to_string(),
        rounds: d.rounds,
        range: (d.lo, d.hi),
        phase: phase.to_owned(),
        deadline: d.deadline,
        winner,
        slashed: slashed.map(|a| a.to_string()),
    }
}

#[derive(Deserialize)]
struct DisputeQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn disputes(
    State(node): Shared,
    Queried(q): Queried<DisputeQuery>,
) -> ApiResult<Vec<DisputeView>> {
    let page = Page::of(q.after, q.limit)?;
    Ok(Json(node.with_state(|c| {
        let s = c.state();
        (page.start..s.meta().next_dispute)
            .filter_map(|i| {
                let id = DisputeId(i);
                s.dispute(id)
                    .map(|d| Ok::<_, NodeError>(dispute_view(id, d, c.dispute_slashed(id)?)))
            })
            .take(page.limit)
            .collect::<Result<Vec<_>, NodeError>>()
    })?))
}

async fn dispute(State(node): Shared, Params(id): Params<String>) -> ApiResult<DisputeView> {
    let id = DisputeId(parse("dispute id", &id)?);
    node.with_state(|c| {
        c.state()
            .dispute(id)
            .map(|d| Ok::<_, NodeError>(dispute_view(id, d, c.dispute_slashed(id)?)))
            .transpose()
    })?
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("dispute {id} does not exist")))
}

// ---- direct calls -----------------------------------------------------------------

/// The sender and nonce of a direct request being executed; released when the call
/// ends, by which time a served request is recorded by the chain and its nonce
/// queued. While it is held, no other request of that sender and nonce runs here:
/// only one of them could be settled, so the others would be runs nobody pays for.
struct Reservation<'a> {
    node: &'a Node,
    slot: (Address, u64),
}

impl<'a> Reservation<'a> {
    /// Reserves `stx`'s sender and nonce for the request `hash`, unless a call
    /// holds them.
    fn take(
        node: &'a Node,
        sender: Address,
        stx: &SignedTransaction,
        hash: Hash,
    ) -> Result<Self, ApiError> {
        let slot = (sender, stx.tx.nonce);
        match lock(&node.direct_in_flight).entry(slot) {
            Entry::Occupied(held) if *held.get() == hash => return Err(already_served(&hash)),
            Entry::Occupied(_) => {
                return Err(ApiError::new(
                    ErrorCode::BadNonce,
                    format!(
                        "nonce {} of {sender} is taken by another request this executor \
                         is serving",
                        stx.tx.nonce
                    ),
                ))
            }
            Entry::Vacant(free) => {
                free.insert(hash);
            }
        }
        Ok(Reservation { node, slot })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.node.direct_in_flight).remove(&self.slot);
    }
}

fn bad_nonce(stx: &SignedTransaction, sender: &Address, next: u64) -> ApiError {
    ApiError::new(
        ErrorCode::BadNonce,
        format!(
            "nonce {} of {sender} is not the next one ({next})",
            stx.tx.nonce
        ),
    )
}

fn already_served(hash: &Hash) -> ApiError {
    ApiError::new(
        ErrorCode::AlreadyServed,
        format!(
            "request {hash} was already served by this executor; \
             it is settled on the ledger, never served twice"
        ),
    )
}

async fn execute(
    State(node): Shared,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<DirectResponse> {
    if !node.cfg.roles.executor {
        return Err(ApiError::new(
            ErrorCode::RoleDisabled,
            "this node does not run the executor role",
        ));
    }
    let req: DirectRequest = json(&body(b)?)?;
    let stx = decode_tx(&req.tx)?;
    let Action::RequestJob {
        model,
        version,
        input,
        mode,
        max_fee,
        executor,
    } = &stx.tx.action
    else {
        return Err(ApiError::bad_request(format!(
            "a direct call carries a request_job transaction, not {}",
            stx.tx.action.name()
        )));
    };
    let Some(key) = executor.and_then(|e| node.keys.executor_key(&e)) else {
        return Err(ApiError::bad_request(format!(
            "the request does not name an executor of this node ({})",
            node.keys.executor.address()
        )));
    };
    let me = key.address();
    if !matches!(mode, Mode::None | Mode::Optimistic) {
        return Err(ApiError::bad_request(
            "direct calls take modes none and optimistic only",
        ));
    }
    let sender = stx
        .sender()
        .map_err(|e| ApiError::new(ErrorCode::BadSignature, format!("bad signature: {e}")))?;
    let hash = stx.hash();
    if node.with_state(|c| c.is_served(&hash)) {
        return Err(already_served(&hash));
    }
    // The ledger's view of the request: nonce, funds, model, version and price.
    let (manifest, cost) = {
        let next = node.next_nonce(&sender);
        node.with_state(|c| -> Result<(Cid, u64), ApiError> {
            let s = c.state();
            if stx.tx.chain_id != s.meta().chain_id {
                return Err(ApiError::new(
                    ErrorCode::BadSignature,
                    format!(
                        "transaction is for chain {}, this chain is {}",
                        stx.tx.chain_id,
                        s.meta().chain_id
                    ),
                ));
            }
            if stx.tx.nonce != next {
                return Err(bad_nonce(&stx, &sender, next));
            }
            let needed = stx.tx.fee.saturating_add(*max_fee);
            if s.balance(&sender) < needed {
                return Err(ApiError::new(
                    ErrorCode::InsufficientFunds,
                    format!(
                        "{sender} has {} but the request may cost {needed}",
                        s.balance(&sender)
                    ),
                ));
            }
            let m = s
                .model(*model)
                .ok_or_else(|| ApiError::not_found(format!("{model} does not exist")))?;
            let n = match version {
                Some(v) => *v,
                None => s
                    .versions(*model)
                    .filter(|(_, v)| !v.deprecated)
                    .map(|(n, _)| n)
                    .last()
                    .ok_or_else(|| ApiError::not_found(format!("{model} has no usable version")))?,
            };
            let v = s
                .version(*model, n)
                .ok_or_else(|| ApiError::not_found(format!("{model} has no version {n}")))?;
            if v.deprecated {
                return Err(ApiError::new(
                    ErrorCode::Rejected,
                    format!("version {n} of {model} is deprecated"),
                ));
            }
            let e = s
                .executor(&me)
                .filter(|e| e.models.contains(model))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Rejected,
                        format!("this executor does not serve {model} yet"),
                    )
                })?;
            let royalty = if matches!(m.licence, Licence::Open) {
                0
            } else {
                m.price
            };
            // As the ledger reckons it; a cost that does not fit is one no fee pays.
            let pfee =
                deed_ledger::bps_of(e.price, s.params().protocol_fee_bps).unwrap_or(Amount::MAX);
            let total = royalty.saturating_add(e.price).saturating_add(pfee);
            if total > *max_fee {
                return Err(ApiError::new(
                    ErrorCode::Rejected,
                    format!("max_fee {max_fee} is below the cost of {total}"),
                ));
            }
            Ok((v.manifest, v.cost))
        })?
    };
    let _reservation = Reservation::take(&node, sender, &stx, hash)?;
    // Served meanwhile, or its nonce used, by a call that just ended.
    if node.with_state(|c| c.is_served(&hash)) {
        return Err(already_served(&hash));
    }
    let next = node.next_nonce(&sender);
    if stx.tx.nonce != next {
        return Err(bad_nonce(&stx, &sender, next));
    }
    let loaded = node.model(&manifest).await?;
    let mut named = Vec::with_capacity(req.inputs.len());
    for t in &req.inputs {
        let bytes = decode_hex(&t.tensor).map_err(|_| {
            ApiError::new(
                ErrorCode::BadInput,
                format!("input {:?} is not hex", t.name),
            )
        })?;
        let tensor = Tensor::decode(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::BadInput, format!("input {:?}: {e}", t.name)))?;
        named.push((t.name.clone(), tensor));
    }
    let inputs = runner::order_inputs(&loaded, named)?;
    let encoded = runner::encode_inputs(&inputs);
    if Hash::of(&encoded) != input.hash() {
        return Err(ApiError::new(
            ErrorCode::BadInput,
            "the inputs do not hash to the request's input hash",
        ));
    }
    if let JobInput::ByCid(_) = input {
        // Watchers and a referee fetch the input by its CID.
        deed_store::blob::upload(
            node.blobs.as_ref(),
            &encoded,
            deed_store::blob::DEFAULT_CHUNK_SIZE,
        )
        .await?;
    }
    let started = Instant::now();
    let run = Arc::new(runner::run(loaded, inputs, cost, node.cfg.executor.threads).await?);
    node.metrics
        .job_seconds
        .observe(started.elapsed().as_secs_f64());
    // Parked before the request is queued, so the block that includes it finds it.
    lock(&node.direct).insert(hash, run.clone());
    // Recorded before the answer exists: a node that restarts after answering still
    // knows it served the request.
    if let Err(e) = node.serve_and_queue(stx, sender) {
        lock(&node.direct).remove(&hash);
        return Err(e);
    }
    node.metrics.direct_calls.inc();
    node.metrics.jobs_executed.inc();
    let receipt = run.receipt(node.cfg.executor.max_inline_output);
    let digest =
        api::direct_receipt_digest(&hash, &run.output_hash, &receipt.trace_root, receipt.steps);
    let signature = key.sign_digest(&digest).map_err(ApiError::internal)?;
    Ok(Json(DirectResponse {
        request: hash,
        outputs: run
            .outputs
            .iter()
            .map(|(name, t)| NamedTensor {
                name: name.clone(),
                tensor: encode_hex(&t.encode()),
            })
            .collect(),
        receipt: receipt_view(me, &receipt),
        signature: encode_hex(&signature.0),
    }))
}

// ---- documents ------------------------------------------------------------------------

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

async fn metrics(State(node): Shared) -> Response {
    node.sample_net_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(),
    )
        .into_response()
}
