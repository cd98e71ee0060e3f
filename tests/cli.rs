//! The real `mariadb` CLI through baton gives exactly what it gives directly:
//! rows, NULLs, every common column type, and column metadata
//! (`--column-type-info`). Also `baton --check-config`.

mod common;

use std::process::Command;

use common::*;

fn mariadb(port: u16, sql: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{port}"), &format!("-u{APP_USER}"), &format!("-p{APP_PASSWORD}")])
        .args(["--protocol=TCP", "--default-character-set=utf8mb4", "baton_test"])
        .args(extra)
        .args(["-e", sql])
        .output()
        .expect("mariadb CLI installed");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

const SETUP: &str = r#"
DROP TABLE IF EXISTS cli_types;
CREATE TABLE cli_types (
  id INT PRIMARY KEY AUTO_INCREMENT,
  ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT, ubi BIGINT UNSIGNED,
  de DECIMAL(20,6), fl FLOAT, db DOUBLE, bt BIT(5),
  d DATE, t TIME(3), dt DATETIME(6), ts TIMESTAMP(2) NULL, yr YEAR,
  ch CHAR(4), vc VARCHAR(100), tx TEXT, bl BLOB, vb VARBINARY(8),
  js JSON, en ENUM('a','b','c'), st SET('x','y','z')
) DEFAULT CHARSET=utf8mb4;
INSERT INTO cli_types VALUES
 (NULL, -128, 65535, -8388608, -9223372036854775808, 18446744073709551615,
  -12345678901234.123456, 3.14159, -2.718281828459045, b'10101',
  '2024-02-29', '-838:59:58.999', '2024-12-31 23:59:59.999999', '2038-01-19 03:14:07.99', 2155,
  'abcd', 'héllo wörld — 日本語 🎉', REPEAT('long text ', 50), X'00FF10DEADBEEF', X'0001',
  '{"k": [1, 2.5, "x", null, true]}', 'b', 'x,z'),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (NULL, 0, 0, 0, 0, 0, 0, 0, 0, b'0', '1000-01-01', '00:00:00', '1000-01-01 00:00:00', '1970-01-01 00:00:01', 1901,
  '', '', '', '', '', '[]', 'a', '');
"#;

const QUERIES: &[&str] = &[
    "SELECT * FROM cli_types ORDER BY id",
    "SELECT id, HEX(bl), HEX(bt), LENGTH(tx), CHAR_LENGTH(vc) FROM cli_types ORDER BY id",
    "SELECT COUNT(*), SUM(bi), AVG(de), MAX(dt), GROUP_CONCAT(en ORDER BY id) FROM cli_types",
    "SELECT 1 AS a, 'two' AS b, NULL AS c, 3.5e0 AS d, CAST('2020-01-01' AS DATE) AS e",
    "SHOW COLUMNS FROM cli_types",
    "SELECT * FROM cli_types WHERE 1=0",
    "UPDATE cli_types SET ti = ti WHERE id < 0",
    "SELECT JSON_EXTRACT(js, '$.k[1]') FROM cli_types WHERE js IS NOT NULL ORDER BY id",
];

#[tokio::test(flavor = "multi_thread")]
async fn cli_output_and_metadata_match_direct() {
    let info = cluster();
    let baton = TestBaton::start("").await;
    let direct = info.port(0);
    let port = baton.port;
    tokio::task::spawn_blocking(move || {
        let (ok, _, err) = mariadb(port, SETUP, &[]);
        assert!(ok, "setup through baton failed: {err}");
        for q in QUERIES {
            for extra in [&[][..], &["--column-type-info", "--table"][..], &["--table"][..], &["-N", "-B"][..]] {
                let (ok_d, out_d, err_d) = mariadb(direct, q, extra);
                let (ok_b, out_b, err_b) = mariadb(port, q, extra);
                assert!(ok_d, "direct {q}: {err_d}");
                assert!(ok_b, "baton {q}: {err_b}");
                assert_eq!(out_b, out_d, "output differs for {q} {extra:?}");
                if extra.contains(&"--column-type-info") && q.starts_with("SELECT") {
                    assert!(out_b.contains("Field   1:") && out_b.contains("Collation:"), "no metadata for {q}: {out_b}");
                }
            }
        }
        // The data really is there, seen directly.
        let (_, out, _) = mariadb(direct, "SELECT COUNT(*) FROM cli_types", &["-N"]);
        assert_eq!(out.trim(), "3");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_errors_keep_code_and_sqlstate() {
    let baton = TestBaton::start("").await;
    let direct = cluster().port(0);
    let port = baton.port;
    tokio::task::spawn_blocking(move || {
        for q in ["SELECT * FROM no_such_table", "SELEC 1", "SELECT 1; SELECT * FROM nope; SELECT 2"] {
            let (ok_d, out_d, err_d) = mariadb(direct, q, &[]);
            let (ok_b, out_b, err_b) = mariadb(port, q, &[]);
            assert!(!ok_d && !ok_b, "{q} should fail");
            assert_eq!(out_b, out_d, "{q}");
            assert_eq!(err_b, err_d, "{q}");
        }
        let (_, _, err) = mariadb(port, "SELECT * FROM no_such_table", &[]);
        assert!(err.contains("ERROR 1146 (42S02)"), "{err}");
        // Multi-statements relay every result set.
        let (ok, out, _) = mariadb(port, "SELECT 1 AS x; SELECT 2 AS y; DO 0; SELECT 3 AS z", &["-N"]);
        assert!(ok);
        assert_eq!(out, "1\n2\n3\n");
    })
    .await
    .unwrap();
}

#[test]
fn check_config_accepts_good_and_refuses_bad() {
    let dir = tempfile::tempdir().unwrap();
    // The example config, its secret files (under /etc/baton there) made here.
    let example = std::fs::read_to_string(repo_root().join("configs/baton.toml")).unwrap();
    let secrets = dir.path().display().to_string();
    for f in ["admin-password", "repl-password"] {
        std::fs::write(dir.path().join(f), "secret\n").unwrap();
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, example.replace("/etc/baton", &secrets)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton")).arg("--check-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A secret file it cannot read is an error, not an empty password.
    std::fs::remove_file(dir.path().join("repl-password")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton")).arg("--check-config").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("repl-password"), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"not an address\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton")).arg("--check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen") && err.contains("not an IP:port"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_baton")).arg("--check-config").arg(dir.path().join("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[tokio::test(flavor = "multi_thread")]
async fn load_data_local_infile_is_relayed() {
    let baton = TestBaton::start("").await;
    let port = baton.port;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.tsv");
    let rows: String = (1..=500).map(|i| format!("{i}\trow {i}\n")).collect();
    std::fs::write(&file, rows).unwrap();
    tokio::task::spawn_blocking(move || {
        let sql = format!(
            "DROP TABLE IF EXISTS infile_t; CREATE TABLE infile_t (id INT PRIMARY KEY, v VARCHAR(20));
             LOAD DATA LOCAL INFILE '{}' INTO TABLE infile_t; SELECT COUNT(*), SUM(id) FROM infile_t",
            file.display()
        );
        let (ok, out, err) = mariadb(port, &sql, &["--local-infile=1", "-N"]);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "500\t125250");
    })
    .await
    .unwrap();
}
