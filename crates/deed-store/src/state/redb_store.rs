//! The redb-backed [`StateStore`]. See `DESIGN.md` in this crate for why each commit
//! is one redb write transaction with immediate durability and two-phase commit.

use std::path::Path;

use deed_types::Hash;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::{next_height, Commit, Entry, Head, StateStore, StoreError};

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// Height -> block hash (32 bytes) followed by state root (32 bytes).
const HEADS: TableDefinition<u64, &[u8]> = TableDefinition::new("heads");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The node's local records: beside the state, in no block and no root.
const LOCAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("local");

const META_HEAD: &str = "head";
const META_FORMAT: &str = "format";
/// Bumped whenever the table layout changes incompatibly.
const FORMAT: u64 = 1;

/// A [`StateStore`] in one redb file.
pub struct RedbStateStore {
    db: Database,
}

impl std::fmt::Debug for RedbStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStateStore").finish_non_exhaustive()
    }
}

impl RedbStateStore {
    /// Opens the database at `path`, creating it if it does not exist. After a crash
    /// the store reopens at the last committed block.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.exists() {
            create_atomically(path)?;
        }
        let db = Database::builder().create(path).map_err(backend("open"))?;
        let store = RedbStateStore { db };
        store.init()?;
        Ok(store)
    }

    /// Creates the tables once, so read transactions never meet a missing table, and
    /// checks the format version of an existing file.
    fn init(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(backend("init"))?;
        txn.set_durability(Durability::Immediate);
        txn.set_two_phase_commit(true);
        {
            let mut meta = txn.open_table(META).map_err(backend("init"))?;
            let found = meta
                .get(META_FORMAT)
                .map_err(backend("init"))?
                .map(|g| g.value());
            match found {
                Some(f) if f != FORMAT => {
                    return Err(StoreError::UnsupportedFormat {
                        found: f,
                        expected: FORMAT,
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert(META_FORMAT, FORMAT).map_err(backend("init"))?;
                }
            }
            txn.open_table(STATE).map_err(backend("init"))?;
            txn.open_table(BLOCKS).map_err(backend("init"))?;
            txn.open_table(HEADS).map_err(backend("init"))?;
            // Added after format 1's first files: created on their next open.
            txn.open_table(LOCAL).map_err(backend("init"))?;
        }
        txn.commit().map_err(backend("init"))
    }

    fn read_head(&self, height: u64) -> Result<Option<Head>, StoreError> {
        let txn = self.db.begin_read().map_err(backend("read head"))?;
        let heads = txn.open_table(HEADS).map_err(backend("read head"))?;
        let Some(raw) = heads.get(height).map_err(backend("read head"))? else {
            return Ok(None);
        };
        decode_head(height, raw.value()).map(Some)
    }
}

/// Creates and initializes a new database beside `path`, then renames it into place,
/// so a crash during creation leaves either no database or a complete empty one,
/// never a truncated file that redb would refuse to open.
fn create_atomically(path: &Path) -> Result<(), StoreError> {
    let io = |op| move |source| StoreError::Io { op, source };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    let tmp = path.with_file_name(name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove stale database being created")(e))
        }
        _ => {}
    }
    {
        let db = Database::builder()
            .create(&tmp)
            .map_err(backend("create"))?;
        RedbStateStore { db }.init()?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("sync new database"))?;
    std::fs::rename(&tmp, path).map_err(io("move new database into place"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync database directory"))
}

fn encode_head(block_hash: &Hash, state_root: &Hash) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(block_hash.as_bytes());
    out[32..].copy_from_slice(state_root.as_bytes());
    out
}

fn decode_head(height: u64, raw: &[u8]) -> Result<Head, StoreError> {
    let (Some(block_hash), Some(state_root)) = (
        raw.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()),
        raw.get(32..).and_then(|b| <[u8; 32]>::try_from(b).ok()),
    ) else {
        return Err(StoreError::Corrupt {
            detail: format!(
                "head record at height {height} is {} bytes, not 64",
                raw.len()
            ),
        });
    };
    Ok(Head {
        height,
        block_hash: Hash(block_hash),
        state_root: Hash(state_root),
    })
}

/// Maps any redb error to a [`StoreError`], keeping I/O (retryable) apart from
/// corruption and everything else (fatal).
fn backend<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| match e.into() {
        // redb reports a file that is not a valid database as InvalidData: no retry
        // will make it one.
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                detail: format!("{op}: {source}"),
            }
        }
        redb::Error::Io(source) => StoreError::Io { op, source },
        redb::Error::PreviousIo => StoreError::Io {
            op,
            source: std::io::Error::other(
                "an earlier I/O error left the database unusable until it is reopened",
            ),
        },
        redb::Error::Corrupted(detail) => StoreError::Corrupt { detail },
        redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen,
        other => StoreError::Backend {
            op,
            source: Box::new(other),
        },
    }
}

impl StateStore for RedbStateStore {
    fn commit(&mut self, commit: Commit) -> Result<(), StoreError> {
        let op = "commit";
        let mut txn = self.db.begin_write().map_err(backend(op))?;
        // Immediate: the block is on disk when commit() returns. Two-phase commit: the
        // new commit slot is synced before it is activated, so recovery never has to
        // trust a checksum over block data that the network (not us) chose.
        txn.set_durability(Durability::Immediate);
        txn.set_two_phase_commit(true);
        {
            let mut meta = txn.open_table(META).map_err(backend(op))?;
            let head = meta.get(META_HEAD).map_err(backend(op))?.map(|g| g.value());
            let expected = next_height(head)?;
            if commit.height != expected {
                // Dropping the transaction aborts it: nothing was written.
                return Err(StoreError::HeightGap {
                    expected,
                    got: commit.height,
                });
            }
            meta.insert(META_HEAD, commit.height).map_err(backend(op))?;

            let mut state = txn.open_table(STATE).map_err(backend(op))?;
            apply(&mut state, &commit.writes, op)?;
            let mut local = txn.open_table(LOCAL).map_err(backend(op))?;
            apply(&mut local, &commit.local, op)?;
            let mut blocks = txn.open_table(BLOCKS).map_err(backend(op))?;
            blocks
                .insert(commit.height, commit.block.as_slice())
                .map_err(backend(op))?;
            let mut heads = txn.open_table(HEADS).map_err(backend(op))?;
            heads
                .insert(
                    commit.height,
                    encode_head(&commit.block_hash, &commit.state_root).as_slice(),
                )
                .map_err(backend(op))?;
        }
        txn.commit().map_err(backend(op))
    }

    fn latest(&self) -> Result<Option<Head>, StoreError> {
        let height = {
            let txn = self.db.begin_read().map_err(backend("latest"))?;
            let meta = txn.open_table(META).map_err(backend("latest"))?;
            let head = meta.get(META_HEAD).map_err(backend("latest"))?;
            head.map(|g| g.value())
        };
        let Some(height) = height else {
            return Ok(None);
        };
        match self.read_head(height)? {
            Some(head) => Ok(Some(head)),
            None => Err(StoreError::Corrupt {
                detail: format!("head points at height {height}, which has no record"),
            }),
        }
    }

    fn head_at(&self, height: u64) -> Result<Option<Head>, StoreError> {
        self.read_head(height)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend("get"))?;
        let state = txn.open_table(STATE).map_err(backend("get"))?;
        let value = state.get(key).map_err(backend("get"))?;
        Ok(value.map(|g| g.value().to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.scan(STATE, prefix, "scan")
    }

    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend("block"))?;
        let blocks = txn.open_table(BLOCKS).map_err(backend("block"))?;
        let block = blocks.get(height).map_err(backend("block"))?;
        Ok(block.map(|g| g.value().to_vec()))
    }

    fn put_local(&mut self, writes: Vec<super::Write>) -> Result<(), StoreError> {
        let op = "write local records";
        let mut txn = self.db.begin_write().map_err(backend(op))?;
        // As durable as a block: a record is a promise the node already acted on.
        txn.set_durability(Durability::Immediate);
        txn.set_two_phase_commit(true);
        {
            let mut local = txn.open_table(LOCAL).map_err(backend(op))?;
            apply(&mut local, &writes, op)?;
        }
        txn.commit().map_err(backend(op))
    }

    fn local_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.scan(LOCAL, prefix, "scan local records")
    }
}

impl RedbStateStore {
    fn scan(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        prefix: &[u8],
        op: &'static str,
    ) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(backend(op))?;
        let t = txn.open_table(table).map_err(backend(op))?;
        let mut out = Vec::new();
        for entry in t.range::<&[u8]>(prefix..).map_err(backend(op))? {
            let (k, v) = entry.map_err(backend(op))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

/// Applies key/value writes to a table of a write transaction.
fn apply(
    table: &mut redb::Table<&[u8], &[u8]>,
    writes: &[super::Write],
    op: &'static str,
) -> Result<(), StoreError> {
    for (key, value) in writes {
        match value {
            Some(v) => {
                table
                    .insert(key.as_slice(), v.as_slice())
                    .map_err(backend(op))?;
            }
            None => {
                table.remove(key.as_slice()).map_err(backend(op))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(height: u64, writes: Vec<super::super::Write>) -> Commit {
        Commit {
            height,
            block_hash: Hash::of(&height.to_le_bytes()),
            block: height.to_le_bytes().to_vec(),
            state_root: Hash::domain("test root", &[&height.to_le_bytes()]),
            writes,
            local: Vec::new(),
        }
    }

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = std::cell::Cell::new(0u32);
        super::super::conformance::suite(|| {
            n.set(n.get() + 1);
            RedbStateStore::open(dir.path().join(format!("db{}", n.get()))).expect("open")
        });
    }

    #[test]
    fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            let mut s = RedbStateStore::open(&path).expect("open");
            s.commit(commit(0, vec![(b"a".to_vec(), Some(b"1".to_vec()))]))
                .expect("commit 0");
            s.commit(commit(
                1,
                vec![(b"b".to_vec(), Some(b"2".to_vec())), (b"a".to_vec(), None)],
            ))
            .expect("commit 1");
        }
        {
            let mut s = RedbStateStore::open(&path).expect("open");
            s.put_local(vec![(b"promise".to_vec(), Some(b"kept".to_vec()))])
                .expect("local");
        }
        let mut s = RedbStateStore::open(&path).expect("reopen");
        assert_eq!(
            s.local_prefix(b"").expect("local"),
            vec![(b"promise".to_vec(), b"kept".to_vec())]
        );
        let head = s.latest().expect("latest").expect("head");
        assert_eq!(head.height, 1);
        assert_eq!(head.state_root, commit(1, vec![]).state_root);
        assert_eq!(
            s.iter().expect("iter"),
            vec![(b"b".to_vec(), b"2".to_vec())]
        );
        assert_eq!(
            s.block(0).expect("block"),
            Some(0u64.to_le_bytes().to_vec())
        );
        assert!(matches!(
            s.commit(commit(1, vec![])),
            Err(StoreError::HeightGap {
                expected: 2,
                got: 1
            })
        ));
    }

    #[test]
    fn second_open_of_same_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let _first = RedbStateStore::open(&path).expect("open");
        let second = RedbStateStore::open(&path);
        assert!(matches!(second, Err(StoreError::AlreadyOpen)), "{second:?}");
    }

    #[test]
    fn garbage_file_is_not_opened_as_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        std::fs::write(&path, vec![0xA5u8; 8192]).expect("write");
        let err = RedbStateStore::open(&path).expect_err("garbage must not open");
        assert!(!err.is_retryable(), "{err:?}");
    }
}
