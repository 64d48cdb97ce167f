//! The recurrent layers `RNN`, `GRU` and `LSTM` (opsets 7, 14, 22): forward, reverse
//! or bidirectional, sequence-first or batch-first (`layout`), with biases, initial
//! states, per-row `sequence_lens`, LSTM peepholes and `input_forget`, GRU's
//! `linear_before_reset`, `clip`, and the activation functions the standard lists.
//!
//! Each step follows the ONNX reference implementation's expressions, every
//! operation rounded on its own: the products `x·Wᵀ` and `h·Rᵀ` are canonical
//! matrix products (a sequential fused multiply-add per output), the gate input is
//! `(x·Wᵀ + h·Rᵀ) + (Wb + Rb)`, and the activations are the crate's canonical unary
//! functions. `docs/canonical-semantics.md` writes out each cell.

use deed_types::{DType, Tensor, TensorData};

use super::elementwise::Float;
use super::unary::{apply_float, Kind};
use super::util::{
    check_count, infer_input, input, opt_infer_input, opt_input, same_dtype, to_i64s,
};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;
use crate::kernels::{gemm, Mat, Scalar};

pub(crate) fn register(r: &mut Registry) {
    r.add("RNN", |n| build(n, Cell::Rnn));
    r.add("GRU", |n| {
        let linear = n.attrs.int("linear_before_reset", 0)? != 0;
        build(n, Cell::Gru { linear })
    });
    r.add("LSTM", |n| {
        let input_forget = n.attrs.int("input_forget", 0)? != 0;
        build(n, Cell::Lstm { input_forget })
    });
}

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Rnn,
    /// `linear`: `linear_before_reset`.
    Gru {
        linear: bool,
    },
    Lstm {
        input_forget: bool,
    },
}

impl Cell {
    fn name(self) -> &'static str {
        match self {
            Cell::Rnn => "RNN",
            Cell::Gru { .. } => "GRU",
            Cell::Lstm { .. } => "LSTM",
        }
    }

    /// Gates per hidden unit.
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    /// Activation functions per direction, and their defaults.
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

/// An activation function of the recurrent layers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    /// One of the unary operators.
    Unary(Kind),
    /// `α·x + β`.
    Affine(f32, f32),
    /// `α·tanh(β·x)`.
    ScaledTanh(f32, f32),
}

impl Act {
    fn parse(name: &str, alpha: Option<f32>, beta: Option<f32>) -> Result<Act, OpError> {
        let a = |d: f32| alpha.unwrap_or(d);
        let b = |d: f32| beta.unwrap_or(d);
        Ok(match name.to_ascii_lowercase().as_str() {
            "sigmoid" => Act::Unary(Kind::Sigmoid),
            "tanh" => Act::Unary(Kind::Tanh),
            "relu" => Act::Unary(Kind::Relu),
            "softsign" => Act::Unary(Kind::Softsign),
            "softplus" => Act::Unary(Kind::Softplus),
            "leakyrelu" => Act::Unary(Kind::LeakyRelu { alpha: a(0.01) }),
            "thresholdedrelu" => Act::Unary(Kind::ThresholdedRelu { alpha: a(1.0) }),
            "elu" => Act::Unary(Kind::Elu { alpha: a(1.0) }),
            "hardsigmoid" => Act::Unary(Kind::HardSigmoid {
                alpha: a(0.2),
                beta: b(0.5),
            }),
            "affine" => Act::Affine(a(1.0), b(0.0)),
            "scaledtanh" => Act::ScaledTanh(a(1.0), b(1.0)),
            other => {
                return Err(OpError::unsupported(format!(
                    "recurrent activation function {other:?}"
                )))
            }
        })
    }

    #[inline]
    fn apply<F: Float>(self, x: F) -> F {
        match self {
            Act::Unary(k) => apply_float(k, x),
            Act::Affine(a, b) => F::from_f32(a) * x + F::from_f32(b),
            Act::ScaledTanh(a, b) => F::from_f32(a) * apply_float(Kind::Tanh, F::from_f32(b) * x),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

/// An `RNN`, `GRU` or `LSTM` node.
#[derive(Debug)]
struct Recurrent {
    cell: Cell,
    hidden: Option<usize>,
    direction: Direction,
    /// `layout = 1`: batch-first inputs and outputs.
    batch_first: bool,
    clip: Option<f32>,
    /// The activation functions, those of the forward direction first.
    acts: Vec<Act>,
}

fn build(n: &NodeInfo<'_>, cell: Cell) -> Result<Box<dyn Op>, OpError> {
    let most = if matches!(cell, Cell::Lstm { .. }) {
        8
    } else {
        6
    };
    check_count(n.num_inputs, 3, most)?;
    let a = n.attrs;
    let direction = match a.string("direction", "forward")?.as_str() {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        other => {
            return Err(OpError::bad_attr(
                "direction",
                format!("direction {other:?} is not forward, reverse or bidirectional"),
            ))
        }
    };
    let dirs = if direction == Direction::Bidirectional {
        2
    } else {
        1
    };
    let per = cell.default_activations().len();
    let names: Vec<String> = match a.strings("activations")? {
        Some(v) => v,
        None => cell
            .default_activations()
            .iter()
            .cycle()
            .take(per * dirs)
            .map(|s| (*s).to_owned())
            .collect(),
    };
    if names.len() != per * dirs {
        return Err(OpError::bad_attr(
            "activations",
            format!(
                "{} takes {} activation functions for {dirs} direction(s), not {}",
                cell.name(),
                per * dirs,
                names.len()
            ),
        ));
    }
    let alphas = a.floats("activation_alpha")?.unwrap_or_default();
    let betas = a.floats("activation_beta")?.unwrap_or_default();
    let acts = names
        .iter()
        .enumerate()
        .map(|(i, name)| Act::parse(name, alphas.get(i).copied(), betas.get(i).copied()))
        .collect::<Result<Vec<_>, _>>()?;
    let hidden = match a.opt_int("hidden_size")? {
        None => None,
        Some(h) if h > 0 => Some(h as usize),
        Some(h) => {
            return Err(OpError::bad_attr(
                "hidden_size",
                format!("hidden_size {h} is not positive"),
            ))
        }
    };
    let clip = match a.opt_float("clip")? {
        Some(c) if c.is_nan() || c <= 0.0 => {
            return Err(OpError::bad_attr(
                "clip",
                format!("clip {c} is not positive"),
            ))
        }
        c => c,
    };
    Ok(Box::new(Recurrent {
        cell,
        hidden,
        direction,
        batch_first: a.int("layout", 0)? != 0,
        clip,
        acts,
    }))
}

/// The sizes of one recurrent layer.
#[derive(Debug, Clone, Copy)]
struct Dims {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    dirs: usize,
}

impl Recurrent {
    fn dims(&self, shape: impl Fn(usize) -> Option<Vec<usize>>) -> Result<Dims, OpError> {
        let name = self.cell.name();
        let err = |msg: String| OpError::shape(format!("{name}: {msg}"));
        let x = shape(0).ok_or_else(|| err("input X is missing".into()))?;
        let w = shape(1).ok_or_else(|| err("input W is missing".into()))?;
        let r = shape(2).ok_or_else(|| err("input R is missing".into()))?;
        let [a0, a1, input] = x[..] else {
            return Err(err(format!("X {x:?} is not 3-D")));
        };
        let (seq, batch) = if self.batch_first { (a1, a0) } else { (a0, a1) };
        let dirs = if self.direction == Direction::Bidirectional {
            2
        } else {
            1
        };
        let g = self.cell.gates();
        let hidden = match (self.hidden, r.get(2)) {
            (Some(h), _) => h,
            (None, Some(&h)) => h,
            (None, None) => return Err(err(format!("R {r:?} is not 3-D"))),
        };
        if w != [dirs, g * hidden, input] {
            return Err(err(format!(
                "W {w:?} is not [{dirs}, {}, {input}]",
                g * hidden
            )));
        }
        if r != [dirs, g * hidden, hidden] {
            return Err(err(format!(
                "R {r:?} is not [{dirs}, {}, {hidden}]",
                g * hidden
            )));
        }
        if let Some(b) = shape(3) {
            if b != [dirs, 2 * g * hidden] {
                return Err(err(format!("B {b:?} is not [{dirs}, {}]", 2 * g * hidden)));
            }
        }
        if let Some(l) = shape(4) {
            if l != [batch] {
                return Err(err(format!("sequence_lens {l:?} is not [{batch}]")));
            }
        }
        let state = if self.batch_first {
            [batch, dirs, hidden]
        } else {
            [dirs, batch, hidden]
        };
        for (i, what) in [(5, "initial_h"), (6, "initial_c")] {
            if let Some(s) = shape(i) {
                if s != state {
                    return Err(err(format!("{what} {s:?} is not {state:?}")));
                }
            }
        }
        if let Some(p) = shape(7) {
            if p != [dirs, 3 * hidden] {
                return Err(err(format!("P {p:?} is not [{dirs}, {}]", 3 * hidden)));
            }
        }
        Ok(Dims {
            seq,
            batch,
            input,
            hidden,
            dirs,
        })
    }

    fn out_shapes(&self, d: &Dims) -> (Vec<usize>, Vec<usize>) {
        if self.batch_first {
            (
                vec![d.batch, d.seq, d.dirs, d.hidden],
                vec![d.batch, d.dirs, d.hidden],
            )
        } else {
            (
                vec![d.seq, d.dirs, d.batch, d.hidden],
                vec![d.dirs, d.batch, d.hidden],
            )
        }
    }
}

/// The inputs of one layer in the computation type.
struct Inputs<'a, T> {
    x: &'a [T],
    w: &'a [T],
    r: &'a [T],
    b: Option<&'a [T]>,
    h0: Option<&'a [T]>,
    c0: Option<&'a [T]>,
    p: Option<&'a [T]>,
    lens: Vec<usize>,
}

/// `C = A·Bᵀ` for row-major `a` (m × k) and `b` (n × k): the canonical product.
fn product_t<T: Scalar>(
    ctx: &Ctx,
    a: &[T],
    m: usize,
    b: &[T],
    n: usize,
    k: usize,
) -> Result<Vec<T>, OpError> {
    let bad = || OpError::shape("recurrent operand smaller than its shape");
    let mut c = vec![T::ZERO; m * n];
    if c.is_empty() {
        return Ok(c);
    }
    let am = Mat::row_major(a, m, k).ok_or_else(bad)?;
    let bm = Mat::row_major(b, n, k).ok_or_else(bad)?.t();
    gemm(ctx, am, bm, &mut c)?;
    Ok(c)
}

fn clamp<F: Float>(x: F, clip: Option<f32>) -> F {
    match clip {
        Some(c) => {
            let (lo, hi) = (F::from_f32(-c), F::from_f32(c));
            if x < lo {
                lo
            } else if x > hi {
                hi
            } else {
                x
            }
        }
        None => x,
    }
}

/// A layer's Y, Y_h and Y_c.
type Layer<T> = (Vec<T>, Vec<T>, Vec<T>);

/// Runs the layer; returns Y, Y_h and Y_c in the sequence-first layout
/// (`[seq, dirs, batch, hidden]`, `[dirs, batch, hidden]`).
fn run_layer<T: Float + Scalar>(
    op: &Recurrent,
    d: &Dims,
    inp: &Inputs<'_, T>,
    ctx: &Ctx,
) -> Result<Layer<T>, OpError> {
    let (h, g) = (d.hidden, op.cell.gates());
    let gh = g * h;
    let per = op.cell.default_activations().len();
    // X as [seq, batch, input] rows.
    let x_rows: Vec<T> = if op.batch_first {
        let mut v = Vec::with_capacity(inp.x.len());
        for t in 0..d.seq {
            for b in 0..d.batch {
                let at = (b * d.seq + t) * d.input;
                v.extend_from_slice(&inp.x[at..at + d.input]);
            }
        }
        v
    } else {
        inp.x.to_vec()
    };
    let state_at = |dir: usize, b: usize| {
        if op.batch_first {
            (b * d.dirs + dir) * h
        } else {
            (dir * d.batch + b) * h
        }
    };
    let mut y = vec![<T as Float>::ZERO; d.seq * d.dirs * d.batch * h];
    let mut y_h = vec![<T as Float>::ZERO; d.dirs * d.batch * h];
    let mut y_c = vec![<T as Float>::ZERO; d.dirs * d.batch * h];
    for dir in 0..d.dirs {
        let reverse = op.direction == Direction::Reverse || dir == 1;
        let w = &inp.w[dir * gh * d.input..(dir + 1) * gh * d.input];
        let r = &inp.r[dir * gh * h..(dir + 1) * gh * h];
        // Wb + Rb, one rounding each.
        let bias: Vec<T> = match inp.b {
            Some(b) => {
                let b = &b[dir * 2 * gh..(dir + 1) * 2 * gh];
                (0..gh).map(|k| b[k] + b[gh + k]).collect()
            }
            None => vec![<T as Float>::ZERO; gh],
        };
        let (wb, rb) = match inp.b {
            Some(b) => {
                let b = &b[dir * 2 * gh..(dir + 1) * 2 * gh];
                (b[..gh].to_vec(), b[gh..].to_vec())
            }
            None => (vec![<T as Float>::ZERO; gh], vec![<T as Float>::ZERO; gh]),
        };
        let peep: Vec<T> = match inp.p {
            Some(p) => p[dir * 3 * h..(dir + 1) * 3 * h].to_vec(),
            None => vec![<T as Float>::ZERO; 3 * h],
        };
        let acts = &op.acts[dir * per..(dir + 1) * per];
        // x·Wᵀ for every step and row at once: [seq · batch, gates · hidden].
        let xw = product_t(ctx, &x_rows, d.seq * d.batch, w, gh, d.input)?;
        for b in 0..d.batch {
            let len = inp.lens[b];
            let s0 = state_at(dir, b);
            let mut hs: Vec<T> = inp
                .h0
                .map_or(vec![<T as Float>::ZERO; h], |v| v[s0..s0 + h].to_vec());
            let mut cs: Vec<T> = inp
                .c0
                .map_or(vec![<T as Float>::ZERO; h], |v| v[s0..s0 + h].to_vec());
            for k in 0..len {
                let t = if reverse { len - 1 - k } else { k };
                let xg = &xw[(t * d.batch + b) * gh..(t * d.batch + b + 1) * gh];
                match op.cell {
                    Cell::Rnn => {
                        let hr = product_t(ctx, &hs, 1, r, gh, h)?;
                        for j in 0..h {
                            let pre = clamp((xg[j] + hr[j]) + bias[j], op.clip);
                            hs[j] = acts[0].apply(pre);
                        }
                    }
                    Cell::Gru { linear } => {
                        // z and r from the first two gate blocks.
                        let hr = product_t(ctx, &hs, 1, &r[..2 * h * h], 2 * h, h)?;
                        let mut z = vec![<T as Float>::ZERO; h];
                        let mut rg = vec![<T as Float>::ZERO; h];
                        for j in 0..h {
                            z[j] = acts[0].apply(clamp((xg[j] + hr[j]) + bias[j], op.clip));
                            rg[j] = acts[0]
                                .apply(clamp((xg[h + j] + hr[h + j]) + bias[h + j], op.clip));
                        }
                        let rh = &r[2 * h * h..3 * h * h];
                        let cand: Vec<T> = if linear {
                            let hh = product_t(ctx, &hs, 1, rh, h, h)?;
                            (0..h)
                                .map(|j| {
                                    (xg[2 * h + j] + rg[j] * (hh[j] + rb[2 * h + j]))
                                        + wb[2 * h + j]
                                })
                                .collect()
                        } else {
                            let rs: Vec<T> = (0..h).map(|j| rg[j] * hs[j]).collect();
                            let hh = product_t(ctx, &rs, 1, rh, h, h)?;
                            (0..h)
                                .map(|j| ((xg[2 * h + j] + hh[j]) + wb[2 * h + j]) + rb[2 * h + j])
                                .collect()
                        };
                        for j in 0..h {
                            let c = acts[1].apply(clamp(cand[j], op.clip));
                            hs[j] = (<T as Float>::ONE - z[j]) * c + z[j] * hs[j];
                        }
                    }
                    Cell::Lstm { input_forget } => {
                        let hr = product_t(ctx, &hs, 1, r, gh, h)?;
                        // Gate blocks i, o, f, c; peepholes i, o, f.
                        let pre =
                            |q: usize, j: usize| (xg[q * h + j] + hr[q * h + j]) + bias[q * h + j];
                        for j in 0..h {
                            let i = acts[0].apply(clamp(pre(0, j) + peep[j] * cs[j], op.clip));
                            let f = if input_forget {
                                <T as Float>::ONE - i
                            } else {
                                acts[0].apply(clamp(pre(2, j) + peep[2 * h + j] * cs[j], op.clip))
                            };
                            let c = acts[1].apply(clamp(pre(3, j), op.clip));
                            let cn = f * cs[j] + i * c;
                            let o = acts[0].apply(clamp(pre(1, j) + peep[h + j] * cn, op.clip));
                            hs[j] = o * acts[2].apply(cn);
                            cs[j] = cn;
                        }
                    }
                }
                let at = ((t * d.dirs + dir) * d.batch + b) * h;
                y[at..at + h].copy_from_slice(&hs);
            }
            let at = (dir * d.batch + b) * h;
            y_h[at..at + h].copy_from_slice(&hs);
            y_c[at..at + h].copy_from_slice(&cs);
        }
    }
    Ok((y, y_h, y_c))
}

/// Y from `[seq, dirs, batch, h]` to batch-first `[batch, seq, dirs, h]`.
fn y_batch_first<T: Copy>(d: &Dims, y: &[T]) -> Vec<T> {
    let h = d.hidden;
    let mut out = Vec::with_capacity(y.len());
    for b in 0..d.batch {
        for t in 0..d.seq {
            for dir in 0..d.dirs {
                let at = ((t * d.dirs + dir) * d.batch + b) * h;
                out.extend_from_slice(&y[at..at + h]);
            }
        }
    }
    out
}

/// A state from `[dirs, batch, h]` to batch-first `[batch, dirs, h]`.
fn state_batch_first<T: Copy>(d: &Dims, state: &[T]) -> Vec<T> {
    let h = d.hidden;
    let mut out = Vec::with_capacity(state.len());
    for b in 0..d.batch {
        for dir in 0..d.dirs {
            let at = (dir * d.batch + b) * h;
            out.extend_from_slice(&state[at..at + h]);
        }
    }
    out
}

impl Op for Recurrent {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let dt = x.ty.dtype;
        if !matches!(dt, DType::F32 | DType::F64 | DType::F16) {
            return Err(OpError::DType {
                index: 0,
                dtype: dt,
            });
        }
        for i in [1, 2, 3, 5, 6, 7] {
            if let Some(t) = opt_infer_input(inputs, i) {
                same_dtype(dt, t.ty.dtype)?;
            }
        }
        if let Some(l) = opt_infer_input(inputs, 4) {
            if !matches!(l.ty.dtype, DType::I32 | DType::I64) {
                return Err(OpError::DType {
                    index: 4,
                    dtype: l.ty.dtype,
                });
            }
        }
        let d = self.dims(|i| opt_infer_input(inputs, i).map(|t| t.ty.shape.clone()))?;
        let (ys, hs) = self.out_shapes(&d);
        let mut out = vec![TypeInfo::new(dt, ys), TypeInfo::new(dt, hs.clone())];
        if matches!(self.cell, Cell::Lstm { .. }) {
            out.push(TypeInfo::new(dt, hs));
        }
        Ok(out)
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        let Ok(d) = self.dims(|i| inputs.get(i).copied().flatten().map(|t| t.shape.clone())) else {
            return 1;
        };
        let gh = (self.cell.gates() * d.hidden) as u64;
        let steps = (d.seq * d.batch * d.dirs) as u64;
        // Both products, and the gates' elementwise steps and activations.
        steps
            .saturating_mul(
                gh.saturating_mul((d.input + d.hidden) as u64)
                    .saturating_add(gh * 16),
            )
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let d = self.dims(|i| opt_input(inputs, i).map(|t| t.shape().to_vec()))?;
        let x = input(inputs, 0)?;
        let lens: Vec<usize> = match opt_input(inputs, 4) {
            None => vec![d.seq; d.batch],
            Some(l) => to_i64s(l)?
                .into_iter()
                .map(|v| {
                    usize::try_from(v)
                        .ok()
                        .filter(|&v| v <= d.seq)
                        .ok_or_else(|| {
                            OpError::value(format!(
                                "{}: sequence length {v} is outside 0..={}",
                                self.cell.name(),
                                d.seq
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let (ys, hs) = self.out_shapes(&d);
        macro_rules! go {
            ($t:ty, $get:expr, $wrap:expr) => {{
                let get = $get;
                let opt = |i: usize| opt_input(inputs, i).map(get).transpose();
                let (xv, wv, rv) = (get(x)?, get(input(inputs, 1)?)?, get(input(inputs, 2)?)?);
                let (bv, h0, c0, pv) = (opt(3)?, opt(5)?, opt(6)?, opt(7)?);
                let inp = Inputs::<$t> {
                    x: &xv,
                    w: &wv,
                    r: &rv,
                    b: bv.as_deref(),
                    h0: h0.as_deref(),
                    c0: c0.as_deref(),
                    p: pv.as_deref(),
                    lens,
                };
                let (y, yh, yc) = run_layer::<$t>(self, &d, &inp, ctx)?;
                let (y, yh, yc) = if self.batch_first {
                    (
                        y_batch_first(&d, &y),
                        state_batch_first(&d, &yh),
                        state_batch_first(&d, &yc),
                    )
                } else {
                    (y, yh, yc)
                };
                let wrap = $wrap;
                (wrap(y), wrap(yh), wrap(yc))
            }};
        }
        let typed = |t: &Tensor| -> Result<Vec<f32>, OpError> {
            t.as_slice::<f32>()
                .map(<[f32]>::to_vec)
                .ok_or(OpError::DType {
                    index: 0,
                    dtype: t.dtype(),
                })
        };
        let (y, yh, yc) = match x.dtype() {
            DType::F32 => go!(f32, typed, TensorData::F32),
            DType::F64 => go!(
                f64,
                |t: &Tensor| -> Result<Vec<f64>, OpError> {
                    t.as_slice::<f64>()
                        .map(<[f64]>::to_vec)
                        .ok_or(OpError::DType {
                            index: 0,
                            dtype: t.dtype(),
                        })
                },
                TensorData::F64
            ),
            // f16: computed in f32 and rounded once at the end, like the other
            // half-precision products.
            DType::F16 => go!(
                f32,
                |t: &Tensor| -> Result<Vec<f32>, OpError> {
                    t.as_slice::<half::f16>()
                        .map(|s| s.iter().map(|v| v.to_f32()).collect())
                        .ok_or(OpError::DType {
                            index: 0,
                            dtype: t.dtype(),
                        })
                },
                |v: Vec<f32>| TensorData::F16(v.into_iter().map(half::f16::from_f32).collect())
            ),
            dt => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: dt,
                })
            }
        };
        let mut out = vec![Tensor::new(ys, y)?, Tensor::new(hs.clone(), yh)?];
        if matches!(self.cell, Cell::Lstm { .. }) {
            out.push(Tensor::new(hs, yc)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    fn layer(cell: Cell, direction: Direction, batch_first: bool) -> Recurrent {
        let dirs = if direction == Direction::Bidirectional {
            2
        } else {
            1
        };
        let acts = cell
            .default_activations()
            .iter()
            .cycle()
            .take(cell.default_activations().len() * dirs)
            .map(|n| Act::parse(n, None, None).unwrap())
            .collect();
        Recurrent {
            cell,
            hidden: None,
            direction,
            batch_first,
            clip: None,
            acts,
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.5
            })
            .collect()
    }

    fn t(shape: &[usize], seed: u64) -> Tensor {
        Tensor::from_vec(shape.to_vec(), values(shape.iter().product(), seed)).unwrap()
    }

    fn run(op: &Recurrent, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Vec<Tensor> {
        op.run(inputs, ctx).unwrap()
    }

    fn slice(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn a_single_tanh_step_is_its_definition() {
        // One step, one unit: h = tanh((x·w + h0·r) + (wb + rb)).
        let op = layer(Cell::Rnn, Direction::Forward, false);
        let x = Tensor::from_vec(vec![1, 1, 2], vec![0.5f32, -1.0]).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 2], vec![0.25f32, 0.75]).unwrap();
        let r = Tensor::from_vec(vec![1, 1, 1], vec![2.0f32]).unwrap();
        let b = Tensor::from_vec(vec![1, 2], vec![0.125f32, -0.5]).unwrap();
        let h0 = Tensor::from_vec(vec![1, 1, 1], vec![0.3f32]).unwrap();
        let out = run(
            &op,
            &[Some(&x), Some(&w), Some(&r), Some(&b), None, Some(&h0)],
            &Ctx::default(),
        );
        let xw = 0.5f32.mul_add(0.25, 0.0);
        let xw = (-1.0f32).mul_add(0.75, xw);
        let want = crate::ops::math::tanh_f32((xw + 0.3 * 2.0) + (0.125 - 0.5));
        assert_eq!(slice(&out[0]), [want]);
        assert_eq!(slice(&out[1]), [want]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// For each cell: the layer gives the same bits on 1–4 threads and with the
        /// reference kernels; a bidirectional layer is a forward and a reverse one side
        /// by side; batch-first is the transposed sequence-first layer; and a row with
        /// a shorter `sequence_lens` is the layer run on its prefix, zeros after.
        #[test]
        fn recurrent_layers_are_consistent(
            which in 0usize..3,
            seq in 1usize..5,
            batch in 1usize..4,
            input in 1usize..5,
            hidden in 1usize..5,
            seed in any::<u64>(),
            cut in 0usize..5,
        ) {
            let cell = [Cell::Rnn, Cell::Gru { linear: seed % 2 == 0 }, Cell::Lstm { input_forget: false }][which];
            let g = cell.gates();
            let x = t(&[seq, batch, input], seed);
            let w2 = t(&[2, g * hidden, input], seed ^ 1);
            let r2 = t(&[2, g * hidden, hidden], seed ^ 2);
            let b2 = t(&[2, 2 * g * hidden], seed ^ 3);
            let half = |v: &Tensor, d: usize| {
                let n = v.len() / 2;
                let mut shape = v.shape().to_vec();
                shape[0] = 1;
                Tensor::from_vec(shape, slice(v)[d * n..(d + 1) * n].to_vec()).unwrap()
            };
            let bi = layer(cell, Direction::Bidirectional, false);
            let ins = [Some(&x), Some(&w2), Some(&r2), Some(&b2)];
            let want = run(&bi, &ins, &Ctx::new(KernelMode::Reference, 1));
            for threads in 1..=4 {
                prop_assert_eq!(&run(&bi, &ins, &Ctx::new(KernelMode::Fast, threads)), &want);
            }
            // Forward and reverse halves.
            let ctx = Ctx::default();
            for (d, direction) in [(0, Direction::Forward), (1, Direction::Reverse)] {
                let (w, r, b) = (half(&w2, d), half(&r2, d), half(&b2, d));
                let one = run(&layer(cell, direction, false), &[Some(&x), Some(&w), Some(&r), Some(&b)], &ctx);
                let y = slice(&want[0]);
                for s in 0..seq {
                    let at = ((s * 2 + d) * batch) * hidden;
                    prop_assert_eq!(&slice(&one[0])[s * batch * hidden..(s + 1) * batch * hidden], &y[at..at + batch * hidden]);
                }
            }
            // Batch-first layout.
            let xb = Tensor::from_vec(vec![batch, seq, input], {
                let xs = slice(&x);
                let mut v = Vec::new();
                for b in 0..batch { for s in 0..seq { v.extend_from_slice(&xs[(s * batch + b) * input..(s * batch + b + 1) * input]); } }
                v
            }).unwrap();
            let bf = run(&layer(cell, Direction::Bidirectional, true), &[Some(&xb), Some(&w2), Some(&r2), Some(&b2)], &ctx);
            prop_assert_eq!(slice(&bf[0]), y_batch_first(&Dims { seq, batch, input, hidden, dirs: 2 }, &slice(&want[0])));
            // The last row stops after `cut` steps.
            let len = cut.min(seq);
            let mut lens = vec![seq as i64; batch];
            lens[batch - 1] = len as i64;
            let lens = Tensor::from_vec(vec![batch], lens).unwrap();
            let cut_out = run(&bi, &[Some(&x), Some(&w2), Some(&r2), Some(&b2), Some(&lens)], &ctx);
            let xs = slice(&x);
            let prefix = Tensor::from_vec(vec![len, 1, input], (0..len).flat_map(|s| xs[(s * batch + batch - 1) * input..(s * batch + batch) * input].to_vec()).collect()).unwrap();
            if len > 0 {
                let alone = run(&bi, &[Some(&prefix), Some(&w2), Some(&r2), Some(&b2)], &ctx);
                for d in 0..2 {
                    let at = (d * batch + batch - 1) * hidden;
                    prop_assert_eq!(&slice(&cut_out[1])[at..at + hidden], &slice(&alone[1])[d * hidden..(d + 1) * hidden]);
                }
            }
            for s in len..seq {
                for d in 0..2 {
                    let at = ((s * 2 + d) * batch + batch - 1) * hidden;
                    prop_assert!(slice(&cut_out[0])[at..at + hidden].iter().all(|&v| v == 0.0));
                }
            }
        }
    }

    #[test]
    fn bad_shapes_and_attributes_are_typed_errors() {
        let op = layer(
            Cell::Lstm {
                input_forget: false,
            },
            Direction::Forward,
            false,
        );
        let x = t(&[2, 1, 3], 1);
        let w = t(&[1, 8, 3], 2);
        let r_bad = t(&[1, 8, 3], 3);
        let e = op
            .run(&[Some(&x), Some(&w), Some(&r_bad)], &Ctx::default())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("LSTM: W [1, 8, 3] is not [1, 12, 3]"),
            "{e}"
        );
        let r = t(&[1, 8, 2], 3);
        let lens = Tensor::from_vec(vec![1], vec![3i32]).unwrap();
        let e = op
            .run(
                &[Some(&x), Some(&w), Some(&r), None, Some(&lens)],
                &Ctx::default(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("sequence length 3"), "{e}");
        assert!(Act::parse("Swoosh", None, None).is_err());
    }
}
