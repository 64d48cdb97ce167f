//! The kernel thread pool: N − 1 workers that stay awake between the operators of a run,
//! and hash trace steps between their shares.
//!
//! A model runs as a sequence of operators, many of them a few microseconds long. A
//! general-purpose pool puts idle workers to sleep, and on a virtual machine waking a
//! sleeping CPU costs tens of microseconds: more than the split saves. Here the workers
//! spin (then yield) for a while after each job, so the next operator's split reaches a
//! running thread, and park only when the run is over.
//!
//! One job at a time: [`Pool::run`] offers the shares `job(t)`, `t` in `0..=workers`,
//! runs `job(0)` on the caller, then claims whatever shares no worker has taken yet
//! and runs those too, and returns once every share is done. So a worker that is busy
//! elsewhere never holds a split up: the caller does its share. A caller that finds the
//! pool busy (another thread's job, or a kernel splitting from inside a share) runs
//! every share itself, in order. Shares write disjoint outputs, so the result does not
//! depend on who ran them.
//!
//! Between jobs, an idle worker hashes the steps traced runs hand to the pool's
//! [`Queue`] (see [`crate::hasher`]). When a run uses every core for its kernels there
//! is no core left for a hashing thread of its own; this way the step hashes still
//! overlap later steps, on whichever core is free, without a third busy thread.
//!
//! The unsafe part: the job is a borrowed closure on the caller's stack, passed to the
//! workers as a raw pointer with its lifetime erased. A worker uses it only for a share
//! it has claimed, and [`Pool::run`] does not return (nor unwind) before every share is
//! done, the same argument as `std::thread::scope`.
#![allow(unsafe_code)]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::hasher::Queue;

/// How long an idle worker keeps polling for the next job before it parks.
const STAY_AWAKE: Duration = Duration::from_millis(2);
/// Busy-wait iterations before a waiting thread starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 7;
/// Bits of [`Shared::claim`] that count a job's claimed shares (the rest number the job).
const SHARE_BITS: u32 = 16;
const SHARE_MASK: u64 = (1 << SHARE_BITS) - 1;
/// Most workers a pool starts (so that share numbers fit in [`SHARE_BITS`]); a
/// [`crate::Ctx`] counts the workers it got.
const MAX_WORKERS: usize = 1 << 10;

type Job = dyn Fn(usize) + Sync;

/// Where idle workers park, and how work for them wakes them.
pub(crate) struct Bell {
    /// Workers parked on `wake`.
    sleeping: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

impl Bell {
    /// Wakes the parked workers, if any. Whoever rings has published the work first
    /// (with `SeqCst`), and a worker checks for work after counting itself asleep, so
    /// no wake-up is lost.
    pub(crate) fn ring(&self) {
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.park);
            self.wake.notify_all();
        }
    }
}

struct Shared {
    /// The current job's number (high bits) and how many of its shares have been
    /// claimed (low [`SHARE_BITS`]). Share 0 is the caller's; the others go to whoever
    /// claims them first, which a compare-and-swap on this word decides.
    claim: AtomicU64,
    /// The current job and its number (valid until all its shares are done).
    job: Mutex<Option<(u64, JobPtr)>>,
    /// Shares of the current job finished so far.
    done: AtomicUsize,
    /// Shares per job: the workers and the caller.
    shares: usize,
    /// A share panicked; the caller re-raises it.
    panicked: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    bell: Arc<Bell>,
    /// Trace steps waiting to be hashed, for idle workers.
    hashes: Arc<Queue>,
    shutdown: AtomicBool,
    /// Held by the caller for the whole of one job.
    busy: Mutex<()>,
}

impl Shared {
    /// Claims the next unclaimed share of job `number`, if it is still the current job.
    fn claim(&self, number: u64) -> Option<usize> {
        let mut cur = self.claim.load(Ordering::Acquire);
        loop {
            let share = (cur & SHARE_MASK) as usize;
            if cur >> SHARE_BITS != number || share >= self.shares {
                return None;
            }
            match self.claim.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(share),
                Err(now) => cur = now,
            }
        }
    }

    /// Runs share `t` of `job` and counts it done; a panic is kept for the caller.
    fn run_share(&self, job: &(dyn Fn(usize) + Sync + '_), t: usize) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(t))) {
            *lock(&self.panicked) = Some(p);
        }
        self.done.fetch_add(1, Ordering::Release);
    }
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (see the module docs).
unsafe impl Send for JobPtr {}

/// A fixed set of worker threads running one split job at a time, and hashing trace
/// steps in between.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads (at most [`MAX_WORKERS`]); `None` when the system
    /// refuses to start them.
    pub(crate) fn new(workers: usize) -> Option<Pool> {
        let workers = workers.min(MAX_WORKERS);
        let bell = Arc::new(Bell {
            sleeping: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            shares: workers + 1,
            panicked: Mutex::new(None),
            hashes: Arc::new(Queue::served_by(bell.clone())),
            bell,
            shutdown: AtomicBool::new(false),
            busy: Mutex::new(()),
        });
        let mut pool = Pool {
            shared: shared.clone(),
            workers: Vec::with_capacity(workers),
        };
        for w in 0..workers {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("deed-kernel-{w}"))
                .spawn(move || worker(&s))
                .ok()?;
            pool.workers.push(handle);
        }
        Some(pool)
    }

    /// Number of worker threads (the caller is one more).
    pub(crate) fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The queue whose trace steps this pool's idle workers hash.
    pub(crate) fn hashes(&self) -> Arc<Queue> {
        self.shared.hashes.clone()
    }

    /// Runs `job(t)` for every `t` in `0..=workers()`: `0` on the calling thread, the
    /// rest on whoever claims them first (a worker, or this thread once its own share
    /// is done), and returns when all are done. A panic in any share is re-raised here
    /// after every share has finished.
    pub(crate) fn run<'a>(&self, job: &'a (dyn Fn(usize) + Sync + 'a)) {
        let s = &*self.shared;
        let Ok(_busy) = s.busy.try_lock() else {
            // Busy with another job (or this call comes from inside one): run serially.
            (0..=self.workers()).for_each(job);
            return;
        };
        // SAFETY: erases the borrow's lifetime; a worker uses the pointer only for a
        // share it claimed, and every share is done before this function returns.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + 'a), *const Job>(job) };
        let number = (s.claim.load(Ordering::Acquire) >> SHARE_BITS) + 1;
        *lock(&s.job) = Some((number, JobPtr(ptr)));
        s.done.store(0, Ordering::SeqCst);
        // Share 0 is claimed already: it is this thread's.
        s.claim.store((number << SHARE_BITS) | 1, Ordering::SeqCst);
        s.bell.ring();
        s.run_share(job, 0);
        while let Some(t) = s.claim(number) {
            s.run_share(job, t);
        }
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) != s.shares {
            pause(&mut spins);
        }
        *lock(&s.job) = None;
        if let Some(p) = lock(&s.panicked).take() {
            resume_unwind(p);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = lock(&self.shared.bell.park);
            self.shared.bell.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared) {
    // Jobs are numbered from the pool's creation, whenever this thread starts.
    let mut seen = 0;
    loop {
        // Poll for the next job or step to hash, then park.
        let idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if s.claim.load(Ordering::Acquire) >> SHARE_BITS != seen {
                break;
            }
            if s.hashes.help() {
                // Hashing counts as work: stay awake a full while after it.
                break;
            }
            if spins >= SPINS_BEFORE_YIELD && idle_since.elapsed() > STAY_AWAKE {
                let b = &*s.bell;
                let mut g = lock(&b.park);
                b.sleeping.fetch_add(1, Ordering::SeqCst);
                while s.claim.load(Ordering::SeqCst) >> SHARE_BITS == seen
                    && !s.hashes.has_work()
                    && !s.shutdown.load(Ordering::SeqCst)
                {
                    g = b.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                b.sleeping.fetch_sub(1, Ordering::SeqCst);
                spins = 0;
                continue;
            }
            pause(&mut spins);
        }
        let number = s.claim.load(Ordering::Acquire) >> SHARE_BITS;
        if number == seen {
            continue;
        }
        seen = number;
        let job = *lock(&s.job);
        if let Some((n, JobPtr(ptr))) = job {
            if n == number {
                while let Some(t) = s.claim(number) {
                    // SAFETY: the caller published `ptr` for job `number` before making
                    // its shares claimable, and keeps the closure alive until every
                    // share, this claimed one included, is done.
                    s.run_share(unsafe { &*ptr }, t);
                }
            }
        }
    }
}

/// One step of a wait: busy-spin at first, then give the core to other threads.
fn pause(spins: &mut u32) {
    if *spins < SPINS_BEFORE_YIELD {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_share_runs_once() {
        let pool = Pool::new(3).expect("threads");
        for _ in 0..1000 {
            let hits: Vec<AtomicU32> = (0..4).map(|_| AtomicU32::new(0)).collect();
            pool.run(&|t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = Pool::new(1).expect("threads");
        std::thread::sleep(STAY_AWAKE * 3);
        let hit = AtomicU32::new(0);
        pool.run(&|t| {
            hit.fetch_add(t as u32 + 1, Ordering::Relaxed);
        });
        assert_eq!(hit.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn nested_and_concurrent_jobs_run_serially() {
        let pool = Arc::new(Pool::new(2).expect("threads"));
        let total = AtomicU32::new(0);
        std::thread::scope(|sc| {
            for _ in 0..3 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        pool.run(&|_| {
                            pool.run(&|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 200 * 9);
    }

    #[test]
    fn a_panicking_share_is_reraised_after_all_finish() {
        let pool = Pool::new(2).expect("threads");
        let done = AtomicU32::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|t| {
                if t == 2 {
                    panic!("share {t}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 2);
        // The pool is still usable.
        let hits = AtomicU32::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 3);
    }
}
