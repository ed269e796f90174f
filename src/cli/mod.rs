//! The `supamerge` command line: argument parsing, output and exit codes.
//!
//! The binary (`src/bin/supamerge.rs`) only calls [`main`]. Every command lives
//! in its own module (`entity` for the entity commands, `demo`); a new command
//! adds a variant to [`Command`], a module, and one arm in [`run`].
//!
//! Exit codes (documented in `docs/cli.md`):
//! - `0` success;
//! - `1` runtime failure: unknown or deleted entity, storage failure, replica
//!   directory in use, damaged records (`list`, `doctor`);
//! - `2` usage error or invalid input: unknown flag, malformed JSON, a JSON
//!   value that is not an object, bad UUID, bad collection name, a path that
//!   is not a JSON pointer.

mod account;
mod archive;
#[cfg(feature = "bench")]
mod bench;
mod demo;
mod doctor;
mod entity;
#[cfg(feature = "gateway")]
mod gateway;
mod profile;
mod prune;
mod remote;
mod sync;
mod watch;
mod workspace;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::entity::EntityError;
use crate::error::Error;
use crate::id::IdError;
use crate::store::StoreError;

/// Exit code of a successful run.
pub const EXIT_OK: u8 = 0;
/// Exit code of a runtime failure (not found, deleted, storage).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error or invalid input (same as clap's usage errors).
pub const EXIT_USAGE: u8 = 2;

/// `supamerge`: an offline-first replica of Automerge entities.
#[derive(Debug, Parser)]
#[command(name = "supamerge", version, about, propagate_version = true)]
pub struct Cli {
    /// The replica directory (created when missing).
    #[arg(
        long,
        global = true,
        env = "SUPAMERGE_DATA",
        default_value = "./supamerge-data",
        value_name = "DIR"
    )]
    pub data: PathBuf,

    /// Print machine-readable JSON (results on stdout, errors on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the demo: replicas edit offline, sync through the embedded hub (or Supabase), converge.
    Demo(demo::DemoArgs),
    /// Push the outbox and pull every workspace once, against a hub directory or Supabase.
    Sync(sync::SyncArgs),
    /// Keep the replica synced live and print each remote change as it lands, until interrupted.
    Watch(watch::WatchArgs),
    /// Print the pending outbox, cursors, dead letters and last sync.
    Status,
    /// Create an entity from a JSON object; prints its id.
    Create(entity::CreateArgs),
    /// Print an entity's value.
    Get(entity::IdArgs),
    /// Apply a JSON merge patch (RFC 7396) to an entity.
    Edit(entity::EditArgs),
    /// Delete an entity (a replicated tombstone).
    Delete(entity::IdArgs),
    /// List the live entities of a collection.
    List(entity::ListArgs),
    /// Print an entity's change history.
    History(entity::IdArgs),
    /// Print the fields of an entity holding concurrent values.
    Conflicts(entity::IdArgs),
    /// Resolve a conflicted field: write VALUE, or keep --local or --remote.
    Resolve(entity::ResolveArgs),
    /// Print facts about an entity (also a deleted one).
    Info(entity::IdArgs),
    /// Check a replica directory; with --repair, move what is damaged to quarantine.
    Doctor(doctor::DoctorArgs),
    /// Workspaces, members and invitations (Supabase or the local gateway).
    Workspace(workspace::WorkspaceArgs),
    /// Store the Supabase connection in your config directory: later commands need no flags.
    Login(account::LoginArgs),
    /// Forget the stored connection.
    Logout,
    /// Prune the server's change log: changes folded into snapshots and older than --older-than.
    Prune(prune::PruneArgs),
    /// Write every entity of a workspace to a directory (JSON and Automerge saves).
    Export(archive::ExportArgs),
    /// Import a directory written by `export` (again: nothing new).
    Import(archive::ImportArgs),
    // No doc comment: `gateway --help` shows `GatewayArgs`' own, which says
    // plainly that this is a development stand-in for Supabase's API gateway.
    #[cfg(feature = "gateway")]
    #[allow(missing_docs)]
    #[command(
        about = "Serve the Supabase-compatible RPC gateway: a DEVELOPMENT STAND-IN for Supabase's API"
    )]
    Gateway(crate::gateway::GatewayArgs),
    /// Print an access token (HS256 JWT) for the local gateway: a user of the dev stack.
    #[cfg(feature = "gateway")]
    DevToken(gateway::DevTokenArgs),
    /// Run the benchmarks: engine versus baseline per workload (docs/benchmarks.md).
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// An argument that should be JSON is not.
    #[error("{what} is not valid JSON: {source}")]
    InvalidJson {
        /// Which argument.
        what: &'static str,
        /// The parser's error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// Reading an argument from stdin failed.
    #[error("cannot read {what} from stdin: {source}")]
    Stdin {
        /// Which argument.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tokio runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Some entities of a listing could not be read (each reported on stderr).
    #[error("{count} entities could not be read (damaged records, named above); `supamerge doctor --repair` moves them to quarantine")]
    Unreadable {
        /// How many.
        count: usize,
    },
    /// `doctor` found problems (or some remain after `--repair`).
    #[error("{count} problems (listed above)")]
    Unhealthy {
        /// How many.
        count: usize,
    },
    /// `doctor` was pointed at a directory that holds no replica.
    #[error("{path} holds no replica (no sled `db` file)")]
    NotAReplica {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// `sync` needs `--hub DIR` or `--supabase-url`.
    #[error("no remote: pass --hub DIR or --supabase-url URL --anon-key KEY, or run `supamerge login` first")]
    MissingRemote,
    /// The connection profile could not be read or written.
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    /// Supabase Auth did not give an access token.
    #[error(transparent)]
    Token(crate::remote::TokenError),
    /// Export or import failed.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The server said the user is no longer a member of these workspaces
    /// (the rest of the sync went through; see `status` for the dead
    /// letters).
    #[error("{}", not_a_member_message(.workspaces))]
    NotAMember {
        /// The workspaces.
        workspaces: Vec<crate::id::WorkspaceId>,
    },
    /// The Supabase settings are invalid.
    #[error(transparent)]
    Supabase(#[from] crate::remote::SupabaseConfigError),
    /// The gateway could not start or failed.
    #[cfg(feature = "gateway")]
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    /// The demo stopped on an error.
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// The demo finished but its replicas did not converge.
    #[error("the demo's replicas did not converge")]
    DemoDiverged,
    /// `supamerge prune` failed: in the database, or no hub at `--hub`.
    #[error("prune failed: {reason}")]
    Prune {
        /// PostgreSQL's message, or what is wrong with the hub directory.
        reason: String,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    /// The library reported an error.
    #[error(transparent)]
    Supamerge(#[from] Error),
    /// A benchmark failed.
    #[cfg(feature = "bench")]
    #[error(transparent)]
    Bench(Box<crate::bench::BenchError>),
}

#[cfg(feature = "bench")]
impl From<crate::bench::BenchError> for CliError {
    fn from(e: crate::bench::BenchError) -> Self {
        CliError::Bench(Box::new(e))
    }
}

impl From<IdError> for CliError {
    fn from(e: IdError) -> Self {
        CliError::Supamerge(e.into())
    }
}

impl CliError {
    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::InvalidJson { .. }
            | CliError::MissingRemote
            | CliError::Supabase(_)
            | CliError::NotAReplica { .. } => EXIT_USAGE,
            CliError::Archive(crate::archive::ArchiveError::Replica(e)) => {
                CliError::exit_code_of(e)
            }
            #[cfg(feature = "gateway")]
            CliError::Gateway(crate::gateway::GatewayError::Config { .. }) => EXIT_USAGE,
            CliError::Supamerge(e) => CliError::exit_code_of(e),
            _ => EXIT_FAILURE,
        }
    }

    fn exit_code_of(e: &Error) -> u8 {
        match e {
            Error::Id(_)
            | Error::Entity(
                EntityError::NotAnObject { .. }
                | EntityError::InvalidPath { .. }
                | EntityError::CounterPatch { .. },
            ) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// A short, stable name of the error class (the `kind` of `--json` errors).
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::InvalidJson { .. } => "invalid_json",
            CliError::Stdin { .. } | CliError::Output(_) | CliError::Runtime(_) => "io",
            CliError::DemoDiverged => "diverged",
            CliError::Prune { .. } => "prune",
            CliError::Demo(
                crate::demo::DemoError::Sync { .. } | crate::demo::DemoError::LiveTimeout { .. },
            ) => "error",
            CliError::Unreadable { .. } | CliError::Unhealthy { .. } => "corrupt",
            CliError::NotAReplica { .. } => "invalid_input",
            CliError::MissingRemote | CliError::Supabase(_) => "invalid_input",
            CliError::Profile(_) => "profile",
            CliError::Token(_) => "auth",
            CliError::NotAMember { .. } => "not_a_member",
            CliError::Archive(crate::archive::ArchiveError::Replica(_)) => "storage",
            CliError::Archive(_) => "archive",
            #[cfg(feature = "gateway")]
            CliError::Gateway(_) => "gateway",
            #[cfg(feature = "bench")]
            CliError::Bench(_) => "bench",
            CliError::Demo(crate::demo::DemoError::Supamerge(e)) | CliError::Supamerge(e) => {
                match e {
                    Error::Id(_) => "invalid_input",
                    Error::Entity(
                        EntityError::NotAnObject { .. } | EntityError::InvalidPath { .. },
                    ) => "invalid_input",
                    Error::Entity(EntityError::NoSuchPath { .. }) => "no_such_path",
                    Error::Entity(EntityError::NotConflicted { .. }) => "not_conflicted",
                    Error::Entity(EntityError::NoCandidate { .. }) => "no_candidate",
                    Error::Entity(EntityError::NotFound { .. }) => "not_found",
                    Error::Entity(EntityError::NotAnEntity { .. }) => "not_an_entity",
                    Error::Entity(EntityError::CounterPatch { .. }) => "counter_patch",
                    Error::Entity(EntityError::Deleted { .. }) => "deleted",
                    Error::Entity(EntityError::CorruptDocument { .. })
                    | Error::Store(
                        StoreError::Corrupt { .. }
                        | StoreError::DamagedConf { .. }
                        | StoreError::DamagedSnapshot { .. },
                    ) => "corrupt",
                    Error::Store(StoreError::Locked { .. } | StoreError::AlreadyOpen { .. }) => {
                        "locked"
                    }
                    Error::Store(_) => "storage",
                    Error::Io { .. } => "io",
                    Error::Remote(crate::remote::RemoteError::NotAMember { .. }) => "not_a_member",
                    Error::Remote(crate::remote::RemoteError::LastOwner { .. }) => "last_owner",
                    Error::Remote(crate::remote::RemoteError::InvalidInvitation { .. }) => {
                        "invalid_invitation"
                    }
                    Error::Remote(crate::remote::RemoteError::Forbidden { .. }) => "forbidden",
                    Error::Remote(crate::remote::RemoteError::Unauthenticated { .. }) => "auth",
                    Error::Remote(crate::remote::RemoteError::Unsupported { .. }) => "unsupported",
                    _ => "error",
                }
            }
        }
    }
}

/// Where a command writes its results, and in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Text for people.
    Human,
    /// One JSON document per command, for scripts.
    Json,
}

/// Parses the process arguments, runs the command and returns the exit code.
/// Logging goes to stderr, filtered by `RUST_LOG` (default `warn`).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints help/version (exit 0) or the usage error (exit 2).
        Err(e) => e.exit(),
    };
    init_logging();
    let mode = if cli.json {
        OutputMode::Json
    } else {
        OutputMode::Human
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(cli, mode, &mut out) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            report_error(&e, mode);
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second initialisation (tests calling main twice) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn report_error(e: &CliError, mode: OutputMode) {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    // `transparent` variants already show their source's message.
    if matches!(e, CliError::Supamerge(_)) {
        source = source.and_then(std::error::Error::source);
    }
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    // Nothing sensible is left to do when stderr itself is gone.
    let _ = match mode {
        OutputMode::Human => writeln!(err, "error: {message}"),
        OutputMode::Json => writeln!(
            err,
            "{}",
            serde_json::json!({
                "error": {
                    "kind": e.kind(),
                    "message": message,
                    "exit_code": e.exit_code(),
                }
            })
        ),
    };
}

/// Runs one parsed command, writing its results to `out`.
///
/// # Errors
/// A [`CliError`]; its [`CliError::exit_code`] is the process exit code.
pub fn run(cli: Cli, mode: OutputMode, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(a) => demo::run(a, mode, out),
        Command::Sync(a) => sync::sync(&cli.data, a, mode, out),
        Command::Watch(a) => watch::watch(&cli.data, a, mode, out),
        Command::Status => sync::status(&cli.data, mode, out),
        Command::Create(a) => entity::create(&cli.data, a, mode, out),
        Command::Get(a) => entity::get(&cli.data, a, mode, out),
        Command::Edit(a) => entity::edit(&cli.data, a, mode, out),
        Command::Delete(a) => entity::delete(&cli.data, a, mode, out),
        Command::List(a) => entity::list(&cli.data, a, mode, out),
        Command::History(a) => entity::history(&cli.data, a, mode, out),
        Command::Conflicts(a) => entity::conflicts(&cli.data, a, mode, out),
        Command::Resolve(a) => entity::resolve(&cli.data, a, mode, out),
        Command::Info(a) => entity::info(&cli.data, a, mode, out),
        Command::Doctor(a) => doctor::run(&cli.data, a, mode, out),
        Command::Workspace(a) => workspace::run(a, mode, out),
        Command::Login(a) => account::login(a, mode, out),
        Command::Logout => account::logout(mode, out),
        Command::Prune(a) => prune::run(a, mode, out),
        Command::Export(a) => archive::export(&cli.data, a, mode, out),
        Command::Import(a) => archive::import(&cli.data, a, mode, out),
        #[cfg(feature = "gateway")]
        Command::Gateway(a) => gateway::run(a),
        #[cfg(feature = "gateway")]
        Command::DevToken(a) => gateway::dev_token(a, mode, out),
        #[cfg(feature = "bench")]
        Command::Bench(a) => bench::run(a, mode, out),
    }
}

fn not_a_member_message(workspaces: &[crate::id::WorkspaceId]) -> String {
    let list: Vec<String> = workspaces.iter().map(ToString::to_string).collect();
    format!(
        "no longer a member of workspace {}: its unpushed changes are kept as dead letters (see `supamerge status`)",
        list.join(", ")
    )
}

/// Writes `value` as one line of compact JSON.
fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(value).map_err(|e| CliError::Output(e.into()))?;
    writeln!(out, "{text}").map_err(CliError::Output)
}

/// Writes a line of text.
fn write_line(out: &mut dyn Write, line: impl std::fmt::Display) -> Result<(), CliError> {
    writeln!(out, "{line}").map_err(CliError::Output)
}
