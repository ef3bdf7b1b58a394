//! The server's configuration: flags and `SAFETAKE_*` variables, parsed and validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// The command line: the server's flags, how to log, and what to do (serve by default).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "safetake",
    version,
    about = "A recording server for podcasts that never loses a take",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    /// How log lines are written to standard error: `text` for people, `json` (one object a
    /// line) for a log collector.
    #[arg(
        long,
        env = "SAFETAKE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Operation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the binary does besides serving (no subcommand: serve).
#[derive(Debug, Clone, Subcommand)]
pub enum Operation {
    /// Repairs a data directory as start-up does, without serving.
    ///
    /// Every unfinished track's header is matched to its audio; prints what it repaired.
    Repair {
        /// The data directory to repair.
        dir: PathBuf,
    },
    /// Copies the data directory (`--data-dir`) into DIR, consistently, while the server runs.
    ///
    /// The database is copied in one transaction, completed tracks hard-linked where the
    /// filesystem allows, the others copied. `--data-dir DIR` starts from it.
    Backup {
        /// Where the copy goes: a new or empty directory.
        dir: PathBuf,
    },
}

/// Everything the server can be told at start. Passed by value into the app; never a global.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "safetake",
    version,
    about = "A recording server for podcasts that never loses a take"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SAFETAKE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Directory for the audio files (and the SQLite database by default).
    #[arg(long, env = "SAFETAKE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL; default: SQLite at `<data-dir>/safetake.db`.
    #[arg(long, env = "SAFETAKE_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Silence after which an active session becomes incomplete.
    #[arg(long, env = "SAFETAKE_SESSION_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub session_timeout: Duration,

    /// How often the sweeper looks for silent sessions.
    #[arg(long, env = "SAFETAKE_SWEEP_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub sweep_interval: Duration,

    /// How often the server pings each socket.
    #[arg(long, env = "SAFETAKE_PING_INTERVAL", default_value = "10s", value_parser = parse_positive_duration)]
    pub ping_interval: Duration,

    /// Longest time received audio waits before it is fsynced and acked.
    #[arg(long, env = "SAFETAKE_SYNC_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub sync_interval: Duration,

    /// Largest binary message, the 8 offset bytes included.
    #[arg(long, env = "SAFETAKE_MAX_FRAME_BYTES", default_value = "1048576", value_parser = parse_frame_limit)]
    pub max_frame_bytes: usize,

    /// Origins besides the server's own that may open sockets and send changes (repeatable;
    /// comma-separated in the variable).
    #[arg(
        long = "allowed-origin",
        env = "SAFETAKE_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Host names besides IP literals and `localhost` that requests may name when no
    /// `--auth-token` is set (`name` for any port, `name:port` for one; repeatable;
    /// comma-separated in the variable).
    #[arg(
        long = "allowed-host",
        env = "SAFETAKE_ALLOWED_HOST",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Token required on every API request, page and socket.
    #[arg(long, env = "SAFETAKE_AUTH_TOKEN")]
    pub auth_token: Option<String>,

    /// Allow binding beyond loopback without `--auth-token`.
    #[arg(long, env = "SAFETAKE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Completed sessions older than this (since they completed) are deleted with their files
    /// by the sweeper; active and incomplete ones never are. Default: kept for ever.
    #[arg(long, env = "SAFETAKE_RETENTION", value_parser = parse_positive_duration)]
    pub retention: Option<Duration>,

    /// PEM certificate chain: serve HTTPS and WSS on `--bind` (needs `--tls-key`).
    #[arg(long, env = "SAFETAKE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "SAFETAKE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Most sockets streaming at once; more are refused with 503.
    #[arg(long, env = "SAFETAKE_MAX_CONNECTIONS", default_value = "10000", value_parser = parse_count)]
    pub max_connections: usize,
}

impl Config {
    /// Checks what no single flag can: combinations. The message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(token) = &self.auth_token {
            if token.is_empty() {
                return Err("--auth-token: must not be empty".into());
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err("--tls-cert: needs --tls-key as well".into()),
            (None, Some(_)) => return Err("--tls-key: needs --tls-cert as well".into()),
            _ => {}
        }
        if let Some(url) = &self.database_url {
            // The backend is the scheme's; an unknown one stops the start (never a fallback).
            crate::db::Target::parse(url).map_err(|error| error.to_string())?;
        }
        if !self.bind.ip().is_loopback() && self.auth_token.is_none() && !self.allow_unauthenticated
        {
            return Err(format!(
                "--bind {}: refusing to listen beyond loopback without --auth-token \
                 (pass --allow-unauthenticated to do it anyway)",
                self.bind
            ));
        }
        Ok(())
    }

    /// The database URL in force: the flag, or SQLite inside the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self
                .data_dir
                .join("safetake.db")
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// A configuration with every default, for tests and tools. The defaults come from the
    /// flags' own declarations, parsed with every flag's link to its `SAFETAKE_*` variable cut,
    /// so nothing exported in the environment (a token, a bind address) leaks in.
    pub fn with_data_dir(data_dir: PathBuf) -> Config {
        let command = Config::command().mut_args(|arg| arg.env(None));
        let mut config = command
            .try_get_matches_from(["safetake"])
            .and_then(|matches| Config::from_arg_matches(&matches))
            .expect("every flag's default parses");
        config.data_dir = data_dir;
        config
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `30d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 12 {
        return Err(format!(
            "`{text}` is not a duration such as 500ms, 30s or 5m"
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration"))?;
    let millis = match unit {
        "ms" => value,
        "" | "s" => value * 1000,
        "m" => value * 60_000,
        "h" => value * 3_600_000,
        "d" => value * 86_400_000,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_millis(millis))
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a plain count")),
    }
}

fn parse_frame_limit(text: &str) -> Result<usize, String> {
    let limit = parse_count(text)?;
    if !(16..=64 * 1024 * 1024).contains(&limit) {
        return Err("must be between 16 and 67108864 bytes".into());
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_contract_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn binding_beyond_loopback_needs_a_token() {
        let mut config = Config::with_data_dir("/tmp/x".into());
        config.bind = "0.0.0.0:8080".parse().unwrap();
        assert!(config.validate().unwrap_err().contains("--bind"));
        config.allow_unauthenticated = true;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_database_url_names_its_backend_or_stops_the_start() {
        let mut config = Config::with_data_dir("/tmp/x".into());
        for good in [
            "postgres://u:p@127.0.0.1:5432/db",
            "postgresql://h/db",
            "sqlite:///tmp/a.db",
            "/tmp/a.db",
        ] {
            config.database_url = Some(good.into());
            assert!(config.validate().is_ok(), "{good}");
        }
        for bad in ["mysql://u:secret@h/db", "postgre://h/db", ""] {
            config.database_url = Some(bad.into());
            let message = config.validate().unwrap_err();
            assert!(message.starts_with("--database-url"), "{message}");
            assert!(
                !message.contains("secret"),
                "the password is not shown: {message}"
            );
        }
    }

    /// An exported `SAFETAKE_AUTH_TOKEN` once locked every test out. The variables are set and
    /// removed in this one test only, and no other test of this binary reads them.
    #[test]
    fn defaults_for_tests_ignore_the_environment() {
        let exported = [
            ("SAFETAKE_AUTH_TOKEN", "exported"),
            ("SAFETAKE_SESSION_TIMEOUT", "7s"),
            ("SAFETAKE_ALLOWED_HOST", "exported.example"),
            ("SAFETAKE_BIND", "127.0.0.1:9"),
        ];
        for (name, value) in exported {
            std::env::set_var(name, value);
        }
        let from_env = Config::parse_from(["safetake"]);
        let defaults = Config::with_data_dir("/tmp/x".into());
        for (name, _) in exported {
            std::env::remove_var(name);
        }
        assert_eq!(
            from_env.auth_token.as_deref(),
            Some("exported"),
            "the variables are seen"
        );
        assert_eq!(defaults.auth_token, None);
        assert_eq!(defaults.session_timeout, Duration::from_secs(30));
        assert!(defaults.allowed_hosts.is_empty());
        assert_eq!(defaults.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(defaults.data_dir, PathBuf::from("/tmp/x"));
    }
}
