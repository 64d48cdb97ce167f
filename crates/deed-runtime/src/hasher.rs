//! The trace's step hashing as a pipeline stage: one process-wide thread that hashes a
//! step's outputs while the runtime computes the next steps.
//!
//! Each step hash depends on that step's outputs alone, and the trace is assembled
//! from the hashes in step order afterwards, so the root is the same as hashing inline
//! (`tests` below and `plan.rs`'s tests check it). The thread is started once, on first
//! use, and shared by every run of the process; its queue is bounded, so a run whose
//! hashing falls behind waits instead of holding every tensor alive, and a run whose
//! hasher is gone (it cannot start) hashes inline.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use deed_types::{Hash, Tensor};

use crate::trace::step_hash;

/// Steps that may wait for the hashing thread, over all runs of the process.
const QUEUE: usize = 8;

/// One step's outputs to hash, and where the hash goes.
struct Job {
    step: usize,
    outputs: Vec<Arc<Tensor>>,
    reply: Sender<(usize, Hash)>,
}

/// The process's hashing thread.
struct StepHasher {
    tx: Mutex<SyncSender<Job>>,
}

fn global() -> Option<&'static StepHasher> {
    static HASHER: OnceLock<Option<StepHasher>> = OnceLock::new();
    HASHER
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
            std::thread::Builder::new()
                .name("deed-trace-hash".into())
                .spawn(move || {
                    for Job {
                        step,
                        outputs,
                        reply,
                    } in rx
                    {
                        let refs: Vec<&Tensor> = outputs.iter().map(|t| t.as_ref()).collect();
                        let h = step_hash(step as u32, &refs);
                        // Released before the answer, so that the run can take its
                        // outputs back without copying them.
                        drop(refs);
                        drop(outputs);
                        // The run may have ended early (an error); nobody waits then.
                        let _ = reply.send((step, h));
                    }
                })
                .ok()
                .map(|_| StepHasher { tx: Mutex::new(tx) })
        })
        .as_ref()
}

/// The hashes of one run's steps, computed on the hashing thread.
pub(crate) struct Pipeline {
    hasher: &'static StepHasher,
    reply: Sender<(usize, Hash)>,
    results: Receiver<(usize, Hash)>,
    hashes: Vec<Option<Hash>>,
}

impl Pipeline {
    /// A pipeline for a run of `steps` steps, or `None` when the thread is unavailable.
    pub(crate) fn new(steps: usize) -> Option<Pipeline> {
        let hasher = global()?;
        let (reply, results) = mpsc::channel();
        Some(Pipeline {
            hasher,
            reply,
            results,
            hashes: vec![None; steps],
        })
    }

    /// Records a hash known without hashing (a step folded while planning).
    pub(crate) fn known(&mut self, step: usize, h: Hash) {
        if let Some(slot) = self.hashes.get_mut(step) {
            *slot = Some(h);
        }
    }

    /// Hands step `step`'s outputs to the thread; waits while its queue is full.
    /// Hashes inline when the thread is gone.
    pub(crate) fn submit(&mut self, step: usize, outputs: Vec<Arc<Tensor>>) {
        self.drain();
        let job = Job {
            step,
            outputs,
            reply: self.reply.clone(),
        };
        let sent = match self.hasher.tx.lock() {
            Ok(tx) => match tx.try_send(job) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(job)) => tx.send(job).map_err(|e| e.0),
                Err(TrySendError::Disconnected(job)) => Err(job),
            },
            Err(_) => Err(job),
        };
        if let Err(job) = sent {
            let refs: Vec<&Tensor> = job.outputs.iter().map(|t| t.as_ref()).collect();
            self.known(step, step_hash(step as u32, &refs));
        }
    }

    /// Takes the hashes that have arrived.
    fn drain(&mut self) {
        while let Ok((s, h)) = self.results.try_recv() {
            self.known(s, h);
        }
    }

    /// Every step's hash, in step order, once all have arrived; `None` if the thread
    /// stopped before answering them all.
    pub(crate) fn finish(mut self) -> Option<Vec<Hash>> {
        drop(self.reply);
        while self.hashes.iter().any(Option::is_none) {
            match self.results.recv() {
                Ok((s, h)) => {
                    if let Some(slot) = self.hashes.get_mut(s) {
                        *slot = Some(h);
                    }
                }
                Err(_) => return None,
            }
        }
        self.hashes.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_hashes_equal_inline_hashes_in_step_order() {
        let steps: Vec<Vec<Arc<Tensor>>> = (0..40)
            .map(|i| {
                let v: Vec<f32> = (0..(i * 997) % 5000).map(|x| x as f32 * 0.5).collect();
                let n = v.len();
                vec![
                    Arc::new(Tensor::from_vec(vec![n], v).unwrap()),
                    Arc::new(Tensor::scalar(i as i64)),
                ]
            })
            .collect();
        let inline: Vec<Hash> = steps
            .iter()
            .enumerate()
            .map(|(s, outs)| {
                let refs: Vec<&Tensor> = outs.iter().map(|t| t.as_ref()).collect();
                step_hash(s as u32, &refs)
            })
            .collect();
        // Several runs at once share the one thread.
        let runs: Vec<Vec<Hash>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        let mut p = Pipeline::new(steps.len()).unwrap();
                        for (s, outs) in steps.iter().enumerate() {
                            if s % 7 == 3 {
                                let refs: Vec<&Tensor> = outs.iter().map(|t| t.as_ref()).collect();
                                p.known(s, step_hash(s as u32, &refs));
                            } else {
                                p.submit(s, outs.clone());
                            }
                        }
                        p.finish().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in runs {
            assert_eq!(r, inline);
        }
    }
}
