//! Pooling: `MaxPool` (with the optional indices output), `AveragePool`, `LpPool`,
//! `GlobalAveragePool`, `GlobalMaxPool`, `GlobalLpPool`; and `MaxUnpool`, which
//! scatters pooled values back to the positions `MaxPool`'s indices give.
//!
//! Windows are visited row-major over the kernel offsets; padding positions are
//! skipped (they hold no value). Max: the first NaN met wins (canonical NaN, its
//! index); otherwise the first element strictly greater than every earlier one
//! (so among equal values, `-0.0`/`+0.0` included, the first wins); a window with no
//! input element gives `-inf` (integer minimum) and index `-1`. Average:
//! `sum = +0.0; sum = sum + x` in window order, then one division by the count.
//! Lp: `acc = acc + |x|` (p = 1), `acc = fma(x, x, acc)` then `sqrt` (p = 2), any other
//! p `acc = acc + pow(|x|, p)` then `pow(acc, 1/p)` (the crate's `pow`; `1/p` rounded
//! to the type).
//! f16/bf16 are computed in f32 and rounded once. Planes (n, c) are independent and
//! split over threads; each plane's arithmetic is the same whatever the split.

use deed_types::tensor::Element;
use deed_types::{with_data, DType, Tensor, TensorData};
use half::{bf16, f16};

use super::conv::{AutoPad, Window, WindowAttrs};
use super::shape::{known_ints, run_ints};
use super::util::{check_count, check_dtype, infer_input, input, numel, strides};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;
use crate::kernels::gemm::{CANONICAL_NAN_F32, CANONICAL_NAN_F64};

pub(crate) fn register(r: &mut Registry) {
    r.add("MaxPool", |n| build(n, Kind::Max, false));
    r.add("AveragePool", |n| build(n, Kind::Avg, false));
    r.add("LpPool", |n| build(n, Kind::Lp, false));
    r.add("GlobalMaxPool", |n| build(n, Kind::Max, true));
    r.add("GlobalAveragePool", |n| build(n, Kind::Avg, true));
    r.add("GlobalLpPool", |n| build(n, Kind::Lp, true));
    r.add("MaxUnpool", build_max_unpool);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg,
    Lp,
}

/// A pooling operator.
#[derive(Debug)]
pub struct Pool {
    kind: Kind,
    global: bool,
    win: WindowAttrs,
    count_include_pad: bool,
    p: i64,
    storage_order: i64,
    with_indices: bool,
}

fn build(n: &NodeInfo<'_>, kind: Kind, global: bool) -> Result<Box<dyn Op>, OpError> {
    let a = n.attrs;
    let win = WindowAttrs::parse(a)?;
    if !global && win.kernel.is_none() {
        return Err(OpError::MissingAttribute {
            name: "kernel_shape".into(),
        });
    }
    let p = a.int("p", 2)?;
    if kind == Kind::Lp && p < 1 {
        return Err(OpError::bad_attr(
            "p",
            format!("p = {p} is not a positive order"),
        ));
    }
    let storage_order = a.int("storage_order", 0)?;
    if storage_order != 0 && storage_order != 1 {
        return Err(OpError::bad_attr("storage_order", "must be 0 or 1"));
    }
    Ok(Box::new(Pool {
        kind,
        global,
        win,
        count_include_pad: a.int("count_include_pad", 0)? != 0,
        p,
        storage_order,
        with_indices: kind == Kind::Max && !global && n.num_outputs > 1,
    }))
}

impl Pool {
    fn allowed(&self) -> &'static [DType] {
        match self.kind {
            Kind::Max => &[
                DType::F32,
                DType::F64,
                DType::F16,
                DType::BF16,
                DType::I8,
                DType::U8,
            ],
            _ => &[DType::F32, DType::F64, DType::F16, DType::BF16],
        }
    }

    fn window(&self, x: &[usize]) -> Result<Window, OpError> {
        if x.len() < 3 {
            return Err(OpError::shape(format!(
                "pooling needs [N, C, spatial…], got {x:?}"
            )));
        }
        if self.global {
            // One window over everything: flatten the spatial dims.
            let vol = numel(&x[2..])?;
            let w = WindowAttrs {
                auto_pad: AutoPad::NotSet,
                kernel: Some(vec![vol]),
                strides: None,
                dilations: None,
                pads: None,
                ceil_mode: false,
            };
            return w.resolve(&[vol], &[vol]);
        }
        let k = self.win.kernel.clone().unwrap_or_default();
        self.win.resolve_pool(&x[2..], &k)
    }

    fn out_shape(&self, x: &[usize], w: &Window) -> Vec<usize> {
        let mut out = vec![x[0], x[1]];
        if self.global {
            out.extend(std::iter::repeat_n(1, x.len() - 2));
        } else {
            out.extend(w.out_dims());
        }
        out
    }
}

/// The per-window arithmetic over one element type.
trait PoolElem: Copy + Send + Sync + 'static {
    const LOWEST: Self;
    fn nan(self) -> bool;
    fn canonical_nan() -> Self;
    fn gt(self, o: Self) -> bool;
}
macro_rules! pool_float {
    ($t:ty, $bits:expr) => {
        impl PoolElem for $t {
            const LOWEST: $t = <$t>::NEG_INFINITY;
            fn nan(self) -> bool {
                self.is_nan()
            }
            fn canonical_nan() -> $t {
                <$t>::from_bits($bits)
            }
            fn gt(self, o: $t) -> bool {
                self > o
            }
        }
    };
}
pool_float!(f32, CANONICAL_NAN_F32);
pool_float!(f64, CANONICAL_NAN_F64);
macro_rules! pool_int {
    ($($t:ty),*) => {$(
        impl PoolElem for $t {
            const LOWEST: $t = <$t>::MIN;
            fn nan(self) -> bool { false }
            fn canonical_nan() -> $t { 0 }
            fn gt(self, o: $t) -> bool { self > o }
        }
    )*};
}
pool_int!(i8, u8);

/// Float arithmetic of average and Lp pooling.
trait PoolFloat: PoolElem {
    const ZERO: Self;
    fn add(a: Self, b: Self) -> Self;
    fn sq_acc(x: Self, acc: Self) -> Self;
    fn abs(self) -> Self;
    fn sqrt(self) -> Self;
    fn div_count(self, n: usize) -> Self;
    fn from_count(n: usize) -> Self;
    /// The crate's canonical `pow`.
    fn pow(self, y: Self) -> Self;
}
macro_rules! pool_ff {
    ($t:ty, $pow:path) => {
        impl PoolFloat for $t {
            const ZERO: $t = 0.0;
            fn add(a: $t, b: $t) -> $t {
                a + b
            }
            fn sq_acc(x: $t, acc: $t) -> $t {
                x.mul_add(x, acc)
            }
            fn abs(self) -> $t {
                <$t>::abs(self)
            }
            fn sqrt(self) -> $t {
                <$t>::sqrt(self)
            }
            fn div_count(self, n: usize) -> $t {
                self / (n as $t)
            }
            fn from_count(n: usize) -> $t {
                n as $t
            }
            fn pow(self, y: $t) -> $t {
                $pow(self, y)
            }
        }
    };
}
pool_ff!(f32, super::math::pow_f32);
pool_ff!(f64, super::math::pow_f64);

/// Visits, for output position `(zd, zh, zw)`, every kernel offset row-major and
/// calls `f(index within the plane)` for those inside the input. Returns the number
/// of window positions inside the padded extent (for `count_include_pad`).
#[inline]
fn visit(w: &Window, z: [usize; 3], f: impl FnMut(usize) -> bool) -> usize {
    let mut padded = 1;
    for (d, &zd) in z.iter().enumerate() {
        let ext = w.input[d] + w.pad_begin[d] + w.pad_end[d];
        padded *= (0..w.kernel[d])
            .filter(|&k| zd * w.stride[d] + k * w.dil[d] < ext)
            .count();
    }
    visit_window(w, z, f);
    padded
}

/// Calls `f` on the flat input index of every in-bounds window position of output
/// `z`, in row-major kernel order, until `f` returns false.
#[inline]
fn visit_window(w: &Window, z: [usize; 3], mut f: impl FnMut(usize) -> bool) {
    let [_, ih, iw] = w.input;
    'outer: for a in 0..w.kernel[0] {
        let Some(sd) = w.src(0, z[0], a) else {
            continue;
        };
        for b in 0..w.kernel[1] {
            let Some(sh) = w.src(1, z[1], b) else {
                continue;
            };
            for e in 0..w.kernel[2] {
                let Some(sw) = w.src(2, z[2], e) else {
                    continue;
                };
                if !f((sd * ih + sh) * iw + sw) {
                    break 'outer;
                }
            }
        }
    }
}

fn positions(w: &Window) -> impl Iterator<Item = [usize; 3]> + '_ {
    let [od, oh, ow] = w.output;
    (0..od).flat_map(move |a| (0..oh).flat_map(move |b| (0..ow).map(move |c| [a, b, c])))
}

/// Max pooling of every plane: values and flat input indices.
fn max_pool<T: PoolElem>(
    ctx: &Ctx,
    w: &Window,
    planes: usize,
    x: &[T],
    order: i64,
) -> Vec<(T, i64)> {
    let (iv, ov) = (w.in_vol(), w.out_vol());
    let mut out = vec![(T::LOWEST, -1i64); planes * ov];
    let [id, ih, iw] = w.input;
    ctx.for_each_chunk(&mut out, ov.max(1), |pi, chunk| {
        let xs = &x[pi * iv..(pi + 1) * iv];
        for (slot, z) in chunk.iter_mut().zip(positions(w)) {
            let mut best = T::LOWEST;
            let mut at: Option<usize> = None;
            visit_window(w, z, |i| {
                let v = xs[i];
                if v.nan() {
                    best = T::canonical_nan();
                    at = Some(i);
                    return false;
                }
                if at.is_none() || v.gt(best) {
                    best = v;
                    at = Some(i);
                }
                true
            });
            let idx = match at {
                None => -1,
                Some(i) => {
                    let within = if order == 1 {
                        // Column-major position within the plane.
                        let (d, rest) = (i / (ih * iw), i % (ih * iw));
                        let (h, ww) = (rest / iw, rest % iw);
                        (ww * ih + h) * id + d
                    } else {
                        i
                    };
                    (pi * iv + within) as i64
                }
            };
            *slot = (best, idx);
        }
    });
    out
}

/// The values of [`max_pool`] alone (no indices), f32: the same result — the
/// canonical NaN when the window holds a NaN, else its first maximum in row-major
/// order (which decides between −0 and +0), −∞ for an empty window — with each
/// output row's and column's in-bounds kernel offsets resolved once instead of per
/// element.
fn max_pool_values(ctx: &Ctx, w: &Window, planes: usize, x: &[f32]) -> Vec<f32> {
    let (iv, ov) = (w.in_vol(), w.out_vol());
    let [_, ih, iw] = w.input;
    let [od, oh, ow] = w.output;
    let offsets = |d: usize, n: usize| -> Vec<Vec<usize>> {
        (0..n)
            .map(|z| (0..w.kernel[d]).filter_map(|k| w.src(d, z, k)).collect())
            .collect()
    };
    if dense(w) {
        let mut out = vec![f32::NEG_INFINITY; planes * ov];
        let two_by_two = w.kernel == [1, 2, 2] && w.stride == [1, 2, 2] && w.dil == [1; 3];
        ctx.for_each_chunk(&mut out, ov.max(1), |pi, chunk| {
            let xs = &x[pi * iv..(pi + 1) * iv];
            if two_by_two && od == 1 && super::simd::max_pool_2x2s2(xs, iw, oh, ow, chunk) {
                return;
            }
            super::simd::with_fma(
                #[inline(always)]
                || max_pool_dense(w, xs, chunk),
            )
        });
        return out;
    }
    if let Some(pw) = padded_dense(w) {
        // Windows that reach into the padding: each plane padded with −∞, which no
        // value loses to (`>` keeps the first maximum and a NaN is flagged either
        // way) and which is what a window with nothing inside gives, then the
        // dense form over the padded geometry.
        let piv = pw.in_vol();
        let mut out = vec![f32::NEG_INFINITY; planes * ov];
        ctx.for_each_chunk(&mut out, ov.max(1), |pi, chunk| {
            let mut buf = vec![f32::NEG_INFINITY; piv];
            pad_plane(w, &pw, &x[pi * iv..(pi + 1) * iv], &mut buf);
            super::simd::with_fma(
                #[inline(always)]
                || max_pool_dense(&pw, &buf, chunk),
            )
        });
        return out;
    }
    let (ds, hs, ws) = (offsets(0, od), offsets(1, oh), offsets(2, ow));
    let mut out = vec![f32::NEG_INFINITY; planes * ov];
    ctx.for_each_chunk(&mut out, ov.max(1), |pi, chunk| {
        let xs = &x[pi * iv..(pi + 1) * iv];
        let mut slots = chunk.iter_mut();
        for dl in &ds {
            for hl in &hs {
                for wl in &ws {
                    let Some(slot) = slots.next() else { return };
                    let (mut best, mut any, mut nan) = (f32::NEG_INFINITY, false, false);
                    for &sd in dl {
                        for &sh in hl {
                            let line = &xs[(sd * ih + sh) * iw..(sd * ih + sh + 1) * iw];
                            for &sw in wl {
                                let v = line[sw];
                                nan |= v.is_nan();
                                if !any || v > best {
                                    best = v;
                                    any = true;
                                }
                            }
                        }
                    }
                    *slot = if nan {
                        f32::from_bits(CANONICAL_NAN_F32)
                    } else {
                        best
                    };
                }
            }
        }
    });
    out
}

/// The geometry of `w` over its input padded on every side it reaches past (the
/// leading pads, and at the end as far as the last window reaches), which is
/// [`dense`]; `None` when that would be more than four times the input plane (and
/// 4096 elements), or overflows.
fn padded_dense(w: &Window) -> Option<Window> {
    let mut p = w.clone();
    for d in 0..3 {
        if w.kernel[d] == 0 {
            return None;
        }
        let reach = match w.output[d] {
            0 => 0,
            o => (o - 1)
                .checked_mul(w.stride[d])?
                .checked_add((w.kernel[d] - 1).checked_mul(w.dil[d])?)?
                .checked_add(1)?,
        };
        p.input[d] = w.pad_begin[d].checked_add(w.input[d])?.max(reach);
        p.pad_begin[d] = 0;
        p.pad_end[d] = 0;
    }
    let vol = p.input.iter().try_fold(1usize, |a, &n| a.checked_mul(n))?;
    (vol <= w.in_vol().saturating_mul(4).saturating_add(4096) && dense(&p)).then_some(p)
}

/// Copies plane `xs` of `w`'s input into `buf`, the plane of [`padded_dense`]'s
/// geometry `p` (filled beforehand), after `w`'s leading pads.
fn pad_plane(w: &Window, p: &Window, xs: &[f32], buf: &mut [f32]) {
    let [id, ih, iw] = w.input;
    let [_, ph, pw] = p.input;
    for d in 0..id {
        for h in 0..ih {
            let at = ((d + w.pad_begin[0]) * ph + h + w.pad_begin[1]) * pw + w.pad_begin[2];
            let from = (d * ih + h) * iw;
            if let (Some(dst), Some(src)) = (buf.get_mut(at..at + iw), xs.get(from..from + iw)) {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// True when every window lies inside the input: no padding is reached, so every
/// output reads the same kernel offsets from its window's origin.
fn dense(w: &Window) -> bool {
    (0..3).all(|d| {
        w.pad_begin[d] == 0
            && w.kernel[d] > 0
            && (w.output[d] == 0
                || (w.output[d] - 1) * w.stride[d] + (w.kernel[d] - 1) * w.dil[d] < w.input[d])
    })
}

/// [`max_pool_values`] of one plane when the windows are [`dense`]: a whole output row
/// at a time, visiting the kernel offsets in row-major order for every element of the
/// row together, so each element sees its window in the same order as the reference
/// (first maximum kept, any NaN canonical) and the loop over the row vectorizes.
#[inline(always)]
fn max_pool_dense(w: &Window, xs: &[f32], out: &mut [f32]) {
    let [_, ih, iw] = w.input;
    let [od, oh, ow] = w.output;
    let [kd, kh, kw] = w.kernel;
    let sw = w.stride[2];
    if od == 0 || oh == 0 || ow == 0 {
        return;
    }
    for zd in 0..od {
        for zh in 0..oh {
            let Some(row) = out.get_mut((zd * oh + zh) * ow..(zd * oh + zh + 1) * ow) else {
                return;
            };
            let mut first = true;
            for a in 0..kd {
                let sd = zd * w.stride[0] + a * w.dil[0];
                for b in 0..kh {
                    let sh = zh * w.stride[1] + b * w.dil[1];
                    let line = &xs[(sd * ih + sh) * iw..(sd * ih + sh + 1) * iw];
                    for e in 0..kw {
                        let off = e * w.dil[2];
                        // `dense` keeps the last window position of the row inside.
                        let src = &line[off..off + (ow - 1) * sw + 1];
                        // The common strides get the stride as a constant, which
                        // lets the loop vectorize.
                        match sw {
                            1 => max_into::<1>(row, src, first),
                            2 => super::simd::max_into_stride2(row, src, first),
                            _ => max_into_strided(row, src, sw, first),
                        }
                        first = false;
                    }
                }
            }
            for o in row.iter_mut() {
                if o.is_nan() {
                    *o = f32::from_bits(CANONICAL_NAN_F32);
                }
            }
        }
    }
}

/// One kernel offset of [`max_pool_dense`] over a row: `row[j]` takes `src[j·S]`
/// first, after that when the value is larger or NaN. A kept NaN is never replaced (no
/// comparison with it holds), so the row ends NaN exactly where a window held one and
/// otherwise at its first maximum. Selects, not conditional stores, so that the loop
/// vectorizes.
#[inline(always)]
fn max_into<const S: usize>(row: &mut [f32], src: &[f32], first: bool) {
    if first {
        for (o, v) in row.iter_mut().zip(src.iter().step_by(S)) {
            *o = *v;
        }
    } else {
        for (o, &v) in row.iter_mut().zip(src.iter().step_by(S)) {
            *o = if v > *o || v.is_nan() { v } else { *o };
        }
    }
}

/// [`max_into`] with the stride known at run time only.
#[inline(always)]
fn max_into_strided(row: &mut [f32], src: &[f32], s: usize, first: bool) {
    for (o, &v) in row.iter_mut().zip(src.iter().step_by(s)) {
        *o = if first || v > *o || v.is_nan() { v } else { *o };
    }
}

fn avg_lp_pool<T: PoolFloat>(
    ctx: &Ctx,
    w: &Window,
    planes: usize,
    x: &[T],
    kind: Kind,
    p: i64,
    include_pad: bool,
) -> Vec<T> {
    let (iv, ov) = (w.in_vol(), w.out_vol());
    let mut out = vec![T::ZERO; planes * ov];
    let (pf, inv_p) = (
        T::from_count(p as usize),
        T::from_count(1).div_count(p as usize),
    );
    let term = |acc: T, v: T| match (kind, p) {
        (Kind::Lp, 1) => T::add(acc, v.abs()),
        (Kind::Lp, 2) => T::sq_acc(v, acc),
        (Kind::Lp, _) => T::add(acc, v.abs().pow(pf)),
        _ => T::add(acc, v),
    };
    let finish = |acc: T, n: usize, padded: usize| {
        let y = match kind {
            Kind::Avg => acc.div_count(if include_pad { padded } else { n }),
            Kind::Lp if p == 2 => acc.sqrt(),
            Kind::Lp if p > 2 => acc.pow(inv_p),
            _ => acc,
        };
        if y.nan() {
            T::canonical_nan()
        } else {
            y
        }
    };
    // One window over the whole plane (global pooling): it visits the plane in
    // memory order, so the same sum is a plain fold (the reference keeps the walk).
    let whole = !ctx.reference()
        && ov == 1
        && w.kernel == w.input
        && w.dil == [1; 3]
        && w.pad_begin == [0; 3]
        && w.pad_end == [0; 3];
    ctx.for_each_chunk(&mut out, ov.max(1), |pi, chunk| {
        let xs = &x[pi * iv..(pi + 1) * iv];
        if whole {
            for slot in chunk.iter_mut() {
                *slot = finish(xs.iter().fold(T::ZERO, |acc, &v| term(acc, v)), iv, iv);
            }
            return;
        }
        for (slot, z) in chunk.iter_mut().zip(positions(w)) {
            let mut acc = T::ZERO;
            let mut n = 0usize;
            let padded = visit(w, z, |i| {
                acc = term(acc, xs[i]);
                n += 1;
                true
            });
            *slot = finish(acc, n, padded);
        }
    });
    out
}

impl Op for Pool {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        if !self.allowed().contains(&x.ty.dtype) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        let w = self.window(&x.ty.shape)?;
        let out = self.out_shape(&x.ty.shape, &w);
        numel(&out)?;
        let mut v = vec![TypeInfo::new(x.ty.dtype, out.clone())];
        if self.with_indices {
            v.push(TypeInfo::new(DType::I64, out));
        }
        Ok(v)
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let i: u64 = inputs.iter().flatten().map(|t| t.numel()).sum();
        let kv = self
            .win
            .kernel
            .as_ref()
            .map(|k| k.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64)))
            .unwrap_or(1);
        let o: u64 = outputs.first().map(|t| t.numel()).unwrap_or(0);
        i.saturating_add(o.saturating_mul(kv.saturating_add(1)))
            .max(1)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let w = self.window(x.shape())?;
        let shape = self.out_shape(x.shape(), &w);
        let planes = x.shape()[0] * x.shape()[1];
        if x.len() != planes * w.in_vol() {
            return Err(OpError::shape("pooling input smaller than its shape"));
        }
        macro_rules! maxp {
            ($v:expr, $wrap:expr) => {{
                let r = max_pool(ctx, &w, planes, $v, self.storage_order);
                let vals = r.iter().map(|p| $wrap(p.0)).collect::<Vec<_>>();
                let idx = r.iter().map(|p| p.1).collect::<Vec<i64>>();
                let mut out = vec![Tensor::from_vec(shape.clone(), vals)?];
                if self.with_indices {
                    out.push(Tensor::from_vec(shape.clone(), idx)?);
                }
                Ok(out)
            }};
        }
        macro_rules! avgp {
            ($v:expr, $wrap:expr) => {{
                let r = avg_lp_pool(
                    ctx,
                    &w,
                    planes,
                    $v,
                    self.kind,
                    self.p,
                    self.count_include_pad,
                );
                let vals = r.into_iter().map($wrap).collect::<Vec<_>>();
                Ok(vec![Tensor::from_vec(shape.clone(), vals)?])
            }};
        }
        let id = |v| v;
        if let (Kind::Max, false, false, TensorData::F32(v)) =
            (self.kind, self.with_indices, ctx.reference(), x.data())
        {
            let vals = max_pool_values(ctx, &w, planes, v);
            return Ok(vec![Tensor::from_vec(shape, vals)?]);
        }
        match (self.kind, x.data()) {
            (Kind::Max, TensorData::F32(v)) => maxp!(v, id),
            (Kind::Max, TensorData::F64(v)) => maxp!(v, |y: f64| y),
            (Kind::Max, TensorData::I8(v)) => maxp!(v, |y: i8| y),
            (Kind::Max, TensorData::U8(v)) => maxp!(v, |y: u8| y),
            (Kind::Max, TensorData::F16(v)) => {
                let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                maxp!(&f, f16::from_f32)
            }
            (Kind::Max, TensorData::BF16(v)) => {
                let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                maxp!(&f, bf16::from_f32)
            }
            (_, TensorData::F32(v)) => avgp!(v, id),
            (_, TensorData::F64(v)) => avgp!(v, |y: f64| y),
            (_, TensorData::F16(v)) => {
                let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                avgp!(&f, f16::from_f32)
            }
            (_, TensorData::BF16(v)) => {
                let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                avgp!(&f, bf16::from_f32)
            }
            (_, d) => Err(OpError::DType {
                index: 0,
                dtype: d.dtype(),
            }),
        }
    }
    /// A window holding a NaN gives the canonical NaN, on every path; so does an
    /// average or a norm that comes out NaN. Indices are integers.
    fn nans_canonical(&self) -> bool {
        true
    }
}

/// `MaxUnpool` (opsets 9, 11, 22): the partial inverse of `MaxPool`. Every element of
/// `X` is written to the flat position its `I` element gives in a zero tensor of the
/// shape `kernel_shape`, `strides` and `pads` imply, `[N, C, (in − 1)·s − pb − pe + k…]`,
/// in row-major order of `X`, so of two elements sent to one position the later one
/// wins. With the `output_shape` input (known while planning) that tensor is placed at
/// the origin of a zero tensor of `output_shape`, as the ONNX reference implementation
/// does (each dimension at least the implied one). Values are moved, not computed.
#[derive(Debug)]
struct MaxUnpool {
    kernel: Vec<usize>,
    strides: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
}

fn build_max_unpool(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 2, 3)?;
    let w = WindowAttrs::parse(n.attrs)?;
    let kernel = w.kernel.ok_or(OpError::MissingAttribute {
        name: "kernel_shape".into(),
    })?;
    let r = kernel.len();
    if w.strides.as_ref().is_some_and(|s| s.len() != r) {
        return Err(OpError::bad_attr(
            "strides",
            format!("needs {r} values, one per kernel dimension"),
        ));
    }
    if w.pads.as_ref().is_some_and(|p| p.len() != 2 * r) {
        return Err(OpError::bad_attr(
            "pads",
            format!("needs {} values, two per kernel dimension", 2 * r),
        ));
    }
    Ok(Box::new(MaxUnpool {
        kernel,
        strides: w.strides,
        pads: w.pads,
    }))
}

impl MaxUnpool {
    /// The implied shape for `X`'s shape, and the output shape (`output_shape` when
    /// given).
    fn shapes(
        &self,
        x: &[usize],
        i: &[usize],
        output_shape: Option<&[i64]>,
    ) -> Result<(Vec<usize>, Vec<usize>), OpError> {
        let r = self.kernel.len();
        if x.len() != r + 2 || i != x {
            return Err(OpError::shape(format!(
                "MaxUnpool: X {x:?} and I {i:?} must be one shape [N, C] followed by the {r} kernel dimensions"
            )));
        }
        let mut implied = x[..2].to_vec();
        for d in 0..r {
            let s = self.strides.as_ref().map_or(1, |s| s[d]);
            let (pb, pe) = self.pads.as_ref().map_or((0, 0), |p| (p[d], p[r + d]));
            let full = (x[d + 2] as u128).saturating_sub(1) * s as u128 + self.kernel[d] as u128;
            let dim = full
                .checked_sub(pb as u128 + pe as u128)
                .filter(|&v| v <= u32::MAX as u128)
                .ok_or_else(|| {
                    OpError::shape(format!(
                        "MaxUnpool: dimension {d} of X {x:?} gives no output size with kernel {:?}, strides {:?} and pads {:?}",
                        self.kernel, self.strides, self.pads
                    ))
                })?;
            implied.push(if x[d + 2] == 0 { 0 } else { dim as usize });
        }
        numel(&implied)?;
        let out = match output_shape {
            None => implied.clone(),
            Some(s) => {
                let out: Vec<usize> = s.iter().map(|&v| v.max(0) as usize).collect();
                if out.len() != implied.len()
                    || s.iter()
                        .zip(&implied)
                        .any(|(&o, &m)| o < 0 || (o as u64) < m as u64)
                {
                    return Err(OpError::shape(format!(
                        "MaxUnpool: output_shape {s:?} must hold the implied shape {implied:?}"
                    )));
                }
                numel(&out)?;
                out
            }
        };
        Ok((implied, out))
    }
}

/// Copies `src[k]` to `dst[targets[k]]` for every `k` in order.
fn unpool_scatter<T: Element>(dst: &mut [T], src: &TensorData, targets: &[usize]) {
    if let Some(s) = T::slice(src) {
        for (&t, v) in targets.iter().zip(s) {
            dst[t] = v.clone();
        }
    }
}

impl Op for MaxUnpool {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let x = infer_input(inputs, 0)?;
        let i = infer_input(inputs, 1)?;
        check_dtype(
            0,
            x.ty.dtype,
            &[DType::F32, DType::F64, DType::F16, DType::BF16],
        )?;
        check_dtype(1, i.ty.dtype, &[DType::I64])?;
        let os = known_ints(inputs, 2)?;
        let (_, out) = self.shapes(&x.ty.shape, &i.ty.shape, os.as_deref())?;
        Ok(vec![TypeInfo::new(x.ty.dtype, out)])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let (x, i) = (input(inputs, 0)?, input(inputs, 1)?);
        let os = run_ints(inputs, 2)?;
        let (implied, out) = self.shapes(x.shape(), i.shape(), os.as_deref())?;
        let idx = i.as_slice::<i64>().ok_or(OpError::DType {
            index: 1,
            dtype: i.dtype(),
        })?;
        let total = numel(&implied)?;
        let (ist, ost) = (strides(&implied), strides(&out));
        let targets = idx
            .iter()
            .map(|&v| {
                if !(0..total as i64).contains(&v) {
                    return Err(OpError::value(format!(
                        "MaxUnpool: index {v} is outside [0, {total}) for the implied shape {implied:?}"
                    )));
                }
                // The position in the implied shape, moved to the output's strides.
                let mut rest = v as usize;
                let mut t = 0;
                for (a, b) in ist.iter().zip(&ost) {
                    t += rest / a * b;
                    rest %= a;
                }
                Ok(t)
            })
            .collect::<Result<Vec<usize>, OpError>>()?;
        let mut data = TensorData::zeros(x.dtype(), numel(&out)?);
        with_data!(&mut data, v => unpool_scatter(v, x.data(), &targets));
        Ok(vec![Tensor::new(out, data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    fn op(kind: &str, a: Vec<(&str, Attr)>, outputs: usize) -> Box<dyn Op> {
        let attrs = Attrs(a.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        let n = NodeInfo {
            name: "p",
            op_type: kind,
            domain: "",
            opset: 19,
            attrs: &attrs,
            num_inputs: 1,
            num_outputs: outputs,
        };
        let r = crate::ops::registry();
        let b = r.get("", kind).unwrap();
        b(&n).unwrap()
    }

    #[test]
    fn max_pool_nan_and_indices() {
        let p = op("MaxPool", vec![("kernel_shape", Attr::Ints(vec![2]))], 2);
        let x = Tensor::from_vec(vec![1, 1, 4], vec![1.0f32, f32::NAN, -0.0, 0.0]).unwrap();
        let y = p.run(&[Some(&x)], &Ctx::default()).unwrap();
        let v = y[0].as_slice::<f32>().unwrap();
        assert_eq!(v[0].to_bits(), CANONICAL_NAN_F32);
        assert_eq!(v[1].to_bits(), CANONICAL_NAN_F32);
        assert_eq!(v[2].to_bits(), (-0.0f32).to_bits());
        assert_eq!(y[1].as_slice::<i64>().unwrap(), &[1, 1, 2]);
    }

    #[test]
    fn average_counts() {
        let x = Tensor::from_vec(vec![1, 1, 3], vec![3.0f32, 6.0, 9.0]).unwrap();
        let mk = |inc| {
            op(
                "AveragePool",
                vec![
                    ("kernel_shape", Attr::Ints(vec![2])),
                    ("pads", Attr::Ints(vec![1, 1])),
                    ("count_include_pad", Attr::Int(inc)),
                ],
                1,
            )
        };
        let y = mk(0).run(&[Some(&x)], &Ctx::default()).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[3.0, 4.5, 7.5, 9.0]);
        let y = mk(1).run(&[Some(&x)], &Ctx::default()).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1.5, 4.5, 7.5, 4.5]);
    }

    /// A square `k`-wide window with strides `(s_h, s_w)` and pads `(p_h, p_w)` on
    /// both sides.
    /// One spatial dimension of a pool's property test: input size, kernel, stride,
    /// dilation, pad at the beginning, pad at the end.
    type Dim = (usize, usize, usize, usize, usize, usize);

    fn window_attrs(
        global: bool,
        k: usize,
        (s_h, s_w): (usize, usize),
        (p_h, p_w): (usize, usize),
        ceil: bool,
    ) -> Vec<(&'static str, Attr)> {
        if global {
            return vec![];
        }
        vec![
            ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
            ("strides", Attr::Ints(vec![s_h as i64, s_w as i64])),
            (
                "pads",
                Attr::Ints(vec![p_h as i64, p_w as i64, p_h as i64, p_w as i64]),
            ),
            ("ceil_mode", Attr::Int(ceil as i64)),
        ]
    }

    fn unpool(a: Vec<(&str, Attr)>) -> Result<Box<dyn Op>, OpError> {
        let attrs = Attrs(a.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        build_max_unpool(&NodeInfo {
            name: "u",
            op_type: "MaxUnpool",
            domain: "",
            opset: 11,
            attrs: &attrs,
            num_inputs: 3,
            num_outputs: 1,
        })
    }

    fn unpool_2x2() -> Box<dyn Op> {
        unpool(vec![
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
        ])
        .unwrap()
    }

    fn run_unpool(op: &dyn Op, idx: Vec<i64>, out: Option<Vec<i64>>) -> Result<Tensor, OpError> {
        let x = Tensor::from_vec(vec![1, 1, 1, 2], vec![1.0f32, 2.0]).unwrap();
        let i = Tensor::from_vec(vec![1, 1, 1, 2], idx).unwrap();
        let o = out.map(|o| Tensor::from_vec(vec![o.len()], o).unwrap());
        Ok(op
            .run(&[Some(&x), Some(&i), o.as_ref()], &Ctx::default())?
            .remove(0))
    }

    #[test]
    fn max_unpool_scatters_to_the_indices() {
        // [1, 1, 1, 2] with a 2×2 stride-2 kernel unpools to [1, 1, 2, 4].
        let y = run_unpool(&*unpool_2x2(), vec![5, 2], None).unwrap();
        assert_eq!(y.shape(), [1, 1, 2, 4]);
        let want = [0.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(y.as_slice::<f32>().unwrap(), want);
        // Duplicate indices: the later element of X wins.
        let y = run_unpool(&*unpool_2x2(), vec![3, 3], None).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap()[3], 2.0);
    }

    #[test]
    fn max_unpool_output_shape_pads_at_the_end() {
        // Index 5 is (1, 1) of the implied 2×4 plane, and stays (1, 1) in a 3×5 one.
        let op = unpool_2x2();
        let y = run_unpool(&*op, vec![5, 0], Some(vec![1, 1, 3, 5])).unwrap();
        assert_eq!(y.shape(), [1, 1, 3, 5]);
        let v = y.as_slice::<f32>().unwrap();
        assert_eq!((v[0], v[6]), (2.0, 1.0));
        assert_eq!(v.iter().filter(|&&e| e != 0.0).count(), 2);
        // Planning reads output_shape's value.
        let (xt, it, ot) = (
            TypeInfo::new(DType::F32, vec![1, 1, 1, 2]),
            TypeInfo::new(DType::I64, vec![1, 1, 1, 2]),
            TypeInfo::new(DType::I64, vec![4]),
        );
        let os = Tensor::from_vec(vec![4], vec![1i64, 1, 3, 5]).unwrap();
        let inp = |ty, value| Some(InferInput { ty, value });
        let t = op
            .infer(&[inp(&xt, None), inp(&it, None), inp(&ot, Some(&os))])
            .unwrap();
        assert_eq!(t[0].shape, [1, 1, 3, 5]);
        let err = op
            .infer(&[inp(&xt, None), inp(&it, None), inp(&ot, None)])
            .unwrap_err();
        assert!(matches!(err, OpError::ValueNeeded { index: 2 }), "{err}");
    }

    #[test]
    fn max_unpool_refusals() {
        let op = unpool_2x2();
        for bad in [8, -1] {
            let err = run_unpool(&*op, vec![0, bad], None).unwrap_err();
            assert!(err.to_string().contains("outside [0, 8)"), "{err}");
        }
        let err = run_unpool(&*op, vec![0, 1], Some(vec![1, 1, 1, 4])).unwrap_err();
        assert!(err.to_string().contains("implied shape"), "{err}");
        let err = run_unpool(&*op, vec![0, 1], Some(vec![1, 1, 4])).unwrap_err();
        assert!(matches!(err, OpError::Shape { .. }), "{err}");
        let err = unpool(vec![]).unwrap_err();
        assert!(matches!(err, OpError::MissingAttribute { .. }), "{err}");
        let err = unpool(vec![
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1])),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("pads"), "{err}");
        // Pads larger than the window leave no output.
        let op = unpool(vec![
            ("kernel_shape", Attr::Ints(vec![1, 1])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ])
        .unwrap();
        let err = run_unpool(&*op, vec![0, 1], None).unwrap_err();
        assert!(err.to_string().contains("no output size"), "{err}");
        // Integer values are refused.
        let x = TypeInfo::new(DType::I32, vec![1, 1, 1, 2]);
        let i = TypeInfo::new(DType::I64, vec![1, 1, 1, 2]);
        let err = unpool_2x2()
            .infer(&[
                Some(InferInput {
                    ty: &x,
                    value: None,
                }),
                Some(InferInput {
                    ty: &i,
                    value: None,
                }),
            ])
            .unwrap_err();
        assert!(matches!(err, OpError::DType { index: 0, .. }), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn threads_agree_with_reference(
            kind in prop::sample::select(vec!["MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"]),
            (c, h, wd, k, s, pad) in (1usize..4, 1usize..9, 1usize..9, 1usize..4, 1usize..3, 0usize..2),
            (s_w, pad_w) in (1usize..4, 0usize..3),
            ceil in any::<bool>(), seed in any::<u64>(), threads in 1usize..=4,
            finite_only in any::<bool>(),
        ) {
            let mut st = seed | 1;
            // Half the cases without NaNs and infinities, which would make nearly every
            // global pool's result NaN (or −∞) whatever the other values were.
            let mut val = || loop {
                st ^= st << 13; st ^= st >> 7; st ^= st << 17;
                let v = match st % 13 { 0 => f32::NAN, 1 => -0.0, 2 => f32::NEG_INFINITY, 3 => 1e-41, _ => (st >> 40) as f32 / 1e6 - 8.0 };
                if !finite_only || v.is_finite() { break v; }
            };
            let pad = pad.min(k - 1);
            let pad_w = pad_w.min(k - 1);
            let global = kind.starts_with("Global");
            // Lp pools of order 1 to 4.
            let attrs = |mut a: Vec<(&'static str, Attr)>| {
                if kind.ends_with("LpPool") {
                    a.push(("p", Attr::Int(1 + (seed % 4) as i64)));
                }
                a
            };
            let p = op(kind, attrs(window_attrs(global, k, (s, s_w), (pad, pad_w), ceil)), 2);
            let x = Tensor::from_vec(vec![2, c, h, wd], (0..2 * c * h * wd).map(|_| val()).collect()).unwrap();
            let Ok(r) = p.run(&[Some(&x)], &Ctx::new(KernelMode::Reference, 1)) else { return Ok(()) };
            let f = p.run(&[Some(&x)], &Ctx::new(KernelMode::Fast, threads)).unwrap();
            prop_assert_eq!(r.len(), f.len());
            for (a, b) in r.iter().zip(&f) { prop_assert_eq!(a.encode(), b.encode()); }
            // Values only: MaxPool's fast path.
            let p1 = op(kind, attrs(window_attrs(global, k, (s, s_w), (pad, pad_w), ceil)), 1);
            let f1 = p1.run(&[Some(&x)], &Ctx::new(KernelMode::Fast, threads)).unwrap();
            prop_assert_eq!(r[0].encode(), f1[0].encode());
        }

        /// Windows of every rank (1-D to 3-D), with strides, dilations, uneven pads and
        /// ceil mode: the fast forms (dense windows, windows padded into a copy of the
        /// plane, whole-plane pools) give the reference walk's bits, indices included.
        #[test]
        fn windows_of_every_rank_agree_with_reference(
            kind in prop::sample::select(vec!["MaxPool", "AveragePool", "LpPool"]),
            dims in prop::collection::vec((1usize..7, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 0usize..3), 1..=3),
            (ceil, include_pad) in (any::<bool>(), any::<bool>()),
            seed in any::<u64>(), threads in 1usize..=4, finite_only in any::<bool>(),
        ) {
            let mut st = seed | 1;
            let mut val = || loop {
                st ^= st << 13; st ^= st >> 7; st ^= st << 17;
                let v = match st % 13 { 0 => f32::NAN, 1 => -0.0, 2 => f32::NEG_INFINITY, 3 => 1e-41, _ => (st >> 40) as f32 / 1e6 - 8.0 };
                if !finite_only || v.is_finite() { break v; }
            };
            let ints = |f: &dyn Fn(&Dim) -> usize| {
                Attr::Ints(dims.iter().map(|d| f(d) as i64).collect())
            };
            // Pads below the kernel's extent, as ONNX requires.
            let pad = |p: usize, d: &Dim| p.min(d.1 - 1);
            let mut pads: Vec<i64> = dims.iter().map(|d| pad(d.4, d) as i64).collect();
            pads.extend(dims.iter().map(|d| pad(d.5, d) as i64));
            let mut a = vec![
                ("kernel_shape", ints(&|d| d.1)),
                ("strides", ints(&|d| d.2)),
                ("dilations", ints(&|d| d.3)),
                ("pads", Attr::Ints(pads)),
                ("ceil_mode", Attr::Int(ceil as i64)),
            ];
            match kind {
                "AveragePool" => a.push(("count_include_pad", Attr::Int(include_pad as i64))),
                "LpPool" => a.push(("p", Attr::Int(1 + (seed % 3) as i64))),
                _ => {}
            }
            let outputs = if kind == "MaxPool" { 2 } else { 1 };
            let p = op(kind, a, outputs);
            let mut shape = vec![2, 2];
            shape.extend(dims.iter().map(|d| d.0));
            let n: usize = shape.iter().product();
            let x = Tensor::from_vec(shape, (0..n).map(|_| val()).collect()).unwrap();
            let Ok(r) = p.run(&[Some(&x)], &Ctx::new(KernelMode::Reference, 1)) else { return Ok(()) };
            let f = p.run(&[Some(&x)], &Ctx::new(KernelMode::Fast, threads)).unwrap();
            prop_assert_eq!(r.len(), f.len());
            for (a, b) in r.iter().zip(&f) { prop_assert_eq!(a.encode(), b.encode()); }
        }

        /// The 2×2 stride-2 plane kernel (ResNet's pooling) through the operator, on
        /// planes wide enough for whole and partial 16-lane blocks.
        #[test]
        fn max_pool_2x2_stride2_agrees_with_reference(
            (c, h, wd) in (1usize..4, 2usize..12, 2usize..70),
            seed in any::<u64>(), threads in 1usize..=4,
        ) {
            let mut st = seed | 1;
            let mut val = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; match st % 13 { 0 => f32::NAN, 1 => -0.0, 2 => f32::NEG_INFINITY, 3 => 1e-41, 4 => 0.0, _ => (st >> 40) as f32 / 1e6 - 8.0 } };
            let x = Tensor::from_vec(vec![1, c, h, wd], (0..c * h * wd).map(|_| val()).collect()).unwrap();
            let p = op("MaxPool", window_attrs(false, 2, (2, 2), (0, 0), false), 1);
            let r = p.run(&[Some(&x)], &Ctx::new(KernelMode::Reference, 1)).unwrap();
            let f = p.run(&[Some(&x)], &Ctx::new(KernelMode::Fast, threads)).unwrap();
            prop_assert_eq!(r[0].encode(), f[0].encode());
        }
    }

    #[test]
    fn output_sizes_follow_onnx_when_the_window_overhangs() {
        let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32, 4.0, 3.0, 2.0]).unwrap();
        let pool = |kind: &str, attrs: Vec<(&str, Attr)>| {
            let p = op(kind, attrs, 1);
            let modes = [
                Ctx::new(KernelMode::Fast, 2),
                Ctx::new(KernelMode::Reference, 1),
            ];
            let ys: Vec<Tensor> = modes
                .iter()
                .map(|c| p.run(&[Some(&x)], c).unwrap().remove(0))
                .collect();
            assert_eq!(ys[0], ys[1]);
            ys[0].clone()
        };
        // A 3×3 window, stride 2, over a 2×2 input: ceil((2 − 3) / 2 + 1) = 1 output in
        // ceil mode (the window pools what it covers), floor(…) = 0 otherwise.
        let k3s2 = |ceil| {
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("ceil_mode", Attr::Int(ceil)),
            ]
        };
        let y = pool("MaxPool", k3s2(1));
        assert_eq!(
            (y.shape(), y.as_slice::<f32>().unwrap()),
            (&[1, 1, 1, 1][..], &[4.0][..])
        );
        let y = pool("AveragePool", k3s2(1));
        assert_eq!(y.as_slice::<f32>().unwrap(), &[2.5]);
        assert_eq!(pool("MaxPool", k3s2(0)).shape(), &[1, 1, 0, 0]);
        // VALID sizes ignore ceil_mode: ceil((in − extent + 1) / stride).
        let x5 = Tensor::from_vec(vec![1, 1, 5], vec![1.0f32, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let p = op(
            "MaxPool",
            vec![
                ("kernel_shape", Attr::Ints(vec![2])),
                ("strides", Attr::Ints(vec![2])),
                ("auto_pad", Attr::String(b"VALID".to_vec())),
                ("ceil_mode", Attr::Int(1)),
            ],
            1,
        );
        let y = p.run(&[Some(&x5)], &Ctx::default()).unwrap().remove(0);
        assert_eq!(
            (y.shape(), y.as_slice::<f32>().unwrap()),
            (&[1, 1, 2][..], &[2.0, 4.0][..])
        );
    }
}
