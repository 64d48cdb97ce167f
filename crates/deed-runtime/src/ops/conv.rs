//! Convolutions: `Conv` and `ConvTranspose`, plus the sliding-window geometry shared
//! with pooling.
//!
//! `Conv` is defined on the input zero-padded with `+0.0`: each output element is
//! `acc = +0.0; for c in group channels, for each kernel offset (row-major):
//! acc = fma(w, x̃, acc)`, then `y = acc + bias` (one rounded add), NaN canonical.
//! The fast path lowers it to the canonical matrix product: im2col with rows ordered
//! (c, kd, kh, kw) gives exactly that order. `ConvTranspose` uses the gather form
//! (each output element sums its contributing (c, kernel offset) terms in increasing
//! order), never a scatter, which would reorder the sums.

use deed_types::{DType, Tensor};

use super::linalg::{by_dtype, product};
use super::util::{check_count, infer_input, input, numel, one, opt_infer_input, opt_input};
use super::{Ctx, InferInput, NodeInfo, Op, Prepared, Registry, TypeInfo};
use crate::attrs::Attrs;
use crate::error::OpError;
use crate::kernels::{gemm, Mat, PackedB, RowsB, Scalar};
use crate::scratch::Scratch;

pub(crate) fn register(r: &mut Registry) {
    r.add("Conv", build_conv);
    r.add("ConvTranspose", build_conv_transpose);
}

const FLOATS: &[DType] = &[DType::F32, DType::F64, DType::F16, DType::BF16];

/// How padding is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Window attributes as written on the node (before the input shape is known).
#[derive(Debug, Clone)]
pub(crate) struct WindowAttrs {
    pub auto_pad: AutoPad,
    pub kernel: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    pub pads: Option<Vec<usize>>,
    pub ceil_mode: bool,
}

fn positive(
    name: &str,
    v: Option<Vec<i64>>,
    allow_zero: bool,
) -> Result<Option<Vec<usize>>, OpError> {
    v.map(|v| {
        v.into_iter()
            .map(|x| {
                if x < 0 || (x == 0 && !allow_zero) || x > (1 << 31) {
                    Err(OpError::bad_attr(
                        name,
                        format!("value {x} is out of range"),
                    ))
                } else {
                    Ok(x as usize)
                }
            })
            .collect()
    })
    .transpose()
}

impl WindowAttrs {
    pub(crate) fn parse(a: &Attrs) -> Result<WindowAttrs, OpError> {
        let auto_pad = match a.string("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => {
                return Err(OpError::bad_attr(
                    "auto_pad",
                    format!("unknown value {other:?}"),
                ))
            }
        };
        Ok(WindowAttrs {
            auto_pad,
            kernel: positive("kernel_shape", a.ints("kernel_shape")?, false)?,
            strides: positive("strides", a.ints("strides")?, false)?,
            dilations: positive("dilations", a.ints("dilations")?, false)?,
            pads: positive("pads", a.ints("pads")?, true)?,
            ceil_mode: a.int("ceil_mode", 0)? != 0,
        })
    }

    /// Resolves the geometry for `input` spatial dims and `kernel` (from the weight
    /// when the attribute is absent). A window larger than the (padded) input is an
    /// error: see [`WindowAttrs::resolve_pool`] for the pools' rule.
    pub(crate) fn resolve(&self, input: &[usize], kernel: &[usize]) -> Result<Window, OpError> {
        self.resolve_with(input, kernel, false)
    }

    /// [`WindowAttrs::resolve`] for a pool, whose output size follows ONNX's formulas
    /// also when the window is larger than the (padded) input: `floor((total − extent)
    /// / stride + 1)` outputs, none, or in `ceil_mode` `ceil(…)`, one when the window
    /// overhangs the end by less than a stride (it then pools what it covers).
    pub(crate) fn resolve_pool(
        &self,
        input: &[usize],
        kernel: &[usize],
    ) -> Result<Window, OpError> {
        self.resolve_with(input, kernel, true)
    }

    fn resolve_with(
        &self,
        input: &[usize],
        kernel: &[usize],
        pool: bool,
    ) -> Result<Window, OpError> {
        let r = input.len();
        if r == 0 || r > 3 {
            return Err(OpError::unsupported(format!(
                "{r}-D sliding windows (1-D to 3-D are supported)"
            )));
        }
        let kernel = self.kernel.clone().unwrap_or_else(|| kernel.to_vec());
        let strides = self.strides.clone().unwrap_or_else(|| vec![1; r]);
        let dil = self.dilations.clone().unwrap_or_else(|| vec![1; r]);
        let pads = self.pads.clone().unwrap_or_else(|| vec![0; 2 * r]);
        if kernel.len() != r || strides.len() != r || dil.len() != r || pads.len() != 2 * r {
            return Err(OpError::shape(format!(
                "window attributes do not match {r} spatial dimensions (kernel {kernel:?}, strides {strides:?}, dilations {dil:?}, pads {pads:?})"
            )));
        }
        let mut w = Window {
            rank: r,
            input: [1; 3],
            kernel: [1; 3],
            stride: [1; 3],
            dil: [1; 3],
            pad_begin: [0; 3],
            pad_end: [0; 3],
            output: [1; 3],
        };
        for i in 0..r {
            let d = 3 - r + i;
            let (inp, k, s, dl) = (input[i], kernel[i], strides[i], dil[i]);
            if k == 0 {
                return Err(OpError::shape("window has a zero dimension"));
            }
            let dk = dl
                .checked_mul(k - 1)
                .and_then(|x| x.checked_add(1))
                .ok_or_else(|| OpError::shape("window too large"))?;
            let (pb, pe, out) = match self.auto_pad {
                AutoPad::NotSet => {
                    let (pb, pe) = (pads[i], pads[r + i]);
                    let total = inp + pb + pe;
                    if total < dk {
                        if !pool {
                            return Err(OpError::shape(format!(
                                "window of extent {dk} does not fit padded input of {total}"
                            )));
                        }
                        let out = usize::from(self.ceil_mode && dk - total < s);
                        w.set(d, inp, k, s, dl, (pb, pe, out));
                        continue;
                    }
                    let mut out = if self.ceil_mode {
                        (total - dk).div_ceil(s) + 1
                    } else {
                        (total - dk) / s + 1
                    };
                    // A window may not start in the end padding.
                    if self.ceil_mode && out > 1 && (out - 1) * s >= inp + pb {
                        out -= 1;
                    }
                    (pb, pe, out)
                }
                AutoPad::Valid => {
                    // `ceil((in − extent + 1) / stride)` whatever `ceil_mode` says.
                    if inp < dk {
                        if !pool {
                            return Err(OpError::shape(format!(
                                "window of extent {dk} does not fit input of {inp}"
                            )));
                        }
                        (0, 0, 0)
                    } else {
                        (0, 0, (inp - dk) / s + 1)
                    }
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = inp.div_ceil(s);
                    let total = ((out.max(1) - 1) * s + dk).saturating_sub(inp);
                    let small = total / 2;
                    if self.auto_pad == AutoPad::SameUpper {
                        (small, total - small, out)
                    } else {
                        (total - small, small, out)
                    }
                }
            };
            w.set(d, inp, k, s, dl, (pb, pe, out));
        }
        Ok(w)
    }
}

/// Sliding-window geometry with the spatial dims embedded in 3-D (leading dims 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub rank: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dil: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
    pub output: [usize; 3],
}

impl Window {
    /// Sets embedded dimension `d`: input, kernel, stride and dilation, then the
    /// padding at each end and the output size.
    fn set(
        &mut self,
        d: usize,
        inp: usize,
        k: usize,
        s: usize,
        dl: usize,
        (pb, pe, out): (usize, usize, usize),
    ) {
        self.input[d] = inp;
        self.kernel[d] = k;
        self.stride[d] = s;
        self.dil[d] = dl;
        self.pad_begin[d] = pb;
        self.pad_end[d] = pe;
        self.output[d] = out;
    }
}

impl Window {
    pub(crate) fn in_vol(&self) -> usize {
        self.input.iter().product()
    }
    pub(crate) fn out_vol(&self) -> usize {
        self.output.iter().product()
    }
    pub(crate) fn k_vol(&self) -> usize {
        self.kernel.iter().product()
    }
    /// The output's spatial dims (without the embedding).
    pub(crate) fn out_dims(&self) -> Vec<usize> {
        self.output[3 - self.rank..].to_vec()
    }
    /// Input coordinate along dim `d` of output `o` and kernel offset `k`, if inside
    /// the (unpadded) input.
    #[inline(always)]
    pub(crate) fn src(&self, d: usize, o: usize, k: usize) -> Option<usize> {
        let p = (o * self.stride[d] + k * self.dil[d]).checked_sub(self.pad_begin[d])?;
        (p < self.input[d]).then_some(p)
    }
}

/// Fills `col` (K × P, K ordered (c, kd, kh, kw), P the output positions row-major)
/// from `x` (channels × input volume), zero where the window reads padding. `col` is
/// built by appending, row after row, so that it is never zeroed first.
fn im2col<T: Scalar>(x: &[T], channels: usize, w: &Window, col: &mut Vec<T>) {
    col.clear();
    let iv = w.in_vol();
    let [_, ih, iw] = w.input;
    let [od, oh, ow] = w.output;
    let [kd, kh, kw] = w.kernel;
    let sw_stride = w.stride[2];
    // For each kernel column, the output columns whose input column is in bounds
    // (a contiguous range: the input column grows with the output column).
    let cols: Vec<(usize, usize)> = (0..kw)
        .map(|e| {
            let inside: Vec<usize> = (0..ow).filter(|&zw| w.src(2, zw, e).is_some()).collect();
            match (inside.first(), inside.last()) {
                (Some(&a), Some(&b)) => (a, b + 1),
                _ => (0, 0),
            }
        })
        .collect();
    let zeros = |col: &mut Vec<T>, n: usize| col.extend(std::iter::repeat_n(T::ZERO, n));
    for c in 0..channels {
        let xc = &x[c * iv..(c + 1) * iv];
        for a in 0..kd {
            for b in 0..kh {
                for (e, &(lo, hi)) in cols.iter().enumerate() {
                    for zd in 0..od {
                        let sd = w.src(0, zd, a);
                        for zh in 0..oh {
                            let (Some(sd), Some(sh)) = (sd, w.src(1, zh, b)) else {
                                zeros(col, ow);
                                continue;
                            };
                            let line = &xc[(sd * ih + sh) * iw..(sd * ih + sh + 1) * iw];
                            // Output columns reading inside the line: `lo..hi`.
                            zeros(col, lo);
                            if hi > lo {
                                let s0 = lo * sw_stride + e * w.dil[2] - w.pad_begin[2];
                                if sw_stride == 1 {
                                    col.extend_from_slice(&line[s0..s0 + (hi - lo)]);
                                } else {
                                    col.extend(line[s0..].iter().step_by(sw_stride).take(hi - lo));
                                }
                            }
                            zeros(col, ow - hi);
                        }
                    }
                }
            }
        }
    }
}

/// A stride-1 2-D convolution as a product whose B rows are read in place from the
/// zero-padded input: row `(c, kh, kw)` of B starts at `c·Hp·Wp + kh·dh·Wp + kw·dw`
/// and its column `j` is output position `(j / Wp, j % Wp)` of a virtual output as wide
/// as the padded input. Columns past the real output width are computed and dropped;
/// every real output is the canonical dot product over the same terms in the same
/// order as im2col would give it.
struct Implicit {
    padded: Padded,
    output: [usize; 2],
    /// Row offsets of B, in the canonical (c, kh, kw) order.
    offs: Vec<usize>,
    /// Columns of B: the virtual output positions up to the last real one.
    n: usize,
}

/// The zero-padded input plane of a 2-D window (`pad`: channels × hp × wp), which
/// every patch row reads inside of.
struct Padded {
    hp: usize,
    wp: usize,
    pad_top: usize,
    pad_left: usize,
    input: [usize; 2],
}

impl Padded {
    /// `None` unless the window is 2-D (embedded as depth 1): its one output depth
    /// reads the one input depth. (Padded in front along the depth, it reads padding
    /// instead, and every output is the bias.)
    fn new(w: &Window) -> Option<Padded> {
        let [d_in, ih, iw] = w.input;
        if d_in != 1 || w.output[0] != 1 || w.kernel[0] != 1 || w.src(0, 0, 0) != Some(0) {
            return None;
        }
        Some(Padded {
            hp: ih + w.pad_begin[1] + w.pad_end[1],
            wp: iw + w.pad_begin[2] + w.pad_end[2],
            pad_top: w.pad_begin[1],
            pad_left: w.pad_begin[2],
            input: [ih, iw],
        })
    }

    /// Offset in the padded input of patch row `(c, kh, kw)`'s first value (output
    /// position (0, 0)), for every row in the canonical (c, kh, kw) order.
    fn row_offsets(&self, w: &Window, channels: usize) -> Vec<usize> {
        let (kh, kw) = (w.kernel[1], w.kernel[2]);
        let (dh, dw) = (w.dil[1], w.dil[2]);
        let mut offs = Vec::with_capacity(channels * kh * kw);
        for c in 0..channels {
            for a in 0..kh {
                for e in 0..kw {
                    offs.push(c * self.hp * self.wp + a * dh * self.wp + e * dw);
                }
            }
        }
        offs
    }

    /// Elements of the padded input of `channels` channels.
    fn len(&self, channels: usize) -> usize {
        channels * self.hp * self.wp
    }

    /// `x` (channels × ih × iw) zero-padded into `xp` (channels × hp × wp, all of it
    /// written); false if the lengths disagree.
    fn pad<T: Scalar>(&self, x: &[T], xp: &mut [T]) -> bool {
        let [ih, iw] = self.input;
        let (plane_in, plane_out) = (ih * iw, self.hp * self.wp);
        if plane_in == 0
            || !x.len().is_multiple_of(plane_in)
            || xp.len() != x.len() / plane_in * plane_out
        {
            return false;
        }
        // One fill, then the lines: a CNN's late layers have lines of a few values,
        // where a fill and a copy call per line would cost more than the values.
        xp.fill(T::ZERO);
        macro_rules! widths {
            ($($w:literal)*) => {
                match iw {
                    $($w => self.lines::<T, $w>(x, xp),)*
                    _ => self.lines_any(x, xp),
                }
            };
        }
        widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        true
    }

    /// The input lines of [`Padded::pad`], `W` values each.
    fn lines<T: Scalar, const W: usize>(&self, x: &[T], xp: &mut [T]) {
        let (plane_in, plane_out) = (self.input[0] * W, self.hp * self.wp);
        let first = self.pad_top * self.wp + self.pad_left;
        for (src, dst) in x.chunks_exact(plane_in).zip(xp.chunks_exact_mut(plane_out)) {
            for (zh, line) in src.chunks_exact(W).enumerate() {
                let at = first + zh * self.wp;
                if let (Some(Ok(d)), Ok(l)) = (
                    dst.get_mut(at..at + W).map(<&mut [T; W]>::try_from),
                    <&[T; W]>::try_from(line),
                ) {
                    *d = *l;
                }
            }
        }
    }

    /// [`Padded::lines`] for any width.
    fn lines_any<T: Scalar>(&self, x: &[T], xp: &mut [T]) {
        let [ih, iw] = self.input;
        let first = self.pad_top * self.wp + self.pad_left;
        for (src, dst) in x
            .chunks_exact(ih * iw)
            .zip(xp.chunks_exact_mut(self.hp * self.wp))
        {
            for (zh, line) in src.chunks_exact(iw).enumerate() {
                let at = first + zh * self.wp;
                if let Some(d) = dst.get_mut(at..at + iw) {
                    d.copy_from_slice(line);
                }
            }
        }
    }
}

/// Largest share of extra column panels (the virtual columns against the real
/// positions) at which the in-place product still beats copying the patches out.
const IMPLICIT_MAX_WASTE: f64 = 0.35;

impl Implicit {
    fn new(w: &Window, channels: usize) -> Option<Implicit> {
        let padded = Padded::new(w)?;
        let [_, oh, ow] = w.output;
        let (kh, kw) = (w.kernel[1], w.kernel[2]);
        if w.stride != [1; 3] || oh == 0 || ow == 0 {
            return None;
        }
        let (hp, wp) = (padded.hp, padded.wp);
        let (dh, dw) = (w.dil[1], w.dil[2]);
        // The output must be exactly what the padded input gives at stride 1.
        if hp.checked_sub((kh - 1) * dh) != Some(oh) || wp.checked_sub((kw - 1) * dw) != Some(ow) {
            return None;
        }
        let n = (oh - 1) * wp + ow;
        // The kernel computes whole 32-wide panels of columns: compare those.
        let panels = |cols: usize| cols.div_ceil(32) as f64;
        if panels(n) > panels(oh * ow) * (1.0 + IMPLICIT_MAX_WASTE) {
            return None;
        }
        Some(Implicit {
            offs: padded.row_offsets(w, channels),
            padded,
            output: [oh, ow],
            n,
        })
    }

    /// The real outputs of `cv` (`mg` rows of `n` virtual positions) into `dst`
    /// (`mg` planes), with the bias (one rounded add, NaN canonical).
    fn compact<T: Scalar + std::ops::Add<Output = T>>(
        &self,
        ctx: &Ctx,
        cv: &[T],
        mg: usize,
        bias: Option<&[T]>,
        dst: &mut [T],
    ) {
        let [oh, ow] = self.output;
        let plane_len = (oh * ow).max(1);
        // Whole planes per thread.
        let per = mg.div_ceil(ctx.threads()).max(1);
        ctx.for_each_chunk(dst, per * plane_len, |ci, planes| {
            for (i, plane) in planes.chunks_mut(plane_len).enumerate() {
                let oc = ci * per + i;
                let row = cv.get(oc * self.n..(oc + 1) * self.n).unwrap_or(&[]);
                self.compact_plane(row, bias.and_then(|b| b.get(oc)).copied(), plane);
            }
        });
    }

    /// One output channel's plane of [`Implicit::compact`] (zero where `row` is short,
    /// which a well-formed call never is).
    fn compact_plane<T: Scalar + std::ops::Add<Output = T>>(
        &self,
        row: &[T],
        bias: Option<T>,
        plane: &mut [T],
    ) {
        let ow = self.output[1].max(1);
        for (zh, out) in plane.chunks_mut(ow).enumerate() {
            let Some(src) = row.get(zh * self.padded.wp..zh * self.padded.wp + out.len()) else {
                out.fill(T::ZERO);
                continue;
            };
            match bias {
                Some(bv) => {
                    for (o, &v) in out.iter_mut().zip(src) {
                        *o = (v + bv).canon();
                    }
                }
                // Lines are short (a few to a few dozen values): sixteen at a time as
                // register moves, not a copy call per line.
                None => {
                    let mut outs = out.chunks_exact_mut(16);
                    let mut srcs = src.chunks_exact(16);
                    for (o, v) in (&mut outs).zip(&mut srcs) {
                        for (o, &v) in o.iter_mut().zip(v) {
                            *o = v;
                        }
                    }
                    for (o, &v) in outs.into_remainder().iter_mut().zip(srcs.remainder()) {
                        *o = v;
                    }
                }
            }
        }
    }
}

/// im2col for a 2-D window with short output rows (fewer than [`GATHER_MAX_ROW`]
/// positions) and stride 1 along the width: the input is zero-padded once, then each
/// output line of a patch row is one copy of a fixed width from it, a few vector moves
/// where a gather would read an index and the input for every value.
struct ShortRows {
    padded: Padded,
    /// Patch rows' first values in the padded input, in the canonical (c, kh, kw) order.
    offs: Vec<usize>,
    /// Distance in the padded input between consecutive output lines (stride · wp).
    line_step: usize,
    oh: usize,
    ow: usize,
}

impl ShortRows {
    fn new(w: &Window, channels: usize) -> Option<ShortRows> {
        let padded = Padded::new(w)?;
        let [_, oh, ow] = w.output;
        if w.stride[2] != 1 || !(1..GATHER_MAX_ROW).contains(&ow) {
            return None;
        }
        Some(ShortRows {
            offs: padded.row_offsets(w, channels),
            line_step: w.stride[1] * padded.wp,
            padded,
            oh,
            ow,
        })
    }

    /// Elements of the patch matrix (K × P).
    fn col_len(&self) -> usize {
        self.offs.len() * self.oh * self.ow
    }

    /// Fills `col` (K × P, [`ShortRows::col_len`] long, all of it written) from the
    /// padded input `xp`; false (and `col` unspecified) if `xp` is shorter than the
    /// window reads. A large patch matrix is filled by the context's threads, each a
    /// run of whole rows (copies only: the values do not depend on the split).
    fn fill<T: Scalar>(&self, ctx: &Ctx, xp: &[T], col: &mut [T]) -> bool {
        if col.len() != self.col_len() {
            return false;
        }
        let row = self.oh * self.ow;
        if ctx.threads() < 2 || col.len() < PAR_FILL || row == 0 {
            return self.fill_rows(&self.offs, xp, col);
        }
        let rows = self.offs.len().div_ceil(ctx.threads());
        let ok = std::sync::atomic::AtomicBool::new(true);
        ctx.for_each_chunk(col, rows * row, |i, piece| {
            let offs = self.offs.get(i * rows..).unwrap_or(&[]);
            let offs = offs.get(..piece.len() / row).unwrap_or(offs);
            if !self.fill_rows(offs, xp, piece) {
                ok.store(false, std::sync::atomic::Ordering::Relaxed);
            }
        });
        ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`ShortRows::fill`] of the patch rows starting at `offs` into `col` (one row of
    /// `oh · ow` values per offset).
    fn fill_rows<T: Scalar>(&self, offs: &[usize], xp: &[T], col: &mut [T]) -> bool {
        macro_rules! widths {
            ($($w:literal)*) => {
                match self.ow {
                    $($w => self.fill_w::<T, $w>(offs, xp, col),)*
                    _ => false,
                }
            };
        }
        widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    }

    fn fill_w<T: Scalar, const W: usize>(&self, offs: &[usize], xp: &[T], col: &mut [T]) -> bool {
        let (oh, step) = (self.oh, self.line_step);
        if col.len() != offs.len() * oh * W {
            return false;
        }
        for (&off, rows) in offs.iter().zip(col.chunks_exact_mut(oh * W)) {
            let Some(src) = xp.get(off..off + (oh - 1) * step + W) else {
                return false;
            };
            for (zh, dst) in rows.chunks_exact_mut(W).enumerate() {
                let (Ok(dst), Some(Ok(line))) = (
                    <&mut [T; W]>::try_from(dst),
                    src.get(zh * step..zh * step + W).map(<&[T; W]>::try_from),
                ) else {
                    return false;
                };
                *dst = *line;
            }
        }
        true
    }
}

/// Patch matrices from this many values up are filled by several threads
/// ([`ShortRows::fill`]): below, waking the pool costs about what the split saves.
const PAR_FILL: usize = 8 << 10;

/// Below this output row length im2col gathers through an index table: the row-by-row
/// copies of [`im2col`] would cost more in bookkeeping than in moving values. Up to
/// [`GATHER_MAX_POSITIONS`] output positions, which bounds the table.
const GATHER_MAX_ROW: usize = 16;
/// See [`GATHER_MAX_ROW`].
const GATHER_MAX_POSITIONS: usize = 4096;

/// For kernel offset `j` (row-major over kd, kh, kw) and output position `q`, entry
/// `j·P + q` is the index within an input channel's plane that im2col reads, or
/// `u32::MAX` where the window reads padding. The same for every channel.
fn gather_table(w: &Window) -> Vec<u32> {
    let [_, ih, iw] = w.input;
    let [od, oh, ow] = w.output;
    let [kd, kh, kw] = w.kernel;
    let mut idx = Vec::with_capacity(w.k_vol() * w.out_vol());
    for a in 0..kd {
        for b in 0..kh {
            for e in 0..kw {
                for zd in 0..od {
                    let sd = w.src(0, zd, a);
                    for zh in 0..oh {
                        let sh = w.src(1, zh, b);
                        for zw in 0..ow {
                            let at = match (sd, sh, w.src(2, zw, e)) {
                                (Some(d), Some(h), Some(x)) => {
                                    u32::try_from((d * ih + h) * iw + x).ok()
                                }
                                _ => None,
                            };
                            idx.push(at.unwrap_or(u32::MAX));
                        }
                    }
                }
            }
        }
    }
    idx
}

/// [`im2col`] through a [`gather_table`]: each channel's rows are its plane gathered
/// through the table, `+0.0` (zero) where it marks padding.
fn im2col_gather<T: Scalar>(x: &[T], iv: usize, channels: usize, idx: &[u32], col: &mut Vec<T>) {
    col.clear();
    for plane in x.chunks(iv.max(1)).take(channels) {
        T::gather(plane, idx, col);
    }
}

/// Shared shape facts of a convolution node.
#[derive(Debug, Clone)]
struct ConvShape {
    n: usize,
    c: usize,
    m: usize,
    win: Window,
    out: Vec<usize>,
}

/// `Conv`.
#[derive(Debug)]
pub struct Conv {
    win: WindowAttrs,
    group: usize,
}

impl Conv {
    /// A `Conv` with default attributes (unit strides and dilations, no padding, the
    /// kernel from the weight) in `group` groups: with one group per channel, the
    /// depthwise convolution of `CausalConvWithState`.
    pub(crate) fn grouped(group: usize) -> Conv {
        Conv {
            win: WindowAttrs {
                auto_pad: AutoPad::NotSet,
                kernel: None,
                strides: None,
                dilations: None,
                pads: None,
                ceil_mode: false,
            },
            group: group.max(1),
        }
    }
}

fn build_conv(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let group = n.attrs.int("group", 1)?;
    if group < 1 {
        return Err(OpError::bad_attr("group", "must be at least 1"));
    }
    Ok(Box::new(Conv {
        win: WindowAttrs::parse(n.attrs)?,
        group: group as usize,
    }))
}

impl Conv {
    fn shape(&self, x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<ConvShape, OpError> {
        if x.len() < 3 || w.len() != x.len() {
            return Err(OpError::shape(format!(
                "Conv needs X [N, C, spatial…] and W of the same rank, got {x:?} and {w:?}"
            )));
        }
        let (n, c, m) = (x[0], x[1], w[0]);
        let g = self.group;
        if c % g != 0 || m % g != 0 || w[1] * g != c {
            return Err(OpError::shape(format!(
                "Conv with group {g}: X {x:?} and W {w:?} do not agree"
            )));
        }
        if let Some(b) = b {
            if b != [m] {
                return Err(OpError::shape(format!("Conv bias {b:?} must be [{m}]")));
            }
        }
        if let Some(k) = &self.win.kernel {
            if k.as_slice() != &w[2..] {
                return Err(OpError::shape(format!(
                    "kernel_shape {k:?} differs from the weight's {:?}",
                    &w[2..]
                )));
            }
        }
        if w[2..].contains(&0) {
            return Err(OpError::shape("Conv kernel has a zero dimension"));
        }
        if x[2..].contains(&0) {
            return Err(OpError::shape(format!(
                "Conv input {x:?} has a zero-size spatial dimension"
            )));
        }
        let win = self.win.resolve(&x[2..], &w[2..])?;
        let mut out = vec![n, m];
        out.extend(win.out_dims());
        numel(&out)?;
        Ok(ConvShape { n, c, m, win, out })
    }
}

/// Whether a group's product runs transposed, `outᵀ[P, M] = colᵀ[P, K] · Wᵀ[K, M]`,
/// rather than plain, `out[M, P] = W[M, K] · col[K, P]`: when the output positions
/// fill the kernel's 32-wide column panels worse than the output channels would (the
/// small late layers of a CNN, 4×4 or 7×7 positions against 128 or 512 channels).
/// The transposed form takes the weights as its packed, constant operand but must
/// write its result back channel by channel; the plain form reads `col` in place and
/// writes the output directly. On a tie the plain form is kept where the patches are
/// read in place from the padded input ([`Implicit`]) or the channels are few; with 64
/// channels or more the kernel would pack `col` on every run, which the transposed
/// form, its weights packed while planning, does not (an 8×8, 64-channel layer: 42 →
/// 40.7 µs here). Either way each output element is the same sequence of fused steps,
/// so the choice changes no bit.
fn transposed_form(win: &Window, cg: usize, mg: usize) -> bool {
    let fill = |n: usize| n as f64 / (n.div_ceil(32) * 32).max(1) as f64;
    let (fm, fp) = (fill(mg), fill(win.out_vol()));
    fm > fp || (fm == fp && mg >= 64 && Implicit::new(win, cg).is_none())
}

/// How a convolution of one geometry is computed (see [`conv_compute`]): fixed by the
/// window and the group's channels, so a plan works it out once, while planning.
struct Layout {
    win: Window,
    cg: usize,
    mg: usize,
    /// A 1×1, stride-1, unpadded convolution: the input is the patch matrix.
    pointwise: bool,
    /// See [`transposed_form`].
    transposed: bool,
    /// Short output rows: fixed-width copies from the padded input at stride 1 along
    /// the width (see [`ShortRows`]).
    short: Option<ShortRows>,
    /// Else, below [`GATHER_MAX_ROW`]: one index table for every channel (see
    /// [`gather_table`]).
    gather: Option<Vec<u32>>,
    /// The patches read in place from the padded input (see [`Implicit`]).
    implicit: Option<Implicit>,
}

impl Layout {
    fn new(win: &Window, cg: usize, mg: usize) -> Layout {
        let (iv, p, kv) = (win.in_vol(), win.out_vol(), win.k_vol());
        let pointwise = kv == 1 && win.stride == [1; 3] && win.pad_begin == [0; 3] && p == iv;
        let transposed = transposed_form(win, cg, mg);
        let short = if pointwise {
            None
        } else {
            ShortRows::new(win, cg)
        };
        let gather = (!pointwise
            && short.is_none()
            && win.output[2] < GATHER_MAX_ROW
            && p <= GATHER_MAX_POSITIONS)
            .then(|| gather_table(win));
        let implicit = if transposed || pointwise {
            None
        } else {
            Implicit::new(win, cg)
        };
        Layout {
            win: win.clone(),
            cg,
            mg,
            pointwise,
            transposed,
            short,
            gather,
            implicit,
        }
    }

    /// Whether this layout was made for a convolution of this shape and group count.
    fn fits(&self, s: &ConvShape, group: usize) -> bool {
        self.win == s.win && self.cg * group == s.c && self.mg * group == s.m
    }
}

/// The convolution of `s` in `group` groups, laid out by `layout` (made for `s`, see
/// [`Layout::fits`]); `packed` holds each group's `Wᵀ` packed for the transposed form.
#[allow(clippy::too_many_arguments)]
fn conv_compute<T: Scalar + std::ops::Add<Output = T>>(
    ctx: &Ctx,
    s: &ConvShape,
    group: usize,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    layout: &Layout,
    packed: &[PackedB],
) -> Result<Vec<T>, OpError> {
    let win = &s.win;
    let (cg, mg) = (s.c / group, s.m / group);
    let (iv, p, kv) = (win.in_vol(), win.out_vol(), win.k_vol());
    let k = cg * kv;
    // Every element is written below: by a product, a write-back or `compact`.
    let mut out = crate::scratch::output(numel(&s.out)?, T::ZERO);
    if out.is_empty() {
        return Ok(out);
    }
    let bad = || OpError::shape("Conv operand smaller than its shape");
    if !layout.fits(s, group) {
        return Err(bad());
    }
    let Layout {
        pointwise,
        transposed,
        short,
        gather,
        implicit,
        ..
    } = layout;
    let (pointwise, transposed) = (*pointwise, *transposed);
    // Temporary buffers of known length come from the thread's scratch (see
    // `crate::scratch`): each is written in full before it is read, by `pad`,
    // `ShortRows::fill` or a product. The patches im2col gathers are pushed into `cols`.
    let mut xp = Scratch::with_len(
        match (&implicit, &short) {
            (Some(im), _) => im.padded.len(cg),
            (None, Some(sr)) => sr.padded.len(cg),
            (None, None) => 0,
        },
        T::ZERO,
    );
    let mut patches = Scratch::with_len(short.as_ref().map_or(0, ShortRows::col_len), T::ZERO);
    let mut cols = Vec::with_capacity(if implicit.is_none() && short.is_none() {
        k * p
    } else {
        0
    });
    let mut tmp = Scratch::with_len(if transposed { p * mg } else { 0 }, T::ZERO);
    let mut cv = Scratch::with_len(implicit.as_ref().map_or(0, |im| mg * im.n), T::ZERO);
    for ni in 0..s.n {
        for g in 0..group {
            let xs = x
                .get((ni * s.c + g * cg) * iv..(ni * s.c + (g + 1) * cg) * iv)
                .ok_or_else(bad)?;
            let wm = Mat::row_major(w.get(g * mg * k..).ok_or_else(bad)?, mg, k).ok_or_else(bad)?;
            let o0 = (ni * s.m + g * mg) * p;
            let dst = &mut out[o0..o0 + mg * p];
            let bias = match b {
                Some(b) => Some(b.get(g * mg..(g + 1) * mg).ok_or_else(bad)?),
                None => None,
            };
            if let Some(im) = implicit.as_ref().filter(|im| im.padded.pad(xs, &mut xp)) {
                // The patches read in place from the padded input.
                let rows = RowsB {
                    data: &xp,
                    offs: &im.offs,
                    n: im.n,
                };
                if T::gemm_rows(ctx, wm, rows, &mut cv)? {
                    im.compact(ctx, &cv, mg, bias, dst);
                    continue;
                }
            }
            let bm = if pointwise {
                Mat::row_major(xs, k, p)
            } else if short
                .as_ref()
                .is_some_and(|sr| sr.padded.pad(xs, &mut xp) && sr.fill(ctx, &xp, &mut patches))
            {
                Mat::row_major(&patches, k, p)
            } else {
                match &gather {
                    Some(idx) => im2col_gather(xs, iv, cg, idx, &mut cols),
                    None => im2col(xs, cg, win, &mut cols),
                }
                Mat::row_major(&cols, k, p)
            }
            .ok_or_else(bad)?;
            if transposed {
                let pk = packed.get(g);
                product(ctx, bm.t(), wm.t(), pk, &mut tmp)?;
                // `tmp` is P × M: each output channel's plane is one of its columns.
                write_back(ctx, &tmp, mg, p, bias, dst);
            } else {
                gemm(ctx, wm, bm, dst)?;
                if let Some(bias) = bias {
                    for (plane, &bv) in dst.chunks_mut(p).zip(bias) {
                        for v in plane {
                            *v = (*v + bv).canon();
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Writes the transposed product `tmp` (P × M) into `dst` (M planes of P), adding the
/// bias (one rounded add, NaN canonical) when there is one. Blocks of 16 positions keep
/// the rows of `tmp` being read in L1 while every plane gets 16 contiguous values. f32
/// outside reference mode goes through [`Scalar::planes_from_rows`], which transposes
/// 16 × 16 blocks in registers (a CNN's write-backs took 5% of its run read one value
/// at a time; 1% so).
fn write_back<T: Scalar + std::ops::Add<Output = T>>(
    ctx: &Ctx,
    tmp: &[T],
    mg: usize,
    p: usize,
    bias: Option<&[T]>,
    dst: &mut [T],
) {
    const Q: usize = 16;
    // Channels per task: whole planes, so each task writes its own.
    let per = mg.div_ceil(ctx.threads()).max(1);
    let at = |q: usize, oc: usize| tmp.get(q * mg + oc).copied().unwrap_or(T::ZERO);
    let all = Mat::row_major(tmp, p, mg).filter(|_| !ctx.reference());
    ctx.for_each_chunk(dst, per * p, |ci, planes| {
        let oc0 = ci * per;
        let channels = planes.len() / p.max(1);
        // The share's channels of the product, and of the bias when there is one.
        let rows = all.map(|m| m.cols_range(oc0, channels));
        let share_bias = match bias {
            Some(b) => b.get(oc0..oc0 + channels).map(Some),
            None => Some(None),
        };
        if let (Some(rows), Some(share_bias)) = (rows, share_bias) {
            if T::planes_from_rows(rows, share_bias, planes) {
                return;
            }
        }
        super::simd::with_fma(
            #[inline(always)]
            || {
                for q0 in (0..p).step_by(Q) {
                    let q1 = (q0 + Q).min(p);
                    for (i, plane) in planes.chunks_mut(p).enumerate() {
                        let oc = oc0 + i;
                        let Some(out) = plane.get_mut(q0..q1.min(plane.len())) else {
                            continue;
                        };
                        match bias.and_then(|b| b.get(oc)) {
                            Some(&bv) => {
                                for (q, v) in (q0..q1).zip(out) {
                                    *v = (at(q, oc) + bv).canon();
                                }
                            }
                            None => {
                                for (q, v) in (q0..q1).zip(out) {
                                    *v = at(q, oc);
                                }
                            }
                        }
                    }
                }
            },
        )
    });
}

/// What a plan prepares for a `Conv` node: the [`Layout`] of its shapes and, for the
/// transposed form with constant f32 weights, `Wᵀ` of each group packed (see
/// [`transposed_form`]).
struct ConvPlan {
    layout: Layout,
    groups: Vec<PackedB>,
}

/// The scalar reference of `Conv`, directly from the definition (zero-padded input,
/// (c, kd, kh, kw) order, fma from +0.0, then bias). Used to prove the im2col path.
#[cfg(test)]
fn conv_reference(
    s: &ConvShape,
    group: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
) -> Vec<f32> {
    let win = &s.win;
    let (cg, mg) = (s.c / group, s.m / group);
    let (iv, kv) = (win.in_vol(), win.k_vol());
    let [ih, iw] = [win.input[1], win.input[2]];
    let [kd, kh, kw] = win.kernel;
    let mut out = Vec::new();
    for ni in 0..s.n {
        for oc in 0..s.m {
            let g = oc / mg;
            for zd in 0..win.output[0] {
                for zh in 0..win.output[1] {
                    for zw in 0..win.output[2] {
                        let mut acc = 0.0f32;
                        for c in 0..cg {
                            for a in 0..kd {
                                for bb in 0..kh {
                                    for e in 0..kw {
                                        let xv = match (
                                            win.src(0, zd, a),
                                            win.src(1, zh, bb),
                                            win.src(2, zw, e),
                                        ) {
                                            (Some(d), Some(h), Some(ww)) => {
                                                x[(ni * s.c + g * cg + c) * iv
                                                    + (d * ih + h) * iw
                                                    + ww]
                                            }
                                            _ => 0.0,
                                        };
                                        let wv = w[(oc * cg + c) * kv + (a * kh + bb) * kw + e];
                                        acc = wv.mul_add(xv, acc);
                                    }
                                }
                            }
                        }
                        let y = match b {
                            Some(b) => acc + b[oc],
                            None => acc,
                        };
                        out.push(y.canon());
                    }
                }
            }
        }
    }
    out
}

fn check_float(index: usize, d: DType) -> Result<(), OpError> {
    if FLOATS.contains(&d) {
        Ok(())
    } else {
        Err(OpError::DType { index, dtype: d })
    }
}

impl Op for Conv {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let x = infer_input(inputs, 0)?;
        let w = infer_input(inputs, 1)?;
        check_float(0, x.ty.dtype)?;
        let b = opt_infer_input(inputs, 2);
        for t in [Some(w), b].into_iter().flatten() {
            if t.ty.dtype != x.ty.dtype {
                return Err(OpError::DTypeMismatch {
                    expected: x.ty.dtype,
                    actual: t.ty.dtype,
                });
            }
        }
        let s = self.shape(&x.ty.shape, &w.ty.shape, b.map(|b| b.ty.shape.as_slice()))?;
        one(x.ty.dtype, s.out)
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        // Multiply-adds: every output element reduces over C/group × kernel volume.
        let per = inputs
            .get(1)
            .copied()
            .flatten()
            .map(|w| {
                w.shape
                    .iter()
                    .skip(1)
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64))
            })
            .unwrap_or(1);
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        o.saturating_mul(per.saturating_add(1)).max(1)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, None)
    }
    /// The layout of the planned shapes, and constant f32 weights packed once for the
    /// transposed product.
    fn prepare(&self, inputs: &[Option<InferInput<'_>>]) -> Option<Prepared> {
        let x = inputs.first().copied().flatten()?;
        let w = inputs.get(1).copied().flatten()?;
        let b = opt_infer_input(inputs, 2).map(|b| b.ty.shape.as_slice());
        let s = self.shape(&x.ty.shape, &w.ty.shape, b).ok()?;
        let (cg, mg) = (s.c / self.group, s.m / self.group);
        let layout = Layout::new(&s.win, cg, mg);
        let k = cg * s.win.k_vol();
        let groups = match w.value.and_then(|wv| wv.as_slice::<f32>()) {
            Some(wd) if layout.transposed && x.ty.dtype == DType::F32 => (0..self.group)
                .map(|g| PackedB::new(Mat::new(wd.get(g * mg * k..)?, k, mg, 1, k)?))
                .collect::<Option<Vec<_>>>()?,
            _ => Vec::new(),
        };
        Some(Prepared(Box::new(ConvPlan { layout, groups })))
    }
    fn run_prepared(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        prepared: &Prepared,
    ) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, prepared.0.downcast_ref::<ConvPlan>())
    }
    /// Every output is a product the matrix kernels store canonical, or that plus the
    /// bias, made canonical where it is added.
    fn nans_canonical(&self) -> bool {
        true
    }
}

impl Conv {
    fn run_with(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        plan: Option<&ConvPlan>,
    ) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let w = input(inputs, 1)?;
        check_float(0, x.dtype())?;
        let b = opt_input(inputs, 2);
        let s = self.shape(x.shape(), w.shape(), b.map(|b| b.shape()))?;
        let g = self.group;
        // The planned layout when it was made for these shapes, else one made now.
        let made;
        let layout = match plan.map(|p| &p.layout).filter(|l| l.fits(&s, g)) {
            Some(l) => l,
            None => {
                made = Layout::new(&s.win, s.c / g, s.m / g);
                &made
            }
        };
        // Packed weights are f32; other dtypes run unpacked.
        let packed = match plan {
            Some(p)
                if x.dtype() == DType::F32 && w.dtype() == DType::F32 && p.layout.fits(&s, g) =>
            {
                p.groups.as_slice()
            }
            _ => &[],
        };
        let t = match b {
            Some(b) => by_dtype!(&[x, w, b], s.out.clone(), |v: T| conv_compute::<T>(
                ctx,
                &s,
                g,
                v[0],
                v[1],
                Some(v[2]),
                layout,
                packed
            )),
            None => by_dtype!(&[x, w], s.out.clone(), |v: T| conv_compute::<T>(
                ctx, &s, g, v[0], v[1], None, layout, packed
            )),
        };
        Ok(vec![t])
    }
}

// ---------------------------------------------------------------------------------
// ConvTranspose

/// `ConvTranspose`, in gather form.
#[derive(Debug)]
pub struct ConvTranspose {
    win: WindowAttrs,
    group: usize,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
}

fn build_conv_transpose(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let group = n.attrs.int("group", 1)?;
    if group < 1 {
        return Err(OpError::bad_attr("group", "must be at least 1"));
    }
    let win = WindowAttrs::parse(n.attrs)?;
    Ok(Box::new(ConvTranspose {
        win,
        group: group as usize,
        output_padding: positive("output_padding", n.attrs.ints("output_padding")?, true)?,
        output_shape: positive("output_shape", n.attrs.ints("output_shape")?, true)?,
    }))
}

impl ConvTranspose {
    fn shape(&self, x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<ConvShape, OpError> {
        let r = x.len().saturating_sub(2);
        if x.len() < 3 || w.len() != x.len() || r > 3 {
            return Err(OpError::shape(format!(
                "ConvTranspose needs X [N, C, spatial…] (1-D to 3-D) and W of the same rank, got {x:?} and {w:?}"
            )));
        }
        let g = self.group;
        let (n, c, m) = (x[0], x[1], w[1] * g);
        if w[0] != c || c % g != 0 {
            return Err(OpError::shape(format!(
                "ConvTranspose with group {g}: X {x:?} and W {w:?} do not agree"
            )));
        }
        if let Some(b) = b {
            if b != [m] {
                return Err(OpError::shape(format!(
                    "ConvTranspose bias {b:?} must be [{m}]"
                )));
            }
        }
        let a = &self.win;
        let kernel = a.kernel.clone().unwrap_or_else(|| w[2..].to_vec());
        if kernel.as_slice() != &w[2..] || kernel.contains(&0) {
            return Err(OpError::shape(
                "ConvTranspose kernel_shape differs from the weight",
            ));
        }
        let strides = a.strides.clone().unwrap_or_else(|| vec![1; r]);
        let dil = a.dilations.clone().unwrap_or_else(|| vec![1; r]);
        let opad = self.output_padding.clone().unwrap_or_else(|| vec![0; r]);
        if strides.len() != r || dil.len() != r || opad.len() != r {
            return Err(OpError::shape(
                "ConvTranspose attributes do not match the rank",
            ));
        }
        let mut win = Window {
            rank: r,
            input: [1; 3],
            kernel: [1; 3],
            stride: [1; 3],
            dil: [1; 3],
            pad_begin: [0; 3],
            pad_end: [0; 3],
            output: [1; 3],
        };
        let oshape = match &self.output_shape {
            Some(o) if o.len() == r + 2 => Some(o[2..].to_vec()),
            Some(o) if o.len() == r => Some(o.clone()),
            Some(o) => {
                return Err(OpError::shape(format!(
                    "output_shape {o:?} does not match {r} spatial dims"
                )))
            }
            None => None,
        };
        for i in 0..r {
            let d = 3 - r + i;
            let (inp, k, s, dl, op) = (x[2 + i], kernel[i], strides[i], dil[i], opad[i]);
            let dk = dl * (k - 1) + 1;
            let full = s * inp.saturating_sub(1) + op + dk;
            let target = match (&oshape, a.auto_pad) {
                (Some(o), _) => Some(o[i]),
                (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(inp * s),
                _ => None,
            };
            let (pb, pe, out) = match target {
                Some(t) => {
                    // ONNX splits the total with floor division; a negative total
                    // (output_shape beyond the full output) pads the end, where the
                    // extra outputs receive no terms.
                    let total = full as i64 - t as i64;
                    let half = total.div_euclid(2);
                    let (pb, pe) = if a.auto_pad == AutoPad::SameUpper {
                        (half, total - half)
                    } else {
                        (total - half, half)
                    };
                    if pb < 0 {
                        return Err(OpError::unsupported(
                            "ConvTranspose output_shape that pads the beginning",
                        ));
                    }
                    (pb as usize, pe.max(0) as usize, t)
                }
                None => {
                    let (pb, pe) = match (a.auto_pad, &a.pads) {
                        (AutoPad::NotSet, Some(p)) if p.len() == 2 * r => (p[i], p[r + i]),
                        (AutoPad::NotSet, Some(_)) => {
                            return Err(OpError::shape("pads do not match the rank"))
                        }
                        _ => (0, 0),
                    };
                    let out = full
                        .checked_sub(pb + pe)
                        .ok_or_else(|| OpError::shape("ConvTranspose pads exceed the output"))?;
                    (pb, pe, out)
                }
            };
            win.set(d, inp, k, s, dl, (pb, pe, out));
        }
        let mut out = vec![n, m];
        out.extend(win.out_dims());
        numel(&out)?;
        Ok(ConvShape { n, c, m, win, out })
    }
}

/// Input coordinate contributing to output `o` through kernel offset `k` along `d`.
#[inline(always)]
fn tsrc(w: &Window, d: usize, o: usize, k: usize) -> Option<usize> {
    let t = (o + w.pad_begin[d]).checked_sub(k * w.dil[d])?;
    if t % w.stride[d] != 0 {
        return None;
    }
    let i = t / w.stride[d];
    (i < w.input[d]).then_some(i)
}

fn conv_transpose_compute<T: Scalar + std::ops::Add<Output = T>>(
    ctx: &Ctx,
    s: &ConvShape,
    group: usize,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
) -> Result<Vec<T>, OpError> {
    let win = &s.win;
    let (cg, mg) = (s.c / group, s.m / group);
    let (iv, p, kv) = (win.in_vol(), win.out_vol(), win.k_vol());
    let [ih, iw] = [win.input[1], win.input[2]];
    let [kd, kh, kw] = win.kernel;
    let [od, oh, ow] = win.output;
    let mut out = vec![T::ZERO; numel(&s.out)?];
    if out.is_empty() {
        return Ok(out);
    }
    if x.len() < s.n * s.c * iv || w.len() < s.c * mg * kv {
        return Err(OpError::shape(
            "ConvTranspose operand smaller than its shape",
        ));
    }
    // Planes of the output are independent: split them over threads.
    ctx.for_each_chunk(&mut out, p, |plane_idx, plane| {
        let (ni, oc) = (plane_idx / s.m, plane_idx % s.m);
        let (g, mo) = (oc / mg, oc % mg);
        let mut i = 0;
        for zd in 0..od {
            for zh in 0..oh {
                for zw in 0..ow {
                    let mut acc = T::ZERO;
                    for c in 0..cg {
                        let ci = g * cg + c;
                        let xc = &x[(ni * s.c + ci) * iv..(ni * s.c + ci + 1) * iv];
                        let wc = &w[(ci * mg + mo) * kv..(ci * mg + mo + 1) * kv];
                        for a in 0..kd {
                            let Some(sd) = tsrc(win, 0, zd, a) else {
                                continue;
                            };
                            for bb in 0..kh {
                                let Some(sh) = tsrc(win, 1, zh, bb) else {
                                    continue;
                                };
                                for e in 0..kw {
                                    let Some(sw) = tsrc(win, 2, zw, e) else {
                                        continue;
                                    };
                                    acc = T::fma(
                                        xc[(sd * ih + sh) * iw + sw],
                                        wc[(a * kh + bb) * kw + e],
                                        acc,
                                    );
                                }
                            }
                        }
                    }
                    let y = match b {
                        Some(b) => acc + b[oc],
                        None => acc,
                    };
                    plane[i] = y.canon();
                    i += 1;
                }
            }
        }
    });
    Ok(out)
}

impl Op for ConvTranspose {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let x = infer_input(inputs, 0)?;
        let w = infer_input(inputs, 1)?;
        check_float(0, x.ty.dtype)?;
        let b = opt_infer_input(inputs, 2);
        for t in [Some(w), b].into_iter().flatten() {
            if t.ty.dtype != x.ty.dtype {
                return Err(OpError::DTypeMismatch {
                    expected: x.ty.dtype,
                    actual: t.ty.dtype,
                });
            }
        }
        let s = self.shape(&x.ty.shape, &w.ty.shape, b.map(|b| b.ty.shape.as_slice()))?;
        one(x.ty.dtype, s.out)
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let per = inputs
            .get(1)
            .copied()
            .flatten()
            .map(|w| {
                let k = w
                    .shape
                    .iter()
                    .skip(2)
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64));
                k.saturating_mul(*w.shape.first().unwrap_or(&1) as u64 / self.group.max(1) as u64)
            })
            .unwrap_or(1);
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        o.saturating_mul(per.saturating_add(1)).max(1)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let w = input(inputs, 1)?;
        check_float(0, x.dtype())?;
        let b = opt_input(inputs, 2);
        let s = self.shape(x.shape(), w.shape(), b.map(|b| b.shape()))?;
        let g = self.group;
        let t = match b {
            Some(b) => by_dtype!(&[x, w, b], s.out.clone(), |v: T| {
                conv_transpose_compute::<T>(ctx, &s, g, v[0], v[1], Some(v[2]))
            }),
            None => by_dtype!(&[x, w], s.out.clone(), |v: T| conv_transpose_compute::<T>(
                ctx, &s, g, v[0], v[1], None
            )),
        };
        Ok(vec![t])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attr;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    fn val(s: &mut u64) -> f32 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        match *s % 23 {
            0 => f32::NAN,
            1 => -0.0,
            2 => f32::INFINITY,
            3 => 1e-41,
            _ => (*s >> 40) as f32 / 1e6 - 8.0,
        }
    }

    /// [`val`], or with `finite_only` its finite values only. Over a product of a few
    /// dozen terms and more, `val`'s NaNs and infinities make nearly every output NaN
    /// whatever the kernel did with the other terms: the property tests draw finite
    /// values in half their cases, so that every term, and where each value went, shows
    /// in the bits.
    fn draw(s: &mut u64, finite_only: bool) -> f32 {
        loop {
            let v = val(s);
            if !finite_only || v.is_finite() {
                break v;
            }
        }
    }

    fn attrs(v: Vec<(&str, Attr)>) -> Attrs {
        Attrs(v.into_iter().map(|(k, a)| (k.to_string(), a)).collect())
    }

    #[test]
    fn same_padding_and_strides() {
        let a = WindowAttrs::parse(&attrs(vec![
            ("auto_pad", Attr::String(b"SAME_LOWER".to_vec())),
            ("strides", Attr::Ints(vec![2, 2])),
        ]))
        .unwrap();
        let w = a.resolve(&[5, 6], &[3, 2]).unwrap();
        assert_eq!(w.out_dims(), vec![3, 3]);
        assert_eq!(w.pad_begin, [0, 1, 0]);
        assert_eq!(w.pad_end, [0, 1, 0]);
        assert!(WindowAttrs::parse(&attrs(vec![("strides", Attr::Ints(vec![0]))])).is_err());
        // A zero-size spatial input to a global pool must be an error, not a panic.
        assert!(a.resolve(&[0, 6], &[0, 2]).is_err());
    }

    /// A two-input `Conv` node with attributes `a`.
    /// A Conv node padded by one on every side, as an operator and as its attributes.
    fn padded_by_one() -> (Box<dyn Op>, Conv) {
        let a = attrs(vec![("pads", Attr::Ints(vec![1; 4]))]);
        let conv = Conv {
            win: WindowAttrs::parse(&a).unwrap(),
            group: 1,
        };
        (conv_op(&a), conv)
    }

    /// The bits of an f32 output.
    fn f32_bits(t: &Tensor) -> Vec<u32> {
        t.as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    fn conv_op(a: &Attrs) -> Box<dyn Op> {
        let node = NodeInfo {
            name: "c",
            op_type: "Conv",
            domain: "",
            opset: 17,
            attrs: a,
            num_inputs: 2,
            num_outputs: 1,
        };
        build_conv(&node).unwrap()
    }

    #[test]
    fn conv_over_a_zero_size_input_is_an_error() {
        // Padding would give such an input an output; it is refused instead, with a
        // typed error, in every kernel mode.
        let a = attrs(vec![("pads", Attr::Ints(vec![1; 4]))]);
        let op = conv_op(&a);
        let x = Tensor::from_vec(vec![1, 2, 0, 5], Vec::<f32>::new()).unwrap();
        let w = Tensor::from_vec(vec![3, 2, 3, 3], vec![1.0f32; 54]).unwrap();
        for mode in [KernelMode::Fast, KernelMode::Reference] {
            let err = op
                .run(&[Some(&x), Some(&w)], &Ctx::new(mode, 1))
                .unwrap_err();
            assert!(err.to_string().contains("zero-size"), "{err}");
        }
    }

    /// A 3-D convolution of a one-deep input, padded in front along the depth and
    /// strided so that its one output depth reads only padding: every output is the
    /// bias, in every kernel mode. (The 2-D forms once took it for a 2-D convolution
    /// and read the input's one depth.)
    #[test]
    fn an_output_depth_over_padding_is_the_bias() {
        let a = attrs(vec![
            ("strides", Attr::Ints(vec![2, 1, 1])),
            ("pads", Attr::Ints(vec![1, 1, 1, 0, 1, 1])),
        ]);
        let node = NodeInfo {
            name: "c",
            op_type: "Conv",
            domain: "",
            opset: 17,
            attrs: &a,
            num_inputs: 3,
            num_outputs: 1,
        };
        let op = build_conv(&node).unwrap();
        let (c, m, hw) = (3, 4, 6);
        let xv: Vec<f32> = (0..c * hw * hw).map(|i| i as f32 + 1.0).collect();
        let x = Tensor::from_vec(vec![1, c, 1, hw, hw], xv).unwrap();
        let w = Tensor::from_vec(vec![m, c, 1, 3, 3], vec![0.5f32; m * c * 9]).unwrap();
        let b = Tensor::from_vec(vec![m], vec![-1.0f32, 2.0, 0.25, 7.0]).unwrap();
        let mut want = Vec::new();
        for bv in b.as_slice::<f32>().unwrap() {
            want.extend(std::iter::repeat_n(bv.to_bits(), hw * hw));
        }
        for (mode, threads) in [
            (KernelMode::Fast, 1),
            (KernelMode::Fast, 3),
            (KernelMode::Reference, 1),
        ] {
            let y = op
                .run(&[Some(&x), Some(&w), Some(&b)], &Ctx::new(mode, threads))
                .unwrap();
            assert_eq!(y[0].shape(), [1, m, 1, hw, hw]);
            assert_eq!(f32_bits(&y[0]), want, "{mode:?} at {threads} threads");
        }
    }

    /// A plan's prepared layout is for the shapes it planned: run with another input
    /// size, the convolution lays itself out anew (and skips the packed weights only
    /// when they no longer fit), giving the definition's bits.
    #[test]
    fn prepared_conv_run_on_other_shapes_equals_definition() {
        let (op, conv) = padded_by_one();
        for finite_only in [true, false] {
            prepared_conv_on_other_shapes(&*op, &conv, finite_only);
        }
    }

    fn prepared_conv_on_other_shapes(op: &dyn Op, conv: &Conv, finite_only: bool) {
        let mut s = 7u64;
        let (c, m) = (8, 64);
        let wv: Vec<f32> = (0..m * c * 9).map(|_| draw(&mut s, finite_only)).collect();
        let w = Tensor::from_vec(vec![m, c, 3, 3], wv.clone()).unwrap();
        let planned_x = TypeInfo {
            dtype: DType::F32,
            shape: vec![1, c, 4, 4],
        };
        let wt = TypeInfo::of(&w);
        let infer = [
            Some(InferInput {
                ty: &planned_x,
                value: None,
            }),
            Some(InferInput {
                ty: &wt,
                value: Some(&w),
            }),
        ];
        let prepared = op.prepare(&infer).unwrap();
        for hw in [4, 6, 9] {
            let xs = vec![1, c, hw, hw];
            let xv: Vec<f32> = (0..c * hw * hw)
                .map(|_| draw(&mut s, finite_only))
                .collect();
            let x = Tensor::from_vec(xs.clone(), xv.clone()).unwrap();
            let shape = conv.shape(&xs, &[m, c, 3, 3], None).unwrap();
            let want: Vec<u32> = conv_reference(&shape, 1, &xv, &wv, None)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            if finite_only {
                assert!(
                    want.iter().all(|&b| !f32::from_bits(b).is_nan()),
                    "{hw}×{hw}"
                );
            }
            for threads in [1, 3] {
                let got = op
                    .run_prepared(
                        &[Some(&x), Some(&w)],
                        &Ctx::new(KernelMode::Fast, threads),
                        &prepared,
                    )
                    .unwrap();
                assert_eq!(
                    f32_bits(&got[0]),
                    want,
                    "{hw}×{hw} at {threads} threads, finite only: {finite_only}"
                );
            }
        }
    }

    /// Patch matrices of short output rows large enough to be filled by several
    /// threads ([`PAR_FILL`]), with row counts the threads do not divide evenly: the
    /// definition's bits at every thread count.
    #[test]
    fn patches_filled_by_several_threads_equal_definition() {
        let (op, conv) = padded_by_one();
        let mut s = 11u64;
        // Finite values (see `draw`): a zeroed patch matrix passed this test when it
        // drew NaNs and infinities too.
        let mut finite = || draw(&mut s, true);
        for (c, m, hw) in [(32, 40, 8), (30, 64, 8), (57, 64, 4)] {
            let (xs, ws) = (vec![1, c, hw, hw], vec![m, c, 3, 3]);
            let xv: Vec<f32> = (0..c * hw * hw).map(|_| finite()).collect();
            let wv: Vec<f32> = (0..m * c * 9).map(|_| finite()).collect();
            let shape = conv.shape(&xs, &ws, None).unwrap();
            let layout = Layout::new(&shape.win, c, m);
            let sr = layout.short.as_ref().expect("short output rows");
            assert!(layout.implicit.is_none() && sr.col_len() >= PAR_FILL);
            let x = Tensor::from_vec(xs, xv.clone()).unwrap();
            let w = Tensor::from_vec(ws, wv.clone()).unwrap();
            let want: Vec<u32> = conv_reference(&shape, 1, &xv, &wv, None)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            for threads in 1..=4 {
                stale_output(&shape);
                let got = op
                    .run(&[Some(&x), Some(&w)], &Ctx::new(KernelMode::Fast, threads))
                    .unwrap();
                assert_eq!(
                    f32_bits(&got[0]),
                    want,
                    "{c}→{m}, {hw}×{hw}, {threads} threads"
                );
            }
            assert!(want.iter().all(|&b| !f32::from_bits(b).is_nan()), "{c}→{m}");
        }
    }

    /// Leaves a freed buffer of the output's size, full of NaNs with a payload, where
    /// the convolution takes its output from (`crate::scratch::output`): an element the
    /// kernel failed to write would show.
    fn stale_output(shape: &ConvShape) {
        crate::scratch::leave_stale_f32(shape.out.iter().product::<usize>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn conv_fast_equals_definition(
            (n, g, cg, mg) in (1usize..3, 1usize..3, 1usize..4, 1usize..4),
            spatial in prop::collection::vec((0usize..7, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 0usize..3), 1..=3),
            bias in any::<bool>(), seed in any::<u64>(), threads in 1usize..=4,
            finite_only in any::<bool>(),
        ) {
            let val = |s: &mut u64| draw(s, finite_only);
            let r = spatial.len();
            let mut s = seed | 1;
            let kernel: Vec<usize> = spatial.iter().map(|t| t.1).collect();
            let strides: Vec<i64> = spatial.iter().map(|t| t.2 as i64).collect();
            let dil: Vec<i64> = spatial.iter().map(|t| t.3 as i64).collect();
            let mut pads: Vec<i64> = spatial.iter().map(|t| t.4 as i64).collect();
            pads.extend(spatial.iter().map(|t| t.5 as i64));
            let a = attrs(vec![
                ("strides", Attr::Ints(strides)), ("dilations", Attr::Ints(dil)),
                ("pads", Attr::Ints(pads)), ("group", Attr::Int(g as i64)),
            ]);
            let node = NodeInfo { name: "c", op_type: "Conv", domain: "", opset: 17, attrs: &a, num_inputs: 3, num_outputs: 1 };
            let op = build_conv(&node).unwrap();
            let mut xs = vec![n, g * cg];
            xs.extend(spatial.iter().map(|t| t.0));
            let mut ws = vec![g * mg, cg];
            ws.extend(&kernel);
            let xv: Vec<f32> = (0..xs.iter().product::<usize>()).map(|_| val(&mut s)).collect();
            let wv: Vec<f32> = (0..ws.iter().product::<usize>()).map(|_| val(&mut s)).collect();
            let bv: Vec<f32> = (0..g * mg).map(|_| val(&mut s)).collect();
            let conv = Conv { win: WindowAttrs::parse(&a).unwrap(), group: g };
            let Ok(shape) = conv.shape(&xs, &ws, None) else { return Ok(()) };
            let _ = r;
            let x = Tensor::from_vec(xs, xv.clone()).unwrap();
            let w = Tensor::from_vec(ws, wv.clone()).unwrap();
            let b = Tensor::from_vec(vec![g * mg], bv.clone()).unwrap();
            let mut ins = vec![Some(&x), Some(&w)];
            if bias { ins.push(Some(&b)); }
            stale_output(&shape);
            let fast = op.run(&ins, &Ctx::new(KernelMode::Fast, threads)).unwrap().remove(0);
            stale_output(&shape);
            let refm = op.run(&ins, &Ctx::new(KernelMode::Reference, 1)).unwrap().remove(0);
            let def = conv_reference(&shape, g, &xv, &wv, bias.then_some(bv.as_slice()));
            let fb: Vec<u32> = fast.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
            let rb: Vec<u32> = refm.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
            let db: Vec<u32> = def.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(&fb, &db);
            prop_assert_eq!(&rb, &db);
        }

        /// Network-sized 2-D convolutions through every fast form: weights packed
        /// while planning for the transposed product, patches read in place, gathered
        /// or copied by rows, at 1–4 threads.
        #[test]
        fn planned_conv_forms_equal_definition(
            c in prop::sample::select(vec![3usize, 8, 16]),
            m in prop::sample::select(vec![8usize, 32, 40, 64]),
            (h, wd) in (4usize..21, 4usize..21),
            k in 1usize..4, stride in 1usize..3, pad in 0usize..2,
            bias in any::<bool>(), seed in any::<u64>(), threads in 1usize..=4,
            finite_only in any::<bool>(),
        ) {
            let mut s = seed | 1;
            let val = |s: &mut u64| draw(s, finite_only);
            let a = attrs(vec![
                ("strides", Attr::Ints(vec![stride as i64; 2])),
                ("pads", Attr::Ints(vec![pad as i64; 4])),
            ]);
            let node = NodeInfo { name: "c", op_type: "Conv", domain: "", opset: 17, attrs: &a, num_inputs: 3, num_outputs: 1 };
            let op = build_conv(&node).unwrap();
            let (xs, ws) = (vec![1, c, h, wd], vec![m, c, k, k]);
            let xv: Vec<f32> = (0..c * h * wd).map(|_| val(&mut s)).collect();
            let wv: Vec<f32> = (0..m * c * k * k).map(|_| val(&mut s)).collect();
            let bv: Vec<f32> = (0..m).map(|_| val(&mut s)).collect();
            let conv = Conv { win: WindowAttrs::parse(&a).unwrap(), group: 1 };
            let Ok(shape) = conv.shape(&xs, &ws, None) else { return Ok(()) };
            let x = Tensor::from_vec(xs, xv.clone()).unwrap();
            let w = Tensor::from_vec(ws, wv.clone()).unwrap();
            let b = Tensor::from_vec(vec![m], bv.clone()).unwrap();
            let mut ins = vec![Some(&x), Some(&w)];
            if bias { ins.push(Some(&b)); }
            let types: Vec<TypeInfo> = ins.iter().flatten().map(|t| TypeInfo::of(t)).collect();
            // The input is not known while planning; the weights and bias are.
            let infer: Vec<Option<InferInput<'_>>> = ins.iter().zip(&types).enumerate()
                .map(|(i, (t, ty))| Some(InferInput { ty, value: if i == 0 { None } else { *t } }))
                .collect();
            let def: Vec<u32> = conv_reference(&shape, 1, &xv, &wv, bias.then_some(bv.as_slice())).iter().map(|v| v.to_bits()).collect();
            let ctx = Ctx::new(KernelMode::Fast, threads);
            stale_output(&shape);
            let got = match op.prepare(&infer) {
                Some(p) => op.run_prepared(&ins, &ctx, &p),
                None => op.run(&ins, &ctx),
            }.unwrap().remove(0);
            let gb: Vec<u32> = got.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(gb, def);
        }

        #[test]
        fn conv_transpose_threads_agree(
            (cg, mg, g) in (1usize..3, 1usize..3, 1usize..3),
            (h, k, st, pad) in (1usize..5, 1usize..4, 1usize..3, 0usize..2),
            seed in any::<u64>(), threads in 1usize..=4, finite_only in any::<bool>(),
        ) {
            let mut s = seed | 1;
            let val = |s: &mut u64| draw(s, finite_only);
            let a = attrs(vec![
                ("strides", Attr::Ints(vec![st as i64, 1])), ("group", Attr::Int(g as i64)),
                ("pads", Attr::Ints(vec![0, pad as i64, 0, 0])),
            ]);
            let node = NodeInfo { name: "c", op_type: "ConvTranspose", domain: "", opset: 17, attrs: &a, num_inputs: 2, num_outputs: 1 };
            let op = build_conv_transpose(&node).unwrap();
            let xs = vec![1, g * cg, h, h + 1];
            let ws = vec![g * cg, mg, k, 2];
            let x = Tensor::from_vec(xs.clone(), (0..xs.iter().product::<usize>()).map(|_| val(&mut s)).collect()).unwrap();
            let w = Tensor::from_vec(ws.clone(), (0..ws.iter().product::<usize>()).map(|_| val(&mut s)).collect()).unwrap();
            let ins = [Some(&x), Some(&w)];
            let Ok(f) = op.run(&ins, &Ctx::new(KernelMode::Fast, threads)) else { return Ok(()) };
            let r = op.run(&ins, &Ctx::new(KernelMode::Reference, 1)).unwrap();
            prop_assert_eq!(f[0].encode(), r[0].encode());
        }
    }

    #[test]
    fn conv_transpose_matches_scatter_on_simple_case() {
        // 1-D, stride 2: y[o] = Σ x[i]·w[k] over o = 2i + k.
        let a = attrs(vec![("strides", Attr::Ints(vec![2]))]);
        let node = NodeInfo {
            name: "c",
            op_type: "ConvTranspose",
            domain: "",
            opset: 17,
            attrs: &a,
            num_inputs: 2,
            num_outputs: 1,
        };
        let op = build_conv_transpose(&node).unwrap();
        let x = Tensor::from_vec(vec![1, 1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 3], vec![1.0f32, 10.0, 100.0]).unwrap();
        let y = op
            .run(&[Some(&x), Some(&w)], &Ctx::default())
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[1, 1, 7]);
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[1., 10., 102., 20., 203., 30., 300.]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// `ConvTranspose` over 1-D to 3-D windows with groups, strides, dilations,
        /// output padding and a bias, its padding given by `pads`, by `output_shape` or
        /// by `SAME_UPPER`/`SAME_LOWER`, against the gather form of the canonical
        /// semantics written out from the shapes alone: each output sums, from `+0`
        /// with fma, the terms of its group's input channels (increasing), then kernel
        /// offsets (row-major), whose input position `t = o + pad_begin − k·dil` is a
        /// multiple of the stride inside the input, then adds the bias. Fast at 1-4
        /// threads and reference.
        #[test]
        fn conv_transpose_equals_definition(
            (n, g, cg, mg) in (1usize..3, 1usize..3, 1usize..4, 1usize..4),
            spatial in prop::collection::vec((1usize..5, 1usize..4, 1usize..4, 1usize..3, 0usize..3, 0usize..3, 0usize..3), 1..=3),
            (mode, shape_shift) in (0u8..4, -2i64..2),
            bias in any::<bool>(), seed in any::<u64>(), finite_only in any::<bool>(),
        ) {
            let r = spatial.len();
            // (in, k, stride, dil, pad_b, pad_e, output_padding below max(stride, dil))
            let inp: Vec<usize> = spatial.iter().map(|t| t.0).collect();
            let kernel: Vec<usize> = spatial.iter().map(|t| t.1).collect();
            let strides: Vec<usize> = spatial.iter().map(|t| t.2).collect();
            let dil: Vec<usize> = spatial.iter().map(|t| t.3).collect();
            let opad: Vec<usize> = spatial.iter().map(|t| t.6 % t.2.max(t.3)).collect();
            let full: Vec<i64> = (0..r)
                .map(|i| (strides[i] * (inp[i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1) as i64)
                .collect();
            // Padding and output size per dimension, as ONNX defines them.
            let mut a = vec![
                ("group", Attr::Int(g as i64)),
                ("strides", Attr::Ints(strides.iter().map(|&v| v as i64).collect())),
                ("dilations", Attr::Ints(dil.iter().map(|&v| v as i64).collect())),
                ("output_padding", Attr::Ints(opad.iter().map(|&v| v as i64).collect())),
            ];
            let (pb, out): (Vec<i64>, Vec<i64>) = match mode {
                0 => {
                    let (b, e): (Vec<i64>, Vec<i64>) = spatial.iter().map(|t| (t.4 as i64, t.5 as i64)).unzip();
                    a.push(("pads", Attr::Ints([b.clone(), e.clone()].concat())));
                    (b.clone(), (0..r).map(|i| full[i] - b[i] - e[i]).collect())
                }
                1 => {
                    // output_shape near the full size: the total padding splits with
                    // its odd unit at the beginning; beyond the full size the end pads.
                    let o: Vec<i64> = full.iter().map(|&f| (f + shape_shift).max(1)).collect();
                    a.push(("output_shape", Attr::Ints(o.clone())));
                    ((0..r).map(|i| { let t = full[i] - o[i]; t - t.div_euclid(2) }).collect(), o)
                }
                _ => {
                    let upper = mode == 2;
                    a.push(("auto_pad", Attr::String(if upper { b"SAME_UPPER".to_vec() } else { b"SAME_LOWER".to_vec() })));
                    let o: Vec<i64> = inp.iter().zip(&strides).map(|(&i, &s)| (i * s) as i64).collect();
                    ((0..r).map(|i| { let t = full[i] - o[i]; if upper { t.div_euclid(2) } else { t - t.div_euclid(2) } }).collect(), o)
                }
            };
            let a = attrs(a);
            let node = NodeInfo { name: "c", op_type: "ConvTranspose", domain: "", opset: 17, attrs: &a, num_inputs: 2 + usize::from(bias), num_outputs: 1 };
            let op = build_conv_transpose(&node).unwrap();
            let (c, m) = (g * cg, g * mg);
            let mut s = seed | 1;
            let xs = [vec![n, c], inp.clone()].concat();
            let ws = [vec![c, mg], kernel.clone()].concat();
            let x = Tensor::from_vec(xs.clone(), (0..xs.iter().product::<usize>()).map(|_| draw(&mut s, finite_only)).collect()).unwrap();
            let w = Tensor::from_vec(ws.clone(), (0..ws.iter().product::<usize>()).map(|_| draw(&mut s, finite_only)).collect()).unwrap();
            let b = Tensor::from_vec(vec![m], (0..m).map(|_| draw(&mut s, finite_only)).collect()).unwrap();
            let mut ins = vec![Some(&x), Some(&w)];
            if bias { ins.push(Some(&b)); }
            let results: Vec<(String, Result<Vec<Tensor>, OpError>)> = (1..=4)
                .map(|t| (format!("fast, {t} threads"), op.run(&ins, &Ctx::new(KernelMode::Fast, t))))
                .chain([("reference".to_string(), op.run(&ins, &Ctx::new(KernelMode::Reference, 1)))])
                .collect();
            if pb.iter().any(|&p| p < 0) || out.iter().any(|&o| o < 0) {
                // Padding the beginning negatively, or pads past the full output:
                // refused. (Pads that take all of it leave an empty output.)
                for (how, res) in &results {
                    prop_assert!(res.is_err(), "{} accepted {:?} {:?}", how, pb, out);
                }
                return Ok(());
            }
            let out: Vec<usize> = out.iter().map(|&o| o as usize).collect();
            let (xv, wv, bv) = (x.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
            let stride_of = |shape: &[usize]| -> Vec<usize> {
                (0..shape.len()).map(|d| shape[d + 1..].iter().product()).collect()
            };
            let (in_st, k_st, o_st) = (stride_of(&inp), stride_of(&kernel), stride_of(&out));
            let (plane_in, plane_k, plane_out) = (inp.iter().product::<usize>(), kernel.iter().product::<usize>(), out.iter().product::<usize>());
            let mut want = Vec::with_capacity(n * m * plane_out);
            for ni in 0..n {
                for oc in 0..m {
                    let gi = oc / mg;
                    for op_ in 0..plane_out {
                        let o: Vec<usize> = (0..r).map(|d| op_ / o_st[d] % out[d]).collect();
                        let mut acc = 0.0f32;
                        for ci in gi * cg..(gi + 1) * cg {
                            for kp in 0..plane_k {
                                let mut ii = 0;
                                let mut ok = true;
                                for d in 0..r {
                                    let kd = kp / k_st[d] % kernel[d];
                                    let t = o[d] as i64 + pb[d] - (kd * dil[d]) as i64;
                                    if t < 0 || t % strides[d] as i64 != 0 || t / strides[d] as i64 >= inp[d] as i64 {
                                        ok = false;
                                        break;
                                    }
                                    ii += (t / strides[d] as i64) as usize * in_st[d];
                                }
                                if ok {
                                    let xv_ = xv[(ni * c + ci) * plane_in + ii];
                                    let wv_ = wv[(ci * mg + oc % mg) * plane_k + kp];
                                    acc = xv_.mul_add(wv_, acc);
                                }
                            }
                        }
                        let y = if bias { acc + bv[oc] } else { acc };
                        want.push(crate::ops::math::canon_f32(y).to_bits());
                    }
                }
            }
            for (how, res) in results {
                let y = res.unwrap().remove(0);
                prop_assert_eq!(y.shape(), &[vec![n, m], out.clone()].concat()[..], "{}", how);
                let got: Vec<u32> = y.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
                prop_assert_eq!(&got, &want, "{}", how);
            }
        }
    }
}
