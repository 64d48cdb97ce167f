//! The node's HTTP API against a node started in-process on 127.0.0.1:0.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use deed_client::api::{
    self, BlobInfo, ChunkStored, DirectRequest, DirectResponse, DisputeView, ErrorCode, ModelView,
    TxState, TxView, UploadStatus,
};
use deed_node::config::Roles;
use deed_node::Storage;
use deed_store::Manifest;
use deed_types::{
    Action, Hash, JobId, JobInput, Mode, ModelId, Output, Receipt, Signature, Transaction,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_then_bad_input_changes_nothing() {
    let (node, c) = dev_node().await;
    let (alice, bob) = (user(0), user(1));
    let before = c.balance(&bob).await;
    let v = c
        .act(
            &alice,
            Action::Transfer {
                to: bob.address(),
                amount: 1234,
            },
        )
        .await;
    assert_eq!(v.sender, alice.address());
    assert_eq!(v.action, "transfer");
    assert_eq!(c.balance(&bob).await, before + 1234);
    // The block holding it says so; a height not reached yet is a typed 404.
    let api::TxState::Included { height } = v.state else {
        panic!("not included: {:?}", v.state)
    };
    let b: api::BlockView = c.get(&format!("/v1/blocks/{height}")).await.json();
    assert!(b.txs.contains(&v.hash) && b.height == height);
    c.get("/v1/blocks/999999999")
        .await
        .expect_error(api::ErrorCode::NotFound);
    let status = c.status().await;
    assert!(status.consensus.validator && !status.consensus.syncing);
    assert!(status.consensus.height >= height, "{:?}", status.consensus);

    // Nothing below may change any balance or nonce.
    let snapshot = (c.balance(&alice).await, c.nonce(&alice).await);

    // A tampered signature recovers another sender (or none): rejected.
    let mut stx = c
        .sign(
            &alice,
            Action::Transfer {
                to: bob.address(),
                amount: 5,
            },
        )
        .await;
    let mut sig = stx.signature.0;
    sig[64] ^= 1;
    stx.signature = Signature(sig);
    let r = c.submit_raw(&stx).await;
    let e = r.json::<api::ErrorBody>();
    assert!(
        matches!(
            e.code,
            ErrorCode::BadSignature | ErrorCode::BadNonce | ErrorCode::InsufficientFunds
        ),
        "{e:?}"
    );
    assert!(r.status >= 400);

    // A replayed transaction and a reused nonce.
    let included = c
        .sign(
            &alice,
            Action::Transfer {
                to: bob.address(),
                amount: 1,
            },
        )
        .await;
    c.submit(&included).await;
    c.submit_raw(&included)
        .await
        .expect_error(ErrorCode::BadNonce);
    let stale = Transaction {
        chain_id: deed_node::dev::DEV_CHAIN_ID,
        nonce: 0,
        fee: 1,
        action: Action::Transfer {
            to: bob.address(),
            amount: 2,
        },
    }
    .sign(&alice)
    .unwrap();
    c.submit_raw(&stale).await.expect_error(ErrorCode::BadNonce);

    // Another chain.
    let other = Transaction {
        chain_id: 1,
        nonce: c.nonce(&alice).await,
        fee: 1,
        action: Action::Transfer {
            to: bob.address(),
            amount: 2,
        },
    }
    .sign(&alice)
    .unwrap();
    c.submit_raw(&other)
        .await
        .expect_error(ErrorCode::BadSignature);

    // Malformed bodies, an oversize body, unknown things.
    c.post_raw("/v1/transactions", b"{not json".to_vec())
        .await
        .expect_error(ErrorCode::BadRequest);
    c.post_json(
        "/v1/transactions",
        &api::SubmitTx {
            tx: "0x00ff".into(),
        },
    )
    .await
    .expect_error(ErrorCode::BadRequest);
    c.post_raw("/v1/transactions", vec![b' '; (1 << 20) + 100])
        .await
        .expect_error(ErrorCode::TooLarge);
    c.get("/v1/nope").await.expect_error(ErrorCode::NotFound);
    c.get("/v1/accounts/0x12")
        .await
        .expect_error(ErrorCode::BadRequest);
    c.get(&format!("/v1/transactions/{}", Hash::of(b"x")))
        .await
        .expect_error(ErrorCode::NotFound);
    c.get("/v1/models/99")
        .await
        .expect_error(ErrorCode::NotFound);

    // The included transaction counted once; nothing else moved.
    let after = (c.balance(&alice).await, c.nonce(&alice).await);
    assert_eq!(after, (snapshot.0 - 2, snapshot.1 + 1));
    node.stop().await;
}

/// Requests broken below the JSON: a parameter that is not UTF-8, a method a route
/// does not take, a body a route does not read. Typed errors all, and an answer that
/// leaves a body unread on the connection says the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_broken_below_the_json_get_typed_errors() {
    let (node, c) = dev_node().await;
    c.get("/v1/accounts/%FF")
        .await
        .expect_error(ErrorCode::BadRequest);
    let r = c.send(c.http.delete(format!("{}/v1/models", c.base))).await;
    r.expect_error(ErrorCode::MethodNotAllowed);
    assert_eq!(r.headers["allow"], "GET,HEAD");

    let url = format!("{}/v1/models", c.base);
    let keep = |r: &Resp| {
        r.headers
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    // Read whole, or no body: the connection stays.
    let r = c.get("/v1/models").await;
    assert_eq!((r.status, keep(&r)), (200, None));
    let r = c
        .post_json("/v1/transactions", &api::SubmitTx { tx: "0x00".into() })
        .await;
    r.expect_error(ErrorCode::BadRequest);
    assert_eq!(keep(&r), None);
    // Left unread: a route that takes none.
    let r = c.send(c.http.get(&url).body(vec![b' '; 4096])).await;
    assert_eq!((r.status, keep(&r).as_deref()), (200, Some("close")));
    // The client's next requests find a connection that works.
    for _ in 0..3 {
        assert_eq!(c.get("/v1/status").await.status, 200);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_upload_resumes_verifies_and_serves_ranges() {
    let (node, c) = dev_node().await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let m = Manifest::build(&data, 1024).unwrap();
    let st: UploadStatus = c.post_json("/v1/blobs/uploads", &m).await.json();
    assert_eq!(st.missing, (0..10).collect::<Vec<u32>>());
    assert!(!st.complete);

    let chunk = |i: u32| {
        let r = m.chunk_range(i).unwrap();
        data[r.start as usize..r.end as usize].to_vec()
    };
    for i in [0, 3, 9] {
        let r = c
            .put(&format!("/v1/blobs/uploads/{}/chunks/{i}", m.id), chunk(i))
            .await;
        assert_eq!(r.status, 200);
    }
    // A corrupt chunk is refused and not stored.
    let mut bad = chunk(4);
    bad[0] ^= 0xff;
    c.put(&format!("/v1/blobs/uploads/{}/chunks/4", m.id), bad)
        .await
        .expect_error(ErrorCode::HashMismatch);
    c.put(&format!("/v1/blobs/uploads/{}/chunks/40", m.id), chunk(1))
        .await
        .expect_error(ErrorCode::BadRequest);
    // So are chunks too short or too long for their place.
    c.put(
        &format!("/v1/blobs/uploads/{}/chunks/5", m.id),
        chunk(5)[..1000].to_vec(),
    )
    .await
    .expect_error(ErrorCode::BadRequest);
    c.put(
        &format!("/v1/blobs/uploads/{}/chunks/5", m.id),
        [chunk(5), chunk(6)].concat(),
    )
    .await
    .expect_error(ErrorCode::BadRequest);
    // Finishing early fails; nothing becomes visible.
    c.post_raw(&format!("/v1/blobs/uploads/{}/finish", m.id), Vec::new())
        .await
        .expect_error(ErrorCode::BadRequest);
    c.get(&format!("/v1/blobs/{}", m.id))
        .await
        .expect_error(ErrorCode::NotFound);

    // Resume: the node names exactly the chunks it lacks.
    let st: UploadStatus = c.post_json("/v1/blobs/uploads", &m).await.json();
    assert_eq!(st.missing, vec![1, 2, 4, 5, 6, 7, 8]);
    for i in st.missing {
        c.put(&format!("/v1/blobs/uploads/{}/chunks/{i}", m.id), chunk(i))
            .await;
    }
    let info: BlobInfo = c
        .post_raw(&format!("/v1/blobs/uploads/{}/finish", m.id), Vec::new())
        .await
        .json();
    assert_eq!((info.cid, info.size), (m.id, data.len() as u64));

    let all = c.get(&format!("/v1/blobs/{}", m.id)).await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body, data);
    let part = c
        .get_with(&format!("/v1/blobs/{}", m.id), ("range", "bytes=1000-2999"))
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, data[1000..3000]);
    assert_eq!(
        part.headers["content-range"].to_str().unwrap(),
        "bytes 1000-2999/10000"
    );
    let tail = c
        .get_with(&format!("/v1/blobs/{}", m.id), ("range", "bytes=-10"))
        .await;
    assert_eq!(tail.body, data[9990..]);
    let beyond = c
        .get_with(&format!("/v1/blobs/{}", m.id), ("range", "bytes=20000-"))
        .await;
    assert_eq!(beyond.status, 416);
    let head = c.head(&format!("/v1/blobs/{}", m.id)).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"].to_str().unwrap(), "10000");
    let served: Manifest = c.get(&format!("/v1/blobs/{}/manifest", m.id)).await.json();
    assert_eq!(served, m);

    // A manifest over the size limit, a chunk over the body limit.
    let mut huge = m.clone();
    huge.size = 1 << 40;
    c.post_json("/v1/blobs/uploads", &huge)
        .await
        .expect_error(ErrorCode::TooLarge);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("deed_blob_bytes_in_total 10000"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_model_runs_as_a_job_and_pays_the_owner() {
    let (node, c) = dev_node().await;
    let (owner, requester) = (user(0), user(1));
    let p = publish_mlp(&c, &owner, "mlp", 50).await;
    let models: Vec<ModelView> = c
        .get(&format!("/v1/models?owner={}&name=mlp", owner.address()))
        .await
        .json();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].id, p.model);
    assert_eq!(models[0].versions, 1);
    let v: api::VersionView = c
        .get(&format!("/v1/models/{}/versions/1", p.model))
        .await
        .json();
    assert_eq!(v.manifest, p.manifest);

    let owner_before = c.balance(&owner).await;
    let tx = c
        .act(
            &requester,
            mlp_request(p.model, None, Mode::Optimistic, None),
        )
        .await;
    let job = tx.created.expect("job id");
    let (expected_out, expected_root) = mlp_local();
    let view = wait_for(|| async {
        let j = c.job(job).await;
        j.receipts[0].is_some().then_some(j)
    })
    .await;
    let r = view.receipts[0].clone().unwrap();
    assert_eq!(r.trace_root, expected_root);
    assert_eq!(r.output_hash, Hash::of(&expected_out));
    assert_eq!(unhex(&r.output_inline.unwrap()), expected_out);
    // One leaf per node, then the output step.
    assert_eq!(r.steps, p.steps + 1);
    // The watcher agrees, so the window closes without a dispute and pays out.
    let done = wait_for(|| async {
        let j = c.job(job).await;
        (j.status == "finalized").then_some(j)
    })
    .await;
    assert_eq!(done.dispute, None);
    assert_eq!(c.balance(&owner).await, owner_before + 50);
    let disputes: Vec<DisputeView> = c.get("/v1/disputes").await.json();
    assert!(disputes.is_empty());
    let metrics = c.metrics().await;
    assert!(metrics.contains("deed_jobs_executed_total 1"), "{metrics}");
    assert!(metrics.contains("deed_jobs_checked_total 1"), "{metrics}");
    node.stop().await;
}

/// A job whose input does not fit the model is declined by the node's executor rather
/// than left to time out: the validators' referee agrees, the executor is paid its fee
/// and keeps its stake (a timeout would have slashed it), and the requester who sent
/// the input gets the rest back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_input_does_not_fit_the_model_is_declined() {
    let (node, c, p, _) = serving_mlp(test_config(Roles::all()), Storage::Memory, "declined").await;
    let (owner, requester) = (user(0), user(1));
    // The node's executors, any of which the ledger may assign.
    let keys = deed_node::dev::dev_keys();
    let executors: Vec<deed_types::Address> = std::iter::once(&keys.executor)
        .chain(&keys.more_executors)
        .map(|k| k.address())
        .collect();
    for e in &executors {
        executor_serves(&c, *e, p.model).await;
    }
    let stakes = || async {
        let mut out = Vec::new();
        for e in &executors {
            let a: api::AccountView = c.get(&format!("/v1/accounts/{e}")).await.json();
            out.push(a.executor.unwrap().stake);
        }
        out
    };
    let (stakes_before, owner_before) = (stakes().await, c.balance(&owner).await);
    let tx = c
        .act(
            &requester,
            Action::RequestJob {
                model: ModelId(p.model),
                version: None,
                input: JobInput::Inline(vec![1, 2, 3]),
                mode: Mode::Optimistic,
                max_fee: 1_000,
                executor: None,
            },
        )
        .await;
    let job = tx.created.expect("job id");
    let j = wait_for(|| async {
        let j = c.job(job).await;
        (j.status == "declined").then_some(j)
    })
    .await;
    assert!(executors.contains(&j.executors[0]), "{:?}", j.executors);
    assert!(j.receipts.iter().all(Option::is_none));
    // The job's route gives its inline input (a verifier needs nothing else); the
    // list leaves it out.
    assert_eq!(j.input_inline.as_deref(), Some("0x010203"));
    let listed: Vec<api::JobView> = c.get("/v1/jobs").await.json();
    let listed = listed.iter().find(|l| l.id == job).unwrap();
    assert_eq!(listed.input_inline, None);
    assert_eq!(stakes().await, stakes_before);
    assert_eq!(
        c.balance(&owner).await,
        owner_before,
        "no royalty: nothing ran"
    );
    let metrics = c.metrics().await;
    assert!(metrics.contains("deed_jobs_declined_total 1"), "{metrics}");
    assert!(metrics.contains("deed_jobs_executed_total 0"), "{metrics}");
    node.stop().await;
}

/// `[executor] models` chooses what the node's executors serve: the models named,
/// once registered, and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_serve_the_models_the_config_names() {
    let mut cfg = test_config(Roles::all());
    cfg.executor.models = Some(vec![1, 7]);
    let node = start_node(cfg, Storage::Memory).await;
    let c = Client::new(&node);
    let owner = user(0);
    let first = publish_mlp(&c, &owner, "not-served", 5).await;
    let second = publish_mlp(&c, &owner, "served", 5).await;
    assert_eq!((first.model, second.model), (0, 1));
    let executor = c.status().await.executor.unwrap();
    executor_serves(&c, executor, second.model).await;
    // Blocks go by; the bond keeps to the list.
    let height = c.status().await.height;
    wait_for(|| async { (c.status().await.height >= height + 3).then_some(()) }).await;
    let a: api::AccountView = c.get(&format!("/v1/accounts/{executor}")).await.json();
    assert_eq!(a.executor.unwrap().models, vec![1]);
    node.stop().await;
}

/// The lists come in pages: `limit` items after the id `after`, and a client reading
/// page by page gets the whole list once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages() {
    let (node, c, p, _) = serving_mlp(test_config(Roles::all()), Storage::Memory, "paged").await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        let tx = c
            .act(&user(1), mlp_request(p.model, None, Mode::Optimistic, None))
            .await;
        jobs.push(tx.created.unwrap());
    }
    let ids = |path: &str| {
        let c = &c;
        let path = path.to_owned();
        async move {
            let page: Vec<api::JobView> = c.get(&path).await.json();
            page.iter().map(|j| j.id).collect::<Vec<u64>>()
        }
    };
    assert_eq!(ids("/v1/jobs?limit=2").await, jobs[..2]);
    assert_eq!(
        ids(&format!("/v1/jobs?limit=2&after={}", jobs[1])).await,
        jobs[2..4]
    );
    assert_eq!(ids(&format!("/v1/jobs?after={}", jobs[3])).await, jobs[4..]);
    assert!(ids(&format!("/v1/jobs?after={}", u64::MAX))
        .await
        .is_empty());
    for bad in ["limit=0", "limit=1001", "after=-1", "limit=x"] {
        c.get(&format!("/v1/jobs?{bad}"))
            .await
            .expect_error(ErrorCode::BadRequest);
        c.get(&format!("/v1/disputes?{bad}"))
            .await
            .expect_error(ErrorCode::BadRequest);
    }
    let models: Vec<ModelView> = c.get("/v1/models?limit=1&after=0").await.json();
    assert!(models.is_empty(), "one model, id 0");
    // The client reads every page.
    let client = deed_client::Client::new(&c.base).unwrap();
    let all: Vec<u64> = client
        .jobs(None, None)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(all, jobs);
    node.stop().await;
}

/// A node with every role keeping its state in a new temporary folder (for tests that
/// restart it), serving `mlp_tiny` published as `name`: the folder (kept alive by
/// the caller), the config that starts the node again, and what [`serving_mlp`] gives.
async fn serving_mlp_on_disk(
    name: &str,
) -> (
    tempfile::TempDir,
    deed_node::config::Config,
    deed_node::Running,
    Client,
    Published,
    deed_types::Address,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(Roles::all());
    cfg.data_dir = dir.path().to_path_buf();
    let (node, c, p, executor) = serving_mlp(cfg.clone(), Storage::Disk, name).await;
    (dir, cfg, node, c, p, executor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_call_answers_at_once_and_settles_once() {
    let (node, c, p, executor) =
        serving_mlp(test_config(Roles::all()), Storage::Memory, "direct").await;
    let (owner, requester) = (user(0), user(2));
    let stx = c
        .sign(
            &requester,
            mlp_request(p.model, Some(1), Mode::None, Some(executor)),
        )
        .await;
    let req = direct_request_of(&stx);
    let resp: DirectResponse = c.post_json("/v1/execute", &req).await.json();
    let (expected_out, expected_root) = mlp_local();
    assert_eq!(resp.request, stx.hash());
    assert_eq!(resp.receipt.trace_root, expected_root);
    assert_eq!(resp.receipt.output_hash, Hash::of(&expected_out));
    let outs: Vec<_> = resp
        .outputs
        .iter()
        .map(|o| deed_types::Tensor::decode(&unhex(&o.tensor)).unwrap())
        .collect();
    assert_eq!(deed_types::encode_list(&outs), expected_out);
    let sig = Signature(unhex(&resp.signature).try_into().unwrap());
    let digest = api::direct_receipt_digest(
        &resp.request,
        &resp.receipt.output_hash,
        &resp.receipt.trace_root,
        resp.receipt.steps,
    );
    assert_eq!(sig.recover(&digest).unwrap(), executor);

    // The same request is never served twice.
    c.post_json("/v1/execute", &req)
        .await
        .expect_error(ErrorCode::AlreadyServed);
    // The executor settles it: the request is included, then its receipt.
    let tx: TxView = c.wait_tx(&resp.request).await;
    assert!(matches!(tx.state, TxState::Included { .. }), "{tx:?}");
    let job = tx.created.unwrap();
    let j = wait_for(|| async {
        let j = c.job(job).await;
        (j.status == "finalized").then_some(j)
    })
    .await;
    assert_eq!(j.receipts[0].as_ref().unwrap().trace_root, expected_root);
    c.post_json("/v1/execute", &req)
        .await
        .expect_error(ErrorCode::BadNonce);

    // Inputs that do not hash to the request's input hash.
    let stx2 = c
        .sign(
            &requester,
            Action::RequestJob {
                model: ModelId(p.model),
                version: Some(1),
                input: JobInput::Inline(vec![1, 2, 3]),
                mode: Mode::None,
                max_fee: 1_000,
                executor: Some(executor),
            },
        )
        .await;
    let bad = DirectRequest {
        tx: hex_of(&stx2.encode()),
        inputs: req.inputs.clone(),
    };
    c.post_json("/v1/execute", &bad)
        .await
        .expect_error(ErrorCode::BadInput);
    // A request naming another executor.
    let stx3 = c
        .sign(
            &requester,
            mlp_request(p.model, Some(1), Mode::None, Some(owner.address())),
        )
        .await;
    c.post_json(
        "/v1/execute",
        &DirectRequest {
            tx: hex_of(&stx3.encode()),
            inputs: req.inputs.clone(),
        },
    )
    .await
    .expect_error(ErrorCode::BadRequest);
    node.stop().await;
}

/// Requests of one sender sharing a nonce, sent together, run once: only one of them
/// can be settled, so the executor serves that one and refuses the others before
/// running them (each would be a run nobody pays for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sharing_a_nonce_sent_together_run_once() {
    let (node, c, p, executor) =
        serving_mlp(test_config(Roles::all()), Storage::Memory, "one-nonce").await;
    let requester = user(2);
    let mut calls = Vec::new();
    for max_fee in 1_000..1_006 {
        let mut action = mlp_request(p.model, Some(1), Mode::None, Some(executor));
        if let Action::RequestJob { max_fee: m, .. } = &mut action {
            *m = max_fee;
        }
        calls.push(direct_request_of(&c.sign(&requester, action).await));
    }
    let nonces: std::collections::HashSet<u64> = calls
        .iter()
        .map(|r| {
            deed_types::SignedTransaction::decode(&unhex(&r.tx))
                .unwrap()
                .tx
                .nonce
        })
        .collect();
    assert_eq!(nonces.len(), 1, "the requests share one nonce");
    // The model is not loaded yet, so every call is past its nonce check while the
    // first one loads it.
    let answers =
        futures::future::join_all(calls.iter().map(|r| c.post_json("/v1/execute", r))).await;
    let served: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(
        served.len(),
        1,
        "exactly one request of the nonce is served"
    );
    for a in answers.iter().filter(|a| a.status != 200) {
        a.expect_error(ErrorCode::BadNonce);
    }
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("deed_job_seconds_count 1\n"),
        "one run, not one per request: {metrics}"
    );
    let resp: DirectResponse = served[0].json();
    let tx: TxView = c.wait_tx(&resp.request).await;
    assert!(matches!(tx.state, TxState::Included { .. }), "{tx:?}");
    node.stop().await;
}

/// Direct calls of several senders at once are all served, each with the output a
/// local run gives, and all settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_calls_of_several_senders_at_once_are_all_served() {
    let (node, c, p, executor) =
        serving_mlp(test_config(Roles::all()), Storage::Memory, "together").await;
    let (expected_out, expected_root) = mlp_local();
    let mut served = Vec::new();
    for round in 0..5 {
        // Signed with the nonce the node gives next: the one after the sender's call
        // of the round before, queued when it was served.
        let mut calls = Vec::new();
        for u in 0..deed_node::dev::DEV_ACCOUNTS {
            calls.push(direct_mlp_request(&c, &user(u), p.model, executor).await);
        }
        let answers =
            futures::future::join_all(calls.iter().map(|(_, req)| c.post_json("/v1/execute", req)))
                .await;
        for ((stx, _), a) in calls.iter().zip(&answers) {
            assert_eq!(
                a.status,
                200,
                "round {round}: {}",
                String::from_utf8_lossy(&a.body)
            );
            let resp: DirectResponse = a.json();
            assert_eq!(resp.request, stx.hash());
            assert_eq!(resp.receipt.trace_root, expected_root);
            assert_eq!(resp.receipt.output_hash, Hash::of(&expected_out));
            served.push(stx.hash());
        }
    }
    for h in &served {
        let tx: TxView = c.wait_tx(h).await;
        assert!(matches!(tx.state, TxState::Included { .. }), "{tx:?}");
    }
    node.stop().await;
}

/// `[executor] threads` changes how fast a model runs, never what it computes: an
/// executor on three kernel threads answers with the single-threaded local run's
/// output and trace root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_on_several_kernel_threads_answers_the_same_bits() {
    let mut cfg = test_config(Roles::all());
    cfg.executor.threads = 3;
    let (node, c, p, executor) = serving_mlp(cfg, Storage::Memory, "three-threads").await;
    let requester = user(2);
    let (_, req) = direct_mlp_request(&c, &requester, p.model, executor).await;
    let served: DirectResponse = c.post_json("/v1/execute", &req).await.json();
    let (expected_out, expected_root) = mlp_local();
    assert_eq!(served.receipt.trace_root, expected_root);
    assert_eq!(served.receipt.output_hash, Hash::of(&expected_out));
    drop(c);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_call_served_before_a_restart_is_refused_after_it_and_settled_once() {
    let (dir, cfg, node, c, p, executor) = serving_mlp_on_disk("direct-restart").await;
    let requester = user(2);
    let nonce = c.nonce(&requester).await;
    let (stx, req) = direct_mlp_request(&c, &requester, p.model, executor).await;
    let served: DirectResponse = c.post_json("/v1/execute", &req).await.json();
    assert_eq!(served.request, stx.hash());
    // The executor stops right after answering, before or after the request made
    // it into a block.
    drop(c);
    node.stop().await;

    let node = start_node(cfg.clone(), Storage::Disk).await;
    let c = Client::new(&node);
    // The same signed request again: refused, not executed a second time. While
    // the request waits for its block the executor says it served it; once the
    // block is in, the request's nonce is spent.
    let again = c.post_json("/v1/execute", &req).await;
    assert_eq!(again.status, 409);
    let e: api::ErrorBody = again.json();
    assert!(
        matches!(e.code, ErrorCode::AlreadyServed | ErrorCode::BadNonce),
        "{e:?}"
    );
    // The restarted executor settles it, once.
    let tx: TxView = c.wait_tx(&served.request).await;
    assert!(matches!(tx.state, TxState::Included { .. }), "{tx:?}");
    let job = tx.created.unwrap();
    let j = wait_for(|| async {
        let j = c.job(job).await;
        (j.status == "finalized").then_some(j)
    })
    .await;
    assert_eq!(
        j.receipts[0].as_ref().unwrap().trace_root,
        served.receipt.trace_root
    );
    assert_eq!(c.nonce(&requester).await, nonce + 1);
    c.post_json("/v1/execute", &req)
        .await
        .expect_error(ErrorCode::BadNonce);
    drop(c);
    node.stop().await;
    // Settled: nothing is left of the served record.
    let store = deed_store::RedbStateStore::open(dir.path().join("state.redb")).unwrap();
    assert!(deed_store::StateStore::local_prefix(&store, b"s")
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_direct_call_is_refused_after_a_restart_while_unsettled() {
    // A node that serves a request and stops before any block includes it: the
    // record of the request is what makes the restarted node refuse it.
    let (dir, mut cfg, node, c, p, executor) = serving_mlp_on_disk("direct-unsettled").await;
    let requester = user(2);
    let (stx, req) = direct_mlp_request(&c, &requester, p.model, executor).await;
    drop(c);
    node.stop().await;
    // Blocks slow enough that none lands between the answer and the stop.
    cfg.block_interval_ms = 60_000;
    cfg.heartbeat_ms = 60_000;
    let node = start_node(cfg.clone(), Storage::Disk).await;
    let c = Client::new(&node);
    let _: DirectResponse = c.post_json("/v1/execute", &req).await.json();
    drop(c);
    node.stop().await;
    {
        let store = deed_store::RedbStateStore::open(dir.path().join("state.redb")).unwrap();
        let records = deed_store::StateStore::local_prefix(&store, b"s").unwrap();
        assert_eq!(records.len(), 1, "the served request is on disk");
        assert_eq!(records[0].1, stx.encode());
    }
    let node = start_node(cfg, Storage::Disk).await;
    let c = Client::new(&node);
    let e = c
        .post_json("/v1/execute", &req)
        .await
        .expect_error(ErrorCode::AlreadyServed);
    assert!(e.message.contains("already served"), "{}", e.message);
    // And it is queued for settlement again.
    let t: TxView = c
        .get(&format!("/v1/transactions/{}", stx.hash()))
        .await
        .json();
    assert!(
        matches!(t.state, TxState::Pending | TxState::Included { .. }),
        "{t:?}"
    );
    node.stop().await;
}

/// Four direct calls of one sender served before a restart.
struct ServedBeforeRestart {
    _dir: tempfile::TempDir,
    cfg: deed_node::config::Config,
    model: u64,
    executor: deed_types::Address,
    requester: deed_types::SecretKey,
    /// The sender's nonce before the four calls.
    nonce: u64,
    served: Vec<deed_types::SignedTransaction>,
}

/// Publishes the MLP on a node keeping its state on disk, restarts it so that it
/// stands still (no block lands), serves four direct calls from one sender there
/// and stops it: their nonces (the sender's next four) wait in its mempool when it
/// stops.
async fn four_calls_served_before_a_restart(name: &str) -> ServedBeforeRestart {
    let (dir, cfg, node, c, p, executor) = serving_mlp_on_disk(name).await;
    let requester = user(2);
    let nonce = c.nonce(&requester).await;
    drop(c);
    node.stop().await;
    let mut slow = cfg.clone();
    slow.block_interval_ms = 60_000;
    slow.heartbeat_ms = 60_000;
    let node = start_node(slow, Storage::Disk).await;
    let c = Client::new(&node);
    let mut served = Vec::new();
    for _ in 0..4 {
        let (stx, req) = direct_mlp_request(&c, &requester, p.model, executor).await;
        let r: DirectResponse = c.post_json("/v1/execute", &req).await.json();
        assert_eq!(r.request, stx.hash());
        served.push(stx);
    }
    let nonces: Vec<u64> = served.iter().map(|s| s.tx.nonce).collect();
    assert_eq!(nonces, (nonce..nonce + 4).collect::<Vec<_>>());
    drop(c);
    node.stop().await;
    ServedBeforeRestart {
        _dir: dir,
        cfg,
        model: p.model,
        executor,
        requester,
        nonce,
        served,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_calls_of_one_sender_served_before_a_restart_all_settle_after_it() {
    // The restarted node queues the four calls again, in nonce order (its mempool
    // admits only a sender's next nonce), and every one settles; the sender's next
    // request is served.
    let s = four_calls_served_before_a_restart("direct-several").await;
    let node = start_node(s.cfg.clone(), Storage::Disk).await;
    let c = Client::new(&node);
    for stx in &s.served {
        let tx: TxView = c.wait_tx(&stx.hash()).await;
        assert!(matches!(tx.state, TxState::Included { .. }), "{tx:?}");
    }
    assert_eq!(c.nonce(&s.requester).await, s.nonce + 4);
    let (stx, req) = direct_mlp_request(&c, &s.requester, s.model, s.executor).await;
    assert_eq!(stx.tx.nonce, s.nonce + 4);
    let r: DirectResponse = c.post_json("/v1/execute", &req).await.json();
    assert_eq!(r.request, stx.hash());
    drop(c);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_calls_a_full_mempool_refused_at_a_restart_settle_after_a_block() {
    // The node restarts with room for two transactions: it queues the first two
    // served calls at start, and the other two once a block has made room.
    let s = four_calls_served_before_a_restart("direct-full").await;
    let mut small = s.cfg.clone();
    small.limits.max_mempool = 2;
    let node = start_node(small, Storage::Disk).await;
    let c = Client::new(&node);
    wait_for(|| async { (c.nonce(&s.requester).await == s.nonce + 4).then_some(()) }).await;
    for stx in &s.served {
        let tx: TxView = c.wait_tx(&stx.hash()).await;
        assert!(matches!(tx.state, TxState::Included { .. }), "{tx:?}");
    }
    drop(c);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_interrupted_by_a_restart_resumes_with_only_the_missing_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = disk_storage_config(&dir);
    let node = start_node(cfg.clone(), Storage::Disk).await;
    let c = Client::new(&node);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 11 % 253) as u8).collect();
    let m = Manifest::build(&data, 1024).unwrap();
    let chunk = |i: u32| {
        let r = m.chunk_range(i).unwrap();
        data[r.start as usize..r.end as usize].to_vec()
    };
    let _: UploadStatus = c.post_json("/v1/blobs/uploads", &m).await.json();
    for i in [0, 3, 9] {
        let r = c
            .put(&format!("/v1/blobs/uploads/{}/chunks/{i}", m.id), chunk(i))
            .await;
        assert_eq!(r.status, 200);
    }
    drop(c);
    node.stop().await;

    let node = start_node(cfg, Storage::Disk).await;
    let c = Client::new(&node);
    // The node still knows the upload: chunks go on arriving without the manifest
    // being sent again, and it names exactly the ones it lacks.
    let stored: ChunkStored = c
        .put(&format!("/v1/blobs/uploads/{}/chunks/1", m.id), chunk(1))
        .await
        .json();
    assert_eq!((stored.cid, stored.index, stored.size), (m.id, 1, 1024));
    let st: UploadStatus = c.get(&format!("/v1/blobs/uploads/{}", m.id)).await.json();
    assert_eq!(st.missing, vec![2, 4, 5, 6, 7, 8]);
    assert!(!st.complete);
    // A client that uploads the same bytes sends only those.
    let client = deed_client::Client::new(&c.base).unwrap();
    let up = client.upload_chunked(&data, 1024, None).await.unwrap();
    assert_eq!((up.chunks_sent, up.chunks_total), (6, 10));
    assert_eq!(c.get(&format!("/v1/blobs/{}", m.id)).await.body, data);
    // A finished upload is forgotten.
    c.put(&format!("/v1/blobs/uploads/{}/chunks/2", m.id), chunk(2))
        .await
        .expect_error(ErrorCode::NotFound);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_uploads_expire_with_their_staged_chunks_and_used_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk_storage_config(&dir);
    cfg.limits.upload_idle_secs = 2;
    let node = start_node(cfg.clone(), Storage::Disk).await;
    let c = Client::new(&node);
    let blob = |seed: u32| -> (Vec<u8>, Manifest) {
        let data: Vec<u8> = (0..6_000u32).map(|i| (i * seed % 241) as u8).collect();
        let m = Manifest::build(&data, 1024).unwrap();
        (data, m)
    };
    let (idle_data, idle) = blob(13);
    let (used_data, used) = blob(17);
    for (data, m) in [(&idle_data, &idle), (&used_data, &used)] {
        let _: UploadStatus = c.post_json("/v1/blobs/uploads", m).await.json();
        for i in [0, 2] {
            let r = m.chunk_range(i).unwrap();
            let part = data[r.start as usize..r.end as usize].to_vec();
            let stored: ChunkStored = c
                .put(&format!("/v1/blobs/uploads/{}/chunks/{i}", m.id), part)
                .await
                .json();
            assert_eq!(stored.index, i);
        }
    }
    // One upload is asked about every 200 ms, the other left alone until the
    // node reports an expiry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let st: UploadStatus = c
            .get(&format!("/v1/blobs/uploads/{}", used.id))
            .await
            .json();
        assert_eq!(st.missing, vec![1, 3, 4, 5], "a used upload must stay");
        let metrics = c.metrics().await;
        if metrics.contains("deed_uploads_expired_total 1") {
            c.get(&format!("/v1/blobs/uploads/{}", idle.id))
                .await
                .expect_error(ErrorCode::NotFound);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle upload never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Its chunks went with it: the node starts that upload from nothing.
    let st: UploadStatus = c.post_json("/v1/blobs/uploads", &idle).await.json();
    assert_eq!(st.missing, (0..6).collect::<Vec<u32>>());
    drop(c);
    node.stop().await;

    // Nothing of the expired upload comes back after a restart; the used one does.
    cfg.limits.upload_idle_secs = 0;
    let node = start_node(cfg, Storage::Disk).await;
    let c = Client::new(&node);
    let st: UploadStatus = c
        .get(&format!("/v1/blobs/uploads/{}", used.id))
        .await
        .json();
    assert_eq!(st.missing, vec![1, 3, 4, 5]);
    let st: UploadStatus = c
        .get(&format!("/v1/blobs/uploads/{}", idle.id))
        .await
        .json();
    assert_eq!(
        st.missing,
        (0..6).collect::<Vec<u32>>(),
        "re-posted, so open again"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_challenges_a_wrong_receipt() {
    let (node, c) = dev_node().await;
    let (owner, requester, liar) = (user(0), user(1), user(3));
    let p = publish_mlp(&c, &owner, "lied-about", 5).await;
    c.act(
        &liar,
        Action::Bond {
            amount: 10_000,
            endpoint: "http://liar.invalid".into(),
            price: 1,
            models: vec![ModelId(p.model)],
        },
    )
    .await;
    let tx = c
        .act(
            &requester,
            mlp_request(p.model, None, Mode::Optimistic, Some(liar.address())),
        )
        .await;
    let job = tx.created.unwrap();
    let (out, _) = mlp_local();
    // The right output over a made-up trace: consistent, so the ledger takes it, and
    // only a dispute can show the trace is not the model's.
    let mut leaves = vec![Hash::of(b"not the trace"); p.steps as usize];
    leaves.push(deed_runtime::trace::output_leaf(p.steps, &Hash::of(&out)));
    let trace = deed_ledger::trace::Trace::new(leaves);
    c.act(
        &liar,
        Action::SubmitReceipt {
            job: JobId(job),
            receipt: Receipt {
                output: Output::Inline(out),
                trace_root: trace.root(),
                steps: trace.len() as u64,
                output_proof: deed_ledger::trace::output_proof(&trace),
            },
        },
    )
    .await;
    let watcher = c.status().await.watcher.unwrap();
    let d = wait_for(|| async {
        let j = c.job(job).await;
        j.dispute
    })
    .await;
    let dv: DisputeView = c.get(&format!("/v1/disputes/{d}")).await.json();
    assert_eq!(dv.job, job);
    assert_eq!(dv.challenger, watcher);
    assert_eq!(dv.defender, liar.address());
    assert_eq!(dv.slashed, None);
    // The liar cannot defend its trace: it loses by timeout, and the dispute shows
    // what was taken from its stake.
    let resolved = wait_for(|| async {
        let dv: DisputeView = c.get(&format!("/v1/disputes/{d}")).await.json();
        (dv.phase == "resolved").then_some(dv)
    })
    .await;
    assert_eq!(resolved.winner.as_deref(), Some("challenger"));
    let acc: api::AccountView = c
        .get(&format!("/v1/accounts/{}", liar.address()))
        .await
        .json();
    let stake: u128 = acc.executor.unwrap().stake.parse().unwrap();
    let slashed: u128 = resolved.slashed.unwrap().parse().unwrap();
    assert!(slashed > 0);
    assert_eq!(stake, 10_000 - slashed);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = disk_storage_config(&dir);
    let node = start_node(cfg.clone(), Storage::Disk).await;
    let c = Client::new(&node);
    let (alice, bob) = (user(0), user(1));
    let t = c
        .act(
            &alice,
            Action::Transfer {
                to: bob.address(),
                amount: 77,
            },
        )
        .await;
    let blob = c.upload(b"kept across restarts", 1024).await;
    let before = c.status().await;
    let bal = c.balance(&bob).await;
    drop(c);
    node.stop().await;

    let node = start_node(cfg, Storage::Disk).await;
    let c = Client::new(&node);
    let after = c.status().await;
    assert_eq!(after.height, before.height);
    assert_eq!(after.state_root, before.state_root);
    assert_eq!(after.block_hash, before.block_hash);
    assert_eq!(c.balance(&bob).await, bal);
    let again: TxView = c.get(&format!("/v1/transactions/{}", t.hash)).await.json();
    assert_eq!(again, t);
    assert_eq!(
        c.get(&format!("/v1/blobs/{blob}")).await.body,
        b"kept across restarts"
    );
    // And the chain goes on from there.
    c.act(
        &alice,
        Action::Transfer {
            to: bob.address(),
            amount: 1,
        },
    )
    .await;
    assert_eq!(c.balance(&bob).await, bal + 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_roles_gate_routes() {
    let cfg = test_config(Roles::parse_list("validator").unwrap());
    let node = start_node(cfg, Storage::Memory).await;
    let c = Client::new(&node);
    let doc: serde_json::Value = c.get("/v1/openapi.json").await.json();
    assert_eq!(doc["openapi"].as_str().map(|s| &s[..2]), Some("3."));
    for (method, path) in deed_node::openapi::documented_routes() {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} missing");
    }
    for schema in ["Status", "JobView", "DirectResponse", "ErrorBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let status = c.status().await;
    assert_eq!(status.roles, vec!["validator"]);
    assert_eq!(status.executor, None);
    c.post_json(
        "/v1/execute",
        &serde_json::json!({"tx": "0x", "inputs": []}),
    )
    .await
    .expect_error(ErrorCode::RoleDisabled);
    c.post_json("/v1/blobs/uploads", &Manifest::build(b"x", 1024).unwrap())
        .await
        .expect_error(ErrorCode::RoleDisabled);
    node.stop().await;
}
