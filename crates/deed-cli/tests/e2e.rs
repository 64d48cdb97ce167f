//! End to end: a real `deed dev` child process on loopback, driven by the real `deed`
//! binary and the HTTP API. One network per test keeps the suite fast; each test walks
//! through a whole story and checks balances to the unit.

// Helpers outside `#[test]` functions panic on purpose: a failed step fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use deed_cli::devnode::{free_port, DevNode};
use deed_cli::tensor_io::read_tensor;
use deed_client::api::ErrorCode;
use deed_client::{Client, ClientError};
use deed_store::Manifest;
use deed_types::{Action, Address, JobInput, Mode, ModelId, SecretKey};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_deed");

fn example(f: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/mlp")
        .join(f)
}

struct Net {
    node: DevNode,
    port: u16,
    home: tempfile::TempDir,
    tmp: tempfile::TempDir,
    data: PathBuf,
}

impl Net {
    fn start() -> Net {
        let tmp = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let data = tmp.path().join("node");
        let port = free_port().unwrap();
        let node = DevNode::start(Path::new(BIN), &data, port, Duration::from_secs(60)).unwrap();
        assert!(node.keys.len() >= 4, "dev accounts: {:?}", node.banner);
        Net {
            node,
            port,
            home,
            tmp,
            data,
        }
    }

    fn restart(&mut self) {
        self.node.kill();
        self.node = DevNode::start(
            Path::new(BIN),
            &self.data,
            self.port,
            Duration::from_secs(60),
        )
        .unwrap();
    }

    fn key(&self, i: usize) -> SecretKey {
        self.node.keys[i].clone()
    }

    fn run(&self, key: Option<&str>, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.arg("--json")
            .args(args)
            .env("DEED_NODE", &self.node.url)
            .env("DEED_HOME", self.home.path())
            .env("DEED_PASSWORD", "e2e passphrase")
            .env_remove("DEED_KEY")
            .stdin(Stdio::null())
            .current_dir(self.tmp.path());
        if let Some(k) = key {
            c.env("DEED_KEY", k);
        }
        c.output().unwrap()
    }

    /// Runs and expects success; returns the JSON it printed.
    fn ok(&self, key: Option<&str>, args: &[&str]) -> Value {
        let out = self.run(key, args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "deed {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Runs and expects failure; returns (exit code, error message).
    fn fails(&self, key: Option<&str>, args: &[&str]) -> (i32, String) {
        let out = self.run(key, args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "deed {args:?} should fail: {stdout}");
        let msg = serde_json::from_str::<Value>(stdout.trim())
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), msg)
    }

    fn balance(&self, a: &Address) -> u128 {
        let v = self.ok(None, &["balance", &a.to_string()]);
        v["balance"].as_str().unwrap().parse().unwrap()
    }

    fn wait_final(&self, job: u64) -> Value {
        self.wait_status(job, "finalized")
    }

    fn wait_status(&self, job: u64, status: &str) -> Value {
        for _ in 0..600 {
            let j = self.ok(None, &["receipt", "show", &job.to_string()]);
            if j["status"] == status {
                return j;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("job {job} did not reach status {status}");
    }
}

/// Runs `f` to its end on a runtime of its own (the tests are synchronous).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn hexkey(k: &SecretKey) -> String {
    hex::encode(k.to_bytes())
}

fn total(job: &Value) -> u128 {
    job["fees"]["total"].as_str().unwrap().parse().unwrap()
}

/// `deed` with only DEED_HOME (and `env`) set, no terminal: the keystore needs no
/// node.
fn deed_keys(home: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, Value, String) {
    let mut c = Command::new(BIN);
    c.arg("--json")
        .args(args)
        .env("DEED_HOME", home)
        .env_remove("DEED_PASSWORD")
        .env_remove("DEED_KEY")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), v, format!("{stdout}{stderr}"))
}

#[test]
fn keystore_encrypts_at_rest_and_reads_v3_files_and_old_plain_keys() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let pw = [("DEED_PASSWORD", "s3cret")];

    // No passphrase and no terminal: a clear refusal, nothing written.
    let (ok, v, text) = deed_keys(h, &[], &["keys", "new", "alice"]);
    assert!(!ok, "{text}");
    let msg = v["error"].as_str().unwrap_or(&text).to_owned();
    assert!(
        msg.contains("needs a passphrase") && msg.contains("--password-file"),
        "{msg}"
    );
    assert!(!h.join("keys/alice.json").exists());

    // A new key is a keystore v3 file that does not hold the secret in the clear.
    let (ok, alice, text) = deed_keys(h, &pw, &["keys", "new", "alice"]);
    assert!(ok, "{text}");
    assert_eq!(alice["encrypted"], true);
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(h.join("keys/alice.json")).unwrap()).unwrap();
    assert_eq!(file["version"], 3);
    assert_eq!(file["crypto"]["kdf"], "scrypt");
    assert_eq!(file["crypto"]["kdfparams"]["n"], 8192);
    assert_eq!(file["crypto"]["cipher"], "aes-128-ctr");

    // Listing needs no passphrase; showing the key by name opens it.
    let (ok, listed, text) = deed_keys(h, &[], &["keys", "list"]);
    assert!(ok, "{text}");
    assert_eq!(listed["keys"][0]["address"], alice["address"]);
    let (ok, shown, text) = deed_keys(h, &pw, &["keys", "show", "alice"]);
    assert!(ok, "{text}");
    assert_eq!(shown["address"], alice["address"]);

    // The wrong passphrase is refused by name; a password file works.
    let (ok, v, text) = deed_keys(h, &[("DEED_PASSWORD", "guess")], &["keys", "show", "alice"]);
    assert!(!ok);
    let msg = v["error"].as_str().unwrap_or(&text).to_owned();
    assert!(msg.contains("wrong passphrase for key `alice`"), "{msg}");
    let pw_file = h.join("pw.txt");
    std::fs::write(&pw_file, "s3cret\n").unwrap();
    let pw_arg = pw_file.to_str().unwrap();
    let (ok, shown, text) = deed_keys(
        h,
        &[],
        &["keys", "show", "alice", "--password-file", pw_arg],
    );
    assert!(ok, "{text}");
    assert_eq!(shown["address"], alice["address"]);

    // The test vector of the Web3 Secret Storage Definition imports with its own
    // passphrase and signs as the key it holds.
    let vector = h.join("vector.json");
    std::fs::write(&vector, SPEC_VECTOR).unwrap();
    let spec_key = SecretKey::from_bytes(
        &hex::decode("7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d")
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap();
    let vpath = vector.to_str().unwrap();
    let (ok, v, text) = deed_keys(h, &pw, &["keys", "import", "spec", vpath]);
    assert!(!ok && text.contains("wrong passphrase"), "{v} {text}");
    let tp = [("DEED_PASSWORD", "testpassword")];
    let (ok, imported, text) = deed_keys(h, &tp, &["keys", "import", "spec", vpath]);
    assert!(ok, "{text}");
    assert_eq!(imported["address"], spec_key.address().to_string());
    let (ok, shown, text) = deed_keys(h, &tp, &["keys", "show", "spec"]);
    assert!(ok, "{text}");
    assert_eq!(shown["address"], spec_key.address().to_string());
    // A v3 file works as --key directly too.
    let (ok, shown, text) = deed_keys(h, &tp, &["keys", "show", vpath]);
    assert!(ok, "{text}");
    assert_eq!(shown["address"], spec_key.address().to_string());

    // A plain hex key file from an earlier version still loads, with a warning.
    let old = SecretKey::from_seed(b"old plain key");
    std::fs::write(h.join("keys/old.key"), hex::encode(old.to_bytes())).unwrap();
    let (ok, shown, text) = deed_keys(h, &[], &["keys", "show", "old"]);
    assert!(ok, "{text}");
    assert_eq!(shown["address"], old.address().to_string());
    assert!(text.contains("unencrypted"), "{text}");
    // The escape hatch for throwaway dev keys: no passphrase needed.
    let (ok, dev, text) = deed_keys(h, &[], &["keys", "new", "dev", "--insecure-plaintext"]);
    assert!(ok, "{text}");
    assert_eq!(dev["encrypted"], false);
    let (ok, listed, _) = deed_keys(h, &[], &["keys", "list"]);
    assert!(ok);
    let names: Vec<(&str, bool)> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap(),
                k["encrypted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("alice", true),
            ("dev", false),
            ("old", false),
            ("spec", true)
        ]
    );
}

/// The PBKDF2 test vector of the Web3 Secret Storage Definition (passphrase
/// "testpassword").
const SPEC_VECTOR: &str = include_str!("data/web3-pbkdf2-vector.json");

#[test]
fn publish_infer_verify_pay_and_restart() {
    let mut net = Net::start();
    let (owner, user, tuner, heir) = (net.key(0), net.key(1), net.key(2), net.key(3));

    // Keys: the owner signs by keystore name, the user by hex, the tuner by key file.
    let imported = net.ok(None, &["keys", "import", "owner", &hexkey(&owner)]);
    assert_eq!(imported["address"], owner.address().to_string());
    let fresh = net.ok(None, &["keys", "new", "spare"]);
    let listed = net.ok(None, &["keys", "list"]);
    let names: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["owner", "spare"]);
    assert_eq!(
        net.ok(None, &["keys", "show", "spare"])["address"],
        fresh["address"]
    );
    let tuner_file = net.tmp.path().join("tuner.key");
    std::fs::write(&tuner_file, hexkey(&tuner)).unwrap();
    let (o, u, t) = (
        Some("owner"),
        Some(hexkey(&user)),
        Some(tuner_file.to_str().unwrap()),
    );
    let u = u.as_deref();

    // Publish two versions; the second upload of the same file sends no chunk.
    let model = example("model.onnx");
    let created = net.ok(
        o,
        &[
            "model",
            "create",
            "base",
            "--price",
            "100",
            "--description",
            "an MLP",
        ],
    );
    let base = created["id"].as_u64().unwrap();
    let v1 = net.ok(
        o,
        &[
            "model",
            "publish",
            "base",
            model.to_str().unwrap(),
            "--notes",
            "one",
        ],
    );
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["chunks_sent"], 1);
    let v2 = net.ok(
        o,
        &[
            "model",
            "publish",
            "base",
            model.to_str().unwrap(),
            "--notes",
            "two",
        ],
    );
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["chunks_sent"], 0);
    let versions = net.ok(None, &["model", "versions", &base.to_string()]);
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let by_owner = format!("{}/base", owner.address());
    assert_eq!(net.ok(None, &["model", "show", &by_owner])["id"], base);
    let dl = net.tmp.path().join("dl.onnx");
    net.ok(
        None,
        &[
            "model",
            "download",
            &format!("{base}@1"),
            "-o",
            dl.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&dl).unwrap(), std::fs::read(&model).unwrap());

    // Mode none, direct: outputs and trace root equal a local `deed run`.
    let x = example("x.npy");
    let x = x.to_str().unwrap();
    let owner_before = net.balance(&owner.address());
    let user_before = net.balance(&user.address());
    let out_dir = net.tmp.path().join("out");
    let none = net.ok(
        u,
        &[
            "infer",
            &format!("{base}@1"),
            "--mode",
            "none",
            "-i",
            x,
            "--out",
            out_dir.to_str().unwrap(),
            "--wait",
            "included",
        ],
    );
    let local = net.ok(
        None,
        &[
            "run",
            model.to_str().unwrap(),
            "-i",
            x,
            "--out",
            net.tmp.path().join("local").to_str().unwrap(),
        ],
    );
    assert_eq!(none["trace_root"], local["trace_root"]);
    let name = local["outputs"][0]["name"].as_str().unwrap();
    let remote_y = read_tensor(&out_dir.join(format!("{name}.npy"))).unwrap();
    let local_y = read_tensor(&net.tmp.path().join("local").join(format!("{name}.npy"))).unwrap();
    assert_eq!(remote_y.encode(), local_y.encode());
    let none_job = none["job"].as_u64().unwrap();

    // Optimistic, waiting for finality; then verify by re-execution.
    let opt = net.ok(u, &["infer", &base.to_string(), "-i", x, "--wait", "final"]);
    assert_eq!(opt["status"], "finalized");
    let opt_job = opt["job"].as_u64().unwrap();
    let verdict = net.ok(None, &["receipt", "verify", &opt_job.to_string()]);
    assert_eq!(verdict["verdict"], "valid");
    assert_eq!(verdict["trace_root"], local["trace_root"]);
    let by_hash = net.ok(None, &["receipt", "show", opt["request"].as_str().unwrap()]);
    assert_eq!(by_hash["id"], opt_job);
    let none_final = net.wait_final(none_job);
    assert_eq!(
        net.ok(None, &["receipt", "verify", &none_job.to_string()])["verdict"],
        "valid"
    );

    // Replicated: the ledger picks both of the dev network's executors; their
    // revealed receipts agree with each other and with the local run.
    let executors: Vec<Value> = net.ok(None, &["status"])["executors"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(executors.len(), 2, "{executors:?}");
    let rep = net.ok(
        u,
        &[
            "infer",
            &base.to_string(),
            "-i",
            x,
            "--mode",
            "replicated:2",
            "--wait",
            "final",
        ],
    );
    assert_eq!(rep["agree"], true);
    let rep_job = &rep["job"];
    assert_eq!(rep_job["status"], "finalized");
    assert_eq!(rep_job["mode"], "replicated:2");
    let mut assigned = rep_job["executors"].as_array().unwrap().clone();
    assigned.sort_by_key(|a| a.to_string());
    let mut all = executors.clone();
    all.sort_by_key(|a| a.to_string());
    assert_eq!(assigned, all);
    for r in rep_job["receipts"].as_array().unwrap() {
        assert_eq!(r["trace_root"], local["trace_root"]);
    }
    let rep_id = rep_job["id"].as_u64().unwrap();
    let verdict = net.ok(None, &["receipt", "verify", &rep_id.to_string()]);
    assert_eq!(verdict["verdict"], "valid");
    assert_eq!(verdict["receipts"].as_array().unwrap().len(), 2);

    // Fees stay readable after payout, and add up: royalty, each executor's price,
    // the protocol fee.
    let prices: Vec<u128> = executors
        .iter()
        .map(|e| {
            let st = net.ok(None, &["executor", "status", e.as_str().unwrap()]);
            st["executor"]["price"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    for (job, k) in [
        (&none_final, 1),
        (&net.wait_final(opt_job), 1),
        (rep_job, 2),
    ] {
        let f = &job["fees"];
        assert_eq!(f["royalty"], "100", "{job}");
        let fees: Vec<u128> = f["executor_fees"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(fees.len(), k);
        assert!(
            fees.iter().all(|f| prices.contains(f)),
            "{fees:?} {prices:?}"
        );
        let protocol: u128 = f["protocol_fee"].as_str().unwrap().parse().unwrap();
        assert_eq!(total(job), 100 + fees.iter().sum::<u128>() + protocol);
    }

    // Royalty: 100 per job to the owner; the user paid exactly the escrows and tx fees.
    assert_eq!(net.balance(&owner.address()), owner_before + 300);
    let paid = total(&none_final) + total(&net.wait_final(opt_job)) + total(rep_job) + 3;
    assert_eq!(net.balance(&user.address()), user_before - paid);

    // Lineage: a fine-tune paying 20% of its royalty up to `base`.
    let ft = net.ok(
        t,
        &[
            "model",
            "publish",
            "tuned",
            model.to_str().unwrap(),
            "--price",
            "1000",
            "--parent",
            &base.to_string(),
            "--upstream-share",
            "20",
        ],
    );
    let ft_id = ft["model"].as_u64().unwrap();
    let (o0, t0) = (net.balance(&owner.address()), net.balance(&tuner.address()));
    let fj = net.ok(
        u,
        &["infer", &ft_id.to_string(), "-i", x, "--wait", "final"],
    );
    assert_eq!(fj["status"], "finalized");
    assert_eq!(net.balance(&owner.address()), o0 + 200);
    assert_eq!(net.balance(&tuner.address()), t0 + 800);

    // Transfers: tokens, then the model; the new owner sets terms.
    let h0 = net.balance(&heir.address());
    net.ok(u, &["transfer", &heir.address().to_string(), "5"]);
    assert_eq!(net.balance(&heir.address()), h0 + 5);
    let moved = net.ok(
        o,
        &[
            "model",
            "transfer",
            &base.to_string(),
            &heir.address().to_string(),
        ],
    );
    assert_eq!(moved["model"]["owner"], heir.address().to_string());
    let hk = hexkey(&heir);
    let priced = net.ok(Some(&hk), &["model", "price", &base.to_string(), "7"]);
    assert_eq!(priced["model"]["price"], "7");
    let (code, msg) = net.fails(o, &["model", "price", &base.to_string(), "9"]);
    assert_eq!(code, 1);
    assert!(!msg.is_empty());
    net.ok(Some(&hk), &["model", "deprecate", &format!("{base}@1")]);
    let (_, msg) = net.fails(
        u,
        &[
            "infer",
            &format!("{base}@1"),
            "--mode",
            "none",
            "-i",
            x,
            "--wait",
            "included",
        ],
    );
    assert!(msg.to_lowercase().contains("deprecated"), "{msg}");

    // Bad input: each a clear error and a non-zero exit.
    let (_, msg) = net.fails(u, &["infer", "999", "-i", x]);
    assert!(msg.contains("999"), "{msg}");
    let (_, msg) = net.fails(u, &["infer", &format!("{base}@9"), "-i", x]);
    assert!(msg.contains("no version 9"), "{msg}");
    let (_, msg) = net.fails(u, &["infer", &base.to_string(), "-i", &format!("nope={x}")]);
    assert!(msg.contains("no input `nope`"), "{msg}");
    let wrong = net.tmp.path().join("wrong.npy");
    deed_cli::tensor_io::write_npy(
        &wrong,
        &deed_types::Tensor::from_vec(vec![2, 2], vec![0f32; 4]).unwrap(),
    )
    .unwrap();
    let (_, msg) = net.fails(
        u,
        &["infer", &base.to_string(), "-i", wrong.to_str().unwrap()],
    );
    assert!(msg.contains("shape"), "{msg}");
    deed_cli::tensor_io::write_npy(
        &wrong,
        &deed_types::Tensor::from_vec(vec![3, 8], vec![0i64; 24]).unwrap(),
    )
    .unwrap();
    let (_, msg) = net.fails(
        u,
        &["infer", &base.to_string(), "-i", wrong.to_str().unwrap()],
    );
    assert!(msg.contains("dtype"), "{msg}");
    let (_, msg) = net.fails(
        u,
        &[
            "infer",
            &base.to_string(),
            "-i",
            x,
            "--mode",
            "replicated:3",
        ],
    );
    assert!(msg.to_lowercase().contains("executor"), "{msg}");
    let garbage = net.tmp.path().join("garbage.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    let (_, msg) = net.fails(o, &["model", "publish", "base", garbage.to_str().unwrap()]);
    assert!(msg.contains("not a model Deed can run"), "{msg}");
    let (_, msg) = net.fails(None, &["model", "create", "nokey"]);
    assert!(msg.contains("--key"), "{msg}");
    corrupt_uploads_change_nothing(&net.node.url);

    // A job whose input does not fit the model, sent past the CLI (which checks
    // inputs first): its executor declines it rather than miss the deadline, and
    // `receipt verify` finds the decline valid.
    let declined = {
        let c = Client::new(&net.node.url).unwrap();
        block_on(async {
            let request = Action::RequestJob {
                model: ModelId(base),
                version: None,
                input: JobInput::Inline(vec![1, 2, 3]),
                mode: Mode::Optimistic,
                max_fee: 10_000,
                executor: None,
            };
            let stx = c.send_action(&user, request, 1).await.unwrap();
            let tx = c
                .wait_included(&stx.hash(), Duration::from_secs(60))
                .await
                .unwrap();
            tx.created.unwrap()
        })
    };
    net.wait_status(declined, "declined");
    let v = net.ok(None, &["receipt", "verify", &declined.to_string()]);
    assert_eq!(
        (&v["verdict"], &v["declined"]),
        (&"valid".into(), &true.into()),
        "{v}"
    );
    assert!(v["fault"].as_str().unwrap().contains("tensor list"), "{v}");

    // Restart: everything committed survives.
    let models_before = net.ok(None, &["model", "list"]);
    let balances: Vec<u128> = [&owner, &user, &tuner, &heir]
        .iter()
        .map(|k| net.balance(&k.address()))
        .collect();
    let job_before = net.ok(None, &["receipt", "show", &opt_job.to_string()]);
    // An upload interrupted by the restart: one chunk of three arrived.
    let big: Vec<u8> = (0..(5u32 << 19)).map(|i| (i % 253) as u8).collect();
    let big_file = net.tmp.path().join("big.bin");
    std::fs::write(&big_file, &big).unwrap();
    let big_m = Manifest::build(&big, deed_client::DEFAULT_CHUNK_SIZE).unwrap();
    assert_eq!(big_m.chunk_count(), 3);
    {
        let c = Client::new(&net.node.url).unwrap();
        block_on(async {
            c.upload_start(&big_m).await.unwrap();
            c.upload_chunk(&big_m.id, 1, big[1 << 20..2 << 20].to_vec())
                .await
                .unwrap();
        });
    }
    net.restart();
    // It resumes: only the two missing chunks are sent.
    let put = net.ok(None, &["blob", "put", big_file.to_str().unwrap()]);
    assert_eq!(put["cid"], big_m.id.to_string());
    assert_eq!(
        (put["chunks_sent"].as_u64(), put["chunks_total"].as_u64()),
        (Some(2), Some(3))
    );
    let back = net.tmp.path().join("big.back");
    net.ok(
        None,
        &[
            "blob",
            "get",
            &big_m.id.to_string(),
            "--out",
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&back).unwrap(), big);
    assert_eq!(net.ok(None, &["model", "list"]), models_before);
    let after: Vec<u128> = [&owner, &user, &tuner, &heir]
        .iter()
        .map(|k| net.balance(&k.address()))
        .collect();
    assert_eq!(after, balances);
    assert_eq!(
        net.ok(None, &["receipt", "show", &opt_job.to_string()]),
        job_before
    );
    assert_eq!(
        net.ok(None, &["receipt", "verify", &opt_job.to_string()])["verdict"],
        "valid"
    );
    let again = net.ok(u, &["infer", &base.to_string(), "--mode", "none", "-i", x]);
    assert_eq!(again["trace_root"], local["trace_root"]);
}

/// Chunks that do not match the manifest, and a manifest whose id lies, are refused
/// with typed errors and leave no blob behind.
fn corrupt_uploads_change_nothing(url: &str) {
    block_on(async {
        let c = Client::new(url).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let m = Manifest::build(&data, 64 << 10).unwrap();
        let st = c.upload_start(&m).await.unwrap();
        assert_eq!(st.missing, vec![0, 1, 2, 3]);
        let mut bad = data[..64 << 10].to_vec();
        bad[5] ^= 1;
        let e = c.upload_chunk(&m.id, 0, bad).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::HashMismatch), "{e}");
        let e = c
            .upload_chunk(&m.id, 1, data[..10].to_vec())
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Api { .. }), "{e}");
        let e = c.upload_finish(&m.id).await.unwrap_err();
        assert!(matches!(e, ClientError::Api { .. }), "{e}");
        assert_eq!(c.blob_size(&m.id).await.unwrap(), None);
        // Resume: only the chunks still missing are sent.
        let stored = c
            .upload_chunk(&m.id, 2, data[2 << 16..3 << 16].to_vec())
            .await
            .unwrap();
        assert_eq!((stored.index, stored.size), (2, 64 << 10));
        assert_eq!(c.upload_status(&m.id).await.unwrap().missing, vec![0, 1, 3]);
        let up = c.upload_chunked(&data, 64 << 10, None).await.unwrap();
        assert_eq!(up.chunks_sent, 3);
        assert_eq!(c.download(&m.id, None).await.unwrap(), data);
        assert_eq!(
            c.download_range(&m.id, 70_000..140_000).await.unwrap(),
            data[70_000..140_000]
        );
    });
}
