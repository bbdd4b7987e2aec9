//! The `tollgate` binary: a thin CLI over the library (docs/cli.md).

#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, through tollgate's shim (src/allocator.rs): measured faster
/// than the system allocator for Pingora's per-request allocations
/// (docs/performance-history.md).
#[global_allocator]
static GLOBAL: tollgate::allocator::Allocator = tollgate::allocator::Allocator;

use tollgate::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Reverse-proxy gateway: per-IP rate limits, canonical errors, metrics"
)]
struct Cli {
    /// The TOML config file.
    #[arg(long, global = true, default_value = "config/tollgate.toml")]
    config: PathBuf,
    /// Take the listeners over from a running tollgate (then send it SIGQUIT).
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config file and exit 0 (valid) or 1.
    Check,
    /// Validate the config file, then ask the running tollgate (at the
    /// file's admin_listen) to reload it; exit 0 when it took the file, 1
    /// when the file is bad or the process refused it.
    Reload,
    /// Run the demo upstream that answers in several error dialects.
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => match check(&cli.config) {
            Ok(_) => {
                println!("{}: ok", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Reload) => {
            // The same checks as `check` (the TLS pair included) first.
            let admin = match check(&cli.config) {
                Ok(cfg) => cfg.server.admin_listen,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match tollgate::proxy::admin::request_reload(admin) {
                Ok(answer) if answer.accepted => {
                    println!("{}", answer.body);
                    ExitCode::SUCCESS
                }
                Ok(answer) => {
                    eprintln!("{}", answer.body);
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("cannot reach the admin listener at {admin}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::DemoUpstream { listen }) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(tollgate::demo_upstream::serve(listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo upstream on {listen}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let cfg = match Config::load(&cli.config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            tollgate::observe::access_log::init();
            let launch = tollgate::proxy::Launch {
                config_path: cli.config,
                upgrade: cli.upgrade,
            };
            let e = tollgate::proxy::run(launch, cfg);
            eprintln!("tollgate could not start: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tollgate check`: the file, and the TLS pair it names (the pair is
/// checked where it is loaded, at start and on reload).
fn check(path: &std::path::Path) -> Result<Config, String> {
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    if let Some(t) = &cfg.server.tls {
        tollgate::proxy::tls::load_pair(&t.cert_file, &t.key_file).map_err(|e| e.to_string())?;
    }
    Ok(cfg)
}
