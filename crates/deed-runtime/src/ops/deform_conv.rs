//! `DeformConv` (opsets 19, 22): a 2-D convolution whose kernel taps are moved by
//! learned offsets. `X` `[N, C, H, W]`, `W` `[M, C/group, kH, kW]`, `offset`
//! `[N, offset_group·kH·kW·2, oH, oW]` (per offset group and tap, the row offset then
//! the column offset), optional `B` `[M]` and `mask` `[N, offset_group·kH·kW, oH, oW]`.
//!
//! Computed in the element type (f16 and bf16 in f32, rounded once), one batch item at
//! a time, in two steps:
//!
//! 1. Sampling into a column buffer (rows `(c, kh, kw)`, columns the output positions
//!    row-major): tap `(kh, kw)` of output `(oh, ow)` reads input channel `c` (offset
//!    group `c / (C / offset_group)`) at `y = (oh·sH − padT + kh·dH) + Δy`,
//!    `x = (ow·sW − padL + kw·dW) + Δx` (the integer part exact, one rounded add). A NaN
//!    coordinate samples NaN; one with `y ≤ −1`, `y ≥ H`, `x ≤ −1` or `x ≥ W` samples
//!    +0; otherwise bilinearly, as `GridSample` with zero padding: `y0 = ⌊y⌋`,
//!    `x0 = ⌊x⌋`, `ly = y − y0`, `lx = x − x0`, each row
//!    `r = fma(lx, v(y, x0 + 1), fma(1 − lx, v(y, x0), +0))`, then
//!    `fma(ly, r1, fma(1 − ly, r0, +0))`, an element outside the input reading +0.
//!    With a mask the sample is multiplied by its mask value (one rounding).
//! 2. The canonical dot product of each output channel's weights with the column buffer
//!    over the group's `(c, kh, kw)`, `fma` from +0 in increasing order, then one
//!    rounded add of the bias when there is one.

use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};

use super::conv::{Window, WindowAttrs};
use super::elementwise::Float as Sample;
use super::util::{check_count, check_dtype, infer_input, input, numel, one, opt_infer_input};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("DeformConv", build_deform_conv);
}

const FLOATS: &[DType] = &[DType::F32, DType::F64, DType::F16, DType::BF16];

fn build_deform_conv(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 3, 5)?;
    let a = n.attrs;
    let count = |name: &str| -> Result<usize, OpError> {
        let v = a.int(name, 1)?;
        if !(1..=1 << 20).contains(&v) {
            return Err(OpError::bad_attr(
                name,
                format!("{v} is not a positive count"),
            ));
        }
        Ok(v as usize)
    };
    Ok(Box::new(DeformConv {
        win: WindowAttrs::parse(a)?,
        group: count("group")?,
        offset_group: count("offset_group")?,
    }))
}

/// A `DeformConv` node.
#[derive(Debug)]
struct DeformConv {
    win: WindowAttrs,
    group: usize,
    offset_group: usize,
}

/// The sizes of one `DeformConv` call.
#[derive(Debug)]
struct Dims {
    n: usize,
    c: usize,
    m: usize,
    win: Window,
}

impl Dims {
    /// Output positions per plane.
    fn p(&self) -> usize {
        self.win.output[1] * self.win.output[2]
    }
    /// Kernel taps.
    fn k(&self) -> usize {
        self.win.kernel[1] * self.win.kernel[2]
    }
}

impl DeformConv {
    /// Checks the shapes of `X`, `W`, `offset`, `B` and `mask` against each other and
    /// the attributes.
    fn dims(
        &self,
        x: &[usize],
        w: &[usize],
        offset: &[usize],
        b: Option<&[usize]>,
        mask: Option<&[usize]>,
    ) -> Result<Dims, OpError> {
        if x.len() != 4 {
            return Err(OpError::unsupported(format!(
                "DeformConv on a rank-{} input (2-D convolutions, [N, C, H, W], only)",
                x.len()
            )));
        }
        let (n, c) = (x[0], x[1]);
        if w.len() != 4
            || w[1].checked_mul(self.group) != Some(c)
            || !w[0].is_multiple_of(self.group)
        {
            return Err(OpError::shape(format!(
                "DeformConv: W {w:?} does not fit X {x:?} with group {} ([M, C/group, kH, kW], M divisible by group)",
                self.group
            )));
        }
        if c % self.offset_group != 0 {
            return Err(OpError::shape(format!(
                "DeformConv: {c} input channels do not split into offset_group {}",
                self.offset_group
            )));
        }
        if x[2] == 0 || x[3] == 0 {
            return Err(OpError::shape(format!(
                "DeformConv: X {x:?} has an empty spatial dimension"
            )));
        }
        let m = w[0];
        let win = self.win.resolve(&x[2..], &w[2..])?;
        if win.kernel[1..] != w[2..] {
            return Err(OpError::shape(format!(
                "DeformConv: kernel_shape {:?} differs from W {w:?}",
                &win.kernel[1..]
            )));
        }
        let d = Dims { n, c, m, win };
        let (oh, ow) = (d.win.output[1], d.win.output[2]);
        let taps = self.offset_group * d.k();
        if offset != [n, 2 * taps, oh, ow] {
            return Err(OpError::shape(format!(
                "DeformConv: offset {offset:?} must be [{n}, {}, {oh}, {ow}]",
                2 * taps
            )));
        }
        if let Some(mask) = mask {
            if mask != [n, taps, oh, ow] {
                return Err(OpError::shape(format!(
                    "DeformConv: mask {mask:?} must be [{n}, {taps}, {oh}, {ow}]"
                )));
            }
        }
        if let Some(b) = b {
            if b != [m] {
                return Err(OpError::shape(format!("DeformConv: B {b:?} must be [{m}]")));
            }
        }
        numel(&[n, m, oh, ow])?;
        numel(&[c, d.k(), oh, ow])?;
        Ok(d)
    }

    fn compute<T: Sample>(
        &self,
        d: &Dims,
        [x, w, offset]: [&[T]; 3],
        b: Option<&[T]>,
        mask: Option<&[T]>,
    ) -> Vec<T> {
        let win = &d.win;
        let (h, wd) = (win.input[1], win.input[2]);
        let (kh, kw) = (win.kernel[1], win.kernel[2]);
        let (oh, ow) = (win.output[1], win.output[2]);
        let (p, k) = (d.p(), d.k());
        let (cg, mg) = (d.c / self.group, d.m / self.group);
        let c_per_og = d.c / self.offset_group;
        let (hf, wf) = (T::from_f64(h as f64), T::from_f64(wd as f64));
        let minus_one = T::from_f64(-1.0);
        let mut out = Vec::with_capacity(d.n * d.m * p);
        // Rows (c, kh, kw), columns the output positions.
        let mut col = vec![T::ZERO; d.c * k * p];
        for ni in 0..d.n {
            for c in 0..d.c {
                let og = c / c_per_og;
                let plane = &x[(ni * d.c + c) * h * wd..(ni * d.c + c + 1) * h * wd];
                let v = |r: i64, q: i64| -> T {
                    if (0..h as i64).contains(&r) && (0..wd as i64).contains(&q) {
                        plane[r as usize * wd + q as usize]
                    } else {
                        T::ZERO
                    }
                };
                for a in 0..kh {
                    for e in 0..kw {
                        let tap = (og * kh + a) * kw + e;
                        let off = |comp: usize| {
                            &offset[((ni * self.offset_group * k * 2) + tap * 2 + comp) * p..]
                        };
                        let (dy, dx) = (off(0), off(1));
                        let row = &mut col[(c * k + a * kw + e) * p..(c * k + a * kw + e + 1) * p];
                        for i in 0..oh {
                            let base_y = (i * win.stride[1] + a * win.dil[1]) as i64
                                - win.pad_begin[1] as i64;
                            for j in 0..ow {
                                let base_x = (j * win.stride[2] + e * win.dil[2]) as i64
                                    - win.pad_begin[2] as i64;
                                let q = i * ow + j;
                                let y = T::from_f64(base_y as f64) + dy[q];
                                let xx = T::from_f64(base_x as f64) + dx[q];
                                let s = if y.is_nan() || xx.is_nan() {
                                    T::CANON_NAN
                                } else if !(y > minus_one && y < hf && xx > minus_one && xx < wf) {
                                    T::ZERO
                                } else {
                                    let (y0, x0) = (y.floor(), xx.floor());
                                    let (ly, lx) = (y - y0, xx - x0);
                                    let (hy, hx) = (T::ONE - ly, T::ONE - lx);
                                    let (r0, q0) = (y0.trunc_i64(), x0.trunc_i64());
                                    let line =
                                        |r: i64| lx.fma(v(r, q0 + 1), hx.fma(v(r, q0), T::ZERO));
                                    ly.fma(line(r0 + 1), hy.fma(line(r0), T::ZERO))
                                };
                                row[q] = match mask {
                                    Some(mk) => s * mk[(ni * self.offset_group * k + tap) * p + q],
                                    None => s,
                                };
                            }
                        }
                    }
                }
            }
            for oc in 0..d.m {
                let g = oc / mg;
                let wrow = &w[oc * cg * k..(oc + 1) * cg * k];
                let cols = &col[g * cg * k * p..(g + 1) * cg * k * p];
                for q in 0..p {
                    let mut acc = T::ZERO;
                    for (r, &wv) in wrow.iter().enumerate() {
                        acc = wv.fma(cols[r * p + q], acc);
                    }
                    out.push(match b {
                        Some(b) => acc + b[oc],
                        None => acc,
                    });
                }
            }
        }
        out
    }
}

impl Op for DeformConv {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 5)?;
        let x = infer_input(inputs, 0)?;
        check_dtype(0, x.ty.dtype, FLOATS)?;
        let w = infer_input(inputs, 1)?;
        let off = infer_input(inputs, 2)?;
        let (b, mask) = (opt_infer_input(inputs, 3), opt_infer_input(inputs, 4));
        for t in [w, off].into_iter().chain(b).chain(mask) {
            if t.ty.dtype != x.ty.dtype {
                return Err(OpError::DTypeMismatch {
                    expected: x.ty.dtype,
                    actual: t.ty.dtype,
                });
            }
        }
        let d = self.dims(
            &x.ty.shape,
            &w.ty.shape,
            &off.ty.shape,
            b.map(|t| t.ty.shape.as_slice()),
            mask.map(|t| t.ty.shape.as_slice()),
        )?;
        one(x.ty.dtype, vec![d.n, d.m, d.win.output[1], d.win.output[2]])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        // A multiply-add per weight and output element, and eight units per sample
        // (`C·kH·kW` samples per output position).
        let (Some(Some(x)), Some(Some(w)), Some(y)) =
            (inputs.first(), inputs.get(1), outputs.first())
        else {
            return 1;
        };
        let per = w
            .shape
            .iter()
            .skip(1)
            .fold(1u64, |a, &v| a.saturating_mul(v as u64));
        let c = x.shape.get(1).copied().unwrap_or(1) as u64;
        let positions = y
            .shape
            .iter()
            .skip(2)
            .fold(1u64, |a, &v| a.saturating_mul(v as u64));
        let n = y.shape.first().copied().unwrap_or(1) as u64;
        let taps = w
            .shape
            .iter()
            .skip(2)
            .fold(1u64, |a, &v| a.saturating_mul(v as u64));
        let samples = n
            .saturating_mul(c)
            .saturating_mul(taps)
            .saturating_mul(positions);
        y.numel()
            .saturating_mul(per.saturating_add(1))
            .saturating_add(samples.saturating_mul(8))
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 3, 5)?;
        let (x, w, off) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let (b, mask) = (
            super::util::opt_input(inputs, 3),
            super::util::opt_input(inputs, 4),
        );
        let d = self.dims(
            x.shape(),
            w.shape(),
            off.shape(),
            b.map(|t| t.shape()),
            mask.map(|t| t.shape()),
        )?;
        let out = vec![d.n, d.m, d.win.output[1], d.win.output[2]];
        for t in [w, off].into_iter().chain(b).chain(mask) {
            if t.dtype() != x.dtype() {
                return Err(OpError::DTypeMismatch {
                    expected: x.dtype(),
                    actual: t.dtype(),
                });
            }
        }
        let data = match x.dtype() {
            DType::F32 => {
                let s = |t: &Tensor| t.as_slice::<f32>().unwrap_or(&[]).to_vec();
                TensorData::F32(self.wide(&d, [x, w, off], b, mask, s))
            }
            DType::F64 => {
                let s = |t: &Tensor| t.as_slice::<f64>().unwrap_or(&[]).to_vec();
                TensorData::F64(self.wide(&d, [x, w, off], b, mask, s))
            }
            DType::F16 => {
                let s = |t: &Tensor| {
                    let v = t.as_slice::<f16>().unwrap_or(&[]);
                    v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>()
                };
                let y = self.wide(&d, [x, w, off], b, mask, s);
                TensorData::F16(y.into_iter().map(f16::from_f32).collect())
            }
            DType::BF16 => {
                let s = |t: &Tensor| {
                    let v = t.as_slice::<bf16>().unwrap_or(&[]);
                    v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>()
                };
                let y = self.wide(&d, [x, w, off], b, mask, s);
                TensorData::BF16(y.into_iter().map(bf16::from_f32).collect())
            }
            dt => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: dt,
                })
            }
        };
        Ok(vec![Tensor::new(out, data)?])
    }
}

impl DeformConv {
    /// [`DeformConv::compute`] on the inputs read (widened where needed) by `read`.
    fn wide<T: Sample>(
        &self,
        d: &Dims,
        [x, w, off]: [&Tensor; 3],
        b: Option<&Tensor>,
        mask: Option<&Tensor>,
        read: impl Fn(&Tensor) -> Vec<T>,
    ) -> Vec<T> {
        let (x, w, off) = (read(x), read(w), read(off));
        let (b, mask) = (b.map(&read), mask.map(&read));
        self.compute(d, [&x, &w, &off], b.as_deref(), mask.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attr;

    fn build(pairs: &[(&str, Attr)]) -> Result<Box<dyn Op>, OpError> {
        let a = crate::ops::testing::attrs(pairs);
        build_deform_conv(&NodeInfo {
            name: "d",
            op_type: "DeformConv",
            domain: "",
            opset: 19,
            attrs: &a,
            num_inputs: 5,
            num_outputs: 1,
        })
    }

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn run(op: &dyn Op, inputs: &[Option<&Tensor>]) -> Result<Vec<f32>, OpError> {
        let y = op.run(inputs, &Ctx::default())?;
        Ok(y[0].as_slice::<f32>().unwrap().to_vec())
    }

    /// X 1×1×2×2 `[[1, 2], [3, 4]]`, a 1×1 kernel of weight 2.
    fn one_by_one() -> (Tensor, Tensor) {
        (
            t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
            t(&[1, 1, 1, 1], &[2.0]),
        )
    }

    #[test]
    fn zero_offsets_are_a_plain_convolution() {
        let op = build(&[]).unwrap();
        let (x, w) = one_by_one();
        let off = t(&[1, 2, 2, 2], &[0.0; 8]);
        assert_eq!(
            run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap(),
            [2.0, 4.0, 6.0, 8.0]
        );
    }

    #[test]
    fn offsets_sample_bilinearly_with_zeros_outside() {
        let op = build(&[]).unwrap();
        let (x, w) = one_by_one();
        // Δy for the four positions, then Δx: (0.5, 0.5) from (0, 0) reads 2.5;
        // (0, −0.5) from (0, 1) reads 1.5; (0, 1) from (1, 0) reads 4; (1, 0) from
        // (1, 1) lies at y = 2 = H, outside: 0.
        let off = t(&[1, 2, 2, 2], &[0.5, 0.0, 0.0, 1.0, 0.5, -0.5, 1.0, 0.0]);
        assert_eq!(
            run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap(),
            [5.0, 3.0, 8.0, 0.0]
        );
        // Half a pixel above the first row: half of row 0 and half of zeros.
        let off = t(&[1, 2, 2, 2], &[-0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap()[0],
            1.0
        );
        // A NaN offset gives a NaN output.
        let off = t(
            &[1, 2, 2, 2],
            &[f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
        assert!(run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap()[0].is_nan());
    }

    #[test]
    fn mask_bias_groups_and_offset_groups() {
        // Two channels, each its own offset group: channel 1 shifted right by one.
        let op = build(&[("offset_group", Attr::Int(2))]).unwrap();
        let x = t(&[1, 2, 1, 2], &[1.0, 2.0, 10.0, 20.0]);
        let w = t(&[1, 2, 1, 1], &[1.0, 1.0]);
        let off = t(&[1, 4, 1, 2], &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let b = t(&[1], &[0.5]);
        let mask = t(&[1, 2, 1, 2], &[1.0, 0.5, 1.0, 1.0]);
        assert_eq!(
            run(
                &*op,
                &[Some(&x), Some(&w), Some(&off), Some(&b), Some(&mask)]
            )
            .unwrap(),
            // (1 + 10) + 0.5, (2·0.5 + 0) + 0.5: the second reads beyond the row.
            [11.5, 1.5]
        );
        // group = 2: each output channel sees its own input channel.
        let op = build(&[("group", Attr::Int(2))]).unwrap();
        let w = t(&[2, 1, 1, 1], &[1.0, 2.0]);
        let off = t(&[1, 2, 1, 2], &[0.0; 4]);
        assert_eq!(
            run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap(),
            [1.0, 2.0, 20.0, 40.0]
        );
    }

    #[test]
    fn padding_strides_and_a_bigger_kernel() {
        // 2×2 kernel of ones, pads 1: the 3×3 outputs of the zero-padded 2×2 input.
        let op = build(&[("pads", Attr::Ints(vec![1, 1, 1, 1]))]).unwrap();
        let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[1, 1, 2, 2], &[1.0; 4]);
        let off = t(&[1, 8, 3, 3], &[0.0; 72]);
        assert_eq!(
            run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap(),
            [1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0]
        );
        // Stride 2 keeps the first output of each pair.
        let op = build(&[
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ("strides", Attr::Ints(vec![2, 2])),
        ])
        .unwrap();
        let off = t(&[1, 8, 2, 2], &[0.0; 32]);
        assert_eq!(
            run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
    }

    #[test]
    fn refusals() {
        let (x, w) = one_by_one();
        let op = build(&[]).unwrap();
        let off = t(&[1, 2, 2, 1], &[0.0; 4]);
        let err = run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap_err();
        assert!(err.to_string().contains("offset"), "{err}");
        let off = t(&[1, 2, 2, 2], &[0.0; 8]);
        let mask = t(&[1, 2, 2, 2], &[0.0; 8]);
        let err = run(&*op, &[Some(&x), Some(&w), Some(&off), None, Some(&mask)]).unwrap_err();
        assert!(err.to_string().contains("mask"), "{err}");
        let b = t(&[2], &[0.0; 2]);
        let err = run(&*op, &[Some(&x), Some(&w), Some(&off), Some(&b)]).unwrap_err();
        assert!(err.to_string().contains("B [2]"), "{err}");
        let op = build(&[("offset_group", Attr::Int(2))]).unwrap();
        let err = run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap_err();
        assert!(err.to_string().contains("offset_group"), "{err}");
        let op = build(&[("group", Attr::Int(2))]).unwrap();
        let err = run(&*op, &[Some(&x), Some(&w), Some(&off)]).unwrap_err();
        assert!(err.to_string().contains("group 2"), "{err}");
        for name in ["group", "offset_group"] {
            let err = build(&[(name, Attr::Int(0))]).unwrap_err();
            assert!(
                matches!(&err, OpError::BadAttribute { name: n, .. } if n == name),
                "{err}"
            );
        }
        let x3 = t(&[1, 1, 2], &[0.0; 2]);
        let err = build(&[])
            .unwrap()
            .run(&[Some(&x3), Some(&w), Some(&off)], &Ctx::default())
            .unwrap_err();
        assert!(matches!(err, OpError::Unsupported { .. }), "{err}");
        let wd = Tensor::from_vec(vec![1, 1, 1, 1], vec![2.0f64]).unwrap();
        let err = build(&[])
            .unwrap()
            .run(&[Some(&x), Some(&wd), Some(&off)], &Ctx::default())
            .unwrap_err();
        assert!(matches!(err, OpError::DTypeMismatch { .. }), "{err}");
    }
}
