//! The referee seam: re-executing one step of a model on given inputs.
//!
//! The ledger decides disputes by asking a [`Referee`] for the true hash of the one
//! step the parties disagree on. [`RuntimeReferee`] is the production referee: the
//! canonical runtime's single-node execution over models the node has loaded. The
//! trait keeps the rules testable with scripted step hashes.

use std::collections::BTreeMap;
use std::sync::Arc;

use deed_runtime::Source;
use deed_types::{Cid, Hash, Tensor};

/// Why the referee could not produce a step hash. Either way the referee move fails
/// and the defender may retry before its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefereeError {
    /// The model version is not available to this validator.
    #[error("model {0} is not available to the referee")]
    ModelUnavailable(Cid),
    /// The step index is not a node of the model.
    #[error("step {step} is not in the model (it has {steps})")]
    NoSuchStep {
        /// Asked.
        step: u64,
        /// Nodes in the model.
        steps: u64,
    },
    /// The model has no initializer of that name.
    #[error("the model has no initializer {0:?}")]
    NoSuchInitializer(String),
    /// The inputs do not fit the node (count, dtype or shape), as the runtime reports.
    #[error("inputs do not fit step {step}: {reason}")]
    BadInputs {
        /// The step.
        step: u64,
        /// The runtime's message.
        reason: String,
    },
}

/// One input of the step to re-execute, with where it comes from. The ledger has
/// checked the value against its source; the referee checks that the source is the
/// one the model wires to that input, so a defender cannot feed a node another
/// agreed tensor of the right shape.
#[derive(Clone, Debug, PartialEq)]
pub enum StepInput {
    /// Entry `index` of the job's input list, checked against the job's input hash.
    JobInput {
        /// Position in the job's input list (the model's required inputs, in order).
        index: u32,
        /// The value.
        tensor: Tensor,
    },
    /// Output `slot` of the earlier step `step`, checked against the agreed prefix.
    Step {
        /// The producing step.
        step: u64,
        /// Which of its outputs.
        slot: u32,
        /// The value.
        tensor: Tensor,
    },
    /// A weight of the model, read by the referee from the model itself.
    Initializer(String),
    /// An absent optional input.
    Absent,
}

/// Re-executes single steps of a model with the canonical runtime.
pub trait Referee {
    /// The true step hash `h_step` of node `step` of the model version whose manifest
    /// is `model`, run on `inputs`.
    fn execute_step(
        &self,
        model: &Cid,
        step: u64,
        inputs: &[StepInput],
    ) -> Result<Hash, RefereeError>;

    /// Why the job input `input` (an encoded tensor list) does not fit the model
    /// version whose manifest is `model` and whose published cost is `budget`, or
    /// `None` when it fits: [`input_fault`] on the loaded model. A referee that holds
    /// no models (a scripted one) cannot tell.
    fn input_fault(
        &self,
        model: &Cid,
        input: &[u8],
        budget: u64,
    ) -> Result<Option<String>, RefereeError> {
        let _ = (input, budget);
        Err(RefereeError::ModelUnavailable(*model))
    }
}

/// Why `input`, a job's encoded input list, does not fit `model` as a job of a
/// version whose published cost is `budget` (0: no limit), or `None` when it fits:
/// the bytes are not a tensor list, the list does not give each of the model's
/// required inputs in order, the run does not plan (a dtype or shape the model does
/// not take, a limit exceeded) or the plan costs more than `budget`. Nothing runs
/// but planning, so the answer is the same on every machine and cheap to get.
///
/// An executor whose run of a job failed asks this and declines the job when there
/// is a fault ([`deed_types::Action::DeclineJob`]); the validators ask the same to
/// judge the decline, so both decide alike.
pub fn input_fault(model: &deed_runtime::Model, input: &[u8], budget: u64) -> Option<String> {
    let tensors = match deed_types::decode_list(input, input.len()) {
        Ok(t) => t,
        Err(e) => return Some(format!("the input is not a tensor list: {e}")),
    };
    let names: Vec<String> = model.required_inputs().map(|v| v.name.clone()).collect();
    if tensors.len() != names.len() {
        return Some(format!(
            "the model takes {} inputs ({}), the input has {}",
            names.len(),
            names.join(", "),
            tensors.len()
        ));
    }
    let named: Vec<(String, Tensor)> = names.into_iter().zip(tensors).collect();
    match model.plan(&named, &deed_runtime::Limits::default()) {
        Err(e) => Some(format!("the model does not run on the input: {e}")),
        Ok(plan) if budget > 0 && plan.cost() > budget => Some(format!(
            "a run on the input costs {} units, the version's published cost is {budget}",
            plan.cost()
        )),
        Ok(_) => None,
    }
}

/// The production referee: `deed_runtime::Model::execute_node` over the models a
/// validator has loaded, keyed by version manifest CID.
#[derive(Default, Clone)]
pub struct RuntimeReferee {
    models: BTreeMap<Cid, Arc<deed_runtime::Model>>,
}

impl RuntimeReferee {
    /// An empty referee.
    pub fn new() -> RuntimeReferee {
        RuntimeReferee::default()
    }

    /// Makes `model` available as the version with manifest `manifest`.
    pub fn insert(&mut self, manifest: Cid, model: Arc<deed_runtime::Model>) {
        self.models.insert(manifest, model);
    }
}

impl Referee for RuntimeReferee {
    fn execute_step(
        &self,
        model: &Cid,
        step: u64,
        inputs: &[StepInput],
    ) -> Result<Hash, RefereeError> {
        let m = self
            .models
            .get(model)
            .ok_or(RefereeError::ModelUnavailable(*model))?;
        let no_step = || RefereeError::NoSuchStep {
            step,
            steps: m.trace_len() as u64,
        };
        let index = usize::try_from(step).map_err(|_| no_step())?;
        if index > m.nodes.len() {
            return Err(no_step());
        }
        let wiring = deed_runtime::plan::input_sources(m, index).ok_or_else(no_step)?;
        if wiring.len() != inputs.len() {
            return Err(RefereeError::BadInputs {
                step,
                reason: format!(
                    "{} inputs given, the step reads {}",
                    inputs.len(),
                    wiring.len()
                ),
            });
        }
        let job_inputs: Vec<&str> = m.required_inputs().map(|v| v.name.as_str()).collect();
        let mut args = Vec::with_capacity(inputs.len());
        for (k, (given, wired)) in inputs.iter().zip(&wiring).enumerate() {
            let miswired = || RefereeError::BadInputs {
                step,
                reason: format!("input {k} is not the value the model wires to it"),
            };
            args.push(match (given, wired) {
                (StepInput::Absent, None) => None,
                (StepInput::JobInput { index, tensor }, Some((name, Source::Input)))
                    if job_inputs.get(*index as usize) == Some(&name.as_str()) =>
                {
                    Some(tensor.clone())
                }
                (
                    StepInput::Step { step, slot, tensor },
                    Some((_, Source::Step { step: s, slot: o })),
                ) if *step == *s as u64 && *slot as usize == *o => Some(tensor.clone()),
                (StepInput::Initializer(name), Some((wired, Source::Initializer)))
                    if name == wired =>
                {
                    Some(
                        m.initializer(name)
                            .cloned()
                            .ok_or_else(|| RefereeError::NoSuchInitializer(name.clone()))?,
                    )
                }
                _ => return Err(miswired()),
            });
        }
        if index == m.nodes.len() {
            // The output step: its leaf hashes the graph outputs, which must all be
            // given.
            let outputs: Option<Vec<Tensor>> = args.into_iter().collect();
            return match outputs {
                Some(o) if o.len() == m.outputs.len() => Ok(crate::trace::output_leaf(step, &o)),
                _ => Err(RefereeError::BadInputs {
                    step,
                    reason: format!(
                        "the output step takes the {} graph outputs",
                        m.outputs.len()
                    ),
                }),
            };
        }
        let outputs = m
            .execute_node(index, &args)
            .map_err(|e| RefereeError::BadInputs {
                step,
                reason: e.to_string(),
            })?;
        Ok(deed_runtime::node_step_hash(index, &outputs))
    }

    fn input_fault(
        &self,
        model: &Cid,
        input: &[u8],
        budget: u64,
    ) -> Result<Option<String>, RefereeError> {
        let m = self
            .models
            .get(model)
            .ok_or(RefereeError::ModelUnavailable(*model))?;
        Ok(input_fault(m, input, budget))
    }
}
