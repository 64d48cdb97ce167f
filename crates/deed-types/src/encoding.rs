//! Deed's one canonical binary encoding: [borsh](https://borsh.io), which has exactly
//! one encoding per value (fixed-width little-endian integers, u32 length prefixes,
//! enum tags as one byte), so hashes of encoded values agree on every machine.
//!
//! Decoding is strict: a size cap is checked before any parsing and trailing bytes are
//! an error, so two different byte strings never decode to the same value.

use borsh::{BorshDeserialize, BorshSerialize};

/// Why bytes could not be decoded into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than the type allows.
    #[error("{what}: {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The type being decoded.
        what: &'static str,
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The bytes are not a valid encoding (truncated, bad tag, bad UTF-8, …).
    #[error("{what}: malformed encoding")]
    Malformed {
        /// The type being decoded.
        what: &'static str,
    },
    /// A valid value followed by extra bytes.
    #[error("{what}: {extra} trailing bytes after the value")]
    TrailingBytes {
        /// The type being decoded.
        what: &'static str,
        /// Bytes left over.
        extra: usize,
    },
}

/// Encodes `value` canonically.
pub fn encode<T: BorshSerialize + ?Sized>(value: &T) -> Vec<u8> {
    // Writing to a Vec cannot fail; borsh only reports errors from the writer.
    borsh::to_vec(value).unwrap_or_default()
}

/// Decodes a canonical encoding of at most `max` bytes, rejecting trailing bytes.
pub fn decode<T: BorshDeserialize>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    let mut rest = bytes;
    let value = T::deserialize(&mut rest).map_err(|_| DecodeError::Malformed { what })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}
