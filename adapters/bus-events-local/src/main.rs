//! `bus-events-local`: run the local Bus Events API server, or mint a token
//! for it.
//!
//! The secret is read from `--secret-file` (env `BUS_EVENTS_SECRET_FILE`),
//! else from env `BUS_EVENTS_SECRET`; it is never taken as a literal flag so
//! it does not end up in shell history or `ps`. Either form may be raw text
//! or `base64:<value>`. Logs go to stderr (`RUST_LOG`, default `info`);
//! stdout carries only the listening line or the token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bus_events_local::{
    mint_token, serve_with_shutdown, MintClaims, Secret, SecretError, ServerConfig, TokenError,
    AUDIENCE,
};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

const SECRET_ENV: &str = "BUS_EVENTS_SECRET";

#[derive(Debug, Parser)]
#[command(
    name = "bus-events-local",
    version,
    about = "Local in-memory Bus Events API server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Bus Events API until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, env = "BUS_EVENTS_LISTEN", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Print a signed token for this server on stdout.
    MintToken {
        /// Identity of the token holder (`sub`).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "events:read events:write")]
        scope: String,
        /// Audience (`aud`).
        #[arg(long, default_value = AUDIENCE)]
        aud: String,
        /// Lifetime: seconds or a humantime duration such as `1h` or `30m`.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        #[command(flatten)]
        secret: SecretArgs,
    },
}

#[derive(Debug, Args)]
struct SecretArgs {
    /// File holding the HS256 secret (raw, or `base64:<value>`). Without it
    /// the secret comes from the BUS_EVENTS_SECRET environment variable.
    #[arg(long, env = "BUS_EVENTS_SECRET_FILE")]
    secret_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("no secret: set {SECRET_ENV} or pass --secret-file")]
    NoSecret,
    #[error("cannot read the secret file {path}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid secret")]
    Secret(#[from] SecretError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mint the token")]
    Token(#[from] TokenError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve { listen, secret } => {
            let config = ServerConfig::new(listen, secret.load()?);
            let shutdown = CancellationToken::new();
            let server = serve_with_shutdown(config, shutdown.clone())
                .await
                .map_err(|source| CliError::Bind {
                    addr: listen,
                    source,
                })?;
            println!(
                "bus-events-local listening on http://{}",
                server.local_addr()
            );
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
            server.shutdown().await;
            Ok(())
        }
        Command::MintToken {
            sub,
            scope,
            aud,
            ttl,
            secret,
        } => {
            let claims = MintClaims {
                sub,
                aud,
                scope,
                ttl,
            };
            println!("{}", mint_token(&secret.load()?, &claims)?);
            Ok(())
        }
    }
}

impl SecretArgs {
    fn load(&self) -> Result<Secret, CliError> {
        let text = match &self.secret_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|source| CliError::SecretFile {
                    path: path.clone(),
                    source,
                })?,
            None => std::env::var(SECRET_ENV).map_err(|_| CliError::NoSecret)?,
        };
        Ok(Secret::parse(&text)?)
    }
}

/// Seconds, or a humantime duration.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|err| err.to_string()),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(err) => tracing::warn!(error = %err, "cannot watch SIGTERM; only SIGINT stops"),
        }
    }
    if let Err(err) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %err, "cannot watch SIGINT");
        std::future::pending::<()>().await;
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_seconds_and_humantime() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
