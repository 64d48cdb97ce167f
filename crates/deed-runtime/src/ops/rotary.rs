//! `RotaryEmbedding` (opset 23): rotary positional embeddings (RoPE) of 3-D
//! (`[batch, seq, heads · size]`) or 4-D (`[batch, heads, seq, size]`) inputs.
//!
//! The first `rotary_embedding_dim` values of every head (all by default) form pairs
//! (the two halves, or neighbours when `interleaved`); a pair `(x1, x2)` at position
//! `p` becomes `(cos·x1 − sin·x2, sin·x1 + cos·x2)` with `cos`, `sin` the caches' row
//! `p` (`position_ids`) or the (batch, seq) row. Each product and each sum is rounded
//! on its own, as the operator's function body (separate `Mul`, `Sub`, `Add`) does;
//! f16 rounds every one to f16.

use deed_types::{DType, Tensor, TensorData};

use super::util::{
    check_count, infer_input, input, opt_infer_input, opt_input, same_dtype, to_i64s,
};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("RotaryEmbedding", |n: &NodeInfo<'_>| {
        check_count(n.num_inputs, 3, 4)?;
        let a = n.attrs;
        let nonneg = |name: &'static str| -> Result<usize, OpError> {
            let v = a.int(name, 0)?;
            usize::try_from(v)
                .map_err(|_| OpError::bad_attr(name, format!("{name} {v} is negative")))
        };
        Ok(Box::new(Rotary {
            interleaved: a.int("interleaved", 0)? != 0,
            dim: nonneg("rotary_embedding_dim")?,
            heads: nonneg("num_heads")?,
        }))
    });
}

/// The `RotaryEmbedding` node's attributes (`0` for unset sizes).
#[derive(Debug)]
struct Rotary {
    interleaved: bool,
    dim: usize,
    heads: usize,
}

/// The sizes of one rotation.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    heads: usize,
    size: usize,
    /// Values of a head that rotate (even).
    rot: usize,
    /// `[batch, seq, heads · size]` rather than `[batch, heads, seq, size]`.
    packed: bool,
}

fn err(msg: String) -> OpError {
    OpError::shape(format!("RotaryEmbedding: {msg}"))
}

impl Rotary {
    fn dims(
        &self,
        x: &[usize],
        cos: &[usize],
        sin: &[usize],
        pos: Option<&[usize]>,
    ) -> Result<Dims, OpError> {
        let (batch, seq, heads, size, packed) = match *x {
            [b, s, hidden] => {
                if self.heads == 0 || !hidden.is_multiple_of(self.heads) {
                    return Err(err(format!(
                        "3-D input {x:?} needs num_heads dividing its last dimension"
                    )));
                }
                (b, s, self.heads, hidden / self.heads, true)
            }
            [b, h, s, d] => (b, s, h, d, false),
            _ => return Err(err(format!("input {x:?} is neither 3-D nor 4-D"))),
        };
        let rot = if self.dim == 0 { size } else { self.dim };
        if rot > size || !rot.is_multiple_of(2) {
            return Err(err(format!(
                "rotary_embedding_dim {rot} is odd or exceeds the head size {size}"
            )));
        }
        if cos != sin {
            return Err(err(format!(
                "cos_cache {cos:?} and sin_cache {sin:?} differ"
            )));
        }
        // With positions, one cached row per position; without, one per (batch, seq).
        let fits = match pos {
            Some(p) => {
                if p != [batch, seq] {
                    return Err(err(format!("position_ids {p:?} is not [{batch}, {seq}]")));
                }
                cos.len() == 2 && cos[1] == rot / 2
            }
            None => cos == [batch, seq, rot / 2],
        };
        if !fits {
            return Err(err(format!(
                "cos_cache {cos:?} does not fit rows of {} values{}",
                rot / 2,
                if pos.is_some() {
                    ""
                } else {
                    " per (batch, seq)"
                }
            )));
        }
        Ok(Dims {
            batch,
            seq,
            heads,
            size,
            rot,
            packed,
        })
    }
}

/// Rotates `x` (f32 or f64 values; with `narrow`, f16 values rounded to f16 after
/// every operation).
#[allow(clippy::too_many_arguments)]
fn rotate<T>(
    d: &Dims,
    interleaved: bool,
    x: &[T],
    cos: &[T],
    sin: &[T],
    pos: Option<&[i64]>,
    narrow: impl Fn(T) -> T,
) -> Result<Vec<T>, OpError>
where
    T: Copy + std::ops::Mul<Output = T> + std::ops::Add<Output = T> + std::ops::Sub<Output = T>,
{
    let half = d.rot / 2;
    let rows = cos.len() / half.max(1);
    let mut out = x.to_vec();
    for b in 0..d.batch {
        for s in 0..d.seq {
            let row = match pos {
                Some(p) => {
                    let at = p[b * d.seq + s];
                    usize::try_from(at)
                        .ok()
                        .filter(|&r| r < rows)
                        .ok_or_else(|| {
                            OpError::value(format!(
                                "RotaryEmbedding: position {at} is outside the {rows} cached rows"
                            ))
                        })?
                }
                None => b * d.seq + s,
            };
            let (c, sn) = (&cos[row * half..][..half], &sin[row * half..][..half]);
            for h in 0..d.heads {
                let at = if d.packed {
                    ((b * d.seq + s) * d.heads + h) * d.size
                } else {
                    ((b * d.heads + h) * d.seq + s) * d.size
                };
                let head = &x[at..at + d.size];
                let dst = &mut out[at..at + d.size];
                for i in 0..half {
                    let (i1, i2) = if interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    let (x1, x2) = (head[i1], head[i2]);
                    dst[i1] = narrow(narrow(c[i] * x1) - narrow(sn[i] * x2));
                    dst[i2] = narrow(narrow(sn[i] * x1) + narrow(c[i] * x2));
                }
            }
        }
    }
    Ok(out)
}

impl Op for Rotary {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 4)?;
        let x = infer_input(inputs, 0)?;
        let cos = infer_input(inputs, 1)?;
        let sin = infer_input(inputs, 2)?;
        if !matches!(x.ty.dtype, DType::F32 | DType::F64 | DType::F16) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        for c in [cos, sin] {
            same_dtype(x.ty.dtype, c.ty.dtype)?;
        }
        let pos = opt_infer_input(inputs, 3);
        if let Some(p) = pos {
            if p.ty.dtype != DType::I64 {
                return Err(OpError::DType {
                    index: 3,
                    dtype: p.ty.dtype,
                });
            }
        }
        self.dims(
            &x.ty.shape,
            &cos.ty.shape,
            &sin.ty.shape,
            pos.map(|p| p.ty.shape.as_slice()),
        )?;
        Ok(vec![x.ty.clone()])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        super::util::per_input_element(inputs, 3)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 3, 4)?;
        let (x, cos, sin) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let pos_t = opt_input(inputs, 3);
        let d = self.dims(
            x.shape(),
            cos.shape(),
            sin.shape(),
            pos_t.map(|p| p.shape()),
        )?;
        let pos = pos_t.map(to_i64s).transpose()?;
        let pos = pos.as_deref();
        let mismatch = |t: &Tensor| OpError::DTypeMismatch {
            expected: x.dtype(),
            actual: t.dtype(),
        };
        let il = self.interleaved;
        let data = match (x.data(), cos.data(), sin.data()) {
            (TensorData::F32(v), TensorData::F32(c), TensorData::F32(s)) => {
                TensorData::F32(rotate(&d, il, v, c, s, pos, |a| a)?)
            }
            (TensorData::F64(v), TensorData::F64(c), TensorData::F64(s)) => {
                TensorData::F64(rotate(&d, il, v, c, s, pos, |a| a)?)
            }
            (TensorData::F16(v), TensorData::F16(c), TensorData::F16(s)) => {
                let wide = |h: &[half::f16]| h.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
                let r = |a: f32| half::f16::from_f32(a).to_f32();
                let out = rotate(&d, il, &wide(v), &wide(c), &wide(s), pos, r)?;
                TensorData::F16(out.into_iter().map(half::f16::from_f32).collect())
            }
            (TensorData::F32(_) | TensorData::F64(_) | TensorData::F16(_), _, _) => {
                let other = if cos.dtype() != x.dtype() { cos } else { sin };
                return Err(mismatch(other));
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;

    fn rot(interleaved: bool, dim: usize, heads: usize) -> Rotary {
        Rotary {
            interleaved,
            dim,
            heads,
        }
    }

    fn run(op: &Rotary, inputs: &[Option<&Tensor>]) -> Result<Tensor, OpError> {
        op.run(inputs, &Ctx::new(KernelMode::Fast, 1))
            .map(|mut v| v.remove(0))
    }

    #[test]
    fn pairs_rotate_by_their_position() {
        // One head of 4 values at positions 0 and 1: halves (x0, x2) and (x1, x3)
        // rotate; position 1's angle is a quarter turn (cos 0, sin 1).
        let x = Tensor::from_vec(
            vec![1, 1, 2, 4],
            vec![1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0],
        )
        .unwrap();
        let cos = Tensor::from_vec(vec![2, 2], vec![1.0f32, 1.0, 0.0, 0.0]).unwrap();
        let sin = Tensor::from_vec(vec![2, 2], vec![0.0f32, 0.0, 1.0, 1.0]).unwrap();
        let pos = Tensor::from_vec(vec![1, 2], vec![0i64, 1]).unwrap();
        let y = run(
            &rot(false, 0, 0),
            &[Some(&x), Some(&cos), Some(&sin), Some(&pos)],
        )
        .unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[1.0, 2.0, 3.0, 4.0, -3.0, -4.0, 1.0, 2.0]
        );
        // Interleaved: the pairs are neighbours (x0, x1) and (x2, x3).
        let y = run(
            &rot(true, 0, 0),
            &[Some(&x), Some(&cos), Some(&sin), Some(&pos)],
        )
        .unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[1.0, 2.0, 3.0, 4.0, -2.0, 1.0, -4.0, 3.0]
        );
        // Only the first two values of each head rotate.
        let half = |v: Vec<f32>| Tensor::from_vec(vec![2, 1], v).unwrap();
        let y = run(
            &rot(false, 2, 0),
            &[
                Some(&x),
                Some(&half(vec![1.0, 0.0])),
                Some(&half(vec![0.0, 1.0])),
                Some(&pos),
            ],
        )
        .unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[1.0, 2.0, 3.0, 4.0, -2.0, 1.0, 3.0, 4.0]
        );
    }

    #[test]
    fn bad_caches_positions_and_heads_are_typed_errors() {
        let x = Tensor::from_vec(vec![1, 2, 4], vec![0.5f32; 8]).unwrap();
        let cache = Tensor::from_vec(vec![2, 2], vec![1.0f32; 4]).unwrap();
        let pos = Tensor::from_vec(vec![1, 2], vec![0i64, 2]).unwrap();
        let msg = |r: Result<Tensor, OpError>| r.unwrap_err().to_string();
        // A 3-D input names its heads.
        assert!(msg(run(
            &rot(false, 0, 0),
            &[Some(&x), Some(&cache), Some(&cache), Some(&pos)]
        ))
        .contains("num_heads"));
        // Position 2 is past the two cached rows.
        assert!(msg(run(
            &rot(false, 0, 1),
            &[Some(&x), Some(&cache), Some(&cache), Some(&pos)]
        ))
        .contains("outside"));
        // An odd rotary dimension.
        assert!(msg(run(
            &rot(false, 3, 1),
            &[Some(&x), Some(&cache), Some(&cache), Some(&pos)]
        ))
        .contains("odd"));
        // Without positions the caches hold one row per (batch, seq).
        let flat = Tensor::from_vec(vec![3, 2], vec![1.0f32; 6]).unwrap();
        assert!(msg(run(
            &rot(false, 0, 1),
            &[Some(&x), Some(&flat), Some(&flat)]
        ))
        .contains("does not fit"));
    }
}
