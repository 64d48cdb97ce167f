//! Small helpers shared by operator implementations.

use deed_types::{DType, Tensor};

use super::{InferInput, TypeInfo};
use crate::error::OpError;

/// The `i`-th input of a running node, required.
pub fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, OpError> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or(OpError::MissingInput { index: i })
}

/// The `i`-th input of a running node, if present.
pub fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// The `i`-th input while planning, required.
pub fn infer_input<'a>(
    inputs: &[Option<InferInput<'a>>],
    i: usize,
) -> Result<InferInput<'a>, OpError> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or(OpError::MissingInput { index: i })
}

/// The `i`-th input while planning, required to be of a float dtype.
pub fn float_infer_input<'a>(
    inputs: &[Option<InferInput<'a>>],
    i: usize,
) -> Result<InferInput<'a>, OpError> {
    let x = infer_input(inputs, i)?;
    if x.ty.dtype.is_float() {
        Ok(x)
    } else {
        Err(OpError::DType {
            index: i,
            dtype: x.ty.dtype,
        })
    }
}

/// The one integer (i32 or i64) an optional input holds, if present.
pub fn opt_scalar_i64(inputs: &[Option<&Tensor>], i: usize) -> Result<Option<i64>, OpError> {
    opt_input(inputs, i)
        .map(|t| match to_i64s(t)?.as_slice() {
            [v] => Ok(*v),
            _ => Err(OpError::shape(format!(
                "input {i} must hold one integer, it holds {}",
                t.len()
            ))),
        })
        .transpose()
}

/// The `i`-th input while planning, if present.
pub fn opt_infer_input<'a>(inputs: &[Option<InferInput<'a>>], i: usize) -> Option<InferInput<'a>> {
    inputs.get(i).copied().flatten()
}

/// Checks the number of input slots.
pub fn check_count(actual: usize, min: usize, max: usize) -> Result<(), OpError> {
    if actual < min || actual > max {
        Err(OpError::InputCount { min, max, actual })
    } else {
        Ok(())
    }
}

/// A dtype mismatch error unless `actual` is `expected`.
pub fn same_dtype(expected: DType, actual: DType) -> Result<(), OpError> {
    if expected != actual {
        return Err(OpError::DTypeMismatch { expected, actual });
    }
    Ok(())
}

/// An operator's cost at `per` operation units for each element of its outputs (at
/// least 1).
pub fn per_output_element(outputs: &[TypeInfo], per: u64) -> u64 {
    outputs
        .iter()
        .map(|t| t.numel())
        .sum::<u64>()
        .saturating_mul(per)
        .max(1)
}

/// An operator's cost at `per` operation units for each element of its first input
/// (at least 1).
pub fn per_input_element(inputs: &[Option<&TypeInfo>], per: u64) -> u64 {
    inputs
        .first()
        .copied()
        .flatten()
        .map(|t| t.numel().saturating_mul(per))
        .unwrap_or(1)
        .max(1)
}

/// Numpy-style multidirectional broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(OpError::shape(format!(
                "shapes {a:?} and {b:?} do not broadcast"
            )));
        };
    }
    Ok(out)
}

/// Broadcast of any number of shapes.
pub fn broadcast_all<'a>(
    shapes: impl IntoIterator<Item = &'a [usize]>,
) -> Result<Vec<usize>, OpError> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = broadcast_shapes(&out, s)?;
    }
    Ok(out)
}

/// Resolves a possibly negative axis against a rank: `[-rank, rank)`, so a scalar has
/// none.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let r = rank as i64;
    let a = if axis < 0 {
        axis.saturating_add(r)
    } else {
        axis
    };
    if a < 0 || a >= r {
        return Err(OpError::bad_attr(
            "axis",
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// Row-major strides of a shape (in elements).
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Number of elements of a shape, or a shape error on overflow.
pub fn numel(shape: &[usize]) -> Result<usize, OpError> {
    deed_types::tensor::numel(shape)
        .ok_or_else(|| OpError::shape(format!("shape {shape:?} overflows")))
}

/// For each element of `out_shape` (row-major), the flat index of the element of a
/// tensor of shape `in_shape` that broadcasts to it.
pub fn broadcast_offsets(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let n: usize = out_shape.iter().product();
    let rank = out_shape.len();
    let pad = rank - in_shape.len();
    let in_strides = strides(in_shape);
    // Stride 0 on broadcast dimensions.
    let eff: Vec<usize> = (0..rank)
        .map(|i| {
            if i < pad || in_shape[i - pad] == 1 {
                0
            } else {
                in_strides[i - pad]
            }
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    let mut off = 0usize;
    for _ in 0..n {
        out.push(off);
        for d in (0..rank).rev() {
            idx[d] += 1;
            off += eff[d];
            if idx[d] < out_shape[d] {
                break;
            }
            off -= eff[d] * idx[d];
            idx[d] = 0;
        }
    }
    out
}

/// Reads an integer tensor (i64 or i32) as `i64`s.
pub fn to_i64s(t: &Tensor) -> Result<Vec<i64>, OpError> {
    if let Some(v) = t.as_slice::<i64>() {
        Ok(v.to_vec())
    } else if let Some(v) = t.as_slice::<i32>() {
        Ok(v.iter().map(|&x| x as i64).collect())
    } else {
        Err(OpError::DType {
            index: 0,
            dtype: t.dtype(),
        })
    }
}

/// The value of a planning input, or [`OpError::ValueNeeded`].
pub fn need_value<'a>(inp: InferInput<'a>, index: usize) -> Result<&'a Tensor, OpError> {
    inp.value.ok_or(OpError::ValueNeeded { index })
}

/// Checks that a dtype is one of `allowed`.
pub fn check_dtype(index: usize, dtype: DType, allowed: &[DType]) -> Result<(), OpError> {
    if allowed.contains(&dtype) {
        Ok(())
    } else {
        Err(OpError::DType { index, dtype })
    }
}

/// Shorthand to build a one-output inference result.
pub fn one(dtype: DType, shape: Vec<usize>) -> Result<Vec<TypeInfo>, OpError> {
    Ok(vec![TypeInfo::new(dtype, shape)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(),
            vec![2, 4, 3]
        );
        assert_eq!(broadcast_shapes(&[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_shapes(&[2], &[3]).is_err());
    }

    #[test]
    fn offsets_follow_broadcast() {
        assert_eq!(broadcast_offsets(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_offsets(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_offsets(&[], &[2]), vec![0, 0]);
    }

    #[test]
    fn axes() {
        assert_eq!(norm_axis(-1, 3).unwrap(), 2);
        assert!(norm_axis(3, 3).is_err());
        assert!(norm_axis(-4, 3).is_err());
        assert!(norm_axis(0, 0).is_err());
        assert!(norm_axis(-1, 0).is_err());
        assert!(norm_axis(i64::MIN, 2).is_err());
    }
}
