//! EIP-712 typed-data signing. Every Deed signature is over an EIP-712 digest whose
//! domain is `{ name: "Deed", version: "1", chainId }`, so a signature made for one
//! chain is worthless on another and any Ethereum wallet can produce it
//! (`eth_signTypedData_v4`).
//!
//! A transaction is signed as
//!
//! ```text
//! DeedTransaction(uint64 nonce,uint128 fee,string action,bytes body)
//! ```
//!
//! where `action` names the action (`"transfer"`, `"register_model"`, …) so a wallet
//! shows what is being authorised, and `body` is the canonical (borsh) encoding of
//! the action.

use alloy_primitives::{Bytes, U256};
use alloy_sol_types::{sol, Eip712Domain, SolStruct};

use crate::hash::Hash;

/// The EIP-712 domain name of every Deed signature.
pub const DOMAIN_NAME: &str = "Deed";
/// The EIP-712 domain version.
pub const DOMAIN_VERSION: &str = "1";

sol! {
    /// The EIP-712 struct a transaction signature covers.
    #[derive(Debug)]
    struct DeedTransaction {
        uint64 nonce;
        uint128 fee;
        string action;
        bytes body;
    }
}

/// The EIP-712 domain for `chain_id`.
pub fn domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(
        Some(DOMAIN_NAME.into()),
        Some(DOMAIN_VERSION.into()),
        Some(U256::from(chain_id)),
        None,
        None,
    )
}

/// The EIP-712 digest (`keccak256(0x1901 ‖ domainSeparator ‖ hashStruct)`) that a
/// transaction's signer signs.
pub fn transaction_digest(
    chain_id: u64,
    nonce: u64,
    fee: u128,
    action: &str,
    body: Vec<u8>,
) -> [u8; 32] {
    let tx = DeedTransaction {
        nonce,
        fee,
        action: action.to_owned(),
        body: Bytes::from(body),
    };
    tx.eip712_signing_hash(&domain(chain_id)).0
}

/// Converts a 32-byte EIP-712 value into a [`Hash`]-typed digest for display.
pub fn digest_as_hash(d: [u8; 32]) -> Hash {
    Hash(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SecretKey, Signature};
    use alloy_primitives::{address, b256, keccak256};

    sol! {
        struct Person {
            string name;
            address wallet;
        }
        struct Mail {
            Person from;
            Person to;
            string contents;
        }
    }

    /// The "Mail" example of the EIP-712 specification, with its published domain
    /// separator, struct hash, digest and signature (key = keccak256("cow")).
    #[test]
    fn eip712_specification_mail_vector() {
        let domain = alloy_sol_types::eip712_domain! {
            name: "Ether Mail",
            version: "1",
            chain_id: 1,
            verifying_contract: address!("CcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"),
        };
        let mail = Mail {
            from: Person {
                name: "Cow".into(),
                wallet: address!("CD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"),
            },
            to: Person {
                name: "Bob".into(),
                wallet: address!("bBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"),
            },
            contents: "Hello, Bob!".into(),
        };
        assert_eq!(
            domain.separator(),
            b256!("f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f")
        );
        assert_eq!(
            mail.eip712_hash_struct(),
            b256!("c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e")
        );
        let digest = mail.eip712_signing_hash(&domain);
        assert_eq!(
            digest,
            b256!("be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
        );
        let sk = SecretKey::from_bytes(&keccak256(b"cow").0).unwrap();
        let sig = sk.sign_digest(&digest.0).unwrap();
        assert_eq!(sig.v(), 28);
        assert_eq!(
            hex::encode(sig.r()),
            "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
        );
        assert_eq!(
            hex::encode(sig.s()),
            "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
        );
        let mut rsv = [0u8; 65];
        rsv[..32].copy_from_slice(&sig.r());
        rsv[32..64].copy_from_slice(&sig.s());
        rsv[64] = 28;
        let parsed = Signature::from_rsv(&rsv).unwrap();
        assert_eq!(parsed.recover(&digest.0).unwrap(), sk.address());
    }

    #[test]
    fn chain_id_changes_the_digest() {
        let a = transaction_digest(1, 0, 5, "transfer", vec![1, 2, 3]);
        let b = transaction_digest(2, 0, 5, "transfer", vec![1, 2, 3]);
        assert_ne!(a, b);
    }
}
