//! Multi-process network scenarios (`tests/scenarios/*.scn`, see
//! `deed_cli::scenario`): real `deed node` processes on loopback addresses, one
//! scenario at a time, each on its own 127.0.X.0/24 so leftovers of one never meet
//! another.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::sync::Mutex;

use deed_cli::scenario::{parse, Runner};

const BIN: &str = env!("CARGO_BIN_EXE_deed");

/// Four node processes at a time are plenty for two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(name: &str, subnet: u8) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(format!("{name}.scn"));
    let text = std::fs::read_to_string(&path).unwrap();
    let steps = parse(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(
        Path::new(BIN),
        &dir.path().join("net"),
        std::net::Ipv4Addr::new(127, 0, subnet, 10),
        26_000,
        u64::from(subnet),
    )
    .unwrap()
    .with_base(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let result = runner.run(&steps);
    for line in runner.log() {
        eprintln!("{name}: {line}");
    }
    runner.shutdown();
    if std::env::var_os("DEED_SCENARIO_KEEP").is_some() {
        eprintln!("{name}: nodes' homes kept in {}", dir.keep().display());
        result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
        return;
    }
    if let Err(e) = result {
        // Show the nodes' logs' tails: the scenario's own error rarely says why.
        for i in 0..8 {
            let log = dir.path().join(format!("net/node-{i}/node.log"));
            if let Ok(text) = std::fs::read_to_string(&log) {
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!("--- node {i} ---");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        panic!("{name}: {e:#}");
    }
}

#[test]
fn four_validators_commit_the_same_chain() {
    run("four_validators", 61);
}

#[test]
fn a_killed_validator_restarts_and_catches_up() {
    run("kill_restart", 62);
}

#[test]
fn a_two_two_partition_stalls_without_forking_and_heals() {
    run("partition", 63);
}

#[test]
fn links_that_drop_between_running_nodes_are_dialled_again() {
    run("lost_links", 72);
}

#[test]
fn kill_nine_under_load_loses_no_committed_transaction() {
    run("crash_under_load", 64);
}

#[test]
fn a_node_joining_later_syncs_the_whole_chain() {
    run("late_join", 65);
}

#[test]
fn peers_serving_corrupt_blob_chunks_change_no_byte_and_get_strikes() {
    run("lying_blob_peers", 71);
}

#[test]
fn a_model_runs_through_separate_executor_and_watcher_processes() {
    run("inference", 66);
}

#[test]
fn a_cheating_executor_process_is_caught_by_a_watcher_process_and_slashed() {
    run("cheater", 67);
}

#[test]
fn a_false_challenge_from_a_watcher_process_loses_its_bond() {
    run("false_challenge", 68);
}

#[test]
fn a_silent_cheating_executor_process_loses_by_deadline() {
    run("silent_cheater", 69);
}

#[test]
fn replicated_three_over_executor_processes_slashes_the_one_liar() {
    run("replicated", 70);
}

#[test]
fn scenarios_parse_and_bad_lines_are_named() {
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")).unwrap()
    {
        let p = entry.unwrap().path();
        parse(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
    }
    let e = parse("testnet validators=4\nfly away\n").unwrap_err();
    assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    assert!(parse("wait height>=x").is_err());
    assert!(parse("partition 0,1 2,3").is_err());
}
