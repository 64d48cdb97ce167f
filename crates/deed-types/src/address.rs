//! Ethereum-compatible 20-byte account addresses, shown as EIP-55 checksummed hex.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 20-byte account address: the last 20 bytes of keccak256 of the uncompressed
/// secp256k1 public key, exactly as Ethereum derives it, so an Ethereum key owns the
/// same address in Deed.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The all-zero address. No key is known for it; it never signs.
    pub const ZERO: Address = Address([0u8; 20]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// EIP-55 mixed-case checksummed text, `0x`-prefixed.
    pub fn to_checksum(&self) -> String {
        alloy_primitives::Address::from(self.0).to_checksum(None)
    }
}

impl From<alloy_primitives::Address> for Address {
    fn from(a: alloy_primitives::Address) -> Self {
        Address(a.into_array())
    }
}

impl From<Address> for alloy_primitives::Address {
    fn from(a: Address) -> Self {
        alloy_primitives::Address::from(a.0)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.to_checksum())
    }
}

/// Why a text could not be read as an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseAddressError {
    /// Not `0x` followed by 40 hex digits.
    #[error("invalid address text: expected 0x followed by 40 hex digits")]
    Malformed,
    /// Mixed case whose EIP-55 checksum does not match: most likely a typo.
    #[error("address checksum mismatch (EIP-55): expected {expected}")]
    BadChecksum {
        /// The correctly checksummed form of the same bytes.
        expected: String,
    },
}

impl FromStr for Address {
    type Err = ParseAddressError;

    /// Accepts all-lowercase or all-uppercase hex without a checksum, and mixed case
    /// only when it is the correct EIP-55 checksum (the rule wallets follow).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if body.len() != 40 {
            return Err(ParseAddressError::Malformed);
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(body, &mut out).map_err(|_| ParseAddressError::Malformed)?;
        let addr = Address(out);
        let has_lower = body.chars().any(|c| c.is_ascii_lowercase());
        let has_upper = body.chars().any(|c| c.is_ascii_uppercase());
        if has_lower && has_upper {
            let expected = addr.to_checksum();
            if expected[2..] != *body {
                return Err(ParseAddressError::BadChecksum { expected });
            }
        }
        Ok(addr)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_checksum())
    }
}

impl<'de> Deserialize<'de> for Address {
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
    fn eip55_examples_round_trip() {
        // Test vectors from the EIP-55 specification.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(s.to_lowercase().parse::<Address>().unwrap(), a);
        }
    }

    #[test]
    fn wrong_checksum_is_rejected() {
        let e = "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
            .parse::<Address>()
            .unwrap_err();
        assert!(matches!(e, ParseAddressError::BadChecksum { .. }));
        assert_eq!(
            "0x1234".parse::<Address>().unwrap_err(),
            ParseAddressError::Malformed
        );
    }

    proptest! {
        #[test]
        fn text_round_trip(bytes in any::<[u8; 20]>()) {
            let a = Address(bytes);
            prop_assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }
}
