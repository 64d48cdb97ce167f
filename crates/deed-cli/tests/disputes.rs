//! Disputes end to end: `deed dev --fault …` child processes whose executor cheats,
//! whose watcher challenges correct results, or which stop answering, driven by the
//! real `deed` binary. The node's own honest roles play the other side, the bisection
//! runs through the ledger to the referee (or a deadline), and the verdict, the
//! slash and the refund are read back through `deed dispute` and `deed receipt`.

// Helpers outside `#[test]` functions panic on purpose: a failed step fails the test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deed_cli::devnode::{free_port, DevNode};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_deed");

struct Net {
    node: DevNode,
    home: tempfile::TempDir,
    tmp: tempfile::TempDir,
}

impl Net {
    fn start(faults: &[&str]) -> Net {
        let mut args = Vec::new();
        for f in faults {
            args.extend(["--fault", f]);
        }
        Net::start_args(&args)
    }

    /// A `deed dev` process with these extra arguments.
    fn start_args(args: &[&str]) -> Net {
        let tmp = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let node = DevNode::start_with(
            Path::new(BIN),
            &tmp.path().join("node"),
            free_port().unwrap(),
            Duration::from_secs(60),
            args,
        )
        .unwrap();
        Net { node, home, tmp }
    }

    /// The address printed on the banner line starting with `role`.
    fn banner(&self, role: &str) -> Vec<String> {
        self.node
            .banner
            .iter()
            .filter_map(|l| l.strip_prefix(role))
            .map(|a| a.trim().to_owned())
            .collect()
    }

    fn ok(&self, key: Option<&str>, args: &[&str]) -> Value {
        let mut c = Command::new(BIN);
        c.arg("--json")
            .args(args)
            .env("DEED_NODE", &self.node.url)
            .env("DEED_HOME", self.home.path())
            .env_remove("DEED_KEY")
            .current_dir(self.tmp.path());
        if let Some(k) = key {
            c.env("DEED_KEY", k);
        }
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "deed {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn text(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("DEED_NODE", &self.node.url)
            .env("DEED_HOME", self.home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "deed {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn balance(&self, a: &str) -> u128 {
        self.ok(None, &["balance", a])["balance"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn stake(&self, a: &str) -> (u128, Option<u64>) {
        let st = &self.ok(None, &["executor", "status", a])["executor"];
        (
            st["stake"].as_str().unwrap().parse().unwrap(),
            st["jailed_until"].as_u64(),
        )
    }

    /// Publishes the example MLP and requests an optimistic job; returns the job id.
    fn request(&self) -> u64 {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp");
        self.request_with("mlp", &examples.join("model.onnx"), &examples.join("x.npy"))
    }

    /// Publishes `model` as `name` and requests an optimistic job on `x`; returns the
    /// job id.
    fn request_with(&self, name: &str, model: &Path, x: &Path) -> u64 {
        self.publish(name, model);
        let job = self.infer(name, x, "optimistic", "included");
        job["job"].as_u64().unwrap()
    }

    fn publish(&self, name: &str, model: &Path) {
        let owner = hex::encode(self.node.keys[0].to_bytes());
        self.ok(Some(&owner), &["model", "create", name, "--price", "10"]);
        self.ok(
            Some(&owner),
            &["model", "publish", name, model.to_str().unwrap()],
        );
    }

    /// `deed infer` of the owner's model `name` by dev account 1.
    fn infer(&self, name: &str, x: &Path, mode: &str, wait: &str) -> Value {
        let user = hex::encode(self.node.keys[1].to_bytes());
        let model = format!("{}/{name}", self.node.keys[0].address());
        self.ok(
            Some(&user),
            &[
                "infer",
                &model,
                "-i",
                x.to_str().unwrap(),
                "--mode",
                mode,
                "--wait",
                wait,
            ],
        )
    }

    /// Waits until the job's dispute is resolved and the job closed (or its result
    /// reopened for the rest of its window); returns the dispute.
    fn resolved(&self, job: u64) -> Value {
        for _ in 0..1200 {
            let j = self.ok(None, &["receipt", "show", &job.to_string()]);
            if let Some(d) = j["dispute"].as_u64() {
                let v = self.ok(None, &["dispute", "show", &d.to_string()]);
                if v["phase"] == "resolved" && j["status"] != "disputed" {
                    return v;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("job {job}: no resolved dispute");
    }

    fn status(&self, job: u64) -> String {
        let j = self.ok(None, &["receipt", "show", &job.to_string()]);
        j["status"].as_str().unwrap().to_owned()
    }

    fn wait_status(&self, job: u64, want: &str) {
        for _ in 0..600 {
            if self.status(job) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("job {job} never became {want}: {}", self.status(job));
    }
}

/// ⌈log₂ n⌉ + 1: the most reveals a dispute over `n` steps may take.
fn max_rounds(n: u64) -> u64 {
    u64::from(n.next_power_of_two().trailing_zeros()) + 1
}

#[test]
fn a_cheating_executor_is_caught_by_the_watcher_and_slashed() {
    let net = Net::start(&["corrupt-step=1"]);
    let watcher = net.banner("watcher")[0].clone();
    let executors = net.banner("executor");
    let stakes: Vec<(u128, Option<u64>)> = executors.iter().map(|e| net.stake(e)).collect();
    let user = net.node.keys[1].address().to_string();
    let job = net.request();
    let before = net.balance(&user);

    let d = net.resolved(job);
    assert_eq!(d["winner"], "challenger", "{d}");
    assert_eq!(d["challenger"], watcher.as_str());
    let steps = d["steps"].as_u64().unwrap();
    let rounds = d["rounds"].as_u64().unwrap();
    assert!(rounds >= 1 && rounds <= max_rounds(steps), "{d}");
    // Step 1 is the first corrupted one: the game narrows down to it.
    assert_eq!(d["range"], serde_json::json!([1, 1]), "{d}");
    let slashed: u128 = d["slashed"].as_str().unwrap().parse().unwrap();
    let defender = d["defender"].as_str().unwrap();
    let i = executors.iter().position(|e| e == defender).unwrap();
    let (stake, jailed) = net.stake(defender);
    assert_eq!(stakes[i].0 - stake, slashed);
    assert!(slashed > 0 && jailed.is_some());
    // The job is refunded: the user gets back what it paid.
    net.wait_status(job, "refunded");
    assert!(net.balance(&user) > before);

    // The CLI shows it: the list, the dispute and the job's receipt.
    let list = net.ok(None, &["dispute", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let id = d["id"].to_string();
    let shown = net.text(&["dispute", "show", &id]);
    assert!(shown.contains("challenger won"), "{shown}");
    assert!(
        shown.contains(&format!("slashed      {slashed}")),
        "{shown}"
    );
    let receipt = net.text(&["receipt", "show", &job.to_string()]);
    assert!(
        receipt.contains(&format!("{id}: challenger won after {rounds} rounds")),
        "{receipt}"
    );
}

#[test]
fn an_executor_whose_steps_are_right_but_whose_result_is_wrong_is_slashed() {
    // A fault past the last node falls on the result: every intermediate tensor is
    // right, the output is not. The receipt must bind that output to its trace, so the
    // trace differs from the watcher's at the output step, where the game ends.
    let net = Net::start(&["corrupt-step=1000"]);
    let job = net.request();
    let d = net.resolved(job);
    assert_eq!(d["winner"], "challenger", "{d}");
    let steps = d["steps"].as_u64().unwrap();
    assert_eq!(d["range"], serde_json::json!([steps - 1, steps - 1]), "{d}");
    net.wait_status(job, "refunded");
}

#[test]
fn replicated_three_with_one_corrupt_executor_pays_the_honest_two_and_slashes_it() {
    // Three executors; the third flips a value at step 1 and carries it forward.
    let net = Net::start_args(&["--executors", "3", "--fault", "corrupt-step=1@2"]);
    let executors = net.banner("executor");
    assert_eq!(executors.len(), 3);
    let liar = executors[2].clone();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp");
    net.publish("mlp", &examples.join("model.onnx"));
    // Every executor serves the model before the request draws three of them.
    for e in &executors {
        for _ in 0..100 {
            let st = net.ok(None, &["executor", "status", e]);
            if st["executor"]["models"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let before: Vec<u128> = executors.iter().map(|e| net.balance(e)).collect();
    let (liar_stake, _) = net.stake(&liar);

    let out = net.infer("mlp", &examples.join("x.npy"), "replicated:3", "final");
    let job = &out["job"];
    assert_eq!(job["status"], "finalized", "{out}");
    let d = net.ok(None, &["dispute", "show", &job["dispute"].to_string()]);
    assert_eq!(d["phase"], "resolved", "{d}");
    assert!(
        d["defender"] == liar.as_str() || d["challenger"] == liar.as_str(),
        "{d}"
    );
    let (stake, jailed) = net.stake(&liar);
    assert!(
        stake < liar_stake && jailed.is_some(),
        "the liar is slashed and jailed"
    );
    for (i, e) in executors.iter().enumerate().take(2) {
        assert!(net.balance(e) > before[i], "honest executor {e} is paid");
    }
    // The liar paid its commit and reveal fees and earned nothing.
    assert!(net.balance(&liar) < before[2]);
}

#[test]
fn a_false_challenger_loses_its_bond_and_the_result_stands() {
    let net = Net::start(&["false-challenge"]);
    let watcher = net.banner("watcher")[0].clone();
    let before = net.balance(&watcher);
    let job = net.request();
    let d = net.resolved(job);
    assert_eq!(d["winner"], "defender", "{d}");
    assert_eq!(d["challenger"], watcher.as_str());
    let (steps, rounds) = (d["steps"].as_u64().unwrap(), d["rounds"].as_u64().unwrap());
    assert!(rounds >= 1 && rounds <= max_rounds(steps), "{d}");
    // The challenger's whole bond (the default `challenge_bond`, 100) is forfeit, and
    // its balance is down by that plus its transaction fees.
    assert_eq!(d["slashed"], "100", "{d}");
    assert_eq!(d["bond"], "0", "nothing is held once resolved");
    let spent = before - net.balance(&watcher);
    assert!((100..100 + 20).contains(&spent), "watcher spent {spent}");
    let (stake, jailed) = net.stake(d["defender"].as_str().unwrap());
    assert!(stake > 0 && jailed.is_none());
    // The result stood: it finalizes once the rest of its window passes.
    net.wait_status(job, "finalized");
}

#[test]
fn the_watcher_that_checked_an_honest_result_is_paid_for_its_audit() {
    let net = Net::start(&[]);
    let watcher = net.banner("watcher")[0].clone();
    let before = net.balance(&watcher);
    let job = net.request();
    net.wait_status(job, "finalized");
    let j = net.ok(None, &["receipt", "show", &job.to_string()]);
    assert_eq!(j["attesters"], serde_json::json!([watcher]), "{j}");
    assert!(j["audit_revealed"].is_string(), "{j}");
    assert!(j["dispute"].is_null(), "{j}");
    // The default audit share (10 %) of the executor's fee, less the watcher's two
    // transaction fees (attest, reveal) at the dev minimum of 1.
    let fee: u128 = j["fees"]["executor_fees"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let share = fee * 1_000 / 10_000;
    assert!(share > 2, "auditing pays on the dev network");
    assert_eq!(net.balance(&watcher), before + share - 2);
    let shown = net.text(&["receipt", "show", &job.to_string()]);
    assert!(
        shown.contains("1 watcher(s) attested, final chain value revealed"),
        "{shown}"
    );
}

#[test]
fn a_silent_cheater_loses_by_deadline() {
    let net = Net::start(&["corrupt-step=0", "silent"]);
    let job = net.request();
    let d = net.resolved(job);
    // Nobody moved: the defender missed its first reveal.
    assert_eq!(d["winner"], "challenger", "{d}");
    assert_eq!(d["rounds"], 0, "{d}");
    assert!(d["slashed"].as_str().unwrap().parse::<u128>().unwrap() > 0);
    net.wait_status(job, "refunded");
}

#[test]
fn an_honest_result_over_large_step_inputs_is_defended_through_staged_chunks() {
    // Both steps read 256 KiB (the job input, then step 0's output): more than one
    // transaction holds, so the honest executor, falsely challenged, must stage its
    // referee inputs in chunks to win; failing that it would lose by the deadline.
    let width = 64 * 1024;
    let net = Net::start(&["false-challenge"]);
    let dir = net.tmp.path();
    let x = deed_types::Tensor::from_vec(
        vec![1, width as usize],
        (0..width)
            .map(|i| (i as f32 - 999.5) / 3.0)
            .collect::<Vec<f32>>(),
    )
    .unwrap();
    deed_cli::tensor_io::write_npy(&dir.join("x.npy"), &x).unwrap();
    // `y = -relu(x)` over one row of 65,536 floats (written by the ledger's
    // `tests/fixtures/wide.py`).
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deed-ledger/tests/fixtures/wide.onnx");
    let job = net.request_with("wide", &model, &dir.join("x.npy"));

    let d = net.resolved(job);
    assert_eq!(d["winner"], "defender", "{d}");
    assert_eq!(d["steps"], 3, "{d}: two nodes, then the output step");
    net.wait_status(job, "finalized");
}
