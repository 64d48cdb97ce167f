//! `AffineGrid` (opset 20): the sampling grid of an affine transform, for `GridSample`
//! (see [`affine_grid`]).
//!
//! `GridSample` (opsets 16–22): samples `X` (`[N, C, D1…Dr]`, r = 2 or 3) at the
//! normalized coordinates of `grid` (`[N, H1…Hr, r]`, the last axis listing the
//! innermost dimension first), with nearest, linear or cubic interpolation and zeros,
//! border or reflection padding, as the ONNX reference implementation does.
//!
//! Per output point: the coordinate of dimension `i` is denormalized,
//! `(g + 1) / 2 · (size − 1)` with `align_corners`, else `((g + 1) · size − 1) / 2`;
//! one outside the borders (`[0, size − 1]` with `align_corners`, else
//! `[−0.5, size − 0.5]`) is clamped to `[0, size − 1]` (`border`) or reflected
//! (`reflection`). Nearest rounds it half to even and reads that element. Linear and
//! cubic weigh the taps `⌊x⌋, ⌊x⌋ + 1` (cubic: `⌊x⌋ − 1 … ⌊x⌋ + 2`, Keys' kernel
//! with α = −0.75) along the innermost dimension first, then each outer one, each
//! weighted sum a fused multiply-add chain over the taps in order. A tap outside the
//! input reads 0 (`zeros`), the clamped index (`border`) or the reflected one.

use deed_types::{DType, Tensor, TensorData};

use super::elementwise::Float as Sample;
use super::util::{check_count, infer_input, input, numel, same_dtype};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("AffineGrid", |n| {
        check_count(n.num_inputs, 2, 2)?;
        Ok(Box::new(AffineGrid {
            align: n.attrs.int("align_corners", 0)? != 0,
        }))
    });
    r.add("GridSample", |n: &NodeInfo<'_>| {
        let a = n.attrs;
        let mode = match a
            .string("mode", if n.opset >= 20 { "linear" } else { "bilinear" })?
            .as_str()
        {
            "nearest" => Mode::Nearest,
            "linear" | "bilinear" => Mode::Linear,
            "cubic" | "bicubic" => Mode::Cubic,
            m => return Err(OpError::unsupported(format!("GridSample mode {m:?}"))),
        };
        let padding = match a.string("padding_mode", "zeros")?.as_str() {
            "zeros" => Padding::Zeros,
            "border" => Padding::Border,
            "reflection" => Padding::Reflection,
            p => {
                return Err(OpError::unsupported(format!(
                    "GridSample padding_mode {p:?}"
                )))
            }
        };
        Ok(Box::new(GridSample {
            mode,
            padding,
            align_corners: a.int("align_corners", 0)? != 0,
        }))
    });
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Debug)]
struct GridSample {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

/// Reflects `x` by the nearer border until it lies within `[lo, hi]`.
fn reflect<T: Sample>(x: T, lo: T, hi: T) -> T {
    let range = hi - lo;
    if x < lo {
        let dx = lo - x;
        let n = (dx / range).trunc_i64();
        let r = dx - T::from_f64(n as f64) * range;
        if n % 2 == 0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / range).trunc_i64();
        let r = dx - T::from_f64(n as f64) * range;
        if n % 2 == 0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

/// Keys' cubic convolution weights (α = −0.75) of the four taps around a point at
/// distance `t` past the second one.
fn cubic_weights<T: Sample>(t: T) -> [T; 4] {
    let a = T::from_f64(-0.75);
    let (five, eight, four, two, three) = (
        T::from_f64(5.0),
        T::from_f64(8.0),
        T::from_f64(4.0),
        T::from_f64(2.0),
        T::from_f64(3.0),
    );
    let x = if t < T::ZERO { T::ZERO - t } else { t };
    let outer = |d: T| ((a * d - five * a) * d + eight * a) * d - four * a;
    let inner = |d: T| ((a + two) * d - (a + three)) * d * d + T::ONE;
    [
        outer(x + T::ONE),
        inner(x),
        inner(T::ONE - x),
        outer(two - x),
    ]
}

impl GridSample {
    /// The index tap `i` of a dimension of `size` reads, or `None` for a zero.
    fn tap<T: Sample>(&self, i: i64, size: usize, lo: T, hi: T) -> Option<usize> {
        let n = size as i64;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        match self.padding {
            Padding::Zeros => None,
            Padding::Border => Some(i.clamp(0, n - 1) as usize),
            Padding::Reflection => {
                let r = reflect(T::from_f64(i as f64), lo, hi).trunc_i64();
                Some(r.clamp(0, n - 1) as usize)
            }
        }
    }

    /// The interpolated value of `data` (dimensions `dims`, row-major) at `x`.
    fn interp<T: Sample>(&self, data: &[T], dims: &[usize], x: &[T], lo: &[T], hi: &[T]) -> T {
        let inner: usize = dims[1..].iter().product();
        let value = |i: i64| -> T {
            match self.tap(i, dims[0], lo[0], hi[0]) {
                None => T::ZERO,
                Some(k) if dims.len() == 1 => data[k],
                Some(k) => self.interp(
                    &data[k * inner..(k + 1) * inner],
                    &dims[1..],
                    &x[1..],
                    &lo[1..],
                    &hi[1..],
                ),
            }
        };
        match self.mode {
            Mode::Nearest => value(x[0].trunc_i64()),
            Mode::Linear => {
                let x0 = x[0].floor();
                let t = x[0] - x0;
                let i0 = x0.trunc_i64();
                let w = [T::ONE - t, t];
                let v = [value(i0), value(i0 + 1)];
                w[1].fma(v[1], w[0].fma(v[0], T::ZERO))
            }
            Mode::Cubic => {
                let x0 = x[0].floor();
                let i0 = x0.trunc_i64();
                let w = cubic_weights(x[0] - x0);
                (0..4).fold(T::ZERO, |acc, k| w[k].fma(value(i0 - 1 + k as i64), acc))
            }
        }
    }

    fn sample<T: Sample>(&self, x: &[T], xs: &[usize], grid: &[T], out_points: usize) -> Vec<T> {
        let (n, c) = (xs[0], xs[1]);
        let dims = &xs[2..];
        let r = dims.len();
        let plane: usize = dims.iter().product();
        let (lo, hi): (Vec<T>, Vec<T>) = dims
            .iter()
            .map(|&d| {
                if self.align_corners {
                    (T::ZERO, T::from_f64(d as f64) - T::ONE)
                } else {
                    (T::from_f64(-0.5), T::from_f64(d as f64) - T::from_f64(0.5))
                }
            })
            .unzip();
        let mut out = Vec::with_capacity(n * c * out_points);
        let mut coords = vec![T::ZERO; r];
        for b in 0..n {
            for ch in 0..c {
                let data = &x[(b * c + ch) * plane..(b * c + ch + 1) * plane];
                for p in 0..out_points {
                    let g = &grid[(b * out_points + p) * r..(b * out_points + p + 1) * r];
                    for i in 0..r {
                        // The grid lists the innermost dimension first.
                        let v = g[r - 1 - i];
                        let size = T::from_f64(dims[i] as f64);
                        let mut x = if self.align_corners {
                            (v + T::ONE) / T::from_f64(2.0) * (size - T::ONE)
                        } else {
                            ((v + T::ONE) * size - T::ONE) / T::from_f64(2.0)
                        };
                        if self.mode == Mode::Nearest {
                            x = x.round_even();
                        }
                        if x < lo[i] || x > hi[i] {
                            x = match self.padding {
                                Padding::Zeros => x,
                                Padding::Border => {
                                    if x < T::ZERO {
                                        T::ZERO
                                    } else if x > size - T::ONE {
                                        size - T::ONE
                                    } else {
                                        x
                                    }
                                }
                                Padding::Reflection => reflect(x, lo[i], hi[i]),
                            };
                        }
                        coords[i] = x;
                    }
                    out.push(self.interp(data, dims, &coords, &lo, &hi));
                }
            }
        }
        out
    }

    fn shapes(&self, x: &[usize], grid: &[usize]) -> Result<(Vec<usize>, usize), OpError> {
        let r = x.len().saturating_sub(2);
        if !(r == 2 || r == 3)
            || grid.len() != x.len()
            || grid[0] != x[0]
            || grid[grid.len() - 1] != r
        {
            return Err(OpError::shape(format!(
                "GridSample: input {x:?} and grid {grid:?} do not match ([N, C, D1…Dr] with r = 2 or 3 and [N, H1…Hr, r])"
            )));
        }
        if x[2..].contains(&0) {
            return Err(OpError::shape(format!(
                "GridSample: input {x:?} has an empty spatial dimension"
            )));
        }
        let points = &grid[1..grid.len() - 1];
        let mut out = vec![x[0], x[1]];
        out.extend_from_slice(points);
        numel(&out)?;
        Ok((out, points.iter().product()))
    }
}

impl Op for GridSample {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let x = infer_input(inputs, 0)?;
        let g = infer_input(inputs, 1)?;
        if !matches!(x.ty.dtype, DType::F32 | DType::F64 | DType::F16) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        same_dtype(x.ty.dtype, g.ty.dtype)?;
        let (out, _) = self.shapes(&x.ty.shape, &g.ty.shape)?;
        Ok(vec![TypeInfo::new(x.ty.dtype, out)])
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let taps = match self.mode {
            Mode::Nearest => 1,
            Mode::Linear => 8,
            Mode::Cubic => 64,
        };
        outputs
            .first()
            .map_or(1, |t| t.numel().saturating_mul(taps + 8))
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let (x, g) = (input(inputs, 0)?, input(inputs, 1)?);
        let (out, points) = self.shapes(x.shape(), g.shape())?;
        let data = match (x.data(), g.data()) {
            (TensorData::F32(v), TensorData::F32(gr)) => {
                TensorData::F32(self.sample(v, x.shape(), gr, points))
            }
            (TensorData::F64(v), TensorData::F64(gr)) => {
                TensorData::F64(self.sample(v, x.shape(), gr, points))
            }
            (TensorData::F16(v), TensorData::F16(gr)) => {
                let wide = |h: &[half::f16]| h.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
                let y = self.sample(&wide(v), x.shape(), &wide(gr), points);
                TensorData::F16(y.into_iter().map(half::f16::from_f32).collect())
            }
            _ if x.dtype() != g.dtype() => {
                return Err(OpError::DTypeMismatch {
                    expected: x.dtype(),
                    actual: g.dtype(),
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

/// `AffineGrid`: for `theta` `[N, 2, 3]` (2-D) or `[N, 3, 4]` (3-D) and `size`
/// `[N, C, H, W]` or `[N, C, D, H, W]`, the grid `[N, H, W, 2]` or `[N, D, H, W, 3]`.
#[derive(Debug)]
struct AffineGrid {
    align: bool,
}

impl AffineGrid {
    /// `(n, [d, h, w], rank)` from theta's and size's shapes and size's value.
    fn dims(&self, theta: &[usize], size: &[i64]) -> Result<(usize, [usize; 3], usize), OpError> {
        let dims: Vec<usize> = size
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| OpError::value(format!("size {size:?}"))))
            .collect::<Result<_, _>>()?;
        let (n, dhw, r) = match dims[..] {
            [n, _, h, w] => (n, [1, h, w], 2),
            [n, _, d, h, w] => (n, [d, h, w], 3),
            _ => {
                return Err(OpError::shape(format!(
                    "size {size:?} must be [N, C, H, W] or [N, C, D, H, W]"
                )))
            }
        };
        if theta != [n, r, r + 1] {
            return Err(OpError::shape(format!(
                "theta {theta:?} must be [{n}, {r}, {}] for size {size:?}",
                r + 1
            )));
        }
        Ok((n, dhw, r))
    }
}

impl Op for AffineGrid {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let theta = infer_input(inputs, 0)?;
        if !matches!(theta.ty.dtype, DType::F32 | DType::F64) {
            return Err(OpError::DType {
                index: 0,
                dtype: theta.ty.dtype,
            });
        }
        let size = super::util::need_value(infer_input(inputs, 1)?, 1)?;
        let (n, [d, h, w], r) = self.dims(&theta.ty.shape, &super::util::to_i64s(size)?)?;
        let shape = if r == 2 {
            vec![n, h, w, 2]
        } else {
            vec![n, d, h, w, 3]
        };
        numel(&shape)?;
        Ok(vec![TypeInfo::new(theta.ty.dtype, shape)])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let theta = input(inputs, 0)?;
        let size = super::util::to_i64s(input(inputs, 1)?)?;
        let (n, dhw, r) = self.dims(theta.shape(), &size)?;
        let (shape, data) = match theta.data() {
            TensorData::F32(t) => {
                let (s, v) = affine_grid(t, n, dhw, r, self.align);
                (s, TensorData::F32(v))
            }
            TensorData::F64(t) => {
                let (s, v) = affine_grid(t, n, dhw, r, self.align);
                (s, TensorData::F64(v))
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: theta.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

/// The grid as the operator's function body computes it, in theta's type. Along an
/// axis of size `s` the coordinates are `c_i = start + i · step` with `step = 2 / s`,
/// `start = −1 + step / 2`, or with `align_corners` `step = 2 / (s − 1)`, `start = −1`
/// (a size-1 axis then takes −1, as the reference implementation does; the body would
/// divide by zero). Point `(w, h, d)` maps, per output component `r`, to the canonical
/// dot product of theta's row with `(x_w, y_h, z_d, 1)` — `fma` from +0 in that order,
/// a 2-D theta's row read as `(t0, t1, 0, t2)` — as the body's `MatMul` computes it.
fn affine_grid<T: Sample>(
    theta: &[T],
    n: usize,
    [d, h, w]: [usize; 3],
    rank: usize,
    align: bool,
) -> (Vec<usize>, Vec<T>) {
    let two = T::from_f64(2.0);
    let coords = |s: usize| -> Vec<T> {
        let sf = T::from_f64(s as f64);
        let (start, step) = if align {
            if s == 1 {
                (T::from_f64(-1.0), T::ZERO)
            } else {
                (T::from_f64(-1.0), two / (sf - T::ONE))
            }
        } else {
            let step = two / sf;
            (T::from_f64(-1.0) + step / two, step)
        };
        (0..s)
            .map(|i| start + T::from_f64(i as f64) * step)
            .collect()
    };
    let (zs, ys, xs) = (coords(d), coords(h), coords(w));
    let mut out = Vec::with_capacity(n * d * h * w * rank);
    for b in 0..n {
        let th = &theta[b * rank * (rank + 1)..(b + 1) * rank * (rank + 1)];
        for &z in &zs {
            for &y in &ys {
                for &x in &xs {
                    for row in th.chunks_exact(rank + 1) {
                        let (tz, t1) = if rank == 2 {
                            (T::ZERO, row[2])
                        } else {
                            (row[2], row[3])
                        };
                        let acc = row[0].fma(x, T::ZERO);
                        let acc = row[1].fma(y, acc);
                        let acc = tz.fma(z, acc);
                        out.push(t1.fma(T::ONE, acc));
                    }
                }
            }
        }
    }
    let shape = if rank == 2 {
        vec![n, h, w, 2]
    } else {
        vec![n, d, h, w, 3]
    };
    (shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(mode: Mode, padding: Padding, align_corners: bool) -> GridSample {
        GridSample {
            mode,
            padding,
            align_corners,
        }
    }

    fn sample(op: &GridSample, x: &Tensor, grid: &Tensor) -> Vec<f32> {
        let y = op.run(&[Some(x), Some(grid)], &Ctx::default()).unwrap();
        y[0].as_slice::<f32>().unwrap().to_vec()
    }

    /// A 2×3 input, and a grid of the normalized coordinates `(x, y)` given.
    fn case(points: &[(f32, f32)]) -> (Tensor, Tensor) {
        let x = Tensor::from_vec(vec![1, 1, 2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let g: Vec<f32> = points.iter().flat_map(|&(a, b)| [a, b]).collect();
        let grid = Tensor::from_vec(vec![1, 1, points.len(), 2], g).unwrap();
        (x, grid)
    }

    #[test]
    fn the_corners_grid_reads_the_input_back_in_every_mode() {
        // With align_corners, −1 and 1 are the centres of the first and last elements.
        let pts: Vec<(f32, f32)> = [-1.0, 1.0]
            .iter()
            .flat_map(|&y| [-1.0, 0.0, 1.0].map(move |x| (x, y)))
            .collect();
        let (x, grid) = case(&pts);
        for mode in [Mode::Nearest, Mode::Linear, Mode::Cubic] {
            let got = sample(&op(mode, Padding::Zeros, true), &x, &grid);
            assert_eq!(got, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "{mode:?}");
        }
    }

    #[test]
    fn points_outside_read_zeros_the_border_or_a_reflection() {
        // x = 3 (normalized) is two widths right of the last column's centre.
        let (x, grid) = case(&[(0.0, -1.0), (3.0, -1.0)]);
        let zeros = sample(&op(Mode::Nearest, Padding::Zeros, true), &x, &grid);
        assert_eq!(zeros, [2.0, 0.0]);
        let border = sample(&op(Mode::Nearest, Padding::Border, true), &x, &grid);
        assert_eq!(border, [2.0, 3.0]);
        // Denormalized 4 in [0, 2] reflects to 0.
        let reflect = sample(&op(Mode::Nearest, Padding::Reflection, true), &x, &grid);
        assert_eq!(reflect, [2.0, 1.0]);
        // Linear halfway between the first two columns of the first row.
        let (x, grid) = case(&[(-0.5, -1.0)]);
        assert_eq!(
            sample(&op(Mode::Linear, Padding::Zeros, true), &x, &grid),
            [1.5]
        );
    }

    #[test]
    fn mismatched_shapes_are_typed_errors() {
        let x = Tensor::from_vec(vec![1, 1, 2, 3], vec![0.0f32; 6]).unwrap();
        let grid = Tensor::from_vec(vec![1, 1, 1, 3], vec![0.0f32; 3]).unwrap();
        let err = op(Mode::Linear, Padding::Zeros, false)
            .run(&[Some(&x), Some(&grid)], &Ctx::default())
            .unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
    }
}
