//! The chunk list of a blob and its compact binary encoding.
//!
//! A blob's id is the blake3 hash of its bytes, and blake3 hashes a tree of 1 KiB
//! blocks. Chunks are a power of two of at least 1 KiB, so every chunk is a whole
//! subtree of that tree, and the manifest lists each chunk's *chunk value*: the
//! chaining value of its subtree (which depends on where the chunk sits in the blob),
//! or, for a blob of one chunk, the blob's hash itself. A manifest whose chunk values
//! do not merge up to its id is refused before any byte moves; after that, checking a
//! chunk against its value is one pass of blake3 over the chunk, and a blob whose
//! every chunk checked out *is* the blob the id names. Nobody hashes a blob twice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use deed_types::Hash;
use serde::{Deserialize, Serialize};

use super::{tree, BlobError, BlobLimits, Cid};

/// The chunk size Deed uses unless told otherwise: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// The smallest chunk size: one blake3 chunk, the leaf of its tree.
pub const MIN_CHUNK_SIZE: u32 = blake3::CHUNK_LEN as u32;

const MAGIC: &[u8; 4] = b"DBM2";

/// Data from which [`Manifest::build`] hashes the chunks on several threads.
const PARALLEL_BUILD_BYTES: usize = 4 << 20;
const HEADER_LEN: usize = 4 + 32 + 8 + 4 + 4;

/// What a blob is made of: its id, its size, the chunk size and every chunk's value
/// (see the module documentation). Chunk `i` covers bytes `i * chunk_size ..` up to
/// the next chunk or the end of the blob; only the last chunk may be shorter. An empty
/// blob has no chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The blob's id: the blake3 hash of all its bytes.
    pub id: Cid,
    /// Total size in bytes.
    pub size: u64,
    /// Size of every chunk but the last: a power of two, at least [`MIN_CHUNK_SIZE`].
    pub chunk_size: u32,
    /// The value of each chunk, in order: its chaining value in the blob's blake3
    /// tree, or the blob's hash when the blob is one chunk.
    pub chunks: Vec<Hash>,
}

/// Hashes one chunk, in pieces as they arrive, into its chunk value
/// ([`Manifest::chunk_hasher`]).
#[derive(Clone, Debug)]
pub struct ChunkHasher {
    hasher: blake3::Hasher,
    whole_blob: bool,
}

impl ChunkHasher {
    fn new(offset: u64, whole_blob: bool) -> ChunkHasher {
        let mut hasher = blake3::Hasher::new();
        if !whole_blob {
            blake3::hazmat::HasherExt::set_input_offset(&mut hasher, offset);
        }
        ChunkHasher { hasher, whole_blob }
    }

    /// Adds the next bytes of the chunk.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.hasher.update(data);
        self
    }

    /// The chunk value of everything added.
    pub fn finish(&self) -> Hash {
        if self.whole_blob {
            Hash(*self.hasher.finalize().as_bytes())
        } else {
            Hash(blake3::hazmat::HasherExt::finalize_non_root(&self.hasher))
        }
    }
}

/// Checks that `chunk_size` is a power of two of at least [`MIN_CHUNK_SIZE`].
fn check_chunk_size(chunk_size: u32) -> Result<(), BlobError> {
    if !chunk_size.is_power_of_two() || chunk_size < MIN_CHUNK_SIZE {
        return Err(BlobError::BadManifest {
            reason: "chunk size is not a power of two of at least 1 KiB",
        });
    }
    Ok(())
}

impl Manifest {
    /// The manifest of `data` cut into chunks of `chunk_size` bytes (a power of two,
    /// at least [`MIN_CHUNK_SIZE`]).
    pub fn build(data: &[u8], chunk_size: u32) -> Result<Manifest, BlobError> {
        check_chunk_size(chunk_size)?;
        let step = usize::try_from(chunk_size).map_err(|_| BlobError::BadManifest {
            reason: "chunk size does not fit this platform",
        })?;
        let count = data.len().div_ceil(step);
        let whole_blob = count == 1;
        let values = |first: usize, part: &[u8]| -> Vec<Hash> {
            part.chunks(step)
                .enumerate()
                .map(|(i, c)| {
                    let offset = ((first + i) as u64) * u64::from(chunk_size);
                    ChunkHasher::new(offset, whole_blob).update(c).finish()
                })
                .collect()
        };
        // Chunks are independent: split them over the cores when there are enough.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(count)
            .min(8);
        let chunks = if data.len() >= PARALLEL_BUILD_BYTES && threads > 1 {
            let per = count.div_ceil(threads);
            std::thread::scope(|s| {
                let parts: Vec<_> = data
                    .chunks(per * step)
                    .enumerate()
                    .skip(1)
                    .map(|(p, part)| s.spawn(move || values(p * per, part)))
                    .collect();
                let mut all = values(0, &data[..(per * step).min(data.len())]);
                for (p, handle) in parts.into_iter().enumerate() {
                    // Hashing does not panic; should a thread fail anyway, hash here.
                    let first = (p + 1) * per;
                    all.extend(handle.join().unwrap_or_else(|_| {
                        let lo = first * step;
                        values(first, &data[lo..(lo + per * step).min(data.len())])
                    }));
                }
                all
            })
        } else {
            values(0, data)
        };
        Manifest::from_values(data.len() as u64, chunk_size, chunks)
    }

    /// The manifest of everything `reader` yields, read one chunk at a time so a
    /// large file never has to fit in memory.
    pub fn from_reader<R: Read>(mut reader: R, chunk_size: u32) -> Result<Manifest, BlobError> {
        check_chunk_size(chunk_size)?;
        let io = |source| BlobError::Io {
            op: "read blob for manifest",
            source,
        };
        let mut chunks = Vec::new();
        // The first chunk's value depends on whether another chunk follows, which
        // is known only once the next read returns.
        let mut first: Option<ChunkHasher> = None;
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
            if size == 0 {
                let mut h = ChunkHasher::new(0, false);
                h.update(&buf);
                first = Some(h);
            } else {
                chunks.push(ChunkHasher::new(size, false).update(&buf).finish());
            }
            size += buf.len() as u64;
            if buf.len() < chunk_size as usize {
                break;
            }
        }
        if let Some(h) = first {
            let value = if chunks.is_empty() {
                Hash(*h.hasher.finalize().as_bytes())
            } else {
                h.finish()
            };
            chunks.insert(0, value);
        }
        Manifest::from_values(size, chunk_size, chunks)
    }

    /// The manifest of the file at `path`, which is read one chunk at a time (never
    /// whole into memory) and hashed on several threads when it is large.
    pub fn from_path(path: &Path, chunk_size: u32) -> Result<Manifest, BlobError> {
        check_chunk_size(chunk_size)?;
        let io = |source| BlobError::Io {
            op: "read blob file for manifest",
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        let c = u64::from(chunk_size);
        let count = size.div_ceil(c);
        let whole_blob = count == 1;
        // Chunks `first..end` of the file, read in order through one buffer.
        let values = |first: u64, end: u64| -> Result<Vec<Hash>, BlobError> {
            let mut f = File::open(path).map_err(io)?;
            f.seek(SeekFrom::Start(first * c)).map_err(io)?;
            let mut buf = vec![0u8; chunk_size as usize];
            let mut out = Vec::with_capacity(usize::try_from(end - first).unwrap_or(0));
            for index in first..end {
                let len = (size - index * c).min(c) as usize;
                let chunk = buf.get_mut(..len).ok_or(BlobError::BadManifest {
                    reason: "chunk longer than the chunk size",
                })?;
                f.read_exact(chunk).map_err(io)?;
                out.push(
                    ChunkHasher::new(index * c, whole_blob)
                        .update(chunk)
                        .finish(),
                );
            }
            Ok(out)
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8) as u64;
        let chunks = if size >= PARALLEL_BUILD_BYTES as u64 && threads > 1 && count > 1 {
            let per = count.div_ceil(threads);
            std::thread::scope(|s| {
                let parts: Vec<_> = (1..threads)
                    .map(|t| (t * per).min(count)..((t + 1) * per).min(count))
                    .map(|r| (r.clone(), s.spawn(move || values(r.start, r.end))))
                    .collect();
                let mut all = values(0, per.min(count))?;
                for (r, handle) in parts {
                    // Reading and hashing do not panic; should a thread fail anyway,
                    // read its part here.
                    all.extend(handle.join().unwrap_or_else(|_| values(r.start, r.end))?);
                }
                Ok::<_, BlobError>(all)
            })?
        } else {
            values(0, count)?
        };
        // A file that grew while it was read would give a manifest of the old length
        // with a wrong last value; one that shrank fails a read above.
        if std::fs::metadata(path).map_err(io)?.len() != size {
            return Err(io(std::io::Error::other(
                "the file changed while it was read",
            )));
        }
        Manifest::from_values(size, chunk_size, chunks)
    }

    /// The manifest of a blob of `size` bytes whose chunk values are `chunks`.
    fn from_values(size: u64, chunk_size: u32, chunks: Vec<Hash>) -> Result<Manifest, BlobError> {
        let id = tree::root(size, chunk_size, &chunks).ok_or(BlobError::BadManifest {
            reason: "chunk values do not fit the blob's size",
        })?;
        Ok(Manifest {
            id,
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

    /// Checks the manifest against itself and against `limits`, including that its
    /// chunk values merge up to its id (one blake3 compression per chunk). A store
    /// checks this once per upload and per manifest it reads; [`check_shape`]
    /// (Manifest::check_shape) is the cheap part for every chunk.
    pub fn validate(&self, limits: &BlobLimits) -> Result<(), BlobError> {
        self.check_shape(limits)?;
        self.check_values()
    }

    /// Checks that the chunk values merge up to the id, so that chunks which match
    /// their values are the blob the id names (and that the chunking is
    /// tree-aligned, with one value per chunk).
    pub fn check_values(&self) -> Result<(), BlobError> {
        if tree::root(self.size, self.chunk_size, &self.chunks) != Some(self.id) {
            return Err(BlobError::BadManifest {
                reason: "chunk values do not merge to the blob's id",
            });
        }
        Ok(())
    }

    /// Checks the manifest's sizes and chunk count against themselves and against
    /// `limits`, but not its chunk values against its id (see [`validate`](Manifest::validate)).
    pub fn check_shape(&self, limits: &BlobLimits) -> Result<(), BlobError> {
        if self.size > limits.max_blob_size {
            return Err(BlobError::TooLarge {
                size: self.size,
                limit: limits.max_blob_size,
            });
        }
        check_chunk_size(self.chunk_size)?;
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

    /// A hasher for chunk `index`, to be fed its bytes in order and compared with
    /// [`check_chunk_value`](Manifest::check_chunk_value).
    pub fn chunk_hasher(&self, index: u32) -> ChunkHasher {
        let offset = u64::from(index) * u64::from(self.chunk_size);
        ChunkHasher::new(offset, self.chunks.len() == 1)
    }

    /// Checks that `data` is chunk `index`: right length, right value.
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
        self.check_chunk_value(index, self.chunk_hasher(index).update(data).finish())
    }

    /// Checks that `got`, from [`chunk_hasher`](Manifest::chunk_hasher), is the value
    /// the manifest lists for chunk `index`.
    pub fn check_chunk_value(&self, index: u32, got: Hash) -> Result<(), BlobError> {
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
        Hash::domain("deed-store blob manifest v2", &[&self.encode()])
    }

    /// Compact binary form: magic, id, size, chunk size, chunk count, chunk values.
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

    /// Chunk sizes the tests cut blobs into: 1, 2, 4 and 8 KiB.
    fn chunk_size() -> impl Strategy<Value = u32> {
        (0u32..4).prop_map(|shift| MIN_CHUNK_SIZE << shift)
    }

    #[test]
    fn empty_blob_has_no_chunks() {
        let m = Manifest::build(&[], DEFAULT_CHUNK_SIZE).expect("build");
        assert_eq!(m.size, 0);
        assert!(m.chunks.is_empty());
        assert_eq!(m.id, Cid::of(&[]));
        m.validate(&BlobLimits::default()).expect("valid");
    }

    #[test]
    fn a_one_chunk_blob_lists_its_own_hash() {
        let data = vec![9u8; 3000];
        let m = Manifest::build(&data, 4096).expect("build");
        assert_eq!(m.chunks, vec![Hash::of(&data)]);
        let two = Manifest::build(&data, 2048).expect("build");
        assert_ne!(two.chunks[0], Hash::of(&data[..2048]));
        assert_eq!(two.id, m.id);
    }

    #[test]
    fn chunk_sizes_must_be_tree_aligned() {
        for bad in [0u32, 1, 512, 1000, 1025, 3 << 10] {
            assert!(
                matches!(
                    Manifest::build(&[1; 5000], bad),
                    Err(BlobError::BadManifest { .. })
                ),
                "{bad}"
            );
            assert!(
                Manifest::from_reader(&[1u8; 5000][..], bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = BlobLimits {
            max_blob_size: 100 << 10,
            max_chunk_size: 8 << 10,
            min_chunk_size: 2 << 10,
        };
        let m = Manifest::build(&[1u8; (100 << 10) + 1], 8 << 10).expect("build");
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::TooLarge {
                size: 102_401,
                limit: 102_400
            })
        ));
        let m = Manifest::build(&[1u8; 50 << 10], 16 << 10).expect("build");
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::BadManifest { .. })
        ));
        let m = Manifest::build(&[1u8; 50 << 10], 1 << 10).expect("build");
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::BadManifest { .. })
        ));
        let mut m = Manifest::build(&[1u8; 50 << 10], 8 << 10).expect("build");
        m.chunks.pop();
        assert!(matches!(
            m.validate(&limits),
            Err(BlobError::BadManifest { .. })
        ));
        let mut m = Manifest::build(&[1u8; 50 << 10], 8 << 10).expect("build");
        m.chunk_size = 6 << 10;
        assert!(matches!(
            m.check_shape(&limits),
            Err(BlobError::BadManifest { .. })
        ));
    }

    #[test]
    fn a_manifest_whose_values_do_not_merge_to_its_id_is_refused() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let limits = BlobLimits {
            min_chunk_size: MIN_CHUNK_SIZE,
            ..BlobLimits::default()
        };
        let good = Manifest::build(&data, 1024).expect("build");
        good.validate(&limits).expect("own manifest");
        let mut lied = good.clone();
        lied.id = Cid::of(b"something else");
        let mut swapped = good.clone();
        swapped.chunks.swap(0, 1);
        let mut altered = good.clone();
        altered.chunks[9].0[31] ^= 1;
        for m in [lied, swapped, altered] {
            // The shape is fine: only the values give the lie away.
            m.check_shape(&limits).expect("shape");
            assert!(matches!(
                m.validate(&limits),
                Err(BlobError::BadManifest { .. })
            ));
        }
    }

    #[test]
    fn decode_rejects_truncation_and_bad_counts() {
        let m = Manifest::build(&[7u8; 5000], 1024).expect("build");
        let enc = m.encode();
        for cut in 0..enc.len() {
            assert!(Manifest::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = enc.clone();
        wrong[45] = 0x10; // chunk size 4 KiB implies 2 chunks, the list has 5
        assert!(Manifest::decode(&wrong).is_err());
        let mut old = enc.clone();
        old[..4].copy_from_slice(b"DBM1");
        assert!(Manifest::decode(&old).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn chunks_reassemble_to_the_blob(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
            chunk_size in chunk_size(),
        ) {
            let m = Manifest::build(&data, chunk_size).expect("build");
            prop_assert_eq!(m.chunks.len() as u64,
                Manifest::expected_chunk_count(data.len() as u64, chunk_size));
            let limits = BlobLimits { min_chunk_size: MIN_CHUNK_SIZE, ..BlobLimits::default() };
            m.validate(&limits).expect("own manifest is valid");
            let mut joined = Vec::new();
            for i in 0..m.chunk_count() {
                let r = m.chunk_range(i).expect("range");
                let chunk = &data[r.start as usize..r.end as usize];
                m.check_chunk(i, chunk).expect("own chunk verifies");
                // Fed in pieces, the hasher gives the same value.
                let mut h = m.chunk_hasher(i);
                for piece in chunk.chunks(777) {
                    h.update(piece);
                }
                m.check_chunk_value(i, h.finish()).expect("piecewise value");
                joined.extend_from_slice(chunk);
            }
            prop_assert_eq!(&joined, &data);
            prop_assert_eq!(Cid::of(&joined), m.id);
            prop_assert_eq!(&Manifest::decode(&m.encode()).expect("decode"), &m);
            // A reader that returns few bytes per call must not change the chunking.
            let trickle = std::io::Read::chain(&data[..data.len() / 3], &data[data.len() / 3..]);
            prop_assert_eq!(&Manifest::from_reader(trickle, chunk_size).expect("reader"), &m);
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("blob");
            std::fs::write(&path, &data).expect("write");
            prop_assert_eq!(&Manifest::from_path(&path, chunk_size).expect("file"), &m);
            let json = serde_json::to_string(&m).expect("json");
            prop_assert_eq!(serde_json::from_str::<Manifest>(&json).expect("from json"), m);
        }

        /// A job that names its input by the blob's CID binds the same input hash as
        /// a job carrying those bytes inline: the ledger checks a blob handed to its
        /// referee by hashing it, so the two must agree.
        #[test]
        fn blob_ids_are_the_ledgers_input_hashes(
            data in proptest::collection::vec(any::<u8>(), 0..12_000),
            chunk_size in chunk_size(),
        ) {
            use deed_types::JobInput;
            let m = Manifest::from_reader(&data[..], chunk_size).expect("reader");
            prop_assert_eq!(JobInput::ByCid(m.id).hash(), JobInput::Inline(data.clone()).hash());
            prop_assert_eq!(m.id.digest(), &Hash::of(&data));
        }

        #[test]
        fn corrupt_or_misplaced_chunk_is_rejected(
            data in proptest::collection::vec(any::<u8>(), 1..12_000),
            chunk_size in chunk_size(),
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
            // The right bytes at the wrong place do not verify either.
            if m.chunk_count() > 2 && index + 2 < m.chunk_count() {
                let r = m.chunk_range(index).expect("range");
                let chunk = &data[r.start as usize..r.end as usize];
                let moved = m.check_chunk(index + 1, chunk);
                let is_hash_mismatch = matches!(moved, Err(BlobError::ChunkHashMismatch { .. }));
                prop_assert!(is_hash_mismatch);
            }
        }

        #[test]
        fn chunks_for_covers_exactly_the_range(
            size in 0u64..50_000,
            chunk_size in chunk_size(),
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn a_parallel_build_matches_a_serial_one(
            len in 0usize..(10 << 20),
            shift in 0u32..6,
        ) {
            // The build splits chunks over threads from 4 MiB on.
            let chunk_size = (64 << 10) << shift;
            let data: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8 ^ (i >> 16) as u8).collect();
            let parallel = Manifest::build(&data, chunk_size).expect("build");
            let serial = Manifest::from_reader(&data[..], chunk_size).expect("reader");
            prop_assert_eq!(&parallel, &serial);
            prop_assert_eq!(parallel.id, Cid::of(&data));
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("blob");
            std::fs::write(&path, &data).expect("write");
            prop_assert_eq!(&Manifest::from_path(&path, chunk_size).expect("file"), &parallel);
        }
    }
}
