use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;
use safetake::config::Config;
use safetake::startup::{self, Application};

#[actix_web::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::parse();
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
