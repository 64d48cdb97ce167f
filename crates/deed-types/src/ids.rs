//! Ledger object identifiers and the token amount type.
//!
//! Models, jobs, disputes and proposals are numbered sequentially by the ledger in
//! the order they are created, which every validator agrees on; numbers are short to
//! type on a command line and cannot collide.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Token amounts, in integer base units. All arithmetic on them is checked.
pub type Amount = u128;

/// Basis points: 10,000 = 100 %.
pub type Bps = u16;

/// 100 % in basis points.
pub const BPS_DENOMINATOR: u128 = 10_000;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
            BorshSerialize, BorshDeserialize, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id!(
    /// A registered model.
    ModelId,
    "model#"
);
id!(
    /// An inference job (one request).
    JobId,
    "job#"
);
id!(
    /// A dispute over a job's result.
    DisputeId,
    "dispute#"
);
id!(
    /// A governance proposal.
    ProposalId,
    "proposal#"
);
