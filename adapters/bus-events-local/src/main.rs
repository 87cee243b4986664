//! `bus-events-local`: the development Bus Events API (`serve`) and local
//! token minting (`token issue --local`), spelled like the Bus tools.
//!
//! Secrets are never taken as literal flags, so they stay out of shell
//! history and `ps`:
//!
//! * `serve` verifies with `--jwt-secret-file` (env
//!   `BUS_API_JWT_SECRET_FILE`), else env `BUS_API_JWT_SECRET`, else the
//!   older `BUS_EVENTS_JWT_SECRET`, else `BUS_LOCAL_JWT_SECRET` (the name
//!   in the Bus `.env.example`);
//! * `token issue` signs with `--hs256-secret-file` (env
//!   `BUS_AUTH_HS256_SECRET_FILE`), else env `BUS_AUTH_HS256_SECRET`, else
//!   `BUS_LOCAL_JWT_SECRET`.
//!
//! An empty variable counts as unset.
//!
//! Every form may be raw text or `base64:<value>`; a file's trailing newline
//! is trimmed. Logs go to stderr (`RUST_LOG`, default `info`; no colour
//! unless stderr is a terminal and `NO_COLOR` is unset); stdout carries only
//! the listening line or the token.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bus_events_local::issue::{issue, Format, IssueError};
use bus_events_local::{
    serve_with_shutdown, BasePath, InvalidBasePath, MintClaims, Secret, SecretError, ServerConfig,
    AUDIENCE,
};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// The only events backend of the development server.
const MEMORY_BACKEND: &str = "memory";
/// The only `bus api serve --provider` this server is.
const EVENTS_PROVIDER: &str = "events";
/// Where `serve` listens when nothing says otherwise.
const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEFAULT_PORT: u16 = 8081;
/// The subject of the Bus compose stack's tokens.
const DEFAULT_ACCOUNT_ID: &str = "00000000-0000-4000-8000-000000000001";

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
    Token(TokenArgs),
}

/// `serve`, in two layouts: `bus-api-provider-events` (`--addr HOST:PORT`)
/// and `bus api serve` (`--listen HOST --port N --token T [--base-path P]
/// --provider events`).
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one). Env
    /// BUS_EVENTS_ADDR. Default 127.0.0.1:8081.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Host (or HOST:PORT) to listen on, as `bus api serve --listen`;
    /// default 127.0.0.1.
    #[arg(long)]
    listen: Option<String>,
    /// Port to listen on, as `bus api serve --port`. Env BUS_EVENTS_PORT.
    #[arg(long)]
    port: Option<u16>,
    /// Capability token of the base path: the API also answers under
    /// `--base-path` with `{token}` replaced, e.g. `/local/v1`.
    #[arg(long)]
    token: Option<String>,
    /// Base path template; must contain `{token}`.
    #[arg(long, requires = "token")]
    base_path: Option<String>,
    /// `bus api serve --provider`: only `events` is served here.
    #[arg(long)]
    provider: Option<String>,
    /// Events backend; the development server only has `memory`.
    #[arg(long, env = "BUS_EVENTS_BACKEND", default_value = MEMORY_BACKEND)]
    events_backend: String,
    /// Bytes of event history kept in memory across all names; also the
    /// most a unicast group or a broadcast subscriber may hold unread.
    #[arg(long, env = "BUS_EVENTS_MEMORY_MAX_BYTES", default_value_t = bus_events_local::DEFAULT_HISTORY_BYTES)]
    memory_max_bytes: usize,
    /// File holding the HS256 secret tokens are verified with (raw, or
    /// `base64:<value>`). Without it: env BUS_API_JWT_SECRET, else
    /// BUS_EVENTS_JWT_SECRET, else BUS_LOCAL_JWT_SECRET.
    #[arg(long, env = "BUS_API_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
}

/// `token`, in the layout of `bus operator token` / `bus-operator-token`:
/// these flags go before the verb (`token --format token issue --local …`)
/// or after it.
#[derive(Debug, Args)]
struct TokenArgs {
    /// `token` prints the bare token; `json` an object with its claims.
    #[arg(long, global = true, default_value_t = Format::Token)]
    format: Format,
    /// Write the output to this file (mode 0600, replaced atomically)
    /// instead of stdout.
    #[arg(long, global = true)]
    output: Option<PathBuf>,
    /// Print nothing but the token (no note on stderr, errors only in logs).
    #[arg(long, global = true)]
    quiet: bool,
    /// Give up after this long (seconds or a duration such as `30s`).
    #[arg(long, global = true, value_parser = parse_ttl)]
    timeout: Option<Duration>,
    /// Sign locally with the HS256 secret (the only mode of this tool).
    #[arg(long, global = true)]
    local: bool,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Sign a token with the local HS256 secret and print it.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// Identity of the holder (`sub`); becomes `identity_id` on its events.
    #[arg(long, env = "BUS_LOCAL_ACCOUNT_ID", default_value = DEFAULT_ACCOUNT_ID)]
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
    /// File holding the HS256 signing secret. Without it: env
    /// BUS_AUTH_HS256_SECRET, else BUS_LOCAL_JWT_SECRET.
    #[arg(long, env = "BUS_AUTH_HS256_SECRET_FILE")]
    hs256_secret_file: Option<PathBuf>,
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
    #[error("--provider `{0}` is not served by the development server (it is the `events` provider only)")]
    Provider(String),
    #[error("{0}")]
    Listen(String),
    #[error(transparent)]
    BasePath(#[from] InvalidBasePath),
    #[error("--local is required: this tool only signs tokens locally with the HS256 secret")]
    NotLocal,
    #[error("gave up after --timeout {0:?}")]
    Timeout(Duration),
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
        Command::Token(token) => {
            let TokenCommand::Issue(args) = &token.command;
            let work = async { issue_token(&token, args) };
            match token.timeout {
                Some(limit) => tokio::time::timeout(limit, work)
                    .await
                    .map_err(|_| CliError::Timeout(limit))?,
                None => work.await,
            }
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    if args.events_backend != MEMORY_BACKEND {
        return Err(CliError::Backend(args.events_backend));
    }
    let secret = load_secret(
        args.jwt_secret_file.as_deref(),
        &[
            "BUS_API_JWT_SECRET",
            "BUS_EVENTS_JWT_SECRET",
            "BUS_LOCAL_JWT_SECRET",
        ],
        "BUS_API_JWT_SECRET (or BUS_LOCAL_JWT_SECRET, the Bus .env name) or pass --jwt-secret-file",
    )?;
    if let Some(provider) = &args.provider {
        if provider.split(',').any(|p| p.trim() != EVENTS_PROVIDER) {
            return Err(CliError::Provider(provider.clone()));
        }
    }
    let addr = listen_addr(&args, |name| std::env::var(name).ok())?;
    let base_path = match &args.token {
        Some(token) => Some(BasePath::new(
            args.base_path
                .as_deref()
                .unwrap_or(BasePath::DEFAULT_TEMPLATE),
            token,
        )?),
        None => None,
    };
    let mut config = ServerConfig::new(addr, secret);
    config.history_bytes = args.memory_max_bytes;
    config.group_bytes = config.group_bytes.min(args.memory_max_bytes);
    config.subscriber_bytes = config.subscriber_bytes.min(args.memory_max_bytes);
    config.base_path = base_path.clone();
    let shutdown = CancellationToken::new();
    let server = serve_with_shutdown(config, shutdown.clone())
        .await
        .map_err(|source| CliError::Bind { addr, source })?;
    match &base_path {
        None => println!(
            "bus-events-local listening on http://{} (events backend: memory)",
            server.local_addr()
        ),
        Some(base) => println!(
            "bus-events-local listening on http://{} (events backend: memory; also under {base})",
            server.local_addr()
        ),
    }
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

/// Where `serve` listens: `--addr`, else `--listen`/`--port` (the port
/// also from BUS_EVENTS_PORT), else env BUS_EVENTS_ADDR, else
/// 127.0.0.1 on BUS_EVENTS_PORT or 8081.
fn listen_addr(
    args: &ServeArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<SocketAddr, CliError> {
    let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let env_port = || -> Result<Option<u16>, CliError> {
        env("BUS_EVENTS_PORT")
            .map(|port| {
                port.trim().parse::<u16>().map_err(|_| {
                    CliError::Listen(format!("BUS_EVENTS_PORT `{port}` is not a port number"))
                })
            })
            .transpose()
    };
    if let Some(addr) = args.addr {
        if args.listen.is_some() || args.port.is_some() {
            return Err(CliError::Listen(
                "give --addr HOST:PORT or --listen HOST --port N, not both".to_owned(),
            ));
        }
        return Ok(addr);
    }
    if let Some(listen) = &args.listen {
        let (host, port) = parse_listen(listen)?;
        let port = match (args.port, port) {
            (Some(flag), _) => flag,
            (None, Some(port)) => port,
            (None, None) => env_port()?.unwrap_or(DEFAULT_PORT),
        };
        return Ok(SocketAddr::new(host, port));
    }
    if let Some(port) = args.port {
        return Ok(SocketAddr::new(DEFAULT_HOST, port));
    }
    if let Some(addr) = env("BUS_EVENTS_ADDR") {
        return addr
            .trim()
            .parse()
            .map_err(|_| CliError::Listen(format!("BUS_EVENTS_ADDR `{addr}` is not HOST:PORT")));
    }
    Ok(SocketAddr::new(
        DEFAULT_HOST,
        env_port()?.unwrap_or(DEFAULT_PORT),
    ))
}

/// `--listen` as `bus api serve` takes it: an IP (`0.0.0.0`, `::`,
/// `[::1]`), `localhost`, or either with a `:PORT`.
fn parse_listen(text: &str) -> Result<(IpAddr, Option<u16>), CliError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip(), Some(addr.port())));
    }
    let host = |host: &str| -> Option<IpAddr> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") {
            return Some(DEFAULT_HOST);
        }
        host.parse().ok()
    };
    if let Some(ip) = host(text) {
        return Ok((ip, None));
    }
    if let Some((name, port)) = text.rsplit_once(':') {
        if let (Some(ip), Ok(port)) = (host(name), port.parse::<u16>()) {
            return Ok((ip, Some(port)));
        }
    }
    Err(CliError::Listen(format!(
        "--listen `{text}` is not an IP address or localhost (optionally with :PORT)"
    )))
}

fn issue_token(token: &TokenArgs, args: &IssueArgs) -> Result<(), CliError> {
    if !token.local {
        return Err(CliError::NotLocal);
    }
    let secret = load_secret(
        args.hs256_secret_file.as_deref(),
        &["BUS_AUTH_HS256_SECRET", "BUS_LOCAL_JWT_SECRET"],
        "BUS_AUTH_HS256_SECRET (or BUS_LOCAL_JWT_SECRET, the Bus .env name) or pass --hs256-secret-file",
    )?;
    let claims = MintClaims {
        sub: args.subject.clone(),
        aud: args.audience.clone(),
        scope: args.scope.clone(),
        ttl: args.ttl,
    };
    let text = issue(&secret, &claims, token.format)?;
    match &token.output {
        None => println!("{text}"),
        Some(path) => {
            write_private(path, &text).map_err(|source| CliError::Output {
                path: path.clone(),
                source,
            })?;
            if !token.quiet {
                eprintln!("wrote the token to {}", path.display());
            }
        }
    }
    Ok(())
}

/// Writes `text` and a newline to `path` with mode 0600, through a
/// temporary file in the same directory renamed over it.
///
/// The temporary file has an unpredictable name and is created with
/// `O_CREAT|O_EXCL` (the `tempfile` crate), which never follows a symlink:
/// a link planted where the temporary file goes makes the open fail instead
/// of writing the token through it. The rename replaces `path` itself, so a
/// symlink at `path` is replaced, never written through.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?; // mode 0600 on unix
    tmp.write_all(text.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|err| err.error)?;
    Ok(())
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
