//! A managed Redis: the host's `redis-server` on a Unix socket only (`port 0`), with
//! `requirepass`, an append-only file (every write reaches the kernel before the reply: a
//! `kill -9` of Redis or of Slipway loses nothing) and RDB snapshots, daemonized (a session of
//! its own, so it outlives a crashed Slipway server, which adopts it).
//!
//! Layout of its folder (the database user's, mode 0700): `redis.conf` (0600: it holds the
//! password), `data/` (AOF and `dump.rdb`), `socket/redis.sock`, `redis.pid`, `redis.log`,
//! `slipway.settings.conf` (the spec's `settings`, included first by `redis.conf`, so that
//! Slipway's own lines come after and win).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::settings::{self, Applied, Change, SettingsPlan};
use crate::{Engine, Error, Health, Meta, OsUser, Result, Started, io, read_meta};

/// Where `redis-server` is: `SLIPWAY_REDIS_SERVER`, else `/usr/bin/redis-server`.
pub fn redis_server() -> PathBuf {
    std::env::var_os("SLIPWAY_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"))
}

/// The installed major version, from `redis-server --version` (`Redis server v=7.0.15 …`).
pub fn installed_version() -> Option<String> {
    let out = Command::new(redis_server())
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("v=").nth(1)?.split([' ', '.']).next()?;
    Some(version.to_owned())
}

/// One managed Redis.
#[derive(Debug, Clone)]
pub struct Redis {
    dir: PathBuf,
    meta: Meta,
    user: OsUser,
}

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n` (None: `$-1`)
    Bulk(Option<Vec<u8>>),
    /// `*n` of replies
    Array(Vec<Reply>),
}

impl Redis {
    /// The Redis in `dir` named `name`; `version` (a major), when given, must be the installed
    /// one and the one the data was made with.
    pub fn open(dir: &Path, name: &str, version: Option<&str>, user: OsUser) -> Result<Redis> {
        if !redis_server().exists() {
            return Err(Error::Setup(format!(
                "Redis is not installed on this host ({} is missing), so database {name} cannot run\n  hint: install it (Debian: `apt-get install redis-server`)",
                redis_server().display()
            )));
        }
        let installed = installed_version().ok_or_else(|| {
            Error::Setup(format!(
                "cannot tell the version of {}; is it Redis?",
                redis_server().display()
            ))
        })?;
        let existing = read_meta(dir)?;
        if let Some(asked) = version
            && asked != installed
        {
            return Err(Error::Setup(format!(
                "database {name} asks for Redis {asked}, and this host has Redis {installed}\n  hint: ask for version \"{installed}\", or leave `version` out"
            )));
        }
        if let Some(meta) = &existing
            && meta.version != installed
        {
            return Err(Error::Setup(format!(
                "database {name} holds Redis {} data (in {}), and this host runs Redis {installed}; Slipway does not change a database's major version implicitly",
                meta.version,
                dir.display()
            )));
        }
        let socket = dir.join("socket").join("redis.sock");
        if socket.as_os_str().len() > crate::MAX_SOCKET_PATH {
            return Err(Error::Setup(format!(
                "the socket path of database {name} would be too long for a Unix socket ({})\n  hint: use a shorter data directory (`slipway server --data-dir`)",
                socket.display()
            )));
        }
        if dir
            .to_str()
            .is_none_or(|d| d.contains(['"', '\\', '\n', ' ']))
        {
            return Err(Error::Setup(format!(
                "the folder of database {name} ({}) has a space, a quote, a backslash or a line break in its path, which redis.conf cannot hold\n  hint: use another data directory",
                dir.display()
            )));
        }
        Ok(Redis {
            dir: dir.to_path_buf(),
            meta: Meta {
                engine: Engine::Redis,
                version: installed,
                name: name.to_owned(),
            },
            user,
        })
    }

    /// What it is.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Its Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("socket").join("redis.sock")
    }

    /// Its data folder (AOF, `dump.rdb`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `unix://:<password>@<socket>?db=0` (redis-py, and most clients, read it).
    pub fn url(&self, password: &str) -> String {
        format!(
            "unix://:{password}@{}?db=0",
            crate::encode_path(&self.socket())
        )
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }

    /// Whether it has been made.
    pub fn exists(&self) -> bool {
        self.dir.join("database.json").exists()
    }

    /// Writes its config (with `password`), makes it if needed, starts it if it does not
    /// answer, and waits until it does.
    pub fn ensure(&self, password: &str) -> Result<Started> {
        self.ensure_with_settings(password, &BTreeMap::new())
    }

    /// [`Redis::ensure`], a database made now starting with `settings`. The settings of one
    /// that exists are left as they are: a deploy changes them through
    /// [`Redis::plan_settings`] and [`Redis::apply_settings`].
    pub fn ensure_with_settings(
        &self,
        password: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<Started> {
        let created = !self.exists();
        if created {
            for dir in [&self.dir, &self.data_dir(), &self.dir.join("socket")] {
                fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
                self.user.own(dir)?;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io(format!("cannot set the mode of {}", dir.display())))?;
            }
            self.user.check_reaches(&self.dir)?;
        }
        // Redis refuses to start when an included file is missing.
        if created || !self.settings_file().exists() {
            let initial = if created {
                settings.clone()
            } else {
                BTreeMap::new()
            };
            self.write_settings(&initial)?;
        }
        // The config is written every time: the password may have been set anew.
        let conf = format!(
            "# Written by Slipway at every start.\n\
             include {settings}\n\
             daemonize yes\n\
             port 0\n\
             unixsocket {socket}\n\
             unixsocketperm 700\n\
             requirepass \"{password}\"\n\
             dir {data}\n\
             pidfile {pid}\n\
             logfile {log}\n\
             appendonly yes\n\
             appendfsync everysec\n\
             save 3600 1 300 100 60 10000\n\
             protected-mode yes\n",
            socket = self.socket().display(),
            data = self.data_dir().display(),
            pid = self.pid_file().display(),
            log = self.dir.join("redis.log").display(),
            settings = self.settings_file().display(),
        );
        fs::write(self.conf(), conf)
            .map_err(io(format!("cannot write {}", self.conf().display())))?;
        fs::set_permissions(self.conf(), fs::Permissions::from_mode(0o600)).map_err(io(
            format!("cannot set the mode of {}", self.conf().display()),
        ))?;
        self.user.own(&self.conf())?;
        if created {
            let meta = serde_json::to_vec_pretty(&self.meta).unwrap_or_default();
            let path = self.dir.join("database.json");
            fs::write(&path, meta).map_err(io(format!("cannot write {}", path.display())))?;
        }
        if self.health() != Health::Down {
            // Running already (a server that crashed started it): adopted as it is.
            return Ok(Started::Adopted);
        }
        self.start(password)?;
        Ok(if created {
            Started::Created
        } else {
            Started::Started
        })
    }

    /// Starts it and waits until an authenticated PING answers (an unauthenticated one is
    /// refused with NOAUTH even while the data still loads).
    fn start(&self, password: &str) -> Result<()> {
        let _ = fs::remove_file(self.socket());
        let mut command = Command::new(redis_server());
        command
            .arg(self.conf())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if rustix::process::geteuid().as_raw() != self.user.uid {
            use std::os::unix::process::CommandExt;
            command.uid(self.user.uid).gid(self.user.gid);
        }
        let status = command
            .status()
            .map_err(io(format!("cannot run {}", redis_server().display())))?;
        let log = self.dir.join("redis.log");
        if !status.success() {
            return Err(Error::Tool(format!(
                "redis-server for database {} failed ({status}): {}",
                self.meta.name,
                crate::last_lines(&log, 10)
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.command(password, &[b"PING".as_slice()]) {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() > deadline => {
                    return Err(Error::Tool(format!(
                        "redis-server for database {} did not answer within 60 s: {}",
                        self.meta.name,
                        crate::last_lines(&log, 10)
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// PING without a password: `+PONG`, or `-NOAUTH` (it answers, it wants the password)
    /// is ready; `-LOADING` is starting; no answer is down. (Redis checks the password
    /// before it says it is loading, so a server loading a large dataset shows as ready here.)
    pub fn health(&self) -> Health {
        match request(&self.socket(), &[&[b"PING".as_slice()]]) {
            Ok(replies) => match replies.first() {
                Some(Reply::Error(e)) if e.starts_with("LOADING") => Health::Starting,
                Some(_) => Health::Ready,
                None => Health::Down,
            },
            Err(_) => Health::Down,
        }
    }

    /// Sends one command after AUTH; returns its reply, an error reply as an error.
    pub fn command(&self, password: &str, args: &[&[u8]]) -> Result<Reply> {
        let replies = request(
            &self.socket(),
            &[&[b"AUTH".as_slice(), password.as_bytes()], args],
        )
        .map_err(|e| {
            Error::Tool(format!(
                "cannot talk to Redis database {} on {}: {e}",
                self.meta.name,
                self.socket().display()
            ))
        })?;
        for reply in &replies {
            if let Reply::Error(e) = reply {
                return Err(Error::Tool(format!(
                    "Redis database {} answered `{e}`",
                    self.meta.name
                )));
            }
        }
        Ok(replies.into_iter().nth(1).unwrap_or(Reply::Bulk(None)))
    }

    /// Stops it (SIGTERM: it flushes its append-only file and exits) and waits; returns
    /// whether it was running.
    pub fn stop(&self) -> Result<bool> {
        let Some(pid) = fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .filter(|pid| is_redis(*pid))
        else {
            return Ok(false);
        };
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while is_redis(pid) {
            if Instant::now() > deadline {
                return Err(Error::Tool(format!(
                    "Redis database {} (pid {pid}) did not stop within 60 s of SIGTERM",
                    self.meta.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(true)
    }
}

// === impl Redis (settings) ===

impl Redis {
    /// The file of the spec's settings, which `redis.conf` includes.
    pub fn settings_file(&self) -> PathBuf {
        self.dir.join(settings::SETTINGS_FILE)
    }

    /// The settings the file holds now (what was last applied).
    pub fn written_settings(&self) -> Result<BTreeMap<String, String>> {
        match fs::read_to_string(self.settings_file()) {
            Ok(text) => Ok(settings::parse_redis(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io(format!(
                "cannot read {}",
                self.settings_file().display()
            ))(e)),
        }
    }

    /// Writes the settings file atomically (a temporary file, then a rename), mode 0600.
    fn write_settings(&self, values: &BTreeMap<String, String>) -> Result<()> {
        let path = self.settings_file();
        let tmp = self.dir.join(format!(".{}.tmp", settings::SETTINGS_FILE));
        fs::write(&tmp, settings::render_redis(values))
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .map_err(io(format!("cannot set the mode of {}", tmp.display())))?;
        self.user.own(&tmp)?;
        fs::rename(&tmp, &path).map_err(io(format!(
            "cannot rename {} to {}",
            tmp.display(),
            path.display()
        )))
    }

    /// Decides what applying `values` does, changing nothing: `CONFIG GET` gives each
    /// changed setting's value now (a name Redis does not know is refused), and setting it
    /// to that same value tells a setting Redis changes in place from one it only reads at
    /// start (`can't set immutable config`). A setting the spec no longer sets goes back to
    /// its default only at a start.
    pub fn plan_settings(
        &self,
        password: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<SettingsPlan> {
        let before = self.written_settings()?;
        let running = self.health() != Health::Down;
        let mut plan = SettingsPlan {
            database: self.meta.name.clone(),
            changes: Vec::new(),
            running,
            settings: values.clone(),
        };
        for (name, _, to) in settings::diff(&before, values) {
            let mut change = Change {
                name: name.clone(),
                from: None,
                to: to.clone(),
                restart: to.is_none(),
            };
            if running {
                let got = self.command(password, &[b"CONFIG", b"GET", name.as_bytes()])?;
                let Reply::Array(pair) = got else {
                    continue;
                };
                let Some(now) = pair.get(1).map(text) else {
                    return Err(Error::Setup(format!(
                        "Redis does not know the setting `{name}`\n  hint: fix `databases.{}.settings` in slipway.yaml; nothing was changed",
                        self.meta.name
                    )));
                };
                if to.as_deref() == Some(now.as_str()) {
                    continue;
                }
                if let Err(e) = self.command(
                    password,
                    &[b"CONFIG", b"SET", name.as_bytes(), now.as_bytes()],
                ) {
                    if e.to_string().contains("immutable") {
                        change.restart = true;
                    } else {
                        return Err(e);
                    }
                }
                change.from = Some(now);
            }
            plan.changes.push(change);
        }
        Ok(plan)
    }

    /// Applies a plan made by [`Redis::plan_settings`]: the changes Redis makes in place in
    /// one `CONFIG SET` (all or nothing: a refused value changes none, and the refusal is
    /// Redis's own), then the file; a restart only when a change needs it. A restart that
    /// fails puts the previous file back and starts Redis again.
    pub fn apply_settings(&self, password: &str, plan: &SettingsPlan) -> Result<Applied> {
        let before = self.written_settings()?;
        if before == plan.settings {
            return Ok(Applied::Unchanged);
        }
        if !plan.running {
            self.write_settings(&plan.settings)?;
            return Ok(Applied::Written);
        }
        let in_place: Vec<(&str, &str)> = plan
            .changes
            .iter()
            .filter(|c| !c.restart)
            .filter_map(|c| Some((c.name.as_str(), c.to.as_deref()?)))
            .collect();
        if !in_place.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"CONFIG", b"SET"];
            for (name, value) in &in_place {
                args.push(name.as_bytes());
                args.push(value.as_bytes());
            }
            self.command(password, &args).map_err(|e| {
                Error::Setup(format!(
                    "Redis refuses these settings: {e}\n  hint: fix `databases.{}.settings` in slipway.yaml; nothing was changed",
                    self.meta.name
                ))
            })?;
        }
        self.write_settings(&plan.settings)?;
        if !plan.needs_restart() {
            return Ok(Applied::Reloaded);
        }
        let started = Instant::now();
        self.stop()?;
        if let Err(e) = self.start(password) {
            self.write_settings(&before)?;
            self.start(password)?;
            return Err(Error::Setup(format!(
                "Redis did not start with these settings, so it was started again with the previous ones: {e}\n  hint: fix `databases.{}.settings` in slipway.yaml",
                self.meta.name
            )));
        }
        Ok(Applied::Restarted {
            downtime_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The settings the spec set, with the running server's value of each (`CONFIG GET`).
    pub fn effective_settings(&self, password: &str) -> Result<Vec<settings::Effective>> {
        let running = self.health() != Health::Down;
        self.written_settings()?
            .into_iter()
            .map(|(name, value)| {
                let now = if running {
                    match self.command(password, &[b"CONFIG", b"GET", name.as_bytes()])? {
                        Reply::Array(pair) => pair.get(1).map(text),
                        _ => None,
                    }
                } else {
                    None
                };
                Ok(settings::Effective {
                    pending_restart: now.as_ref().is_some_and(|n| *n != value),
                    name,
                    value,
                    now,
                })
            })
            .collect()
    }
}

/// Whether `pid` is a live redis-server.
fn is_redis(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.contains("(redis-server)")
            && !stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'))
    })
}

/// Sends commands on one connection to the socket and reads one reply to each.
pub fn request(socket: &Path, commands: &[&[&[u8]]]) -> std::io::Result<Vec<Reply>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut out = Vec::new();
    for args in commands {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in *args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
    stream.write_all(&out)?;
    let mut reader = BufReader::new(stream);
    commands.iter().map(|_| read_reply(&mut reader)).collect()
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one RESP2 reply.
pub fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("Redis closed the connection"));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or_else(|| bad("empty reply"))?;
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| bad("bad integer reply")),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad("bad bulk length"))?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0; len as usize + 2];
            std::io::Read::read_exact(reader, &mut buf)?;
            buf.truncate(len as usize);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad("bad array length"))?;
            (0..len.max(0))
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(bad("unknown reply type")),
    }
}

/// Reads `name:value` from an `INFO` section's text.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn text(reply: &Reply) -> String {
    match reply {
        Reply::Simple(s) | Reply::Error(s) => s.clone(),
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        Reply::Integer(n) => n.to_string(),
        _ => String::new(),
    }
}

impl Redis {
    /// Takes an RDB snapshot and copies it to `dest`; returns the number of keys it holds.
    /// Writes are paused (`CLIENT PAUSE … WRITE`: they wait, they do not fail) for the instant
    /// between counting the keys and the fork of BGSAVE, so the count is exactly the
    /// snapshot's.
    pub fn snapshot(&self, password: &str, dest: &Path) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(600);
        // One save at a time: wait for one already running (say, a scheduled `save`).
        loop {
            let info = text(&self.command(password, &[b"INFO".as_slice(), b"persistence"])?);
            if info_field(&info, "rdb_bgsave_in_progress") == Some("0") {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Tool("a Redis background save never ended".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let replies = request(
            &self.socket(),
            &[
                &[b"AUTH".as_slice(), password.as_bytes()],
                &[b"CLIENT".as_slice(), b"PAUSE", b"10000", b"WRITE"],
                &[b"DBSIZE".as_slice()],
                &[b"BGSAVE".as_slice()],
                &[b"CLIENT".as_slice(), b"UNPAUSE"],
            ],
        )
        .map_err(|e| {
            Error::Tool(format!(
                "cannot talk to Redis database {}: {e}",
                self.meta.name
            ))
        })?;
        if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
            return Err(Error::Tool(format!(
                "Redis database {} refused the snapshot: {e}",
                self.meta.name
            )));
        }
        let keys = match replies[2] {
            Reply::Integer(n) => n.max(0) as u64,
            _ => return Err(Error::Tool("DBSIZE gave no number".into())),
        };
        loop {
            let info = text(&self.command(password, &[b"INFO".as_slice(), b"persistence"])?);
            if info_field(&info, "rdb_bgsave_in_progress") == Some("0") {
                if info_field(&info, "rdb_last_bgsave_status") != Some("ok") {
                    return Err(Error::Tool(format!(
                        "Redis database {} could not write its snapshot (rdb_last_bgsave_status is not ok; see {})",
                        self.meta.name,
                        self.dir.join("redis.log").display()
                    )));
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Tool(
                    "the Redis snapshot did not end within 10 minutes".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        fs::copy(self.data_dir().join("dump.rdb"), dest).map_err(io(format!(
            "cannot copy {} to {}",
            self.data_dir().join("dump.rdb").display(),
            dest.display()
        )))?;
        Ok(keys)
    }

    /// Keys in every logical database (`INFO keyspace`).
    pub fn key_count(&self, password: &str) -> Result<u64> {
        let info = text(&self.command(password, &[b"INFO".as_slice(), b"keyspace"])?);
        Ok(info
            .lines()
            .filter_map(|l| {
                l.split_once(":keys=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum())
    }

    /// Replaces its data with the snapshot `rdb`: stops it, puts the file in place of its
    /// data (the append-only files too, which Redis would read first), starts it without the
    /// append-only file so it loads the snapshot, then turns the append-only file on again
    /// (Redis writes it anew from memory) and waits for that to end.
    pub fn load_snapshot(&self, password: &str, rdb: &Path) -> Result<()> {
        self.stop()?;
        let data = self.data_dir();
        let _ = fs::remove_dir_all(data.join("appendonlydir"));
        let _ = fs::remove_file(data.join("appendonly.aof"));
        let target = data.join("dump.rdb");
        fs::copy(rdb, &target).map_err(io(format!(
            "cannot copy {} to {}",
            rdb.display(),
            target.display()
        )))?;
        self.user.own(&target)?;
        let conf = fs::read_to_string(self.conf())
            .map_err(io(format!("cannot read {}", self.conf().display())))?;
        let loading = conf.replace("appendonly yes", "appendonly no");
        fs::write(self.conf(), &loading)
            .map_err(io(format!("cannot write {}", self.conf().display())))?;
        let started = self.start(password);
        fs::write(self.conf(), conf)
            .map_err(io(format!("cannot write {}", self.conf().display())))?;
        started?;
        self.command(
            password,
            &[b"CONFIG".as_slice(), b"SET", b"appendonly", b"yes"],
        )?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let info = text(&self.command(password, &[b"INFO".as_slice(), b"persistence"])?);
            if info_field(&info, "aof_rewrite_in_progress") == Some("0")
                && info_field(&info, "aof_rewrite_scheduled") == Some("0")
                && info_field(&info, "aof_enabled") == Some("1")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Tool(
                    "Redis did not write its append-only file within 10 minutes".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Verifies the snapshot `rdb`: loads it into a scratch Redis in `scratch` and compares its
/// key count with `expected`; the scratch is stopped and removed whatever the outcome.
pub fn verify_snapshot(rdb: &Path, expected: u64, scratch: &Path, user: OsUser) -> Result<u64> {
    if scratch.exists() {
        fs::remove_dir_all(scratch).map_err(io(format!("cannot remove {}", scratch.display())))?;
    }
    let redis = Redis::open(scratch, "verify", None, user)?;
    let password = crate::generate_password()?;
    let result = (|| {
        redis.ensure(&password)?;
        redis.load_snapshot(&password, rdb)?;
        let found = redis.key_count(&password)?;
        if found != expected {
            return Err(Error::Tool(format!(
                "the snapshot loads {found} keys, {expected} at snapshot time"
            )));
        }
        Ok(found)
    })();
    let _ = redis.stop();
    let _ = fs::remove_dir_all(scratch);
    result
}
