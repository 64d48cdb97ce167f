//! A blob's id from its chunk values.
//!
//! A blob id is the blake3 hash of the whole content, and blake3 hashes a tree of
//! 1 KiB blocks. A chunk of a power-of-two size of at least 1 KiB is a whole subtree
//! of that tree, so its chaining value (the subtree's non-root hash, which depends on
//! where the chunk sits in the blob) can be merged with its neighbours' up to the
//! root: the blob's id, from the chunk values alone. This is what lets a manifest be
//! checked against its id before any chunk arrives.

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, Mode};

use super::Cid;
use deed_types::Hash;

/// The id of a blob of `size` bytes in chunks of `chunk_size` bytes (a power of two,
/// at least 1 KiB) whose chunk values are `values`. `None` when the chunking is not
/// tree-aligned or `values` does not have one value per chunk.
pub(crate) fn root(size: u64, chunk_size: u32, values: &[Hash]) -> Option<Cid> {
    let c = u64::from(chunk_size);
    if !chunk_size.is_power_of_two() || (chunk_size as usize) < blake3::CHUNK_LEN {
        return None;
    }
    if size.div_ceil(c) != values.len() as u64 {
        return None;
    }
    match values {
        [] => Some(Cid::of(&[])),
        // A single chunk is the whole blob: its value is the blob's hash.
        [only] => Some(Cid(*only)),
        _ => {
            let (left, _) = split(size, c);
            let l = subtree(values, 0, left / c, c, size)?;
            let r = subtree(values, left / c, values.len() as u64, c, size)?;
            Some(Cid(Hash(
                *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes(),
            )))
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
fn subtree(values: &[Hash], lo: u64, hi: u64, c: u64, size: u64) -> Option<[u8; 32]> {
    if hi <= lo {
        return None;
    }
    if hi - lo == 1 {
        return values.get(usize::try_from(lo).ok()?).map(|h| h.0);
    }
    let start = lo * c;
    let end = (hi * c).min(size);
    let (left, _) = split(end - start, c);
    let mid = lo + left / c;
    let l = subtree(values, lo, mid, c, size)?;
    let r = subtree(values, mid, hi, c, size)?;
    Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

#[cfg(test)]
mod tests {
    use super::super::Manifest;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_values_merge_to_the_blob_id_at_the_edges() {
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
                assert_eq!(m.id, Cid::of(&data), "chunk size {chunk_size}, {len} bytes");
                assert_eq!(root(m.size, chunk_size, &m.chunks), Some(m.id));
            }
        }
    }

    #[test]
    fn unaligned_chunkings_and_wrong_counts_give_none() {
        let data = vec![5u8; 5000];
        let m = Manifest::build(&data, 1024).expect("build");
        assert_eq!(root(m.size, 1000, &m.chunks), None);
        assert_eq!(root(m.size, 512, &m.chunks), None);
        assert_eq!(root(m.size, 1024, &m.chunks[1..]), None);
        assert_eq!(root(m.size + 1024, 1024, &m.chunks), None);
    }

    #[test]
    fn a_wrong_chunk_value_gives_another_root() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let m = Manifest::build(&data, 1024).expect("build");
        let mut values = m.chunks.clone();
        values[3].0[0] ^= 1;
        assert_ne!(root(m.size, 1024, &values), Some(m.id));
        values.swap(3, 4);
        assert_ne!(root(m.size, 1024, &values), Some(m.id));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunk_values_merge_to_the_blob_id(
            len in 0usize..40_000,
            shift in 0u32..4,
            seed in any::<u8>(),
        ) {
            let chunk_size = 1024u32 << shift;
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            let m = Manifest::build(&data, chunk_size).expect("build");
            prop_assert_eq!(m.id, Cid::of(&data));
            prop_assert_eq!(root(m.size, chunk_size, &m.chunks), Some(m.id));
        }
    }
}
