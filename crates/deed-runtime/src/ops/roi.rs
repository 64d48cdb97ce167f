//! `RoiAlign` (opsets 10, 16, 22): for each region of interest `rois[r] = (x1, y1,
//! x2, y2)` on batch item `batch_indices[r]` of `X` (`[N, C, H, W]`), an
//! `output_height × output_width` grid of bins, each the average (or maximum) of
//! bilinear samples on a regular grid inside the bin, as the ONNX reference
//! implementation computes it, in the element type (f16 and bf16 in f32, rounded once):
//!
//! - the ROI's corners are `v · spatial_scale − offset` (offset 0.5 for `half_pixel`,
//!   0 for `output_half_pixel`), its extents `end − start`, with `output_half_pixel`
//!   raised to at least 1; a bin is `extent / pooled` wide;
//! - the sampling grid of a bin is `sampling_ratio` points per axis, or
//!   `⌈extent / pooled⌉` when it is 0 (adaptive); sample `(iy, ix)` of bin `(ph, pw)`
//!   lies at `start + p · bin + (i + 0.5) · bin / grid` (left to right, each
//!   operation rounded);
//! - a sample outside `[−1, size]` on either axis has four zero weights on element
//!   `(0, 0)`; otherwise it is clamped below at 0, its low index is `trunc`, clamped
//!   (with the coordinate) to `size − 1`, and its weights are `hy·hx, hy·lx, ly·hx,
//!   ly·lx` with `l = coordinate − low` and `h = 1 − l`;
//! - `avg`: `acc = +0; acc = acc + (((w1·v1 + w2·v2) + w3·v3) + w4·v4)` over the
//!   samples row-major, then `acc / max(grid_h · grid_w, 1)`; `max`: the maximum of the
//!   four weighted terms `w_k·v_k` of each sample (the reference's definition: the
//!   weighted terms, not the interpolated value), then the maximum over the samples, a
//!   later value replacing an earlier one only when strictly greater, and any NaN
//!   making the result NaN.
//!
//! A batch index out of `[0, N)`, a non-finite ROI coordinate and an adaptive grid
//! larger than the input allows (`⌈(size + 1) / pooled⌉` per axis, what the metering
//! counts) are `Value` errors.

use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};

use super::elementwise::Float as Sample;
use super::util::{check_count, check_dtype, infer_input, input, numel, one, same_dtype};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("RoiAlign", build_roi_align);
}

const FLOATS: &[DType] = &[DType::F32, DType::F64, DType::F16, DType::BF16];

fn build_roi_align(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let a = n.attrs;
    let max = match a.string("mode", "avg")?.as_str() {
        "avg" => false,
        "max" => true,
        m => return Err(OpError::unsupported(format!("RoiAlign mode {m:?}"))),
    };
    // Opset 10 has no attribute and no offset; 16 made `half_pixel` the default.
    let default_ctm = if n.opset >= 16 {
        "half_pixel"
    } else {
        "output_half_pixel"
    };
    let half_pixel = match a
        .string("coordinate_transformation_mode", default_ctm)?
        .as_str()
    {
        "half_pixel" => true,
        "output_half_pixel" => false,
        m => {
            return Err(OpError::unsupported(format!(
                "RoiAlign coordinate_transformation_mode {m:?}"
            )))
        }
    };
    let dim = |name: &str| -> Result<usize, OpError> {
        let v = a.int(name, 1)?;
        if !(1..=1 << 20).contains(&v) {
            return Err(OpError::bad_attr(
                name,
                format!("{v} is not a positive size"),
            ));
        }
        Ok(v as usize)
    };
    let sampling_ratio = a.int("sampling_ratio", 0)?;
    if !(0..=1 << 20).contains(&sampling_ratio) {
        return Err(OpError::bad_attr(
            "sampling_ratio",
            format!("{sampling_ratio} is negative or too large"),
        ));
    }
    let spatial_scale = a.float("spatial_scale", 1.0)?;
    if !spatial_scale.is_finite() {
        return Err(OpError::bad_attr(
            "spatial_scale",
            format!("{spatial_scale} is not finite"),
        ));
    }
    Ok(Box::new(RoiAlign {
        max,
        half_pixel,
        pooled: [dim("output_height")?, dim("output_width")?],
        sampling_ratio: sampling_ratio as usize,
        spatial_scale,
    }))
}

/// A `RoiAlign` node.
#[derive(Debug)]
struct RoiAlign {
    max: bool,
    half_pixel: bool,
    /// `[output_height, output_width]`.
    pooled: [usize; 2],
    /// 0: adaptive.
    sampling_ratio: usize,
    spatial_scale: f32,
}

/// One bilinear sample: four flat positions in the plane and their weights.
#[derive(Debug, Clone, Copy)]
struct Tap<T> {
    pos: [usize; 4],
    w: [T; 4],
}

impl RoiAlign {
    /// The output shape `[R, C, ph, pw]` from the shapes of `X`, `rois` and
    /// `batch_indices`.
    fn shape(&self, x: &[usize], rois: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
        if x.len() != 4 || rois.len() != 2 || rois[1] != 4 || b != [rois[0]] {
            return Err(OpError::shape(format!(
                "RoiAlign: X {x:?}, rois {rois:?} and batch_indices {b:?} do not match ([N, C, H, W], [R, 4], [R])"
            )));
        }
        if x[2] == 0 || x[3] == 0 {
            return Err(OpError::shape(format!(
                "RoiAlign: X {x:?} has an empty spatial dimension"
            )));
        }
        let out = vec![rois[0], x[1], self.pooled[0], self.pooled[1]];
        numel(&out)?;
        Ok(out)
    }

    /// The largest adaptive grid along an axis of `size` split into `pooled` bins.
    fn grid_limit(size: usize, pooled: usize) -> usize {
        (size + 1).div_ceil(pooled)
    }

    /// The samples per bin along each axis for the worst case the metering admits.
    fn grid_bound(&self, h: usize, w: usize) -> [usize; 2] {
        if self.sampling_ratio > 0 {
            [self.sampling_ratio; 2]
        } else {
            [
                Self::grid_limit(h, self.pooled[0]),
                Self::grid_limit(w, self.pooled[1]),
            ]
        }
    }

    /// The taps of every sample of one ROI, bin by bin (row-major), then sample by
    /// sample (row-major) inside a bin, into `taps`; returns the grid.
    fn taps<T: Sample>(
        &self,
        roi: &[T],
        [height, width]: [usize; 2],
        r: usize,
        taps: &mut Vec<Tap<T>>,
    ) -> Result<[usize; 2], OpError> {
        let scale = T::from_f32(self.spatial_scale);
        let offset = if self.half_pixel {
            T::from_f64(0.5)
        } else {
            T::ZERO
        };
        let c: Vec<T> = roi.iter().map(|&v| v * scale - offset).collect();
        if c.iter().any(|&v| (v * T::ZERO).is_nan()) {
            return Err(OpError::value(format!(
                "RoiAlign: ROI {r} has a non-finite coordinate"
            )));
        }
        let (start_w, start_h) = (c[0], c[1]);
        let mut roi_w = c[2] - start_w;
        let mut roi_h = c[3] - start_h;
        if !self.half_pixel {
            // Malformed ROIs are forced to 1×1.
            if T::ONE > roi_w {
                roi_w = T::ONE;
            }
            if T::ONE > roi_h {
                roi_h = T::ONE;
            }
        }
        let ph = T::from_f64(self.pooled[0] as f64);
        let pw = T::from_f64(self.pooled[1] as f64);
        let bin_h = roi_h / ph;
        let bin_w = roi_w / pw;
        let grid = |extent: T, pooled: T, size: usize, bins: usize| -> Result<usize, OpError> {
            if self.sampling_ratio > 0 {
                return Ok(self.sampling_ratio);
            }
            let g = (extent / pooled).ceil().trunc_i64().max(0) as usize;
            let limit = Self::grid_limit(size, bins);
            if g > limit {
                return Err(OpError::value(format!(
                    "RoiAlign: ROI {r} needs an adaptive sampling grid of {g} points per bin, more than the {limit} an input of {size} allows (set sampling_ratio)"
                )));
            }
            Ok(g)
        };
        let gh = grid(roi_h, ph, height, self.pooled[0])?;
        let gw = grid(roi_w, pw, width, self.pooled[1])?;
        let (gh_t, gw_t) = (T::from_f64(gh as f64), T::from_f64(gw as f64));
        let (hf, wf) = (T::from_f64(height as f64), T::from_f64(width as f64));
        let minus_one = T::from_f64(-1.0);
        let half = T::from_f64(0.5);
        taps.clear();
        for p in 0..self.pooled[0] {
            for q in 0..self.pooled[1] {
                for iy in 0..gh {
                    let yy = start_h
                        + T::from_f64(p as f64) * bin_h
                        + (T::from_f64(iy as f64) + half) * bin_h / gh_t;
                    for ix in 0..gw {
                        let xx = start_w
                            + T::from_f64(q as f64) * bin_w
                            + (T::from_f64(ix as f64) + half) * bin_w / gw_t;
                        if yy < minus_one || yy > hf || xx < minus_one || xx > wf {
                            taps.push(Tap {
                                pos: [0; 4],
                                w: [T::ZERO; 4],
                            });
                            continue;
                        }
                        let axis = |v: T, size: usize| -> (T, usize, usize) {
                            let v = if T::ZERO > v { T::ZERO } else { v };
                            let low = v.trunc_i64() as usize;
                            if low >= size - 1 {
                                (T::from_f64((size - 1) as f64), size - 1, size - 1)
                            } else {
                                (v, low, low + 1)
                            }
                        };
                        let (y, y_low, y_high) = axis(yy, height);
                        let (x, x_low, x_high) = axis(xx, width);
                        let ly = y - T::from_f64(y_low as f64);
                        let lx = x - T::from_f64(x_low as f64);
                        let hy = T::ONE - ly;
                        let hx = T::ONE - lx;
                        taps.push(Tap {
                            pos: [
                                y_low * width + x_low,
                                y_low * width + x_high,
                                y_high * width + x_low,
                                y_high * width + x_high,
                            ],
                            w: [hy * hx, hy * lx, ly * hx, ly * lx],
                        });
                    }
                }
            }
        }
        Ok([gh, gw])
    }

    fn align<T: Sample>(
        &self,
        x: &[T],
        xs: &[usize],
        rois: &[T],
        batch: &[i64],
    ) -> Result<Vec<T>, OpError> {
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let plane = h * w;
        let bins = self.pooled[0] * self.pooled[1];
        let mut out = Vec::with_capacity(batch.len() * c * bins);
        let mut taps = Vec::new();
        for (r, &b) in batch.iter().enumerate() {
            if !(0..n as i64).contains(&b) {
                return Err(OpError::value(format!(
                    "RoiAlign: batch index {b} of ROI {r} is outside [0, {n})"
                )));
            }
            let [gh, gw] = self.taps(&rois[4 * r..4 * r + 4], [h, w], r, &mut taps)?;
            let per_bin = gh * gw;
            let count = T::from_f64(per_bin.max(1) as f64);
            for ch in 0..c {
                let data = &x[(b as usize * c + ch) * plane..(b as usize * c + ch + 1) * plane];
                for bin in 0..bins {
                    let samples = &taps[bin * per_bin..(bin + 1) * per_bin];
                    let term = |t: &Tap<T>, k: usize| t.w[k] * data[t.pos[k]];
                    let v = if self.max {
                        let mut best: Option<T> = None;
                        for t in samples {
                            for k in 0..4 {
                                let v = term(t, k);
                                best = Some(match best {
                                    Some(b) if b.is_nan() || !(v.is_nan() || v > b) => b,
                                    _ => v,
                                });
                            }
                        }
                        best.unwrap_or(T::ZERO)
                    } else {
                        let mut acc = T::ZERO;
                        for t in samples {
                            acc = acc + (((term(t, 0) + term(t, 1)) + term(t, 2)) + term(t, 3));
                        }
                        acc / count
                    };
                    out.push(v);
                }
            }
        }
        Ok(out)
    }
}

impl Op for RoiAlign {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 3)?;
        let x = infer_input(inputs, 0)?;
        let rois = infer_input(inputs, 1)?;
        let b = infer_input(inputs, 2)?;
        check_dtype(0, x.ty.dtype, FLOATS)?;
        same_dtype(x.ty.dtype, rois.ty.dtype)?;
        check_dtype(2, b.ty.dtype, &[DType::I64])?;
        one(
            x.ty.dtype,
            self.shape(&x.ty.shape, &rois.ty.shape, &b.ty.shape)?,
        )
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        // Four multiply-adds per sample, for the largest grid a run may use.
        let [gh, gw] = match inputs.first().copied().flatten() {
            Some(x) if x.shape.len() == 4 => self.grid_bound(x.shape[2], x.shape[3]),
            _ => [1, 1],
        };
        let samples = (gh as u64).saturating_mul(gw as u64).max(1);
        outputs
            .first()
            .map_or(1, |t| {
                t.numel()
                    .saturating_mul(samples.saturating_mul(4).saturating_add(1))
            })
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 3, 3)?;
        let (x, rois, b) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let out = self.shape(x.shape(), rois.shape(), b.shape())?;
        let batch = b.as_slice::<i64>().ok_or(OpError::DType {
            index: 2,
            dtype: b.dtype(),
        })?;
        let xs = x.shape();
        let data = match (x.data(), rois.data()) {
            (TensorData::F32(v), TensorData::F32(r)) => {
                TensorData::F32(self.align(v, xs, r, batch)?)
            }
            (TensorData::F64(v), TensorData::F64(r)) => {
                TensorData::F64(self.align(v, xs, r, batch)?)
            }
            (TensorData::F16(v), TensorData::F16(r)) => {
                let wide = |h: &[f16]| h.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
                let y = self.align(&wide(v), xs, &wide(r), batch)?;
                TensorData::F16(y.into_iter().map(f16::from_f32).collect())
            }
            (TensorData::BF16(v), TensorData::BF16(r)) => {
                let wide = |h: &[bf16]| h.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
                let y = self.align(&wide(v), xs, &wide(r), batch)?;
                TensorData::BF16(y.into_iter().map(bf16::from_f32).collect())
            }
            _ if x.dtype() != rois.dtype() => {
                return Err(OpError::DTypeMismatch {
                    expected: x.dtype(),
                    actual: rois.dtype(),
                })
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(out, data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};

    fn build(pairs: &[(&str, Attr)], opset: i64) -> Result<Box<dyn Op>, OpError> {
        let mut a = Attrs::default();
        for (k, v) in pairs {
            a.0.insert((*k).into(), v.clone());
        }
        build_roi_align(&NodeInfo {
            name: "n",
            op_type: "RoiAlign",
            domain: "",
            opset,
            attrs: &a,
            num_inputs: 3,
            num_outputs: 1,
        })
    }

    fn s(v: &str) -> Attr {
        Attr::String(v.as_bytes().to_vec())
    }

    /// A 1×1×2×2 input `[[1, 2], [3, 4]]`.
    fn x() -> Tensor {
        Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap()
    }

    fn run(op: &dyn Op, x: &Tensor, rois: &[f32], batch: &[i64]) -> Result<Vec<f32>, OpError> {
        let r = Tensor::from_vec(vec![batch.len(), 4], rois.to_vec()).unwrap();
        let b = Tensor::from_vec(vec![batch.len()], batch.to_vec()).unwrap();
        let y = op.run(&[Some(x), Some(&r), Some(&b)], &Ctx::default())?;
        Ok(y[0].as_slice::<f32>().unwrap().to_vec())
    }

    #[test]
    fn one_bin_averages_bilinear_samples() {
        // output_half_pixel, ROI (0, 0)–(1, 1), one bin, 2×2 samples at 0.25 and 0.75:
        // bilinear values 1.75, 2.25, 2.75, 3.25, average 2.5.
        let op = build(
            &[
                ("coordinate_transformation_mode", s("output_half_pixel")),
                ("sampling_ratio", Attr::Int(2)),
            ],
            16,
        )
        .unwrap();
        assert_eq!(run(&*op, &x(), &[0.0, 0.0, 1.0, 1.0], &[0]).unwrap(), [2.5]);
        // half_pixel shifts the ROI by −0.5: samples at −0.25 and 0.25, the first
        // clamped to 0: rows 0, 0.25 and columns 0, 0.25 → 1, 1.25, 1.5, 1.75.
        let op = build(&[("sampling_ratio", Attr::Int(2))], 16).unwrap();
        assert_eq!(
            run(&*op, &x(), &[0.0, 0.0, 1.0, 1.0], &[0]).unwrap(),
            [1.375]
        );
    }

    #[test]
    fn opset_10_has_no_half_pixel_offset_and_adaptive_grid() {
        // Adaptive: ⌈1 / 1⌉ = 1 sample at (0.5, 0.5) → 2.5.
        let op = build(&[], 10).unwrap();
        assert_eq!(run(&*op, &x(), &[0.0, 0.0, 1.0, 1.0], &[0]).unwrap(), [2.5]);
    }

    #[test]
    fn max_mode_takes_the_largest_weighted_term() {
        // One sample at (0.5, 0.5): weights 0.25 each, terms 0.25, 0.5, 0.75, 1.
        let op = build(
            &[
                ("mode", s("max")),
                ("coordinate_transformation_mode", s("output_half_pixel")),
                ("sampling_ratio", Attr::Int(1)),
            ],
            16,
        )
        .unwrap();
        assert_eq!(run(&*op, &x(), &[0.0, 0.0, 1.0, 1.0], &[0]).unwrap(), [1.0]);
        // A NaN anywhere in the bin makes the output NaN.
        let xn = Tensor::from_vec(vec![1, 1, 2, 2], vec![f32::NAN, 2.0, 3.0, 4.0]).unwrap();
        assert!(run(&*op, &xn, &[0.0, 0.0, 1.0, 1.0], &[0]).unwrap()[0].is_nan());
    }

    #[test]
    fn samples_outside_the_input_weigh_nothing() {
        // A ROI far to the right: every sample lies beyond x = W.
        let op = build(&[("sampling_ratio", Attr::Int(2))], 16).unwrap();
        assert_eq!(run(&*op, &x(), &[5.0, 0.0, 6.0, 1.0], &[0]).unwrap(), [0.0]);
    }

    #[test]
    fn no_rois_give_an_empty_output() {
        let op = build(&[], 16).unwrap();
        assert!(run(&*op, &x(), &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn bad_batch_indices_and_rois_are_value_errors() {
        let op = build(&[], 16).unwrap();
        for b in [1, -1] {
            let err = run(&*op, &x(), &[0.0, 0.0, 1.0, 1.0], &[b]).unwrap_err();
            assert!(err.to_string().contains("outside [0, 1)"), "{err}");
        }
        let err = run(&*op, &x(), &[0.0, 0.0, f32::INFINITY, 1.0], &[0]).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        // Adaptive sampling of a ROI far larger than the input.
        let err = run(&*op, &x(), &[0.0, 0.0, 100.0, 1.0], &[0]).unwrap_err();
        assert!(err.to_string().contains("adaptive sampling grid"), "{err}");
    }

    #[test]
    fn bad_attributes_and_shapes_are_refused() {
        let err = build(&[("mode", s("median"))], 16).unwrap_err();
        assert!(err.to_string().contains("median"), "{err}");
        let err = build(&[("coordinate_transformation_mode", s("asymmetric"))], 16).unwrap_err();
        assert!(err.to_string().contains("asymmetric"), "{err}");
        for name in ["output_height", "output_width", "sampling_ratio"] {
            let err = build(&[(name, Attr::Int(-1))], 16).unwrap_err();
            assert!(
                matches!(&err, OpError::BadAttribute { name: n, .. } if n == name),
                "{err}"
            );
        }
        let err = build(&[("spatial_scale", Attr::Float(f32::NAN))], 16).unwrap_err();
        assert!(err.to_string().contains("spatial_scale"), "{err}");
        let op = build(&[], 16).unwrap();
        let r3 = Tensor::from_vec(vec![1, 3], vec![0.0f32; 3]).unwrap();
        let b = Tensor::from_vec(vec![1], vec![0i64]).unwrap();
        let err = op
            .run(&[Some(&x()), Some(&r3), Some(&b)], &Ctx::default())
            .unwrap_err();
        assert!(matches!(err, OpError::Shape { .. }), "{err}");
        let r = Tensor::from_vec(vec![1, 4], vec![0.0f32; 4]).unwrap();
        let b32 = Tensor::from_vec(vec![1], vec![0i32]).unwrap();
        let err = op
            .run(&[Some(&x()), Some(&r), Some(&b32)], &Ctx::default())
            .unwrap_err();
        assert!(matches!(err, OpError::DType { index: 2, .. }), "{err}");
    }
}
