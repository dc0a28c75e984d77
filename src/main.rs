use std::{future::IntoFuture, path::PathBuf, process::ExitCode};

use artifactapi::{app, config, settings::Settings};
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A caching proxy for build artifacts: release files, package repositories
/// and container registries, served from its own store on every repeat.
#[derive(Parser)]
#[command(name = "artifactapi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default). Configured by CONFIG_PATH, LISTEN_ADDR, DATA_DIR and friends.
    Serve,
    /// Validate a remotes.yaml and exit non-zero if it has errors.
    CheckConfig {
        /// The file to check (default: CONFIG_PATH, or ./remotes.yaml).
        file: Option<PathBuf>,
    },
    /// Pre-fetch a list of paths (one a line) through a running instance.
    Warm {
        /// The instance's URL, e.g. https://artifacts.example.com
        #[arg(long)]
        url: String,
        /// The remote the paths belong to.
        #[arg(long)]
        remote: String,
        /// The instance's ADMIN_TOKEN, when it has one.
        #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file of paths, or - for standard input.
        file: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("artifactapi: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Warm { url, remote, token, file }) = cli.command {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let warm = artifactapi::warm::Warm { url, remote, token, input: file };
        return runtime.block_on(warm.run());
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig { file } => check_config(&file.unwrap_or(settings.config_path)),
        Command::Warm { .. } => unreachable!("handled above"),
        Command::Serve => {
            let telemetry = artifactapi::telemetry::Telemetry::init();
            let runtime =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            let code = runtime.block_on(serve(settings));
            // Transfers cut at the deadline may still hold tasks: do not wait for them.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            telemetry.shutdown();
            code
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok, {} remotes", path.display(), config.remotes.iter().count());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    // What is loaded now is what a later change is compared with.
    let loaded = std::fs::read(&settings.config_path).ok();
    let config = match config::load(&settings.config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{}: {e}", settings.config_path.display());
            return ExitCode::from(2);
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if settings.admin_token.is_none() {
        tracing::warn!("ADMIN_TOKEN is not set: uploads, deletions, warming and flushing are open to anyone who can reach this port");
    }
    let app = match app::build(&settings, &config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    watch_config(settings.config_path.clone(), loaded, app.reload.clone(), settings.config_watch);
    let listener = match tokio::net::TcpListener::bind(settings.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", settings.listen_addr);
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        remotes = config.remotes.iter().count(),
        data_dir = %settings.data_dir.display(),
        "artifactapi listening"
    );

    // On SIGTERM/SIGINT: stop accepting, let transfers in flight finish
    // within the deadline, then exit; whatever is unfinished then was never
    // committed (spool files are removed at the next start).
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // No Nagle: an answer goes out as head and body writes, and a client that
    // delays its ACK would otherwise hold the body back ~40 ms (measured: 41
    // requests/s on one keep-alive connection for a 4 KiB hit, 40× fewer than
    // with it off).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // The server runs the router, inside the access log's middleware when
    // the log is on (two service types, hence the macro).
    macro_rules! spawn_server {
        ($service:expr) => {
            tokio::spawn(
                axum::serve(
                    listener,
                    axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                        std::net::SocketAddr,
                    >($service),
                )
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                })
                .into_future(),
            )
        };
    }
    let server = match app.access {
        Some(log) => spawn_server!(tower::Layer::layer(&log, app.router.clone())),
        None => spawn_server!(app.router.clone()),
    };
    tokio::pin!(server);
    tokio::select! {
        finished = &mut server => return server_ended(finished),
        () = shutdown_signal() => {}
    }
    app.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    tracing::info!(
        deadline_s = settings.shutdown_timeout.as_secs_f64(),
        "shutting down: finishing in-flight requests"
    );
    let ended = match tokio::time::timeout(settings.shutdown_timeout, &mut server).await {
        Ok(finished) => server_ended(finished),
        Err(_) => {
            tracing::warn!(
                "transfers still in flight at the shutdown deadline were cut off; nothing partial is cached"
            );
            ExitCode::SUCCESS
        }
    };
    if let Some(log) = &app.access {
        log.flush();
    }
    ended
}

fn server_ended(finished: Result<std::io::Result<()>, tokio::task::JoinError>) -> ExitCode {
    match finished {
        Ok(Ok(())) => {
            tracing::info!("artifactapi stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!("server failed: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("server task failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reloads `remotes.yaml` on SIGHUP, and when its content changes (checked
/// every `interval`; ConfigMap updates send no signal). A file that does not
/// load is logged and the configuration in force stays.
fn watch_config(
    path: PathBuf,
    loaded: Option<Vec<u8>>,
    reload: app::Reload,
    interval: Option<std::time::Duration>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the caller announces it listens: a SIGHUP sent from
    // then on is never lost.
    let mut hangup = signal(SignalKind::hangup()).ok();
    tokio::spawn(async move {
        let mut last = loaded;
        loop {
            let signalled = tokio::select! {
                () = async {
                    match &mut hangup {
                        Some(s) => { s.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => true,
                () = async {
                    match interval {
                        Some(every) => tokio::time::sleep(every).await,
                        None => std::future::pending::<()>().await,
                    }
                } => false,
            };
            let current = std::fs::read(&path).ok();
            if !signalled && current == last {
                continue;
            }
            last = current;
            match config::load(&path) {
                Ok(config) => {
                    for w in &config.warnings {
                        tracing::warn!("{w}");
                    }
                    reload.apply(&config);
                    tracing::info!(path = %path.display(), remotes = config.remotes.iter().count(), signalled, "configuration reloaded");
                }
                Err(e) => tracing::error!(
                    path = %path.display(),
                    "configuration not reloaded; the one in force stays: {}",
                    e.to_string().trim_end()
                ),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
