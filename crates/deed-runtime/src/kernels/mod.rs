//! Compute kernels shared by operators: the canonical matrix product and its fast,
//! bit-identical implementations.
//!
//! Every kernel here has a scalar reference that is the specification (see
//! `docs/canonical-semantics.md`); the fast paths split work over independent
//! outputs only and keep each output's reduction in the reference order, so their
//! results are identical bit for bit on every CPU and for every thread count.

pub mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_avx2;

pub use gemm::{gemm, gemm_prepacked, gemm_reference, Mat, PackedB, Scalar};
