//! The trace as a pipeline stage: another thread hashes a step's outputs, and folds the
//! step hashes into the trace, while the runtime computes the next steps.
//!
//! Each step hash depends on that step's outputs alone, and a run's trace takes its
//! step hashes in step order whoever computed them, so the root is the same as hashing
//! inline (`tests` below and `plan.rs`'s tests check it). Steps wait in a bounded
//! [`Queue`], served either by one process-wide hashing thread (started on first use,
//! for runs that leave a core free) or by the idle workers of a kernel pool (for runs
//! whose kernels use every core: see [`crate::pool`]). A run that finds the queue full
//! hashes the step itself rather than wait, and a run that has finished computing
//! takes queued steps back and hashes them too, so no thread idles while hashing
//! remains. A run whose hasher cannot start hashes inline.
//!
//! Folding a step hash into the trace (its MMR nodes, chain value and tree nodes, about
//! four short blake3 hashes) is done by whichever thread holds the next hash in step
//! order, under the run's lock: mostly the hashing thread, so that a run of many small
//! steps pays little more than a handoff per step.
//!
//! Hashed outputs come back to the run's thread, whose next outputs reuse the buffers
//! of dead intermediates ([`crate::scratch::output`]). A buffer the hashing thread read
//! is in that thread's core's cache as much as in the run's, and writing into it again
//! made the run's core take every line back from the other, at some 10 µs per 128 KiB,
//! more when the host placed the two virtual CPUs far apart. So the hashing thread
//! first writes a value into each line of a buffer no one needs any more
//! ([`crate::scratch::claim`]), the buffers of outputs the run freed before they were
//! hashed and of those it freed after ([`Release`]), and the run's core then takes the
//! lines over cheaply. That took the trace's cost (`scripts/bench.py`, by the minimum)
//! on the CNN from +11.5% to +5.7% and on the transformer block from +9.2% to +3.9%.
//! The buffers freed after hashing wait until the thread has recorded its step and no
//! other step waits for it: a transformer block frees 2 MiB of intermediates after its
//! last large product, and claiming them before hashing the steps after it held the
//! block's trace back by some 20 µs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use deed_types::{Hash, Tensor, TensorData};

use crate::pool::Bell;
use crate::scratch;
use crate::timeline::{HashedOn, Recorder, Span};
use crate::trace::{step_hash, Trace};

/// Steps that may wait for the hashing thread, over all runs of the process.
const QUEUE: usize = 8;
/// How long the hashing thread looks for more work before it sleeps: as long as the
/// kernel pool's workers, so that a step handed over after a long operator (a large
/// product takes hundreds of microseconds) finds the thread awake. Waking it cost the
/// computing thread about 25 µs per handoff on a virtual machine.
const SPIN: std::time::Duration = std::time::Duration::from_millis(2);

/// One step to fold into a run's trace: its outputs to hash, or its hash when known.
struct Job {
    step: usize,
    work: Work,
    run: Arc<RunTrace>,
}

/// What a queued step needs hashed. (A step whose hash is known goes straight to its
/// run: [`Pipeline::known`].)
enum Work {
    Hash(Vec<Arc<Tensor>>),
    /// A step with one output to hash (most nodes): no list allocated for it.
    HashOne(Arc<Tensor>),
}

impl Job {
    /// Hashes the step (unless its run has ended) and records the hash. The outputs go
    /// back to the run (see [`RunTrace::hashed`]) before the hash is recorded, so that
    /// the run, once every step is in, has them all back. `on` says which thread this
    /// is, for the run's timeline; a thread that serves `queue` then claims buffers the
    /// run released while no other step waits there.
    fn run(self, on: HashedOn, queue: Option<&Queue>) {
        let Job { step, work, run } = self;
        if run.cancelled.load(Ordering::Relaxed) {
            return;
        }
        let start = run.timeline.as_ref().map(|_| std::time::Instant::now());
        let h = match &work {
            Work::HashOne(t) => step_hash(step as u32, &[t.as_ref()]),
            Work::Hash(outputs) => step_hash(
                step as u32,
                &outputs.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
            ),
        };
        match work {
            Work::HashOne(t) => run.give_back([t], on),
            Work::Hash(outputs) => run.give_back(outputs, on),
        }
        if let (Some(t), Some(start)) = (&run.timeline, start) {
            t.hashed(step, start, on);
        }
        run.record(step, h);
        if let Some(q) = queue {
            run.claim_released(q);
        }
    }
}

/// One run's trace while its steps arrive: hashes that came early wait in `pending`
/// until every earlier step's hash is in.
struct Assembly {
    trace: Trace,
    pending: Vec<Option<Hash>>,
}

/// A hashed output handed back to its run.
enum Back {
    /// One the run may still hold.
    Held(Arc<Tensor>),
    /// The buffer of one the run had freed, its cache lines claimed by the thread that
    /// hashed it ([`scratch::claim`]).
    Dead(TensorData),
}

/// What a run and the hashing thread share.
struct RunTrace {
    assembly: Mutex<Assembly>,
    /// Hashed outputs on their way back to the run's thread, where the buffers of dead
    /// intermediates go to its [`scratch::recycle`] list. One list per run thread,
    /// shared by its runs ([`BACK`]): a buffer claimed after the run's trace was
    /// complete reaches the thread's next run.
    hashed: Arc<Mutex<Vec<Back>>>,
    /// Buffers of intermediates the run freed after they had been hashed, for the
    /// hashing thread to claim after its next job of the run ([`Release`]).
    released: Mutex<Vec<TensorData>>,
    /// Steps folded into the trace so far, read without the lock by a run that waits.
    folded: AtomicUsize,
    /// Set when the run ended early (an error): its queued steps are not hashed.
    cancelled: AtomicBool,
    done: Condvar,
    /// Where the run records its hash spans, when it keeps a timeline.
    timeline: Option<Recorder>,
}

impl RunTrace {
    /// Hands `outputs`, just hashed on thread `on`, back to the run: the buffers of
    /// those the run has freed meanwhile claimed first when `on` is another thread.
    fn give_back(&self, outputs: impl IntoIterator<Item = Arc<Tensor>>, on: HashedOn) {
        // One at a time, each claimed before the lock is taken: no list to allocate.
        for t in outputs {
            let back = match Arc::try_unwrap(t) {
                Ok(t) => {
                    let mut data = t.into_parts().1;
                    if on == HashedOn::HashThread {
                        scratch::claim(&mut data);
                    }
                    Back::Dead(data)
                }
                Err(t) => Back::Held(t),
            };
            if let Ok(mut hashed) = self.hashed.lock() {
                hashed.push(back);
            }
        }
    }

    /// Claims the buffers the run freed after this thread had hashed them
    /// ([`Release`]) and hands them back, one at a time while no step waits in
    /// `queue`: hashing comes first, since the run's trace waits for it. Those left
    /// unclaimed go back with the run's next job or at its end, as they are.
    fn claim_released(&self, queue: &Queue) {
        while !queue.has_work() {
            let Some(mut data) = self.released.lock().ok().and_then(|mut r| r.pop()) else {
                return;
            };
            scratch::claim(&mut data);
            if let Ok(mut hashed) = self.hashed.lock() {
                hashed.push(Back::Dead(data));
            }
        }
    }

    fn record(&self, step: usize, h: Hash) {
        let Ok(mut a) = self.assembly.lock() else {
            return;
        };
        let Assembly { trace, pending } = &mut *a;
        if let Some(slot) = pending.get_mut(step) {
            *slot = Some(h);
        }
        let before = trace.len();
        while let Some(Some(next)) = pending.get(trace.len()) {
            let next = *next;
            trace.push(next);
        }
        if trace.len() != before {
            self.folded.store(trace.len(), Ordering::Release);
            if trace.len() == pending.len() {
                self.done.notify_all();
            }
        }
    }
}

/// A busy wait of at most [`SPIN`]. It reads the clock once every [`Spin::CLOCK_EVERY`]
/// turns: the hashing thread, reading it every turn, had a quarter of its samples in
/// `clock_gettime` (`perf`, the benchmark CNN), work that competes with the run's
/// kernels where the host runs both virtual CPUs on one physical core.
struct Spin {
    until: std::time::Instant,
    turns: u32,
    over: bool,
}

impl Spin {
    const CLOCK_EVERY: u32 = 64;

    fn new() -> Spin {
        Spin {
            until: std::time::Instant::now() + SPIN,
            turns: 0,
            over: false,
        }
    }

    /// Pauses for one turn and says whether to keep waiting.
    fn again(&mut self) -> bool {
        if self.over {
            return false;
        }
        std::hint::spin_loop();
        self.turns = self.turns.wrapping_add(1);
        if self.turns.is_multiple_of(Self::CLOCK_EVERY) && std::time::Instant::now() >= self.until {
            self.over = true;
        }
        !self.over
    }
}

/// The jobs waiting for a hasher.
pub(crate) struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    /// How many jobs `jobs` holds, read without the lock by the spinning thread, so
    /// that its polling does not take the lock away from the runs handing work over.
    queued: AtomicUsize,
    /// Whether the hashing thread waits on `ready` (written under `jobs`' lock): a
    /// handoff wakes it only then, since a wake-up is a system call.
    asleep: AtomicBool,
    ready: Condvar,
    /// For a queue served by a kernel pool's workers: where they park.
    bell: Option<Arc<Bell>>,
}

impl Queue {
    fn new(bell: Option<Arc<Bell>>) -> Queue {
        Queue {
            jobs: Mutex::new(VecDeque::with_capacity(QUEUE)),
            queued: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            ready: Condvar::new(),
            bell,
        }
    }

    /// A queue served by threads that park on `bell` and call [`Queue::help`] when idle.
    pub(crate) fn served_by(bell: Arc<Bell>) -> Queue {
        Queue::new(Some(bell))
    }

    /// Whether a job is waiting.
    pub(crate) fn has_work(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
    }

    /// Hashes the next waiting job, if any; false when there was none.
    pub(crate) fn help(&self) -> bool {
        if !self.has_work() {
            return false;
        }
        match self.take() {
            Some(job) => {
                job.run(HashedOn::HashThread, Some(self));
                true
            }
            None => false,
        }
    }

    /// The next job, if any, without waiting.
    fn take(&self) -> Option<Job> {
        let job = self.jobs.lock().ok()?.pop_front();
        if job.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        job
    }

    /// Queues `job`, or gives it back when the queue is full.
    fn put(&self, job: Job) -> Option<Job> {
        let Ok(mut jobs) = self.jobs.lock() else {
            return Some(job);
        };
        if jobs.len() >= QUEUE {
            return Some(job);
        }
        jobs.push_back(job);
        self.queued.fetch_add(1, Ordering::SeqCst);
        let wake = self.asleep.load(Ordering::Relaxed);
        drop(jobs);
        if let Some(bell) = &self.bell {
            bell.ring();
        } else if wake {
            self.ready.notify_one();
        }
        None
    }

    /// The hashing thread's loop.
    fn serve(&self) {
        loop {
            // A run hands over its steps some microseconds apart: look again for a
            // while before sleeping, since waking a sleeping thread costs more.
            let mut spin = Spin::new();
            let mut job = None;
            while job.is_none() {
                if self.queued.load(Ordering::Relaxed) > 0 {
                    job = self.take();
                } else if !spin.again() {
                    break;
                }
            }
            let job = match job {
                Some(job) => job,
                None => {
                    let Ok(mut jobs) = self.jobs.lock() else {
                        return;
                    };
                    loop {
                        if let Some(job) = jobs.pop_front() {
                            self.queued.fetch_sub(1, Ordering::Relaxed);
                            self.asleep.store(false, Ordering::Relaxed);
                            break job;
                        }
                        self.asleep.store(true, Ordering::Relaxed);
                        match self.ready.wait(jobs) {
                            Ok(j) => jobs = j,
                            Err(_) => return,
                        }
                    }
                }
            };
            job.run(HashedOn::HashThread, Some(self));
        }
    }
}

/// The queue of the process-wide hashing thread, started on first use.
fn global() -> Option<Arc<Queue>> {
    static QUEUE_: OnceLock<Option<Arc<Queue>>> = OnceLock::new();
    QUEUE_
        .get_or_init(|| {
            let q = Arc::new(Queue::new(None));
            let served = q.clone();
            std::thread::Builder::new()
                .name("deed-trace-hash".into())
                .spawn(move || served.serve())
                .ok()
                .map(|_| q)
        })
        .clone()
}

thread_local! {
    /// The hashed outputs on their way back to this thread's runs
    /// ([`RunTrace::hashed`]).
    static BACK: Arc<Mutex<Vec<Back>>> = Arc::new(Mutex::new(Vec::new()));
}

/// One run's trace, built on the hashing thread (or a pool's idle workers) where they
/// have room.
pub(crate) struct Pipeline {
    queue: Arc<Queue>,
    run: Arc<RunTrace>,
    /// The run's step count, known here without the lock the hashing thread takes.
    steps: usize,
    /// The list of outputs taken back last, emptied ([`Pipeline::take_back`]).
    spare: Vec<Back>,
}

impl Pipeline {
    /// A pipeline for a run of `steps` steps whose steps go to `queue` (a kernel pool's
    /// queue), or with `None` to the process's hashing thread; `None` when that thread
    /// is unavailable. With a `timeline`, every step's hashing is timed into it.
    pub(crate) fn new(
        steps: usize,
        timeline: Option<Recorder>,
        queue: Option<Arc<Queue>>,
    ) -> Option<Pipeline> {
        let queue = match queue {
            Some(q) => q,
            None => global()?,
        };
        Some(Pipeline {
            queue,
            steps,
            spare: Vec::new(),
            run: Arc::new(RunTrace {
                assembly: Mutex::new(Assembly {
                    // Room for the output step's leaf, which the run pushes last.
                    trace: Trace::with_capacity(steps + 1),
                    pending: vec![None; steps],
                }),
                hashed: BACK
                    .try_with(Arc::clone)
                    .unwrap_or_else(|_| Arc::new(Mutex::new(Vec::new()))),
                released: Mutex::new(Vec::new()),
                folded: AtomicUsize::new(0),
                cancelled: AtomicBool::new(false),
                done: Condvar::new(),
                timeline,
            }),
        })
    }

    /// Records step `step`'s hash, known already (a step folded while planning, or
    /// one the run hashed itself): it waits with the run's other early hashes, and is
    /// folded into the trace at once when every earlier step is in, else by whichever
    /// thread records the step before it. Recorded here rather than queued: the last
    /// step of a run is often small and hashed here, and a queued hash reached the
    /// trace only after the hashing thread had taken it, while the run waited.
    pub(crate) fn known(&mut self, step: usize, h: Hash) {
        self.take_back();
        self.run.record(step, h);
    }

    /// Hands step `step`'s outputs to the thread, or hashes them here when its queue
    /// is full.
    pub(crate) fn submit(&mut self, step: usize, outputs: Vec<Arc<Tensor>>) {
        self.hand_over(step, Work::Hash(outputs));
    }

    /// [`Pipeline::submit`] of a step with one output to hash, without a list.
    pub(crate) fn submit_one(&mut self, step: usize, output: Arc<Tensor>) {
        self.hand_over(step, Work::HashOne(output));
    }

    fn hand_over(&mut self, step: usize, work: Work) {
        self.take_back();
        let job = Job {
            step,
            work,
            run: self.run.clone(),
        };
        if let Some(job) = self.queue.put(job) {
            job.run(HashedOn::RunThread, None);
        }
    }

    /// Where the run frees the intermediates it held longer than their hashing took.
    /// Drop it before [`Pipeline::finish`], which counts the run's other holders.
    pub(crate) fn release(&self) -> Release {
        Release(self.run.clone())
    }

    /// Takes back the outputs hashed since the last call: recycles the buffers of those
    /// the run no longer holds, and lets go of the others.
    fn take_back(&mut self) {
        take_back(&self.run, &mut self.spare);
    }

    /// The trace of every step, once all have been folded in, and the hash spans the
    /// run's timeline recorded (none without one); `None` if a step was never handed
    /// over or its hash was lost. While steps wait in the queue this thread hashes them
    /// too (any run's: each job records into its own run).
    pub(crate) fn finish(mut self) -> Option<(Trace, Vec<(Span, HashedOn)>)> {
        let run = &self.run;
        let steps = self.steps;
        // Help while there is queued work, then wait for the step the hashing thread
        // holds: briefly by polling, since the last steps are usually small, then in
        // slices asleep, looking at the queue again after each.
        let mut spin = Spin::new();
        while run.folded.load(Ordering::Acquire) < steps {
            if let Some(job) = self.queue.has_work().then(|| self.queue.take()).flatten() {
                job.run(HashedOn::RunThread, None);
            } else if spin.again() {
                continue;
            } else {
                let a = run.assembly.lock().ok()?;
                if a.trace.len() < steps {
                    // Every job holds the run until it has recorded its step: with
                    // none left, a missing step never comes (a job was lost).
                    if Arc::strong_count(run) == 1 {
                        return None;
                    }
                    let slice = std::time::Duration::from_millis(1);
                    drop(run.done.wait_timeout(a, slice).ok()?);
                }
            }
        }
        // Every job handed its outputs back before recording its step: the run's own
        // references are its only ones now. Buffers still waiting to be claimed are
        // kept as they are; one a hashing thread is claiming now reaches this thread's
        // next run.
        take_back(run, &mut self.spare);
        if let Ok(mut released) = run.released.lock() {
            released.drain(..).for_each(scratch::recycle);
        }
        let mut a = run.assembly.lock().ok()?;
        let spans = run
            .timeline
            .as_ref()
            .map(Recorder::take_hashes)
            .unwrap_or_default();
        Some((std::mem::take(&mut a.trace), spans))
    }
}

/// [`Pipeline::take_back`] from `run` through `spare`, an emptied list: the two lists
/// trade places, each keeping its room, so that the hashing thread's next pushes
/// allocate nothing and nothing it allocated is freed on the run's thread.
fn take_back(run: &RunTrace, spare: &mut Vec<Back>) {
    match run.hashed.lock() {
        Ok(mut back) if !back.is_empty() => std::mem::swap(&mut *back, spare),
        _ => return,
    }
    for b in spare.drain(..) {
        match b {
            Back::Dead(data) => scratch::recycle(data),
            Back::Held(t) => {
                if let Ok(t) = Arc::try_unwrap(t) {
                    scratch::recycle(t.into_parts().1);
                }
            }
        }
    }
}

/// Takes the buffers of the intermediates a run frees after another thread hashed them
/// (see the module docs): that thread claims them after its next job of the run and
/// hands them back; [`Pipeline::finish`] takes back any still waiting, unclaimed.
pub(crate) struct Release(Arc<RunTrace>);

impl Release {
    /// Hands `data`, the buffer of a freed intermediate, over.
    pub(crate) fn free(&self, data: TensorData) {
        match self.0.released.lock() {
            Ok(mut released) => released.push(data),
            Err(_) => scratch::recycle(data),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // A run that ended early leaves its queued steps unhashed.
        self.run.cancelled.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_wakes_the_sleeping_thread() {
        let t = Arc::new(Tensor::from_vec(vec![4096], vec![1.0f32; 4096]).unwrap());
        let mut p = Pipeline::new(3, None, None).unwrap();
        let mut inline = Trace::default();
        for s in 0..3 {
            // Long enough for the thread to stop spinning and wait.
            std::thread::sleep(SPIN * 5);
            p.submit(s, vec![t.clone()]);
            inline.push(step_hash(s as u32, &[t.as_ref()]));
        }
        // The thread hashes the steps: they are folded in without `finish`, which
        // would take queued steps back and hash them here.
        wait_until_folded(&p, 3);
        assert_eq!(p.finish().unwrap().0, inline);
    }

    /// Waits (at most 10 s, else fails) until `steps` steps of `p` are folded in.
    fn wait_until_folded(p: &Pipeline, steps: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while p.run.folded.load(Ordering::Acquire) < steps {
            assert!(
                std::time::Instant::now() < deadline,
                "a queued step was never hashed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn pipelined_trace_equals_inline_trace() {
        let steps: Vec<Vec<Arc<Tensor>>> = (0..40)
            .map(|i| {
                let v: Vec<f32> = (0..(i * 997) % 5000).map(|x| x as f32 * 0.5).collect();
                let n = v.len();
                let t = Arc::new(Tensor::from_vec(vec![n], v).unwrap());
                // Odd steps have one output (handed over without a list).
                if i % 2 == 1 {
                    vec![t]
                } else {
                    vec![t, Arc::new(Tensor::scalar(i as i64))]
                }
            })
            .collect();
        let mut inline = Trace::default();
        for (s, outs) in steps.iter().enumerate() {
            let refs: Vec<&Tensor> = outs.iter().map(|t| t.as_ref()).collect();
            inline.push(step_hash(s as u32, &refs));
        }
        // Several runs at once share the one thread and take each other's jobs.
        let runs: Vec<Trace> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        let mut p = Pipeline::new(steps.len(), None, None).unwrap();
                        for (s, outs) in steps.iter().enumerate() {
                            if s % 7 == 3 {
                                let refs: Vec<&Tensor> = outs.iter().map(|t| t.as_ref()).collect();
                                p.known(s, step_hash(s as u32, &refs));
                            } else if let [one] = outs.as_slice() {
                                p.submit_one(s, one.clone());
                            } else {
                                p.submit(s, outs.clone());
                            }
                        }
                        p.finish().unwrap().0
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in runs {
            assert_eq!(r, inline);
            assert_eq!(r.root(), inline.root());
        }
    }

    #[test]
    fn hashed_buffers_come_back_to_the_runs_thread() {
        let tensor = |v: f32| Arc::new(Tensor::from_vec(vec![4096], vec![v; 4096]).unwrap());
        let (a, b, c) = (tensor(1.0), tensor(2.0), tensor(3.0));
        let ptr = |t: &Tensor| t.as_slice::<f32>().unwrap().as_ptr() as usize;
        let (pa, pb) = (ptr(&a), ptr(&b));
        let mut inline = Trace::default();
        for (s, t) in [&a, &b, &c].into_iter().enumerate() {
            inline.push(step_hash(s as u32, &[t.as_ref()]));
        }
        let mut p = Pipeline::new(3, None, None).unwrap();
        // `a` is freed by the run before it is hashed, `b` after.
        p.submit(0, vec![a]);
        p.submit(1, vec![b.clone()]);
        wait_until_folded(&p, 2);
        p.take_back();
        let b = Arc::try_unwrap(b).expect("the hashing thread gave `b` back");
        p.release().free(b.into_parts().1);
        // The hashing thread claims `b`'s buffer once it has recorded its next job of
        // the run, unless the run's end takes it back first.
        p.submit(2, vec![c.clone()]);
        wait_until_folded(&p, 3);
        let run = p.run.clone();
        assert_eq!(p.finish().unwrap().0, inline);
        // A buffer claimed after the trace was complete comes back to this thread's
        // next run: wait until the hashing thread is done with the run, then start one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&run) > 1 {
            assert!(std::time::Instant::now() < deadline, "the job never ended");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Pipeline::new(1, None, None).unwrap().take_back();
        // Both buffers serve this thread's next outputs; `c`, still held, stays whole.
        // They come with their old values (a new buffer would be filled with -1), but
        // for the cache lines the hashing thread may have claimed.
        let outputs: Vec<Vec<f32>> = (0..2).map(|_| scratch::output(4096, -1.0f32)).collect();
        let mut got: Vec<(usize, f32)> = outputs
            .iter()
            .map(|o| (o.as_ptr() as usize, o[1]))
            .collect();
        got.sort_by(|x, y| x.1.total_cmp(&y.1));
        assert_eq!(got, vec![(pa, 1.0), (pb, 2.0)]);
        assert!(Arc::try_unwrap(c).is_ok());
    }

    #[test]
    fn a_timed_run_records_each_hashed_step_once() {
        let t = Arc::new(Tensor::from_vec(vec![4096], vec![1.0f32; 4096]).unwrap());
        let origin = std::time::Instant::now();
        let mut p = Pipeline::new(20, Some(Recorder::new(origin)), None).unwrap();
        let mut inline = Trace::default();
        for s in 0..20 {
            let h = step_hash(s as u32, &[t.as_ref()]);
            if s % 5 == 0 {
                p.known(s, h);
            } else {
                p.submit(s, vec![t.clone()]);
            }
            inline.push(h);
        }
        let (trace, spans) = p.finish().unwrap();
        assert_eq!(trace, inline);
        let mut steps: Vec<usize> = spans.iter().map(|(s, _)| s.step).collect();
        steps.sort_unstable();
        let submitted: Vec<usize> = (0..20).filter(|s| s % 5 != 0).collect();
        assert_eq!(steps, submitted);
        assert!(spans
            .iter()
            .all(|(s, _)| 0.0 <= s.start_us && s.start_us <= s.end_us));
        // Without a recorder, no spans.
        let mut p = Pipeline::new(1, None, None).unwrap();
        p.submit(0, vec![t.clone()]);
        assert!(p.finish().unwrap().1.is_empty());
    }

    #[test]
    fn runs_dropped_early_or_missing_a_step_leave_the_others_whole() {
        let t = Arc::new(Tensor::from_vec(vec![4096], vec![1.0f32; 4096]).unwrap());
        let mut dropped = Pipeline::new(50, None, None).unwrap();
        for s in 0..30 {
            dropped.submit(s, vec![t.clone()]);
        }
        drop(dropped);
        // A run that never hands over one of its steps gets no trace, and does not hang.
        let mut missing = Pipeline::new(3, None, None).unwrap();
        missing.submit(0, vec![t.clone()]);
        missing.submit(2, vec![t.clone()]);
        assert!(missing.finish().is_none());
        let mut p = Pipeline::new(3, None, None).unwrap();
        let mut inline = Trace::default();
        for s in 0..3 {
            p.submit(s, vec![t.clone()]);
            inline.push(step_hash(s as u32, &[t.as_ref()]));
        }
        assert_eq!(p.finish().unwrap().0, inline);
    }

    #[test]
    fn a_pool_hashes_handed_over_steps_between_its_jobs() {
        let pool = crate::pool::Pool::new(1).unwrap();
        let t = Arc::new(Tensor::from_vec(vec![4096], vec![2.0f32; 4096]).unwrap());
        let mut p = Pipeline::new(4, None, Some(pool.hashes())).unwrap();
        let mut inline = Trace::default();
        for s in 0..4 {
            // Long enough for the worker to park: the handoff must wake it.
            std::thread::sleep(SPIN * 3);
            p.submit(s, vec![t.clone()]);
            inline.push(step_hash(s as u32, &[t.as_ref()]));
            if s == 1 {
                let hits = AtomicUsize::new(0);
                pool.run(&|_| {
                    hits.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(hits.load(Ordering::Relaxed), 2);
            }
        }
        // Only the pool's worker serves this queue, and the run has not yet helped.
        wait_until_folded(&p, 4);
        assert_eq!(p.finish().unwrap().0, inline);
    }

    #[test]
    fn every_share_runs_once_while_the_workers_hash() {
        let pool = crate::pool::Pool::new(2).unwrap();
        let steps: Vec<Arc<Tensor>> = (0..60)
            .map(|i| {
                let v: Vec<f32> = (0..4096 + i * 512).map(|x| (x * i) as f32).collect();
                Arc::new(Tensor::from_vec(vec![v.len()], v).unwrap())
            })
            .collect();
        let inline: Trace = {
            let mut tr = Trace::default();
            for (s, o) in steps.iter().enumerate() {
                tr.push(step_hash(s as u32, &[o.as_ref()]));
            }
            tr
        };
        std::thread::scope(|scope| {
            let runs = scope.spawn(|| {
                let mut p = Pipeline::new(steps.len(), None, Some(pool.hashes())).unwrap();
                for (s, o) in steps.iter().enumerate() {
                    p.submit(s, vec![o.clone()]);
                }
                p.finish().unwrap().0
            });
            for _ in 0..2000 {
                let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
            assert_eq!(runs.join().unwrap(), inline);
        });
    }
}
