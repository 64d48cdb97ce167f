//! The execution context handed to kernels: which kernels to use, how many threads,
//! and the limits a subgraph an operator runs is planned within.

use std::sync::{Arc, Mutex};

use crate::hasher::Queue;
use crate::limits::Limits;
use crate::pool::Pool;

/// Which kernel implementations to run. Both give identical bits; `Reference` exists
/// to prove it and to debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelMode {
    /// SIMD, blocked and multi-threaded kernels (bit-identical to the reference).
    #[default]
    Fast,
    /// The scalar reference implementation: the executable specification.
    Reference,
}

impl KernelMode {
    /// `Reference` when the environment variable `DEED_KERNELS=reference` is set.
    pub fn from_env() -> KernelMode {
        match std::env::var("DEED_KERNELS").as_deref() {
            Ok("reference") => KernelMode::Reference,
            _ => KernelMode::Fast,
        }
    }
}

/// Execution context: kernel mode, the thread pool that splits independent outputs,
/// and the [`Limits`] of the plan being run (a plan sets its own before its steps run,
/// so that the subgraphs of `If`, `Loop`, `Scan` and `FlexAttention` are held to them
/// too).
///
/// With `threads` = N the pool holds N − 1 workers (at most 1024; [`Ctx::threads`]
/// says how many it got, plus one) and the calling thread takes one
/// share of every split itself. The workers stay awake between the operators of a run
/// (see [`crate::pool`]), so a split costs a hand-over, not a wake-up.
#[derive(Clone)]
pub struct Ctx {
    /// Kernel implementations to use.
    pub mode: KernelMode,
    threads: usize,
    pool: Option<Arc<Pool>>,
    limits: Limits,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("mode", &self.mode)
            .field("threads", &self.threads)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new(KernelMode::from_env(), 1)
    }
}

impl Ctx {
    /// A context with `threads` worker threads (1 = run on the caller's thread).
    pub fn new(mode: KernelMode, threads: usize) -> Ctx {
        let threads = threads.max(1);
        let pool = if threads > 1 {
            Pool::new(threads - 1).map(Arc::new)
        } else {
            None
        };
        Ctx {
            mode,
            // The pool may hold fewer workers than asked for (it has a cap).
            threads: pool.as_ref().map_or(1, |p| p.workers() + 1),
            pool,
            limits: Limits::default(),
        }
    }

    /// The same context (same kernels, same pool) with other limits.
    pub fn with_limits(&self, limits: &Limits) -> Ctx {
        Ctx {
            limits: limits.clone(),
            ..self.clone()
        }
    }

    /// The limits a subgraph run in this context is planned within.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of threads kernels may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The queue whose trace steps the pool's idle workers hash, when there is a pool.
    pub(crate) fn hash_queue(&self) -> Option<Arc<Queue>> {
        self.pool.as_ref().map(|p| p.hashes())
    }

    /// True when kernels should take the scalar reference path.
    pub fn reference(&self) -> bool {
        self.mode == KernelMode::Reference
    }

    /// Runs `f(index, chunk)` over consecutive `chunk_len`-sized pieces of `out`,
    /// in parallel when the context has threads. Each piece is independent output, so
    /// the result does not depend on the thread count.
    pub fn for_each_chunk<T: Send>(
        &self,
        out: &mut [T],
        chunk_len: usize,
        f: impl Fn(usize, &mut [T]) + Send + Sync,
    ) {
        let chunk_len = chunk_len.max(1);
        let pieces = out.len().div_ceil(chunk_len);
        match &self.pool {
            Some(pool) if pieces > 1 => {
                // One share of consecutive pieces per thread; the caller runs the first.
                let per = pieces.div_ceil(self.threads);
                let shares: Vec<Mutex<Option<&mut [T]>>> = out
                    .chunks_mut(per * chunk_len)
                    .map(|s| Mutex::new(Some(s)))
                    .collect();
                pool.run(&|t| {
                    let share = shares
                        .get(t)
                        .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).take());
                    if let Some(share) = share {
                        run_share(share, t * per, chunk_len, &f);
                    }
                });
            }
            _ => out
                .chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(i, c)| f(i, c)),
        }
    }

    /// Runs `f(i)` for every `i` in `0..n` on the pool and collects results in order.
    pub fn map_range<R: Send>(&self, n: usize, f: impl Fn(usize) -> R + Send + Sync) -> Vec<R> {
        match &self.pool {
            Some(_) if n > 1 => {
                let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
                self.for_each_chunk(&mut out, 1, |i, slot| {
                    if let Some(s) = slot.first_mut() {
                        *s = Some(f(i));
                    }
                });
                out.into_iter().flatten().collect()
            }
            _ => (0..n).map(f).collect(),
        }
    }
}

/// `f(first + j, piece)` for the consecutive `chunk_len` pieces `j` of `share`.
fn run_share<T>(
    share: &mut [T],
    first: usize,
    chunk_len: usize,
    f: &(impl Fn(usize, &mut [T]) + Sync),
) {
    for (j, c) in share.chunks_mut(chunk_len).enumerate() {
        f(first + j, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_covers_every_piece_when_the_pool_is_capped() {
        // More threads than a pool starts: the context splits over the workers it got.
        let ctx = Ctx::new(KernelMode::Fast, 3000);
        assert!(
            ctx.threads() > 1 && ctx.threads() < 3000,
            "{}",
            ctx.threads()
        );
        let mut out = vec![0u32; 5000];
        ctx.for_each_chunk(&mut out, 1, |i, c| c[0] = i as u32 + 1);
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
    }
}
