//! `baton ctl`: drive and watch baton through its admin port.
//!
//! `baton ctl [--admin ADDR] [--token T] [--json] status | conditions CLUSTER |
//! reparent CLUSTER [--to HOST:PORT] | failover CLUSTER | cancel CLUSTER | reload | topology`
//!
//! Exit codes: 0 done; 1 the operation ran and failed (reparent undone or held,
//! not ready); 2 the request was refused as invalid (400, 404, 409, 422, 501);
//! 3 the admin port cannot be reached; 4 authentication (401, 403); 5 stopped
//! watching (Ctrl-C, lost connection) while the reparent or failover runs on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Admin address of the baton to talk to.
    #[arg(long, default_value = "127.0.0.1:6034")]
    pub admin: String,
    /// Bearer token (default: the BATON_ADMIN_TOKEN environment variable).
    #[arg(long)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CtlCmd {
    /// Every cluster: primary, term, buffer, conditions, servers.
    Status,
    /// The leadership conditions of one cluster.
    Conditions { cluster: String },
    /// A planned reparent; prints each step as it completes.
    Reparent {
        cluster: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// An emergency failover; prints each step as it completes.
    Failover { cluster: String },
    /// Cancel the reparent or failover in progress (it undoes at its next step;
    /// refused once the new primary is published).
    Cancel { cluster: String },
    /// Re-read and apply baton's config file.
    Reload,
    /// The topology store: on etcd, degraded or not, the orchestrator, the live proxies.
    Topology,
}

struct Reply {
    status: u16,
    body: Value,
}

fn request(admin: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> Result<Reply, String> {
    let mut s = TcpStream::connect(admin).map_err(|e| format!("cannot reach baton's admin port {admin}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("malformed HTTP answer")?;
    let raw = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let body = serde_json::from_str(raw).unwrap_or(Value::String(raw.to_string()));
    Ok(Reply { status, body })
}

fn exit_for(status: u16) -> i32 {
    match status {
        200..=299 => 0,
        401 | 403 => 4,
        500 | 503 => 1,
        _ => 2,
    }
}

fn print_error(r: &Reply) {
    eprintln!(
        "baton ctl: {} ({}): {}",
        r.body["error"].as_str().unwrap_or("error"),
        r.status,
        r.body["detail"].as_str().unwrap_or(&r.body.to_string())
    );
}

fn print_conditions(c: &Value) {
    let conds = c["conditions"]["conditions"].as_array().cloned().unwrap_or_default();
    if conds.is_empty() {
        println!("  conditions: not evaluated (no buffering episode yet)");
    }
    for x in conds {
        let mark = if x["holds"].as_bool() == Some(true) { "holds" } else { "FALSE" };
        println!(
            "  {:<3} {:<10} {:<6} {}",
            x["id"].as_str().unwrap_or(""),
            x["name"].as_str().unwrap_or(""),
            mark,
            x["reason"].as_str().unwrap_or("")
        );
    }
}

fn print_cluster(c: &Value) {
    let b = &c["buffer"];
    println!(
        "cluster {}  primary {}  term {}  buffer {} ({} queued, {} active)",
        c["name"].as_str().unwrap_or("?"),
        c["primary"].as_str().unwrap_or("?"),
        c["term"],
        b["phase"].as_str().unwrap_or("?"),
        b["queued"],
        b["active"]
    );
    if b["phase"] != "idle" {
        println!("  buffering because: {}", b["reason"].as_str().unwrap_or(""));
    }
    if let Some(why) = b["no_primary"].as_str() {
        println!("  NO PRIMARY (requests fail at once with 9109): {why}");
    }
    println!("  {:<22} {:<8} {:<9} {:<9} {:<22} {:<22} lag", "server", "role", "reachable", "read_only", "gtid", "replicates from");
    for s in c["servers"].as_array().into_iter().flatten() {
        let r = &s["replication"];
        println!(
            "  {:<22} {:<8} {:<9} {:<9} {:<22} {:<22} {}",
            s["addr"].as_str().unwrap_or(""),
            s["role"].as_str().unwrap_or(""),
            if s["reachable"] == true { "yes" } else { "NO" },
            match s["read_only"].as_bool() {
                Some(true) => "ON",
                Some(false) => "OFF",
                None => "",
            },
            s["gtid_position"].as_str().unwrap_or(""),
            r["source"].as_str().unwrap_or(""),
            r["lag_seconds"].as_u64().map(|l| format!("{l} s")).unwrap_or_default(),
        );
    }
    for e in c["health"]["errant"].as_array().into_iter().flatten() {
        println!("  ERRANT (kept out of rejoin and elections; README \"Errant servers\"): {}", e.as_str().unwrap_or(""));
    }
    for e in c["last_reparent"]["not_following"].as_array().into_iter().flatten() {
        println!("  NOT FOLLOWING the primary since the last reparent: {}", e.as_str().unwrap_or(""));
    }
    let r = &c["replay"];
    if r["started"].as_u64().unwrap_or(0) > 0 || r["failed"].as_object().is_some_and(|f| f.values().any(|n| n.as_u64() != Some(0))) {
        let failed: Vec<String> = r["failed"].as_object().into_iter().flatten().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  transaction replay: {} started, {} succeeded; failed: {}", r["started"], r["succeeded"], failed.join(", "));
    }
    print_conditions(c);
}

/// Run a ctl command; returns the process exit code.
pub fn run(args: CtlArgs) -> i32 {
    let token = args.token.clone().or_else(|| std::env::var("BATON_ADMIN_TOKEN").ok());
    let token = token.as_deref();
    let reply = |r: Result<Reply, String>| match r {
        Ok(r) => Ok(r),
        Err(e) => {
            eprintln!("baton ctl: {e}");
            Err(3)
        }
    };
    match args.cmd.clone() {
        CtlCmd::Topology => {
            let r = match reply(request(&args.admin, "GET", "/api/v1/topology", token, "")) {
                Ok(r) => r,
                Err(c) => return c,
            };
            if r.status != 200 {
                print_error(&r);
                return exit_for(r.status);
            }
            let b = &r.body;
            if args.json {
                println!("{}", serde_json::to_string_pretty(b).unwrap_or_default());
                return 0;
            }
            let health = match b["degraded"].as_str() {
                Some(why) => format!("DEGRADED (serving with the last known topology; reparents refused): {why}"),
                None => "ok".to_string(),
            };
            println!("store {}: {health}", b["store"].as_str().unwrap_or("?"));
            if let Some(id) = b["id"].as_str() {
                let o = &b["orchestrator"];
                let mine = if b["is_orchestrator"] == true { " (this proxy)" } else { "" };
                println!("this proxy: {id}");
                println!("orchestrator: {} at {}{mine}", o["id"].as_str().unwrap_or("none"), o["admin"].as_str().unwrap_or("-"));
                for m in b["members"].as_array().into_iter().flatten() {
                    println!("  proxy {} admin {}", m["id"].as_str().unwrap_or("?"), m["admin"].as_str().unwrap_or("?"));
                }
            }
            for (name, rec) in b["clusters"].as_object().into_iter().flatten() {
                println!("cluster {name}: primary {} term {}", rec["primary"].as_str().unwrap_or("?"), rec["term"]);
            }
            if b["degraded"].is_string() {
                1
            } else {
                0
            }
        }
        CtlCmd::Status => {
            let r = match reply(request(&args.admin, "GET", "/api/v1/clusters", token, "")) {
                Ok(r) => r,
                Err(c) => return c,
            };
            if r.status != 200 {
                print_error(&r);
                return exit_for(r.status);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r.body).unwrap_or_default());
            } else {
                for c in r.body["clusters"].as_array().into_iter().flatten() {
                    print_cluster(c);
                }
            }
            0
        }
        CtlCmd::Conditions { cluster } => {
            let r = match reply(request(&args.admin, "GET", &format!("/api/v1/clusters/{cluster}"), token, "")) {
                Ok(r) => r,
                Err(c) => return c,
            };
            if r.status != 200 {
                print_error(&r);
                return exit_for(r.status);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r.body["conditions"]).unwrap_or_default());
            } else {
                println!("cluster {cluster}: buffer {}", r.body["buffer"]["phase"].as_str().unwrap_or("?"));
                print_conditions(&r.body);
            }
            0
        }
        CtlCmd::Reparent { cluster, to } => {
            let body = to.map(|t| serde_json::json!({"to": t}).to_string()).unwrap_or_default();
            watch_procedure(&args, token, "reparent", &cluster, &body)
        }
        CtlCmd::Failover { cluster } => watch_procedure(&args, token, "failover", &cluster, ""),
        CtlCmd::Cancel { cluster } => {
            let r = match reply(request(&args.admin, "POST", &format!("/api/v1/clusters/{cluster}/cancel"), token, "")) {
                Ok(r) => r,
                Err(c) => return c,
            };
            if r.status != 202 {
                print_error(&r);
            } else {
                println!("cancel requested: the procedure undoes at its next step; follow it with `baton ctl status`");
            }
            exit_for(r.status)
        }
        CtlCmd::Reload => {
            let r = match reply(request(&args.admin, "POST", "/api/v1/config/reload", token, "")) {
                Ok(r) => r,
                Err(c) => return c,
            };
            if r.status != 200 {
                print_error(&r);
            } else if args.json {
                println!("{}", r.body);
            } else {
                println!("{}", r.body["detail"].as_str().unwrap_or("reloaded"));
            }
            exit_for(r.status)
        }
    }
}

/// Set by SIGINT while a procedure is watched: the procedure goes on in baton.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Start a reparent or failover (`POST /api/v1/clusters/{cluster}/{kind}`) and
/// print each step as it completes. The procedure is baton's own task: Ctrl-C
/// or a lost connection only stops watching, and says so ("still running",
/// how to follow and how to cancel it; exit code 5).
fn watch_procedure(args: &CtlArgs, token: Option<&str>, kind: &str, cluster: &str, body: &str) -> i32 {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let (admin, path, tok, body) = (args.admin.clone(), format!("/api/v1/clusters/{cluster}/{kind}"), token.map(str::to_string), body.to_string());
    let worker = std::thread::spawn(move || request(&admin, "POST", &path, tok.as_deref(), &body));
    let mut shown = 0usize;
    let show = |steps: &[Value], shown: &mut usize| {
        for s in steps.iter().skip(*shown) {
            println!("  {:<11} {:>6} ms  {}", s["step"].as_str().unwrap_or(""), s["ms"], s["detail"].as_str().unwrap_or(""));
        }
        *shown = steps.len().max(*shown);
    };
    let still_running = || {
        eprintln!(
            "baton ctl: stopped watching; the {kind} of {cluster} is still running as baton's own task.\n  follow it: baton ctl status (or GET /api/v1/clusters/{cluster}, field last_reparent)\n  cancel it: baton ctl cancel {cluster} (undoes it if it has not published the new primary yet)"
        );
        5
    };
    if !args.json {
        println!("{kind} of {cluster}:");
    }
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(150));
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            return still_running();
        }
        if args.json {
            continue;
        }
        if let Ok(r) = request(&args.admin, "GET", &format!("/api/v1/clusters/{cluster}"), token, "") {
            let lr = &r.body["last_reparent"];
            if lr["outcome"] == "running" {
                show(lr["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]), &mut shown);
            }
        }
    }
    let r = match worker.join().unwrap_or_else(|_| Err("request thread failed".into())) {
        Ok(r) => r,
        Err(e) => {
            // The request failed (connection lost, timeout): the procedure may run on.
            eprintln!("baton ctl: {e}");
            let running = request(&args.admin, "GET", &format!("/api/v1/clusters/{cluster}"), token, "")
                .is_ok_and(|r| r.body["last_reparent"]["outcome"] == "running");
            return if running { still_running() } else { 3 };
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r.body).unwrap_or_default());
        return exit_for(r.status);
    }
    if r.body.get("steps").is_none() {
        print_error(&r);
        return exit_for(r.status);
    }
    show(r.body["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]), &mut shown);
    println!(
        "outcome: {} ({} -> {}, term {}, {} ms, {} request(s) held){}",
        r.body["outcome"].as_str().unwrap_or("?"),
        r.body["from"].as_str().unwrap_or("?"),
        r.body["to"].as_str().unwrap_or("?"),
        r.body["term"],
        r.body["total_ms"],
        r.body["buffered"],
        r.body["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default()
    );
    exit_for(r.status)
}
