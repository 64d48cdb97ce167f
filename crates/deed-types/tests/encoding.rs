//! Canonical encoding round trips for every wire type, and the transaction decoder
//! fed arbitrary bytes.

#![allow(clippy::unwrap_used)]

use deed_types::tx::limits;
use deed_types::*;
use proptest::prelude::*;

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}
fn addr() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(Address)
}
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{max}}}")).unwrap()
}
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}
fn licence() -> impl Strategy<Value = Licence> {
    prop_oneof![
        Just(Licence::Open),
        Just(Licence::Paid),
        prop::collection::vec(addr(), 0..4).prop_map(Licence::AllowList),
    ]
}
fn receipt() -> impl Strategy<Value = Receipt> {
    (
        prop_oneof![
            hash().prop_map(Output::Hash),
            bytes(32).prop_map(Output::Inline)
        ],
        hash(),
        any::<u64>(),
        prop::collection::vec(hash(), 0..4),
        prop::collection::vec(hash(), 0..4),
    )
        .prop_map(|(output, trace_root, steps, peaks, siblings)| Receipt {
            output,
            trace_root,
            steps,
            output_proof: OutputProofData { peaks, siblings },
        })
}
fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::None),
        Just(Mode::Optimistic),
        any::<u8>().prop_map(Mode::Replicated)
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (addr(), any::<u128>()).prop_map(|(to, amount)| Action::Transfer { to, amount }),
        (
            text(8),
            text(16),
            licence(),
            any::<u128>(),
            any::<Option<(u64, u16)>>()
        )
            .prop_map(
                |(name, description, licence, price, l)| Action::RegisterModel {
                    name,
                    description,
                    licence,
                    price,
                    lineage: l.map(|(p, b)| Lineage {
                        parent: ModelId(p),
                        upstream_bps: b
                    }),
                }
            ),
        (
            any::<u64>(),
            hash(),
            text(8),
            any::<u64>(),
            any::<u64>(),
            text(8)
        )
            .prop_map(
                |(m, c, io_schema, steps, cost, notes)| Action::PublishVersion {
                    model: ModelId(m),
                    manifest: Cid(c),
                    io_schema,
                    steps,
                    cost,
                    notes
                }
            ),
        (
            any::<u64>(),
            any::<Option<u128>>(),
            prop::option::of(licence()),
            prop::option::of(text(8))
        )
            .prop_map(|(m, price, licence, description)| Action::UpdateModel {
                model: ModelId(m),
                price,
                licence,
                description
            }),
        (any::<u64>(), addr()).prop_map(|(m, to)| Action::TransferModel {
            model: ModelId(m),
            to
        }),
        (
            any::<u128>(),
            text(8),
            any::<u128>(),
            prop::collection::vec(any::<u64>(), 0..4)
        )
            .prop_map(|(amount, endpoint, price, m)| Action::Bond {
                amount,
                endpoint,
                price,
                models: m.into_iter().map(ModelId).collect()
            }),
        any::<u128>().prop_map(|amount| Action::Unbond { amount }),
        Just(Action::Withdraw),
        Just(Action::Unjail),
        (
            any::<u64>(),
            any::<Option<u32>>(),
            prop_oneof![
                bytes(32).prop_map(JobInput::Inline),
                hash().prop_map(|h| JobInput::ByCid(Cid(h)))
            ],
            mode(),
            any::<u128>(),
            proptest::option::of(any::<[u8; 20]>().prop_map(Address))
        )
            .prop_map(
                |(m, version, input, mode, max_fee, executor)| Action::RequestJob {
                    model: ModelId(m),
                    version,
                    input,
                    mode,
                    max_fee,
                    executor,
                }
            ),
        (any::<u64>(), receipt()).prop_map(|(j, receipt)| Action::SubmitReceipt {
            job: JobId(j),
            receipt
        }),
        (any::<u64>(), hash()).prop_map(|(j, commitment)| Action::CommitOutput {
            job: JobId(j),
            commitment
        }),
        (any::<u64>(), receipt(), hash()).prop_map(|(j, receipt, salt)| Action::RevealOutput {
            job: JobId(j),
            receipt,
            salt
        }),
        (any::<u64>(), hash()).prop_map(|(j, trace_root)| Action::Challenge {
            job: JobId(j),
            trace_root
        }),
        (
            any::<u64>(),
            any::<(u64, u64)>(),
            hash(),
            prop::collection::vec(hash(), 0..4)
        )
            .prop_map(
                |(d, (index, len), chain_value, siblings)| Action::RevealStep {
                    dispute: DisputeId(d),
                    proof: StepProofData {
                        index,
                        len,
                        chain_value,
                        siblings
                    }
                }
            ),
        (any::<u64>(), any::<bool>()).prop_map(|(d, agree)| Action::Respond {
            dispute: DisputeId(d),
            agree
        }),
        (
            any::<u64>(),
            prop::collection::vec(hash(), 0..3),
            prop::collection::vec(
                prop_oneof![
                    any::<u32>().prop_map(|index| RefereeInput::JobInput { index }),
                    (
                        any::<u64>(),
                        any::<u32>(),
                        prop::collection::vec(bytes(8), 0..3),
                        prop::collection::vec(hash(), 0..3),
                        prop::collection::vec(hash(), 0..3)
                    )
                        .prop_map(
                            |(step, output, outputs, siblings, other_peaks)| RefereeInput::Step {
                                step,
                                output,
                                outputs,
                                siblings,
                                other_peaks
                            }
                        ),
                    text(8).prop_map(|name| RefereeInput::Initializer { name }),
                    Just(RefereeInput::Absent),
                    (any::<u32>(), prop::collection::vec(any::<u8>(), 0..64))
                        .prop_map(|(index, blob)| RefereeInput::JobInputBlob { index, blob }),
                ],
                0..3
            )
        )
            .prop_map(|(d, peaks, inputs)| Action::Referee {
                dispute: DisputeId(d),
                peaks,
                inputs
            }),
        any::<u128>().prop_map(|value| Action::Propose {
            change: ParamChange {
                key: ParamKey::ChallengeWindow,
                value
            }
        }),
        (any::<u64>(), any::<bool>()).prop_map(|(p, approve)| Action::Vote {
            proposal: ProposalId(p),
            approve
        }),
        (any::<u64>(), hash()).prop_map(|(j, digest)| Action::Attest {
            job: JobId(j),
            digest
        }),
        (
            any::<u64>(),
            any::<(u64, u64)>(),
            hash(),
            prop::collection::vec(hash(), 0..4)
        )
            .prop_map(
                |(j, (index, len), chain_value, siblings)| Action::RevealAudit {
                    job: JobId(j),
                    proof: StepProofData {
                        index,
                        len,
                        chain_value,
                        siblings
                    }
                }
            ),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(d, chunk)| {
            Action::StageReferee {
                dispute: DisputeId(d),
                chunk,
            }
        }),
        (any::<u64>(), prop::collection::vec(hash(), 0..4)).prop_map(|(d, peaks)| {
            Action::RefereeStaged {
                dispute: DisputeId(d),
                peaks,
            }
        }),
        (any::<[u8; 32]>(), prop::collection::vec(any::<u8>(), 64)).prop_map(|(key, p)| {
            let mut proof = [0u8; 64];
            proof.copy_from_slice(&p);
            Action::SetConsensusKey { key, proof }
        }),
        (
            any::<u64>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64))
        )
            .prop_map(|(j, input)| Action::DeclineJob {
                job: JobId(j),
                input
            }),
    ]
}

fn signed() -> impl Strategy<Value = SignedTransaction> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u128>(),
        action(),
        any::<[u8; 8]>(),
    )
        .prop_map(|(chain_id, nonce, fee, action, seed)| {
            Transaction {
                chain_id,
                nonce,
                fee,
                action,
            }
            .sign(&SecretKey::from_seed(&seed))
            .unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signed_transaction_round_trips_and_recovers(stx in signed(), seed in any::<[u8; 8]>()) {
        let bytes = stx.encode();
        let back = SignedTransaction::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &stx);
        prop_assert_eq!(back.encode(), bytes);
        prop_assert_eq!(back.hash(), stx.hash());
        // The sender is whoever signed; re-signing with another key changes it.
        let sender = back.sender().unwrap();
        let other = SecretKey::from_seed(&seed);
        let resigned = stx.tx.clone().sign(&other).unwrap();
        prop_assert_eq!(resigned.sender().unwrap(), other.address());
        prop_assert_eq!(sender == other.address(), resigned.signature == stx.signature);
    }

    #[test]
    fn block_round_trips(txs in prop::collection::vec(signed(), 0..4), h in any::<u64>(), prev in hash(), p in addr()) {
        let block = Block {
            header: Header { chain_id: 7, height: h, time: 1, prev_hash: prev, tx_root: tx_root(&txs), state_root: prev, proposer: p },
            txs,
        };
        let back = Block::decode(&block.encode()).unwrap();
        prop_assert_eq!(&back, &block);
        prop_assert_eq!(back.header.hash(), block.header.hash());
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(b in bytes(512)) {
        // Either a typed error or a transaction that re-encodes to the same bytes.
        if let Ok(stx) = SignedTransaction::decode(&b) {
            prop_assert_eq!(stx.encode(), b);
        }
    }

    #[test]
    fn decoder_never_panics_on_mutated_transactions(stx in signed(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut b = stx.encode();
        let i = at.index(b.len());
        b[i] = byte;
        let _ = SignedTransaction::decode(&b);
        let c = cut.index(b.len());
        prop_assert!(SignedTransaction::decode(&b[..c]).is_err());
    }
}

#[test]
fn oversize_fields_and_trailing_bytes_are_typed_errors() {
    let key = SecretKey::from_seed(b"k");
    let stx = Transaction {
        chain_id: 1,
        nonce: 0,
        fee: 1,
        action: Action::RegisterModel {
            name: "x".repeat(limits::MAX_NAME + 1),
            description: String::new(),
            licence: Licence::Open,
            price: 0,
            lineage: None,
        },
    }
    .sign(&key)
    .unwrap();
    assert!(matches!(
        SignedTransaction::decode(&stx.encode()),
        Err(TxDecodeError::Limit(LimitError { field: "name", .. }))
    ));

    let ok = Transaction {
        chain_id: 1,
        nonce: 0,
        fee: 1,
        action: Action::Withdraw,
    }
    .sign(&key)
    .unwrap();
    let mut b = ok.encode();
    b.push(0);
    assert!(matches!(
        SignedTransaction::decode(&b),
        Err(TxDecodeError::Decode(DecodeError::TrailingBytes {
            extra: 1,
            ..
        }))
    ));
    let huge = vec![0u8; limits::MAX_TX_BYTES + 1];
    assert!(matches!(
        SignedTransaction::decode(&huge),
        Err(TxDecodeError::Decode(DecodeError::TooLarge { .. }))
    ));
}
