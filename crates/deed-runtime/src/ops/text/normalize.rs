//! `StringNormalizer` (opset 10): drops stop words and changes case.
//!
//! Case is changed by Rust's `str::to_lowercase` / `str::to_uppercase` (Unicode's
//! full default case mappings, with the final-sigma rule), whose tables come with
//! the compiler: the operator is refused at load time when they are not those of
//! [`CASE_UNICODE`], so that a compiler with other tables cannot give other bytes.
//! The output's length depends on which elements are stop words, so when there are
//! stop words the input's value is needed while planning.

use std::collections::HashSet;

use deed_types::{DType, Tensor, TensorData};

use crate::error::OpError;
use crate::ops::ml::strings_attr;
use crate::ops::util::{check_count, check_dtype, infer_input, input, need_value, one};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// The Unicode version whose case mappings are the canonical ones.
pub(crate) const CASE_UNICODE: (u8, u8, u8) = (17, 0, 0);

/// Refuses a case mapping when the compiler's Unicode tables are not [`CASE_UNICODE`].
pub(crate) fn check_case_tables() -> Result<(), OpError> {
    if char::UNICODE_VERSION != CASE_UNICODE {
        let (a, b, c) = char::UNICODE_VERSION;
        let (x, y, z) = CASE_UNICODE;
        return Err(OpError::unsupported(format!(
            "case mapping: this build's Unicode tables are version {a}.{b}.{c}, the \
             canonical case mapping is Unicode {x}.{y}.{z}'s"
        )));
    }
    Ok(())
}

/// `case_change_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    None,
    Lower,
    Upper,
}

/// `StringNormalizer`.
#[derive(Debug)]
pub(crate) struct StringNormalizer {
    case: Case,
    /// Stop words as compared: the attribute's bytes when case-sensitive, else
    /// their lowercase.
    stops: HashSet<String>,
    sensitive: bool,
}

/// The `locale` values accepted: each means the locale-independent mapping.
fn locale_ok(l: &str) -> bool {
    let base = l.split_once('.').map_or(l, |(b, enc)| {
        if enc.eq_ignore_ascii_case("utf-8") || enc.eq_ignore_ascii_case("utf8") {
            b
        } else {
            "?"
        }
    });
    matches!(base, "" | "C" | "POSIX" | "en")
        || base
            .strip_prefix("en_")
            .is_some_and(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

/// Builds `StringNormalizer`.
pub(crate) fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let case = match n.attrs.string("case_change_action", "NONE")?.as_str() {
        "NONE" => Case::None,
        "LOWER" => Case::Lower,
        "UPPER" => Case::Upper,
        other => {
            return Err(OpError::bad_attr(
                "case_change_action",
                format!("unknown value {other} (NONE, LOWER or UPPER)"),
            ))
        }
    };
    let sensitive = match n.attrs.int("is_case_sensitive", 0)? {
        0 => false,
        1 => true,
        v => {
            return Err(OpError::bad_attr(
                "is_case_sensitive",
                format!("must be 0 or 1, got {v}"),
            ))
        }
    };
    let words = strings_attr(n, "stopwords")?.unwrap_or_default();
    if case != Case::None || (!sensitive && !words.is_empty()) {
        check_case_tables()?;
        let locale = n.attrs.string("locale", "")?;
        if !locale_ok(&locale) {
            return Err(OpError::unsupported(format!(
                "locale {locale:?}: only the locale-independent Unicode case mapping is \
                 implemented (locale absent, empty, C, POSIX, en or en_XX, optionally .UTF-8)"
            )));
        }
    }
    let stops = words
        .into_iter()
        .map(|w| if sensitive { w } else { w.to_lowercase() })
        .collect();
    Ok(Box::new(StringNormalizer {
        case,
        stops,
        sensitive,
    }))
}

impl StringNormalizer {
    fn is_stop(&self, s: &str) -> bool {
        if self.stops.is_empty() {
            false
        } else if self.sensitive {
            self.stops.contains(s)
        } else {
            self.stops.contains(&s.to_lowercase())
        }
    }

    fn change(&self, s: &str) -> String {
        match self.case {
            Case::None => s.to_owned(),
            Case::Lower => s.to_lowercase(),
            Case::Upper => s.to_uppercase(),
        }
    }

    /// The output shape for `kept` elements of an input of shape `shape`: an empty
    /// result is one empty string.
    fn shape(shape: &[usize], kept: usize) -> Vec<usize> {
        let c = kept.max(1);
        if shape.len() == 2 {
            vec![1, c]
        } else {
            vec![c]
        }
    }

    fn check_shape(shape: &[usize]) -> Result<(), OpError> {
        match shape {
            [_] | [1, _] => Ok(()),
            _ => Err(OpError::shape(format!(
                "StringNormalizer takes [C] or [1, C] strings, got shape {shape:?}"
            ))),
        }
    }
}

impl Op for StringNormalizer {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        check_dtype(0, x.ty.dtype, &[DType::Str])?;
        Self::check_shape(&x.ty.shape)?;
        let c = x.ty.numel() as usize;
        if self.stops.is_empty() || c == 0 {
            return one(DType::Str, Self::shape(&x.ty.shape, c));
        }
        let v = need_value(x, 0)?;
        let TensorData::Str(v) = v.data() else {
            return Err(OpError::DType {
                index: 0,
                dtype: v.dtype(),
            });
        };
        let kept = v.iter().filter(|s| !self.is_stop(s)).count();
        one(DType::Str, Self::shape(&x.ty.shape, kept))
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let TensorData::Str(v) = x.data() else {
            return Err(OpError::DType {
                index: 0,
                dtype: x.dtype(),
            });
        };
        Self::check_shape(x.shape())?;
        let mut out: Vec<String> = v
            .iter()
            .filter(|s| !self.is_stop(s))
            .map(|s| self.change(s))
            .collect();
        let shape = Self::shape(x.shape(), out.len());
        if out.is_empty() {
            out.push(String::new());
        }
        Ok(vec![Tensor::new(shape, TensorData::Str(out))?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};
    use crate::ops::testing::{attrs, infer_one, run_one};
    use crate::ops::text::strs;

    fn op(a: &Attrs) -> Result<Box<dyn Op>, OpError> {
        build(&NodeInfo {
            name: "s",
            op_type: "StringNormalizer",
            domain: "",
            opset: 10,
            attrs: a,
            num_inputs: 1,
            num_outputs: 1,
        })
    }

    /// Plans with the value known, then runs; the two must agree.
    fn run(a: &Attrs, x: &Tensor) -> Result<Tensor, OpError> {
        Ok(run_one(op(a)?.as_ref(), x, true)?.remove(0))
    }

    fn words(t: &Tensor) -> Vec<&str> {
        t.as_slice::<String>()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect()
    }

    fn monday(case: &str, sensitive: i64) -> Attrs {
        attrs(&[
            ("case_change_action", Attr::String(case.into())),
            ("is_case_sensitive", Attr::Int(sensitive)),
            ("stopwords", Attr::Strings(vec![b"monday".to_vec()])),
        ])
    }

    #[test]
    fn drops_stop_words_and_changes_case() {
        let x = strs(vec![4], &["monday", "Tuesday", "Monday", "straße"]);
        let out = run(&monday("UPPER", 1), &x).unwrap();
        assert_eq!(out.shape(), &[3]);
        assert_eq!(words(&out), ["TUESDAY", "MONDAY", "STRASSE"]);
        let out = run(&monday("LOWER", 0), &x).unwrap();
        assert_eq!(words(&out), ["tuesday", "straße"]);
        let out = run(
            &monday("NONE", 0),
            &strs(vec![1, 3], &["ΟΔΟΣ", "MONDAY", ""]),
        )
        .unwrap();
        assert_eq!(out.shape(), &[1, 2]);
        assert_eq!(words(&out), ["ΟΔΟΣ", ""]);
        // Final sigma.
        let out = run(&monday("LOWER", 1), &strs(vec![1], &["ΟΔΟΣ"])).unwrap();
        assert_eq!(words(&out), ["\u{3bf}\u{3b4}\u{3bf}\u{3c2}"]);
    }

    #[test]
    fn empty_results_are_one_empty_string() {
        let out = run(&monday("UPPER", 1), &strs(vec![2], &["monday", "monday"])).unwrap();
        assert_eq!(out.shape(), &[1]);
        assert_eq!(words(&out), [""]);
        let out = run(&monday("UPPER", 1), &strs(vec![1, 0], &[])).unwrap();
        assert_eq!(out.shape(), &[1, 1]);
        // Without stop words the shape is known from the type alone.
        let plain = op(&attrs(&[])).unwrap();
        let ty = TypeInfo::new(DType::Str, vec![1, 5]);
        let t = infer_one(plain.as_ref(), &ty, None).unwrap();
        assert_eq!(t[0].shape, vec![1, 5]);
        // With them the value is needed.
        let op = op(&monday("NONE", 1)).unwrap();
        assert_eq!(
            infer_one(op.as_ref(), &ty, None),
            Err(OpError::ValueNeeded { index: 0 })
        );
    }

    #[test]
    fn refusals() {
        let bad = |a: Attrs, name: &str| match op(&a) {
            Err(OpError::BadAttribute { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        };
        bad(
            attrs(&[("case_change_action", Attr::String("TITLE".into()))]),
            "case_change_action",
        );
        bad(
            attrs(&[("is_case_sensitive", Attr::Int(2))]),
            "is_case_sensitive",
        );
        let turkish = attrs(&[
            ("case_change_action", Attr::String("LOWER".into())),
            ("locale", Attr::String("tr_TR.UTF-8".into())),
        ]);
        assert!(matches!(op(&turkish), Err(OpError::Unsupported { .. })));
        for ok in ["", "C", "en_US", "en_GB.utf8", "en_US.UTF-8", "POSIX"] {
            let a = attrs(&[
                ("case_change_action", Attr::String("LOWER".into())),
                ("locale", Attr::String(ok.into())),
            ]);
            assert!(op(&a).is_ok(), "{ok}");
        }
        // The locale is not read when nothing is case-mapped.
        assert!(op(&attrs(&[("locale", Attr::String("tr_TR".into()))])).is_ok());
        let a = attrs(&[]);
        assert!(matches!(
            run(&a, &strs(vec![2, 1], &["a", "b"])),
            Err(OpError::Shape { .. })
        ));
        let n = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert!(matches!(run(&a, &n), Err(OpError::DType { index: 0, .. })));
    }

    #[test]
    fn case_tables_are_the_canonical_ones() {
        // A compiler with other Unicode tables refuses case mapping; this build must
        // not be one.
        assert_eq!(check_case_tables(), Ok(()));
    }
}
