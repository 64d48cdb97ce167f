//! `Col2Im` (opset 18): the inverse of an im2col — sliding blocks (`[N, C·∏block, L]`)
//! summed back into an image (`[N, C, *image_shape]`), with strides, dilations and
//! pads.
//!
//! Canonical order (the reference implementation's loops): per channel, the block's
//! offsets `k` in row-major order, then the block positions in row-major order; each
//! contribution is added to its image element in that order, from +0.

use deed_types::{DType, Tensor, TensorData};

use super::shape::{known_ints, run_ints};
use super::util::{check_count, infer_input, input, numel};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("Col2Im", |n: &NodeInfo<'_>| {
        Ok(Box::new(Col2Im {
            dilations: n.attrs.ints("dilations")?,
            pads: n.attrs.ints("pads")?,
            strides: n.attrs.ints("strides")?,
        }))
    });
}

#[derive(Debug)]
struct Col2Im {
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
}

/// One spatial dimension: image size, block size, dilation, pad before, stride, and
/// the number of block positions.
#[derive(Debug, Clone, Copy)]
struct Dim {
    image: usize,
    block: usize,
    dil: usize,
    pad: usize,
    stride: usize,
    positions: usize,
}

impl Col2Im {
    /// Checks the shapes against each other; returns the output shape and the
    /// spatial dimensions.
    fn layout(
        &self,
        x: &[usize],
        image: &[i64],
        block: &[i64],
    ) -> Result<(Vec<usize>, Vec<Dim>), OpError> {
        let err = |m: String| OpError::shape(format!("Col2Im: {m}"));
        let r = image.len();
        let size = |v: &[i64], what: &str| -> Result<Vec<usize>, OpError> {
            v.iter()
                .map(|&d| {
                    usize::try_from(d)
                        .ok()
                        .filter(|&d| d > 0)
                        .ok_or_else(|| err(format!("{what} {v:?} is not positive")))
                })
                .collect()
        };
        let attr = |v: &Option<Vec<i64>>,
                    n: usize,
                    default: i64,
                    what: &str|
         -> Result<Vec<usize>, OpError> {
            let v = v.clone().unwrap_or_else(|| vec![default; n]);
            if v.len() != n || v.iter().any(|&x| x < 0 || (default == 1 && x == 0)) {
                return Err(err(format!(
                    "{what} {v:?} do not fit {r} spatial dimensions"
                )));
            }
            Ok(v.into_iter().map(|x| x as usize).collect())
        };
        let (image, block) = (size(image, "image_shape")?, size(block, "block_shape")?);
        if r == 0 || block.len() != r {
            return Err(err(format!(
                "image_shape {image:?} and block_shape {block:?} differ in rank"
            )));
        }
        let (dil, strides, pads) = (
            attr(&self.dilations, r, 1, "dilations")?,
            attr(&self.strides, r, 1, "strides")?,
            attr(&self.pads, 2 * r, 0, "pads")?,
        );
        let [n, ck, l] = x[..] else {
            return Err(err(format!("input {x:?} is not 3-D")));
        };
        let k: usize = block.iter().product();
        if ck % k != 0 {
            return Err(err(format!(
                "input {x:?}: {ck} is not a multiple of the block size {k}"
            )));
        }
        let mut dims = Vec::with_capacity(r);
        for i in 0..r {
            let span = dil[i] * (block[i] - 1) + 1;
            let padded = image[i] + pads[i] + pads[r + i];
            if padded < span {
                return Err(err(format!(
                    "block {block:?} does not fit the padded image"
                )));
            }
            dims.push(Dim {
                image: image[i],
                block: block[i],
                dil: dil[i],
                pad: pads[i],
                stride: strides[i],
                positions: (padded - span) / strides[i] + 1,
            });
        }
        let positions: usize = dims.iter().map(|d| d.positions).product();
        if positions != l {
            return Err(err(format!(
                "input {x:?} has {l} blocks where the image takes {positions}"
            )));
        }
        let mut out = vec![n, ck / k];
        out.extend_from_slice(&image);
        numel(&out)?;
        Ok((out, dims))
    }
}

/// Sums the blocks of `x` into images.
fn fold<T: Copy + std::ops::Add<Output = T>>(
    x: &[T],
    zero: T,
    out_shape: &[usize],
    dims: &[Dim],
) -> Vec<T> {
    let (n, c) = (out_shape[0], out_shape[1]);
    let plane: usize = dims.iter().map(|d| d.image).product();
    let k: usize = dims.iter().map(|d| d.block).product();
    let l: usize = dims.iter().map(|d| d.positions).product();
    let mut out = vec![zero; n * c * plane];
    let r = dims.len();
    let mut ko = vec![0usize; r];
    let mut bo = vec![0usize; r];
    for b in 0..n {
        for ch in 0..c {
            let img = &mut out[(b * c + ch) * plane..(b * c + ch + 1) * plane];
            for kk in 0..k {
                // Row-major offsets of block element kk.
                let mut rest = kk;
                for i in (0..r).rev() {
                    ko[i] = rest % dims[i].block;
                    rest /= dims[i].block;
                }
                let row = &x[((b * c + ch) * k + kk) * l..((b * c + ch) * k + kk + 1) * l];
                for (p, &v) in row.iter().enumerate() {
                    let mut rest = p;
                    for i in (0..r).rev() {
                        bo[i] = rest % dims[i].positions;
                        rest /= dims[i].positions;
                    }
                    let mut at = 0usize;
                    let mut inside = true;
                    for i in 0..r {
                        let d = dims[i];
                        let pos = (bo[i] * d.stride + ko[i] * d.dil) as i64 - d.pad as i64;
                        inside &= (0..d.image as i64).contains(&pos);
                        at = at * d.image + pos.max(0) as usize;
                    }
                    if inside {
                        img[at] = img[at] + v;
                    }
                }
            }
        }
    }
    out
}

impl Op for Col2Im {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 3)?;
        let x = infer_input(inputs, 0)?;
        let image = known_ints(inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?;
        let block = known_ints(inputs, 2)?.ok_or(OpError::MissingInput { index: 2 })?;
        if !matches!(
            x.ty.dtype,
            DType::F32 | DType::F64 | DType::F16 | DType::I32 | DType::I64
        ) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        let (out, _) = self.layout(&x.ty.shape, &image, &block)?;
        Ok(vec![TypeInfo::new(x.ty.dtype, out)])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 3, 3)?;
        let x = input(inputs, 0)?;
        let image = run_ints(inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?;
        let block = run_ints(inputs, 2)?.ok_or(OpError::MissingInput { index: 2 })?;
        let (out, dims) = self.layout(x.shape(), &image, &block)?;
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(fold(v, 0.0, &out, &dims)),
            TensorData::F64(v) => TensorData::F64(fold(v, 0.0, &out, &dims)),
            TensorData::I32(v) => TensorData::I32(fold(v, 0, &out, &dims)),
            TensorData::I64(v) => TensorData::I64(fold(v, 0, &out, &dims)),
            TensorData::F16(h) => {
                let w: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
                TensorData::F16(
                    fold(&w, 0.0, &out, &dims)
                        .into_iter()
                        .map(half::f16::from_f32)
                        .collect(),
                )
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

    #[test]
    fn overlapping_blocks_add_up_and_bad_counts_are_errors() {
        // A 1×3 image from blocks of 1×2 at stride 1: two positions, the middle
        // element covered by both.
        let op = Col2Im {
            dilations: None,
            pads: None,
            strides: None,
        };
        let x = Tensor::from_vec(vec![1, 2, 2], vec![1.0f32, 10.0, 100.0, 1000.0]).unwrap();
        let image = Tensor::from_vec(vec![2], vec![1i64, 3]).unwrap();
        let block = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
        let y = op
            .run(&[Some(&x), Some(&image), Some(&block)], &Ctx::default())
            .unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 1, 3]);
        // Element 0: block offset 0 of position 0; element 1: offset 0 of position 1
        // plus offset 1 of position 0; element 2: offset 1 of position 1.
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1.0, 110.0, 1000.0]);
        let wrong = Tensor::from_vec(vec![1, 2, 3], vec![0.0f32; 6]).unwrap();
        let e = op
            .run(&[Some(&wrong), Some(&image), Some(&block)], &Ctx::default())
            .unwrap_err();
        assert!(e.to_string().contains("blocks"), "{e}");
    }
}
