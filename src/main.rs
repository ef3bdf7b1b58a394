use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;
use safetake::config::{Cli, LogFormat, Operation};
use safetake::startup::{self, Application};

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = cli.config;
    match cli.command {
        Some(Operation::Repair { dir }) => {
            return report(startup::repair_data_dir(&config, &dir), "repair");
        }
        Some(Operation::Backup { dir }) => {
            return report(safetake::backup::backup(&config, &dir), "backup");
        }
        None => {}
    }
    if let Err(message) = config.validate() {
        eprintln!("safetake: {message}");
        return ExitCode::from(2);
    }
    startup::raise_open_file_limit();
    let listener = match TcpListener::bind(config.bind) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("safetake: --bind {}: {error}", config.bind);
            return ExitCode::from(2);
        }
    };
    let app = match Application::build(config, listener) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("safetake: {error}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(port = app.port(), "safetake listening");
    match app.run_until_stopped(true).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("safetake: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// What an operation printed went to standard output; its failure goes to standard error.
fn report(result: Result<(), String>, what: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("safetake {what}: {message}");
            ExitCode::FAILURE
        }
    }
}
