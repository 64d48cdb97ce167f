//! The execution context handed to kernels: which kernels to use and how many threads.

use std::sync::Arc;

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

/// Execution context: kernel mode and the thread pool that splits independent outputs.
#[derive(Clone)]
pub struct Ctx {
    /// Kernel implementations to use.
    pub mode: KernelMode,
    threads: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("mode", &self.mode)
            .field("threads", &self.threads)
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
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("deed-kernel-{i}"))
                .build()
                .ok()
                .map(Arc::new)
        } else {
            None
        };
        Ctx {
            mode,
            threads: if pool.is_some() { threads } else { 1 },
            pool,
        }
    }

    /// Number of threads kernels may use.
    pub fn threads(&self) -> usize {
        self.threads
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
        match &self.pool {
            Some(pool) if out.len() > chunk_len => {
                use rayon::prelude::*;
                pool.install(|| {
                    out.par_chunks_mut(chunk_len)
                        .enumerate()
                        .for_each(|(i, c)| f(i, c))
                })
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
            Some(pool) if n > 1 => {
                use rayon::prelude::*;
                pool.install(|| (0..n).into_par_iter().map(&f).collect())
            }
            _ => (0..n).map(f).collect(),
        }
    }
}
