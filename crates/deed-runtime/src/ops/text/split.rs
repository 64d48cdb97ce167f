//! `StringSplit` (opset 20): splits every string at a delimiter, or at runs of
//! whitespace, into a padded last axis.
//!
//! The last axis is as long as the most pieces any element gives, so the input's
//! value is needed while planning (unless it has no elements).

use deed_types::{DType, Tensor, TensorData};

use crate::error::OpError;
use crate::ops::util::{check_count, check_dtype, infer_input, input, need_value};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// The characters whitespace splitting splits at: Unicode's `White_Space` property
/// (as of Unicode 17.0), written out so that it does not depend on the compiler's
/// tables.
const WHITE_SPACE: [char; 25] = [
    '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
    '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}',
    '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
];

fn is_space(c: char) -> bool {
    WHITE_SPACE.contains(&c)
}

/// `StringSplit`.
#[derive(Debug)]
pub(crate) struct StringSplit {
    /// `None`: split at runs of whitespace.
    delimiter: Option<String>,
    /// The most splits per element (`None`: no limit).
    maxsplit: Option<usize>,
}

/// Builds `StringSplit`.
pub(crate) fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let delimiter = Some(n.attrs.string("delimiter", "")?).filter(|d| !d.is_empty());
    let maxsplit = match n.attrs.opt_int("maxsplit")? {
        None => None,
        Some(m) if m >= 0 => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        Some(m) => {
            return Err(OpError::bad_attr(
                "maxsplit",
                format!("must be at least 0, got {m} (leave it unset for no limit)"),
            ))
        }
    };
    Ok(Box::new(StringSplit {
        delimiter,
        maxsplit,
    }))
}

impl StringSplit {
    /// The pieces of one string.
    fn split<'s>(&self, s: &'s str) -> Vec<&'s str> {
        let limit = self.maxsplit.unwrap_or(usize::MAX);
        match &self.delimiter {
            Some(d) => s.splitn(limit.saturating_add(1), d.as_str()).collect(),
            None => {
                let mut out = Vec::new();
                let mut rest = s.trim_start_matches(is_space);
                while !rest.is_empty() {
                    if out.len() == limit {
                        out.push(rest);
                        break;
                    }
                    match rest.find(is_space) {
                        Some(i) => {
                            out.push(&rest[..i]);
                            rest = rest[i..].trim_start_matches(is_space);
                        }
                        None => {
                            out.push(rest);
                            break;
                        }
                    }
                }
                out
            }
        }
    }

    fn strings(x: &Tensor) -> Result<&[String], OpError> {
        match x.data() {
            TensorData::Str(v) => Ok(v),
            _ => Err(OpError::DType {
                index: 0,
                dtype: x.dtype(),
            }),
        }
    }

    fn types(shape: &[usize], width: usize) -> Vec<TypeInfo> {
        let mut padded = shape.to_vec();
        padded.push(width);
        vec![
            TypeInfo::new(DType::Str, padded),
            TypeInfo::new(DType::I64, shape.to_vec()),
        ]
    }
}

impl Op for StringSplit {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        check_dtype(0, x.ty.dtype, &[DType::Str])?;
        if x.ty.numel() == 0 {
            return Ok(Self::types(&x.ty.shape, 0));
        }
        let v = Self::strings(need_value(x, 0)?)?;
        let width = v.iter().map(|s| self.split(s).len()).max().unwrap_or(0);
        Ok(Self::types(&x.ty.shape, width))
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let v = Self::strings(x)?;
        let pieces: Vec<Vec<&str>> = v.iter().map(|s| self.split(s)).collect();
        let width = pieces.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = Vec::with_capacity(pieces.len().saturating_mul(width));
        let mut lengths = Vec::with_capacity(pieces.len());
        for p in &pieces {
            lengths.push(p.len() as i64);
            out.extend(p.iter().map(|s| s.to_string()));
            out.extend((p.len()..width).map(|_| String::new()));
        }
        let types = Self::types(x.shape(), width);
        Ok(vec![
            Tensor::new(types[0].shape.clone(), TensorData::Str(out))?,
            Tensor::from_vec(types[1].shape.clone(), lengths)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attr;
    use crate::ops::testing::{attrs, infer_one, run_one};
    use crate::ops::text::strs;

    fn op(list: &[(&str, Attr)]) -> Result<Box<dyn Op>, OpError> {
        let a = attrs(list);
        build(&NodeInfo {
            name: "s",
            op_type: "StringSplit",
            domain: "",
            opset: 20,
            attrs: &a,
            num_inputs: 1,
            num_outputs: 2,
        })
    }

    /// Plans with the value known, runs, checks they agree; the pieces and lengths.
    fn run(op: &dyn Op, x: &Tensor) -> (Vec<usize>, Vec<String>, Vec<i64>) {
        let out = run_one(op, x, true).unwrap();
        (
            out[0].shape().to_vec(),
            out[0].as_slice::<String>().unwrap().to_vec(),
            out[1].as_slice::<i64>().unwrap().to_vec(),
        )
    }

    #[test]
    fn splits_at_a_delimiter() {
        let op = op(&[("delimiter", Attr::String(b"--".to_vec()))]).unwrap();
        let (shape, s, n) = run(op.as_ref(), &strs(vec![3], &["a--b----c", "", "--"]));
        assert_eq!(shape, [3, 4]);
        assert_eq!(s, ["a", "b", "", "c", "", "", "", "", "", "", "", ""]);
        assert_eq!(n, [4, 1, 2]);
    }

    #[test]
    fn splits_at_whitespace_runs() {
        let op = op(&[]).unwrap();
        let (shape, s, n) = run(
            op.as_ref(),
            &strs(vec![2, 2], &[" a\u{3000}b\t\n c ", "", "   ", "x\u{1c}y"]),
        );
        assert_eq!(shape, [2, 2, 3]);
        assert_eq!(
            s,
            ["a", "b", "c", "", "", "", "", "", "", "x\u{1c}y", "", ""]
        );
        assert_eq!(n, [3, 0, 0, 1]);
    }

    #[test]
    fn maxsplit_keeps_the_rest_whole() {
        let op2 = op(&[("maxsplit", Attr::Int(1))]).unwrap();
        let (_, s, n) = run(op2.as_ref(), &strs(vec![1], &["  a b  c "]));
        assert_eq!(s, ["a", "b  c "]);
        assert_eq!(n, [2]);
        let op0 = op(&[
            ("maxsplit", Attr::Int(0)),
            ("delimiter", Attr::String(b".".to_vec())),
        ])
        .unwrap();
        let (_, s, _) = run(op0.as_ref(), &strs(vec![1], &["a.b"]));
        assert_eq!(s, ["a.b"]);
    }

    #[test]
    fn empty_input_needs_no_value() {
        let op = op(&[]).unwrap();
        let ty = TypeInfo::new(DType::Str, vec![0]);
        let t = infer_one(op.as_ref(), &ty, None).unwrap();
        assert_eq!(t[0].shape, vec![0, 0]);
        let (shape, _, n) = run(op.as_ref(), &strs(vec![0], &[]));
        assert_eq!(shape, [0, 0]);
        assert!(n.is_empty());
        let ty = TypeInfo::new(DType::Str, vec![2]);
        assert_eq!(
            infer_one(op.as_ref(), &ty, None),
            Err(OpError::ValueNeeded { index: 0 })
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            op(&[("maxsplit", Attr::Int(-1))]),
            Err(OpError::BadAttribute { name, .. }) if name == "maxsplit"
        ));
        assert!(matches!(
            op(&[("delimiter", Attr::String(vec![0xff]))]),
            Err(OpError::BadAttribute { name, .. }) if name == "delimiter"
        ));
        let op = op(&[]).unwrap();
        let n = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert!(matches!(
            op.run(&[Some(&n)], &Ctx::default()),
            Err(OpError::DType { index: 0, .. })
        ));
    }
}
