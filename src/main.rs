use std::{future::IntoFuture, path::PathBuf, process::ExitCode};

use artifactapi::{app, config, settings::Settings};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

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
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
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
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig { file } => check_config(&file.unwrap_or(settings.config_path)),
        Command::Serve => {
            init_logging();
            let runtime =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(serve(settings))
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
    watch_config(settings.config_path.clone(), app.reload.clone(), settings.config_watch);

    // On SIGTERM/SIGINT: stop accepting, let transfers in flight finish
    // within the deadline, then exit; whatever is unfinished then was never
    // committed (spool files are removed at the next start).
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(
        axum::serve(listener, app.router)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
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
    match tokio::time::timeout(settings.shutdown_timeout, &mut server).await {
        Ok(finished) => server_ended(finished),
        Err(_) => {
            tracing::warn!(
                "transfers still in flight at the shutdown deadline were cut off; nothing partial is cached"
            );
            ExitCode::SUCCESS
        }
    }
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
fn watch_config(path: PathBuf, reload: app::Reload, interval: Option<std::time::Duration>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut last = std::fs::read(&path).ok();
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
