//! `cargo bench --bench chaos`: the nemesis test (`tests/nemesis.rs`) for 20
//! minutes (or `BATON_NEMESIS_SECS`) against a 3-node cluster this bench starts,
//! in a release build. Prints the nemesis's own report (actions, acknowledged
//! rows, failed attempts by code, worst write pause, read_only samples) and
//! fails if any of its checks fails. `BATON_NEMESIS_REPLAY=1` runs it with
//! `[transaction_replay]` (only 9105 accepted).

use std::process::Command;

fn main() {
    // `cargo test --all-targets` runs harness-less benches too: only `cargo bench`
    // (which passes --bench) starts the 20-minute run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("chaos benchmark: run it with `cargo bench --bench chaos`");
        return;
    }
    let secs = std::env::var("BATON_NEMESIS_SECS").unwrap_or_else(|_| "1200".into());
    let cluster = baton_testkit::Cluster::start(3, None).expect("starting a 3-node MariaDB cluster (run scripts/setup.sh first)");
    let info = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(info.path(), serde_json::to_string(&cluster.info).unwrap()).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "--release",
            "--test",
            "nemesis",
            "--",
            "--nocapture",
            "--exact",
            "nemesis_keeps_one_writable_primary_and_every_acknowledged_write",
        ])
        .current_dir(root)
        .env("BATON_TEST_CLUSTER_REPARENT", info.path())
        .env("BATON_NEMESIS_SECS", &secs)
        .status()
        .expect("cargo test --test nemesis");
    drop(cluster);
    assert!(status.success(), "the nemesis run failed (its report is above)");
}
