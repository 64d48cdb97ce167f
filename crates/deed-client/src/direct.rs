//! Checks on an executor's answer to a direct call.

use deed_types::{decode_list, encode_list, Address, Hash, Signature, Tensor};

use crate::api::{direct_receipt_digest, DirectResponse, NamedTensor};
use crate::hexbytes;

/// Largest output list accepted from an executor.
pub const MAX_OUTPUT_BYTES: usize = 256 << 20;

/// Why an executor's answer cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectError {
    /// The answer is for another request.
    #[error("executor answered request {got}, not {expected}")]
    WrongRequest {
        /// The request sent.
        expected: Hash,
        /// The request answered.
        got: Hash,
    },
    /// The signature is malformed or does not recover the executor's address.
    #[error("receipt signature {reason}")]
    BadSignature {
        /// What is wrong.
        reason: String,
    },
    /// The receipt names another executor than the one called.
    #[error("receipt signed by {got}, expected executor {expected}")]
    WrongExecutor {
        /// The executor called.
        expected: Address,
        /// Who signed.
        got: Address,
    },
    /// An output tensor is not valid hex or canonical encoding.
    #[error("output `{name}` is malformed: {reason}")]
    BadOutput {
        /// Output name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The outputs do not hash to the receipt's output hash.
    #[error("outputs hash to {got}, the receipt commits to {expected}")]
    OutputMismatch {
        /// The receipt's output hash.
        expected: Hash,
        /// Hash of the outputs sent.
        got: Hash,
    },
}

/// Decodes named tensors from the wire.
pub fn decode_tensors(list: &[NamedTensor]) -> Result<Vec<(String, Tensor)>, DirectError> {
    list.iter()
        .map(|nt| {
            let bad = |reason: String| DirectError::BadOutput {
                name: nt.name.clone(),
                reason,
            };
            let bytes = hexbytes::decode(&nt.tensor).map_err(|e| bad(e.to_string()))?;
            let t = Tensor::decode(&bytes).map_err(|e| bad(e.to_string()))?;
            Ok((nt.name.clone(), t))
        })
        .collect()
}

/// Encodes named tensors for the wire.
pub fn encode_tensors(list: &[(String, Tensor)]) -> Vec<NamedTensor> {
    list.iter()
        .map(|(name, t)| NamedTensor {
            name: name.clone(),
            tensor: hexbytes::encode(&t.encode()),
        })
        .collect()
}

/// Verifies an executor's answer to `request`: the signature recovers `executor`,
/// and the outputs hash to the receipt's output hash. Returns the outputs.
pub fn verify(
    resp: &DirectResponse,
    request: &Hash,
    executor: &Address,
) -> Result<Vec<(String, Tensor)>, DirectError> {
    if resp.request != *request {
        return Err(DirectError::WrongRequest {
            expected: *request,
            got: resp.request,
        });
    }
    let sig_bytes = hexbytes::decode(&resp.signature).map_err(|e| DirectError::BadSignature {
        reason: format!("is not hex: {e}"),
    })?;
    let sig_arr: [u8; 65] =
        sig_bytes
            .as_slice()
            .try_into()
            .map_err(|_| DirectError::BadSignature {
                reason: format!("is {} bytes, expected 65", sig_bytes.len()),
            })?;
    let sig = Signature::from_rsv(&sig_arr).map_err(|e| DirectError::BadSignature {
        reason: e.to_string(),
    })?;
    let digest = direct_receipt_digest(
        request,
        &resp.receipt.output_hash,
        &resp.receipt.trace_root,
        resp.receipt.steps,
    );
    let signer = sig
        .recover(&digest)
        .map_err(|e| DirectError::BadSignature {
            reason: e.to_string(),
        })?;
    if signer != *executor || resp.receipt.executor != *executor {
        return Err(DirectError::WrongExecutor {
            expected: *executor,
            got: signer,
        });
    }
    let outputs = decode_tensors(&resp.outputs)?;
    let tensors: Vec<Tensor> = outputs.iter().map(|(_, t)| t.clone()).collect();
    let got = Hash::of(&encode_list(&tensors));
    if got != resp.receipt.output_hash {
        return Err(DirectError::OutputMismatch {
            expected: resp.receipt.output_hash,
            got,
        });
    }
    Ok(outputs)
}

/// Decodes a receipt's inline output list.
pub fn decode_inline(hex_text: &str) -> Result<Vec<Tensor>, DirectError> {
    let bad = |reason: String| DirectError::BadOutput {
        name: "inline output".into(),
        reason,
    };
    let bytes = hexbytes::decode(hex_text).map_err(|e| bad(e.to_string()))?;
    decode_list(&bytes, MAX_OUTPUT_BYTES).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReceiptView;
    use deed_types::SecretKey;

    fn answer(key: &SecretKey, request: Hash, outputs: Vec<(String, Tensor)>) -> DirectResponse {
        let tensors: Vec<Tensor> = outputs.iter().map(|(_, t)| t.clone()).collect();
        let output_hash = Hash::of(&encode_list(&tensors));
        let trace_root = Hash::of(b"trace");
        let digest = direct_receipt_digest(&request, &output_hash, &trace_root, 3);
        let sig = key.sign_digest(&digest).unwrap();
        DirectResponse {
            request,
            outputs: encode_tensors(&outputs),
            receipt: ReceiptView {
                executor: key.address(),
                output_hash,
                output_inline: None,
                trace_root,
                steps: 3,
            },
            signature: hexbytes::encode(&sig.0),
        }
    }

    #[test]
    fn accepts_honest_answer_and_rejects_tampering() {
        let key = SecretKey::from_seed(b"executor");
        let req = Hash::of(b"request");
        let out = vec![(
            "y".to_owned(),
            Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap(),
        )];
        let resp = answer(&key, req, out.clone());
        assert_eq!(verify(&resp, &req, &key.address()).unwrap(), out);

        let other = SecretKey::from_seed(b"other").address();
        assert!(matches!(
            verify(&resp, &req, &other),
            Err(DirectError::WrongExecutor { .. })
        ));
        assert!(matches!(
            verify(&resp, &Hash::of(b"x"), &key.address()),
            Err(DirectError::WrongRequest { .. })
        ));

        let mut altered = resp.clone();
        altered.outputs = encode_tensors(&[(
            "y".to_owned(),
            Tensor::from_vec(vec![2], vec![1.0f32, 3.0]).unwrap(),
        )]);
        assert!(matches!(
            verify(&altered, &req, &key.address()),
            Err(DirectError::OutputMismatch { .. })
        ));

        let mut resigned = resp;
        resigned.receipt.steps = 4;
        assert!(matches!(
            verify(&resigned, &req, &key.address()),
            Err(DirectError::WrongExecutor { .. })
        ));
    }
}
