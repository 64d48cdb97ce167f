//! A blob's id from its chunks, without hashing the blob a second time.
//!
//! A blob id is the blake3 hash of the whole content. blake3 hashes a tree of 1 KiB
//! blocks; when a manifest's chunk size is a power of two (and at least 1 KiB), every
//! chunk is a whole subtree of that tree. A store that hashes each chunk as it
//! arrives can then also take the chunk's *chaining value* (its subtree's non-root
//! hash, which depends on where the chunk sits in the blob), and at the end merge
//! those values up to the root: the blob's id, checked without reading the blob
//! back. Chunk sizes that are not tree-aligned get `None` and the caller hashes the
//! content in order instead.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use super::{Cid, Manifest};

/// Whether chunks of `m` are whole subtrees of the blob's blake3 tree.
pub(crate) fn aligned(m: &Manifest) -> bool {
    m.chunk_size.is_power_of_two() && m.chunk_size as usize >= blake3::CHUNK_LEN
}

/// The chaining value of chunk `index` of `m`, whose bytes are `data` (already
/// checked against the manifest). `None` when the chunking is not tree-aligned.
pub(crate) fn chunk_cv(m: &Manifest, index: u32, data: &[u8]) -> Option<ChainingValue> {
    if !aligned(m) || data.is_empty() {
        return None;
    }
    let offset = u64::from(index).checked_mul(u64::from(m.chunk_size))?;
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    Some(h.finalize_non_root())
}

/// The id of the blob of `m` given every chunk's chaining value, in order. `None`
/// when the chunking is not tree-aligned or `cvs` does not have one value per chunk.
pub(crate) fn root(m: &Manifest, cvs: &[ChainingValue]) -> Option<Cid> {
    if !aligned(m) || cvs.len() != m.chunks.len() {
        return None;
    }
    match cvs.len() {
        0 => Some(Cid::of(&[])),
        // A single chunk is the whole blob: its own hash is the root.
        1 => m.chunks.first().map(|h| Cid(*h)),
        _ => {
            let c = u64::from(m.chunk_size);
            let (left, _) = split(m.size, c);
            let l = subtree(cvs, 0, left / c, c, m.size)?;
            let r = subtree(cvs, left / c, cvs.len() as u64, c, m.size)?;
            Some(Cid(merge_subtrees_root(&l, &r, Mode::Hash).into()))
        }
    }
}

/// Byte lengths of the left and right subtrees of a tree over `len` bytes of chunks
/// of `c` bytes (`len > c`): blake3 puts the largest power of two of blocks that
/// leaves something on the right into the left subtree, a whole number of chunks.
fn split(len: u64, c: u64) -> (u64, u64) {
    let left = left_subtree_len(len).max(c);
    (left, len - left)
}

/// The chaining value of the subtree over chunks `lo..hi`.
fn subtree(cvs: &[ChainingValue], lo: u64, hi: u64, c: u64, size: u64) -> Option<ChainingValue> {
    if hi <= lo {
        return None;
    }
    if hi - lo == 1 {
        return cvs.get(usize::try_from(lo).ok()?).copied();
    }
    let start = lo * c;
    let end = (hi * c).min(size);
    let (left, _) = split(end - start, c);
    let mid = lo + left / c;
    let l = subtree(cvs, lo, mid, c, size)?;
    let r = subtree(cvs, mid, hi, c, size)?;
    Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cvs_of(m: &Manifest, data: &[u8]) -> Vec<ChainingValue> {
        (0..m.chunk_count())
            .map(|i| {
                let r = m.chunk_range(i).expect("range");
                chunk_cv(m, i, &data[r.start as usize..r.end as usize]).expect("aligned")
            })
            .collect()
    }

    #[test]
    fn root_of_chunk_values_is_the_blob_id_at_the_edges() {
        for chunk_size in [1024u32, 2048, 1 << 16] {
            let c = chunk_size as usize;
            for len in [
                0,
                1,
                c - 1,
                c,
                c + 1,
                2 * c,
                2 * c + 1,
                3 * c,
                3 * c + 17,
                4 * c,
                5 * c - 1,
                7 * c + 1,
                8 * c,
                9 * c,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let m = Manifest::build(&data, chunk_size).expect("build");
                assert_eq!(
                    root(&m, &cvs_of(&m, &data)),
                    Some(m.id),
                    "chunk size {chunk_size}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn unaligned_chunkings_and_wrong_counts_give_none() {
        let data = vec![5u8; 5000];
        let m = Manifest::build(&data, 1000).expect("build");
        assert_eq!(chunk_cv(&m, 0, &data[..1000]), None);
        assert_eq!(root(&m, &[]), None);
        let m = Manifest::build(&data, 512).expect("build");
        assert_eq!(chunk_cv(&m, 0, &data[..512]), None);
        let m = Manifest::build(&data, 1024).expect("build");
        let cvs = cvs_of(&m, &data);
        assert_eq!(root(&m, &cvs[1..]), None);
    }

    #[test]
    fn a_wrong_chunk_value_gives_another_root() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let m = Manifest::build(&data, 1024).expect("build");
        let mut cvs = cvs_of(&m, &data);
        cvs[3][0] ^= 1;
        assert_ne!(root(&m, &cvs), Some(m.id));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn root_of_chunk_values_is_the_blob_id(
            len in 0usize..40_000,
            shift in 0u32..4,
            seed in any::<u8>(),
        ) {
            let chunk_size = 1024u32 << shift;
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            let m = Manifest::build(&data, chunk_size).expect("build");
            prop_assert_eq!(root(&m, &cvs_of(&m, &data)), Some(m.id));
        }
    }
}
