//! The Rust driver program of the client matrix (tests/clients/run.py speaks to it;
//! protocol at the top of run.py): mysql_async with its defaults (multi-statements
//! on), `exec_iter` (server-side prepared statements), its `Pool` (which resets a
//! connection handed back), `Conn::reset` (COM_RESET_CONNECTION), and
//! `tokio::time::timeout` as its only cancel (the connection is dropped).
//! Built as the cargo example `client_rust` (`cargo build --all-targets` builds it).

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, TxOpts, Value};
use serde_json::{json, Value as Json};
use tokio::io::AsyncBufReadExt;

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

fn name() -> String {
    std::env::var("CL_NAME").unwrap_or_else(|_| "mysqlasync".to_string())
}

fn out(v: Json) {
    println!("{v}");
}

fn opts(target: &str, pool_max: usize) -> Opts {
    let port = env(if target == "direct" { "CL_DIRECT_PORT" } else { "CL_BATON_PORT" });
    let constraints = PoolConstraints::new(1, pool_max).expect("pool constraints");
    OptsBuilder::default()
        .ip_or_hostname(env("CL_HOST"))
        .tcp_port(port.parse().expect("port"))
        .user(Some(env("CL_USER")))
        .pass(Some(env("CL_PASSWORD")))
        .db_name(Some(env("CL_DB")))
        .prefer_socket(false)
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .into()
}

fn value(v: &Value) -> Json {
    match v {
        Value::NULL => Json::Null,
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Json::from(s),
            Err(_) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let hex: String = b.iter().flat_map(|x| [HEX[usize::from(x >> 4)] as char, HEX[usize::from(x & 15)] as char]).collect();
                Json::from(format!("0x{hex}"))
            }
        },
        other => Json::from(other.as_sql(true)),
    }
}

fn error(e: &mysql_async::Error) -> Json {
    match e {
        mysql_async::Error::Server(s) => json!({"error": s.code, "state": s.state, "msg": s.message}),
        other => json!({"error": 0, "msg": other.to_string()}),
    }
}

fn code(e: &mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        _ => 0,
    }
}

fn param(p: &str) -> Value {
    let (kind, v) = p.split_at(2);
    match kind {
        "i:" => Value::Int(v.parse().unwrap_or_default()),
        "d:" => Value::Double(v.parse().unwrap_or_default()),
        "s:" => Value::Bytes(v.as_bytes().to_vec()),
        "b:" => Value::Bytes((0..v.len()).step_by(2).map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap_or_default()).collect()),
        _ => Value::NULL,
    }
}

/// Every result set of a query: `{cols, rows}`, or `{affected}` for one without columns.
async fn results<P: mysql_async::prelude::Protocol>(mut r: mysql_async::QueryResult<'_, 'static, P>) -> mysql_async::Result<Json> {
    let mut all = Vec::new();
    loop {
        let cols: Vec<String> = r.columns_ref().iter().map(|c| format!("{} {:?}", c.name_str(), c.column_type())).collect();
        let rows: Vec<mysql_async::Row> = r.collect().await?;
        if cols.is_empty() {
            all.push(json!({"affected": r.affected_rows()}));
        } else {
            let rows: Vec<Json> = rows.into_iter().map(|row| Json::from(row.unwrap().iter().map(value).collect::<Vec<_>>())).collect();
            all.push(json!({"cols": cols, "rows": rows}));
        }
        if r.is_empty() {
            return Ok(Json::from(all));
        }
    }
}

async fn run_case(c: &mut Conn, mode: &str, sql: &str, params: Vec<Value>) -> mysql_async::Result<Json> {
    if mode == "prep" {
        let r = c.exec_iter(sql, Params::from(params)).await?;
        results(r).await
    } else {
        let r = c.query_iter(sql).await?;
        results(r).await
    }
}

async fn check(target: &str) -> mysql_async::Result<()> {
    let mut c = Conn::new(opts(target, 2)).await?;
    let cases = std::fs::read_to_string(env("CL_CASES")).unwrap_or_default();
    for line in cases.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let sql = f[2].replace("{t}", &format!("cl_{}", name()));
        let params = f[3..].iter().map(|&p| param(p)).collect();
        match run_case(&mut c, f[1], &sql, params).await {
            Ok(v) => out(json!({"case": f[0], "out": v})),
            Err(e) => {
                out(json!({"case": f[0], "out": error(&e)}));
                if code(&e) == 0 {
                    c = Conn::new(opts(target, 2)).await?;
                }
            }
        }
    }
    let t = format!("cl_{}_types", name());
    // exec_batch: one prepare, an execute per row.
    c.exec_batch(format!("INSERT INTO {t} (id, s) VALUES (?, ?)"), vec![(20, "a"), (21, "b"), (22, "c")]).await?;
    let batch: Vec<(i64, String)> = c.query(format!("SELECT id, s FROM {t} WHERE id >= 20 ORDER BY id")).await?;
    out(json!({"case": "batch", "out": batch}));
    let mut tx = c.start_transaction(TxOpts::default()).await?;
    tx.query_drop(format!("INSERT INTO {t} (id) VALUES (10)")).await?;
    tx.rollback().await?;
    let mut tx = c.start_transaction(TxOpts::default()).await?;
    tx.query_drop(format!("INSERT INTO {t} (id) VALUES (11)")).await?;
    tx.commit().await?;
    let ids: Vec<i64> = c.query(format!("SELECT id FROM {t} WHERE id IN (10, 11)")).await?;
    out(json!({"case": "tx", "out": ids}));
    c.ping().await?;
    c.query_drop("SET SESSION wait_timeout = 77").await?;
    let supported = c.reset().await?;
    let fresh: Option<i64> = c.query_first("SELECT @@session.wait_timeout = @@global.wait_timeout").await?;
    out(json!({"case": "reset", "out": [supported, fresh]}));
    c.disconnect().await?;
    // The pool: a connection handed back is reset before it is handed out again.
    let pool = Pool::new(opts(target, 2));
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut pc = pool.get_conn().await?;
        let row: Option<(i64, String)> = pc.query_first("SELECT @@session.wait_timeout = @@global.wait_timeout, DATABASE()").await?;
        seen.push(json!(row));
        pc.query_drop("SET SESSION wait_timeout = 55").await?;
    }
    out(json!({"case": "pool", "out": seen}));
    pool.disconnect().await
}

async fn timed(c: &mut Conn, sql: &str) -> Json {
    let t0 = Instant::now();
    let r: mysql_async::Result<Option<Value>> = c.query_first(sql).await;
    let ms = t0.elapsed().as_millis() as u64;
    match r {
        Ok(v) => json!({"value": v.as_ref().map(value), "error": null, "ms": ms}),
        Err(e) => json!({"value": null, "error": code(&e), "ms": ms}),
    }
}

async fn cancel() -> mysql_async::Result<()> {
    // KILL QUERY <the handshake's connection id> from a second connection; a bystander on a third.
    let o = opts("baton", 2);
    let (mut victim, mut by, mut killer) = (Conn::new(o.clone()).await?, Conn::new(o.clone()).await?, Conn::new(o.clone()).await?);
    let vid = victim.id();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        killer.query_drop(format!("KILL QUERY {vid}")).await
    };
    let (v, b, k) = tokio::join!(timed(&mut victim, "SELECT SLEEP(5)"), timed(&mut by, "SELECT SLEEP(2)"), kill);
    k?;
    let after: Option<Value> = victim.query_first("SELECT 1").await?;
    out(json!({"case": "kill", "out": {"victim": v, "bystander": b, "after": after.as_ref().map(value)}}));
    // tokio::time::timeout: the future (and the connection with it) is dropped.
    let pool = Pool::new(o);
    let mut pc = pool.get_conn().await?;
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(1), pc.query_drop("SELECT SLEEP(5)")).await;
    let ms = t0.elapsed().as_millis() as u64;
    drop(pc);
    let after: Option<Value> = pool.get_conn().await?.query_first("SELECT 1").await?;
    let err = if r.is_err() { Json::from("elapsed") } else { Json::Null };
    out(json!({"case": "timeout", "out": {"value": null, "error": err, "ms": ms, "after": after.as_ref().map(value)}}));
    Ok(())
}

async fn op(pool: &Pool, kind: &str, seq: i64, gtid: bool) -> mysql_async::Result<Option<String>> {
    let mut c = pool.get_conn().await?;
    let me = name();
    let ins = |s: i64| format!("INSERT INTO cl_rows (driver, seq, kind) VALUES ('{me}', {s}, '{kind}')");
    match kind {
        "text" => c.query_drop(ins(seq)).await?,
        "prep" => c.exec_drop("INSERT INTO cl_rows (driver, seq, kind) VALUES (?, ?, 'prep')", (me.clone(), seq)).await?,
        _ => {
            let mut tx = c.start_transaction(TxOpts::default()).await?;
            let r: mysql_async::Result<()> = async {
                tx.query_drop(ins(seq)).await?;
                tx.query_drop(ins(-seq)).await
            }
            .await;
            match r {
                Ok(()) => tx.commit().await?,
                Err(e) => {
                    tx.rollback().await.ok();
                    return Err(e);
                }
            }
        }
    }
    if gtid {
        return c.query_first("SELECT @@last_gtid").await;
    }
    Ok(None)
}

async fn write(pool: &Pool, stop: &str) {
    let kinds = ["text", "prep", "tx"];
    let mut seq = 0i64;
    while !std::path::Path::new(stop).exists() {
        seq += 1;
        let k = kinds[(seq % 3) as usize];
        match op(pool, k, seq, false).await {
            Ok(_) => out(json!({"ack": seq, "k": k})),
            Err(e) => {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
                out(json!({"fail": seq, "k": k, "code": code(&e), "msg": e.to_string(), "t": t}));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session left idle until the file exists (run.py makes it right after the crash), then SELECT 1.
async fn probe(path: &str) -> mysql_async::Result<()> {
    let mut c = Conn::new(opts("baton", 2)).await?;
    timed(&mut c, "SELECT 1").await;
    while !std::path::Path::new(path).exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out(json!({"probe": timed(&mut c, "SELECT 1").await}));
    Ok(())
}

/// mysql_async has no version constant: the lock file this program was built with says it.
fn version() -> String {
    let lock = include_str!("../../../Cargo.lock");
    let package = lock.split("[[package]]").find(|p| p.contains("name = \"mysql_async\"\n"));
    package.and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \""))).unwrap_or("?\"").trim_end_matches('"').to_string()
}

#[tokio::main]
async fn main() {
    out(json!({"driver": name(), "version": version()}));
    let writer = Pool::new(opts("baton", 2));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let a: Vec<&str> = line.split_whitespace().collect();
        let (cmd, arg) = (a.first().copied().unwrap_or_default(), a.get(1).copied().unwrap_or_default());
        if cmd == "quit" {
            break;
        }
        let r = match cmd {
            "check" => check(arg).await,
            "cancel" => cancel().await,
            "probe" => probe(arg).await,
            "gtid" => op(&writer, arg, 0, true).await.map(|g| out(json!({"gtid": g}))),
            "write" => {
                write(&writer, arg).await;
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            out(json!({"error": format!("{cmd}: {e}")}));
        }
        out(json!({"done": cmd}));
    }
    writer.disconnect().await.ok();
}
