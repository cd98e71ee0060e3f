//! `baton-stack`: bring up real MariaDB clusters on loopback.
//!
//! - `baton-stack cluster --info FILE [--dir DIR]`: a 3-node cluster for the tests;
//!   writes its description to FILE, runs until SIGTERM/SIGINT, then tears down.
//! - `baton-stack up --baton PATH [--dir DIR] [--etcd]`: the local stack: the
//!   cluster plus baton in front of it on the file topology store, until Ctrl-C;
//!   with `--etcd`, an etcd and two batons sharing it (the second on ports + 10).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use baton_testkit::{Cluster, Etcd, APP_PASSWORD, APP_USER};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton-stack")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A cluster for the test suite.
    Cluster {
        #[arg(long)]
        info: PathBuf,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// The local stack: 3 MariaDB + baton.
    Up {
        #[arg(long)]
        baton: PathBuf,
        #[arg(long, default_value = "var/stack")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:6033")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:6034")]
        admin_listen: String,
        /// Start etcd and two batons on it instead of one on the file store.
        #[arg(long)]
        etcd: bool,
    },
}

fn wait_for_signal() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    });
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Cluster { info, dir, nodes } => {
            let cluster = Cluster::start(nodes, dir)?;
            cluster.write_info(&info)?;
            eprintln!("baton-stack: cluster up: {:?}", cluster.info.servers);
            wait_for_signal();
            drop(cluster);
            Ok(())
        }
        Cmd::Up { baton, dir, listen, admin_listen, etcd } => {
            std::fs::create_dir_all(&dir)?;
            let dir = dir.canonicalize()?;
            // The data dirs live under /tmp: mariadbd runs as user mysql, which must be able
            // to reach them, and the checkout may sit under a private home directory.
            let cluster = Cluster::start(3, Some(PathBuf::from("/tmp/baton-stack/cluster")))?;
            let servers = cluster.info.servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
            let etcd = if etcd {
                let _ = std::fs::remove_dir_all("/tmp/baton-stack/etcd");
                Some(Etcd::start(std::path::Path::new("/tmp/baton-stack/etcd"))?)
            } else {
                None
            };
            let topology = match &etcd {
                Some(e) => format!("[topology]\nstore = \"etcd\"\nendpoints = [{:?}]\nprefix = \"/baton\"\n", e.endpoint),
                None => format!("[topology]\nstore = \"file\"\npath = {:?}\n", dir.join("topology.json").display().to_string()),
            };
            // The admin port's token: a file only root reads, given to baton in its
            // environment (never in the config), printed with how `baton ctl` uses it.
            let token_path = dir.join("admin-token");
            let token = stack_token();
            std::fs::write(&token_path, format!("{token}\n"))?;
            std::fs::set_permissions(&token_path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            std::fs::write(dir.join("admin-password"), "admin\n")?;
            std::fs::write(dir.join("repl-password"), "repl\n")?;
            let _ = std::fs::remove_file(dir.join("topology.json"));
            let shift = |addr: &str, by: u16| -> String {
                let (h, p) = addr.rsplit_once(':').unwrap_or(("127.0.0.1", "0"));
                format!("{h}:{}", p.parse::<u16>().unwrap_or(0) + by)
            };
            let mut children = Vec::new();
            for i in 0..if etcd.is_some() { 2 } else { 1 } {
                let (listen, admin_listen) = (shift(&listen, 10 * i), shift(&admin_listen, 10 * i));
                let config = format!(
                    "# Written by baton-stack up.\n[server]\nlisten = {listen:?}\nadmin_listen = {admin_listen:?}\n\n{topology}\n\
                     [[users]]\nname = \"{APP_USER}\"\npassword_hash = {hash:?}\n\n\
                     [[clusters]]\nname = \"main\"\nservers = [{servers}]\nprimary = {primary:?}\n\
                     admin_user = \"admin\"\nadmin_password_file = {pwfile:?}\nrepl_user = \"repl\"\nrepl_password_file = {replfile:?}\ndurability = \"semi_sync\"\n",
                    hash = baton_password_hash(APP_PASSWORD),
                    primary = cluster.info.primary,
                    pwfile = dir.join("admin-password").display().to_string(),
                    replfile = dir.join("repl-password").display().to_string(),
                );
                let cfg_path = dir.join(if i == 0 { "baton.toml".to_string() } else { format!("baton{}.toml", i + 1) });
                std::fs::write(&cfg_path, config)?;
                let child = Command::new(&baton)
                    .arg("--config")
                    .arg(&cfg_path)
                    .env("BATON_ADMIN_TOKEN", &token)
                    .stdin(Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting {}", baton.display()))?;
                children.push(child);
                println!(
                    "baton-stack: baton {} up.\n  config: {}\n  connect: mariadb -h127.0.0.1 -P{} -u{APP_USER} -p{APP_PASSWORD}\n  health: curl http://{admin_listen}/healthz",
                    i + 1,
                    cfg_path.display(),
                    listen.rsplit(':').next().unwrap_or("6033"),
                );
            }
            if let Some(e) = &etcd {
                println!("baton-stack: etcd at {}", e.endpoint);
            }
            println!(
                "baton-stack: admin token in {tp} (mode 600). For baton ctl:\n  export BATON_ADMIN_TOKEN=$(cat {tp})\n  target/release/baton ctl status",
                tp = token_path.display()
            );
            println!("baton-stack: MariaDB: {servers}. Ctrl-C to stop.");
            wait_for_signal();
            for child in &mut children {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            }
            for mut child in children {
                let _ = child.wait();
            }
            drop(etcd);
            drop(cluster);
            Ok(())
        }
    }
}

/// MySQL's `*` + hex SHA1(SHA1(pw)), the form `[[users]] password_hash` takes.
fn baton_password_hash(pw: &str) -> String {
    use sha1::{Digest, Sha1};
    let stage1: [u8; 20] = Sha1::digest(pw.as_bytes()).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    std::iter::once("*".to_string()).chain(stage2.iter().map(|b| format!("{b:02X}"))).collect()
}

/// 32 hex characters from the kernel's random source.
fn stack_token() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
