//! The chunk list of a blob and its compact binary encoding.

use std::io::Read;
use std::ops::Range;

use deed_types::Hash;
use serde::{Deserialize, Serialize};

use super::{BlobError, BlobLimits, Cid};

/// The chunk size Deed uses unless told otherwise: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

const MAGIC: &[u8; 4] = b"DBM1";

/// Data from which [`Manifest::build`] hashes the chunks and the whole on two threads.
const PARALLEL_BUILD_BYTES: usize = 4 << 20;
const HEADER_LEN: usize = 4 + 32 + 8 + 4 + 4;

/// What a blob is made of: its id, its size, the chunk size and the blake3 hash of
/// every chunk. Chunk `i` covers bytes `i * chunk_size ..` up to the next chunk or the
/// end of the blob; only the last chunk may be shorter. An empty blob has no chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The blob's id: the blake3 hash of all its bytes.
    pub id: Cid,
    /// Total size in bytes.
    pub size: u64,
    /// Size of every chunk but the last.
    pub chunk_size: u32,
    /// blake3 hash of each chunk, in order.
    pub chunks: Vec<Hash>,
}

impl Manifest {
    /// The manifest of `data` cut into chunks of `chunk_size` bytes.
    pub fn build(data: &[u8], chunk_size: u32) -> Result<Manifest, BlobError> {
        if chunk_size == 0 {
            return Err(BlobError::BadManifest {
                reason: "chunk size is zero",
            });
        }
        let step = usize::try_from(chunk_size).map_err(|_| BlobError::BadManifest {
            reason: "chunk size does not fit this platform",
        })?;
        let chunk_hashes = || data.chunks(step).map(Hash::of).collect();
        // Two passes over the data (the chunks, the whole): on two threads when
        // there is enough of it to be worth a thread.
        let (id, chunks) = if data.len() >= PARALLEL_BUILD_BYTES {
            std::thread::scope(|s| {
                let whole = s.spawn(|| Cid::of(data));
                let chunks = chunk_hashes();
                // `Cid::of` does not panic; should the thread fail anyway, hash here.
                (whole.join().unwrap_or_else(|_| Cid::of(data)), chunks)
            })
        } else {
            (Cid::of(data), chunk_hashes())
        };
        Ok(Manifest {
            id,
            size: data.len() as u64,
            chunk_size,
            chunks,
        })
    }

    /// The manifest of everything `reader` yields, read one chunk at a time so a
    /// large file never has to fit in memory.
    pub fn from_reader<R: Read>(mut reader: R, chunk_size: u32) -> Result<Manifest, BlobError> {
        if chunk_size == 0 {
            return Err(BlobError::BadManifest {
                reason: "chunk size is zero",
            });
        }
        let io = |source| BlobError::Io {
            op: "read blob for manifest",
            source,
        };
        let mut whole = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        let mut buf = Vec::with_capacity(chunk_size as usize);
        loop {
            buf.clear();
            (&mut reader)
                .take(u64::from(chunk_size))
                .read_to_end(&mut buf)
                .map_err(io)?;
            if buf.is_empty() {
                break;
            }
            whole.update(&buf);
            chunks.push(Hash::of(&buf));
            size += buf.len() as u64;
            if buf.len() < chunk_size as usize {
                break;
            }
        }
        Ok(Manifest {
            id: Cid(whole.finalize().into()),
            size,
            chunk_size,
            chunks,
        })
    }

    /// How many chunks a blob of `size` bytes has with chunks of `chunk_size` bytes.
    pub fn expected_chunk_count(size: u64, chunk_size: u32) -> u64 {
        if chunk_size == 0 {
            return 0;
        }
        size.div_ceil(u64::from(chunk_size))
    }

    /// Number of chunks, as the u32 chunk indices use.
    pub fn chunk_count(&self) -> u32 {
        u32::try_from(self.chunks.len()).unwrap_or(u32::MAX)
    }

    /// Checks the manifest against itself and against `limits`.
    pub fn validate(&self, limits: &BlobLimits) -> Result<(), BlobError> {
        if self.size > limits.max_blob_size {
            return Err(BlobError::TooLarge {
                size: self.size,
                limit: limits.max_blob_size,
            });
        }
        if self.chunk_size == 0 {
            return Err(BlobError::BadManifest {
                reason: "chunk size is zero",
            });
        }
        if self.chunk_size > limits.max_chunk_size {
            return Err(BlobError::BadManifest {
                reason: "chunk size above the store's limit",
            });
        }
        if self.chunk_size < limits.min_chunk_size {
            return Err(BlobError::BadManifest {
                reason: "chunk size below the store's limit",
            });
        }
        if Manifest::expected_chunk_count(self.size, self.chunk_size) != self.chunks.len() as u64 {
            return Err(BlobError::BadManifest {
                reason: "chunk count does not match size and chunk size",
            });
        }
        if u32::try_from(self.chunks.len()).is_err() {
            return Err(BlobError::BadManifest {
                reason: "more than 2^32 - 1 chunks",
            });
        }
        Ok(())
    }

    /// The bytes of the blob chunk `index` covers.
    pub fn chunk_range(&self, index: u32) -> Result<Range<u64>, BlobError> {
        if index >= self.chunk_count() {
            return Err(BlobError::ChunkIndexOutOfRange {
                index,
                count: self.chunk_count(),
            });
        }
        let start = u64::from(index) * u64::from(self.chunk_size);
        let end = start
            .saturating_add(u64::from(self.chunk_size))
            .min(self.size);
        Ok(start..end)
    }

    /// The chunks that hold any byte of `range` (which must be within the blob).
    pub fn chunks_for(&self, range: &Range<u64>) -> Range<u32> {
        if range.start >= range.end || self.chunk_size == 0 {
            return 0..0;
        }
        let cs = u64::from(self.chunk_size);
        let first = range.start / cs;
        let last = (range.end - 1) / cs;
        let first = u32::try_from(first).unwrap_or(u32::MAX);
        let end = u32::try_from(last + 1).unwrap_or(u32::MAX);
        first..end.min(self.chunk_count())
    }

    /// Checks that `data` is chunk `index`: right length, right hash.
    pub fn check_chunk(&self, index: u32, data: &[u8]) -> Result<(), BlobError> {
        let range = self.chunk_range(index)?;
        let expected_len = range.end - range.start;
        if data.len() as u64 != expected_len {
            return Err(BlobError::ChunkLength {
                index,
                expected: expected_len,
                got: data.len() as u64,
            });
        }
        let got = Hash::of(data);
        let expected = *self
            .chunks
            .get(index as usize)
            .ok_or(BlobError::ChunkIndexOutOfRange {
                index,
                count: self.chunk_count(),
            })?;
        if got != expected {
            return Err(BlobError::ChunkHashMismatch {
                index,
                expected,
                got,
            });
        }
        Ok(())
    }

    /// A hash identifying this exact manifest (id, chunking and chunk list), used to
    /// keep uploads of the same blob with different manifests apart.
    pub fn upload_key(&self) -> Hash {
        Hash::domain("deed-store blob manifest v1", &[&self.encode()])
    }

    /// Compact binary form: magic, id, size, chunk size, chunk count, chunk hashes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 32 * self.chunks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.id.0.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.chunk_count().to_le_bytes());
        for h in &self.chunks {
            out.extend_from_slice(h.as_bytes());
        }
        out
    }

    /// Parses [`Manifest::encode`]'s output. Only checks the encoding, not limits.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, BlobError> {
        let bad = |reason| BlobError::BadManifest { reason };
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(bad("encoding too short or wrong magic"));
        }
        let arr32 = |b: &[u8]| <[u8; 32]>::try_from(b).map_err(|_| bad("truncated hash"));
        let id = Cid(Hash(arr32(&bytes[4..36])?));
        let size = u64::from_le_bytes(
            bytes[36..44]
                .try_into()
                .map_err(|_| bad("truncated size"))?,
        );
        let chunk_size = u32::from_le_bytes(
            bytes[44..48]
                .try_into()
                .map_err(|_| bad("truncated chunk size"))?,
        );
        let count = u32::from_le_bytes(
            bytes[48..52]
                .try_into()
                .map_err(|_| bad("truncated chunk count"))?,
        );
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != u64::from(count) * 32 {
            return Err(bad("chunk list length does not match chunk count"));
        }
        let chunks = body
            .chunks_exact(32)
            .map(|c| arr32(c).map(Hash))
            .collect::<Result<Vec<_>, _>>()?;
        let m = Manifest {
            id,
            size,
            chunk_size,
            chunks,
        };
        if chunk_size == 0
            || Manifest::expected_chunk_count(size, chunk_size) != m.chunks.len() as u64
        {
            return Err(bad("chunk count does not match size and chunk size"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_blob_has_no_chunks() {
        let m = Manifest::build(&[], DEFAULT_CHUNK_SIZE).expect("build");
        assert_eq!(m.size, 0);
        assert!(m.chunks.is_empty());
        assert_eq!(m.id, Cid::of(&[]));
        m.validate(&BlobLimits::default()).expect("valid");
    }

    #[test]
    fn limits_are_enforced() {
        let limits = BlobLimits {
            max_blob_size: 100,
            max_chunk_size: 10,
            min_chunk_size: 2,
        };
        let m = Manifest::build(&[1u8; 101], 10).expect("build");
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::TooLarge {
                size: 101,
                limit: 100
            })
        ));
        let m = Manifest::build(&[1u8; 50], 11).expect("build");
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::BadManifest { .. })
        ));
        let m = Manifest::build(&[1u8; 50], 1).expect("build");
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::BadManifest { .. })
        ));
        let mut m = Manifest::build(&[1u8; 50], 10).expect("build");
        m.chunks.pop();
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::BadManifest { .. })
        ));
        assert!(Manifest::build(&[1], 0).is_err());
    }

    #[test]
    fn decode_rejects_truncation_and_bad_counts() {
        let m = Manifest::build(&[7u8; 100], 30).expect("build");
        let enc = m.encode();
        for cut in 0..enc.len() {
            assert!(Manifest::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = enc.clone();
        wrong[44] = 50; // chunk size 50 implies 2 chunks, the list has 4
        assert!(Manifest::decode(&wrong).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn chunks_reassemble_to_the_blob(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            chunk_size in 1u32..300,
        ) {
            let m = Manifest::build(&data, chunk_size).expect("build");
            prop_assert_eq!(m.chunks.len() as u64,
                Manifest::expected_chunk_count(data.len() as u64, chunk_size));
            let mut joined = Vec::new();
            for i in 0..m.chunk_count() {
                let r = m.chunk_range(i).expect("range");
                let chunk = &data[r.start as usize..r.end as usize];
                m.check_chunk(i, chunk).expect("own chunk verifies");
                joined.extend_from_slice(chunk);
            }
            prop_assert_eq!(&joined, &data);
            prop_assert_eq!(Cid::of(&joined), m.id);
            prop_assert_eq!(&Manifest::decode(&m.encode()).expect("decode"), &m);
            // A reader that returns few bytes per call must not change the chunking.
            let trickle = std::io::Read::chain(&data[..data.len() / 3], &data[data.len() / 3..]);
            prop_assert_eq!(&Manifest::from_reader(trickle, chunk_size).expect("reader"), &m);
            let json = serde_json::to_string(&m).expect("json");
            prop_assert_eq!(serde_json::from_str::<Manifest>(&json).expect("from json"), m);
        }

        /// A job that names its input by the blob's CID binds the same input hash as
        /// a job carrying those bytes inline: the ledger checks a blob handed to its
        /// referee by hashing it, so the two must agree.
        #[test]
        fn blob_ids_are_the_ledgers_input_hashes(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            chunk_size in 1u32..700,
        ) {
            use deed_types::JobInput;
            let m = Manifest::from_reader(&data[..], chunk_size).expect("reader");
            prop_assert_eq!(JobInput::ByCid(m.id).hash(), JobInput::Inline(data.clone()).hash());
            prop_assert_eq!(m.id.digest(), &Hash::of(&data));
        }

        #[test]
        fn corrupt_chunk_is_rejected(
            data in proptest::collection::vec(any::<u8>(), 1..2000),
            chunk_size in 1u32..300,
            pick in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let m = Manifest::build(&data, chunk_size).expect("build");
            let pos = pick.index(data.len());
            let index = (pos as u64 / u64::from(chunk_size)) as u32;
            let r = m.chunk_range(index).expect("range");
            let mut chunk = data[r.start as usize..r.end as usize].to_vec();
            chunk[pos - r.start as usize] ^= flip;
            let is_hash_mismatch =
                matches!(m.check_chunk(index, &chunk), Err(BlobError::ChunkHashMismatch { .. }));
            prop_assert!(is_hash_mismatch);
        }

        #[test]
        fn chunks_for_covers_exactly_the_range(
            size in 0u64..5000,
            chunk_size in 1u32..700,
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let m = Manifest {
                id: Cid::of(&[]),
                size,
                chunk_size,
                chunks: vec![Hash::ZERO;
                    Manifest::expected_chunk_count(size, chunk_size) as usize],
            };
            let (x, y) = (a.index(size as usize + 1) as u64, b.index(size as usize + 1) as u64);
            let range = x.min(y)..x.max(y);
            let chunks = m.chunks_for(&range);
            for i in 0..m.chunk_count() {
                let r = m.chunk_range(i).expect("range");
                // An empty range holds no byte, so it touches no chunk.
                let overlaps = !range.is_empty() && r.start < range.end && range.start < r.end;
                prop_assert_eq!(chunks.contains(&i), overlaps, "chunk {}", i);
            }
        }
    }
}
