//! The `baton` command line: run the proxy, check a config file, or `baton ctl`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton", version, about = "A MySQL-protocol proxy that holds writes through a primary change")]
struct Cli {
    /// Run the proxy with this config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate this config file and exit (non-zero with the reason if it is bad).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// With --check-config: also log in to every server with the admin and the
    /// replication account, and say what fails.
    #[arg(long, requires = "check_config")]
    probe: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive and watch a running baton through its admin port.
    Ctl(baton::ctl::CtlArgs),
}

/// glibc's mmap threshold, fixed (bytes). By default it rises to the size of the
/// largest block freed, after which large packet buffers come from the malloc
/// arenas and stay resident when freed; fixed, each is its own mapping, returned
/// to the system when a session's buffers shrink (`tests/memory.rs`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
    let cli = Cli::parse();
    if let Some(Cmd::Ctl(args)) = cli.cmd {
        return ExitCode::from(baton::ctl::run(args) as u8);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = cli.check_config {
        let checked = baton_control::Config::load(&path).map_err(|e| e.to_string()).and_then(|c| baton_proxy::ProxyContext::check(&c).map(|()| c));
        if let (Ok(config), true) = (&checked, cli.probe) {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return ExitCode::from(2) };
            let results = rt.block_on(baton::probe(config));
            let mut failed = false;
            for (what, r) in results {
                match r {
                    Ok(()) => println!("{what}: ok"),
                    Err(why) => {
                        failed = true;
                        println!("{what}: FAILED: {why}");
                    }
                }
            }
            if failed {
                eprintln!("baton: {}: a login failed (above)", path.display());
                return ExitCode::from(2);
            }
        }
        return match checked.map(|_| ()) {
            Ok(()) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("baton: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(path) = cli.config else {
        eprintln!("baton: give --config FILE to run, or --check-config FILE to validate (see --help)");
        return ExitCode::from(2);
    };
    let config = match baton_control::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton: {e}");
            return ExitCode::from(2);
        }
    };
    // The control plane, the admin port and the accept loop; sessions get their own
    // threads (`server.worker_threads`).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let running = match baton::start_with_path(config, Some(path)).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("baton: {e:#}");
                return ExitCode::from(1);
            }
        };
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let grace = loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining sessions"); break None }
                _ = int.recv() => { tracing::info!("SIGINT: closing now"); break Some(Duration::ZERO) }
                _ = hup.recv() => match running.reloader.reload() {
                    Ok(s) => tracing::info!("SIGHUP: {s}"),
                    Err(e) => tracing::error!("SIGHUP: config refused: {e}"),
                },
            }
        };
        running.shutdown(grace).await;
        ExitCode::SUCCESS
    })
}
