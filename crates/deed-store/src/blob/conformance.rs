//! The behaviour every [`BlobStore`] must show, as one async suite that any
//! implementation runs with `suite(|| async { make_a_fresh_store() })`.
//!
//! Stores under test should be built with [`limits`]; the suite relies on them to
//! probe the size checks. The suite panics with a message naming the broken rule.

use std::future::Future;

use deed_types::Hash;

use super::{download, upload, BlobError, BlobLimits, BlobStore, Cid, Manifest, MIN_CHUNK_SIZE};

/// The limits stores under test must be created with.
pub fn limits() -> BlobLimits {
    BlobLimits {
        max_blob_size: 64 * 1024,
        max_chunk_size: 8 * 1024,
        min_chunk_size: MIN_CHUNK_SIZE,
    }
}

/// Runs every check against fresh stores produced by `make`.
pub async fn suite<S, F, Fut>(make: F)
where
    S: BlobStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    assert_eq!(
        make().await.limits(),
        limits(),
        "build stores with conformance::limits()"
    );
    round_trip_and_ranges(make().await).await;
    empty_blob(make().await).await;
    upload_resumes(make().await).await;
    bad_chunks_change_nothing(make().await).await;
    incomplete_upload_is_invisible(make().await).await;
    lying_manifest_is_rejected(make().await).await;
    limits_are_enforced(make().await).await;
    abort_discards_staged_chunks(make().await).await;
    same_blob_with_two_chunkings(make().await).await;
    unknown_blobs_and_bad_ranges(make().await).await;
}

/// Deterministic test content.
pub fn sample(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn chunk_of<'a>(m: &Manifest, data: &'a [u8], index: u32) -> &'a [u8] {
    let r = m.chunk_range(index).expect("chunk range");
    &data[r.start as usize..r.end as usize]
}

async fn round_trip_and_ranges<S: BlobStore>(s: S) {
    let data = sample(10_000, 1);
    let m = upload(&s, &data, 1024).await.expect("upload");
    assert_eq!(m.id, Cid::of(&data), "the id is the content hash");
    assert_eq!(s.manifest(&m.id).await.expect("manifest"), Some(m.clone()));
    assert_eq!(download(&s, &m.id).await.expect("download"), data);
    let ranges = [
        (0u64, 0u64),
        (0, 1),
        (0, 1024),
        (1023, 1025),
        (1024, 2048),
        (100, 9000),
        (9999, 10_000),
        (10_000, 10_000),
        (5000, 5001),
        (0, 10_000),
    ];
    for (a, b) in ranges {
        assert_eq!(
            s.read_range(&m.id, a..b).await.expect("range"),
            &data[a as usize..b as usize],
            "range {a}..{b}"
        );
    }
    for index in 0..m.chunk_count() {
        assert_eq!(
            s.read_chunk_unverified(&m, index).await.expect("chunk"),
            chunk_of(&m, &data, index),
            "chunk {index} as stored"
        );
    }
    assert!(s.missing_chunks(&m).await.expect("missing").is_empty());
    // Uploading again is a no-op that succeeds.
    assert_eq!(upload(&s, &data, 1024).await.expect("re-upload"), m);
    s.finish(&m).await.expect("finish is idempotent");
}

async fn empty_blob<S: BlobStore>(s: S) {
    let m = upload(&s, &[], 1024).await.expect("upload empty");
    assert_eq!(m.size, 0);
    assert_eq!(m.id, Cid::of(&[]));
    assert_eq!(
        download(&s, &m.id).await.expect("download"),
        Vec::<u8>::new()
    );
    assert_eq!(
        s.read_range(&m.id, 0..0).await.expect("range"),
        Vec::<u8>::new()
    );
}

async fn upload_resumes<S: BlobStore>(s: S) {
    let data = sample(7_000, 2);
    let m = Manifest::build(&data, 1024).expect("build");
    assert_eq!(
        s.missing_chunks(&m).await.expect("missing"),
        (0..7).collect::<Vec<u32>>(),
        "a new upload lacks every chunk"
    );
    for i in [6u32, 0, 3] {
        s.put_chunk(&m, i, chunk_of(&m, &data, i))
            .await
            .expect("put");
    }
    // Sending a chunk twice is harmless.
    s.put_chunk(&m, 3, chunk_of(&m, &data, 3))
        .await
        .expect("put again");
    assert_eq!(
        s.missing_chunks(&m).await.expect("missing"),
        vec![1, 2, 4, 5]
    );
    assert_eq!(
        s.manifest(&m.id).await.expect("manifest"),
        None,
        "not visible yet"
    );
    for i in [5u32, 1, 4, 2] {
        s.put_chunk(&m, i, chunk_of(&m, &data, i))
            .await
            .expect("put");
    }
    assert!(s.missing_chunks(&m).await.expect("missing").is_empty());
    s.finish(&m).await.expect("finish");
    assert_eq!(download(&s, &m.id).await.expect("download"), data);
}

async fn bad_chunks_change_nothing<S: BlobStore>(s: S) {
    let data = sample(3_000, 3);
    let m = Manifest::build(&data, 1024).expect("build");
    let mut corrupt = chunk_of(&m, &data, 1).to_vec();
    corrupt[500] ^= 0x40;
    let err = s
        .put_chunk(&m, 1, &corrupt)
        .await
        .expect_err("corrupt chunk");
    assert!(
        matches!(err, BlobError::ChunkHashMismatch { index: 1, .. }),
        "wrong error: {err:?}"
    );
    assert!(!err.is_retryable());
    // A right chunk sent under the wrong index is just as wrong.
    let err = s
        .put_chunk(&m, 1, chunk_of(&m, &data, 0))
        .await
        .expect_err("misplaced chunk");
    assert!(
        matches!(err, BlobError::ChunkHashMismatch { index: 1, .. }),
        "{err:?}"
    );
    let err = s
        .put_chunk(&m, 0, &chunk_of(&m, &data, 0)[..1023])
        .await
        .expect_err("short chunk");
    assert!(
        matches!(
            err,
            BlobError::ChunkLength {
                index: 0,
                expected: 1024,
                got: 1023
            }
        ),
        "{err:?}"
    );
    let err = s
        .put_chunk(&m, 3, b"x")
        .await
        .expect_err("index out of range");
    assert!(
        matches!(err, BlobError::ChunkIndexOutOfRange { index: 3, count: 3 }),
        "{err:?}"
    );
    assert_eq!(
        s.missing_chunks(&m).await.expect("missing"),
        vec![0, 1, 2],
        "rejected chunks are not stored"
    );
}

async fn incomplete_upload_is_invisible<S: BlobStore>(s: S) {
    let data = sample(4_000, 4);
    let m = Manifest::build(&data, 1024).expect("build");
    for i in [0u32, 2] {
        s.put_chunk(&m, i, chunk_of(&m, &data, i))
            .await
            .expect("put");
    }
    let err = s.finish(&m).await.expect_err("incomplete");
    assert!(
        matches!(
            err,
            BlobError::Incomplete {
                missing: 2,
                first: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.manifest(&m.id).await.expect("manifest"), None);
    let err = s.read_range(&m.id, 0..10).await.expect_err("not visible");
    assert!(matches!(err, BlobError::NotFound { .. }), "{err:?}");
    let err = s
        .read_chunk_unverified(&m, 0)
        .await
        .expect_err("a staged chunk is not served");
    assert!(matches!(err, BlobError::NotFound { .. }), "{err:?}");
    // The chunks that did arrive are kept for the resumed upload.
    assert_eq!(s.missing_chunks(&m).await.expect("missing"), vec![1, 3]);
}

async fn lying_manifest_is_rejected<S: BlobStore>(s: S) {
    let data = sample(2_500, 5);
    let honest = Manifest::build(&data, 1024).expect("build");
    // Chunk values that match the data, but an id that claims other content.
    let claimed = Cid::of(b"something else entirely");
    let lied_id = Manifest {
        id: claimed,
        ..honest.clone()
    };
    // The true id, but chunk values that merge to another one.
    let mut lied_values = honest.clone();
    lied_values.chunks.swap(0, 1);
    for m in [lied_id, lied_values] {
        let err = s.missing_chunks(&m).await.expect_err("lying manifest");
        assert!(matches!(err, BlobError::BadManifest { .. }), "{err:?}");
        // A chunk that matches its listed value may be staged, but the upload can
        // never finish, and finishing it discards what was staged.
        for i in 0..m.chunk_count() {
            let _ = s.put_chunk(&m, i, chunk_of(&m, &data, i)).await;
        }
        let err = s.finish(&m).await.expect_err("lying manifest");
        assert!(matches!(err, BlobError::BadManifest { .. }), "{err:?}");
        assert_eq!(s.manifest(&claimed).await.expect("manifest"), None);
        assert_eq!(s.manifest(&Cid::of(&data)).await.expect("manifest"), None);
        assert_eq!(
            s.missing_chunks(&honest).await.expect("missing"),
            vec![0, 1, 2],
            "a lying manifest's chunks count for nothing"
        );
    }
}

async fn limits_are_enforced<S: BlobStore>(s: S) {
    let l = limits();
    let over = l.max_blob_size + 1;
    let cs = l.max_chunk_size;
    let huge = Manifest {
        id: Cid(Hash::ZERO),
        size: over,
        chunk_size: cs,
        chunks: vec![Hash::ZERO; Manifest::expected_chunk_count(over, cs) as usize],
    };
    let err = s.missing_chunks(&huge).await.expect_err("too large");
    assert!(matches!(err, BlobError::TooLarge { .. }), "{err:?}");
    let err = s
        .put_chunk(&huge, 0, &[0u8; 8])
        .await
        .expect_err("too large");
    assert!(matches!(err, BlobError::TooLarge { .. }), "{err:?}");
    let err = s.finish(&huge).await.expect_err("too large");
    assert!(matches!(err, BlobError::TooLarge { .. }), "{err:?}");

    let data = sample(2 * cs as usize, 6);
    let wide = Manifest::build(&data, cs * 2).expect("build");
    let err = s.missing_chunks(&wide).await.expect_err("chunk too large");
    assert!(matches!(err, BlobError::BadManifest { .. }), "{err:?}");

    let narrow = Manifest {
        chunk_size: l.min_chunk_size / 2,
        chunks: vec![Hash::ZERO; 2 * (data.len() / l.min_chunk_size as usize)],
        ..wide.clone()
    };
    let err = s
        .missing_chunks(&narrow)
        .await
        .expect_err("chunk too small");
    assert!(matches!(err, BlobError::BadManifest { .. }), "{err:?}");

    let mut short = Manifest::build(&data, 1024).expect("build");
    short.chunks.pop();
    let err = s
        .missing_chunks(&short)
        .await
        .expect_err("wrong chunk count");
    assert!(matches!(err, BlobError::BadManifest { .. }), "{err:?}");

    let exact = sample(l.max_blob_size as usize, 7);
    let m = upload(&s, &exact, cs)
        .await
        .expect("a blob at the limit fits");
    assert_eq!(download(&s, &m.id).await.expect("download"), exact);
}

async fn abort_discards_staged_chunks<S: BlobStore>(s: S) {
    let data = sample(3_000, 8);
    let m = Manifest::build(&data, 1024).expect("build");
    s.put_chunk(&m, 0, chunk_of(&m, &data, 0))
        .await
        .expect("put");
    s.abort(&m).await.expect("abort");
    assert_eq!(s.missing_chunks(&m).await.expect("missing"), vec![0, 1, 2]);
    assert_eq!(s.manifest(&m.id).await.expect("manifest"), None);
    // Aborting a complete blob's upload keeps the blob.
    upload(&s, &data, 1024).await.expect("upload");
    s.abort(&m).await.expect("abort complete");
    assert_eq!(download(&s, &m.id).await.expect("download"), data);
}

async fn same_blob_with_two_chunkings<S: BlobStore>(s: S) {
    let data = sample(5_000, 9);
    let a = Manifest::build(&data, 1024).expect("build");
    let b = Manifest::build(&data, 4096).expect("build");
    assert_eq!(a.id, b.id);
    assert_ne!(a.upload_key(), b.upload_key());
    s.put_chunk(&b, 1, chunk_of(&b, &data, 1))
        .await
        .expect("put b");
    upload(&s, &data, 1024).await.expect("upload a");
    assert!(
        s.missing_chunks(&b).await.expect("missing").is_empty(),
        "a complete blob lacks nothing, whatever the chunking"
    );
    s.finish(&b).await.expect("finish b after a");
    assert_eq!(s.manifest(&a.id).await.expect("manifest"), Some(a.clone()));
    assert_eq!(download(&s, &a.id).await.expect("download"), data);
    assert_eq!(
        s.read_range(&a.id, 999..3001).await.expect("range"),
        &data[999..3001]
    );
}

async fn unknown_blobs_and_bad_ranges<S: BlobStore>(s: S) {
    let unknown = Cid::of(b"never stored");
    assert_eq!(s.manifest(&unknown).await.expect("manifest"), None);
    let err = s.read_range(&unknown, 0..1).await.expect_err("unknown");
    assert!(
        matches!(err, BlobError::NotFound { id } if id == unknown),
        "{err:?}"
    );
    let never = Manifest::build(b"never stored", MIN_CHUNK_SIZE).expect("build");
    let err = s
        .read_chunk_unverified(&never, 0)
        .await
        .expect_err("unknown");
    assert!(matches!(err, BlobError::NotFound { .. }), "{err:?}");
    let data = sample(100, 10);
    let m = upload(&s, &data, MIN_CHUNK_SIZE).await.expect("upload");
    let err = s
        .read_chunk_unverified(&m, 1)
        .await
        .expect_err("past the last chunk");
    assert!(
        matches!(err, BlobError::ChunkIndexOutOfRange { index: 1, count: 1 }),
        "{err:?}"
    );
    for (a, b) in [(0u64, 101u64), (100, 101), (50, 40), (200, 300)] {
        let err = s.read_range(&m.id, a..b).await.expect_err("bad range");
        assert!(
            matches!(err, BlobError::RangeOutOfBounds { size: 100, .. }),
            "range {a}..{b}: {err:?}"
        );
    }
}
