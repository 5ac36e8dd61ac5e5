//! The subcommands of `mandate`, one module each, and what several of them
//! share: the pack's flags, loading the configuration, the NATS settings,
//! the async runtime, printing, and the exit codes.
//!
//! The only place that prints errors and chooses exit codes: a subcommand
//! ends with an [`Outcome`], its error already printed when it stopped early.

pub mod check;
pub mod history;
pub mod publish;
pub mod replay;
pub mod search;
pub mod serve;
pub mod serve_store;
pub mod settings;
pub mod test;
pub mod validate;
pub mod verify;

use std::path::{Path, PathBuf};

use clap::Args;
use mandate::app::{self, StartError};
use mandate::config::{self, Config};

/// Every exit code of `mandate`, one table for every subcommand
/// (docs/cli.md's "Exit codes"). Clap itself exits 2 on a command line it
/// cannot parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// 0: allowed (`check`), valid (`validate`), every case passed (`test`),
    /// all proved or nothing granted (`verify`), nothing to fail on
    /// (`replay`), served and stopped cleanly, searched, printed, published.
    Success = 0,
    /// 1, the answer is no: denied (`check`), invalid (`validate`), a case
    /// failed (`test`), violated or allows gained (`verify`), a change the
    /// gate fails on (`replay`).
    No = 1,
    /// 2, usage: the command line, or an input the subcommand needs, cannot
    /// be used (a configuration, a pack, a file, the bus, an address).
    Usage = 2,
    /// 3, no verdict: a check the solver could not settle (`verify`), a gate
    /// that replayed no line (`replay`), a history that cannot be read
    /// (`history`).
    Inconclusive = 3,
    /// 64: `serve` could not start (configuration, policies, entities, TLS,
    /// the address, OpenTelemetry).
    CannotStart = 64,
    /// 70 (EX_SOFTWARE), internal: the async runtime could not be built.
    Internal = 70,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        Self::from(code as u8)
    }
}

/// What a subcommand ends with: the exit code of its answer, or (`Err`)
/// the exit code of what stopped it early, its error already printed. `?`
/// then ends a subcommand at its first error.
pub type Outcome = Result<ExitCode, ExitCode>;

/// An error reported, then the exit code it ends the subcommand with.
pub trait OrExit<T> {
    /// The value, or `code` once the error is printed with its diagnostics.
    fn or_exit(self, code: ExitCode) -> Result<T, ExitCode>;
}

impl<T, E: miette::Diagnostic + Send + Sync + 'static> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: ExitCode) -> Result<T, ExitCode> {
        self.map_err(|error| {
            report(error);
            code
        })
    }
}

/// Prints `error: MESSAGE` and gives `code`: for errors without diagnostics.
pub fn error(code: ExitCode, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    code
}

/// Writes a line to stdout; a closed stdout (`| head`) is not an error of ours.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints an error with its diagnostics (file, line, help) on stderr.
pub fn report(error: impl miette::Diagnostic + Send + Sync + 'static) {
    eprintln!("{:?}", miette::Report::new(error));
}

/// The async runtime every subcommand that waits on I/O runs in; one that
/// cannot be built is printed and ends the subcommand with
/// [`ExitCode::Internal`].
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            self::error(
                ExitCode::Internal,
                format_args!("cannot start the async runtime: {error}"),
            )
        })
}

/// The configuration: defaults, the file, the environment, then `flags`.
/// One that does not load is reported and ends the subcommand with `code`.
pub fn load(
    file: Option<&Path>,
    flags: &config::Flags,
    code: ExitCode,
) -> Result<Config, ExitCode> {
    let env = std::env::vars().filter(|(k, _)| k != "MANDATE_CONFIG");
    Config::load(file, env, flags)
        .map_err(StartError::from)
        .or_exit(code)
}

/// The settings every command that decides reads: the configuration file,
/// the policies, the schema and the entity store. Each flag is one more
/// layer over the file and the `MANDATE_…` variables (`mandate settings`
/// lists every setting); its help comes from the setting it sets.
#[derive(Args, Clone)]
pub struct PackArgs {
    /// The configuration file: TOML, or JSON when its name ends in `.json`;
    /// relative paths in it are relative to it.
    #[arg(long, value_name = "FILE", env = "MANDATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, value_name = "DIR", help = config::help("policy.dir"))]
    pub policies: Option<PathBuf>,
    #[arg(long, value_name = "PATH", help = config::help("policy.schema"))]
    pub schema: Option<PathBuf>,
    #[arg(long, value_name = "FILE", conflicts_with = "upstream", help = config::help("store.entities"))]
    pub entities: Option<PathBuf>,
    #[arg(long, value_name = "URL", help = config::help("store.upstream"))]
    pub upstream: Option<String>,
}

impl PackArgs {
    /// The flags given, as settings: the top layer.
    pub fn flags(&self) -> Vec<(&'static str, toml::Value)> {
        let mut flags = Vec::new();
        if let Some(dir) = &self.policies {
            flags.push(("policy.dir", path(dir)));
        }
        if let Some(schema) = &self.schema {
            flags.push(("policy.schema", path(schema)));
        }
        if let Some(entities) = &self.entities {
            flags.push(("store.kind", text("file")));
            flags.push(("store.entities", path(entities)));
        }
        if let Some(upstream) = &self.upstream {
            flags.push(("store.kind", text("http")));
            flags.push(("store.upstream", text(upstream)));
        }
        flags
    }

    /// The configuration with these flags on top; one that does not load
    /// ends the subcommand with `code`.
    pub fn load(&self, code: ExitCode) -> Result<Config, ExitCode> {
        load(self.config.as_deref(), &self.flags(), code)
    }
}

/// A flag's value as a setting's.
pub fn text(value: impl ToString) -> toml::Value {
    toml::Value::String(value.to_string())
}

/// A path flag's value as a setting's.
pub fn path(value: &Path) -> toml::Value {
    toml::Value::String(value.to_string_lossy().into_owned())
}

/// Where change events go.
#[derive(Args)]
pub struct BusArgs {
    #[arg(long = "nats", value_name = "URL", env = "MANDATE_BUS_URL", help = config::help("bus.url"))]
    url: Option<String>,
    #[arg(long, value_name = "SUBJECT", env = "MANDATE_BUS_SUBJECT", default_value = "mandate.entities.changed", help = config::help("bus.subject"))]
    subject: String,
    #[command(flatten)]
    auth: NatsAuthArgs,
}

impl BusArgs {
    /// The bus to publish on, when `--nats` (or `MANDATE_BUS_URL`) names one.
    pub fn settings(&self) -> Option<mandate::bus::BusSettings> {
        Some(self.auth.settings(self.url.clone()?, self.subject.clone()))
    }
}

/// How a NATS server is trusted and authenticated: the bus's and the
/// history's, the same settings.
#[derive(Args)]
pub struct NatsAuthArgs {
    #[arg(long = "credentials", value_name = "FILE", env = "MANDATE_BUS_CREDENTIALS_FILE", help = config::help("bus.credentials_file"))]
    credentials_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE", env = "MANDATE_BUS_TLS_CA", help = config::help("bus.tls_ca"))]
    tls_ca: Option<PathBuf>,
}

impl NatsAuthArgs {
    /// The settings to reach the server at `url` (publishing on `subject`).
    pub fn settings(&self, url: String, subject: String) -> mandate::bus::BusSettings {
        mandate::bus::BusSettings {
            url,
            subject,
            credentials_file: self.credentials_file.clone(),
            tls_ca: self.tls_ca.clone(),
        }
    }
}

/// The entity type names of `schema`, else of the configuration `config`
/// names (the shipped schema when neither): for tools that name entities.
/// Errors are reported and end the subcommand as usage errors.
pub fn schema_types(
    schema: Option<&Path>,
    config: Option<&Path>,
) -> Result<mandate::policy::TypeNames, ExitCode> {
    let sources = if let Some(schema) = schema {
        mandate::policy::PolicySources {
            policy_dir: PathBuf::new(),
            schema: schema.to_owned(),
            default_namespace: None,
        }
    } else {
        app::policy_sources(&load(config, &Vec::new(), ExitCode::Usage)?)
    };
    mandate::policy::TypeNames::of_schema(&sources).or_exit(ExitCode::Usage)
}

/// `--context`, read as JSON; one that is not is a usage error, printed.
pub fn context_arg(written: Option<&str>) -> Result<Option<serde_json::Value>, ExitCode> {
    written
        .map(serde_json::from_str)
        .transpose()
        .map_err(|error| {
            self::error(
                ExitCode::Usage,
                format_args!("`--context` is not JSON: {error}"),
            )
        })
}
