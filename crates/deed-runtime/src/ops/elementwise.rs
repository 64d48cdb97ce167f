//! Elementwise operators: the broadcasting engine shared by the unary
//! ([`super::unary`]), binary and variadic ([`super::binary`]) and conversion
//! ([`super::cast`]) operators, and their registration.
//!
//! Every output element depends only on the input elements that broadcast to it, so
//! the engine splits the *output* into chunks for threads and SIMD lanes without
//! changing any result: a fast path computes exactly the same per-element function as
//! the scalar reference (see `docs/canonical-semantics.md`).
//!
//! Broadcasting follows numpy's multidirectional rule. The engine has three paths,
//! chosen by shape only: operands of the output's size (a plain zip), a one-element
//! operand (a scalar loop), and the general case, which walks output rows (the last
//! dimension) with each operand's row offset precomputed and a unit or zero stride
//! inside the row.

use deed_types::DType;
use half::{bf16, f16};

use super::util::{broadcast_offsets, numel};
use super::{Ctx, Registry};
use crate::error::OpError;

/// Below this many output elements an operator runs on the caller's thread: a split
/// of a smaller memory-bound operator costs more in moving its operands between the
/// cores' caches than the second core saves.
pub(crate) const PAR_MIN: usize = 1 << 17;
/// Output elements per task when an operator is split across threads.
pub(crate) const CHUNK: usize = 1 << 14;

pub(crate) fn register(r: &mut Registry) {
    super::unary::register(r);
    super::binary::register(r);
    super::cast::register(r);
}

/// Floating-point element types computed natively (f32, f64). f16 and bf16 are
/// computed in f32 and rounded once to their format.
pub(crate) trait Float:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const CANON_NAN: Self;
    /// Exact widening of an f32 attribute value.
    fn from_f32(v: f32) -> Self;
    fn from_f64(v: f64) -> Self;
    fn is_nan(self) -> bool;
    fn abs(self) -> Self;
    fn sqrt(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round_even(self) -> Self;
    /// `self · b + c` with one rounding.
    fn fma(self, b: Self, c: Self) -> Self;
    /// Truncated toward zero to an integer (saturating; NaN is 0).
    fn trunc_i64(self) -> i64;
    fn exp(self) -> Self;
    fn expm1(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn sigmoid(self) -> Self;
    fn erf(self) -> Self;
    fn softplus(self) -> Self;
    fn pow(self, y: Self) -> Self;
    fn fmod(self, y: Self) -> Self;
    fn copysign(self, s: Self) -> Self;
    fn to_bits64(self) -> u64;
    fn from_bits64(b: u64) -> Self;
    /// Applies a libm-backed function by name.
    fn trig(self, f: Trig) -> Self;
}

/// The libm-backed unary functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trig {
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
}

macro_rules! float_impl {
    ($t:ty, $nan:expr, $bits:ty, $($fname:ident => $f:path),* ; $exp:path, $expm1:path, $ln:path, $tanh:path, $sig:path, $erf:path, $softplus:path, $pow:path, $fmod:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const CANON_NAN: Self = $nan;
            #[inline(always)]
            fn from_f32(v: f32) -> Self { v as $t }
            #[inline(always)]
            fn from_f64(v: f64) -> Self { v as $t }
            #[inline(always)]
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
            #[inline(always)]
            fn abs(self) -> Self { <$t>::abs(self) }
            #[inline(always)]
            fn sqrt(self) -> Self { <$t>::sqrt(self) }
            #[inline(always)]
            fn floor(self) -> Self { <$t>::floor(self) }
            #[inline(always)]
            fn ceil(self) -> Self { <$t>::ceil(self) }
            #[inline(always)]
            fn round_even(self) -> Self { <$t>::round_ties_even(self) }
            #[inline(always)]
            fn fma(self, b: Self, c: Self) -> Self { self.mul_add(b, c) }
            #[inline(always)]
            fn trunc_i64(self) -> i64 { self as i64 }
            #[inline(always)]
            fn exp(self) -> Self { $exp(self) }
            #[inline(always)]
            fn expm1(self) -> Self { $expm1(self) }
            #[inline(always)]
            fn ln(self) -> Self { $ln(self) }
            #[inline(always)]
            fn tanh(self) -> Self { $tanh(self) }
            #[inline(always)]
            fn sigmoid(self) -> Self { $sig(self) }
            #[inline(always)]
            fn erf(self) -> Self { $erf(self) }
            #[inline(always)]
            fn softplus(self) -> Self { $softplus(self) }
            #[inline(always)]
            fn pow(self, y: Self) -> Self { $pow(self, y) }
            #[inline(always)]
            fn fmod(self, y: Self) -> Self { $fmod(self, y) }
            #[inline(always)]
            fn copysign(self, s: Self) -> Self { <$t>::copysign(self, s) }
            #[inline(always)]
            fn to_bits64(self) -> u64 { self.to_bits() as u64 }
            #[inline(always)]
            fn from_bits64(b: u64) -> Self { <$t>::from_bits(b as $bits) }
            fn trig(self, f: Trig) -> Self {
                match f { $(Trig::$fname => $f(self)),* }
            }
        }
    };
}

use super::math as m;

float_impl!(f32, m::NAN_F32, u32,
    Sin => m::sin_f32, Cos => m::cos_f32, Tan => m::tan_f32, Asin => m::asin_f32,
    Acos => m::acos_f32, Atan => m::atan_f32, Sinh => m::sinh_f32, Cosh => m::cosh_f32,
    Asinh => m::asinh_f32, Acosh => m::acosh_f32, Atanh => m::atanh_f32;
    m::exp_f32, m::expm1_f32, m::ln_f32, m::tanh_f32, m::sigmoid_f32, m::erf_f32,
    m::softplus_f32, m::pow_f32, m::fmod_f32);
float_impl!(f64, m::NAN_F64, u64,
    Sin => m::sin_f64, Cos => m::cos_f64, Tan => m::tan_f64, Asin => m::asin_f64,
    Acos => m::acos_f64, Atan => m::atan_f64, Sinh => m::sinh_f64, Cosh => m::cosh_f64,
    Asinh => m::asinh_f64, Acosh => m::acosh_f64, Atanh => m::atanh_f64;
    m::exp_f64, m::expm1_f64, m::ln_f64, m::tanh_f64, m::sigmoid_f64, m::erf_f64,
    m::softplus_f64, m::pow_f64, m::fmod_f64);

/// Replaces a NaN by the canonical NaN of its type.
#[inline(always)]
pub(crate) fn canon<F: Float>(x: F) -> F {
    if x.is_nan() {
        F::CANON_NAN
    } else {
        x
    }
}

/// Applies `f` to every element, on threads when the tensor is large.
pub(crate) fn map1<T, U>(ctx: &Ctx, x: &[T], f: impl Fn(T) -> U + Sync + Send) -> Vec<U>
where
    T: Copy + Sync,
    U: Copy + Send + Default,
{
    if x.len() >= PAR_MIN && ctx.threads() > 1 {
        super::simd::map_vec_par(ctx, x, CHUNK, f)
    } else {
        super::simd::map_vec(x, f)
    }
}

/// How one operand is read along the output: the flat offset of each output row's
/// first element and the stride inside a row (1, or 0 when the last dimension is
/// broadcast).
struct RowPlan {
    offsets: Vec<usize>,
    stride: usize,
}

fn row_plan(shape: &[usize], out: &[usize]) -> RowPlan {
    let rank = out.len();
    let pad = rank - shape.len().min(rank);
    let padded: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(shape.iter().copied())
        .collect();
    let last = padded.last().copied().unwrap_or(1);
    let inner_out = out.last().copied().unwrap_or(1);
    let stride = usize::from(last == inner_out && inner_out != 1);
    let row_len = if rank == 0 { 1 } else { last };
    let outer_in = &padded[..rank.saturating_sub(1)];
    let outer_out = &out[..rank.saturating_sub(1)];
    let offsets = broadcast_offsets(outer_in, outer_out)
        .into_iter()
        .map(|o| o * row_len)
        .collect();
    RowPlan { offsets, stride }
}

/// Applies `f` to broadcast pairs of elements of `a` (shape `ash`) and `b` (shape
/// `bsh`), producing a tensor of shape `out_shape` (their broadcast).
#[allow(clippy::too_many_arguments)]
pub(crate) fn map2<A, B, U>(
    ctx: &Ctx,
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    out_shape: &[usize],
    f: impl Fn(A, B) -> U + Sync + Send,
) -> Result<Vec<U>, OpError>
where
    A: Copy + Sync,
    B: Copy + Sync,
    U: Copy + Send + Default,
{
    let n = numel(out_shape)?;
    let mut out = vec![U::default(); n];
    if n == 0 {
        return Ok(out);
    }
    let par = n >= PAR_MIN && ctx.threads() > 1;
    if a.len() == n && b.len() == n {
        let run = |start: usize, c: &mut [U]| {
            let (sa, sb) = (&a[start..start + c.len()], &b[start..start + c.len()]);
            for ((o, &x), &y) in c.iter_mut().zip(sa).zip(sb) {
                *o = f(x, y);
            }
        };
        if par {
            ctx.for_each_chunk(&mut out, CHUNK, |i, c| run(i * CHUNK, c));
        } else {
            run(0, &mut out);
        }
        return Ok(out);
    }
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        let run = |start: usize, c: &mut [U]| {
            let len = c.len();
            for (o, &x) in c.iter_mut().zip(&a[start..start + len]) {
                *o = f(x, y);
            }
        };
        if par {
            ctx.for_each_chunk(&mut out, CHUNK, |i, c| run(i * CHUNK, c));
        } else {
            run(0, &mut out);
        }
        return Ok(out);
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        let run = |start: usize, c: &mut [U]| {
            let len = c.len();
            for (o, &y) in c.iter_mut().zip(&b[start..start + len]) {
                *o = f(x, y);
            }
        };
        if par {
            ctx.for_each_chunk(&mut out, CHUNK, |i, c| run(i * CHUNK, c));
        } else {
            run(0, &mut out);
        }
        return Ok(out);
    }
    let inner = out_shape.last().copied().unwrap_or(1);
    let pa = row_plan(ash, out_shape);
    let pb = row_plan(bsh, out_shape);
    if pa.offsets.len() * inner != n || pb.offsets.len() * inner != n {
        return Err(OpError::shape(format!(
            "shapes {ash:?} and {bsh:?} do not broadcast to {out_shape:?}"
        )));
    }
    let rows_per_chunk = (CHUNK / inner.max(1)).max(1);
    let run = |first_row: usize, c: &mut [U]| {
        for (k, row) in c.chunks_mut(inner).enumerate() {
            let r = first_row + k;
            let (oa, ob) = (pa.offsets[r], pb.offsets[r]);
            // Unit/zero strides as separate loops so the compiler can vectorize them.
            match (pa.stride, pb.stride) {
                (1, 1) => {
                    let (ra, rb) = (&a[oa..oa + row.len()], &b[ob..ob + row.len()]);
                    for ((o, &x), &y) in row.iter_mut().zip(ra).zip(rb) {
                        *o = f(x, y);
                    }
                }
                (1, _) => {
                    let y = b[ob];
                    let len = row.len();
                    for (o, &x) in row.iter_mut().zip(&a[oa..oa + len]) {
                        *o = f(x, y);
                    }
                }
                (_, 1) => {
                    let x = a[oa];
                    let len = row.len();
                    for (o, &y) in row.iter_mut().zip(&b[ob..ob + len]) {
                        *o = f(x, y);
                    }
                }
                _ => {
                    let (x, y) = (a[oa], b[ob]);
                    for o in row.iter_mut() {
                        *o = f(x, y);
                    }
                }
            }
        }
    };
    if par {
        ctx.for_each_chunk(&mut out, rows_per_chunk * inner, |i, c| {
            run(i * rows_per_chunk, c)
        });
    } else {
        run(0, &mut out);
    }
    Ok(out)
}

/// Integer element types. Arithmetic wraps (two's complement, as numpy does).
pub(crate) trait Int:
    Copy + Send + Sync + Default + Ord + std::fmt::Debug + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn wadd(self, o: Self) -> Self;
    fn wsub(self, o: Self) -> Self;
    fn wmul(self, o: Self) -> Self;
    fn wneg(self) -> Self;
    fn wabs(self) -> Self;
    /// Truncating division; `x / 0 = 0`, `MIN / −1 = MIN` (wrapping).
    fn tdiv(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C `%`); `x % 0 = 0`.
    fn trem(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (numpy `mod`); `x mod 0 = 0`.
    fn fmod_floor(self, o: Self) -> Self;
    fn not(self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn to_f64(self) -> f64;
    fn to_i128(self) -> i128;
    /// Truncation toward zero, saturating at the type's range; NaN gives 0.
    fn from_f64_sat(v: f64) -> Self;
    /// Wrapping conversion from i128 (two's complement truncation).
    fn from_i128_wrap(v: i128) -> Self;
    fn shl(self, n: Self) -> Self;
    fn shr(self, n: Self) -> Self;
}

macro_rules! int_impl {
    ($($t:ty : $signed:expr),*) => {$(
        impl Int for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            #[inline(always)] fn wadd(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline(always)] fn wsub(self, o: Self) -> Self { self.wrapping_sub(o) }
            #[inline(always)] fn wmul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline(always)] fn wneg(self) -> Self { self.wrapping_neg() }
            #[inline(always)] fn wabs(self) -> Self {
                #[allow(unused_comparisons)]
                let neg = $signed && self < 0;
                if neg { self.wrapping_neg() } else { self }
            }
            #[inline(always)] fn tdiv(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_div(o) }
            }
            #[inline(always)] fn trem(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_rem(o) }
            }
            #[inline(always)] fn fmod_floor(self, o: Self) -> Self {
                if o == 0 { return 0; }
                let r = self.wrapping_rem(o);
                #[allow(unused_comparisons)]
                if r != 0 && ((r < 0) != (o < 0)) { r.wrapping_add(o) } else { r }
            }
            #[inline(always)] fn not(self) -> Self { !self }
            #[inline(always)] fn and(self, o: Self) -> Self { self & o }
            #[inline(always)] fn or(self, o: Self) -> Self { self | o }
            #[inline(always)] fn xor(self, o: Self) -> Self { self ^ o }
            #[inline(always)] fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)] fn to_i128(self) -> i128 { self as i128 }
            #[inline(always)] fn from_f64_sat(v: f64) -> Self { v as $t }
            #[inline(always)] fn from_i128_wrap(v: i128) -> Self { v as $t }
            #[inline(always)] fn shl(self, n: Self) -> Self {
                let n = n as i128;
                if n < 0 || n >= <$t>::BITS as i128 { 0 } else { self << (n as u32) }
            }
            #[inline(always)] fn shr(self, n: Self) -> Self {
                let n = n as i128;
                #[allow(unused_comparisons)]
                let fill = if self < 0 { !0 } else { 0 };
                if n < 0 || n >= <$t>::BITS as i128 { fill } else { self >> (n as u32) }
            }
        }
    )*};
}

int_impl!(i8: true, i16: true, i32: true, i64: true, u8: false, u16: false, u32: false, u64: false);

/// Runs `$body` with `$v` bound to the typed slice of an integer tensor and `$T` to its
/// element type; evaluates `$other` for any other dtype.
macro_rules! with_int {
    ($t:expr, $v:ident : $T:ident => $body:expr, _ => $other:expr) => {{
        use deed_types::TensorData as D;
        match $t.data() {
            D::I8($v) => {
                type $T = i8;
                $body
            }
            D::I16($v) => {
                type $T = i16;
                $body
            }
            D::I32($v) => {
                type $T = i32;
                $body
            }
            D::I64($v) => {
                type $T = i64;
                $body
            }
            D::U8($v) => {
                type $T = u8;
                $body
            }
            D::U16($v) => {
                type $T = u16;
                $body
            }
            D::U32($v) => {
                type $T = u32;
                $body
            }
            D::U64($v) => {
                type $T = u64;
                $body
            }
            _ => $other,
        }
    }};
}
pub(crate) use with_int;

/// f16 / bf16 bridges: compute in f32, round once to the narrow format.
pub(crate) trait Narrow: Copy + Send + Sync + Default + 'static {
    fn widen(self) -> f32;
    fn narrow(v: f32) -> Self;
}

impl Narrow for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn narrow(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Narrow for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn narrow(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// The float dtypes every float operator accepts.
pub(crate) const FLOATS: &[DType] = &[DType::F32, DType::F64, DType::F16, DType::BF16];
/// Signed integer dtypes.
pub(crate) const SINTS: &[DType] = &[DType::I8, DType::I16, DType::I32, DType::I64];
/// Unsigned integer dtypes.
pub(crate) const UINTS: &[DType] = &[DType::U8, DType::U16, DType::U32, DType::U64];

/// Floats and all integers.
pub(crate) fn numeric() -> Vec<DType> {
    FLOATS.iter().chain(SINTS).chain(UINTS).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    fn naive(ash: &[usize], bsh: &[usize], out: &[usize]) -> Vec<(usize, usize)> {
        let oa = broadcast_offsets(ash, out);
        let ob = broadcast_offsets(bsh, out);
        oa.into_iter().zip(ob).collect()
    }

    fn shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        prop::collection::vec((0usize..4, any::<bool>(), any::<bool>()), 0..4).prop_flat_map(
            |dims| {
                let a: Vec<usize> = dims.iter().map(|d| if d.1 { 1 } else { d.0 }).collect();
                let b: Vec<usize> = dims.iter().map(|d| if d.2 { 1 } else { d.0 }).collect();
                (0..=a.len(), 0..=b.len()).prop_map(move |(ca, cb)| {
                    (a[a.len() - ca..].to_vec(), b[b.len() - cb..].to_vec())
                })
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Every path of the engine reads the operands the numpy rule says, on any
        /// number of threads.
        #[test]
        fn map2_matches_naive_broadcast((ash, bsh) in shapes(), threads in 1usize..5) {
            let out = super::super::util::broadcast_shapes(&ash, &bsh).unwrap();
            let a: Vec<usize> = (0..ash.iter().product()).collect();
            let b: Vec<usize> = (0..bsh.iter().product()).collect();
            let ctx = Ctx::new(KernelMode::Fast, threads);
            let got = map2(&ctx, &a, &ash, &b, &bsh, &out, |x, y| (x, y)).unwrap();
            prop_assert_eq!(got, naive(&ash, &bsh, &out));
        }
    }

    #[test]
    fn map2_large_row_broadcast_threads() {
        let ash = [300usize, 257];
        let bsh = [257usize];
        let a: Vec<usize> = (0..300 * 257).collect();
        let b: Vec<usize> = (0..257).collect();
        let want = naive(&ash, &bsh, &ash);
        for t in 1..=4 {
            let ctx = Ctx::new(KernelMode::Fast, t);
            let got = map2(&ctx, &a, &ash, &b, &bsh, &ash, |x, y| (x, y)).unwrap();
            assert_eq!(got, want);
        }
    }
}
