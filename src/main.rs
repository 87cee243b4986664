use std::process::ExitCode;

use bus_integration_docker::app::App;
use bus_integration_docker::cli::{Cli, Command};
use bus_integration_docker::{commands, config, telemetry};
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    // Compose files and shells often set an option to "" to mean unset:
    // treat an empty env var of ours as absent (before any thread starts).
    for arg in Cli::command().get_arguments() {
        if let Some(name) = arg.get_env() {
            if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
                std::env::remove_var(name);
            }
        }
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bus-integration-docker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let settings = match config::load(cli.worker.config.as_deref(), &cli.worker.overrides())
        .and_then(|c| c.settings())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bus-integration-docker: {e}");
            return ExitCode::from(2);
        }
    };
    // One-shot commands print their result on stdout; keep stderr quiet.
    let one_shot = cli.events || cli.self_test || cli.command.is_some();
    telemetry::init(settings.log_format, if one_shot { "warn" } else { "info" });

    if cli.events {
        println!("{}", commands::list_events(&settings, cli.format));
        return ExitCode::SUCCESS;
    }
    if cli.self_test {
        return match commands::self_test(&settings).await {
            Ok(()) => {
                println!("bus-integration-docker self-test OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bus-integration-docker self-test FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let printed = match &cli.command {
        Some(Command::Client(args)) => Some(commands::client(&settings, args).await),
        Some(Command::Demo(args)) => Some(commands::demo(&settings, args).await),
        None => None,
    };
    if let Some(result) = printed {
        return match result {
            Ok(v) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bus-integration-docker: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let app = match App::build(&settings) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("bus-integration-docker: {e}");
            return ExitCode::from(2);
        }
    };
    match app.run_until(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus-integration-docker: {e}");
            ExitCode::FAILURE
        }
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
