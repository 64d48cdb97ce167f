//! Node identities: ed25519 keys and signatures (consensus votes, proposals and the
//! libp2p peer id all come from the same 32-byte secret).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use deed_types::Hash;

/// Why bytes or text are not a node key or signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not hex of the expected length.
    #[error("expected {expected} hex-encoded bytes")]
    BadHex {
        /// Bytes expected.
        expected: usize,
    },
    /// The bytes are not a valid ed25519 public key (not a curve point).
    #[error("not an ed25519 public key")]
    BadPublicKey,
}

/// A node's ed25519 secret key. Debug output never shows the key.
#[derive(Clone)]
pub struct NodeSecretKey(SigningKey);

impl NodeSecretKey {
    /// The key with these 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> NodeSecretKey {
        NodeSecretKey(SigningKey::from_bytes(&bytes))
    }

    /// A key derived from a seed text (tests and local testnets only: anyone who knows
    /// the seed knows the key).
    pub fn from_seed(seed: &[u8]) -> NodeSecretKey {
        Self::from_bytes(*Hash::domain("deed 2026 node key seed", &[seed]).as_bytes())
    }

    /// The 32 secret bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key.
    pub fn public_key(&self) -> NodePublicKey {
        NodePublicKey(self.0.verifying_key())
    }

    /// Signs a 32-byte digest.
    pub fn sign(&self, digest: &Hash) -> NodeSignature {
        NodeSignature(self.0.sign(digest.as_bytes()).to_bytes())
    }
}

impl fmt::Debug for NodeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeSecretKey({})", self.public_key())
    }
}

impl Serialize for NodeSecretKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.to_bytes()))
    }
}

impl<'de> Deserialize<'de> for NodeSecretKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        let bytes = parse_hex::<32>(&s).map_err(serde::de::Error::custom)?;
        Ok(NodeSecretKey::from_bytes(bytes))
    }
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], KeyError> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::BadHex { expected: N })?;
    Ok(out)
}

/// A node's ed25519 public key. Displays and parses as 64 hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodePublicKey(VerifyingKey);

impl NodePublicKey {
    /// Parses 32 bytes as a public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<NodePublicKey, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(NodePublicKey)
            .map_err(|_| KeyError::BadPublicKey)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Whether `signature` is this key's signature of `digest` (strict verification:
    /// no malleable or small-order forms are accepted).
    pub fn verify(&self, digest: &Hash, signature: &NodeSignature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify_strict(digest.as_bytes(), &sig).is_ok()
    }

    /// The libp2p peer id of the node holding this key.
    pub fn peer_id(&self) -> Option<malachitebft_app_channel::app::types::PeerId> {
        let pk = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.to_bytes()).ok()?;
        let peer = libp2p_identity::PublicKey::from(pk).to_peer_id();
        malachitebft_app_channel::app::types::PeerId::from_bytes(&peer.to_bytes()).ok()
    }
}

impl PartialOrd for NodePublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodePublicKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.as_bytes().cmp(other.0.as_bytes())
    }
}

impl std::hash::Hash for NodePublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state)
    }
}

impl fmt::Display for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey({self})")
    }
}

impl FromStr for NodePublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodePublicKey::from_bytes(&parse_hex::<32>(s)?)
    }
}

impl Serialize for NodePublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for NodePublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl BorshSerialize for NodePublicKey {
    fn serialize<W: borsh::io::Write>(&self, w: &mut W) -> borsh::io::Result<()> {
        w.write_all(self.0.as_bytes())
    }
}

impl BorshDeserialize for NodePublicKey {
    fn deserialize_reader<R: borsh::io::Read>(r: &mut R) -> borsh::io::Result<Self> {
        let bytes = <[u8; 32]>::deserialize_reader(r)?;
        NodePublicKey::from_bytes(&bytes)
            .map_err(|e| borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// An ed25519 signature (64 bytes). Ordered by its bytes, as malachite requires.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct NodeSignature(pub [u8; 64]);

impl fmt::Debug for NodeSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeSignature({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = NodeSecretKey::from_seed(b"a");
        let d = Hash::of(b"msg");
        let s = k.sign(&d);
        assert!(k.public_key().verify(&d, &s));
        assert!(!k.public_key().verify(&Hash::of(b"other"), &s));
        let other = NodeSecretKey::from_seed(b"b");
        assert!(!other.public_key().verify(&d, &s));
        let mut bad = s;
        bad.0[3] ^= 1;
        assert!(!k.public_key().verify(&d, &bad));
    }

    #[test]
    fn text_and_borsh_round_trip() {
        let k = NodeSecretKey::from_seed(b"a");
        let pk = k.public_key();
        assert_eq!(pk.to_string().parse::<NodePublicKey>(), Ok(pk));
        let bytes = borsh::to_vec(&pk).unwrap();
        assert_eq!(NodePublicKey::try_from_slice(&bytes).unwrap(), pk);
        let json = serde_json::to_string(&k).unwrap();
        let back: NodeSecretKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_bytes(), k.to_bytes());
        let json = serde_json::to_string(&pk).unwrap();
        assert_eq!(serde_json::from_str::<NodePublicKey>(&json).unwrap(), pk);
        assert!("zz".parse::<NodePublicKey>().is_err());
    }

    #[test]
    fn peer_id_matches_libp2p_keypair() {
        let k = NodeSecretKey::from_seed(b"peer");
        let kp = libp2p_identity::Keypair::ed25519_from_bytes(k.to_bytes()).unwrap();
        let expected = malachitebft_app_channel::app::types::PeerId::from_bytes(
            &kp.public().to_peer_id().to_bytes(),
        )
        .unwrap();
        assert_eq!(k.public_key().peer_id(), Some(expected));
    }
}
