//! The trace's step hashing as a pipeline stage: one process-wide thread that hashes a
//! step's outputs while the runtime computes the next steps.
//!
//! Each step hash depends on that step's outputs alone, and the trace is assembled
//! from the hashes in step order afterwards, so the root is the same as hashing inline
//! (`tests` below and `plan.rs`'s tests check it). The thread is started once, on first
//! use, and shared by every run of the process. Its queue is bounded: a run that finds
//! it full hashes the step itself rather than wait, and a run that has finished
//! computing takes queued steps back and hashes them too, so neither thread idles
//! while hashing remains. A run whose hasher cannot start hashes inline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use deed_types::{Hash, Tensor};

use crate::trace::step_hash;

/// Steps that may wait for the hashing thread, over all runs of the process.
const QUEUE: usize = 8;
/// How long the hashing thread looks for more work before it sleeps: as long as the
/// kernel pool's workers, so that a step handed over after a long operator (a large
/// product takes hundreds of microseconds) finds the thread awake. Waking it cost the
/// computing thread about 25 µs per handoff on a virtual machine.
const SPIN: std::time::Duration = std::time::Duration::from_millis(2);

/// One step's outputs to hash, and where the hash goes.
struct Job {
    step: usize,
    outputs: Vec<Arc<Tensor>>,
    reply: Sender<(usize, Hash)>,
}

impl Job {
    /// Hashes the step and answers; the outputs are released before the answer, so
    /// that the run can take them back without copying them.
    fn run(self) {
        let Job {
            step,
            outputs,
            reply,
        } = self;
        let refs: Vec<&Tensor> = outputs.iter().map(|t| t.as_ref()).collect();
        let h = step_hash(step as u32, &refs);
        drop(refs);
        drop(outputs);
        // The run may have ended early (an error); nobody waits then.
        let _ = reply.send((step, h));
    }
}

/// The jobs waiting for a hasher.
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    /// How many jobs `jobs` holds, read without the lock by the spinning thread, so
    /// that its polling does not take the lock away from the runs handing work over.
    queued: AtomicUsize,
    /// Whether the thread waits on `ready`; written and read under `jobs`' lock, so a
    /// run that queues a job wakes it exactly when it sleeps (a wake-up is a system
    /// call, which the spinning thread does not need).
    asleep: AtomicBool,
    ready: Condvar,
}

impl Queue {
    /// The next job, if any, without waiting.
    fn take(&self) -> Option<Job> {
        let job = self.jobs.lock().ok()?.pop_front();
        if job.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        job
    }
}

fn global() -> Option<&'static Queue> {
    static QUEUE_: OnceLock<Option<&'static Queue>> = OnceLock::new();
    *QUEUE_.get_or_init(|| {
        let q: &'static Queue = Box::leak(Box::new(Queue {
            jobs: Mutex::new(VecDeque::with_capacity(QUEUE)),
            queued: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            ready: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("deed-trace-hash".into())
            .spawn(move || loop {
                // A run hands over its steps some microseconds apart: look again for a
                // while before sleeping, since waking a sleeping thread costs more.
                let spin_until = std::time::Instant::now() + SPIN;
                let mut job = None;
                while job.is_none() && std::time::Instant::now() < spin_until {
                    if q.queued.load(Ordering::Relaxed) > 0 {
                        job = q.take();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                let job = match job {
                    Some(job) => job,
                    None => {
                        let Ok(mut jobs) = q.jobs.lock() else { return };
                        loop {
                            match jobs.pop_front() {
                                Some(job) => {
                                    q.queued.fetch_sub(1, Ordering::Relaxed);
                                    break job;
                                }
                                None => {
                                    q.asleep.store(true, Ordering::Relaxed);
                                    match q.ready.wait(jobs) {
                                        Ok(j) => jobs = j,
                                        Err(_) => return,
                                    }
                                    q.asleep.store(false, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                };
                job.run();
            })
            .ok()
            .map(|_| q)
    })
}

/// The hashes of one run's steps, computed on the hashing thread where it has room.
pub(crate) struct Pipeline {
    queue: &'static Queue,
    reply: Sender<(usize, Hash)>,
    results: Receiver<(usize, Hash)>,
    hashes: Vec<Option<Hash>>,
}

impl Pipeline {
    /// A pipeline for a run of `steps` steps, or `None` when the thread is unavailable.
    pub(crate) fn new(steps: usize) -> Option<Pipeline> {
        let queue = global()?;
        let (reply, results) = mpsc::channel();
        Some(Pipeline {
            queue,
            reply,
            results,
            hashes: vec![None; steps],
        })
    }

    /// Records a hash known without hashing here (a step folded while planning, or
    /// one hashed inline).
    pub(crate) fn known(&mut self, step: usize, h: Hash) {
        if let Some(slot) = self.hashes.get_mut(step) {
            *slot = Some(h);
        }
    }

    /// Hands step `step`'s outputs to the thread, or hashes them here when its queue
    /// is full.
    pub(crate) fn submit(&mut self, step: usize, outputs: Vec<Arc<Tensor>>) {
        self.drain();
        let job = Job {
            step,
            outputs,
            reply: self.reply.clone(),
        };
        let job = match self.queue.jobs.lock() {
            Ok(mut jobs) if jobs.len() < QUEUE => {
                jobs.push_back(job);
                self.queue.queued.fetch_add(1, Ordering::Relaxed);
                if self.queue.asleep.load(Ordering::Relaxed) {
                    self.queue.ready.notify_one();
                }
                None
            }
            _ => Some(job),
        };
        if let Some(job) = job {
            job.run();
        }
    }

    /// Takes the hashes that have arrived.
    fn drain(&mut self) {
        while let Ok((s, h)) = self.results.try_recv() {
            self.known(s, h);
        }
    }

    /// Every step's hash, in step order, once all have arrived; `None` if a hash never
    /// came. While steps wait in the queue this thread hashes them too (any run's: each
    /// job answers its own run).
    pub(crate) fn finish(self) -> Option<Vec<Hash>> {
        let Pipeline {
            queue,
            reply,
            results,
            mut hashes,
        } = self;
        drop(reply);
        fn record(hashes: &mut [Option<Hash>], (s, h): (usize, Hash)) {
            if let Some(slot) = hashes.get_mut(s) {
                *slot = Some(h);
            }
        }
        loop {
            while let Ok(r) = results.try_recv() {
                record(&mut hashes, r);
            }
            if hashes.iter().all(Option::is_some) {
                break;
            }
            match queue.take() {
                Some(job) => job.run(),
                None => record(&mut hashes, results.recv().ok()?),
            }
        }
        hashes.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_wakes_the_sleeping_thread() {
        let t = Arc::new(Tensor::from_vec(vec![4096], vec![1.0f32; 4096]).unwrap());
        let mut p = Pipeline::new(3).unwrap();
        p.submit(0, vec![t.clone()]);
        for s in 1..3 {
            // Long enough for the thread to stop spinning and wait.
            std::thread::sleep(SPIN * 5);
            p.submit(s, vec![t.clone()]);
        }
        // The thread hashes the steps: their hashes arrive without `finish`, which
        // would take queued steps back and hash them here.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !p.hashes.iter().all(Option::is_some) {
            assert!(
                std::time::Instant::now() < deadline,
                "a queued step was never hashed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
            p.drain();
        }
        let expected: Vec<Hash> = (0..3).map(|s| step_hash(s, &[t.as_ref()])).collect();
        assert_eq!(p.finish().unwrap(), expected);
    }

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
        // Several runs at once share the one thread and take each other's jobs.
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
