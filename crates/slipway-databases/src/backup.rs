//! PostgreSQL backups: a logical dump (`pg_dump -Fc`) taken inside a repeatable-read snapshot
//! whose per-table row counts are read in that same snapshot, its verification by a restore
//! into a scratch cluster (row counts compared, then the scratch removed), and the restore of
//! a dump into a database.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, OsUser, PG_PORT, Postgres, Result, generate_password, io};

/// Per-table row counts, by `schema.table`.
pub type Counts = BTreeMap<String, u64>;

/// What a dump saw: its tables' row counts in the dump's own snapshot, and the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpFacts {
    /// Rows per table at dump time.
    pub tables: Counts,
    /// `SHOW server_version`, e.g. `15.10 (Debian 15.10-0+deb12u1)`.
    pub server_version: String,
}

/// A file of a backup, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    /// The file's name in the backup's folder.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// Size and SHA-256 of a file, read once.
pub fn file_facts(path: &Path) -> Result<FileFacts> {
    let mut file = fs::File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(FileFacts {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Checks a file against what the manifest recorded: the error names the file and says how
/// it differs.
pub fn check_file(dir: &Path, expected: &FileFacts) -> Result<()> {
    let path = dir.join(&expected.name);
    if !path.exists() {
        return Err(Error::Setup(format!(
            "{}: the file is missing",
            path.display()
        )));
    }
    let found = file_facts(&path)?;
    if found.size != expected.size {
        return Err(Error::Setup(format!(
            "{}: {} bytes, the manifest says {} (the file changed since the backup was taken)",
            path.display(),
            found.size,
            expected.size
        )));
    }
    if found.sha256 != expected.sha256 {
        return Err(Error::Setup(format!(
            "{}: SHA-256 {}, the manifest says {} (the file changed since the backup was taken)",
            path.display(),
            found.sha256,
            expected.sha256
        )));
    }
    Ok(())
}

/// SQL that prints `schema.table|rows` for every table of the current database.
const COUNT_SQL: &str = "SELECT format('SELECT %L || ''|'' || count(*) FROM %I.%I', schemaname || '.' || tablename, schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1\\gexec\n";

const END: &str = "__SLIPWAY_END__";

fn parse_counts(lines: &[String]) -> Result<Counts> {
    let mut counts = Counts::new();
    for line in lines {
        let Some((table, rows)) = line.rsplit_once('|') else {
            continue;
        };
        let rows = rows
            .trim()
            .parse()
            .map_err(|_| Error::Tool(format!("psql printed an unexpected row count: {line}")))?;
        counts.insert(table.to_owned(), rows);
    }
    Ok(counts)
}

impl Postgres {
    /// Dumps the app's database into `file` (custom format), inside one repeatable-read
    /// snapshot that also gives each table's row count: the counts are exactly what the dump
    /// holds, even while the app writes.
    pub fn dump(&self, file: &Path) -> Result<DumpFacts> {
        let name = self.meta().name.clone();
        let mut psql = self.as_user(&self.tool("psql"));
        psql.arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &PG_PORT.to_string(),
                "-U",
                &self.user.name,
                "-d",
                &name,
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut session = psql
            .spawn()
            .map_err(io(format!("cannot run {}", self.tool("psql").display())))?;
        let mut stdin = session.stdin.take().expect("piped");
        let stdout = session.stdout.take().expect("piped");
        let script = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();\nSHOW server_version;\n{COUNT_SQL}\\echo {END}\n"
        );
        let facts = stdin
            .write_all(script.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(io("cannot write to psql"))
            .and_then(|()| {
                let mut lines = Vec::new();
                for line in BufReader::new(stdout).lines() {
                    let line = line.map_err(io("cannot read psql's answer"))?;
                    if line == END {
                        return Ok(lines);
                    }
                    lines.push(line);
                }
                Err(Error::Tool(String::new()))
            });
        let lines = match facts {
            Ok(lines) if lines.len() >= 2 => lines,
            other => {
                drop(stdin);
                let out = session.wait_with_output();
                let stderr = out
                    .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                    .unwrap_or_default();
                return Err(match other {
                    Err(Error::Tool(_)) | Ok(_) => Error::Tool(format!(
                        "psql could not open a snapshot of database {name}: {stderr}"
                    )),
                    Err(e) => e,
                });
            }
        };
        let snapshot = lines[0].trim().to_owned();
        let server_version = lines[1].trim().to_owned();
        let tables = parse_counts(&lines[2..])?;
        let out =
            fs::File::create(file).map_err(io(format!("cannot create {}", file.display())))?;
        let pg_dump = self.pg_dump();
        let mut dump = self.as_user(&pg_dump);
        dump.arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &PG_PORT.to_string(),
                "-U",
                &self.user.name,
                "-d",
                &name,
            ])
            .args(["-Fc", "--snapshot", &snapshot])
            .stdout(out)
            .stderr(Stdio::piped());
        let dumped = dump.output();
        // The snapshot must stay open until pg_dump has taken it; now the session ends.
        let _ = stdin.write_all(b"COMMIT;\n\\q\n");
        drop(stdin);
        let _ = session.wait();
        let dumped = dumped.map_err(|e| {
            Error::Tool(format!(
                "cannot run {} for database {name}: {e}",
                pg_dump.display()
            ))
        })?;
        if !dumped.status.success() {
            return Err(Error::Tool(format!(
                "pg_dump of database {name} failed ({}): {}",
                dumped.status,
                String::from_utf8_lossy(&dumped.stderr).trim()
            )));
        }
        Ok(DumpFacts {
            tables,
            server_version,
        })
    }

    /// `pg_dump` of this version: `SLIPWAY_PG_DUMP` when set, else the version's own.
    fn pg_dump(&self) -> PathBuf {
        std::env::var_os("SLIPWAY_PG_DUMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.tool("pg_dump"))
    }

    /// Rows per table of database `db`.
    pub fn table_counts(&self, db: &str) -> Result<Counts> {
        let out = self.psql_admin(db, COUNT_SQL, &[])?;
        let lines: Vec<String> = out.lines().map(str::to_owned).collect();
        parse_counts(&lines)
    }

    /// Replaces the app's database with the dump in `file`: the database is dropped (its
    /// sessions ended: `WITH (FORCE)`) and made again, then `pg_restore` fills it as the app's
    /// role. The app's connections fail meanwhile and reconnect after.
    pub fn restore(&self, file: &Path) -> Result<()> {
        let name = self.meta().name.clone();
        self.psql_admin(
            "postgres",
            "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);\nCREATE DATABASE :\"name\" OWNER :\"name\";\n",
            &[("name", &name)],
        )?;
        self.pg_restore(file, &name, true)
    }

    /// `pg_restore` of `file` into database `db`, stopping at the first error; as the
    /// database's own role when `as_owner`.
    fn pg_restore(&self, file: &Path, db: &str, as_owner: bool) -> Result<()> {
        let input = fs::File::open(file).map_err(io(format!("cannot open {}", file.display())))?;
        let mut restore = self.as_user(&self.tool("pg_restore"));
        restore
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &PG_PORT.to_string(), "-U", &self.user.name, "-d", db])
            .args(["--no-owner", "--exit-on-error"])
            .stdin(input)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if as_owner {
            restore.arg(format!("--role={}", self.meta().name));
        }
        let out = restore.output().map_err(io(format!(
            "cannot run {}",
            self.tool("pg_restore").display()
        )))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Tool(format!(
                "pg_restore of {} failed ({}): {}",
                file.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Verifies the dump `file`: restores it into a scratch cluster of `version` in `scratch`,
/// counts the rows of every table there and compares them with `expected`; the scratch
/// cluster is stopped and removed whatever the outcome. Returns the counts found.
pub fn verify_dump(
    file: &Path,
    expected: &Counts,
    version: &str,
    scratch: &Path,
    user: OsUser,
) -> Result<Counts> {
    if scratch.exists() {
        fs::remove_dir_all(scratch).map_err(io(format!("cannot remove {}", scratch.display())))?;
    }
    let pg = Postgres::open(scratch, "verify", Some(version), user)?;
    let result = (|| {
        pg.ensure(&generate_password()?)?;
        // Thrown away after: nothing it writes needs to reach the disk.
        pg.psql_admin(
            "postgres",
            "ALTER SYSTEM SET fsync = off;\nALTER SYSTEM SET synchronous_commit = off;\nALTER SYSTEM SET full_page_writes = off;\nSELECT pg_reload_conf();\n",
            &[],
        )?;
        pg.pg_restore(file, "verify", false)
            .map_err(|e| Error::Tool(format!("the dump does not restore: {e}")))?;
        let found = pg.table_counts("verify")?;
        compare(expected, &found)?;
        Ok(found)
    })();
    let _ = pg.stop_immediately();
    let _ = fs::remove_dir_all(scratch);
    result
}

/// Fails with the first table whose count differs (or that is missing on either side).
pub fn compare(expected: &Counts, found: &Counts) -> Result<()> {
    for (table, rows) in expected {
        match found.get(table) {
            Some(n) if n == rows => {}
            Some(n) => {
                return Err(Error::Tool(format!(
                    "table {table}: {n} rows restored, {rows} at dump time"
                )));
            }
            None => {
                return Err(Error::Tool(format!(
                    "table {table} ({rows} rows at dump time) is missing from the restore"
                )));
            }
        }
    }
    if let Some(extra) = found.keys().find(|t| !expected.contains_key(*t)) {
        return Err(Error::Tool(format!(
            "table {extra} is in the restore but was not in the database at dump time"
        )));
    }
    Ok(())
}
