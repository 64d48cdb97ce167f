//! The exact integer matrix product of quantized operands, the core of MatMulInteger
//! and QLinearMatMul:
//!
//! ```text
//! C[i,j] = Σ_k (a[i,k] − za[i]) · (b[k,j] − zb[j])      wrapping i32
//! ```
//!
//! with `a`, `b` u8 or i8 and integer zero points (one per tensor, per row of A, per
//! column of B). Wrapping `i32` arithmetic is exact modulo 2³², and reduction modulo
//! 2³² is a ring homomorphism, so every summation order and every algebraically equal
//! expansion gives the same bits. The fast paths use that freedom:
//!
//! - **AVX-512 VNNI**: `vpdpbusd` multiplies u8 by i8 and adds four products into an
//!   i32 lane without saturating. A is brought to u8 (`a ^ 0x80 = a + 128` for i8,
//!   with the zero point moved by the same 128) and B to i8 (`b ^ 0x80 = b − 128` for
//!   u8), and the zero points come back through the expansion
//!   `Σ a'b' − zb'·Σa' − za'·(Σb' − K·zb')`.
//! - elsewhere, both operands centred to i16 and the `vpmaddwd` kernel of
//!   [`crate::ops::quant::igemm`].
//!
//! [`QuantB`] is B prepared once (packed, column sums precomputed) for products
//! repeated with the same weights.

use crate::ctx::Ctx;
use crate::error::OpError;
use crate::ops::quant::igemm;

/// A matrix operand of u8 or i8 values, row-major.
#[derive(Debug, Clone, Copy)]
pub enum QData<'a> {
    /// Unsigned 8-bit values.
    U8(&'a [u8]),
    /// Signed 8-bit values.
    I8(&'a [i8]),
}

impl QData<'_> {
    fn len(&self) -> usize {
        match self {
            QData::U8(v) => v.len(),
            QData::I8(v) => v.len(),
        }
    }
    #[inline(always)]
    fn at(&self, i: usize) -> i32 {
        match self {
            QData::U8(v) => i32::from(v[i]),
            QData::I8(v) => i32::from(v[i]),
        }
    }
}

/// Zero point of line `i` (one for all lines when a single value is given).
#[inline(always)]
fn zp(z: &[i32], i: usize) -> i32 {
    if z.len() == 1 {
        z[0]
    } else {
        z[i]
    }
}

fn check_params(what: &str, z: &[i32], lines: usize, d: QData<'_>) -> Result<(), OpError> {
    if z.len() != 1 && z.len() != lines {
        return Err(OpError::shape(format!(
            "{what} zero point has {} values; expected 1 or {lines}",
            z.len()
        )));
    }
    let (lo, hi) = match d {
        QData::U8(_) => (0, 255),
        QData::I8(_) => (-128, 127),
    };
    match z.iter().find(|&&v| v < lo || v > hi) {
        Some(v) => Err(OpError::shape(format!(
            "{what} zero point {v} is outside the operand's range {lo}..={hi}"
        ))),
        None => Ok(()),
    }
}

/// The scalar reference: the executable specification. `a` is `m×k`, `b` is `k×n`,
/// `za` holds 1 or `m` zero points, `zb` 1 or `n`.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_reference(
    m: usize,
    k: usize,
    n: usize,
    a: QData<'_>,
    za: &[i32],
    b: QData<'_>,
    zb: &[i32],
    out: &mut [i32],
) -> Result<(), OpError> {
    check_dims(m, k, n, a, b, out)?;
    check_params("A", za, m, a)?;
    check_params("B", zb, n, b)?;
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i32;
            for p in 0..k {
                let x = a.at(i * k + p).wrapping_sub(zp(za, i));
                let y = b.at(p * n + j).wrapping_sub(zp(zb, j));
                acc = acc.wrapping_add(x.wrapping_mul(y));
            }
            out[i * n + j] = acc;
        }
    }
    Ok(())
}

fn check_dims(
    m: usize,
    k: usize,
    n: usize,
    a: QData<'_>,
    b: QData<'_>,
    out: &[i32],
) -> Result<(), OpError> {
    let ok = m.checked_mul(k) == Some(a.len())
        && k.checked_mul(n) == Some(b.len())
        && m.checked_mul(n) == Some(out.len());
    if ok {
        Ok(())
    } else {
        Err(OpError::shape(format!(
            "integer matrix product {m}×{k} · {k}×{n} with {} / {} / {} elements",
            a.len(),
            b.len(),
            out.len()
        )))
    }
}

#[derive(Debug, Clone)]
enum Layout {
    /// `b ^ 0x80` or `b` as i8, packed for the VNNI kernel; `zb` shifted alike and
    /// `csadj[j] = Σ_k b'[k,j] − K·zb'[j]`, both padded to whole panels.
    #[cfg(target_arch = "x86_64")]
    Vnni {
        panels: Vec<i8>,
        zb: Vec<i32>,
        csadj: Vec<i32>,
        /// The panels are padded for the AMX kernel (`qgemm_amx::pack_b`), which
        /// products of at least [`AMX_MIN_ROWS`] rows take.
        amx: bool,
    },
    /// B centred to i16 and packed for [`igemm::gemm_packed`].
    Madd(Vec<i16>),
}

/// B prepared for repeated products: packed for this CPU's kernel, its zero points
/// folded in. Packing copies and shifts values and changes no result, so [`qgemm`]
/// gives exactly the bits of [`qgemm_reference`].
#[derive(Debug, Clone)]
pub struct QuantB {
    k: usize,
    n: usize,
    layout: Layout,
}

impl QuantB {
    /// Prepares `b` (`k×n`, row-major) with its zero points `zb` (1 or `n` values).
    pub fn new(k: usize, n: usize, b: QData<'_>, zb: &[i32]) -> Result<QuantB, OpError> {
        Self::with_kernel(k, n, b, zb, Kernel::detect())
    }

    fn with_kernel(
        k: usize,
        n: usize,
        b: QData<'_>,
        zb: &[i32],
        kernel: Kernel,
    ) -> Result<QuantB, OpError> {
        if k.checked_mul(n) != Some(b.len()) {
            return Err(OpError::shape(format!(
                "integer matrix operand of {} elements is not {k}×{n}",
                b.len()
            )));
        }
        check_params("B", zb, n, b)?;
        let layout = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni | Kernel::Amx => {
                use super::qgemm_avx512::NR;
                // To i8: u8 values and zero points move down by 128.
                let (shift, sb): (i32, Box<dyn Fn(usize) -> i8 + '_>) = match b {
                    QData::U8(v) => (128, Box::new(move |i| (v[i] ^ 0x80) as i8)),
                    QData::I8(v) => (0, Box::new(move |i| v[i])),
                };
                let amx = kernel == Kernel::Amx;
                let panels = if amx {
                    super::qgemm_amx::pack_b(k, n, &*sb)
                } else {
                    super::qgemm_avx512::pack_b(k, n, &*sb)
                };
                let padded = n.div_ceil(NR) * NR;
                let mut zbp = vec![0i32; padded];
                let mut csadj = vec![0i32; padded];
                for j in 0..n {
                    let z = zp(zb, j).wrapping_sub(shift);
                    let mut s = 0i32;
                    for p in 0..k {
                        s = s.wrapping_add(i32::from(sb(p * n + j)));
                    }
                    zbp[j] = z;
                    csadj[j] = s.wrapping_sub((k as i32).wrapping_mul(z));
                }
                Layout::Vnni {
                    panels,
                    zb: zbp,
                    csadj,
                    amx,
                }
            }
            Kernel::Madd => {
                let centred: Vec<i16> = (0..k * n)
                    .map(|i| b.at(i).wrapping_sub(zp(zb, i % n.max(1))) as i16)
                    .collect();
                Layout::Madd(igemm::pack_b(n, k, &centred))
            }
        };
        Ok(QuantB { k, n, layout })
    }

    /// Rows and columns.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// Which fast kernel to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// AMX tiles for the bulk of the work (and VNNI for products of few rows).
    #[cfg(target_arch = "x86_64")]
    Amx,
    Madd,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if super::qgemm_amx::available() {
                return Kernel::Amx;
            }
            if super::qgemm_avx512::available() {
                return Kernel::Vnni;
            }
        }
        Kernel::Madd
    }
}

/// `out = (A − za)·(B − zb)` through the prepared `b`; bit-identical to
/// [`qgemm_reference`] for every input and thread count. `a` is `m × k`, `za` 1 or `m`
/// zero points, each in the range of `a`'s type (as for `zb` and `b`).
pub fn qgemm(
    ctx: &Ctx,
    m: usize,
    a: QData<'_>,
    za: &[i32],
    b: &QuantB,
    out: &mut [i32],
) -> Result<(), OpError> {
    let (k, n) = (b.k, b.n);
    if m.checked_mul(k) != Some(a.len()) || m.checked_mul(n) != Some(out.len()) {
        return Err(OpError::shape(format!(
            "integer matrix product {m}×{k} · {k}×{n} with {} / {} elements",
            a.len(),
            out.len()
        )));
    }
    check_params("A", za, m, a)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    match &b.layout {
        #[cfg(target_arch = "x86_64")]
        Layout::Vnni {
            panels,
            zb,
            csadj,
            amx,
        } => {
            if *amx {
                if m >= AMX_MIN_ROWS {
                    super::qgemm_amx::gemm(ctx, m, k, n, a, za, panels, zb, csadj, out);
                } else {
                    // The VNNI kernel reads the AMX panels' zero padding as more `k`.
                    let k_align = super::qgemm_amx::K_ALIGN;
                    let v = super::qgemm_avx512::Operands {
                        panels,
                        zb,
                        csadj,
                        k_align,
                    };
                    super::qgemm_avx512::gemm(ctx, m, k, n, a, za, &v, out);
                }
            } else {
                let v = super::qgemm_avx512::Operands {
                    panels,
                    zb,
                    csadj,
                    k_align: 4,
                };
                super::qgemm_avx512::gemm(ctx, m, k, n, a, za, &v, out);
            }
        }
        Layout::Madd(packed) => {
            let centred: Vec<i16> = (0..m * k)
                .map(|i| a.at(i).wrapping_sub(zp(za, i / k.max(1))) as i16)
                .collect();
            igemm::gemm_packed(m, n, k, &centred, packed, out, ctx);
        }
    }
    Ok(())
}

/// Rows from which a product takes the AMX kernel: below, most of each 32-row block
/// would be padding and the VNNI kernel is faster.
#[cfg(target_arch = "x86_64")]
const AMX_MIN_ROWS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Vals {
        U8(Vec<u8>),
        I8(Vec<i8>),
    }

    impl Vals {
        fn q(&self) -> QData<'_> {
            match self {
                Vals::U8(v) => QData::U8(v),
                Vals::I8(v) => QData::I8(v),
            }
        }
    }

    fn vals(len: usize) -> impl Strategy<Value = Vals> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), len).prop_map(Vals::U8),
            prop::collection::vec(any::<i8>(), len).prop_map(Vals::I8),
            // Extremes, where any saturating step would show.
            prop::collection::vec(prop_oneof![Just(0u8), Just(255u8)], len).prop_map(Vals::U8),
            prop::collection::vec(prop_oneof![Just(-128i8), Just(127i8)], len).prop_map(Vals::I8),
        ]
    }

    /// Zero points of the operand's type: one, or one per line.
    fn zps(signed: bool, lines: usize) -> impl Strategy<Value = Vec<i32>> {
        let one = if signed {
            (-128i32..=127).boxed()
        } else {
            (0i32..=255).boxed()
        };
        prop_oneof![
            prop::collection::vec(one.clone(), 1),
            prop::collection::vec(one, lines.max(1)),
        ]
        .prop_map(move |v| {
            if v.len() == lines || v.len() == 1 {
                v
            } else {
                vec![v[0]]
            }
        })
    }

    type Case = (usize, usize, usize, Vals, Vec<i32>, Vals, Vec<i32>);

    fn case(max_m: usize, max_k: usize, max_n: usize) -> impl Strategy<Value = Case> {
        (0..max_m, 0..max_k, 0..max_n)
            .prop_flat_map(|(m, k, n)| (Just(m), Just(k), Just(n), vals(m * k), vals(k * n)))
            .prop_flat_map(|(m, k, n, a, b)| {
                let (sa, sb) = (matches!(a, Vals::I8(_)), matches!(b, Vals::I8(_)));
                (
                    Just(m),
                    Just(k),
                    Just(n),
                    Just(a),
                    zps(sa, m),
                    Just(b),
                    zps(sb, n),
                )
            })
    }

    fn check(c: &Case, threads: usize) -> Result<(), TestCaseError> {
        let (m, k, n, a, za, b, zb) = c;
        let (m, k, n) = (*m, *k, *n);
        let mut want = vec![7; m * n];
        qgemm_reference(m, k, n, a.q(), za, b.q(), zb, &mut want).unwrap();
        // The centred-i16 formulation the operators' reference mode uses.
        let ac: Vec<i16> = (0..m * k)
            .map(|i| (a.q().at(i) - zp(za, i / k.max(1))) as i16)
            .collect();
        let bc: Vec<i16> = (0..k * n)
            .map(|i| (b.q().at(i) - zp(zb, i % n.max(1))) as i16)
            .collect();
        let mut centred = vec![9; m * n];
        igemm::gemm_reference(m, n, k, &ac, &bc, &mut centred);
        prop_assert_eq!(&centred, &want);
        let ctx = Ctx::new(KernelMode::Fast, threads);
        let mut kernels = vec![Kernel::Madd];
        #[cfg(target_arch = "x86_64")]
        {
            if super::super::qgemm_avx512::available() {
                kernels.push(Kernel::Vnni);
            }
            if super::super::qgemm_amx::available() {
                kernels.push(Kernel::Amx);
            }
        }
        for kernel in kernels {
            let qb = QuantB::with_kernel(k, n, b.q(), zb, kernel).unwrap();
            let mut got = vec![3; m * n];
            qgemm(&ctx, m, a.q(), za, &qb, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "kernel {:?}", kernel);
        }
        Ok(())
    }

    #[test]
    fn small_known_product() {
        // [[1,2],[3,4]] − 1 times [[5,6],[7,8]] − [5, 6] = [[0,1],[2,3]]·[[0,0],[2,2]]
        let a = [1u8, 2, 3, 4];
        let b = [5i8, 6, 7, 8];
        let mut r = [0; 4];
        qgemm_reference(2, 2, 2, QData::U8(&a), &[1], QData::I8(&b), &[5, 6], &mut r).unwrap();
        assert_eq!(r, [2, 2, 6, 6]);
        let qb = QuantB::new(2, 2, QData::I8(&b), &[5, 6]).unwrap();
        let mut f = [0; 4];
        qgemm(
            &Ctx::new(KernelMode::Fast, 1),
            2,
            QData::U8(&a),
            &[1],
            &qb,
            &mut f,
        )
        .unwrap();
        assert_eq!(f, r);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let b = [0i8; 6];
        assert!(QuantB::new(2, 2, QData::I8(&b), &[0]).is_err());
        assert!(QuantB::new(2, 3, QData::I8(&b), &[0, 0]).is_err());
        let qb = QuantB::new(2, 3, QData::I8(&b), &[0]).unwrap();
        let mut out = [0; 3];
        let ctx = Ctx::new(KernelMode::Fast, 1);
        assert!(qgemm(&ctx, 1, QData::U8(&[0; 3]), &[0], &qb, &mut out).is_err());
        assert!(qgemm(&ctx, 1, QData::U8(&[0; 2]), &[0, 0], &qb, &mut out).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn fast_equals_reference(c in case(20, 70, 80), threads in 1usize..=4) {
            check(&c, threads)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn long_rows_match_reference(c in case(12, 1100, 40), threads in 1usize..=4) {
            check(&c, threads)?;
        }

        /// Enough rows for several of the AMX kernel's 32-row blocks, split over
        /// threads, with `k` across several tile steps.
        #[test]
        fn many_rows_match_reference(c in case(90, 300, 70), threads in 1usize..=4) {
            check(&c, threads)?;
        }
    }
}
