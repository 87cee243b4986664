//! The worker's entry point: parse → settings → telemetry → one `match`
//! over the mode. Exit codes: 0 ok, 1 failure, 2 configuration error.

use std::process::ExitCode;

use bus_integration_docker::app::{report, App};
use bus_integration_docker::cli::{Cli, Mode};
use bus_integration_docker::{commands, config, telemetry};
use clap::Parser;

fn main() -> ExitCode {
    Cli::scrub_empty_env();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail("cannot start the async runtime", &e, ExitCode::FAILURE),
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let settings = match config::load(cli.worker.config.as_deref(), &cli.worker.overrides())
        .and_then(|c| c.settings())
    {
        Ok(s) => s,
        Err(e) => return fail("configuration", &e, ExitCode::from(2)),
    };
    let mode = cli.mode();
    // One-shot commands print their result on stdout; keep stderr quiet.
    let quiet = !matches!(mode, Mode::Serve);
    telemetry::init(settings.log_format, if quiet { "warn" } else { "info" });
    // docs/protocol.md §6 (v3): host paths are the engine's; say once which ones
    // this worker cannot check.
    for p in &settings.invisible_host_paths {
        tracing::warn!(
            key = %p.key,
            path = %p.path.display(),
            reason = %p.reason,
            "configured host path is not visible to the worker; passing it to the Docker \
             engine as given (it must exist on the Docker host)"
        );
    }

    match mode {
        Mode::ListEvents(format) => {
            println!("{}", commands::list_events(&settings, format));
            ExitCode::SUCCESS
        }
        Mode::SelfTest => match commands::self_test(&settings).await {
            Ok(()) => {
                println!("bus-integration-docker self-test OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bus-integration-docker self-test FAILED: {}", report(&e));
                ExitCode::FAILURE
            }
        },
        Mode::Client(args) => print_json(commands::client(&settings, args).await),
        Mode::Demo(args) => print_json(commands::demo(&settings, args).await),
        Mode::Serve => match App::build(&settings) {
            Err(e) => fail("cannot start", &e, ExitCode::from(2)),
            Ok(app) => match app.run_until(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("stopped", &e, ExitCode::FAILURE),
            },
        },
    }
}

/// Print an error with its cause chain on stderr; return `code`.
fn fail(what: &str, err: &(dyn std::error::Error + 'static), code: ExitCode) -> ExitCode {
    eprintln!("bus-integration-docker: {what}: {}", report(err));
    code
}

/// A one-shot command's JSON result on stdout, or its error on stderr.
fn print_json(result: Result<serde_json::Value, commands::CommandError>) -> ExitCode {
    match result {
        Ok(v) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("command failed", &e, ExitCode::FAILURE),
    }
}

/// The first SIGTERM/SIGINT starts a graceful shutdown; a second one exits
/// at once (containers are the durable record, so nothing is lost).
async fn shutdown_signal() {
    wait_signal().await;
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("bus-integration-docker: second signal, exiting now");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
