//! Content identifiers for blobs: CIDv1, raw codec (0x55), blake3 multihash (0x1e),
//! written as base32 text (`bafkr…`).
//!
//! Deed only ever mints one kind of CID, so [`Cid`] stores just the 32-byte blake3
//! digest; the multiformats framing is produced and checked at the text/bytes edges
//! with the `cid` and `multihash` crates, so the text is what any IPFS tool expects.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::Hash;

/// Multicodec code of the `raw` codec.
pub const RAW_CODEC: u64 = 0x55;
/// Multihash code of blake3 with a 32-byte digest.
pub const BLAKE3_CODE: u64 = 0x1e;

/// A CIDv1 (raw, blake3-256) naming a blob by its content.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Cid(pub Hash);

/// Why bytes or text could not be read as a Deed [`Cid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// Not a parseable CID at all.
    #[error("malformed CID")]
    Malformed,
    /// A CID, but not version 1.
    #[error("CID version {0} is not supported (expected 1)")]
    Version(u64),
    /// A CIDv1 with a codec other than raw.
    #[error("CID codec {0:#x} is not supported (expected raw, 0x55)")]
    Codec(u64),
    /// A CIDv1 whose multihash is not a 32-byte blake3 digest.
    #[error("CID multihash {code:#x}/{size} is not supported (expected blake3, 0x1e/32)")]
    Multihash {
        /// The multihash code found.
        code: u64,
        /// The digest length found.
        size: usize,
    },
}

impl Cid {
    /// The CID of `bytes`.
    pub fn of(bytes: &[u8]) -> Cid {
        Cid(Hash::of(bytes))
    }

    /// The blake3 digest named by this CID.
    pub fn digest(&self) -> &Hash {
        &self.0
    }

    fn to_multiformat(self) -> cid::Cid {
        // A 32-byte digest always fits the 64-byte multihash; the fallback is unreachable.
        let mh = cid::multihash::Multihash::<64>::wrap(BLAKE3_CODE, self.0.as_bytes())
            .unwrap_or_default();
        cid::Cid::new_v1(RAW_CODEC, mh)
    }

    fn from_multiformat(c: &cid::Cid) -> Result<Cid, CidError> {
        if c.version() != cid::Version::V1 {
            return Err(CidError::Version(c.version() as u64));
        }
        if c.codec() != RAW_CODEC {
            return Err(CidError::Codec(c.codec()));
        }
        let mh = c.hash();
        let digest = mh.digest();
        if mh.code() != BLAKE3_CODE || digest.len() != 32 {
            return Err(CidError::Multihash {
                code: mh.code(),
                size: digest.len(),
            });
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(digest);
        Ok(Cid(Hash(out)))
    }

    /// The binary CID (version, codec, multihash varints and digest).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_multiformat().to_bytes()
    }

    /// Parses a binary CID, accepting only CIDv1 raw blake3-256.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
        let c = cid::Cid::try_from(bytes).map_err(|_| CidError::Malformed)?;
        Self::from_multiformat(&c)
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_multiformat())
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let c = cid::Cid::try_from(s).map_err(|_| CidError::Malformed)?;
        Self::from_multiformat(&c)
    }
}

impl Serialize for Cid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_is_base32_raw_blake3() {
        let c = Cid::of(b"hello");
        let s = c.to_string();
        // "b" = base32 lower multibase; 0x01 0x55 0x1e 0x20 prefix gives "bafkr4".
        assert!(s.starts_with("bafkr4"), "{s}");
        let bytes = c.to_bytes();
        assert_eq!(&bytes[..4], &[0x01, 0x55, 0x1e, 0x20]);
        assert_eq!(&bytes[4..], Hash::of(b"hello").as_bytes());
    }

    #[test]
    fn rejects_other_codecs_and_hashes() {
        let mh = cid::multihash::Multihash::<64>::wrap(0x12, &[0u8; 32]).unwrap();
        let sha = cid::Cid::new_v1(RAW_CODEC, mh).to_string();
        assert!(matches!(
            sha.parse::<Cid>(),
            Err(CidError::Multihash { code: 0x12, .. })
        ));
        let mh = cid::multihash::Multihash::<64>::wrap(BLAKE3_CODE, &[0u8; 32]).unwrap();
        let dag = cid::Cid::new_v1(0x71, mh).to_string();
        assert_eq!(dag.parse::<Cid>(), Err(CidError::Codec(0x71)));
        assert_eq!("not a cid".parse::<Cid>(), Err(CidError::Malformed));
    }

    proptest! {
        #[test]
        fn text_and_bytes_round_trip(d in any::<[u8; 32]>()) {
            let c = Cid(Hash(d));
            prop_assert_eq!(c.to_string().parse::<Cid>().unwrap(), c);
            prop_assert_eq!(Cid::from_bytes(&c.to_bytes()).unwrap(), c);
        }
    }
}
