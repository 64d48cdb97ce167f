//! `RegexFullMatch` (opset 20): whether each string matches a regular expression
//! from its first byte to its last.
//!
//! Patterns are compiled at load time by the `regex` crate (pinned in the
//! workspace's `Cargo.toml`; its syntax and Unicode tables, those of `regex-syntax`,
//! are part of the semantics), wrapped as `\A(?:pattern)\z`. That crate matches in
//! time linear in the input, and the sizes below bound what a pattern may cost.

use deed_types::{DType, Tensor, TensorData};
use regex::{Regex, RegexBuilder};

use crate::error::OpError;
use crate::ops::util::{check_count, check_dtype, infer_input, input, one};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// The longest pattern accepted, in bytes.
pub(crate) const MAX_PATTERN: usize = 1 << 14;
/// The most memory a compiled pattern may take (the `regex` crate's `size_limit`).
const MAX_COMPILED: usize = 1 << 23;
/// The lazy DFA's cache, per matching thread (`dfa_size_limit`).
const MAX_DFA: usize = 1 << 20;
/// The deepest nesting of groups and repetitions (`nest_limit`).
const MAX_NEST: u32 = 64;

/// `RegexFullMatch`.
#[derive(Debug)]
pub(crate) struct RegexFullMatch {
    re: Regex,
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(MAX_COMPILED)
        .dfa_size_limit(MAX_DFA)
        .nest_limit(MAX_NEST)
        .build()
}

/// Builds `RegexFullMatch`, refusing a pattern that is too long, invalid, or too
/// large once compiled.
pub(crate) fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    if !n.attrs.has("pattern") {
        return Err(OpError::MissingAttribute {
            name: "pattern".into(),
        });
    }
    let pattern = n.attrs.string("pattern", "")?;
    if pattern.len() > MAX_PATTERN {
        return Err(OpError::bad_attr(
            "pattern",
            format!(
                "is {} bytes long, more than the {MAX_PATTERN} accepted",
                pattern.len()
            ),
        ));
    }
    // The pattern alone first, so that the wrapped form cannot mean something else
    // (an unbalanced `)` closing the wrapping group).
    let bad = |e: regex::Error| OpError::bad_attr("pattern", format!("invalid: {e}"));
    compile(&pattern).map_err(bad)?;
    let re = compile(&format!("\\A(?:{pattern})\\z")).map_err(bad)?;
    Ok(Box::new(RegexFullMatch { re }))
}

impl Op for RegexFullMatch {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        check_dtype(0, x.ty.dtype, &[DType::Str])?;
        one(DType::Bool, x.ty.shape.clone())
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let TensorData::Str(v) = x.data() else {
            return Err(OpError::DType {
                index: 0,
                dtype: x.dtype(),
            });
        };
        let out = ctx.map_range(v.len(), |i| self.re.is_match(&v[i]));
        Ok(vec![Tensor::new(
            x.shape().to_vec(),
            TensorData::Bool(out),
        )?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};

    fn op(pattern: &str) -> Result<Box<dyn Op>, OpError> {
        let a = Attrs(
            [(
                "pattern".to_string(),
                Attr::String(pattern.as_bytes().to_vec()),
            )]
            .into_iter()
            .collect(),
        );
        build(&NodeInfo {
            name: "r",
            op_type: "RegexFullMatch",
            domain: "",
            opset: 20,
            attrs: &a,
            num_inputs: 1,
            num_outputs: 1,
        })
    }

    fn matches(pattern: &str, v: &[&str]) -> Vec<bool> {
        let x = Tensor::new(
            vec![v.len()],
            TensorData::Str(v.iter().map(|s| s.to_string()).collect()),
        )
        .unwrap();
        let out = op(pattern)
            .unwrap()
            .run(&[Some(&x)], &Ctx::default())
            .unwrap();
        out[0].as_slice::<bool>().unwrap().to_vec()
    }

    #[test]
    fn matches_the_whole_string() {
        assert_eq!(
            matches(
                r"www\.[\w.-]+\.\bcom\b",
                &["www.google.com", "www.bbc.co.uk", "xwww.a.com"]
            ),
            [true, false, false]
        );
        // A full match, not the leftmost-first one: `a` is found first in "ab".
        assert_eq!(matches("a|ab", &["ab", "a", "abc"]), [true, true, false]);
        // `$` before a final newline does not end a full match.
        assert_eq!(matches("a$", &["a\n", "a"]), [false, true]);
        assert_eq!(matches("", &["", "x"]), [true, false]);
        // Unicode-aware classes.
        assert_eq!(matches(r"\w+", &["été", "a b"]), [true, false]);
        assert_eq!(matches(r"(?-u:\w)+", &["été", "ab"]), [false, true]);
    }

    #[test]
    fn empty_and_shaped_inputs() {
        let x = Tensor::new(vec![2, 0], TensorData::Str(vec![])).unwrap();
        let op = op("a").unwrap();
        let ty = TypeInfo::of(&x);
        let t = op
            .infer(&[Some(InferInput {
                ty: &ty,
                value: None,
            })])
            .unwrap();
        assert_eq!(t[0], TypeInfo::new(DType::Bool, vec![2, 0]));
        let out = op.run(&[Some(&x)], &Ctx::default()).unwrap();
        assert_eq!(out[0].shape(), &[2, 0]);
    }

    #[test]
    fn refusals() {
        let refused = |p: &str| match op(p) {
            Err(OpError::BadAttribute { name, .. }) => assert_eq!(name, "pattern"),
            other => panic!("{p:?}: {other:?}"),
        };
        refused("(a");
        refused("a)|(b");
        refused(r"\1");
        refused("(?<=a)b");
        // RE2 forms the crate does not have.
        refused(r"\C");
        refused(r"\Qa.b\E");
        // A trailing comment would swallow the wrapping.
        refused("(?x)a # c");
        assert!(op("(?x)a # c\n").is_ok());
        refused(&"a".repeat(MAX_PATTERN + 1));
        let deep = MAX_NEST as usize + 1;
        refused(&format!("{}a{}", "(".repeat(deep), ")".repeat(deep)));
        assert!(op(&format!("{}a{}", "(".repeat(8), ")".repeat(8))).is_ok());
        // Compiles to more than the size limit.
        refused(r"\w{1000}\w{1000}");
        let none = Attrs::default();
        assert!(matches!(
            build(&NodeInfo {
                name: "r",
                op_type: "RegexFullMatch",
                domain: "",
                opset: 20,
                attrs: &none,
                num_inputs: 1,
                num_outputs: 1,
            }),
            Err(OpError::MissingAttribute { .. })
        ));
        let n = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert!(matches!(
            op("a").unwrap().run(&[Some(&n)], &Ctx::default()),
            Err(OpError::DType { index: 0, .. })
        ));
    }
}
