use std::{path::PathBuf, process::ExitCode};

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
    if let Err(e) =
        axum::serve(listener, app.router).with_graceful_shutdown(shutdown_signal(app.draining)).await
    {
        tracing::error!("server failed: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("artifactapi stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal(draining: std::sync::Arc<std::sync::atomic::AtomicBool>) {
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
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down: finishing in-flight requests");
}
