//! The `steadfast` command-line tool. Thin: the logic lives in the library.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "steadfast",
    version,
    about = "Redis connections that survive failovers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to URL, send one PING, and print what happened.
    Ping {
        /// A redis:// URL.
        url: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ping { url } => ping(&url).await,
    }
}

async fn ping(url: &str) -> std::process::ExitCode {
    let client = match steadfast::Client::open(url) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let started = tokio::time::Instant::now();
    let reply: Result<String, _> = client.query(&redis::cmd("PING")).await;
    let code = match reply {
        Ok(reply) => {
            eprintln!("{reply} in {:?}", started.elapsed());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    };
    client.shutdown().await;
    code
}
