//! A dispute party's moves, computed from its own trace.
//!
//! The rules in `exec/disputes.rs` say which move is due; this module says what an
//! honest party answers: the defender reveals its chain value at the asked index
//! with a proof and, at the end, hands the referee the disputed step's inputs with
//! their proofs; the challenger agrees exactly when its own chain value at the index
//! is the one revealed. Nodes run it for their executor and watcher keys, and the
//! tests play whole games with it.

use deed_runtime::plan::input_sources;
use deed_runtime::{Model, Source};
use deed_types::tx::limits;
use deed_types::{encoding, Action, Address, DisputeId, RefereeInput, Tensor};

use crate::state::{Dispute, DisputePhase};
use crate::trace::{to_wire, Trace};

/// Which side of a dispute an address is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The party whose result is challenged.
    Defender,
    /// The party that challenged it.
    Challenger,
}

/// The side `me` plays in `d`, if any.
pub fn side(d: &Dispute, me: &Address) -> Option<Side> {
    if d.defender == *me {
        Some(Side::Defender)
    } else if d.challenger == *me {
        Some(Side::Challenger)
    } else {
        None
    }
}

/// The move a party owes.
#[derive(Clone, Debug, PartialEq)]
pub enum Move {
    /// Submit this action.
    Act(Action),
    /// The defender must hand the referee the inputs of this step: see
    /// [`referee_action`] and [`referee_steps`].
    Referee {
        /// The disputed step.
        step: usize,
    },
}

/// Why a party cannot make its move.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartyError {
    /// The party's trace is shorter than the index the game asks about.
    #[error("the trace has no step {0}")]
    NoSuchStep(u64),
    /// A graph input the step reads is not among the job's inputs.
    #[error("step input {0:?} is not an input of the job")]
    UnknownInput(String),
    /// The outputs of an earlier step the disputed step reads were not supplied.
    #[error("the outputs of step {0} are missing")]
    MissingOutputs(usize),
    /// The step's inputs are larger than the ledger can stage for one dispute.
    #[error("the step's inputs take {len} bytes, above the staging limit of {max}")]
    TooLarge {
        /// Encoded size of the input list.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The move `me` owes in dispute `id` now, given its trace of the job, or `None`
/// when it is not this party's turn (or the game is over).
pub fn next_move(
    id: DisputeId,
    d: &Dispute,
    me: &Address,
    trace: &Trace,
) -> Result<Option<Move>, PartyError> {
    let Some(side) = side(d, me) else {
        return Ok(None);
    };
    Ok(match (&d.phase, side) {
        (DisputePhase::AwaitReveal { index }, Side::Defender) => {
            let proof = usize::try_from(*index)
                .ok()
                .and_then(|i| trace.step_proof(i))
                .ok_or(PartyError::NoSuchStep(*index))?;
            Some(Move::Act(Action::RevealStep {
                dispute: id,
                proof: to_wire(&proof),
            }))
        }
        (DisputePhase::AwaitResponse { index, value }, Side::Challenger) => {
            let mine = usize::try_from(*index)
                .ok()
                .and_then(|i| trace.chain_value(i))
                .ok_or(PartyError::NoSuchStep(*index))?;
            Some(Move::Act(Action::Respond {
                dispute: id,
                agree: mine == *value,
            }))
        }
        (DisputePhase::AwaitReferee, Side::Defender) => Some(Move::Referee {
            step: usize::try_from(d.lo).map_err(|_| PartyError::NoSuchStep(d.lo))?,
        }),
        _ => None,
    })
}

/// The earlier steps whose outputs step `step` of `model` reads: what the defender
/// must have kept (or recompute) to answer the referee.
pub fn referee_steps(model: &Model, step: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = input_sources(model, step)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|src| match src {
            Some((_, Source::Step { step, .. })) => Some(step),
            _ => None,
        })
        .collect();
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// How the job's inputs reach the referee.
#[derive(Clone, Copy, Debug)]
pub struct JobInputs<'a> {
    /// The graph inputs in job input order (`Model::required_inputs`).
    pub names: &'a [String],
    /// The job input blob when the job named it by CID: the ledger does not hold it,
    /// so the defender hands it over. `None` for an inline input.
    pub blob: Option<&'a [u8]>,
}

/// The referee move for step `step` of dispute `id`: the peaks of the agreed prefix
/// from the defender's `trace`, and every input of the node, each with what the
/// ledger needs to check it. `outputs(s)` gives step `s`'s outputs as
/// `Model::execute_node` returns them, for every `s` in [`referee_steps`].
pub fn referee_action(
    id: DisputeId,
    model: &Model,
    trace: &Trace,
    step: usize,
    job: JobInputs<'_>,
    mut outputs: impl FnMut(usize) -> Option<Vec<Tensor>>,
) -> Result<Action, PartyError> {
    let no_step = || PartyError::NoSuchStep(step as u64);
    let peaks = trace.peaks_before(step).ok_or_else(no_step)?;
    let sources = input_sources(model, step).ok_or_else(no_step)?;
    let mut inputs = Vec::with_capacity(sources.len());
    for src in sources {
        inputs.push(match src {
            None => RefereeInput::Absent,
            Some((name, Source::Input)) => {
                let index = job
                    .names
                    .iter()
                    .position(|n| *n == name)
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or(PartyError::UnknownInput(name))?;
                match job.blob {
                    Some(blob) => RefereeInput::JobInputBlob {
                        index,
                        blob: blob.to_vec(),
                    },
                    None => RefereeInput::JobInput { index },
                }
            }
            Some((name, Source::Initializer)) => RefereeInput::Initializer { name },
            Some((_, Source::Step { step: from, slot })) => {
                let outs = outputs(from).ok_or(PartyError::MissingOutputs(from))?;
                let proof = step
                    .checked_sub(1)
                    .and_then(|last| trace.input_proof(last, from))
                    .ok_or(PartyError::MissingOutputs(from))?;
                RefereeInput::Step {
                    step: from as u64,
                    output: u32::try_from(slot).map_err(|_| PartyError::MissingOutputs(from))?,
                    outputs: outs.iter().map(Tensor::encode).collect(),
                    siblings: proof.siblings,
                    other_peaks: proof.other_peaks,
                }
            }
        });
    }
    Ok(Action::Referee {
        dispute: id,
        peaks,
        inputs,
    })
}

/// Room left in a signed transaction around its action: sender, nonce, fee, chain id
/// and signature, with a wide margin.
const TX_ENVELOPE: usize = 1024;

/// The referee move as the transactions that carry it, in order: the single
/// [`Action::Referee`] of [`referee_action`] when it fits one transaction, else its
/// encoded input list in [`Action::StageReferee`] chunks followed by
/// [`Action::RefereeStaged`].
pub fn referee_moves(
    id: DisputeId,
    model: &Model,
    trace: &Trace,
    step: usize,
    job: JobInputs<'_>,
    outputs: impl FnMut(usize) -> Option<Vec<Tensor>>,
) -> Result<Vec<Action>, PartyError> {
    let action = referee_action(id, model, trace, step, job, outputs)?;
    let fits = action.check_limits().is_ok()
        && encoding::encode(&action).len() + TX_ENVELOPE <= limits::MAX_TX_BYTES;
    let Action::Referee { peaks, inputs, .. } = action else {
        return Ok(vec![action]);
    };
    if fits {
        return Ok(vec![Action::Referee {
            dispute: id,
            peaks,
            inputs,
        }]);
    }
    let bytes = encoding::encode(&inputs);
    if bytes.len() > limits::MAX_REFEREE_STAGED {
        return Err(PartyError::TooLarge {
            len: bytes.len(),
            max: limits::MAX_REFEREE_STAGED,
        });
    }
    let mut moves: Vec<Action> = bytes
        .chunks(limits::MAX_REFEREE_CHUNK)
        .map(|c| Action::StageReferee {
            dispute: id,
            chunk: c.to_vec(),
        })
        .collect();
    moves.push(Action::RefereeStaged { dispute: id, peaks });
    Ok(moves)
}
