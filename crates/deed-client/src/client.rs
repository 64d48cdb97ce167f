use std::time::{Duration, Instant};

use deed_types::{Action, Address, Cid, Hash, SecretKey, SignedTransaction, Transaction};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    AccountView, BlobInfo, BlockView, ChunkStored, DirectRequest, DirectResponse, DisputeView,
    ErrorBody, JobView, ModelView, Status, SubmitTx, TxState, TxSubmitted, TxView, UploadStatus,
    VersionView, PREFIX,
};
use crate::error::ClientError;
use crate::hexbytes;

/// How long a request may take before it counts as failed. Generous: a direct call
/// runs a whole inference and an upload sends a whole chunk.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How often waits poll the node.
const POLL: Duration = Duration::from_millis(25);

/// What a caller waits for after submitting a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// The transaction is in a block.
    Included,
    /// The job is final: challenge window over, or settled by replication.
    Final,
}

/// A typed client for one node's HTTP API.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// Whether `http` can verify TLS servers (it loaded the platform's roots).
    tls: bool,
    base: String,
}

/// The HTTP client. Loading the platform's TLS roots reads and parses every
/// certificate on the system, several milliseconds per process, so a client for an
/// `http://` node trusts no roots and loads none.
fn http_client(tls: bool) -> Result<reqwest::Client, reqwest::Error> {
    let b = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5));
    let b = if tls {
        b
    } else {
        b.tls_certs_only(std::iter::empty())
    };
    b.build()
}

fn is_https(base: &str) -> bool {
    base.starts_with("https://")
}

impl Client {
    /// A client for the node at `base` (`http://127.0.0.1:8545`).
    pub fn new(base: &str) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadResponse {
                url: base,
                reason: "a node URL starts with http:// or https://".into(),
            });
        }
        let tls = is_https(&base);
        let http = http_client(tls).map_err(|source| ClientError::Transport {
            url: base.clone(),
            source,
        })?;
        Ok(Client { http, tls, base })
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A client for another node (an executor's endpoint), sharing the connection pool.
    /// An `https://` endpoint reached from a client for an `http://` node gets a
    /// client of its own that loads the TLS roots.
    pub fn with_base(&self, base: &str) -> Client {
        let base = base.trim_end_matches('/').to_owned();
        if is_https(&base) && !self.tls {
            // Should the build fail, the shared client reports the TLS failure
            // with the URL on the first request.
            if let Ok(http) = http_client(true) {
                return Client {
                    http,
                    tls: true,
                    base,
                };
            }
        }
        Client {
            http: self.http.clone(),
            tls: self.tls,
            base,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// The next piece of a streamed response body; `None` at its end.
    pub(crate) async fn next_piece(
        &self,
        resp: &mut Response,
        path: &str,
    ) -> Result<Option<bytes::Bytes>, ClientError> {
        resp.chunk().await.map_err(|source| ClientError::Transport {
            url: self.url(path),
            source,
        })
    }

    /// Sends a request and returns the response if its status is a success.
    pub(crate) async fn send(
        &self,
        rb: RequestBuilder,
        path: &str,
    ) -> Result<Response, ClientError> {
        let url = self.url(path);
        let resp = rb.send().await.map_err(|source| {
            if source.is_connect() {
                ClientError::NodeDown {
                    url: self.base.clone(),
                }
            } else {
                ClientError::Transport {
                    url: url.clone(),
                    source,
                }
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => Err(ClientError::Api {
                status,
                code: e.code,
                message: e.message,
            }),
            Err(_) => Err(ClientError::Http {
                status,
                url,
                body: body.chars().take(200).collect(),
            }),
        }
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let resp = self.send(rb, path).await?;
        let url = self.url(path);
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
            url,
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path), path).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(Method::POST, path).json(body), path)
            .await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get(&format!("{PREFIX}/status")).await
    }

    /// `GET /v1/blocks/{height}`.
    pub async fn block(&self, height: u64) -> Result<BlockView, ClientError> {
        self.get(&format!("{PREFIX}/blocks/{height}")).await
    }

    /// `GET /v1/accounts/{address}`.
    pub async fn account(&self, address: &Address) -> Result<AccountView, ClientError> {
        self.get(&format!("{PREFIX}/accounts/{address}")).await
    }

    /// `POST /v1/transactions`.
    pub async fn submit(&self, tx: &SignedTransaction) -> Result<Hash, ClientError> {
        let body = SubmitTx {
            tx: hexbytes::encode(&tx.encode()),
        };
        let r: TxSubmitted = self.post(&format!("{PREFIX}/transactions"), &body).await?;
        Ok(r.hash)
    }

    /// `GET /v1/transactions/{hash}`.
    pub async fn transaction(&self, hash: &Hash) -> Result<TxView, ClientError> {
        self.get(&format!("{PREFIX}/transactions/{hash}")).await
    }

    /// `GET /v1/models?owner=&name=`.
    pub async fn models(
        &self,
        owner: Option<&Address>,
        name: Option<&str>,
    ) -> Result<Vec<ModelView>, ClientError> {
        let path = format!("{PREFIX}/models");
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(o) = owner {
            q.push(("owner", o.to_string()));
        }
        if let Some(n) = name {
            q.push(("name", n.to_owned()));
        }
        self.every_page(&path, q, |m: &ModelView| m.id).await
    }

    /// Every item of the list route `path` with query `q`, read page by page
    /// ([`crate::api::PAGE_MAX`]).
    async fn every_page<T: DeserializeOwned>(
        &self,
        path: &str,
        q: Vec<(&str, String)>,
        id: impl Fn(&T) -> u64,
    ) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let mut query = q.clone();
            query.push(("limit", crate::api::PAGE_MAX.to_string()));
            if let Some(a) = after {
                query.push(("after", a.to_string()));
            }
            let page: Vec<T> = self
                .json(self.request(Method::GET, path).query(&query), path)
                .await?;
            let full = page.len() == crate::api::PAGE_MAX;
            after = page.last().map(&id);
            all.extend(page);
            if !full || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// `GET /v1/models/{id}`.
    pub async fn model(&self, id: u64) -> Result<ModelView, ClientError> {
        self.get(&format!("{PREFIX}/models/{id}")).await
    }

    /// `GET /v1/models/{id}/versions`.
    pub async fn versions(&self, id: u64) -> Result<Vec<VersionView>, ClientError> {
        self.get(&format!("{PREFIX}/models/{id}/versions")).await
    }

    /// `GET /v1/models/{id}/versions/{n}`.
    pub async fn version(&self, id: u64, n: u32) -> Result<VersionView, ClientError> {
        self.get(&format!("{PREFIX}/models/{id}/versions/{n}"))
            .await
    }

    /// `GET /v1/jobs?requester=&executor=`.
    pub async fn jobs(
        &self,
        requester: Option<&Address>,
        executor: Option<&Address>,
    ) -> Result<Vec<JobView>, ClientError> {
        let path = format!("{PREFIX}/jobs");
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(a) = requester {
            q.push(("requester", a.to_string()));
        }
        if let Some(a) = executor {
            q.push(("executor", a.to_string()));
        }
        self.every_page(&path, q, |j: &JobView| j.id).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: u64) -> Result<JobView, ClientError> {
        self.get(&format!("{PREFIX}/jobs/{id}")).await
    }

    /// `GET /v1/disputes`.
    pub async fn disputes(&self) -> Result<Vec<DisputeView>, ClientError> {
        let path = format!("{PREFIX}/disputes");
        self.every_page(&path, Vec::new(), |d: &DisputeView| d.id)
            .await
    }

    /// `GET /v1/disputes/{id}`.
    pub async fn dispute(&self, id: u64) -> Result<DisputeView, ClientError> {
        self.get(&format!("{PREFIX}/disputes/{id}")).await
    }

    /// `POST /v1/execute`: a direct call to the executor at this client's base URL.
    pub async fn execute(&self, req: &DirectRequest) -> Result<DirectResponse, ClientError> {
        self.post(&format!("{PREFIX}/execute"), req).await
    }

    /// `GET /v1/openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get(&format!("{PREFIX}/openapi.json")).await
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let path = "/metrics";
        let resp = self.send(self.request(Method::GET, path), path).await?;
        resp.text().await.map_err(|source| ClientError::Transport {
            url: self.url(path),
            source,
        })
    }

    /// `POST /v1/blobs/uploads`: starts (or resumes) an upload.
    pub async fn upload_start(
        &self,
        manifest: &deed_store::Manifest,
    ) -> Result<UploadStatus, ClientError> {
        self.post(&format!("{PREFIX}/blobs/uploads"), manifest)
            .await
    }

    /// `PUT /v1/blobs/uploads/{cid}/chunks/{index}`.
    pub async fn upload_chunk(
        &self,
        cid: &Cid,
        index: u32,
        data: impl Into<bytes::Bytes>,
    ) -> Result<ChunkStored, ClientError> {
        let path = format!("{PREFIX}/blobs/uploads/{cid}/chunks/{index}");
        let rb = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data.into());
        self.json(rb, &path).await
    }

    /// `GET /v1/blobs/uploads/{cid}`: what an upload in progress still lacks.
    pub async fn upload_status(&self, cid: &Cid) -> Result<UploadStatus, ClientError> {
        self.get(&format!("{PREFIX}/blobs/uploads/{cid}")).await
    }

    /// `POST /v1/blobs/uploads/{cid}/finish`.
    pub async fn upload_finish(&self, cid: &Cid) -> Result<BlobInfo, ClientError> {
        let path = format!("{PREFIX}/blobs/uploads/{cid}/finish");
        self.json(self.request(Method::POST, &path), &path).await
    }

    /// `GET /v1/blobs/{cid}/manifest`.
    pub async fn blob_manifest(&self, cid: &Cid) -> Result<deed_store::Manifest, ClientError> {
        self.get(&format!("{PREFIX}/blobs/{cid}/manifest")).await
    }

    /// `HEAD /v1/blobs/{cid}`: the blob's size, or `None` when the node lacks it.
    pub async fn blob_size(&self, cid: &Cid) -> Result<Option<u64>, ClientError> {
        let path = format!("{PREFIX}/blobs/{cid}");
        match self.send(self.request(Method::HEAD, &path), &path).await {
            Ok(resp) => Ok(resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            Err(ClientError::Api { status, .. } | ClientError::Http { status, .. })
                if status == StatusCode::NOT_FOUND.as_u16() =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Signs `action` with `key` at the sender's next nonce and submits it.
    pub async fn send_action(
        &self,
        key: &SecretKey,
        action: Action,
        fee: u128,
    ) -> Result<SignedTransaction, ClientError> {
        let stx = self.sign_action(key, action, fee).await?;
        self.submit(&stx).await?;
        Ok(stx)
    }

    /// Signs `action` with `key` at the sender's next nonce, without submitting it.
    pub async fn sign_action(
        &self,
        key: &SecretKey,
        action: Action,
        fee: u128,
    ) -> Result<SignedTransaction, ClientError> {
        let status = self.status().await?;
        let nonce = self.account(&key.address()).await?.nonce;
        Ok(Transaction {
            chain_id: status.chain_id,
            nonce,
            fee,
            action,
        }
        .sign(key)?)
    }

    /// Waits until the transaction is in a block; a failed transaction is an error.
    pub async fn wait_included(
        &self,
        hash: &Hash,
        timeout: Duration,
    ) -> Result<TxView, ClientError> {
        let start = Instant::now();
        loop {
            match self.transaction(hash).await {
                Ok(view) => match &view.state {
                    TxState::Included { .. } => return Ok(view),
                    TxState::Failed { height, error } => {
                        return Err(ClientError::TxFailed {
                            hash: *hash,
                            height: *height,
                            error: error.clone(),
                        })
                    }
                    TxState::Pending => {}
                },
                // A transaction handed to an executor reaches the mempool a moment later.
                Err(ClientError::Api {
                    code: crate::api::ErrorCode::NotFound,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout {
                    what: format!("transaction {hash} to be included"),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `done(job)` holds, polling `GET /v1/jobs/{id}`.
    pub async fn wait_job(
        &self,
        id: u64,
        what: &str,
        timeout: Duration,
        done: impl Fn(&JobView) -> bool,
    ) -> Result<JobView, ClientError> {
        let start = Instant::now();
        loop {
            let job = self.job(id).await?;
            if done(&job) {
                return Ok(job);
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout {
                    what: format!("job {id} to be {what} (status {})", job.status),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether a job status is terminal.
pub fn job_is_final(status: &str) -> bool {
    matches!(status, "finalized" | "refunded" | "declined")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_roots_only_for_https() {
        let plain = Client::new("http://127.0.0.1:1").unwrap();
        assert!(!plain.tls);
        assert!(!plain.with_base("http://127.0.0.1:2").tls);
        let exec = plain.with_base("https://executor.example/");
        assert!(exec.tls);
        assert_eq!(exec.base(), "https://executor.example");
        assert!(Client::new("https://node.example").unwrap().tls);
    }

    #[test]
    fn rejects_url_without_scheme() {
        assert!(Client::new("127.0.0.1:8545").is_err());
        let c = Client::new("http://127.0.0.1:8545/").unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8545");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refused_connection_is_node_down() {
        // Bind then drop a listener: the port is free and nothing accepts on it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = c.status().await.unwrap_err();
        assert!(matches!(e, ClientError::NodeDown { .. }), "{e:?}");
        assert!(e.to_string().contains("deed dev"));
    }
}
