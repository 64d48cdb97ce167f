//! The blocking shared by the SIMD f32 product kernels (`gemm_avx2.rs`,
//! `gemm_avx512.rs`): how K and the rows of A are cut into blocks and tiles, and
//! where a tile finds the rows of B. None of it changes arithmetic: every output
//! element is still one sequence of fused steps with `k` increasing.
#![allow(unsafe_code)]

use super::gemm::{Mat, RowsB};
use crate::ctx::Ctx;

/// The K blocks `(start, length)` of `k`: at most `kc` long and as even as possible,
/// so that no block is a short remainder whose accumulator loads and stores would
/// cost more than its multiply-adds.
pub(super) fn k_blocks(k: usize, kc: usize) -> impl Iterator<Item = (usize, usize)> {
    even_parts(k, k.div_ceil(kc).max(1))
}

/// The row tiles `(start, rows)` of `m` rows: as few as with `mr`-row tiles, and as
/// even as possible (64 rows in tiles of 12 are 11, 11, 11, 11, 10, 10), so that no
/// tile is a small remainder with few accumulators.
pub(super) fn row_tiles(m: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    even_parts(m, m.div_ceil(mr))
}

/// `len` cut into `parts` consecutive ranges whose lengths differ by at most one.
fn even_parts(len: usize, parts: usize) -> impl Iterator<Item = (usize, usize)> {
    let (base, extra) = (len / parts.max(1), len % parts.max(1));
    (0..parts).scan(0, move |at, i| {
        let n = base + usize::from(i < extra);
        let start = *at;
        *at += n;
        Some((start, n))
    })
}

/// The packed panels of B a kernel's block reads, `len` values: `pre`'s at `at` when
/// B was packed ahead, else `buf`'s first `len` after `pack_into` wrote them when the
/// block packs, else none (the kernel reads B in place). `None` when `pre` or `buf`
/// is too short, which the callers' sizes rule out: the block is then skipped rather
/// than read out of bounds.
pub(super) fn block_panels<'a>(
    pre: Option<&'a [f32]>,
    at: usize,
    len: usize,
    pack: bool,
    buf: &'a mut [f32],
    pack_into: impl FnOnce(&mut [f32]),
) -> Option<&'a [f32]> {
    match pre {
        Some(p) => p.get(at..at + len),
        None if !pack => Some(&[]),
        None => {
            let buf = buf.get_mut(..len)?;
            pack_into(buf);
            Some(buf)
        }
    }
}

/// Where a K block lies: the first starts its accumulators at `+0.0`, the others
/// reload them from `c`; the last canonicalizes NaNs as it stores.
#[derive(Clone, Copy)]
pub(super) struct Flags {
    pub first: bool,
    pub last: bool,
}

/// Where row `k` of a tile's B starts.
pub(super) trait BRows: Copy {
    /// The first element of row `k`.
    ///
    /// # Safety
    /// `k` is below the tile's `kc`, for which the caller guaranteed the row in bounds.
    unsafe fn row(self, k: usize) -> *const f32;
}

/// Rows `rs` elements apart (a matrix, or packed panels whose rows are one panel
/// wide).
#[derive(Clone, Copy)]
pub(super) struct Strided {
    pub p: *const f32,
    pub rs: usize,
}

impl BRows for Strided {
    #[inline(always)]
    unsafe fn row(self, k: usize) -> *const f32 {
        self.p.wrapping_add(k * self.rs)
    }
}

/// Rows at the offsets `offs[k]` from `p` (see [`super::RowsB`]).
#[derive(Clone, Copy)]
pub(super) struct Indexed {
    pub p: *const f32,
    pub offs: *const usize,
}

impl BRows for Indexed {
    #[inline(always)]
    unsafe fn row(self, k: usize) -> *const f32 {
        self.p.wrapping_add(*self.offs.add(k))
    }
}

/// The column panels of one row tile of a row-indexed product, `w` columns at a
/// time: calls `panel(b, c, nv)` with B's rows and C advanced to the panel's first
/// column, `nv` being the panel's real columns (`w`, except perhaps in the last).
#[inline(always)]
pub(super) fn indexed_panels(
    b: RowsB<'_, f32>,
    c: &mut [f32],
    w: usize,
    mut panel: impl FnMut(Indexed, *mut f32, usize),
) {
    let mut jr = 0;
    while jr < b.n {
        let rows = Indexed {
            p: b.data.as_ptr().wrapping_add(jr),
            offs: b.offs.as_ptr(),
        };
        panel(rows, c.as_mut_ptr().wrapping_add(jr), w.min(b.n - jr));
        jr += w;
    }
}

/// How a kernel's row-indexed product cuts its work (see [`rows_product`]).
#[derive(Clone, Copy)]
pub(super) struct RowsPlan {
    /// Rows of the largest register tile.
    pub mr: usize,
    /// Longest K block.
    pub kc: usize,
    /// Whether each thread's share reads its own copy of the rows' buffer.
    pub private_copy: bool,
}

/// The driver of a SIMD kernel's `gemm_rows`: `c = a·b` with B given by its rows
/// (f32, row-major `c`, `a.rows() × b.n`). It checks the operands (doing nothing when
/// they disagree; the public `gemm_rows` reports that), splits the rows of `a` over
/// threads, and calls `strip(a_tile, b_block, c_tile, flags)` for every K block and
/// row tile of each share, in that order. When `strip` runs, every row of `b_block`
/// lies inside its `data` and `c_tile` holds the tile's `a_tile.rows()` rows of `n`.
pub(super) fn rows_product(
    ctx: &Ctx,
    a: Mat<'_, f32>,
    b: RowsB<'_, f32>,
    c: &mut [f32],
    plan: RowsPlan,
    strip: impl Fn(Mat<'_, f32>, RowsB<'_, f32>, &mut [f32], Flags) + Sync,
) {
    let RowsB { data, offs, n } = b;
    let (m, k) = (a.rows(), a.cols());
    if m == 0 || n == 0 || offs.len() != k || c.len() != m * n || !b.inside() {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let per = m.div_ceil(ctx.threads());
    let split = plan.private_copy && m > per;
    let span = offs.iter().max().map_or(0, |&o| o + n);
    ctx.for_each_chunk(c, per * n, |ci, chunk| {
        let a = a.rows_range(ci * per, chunk.len() / n);
        let own: Vec<f32>;
        let data: &[f32] = if split {
            own = data[..span].to_vec();
            &own
        } else {
            data
        };
        for (pc, kc) in k_blocks(k, plan.kc) {
            let f = Flags {
                first: pc == 0,
                last: pc + kc == k,
            };
            let ap0 = a.cols_range(pc, kc);
            for (ir, mr) in row_tiles(a.rows(), plan.mr) {
                let block = RowsB {
                    data,
                    offs: &offs[pc..pc + kc],
                    n,
                };
                strip(
                    ap0.rows_range(ir, mr),
                    block,
                    &mut chunk[ir * n..(ir + mr) * n],
                    f,
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_range_evenly() {
        for len in 0..200 {
            for cap in 1..20 {
                for parts in [
                    k_blocks(len, cap).collect::<Vec<_>>(),
                    row_tiles(len, cap).collect(),
                ] {
                    let mut at = 0;
                    for &(start, n) in &parts {
                        assert_eq!(start, at);
                        assert!(n <= cap, "{len} {cap} {parts:?}");
                        at += n;
                    }
                    assert_eq!(at, len);
                    let (lo, hi) = parts
                        .iter()
                        .fold((usize::MAX, 0), |(l, h), &(_, n)| (l.min(n), h.max(n)));
                    assert!(parts.is_empty() || hi - lo <= 1, "{parts:?}");
                }
            }
        }
    }
}
