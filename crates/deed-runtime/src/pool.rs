//! The kernel thread pool: N − 1 workers that stay awake between the operators of a run.
//!
//! A model runs as a sequence of operators, many of them a few microseconds long. A
//! general-purpose pool puts idle workers to sleep, and on a virtual machine waking a
//! sleeping CPU costs tens of microseconds: more than the split saves. Here the workers
//! spin (then yield) for a while after each job, so the next operator's split reaches a
//! running thread, and park only when the run is over.
//!
//! One job at a time: [`Pool::run`] hands `job(t)` for `t` in `1..=workers` to the
//! workers, runs `job(0)` on the caller and returns once every share is done. A caller
//! that finds the pool busy (another thread's job, or a kernel splitting from inside a
//! share) runs every share itself, in order. Shares write disjoint outputs, so the
//! result does not depend on who ran them.
//!
//! The unsafe part: the job is a borrowed closure on the caller's stack, passed to the
//! workers as a raw pointer with its lifetime erased. [`Pool::run`] does not return
//! (nor unwind) before every worker has finished with it, the same argument as
//! `std::thread::scope`.
#![allow(unsafe_code)]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker keeps polling for the next job before it parks.
const STAY_AWAKE: Duration = Duration::from_millis(2);
/// Busy-wait iterations before a waiting thread starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 7;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// Bumped once per job; a worker runs a job when it sees a new value.
    epoch: AtomicU64,
    /// The current job (valid while `pending` > 0 for the epoch that published it).
    job: Mutex<Option<JobPtr>>,
    /// Workers that have not yet finished the current job.
    pending: AtomicUsize,
    /// A worker's share panicked; the caller re-raises it.
    panicked: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Workers parked on `wake`.
    sleeping: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// Held by the caller for the whole of one job.
    busy: Mutex<()>,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (see the module docs).
unsafe impl Send for JobPtr {}

/// A fixed set of worker threads running one split job at a time.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads; `None` when the system refuses to start them.
    pub(crate) fn new(workers: usize) -> Option<Pool> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            panicked: Mutex::new(None),
            sleeping: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
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
                .spawn(move || worker(&s, w + 1))
                .ok()?;
            pool.workers.push(handle);
        }
        Some(pool)
    }

    /// Number of worker threads (the caller is one more).
    pub(crate) fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Runs `job(t)` for every `t` in `0..=workers()`: `0` on the calling thread, the
    /// rest on the workers, and returns when all are done. A panic in any share is
    /// re-raised here after every share has finished.
    pub(crate) fn run<'a>(&self, job: &'a (dyn Fn(usize) + Sync + 'a)) {
        let s = &*self.shared;
        let Ok(_busy) = s.busy.try_lock() else {
            // Busy with another job (or this call comes from inside one): run serially.
            (0..=self.workers()).for_each(job);
            return;
        };
        // SAFETY: erases the borrow's lifetime; the pointer is cleared and no worker
        // holds it once `pending` reaches zero below, before this function returns.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + 'a), *const Job>(job) };
        *lock(&s.job) = Some(JobPtr(ptr));
        s.pending.store(self.workers(), Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = lock(&s.park);
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            pause(&mut spins);
        }
        *lock(&s.job) = None;
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = lock(&s.panicked).take() {
            resume_unwind(p);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = lock(&self.shared.park);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared, t: usize) {
    // Jobs are counted from the pool's creation, whenever this thread starts.
    let mut seen = 0;
    loop {
        // Poll for the next job, then park.
        let idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if s.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            if spins >= SPINS_BEFORE_YIELD && idle_since.elapsed() > STAY_AWAKE {
                let mut g = lock(&s.park);
                s.sleeping.fetch_add(1, Ordering::SeqCst);
                while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                    g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                s.sleeping.fetch_sub(1, Ordering::SeqCst);
                spins = 0;
                continue;
            }
            pause(&mut spins);
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = *lock(&s.job);
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: the caller published `ptr` before bumping the epoch and keeps the
            // closure alive until `pending` (decremented below) reaches zero.
            let f = unsafe { &*ptr };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(t))) {
                *lock(&s.panicked) = Some(p);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
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
