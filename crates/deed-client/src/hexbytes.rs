//! `0x`-prefixed hex, the API's form of binary payloads inside JSON.

/// Encodes bytes as `0x`-prefixed lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Decodes hex with or without the `0x` prefix.
pub fn decode(text: &str) -> Result<Vec<u8>, hex::FromHexError> {
    hex::decode(text.strip_prefix("0x").unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = encode(&bytes);
            prop_assert!(text.starts_with("0x"));
            prop_assert_eq!(decode(&text).unwrap(), bytes.clone());
            prop_assert_eq!(decode(&text[2..]).unwrap(), bytes);
        }
    }

    #[test]
    fn rejects_odd_and_non_hex() {
        assert!(decode("0xabc").is_err());
        assert!(decode("0xzz").is_err());
    }
}
