//! `TfIdfVectorizer` (opset 9): counts the n-grams of a pool in each row of integer
//! or string tokens and weighs the counts.
//!
//! The pool is read once at load time into a map from each n-gram (a sequence of
//! token keys) to its output column; its prefixes are entered too, with no column,
//! so that the walk along a row stops as soon as no pooled n-gram starts with what
//! it has read (the ONNX reference's trie, as a map). Counting is integer
//! arithmetic; only the last step, the weighting, is floating point: one f32
//! multiplication per output element (see `docs/canonical-semantics.md`).

use std::collections::HashMap;

use deed_types::{DType, Tensor, TensorData};

use crate::error::OpError;
use crate::ops::ml::{req_ints, strings_attr};
use crate::ops::util::{check_count, check_dtype, infer_input, input, one};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// The most tokens an n-gram of the pool may have.
const MAX_GRAM: i64 = 1 << 10;

/// How counts become output values (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The count.
    Tf,
    /// The column's weight (1 without weights) where the count is not 0, else 0.
    Idf,
    /// The count times the column's weight (the count without weights).
    TfIdf,
}

/// The tokens of the pool.
#[derive(Debug)]
enum Pool {
    /// `pool_int64s`: a token is its integer.
    Ints,
    /// `pool_strings`: a token is the index of its first occurrence in the pool;
    /// an input string not in the pool is a key no n-gram holds.
    Strings(HashMap<String, i64>),
}

/// `TfIdfVectorizer`.
#[derive(Debug)]
pub(crate) struct TfIdf {
    mode: Mode,
    min_gram: usize,
    max_gram: usize,
    max_skip: usize,
    pool: Pool,
    /// Every pooled n-gram and every prefix of one, with the output column of the
    /// n-gram (`None` for a prefix that is not itself counted).
    grams: HashMap<Vec<i64>, Option<usize>>,
    /// Output columns: the largest entry of `ngram_indexes` plus one.
    width: usize,
    weights: Vec<f32>,
}

/// Builds `TfIdfVectorizer`, checking every attribute against the others.
pub(crate) fn build(n: &NodeInfo<'_>) -> Result<Box<dyn crate::ops::Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let mode = match n.attrs.string("mode", "")?.as_str() {
        "TF" => Mode::Tf,
        "IDF" => Mode::Idf,
        "TFIDF" => Mode::TfIdf,
        "" => {
            return Err(OpError::MissingAttribute {
                name: "mode".into(),
            })
        }
        other => {
            return Err(OpError::bad_attr(
                "mode",
                format!("unknown value {other} (TF, IDF or TFIDF)"),
            ))
        }
    };
    let min_gram = n.attrs.req_int("min_gram_length")?;
    let max_gram = n.attrs.req_int("max_gram_length")?;
    let max_skip = n.attrs.req_int("max_skip_count")?;
    if !(1..=MAX_GRAM).contains(&min_gram) {
        return Err(OpError::bad_attr(
            "min_gram_length",
            format!("must be between 1 and {MAX_GRAM}, got {min_gram}"),
        ));
    }
    if !(min_gram..=MAX_GRAM).contains(&max_gram) {
        return Err(OpError::bad_attr(
            "max_gram_length",
            format!("must be between min_gram_length ({min_gram}) and {MAX_GRAM}, got {max_gram}"),
        ));
    }
    if !(0..=i64::from(u32::MAX)).contains(&max_skip) {
        return Err(OpError::bad_attr(
            "max_skip_count",
            format!("must be between 0 and 2^32 - 1, got {max_skip}"),
        ));
    }
    let ints = n.attrs.ints("pool_int64s")?.filter(|v| !v.is_empty());
    let strs = strings_attr(n, "pool_strings")?.filter(|v| !v.is_empty());
    let (pool, tokens): (Pool, Vec<i64>) = match (ints, strs) {
        (Some(v), None) => (Pool::Ints, v),
        (None, Some(v)) => {
            let mut ids: HashMap<String, i64> = HashMap::with_capacity(v.len());
            let tokens = v
                .into_iter()
                .enumerate()
                .map(|(i, s)| *ids.entry(s).or_insert(i as i64))
                .collect();
            (Pool::Strings(ids), tokens)
        }
        (Some(_), Some(_)) => {
            return Err(OpError::bad_attr(
                "pool_strings",
                "pool_int64s and pool_strings are both given",
            ))
        }
        (None, None) => {
            return Err(OpError::MissingAttribute {
                name: "pool_int64s".into(),
            })
        }
    };
    let counts = req_ints(n, "ngram_counts")?;
    let indexes = req_ints(n, "ngram_indexes")?;
    // The pool's n-grams of each length, in order; lengths outside
    // [min_gram_length, max_gram_length] keep their ids but are not counted.
    let mut pooled: Vec<(usize, &[i64])> = Vec::new();
    for (k, &start) in counts.iter().enumerate() {
        let end = counts.get(k + 1).copied().unwrap_or(tokens.len() as i64);
        if start < 0 || end < start || end > tokens.len() as i64 {
            return Err(OpError::bad_attr(
                "ngram_counts",
                format!(
                    "entry {k} ({start}) must be a non-decreasing start index into the pool of {} tokens",
                    tokens.len()
                ),
            ));
        }
        let size = k + 1;
        let span = &tokens[start as usize..end as usize];
        if span.len() % size != 0 {
            return Err(OpError::bad_attr(
                "ngram_counts",
                format!(
                    "the pool holds {} tokens for {size}-grams, not a multiple of {size}",
                    span.len()
                ),
            ));
        }
        pooled.extend(span.chunks(size).map(|g| (size, g)));
    }
    if indexes.len() != pooled.len() {
        return Err(OpError::bad_attr(
            "ngram_indexes",
            format!(
                "has {} entries for the pool's {} n-grams",
                indexes.len(),
                pooled.len()
            ),
        ));
    }
    if let Some(bad) = indexes.iter().find(|&&i| !(0..1 << 24).contains(&i)) {
        return Err(OpError::bad_attr(
            "ngram_indexes",
            format!("index {bad} is out of range 0..2^24"),
        ));
    }
    let width = indexes.iter().max().map_or(0, |&m| m as usize + 1);
    let mut grams: HashMap<Vec<i64>, Option<usize>> = HashMap::new();
    for (&(size, gram), &col) in pooled.iter().zip(&indexes) {
        if size < min_gram as usize || size > max_gram as usize {
            continue;
        }
        for p in 1..size {
            grams.entry(gram[..p].to_vec()).or_insert(None);
        }
        // A repeated n-gram counts in the column of its last occurrence.
        grams.insert(gram.to_vec(), Some(col as usize));
    }
    let weights = n.attrs.floats("weights")?.unwrap_or_default();
    if !weights.is_empty() && weights.len() < width {
        return Err(OpError::bad_attr(
            "weights",
            format!("has {} entries for {width} output columns", weights.len()),
        ));
    }
    Ok(Box::new(TfIdf {
        mode,
        min_gram: min_gram as usize,
        max_gram: max_gram as usize,
        max_skip: max_skip as usize,
        pool,
        grams,
        width,
        weights,
    }))
}

impl TfIdf {
    /// `(rows, tokens per row)` of the input, and the output shape.
    fn layout(&self, shape: &[usize]) -> Result<(usize, usize, Vec<usize>), OpError> {
        match *shape {
            [c] => Ok((1, c, vec![self.width])),
            [b, c] => Ok((b, c, vec![b, self.width])),
            _ => Err(OpError::shape(format!(
                "TfIdfVectorizer takes [C] or [N, C] tokens, got shape {shape:?}"
            ))),
        }
    }

    fn dtypes(&self) -> &'static [DType] {
        match self.pool {
            Pool::Ints => &[DType::I64, DType::I32],
            Pool::Strings(_) => &[DType::Str],
        }
    }

    /// The input's tokens as keys of `grams`.
    fn keys(&self, x: &Tensor) -> Result<Vec<i64>, OpError> {
        let wrong = || OpError::DType {
            index: 0,
            dtype: x.dtype(),
        };
        Ok(match (&self.pool, x.data()) {
            (Pool::Ints, TensorData::I64(v)) => v.clone(),
            (Pool::Ints, TensorData::I32(v)) => v.iter().map(|&t| i64::from(t)).collect(),
            (Pool::Strings(ids), TensorData::Str(v)) => v
                .iter()
                .map(|s| ids.get(s.as_str()).copied().unwrap_or(-1))
                .collect(),
            _ => return Err(wrong()),
        })
    }

    /// The count of each output column in one row of keys.
    fn count(&self, row: &[i64]) -> Vec<u64> {
        let mut counts = vec![0u64; self.width];
        let mut gram: Vec<i64> = Vec::with_capacity(self.max_gram);
        let mut least = self.min_gram;
        for skip in 1..=self.max_skip.saturating_add(1) {
            for start in 0..row.len() {
                gram.clear();
                let mut at = start;
                while gram.len() < self.max_gram && at < row.len() {
                    gram.push(row[at]);
                    match self.grams.get(gram.as_slice()) {
                        None => break,
                        Some(Some(col)) if gram.len() >= least => counts[*col] += 1,
                        Some(_) => {}
                    }
                    at = match at.checked_add(skip) {
                        Some(a) => a,
                        None => break,
                    };
                }
            }
            // Unigrams do not depend on the skip: they are counted on the first pass.
            if least == 1 {
                least = 2;
            }
            if least > self.max_gram || skip >= row.len() {
                break;
            }
        }
        counts
    }

    /// The output value of a column from its count.
    fn weigh(&self, col: usize, count: u64) -> f32 {
        let w = self.weights.get(col).copied();
        match self.mode {
            Mode::Tf => count as f32,
            Mode::Idf if count == 0 => 0.0,
            Mode::Idf => w.unwrap_or(1.0),
            Mode::TfIdf => match w {
                Some(w) => w * count as f32,
                None => count as f32,
            },
        }
    }
}

impl Op for TfIdf {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        check_dtype(0, x.ty.dtype, self.dtypes())?;
        one(DType::F32, self.layout(&x.ty.shape)?.2)
    }

    /// One unit per n-gram looked up: every row position, for every skip distance
    /// that fits in the row and every length up to `max_gram_length`, plus one per
    /// output element.
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let tokens = inputs.first().copied().flatten().map_or(0, |t| t.numel());
        let per_row = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|t| t.shape.last().copied())
            .unwrap_or(1) as u64;
        let skips = (self.max_skip as u64).saturating_add(1).min(per_row.max(1));
        let grams = (self.max_gram as u64).min(per_row.max(1));
        tokens
            .saturating_mul(skips)
            .saturating_mul(grams)
            .saturating_add(outputs.iter().map(|t| t.numel()).sum())
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        check_dtype(0, x.dtype(), self.dtypes())?;
        let (rows, cols, shape) = self.layout(x.shape())?;
        let keys = self.keys(x)?;
        let per_row = ctx.map_range(rows, |r| {
            let counts = self.count(&keys[r * cols..(r + 1) * cols]);
            counts
                .iter()
                .enumerate()
                .map(|(c, &k)| self.weigh(c, k))
                .collect::<Vec<f32>>()
        });
        let out: Vec<f32> = per_row.into_iter().flatten().collect();
        Ok(vec![Tensor::from_vec(shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};
    use crate::ops::testing::{attrs, run_one};

    /// Attributes by name, in the order given.
    type AttrList = Vec<(&'static str, Attr)>;

    fn node(a: &Attrs) -> NodeInfo<'_> {
        NodeInfo {
            name: "t",
            op_type: "TfIdfVectorizer",
            domain: "",
            opset: 9,
            attrs: a,
            num_inputs: 1,
            num_outputs: 1,
        }
    }

    /// The attributes of the official tests: unigrams 2 3 5 4, bigrams (5 6) (7 8)
    /// (6 7), columns 0..7.
    fn official(mode: &str, min: i64, max: i64, skip: i64) -> AttrList {
        vec![
            ("mode", Attr::String(mode.into())),
            ("min_gram_length", Attr::Int(min)),
            ("max_gram_length", Attr::Int(max)),
            ("max_skip_count", Attr::Int(skip)),
            ("ngram_counts", Attr::Ints(vec![0, 4])),
            ("ngram_indexes", Attr::Ints((0..7).collect())),
            (
                "pool_int64s",
                Attr::Ints(vec![2, 3, 5, 4, 5, 6, 7, 8, 6, 7]),
            ),
        ]
    }

    fn run(a: &Attrs, x: &Tensor) -> Result<Tensor, OpError> {
        Ok(run_one(build(&node(a))?.as_ref(), x, false)?.remove(0))
    }

    fn tokens() -> Tensor {
        Tensor::from_vec(vec![12], vec![1i32, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]).unwrap()
    }

    #[test]
    fn counts_unigrams_and_skipped_bigrams() {
        // Unigram 3 three times, 5 once; bigrams (5 6) once with skip 0, (7 8)
        // three times with skips up to 5, (6 7) once.
        let out = run(&attrs(&official("TF", 1, 2, 5)), &tokens()).unwrap();
        assert_eq!(
            out.as_slice::<f32>().unwrap(),
            &[0.0, 3.0, 1.0, 0.0, 1.0, 3.0, 1.0]
        );
        let out = run(&attrs(&official("TF", 2, 2, 0)), &tokens()).unwrap();
        assert_eq!(
            out.as_slice::<f32>().unwrap(),
            &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn rows_are_counted_apart() {
        let x = Tensor::from_vec(vec![2, 6], vec![1i64, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]).unwrap();
        let out = run(&attrs(&official("TF", 1, 2, 5)), &x).unwrap();
        assert_eq!(out.shape(), &[2, 7]);
        assert_eq!(
            out.as_slice::<f32>().unwrap(),
            &[0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
        );
        // No rows, and rows of no tokens.
        let empty = Tensor::from_vec(vec![0, 6], Vec::<i64>::new()).unwrap();
        assert_eq!(
            run(&attrs(&official("TF", 1, 2, 5)), &empty)
                .unwrap()
                .shape(),
            &[0, 7]
        );
        let blank = Tensor::from_vec(vec![2, 0], Vec::<i32>::new()).unwrap();
        let out = run(&attrs(&official("TF", 1, 2, 5)), &blank).unwrap();
        assert_eq!(out.as_slice::<f32>().unwrap(), &[0.0; 14]);
    }

    #[test]
    fn idf_and_tfidf_weigh_counts() {
        let mut a = official("IDF", 1, 2, 5);
        let w = vec![0.5f32, 0.25, 2.0, 4.0, 0.1, 0.3, 3.0];
        a.push(("weights", Attr::Floats(w.clone())));
        let out = run(&attrs(&a), &tokens()).unwrap();
        assert_eq!(
            out.as_slice::<f32>().unwrap(),
            &[0.0, 0.25, 2.0, 0.0, 0.1, 0.3, 3.0]
        );
        a[0].1 = Attr::String("TFIDF".into());
        let out = run(&attrs(&a), &tokens()).unwrap();
        assert_eq!(
            out.as_slice::<f32>().unwrap(),
            &[0.0, 0.75, 2.0, 0.0, 0.1, 0.3f32 * 3.0, 3.0]
        );
        let out = run(&attrs(&official("IDF", 1, 2, 5)), &tokens()).unwrap();
        assert_eq!(
            out.as_slice::<f32>().unwrap(),
            &[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn string_pools_and_repeated_grams() {
        let s = |v: &[&str]| Attr::Strings(v.iter().map(|x| x.as_bytes().to_vec()).collect());
        let a = attrs(&[
            ("mode", Attr::String("TF".into())),
            ("min_gram_length", Attr::Int(1)),
            ("max_gram_length", Attr::Int(2)),
            ("max_skip_count", Attr::Int(0)),
            ("ngram_counts", Attr::Ints(vec![0, 2])),
            // The bigram (a b) twice: it counts in the column of the second.
            ("ngram_indexes", Attr::Ints(vec![0, 1, 2, 3])),
            ("pool_strings", s(&["a", "é", "a", "b", "a", "b"])),
        ]);
        let x = Tensor::new(
            vec![5],
            TensorData::Str(["a", "b", "é", "zz", "a"].map(String::from).to_vec()),
        )
        .unwrap();
        let out = run(&a, &x).unwrap();
        assert_eq!(out.as_slice::<f32>().unwrap(), &[2.0, 1.0, 0.0, 1.0]);
        let ints = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert!(matches!(
            run(&a, &ints),
            Err(OpError::DType { index: 0, .. })
        ));
    }

    #[test]
    fn refuses_bad_attributes() {
        let bad = |edit: &dyn Fn(&mut AttrList), name: &str| {
            let mut a = official("TF", 1, 2, 5);
            edit(&mut a);
            match build(&node(&attrs(&a))) {
                Err(OpError::BadAttribute { name: n, .. })
                | Err(OpError::MissingAttribute { name: n }) => {
                    assert_eq!(n, name)
                }
                other => panic!("{name}: {other:?}"),
            }
        };
        bad(&|a| a[0].1 = Attr::String("BM25".into()), "mode");
        bad(&|a| a.retain(|(k, _)| *k != "mode"), "mode");
        bad(&|a| a[1].1 = Attr::Int(0), "min_gram_length");
        bad(&|a| a[2].1 = Attr::Int(0), "max_gram_length");
        bad(&|a| a[3].1 = Attr::Int(-1), "max_skip_count");
        bad(&|a| a[4].1 = Attr::Ints(vec![0, 5]), "ngram_counts");
        bad(&|a| a[4].1 = Attr::Ints(vec![4, 0]), "ngram_counts");
        bad(&|a| a[4].1 = Attr::Ints(vec![0, 11]), "ngram_counts");
        bad(&|a| a[5].1 = Attr::Ints(vec![0, 1]), "ngram_indexes");
        bad(
            &|a| a[5].1 = Attr::Ints(vec![0, 1, 2, 3, 4, 5, -6]),
            "ngram_indexes",
        );
        bad(&|a| a.retain(|(k, _)| *k != "pool_int64s"), "pool_int64s");
        bad(
            &|a| a.push(("pool_strings", Attr::Strings(vec![b"x".to_vec()]))),
            "pool_strings",
        );
        bad(
            &|a| a.push(("weights", Attr::Floats(vec![1.0; 3]))),
            "weights",
        );
        let x = Tensor::from_vec(vec![1, 1, 1], vec![1i64]).unwrap();
        assert!(matches!(
            run(&attrs(&official("TF", 1, 2, 5)), &x),
            Err(OpError::Shape { .. })
        ));
        let f = Tensor::from_vec(vec![1], vec![1.0f32]).unwrap();
        assert!(matches!(
            run(&attrs(&official("TF", 1, 2, 5)), &f),
            Err(OpError::DType { index: 0, .. })
        ));
    }
}
