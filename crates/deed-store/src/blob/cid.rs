//! Blob ids and their CID text form.
//!
//! `deed-types` does not define a CID type yet, so the conversion lives here behind
//! [`BlobId`]: the blob's blake3 digest, shown and parsed as a CIDv1 with the raw
//! codec (0x55) and the blake3 multihash (0x1e), in lowercase base32 ("b…"). When a
//! shared CID type appears in `deed-types`, `BlobId::to_cid`/`from_cid` are the only
//! places to change.

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use deed_types::Hash;
use multihash::Multihash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Multicodec code of raw bytes.
pub const RAW_CODEC: u64 = 0x55;
/// Multihash code of blake3 (32-byte digest).
pub const BLAKE3_MULTIHASH_CODE: u64 = 0x1e;

/// The id of a blob: the blake3 hash of its bytes. Displays as CIDv1 text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub Hash);

/// Why a text or CID is not a Deed blob id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseBlobIdError {
    /// Not CID text at all.
    #[error("not a CID: {0}")]
    Syntax(String),
    /// A CID, but not version 1.
    #[error("CID version 0 is not accepted; blob ids are CIDv1")]
    Version,
    /// A CIDv1 with a codec other than raw.
    #[error("CID codec {0:#x} is not raw (0x55)")]
    Codec(u64),
    /// A CIDv1 whose multihash is not a 32-byte blake3 digest.
    #[error("CID hash code {code:#x} with {len}-byte digest is not blake3-256")]
    Hash {
        /// Multihash code found.
        code: u64,
        /// Digest length found.
        len: usize,
    },
    /// Valid CID in a base other than lowercase base32, which would give one blob
    /// two spellings.
    #[error("blob ids are written in lowercase base32 (\"b...\")")]
    Base,
}

impl BlobId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobId {
        BlobId(Hash::of(bytes))
    }

    /// The CIDv1 (raw, blake3) naming this blob.
    pub fn to_cid(&self) -> Cid {
        // A 32-byte digest always fits the 64-byte multihash of `cid::Cid`.
        let mh = Multihash::<64>::wrap(BLAKE3_MULTIHASH_CODE, self.0.as_bytes())
            .expect("32-byte digest fits a 64-byte multihash");
        Cid::new_v1(RAW_CODEC, mh)
    }

    /// The blob id inside `cid`, if it is a CIDv1 with raw codec and blake3 hash.
    pub fn from_cid(cid: &Cid) -> Result<BlobId, ParseBlobIdError> {
        if cid.version() != cid::Version::V1 {
            return Err(ParseBlobIdError::Version);
        }
        if cid.codec() != RAW_CODEC {
            return Err(ParseBlobIdError::Codec(cid.codec()));
        }
        let mh = cid.hash();
        let digest = <[u8; 32]>::try_from(mh.digest());
        match digest {
            Ok(d) if mh.code() == BLAKE3_MULTIHASH_CODE => Ok(BlobId(Hash(d))),
            _ => Err(ParseBlobIdError::Hash {
                code: mh.code(),
                len: mh.digest().len(),
            }),
        }
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // cid's Display writes CIDv1 in lowercase base32.
        fmt::Display::fmt(&self.to_cid(), f)
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

impl FromStr for BlobId {
    type Err = ParseBlobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cid = Cid::from_str(s).map_err(|e| ParseBlobIdError::Syntax(e.to_string()))?;
        let id = BlobId::from_cid(&cid)?;
        if id.to_string() != s {
            return Err(ParseBlobIdError::Base);
        }
        Ok(id)
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form_is_cidv1_raw_blake3_base32() {
        let id = BlobId::of(b"hello");
        let text = id.to_string();
        assert!(text.starts_with("bafkr4i"), "{text}");
        // Independent check of the binary layout: version 1, raw, blake3, 32 bytes.
        let cid = Cid::from_str(&text).expect("parse");
        let bytes = cid.to_bytes();
        assert_eq!(&bytes[..4], &[0x01, 0x55, 0x1e, 0x20]);
        assert_eq!(&bytes[4..], blake3::hash(b"hello").as_bytes());
    }

    #[test]
    fn other_cids_are_rejected() {
        let sha = Multihash::<64>::wrap(0x12, &[0u8; 32]).expect("wrap");
        let c = Cid::new_v1(RAW_CODEC, sha);
        assert!(matches!(
            c.to_string().parse::<BlobId>(),
            Err(ParseBlobIdError::Hash { code: 0x12, .. })
        ));
        let c = Cid::new_v1(0x71, BlobId::of(b"x").to_cid().hash().to_owned());
        assert!(matches!(
            c.to_string().parse::<BlobId>(),
            Err(ParseBlobIdError::Codec(0x71))
        ));
        assert!(matches!(
            "not a cid".parse::<BlobId>(),
            Err(ParseBlobIdError::Syntax(_))
        ));
        let upper = BlobId::of(b"x")
            .to_cid()
            .to_string_of_base(cid::multibase::Base::Base32Upper)
            .expect("base32 upper");
        assert_eq!(upper.parse::<BlobId>(), Err(ParseBlobIdError::Base));
    }

    proptest! {
        #[test]
        fn text_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let id = BlobId::of(&bytes);
            let text = id.to_string();
            prop_assert_eq!(text.parse::<BlobId>(), Ok(id));
            prop_assert_eq!(BlobId::from_cid(&id.to_cid()), Ok(id));
            let json = serde_json::to_string(&id).expect("serialize");
            prop_assert_eq!(&json, &format!("\"{text}\""));
            let back: BlobId = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(back, id);
        }
    }
}
