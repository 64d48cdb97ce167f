//! Compute kernels shared by operators: the canonical matrix product, the exact
//! integer product of quantized operands, and their fast, bit-identical
//! implementations.
//!
//! Every kernel here has a scalar reference that is the specification (see
//! `docs/canonical-semantics.md`); the fast paths split work over independent
//! outputs only and keep each float output's reduction in the reference order
//! (integer sums wrap, exact modulo 2³² in any order), so their results are identical
//! bit for bit on every CPU and for every thread count.

pub mod gather;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_avx2;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
pub mod qgemm;
#[cfg(target_arch = "x86_64")]
mod qgemm_amx;
#[cfg(target_arch = "x86_64")]
mod qgemm_avx512;
#[cfg(target_arch = "x86_64")]
mod tiling;

pub use gemm::{gemm, gemm_prepacked, gemm_reference, gemm_rows, Mat, PackedB, RowsB, Scalar};
pub use qgemm::{qgemm, qgemm_reference, QData, QuantB};
