//! Broken requests on every route of the HTTP API, against a node serving on
//! 127.0.0.1 with its state in memory, and against one with its state on disk.
//!
//! A seeded generator takes a valid request of each route (every route the OpenAPI
//! document lists has one, so a new route is fuzzed from the day it is added) and
//! breaks it: a path parameter or the query swapped for a hostile value, another
//! method, a hostile `Range` or content type, one JSON value replaced or dropped, the
//! bytes of the signed transaction, of a tensor or of a chunk flipped, cut or added
//! to, the raw body cut or flipped, or the whole body replaced (empty, garbage,
//! nested past any parser's depth, larger than the limit).
//!
//! Every answer must be a success or a typed error (an [`ErrorBody`] sent with its
//! code's status), never a server error; a request that carries a signed transaction
//! other than the one it was built from, or chunk bytes other than the chunk's, must
//! be refused; and at the end no account, model, version, job or dispute has changed,
//! no scratch file is left on disk, and the node still makes blocks.
//!
//! `DEED_HTTP_FUZZ_CASES` (default 600 in memory, 300 on disk) and
//! `DEED_HTTP_FUZZ_SEED` (default 1) choose the run; a failure names the seed, the
//! case, the request and the answer.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;

use common::*;
use deed_client::api::{self, ErrorBody, NamedTensor, SubmitTx};
use deed_node::config::Roles;
use deed_node::Storage;
use deed_store::Manifest;
use deed_types::{Action, Mode};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use reqwest::Method;
use serde_json::Value;

/// What a request must carry to be the valid one it was built from; any other is
/// refused.
#[derive(Clone)]
enum Exact {
    /// The signed transaction (bytes) and, for a direct call, the inputs (name and
    /// tensor bytes).
    Tx {
        tx: Vec<u8>,
        inputs: Option<Vec<(String, Vec<u8>)>>,
    },
    /// The chunk's bytes.
    Body(Vec<u8>),
}

/// A valid request of one route.
struct Seed {
    method: Method,
    /// The route as the OpenAPI document names it.
    route: &'static str,
    /// A valid value for each `{parameter}` of the route, in order.
    params: Vec<String>,
    body: Option<Vec<u8>>,
    exact: Option<Exact>,
}

impl Seed {
    fn new(method: Method, route: &'static str, params: &[&str]) -> Seed {
        Seed {
            method,
            route,
            params: params.iter().map(|p| p.to_string()).collect(),
            body: None,
            exact: None,
        }
    }

    fn body(mut self, body: Vec<u8>) -> Seed {
        self.body = Some(body);
        self
    }

    fn exact(mut self, exact: Exact) -> Seed {
        self.exact = Some(exact);
        self
    }

    /// The path with `params` in place of the route's `{parameter}`s.
    fn path(&self, params: &[String]) -> String {
        let mut out = String::new();
        let mut rest = self.route;
        let mut values = params.iter();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').unwrap() + open;
            out.push_str(&rest[..open]);
            out.push_str(values.next().unwrap());
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// One request to send.
#[derive(Debug)]
struct Broken {
    what: String,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    /// Whether path and method are the seed's (so `exact` applies to the body).
    same_target: bool,
}

/// Path parameter values no route should take whole.
fn hostile_params(rng: &mut TestRng) -> String {
    let pick = rng.random_range(0..26);
    match pick {
        0 => String::new(),
        1 => "0".into(),
        2 => "-1".into(),
        3 => "+1".into(),
        4 => "1.5".into(),
        5 => "1e3".into(),
        6 => u64::MAX.to_string(),
        7 => "18446744073709551616".into(),
        8 => "340282366920938463463374607431768211456".into(),
        9 => "0x".into(),
        10 => "0xzz".into(),
        11 => format!("0x{}", "ab".repeat(20)),
        12 => format!("0x{}", "cd".repeat(32)),
        13 => format!("0x{}", "e".repeat(41)),
        14 => "%00".into(),
        15 => "%FF".into(),
        16 => "%2F".into(),
        17 => "..".into(),
        18 => "%2E%2E%2F%2E%2E".into(),
        19 => "%C3%BC".into(),
        20 => "%F0%9F%A6%80".into(),
        21 => "9".repeat(8192),
        22 => "bafkreia".into(),
        23 => "bafkr4i".to_owned() + &"a".repeat(52),
        24 => "%ZZ".into(),
        _ => random_hex(rng, 0..80),
    }
}

fn random_hex(rng: &mut TestRng, len: std::ops::Range<usize>) -> String {
    let n = rng.random_range(len);
    let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    hex_of(&bytes)
}

/// Query strings for the routes that read one (and for those that do not).
fn hostile_query(rng: &mut TestRng, valid: &str) -> String {
    let keys = ["owner", "name", "requester", "executor", "limit", "%ZZ", ""];
    let key = keys[rng.random_range(0..keys.len())];
    let value = match rng.random_range(0..5) {
        0 => valid.to_owned(),
        1 => format!("{valid}&{key}={valid}"),
        _ => hostile_params(rng),
    };
    format!("?{key}={value}")
}

fn hostile_range(rng: &mut TestRng, size: u64) -> String {
    let ranges = [
        "bytes=5-2".to_owned(),
        "bytes=0-0".into(),
        "bytes=-0".into(),
        "bytes=-1".into(),
        "bytes=0-".into(),
        format!("bytes={size}-"),
        format!("bytes={}-{}", size - 1, size + 10),
        "bytes=999999999999999999999-".into(),
        format!("bytes={}-", u64::MAX),
        format!("bytes=-{}", u64::MAX),
        "bytes=0-1,3-4".into(),
        "items=0-1".into(),
        "bytes=".into(),
        "bytes=a-b".into(),
        "bytes= 0-1".into(),
        "bytes=1-2-3".into(),
    ];
    ranges[rng.random_range(0..ranges.len())].clone()
}

/// Breaks `bytes` once: a bit flipped, a byte set, bytes inserted, cut out,
/// appended or repeated, or the end cut off.
fn break_bytes(rng: &mut TestRng, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    match rng.random_range(0..7) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            bytes[i] = rng.random();
        }
        2 => {
            let i = rng.random_range(0..=len);
            let n = rng.random_range(1..9);
            let new: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            bytes.splice(i..i, new);
        }
        3 if len > 0 => {
            let i = rng.random_range(0..len);
            let j = rng.random_range(i + 1..=len);
            bytes.drain(i..j);
        }
        4 => bytes.truncate(rng.random_range(0..=len)),
        5 if len > 0 => {
            let i = rng.random_range(0..len);
            let j = rng.random_range(i + 1..=len);
            let again = bytes[i..j].to_vec();
            bytes.splice(j..j, again);
        }
        _ => {
            let n = rng.random_range(1..64);
            bytes.extend((0..n).map(|_| rng.random::<u8>()));
        }
    }
}

/// JSON text no field of any request takes.
fn hostile_json(rng: &mut TestRng) -> String {
    match rng.random_range(0..17) {
        0 => "null".into(),
        1 => "true".into(),
        2 => "0".into(),
        3 => "-1".into(),
        4 => "1.5".into(),
        5 => "1e400".into(),
        6 => "18446744073709551616".into(),
        7 => "-9223372036854775809".into(),
        8 => "\"\"".into(),
        9 => "\"0x\"".into(),
        10 => "\"0xzz\"".into(),
        11 => "\"\\ud800\"".into(),
        12 => "[]".into(),
        13 => "{}".into(),
        14 => "[".repeat(300) + &"]".repeat(300),
        15 => format!("\"{}\"", "a".repeat(rng.random_range(1..100_000))),
        _ => format!("\"{}\"", random_hex(rng, 0..200)),
    }
}

/// Every value in `v` with the JSON pointer that reaches it, `v` itself first.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A marker no request contains, replaced in the serialized text by raw JSON.
const HOLE: &str = "\u{1}hole\u{1}";

/// Breaks a JSON body once: a value replaced by hostile JSON, a field or element
/// dropped, or a hex string's bytes broken.
fn break_json(rng: &mut TestRng, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let mut all = Vec::new();
    pointers(&v, String::new(), &mut all);
    let at = all[rng.random_range(0..all.len())].clone();
    match rng.random_range(0..3) {
        0 => {
            let raw = hostile_json(rng);
            *v.pointer_mut(&at)? = Value::String(HOLE.into());
            let text = serde_json::to_string(&v).ok()?;
            let hole = serde_json::to_string(HOLE).ok()?;
            let what = format!("{at} = {}", raw.chars().take(40).collect::<String>());
            Some((what, text.replacen(&hole, &raw, 1).into_bytes()))
        }
        1 if !at.is_empty() => {
            let (parent, key) = at.rsplit_once('/')?;
            match v.pointer_mut(parent)? {
                Value::Object(m) => {
                    m.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(a) => {
                    a.remove(key.parse::<usize>().ok()?);
                }
                _ => return None,
            }
            Some((format!("drop {at}"), serde_json::to_vec(&v).ok()?))
        }
        _ => {
            // A hex string: its bytes broken, the string re-encoded.
            let hexes: Vec<&String> = all
                .iter()
                .filter(|p| matches!(v.pointer(p), Some(Value::String(s)) if s.starts_with("0x")))
                .collect();
            if hexes.is_empty() {
                return None;
            }
            let at = hexes[rng.random_range(0..hexes.len())].clone();
            let slot = v.pointer_mut(&at)?;
            let mut bytes = unhex(slot.as_str()?);
            break_bytes(rng, &mut bytes);
            *slot = Value::String(hex_of(&bytes));
            Some((format!("bytes of {at}"), serde_json::to_vec(&v).ok()?))
        }
    }
}

/// Bodies that stand for no request at all.
fn hostile_body(rng: &mut TestRng, limit: usize) -> Vec<u8> {
    match rng.random_range(0..8) {
        0 => Vec::new(),
        1 => b"null".to_vec(),
        2 => b"{}".to_vec(),
        3 => b"[]".to_vec(),
        4 => (0..rng.random_range(1..256))
            .map(|_| rng.random())
            .collect(),
        5 => [b'['; 10_000].to_vec(),
        6 => vec![0xff, 0xfe, b'{', b'}'],
        _ => vec![b' '; limit + 1],
    }
}

/// One broken request built from `seed`, or `None` when the draw fits it not.
fn break_seed(
    rng: &mut TestRng,
    seed: &Seed,
    documented: &BTreeSet<(String, String)>,
    limit: usize,
) -> Option<Broken> {
    let mut b = Broken {
        what: String::new(),
        method: seed.method.clone(),
        path: seed.path(&seed.params),
        headers: Vec::new(),
        body: seed.body.clone(),
        same_target: true,
    };
    match rng.random_range(0..10) {
        0 | 1 if !seed.params.is_empty() => {
            let mut params = seed.params.clone();
            let i = rng.random_range(0..params.len());
            params[i] = hostile_params(rng);
            b.what = format!("parameter {i} = {:.60}", params[i]);
            b.path = seed.path(&params);
            b.same_target = false;
        }
        2 => {
            let q = hostile_query(rng, seed.params.first().map_or("0", String::as_str));
            b.what = format!("query {q:.60}");
            b.path.push_str(&q);
        }
        3 => {
            let methods = [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
            ];
            let m = methods[rng.random_range(0..methods.len())].clone();
            if documented.contains(&(m.to_string(), seed.route.to_owned())) {
                return None;
            }
            b.what = format!("method {m}");
            b.method = m;
            b.same_target = false;
        }
        4 => {
            let (h, v) = match rng.random_range(0..3) {
                0 => ("range", hostile_range(rng, 1000)),
                1 => ("content-type", "text/plain; charset=utf-16".to_owned()),
                _ => ("content-length", "18446744073709551616".to_owned()),
            };
            if h == "content-length" {
                // reqwest sets its own; a lying length is the transport's concern.
                return None;
            }
            b.what = format!("header {h}: {v}");
            b.headers.push((h, v));
        }
        5..=7 => {
            let body = seed.body.as_ref()?;
            let (what, new) = if matches!(seed.exact, Some(Exact::Body(_))) {
                let mut bytes = body.clone();
                break_bytes(rng, &mut bytes);
                ("chunk bytes broken".to_owned(), bytes)
            } else {
                break_json(rng, body)?
            };
            b.what = what;
            b.body = Some(new);
        }
        8 => {
            let mut bytes = seed.body.clone()?;
            break_bytes(rng, &mut bytes);
            b.what = "raw body broken".into();
            b.body = Some(bytes);
        }
        _ => {
            let body = hostile_body(rng, limit);
            b.what = format!("body replaced ({} bytes)", body.len());
            b.body = Some(body);
        }
    }
    Some(b)
}

/// Whether `b` is, for all its bytes, the request `exact` describes (a hex string in
/// capitals, say): then it is not broken, and not sent.
fn is_the_seed(b: &Broken, exact: &Exact) -> bool {
    if !b.same_target {
        return false;
    }
    let Some(body) = &b.body else {
        return false;
    };
    match exact {
        Exact::Body(bytes) => body == bytes,
        Exact::Tx { tx, inputs } => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return false;
            };
            let hex_bytes = |v: &Value| {
                v.as_str()
                    .and_then(|s| hex::decode(s.strip_prefix("0x").unwrap_or(s)).ok())
            };
            if hex_bytes(&v["tx"]).as_ref() != Some(tx) {
                return false;
            }
            let Some(inputs) = inputs else {
                return true;
            };
            let Ok(sent) = serde_json::from_value::<Vec<NamedTensor>>(v["inputs"].clone()) else {
                return false;
            };
            sent.len() == inputs.len()
                && sent.iter().zip(inputs).all(|(s, (name, t))| {
                    &s.name == name
                        && hex_bytes(&Value::String(s.tensor.clone())).as_ref() == Some(t)
                })
        }
    }
}

/// What must not change: every dev account, every model with its versions, every
/// job and dispute.
async fn ledger_view(c: &Client, models: &[u64]) -> Vec<Value> {
    let keys = deed_node::dev::dev_keys();
    let mut accounts: Vec<String> = (0..10).map(|i| user(i).address().to_string()).collect();
    accounts.extend(
        [&keys.validator, &keys.executor, &keys.watcher]
            .into_iter()
            .chain(&keys.more_executors)
            .map(|k| k.address().to_string()),
    );
    let mut paths: Vec<String> = accounts
        .iter()
        .map(|a| format!("/v1/accounts/{a}"))
        .collect();
    paths.extend(["/v1/models", "/v1/jobs", "/v1/disputes"].map(String::from));
    paths.extend(models.iter().map(|m| format!("/v1/models/{m}/versions")));
    let mut out = Vec::new();
    for p in paths {
        let r = c.get(&p).await;
        assert_eq!(r.status, 200, "{p}");
        out.push(r.json::<Value>());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_requests_get_typed_errors_and_change_nothing() {
    fuzz(Storage::Memory, None, 600).await;
}

/// The same against a node that keeps its state in redb and its blobs in files,
/// which must also leave no scratch file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_requests_to_a_node_on_disk_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fuzz(Storage::Disk, Some(dir.path()), 300).await;
    let scratch = dir.path().join("blobs").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap_or_else(|e| panic!("{}: {e}", scratch.display()))
        .collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
}

/// Sends `DEED_HTTP_FUZZ_CASES` (else `default_cases`) broken requests to a node on
/// `storage` (in `data_dir`, for a disk) and checks every answer and the end state.
async fn fuzz(storage: Storage, data_dir: Option<&std::path::Path>, default_cases: usize) {
    let cases: usize = std::env::var("DEED_HTTP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let seed_no: u64 = std::env::var("DEED_HTTP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut cfg = test_config(Roles::all());
    if let Some(dir) = data_dir {
        cfg.data_dir = dir.to_path_buf();
    }
    let limit = cfg.limits.max_body_size;
    let (node, c, p, executor) = serving_mlp(cfg, storage, "fuzzed").await;

    // A direct call served and settled (a job, a served request to replay).
    let (served_tx, served) = direct_mlp_request(&c, &user(2), p.model, executor).await;
    let r = c.post_json("/v1/execute", &served).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let included = c.wait_tx(&served_tx.hash()).await;
    let job = included.created.unwrap();
    wait_for(|| async { (c.job(job).await.status == "finalized").then_some(()) }).await;

    // An upload begun and left unfinished, and its first chunk.
    let pending_data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let pending = Manifest::build(&pending_data, 1024).unwrap();
    let r = c.post_json("/v1/blobs/uploads", &pending).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let model_file = c.get(&format!("/v1/blobs/{}/manifest", p.manifest)).await;
    assert_eq!(model_file.status, 200);

    // Transactions signed and never sent: a transfer, a job request, a direct call.
    let transfer = c
        .sign(
            &user(3),
            Action::Transfer {
                to: user(4).address(),
                amount: 7,
            },
        )
        .await;
    let request = c
        .sign(&user(3), mlp_request(p.model, None, Mode::Optimistic, None))
        .await;
    let (_, direct) = direct_mlp_request(&c, &user(5), p.model, executor).await;
    let inputs_of = |r: &api::DirectRequest| {
        Some(
            r.inputs
                .iter()
                .map(|t| (t.name.clone(), unhex(&t.tensor)))
                .collect(),
        )
    };
    let submit = |tx: &deed_types::SignedTransaction| {
        let body = serde_json::to_vec(&SubmitTx {
            tx: hex_of(&tx.encode()),
        })
        .unwrap();
        Seed::new(Method::POST, "/v1/transactions", &[])
            .body(body)
            .exact(Exact::Tx {
                tx: tx.encode(),
                inputs: None,
            })
    };
    let execute = |r: &api::DirectRequest| {
        Seed::new(Method::POST, "/v1/execute", &[])
            .body(serde_json::to_vec(r).unwrap())
            .exact(Exact::Tx {
                tx: unhex(&r.tx),
                inputs: inputs_of(r),
            })
    };
    let chunk0 = pending_data[..1024].to_vec();
    let owner = user(0).address().to_string();
    let (model, hash) = (p.model.to_string(), served_tx.hash().to_string());
    let (blob, upload) = (p.manifest.to_string(), pending.id.to_string());
    let seeds = vec![
        Seed::new(Method::GET, "/v1/status", &[]),
        Seed::new(Method::GET, "/v1/blocks/{height}", &["1"]),
        Seed::new(Method::GET, "/v1/accounts/{address}", &[&owner]),
        submit(&transfer),
        submit(&request),
        // Replayed: already included.
        submit(&served_tx),
        Seed::new(Method::GET, "/v1/transactions/{hash}", &[&hash]),
        Seed::new(Method::GET, "/v1/models", &[]),
        Seed::new(Method::GET, "/v1/models/{id}", &[&model]),
        Seed::new(Method::GET, "/v1/models/{id}/versions", &[&model]),
        Seed::new(Method::GET, "/v1/models/{id}/versions/{n}", &[&model, "1"]),
        Seed::new(Method::POST, "/v1/blobs/uploads", &[])
            .body(serde_json::to_vec(&pending).unwrap()),
        Seed::new(Method::GET, "/v1/blobs/uploads/{cid}", &[&upload]),
        Seed::new(
            Method::PUT,
            "/v1/blobs/uploads/{cid}/chunks/{index}",
            &[&upload, "0"],
        )
        .body(chunk0.clone())
        .exact(Exact::Body(chunk0)),
        Seed::new(Method::POST, "/v1/blobs/uploads/{cid}/finish", &[&upload]),
        Seed::new(Method::GET, "/v1/blobs/{cid}", &[&blob]),
        Seed::new(Method::HEAD, "/v1/blobs/{cid}", &[&blob]),
        Seed::new(Method::GET, "/v1/blobs/{cid}/manifest", &[&blob]),
        Seed::new(Method::GET, "/v1/jobs", &[]),
        Seed::new(Method::GET, "/v1/jobs/{id}", &[&job.to_string()]),
        Seed::new(Method::GET, "/v1/disputes", &[]),
        Seed::new(Method::GET, "/v1/disputes/{id}", &["0"]),
        execute(&direct),
        // Replayed: served and settled.
        execute(&served),
        Seed::new(Method::GET, "/v1/openapi.json", &[]),
        Seed::new(Method::GET, "/metrics", &[]),
    ];

    // Every documented route has a seed, and every seed is a route.
    let documented: BTreeSet<(String, String)> = deed_node::openapi::documented_routes()
        .into_iter()
        .collect();
    let seeded: BTreeSet<(String, String)> = seeds
        .iter()
        .map(|s| (s.method.to_string(), s.route.to_owned()))
        .collect();
    let undocumented: Vec<_> = seeded.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "seeds of no route: {undocumented:?}"
    );
    let unseeded: Vec<_> = documented.difference(&seeded).collect();
    assert!(unseeded.is_empty(), "routes no seed covers: {unseeded:?}");

    let models = vec![p.model];
    let before = ledger_view(&c, &models).await;
    let height_before = c.status().await.consensus.height;

    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &{
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed_no.to_le_bytes());
        s
    });
    let (mut sent, mut refused, mut answered, mut closed) = (0usize, 0usize, 0usize, 0usize);
    let mut draws = 0usize;
    while sent < cases {
        draws += 1;
        assert!(draws < cases * 20, "the generator draws too few requests");
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let Some(b) = break_seed(&mut rng, seed, &documented, limit) else {
            continue;
        };
        if seed.exact.as_ref().is_some_and(|e| is_the_seed(&b, e)) {
            continue;
        }
        let url = format!("{}{}", c.base, b.path);
        if reqwest::Url::parse(&url).is_err() {
            continue;
        }
        sent += 1;
        let case = format!(
            "seed {seed_no} case {sent}: {} {} ({}) on {} {}",
            b.method,
            b.path.chars().take(120).collect::<String>(),
            b.what,
            seed.method,
            seed.route
        );
        // On kept connections: a node that closes one says so first.
        let mut req = c.http.request(b.method.clone(), &url);
        for (h, v) in &b.headers {
            req = req.header(*h, v);
        }
        if let Some(body) = &b.body {
            req = req
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // A route that takes no body may answer before reading one and close the
            // connection, which the sender of a large body sees as a broken pipe.
            Err(e) if seed.body.is_none() && b.body.is_some() => {
                closed += 1;
                assert!(e.is_request(), "{case}: {e}");
                continue;
            }
            Err(e) => panic!("{case}: no answer: {e}"),
        };
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{case}: answer cut short: {e}"));
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        assert!(
            status < 500 || status == 503,
            "{case}: server error {status}: {shown}"
        );
        if status >= 400 {
            refused += 1;
            if b.method != Method::HEAD {
                let e: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|e| {
                    panic!("{case}: {status} without a typed error ({e}): {shown}")
                });
                let expected = if status == 416 { 400 } else { status };
                assert_eq!(e.code.status(), expected, "{case}: {shown}");
                assert!(
                    !e.message.is_empty()
                        && !e.message.contains("panicked")
                        && !e.message.contains(".rs:"),
                    "{case}: {shown}"
                );
            }
        } else {
            answered += 1;
            assert!(
                !(b.same_target && seed.exact.is_some()),
                "{case}: accepted ({status}): {shown}"
            );
        }
        if sent % 100 == 0 {
            assert_eq!(c.get("/v1/status").await.status, 200, "{case}: node gone");
        }
    }

    // Nothing moved, and the node goes on making blocks.
    assert_eq!(ledger_view(&c, &models).await, before, "seed {seed_no}");
    wait_for(|| async { (c.status().await.consensus.height > height_before + 2).then_some(()) })
        .await;
    println!(
        "seed {seed_no}: {sent} broken requests: {refused} refused, {answered} answered, \
         {closed} bodies of routes that take none left unread"
    );
    assert!(refused > sent / 2, "{refused} of {sent} refused");
    node.stop().await;
}
