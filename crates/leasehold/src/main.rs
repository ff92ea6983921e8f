//! `leasehold`: the server and its command line.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use leasehold_server::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "leasehold",
    version,
    about = "Self-hosted software license server and license tracker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create a workspace and its owner (password on stdin); prints an owner API token last.
    Init(InitArgs),
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Where the SQLite database and the master key file live.
    #[arg(long, env = "LEASEHOLD_DATA_DIR", default_value = "./leasehold-data")]
    data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`; SQLite in the data dir by default.
    #[arg(long, env = "LEASEHOLD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Start even if the master key differs from the one the store was written with.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LEASEHOLD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct InitArgs {
    /// The new workspace's name.
    #[arg(long)]
    workspace: String,
    /// The owner's email; the password is read from stdin.
    #[arg(long)]
    email: String,
    /// The workspace's currency (ISO 4217).
    #[arg(long, default_value = "USD")]
    currency: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// Known `LEASEHOLD_*` variables; others are warned about (a typo is silent otherwise).
const KNOWN_VARS: &[&str] = &[
    "LEASEHOLD_DATA_DIR",
    "LEASEHOLD_DATABASE_URL",
    "LEASEHOLD_LISTEN",
    "LEASEHOLD_MASTER_KEY",
    "LEASEHOLD_MASTER_KEY_FILE",
    "LEASEHOLD_LOG",
];

fn settings(args: &StoreArgs) -> anyhow::Result<Settings> {
    let master_key = match (
        std::env::var("LEASEHOLD_MASTER_KEY"),
        std::env::var("LEASEHOLD_MASTER_KEY_FILE"),
    ) {
        (Ok(key), _) => Some(key),
        (Err(_), Ok(path)) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading LEASEHOLD_MASTER_KEY_FILE {path}"))?,
        ),
        _ => None,
    };
    Ok(Settings {
        database_url: args.database_url.clone(),
        data_dir: args.data_dir.clone(),
        master_key,
        force: args.force,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEASEHOLD_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    for (name, _) in std::env::vars() {
        if name.starts_with("LEASEHOLD_") && !KNOWN_VARS.contains(&name.as_str()) {
            tracing::warn!(variable = %name, "unknown LEASEHOLD_ variable ignored");
        }
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Init(args) => init(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("leasehold: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(&args.store)?;
    let state = leasehold_server::open_state(&settings).await?;
    if state.store.workspace_count().await? == 0 {
        tracing::info!(
            "the store has no workspace yet: create one with \
             `leasehold init --workspace NAME --email YOU@EXAMPLE.COM` (password on stdin)"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, store = ?state.store.backend(), "leasehold is serving");
    leasehold_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    let settings = settings(&args.store)?;
    let state = leasehold_server::open_state(&settings).await?;
    let token = leasehold_server::create_workspace(
        &state,
        &args.workspace,
        &args.email,
        password,
        &args.currency,
    )
    .await?;
    println!(
        "Created workspace {:?} with owner {}.",
        args.workspace.trim(),
        args.email.trim()
    );
    println!("Owner API token (shown once; use it as Authorization: Bearer …):");
    println!("{token}");
    Ok(())
}
