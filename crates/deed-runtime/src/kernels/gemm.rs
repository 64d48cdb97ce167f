//! The canonical matrix product `C = A·B`.
//!
//! For every output element, in exactly this order:
//!
//! ```text
//! acc = +0.0
//! for k in 0..K:                  // increasing
//!     acc = fma(a[i,k], b[k,j], acc)   // one rounding per step
//! c[i,j] = acc, with any NaN replaced by the canonical quiet NaN
//! ```
//!
//! Integers use wrapping multiply and add (exact and order-free). The fast paths
//! (AVX-512 and AVX2+FMA register tiles, portable row blocks, threads) change only which outputs
//! are computed together and where, never the per-output sequence above; k-blocking
//! stores and reloads the exact f32 accumulator, which does not round.

use crate::ctx::Ctx;
use crate::error::OpError;

/// The canonical quiet NaN for f32 outputs (positive sign, no payload).
pub const CANONICAL_NAN_F32: u32 = 0x7fc0_0000;
/// The canonical quiet NaN for f64 outputs (positive sign, no payload).
pub const CANONICAL_NAN_F64: u64 = 0x7ff8_0000_0000_0000;

/// An element type the matrix product supports.
pub trait Scalar: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    /// The additive identity (`+0.0` for floats).
    const ZERO: Self;
    /// `acc + a*b`: fused (one rounding) for floats, wrapping for integers.
    fn fma(a: Self, b: Self, acc: Self) -> Self;
    /// The value with any NaN replaced by the canonical quiet NaN (identity for
    /// integers). Hardware differs in which NaN payload an operation propagates;
    /// canonicalising makes the bits independent of it.
    fn canon(self) -> Self;
    /// `C = A·B` with the fastest implementation available; must equal
    /// [`gemm_reference`] bit for bit.
    fn gemm_fast(ctx: &Ctx, a: Mat<'_, Self>, b: Mat<'_, Self>, c: &mut [Self]) {
        gemm_rows_parallel(ctx, a, b, c);
    }
    /// `C = A·B` through `packed` (this `b`, packed) when the type has a packed
    /// kernel: `Ok(true)` when done, `Ok(false)` (nothing written) when it has none.
    fn gemm_packed(
        _ctx: &Ctx,
        _a: Mat<'_, Self>,
        _b: Mat<'_, Self>,
        _packed: &PackedB,
        _c: &mut [Self],
    ) -> Result<bool, OpError> {
        Ok(false)
    }
    /// Appends `plane[i]` for every `i` of `idx`, or zero where `i` lies outside the
    /// plane (an im2col gather).
    fn gather(plane: &[Self], idx: &[u32], out: &mut Vec<Self>) {
        out.extend(
            idx.iter()
                .map(|&i| plane.get(i as usize).copied().unwrap_or(Self::ZERO)),
        );
    }
    /// `planes[c·P + q] = rows(q, c)` for the P × C view `rows`, plus `bias[c]` (one
    /// rounded add, NaN made canonical) when given: a transposed product written back
    /// as channel planes. True when done by the type's kernel; false, writing nothing,
    /// when it has none or the operands do not fit it.
    fn planes_from_rows(
        _rows: Mat<'_, Self>,
        _bias: Option<&[Self]>,
        _planes: &mut [Self],
    ) -> bool {
        false
    }
    /// [`gemm_rows`] when the type has that kernel: `Ok(true)` when done, `Ok(false)`
    /// (nothing written) when it has none.
    fn gemm_rows(
        _ctx: &Ctx,
        _a: Mat<'_, Self>,
        _b: RowsB<'_, Self>,
        _c: &mut [Self],
    ) -> Result<bool, OpError> {
        Ok(false)
    }
}

impl Scalar for f32 {
    const ZERO: f32 = 0.0;
    #[inline(always)]
    fn fma(a: f32, b: f32, acc: f32) -> f32 {
        a.mul_add(b, acc)
    }
    #[inline(always)]
    fn canon(self) -> f32 {
        if self.is_nan() {
            f32::from_bits(CANONICAL_NAN_F32)
        } else {
            self
        }
    }
    fn gemm_fast(ctx: &Ctx, a: Mat<'_, f32>, b: Mat<'_, f32>, c: &mut [f32]) {
        F32Kernel::detect().run(ctx, a, b, c, None);
    }
    fn gemm_packed(
        ctx: &Ctx,
        a: Mat<'_, f32>,
        b: Mat<'_, f32>,
        packed: &PackedB,
        c: &mut [f32],
    ) -> Result<bool, OpError> {
        gemm_prepacked(ctx, a, b, packed, c).map(|()| true)
    }
    fn gemm_rows(
        ctx: &Ctx,
        a: Mat<'_, f32>,
        b: RowsB<'_, f32>,
        c: &mut [f32],
    ) -> Result<bool, OpError> {
        gemm_rows(ctx, a, b, c).map(|()| true)
    }
    fn gather(plane: &[f32], idx: &[u32], out: &mut Vec<f32>) {
        super::gather::gather_f32(plane, idx, out);
    }
    fn planes_from_rows(rows: Mat<'_, f32>, bias: Option<&[f32]>, planes: &mut [f32]) -> bool {
        super::gather::planes_from_rows_f32(rows, bias, planes)
    }
}

impl Scalar for f64 {
    const ZERO: f64 = 0.0;
    #[inline(always)]
    fn fma(a: f64, b: f64, acc: f64) -> f64 {
        a.mul_add(b, acc)
    }
    #[inline(always)]
    fn canon(self) -> f64 {
        if self.is_nan() {
            f64::from_bits(CANONICAL_NAN_F64)
        } else {
            self
        }
    }
}

macro_rules! int_scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const ZERO: $t = 0;
            #[inline(always)]
            fn fma(a: $t, b: $t, acc: $t) -> $t {
                acc.wrapping_add(a.wrapping_mul(b))
            }
            #[inline(always)]
            fn canon(self) -> $t {
                self
            }
        }
    )*};
}
int_scalar!(i8, u8, i16, u16, i32, u32, i64, u64);

/// A product's B operand as rows in one buffer: row `k` is
/// `data[offs[k]..offs[k] + n]`. Rows may overlap, so a convolution's patches can be
/// read in place from its (padded) input instead of being copied out first.
#[derive(Debug, Clone, Copy)]
pub struct RowsB<'a, T> {
    /// The buffer the rows lie in.
    pub data: &'a [T],
    /// Where each row starts in `data`, in order of K.
    pub offs: &'a [usize],
    /// Length of every row: the columns of B.
    pub n: usize,
}

impl<T> RowsB<'_, T> {
    /// Whether every row lies inside `data`.
    pub fn inside(&self) -> bool {
        self.offs.iter().all(|&o| {
            o.checked_add(self.n)
                .is_some_and(|end| end <= self.data.len())
        })
    }
}

/// A read-only strided matrix view: element `(i, j)` is `data[i*rs + j*cs]`.
/// Construction checks that every element is in bounds, which is what lets the SIMD
/// kernels read without per-element checks.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T: Copy> Mat<'a, T> {
    /// A view, or `None` when some element would lie outside `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Option<Self> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(rs)?
                .checked_add((cols - 1).checked_mul(cs)?)?;
            if last >= data.len() {
                return None;
            }
        }
        Some(Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }
    /// A dense row-major `rows × cols` view.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Option<Self> {
        Self::new(data, rows, cols, cols, 1)
    }
    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// Rows `r0..r0+n` as a view (clamped to the matrix).
    pub fn rows_range(self, r0: usize, n: usize) -> Self {
        let r0 = r0.min(self.rows);
        let n = n.min(self.rows - r0);
        let start = if n == 0 { 0 } else { r0 * self.rs };
        Mat {
            data: &self.data[start.min(self.data.len())..],
            rows: n,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
    /// Columns `c0..c0+n` as a view (clamped to the matrix).
    pub fn cols_range(self, c0: usize, n: usize) -> Self {
        let c0 = c0.min(self.cols);
        let n = n.min(self.cols - c0);
        let start = if n == 0 { 0 } else { c0 * self.cs };
        Mat {
            data: &self.data[start.min(self.data.len())..],
            rows: self.rows,
            cols: n,
            rs: self.rs,
            cs: self.cs,
        }
    }
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride.
    pub fn rs(&self) -> usize {
        self.rs
    }
    /// Column stride.
    pub fn cs(&self) -> usize {
        self.cs
    }
    /// The underlying storage, starting at element `(0, 0)`.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
    /// Element `(i, j)`; the caller keeps `i < rows`, `j < cols`.
    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.rs + j * self.cs]
    }
    /// A dense row-major copy with unit column stride.
    pub fn to_row_major(&self) -> Vec<T> {
        let mut v = Vec::with_capacity(self.rows * self.cols);
        for i in 0..self.rows {
            for j in 0..self.cols {
                v.push(self.at(i, j));
            }
        }
        v
    }
}

fn check<T: Copy>(a: &Mat<'_, T>, b: &Mat<'_, T>, c: &[T]) -> Result<(), OpError> {
    if a.cols != b.rows || c.len() != a.rows.saturating_mul(b.cols) {
        return Err(OpError::shape(format!(
            "matrix product of {}×{} and {}×{} into {} elements",
            a.rows,
            a.cols,
            b.rows,
            b.cols,
            c.len()
        )));
    }
    Ok(())
}

/// The scalar reference: the executable specification of `C = A·B` (row-major `c`,
/// `a.rows() × b.cols()`).
pub fn gemm_reference<T: Scalar>(a: Mat<'_, T>, b: Mat<'_, T>, c: &mut [T]) -> Result<(), OpError> {
    check(&a, &b, c)?;
    reference_rows(a, b, c);
    Ok(())
}

/// Computes rows of `c` in the canonical order. The loop runs `k` outside `j`, so
/// each `c[i,j]` still sees its terms in increasing `k`, one fused step each.
fn reference_rows<T: Scalar>(a: Mat<'_, T>, b: Mat<'_, T>, c: &mut [T]) {
    let n = b.cols;
    if n == 0 {
        return;
    }
    for (i, row) in c.chunks_mut(n).enumerate().take(a.rows) {
        row.fill(T::ZERO);
        for k in 0..a.cols {
            let av = a.at(i, k);
            if b.cs == 1 {
                let brow = &b.data[k * b.rs..k * b.rs + n];
                for (o, &bv) in row.iter_mut().zip(brow) {
                    *o = T::fma(av, bv, *o);
                }
            } else {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = T::fma(av, b.at(k, j), *o);
                }
            }
        }
        for o in row.iter_mut() {
            *o = o.canon();
        }
    }
}

/// Portable fast path: the reference loop over blocks of rows, split over threads.
fn gemm_rows_parallel<T: Scalar>(ctx: &Ctx, a: Mat<'_, T>, b: Mat<'_, T>, c: &mut [T]) {
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    let rows_per = m.div_ceil(ctx.threads()).max(1);
    ctx.for_each_chunk(c, rows_per * n, |ci, chunk| {
        let r0 = ci * rows_per;
        reference_rows(a.rows_range(r0, chunk.len() / n), b, chunk);
    });
}

/// `C = A·B` (row-major `c`, `a.rows() × b.cols()`), bit-identical to
/// [`gemm_reference`]; takes the reference path when `ctx.reference()`.
pub fn gemm<T: Scalar>(
    ctx: &Ctx,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    c: &mut [T],
) -> Result<(), OpError> {
    check(&a, &b, c)?;
    if ctx.reference() {
        reference_rows(a, b, c);
    } else {
        T::gemm_fast(ctx, a, b, c);
    }
    Ok(())
}

/// `C = A·B` (f32, row-major `c`, `a.rows() × b.n`) with B given by its rows
/// ([`RowsB`]). Bit-identical to [`gemm_reference`] on B copied out row by row, which is what the
/// reference mode and CPUs without AVX2 do; the SIMD kernels read the rows in place.
pub fn gemm_rows(
    ctx: &Ctx,
    a: Mat<'_, f32>,
    b: RowsB<'_, f32>,
    c: &mut [f32],
) -> Result<(), OpError> {
    if a.cols != b.offs.len() || c.len() != a.rows.saturating_mul(b.n) || !b.inside() {
        return Err(OpError::shape(format!(
            "row-indexed product of {}×{} and {} rows of {} into {} elements",
            a.rows,
            a.cols,
            b.offs.len(),
            b.n,
            c.len()
        )));
    }
    if ctx.reference() {
        gemm_rows_copied(ctx, a, b, c);
    } else {
        F32Kernel::detect().run_rows(ctx, a, b, c);
    }
    Ok(())
}

/// [`gemm_rows`] on B copied out row by row: the reference, and the portable path.
fn gemm_rows_copied(ctx: &Ctx, a: Mat<'_, f32>, rows: RowsB<'_, f32>, c: &mut [f32]) {
    let RowsB { data, offs, n } = rows;
    if n == 0 || a.rows == 0 {
        return;
    }
    let mut dense = Vec::with_capacity(offs.len() * n);
    for &o in offs {
        dense.extend_from_slice(&data[o..o + n]);
    }
    if let Some(b) = Mat::row_major(&dense, offs.len(), n) {
        if ctx.reference() {
            reference_rows(a, b, c);
        } else {
            gemm_rows_parallel(ctx, a, b, c);
        }
    }
}

/// The f32 kernel this CPU runs: the widest SIMD it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F32Kernel {
    /// AVX-512F, 16 lanes (`gemm_avx512.rs`).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 + FMA, 8 lanes (`gemm_avx2.rs`).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The reference loop over row blocks, split over threads.
    Portable,
}

impl F32Kernel {
    fn detect() -> F32Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if super::gemm_avx512::available() {
                return F32Kernel::Avx512;
            }
            if super::gemm_avx2::available() {
                return F32Kernel::Avx2;
            }
        }
        F32Kernel::Portable
    }

    /// Every kernel this CPU can run, the detected one first.
    #[cfg(test)]
    fn all_available() -> Vec<F32Kernel> {
        let mut v = vec![F32Kernel::detect()];
        #[cfg(target_arch = "x86_64")]
        if super::gemm_avx2::available() && !v.contains(&F32Kernel::Avx2) {
            v.push(F32Kernel::Avx2);
        }
        if !v.contains(&F32Kernel::Portable) {
            v.push(F32Kernel::Portable);
        }
        v
    }

    /// `c = a·b` on this kernel; `pre` is `b` packed by [`F32Kernel::pack`] for it.
    fn run(self, ctx: &Ctx, a: Mat<'_, f32>, b: Mat<'_, f32>, c: &mut [f32], pre: Option<&[f32]>) {
        match self {
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 => super::gemm_avx512::gemm(ctx, a, b, c, pre),
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx2 => super::gemm_avx2::gemm(ctx, a, b, c, pre),
            F32Kernel::Portable => gemm_rows_parallel(ctx, a, b, c),
        }
    }

    /// [`gemm_rows`] on this kernel (arguments checked by it).
    fn run_rows(self, ctx: &Ctx, a: Mat<'_, f32>, b: RowsB<'_, f32>, c: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 => super::gemm_avx512::gemm_rows(ctx, a, b, c),
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx2 => super::gemm_avx2::gemm_rows(ctx, a, b, c),
            F32Kernel::Portable => gemm_rows_copied(ctx, a, b, c),
        }
    }

    /// `b` in this kernel's packed layout, if it has one.
    fn pack(self, b: Mat<'_, f32>) -> Option<Vec<f32>> {
        match self {
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 => Some(super::gemm_avx512::pack_whole(b)),
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx2 => Some(super::gemm_avx2::pack_whole(b)),
            F32Kernel::Portable => None,
        }
    }
}

/// An f32 right operand packed once for the SIMD kernel, for products repeated with
/// the same `B` (a constant weight matrix). Packing copies values and changes no
/// arithmetic, so [`gemm_prepacked`] gives exactly the bits of [`gemm`].
#[derive(Debug, Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    kernel: F32Kernel,
    data: Vec<f32>,
}

impl PackedB {
    /// `b` packed for this CPU's kernel, or `None` when its kernel does not use packed
    /// operands (then [`gemm`] is as fast).
    pub fn new(b: Mat<'_, f32>) -> Option<PackedB> {
        Self::with_kernel(b, F32Kernel::detect())
    }

    fn with_kernel(b: Mat<'_, f32>, kernel: F32Kernel) -> Option<PackedB> {
        if b.rows == 0 || b.cols == 0 {
            return None;
        }
        Some(PackedB {
            k: b.rows,
            n: b.cols,
            kernel,
            data: kernel.pack(b)?,
        })
    }

    /// Rows and columns of the packed matrix.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// `C = A·B` where `packed` is `b` packed by [`PackedB::new`]; bit-identical to
/// [`gemm_reference`]. `b` itself serves the reference mode and the shapes the packed
/// kernel does not take.
pub fn gemm_prepacked(
    ctx: &Ctx,
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    packed: &PackedB,
    c: &mut [f32],
) -> Result<(), OpError> {
    check(&a, &b, c)?;
    if packed.dims() != (b.rows, b.cols) {
        return Err(OpError::shape(format!(
            "packed operand is {}×{}, the matrix {}×{}",
            packed.k, packed.n, b.rows, b.cols
        )));
    }
    if ctx.reference() {
        reference_rows(a, b, c);
        return Ok(());
    }
    packed.kernel.run(ctx, a, b, c, Some(&packed.data));
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    /// f32 values for property tests: ordinary ones with NaN, infinities, both zeros,
    /// subnormals, the largest finite and any bit pattern among them.
    pub(in crate::kernels) fn special() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => -4.0f32..4.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(1e-40f32),
            1 => Just(-3e-39f32),
            1 => Just(f32::MAX),
            1 => any::<f32>(),
        ]
    }

    /// Finite f32 values for property tests: ordinary ones with both zeros and
    /// subnormals. Over a product of a few dozen terms, [`special`]'s NaNs and
    /// infinities make nearly every output NaN, whatever the kernel did with the other
    /// terms; drawn from these, every term shows in the bits.
    pub(in crate::kernels) fn finite() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -4.0f32..4.0,
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(1e-40f32),
            1 => Just(-3e-39f32),
        ]
    }

    /// [`special`] or, with `finite_only`, [`finite`].
    fn values(finite_only: bool, len: usize) -> BoxedStrategy<Vec<f32>> {
        if finite_only {
            prop::collection::vec(finite(), len).boxed()
        } else {
            prop::collection::vec(special(), len).boxed()
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn small_product_matches_hand_computation() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [0.0f32; 4];
        gemm_reference(
            Mat::row_major(&a, 2, 3).unwrap(),
            Mat::row_major(&b, 3, 2).unwrap(),
            &mut c,
        )
        .unwrap();
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
    }

    #[test]
    fn order_is_sequential_fma() {
        // 1e8 + 1 - 1e8 in f32 depends on order and fusing; pin the canonical result.
        let a = [1e8f32, 1.0, -1e8];
        let b = [1.0f32, 1.0, 1.0];
        let mut c = [0.0f32; 1];
        gemm_reference(
            Mat::row_major(&a, 1, 3).unwrap(),
            Mat::row_major(&b, 3, 1).unwrap(),
            &mut c,
        )
        .unwrap();
        let mut acc = 0.0f32;
        for k in 0..3 {
            acc = a[k].mul_add(b[k], acc);
        }
        assert_eq!(c[0].to_bits(), acc.to_bits());
        assert_eq!(c[0], 0.0);
    }

    #[test]
    fn nan_is_canonical_and_zero_sign_is_positive() {
        let a = [f32::from_bits(0xffc0_1234), -0.0];
        let b = [1.0f32, 1.0];
        let mut c = [0.0f32; 1];
        gemm_reference(
            Mat::row_major(&a, 1, 2).unwrap(),
            Mat::row_major(&b, 2, 1).unwrap(),
            &mut c,
        )
        .unwrap();
        assert_eq!(c[0].to_bits(), CANONICAL_NAN_F32);
        let a = [-0.0f32];
        gemm_reference(
            Mat::row_major(&a, 1, 1).unwrap(),
            Mat::row_major(&b[..1], 1, 1).unwrap(),
            &mut c,
        )
        .unwrap();
        // fma(-0, 1, +0) = +0: the accumulator starts at +0.0.
        assert_eq!(c[0].to_bits(), 0);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let a = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        let m = Mat::row_major(&a, 2, 3).unwrap();
        assert!(gemm_reference(m, m, &mut c).is_err());
        assert!(Mat::row_major(&a, 3, 3).is_none());
    }

    #[test]
    fn integers_wrap() {
        let a = [i32::MAX, 2];
        let b = [2i32, 3];
        let mut c = [0i32; 1];
        gemm(
            &Ctx::new(KernelMode::Fast, 1),
            Mat::row_major(&a, 1, 2).unwrap(),
            Mat::row_major(&b, 2, 1).unwrap(),
            &mut c,
        )
        .unwrap();
        assert_eq!(c[0], i32::MAX.wrapping_mul(2).wrapping_add(6));
    }

    fn case() -> impl Strategy<Value = (usize, usize, usize, bool, bool, Vec<f32>, Vec<f32>)> {
        (
            0usize..40,
            0usize..70,
            0usize..40,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_flat_map(|(m, n, k, ta, tb, finite_only)| {
                (
                    Just(m),
                    Just(n),
                    Just(k),
                    Just(ta),
                    Just(tb),
                    values(finite_only, m * k),
                    values(finite_only, k * n),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn fast_equals_reference((m, n, k, ta, tb, av, bv) in case(), threads in 1usize..=4) {
            let a = if ta { Mat::row_major(&av, k, m).unwrap().t() } else { Mat::row_major(&av, m, k).unwrap() };
            let b = if tb { Mat::row_major(&bv, n, k).unwrap().t() } else { Mat::row_major(&bv, k, n).unwrap() };
            let mut r = vec![1.0f32; m * n];
            gemm_reference(a, b, &mut r).unwrap();
            let ctx = Ctx::new(KernelMode::Fast, threads);
            let mut f = vec![2.0f32; m * n];
            gemm(&ctx, a, b, &mut f).unwrap();
            prop_assert_eq!(bits(&r), bits(&f));
            for kernel in F32Kernel::all_available() {
                if m > 0 && n > 0 {
                    let mut p = vec![3.0f32; m * n];
                    kernel.run(&ctx, a, b, &mut p, None);
                    prop_assert_eq!(bits(&r), bits(&p), "{:?}", kernel);
                }
                if let Some(packed) = PackedB::with_kernel(b, kernel) {
                    let mut q = vec![4.0f32; m * n];
                    gemm_prepacked(&ctx, a, b, &packed, &mut q).unwrap();
                    prop_assert_eq!(bits(&r), bits(&q), "{:?} packed", kernel);
                }
            }
        }

        #[test]
        fn row_indexed_product_equals_reference(
            (m, k, n) in (0usize..30, 0usize..300, 1usize..80),
            shift in 0usize..5,
            threads in 1usize..=4,
            seed in any::<u64>(),
        ) {
            // Overlapping rows, as a convolution's patches read in place.
            let mut st = seed;
            let mut next = move || { st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((st >> 40) as f32 / (1u64 << 24) as f32) - 0.5 };
            let data: Vec<f32> = (0..k * shift + n + 7).map(|i| if i % 97 == 3 { f32::NAN } else { next() }).collect();
            let offs: Vec<usize> = (0..k).map(|i| (i * shift + i % 3).min(data.len() - n)).collect();
            let av: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let a = Mat::row_major(&av, m, k).unwrap();
            let dense: Vec<f32> = offs.iter().flat_map(|&o| data[o..o + n].to_vec()).collect();
            let mut r = vec![1.0f32; m * n];
            gemm_reference(a, Mat::row_major(&dense, k, n).unwrap(), &mut r).unwrap();
            let rows = RowsB { data: &data, offs: &offs, n };
            for mode in [KernelMode::Fast, KernelMode::Reference] {
                let mut f = vec![2.0f32; m * n];
                gemm_rows(&Ctx::new(mode, threads), a, rows, &mut f).unwrap();
                prop_assert_eq!(bits(&r), bits(&f), "{:?}", mode);
            }
            // Every kernel this CPU has, not only the one it picks.
            for kernel in F32Kernel::all_available() {
                let mut f = vec![3.0f32; m * n];
                kernel.run_rows(&Ctx::new(KernelMode::Fast, threads), a, rows, &mut f);
                prop_assert_eq!(bits(&r), bits(&f), "{:?}", kernel);
            }
        }

        #[test]
        fn single_row_products(n in 1usize..150, k in 1usize..600, tb in any::<bool>(), threads in 1usize..=4, seed in any::<u64>()) {
            // A batch of one through a layer (`Gemm` with `transB` as exporters write
            // it): the single-row column split, the packed panels a transposed
            // constant takes, and last panels of every width.
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5 };
            let av: Vec<f32> = (0..k).map(|_| next()).collect();
            let bv: Vec<f32> = (0..k * n).map(|i| if i % 89 == 5 { f32::NAN } else { next() }).collect();
            let a = Mat::row_major(&av, 1, k).unwrap();
            let b = if tb { Mat::row_major(&bv, n, k).unwrap().t() } else { Mat::row_major(&bv, k, n).unwrap() };
            let mut r = vec![0.0f32; n];
            gemm_reference(a, b, &mut r).unwrap();
            let ctx = Ctx::new(KernelMode::Fast, threads);
            for kernel in F32Kernel::all_available() {
                let mut f = vec![1.0f32; n];
                kernel.run(&ctx, a, b, &mut f, None);
                prop_assert_eq!(bits(&r), bits(&f), "{:?}", kernel);
                if let Some(p) = PackedB::with_kernel(b, kernel) {
                    let mut q = vec![2.0f32; n];
                    gemm_prepacked(&ctx, a, b, &p, &mut q).unwrap();
                    prop_assert_eq!(bits(&r), bits(&q), "{:?} packed", kernel);
                }
            }
        }

        #[test]
        fn large_k_and_wide_rows((m, n, k) in (1usize..24, 60usize..140, 250usize..600), seed in any::<u64>()) {
            // Crosses the k-block and column-block boundaries of the SIMD kernel.
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5 };
            let av: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let bv: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let a = Mat::row_major(&av, m, k).unwrap();
            let b = Mat::row_major(&bv, k, n).unwrap();
            let mut r = vec![0.0f32; m * n];
            gemm_reference(a, b, &mut r).unwrap();
            for kernel in F32Kernel::all_available() {
                let packed = PackedB::with_kernel(b, kernel);
                for threads in [1, 2, 3] {
                    let ctx = Ctx::new(KernelMode::Fast, threads);
                    let mut f = vec![0.0f32; m * n];
                    kernel.run(&ctx, a, b, &mut f, None);
                    prop_assert_eq!(bits(&r), bits(&f), "{:?}", kernel);
                    if let Some(p) = &packed {
                        let mut q = vec![0.0f32; m * n];
                        gemm_prepacked(&ctx, a, b, p, &mut q).unwrap();
                        prop_assert_eq!(bits(&r), bits(&q), "{:?} packed", kernel);
                    }
                }
            }
        }
    }
}
