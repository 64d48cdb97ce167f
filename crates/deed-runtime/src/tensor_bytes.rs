//! Fast paths over a tensor's bytes for the per-step work of every run: feeding the
//! canonical encoding to blake3 and finding NaNs that are not yet canonical.
//!
//! The canonical encoding (`deed_types::Tensor::encode_into`) writes every number
//! little-endian. On a little-endian host the in-memory bytes of a numeric slice *are*
//! that encoding, so the hasher can take the whole slice in one `update` instead of a
//! converted copy in small pieces; one large update also lets blake3 hash many chunks
//! in parallel SIMD lanes. Big-endian hosts, booleans and strings take the generic
//! encoder. The tests check the bytes against `encode_into` for every dtype.
//!
//! Why `unsafe`: viewing `&[T]` of a plain numeric type (or `bool`, whose bytes are 0
//! or 1, exactly its encoding, or a low-bit newtype, whose one byte is its encoding)
//! as `&[u8]` needs `slice::from_raw_parts`; every such type has no padding and every
//! byte of it is initialized.
#![allow(unsafe_code)]

use deed_types::{Tensor, TensorData};

/// Magic prefix of the canonical tensor encoding (see `deed_types::tensor`).
const MAGIC: &[u8; 4] = b"DTN1";

/// The header of the canonical encoding: magic, dtype code, rank, dimensions.
fn header(t: &Tensor) -> Vec<u8> {
    let mut h = Vec::with_capacity(9 + 8 * t.rank());
    h.extend_from_slice(MAGIC);
    h.push(t.dtype().onnx_code() as u8);
    h.extend_from_slice(&(t.rank() as u32).to_le_bytes());
    for &d in t.shape() {
        h.extend_from_slice(&(d as u64).to_le_bytes());
    }
    h
}

/// The bytes of a slice of a padding-free plain numeric type.
#[cfg(target_endian = "little")]
fn raw<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: callers pass only primitive integers, floats, `half` floats
    // (`repr(transparent)` over u16), `bool` and the low-bit newtypes of `deed_types`
    // (`repr(transparent)` over one u8 or i8 holding exactly the element's canonical
    // byte): no padding, all bytes initialized; the length in bytes is exactly the
    // slice's size.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The numbers' encoding as one borrowed slice, when the host can give it.
#[cfg(target_endian = "little")]
fn data_bytes(d: &TensorData) -> Option<&[u8]> {
    Some(match d {
        TensorData::F32(v) => raw(v),
        TensorData::F64(v) => raw(v),
        TensorData::F16(v) => raw(v),
        TensorData::BF16(v) => raw(v),
        TensorData::I8(v) => raw(v),
        TensorData::U8(v) => v,
        TensorData::I16(v) => raw(v),
        TensorData::U16(v) => raw(v),
        TensorData::I32(v) => raw(v),
        TensorData::U32(v) => raw(v),
        TensorData::I64(v) => raw(v),
        TensorData::U64(v) => raw(v),
        TensorData::Bool(v) => raw(v),
        TensorData::F8E4M3FN(v) => raw(v),
        TensorData::F8E4M3FNUZ(v) => raw(v),
        TensorData::F8E5M2(v) => raw(v),
        TensorData::F8E5M2FNUZ(v) => raw(v),
        TensorData::U4(v) => raw(v),
        TensorData::I4(v) => raw(v),
        TensorData::F4E2M1(v) => raw(v),
        TensorData::F8E8M0(v) => raw(v),
        TensorData::U2(v) => raw(v),
        TensorData::I2(v) => raw(v),
        TensorData::Str(_) => return None,
    })
}

#[cfg(not(target_endian = "little"))]
fn data_bytes(_: &TensorData) -> Option<&[u8]> {
    None
}

/// Feeds `t`'s canonical encoding to `h`: the same bytes as `Tensor::hash_into`.
pub fn hash_tensor(t: &Tensor, h: &mut LeadHasher) {
    match data_bytes(t.data()) {
        Some(bytes) => {
            h.update(&header(t));
            h.update(bytes);
        }
        None => t.hash_into(h.hasher()),
    }
}

/// Bytes a [`LeadHasher`] gathers before it hands them to blake3: sixteen chunks, as
/// many as blake3's widest SIMD path hashes at once.
const LEAD: usize = 16 << 10;

/// A blake3 hasher that gathers the first [`LEAD`] bytes of its input into one buffer
/// and hands them over in one update; the rest goes straight through. The hash is the
/// same as feeding the bytes to `blake3::Hasher` directly. It is faster because blake3
/// hashes as many chunks at once as an update's length and the chunk counter's
/// alignment allow: a step's encoding starts with a few bytes of header, so fed
/// piecewise, the first chunks of its data arrive one, two, four… at a time, at a
/// fraction of the SIMD width. Gathered, they arrive sixteen at once, and the data
/// after them starts on a sixteen-chunk boundary. That took an 8 KiB tensor from
/// 3.3 to 1.8 µs and a 128 KiB one from 20.8 to 18.2 µs here.
pub struct LeadHasher {
    h: blake3::Hasher,
    /// The gathered bytes, while fewer than [`LEAD`] have come; `None` once handed over.
    lead: Option<Vec<u8>>,
}

impl LeadHasher {
    /// Gathers input for `h`.
    pub fn new(h: blake3::Hasher) -> LeadHasher {
        LeadHasher {
            h,
            lead: Some(Vec::new()),
        }
    }

    /// Hashes `bytes` after what came before.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.lead {
            None => {
                self.h.update(bytes);
            }
            Some(lead) => {
                let room = LEAD - lead.len();
                if bytes.len() < room {
                    if lead.capacity() == 0 {
                        lead.reserve_exact(LEAD);
                    }
                    lead.extend_from_slice(bytes);
                } else {
                    let (head, tail) = bytes.split_at(room);
                    if lead.is_empty() {
                        self.h.update(head);
                    } else {
                        lead.extend_from_slice(head);
                        self.h.update(lead);
                    }
                    self.lead = None;
                    self.h.update(tail);
                }
            }
        }
    }

    /// The underlying hasher, with everything gathered handed over, for input fed to
    /// it directly.
    pub fn hasher(&mut self) -> &mut blake3::Hasher {
        if let Some(lead) = self.lead.take() {
            self.h.update(&lead);
        }
        &mut self.h
    }

    /// The hash of everything fed in.
    pub fn finalize(mut self) -> blake3::Hash {
        self.hasher().finalize()
    }
}

/// True when `t` holds a NaN other than its dtype's canonical NaN. Scans in blocks
/// without branches so that the common case (no NaN) runs at memory speed.
pub fn has_noncanonical_nan(t: &Tensor) -> bool {
    const BLOCK: usize = 256;
    fn scan<T: Copy>(v: &[T], bad: impl Fn(T) -> bool) -> bool {
        // Compiled for the widest vectors the CPU has: the scan is a compare and an
        // or per element, as wide as the registers allow.
        // Plain loops: iterator adaptors such as `any` may call functions of their
        // own, compiled for the baseline instruction set.
        crate::ops::simd::with_fma(
            #[inline(always)]
            || {
                for c in v.chunks(BLOCK) {
                    let mut found = false;
                    for &x in c {
                        found |= bad(x);
                    }
                    if found {
                        return true;
                    }
                }
                false
            },
        )
    }
    match t.data() {
        TensorData::F32(v) => scan(v, |x: f32| {
            let b = x.to_bits();
            (b & 0x7fff_ffff) > 0x7f80_0000 && b != 0x7fc0_0000
        }),
        TensorData::F64(v) => scan(v, |x: f64| {
            let b = x.to_bits();
            (b & 0x7fff_ffff_ffff_ffff) > 0x7ff0_0000_0000_0000 && b != 0x7ff8_0000_0000_0000
        }),
        TensorData::F16(v) => scan(v, |x: half::f16| {
            let b = x.to_bits();
            (b & 0x7fff) > 0x7c00 && b != 0x7e00
        }),
        TensorData::BF16(v) => scan(v, |x: half::bf16| {
            let b = x.to_bits();
            (b & 0x7fff) > 0x7f80 && b != 0x7fc0
        }),
        _ => false,
    }
}

/// Makes every NaN in `t` canonical (see `docs/canonical-semantics.md`), touching the
/// data only when there is one to fix.
pub fn canonicalize(t: &mut Tensor) {
    if has_noncanonical_nan(t) {
        t.canonicalize_nans();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use proptest::prelude::*;

    fn tensors(bits: &[u64], shape: Vec<usize>) -> Vec<Tensor> {
        let n: usize = shape.iter().product();
        let b = &bits[..n];
        let s = || shape.clone();
        vec![
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| f32::from_bits(x as u32))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter().map(|&x| f64::from_bits(x)).collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| f16::from_bits(x as u16))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| bf16::from_bits(x as u16))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x as i8).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x as u8).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x as i16).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x as u16).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x as i32).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x as u32).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x as i64).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.to_vec()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| x & 1 == 1).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(s(), b.iter().map(|&x| format!("s{x}")).collect::<Vec<_>>()).unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::F8E4M3FN::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::F8E4M3FNUZ::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::F8E5M2::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::F8E5M2FNUZ::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::U4::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::I4::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::F4E2M1::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::F8E8M0::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::U2::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            Tensor::from_vec(
                s(),
                b.iter()
                    .map(|&x| deed_types::tensor::I2::from_bits(x as u8))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        ]
    }

    fn special_bits() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => any::<u64>(),
            1 => Just(0x7fc0_0000u64),
            1 => Just(0xffc0_0001u64),
            1 => Just(0x7ff8_0000_0000_0000u64),
            1 => Just(0x7ff0_0000_0000_0001u64),
            1 => Just(0x7e00u64),
            1 => Just(0xfe01u64),
            1 => Just(0x7fc0u64),
            1 => Just(0x7f81u64),
            1 => Just(0x7f80_0000u64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn hash_matches_canonical_encoding(
            bits in prop::collection::vec(special_bits(), 600),
            shape in prop::collection::vec(0usize..9, 0..4),
        ) {
            let n: usize = shape.iter().product();
            prop_assume!(n <= 600);
            for t in tensors(&bits, shape.clone()) {
                let mut fast = LeadHasher::new(blake3::Hasher::new());
                hash_tensor(&t, &mut fast);
                let mut slow = blake3::Hasher::new();
                t.hash_into(&mut slow);
                prop_assert_eq!(fast.finalize(), slow.finalize(), "{:?}", t.dtype());
                // Canonicalizing changes something exactly when the scan says so.
                let mut c = t.clone();
                prop_assert_eq!(has_noncanonical_nan(&t), c.canonicalize_nans(), "{:?}", t.dtype());
                let mut d = t.clone();
                canonicalize(&mut d);
                // Compare bits: NaN != NaN under the tensors' value equality.
                prop_assert_eq!(c.encode(), d.encode());
                prop_assert!(!has_noncanonical_nan(&d));
            }
        }
    }

    #[test]
    fn large_tensor_hash_matches() {
        let v: Vec<f32> = (0..70_000).map(|i| (i as f32).sin()).collect();
        let t = Tensor::from_vec(vec![70_000], v).unwrap();
        let mut fast = LeadHasher::new(blake3::Hasher::new());
        hash_tensor(&t, &mut fast);
        assert_eq!(Into::<deed_types::Hash>::into(fast.finalize()), t.hash());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Gathering the lead changes nothing: any split of any input into updates,
        /// with the underlying hasher taken in between, hashes as blake3 does.
        #[test]
        fn lead_hasher_equals_blake3(
            len in 0usize..(3 * LEAD),
            cuts in prop::collection::vec(0usize..(3 * LEAD), 0..6),
            direct in prop::option::of(0usize..6),
        ) {
            let input: Vec<u8> = (0..len).map(|i| (i * 31 + i / 1024) as u8).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.push(0);
            cuts.push(len);
            cuts.sort_unstable();
            let mut lead = LeadHasher::new(blake3::Hasher::new());
            for (k, w) in cuts.windows(2).enumerate() {
                if direct == Some(k) {
                    lead.hasher().update(&input[w[0]..w[1]]);
                } else {
                    lead.update(&input[w[0]..w[1]]);
                }
            }
            prop_assert_eq!(lead.finalize(), blake3::hash(&input));
        }
    }
}
