//! deed-ledger.
