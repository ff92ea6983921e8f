//! `leasehold-bench`: measures a Leasehold server (see `bench.rs`). It starts the
//! `leasehold` binary next to it (or `--server-bin`), or drives running servers
//! (`--url`); its Redis baseline runs as its own process, this binary's hidden
//! `baseline` command.

use clap::Parser;

mod baseline;
mod bench;
mod load;
mod servers;

#[derive(Parser)]
#[command(
    name = "leasehold-bench",
    version,
    about = "Measure a Leasehold server: throughput and latency of a scenario, against this \
             machine's HTTP ceiling and a Redis-based baseline, measured in the same run"
)]
struct Cli {
    #[command(flatten)]
    bench: bench::BenchArgs,
}

/// `leasehold-bench baseline …` (not in the help): the Redis baseline service, which the
/// bench runs as its own process.
#[derive(Parser)]
#[command(name = "leasehold-bench baseline")]
struct BaselineCli {
    #[command(flatten)]
    args: baseline::BaselineArgs,
}

/// mimalloc, as the server has: the load generator shares the cores with what it
/// measures, and spends less of them in the allocator this way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEASEHOLD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = if std::env::args().nth(1).as_deref() == Some("baseline") {
        let cli = BaselineCli::parse_from(std::env::args().skip(1));
        baseline::serve_baseline(cli.args).await
    } else {
        bench::run(Cli::parse().bench).await
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("leasehold-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
