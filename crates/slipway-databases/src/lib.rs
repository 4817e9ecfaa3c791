//! Managed databases: a PostgreSQL cluster per app environment and database name, run from
//! the host's own PostgreSQL binaries (Debian's `/usr/lib/postgresql/<major>/bin`).
//! Redis, the same way from the host's `redis-server`, is in [`redis`]; [`Database`] is either.
//!
//! Layout of one database, under `<data_dir>/databases/<app>/<environment>/<name>/` (the folder
//! belongs to the database's operating-system user, mode 0700, so only that user and root reach
//! what is inside):
//!
//! - `database.json`: what it is ([`Meta`]: engine, major version, name);
//! - `data/`: the cluster (`PGDATA`), made by `initdb` in `data.init/` and renamed once complete;
//! - `socket/`: the only way in, a Unix socket (`listen_addresses = ''`): no TCP port at all;
//! - `postgres.log`: the server's output.
//!
//! Who may connect: the cluster's superuser is the operating-system user it runs as, by `peer`
//! authentication (what Slipway uses for administration); the app's role (named after the
//! database) logs in with a generated password (`scram-sha-256`), which the caller keeps
//! encrypted. Staging and production are separate clusters with separate passwords and
//! sockets, so one environment's URL cannot reach another's data.
//!
//! Lifetime: `pg_ctl start` puts the postmaster in a session of its own, without a
//! parent-death signal, so it outlives the Slipway server that started it. A server that
//! crashed finds it running (`pg_ctl status` reads `postmaster.pid` and checks the process) and
//! adopts it ([`Started::Adopted`]).
//!
//! Every call here blocks (it runs the PostgreSQL tools to completion): call it from a
//! blocking thread.

pub mod backup;
pub mod redis;
pub mod retention;
pub mod settings;
mod upgrade;
mod user;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub use redis::{Redis, Reply};
pub use settings::{Applied, Change, Effective, SettingsPlan};
pub use upgrade::Upgraded;
pub use user::OsUser;

/// The port number in the socket's file name (`.s.PGSQL.5432`); nothing listens on TCP.
pub const PG_PORT: u16 = 5432;

/// The longest socket path the kernel takes (`sun_path` is 108 bytes, NUL included).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Why a database operation failed; the message says what, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the user can fix (a missing package, a folder the database user cannot enter).
    #[error("{0}")]
    Setup(String),
    /// A PostgreSQL tool failed; the message quotes its last output lines.
    #[error("{0}")]
    Tool(String),
    /// Reading or writing the database's folder failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and where.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The database engines Slipway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL, from the host's packages.
    Postgres,
    /// Redis, from the host's packages.
    Redis,
}

impl Engine {
    /// `postgres` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Redis => "redis",
        }
    }
}

/// A managed database of either engine.
#[derive(Debug, Clone)]
pub enum Database {
    /// A PostgreSQL cluster.
    Postgres(Postgres),
    /// A Redis server.
    Redis(Redis),
}

impl Database {
    /// Opens the database of `engine` in `dir` (see [`Postgres::open`], [`Redis::open`]).
    pub fn open(
        engine: Engine,
        dir: &Path,
        name: &str,
        version: Option<&str>,
        user: OsUser,
    ) -> Result<Database> {
        if let Some(meta) = read_meta(dir)?
            && meta.engine != engine
        {
            return Err(Error::Setup(format!(
                "database {name} holds {} data (in {}), and the spec says `engine: {}`; Slipway does not convert data between engines\n  hint: keep `engine: {}`, or give the new database another name",
                meta.engine.as_str(),
                dir.display(),
                engine.as_str(),
                meta.engine.as_str()
            )));
        }
        Ok(match engine {
            Engine::Postgres => Database::Postgres(Postgres::open(dir, name, version, user)?),
            Engine::Redis => Database::Redis(Redis::open(dir, name, version, user)?),
        })
    }

    /// What it is.
    pub fn meta(&self) -> &Meta {
        match self {
            Database::Postgres(p) => p.meta(),
            Database::Redis(r) => r.meta(),
        }
    }

    /// Makes, starts or adopts it (see [`Postgres::ensure_with_settings`], [`Redis::ensure`]);
    /// a database made now starts with `settings`.
    pub fn ensure(&self, password: &str, settings: &BTreeMap<String, String>) -> Result<Started> {
        match self {
            Database::Postgres(p) => p.ensure_with_settings(password, settings),
            Database::Redis(r) => r.ensure_with_settings(password, settings),
        }
    }

    /// What applying `settings` does, decided before anything changes (see
    /// [`Postgres::plan_settings`], [`Redis::plan_settings`]).
    pub fn plan_settings(
        &self,
        password: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<SettingsPlan> {
        match self {
            Database::Postgres(p) => p.plan_settings(settings),
            Database::Redis(r) => r.plan_settings(password, settings),
        }
    }

    /// Applies a plan (see [`Postgres::apply_settings`], [`Redis::apply_settings`]).
    pub fn apply_settings(&self, password: &str, plan: &SettingsPlan) -> Result<Applied> {
        match self {
            Database::Postgres(p) => p.apply_settings(plan),
            Database::Redis(r) => r.apply_settings(password, plan),
        }
    }

    /// The settings the spec set, with the running server's value of each.
    pub fn effective_settings(&self, password: &str) -> Result<Vec<Effective>> {
        match self {
            Database::Postgres(p) => p.effective_settings(),
            Database::Redis(r) => r.effective_settings(password),
        }
    }

    /// A protocol-level probe.
    pub fn health(&self) -> Health {
        match self {
            Database::Postgres(p) => p.health(),
            Database::Redis(r) => r.health(),
        }
    }

    /// Stops it; returns whether it was running.
    pub fn stop(&self) -> Result<bool> {
        match self {
            Database::Postgres(p) => p.stop(),
            Database::Redis(r) => r.stop(),
        }
    }

    /// The URL the app gets.
    pub fn url(&self, password: &str) -> String {
        match self {
            Database::Postgres(p) => p.url(password),
            Database::Redis(r) => r.url(password),
        }
    }

    /// The engine's client (`psql`, `redis-cli`) and where it connects: the socket's folder
    /// (PostgreSQL) or the socket (Redis).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        match self {
            Database::Postgres(p) => (p.tool("psql"), p.socket_dir()),
            Database::Redis(r) => (PathBuf::from("/usr/bin/redis-cli"), r.socket()),
        }
    }
}

/// What a database folder holds, written once when it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The engine.
    pub engine: Engine,
    /// The major version the data was made with, e.g. `15`.
    pub version: String,
    /// The database's name in the spec; also its role and database name inside the cluster.
    pub name: String,
}

/// How [`Postgres::ensure`] found the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It was running already (started by this server, or by one that crashed: adopted).
    Adopted,
    /// It was stopped and has been started.
    Started,
    /// It did not exist: it was made (`initdb`) and started.
    Created,
}

/// What a protocol-level probe (`pg_isready`) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// It accepts connections.
    Ready,
    /// It answers but refuses connections (starting up, shutting down, recovering).
    Starting,
    /// Nothing answers on its socket.
    Down,
}

impl Health {
    /// `ready`, `starting` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Starting => "starting",
            Health::Down => "down",
        }
    }
}

/// Where the host's PostgreSQL binaries of a major version are: `SLIPWAY_POSTGRES_<major>_BIN`
/// when set (e.g. `SLIPWAY_POSTGRES_16_BIN`, for a version installed elsewhere), else
/// `SLIPWAY_POSTGRES_BIN` when set (for every version), else `/usr/lib/postgresql/<major>/bin`.
pub fn postgres_bin(version: &str) -> PathBuf {
    std::env::var_os(format!("SLIPWAY_POSTGRES_{version}_BIN"))
        .or_else(|| std::env::var_os("SLIPWAY_POSTGRES_BIN"))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/usr/lib/postgresql").join(version).join("bin"))
}

/// The newest PostgreSQL major version installed under `/usr/lib/postgresql`, if any.
pub fn newest_postgres() -> Option<String> {
    let mut versions: Vec<u32> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|v: &u32| postgres_bin(&v.to_string()).join("postgres").exists())
        .collect();
    versions.sort_unstable();
    versions.last().map(u32::to_string)
}

/// Whether a database folder whose data is of major version `data` serves a spec that asks
/// for `asked`: the same version, or one it was explicitly upgraded from (`slipway db
/// upgrade`) while the old cluster is still kept, so that the revisions made before the
/// upgrade keep starting until the spec says the new version and the old cluster is removed.
pub fn serves_version(dir: &Path, data: &str, asked: &str) -> bool {
    data == asked
        || (major_of(data) > major_of(asked)
            && dir
                .join(format!("data-{asked}"))
                .join("PG_VERSION")
                .exists())
}

/// The number of a major version (`"15"` is 15); 0 for anything else.
fn major_of(version: &str) -> u32 {
    version.parse().unwrap_or(0)
}

/// A random password: 48 hexadecimal characters (192 bits), safe in a URL as it is.
pub fn generate_password() -> Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::Setup(format!(
            "cannot get random bytes for a database password: {e}"
        ))
    })?;
    Ok(hex::encode(bytes))
}

/// Reads the [`Meta`] of the database folder `dir`, if it has one.
pub fn read_meta(dir: &Path) -> Result<Option<Meta>> {
    let path = dir.join("database.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Setup(format!(
                "{} cannot be read ({e}); it describes the database in that folder",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
    }
}

/// One managed PostgreSQL cluster.
#[derive(Debug, Clone)]
pub struct Postgres {
    dir: PathBuf,
    meta: Meta,
    bin: PathBuf,
    pub(crate) user: OsUser,
}

impl Postgres {
    /// The database in `dir` named `name`, of major `version` (`None`: the version it was made
    /// with, else the newest installed), run as `user`. Checks that the binaries of that version
    /// are installed and that an existing database has the same major version: a major version
    /// change needs its data migrated, which this refuses to do implicitly.
    pub fn open(dir: &Path, name: &str, version: Option<&str>, user: OsUser) -> Result<Postgres> {
        let existing = read_meta(dir)?;
        let version = match (version, &existing) {
            (Some(v), _) => v.to_owned(),
            (None, Some(meta)) => meta.version.clone(),
            (None, None) => newest_postgres().ok_or_else(|| {
                Error::Setup(
                    "no PostgreSQL is installed on this host (nothing under /usr/lib/postgresql)\n  hint: install it, e.g. `apt-get install postgresql`".into(),
                )
            })?,
        };
        let version = match &existing {
            Some(meta) if serves_version(dir, &meta.version, &version) => meta.version.clone(),
            _ => version,
        };
        if let Some(meta) = &existing
            && meta.version != version
        {
            let hint = if major_of(&version) > major_of(&meta.version) {
                format!(
                    "migrate it with `slipway db upgrade {name} --to {version}` (a verified backup first, the old cluster kept), or keep `version: \"{}\"` in the spec",
                    meta.version
                )
            } else {
                format!(
                    "set `version: \"{}\"` in the spec; or go back to the cluster an upgrade kept with `slipway db upgrade {name} --revert`",
                    meta.version
                )
            };
            return Err(Error::Setup(format!(
                "database {name} holds PostgreSQL {} data (in {}), and the spec asks for version {version}; a major version change needs the data migrated, which Slipway does not do implicitly\n  hint: {hint}",
                meta.version,
                dir.display(),
            )));
        }
        let bin = postgres_bin(&version);
        if !bin.join("postgres").exists() {
            return Err(Error::Setup(format!(
                "PostgreSQL {version} is not installed on this host ({} has no `postgres`), so database {name} cannot run\n  hint: install it (Debian: `apt-get install postgresql-{version}`), or ask for an installed version in the spec",
                bin.display()
            )));
        }
        let socket = dir.join("socket").join(format!(".s.PGSQL.{PG_PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Setup(format!(
                "the socket path of database {name} would be {} bytes long ({}), more than the {MAX_SOCKET_PATH} a Unix socket allows\n  hint: use a shorter data directory (`slipway server --data-dir`)",
                socket.as_os_str().len(),
                socket.display()
            )));
        }
        if dir.to_str().is_none_or(|d| d.contains(['\'', '\\', '\n'])) {
            return Err(Error::Setup(format!(
                "the folder of database {name} ({}) has a quote, a backslash, a line break or non-UTF-8 bytes in its path, which PostgreSQL's config cannot hold\n  hint: use another data directory",
                dir.display()
            )));
        }
        Ok(Postgres {
            dir: dir.to_path_buf(),
            meta: Meta {
                engine: Engine::Postgres,
                version,
                name: name.to_owned(),
            },
            bin,
            user,
        })
    }

    /// What it is.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The cluster's data (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The folder of its Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// Its server log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Whether the cluster has been made.
    pub fn exists(&self) -> bool {
        self.data_dir().join("PG_VERSION").exists()
    }

    /// The URL the app connects with: `postgresql://<name>:<password>@/<name>?host=<socket dir>`
    /// (libpq, psycopg and most drivers read a socket folder from `host`).
    pub fn url(&self, password: &str) -> String {
        format!(
            "postgresql://{name}:{password}@/{name}?host={}",
            encode_path(&self.socket_dir()),
            name = self.meta.name
        )
    }

    /// A PostgreSQL tool of this version.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Makes the cluster if it does not exist, starts it if it is not running, and makes sure
    /// the app's role exists with `password` and owns its database.
    pub fn ensure(&self, password: &str) -> Result<Started> {
        self.ensure_with_settings(password, &BTreeMap::new())
    }

    /// [`Postgres::ensure`], a cluster made now starting with `settings` (checked by
    /// PostgreSQL first). The settings of a cluster that exists are left as they are: a
    /// deploy changes them through [`Postgres::plan_settings`] and
    /// [`Postgres::apply_settings`], saying first what the change does.
    pub fn ensure_with_settings(
        &self,
        password: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<Started> {
        let started = if !self.exists() {
            self.init()?;
            self.write_initial_settings(settings)?;
            self.start()?;
            Started::Created
        } else if self.running()? {
            Started::Adopted
        } else {
            self.start()?;
            Started::Started
        };
        self.ensure_role(password)?;
        Ok(started)
    }

    /// `initdb` into `data.init/` as the database user, the config for a socket-only server,
    /// then the rename to `data/` (so a crash halfway leaves no half-made cluster behind).
    fn init(&self) -> Result<()> {
        self.prepare_dir()?;
        let staging = self.dir.join("data.init");
        self.make_cluster(&self.bin, &staging)?;
        fs::rename(&staging, self.data_dir()).map_err(io(format!(
            "cannot rename {} to {}",
            staging.display(),
            self.data_dir().display()
        )))?;
        self.write_meta()
    }

    /// Writes `database.json`.
    fn write_meta(&self) -> Result<()> {
        let meta = serde_json::to_vec_pretty(&self.meta).unwrap_or_default();
        let path = self.dir.join("database.json");
        fs::write(&path, meta).map_err(io(format!("cannot write {}", path.display())))
    }

    /// `initdb` of the binaries in `bin` into `staging` (removed first if a crash left it),
    /// as the database user, and the config of a socket-only server.
    fn make_cluster(&self, bin: &Path, staging: &Path) -> Result<()> {
        if staging.exists() {
            fs::remove_dir_all(staging)
                .map_err(io(format!("cannot remove {}", staging.display())))?;
        }
        let mut initdb = self.as_user(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(staging)
            .args(["-U", &self.user.name, "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=peer", "--auth-host=reject"]);
        self.run("initdb", &mut initdb)?;
        let conf = staging.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).map_err(io(format!("cannot read {}", conf.display())))?;
        text.push_str(&format!(
            "\n# Slipway: a Unix socket only, in a folder only this user (and root) can enter.\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {PG_PORT}\n\n# Slipway: the settings of slipway.yaml (`databases.<name>.settings`).\n{}\n",
            self.socket_dir().display(),
            settings::INCLUDE_LINE
        ));
        fs::write(&conf, text).map_err(io(format!("cannot write {}", conf.display())))?;
        let hba = staging.join("pg_hba.conf");
        fs::write(
            &hba,
            format!(
                "# Slipway: the superuser by peer (the operating-system user), the app's role by password.\nlocal all {} peer\nlocal all all scram-sha-256\n",
                self.user.name
            ),
        )
        .map_err(io(format!("cannot write {}", hba.display())))
    }

    /// Makes the database's folder and its socket folder, owned by the database user, mode
    /// 0700; checks first that the user can reach them.
    fn prepare_dir(&self) -> Result<()> {
        for dir in [&self.dir, &self.socket_dir()] {
            fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
            self.user.own(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io(format!("cannot set the mode of {}", dir.display())))?;
        }
        self.user.check_reaches(&self.dir)
    }

    /// Whether its postmaster runs (`pg_ctl status`: `postmaster.pid` names a live process).
    pub fn running(&self) -> Result<bool> {
        let status = self
            .as_user(&self.tool("pg_ctl"))
            .arg("status")
            .arg("-D")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(io(format!("cannot run {}", self.tool("pg_ctl").display())))?;
        Ok(status.success())
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start(&self) -> Result<()> {
        // The socket folder is not part of the cluster: make it again if it went missing.
        fs::create_dir_all(self.socket_dir())
            .map_err(io(format!("cannot create {}", self.socket_dir().display())))?;
        self.user.own(&self.socket_dir())?;
        let mut start = self.as_user(&self.tool("pg_ctl"));
        start
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "120", "-s"]);
        self.run("pg_ctl start", &mut start).map_err(|e| {
            Error::Tool(format!(
                "{e}\n  the server's log: {}",
                last_lines(&self.log_file(), 10)
            ))
        })
    }

    /// `pg_ctl stop -m fast`: sessions are ended, the data is checkpointed. Returns whether it
    /// was running.
    pub fn stop(&self) -> Result<bool> {
        if !self.exists() || !self.running()? {
            return Ok(false);
        }
        let mut stop = self.as_user(&self.tool("pg_ctl"));
        stop.arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "120", "-s"]);
        self.run("pg_ctl stop", &mut stop)?;
        Ok(true)
    }

    /// `pg_ctl stop -m immediate`: no checkpoint, for a scratch cluster about to be removed.
    pub fn stop_immediately(&self) -> Result<bool> {
        if !self.exists() || !self.running()? {
            return Ok(false);
        }
        let mut stop = self.as_user(&self.tool("pg_ctl"));
        stop.arg("stop").arg("-D").arg(self.data_dir()).args([
            "-m",
            "immediate",
            "-w",
            "-t",
            "120",
            "-s",
        ]);
        self.run("pg_ctl stop", &mut stop)?;
        Ok(true)
    }

    /// Probes the server at the protocol level with `pg_isready`: a startup packet, answered
    /// before any authentication, so it never holds a connection slot.
    pub fn health(&self) -> Health {
        let status = Command::new(self.tool("pg_isready"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &PG_PORT.to_string(), "-t", "3", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status.ok().and_then(|s| s.code()) {
            Some(0) => Health::Ready,
            Some(1) => Health::Starting,
            _ => Health::Down,
        }
    }

    /// Creates the app's role and database when missing, and sets the role's password.
    fn ensure_role(&self, password: &str) -> Result<()> {
        let sql = "\
SELECT format('CREATE ROLE %I LOGIN', :'name') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')\\gexec
ALTER ROLE :\"name\" PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')\\gexec
";
        self.psql_admin(
            "postgres",
            sql,
            &[("name", &self.meta.name), ("password", password)],
        )
        .map(|_| ())
    }

    /// Runs `sql` with `psql` as the superuser in database `db`, with `-v` variables; returns
    /// its output (unaligned, tuples only).
    pub fn psql_admin(&self, db: &str, sql: &str, vars: &[(&str, &str)]) -> Result<String> {
        let mut psql = self.as_user(&self.tool("psql"));
        psql.arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &PG_PORT.to_string(), "-U", &self.user.name, "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        for (name, value) in vars {
            psql.arg("-v").arg(format!("{name}={value}"));
        }
        psql.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = psql
            .spawn()
            .map_err(io(format!("cannot run {}", self.tool("psql").display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(sql.as_bytes())
                .map_err(io("cannot write to psql"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io("cannot wait for psql"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Tool(format!(
                "psql on database {} failed ({}): {}",
                self.meta.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// A command that runs as the database's user, in its folder.
    pub(crate) fn as_user(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(&self.dir).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PG")) {
                command.env_remove(key);
            }
        }
        if rustix::process::geteuid().as_raw() != self.user.uid {
            command.uid(self.user.uid).gid(self.user.gid);
        }
        command
    }

    /// Runs a tool to completion, its output in a file (a postmaster it starts can never hold
    /// a pipe of ours open); fails with its last lines.
    fn run(&self, what: &str, command: &mut Command) -> Result<()> {
        let out_path = self.dir.join(format!("{}.out", what.replace(' ', "-")));
        let out = fs::File::create(&out_path)
            .map_err(io(format!("cannot create {}", out_path.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("cannot open {}", out_path.display())))?;
        let status = command
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(io(format!("cannot run {what}")))?;
        if status.success() {
            let _ = fs::remove_file(&out_path);
            Ok(())
        } else {
            Err(Error::Tool(format!(
                "{what} for database {} failed ({status}): {}",
                self.meta.name,
                last_lines(&out_path, 10)
            )))
        }
    }
}

/// The last `n` lines of a file, joined with ` / ` (empty if it cannot be read).
pub(crate) fn last_lines(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// Percent-encodes a path for a URL's query, keeping `/` and unreserved characters.
pub(crate) fn encode_path(path: &Path) -> String {
    let mut out = String::new();
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(*byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Whether the file at `path` is owned by `uid`.
pub fn owned_by(path: &Path, uid: u32) -> bool {
    fs::metadata(path).is_ok_and(|m| m.uid() == uid)
}

#[cfg(test)]
mod tests;
