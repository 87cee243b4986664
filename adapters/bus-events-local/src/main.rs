//! `bus-events-local`: the development Bus Events API (`serve`) and local
//! token minting (`token issue --local`), spelled like the Bus tools.
//!
//! Secrets are never taken as literal flags, so they stay out of shell
//! history and `ps`:
//!
//! * `serve` verifies with `--jwt-secret-file` (env
//!   `BUS_API_JWT_SECRET_FILE`), else env `BUS_API_JWT_SECRET`, else the
//!   older `BUS_EVENTS_JWT_SECRET`;
//! * `token issue` signs with `--hs256-secret-file` (env
//!   `BUS_AUTH_HS256_SECRET_FILE`), else env `BUS_AUTH_HS256_SECRET`.
//!
//! Every form may be raw text or `base64:<value>`; a file's trailing newline
//! is trimmed. Logs go to stderr (`RUST_LOG`, default `info`; no colour
//! unless stderr is a terminal and `NO_COLOR` is unset); stdout carries only
//! the listening line or the token.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bus_events_local::issue::{issue, Format, IssueError};
use bus_events_local::{
    serve_with_shutdown, MintClaims, Secret, SecretError, ServerConfig, AUDIENCE,
};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// The only events backend of the development server.
const MEMORY_BACKEND: &str = "memory";

#[derive(Debug, Parser)]
#[command(
    name = "bus-events-local",
    version,
    about = "Development Bus Events API server and local token minting"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Bus Events API until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Exit 0 when the server at --addr answers `GET /healthz` with 200
    /// (for container healthchecks: the image has no curl).
    Health {
        /// Address of the server.
        #[arg(long, env = "BUS_EVENTS_ADDR", default_value = "127.0.0.1:8081")]
        addr: SocketAddr,
    },
    /// Tokens for this server (and any Bus API sharing its secret).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(
        long,
        alias = "listen",
        env = "BUS_EVENTS_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    addr: SocketAddr,
    /// Events backend; the development server only has `memory`.
    #[arg(long, env = "BUS_EVENTS_BACKEND", default_value = MEMORY_BACKEND)]
    events_backend: String,
    /// Bytes of event history kept in memory across all names.
    #[arg(long, env = "BUS_EVENTS_MEMORY_MAX_BYTES", default_value_t = bus_events_local::DEFAULT_HISTORY_BYTES)]
    memory_max_bytes: usize,
    /// File holding the HS256 secret tokens are verified with (raw, or
    /// `base64:<value>`). Without it: env BUS_API_JWT_SECRET, else
    /// BUS_EVENTS_JWT_SECRET.
    #[arg(long, env = "BUS_API_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Sign a token with the local HS256 secret and print it.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// Sign locally with the HS256 secret (the only mode of this tool).
    #[arg(long, required = true)]
    local: bool,
    /// Identity of the holder (`sub`); becomes `identity_id` on its events.
    #[arg(long)]
    subject: String,
    /// Audience (`aud`).
    #[arg(long, default_value = AUDIENCE)]
    audience: String,
    /// Space-separated scopes, e.g. "events:send events:listen".
    #[arg(long)]
    scope: String,
    /// Lifetime: seconds or a duration such as `12h` or `30m`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// `token` prints the bare token; `json` an object with its claims.
    #[arg(long, default_value_t = Format::Token)]
    format: Format,
    /// File holding the HS256 signing secret. Without it: env
    /// BUS_AUTH_HS256_SECRET.
    #[arg(long, env = "BUS_AUTH_HS256_SECRET_FILE")]
    hs256_secret_file: Option<PathBuf>,
    /// Write the output to this file (mode 0600, replaced atomically)
    /// instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("no secret: set {0}")]
    NoSecret(&'static str),
    #[error("cannot read the secret file {path}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid secret")]
    Secret(#[from] SecretError),
    #[error("--events-backend `{0}` is not supported by the development server (use `memory`)")]
    Backend(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server at {addr} is not healthy: {reason}")]
    Unhealthy { addr: SocketAddr, reason: String },
    #[error("cannot issue the token")]
    Issue(#[from] IssueError),
    #[error("cannot write the token to {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
        Command::Serve(args) => serve(args).await,
        Command::Health { addr } => health(addr).await,
        Command::Token {
            command: TokenCommand::Issue(args),
        } => issue_token(&args),
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    if args.events_backend != MEMORY_BACKEND {
        return Err(CliError::Backend(args.events_backend));
    }
    let secret = load_secret(
        args.jwt_secret_file.as_deref(),
        &["BUS_API_JWT_SECRET", "BUS_EVENTS_JWT_SECRET"],
        "BUS_API_JWT_SECRET or pass --jwt-secret-file",
    )?;
    let mut config = ServerConfig::new(args.addr, secret);
    config.history_bytes = args.memory_max_bytes;
    config.group_bytes = config.group_bytes.min(args.memory_max_bytes);
    let shutdown = CancellationToken::new();
    let server = serve_with_shutdown(config, shutdown.clone())
        .await
        .map_err(|source| CliError::Bind {
            addr: args.addr,
            source,
        })?;
    println!(
        "bus-events-local listening on http://{} (events backend: memory)",
        server.local_addr()
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    server.shutdown().await;
    Ok(())
}

/// `GET /healthz` over plain HTTP/1.0, within five seconds.
async fn health(addr: SocketAddr) -> Result<(), CliError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let unhealthy = |reason: String| CliError::Unhealthy { addr, reason };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut head = vec![0; 32];
        let n = stream.read(&mut head).await?;
        head.truncate(n);
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| unhealthy("no answer within 5s".to_owned()))?
        .map_err(|err| unhealthy(err.to_string()))?;
    let status_line = String::from_utf8_lossy(&head);
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(unhealthy(format!("answered {status_line:?}"))),
    }
}

fn issue_token(args: &IssueArgs) -> Result<(), CliError> {
    // `--local` is required by clap; the flag documents the signing mode.
    debug_assert!(args.local);
    let secret = load_secret(
        args.hs256_secret_file.as_deref(),
        &["BUS_AUTH_HS256_SECRET"],
        "BUS_AUTH_HS256_SECRET or pass --hs256-secret-file",
    )?;
    let claims = MintClaims {
        sub: args.subject.clone(),
        aud: args.audience.clone(),
        scope: args.scope.clone(),
        ttl: args.ttl,
    };
    let text = issue(&secret, &claims, args.format)?;
    match &args.output {
        None => println!("{text}"),
        Some(path) => write_private(path, &text).map_err(|source| CliError::Output {
            path: path.clone(),
            source,
        })?,
    }
    Ok(())
}

/// Writes `text` and a newline to `path` with mode 0600, through a
/// temporary file in the same directory renamed over it.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The secret from `file` when given, else from the first set variable of
/// `envs`.
fn load_secret(file: Option<&Path>, envs: &[&str], hint: &'static str) -> Result<Secret, CliError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|source| CliError::SecretFile {
                path: path.to_owned(),
                source,
            })?,
        None => envs
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .ok_or(CliError::NoSecret(hint))?,
    };
    Ok(Secret::parse(&text)?)
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
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
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
