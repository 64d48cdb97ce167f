//! Declined jobs: an executor shows, through the production referee, that a job's
//! input does not fit the model, and is paid its fee instead of missing the deadline
//! and being slashed the timeout penalty; the requester who sent the input pays that
//! fee. A decline of an input that fits is refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Chain, FEE};
use deed_ledger::{input_fault, JobStatus, Params, RuntimeReferee, TxError};
use deed_runtime::{Limits, Model};
use deed_types::*;

const OWNER: usize = 0;
const USER: usize = 1;
const EXEC: usize = 2;
const OTHER: usize = 3;
/// The model's royalty and the executor's price.
const ROYALTY: u128 = 10;
const PRICE: u128 = 100;

fn fixture(path: &str) -> (Arc<Model>, Cid) {
    let path = format!(
        "{}/../deed-runtime/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let model = Model::load(&bytes, &Limits::default()).unwrap();
    (Arc::new(model), Cid::of(&bytes))
}

fn list(tensors: &[Tensor]) -> Vec<u8> {
    encode_list(tensors)
}

/// A chain where OWNER publishes `model` at the cost of a run on `sample`, and EXEC
/// serves it.
fn chain(model: &Arc<Model>, manifest: Cid, sample: &[Tensor]) -> (Chain, ModelId) {
    let mut c = Chain::with_params(OTHER + 1, 1_000_000, Params::default());
    let mut referee = RuntimeReferee::new();
    referee.insert(manifest, model.clone());
    c.runtime = Some(referee);
    c.ok(OWNER, common::register("m", ROYALTY));
    let m = ModelId(0);
    let names: Vec<String> = model.required_inputs().map(|v| v.name.clone()).collect();
    let named: Vec<(String, Tensor)> = names.into_iter().zip(sample.iter().cloned()).collect();
    let cost = model.plan(&named, &Limits::default()).unwrap().cost();
    c.ok(
        OWNER,
        Action::PublishVersion {
            model: m,
            manifest,
            io_schema: String::new(),
            steps: model.num_steps() as u64,
            cost,
            notes: String::new(),
        },
    );
    c.ok(
        EXEC,
        Action::Bond {
            amount: 10_000,
            endpoint: "http://e".into(),
            price: PRICE,
            models: vec![m],
        },
    );
    (c, m)
}

fn mlp() -> (Arc<Model>, Cid, Tensor) {
    let (model, manifest) = fixture("mlp_tiny/model.onnx");
    let x = Tensor::from_vec(
        vec![3, 8],
        (0..24).map(|i| i as f32 / 5.0).collect::<Vec<f32>>(),
    )
    .unwrap();
    (model, manifest, x)
}

/// `mlp()` published at the cost of a run on its sample input, and served.
fn mlp_chain() -> (Arc<Model>, Tensor, Chain, ModelId) {
    let (model, manifest, x) = mlp();
    let (c, m) = chain(&model, manifest, std::slice::from_ref(&x));
    (model, x, c, m)
}

/// What the accounts hold, to compare before and after.
struct Books {
    user: u128,
    exec: u128,
    owner: u128,
    stake: u128,
}

fn books(c: &Chain) -> Books {
    Books {
        user: c.state.balance(&c.addr(USER)),
        exec: c.state.balance(&c.addr(EXEC)),
        owner: c.state.balance(&c.addr(OWNER)),
        stake: c.state.executor(&c.addr(EXEC)).unwrap().stake,
    }
}

#[test]
fn inputs_that_do_not_fit_are_declined_and_the_executor_is_paid() {
    let (model, manifest, x) = mlp();
    let wrong_shape = Tensor::from_vec(vec![3, 9], vec![0.5f32; 27]).unwrap();
    let wrong_dtype = Tensor::from_vec(vec![3, 8], vec![1i64; 24]).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bytes that are no tensor list", vec![1, 2, 3]),
        ("an empty list", list(&[])),
        ("two tensors for one input", list(&[x.clone(), x.clone()])),
        ("another shape", list(&[wrong_shape])),
        ("another dtype", list(&[wrong_dtype])),
    ];
    for (what, input) in cases {
        let (mut c, m) = chain(&model, manifest, std::slice::from_ref(&x));
        assert!(
            input_fault(&model, &input, 0).is_some(),
            "{what}: the runtime finds a fault"
        );
        let job = c.request_optimistic(USER, m, JobInput::Inline(input));
        let before = books(&c);
        c.ok(EXEC, Action::DeclineJob { job, input: None });
        let j = c.state.job(job).unwrap();
        assert_eq!(j.status, JobStatus::Declined, "{what}");
        let after = books(&c);
        // The executor is paid its fee, the requester gets the royalty and the
        // protocol fee back, the owner earns nothing: nothing was run.
        assert_eq!(after.exec, before.exec + PRICE - FEE, "{what}");
        assert!(after.user > before.user, "{what}: refunded");
        assert_eq!(after.owner, before.owner, "{what}");
        // The deadline passes without a penalty.
        let deadline = j.deadline;
        c.advance_to(deadline + 1);
        let end = books(&c);
        assert_eq!(end.stake, before.stake, "{what}: no timeout penalty");
        assert_eq!(end.user, after.user, "{what}");
        assert_eq!(c.state.job(job).unwrap().status, JobStatus::Declined);
        c.assert_supply();
    }
}

#[test]
fn an_input_that_fits_cannot_be_declined() {
    let (model, x, mut c, m) = mlp_chain();
    let input = list(std::slice::from_ref(&x));
    assert_eq!(input_fault(&model, &input, 0), None);
    let job = c.request_optimistic(USER, m, JobInput::Inline(input));
    let before = books(&c);
    assert_eq!(
        c.run(EXEC, Action::DeclineJob { job, input: None }),
        Err(TxError::InputFits(job))
    );
    // Only the assigned executor may decline, and only with the job's own input.
    assert_eq!(
        c.run(OTHER, Action::DeclineJob { job, input: None }),
        Err(TxError::NotAssigned {
            job,
            sender: c.addr(OTHER)
        })
    );
    assert!(matches!(
        c.run(
            EXEC,
            Action::DeclineJob {
                job,
                input: Some(vec![1, 2, 3])
            }
        ),
        Err(TxError::InvalidProof(_))
    ));
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Assigned);
    let after = books(&c);
    assert_eq!(
        after.exec,
        before.exec - 3 * FEE + FEE,
        "only its fees were paid"
    );
    assert_eq!(after.stake, before.stake);
    c.assert_supply();
}

#[test]
fn a_referee_without_the_model_does_not_judge() {
    let (_, _, mut c, m) = mlp_chain();
    let job = c.request_optimistic(USER, m, JobInput::Inline(vec![1, 2, 3]));
    c.runtime = Some(RuntimeReferee::new());
    assert!(matches!(
        c.run(EXEC, Action::DeclineJob { job, input: None }),
        Err(TxError::Referee(_))
    ));
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Assigned);
}

#[test]
fn an_input_by_cid_is_judged_on_the_blob_handed_over() {
    let (_, x, mut c, m) = mlp_chain();
    let blob = list(&[x.clone(), x.clone()]);
    let job = c.request_optimistic(USER, m, JobInput::ByCid(Cid::of(&blob)));
    for (input, why) in [
        (None, "no blob"),
        (Some(list(std::slice::from_ref(&x))), "another blob"),
    ] {
        assert!(
            matches!(
                c.run(EXEC, Action::DeclineJob { job, input }),
                Err(TxError::InvalidProof(_))
            ),
            "{why}"
        );
    }
    c.ok(
        EXEC,
        Action::DeclineJob {
            job,
            input: Some(blob),
        },
    );
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Declined);
    c.assert_supply();
}

#[test]
fn an_input_whose_run_costs_more_than_the_published_cost_is_declined() {
    // A linear regression over a batch of any size, published at the cost of a
    // batch of two.
    let (model, manifest) = fixture("sk_linear_regression/model.onnx");
    let batch = |rows: usize| Tensor::from_vec(vec![rows, 5], vec![0.25f32; rows * 5]).unwrap();
    let (mut c, m) = chain(&model, manifest, &[batch(2)]);
    let small = c.request_optimistic(USER, m, JobInput::Inline(list(&[batch(2)])));
    assert_eq!(
        c.run(
            EXEC,
            Action::DeclineJob {
                job: small,
                input: None
            }
        ),
        Err(TxError::InputFits(small))
    );
    let large = c.request_optimistic(USER, m, JobInput::Inline(list(&[batch(50)])));
    let cost = c.state.version(m, 1).unwrap().cost;
    let fault = input_fault(&model, &list(&[batch(50)]), cost).unwrap();
    assert!(fault.contains("published cost"), "{fault}");
    c.ok(
        EXEC,
        Action::DeclineJob {
            job: large,
            input: None,
        },
    );
    assert_eq!(c.state.job(large).unwrap().status, JobStatus::Declined);
    c.assert_supply();
}

#[test]
fn one_decline_ends_a_replicated_job_and_pays_that_executor_only() {
    let (_, _, mut c, m) = mlp_chain();
    c.ok(
        OTHER,
        Action::Bond {
            amount: 10_000,
            endpoint: "http://o".into(),
            price: PRICE,
            models: vec![m],
        },
    );
    let job = JobId(c.state.meta().next_job);
    c.ok(
        USER,
        Action::RequestJob {
            model: m,
            version: None,
            input: JobInput::Inline(vec![1, 2, 3]),
            mode: Mode::Replicated(2),
            max_fee: 1_000,
            executor: None,
        },
    );
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Committing);
    // An executor that committed to a result has claimed the input runs.
    c.ok(
        OTHER,
        Action::CommitOutput {
            job,
            commitment: Hash::of(b"a result"),
        },
    );
    assert!(matches!(
        c.run(OTHER, Action::DeclineJob { job, input: None }),
        Err(TxError::WrongJobPhase { .. })
    ));
    let (user, other) = (
        c.state.balance(&c.addr(USER)),
        c.state.balance(&c.addr(OTHER)),
    );
    let before = books(&c);
    c.ok(EXEC, Action::DeclineJob { job, input: None });
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Declined);
    let after = books(&c);
    assert_eq!(after.exec, before.exec + PRICE - FEE);
    assert_eq!(
        c.state.balance(&c.addr(OTHER)),
        other,
        "the other executor is not paid"
    );
    // The requester gets all but the decliner's fee back: the royalty, the protocol
    // fee and the other executor's fee.
    let pfee = deed_ledger::bps_of(2 * PRICE, c.state.params().protocol_fee_bps).unwrap();
    assert_eq!(
        c.state.balance(&c.addr(USER)),
        user + ROYALTY + PRICE + pfee
    );
    assert!(matches!(
        c.run(OTHER, Action::DeclineJob { job, input: None }),
        Err(TxError::WrongJobPhase { .. })
    ));
    c.assert_supply();
}
