//! A node on 127.0.0.1:0 and a small client over its HTTP API.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use deed_client::api::{
    self, DirectRequest, ErrorBody, ErrorCode, JobView, ManifestFile, ModelManifest, NamedTensor,
    Status, TxState, TxView, UploadStatus,
};
use deed_node::config::{Config, Roles};
use deed_node::dev::{dev_account, dev_genesis, dev_keys, DEV_CHAIN_ID};
use deed_node::{start, Running, Storage};
use deed_runtime::{Limits, Model};
use deed_store::Manifest;
use deed_types::{
    encode_list, Action, Address, Cid, Hash, JobInput, Licence, Mode, ModelId, SecretKey,
    SignedTransaction, Tensor, Transaction,
};
use serde_json::Value;

pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deed-runtime/tests/fixtures"
);

pub fn test_config(roles: Roles) -> Config {
    Config {
        chain_id: DEV_CHAIN_ID,
        http: "127.0.0.1:0".parse().unwrap(),
        roles,
        block_interval_ms: 30,
        heartbeat_ms: 150,
        limits: deed_node::config::LimitsConfig {
            max_body_size: 1 << 20,
            min_chunk_size: 16,
            ..Default::default()
        },
        ..Config::default()
    }
}

/// A validator and storage node keeping its state in `dir`, for tests that restart it;
/// heartbeats are far apart so that its chain stands still between requests.
pub fn disk_storage_config(dir: &tempfile::TempDir) -> Config {
    let mut cfg = test_config(Roles::parse_list("validator,storage").unwrap());
    cfg.data_dir = dir.path().to_path_buf();
    cfg.heartbeat_ms = 60_000;
    cfg
}

pub async fn start_node(cfg: Config, storage: Storage) -> Running {
    let keys = dev_keys();
    let genesis = dev_genesis(&keys);
    start(cfg, keys, storage, genesis).await.unwrap()
}

pub async fn dev_node() -> (Running, Client) {
    let running = start_node(test_config(Roles::all()), Storage::Memory).await;
    let client = Client::new(&running);
    (running, client)
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

/// A response: status and body.
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body {:?}: {e}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a typed error with `code` and the status it maps to.
    pub fn expect_error(&self, code: ErrorCode) -> ErrorBody {
        let e: ErrorBody = self.json();
        assert_eq!(e.code, code, "message: {}", e.message);
        assert_eq!(self.status, code.status());
        e
    }
}

impl Client {
    pub fn new(running: &Running) -> Client {
        Client {
            base: format!("http://{}", running.addr),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn get_with(&self, path: &str, header: (&str, &str)) -> Resp {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .header(header.0, header.1),
        )
        .await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.send(self.http.head(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &impl serde::Serialize) -> Resp {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Resp {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Vec<u8>) -> Resp {
        self.send(self.http.put(format!("{}{path}", self.base)).body(body))
            .await
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").await.body).unwrap()
    }

    pub async fn status(&self) -> Status {
        self.get("/v1/status").await.json()
    }

    pub async fn balance(&self, who: &SecretKey) -> u128 {
        let v: Value = self
            .get(&format!("/v1/accounts/{}", who.address()))
            .await
            .json();
        v["balance"].as_str().unwrap().parse().unwrap()
    }

    pub async fn nonce(&self, who: &SecretKey) -> u64 {
        let v: Value = self
            .get(&format!("/v1/accounts/{}", who.address()))
            .await
            .json();
        v["nonce"].as_u64().unwrap()
    }

    pub async fn sign(&self, key: &SecretKey, action: Action) -> SignedTransaction {
        Transaction {
            chain_id: DEV_CHAIN_ID,
            nonce: self.nonce(key).await,
            fee: 1,
            action,
        }
        .sign(key)
        .unwrap()
    }

    pub async fn submit_raw(&self, stx: &SignedTransaction) -> Resp {
        self.post_json(
            "/v1/transactions",
            &api::SubmitTx {
                tx: hex_of(&stx.encode()),
            },
        )
        .await
    }

    /// Submits and waits for inclusion; returns the view (included or failed).
    pub async fn submit(&self, stx: &SignedTransaction) -> TxView {
        let r = self.submit_raw(stx).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let sub: api::TxSubmitted = r.json();
        self.wait_tx(&sub.hash).await
    }

    /// Signs, submits, waits, and asserts success.
    pub async fn act(&self, key: &SecretKey, action: Action) -> TxView {
        let stx = self.sign(key, action).await;
        let v = self.submit(&stx).await;
        assert!(
            matches!(v.state, TxState::Included { .. }),
            "{} failed: {:?}",
            v.action,
            v.state
        );
        v
    }

    pub async fn wait_tx(&self, hash: &Hash) -> TxView {
        wait_for(|| async {
            let v: TxView = self.get(&format!("/v1/transactions/{hash}")).await.json();
            (!matches!(v.state, TxState::Pending)).then_some(v)
        })
        .await
    }

    pub async fn job(&self, id: u64) -> JobView {
        self.get(&format!("/v1/jobs/{id}")).await.json()
    }

    /// Uploads `data` through the chunked protocol.
    pub async fn upload(&self, data: &[u8], chunk: u32) -> Cid {
        let m = Manifest::build(data, chunk).unwrap();
        let st: UploadStatus = self.post_json("/v1/blobs/uploads", &m).await.json();
        for i in st.missing {
            let r = m.chunk_range(i).unwrap();
            let part = data[r.start as usize..r.end as usize].to_vec();
            let resp = self
                .put(&format!("/v1/blobs/uploads/{}/chunks/{i}", m.id), part)
                .await;
            assert_eq!(resp.status, 200);
        }
        let r = self
            .post_raw(&format!("/v1/blobs/uploads/{}/finish", m.id), Vec::new())
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        m.id
    }
}

pub fn hex_of(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).unwrap()
}

/// Polls `f` every 20 ms for up to 20 s.
pub async fn wait_for<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `mlp_tiny` fixture: the model bytes and an input.
pub fn mlp() -> (Vec<u8>, Vec<(String, Tensor)>) {
    let bytes = std::fs::read(Path::new(FIXTURES).join("mlp_tiny/model.onnx")).unwrap();
    let model = Model::load(&bytes, &Limits::default()).unwrap();
    let name = model.required_inputs().next().unwrap().name.clone();
    let x: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) / 7.0).collect();
    (
        bytes,
        vec![(name, Tensor::from_vec(vec![3, 8], x).unwrap())],
    )
}

pub struct Published {
    pub model: u64,
    pub manifest: Cid,
    pub cost: u64,
    pub steps: u64,
}

/// Uploads `mlp_tiny`, signs its manifest, registers a paid model owned by `owner`
/// and publishes version 1.
pub async fn publish_mlp(c: &Client, owner: &SecretKey, name: &str, price: u128) -> Published {
    let (bytes, inputs) = mlp();
    let model = Model::load(&bytes, &Limits::default()).unwrap();
    let cost = model.plan(&inputs, &Limits::default()).unwrap().cost();
    let steps = model.num_steps() as u64;
    let file = c.upload(&bytes, 1024).await;
    let mut manifest = ModelManifest {
        format: "onnx".into(),
        files: vec![ManifestFile {
            name: "model.onnx".into(),
            size: bytes.len() as u64,
            cid: file,
        }],
        opset: 17,
        io_schema: "{}".into(),
        steps,
        cost,
        weight_fingerprint: Hash::of(&bytes),
        creator: owner.address(),
        signature: String::new(),
    };
    let sig = owner.sign_digest(&manifest.signing_digest()).unwrap();
    manifest.signature = hex_of(&sig.0);
    let manifest_cid = c.upload(&manifest.to_bytes(), 1024).await;
    let reg = c
        .act(
            owner,
            Action::RegisterModel {
                name: name.into(),
                description: "tiny mlp".into(),
                licence: Licence::Paid,
                price,
                lineage: None,
            },
        )
        .await;
    let id = reg.created.expect("model id");
    c.act(
        owner,
        Action::PublishVersion {
            model: ModelId(id),
            manifest: manifest_cid,
            io_schema: "{}".into(),
            steps,
            cost,
            notes: "first".into(),
        },
    )
    .await;
    Published {
        model: id,
        manifest: manifest_cid,
        cost,
        steps,
    }
}

/// The tensor list encoding of `mlp()`'s input.
pub fn mlp_input() -> Vec<u8> {
    let (_, inputs) = mlp();
    let t: Vec<Tensor> = inputs.into_iter().map(|(_, t)| t).collect();
    encode_list(&t)
}

/// Runs `mlp_tiny` locally: output list bytes and trace root.
pub fn mlp_local() -> (Vec<u8>, Hash) {
    let (bytes, inputs) = mlp();
    let model = Model::load(&bytes, &Limits::default()).unwrap();
    let out = model
        .run(&inputs, &deed_runtime::RunOptions::default())
        .unwrap();
    let t: Vec<Tensor> = out.outputs.into_iter().map(|(_, t)| t).collect();
    (encode_list(&t), out.trace.root())
}

pub fn user(i: usize) -> SecretKey {
    dev_account(i)
}

/// A request of the MLP published as `model` on `mlp_input()`, paying up to 1,000.
pub fn mlp_request(
    model: u64,
    version: Option<u32>,
    mode: Mode,
    executor: Option<Address>,
) -> Action {
    Action::RequestJob {
        model: ModelId(model),
        version,
        input: JobInput::Inline(mlp_input()),
        mode,
        max_fee: 1_000,
        executor,
    }
}

/// Waits until the executor's bond lists `model`.
pub async fn executor_serves(c: &Client, executor: Address, model: u64) {
    wait_for(|| async {
        let a: api::AccountView = c.get(&format!("/v1/accounts/{executor}")).await.json();
        a.executor.filter(|e| e.models.contains(&model))
    })
    .await;
}

/// A node started with `cfg` on `storage`, `mlp_tiny` published on it by user 0 as
/// `name` (price 5), and the node's executor bonded and serving it.
pub async fn serving_mlp(
    cfg: Config,
    storage: Storage,
    name: &str,
) -> (Running, Client, Published, Address) {
    let node = start_node(cfg, storage).await;
    let c = Client::new(&node);
    let p = publish_mlp(&c, &user(0), name, 5).await;
    let executor = c.status().await.executor.unwrap();
    executor_serves(&c, executor, p.model).await;
    (node, c, p, executor)
}

/// The direct request for the MLP published as `model`, signed by `requester`.
pub async fn direct_mlp_request(
    c: &Client,
    requester: &SecretKey,
    model: u64,
    executor: Address,
) -> (SignedTransaction, DirectRequest) {
    let stx = c
        .sign(
            requester,
            mlp_request(model, Some(1), Mode::None, Some(executor)),
        )
        .await;
    let req = direct_request_of(&stx);
    (stx, req)
}

/// The direct call carrying `stx` with `mlp()`'s inputs.
pub fn direct_request_of(stx: &SignedTransaction) -> DirectRequest {
    let (_, inputs) = mlp();
    DirectRequest {
        tx: hex_of(&stx.encode()),
        inputs: inputs
            .iter()
            .map(|(n, t)| NamedTensor {
                name: n.clone(),
                tensor: hex_of(&t.encode()),
            })
            .collect(),
    }
}
