//! A second, independent client library: runs the PyMySQL pytest suite
//! (tests/python) against an in-process baton.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn pymysql_suite_passes_through_baton() {
    let info = cluster();
    let baton = TestBaton::start("").await;
    let port = baton.port;
    let direct = info.port(0);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/python"])
            .current_dir(repo_root())
            .env("BATON_PORT", port.to_string())
            .env("DIRECT_PORT", direct.to_string())
            .output()
            .expect("python3 with pytest and pymysql (scripts/setup.sh installs them)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pytest failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4 passed"), "{stdout}");
}
