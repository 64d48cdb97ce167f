//! `Resize` (opsets 10, 11, 13, 18, 19) and the older `Upsample` (7, 9).
//!
//! Resizing is separable: every output coordinate along an axis maps to input
//! coordinates of that axis alone. Nearest mode is pure data movement (one input
//! element per output element, any dtype) and runs through the shared remap engine.
//! Linear and cubic modes (float dtypes) work in f64: the input is widened, one 1-D
//! pass per resized axis runs from the innermost axis outwards, each output value being
//! `Σ_k w_k·p_k` summed tap by tap in increasing index order without fused
//! multiply-add, and the result is rounded once to the element type. Coordinates and
//! weights are f64 too; `antialias=1` widens the filter when downsampling, with the
//! ONNX reference's normalized weights. Semantics: `docs/canonical-semantics.md`.

use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};

use super::shape::{axis_of, known_ints, remap, run_ints, scalar_from_f64, tensor, FILL};
use super::util::{infer_input, input, need_value, one, opt_infer_input, opt_input, strides};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("Resize", build_resize);
    r.add("Upsample", build_upsample);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctm {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Debug)]
struct Resize {
    mode: Mode,
    ctm: Ctm,
    nearest: Nearest,
    cubic_a: f64,
    exclude_outside: bool,
    /// Linear and cubic: the reference's antialiasing filter (`antialias=1`).
    antialias: bool,
    extrapolation: f64,
    axes: Option<Vec<i64>>,
    policy: Policy,
    /// Input slots of (roi, scales, sizes); `None` where the opset has no such input.
    slots: (Option<usize>, Option<usize>, Option<usize>),
    /// Upsample-7: scales are an attribute.
    attr_scales: Option<Vec<f32>>,
}

fn mode_of(s: &str) -> Result<Mode, OpError> {
    match s {
        "nearest" => Ok(Mode::Nearest),
        "linear" | "bilinear" | "trilinear" => Ok(Mode::Linear),
        "cubic" => Ok(Mode::Cubic),
        m => Err(OpError::unsupported(format!("resize mode `{m}`"))),
    }
}

fn build_resize(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let a = n.attrs;
    let mode = mode_of(&a.string("mode", "nearest")?)?;
    if n.opset < 11 {
        if mode == Mode::Cubic {
            return Err(OpError::unsupported("cubic Resize before opset 11"));
        }
        return Ok(Box::new(Resize {
            mode,
            ctm: Ctm::Asymmetric,
            nearest: Nearest::Floor,
            cubic_a: -0.75,
            exclude_outside: false,
            antialias: false,
            extrapolation: 0.0,
            axes: None,
            policy: Policy::Stretch,
            slots: (None, Some(1), None),
            attr_scales: None,
        }));
    }
    let antialias = a.int("antialias", 0)? != 0;
    if antialias && mode == Mode::Nearest {
        return Err(OpError::unsupported(
            "Resize antialias=1 with mode nearest (linear and cubic only)",
        ));
    }
    let ctm = match a
        .string("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => Ctm::HalfPixel,
        "half_pixel_symmetric" => Ctm::HalfPixelSymmetric,
        "pytorch_half_pixel" => Ctm::PytorchHalfPixel,
        "align_corners" => Ctm::AlignCorners,
        "asymmetric" => Ctm::Asymmetric,
        "tf_crop_and_resize" => Ctm::TfCropAndResize,
        m => {
            return Err(OpError::unsupported(format!(
                "coordinate_transformation_mode `{m}`"
            )))
        }
    };
    let nearest = match a.string("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        m => return Err(OpError::unsupported(format!("nearest_mode `{m}`"))),
    };
    let policy = match a.string("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        m => {
            return Err(OpError::unsupported(format!(
                "keep_aspect_ratio_policy `{m}`"
            )))
        }
    };
    Ok(Box::new(Resize {
        mode,
        ctm,
        nearest,
        cubic_a: a.float("cubic_coeff_a", -0.75)? as f64,
        exclude_outside: a.int("exclude_outside", 0)? != 0,
        antialias,
        extrapolation: a.float("extrapolation_value", 0.0)? as f64,
        axes: a.ints("axes")?,
        policy,
        slots: (Some(1), Some(2), Some(3)),
        attr_scales: None,
    }))
}

fn build_upsample(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let mode = mode_of(&n.attrs.string("mode", "nearest")?)?;
    if mode == Mode::Cubic {
        return Err(OpError::unsupported("cubic Upsample"));
    }
    let attr_scales = if n.opset < 9 {
        Some(n.attrs.floats("scales")?.ok_or(OpError::MissingAttribute {
            name: "scales".into(),
        })?)
    } else {
        None
    };
    Ok(Box::new(Resize {
        mode,
        ctm: Ctm::Asymmetric,
        nearest: Nearest::Floor,
        cubic_a: -0.75,
        exclude_outside: false,
        antialias: false,
        extrapolation: 0.0,
        axes: None,
        policy: Policy::Stretch,
        slots: (None, attr_scales.is_none().then_some(1), None),
        attr_scales,
    }))
}

/// Reads a float tensor (f32, f64, f16, bf16) as f64s.
fn floats_of(t: &Tensor, index: usize) -> Result<Vec<f64>, OpError> {
    Ok(match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::F64(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
        _ => {
            return Err(OpError::DType {
                index,
                dtype: t.dtype(),
            })
        }
    })
}

/// What a resize needs from its value inputs.
struct Params {
    roi: Option<Vec<f64>>,
    scales: Option<Vec<f64>>,
    sizes: Option<Vec<i64>>,
}

/// One axis: input length, output length, scale, roi (start, end).
#[derive(Debug, Clone, Copy)]
struct Axis {
    n: usize,
    m: usize,
    scale: f64,
    roi: (f64, f64),
}

impl Resize {
    fn axes(&self, rank: usize) -> Result<Vec<usize>, OpError> {
        match &self.axes {
            None => Ok((0..rank).collect()),
            Some(a) => {
                let mut seen = vec![false; rank];
                a.iter()
                    .map(|&x| {
                        let x = axis_of(x, rank)?;
                        if std::mem::replace(&mut seen[x], true) {
                            return Err(OpError::bad_attr("axes", "repeated axis"));
                        }
                        Ok(x)
                    })
                    .collect()
            }
        }
    }

    fn plan(&self, shape: &[usize], p: Params) -> Result<Vec<Axis>, OpError> {
        let rank = shape.len();
        let axes = self.axes(rank)?;
        let k = axes.len();
        let mut out: Vec<Axis> = shape
            .iter()
            .map(|&n| Axis {
                n,
                m: n,
                scale: 1.0,
                roi: (0.0, 1.0),
            })
            .collect();
        if let Some(roi) = p.roi.filter(|r| !r.is_empty()) {
            if roi.len() != 2 * k {
                return Err(OpError::value(format!(
                    "roi has {} values, expected {}",
                    roi.len(),
                    2 * k
                )));
            }
            for (i, &a) in axes.iter().enumerate() {
                out[a].roi = (roi[i], roi[i + k]);
            }
        }
        let scales = match (&self.attr_scales, p.scales) {
            (Some(s), _) => Some(s.iter().map(|&x| x as f64).collect::<Vec<_>>()),
            (None, s) => s.filter(|s| !s.is_empty()),
        };
        let sizes = p.sizes.filter(|s| !s.is_empty());
        match (scales, sizes) {
            (Some(_), Some(_)) => {
                return Err(OpError::value("Resize takes scales or sizes, not both"))
            }
            (None, None) => return Err(OpError::value("Resize needs scales or sizes")),
            (Some(s), None) => {
                if s.len() != k {
                    return Err(OpError::value(format!(
                        "{} scales for {k} resized axes",
                        s.len()
                    )));
                }
                for (i, &a) in axes.iter().enumerate() {
                    let sc = s[i];
                    if !(sc.is_finite() && sc > 0.0) {
                        return Err(OpError::value(format!("scale {sc} is not positive")));
                    }
                    let m = (sc * out[a].n as f64).floor();
                    if m > u32::MAX as f64 {
                        return Err(OpError::value("Resize output too large"));
                    }
                    out[a].m = m as usize;
                    out[a].scale = sc;
                }
            }
            (None, Some(sz)) => {
                if sz.len() != k {
                    return Err(OpError::value(format!(
                        "{} sizes for {k} resized axes",
                        sz.len()
                    )));
                }
                let mut ratios = Vec::with_capacity(k);
                for (i, &a) in axes.iter().enumerate() {
                    if sz[i] < 0 {
                        return Err(OpError::value(format!("size {} is negative", sz[i])));
                    }
                    ratios.push(sz[i] as f64 / out[a].n as f64);
                }
                let common = match self.policy {
                    Policy::Stretch => None,
                    Policy::NotLarger => ratios.iter().copied().reduce(f64::min),
                    Policy::NotSmaller => ratios.iter().copied().reduce(f64::max),
                };
                for (i, &a) in axes.iter().enumerate() {
                    match common {
                        None => {
                            out[a].m = sz[i] as usize;
                            out[a].scale = ratios[i];
                        }
                        Some(c) => {
                            out[a].scale = c;
                            out[a].m = (c * out[a].n as f64 + 0.5).floor() as usize;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The input coordinate of output coordinate `x`, or `None` when it falls outside
    /// the input in `tf_crop_and_resize` mode (extrapolation).
    fn source(&self, ax: &Axis, x: usize) -> Option<f64> {
        let (n, x) = (ax.n as f64, x as f64);
        let s = ax.scale;
        let width = s * n;
        let xo = match self.ctm {
            Ctm::AlignCorners => {
                if width == 1.0 {
                    0.0
                } else {
                    x * (n - 1.0) / (width - 1.0)
                }
            }
            Ctm::Asymmetric => x / s,
            Ctm::TfCropAndResize => {
                let (r0, r1) = ax.roi;
                let v = if width == 1.0 {
                    (r1 - r0) * (n - 1.0) / 2.0
                } else {
                    x * (r1 - r0) * (n - 1.0) / (width - 1.0)
                } + r0 * (n - 1.0);
                if v < 0.0 || v > n - 1.0 {
                    return None;
                }
                v
            }
            Ctm::PytorchHalfPixel => {
                if width == 1.0 {
                    -0.5
                } else {
                    (x + 0.5) / s - 0.5
                }
            }
            Ctm::HalfPixel => (x + 0.5) / s - 0.5,
            Ctm::HalfPixelSymmetric => {
                let adjustment = ax.m as f64 / width;
                let offset = n / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / s - 0.5
            }
        };
        Some(xo)
    }

    /// Whether an axis is left exactly as it is (scale 1, same length, no crop).
    fn identity(&self, ax: &Axis) -> bool {
        ax.m == ax.n && ax.scale == 1.0 && self.ctm != Ctm::TfCropAndResize
    }

    fn nearest_index(&self, xo: f64, n: usize) -> usize {
        let last = n as i64 - 1;
        let i = if xo == xo.floor() {
            xo as i64
        } else {
            let x0 = xo.floor();
            let r = xo - x0;
            let up = match self.nearest {
                Nearest::RoundPreferFloor => r > 0.5,
                Nearest::RoundPreferCeil => r >= 0.5,
                Nearest::Floor => false,
                Nearest::Ceil => true,
            };
            x0 as i64 + i64::from(up)
        };
        i.clamp(0, last.max(0)) as usize
    }

    /// Taps (clamped input index, weight) of output coordinate `x`, or `None` to
    /// extrapolate.
    fn taps(&self, ax: &Axis, x: usize) -> Option<Vec<(usize, f64)>> {
        let xo = self.source(ax, x)?;
        // Prefer the left neighbour: the fraction lies in (0, 1].
        let (base, r) = if xo == xo.floor() {
            (xo as i64 - 1, 1.0)
        } else {
            (xo.floor() as i64, xo - xo.floor())
        };
        let (first, mut w): (i64, Vec<f64>) = match self.mode {
            _ if self.antialias => {
                let w = match self.mode {
                    Mode::Linear => linear_antialias(r, ax.scale),
                    _ => cubic_antialias(r, ax.scale, self.cubic_a),
                };
                // An even number of taps centred on the coordinate.
                (base + 1 - (w.len() / 2) as i64, w)
            }
            Mode::Linear => (base, vec![1.0 - r, r]),
            _ => {
                let a = self.cubic_a;
                let (p, q) = (r + 1.0, 1.0 - r);
                let q1 = q + 1.0;
                (
                    base - 1,
                    vec![
                        ((a * p - 5.0 * a) * p + 8.0 * a) * p - 4.0 * a,
                        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                        ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                        ((a * q1 - 5.0 * a) * q1 + 8.0 * a) * q1 - 4.0 * a,
                    ],
                )
            }
        };
        let last = ax.n as i64 - 1;
        if self.exclude_outside {
            for (k, wk) in w.iter_mut().enumerate() {
                let i = first + k as i64;
                if i < 0 || i > last {
                    *wk = 0.0;
                }
            }
            let mut sum = 0.0;
            for &wk in &w {
                sum += wk;
            }
            for wk in w.iter_mut() {
                *wk /= sum;
            }
        }
        Some(
            w.into_iter()
                .enumerate()
                .map(|(k, wk)| ((first + k as i64).clamp(0, last.max(0)) as usize, wk))
                .collect(),
        )
    }

    fn params_known(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Params, OpError> {
        let f = |slot: Option<usize>| -> Result<Option<Vec<f64>>, OpError> {
            match slot.and_then(|i| opt_infer_input(inputs, i).map(|x| (i, x))) {
                None => Ok(None),
                Some((i, x)) if x.ty.numel() == 0 => {
                    let _ = i;
                    Ok(Some(Vec::new()))
                }
                Some((i, x)) => Ok(Some(floats_of(need_value(x, i)?, i)?)),
            }
        };
        let sizes = match self.slots.2 {
            Some(i) => match opt_infer_input(inputs, i) {
                Some(x) if x.ty.numel() == 0 => Some(Vec::new()),
                Some(_) => known_ints(inputs, i)?,
                None => None,
            },
            None => None,
        };
        let roi = if self.ctm == Ctm::TfCropAndResize {
            f(self.slots.0)?
        } else {
            None
        };
        Ok(Params {
            roi,
            scales: f(self.slots.1)?,
            sizes,
        })
    }

    fn params_run(&self, inputs: &[Option<&Tensor>]) -> Result<Params, OpError> {
        let f = |slot: Option<usize>| -> Result<Option<Vec<f64>>, OpError> {
            match slot.and_then(|i| opt_input(inputs, i).map(|t| (i, t))) {
                None => Ok(None),
                Some((_, t)) if t.is_empty() => Ok(Some(Vec::new())),
                Some((i, t)) => Ok(Some(floats_of(t, i)?)),
            }
        };
        let sizes = match self.slots.2 {
            Some(i) => run_ints(inputs, i)?,
            None => None,
        };
        let roi = if self.ctm == Ctm::TfCropAndResize {
            f(self.slots.0)?
        } else {
            None
        };
        Ok(Params {
            roi,
            scales: f(self.slots.1)?,
            sizes,
        })
    }

    fn check_dtype(&self, dt: DType) -> Result<(), OpError> {
        if self.mode != Mode::Nearest && !dt.is_float() {
            return Err(OpError::unsupported(format!(
                "linear or cubic resize of {dt} (float dtypes only)"
            )));
        }
        Ok(())
    }

    fn run_nearest(&self, x: &Tensor, axes: &[Axis], ctx: &Ctx) -> Result<TensorData, OpError> {
        let st = strides(x.shape());
        let tables: Vec<Vec<usize>> = axes
            .iter()
            .enumerate()
            .map(|(d, ax)| {
                (0..ax.m)
                    .map(|o| {
                        if self.identity(ax) {
                            return o * st[d];
                        }
                        match self.source(ax, o) {
                            None => FILL,
                            Some(xo) => self.nearest_index(xo, ax.n) * st[d],
                        }
                    })
                    .collect()
            })
            .collect();
        let fill = scalar_from_f64(x.dtype(), self.extrapolation)?;
        Ok(remap(x.data(), &tables, Some(&fill), ctx))
    }

    fn run_interp(&self, x: &Tensor, axes: &[Axis]) -> Result<TensorData, OpError> {
        let mut cur: Vec<f64> = floats_of(x, 0)?;
        let mut shape: Vec<usize> = x.shape().to_vec();
        for d in (0..axes.len()).rev() {
            let ax = &axes[d];
            if self.identity(ax) {
                continue;
            }
            let outer: usize = shape[..d].iter().product();
            let inner: usize = shape[d + 1..].iter().product();
            let taps: Vec<Option<Vec<(usize, f64)>>> =
                (0..ax.m).map(|o| self.taps(ax, o)).collect();
            let mut next = Vec::with_capacity(outer * ax.m * inner);
            for o in 0..outer {
                for t in &taps {
                    for i in 0..inner {
                        let v = match t {
                            None => self.extrapolation,
                            Some(t) => {
                                let mut acc = 0.0f64;
                                for (k, &(j, w)) in t.iter().enumerate() {
                                    let p = cur[(o * ax.n + j) * inner + i];
                                    acc = if k == 0 { w * p } else { acc + w * p };
                                }
                                acc
                            }
                        };
                        next.push(v);
                    }
                }
            }
            cur = next;
            shape[d] = ax.m;
        }
        Ok(match x.dtype() {
            DType::F32 => TensorData::F32(cur.iter().map(|&v| v as f32).collect()),
            DType::F64 => TensorData::F64(cur),
            DType::F16 => TensorData::F16(cur.iter().map(|&v| f16::from_f64(v)).collect()),
            DType::BF16 => TensorData::BF16(cur.iter().map(|&v| bf16::from_f64(v)).collect()),
            d => {
                return Err(OpError::unsupported(format!(
                    "linear or cubic resize of {d}"
                )))
            }
        })
    }
}

/// The antialiased linear filter (the ONNX reference's `_linear_coeffs_antialias`):
/// with `s = min(scale, 1)` and `start = ⌊−1 / s⌋ + 1`, taps `i = start … 1 − start`
/// weigh `clamp(1 − |(i − ratio) · s|, 0, 1)`, each divided by their sum (from 0, in tap
/// order). All in f64.
fn linear_antialias(ratio: f64, scale: f64) -> Vec<f64> {
    let s = if scale <= 1.0 { scale } else { 1.0 };
    let start = (-1.0 / s).floor() as i64 + 1;
    let w: Vec<f64> = (start..2 - start)
        .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
        .collect();
    normalized(w)
}

/// The antialiased cubic filter (the ONNX reference's `_cubic_coeffs_antialias`): with
/// `s = min(scale, 1)` and `start = ⌊−2 / s⌋ + 1`, taps `i = start … 1 − start` weigh
/// Keys' kernel for `A` at `|s · (i − ratio)|`, each divided by their sum (from 0, in
/// tap order). All in f64, the reference's expressions left to right.
fn cubic_antialias(ratio: f64, scale: f64, a: f64) -> Vec<f64> {
    let s = if scale <= 1.0 { scale } else { 1.0 };
    let start = (-2.0 / s).floor() as i64 + 1;
    let w: Vec<f64> = (start..2 - start)
        .map(|i| {
            let x = (s * (i as f64 - ratio)).abs();
            let x2 = x * x;
            let x3 = x * x2;
            if x <= 1.0 {
                (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
            } else if x < 2.0 {
                a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
            } else {
                0.0
            }
        })
        .collect();
    normalized(w)
}

/// Each weight divided by the sum of all (summed from 0 in order).
fn normalized(mut w: Vec<f64>) -> Vec<f64> {
    let mut sum = 0.0;
    for &v in &w {
        sum += v;
    }
    for v in w.iter_mut() {
        *v /= sum;
    }
    w
}

/// The most taps the antialiased filter of an axis from `n` to `m ≥ 1` elements can
/// have. Every scale that gives `m` satisfies `scale · n ≥ m − 1/2`, so
/// `1 / scale ≤ r = ⌈2n / (2m − 1)⌉`: linear has at most `2r` taps, cubic `4r`.
fn antialias_taps(n: usize, m: usize, mode: Mode) -> u64 {
    let (n, m) = (n as u64, m.max(1) as u64);
    let r = (2 * n).div_ceil(2 * m - 1).max(1);
    r.saturating_mul(if mode == Mode::Linear { 2 } else { 4 })
}

/// Operation units of an antialiased resize: for each pass, innermost axis first, the
/// elements it produces times the taps each reads.
fn antialias_cost(input: &[usize], output: &[usize], mode: Mode) -> u64 {
    if input.len() != output.len() {
        return 1;
    }
    let mut shape = input.to_vec();
    let mut total = 0u64;
    for d in (0..shape.len()).rev() {
        shape[d] = output[d];
        let produced = shape.iter().fold(1u64, |a, &v| a.saturating_mul(v as u64));
        total = total
            .saturating_add(produced.saturating_mul(antialias_taps(input[d], output[d], mode)));
    }
    total
}

impl Op for Resize {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        self.check_dtype(x.ty.dtype)?;
        let axes = self.plan(&x.ty.shape, self.params_known(inputs)?)?;
        one(x.ty.dtype, axes.iter().map(|a| a.m).collect())
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        self.check_dtype(x.dtype())?;
        let axes = self.plan(x.shape(), self.params_run(inputs)?)?;
        let out: Vec<usize> = axes.iter().map(|a| a.m).collect();
        if out.contains(&0) || x.is_empty() {
            return Ok(vec![Tensor::zeros(x.dtype(), out)?]);
        }
        let data = match self.mode {
            Mode::Nearest => self.run_nearest(x, &axes, ctx)?,
            _ => self.run_interp(x, &axes)?,
        };
        Ok(vec![tensor(out, data)?])
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let i: u64 = inputs.first().copied().flatten().map_or(0, |t| t.numel());
        if self.antialias {
            if let (Some(Some(x)), Some(y)) = (inputs.first(), outputs.first()) {
                return i
                    .saturating_add(antialias_cost(&x.shape, &y.shape, self.mode))
                    .max(1);
            }
        }
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        // Up to four taps per resized axis per output element for cubic.
        let per = match self.mode {
            Mode::Nearest => 1,
            Mode::Linear => 2 * outputs.first().map_or(1, |t| t.shape.len() as u64),
            Mode::Cubic => 4 * outputs.first().map_or(1, |t| t.shape.len() as u64),
        };
        i.saturating_add(o.saturating_mul(per)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};

    fn node<'a>(op: &'a str, opset: i64, attrs: &'a Attrs) -> NodeInfo<'a> {
        NodeInfo {
            name: "n",
            op_type: op,
            domain: "",
            opset,
            attrs,
            num_inputs: 4,
            num_outputs: 1,
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        let mut a = Attrs::default();
        for (k, v) in pairs {
            a.0.insert((*k).into(), Attr::String(v.as_bytes().to_vec()));
        }
        a
    }

    #[test]
    fn nearest_upsample_repeats() {
        let a = attrs(&[("mode", "nearest")]);
        let op = build_resize(&node("Resize", 19, &a)).unwrap();
        let x = Tensor::from_vec(vec![1, 2], vec![1u8, 2]).unwrap();
        let scales = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let out = op
            .run(&[Some(&x), None, Some(&scales)], &Ctx::default())
            .unwrap();
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[1, 1, 2, 2]);
    }

    #[test]
    fn linear_align_corners_hits_the_ends() {
        let a = attrs(&[
            ("mode", "linear"),
            ("coordinate_transformation_mode", "align_corners"),
        ]);
        let op = build_resize(&node("Resize", 19, &a)).unwrap();
        let x = Tensor::from_vec(vec![2], vec![0.0f32, 3.0]).unwrap();
        let sizes = Tensor::from_vec(vec![1], vec![4i64]).unwrap();
        let out = op
            .run(&[Some(&x), None, None, Some(&sizes)], &Ctx::default())
            .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.0, 1.0, 2.0, 3.0]);
    }

    fn antialiased(mode: &str) -> Box<dyn Op> {
        let mut a = attrs(&[("mode", mode)]);
        a.0.insert("antialias".into(), Attr::Int(1));
        build_resize(&node("Resize", 19, &a)).unwrap()
    }

    #[test]
    fn antialias_filters_are_the_references() {
        // Halving: s = 0.5, linear taps −1…2 at (i − ratio)·0.5 from ratio 0.5:
        // 0.25, 0.75, 0.75, 0.25, normalized to 1/8, 3/8, 3/8, 1/8.
        assert_eq!(linear_antialias(0.5, 0.5), [0.125, 0.375, 0.375, 0.125]);
        // Upsampling keeps two taps (s = 1).
        assert_eq!(linear_antialias(0.25, 3.0), [0.75, 0.25]);
        // Cubic at s = 0.5 has eight taps, symmetric about ratio 0.5.
        let w = cubic_antialias(0.5, 0.5, -0.75);
        assert_eq!(w.len(), 8);
        assert_eq!(w[0], w[7]);
        assert_eq!(w[3], w[4]);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        // The bound on the number of taps holds for the scales that give m.
        for (n, m) in [(4usize, 3usize), (10, 1), (7, 2), (5, 5)] {
            for scale in [m as f64 / n as f64, (m as f64 + 0.49) / n as f64] {
                let taps = cubic_antialias(0.5, scale, -0.75).len() as u64;
                assert!(taps <= antialias_taps(n, m, Mode::Cubic), "{n} {m} {scale}");
                let taps = linear_antialias(0.5, scale).len() as u64;
                assert!(
                    taps <= antialias_taps(n, m, Mode::Linear),
                    "{n} {m} {scale}"
                );
            }
        }
    }

    #[test]
    fn antialiased_linear_downsampling_averages_wider() {
        // 1-D [0, 8, 0, 8] halved (half_pixel): output 0 at coordinate 0.5 reads
        // taps −1…2 = (0, 0, 8, 0) (edge padding) with weights 1/8, 3/8, 3/8, 1/8 → 3.
        let op = antialiased("linear");
        let x = Tensor::from_vec(vec![4], vec![0.0f32, 8.0, 0.0, 8.0]).unwrap();
        let scales = Tensor::from_vec(vec![1], vec![0.5f32]).unwrap();
        let out = op
            .run(&[Some(&x), None, Some(&scales)], &Ctx::default())
            .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[3.0, 5.0]);
        // Without antialiasing the same resize reads taps 0, 1 halfway: 4, 4.
        let a = attrs(&[("mode", "linear")]);
        let plain = build_resize(&node("Resize", 19, &a)).unwrap();
        let out = plain
            .run(&[Some(&x), None, Some(&scales)], &Ctx::default())
            .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[4.0, 4.0]);
        // The metering counts the wider filter.
        let (i, o) = (
            TypeInfo::new(DType::F32, vec![4]),
            TypeInfo::new(DType::F32, vec![2]),
        );
        assert_eq!(op.cost(&[Some(&i)], std::slice::from_ref(&o)), 4 + 2 * 6);
        assert!(plain.cost(&[Some(&i)], &[o]) < 4 + 2 * 6);
    }

    #[test]
    fn antialias_nearest_and_integer_linear_are_unsupported() {
        let mut a = attrs(&[("mode", "nearest")]);
        a.0.insert("antialias".into(), Attr::Int(1));
        let err = build_resize(&node("Resize", 19, &a)).unwrap_err();
        assert!(
            matches!(&err, OpError::Unsupported { feature } if feature.contains("nearest")),
            "{err}"
        );
        let a = attrs(&[("mode", "linear")]);
        let op = build_resize(&node("Resize", 19, &a)).unwrap();
        let t = TypeInfo::new(DType::U8, vec![2]);
        assert!(matches!(
            op.infer(&[Some(InferInput {
                ty: &t,
                value: None
            })])
            .unwrap_err(),
            OpError::Unsupported { .. }
        ));
    }
}
