//! Transpose kernels.
//!
//! The reference computes, for every output element in row-major order, the flat input
//! offset of its coordinates. The fast path first simplifies the permutation (drops
//! size-1 axes, merges axes that stay adjacent), then either copies (identity), runs a
//! cache-blocked batched 2-D transpose (the last two axes swap, e.g. `[1, 0]` or
//! `[0, 2, 1]`), or copies through per-axis offset tables with contiguous inner rows.
//! Both split only the output across threads; a transpose moves elements without
//! arithmetic, so the proptest below checks the fast path against the reference for
//! every dtype class across thread counts.

use deed_types::{with_data, TensorData};

use super::{remap_slice, wrap};
use crate::ctx::Ctx;

/// Side of the square tiles of the blocked 2-D kernel.
const TILE: usize = 32;
/// Output elements per task, at least.
const TASK_ELEMS: usize = 1 << 14;

/// Transposes `src` (of `shape`) so that output axis `d` is input axis `perm[d]`.
/// `perm` must be a permutation of `0..shape.len()` and `src` must hold
/// `Π shape` elements.
pub fn transpose(src: &TensorData, shape: &[usize], perm: &[usize], ctx: &Ctx) -> TensorData {
    with_data!(src, v => wrap(transpose_slice(v, shape, perm, ctx)))
}

/// Typed [`transpose`]; takes the reference path when `ctx.reference()`.
pub fn transpose_slice<T: Clone + Default + Send + Sync + 'static>(
    src: &[T],
    shape: &[usize],
    perm: &[usize],
    ctx: &Ctx,
) -> Vec<T> {
    if ctx.reference() {
        return transpose_reference(src, shape, perm);
    }
    if src.is_empty() || shape.contains(&0) {
        return Vec::new();
    }
    let (s, p) = simplify(shape, perm);
    let k = p.len();
    if p.iter().enumerate().all(|(i, &a)| i == a) {
        return src.to_vec();
    }
    if k >= 2 && p[..k - 2].iter().enumerate().all(|(i, &a)| i == a) {
        // After merging, a swap of the last two axes means p == [0, 1] reversed with a
        // batch of at most one merged leading axis.
        let batch: usize = s[..k - 2].iter().product();
        return batched_2d(src, batch, s[k - 2], s[k - 1], ctx);
    }
    let st = super::strides(&s);
    let tables: Vec<Vec<usize>> = p
        .iter()
        .map(|&a| (0..s[a]).map(|i| i * st[a]).collect())
        .collect();
    remap_slice(src, &tables, None, ctx)
}

/// The executable specification: one output element at a time.
pub fn transpose_reference<T: Clone>(src: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let rank = shape.len();
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let n: usize = out_shape.iter().product();
    let in_st = super::strides(shape);
    let mut out = Vec::with_capacity(n);
    let mut coords = vec![0usize; rank];
    for o in 0..n {
        let mut r = o;
        for d in (0..rank).rev() {
            coords[d] = r % out_shape[d];
            r /= out_shape[d];
        }
        let off: usize = (0..rank).map(|d| coords[d] * in_st[perm[d]]).sum();
        if let Some(x) = src.get(off) {
            out.push(x.clone());
        }
    }
    out
}

/// Drops size-1 axes and merges runs of axes that stay adjacent and in order.
fn simplify(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    // Renumber the axes that remain after dropping size-1 ones.
    let kept: Vec<usize> = (0..shape.len()).filter(|&a| shape[a] != 1).collect();
    let new_index = |a: usize| kept.iter().position(|&k| k == a);
    let p: Vec<usize> = perm.iter().filter_map(|&a| new_index(a)).collect();
    let s: Vec<usize> = kept.iter().map(|&a| shape[a]).collect();
    // Groups of consecutive input axes, in output order.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &a in &p {
        match groups.last_mut() {
            Some((_, end)) if *end + 1 == a => *end = a,
            _ => groups.push((a, a)),
        }
    }
    let mut by_input: Vec<usize> = (0..groups.len()).collect();
    by_input.sort_by_key(|&g| groups[g].0);
    let new_shape: Vec<usize> = by_input
        .iter()
        .map(|&g| s[groups[g].0..=groups[g].1].iter().product())
        .collect();
    let mut new_perm = vec![0; groups.len()];
    for (rank_in_input, &g) in by_input.iter().enumerate() {
        new_perm[g] = rank_in_input;
    }
    (new_shape, new_perm)
}

/// `[batch, m, n] → [batch, n, m]`, in `TILE`×`TILE` blocks; tasks own whole groups
/// of output rows.
fn batched_2d<T: Clone + Default + Send + Sync + 'static>(
    src: &[T],
    batch: usize,
    m: usize,
    n: usize,
    ctx: &Ctx,
) -> Vec<T> {
    let total = batch * m * n;
    // Every element is written below.
    let mut out = crate::scratch::output(total, T::default());
    let rows_per_task = (TASK_ELEMS / m.max(1)).max(TILE).div_ceil(TILE) * TILE;
    ctx.for_each_chunk(&mut out, rows_per_task * m, |task, chunk| {
        let r0 = task * rows_per_task;
        let rows = chunk.len() / m;
        for t0 in (0..rows).step_by(TILE) {
            let t1 = (t0 + TILE).min(rows);
            for i0 in (0..m).step_by(TILE) {
                let i1 = (i0 + TILE).min(m);
                for t in t0..t1 {
                    let r = r0 + t;
                    let (b, j) = (r / n, r % n);
                    let base = b * m * n + j;
                    let dst = &mut chunk[t * m..(t + 1) * m];
                    for i in i0..i1 {
                        dst[i] = src[base + i * n].clone();
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    /// Contexts with 1–4 threads, built once (a pool per case would dominate the run).
    fn contexts() -> &'static [Ctx] {
        static C: std::sync::OnceLock<Vec<Ctx>> = std::sync::OnceLock::new();
        C.get_or_init(|| (1..=4).map(|t| Ctx::new(KernelMode::Fast, t)).collect())
    }

    fn perm_of(rank: usize, seed: u64) -> Vec<usize> {
        let mut p: Vec<usize> = (0..rank).collect();
        let mut x = seed;
        for i in (1..rank).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            p.swap(i, (x >> 33) as usize % (i + 1));
        }
        p
    }

    fn special_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            any::<f32>(),
            Just(f32::NAN),
            Just(-0.0f32),
            Just(f32::INFINITY),
            Just(f32::from_bits(1)),
        ]
    }

    fn case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<f32>)> {
        prop_oneof![
            prop::collection::vec(0usize..5, 0..6),
            prop::collection::vec(1usize..80, 2..3),
            (1usize..4, 1usize..70, 1usize..70).prop_map(|(a, b, c)| vec![a, b, c]),
        ]
        .prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            let rank = shape.len();
            (
                Just(shape),
                any::<u64>().prop_map(move |s| perm_of(rank, s)),
                prop::collection::vec(special_f32(), n),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn fast_matches_reference((shape, perm, data) in case()) {
            let reference = transpose_reference(&data, &shape, &perm);
            for ctx in contexts() {
                let threads = ctx.threads();
                // Written into a freed buffer of stale NaNs (unless the fast path
                // copies): an element left unwritten would show.
                crate::scratch::leave_stale_f32(data.len());
                let fast = transpose_slice(&data, &shape, &perm, ctx);
                let a: Vec<u32> = fast.iter().map(|x| x.to_bits()).collect();
                let b: Vec<u32> = reference.iter().map(|x| x.to_bits()).collect();
                prop_assert_eq!(a, b, "threads {}", threads);
            }
        }

        #[test]
        fn strings_match_reference(shape in prop::collection::vec(1usize..4, 1..5), seed in any::<u64>()) {
            let n: usize = shape.iter().product();
            let data: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let perm = perm_of(shape.len(), seed);
            let reference = transpose_reference(&data, &shape, &perm);
            prop_assert_eq!(transpose_slice(&data, &shape, &perm, &contexts()[2]), reference);
        }
    }

    #[test]
    fn reference_transposes_a_matrix() {
        let x = [1, 2, 3, 4, 5, 6];
        assert_eq!(
            transpose_reference(&x, &[2, 3], &[1, 0]),
            vec![1, 4, 2, 5, 3, 6]
        );
    }

    #[test]
    fn simplify_merges_and_drops() {
        assert_eq!(simplify(&[2, 1, 3, 4], &[0, 2, 3, 1]), (vec![24], vec![0]));
        assert_eq!(
            simplify(&[2, 1, 3, 4], &[2, 3, 1, 0]),
            (vec![2, 12], vec![1, 0])
        );
        assert_eq!(simplify(&[2, 3, 4], &[2, 0, 1]), (vec![6, 4], vec![1, 0]));
        assert_eq!(
            simplify(&[2, 3, 4, 5], &[0, 2, 1, 3]),
            (vec![2, 3, 4, 5], vec![0, 2, 1, 3])
        );
    }
}
