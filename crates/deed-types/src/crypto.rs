//! Account keys and signatures: secp256k1 ECDSA over 32-byte digests, with
//! Ethereum's recoverable 65-byte `r ‖ s ‖ v` signature form, so the signer's
//! [`Address`] is recovered from the signature instead of being sent alongside it.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use k256::ecdsa::{RecoveryId, Signature as EcdsaSignature};

use crate::address::Address;

/// Why a signature could not be made or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// `r` or `s` is zero or not below the curve order.
    #[error("signature scalars are out of range")]
    Malformed,
    /// The recovery byte `v` is not 0, 1, 27 or 28.
    #[error("invalid recovery byte v = {0}")]
    BadRecoveryId(u8),
    /// `s` is in the upper half of the order; such signatures are malleable copies.
    #[error("signature s value is not canonical (high s)")]
    HighS,
    /// No public key recovers from this signature and digest.
    #[error("signature does not recover to a public key")]
    Unrecoverable,
    /// The secret key bytes are zero or not below the curve order.
    #[error("invalid secret key")]
    BadSecretKey,
}

/// A secp256k1 secret key and the address it owns. Debug output never shows the key.
///
/// Keys are derived and digests signed with libsecp256k1, whose generator tables
/// are compiled in: a process that loads one key and signs once (every `deed`
/// command that sends a transaction) pays about 0.1 ms; `k256` builds its tables on
/// first use, about 0.5 ms more. The signatures are the same bytes as `k256`'s
/// (RFC 6979 nonces, low `s`); a property test holds the two together.
#[derive(Clone)]
pub struct SecretKey {
    key: secp256k1::SecretKey,
    address: Address,
}

/// libsecp256k1's signing context; it needs no precomputation.
fn signer() -> &'static secp256k1::Secp256k1<secp256k1::SignOnly> {
    static CTX: std::sync::OnceLock<secp256k1::Secp256k1<secp256k1::SignOnly>> =
        std::sync::OnceLock::new();
    CTX.get_or_init(secp256k1::Secp256k1::signing_only)
}

impl SecretKey {
    /// Builds a key from 32 big-endian bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<SecretKey, SignatureError> {
        let key = secp256k1::SecretKey::from_byte_array(*bytes)
            .map_err(|_| SignatureError::BadSecretKey)?;
        let point = secp256k1::PublicKey::from_secret_key(signer(), &key).serialize_uncompressed();
        let mut xy = [0u8; 64];
        // Uncompressed SEC1 is 0x04 ‖ x ‖ y; Ethereum hashes x ‖ y.
        xy.copy_from_slice(&point[1..]);
        Ok(SecretKey {
            key,
            address: address_of_xy(&xy),
        })
    }

    /// A key derived deterministically from a seed (hashed to a scalar). For tests,
    /// development accounts and benchmarks; real keys come from a wallet or an OS RNG.
    pub fn from_seed(seed: &[u8]) -> SecretKey {
        let mut counter = 0u32;
        loop {
            let h = crate::Hash::domain(
                "deed 2026 dev key from seed",
                &[seed, &counter.to_le_bytes()],
            );
            if let Ok(k) = SecretKey::from_bytes(h.as_bytes()) {
                return k;
            }
            counter = counter.wrapping_add(1);
        }
    }

    /// The 32 big-endian secret bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.secret_bytes()
    }

    /// The account address owned by this key.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a 32-byte digest (RFC 6979 deterministic nonce, low `s`).
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature, SignatureError> {
        let sig =
            signer().sign_ecdsa_recoverable(secp256k1::Message::from_digest(*digest), &self.key);
        let (id, rs) = sig.serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&rs);
        out[64] = u8::try_from(i32::from(id)).map_err(|_| SignatureError::Malformed)?;
        Ok(Signature(out))
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // The best erase libsecp256k1 offers: the compiler may still keep copies.
        self.key.non_secure_erase();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(for {})", self.address())
    }
}

/// A recoverable ECDSA signature, `r ‖ s ‖ v` with `v` stored as 0 or 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 65]);

impl Signature {
    /// Reads Ethereum's 65-byte form, accepting `v` as 0/1 or 27/28.
    pub fn from_rsv(bytes: &[u8; 65]) -> Result<Signature, SignatureError> {
        let v = match bytes[64] {
            0 | 27 => 0,
            1 | 28 => 1,
            v => return Err(SignatureError::BadRecoveryId(v)),
        };
        let mut out = *bytes;
        out[64] = v;
        Ok(Signature(out))
    }

    /// `r`, the first 32 bytes.
    pub fn r(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0[..32]);
        out
    }

    /// `s`, bytes 32..64.
    pub fn s(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0[32..64]);
        out
    }

    /// Ethereum's `v`: 27 or 28.
    pub fn v(&self) -> u8 {
        27 + (self.0[64] & 1)
    }

    /// Recovers the address that signed `digest`. Rejects high-`s` signatures so
    /// each signed message has exactly one valid signature encoding.
    ///
    /// A node meets each transaction several times (mempool admission, gossip, the
    /// block that includes it), so recovered signers are remembered in a bounded
    /// process-wide memo keyed by digest and signature. Recovery is a pure function
    /// of the two, so the memo changes no result, only how often it is computed.
    pub fn recover(&self, digest: &[u8; 32]) -> Result<Address, SignatureError> {
        if let Some(a) = recovered::get(digest, &self.0) {
            return Ok(a);
        }
        let a = self.recover_uncached(digest)?;
        recovered::put(digest, &self.0, a);
        Ok(a)
    }

    fn recover_uncached(&self, digest: &[u8; 32]) -> Result<Address, SignatureError> {
        let recid = match self.0[64] {
            v @ (0 | 1) => RecoveryId::from_byte(v).ok_or(SignatureError::BadRecoveryId(v))?,
            v => return Err(SignatureError::BadRecoveryId(v)),
        };
        let sig =
            EcdsaSignature::from_slice(&self.0[..64]).map_err(|_| SignatureError::Malformed)?;
        if sig.normalize_s().is_some() {
            return Err(SignatureError::HighS);
        }
        let mut rs = [0u8; 64];
        rs.copy_from_slice(&self.0[..64]);
        let key = recover_key(digest, &rs, recid.to_byte()).ok_or(SignatureError::Unrecoverable)?;
        Ok(address_of_xy(&key))
    }
}

/// The memo behind [`Signature::recover`]: two generations of at most `CAP`
/// entries each; when the young one fills up, it becomes the old one and the old
/// one is dropped, so recently used signers stay and memory stays bounded.
mod recovered {
    use std::collections::HashMap;
    use std::sync::{Mutex, PoisonError};

    use crate::address::Address;

    const CAP: usize = 1 << 16;

    type Key = ([u8; 32], [u8; 65]);

    #[derive(Default)]
    struct Memo {
        young: HashMap<Key, Address>,
        old: HashMap<Key, Address>,
    }

    static MEMO: Mutex<Option<Memo>> = Mutex::new(None);

    pub(super) fn get(digest: &[u8; 32], sig: &[u8; 65]) -> Option<Address> {
        let key = (*digest, *sig);
        let guard = MEMO.lock().unwrap_or_else(PoisonError::into_inner);
        let memo = guard.as_ref()?;
        memo.young.get(&key).or_else(|| memo.old.get(&key)).copied()
    }

    pub(super) fn put(digest: &[u8; 32], sig: &[u8; 65], address: Address) {
        let mut guard = MEMO.lock().unwrap_or_else(PoisonError::into_inner);
        let memo = guard.get_or_insert_with(Memo::default);
        if memo.young.len() >= CAP {
            memo.old = std::mem::take(&mut memo.young);
        }
        memo.young.insert((*digest, *sig), address);
    }
}

/// Public key recovery with libsecp256k1 (the `secp256k1` crate), the library
/// Ethereum clients use for sender recovery: it recovers the key without then
/// re-verifying the signature against it (which `k256`'s recovery does and which
/// cannot fail), with variable-time arithmetic on public data, several times faster
/// than `k256`. A property test holds the two to the same result on every input.
fn recover_key(digest: &[u8; 32], sig: &[u8; 64], recid: u8) -> Option<[u8; 64]> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId as Id};
    static CTX: std::sync::OnceLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
        std::sync::OnceLock::new();
    let ctx = CTX.get_or_init(secp256k1::Secp256k1::verification_only);
    let id = Id::try_from(i32::from(recid)).ok()?;
    let sig = RecoverableSignature::from_compact(sig, id).ok()?;
    let key = ctx
        .recover_ecdsa(secp256k1::Message::from_digest(*digest), &sig)
        .ok()?;
    let point = key.serialize_uncompressed();
    let mut xy = [0u8; 64];
    xy.copy_from_slice(&point[1..]);
    Some(xy)
}

/// The Ethereum address of an uncompressed public key `x ‖ y`.
fn address_of_xy(xy: &[u8; 64]) -> Address {
    let digest = alloy_primitives::keccak256(xy);
    let mut out = [0u8; 20];
    out.copy_from_slice(&digest[12..]);
    Address(out)
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(0x{})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::{SigningKey, VerifyingKey};
    use proptest::prelude::*;

    fn address_of(key: &VerifyingKey) -> Address {
        let point = key.to_encoded_point(false);
        let mut xy = [0u8; 64];
        xy.copy_from_slice(&point.as_bytes()[1..]);
        address_of_xy(&xy)
    }

    #[test]
    fn known_key_has_known_address() {
        // keccak256("cow") is the key of the EIP-712 specification's example signer.
        let sk = SecretKey::from_bytes(&alloy_primitives::keccak256(b"cow").0).unwrap();
        assert_eq!(
            sk.address().to_string(),
            "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
        );
    }

    #[test]
    fn high_s_and_bad_v_are_rejected() {
        let sk = SecretKey::from_seed(b"a");
        let sig = sk.sign_digest(&[7u8; 32]).unwrap();
        let s = EcdsaSignature::from_slice(&sig.0[..64]).unwrap();
        // Flip s to n - s, the malleable twin.
        let high = EcdsaSignature::from_scalars(s.r().to_bytes(), (-*s.s()).to_bytes()).unwrap();
        let mut bytes = sig.0;
        bytes[..64].copy_from_slice(&high.to_bytes());
        bytes[64] ^= 1;
        assert_eq!(
            Signature(bytes).recover(&[7u8; 32]),
            Err(SignatureError::HighS)
        );
        let mut bad = sig.0;
        bad[64] = 5;
        assert_eq!(
            Signature(bad).recover(&[7u8; 32]),
            Err(SignatureError::BadRecoveryId(5))
        );
        assert_eq!(
            Signature::from_rsv(&bad),
            Err(SignatureError::BadRecoveryId(5))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// libsecp256k1's recovery agrees with k256's recover-then-verify on valid
        /// signatures and on arbitrary bytes alike.
        #[test]
        fn recovery_matches_k256(seed in any::<[u8; 8]>(), digest in any::<[u8; 32]>(), other in any::<[u8; 32]>(), junk in any::<[u8; 64]>(), v in 0u8..2) {
            let sk = SecretKey::from_seed(&seed);
            let sig = sk.sign_digest(&digest).unwrap();
            let mut bytes = [0u8; 65];
            bytes[..64].copy_from_slice(&junk);
            bytes[64] = v;
            for (sig, d) in [(sig, digest), (sig, other), (Signature(bytes), digest)] {
                let reference = EcdsaSignature::from_slice(&sig.0[..64]).ok().and_then(|s| {
                    if s.normalize_s().is_some() {
                        return None;
                    }
                    let id = RecoveryId::from_byte(sig.0[64])?;
                    VerifyingKey::recover_from_prehash(&d, &s, id).ok()
                });
                prop_assert_eq!(sig.recover(&d).ok(), reference.map(|k| address_of(&k)));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// libsecp256k1 derives the same address and makes the same signature bytes
        /// as k256 (RFC 6979 with SHA-256, low `s`): a key and its signatures are
        /// the same whichever library made them.
        #[test]
        fn signing_matches_k256(key in any::<[u8; 32]>(), digest in any::<[u8; 32]>()) {
            let ours = SecretKey::from_bytes(&key);
            let theirs = SigningKey::from_slice(&key);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok());
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                prop_assert_eq!(ours.address(), address_of(theirs.verifying_key()));
                prop_assert_eq!(ours.to_bytes(), key);
                let (sig, id) = theirs.sign_prehash_recoverable(&digest).unwrap();
                let mut expected = [0u8; 65];
                expected[..64].copy_from_slice(&sig.to_bytes());
                expected[64] = id.to_byte();
                prop_assert_eq!(ours.sign_digest(&digest).unwrap().0, expected);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn sign_then_recover(seed in any::<[u8; 8]>(), digest in any::<[u8; 32]>(), other in any::<[u8; 32]>()) {
            let sk = SecretKey::from_seed(&seed);
            let sig = sk.sign_digest(&digest).unwrap();
            prop_assert_eq!(sig.recover(&digest).unwrap(), sk.address());
            // A second recovery comes from the memo and agrees with a fresh one.
            prop_assert_eq!(sig.recover(&digest).unwrap(), sk.address());
            prop_assert_eq!(sig.recover_uncached(&digest).unwrap(), sk.address());
            if other != digest {
                prop_assert_ne!(sig.recover(&other).ok(), Some(sk.address()));
            }
        }
    }
}
