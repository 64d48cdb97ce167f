//! Linear algebra: `MatMul`, `Gemm`, `Einsum`, and `Det` (an LU decomposition, see
//! [`det`]).
//!
//! All three reduce with the canonical dot product of [`crate::kernels::gemm`]:
//! `acc = +0.0; for k increasing: acc = fma(a, b, acc)`, NaN outputs canonical.
//! f16/bf16 inputs are widened exactly to f32, computed in f32 and rounded once
//! (to nearest, ties to even) to the input type. Integers wrap. See
//! `docs/canonical-semantics.md`.

use deed_types::{DType, Tensor};

use super::util::{
    broadcast_offsets, broadcast_shapes, check_count, float_infer_input, infer_input, input, numel,
    one, opt_infer_input, opt_input, same_dtype,
};
use super::{Ctx, InferInput, NodeInfo, Op, Prepared, Registry, TypeInfo};
use crate::error::OpError;
use crate::kernels::{gemm, Mat, PackedB, Scalar};

pub(crate) fn register(r: &mut Registry) {
    r.add("MatMul", |_| Ok(Box::new(MatMul)));
    r.add("Gemm", build_gemm);
    r.add("Einsum", build_einsum);
    r.add("Det", |n| {
        check_count(n.num_inputs, 1, 1)?;
        Ok(Box::new(Det))
    });
}

/// `Det`: the determinant of each trailing square matrix of a float tensor.
#[derive(Debug)]
struct Det;

impl Op for Det {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = float_infer_input(inputs, 0)?;
        let s = &x.ty.shape;
        match s.len() {
            r if r >= 2 && s[r - 1] == s[r - 2] => {
                Ok(vec![TypeInfo::new(x.ty.dtype, s[..r - 2].to_vec())])
            }
            _ => Err(OpError::shape(format!(
                "Det takes [..., M, M] matrices, got {s:?}"
            ))),
        }
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let m = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|t| t.shape.last().copied())
            .unwrap_or(1) as u64;
        let batch = outputs.first().map_or(1, |t| t.numel());
        batch.saturating_mul(m.saturating_pow(3)).max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let s = x.shape();
        let r = s.len();
        if r < 2 || s[r - 1] != s[r - 2] {
            return Err(OpError::shape(format!("Det takes [..., M, M], got {s:?}")));
        }
        let m = s[r - 1];
        let wide = super::cast::cast(x, DType::F64)?
            .into_vec::<f64>()
            .ok_or_else(|| OpError::shape("a cast to f64 gave no f64 data"))?;
        let dets: Vec<f64> = if m == 0 {
            vec![1.0; s[..r - 2].iter().product()]
        } else {
            wide.chunks_exact(m * m).map(|a| det(a, m)).collect()
        };
        let y = Tensor::from_vec(s[..r - 2].to_vec(), dets)?;
        Ok(vec![super::cast::cast(&y, x.dtype())?])
    }
}

/// The determinant of the `m × m` row-major matrix `a`, in f64: Doolittle LU with
/// partial pivoting. For each column `k`, the pivot is the first row `i ≥ k` of
/// largest `|a[i][k]|` (a row swap flips the sign); unless it is zero, each row
/// below is reduced, `f = a[i][k] / a[k][k]`, `a[i][j] = a[i][j] − f · a[k][j]` (two
/// roundings) for `j > k`. The determinant is the sign times the sequential product
/// of the pivots `a[0][0] · a[1][1] · …`.
fn det(a: &[f64], m: usize) -> f64 {
    let mut a = a.to_vec();
    let mut sign = 1.0;
    for k in 0..m {
        let mut p = k;
        for i in k + 1..m {
            if a[i * m + k].abs() > a[p * m + k].abs() {
                p = i;
            }
        }
        if p != k {
            for j in 0..m {
                a.swap(k * m + j, p * m + j);
            }
            sign = -sign;
        }
        let pivot = a[k * m + k];
        if pivot == 0.0 {
            continue;
        }
        for i in k + 1..m {
            let f = a[i * m + k] / pivot;
            for j in k + 1..m {
                a[i * m + j] -= f * a[k * m + j];
            }
        }
    }
    (0..m).fold(sign, |d, k| d * a[k * m + k])
}

const MATMUL_TYPES: &[DType] = &[
    DType::F32,
    DType::F64,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::I64,
    DType::U32,
    DType::U64,
];

fn check_type(index: usize, d: DType) -> Result<(), OpError> {
    if MATMUL_TYPES.contains(&d) {
        Ok(())
    } else {
        Err(OpError::DType { index, dtype: d })
    }
}

/// One native dtype arm of [`by_dtype`].
macro_rules! by_dtype_native {
    ($ts:expr, $d0:expr, $shape:expr, $ty:ty, $v:ident, $T:ident, $body:expr) => {{
        type $T = $ty;
        let $v: Vec<&[$T]> = $ts
            .iter()
            .map(|t| {
                t.as_slice::<$T>().ok_or(OpError::DType {
                    index: 0,
                    dtype: $d0,
                })
            })
            .collect::<Result<_, _>>()?;
        let out: Vec<$T> = $body?;
        Tensor::from_vec($shape, out)?
    }};
}
pub(crate) use by_dtype_native;

/// One half-precision arm of [`by_dtype`]: widen to f32, compute, round once.
macro_rules! by_dtype_half {
    ($ts:expr, $d0:expr, $shape:expr, $h:ty, $v:ident, $T:ident, $body:expr) => {{
        type $T = f32;
        let owned: Vec<Vec<f32>> = $ts
            .iter()
            .map(|t| {
                t.as_slice::<$h>()
                    .map(|s| s.iter().map(|x| x.to_f32()).collect())
                    .ok_or(OpError::DType {
                        index: 0,
                        dtype: $d0,
                    })
            })
            .collect::<Result<_, _>>()?;
        let $v: Vec<&[$T]> = owned.iter().map(|v| v.as_slice()).collect();
        let out: Vec<f32> = $body?;
        Tensor::from_vec(
            $shape,
            out.into_iter().map(<$h>::from_f32).collect::<Vec<_>>(),
        )?
    }};
}
pub(crate) use by_dtype_half;

/// Evaluates `$body` (a `Result<Vec<T>, OpError>`) with `$v` the inputs' elements in
/// their computation type `$T`, and wraps the result as a tensor of the inputs'
/// dtype: f16/bf16 are computed in f32 and rounded once at the end. All inputs must
/// share one dtype.
macro_rules! by_dtype {
    ($tensors:expr, $shape:expr, |$v:ident : $T:ident| $body:expr) => {{
        let ts: &[&Tensor] = $tensors;
        let d0 = ts[0].dtype();
        if let Some(t) = ts.iter().find(|t| t.dtype() != d0) {
            return Err(OpError::DTypeMismatch {
                expected: d0,
                actual: t.dtype(),
            });
        }
        match d0 {
            DType::F32 => $crate::ops::linalg::by_dtype_native!(ts, d0, $shape, f32, $v, $T, $body),
            DType::F64 => $crate::ops::linalg::by_dtype_native!(ts, d0, $shape, f64, $v, $T, $body),
            DType::I32 => $crate::ops::linalg::by_dtype_native!(ts, d0, $shape, i32, $v, $T, $body),
            DType::I64 => $crate::ops::linalg::by_dtype_native!(ts, d0, $shape, i64, $v, $T, $body),
            DType::U32 => $crate::ops::linalg::by_dtype_native!(ts, d0, $shape, u32, $v, $T, $body),
            DType::U64 => $crate::ops::linalg::by_dtype_native!(ts, d0, $shape, u64, $v, $T, $body),
            DType::F16 => {
                $crate::ops::linalg::by_dtype_half!(ts, d0, $shape, half::f16, $v, $T, $body)
            }
            DType::BF16 => {
                $crate::ops::linalg::by_dtype_half!(ts, d0, $shape, half::bf16, $v, $T, $body)
            }
            d => return Err(OpError::DType { index: 0, dtype: d }),
        }
    }};
}
pub(crate) use by_dtype;

/// `gemm`, through `packed` (the same `b`, packed while planning) when the element
/// type has a packed kernel. Either way the bits are those of the reference.
pub(crate) fn product<T: Scalar>(
    ctx: &Ctx,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    packed: Option<&PackedB>,
    c: &mut [T],
) -> Result<(), OpError> {
    if let Some(p) = packed {
        if T::gemm_packed(ctx, a, b, p, c)? {
            return Ok(());
        }
    }
    gemm(ctx, a, b, c)
}

/// The packed right operand a plan prepared, if it is one and the input is f32.
fn packed_of<'p>(prepared: &'p Prepared, b: &Tensor) -> Option<&'p PackedB> {
    if b.dtype() == DType::F32 {
        prepared.0.downcast_ref::<PackedB>()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------
// MatMul

/// Shapes of a numpy-style matrix product.
#[derive(Debug, Clone, PartialEq)]
struct MatMulShape {
    m: usize,
    k: usize,
    n: usize,
    /// Broadcast batch shape.
    batch: Vec<usize>,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    out: Vec<usize>,
}

fn matmul_shape(a: &[usize], b: &[usize]) -> Result<MatMulShape, OpError> {
    if a.is_empty() || b.is_empty() {
        return Err(OpError::shape("MatMul inputs must have rank 1 or more"));
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(OpError::shape(format!(
            "MatMul of {a:?} and {b:?}: inner dimensions {k} and {kb} differ"
        )));
    }
    let a_batch = a2[..a2.len() - 2].to_vec();
    let b_batch = b2[..b2.len() - 2].to_vec();
    let batch = broadcast_shapes(&a_batch, &b_batch)?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    numel(&out)?;
    Ok(MatMulShape {
        m,
        k,
        n,
        batch,
        a_batch,
        b_batch,
        out,
    })
}

/// `MatMul`: numpy `matmul` (1-D operands promoted and the added axis removed, batch
/// dimensions broadcast).
#[derive(Debug)]
pub struct MatMul;

fn matmul_compute<T: Scalar>(
    ctx: &Ctx,
    s: &MatMulShape,
    a: &[T],
    b: &[T],
    packed: Option<&PackedB>,
) -> Result<Vec<T>, OpError> {
    let (m, k, n) = (s.m, s.k, s.n);
    let nb = numel(&s.batch)?;
    // Every product kernel writes each element of its output (zeros when k is 0).
    let mut out = crate::scratch::output(nb * m * n, T::ZERO);
    if out.is_empty() {
        return Ok(out);
    }
    let bad = || OpError::shape("MatMul operand smaller than its shape");
    let b_single = numel(&s.b_batch)? == 1;
    let a_full = numel(&s.a_batch)? == nb;
    if b_single && a_full {
        // One weight matrix for every batch: the batches of A stack into one tall
        // matrix. Each output row still reduces over k alone, so nothing changes.
        let am = Mat::row_major(a, nb * m, k).ok_or_else(bad)?;
        let bm = Mat::row_major(b, k, n).ok_or_else(bad)?;
        product(ctx, am, bm, packed, &mut out)?;
        return Ok(out);
    }
    let ao = broadcast_offsets(&s.a_batch, &s.batch);
    let bo = broadcast_offsets(&s.b_batch, &s.batch);
    for (i, o) in out.chunks_mut(m * n).enumerate() {
        let (ai, bi) = (ao[i] * m * k, bo[i] * k * n);
        let am = Mat::row_major(a.get(ai..).ok_or_else(bad)?, m, k).ok_or_else(bad)?;
        let bm = Mat::row_major(b.get(bi..).ok_or_else(bad)?, k, n).ok_or_else(bad)?;
        gemm(ctx, am, bm, o)?;
    }
    Ok(out)
}

impl Op for MatMul {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let a = infer_input(inputs, 0)?;
        let b = infer_input(inputs, 1)?;
        check_type(0, a.ty.dtype)?;
        same_dtype(a.ty.dtype, b.ty.dtype)?;
        let s = matmul_shape(&a.ty.shape, &b.ty.shape)?;
        one(a.ty.dtype, s.out)
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let k = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|t| t.shape.last().copied())
            .unwrap_or(1) as u64;
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        o.saturating_mul(k.max(1)).max(1)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, None)
    }
    /// A constant `B` shared by every batch is packed once.
    fn prepare(&self, inputs: &[Option<InferInput<'_>>]) -> Option<Prepared> {
        let a = inputs.first().copied().flatten()?;
        let b = inputs.get(1).copied().flatten()?.value?;
        let s = matmul_shape(&a.ty.shape, b.shape()).ok()?;
        if numel(&s.b_batch).ok()? != 1 {
            return None;
        }
        let bm = Mat::row_major(b.as_slice::<f32>()?, s.k, s.n)?;
        PackedB::new(bm).map(|p| Prepared(Box::new(p)))
    }
    fn run_prepared(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        prepared: &Prepared,
    ) -> Result<Vec<Tensor>, OpError> {
        let b = input(inputs, 1)?;
        self.run_with(inputs, ctx, packed_of(prepared, b))
    }
    /// The matrix kernels store every NaN canonical.
    fn nans_canonical(&self) -> bool {
        true
    }
}

impl MatMul {
    fn run_with(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        packed: Option<&PackedB>,
    ) -> Result<Vec<Tensor>, OpError> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 1)?;
        check_type(0, a.dtype())?;
        let s = matmul_shape(a.shape(), b.shape())?;
        let t = by_dtype!(&[a, b], s.out.clone(), |v: T| matmul_compute::<T>(
            ctx, &s, v[0], v[1], packed
        ));
        Ok(vec![t])
    }
}

// ---------------------------------------------------------------------------------
// Gemm

/// `Gemm`: `Y = alpha·(A'·B') + beta·C`, `A' = transA ? Aᵀ : A`, likewise `B'`.
#[derive(Debug)]
pub struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

fn build_gemm(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    if n.opset < 7 && n.attrs.int("broadcast", 0)? == 0 && n.num_inputs > 2 {
        return Err(OpError::unsupported(
            "Gemm before opset 7 without broadcast",
        ));
    }
    Ok(Box::new(Gemm {
        alpha: n.attrs.float("alpha", 1.0)?,
        beta: n.attrs.float("beta", 1.0)?,
        trans_a: n.attrs.int("transA", 0)? != 0,
        trans_b: n.attrs.int("transB", 0)? != 0,
    }))
}

impl Gemm {
    fn dims(&self, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize), OpError> {
        if a.len() != 2 || b.len() != 2 {
            return Err(OpError::shape(format!(
                "Gemm needs 2-D A and B, got {a:?} and {b:?}"
            )));
        }
        let (m, k) = if self.trans_a {
            (a[1], a[0])
        } else {
            (a[0], a[1])
        };
        let (kb, n) = if self.trans_b {
            (b[1], b[0])
        } else {
            (b[0], b[1])
        };
        if k != kb {
            return Err(OpError::shape(format!(
                "Gemm of {a:?} and {b:?} (transA={}, transB={}): inner dimensions {k} and {kb} differ",
                self.trans_a, self.trans_b
            )));
        }
        Ok((m, k, n))
    }

    fn check_c(c: &[usize], m: usize, n: usize) -> Result<(), OpError> {
        let out = broadcast_shapes(c, &[m, n])?;
        if out != [m, n] {
            return Err(OpError::shape(format!(
                "Gemm bias of shape {c:?} does not broadcast to [{m}, {n}]"
            )));
        }
        Ok(())
    }
}

/// The epilogue of `Gemm`: `y = alpha*acc`, then `y = y + beta*c`, each operation
/// rounded on its own (no fusing).
trait GemmScale: Scalar {
    fn scale(alpha: f32, acc: Self) -> Self;
    fn add_scaled(y: Self, beta: f32, c: Self) -> Self;
    fn integral(v: f32) -> bool;
}
impl GemmScale for f32 {
    fn scale(alpha: f32, acc: f32) -> f32 {
        alpha * acc
    }
    fn add_scaled(y: f32, beta: f32, c: f32) -> f32 {
        y + beta * c
    }
    fn integral(_: f32) -> bool {
        true
    }
}
impl GemmScale for f64 {
    fn scale(alpha: f32, acc: f64) -> f64 {
        alpha as f64 * acc
    }
    fn add_scaled(y: f64, beta: f32, c: f64) -> f64 {
        y + beta as f64 * c
    }
    fn integral(_: f32) -> bool {
        true
    }
}
macro_rules! int_scale {
    ($($t:ty),*) => {$(
        impl GemmScale for $t {
            fn scale(alpha: f32, acc: $t) -> $t {
                (alpha as i64 as $t).wrapping_mul(acc)
            }
            fn add_scaled(y: $t, beta: f32, c: $t) -> $t {
                y.wrapping_add((beta as i64 as $t).wrapping_mul(c))
            }
            fn integral(v: f32) -> bool {
                v.fract() == 0.0 && v.abs() < 9.0e15
            }
        }
    )*};
}
int_scale!(i32, i64, u32, u64);

impl Gemm {
    #[allow(clippy::too_many_arguments)]
    fn compute<T: GemmScale>(
        &self,
        ctx: &Ctx,
        (m, k, n): (usize, usize, usize),
        a: &[T],
        b: &[T],
        c: Option<(&[T], &[usize])>,
        packed: Option<&PackedB>,
    ) -> Result<Vec<T>, OpError> {
        if !T::integral(self.alpha) || !T::integral(self.beta) {
            return Err(OpError::unsupported(
                "integer Gemm with non-integral alpha or beta",
            ));
        }
        let bad = || OpError::shape("Gemm operand smaller than its shape");
        let am = if self.trans_a {
            Mat::row_major(a, k, m).map(Mat::t)
        } else {
            Mat::row_major(a, m, k)
        }
        .ok_or_else(bad)?;
        let bm = if self.trans_b {
            Mat::row_major(b, n, k).map(Mat::t)
        } else {
            Mat::row_major(b, k, n)
        }
        .ok_or_else(bad)?;
        let mut y = vec![T::ZERO; m * n];
        product(ctx, am, bm, packed, &mut y)?;
        // C broadcasts unidirectionally to [M, N]: its rows are [N] or [1], and there
        // is one of them ([N], [1, N], a scalar) or one per row of Y ([M, N], [M, 1]).
        let c = match c {
            Some((cv, cs)) => {
                let (rows, cols) = match cs {
                    [] => (1, 1),
                    [x] => (1, *x),
                    [r, x] => (*r, *x),
                    _ => return Err(bad()),
                };
                if cv.len() != rows * cols || (rows != 1 && rows != m) || (cols != 1 && cols != n) {
                    return Err(bad());
                }
                Some((cv, rows, cols))
            }
            None => None,
        };
        let (alpha, beta) = (self.alpha, self.beta);
        // `beta = 0` drops C (checked above all the same), as the ONNX reference and
        // onnxruntime do: an infinite or NaN bias does not turn into NaN, and a −0
        // product stays −0.
        let c = c.filter(|_| beta != 0.0);
        super::simd::with_fma(
            #[inline(always)]
            || {
                for (i, row) in y.chunks_mut(n.max(1)).enumerate() {
                    if alpha != 1.0 {
                        // 1·x is x for every non-NaN x and NaNs are canonical: skipping
                        // the multiply by one changes no bit.
                        for v in row.iter_mut() {
                            *v = T::scale(alpha, *v);
                        }
                    }
                    match c {
                        Some((cv, rows, cols)) => {
                            let cr = &cv[if rows == 1 { 0 } else { i * cols }..][..cols];
                            if cols == 1 {
                                let c0 = cr[0];
                                for v in row.iter_mut() {
                                    *v = T::add_scaled(*v, beta, c0).canon();
                                }
                            } else {
                                for (v, &c) in row.iter_mut().zip(cr) {
                                    *v = T::add_scaled(*v, beta, c).canon();
                                }
                            }
                        }
                        None => {
                            for v in row.iter_mut() {
                                *v = v.canon();
                            }
                        }
                    }
                }
            },
        );
        Ok(y)
    }
}

impl Op for Gemm {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let a = infer_input(inputs, 0)?;
        let b = infer_input(inputs, 1)?;
        check_type(0, a.ty.dtype)?;
        same_dtype(a.ty.dtype, b.ty.dtype)?;
        let (m, _, n) = self.dims(&a.ty.shape, &b.ty.shape)?;
        if let Some(c) = opt_infer_input(inputs, 2) {
            same_dtype(a.ty.dtype, c.ty.dtype)?;
            Self::check_c(&c.ty.shape, m, n)?;
        }
        one(a.ty.dtype, vec![m, n])
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let k = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|t| {
                if self.trans_a {
                    t.shape.first()
                } else {
                    t.shape.last()
                }
                .copied()
            })
            .unwrap_or(1) as u64;
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        o.saturating_mul(k.max(1).saturating_add(2))
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, None)
    }
    /// A constant `B` is packed once (transposed or not).
    fn prepare(&self, inputs: &[Option<InferInput<'_>>]) -> Option<Prepared> {
        let a = inputs.first().copied().flatten()?;
        let b = inputs.get(1).copied().flatten()?.value?;
        let (_, k, n) = self.dims(&a.ty.shape, b.shape()).ok()?;
        let v = b.as_slice::<f32>()?;
        let bm = if self.trans_b {
            Mat::row_major(v, n, k)?.t()
        } else {
            Mat::row_major(v, k, n)?
        };
        PackedB::new(bm).map(|p| Prepared(Box::new(p)))
    }
    fn run_prepared(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        prepared: &Prepared,
    ) -> Result<Vec<Tensor>, OpError> {
        let b = input(inputs, 1)?;
        self.run_with(inputs, ctx, packed_of(prepared, b))
    }
    /// The product is stored canonical, and every element is made canonical again
    /// after the scaling and the addition of C.
    fn nans_canonical(&self) -> bool {
        true
    }
}

impl Gemm {
    fn run_with(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        packed: Option<&PackedB>,
    ) -> Result<Vec<Tensor>, OpError> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 1)?;
        check_type(0, a.dtype())?;
        let dims = self.dims(a.shape(), b.shape())?;
        let (m, _, n) = dims;
        let c = opt_input(inputs, 2);
        let t = match c {
            Some(c) => {
                Self::check_c(c.shape(), m, n)?;
                let cs = c.shape().to_vec();
                by_dtype!(&[a, b, c], vec![m, n], |v: T| self.compute::<T>(
                    ctx,
                    dims,
                    v[0],
                    v[1],
                    Some((v[2], &cs)),
                    packed
                ))
            }
            None => by_dtype!(&[a, b], vec![m, n], |v: T| self
                .compute::<T>(ctx, dims, v[0], v[1], None, packed)),
        };
        Ok(vec![t])
    }
}

// ---------------------------------------------------------------------------------
// Einsum

/// `Einsum`: a general reference. Output indices are iterated row-major; for each,
/// the contracted indices are iterated row-major in the order the letters first
/// appear in the equation, and the term is accumulated from +0.0: one operand
/// `acc = acc + x`; two `acc = fma(x0, x1, acc)`; more `acc = fma(x0·…·x(n-2),
/// x(n-1), acc)` with the product rounded left to right.
#[derive(Debug)]
pub struct Einsum {
    inputs: Vec<Vec<Label>>,
    output: Option<Vec<Label>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Letter(u8),
    Ellipsis,
}

fn build_einsum(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let eq = n.attrs.string("equation", "")?;
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let parse = |s: &str| -> Result<Vec<Label>, OpError> {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        let mut ell = false;
        while i < b.len() {
            if b[i] == b'.' {
                if b.get(i..i + 3) != Some(b"...") || ell {
                    return Err(OpError::bad_attr("equation", "malformed ellipsis"));
                }
                ell = true;
                out.push(Label::Ellipsis);
                i += 3;
            } else if b[i].is_ascii_alphabetic() {
                out.push(Label::Letter(b[i]));
                i += 1;
            } else {
                return Err(OpError::bad_attr(
                    "equation",
                    format!("unexpected character {:?}", b[i] as char),
                ));
            }
        }
        Ok(out)
    };
    let inputs = lhs.split(',').map(parse).collect::<Result<Vec<_>, _>>()?;
    let output = rhs.map(parse).transpose()?;
    if inputs.len() != n.num_inputs {
        return Err(OpError::bad_attr(
            "equation",
            format!(
                "names {} operands but the node has {} inputs",
                inputs.len(),
                n.num_inputs
            ),
        ));
    }
    if let Some(o) = &output {
        for (i, l) in o.iter().enumerate() {
            if let Label::Letter(c) = l {
                if o[..i].contains(l) {
                    return Err(OpError::bad_attr(
                        "equation",
                        format!("output repeats {:?}", *c as char),
                    ));
                }
                if !inputs.iter().any(|x| x.contains(l)) {
                    return Err(OpError::bad_attr(
                        "equation",
                        format!("output letter {:?} is in no input", *c as char),
                    ));
                }
            }
        }
    }
    Ok(Box::new(Einsum { inputs, output }))
}

/// Resolved einsum: every axis as an index into the list of distinct labels.
#[derive(Debug)]
struct EinsumPlan {
    /// Per operand, per axis, the label id.
    operand_axes: Vec<Vec<usize>>,
    /// Label sizes.
    sizes: Vec<usize>,
    /// Output label ids.
    out: Vec<usize>,
    /// Contracted label ids, in order of first appearance.
    reduced: Vec<usize>,
}

impl Einsum {
    fn plan(&self, shapes: &[&[usize]]) -> Result<EinsumPlan, OpError> {
        if shapes.len() != self.inputs.len() {
            return Err(OpError::InputCount {
                min: self.inputs.len(),
                max: self.inputs.len(),
                actual: shapes.len(),
            });
        }
        // Ellipsis rank: the widest of the operands; the dims broadcast numpy-style.
        let mut ell_rank = 0usize;
        for (labels, shape) in self.inputs.iter().zip(shapes) {
            let named = labels.iter().filter(|l| **l != Label::Ellipsis).count();
            let has_ell = labels.contains(&Label::Ellipsis);
            if (!has_ell && named != shape.len()) || (has_ell && named > shape.len()) {
                return Err(OpError::shape(format!(
                    "einsum operand of shape {shape:?} does not match its {} labels",
                    named
                )));
            }
            if has_ell {
                ell_rank = ell_rank.max(shape.len() - named);
            }
        }
        // Label ids: ellipsis dims first (ids 0..ell_rank), then letters by appearance.
        let mut letters: Vec<u8> = Vec::new();
        let mut sizes: Vec<usize> = vec![1; ell_rank];
        let mut operand_axes = Vec::new();
        for (labels, shape) in self.inputs.iter().zip(shapes) {
            let named = labels.iter().filter(|l| **l != Label::Ellipsis).count();
            let er = shape.len() - named;
            let mut axes = Vec::new();
            let mut d = 0;
            for l in labels {
                match l {
                    Label::Ellipsis => {
                        for e in 0..er {
                            let id = ell_rank - er + e;
                            let s = shape[d];
                            if sizes[id] == 1 {
                                sizes[id] = s;
                            } else if s != 1 && s != sizes[id] {
                                return Err(OpError::shape(
                                    "einsum ellipsis dimensions do not broadcast",
                                ));
                            }
                            axes.push(id);
                            d += 1;
                        }
                    }
                    Label::Letter(c) => {
                        let id = match letters.iter().position(|x| x == c) {
                            Some(p) => ell_rank + p,
                            None => {
                                letters.push(*c);
                                sizes.push(shape[d]);
                                ell_rank + letters.len() - 1
                            }
                        };
                        if sizes[id] != shape[d] {
                            return Err(OpError::shape(format!(
                                "einsum label {:?} has sizes {} and {}",
                                *c as char, sizes[id], shape[d]
                            )));
                        }
                        axes.push(id);
                        d += 1;
                    }
                }
            }
            operand_axes.push(axes);
        }
        let out: Vec<usize> = match &self.output {
            Some(o) => {
                let mut v = Vec::new();
                for l in o {
                    match l {
                        Label::Ellipsis => v.extend(0..ell_rank),
                        Label::Letter(c) => {
                            let p = letters.iter().position(|x| x == c).ok_or_else(|| {
                                OpError::bad_attr("equation", "output letter in no input")
                            })?;
                            v.push(ell_rank + p);
                        }
                    }
                }
                if !o.contains(&Label::Ellipsis) && ell_rank > 0 {
                    // numpy sums broadcast ellipsis dims away only when asked to.
                    let mut lead: Vec<usize> = (0..ell_rank).collect();
                    lead.retain(|id| sizes[*id] == 1);
                    if lead.len() != ell_rank {
                        return Err(OpError::unsupported(
                            "einsum output without the ellipsis of its inputs",
                        ));
                    }
                }
                v
            }
            None => {
                // Implicit output: ellipsis dims, then letters used once, alphabetically.
                let mut v: Vec<usize> = (0..ell_rank).collect();
                let mut once: Vec<u8> = letters
                    .iter()
                    .copied()
                    .filter(|c| {
                        self.inputs
                            .iter()
                            .flatten()
                            .filter(|l| **l == Label::Letter(*c))
                            .count()
                            == 1
                    })
                    .collect();
                once.sort_unstable();
                for c in once {
                    if let Some(p) = letters.iter().position(|x| *x == c) {
                        v.push(ell_rank + p);
                    }
                }
                v
            }
        };
        let reduced: Vec<usize> = (0..sizes.len()).filter(|id| !out.contains(id)).collect();
        Ok(EinsumPlan {
            operand_axes,
            sizes,
            out,
            reduced,
        })
    }
}

trait EinsumElem: Scalar {
    fn add(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
}
macro_rules! einsum_float {
    ($($t:ty),*) => {$(
        impl EinsumElem for $t {
            fn add(a: $t, b: $t) -> $t { a + b }
            fn mul(a: $t, b: $t) -> $t { a * b }
        }
    )*};
}
einsum_float!(f32, f64);
macro_rules! einsum_int {
    ($($t:ty),*) => {$(
        impl EinsumElem for $t {
            fn add(a: $t, b: $t) -> $t { a.wrapping_add(b) }
            fn mul(a: $t, b: $t) -> $t { a.wrapping_mul(b) }
        }
    )*};
}
einsum_int!(i32, i64, u32, u64);

fn einsum_compute<T: EinsumElem>(
    p: &EinsumPlan,
    shapes: &[Vec<usize>],
    data: &[&[T]],
) -> Result<Vec<T>, OpError> {
    let out_shape: Vec<usize> = p.out.iter().map(|&i| p.sizes[i]).collect();
    let n_out = numel(&out_shape)?;
    let red_shape: Vec<usize> = p.reduced.iter().map(|&i| p.sizes[i]).collect();
    let n_red = numel(&red_shape)?;
    // Per operand, per label, the stride (0 for labels it lacks or broadcasts).
    let strides: Vec<Vec<usize>> = p
        .operand_axes
        .iter()
        .zip(shapes)
        .map(|(axes, shape)| {
            let st = super::util::strides(shape);
            let mut s = vec![0usize; p.sizes.len()];
            for (ax, &id) in axes.iter().enumerate() {
                if shape[ax] != 1 {
                    s[id] += st[ax];
                }
            }
            s
        })
        .collect();
    let mut idx = vec![0usize; p.sizes.len()];
    let mut out = Vec::with_capacity(n_out);
    let bad = || OpError::shape("einsum operand smaller than its shape");
    for o in 0..n_out {
        let mut rem = o;
        for (d, &id) in p.out.iter().enumerate().rev() {
            idx[id] = rem % out_shape[d];
            rem /= out_shape[d];
        }
        let mut acc = T::ZERO;
        for r in 0..n_red {
            let mut rem = r;
            for (d, &id) in p.reduced.iter().enumerate().rev() {
                idx[id] = rem % red_shape[d];
                rem /= red_shape[d];
            }
            let mut vals = data.iter().zip(&strides).map(|(v, s)| {
                let off: usize = s.iter().zip(&idx).map(|(a, b)| a * b).sum();
                v.get(off).copied().ok_or_else(bad)
            });
            acc = match data.len() {
                1 => T::add(acc, vals.next().ok_or_else(bad)??),
                _ => {
                    let mut prod = vals.next().ok_or_else(bad)??;
                    for _ in 1..data.len() - 1 {
                        prod = T::mul(prod, vals.next().ok_or_else(bad)??);
                    }
                    T::fma(prod, vals.next().ok_or_else(bad)??, acc)
                }
            };
        }
        out.push(acc.canon());
    }
    Ok(out)
}

impl Op for Einsum {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let mut shapes = Vec::new();
        let mut dt = None;
        for i in 0..inputs.len() {
            let x = infer_input(inputs, i)?;
            check_type(i, x.ty.dtype)?;
            if let Some(d) = dt {
                same_dtype(d, x.ty.dtype)?;
            }
            dt = Some(x.ty.dtype);
            shapes.push(x.ty.shape.as_slice());
        }
        let dt = dt.ok_or(OpError::MissingInput { index: 0 })?;
        let p = self.plan(&shapes)?;
        one(dt, p.out.iter().map(|&i| p.sizes[i]).collect())
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let shapes: Vec<&[usize]> = inputs
            .iter()
            .flatten()
            .map(|t| t.shape.as_slice())
            .collect();
        let total = self
            .plan(&shapes)
            .map(|p| {
                p.sizes
                    .iter()
                    .fold(1u64, |a, &s| a.saturating_mul(s as u64))
            })
            .unwrap_or(1);
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        total
            .saturating_mul(inputs.len().max(1) as u64)
            .saturating_add(o)
            .max(1)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let ts: Vec<&Tensor> = (0..inputs.len())
            .map(|i| input(inputs, i))
            .collect::<Result<_, _>>()?;
        if ts.is_empty() {
            return Err(OpError::MissingInput { index: 0 });
        }
        let shapes: Vec<Vec<usize>> = ts.iter().map(|t| t.shape().to_vec()).collect();
        let sref: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        let p = self.plan(&sref)?;
        let out_shape: Vec<usize> = p.out.iter().map(|&i| p.sizes[i]).collect();
        let t = by_dtype!(&ts, out_shape, |v: T| einsum_compute::<T>(&p, &shapes, &v));
        Ok(vec![t])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing;

    #[test]
    fn det_pivots_and_signs() {
        // [[0, 1], [2, 3]] needs a row swap at once: det = −(2 · 1).
        assert_eq!(det(&[0.0, 1.0, 2.0, 3.0], 2), -2.0);
        assert_eq!(det(&[2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0], 3), 24.0);
        assert_eq!(det(&[1.0, 2.0, 2.0, 4.0], 2), 0.0);
        let x = Tensor::from_vec(
            vec![2, 2, 2],
            vec![1.0f32, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0],
        )
        .unwrap();
        let y = Det.run(&[Some(&x)], &Ctx::default()).unwrap().remove(0);
        assert_eq!(y.shape(), &[2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-2.0, -1.0]);
    }
    use crate::attrs::{Attr, Attrs};
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    fn node<'a>(op: &'a str, attrs: &'a Attrs, ni: usize) -> NodeInfo<'a> {
        NodeInfo {
            name: "n",
            op_type: op,
            domain: "",
            opset: 17,
            attrs,
            num_inputs: ni,
            num_outputs: 1,
        }
    }

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn run(op: &dyn Op, ins: &[&Tensor], ctx: &Ctx) -> Result<Tensor, OpError> {
        let inputs: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        let infer_in: Vec<TypeInfo> = ins.iter().map(|t| TypeInfo::of(t)).collect();
        let ii: Vec<Option<InferInput<'_>>> = infer_in
            .iter()
            .map(|ty| Some(InferInput { ty, value: None }))
            .collect();
        let ty = op.infer(&ii)?;
        let out = op.run(&inputs, ctx)?.remove(0);
        assert_eq!(TypeInfo::of(&out), ty[0]);
        Ok(out)
    }

    #[test]
    fn matmul_promotes_vectors_and_broadcasts() {
        let ctx = Ctx::default();
        let a = t(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let v = t(&[3], vec![1., 0., -1.]);
        let y = run(&MatMul, &[&a, &v], &ctx).unwrap();
        assert_eq!(y.shape(), &[2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-2., -2.]);
        let y = run(
            &MatMul,
            &[&v, &a.clone().reshaped(vec![3, 2]).unwrap()],
            &ctx,
        )
        .unwrap();
        assert_eq!(y.shape(), &[2]);
        let b = t(&[4, 1, 3, 2], (0..24).map(|x| x as f32).collect());
        let y = run(&MatMul, &[&a, &b], &ctx).unwrap();
        assert_eq!(y.shape(), &[4, 1, 2, 2]);
        assert!(run(&MatMul, &[&a, &a], &ctx).is_err());
    }

    #[test]
    fn gemm_epilogue_order() {
        let attrs = Attrs(
            [
                ("alpha".to_string(), Attr::Float(0.5)),
                ("beta".to_string(), Attr::Float(2.0)),
                ("transB".to_string(), Attr::Int(1)),
            ]
            .into_iter()
            .collect(),
        );
        let op = build_gemm(&node("Gemm", &attrs, 3)).unwrap();
        let a = t(&[1, 2], vec![1., 2.]);
        let b = t(&[2, 2], vec![1., 1., 3., 4.]);
        let c = t(&[2], vec![10., 20.]);
        let y = run(op.as_ref(), &[&a, &b, &c], &Ctx::default()).unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[0.5 * 3. + 20., 0.5 * 11. + 40.]
        );
    }

    #[test]
    fn gemm_with_beta_zero_drops_c() {
        // As the ONNX reference and onnxruntime compute it: 0·∞ and 0·NaN never reach
        // the output, and a −0 product stays −0.
        let attrs = Attrs(
            [
                ("alpha".to_string(), Attr::Float(-1.0)),
                ("beta".to_string(), Attr::Float(0.0)),
            ]
            .into_iter()
            .collect(),
        );
        let op = build_gemm(&node("Gemm", &attrs, 3)).unwrap();
        let a = t(&[1, 2], vec![1., -0.0]);
        let b = t(&[2, 3], vec![2., -0.0, 0.0, 3., 1., 1.]);
        let c = t(&[3], vec![f32::INFINITY, f32::NAN, 1.0]);
        let y = run(op.as_ref(), &[&a, &b, &c], &Ctx::default()).unwrap();
        let bits: Vec<u32> = y
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        // −1·2, then −1·(+0) twice: −0, where adding 0·c would give NaN, NaN and +0.
        assert_eq!(bits, [-2.0f32, -0.0, -0.0].map(f32::to_bits));
    }

    #[test]
    fn einsum_forms() {
        let eq = |s: &str| {
            Attrs(
                [("equation".to_string(), Attr::String(s.into()))]
                    .into_iter()
                    .collect(),
            )
        };
        let ctx = Ctx::default();
        let a = t(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let attrs = eq("ij->ji");
        let op = build_einsum(&node("Einsum", &attrs, 1)).unwrap();
        let y = run(op.as_ref(), &[&a], &ctx).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1., 4., 2., 5., 3., 6.]);
        let attrs = eq("ij,kj");
        let op = build_einsum(&node("Einsum", &attrs, 2)).unwrap();
        let y = run(op.as_ref(), &[&a, &a], &ctx).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[14., 32., 32., 77.]);
        let attrs = eq("...ii->...i");
        let op = build_einsum(&node("Einsum", &attrs, 1)).unwrap();
        let m = t(&[2, 2, 2], (0..8).map(|x| x as f32).collect());
        let y = run(op.as_ref(), &[&m], &ctx).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0., 3., 4., 7.]);
        let attrs = eq("ij,jk->ik");
        let op = build_einsum(&node("Einsum", &attrs, 2)).unwrap();
        let b = t(&[3, 2], vec![1., 0., 0., 1., 1., 1.]);
        let y = run(op.as_ref(), &[&a, &b], &ctx).unwrap();
        let z = run(&MatMul, &[&a, &b], &ctx).unwrap();
        assert_eq!(y, z);
        let attrs = eq("ij,jk->ik");
        assert!(build_einsum(&node("Einsum", &attrs, 1)).is_err());
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros_over_a_stale_buffer() {
        let a = t(&[3, 0], vec![]);
        let b = t(&[0, 5], vec![]);
        for ctx in [
            Ctx::new(KernelMode::Reference, 1),
            Ctx::new(KernelMode::Fast, 2),
        ] {
            crate::scratch::leave_stale_f32(15);
            let y = run(&MatMul, &[&a, &b], &ctx).unwrap();
            assert_eq!(y.shape(), &[3, 5]);
            assert!(y
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .all(|x| x.to_bits() == 0));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matmul_fast_equals_reference(
            (batch, m, k, n) in (1usize..4, 0usize..9, 0usize..20, 0usize..20),
            bcast in any::<bool>(), seed in any::<u32>(), threads in 1usize..=4,
            finite_only in any::<bool>(),
        ) {
            let mut s = seed as u64 | 1;
            // Half the cases without NaNs and infinities, which over a product of a
            // dozen terms make nearly every output NaN whatever the other terms were.
            let mut next = || loop {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                let v = match s % 11 { 0 => f32::NAN, 1 => -0.0, 2 => f32::INFINITY, 3 => 1e-41, _ => (s >> 40) as f32 / 1e6 - 8.0 };
                if !finite_only || v.is_finite() { break v; }
            };
            let a = t(&[batch, m, k], (0..batch * m * k).map(|_| next()).collect());
            let bshape = if bcast { vec![k, n] } else { vec![batch, k, n] };
            let b = t(&bshape, (0..bshape.iter().product::<usize>()).map(|_| next()).collect());
            // The output is written into a freed buffer of stale NaNs: an element a
            // kernel left unwritten would show.
            crate::scratch::leave_stale_f32(batch * m * n);
            let r = run(&MatMul, &[&a, &b], &Ctx::new(KernelMode::Reference, 1)).unwrap();
            crate::scratch::leave_stale_f32(batch * m * n);
            let f = run(&MatMul, &[&a, &b], &Ctx::new(KernelMode::Fast, threads)).unwrap();
            prop_assert_eq!(r.encode(), f.encode());
            if k == 0 {
                prop_assert!(r.as_slice::<f32>().unwrap().iter().all(|&x| x.to_bits() == 0));
            }
        }
    }

    /// A value drawn by `s` (a xorshift state): NaNs, infinities, signed zeros and
    /// subnormals among ordinary values, or (`finite_only`) finite values only.
    fn special(s: &mut u64, finite_only: bool) -> f32 {
        loop {
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            let v = match *s % 13 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => -0.0,
                4 => 1e-41,
                _ => (*s >> 40) as f32 / 1e6 - 8.0,
            };
            if !finite_only || v.is_finite() {
                return v;
            }
        }
    }

    /// The operator's output by `run`, and by `run_prepared` with `B` known while
    /// planning (a constant, as the plan packs it) when the operator prepares for it.
    fn outputs(op: &dyn Op, ins: &[&Tensor], ctx: &Ctx) -> Vec<Tensor> {
        let mut outs = vec![run(op, ins, ctx).unwrap()];
        let tys: Vec<TypeInfo> = ins.iter().map(|t| TypeInfo::of(t)).collect();
        let infer: Vec<Option<InferInput<'_>>> = tys
            .iter()
            .enumerate()
            .map(|(i, ty)| {
                Some(InferInput {
                    ty,
                    value: (i == 1).then_some(ins[1]),
                })
            })
            .collect();
        if let Some(p) = op.prepare(&infer) {
            let inputs: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
            outs.push(op.run_prepared(&inputs, ctx, &p).unwrap().remove(0));
        }
        outs
    }

    fn contexts() -> Vec<Ctx> {
        let mut c: Vec<Ctx> = (1..=4).map(|t| Ctx::new(KernelMode::Fast, t)).collect();
        c.push(Ctx::new(KernelMode::Reference, 1));
        c
    }

    /// The canonical dot product of row `i` of `a` and column `j` of `b`, read through
    /// `at(i, kk)` and `bt(kk, j)`: `acc = +0`, then `acc = fma(a, b, acc)` for k
    /// increasing.
    fn dot(k: usize, at: impl Fn(usize) -> f32, bt: impl Fn(usize) -> f32) -> f32 {
        (0..k).fold(0.0f32, |acc, kk| at(kk).mul_add(bt(kk), acc))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// `MatMul` over operands of rank 1 to 4 whose batch dimensions broadcast
        /// (either side 1, or missing), against numpy's `matmul` written out index by
        /// index: every output element is the canonical dot product of its row of A
        /// and its column of B, read through the broadcast batch index; a 1-D operand
        /// is a row (A) or a column (B) whose axis the output drops. Run as it comes
        /// and prepared with a constant B, in fast mode at 1-4 threads and in
        /// reference mode.
        #[test]
        fn matmul_equals_its_definition(
            ((ra, rb), (m, k, n), (ash, bsh)) in testing::matmul_shapes(7, 40),
            seed in any::<u64>(),
            finite_only in any::<bool>(),
        ) {
            let mut s = seed | 1;
            let av: Vec<f32> = (0..ash.iter().product()).map(|_| special(&mut s, finite_only)).collect();
            let bv: Vec<f32> = (0..bsh.iter().product()).map(|_| special(&mut s, finite_only)).collect();
            let (a, b) = (t(&ash, av.clone()), t(&bsh, bv.clone()));
            // The definition.
            let (m, n) = (if ra == 1 { 1 } else { m }, if rb == 1 { 1 } else { n });
            let (out_batch, pairs) = testing::matmul_batches(&ash, &bsh);
            let mut want = Vec::new();
            for &(ia, ib) in &pairs {
                let (ao, bo) = (ia * m * k, ib * k * n);
                for i in 0..m {
                    for j in 0..n {
                        let y = dot(k, |kk| av[ao + i * k + kk], |kk| bv[bo + kk * n + j]);
                        want.push(crate::ops::math::canon_f32(y).to_bits());
                    }
                }
            }
            let mut shape = out_batch.clone();
            if ra > 1 { shape.push(m); }
            if rb > 1 { shape.push(n); }
            for ctx in contexts() {
                for y in outputs(&MatMul, &[&a, &b], &ctx) {
                    prop_assert_eq!(y.shape(), &shape[..]);
                    let got: Vec<u32> = y.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
                    prop_assert_eq!(&got, &want, "{:?} threads {}", if ctx.reference() { "reference" } else { "fast" }, ctx.threads());
                }
            }
        }

        /// `Gemm` with every `transA`/`transB`, alpha and beta (1 and 0 among them), and
        /// a C of every shape that broadcasts to [M, N] (or none), against its
        /// definition: `alpha · acc` (the canonical dot product), plus `beta · c` unless
        /// beta is 0, each rounded on its own, then the canonical NaN. Run as it comes and with a constant B
        /// packed while planning, fast at 1-4 threads and reference.
        #[test]
        fn gemm_equals_its_definition(
            (m, k, n) in (1usize..9, 0usize..40, 1usize..40),
            (trans_a, trans_b) in (any::<bool>(), any::<bool>()),
            (alpha, beta) in (prop::sample::select(vec![1.0f32, 0.5, -2.0, 0.0]), prop::sample::select(vec![1.0f32, 0.0, 0.25, -3.0])),
            c_form in 0usize..8,
            seed in any::<u64>(),
            finite_only in any::<bool>(),
        ) {
            let attrs = Attrs(
                [
                    ("alpha".to_string(), Attr::Float(alpha)),
                    ("beta".to_string(), Attr::Float(beta)),
                    ("transA".to_string(), Attr::Int(i64::from(trans_a))),
                    ("transB".to_string(), Attr::Int(i64::from(trans_b))),
                ]
                .into_iter()
                .collect(),
            );
            let csh: Option<Vec<usize>> = match c_form {
                0 => None,
                1 => Some(vec![]),
                2 => Some(vec![1]),
                3 => Some(vec![n]),
                4 => Some(vec![1, n]),
                5 => Some(vec![m, 1]),
                6 => Some(vec![1, 1]),
                _ => Some(vec![m, n]),
            };
            let op = build_gemm(&node("Gemm", &attrs, 2 + usize::from(csh.is_some()))).unwrap();
            let mut s = seed | 1;
            let av: Vec<f32> = (0..m * k).map(|_| special(&mut s, finite_only)).collect();
            let bv: Vec<f32> = (0..k * n).map(|_| special(&mut s, finite_only)).collect();
            let a = t(&if trans_a { vec![k, m] } else { vec![m, k] }, av.clone());
            let b = t(&if trans_b { vec![n, k] } else { vec![k, n] }, bv.clone());
            let c = csh.as_ref().map(|cs| {
                t(cs, (0..cs.iter().product()).map(|_| special(&mut s, finite_only)).collect())
            });
            let a_at = |i: usize, kk: usize| if trans_a { av[kk * m + i] } else { av[i * k + kk] };
            let b_at = |kk: usize, j: usize| if trans_b { bv[j * k + kk] } else { bv[kk * n + j] };
            let mut want = Vec::with_capacity(m * n);
            for i in 0..m {
                for j in 0..n {
                    let acc = dot(k, |kk| a_at(i, kk), |kk| b_at(kk, j));
                    let mut y = alpha * acc;
                    if let (Some(c), Some(cs)) = (c.as_ref().filter(|_| beta != 0.0), &csh) {
                        let cv = c.as_slice::<f32>().unwrap();
                        let ci = match cs[..] {
                            [] | [1] | [1, 1] => 0,
                            [_] | [1, _] => j,
                            [_, 1] => i,
                            _ => i * n + j,
                        };
                        y += beta * cv[ci];
                    }
                    want.push(crate::ops::math::canon_f32(y).to_bits());
                }
            }
            let mut ins = vec![&a, &b];
            if let Some(c) = &c {
                ins.push(c);
            }
            for ctx in contexts() {
                for y in outputs(op.as_ref(), &ins, &ctx) {
                    prop_assert_eq!(y.shape(), &[m, n][..]);
                    let got: Vec<u32> = y.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
                    prop_assert_eq!(&got, &want, "{:?} threads {}", if ctx.reference() { "reference" } else { "fast" }, ctx.threads());
                }
            }
        }
    }
}
