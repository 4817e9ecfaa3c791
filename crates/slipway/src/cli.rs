//! The command line: clap's types for every command and its flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use slipway_control::dto;

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Cloud Run on your own machine: run a multi-service app behind one router, with zero-downtime deploys and instant rollback"
)]
pub(crate) struct Cli {
    /// Where the server keeps its state, logs and API socket.
    #[arg(long, global = true, env = "SLIPWAY_HOME")]
    pub(crate) data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(clap::Args, Clone)]
pub(crate) struct Listen {
    /// The router's address.
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// The admin address (API over HTTP; later metrics and the dashboard).
    #[arg(long, env = "SLIPWAY_ADMIN", default_value = "127.0.0.1:8081")]
    pub(crate) admin: SocketAddr,
}

impl Listen {
    /// The addresses for a server started by a command without `--listen` and `--admin`:
    /// `SLIPWAY_LISTEN` and `SLIPWAY_ADMIN`, or the defaults.
    pub(crate) fn from_env() -> anyhow::Result<Listen> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            listen: Listen,
        }
        Only::try_parse_from(["slipway"])
            .map(|only| only.listen)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}\n  hint: SLIPWAY_LISTEN and SLIPWAY_ADMIN take an address such as 127.0.0.1:8080",
                    e.to_string().trim_end()
                )
            })
    }
}

#[derive(clap::Args, Clone)]
pub(crate) struct AppArg {
    /// The app to act on; default: the app of ./slipway.yaml, or the only registered app.
    #[arg(long)]
    pub(crate) app: Option<String>,
    #[command(flatten)]
    pub(crate) env: EnvArg,
}

#[derive(clap::Args, Clone)]
pub(crate) struct EnvArg {
    /// The environment (declared under `environments:` in slipway.yaml).
    #[arg(long = "env", env = "SLIPWAY_ENV", default_value = slipway_control::DEVELOPMENT)]
    pub(crate) environment: String,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Start the server if none is running, deploy every service of DIR/slipway.yaml, print the URLs.
    Up {
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Leave the server running in the background and return.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        env: EnvArg,
    },
    /// Run the server (router, API, reconciler) in the foreground.
    Server {
        #[command(subcommand)]
        command: Option<ServerCommand>,
        #[command(flatten)]
        listen: Listen,
        /// Do not record request figures in the router (only to measure what recording
        /// costs: status figures, /metrics, canary analysis and autoscaling go blind).
        #[arg(long)]
        no_metrics: bool,
        /// Serve every request through hyper instead of the router's HTTP/1.1 fast path
        /// (only to compare the two).
        #[arg(long)]
        no_fast_path: bool,
        /// How many stopped instances of each service keep their logs (the most recent, for at
        /// most 7 days); the logs of older ones are deleted.
        #[arg(long, value_name = "N", default_value_t = 50,
              value_parser = clap::value_parser!(u32).range(1..))]
        keep_logs: u32,
        /// The longest HTTP/1 request head (request line and headers) the router takes; a
        /// longer one is answered 431. From 1KiB to 16MiB.
        #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = head_size)]
        max_request_head: usize,
        /// The most header fields a request may have; more are answered 431.
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        max_request_headers: u32,
        /// How long a client may take to send a request head (also how long an idle
        /// keep-alive connection stays open); a partly sent head is answered 408.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = timeout)]
        request_head_timeout: Duration,
        /// The longest pause allowed while a client sends a request body; then the request
        /// is answered 408.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = timeout)]
        request_body_timeout: Duration,
        /// Also serve HTTPS on this address (e.g. 0.0.0.0:443), with the certificates in
        /// --tls-dir chosen by SNI.
        #[arg(long, value_name = "ADDR")]
        tls_listen: Option<std::net::SocketAddr>,
        /// Where the HTTPS certificates are: `<host>.crt` (the chain, PEM) and `<host>.key`
        /// per host (`*.example.com.crt` for a wildcard), reloaded when they change.
        /// Default: `<data dir>/tls`.
        #[arg(long, value_name = "DIR")]
        tls_dir: Option<std::path::PathBuf>,
        /// Serve the admin listener (API, metrics, dashboard) over HTTPS with this PEM
        /// certificate chain (with --admin-tls-key); reloaded when it changes.
        #[arg(long, value_name = "FILE", requires = "admin_tls_key")]
        admin_tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --admin-tls-cert.
        #[arg(long, value_name = "FILE", requires = "admin_tls_cert")]
        admin_tls_key: Option<std::path::PathBuf>,
        /// Obtain and renew certificates over ACME from this directory URL (e.g.
        /// https://acme-v02.api.letsencrypt.org/directory) for every host the apps serve that
        /// has no certificate file. Needs --tls-listen; the CA must reach this server on ports
        /// 80 (HTTP-01) or 443 (TLS-ALPN-01) for each host.
        #[arg(long, value_name = "URL")]
        acme_directory: Option<String>,
        /// A PEM root certificate to trust for the ACME server's own HTTPS (a test CA).
        #[arg(long, value_name = "FILE", requires = "acme_directory")]
        acme_ca: Option<std::path::PathBuf>,
        /// The contact address of the ACME account.
        #[arg(long, value_name = "EMAIL", requires = "acme_directory")]
        acme_email: Option<String>,
        /// The ACME challenge tried first: http-01 or tls-alpn-01 (after a failure the other
        /// one is tried).
        #[arg(long, value_name = "TYPE", default_value = "http-01", requires = "acme_directory",
              value_parser = str::parse::<slipway_control::acme::ChallengeKind>)]
        acme_challenge: slipway_control::acme::ChallengeKind,
    },
    /// Stop every instance of the app cleanly (the server keeps running).
    Down {
        #[command(flatten)]
        app: AppArg,
    },
    /// Show the status table, refreshed every second (Ctrl-C to quit).
    Top {
        #[command(flatten)]
        app: AppArg,
    },
    /// Show services, serving revision, instances and URLs.
    Status {
        service: Option<String>,
        #[command(flatten)]
        app: AppArg,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the spec and deploy every service whose config changed (or the named ones).
    Deploy {
        services: Vec<String>,
        /// Create a new revision even if nothing changed.
        #[arg(long)]
        force: bool,
        /// Override the spec's deploy strategy: blue-green, canary, rolling or recreate.
        #[arg(long, value_parser = str::parse::<dto::Strategy>)]
        strategy: Option<dto::Strategy>,
        /// Let a change of a database's settings restart the database when it needs to (the
        /// app's connections drop for a few seconds); without it such a deploy is refused.
        #[arg(long)]
        restart_databases: bool,
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(long, short = 'f', default_value = ".")]
        file: PathBuf,
        #[command(flatten)]
        env: EnvArg,
    },
    /// Deploy to one environment the exact build serving in another (no rebuild).
    Promote {
        service: String,
        /// The environment whose serving revision is promoted.
        #[arg(long)]
        from: String,
        /// The environment to deploy it to.
        #[arg(long)]
        to: String,
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(long, short = 'f', default_value = ".")]
        file: PathBuf,
    },
    /// Grant, list and revoke access to the admin listener (API, metrics, dashboard).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the secrets an app's services receive as environment variables.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Reach an app's managed databases (`databases:` in slipway.yaml).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Back up, verify and restore an app's managed databases.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Show the spec as it resolves for an environment.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Split a service's traffic between revisions, e.g. `--to-revisions 7=90,8=10`.
    Traffic {
        service: String,
        /// REVISION=PERCENT pairs summing to 100.
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "to_latest",
            required_unless_present = "to_latest"
        )]
        to_revisions: Vec<String>,
        /// All traffic to the newest ready revision.
        #[arg(long)]
        to_latest: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Name a revision (`green=8`); it is reachable at http://<tag>.<service>.<app>.localhost whatever its share.
    Tag {
        service: String,
        /// TAG=REVISION
        #[arg(conflicts_with = "remove", required_unless_present = "remove")]
        assignment: Option<String>,
        /// Remove this tag.
        #[arg(long)]
        remove: Option<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Show or steer a canary rollout: status, promote, pause, resume, abort.
    Rollout {
        /// `status`, or one of the actions: promote, pause, resume, abort.
        #[arg(value_parser = ["status", "promote", "pause", "resume", "abort"])]
        action: String,
        service: String,
        /// With `status`: keep refreshing until the rollout ends.
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// List a service's revisions.
    Revisions {
        service: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// Switch a service back to the previous (or given) ready revision.
    Rollback {
        service: String,
        /// The revision number to return to.
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Print a service's instance logs, interleaved by time.
    Logs {
        service: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only this revision's instances.
        #[arg(long)]
        revision: Option<u64>,
        /// How many recent lines to print first.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Print the output of the release command instead (of --revision, or the newest).
        #[arg(long, conflicts_with = "follow")]
        release: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Run a one-off command (a data fix, `manage.py createsuperuser`, a shell) in a
    /// revision's code with its env, secrets and volumes, attached to this terminal; exits
    /// with the command's exit code.
    #[command(
        after_help = "Example: slipway run web -- python manage.py createsuperuser --noinput"
    )]
    Run {
        service: String,
        /// The revision whose code and config to use; default: the serving one.
        #[arg(long)]
        revision: Option<u64>,
        #[command(flatten)]
        app: AppArg,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print the event log (the audit trail).
    Events {
        #[arg(long)]
        service: Option<String>,
        /// Keep printing new events as they happen.
        #[arg(short, long)]
        follow: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Every app's events and the server's own (tokens, platform backups, stop), each
        /// line with its app; instead of one app's.
        #[arg(long, conflicts_with = "service")]
        all: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Check a spec file and print every problem with its line and column.
    Validate {
        #[arg(default_value = "slipway.yaml")]
        file: PathBuf,
    },
    /// Print the JSON Schema of slipway.yaml (for editors).
    Schema,
    /// Write Kubernetes or Knative manifests (or a Helm chart) of one environment of
    /// DIR/slipway.yaml; no server is needed. What the target cannot express is listed on
    /// stderr and in the README written beside them.
    Export {
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The engine the manifests are for.
        #[arg(long, value_enum)]
        target: ExportTarget,
        #[command(flatten)]
        env: EnvArg,
        /// The folder to write into (made if missing); default: ./slipway-<target>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Plain manifests, or a Helm chart whose values hold each environment's overlay.
        #[arg(long, value_enum, default_value = "yaml")]
        format: ExportFormat,
        /// Kubernetes: Gateway API HTTPRoutes instead of Ingresses.
        #[arg(long)]
        gateway: bool,
        /// Leave out services that run as native processes instead of refusing to export.
        #[arg(long)]
        skip_native: bool,
        /// Do not ask a running server for the current traffic split and tags (without a
        /// server, all traffic goes to the revision the manifests describe).
        #[arg(long)]
        offline: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportTarget {
    Kubernetes,
    Knative,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    Yaml,
    Helm,
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a token and print it (once: the server keeps only its hash).
    Create {
        /// A name for the token, e.g. `ci` (lowercase letters, digits and `-`); the event
        /// log names it as the actor of every change made with it.
        name: String,
        /// viewer (reads), deployer (also deploys, rolls back, moves traffic, steers
        /// rollouts), admin (also secrets, tokens, the server) or metrics (/metrics only).
        #[arg(long)]
        role: String,
        /// Limit the token to this environment (repeat for more); default: all.
        #[arg(long = "env", value_name = "ENVIRONMENT")]
        environments: Vec<String>,
        /// How long the token is valid, e.g. `30d` or `12h`; default: until revoked.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List the tokens: name, role, environments, created, expires, last used (never values).
    List,
    /// Revoke a token: it is refused from now on.
    Revoke { name: String },
}

#[derive(Subcommand)]
pub(crate) enum SecretCommand {
    /// Set a secret (a new version); the value is read from stdin, or asked for without
    /// echo on a terminal, never taken from the command line.
    Set {
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// List the secrets that are set: names, versions and when they changed (never values).
    List {
        #[command(flatten)]
        app: AppArg,
    },
    /// Remove a secret (revisions that use an older version keep it).
    Rm {
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum DbCommand {
    /// Print the URL the services get (password included).
    Url {
        /// The database's name in slipway.yaml.
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// Open the engine's client (`psql`, `redis-cli`) on the database, credentials filled in.
    Shell {
        /// The database's name in slipway.yaml.
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// Show the settings slipway.yaml set on the database (`settings:`), as last deployed,
    /// with the value the running server has for each.
    Settings {
        /// The database's name in slipway.yaml.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Migrate a PostgreSQL database to a newer major version: a verified backup first, then
    /// pg_upgrade into a new cluster, started on the same socket (the URL does not change);
    /// the old cluster is kept until --remove-old, and --revert goes back to it. The app's
    /// connections fail while the database is down (seconds for a small one).
    Upgrade {
        /// The database's name in slipway.yaml.
        name: String,
        /// The major version to migrate to, e.g. 16; then set `version: "16"` in slipway.yaml.
        #[arg(long, required_unless_present_any = ["revert", "remove_old"], conflicts_with_all = ["revert", "remove_old"])]
        to: Option<String>,
        /// Go back to the cluster the last upgrade kept (without what was written since).
        #[arg(long, conflicts_with = "remove_old")]
        revert: bool,
        /// Remove the cluster the last upgrade kept.
        #[arg(long)]
        remove_old: bool,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum BackupCommand {
    /// Back up a database (all of the app's when none is named) now; each backup is
    /// verified by a restore into a scratch instance before it counts.
    Create {
        /// The database's name in slipway.yaml.
        #[arg(conflicts_with = "platform")]
        database: Option<String>,
        /// Back up Slipway's own state instead: the store (SQLite's online backup), code
        /// snapshots and artifacts; secrets stay encrypted, the master key is left out.
        #[arg(long)]
        platform: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// List the backups, newest first.
    List {
        #[command(flatten)]
        app: AppArg,
    },
    /// Check a backup again: its files against its manifest, and a restore into a scratch
    /// instance against its row counts.
    Verify {
        id: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// Replace a database's contents with a backup, after a safety backup of what is there.
    /// The app keeps running; its requests that need the database fail until it is done.
    Restore {
        /// The backup's id; with --platform, the platform archive's folder.
        id: String,
        /// Restore a platform archive into this data directory (SLIPWAY_HOME, or --data-dir),
        /// which must be fresh, with no server running; then put the master key back.
        #[arg(long, conflicts_with = "to")]
        platform: bool,
        /// Restore into this database instead (made if missing); the original is left alone.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the fully resolved spec of an environment (secrets by name only).
    Show {
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(long, short = 'f', default_value = ".")]
        file: PathBuf,
        #[command(flatten)]
        env: EnvArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum ServerCommand {
    /// Stop the running server: drain and stop every instance, then exit.
    Stop,
}

/// A `--max-request-head` value: a size from 1 KiB to 16 MiB.
fn head_size(text: &str) -> Result<usize, String> {
    const MAX: u64 = 16 << 20;
    match slipway_spec::parse_size(text)? {
        Some(size) if (1024..=MAX).contains(&size) => Ok(size as usize),
        _ => Err(format!(
            "`{}` is not a size from 1KiB to 16MiB",
            text.trim()
        )),
    }
}

/// A timeout flag's value: a duration longer than 0.
fn timeout(text: &str) -> Result<Duration, String> {
    match slipway_spec::parse_duration(text)? {
        d if d.is_zero() => Err("the timeout must be longer than 0".to_owned()),
        d => Ok(d),
    }
}
