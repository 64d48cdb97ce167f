//! The consensus store (redb): commit certificates by height, and proposals seen
//! but not yet decided ("undecided" at the current height, "pending" for a later
//! one), so a restarted node proposes the same value again and can vote on what it
//! saw before the crash. Blocks themselves belong to the chain, not to this store.

use std::path::Path;

use malachitebft_app_channel::app::types::ProposedValue;
use malachitebft_core_types::{CommitCertificate, Round};
use redb::{Database, ReadableTable, TableDefinition};

use deed_types::encoding;

use crate::codec::MAX_MESSAGE_BYTES;
use crate::types::{BlockId, DeedCtx, Height};

const CERTIFICATES: TableDefinition<u64, &[u8]> = TableDefinition::new("certificates");
const UNDECIDED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("undecided");
const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");

/// Why the consensus store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("consensus store: {0}")]
    Db(Box<redb::Error>),
    /// A stored value does not decode (the file is corrupt or from another version).
    #[error("consensus store: corrupt entry: {0}")]
    Corrupt(#[from] deed_types::DecodeError),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Which proposal table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Proposals for the height being decided.
    Undecided,
    /// Proposals for a later height, validated once that height starts.
    Pending,
}

impl Slot {
    fn table(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        match self {
            Slot::Undecided => UNDECIDED,
            Slot::Pending => PENDING,
        }
    }
}

fn key(height: Height, round: Round, id: &BlockId) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(&height.0.to_be_bytes());
    // Shifted so that nil (-1) sorts first and every key is unsigned big-endian.
    k.extend_from_slice(&(round.as_i64().wrapping_add(1) as u64).to_be_bytes());
    k.extend_from_slice(id.0.as_bytes());
    k
}

fn prefix(height: Height, round: Option<Round>) -> Vec<u8> {
    let mut k = height.0.to_be_bytes().to_vec();
    if let Some(r) = round {
        k.extend_from_slice(&(r.as_i64().wrapping_add(1) as u64).to_be_bytes());
    }
    k
}

/// The consensus store.
pub struct ConsensusStore {
    db: Database,
}

impl ConsensusStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<ConsensusStore, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(CERTIFICATES)?;
        tx.open_table(UNDECIDED)?;
        tx.open_table(PENDING)?;
        tx.commit()?;
        Ok(ConsensusStore { db })
    }

    /// Stores the commit certificate of a decided height.
    pub fn put_certificate(&self, cert: &CommitCertificate<DeedCtx>) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CERTIFICATES)?;
            t.insert(cert.height.0, encoding::encode(cert).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The commit certificate of `height`.
    pub fn certificate(
        &self,
        height: Height,
    ) -> Result<Option<CommitCertificate<DeedCtx>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CERTIFICATES)?;
        match t.get(height.0)? {
            Some(v) => Ok(Some(encoding::decode(
                "commit certificate",
                v.value(),
                MAX_MESSAGE_BYTES,
            )?)),
            None => Ok(None),
        }
    }

    /// The lowest height with a stored certificate.
    pub fn min_certified_height(&self) -> Result<Option<Height>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CERTIFICATES)?;
        let first = t.first()?.map(|(k, _)| Height(k.value()));
        Ok(first)
    }

    /// The highest height with a stored certificate.
    pub fn max_certified_height(&self) -> Result<Option<Height>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CERTIFICATES)?;
        let last = t.last()?.map(|(k, _)| Height(k.value()));
        Ok(last)
    }

    /// Stores a proposal.
    pub fn put_proposal(
        &self,
        slot: Slot,
        value: &ProposedValue<DeedCtx>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(slot.table())?;
            let k = key(value.height, value.round, &value.value.block_id());
            t.insert(k.as_slice(), encoding::encode(value).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The proposals stored at `height` (and `round`, if given), in key order.
    pub fn proposals(
        &self,
        slot: Slot,
        height: Height,
        round: Option<Round>,
    ) -> Result<Vec<ProposedValue<DeedCtx>>, StoreError> {
        let p = prefix(height, round);
        let tx = self.db.begin_read()?;
        let t = tx.open_table(slot.table())?;
        let mut out = Vec::new();
        for entry in t.range(p.as_slice()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(&p) {
                break;
            }
            out.push(encoding::decode(
                "proposed value",
                v.value(),
                MAX_MESSAGE_BYTES,
            )?);
        }
        Ok(out)
    }

    /// How many proposals are stored at `height` (and `round`, if given).
    pub fn count(
        &self,
        slot: Slot,
        height: Height,
        round: Option<Round>,
    ) -> Result<usize, StoreError> {
        let p = prefix(height, round);
        let tx = self.db.begin_read()?;
        let t = tx.open_table(slot.table())?;
        let mut n = 0;
        for entry in t.range(p.as_slice()..)? {
            let (k, _) = entry?;
            if !k.value().starts_with(&p) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Removes one proposal.
    pub fn remove_proposal(
        &self,
        slot: Slot,
        value: &ProposedValue<DeedCtx>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(slot.table())?;
            let k = key(value.height, value.round, &value.value.block_id());
            t.remove(k.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes every proposal (both slots) at heights up to and including `height`.
    pub fn prune_proposals(&self, height: Height) -> Result<(), StoreError> {
        let end = prefix(Height(height.0.saturating_add(1)), None);
        let tx = self.db.begin_write()?;
        for slot in [Slot::Undecided, Slot::Pending] {
            let mut t = tx.open_table(slot.table())?;
            let keys: Vec<Vec<u8>> = t
                .range(..end.as_slice())?
                .map(|e| e.map(|(k, _)| k.value().to_vec()))
                .collect::<Result<_, _>>()?;
            for k in keys {
                t.remove(k.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BlockValue, ValAddr};
    use deed_types::{Address, Block, Hash, Header};
    use malachitebft_core_types::Validity;

    fn value(h: u64, r: i64, t: u64) -> ProposedValue<DeedCtx> {
        let block = Block {
            header: Header {
                chain_id: 1,
                height: h,
                time: t,
                prev_hash: Hash::ZERO,
                tx_root: deed_types::tx_root(&[]),
                state_root: Hash::ZERO,
                proposer: Address([1; 20]),
            },
            txs: vec![],
        };
        ProposedValue {
            height: Height(h),
            round: Round::new(r as u32),
            valid_round: Round::Nil,
            proposer: ValAddr(Address([1; 20])),
            value: BlockValue::new(block),
            validity: Validity::Valid,
        }
    }

    #[test]
    fn proposals_by_height_and_round_survive_reopen_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        {
            let s = ConsensusStore::open(&path).unwrap();
            for (h, r, t) in [(1, 0, 1), (1, 1, 2), (1, 1, 3), (2, 0, 4)] {
                s.put_proposal(Slot::Undecided, &value(h, r, t)).unwrap();
            }
            s.put_proposal(Slot::Pending, &value(3, 0, 5)).unwrap();
        }
        let s = ConsensusStore::open(&path).unwrap();
        assert_eq!(
            s.proposals(Slot::Undecided, Height(1), Some(Round::new(1)))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            s.proposals(Slot::Undecided, Height(1), None).unwrap().len(),
            3
        );
        let p = s.proposals(Slot::Pending, Height(3), None).unwrap();
        assert_eq!(p, vec![value(3, 0, 5)]);
        s.remove_proposal(Slot::Pending, &p[0]).unwrap();
        assert!(s
            .proposals(Slot::Pending, Height(3), None)
            .unwrap()
            .is_empty());
        s.prune_proposals(Height(1)).unwrap();
        assert!(s
            .proposals(Slot::Undecided, Height(1), None)
            .unwrap()
            .is_empty());
        assert_eq!(
            s.proposals(Slot::Undecided, Height(2), None).unwrap().len(),
            1
        );
    }
}
