//! The operating-system user databases run as.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{Error, Result, io};

/// An operating-system user (from `/etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// The login name; also the name of the cluster's superuser (peer authentication).
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
}

impl OsUser {
    /// The user databases run as: `SLIPWAY_DB_USER` when set; else, when Slipway runs as root
    /// (PostgreSQL refuses to), the `postgres` user the distribution's package creates; else
    /// the user Slipway runs as.
    pub fn for_databases() -> Result<OsUser> {
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        if let Ok(name) = std::env::var("SLIPWAY_DB_USER") {
            return find(&passwd, |u| u.name == name).ok_or_else(|| {
                Error::Setup(format!(
                    "SLIPWAY_DB_USER names `{name}`, which is not a user of this host (not in /etc/passwd)\n  hint: create it (`useradd --system {name}`) or unset SLIPWAY_DB_USER"
                ))
            });
        }
        let euid = rustix::process::geteuid().as_raw();
        if euid == 0 {
            return find(&passwd, |u| u.name == "postgres").ok_or_else(|| {
                Error::Setup(
                    "Slipway runs as root and PostgreSQL refuses to, so databases run as the user `postgres`, which this host does not have\n  hint: install PostgreSQL from the distribution's packages (they create it), or name another user in SLIPWAY_DB_USER".into(),
                )
            });
        }
        Ok(find(&passwd, |u| u.uid == euid).unwrap_or(OsUser {
            name: format!("uid{euid}"),
            uid: euid,
            gid: rustix::process::getegid().as_raw(),
        }))
    }

    /// Gives `path` to this user (a no-op when it is ours already).
    pub(crate) fn own(&self, path: &Path) -> Result<()> {
        if crate::owned_by(path, self.uid) {
            return Ok(());
        }
        rustix::fs::chown(
            path,
            Some(rustix::process::Uid::from_raw(self.uid)),
            Some(rustix::process::Gid::from_raw(self.gid)),
        )
        .map_err(|e| {
            io(format!(
                "cannot give {} to the database user {}",
                path.display(),
                self.name
            ))(e.into())
        })
    }

    /// Lets this user pass through `dir` (search, not list) with a POSIX ACL entry
    /// `user:<name>:--x`, leaving the folder's mode and everyone else as they were: how
    /// Slipway's private data directory (0700: its API socket relies on it) lets the database
    /// user reach `databases/` inside it. A no-op when the user can already pass.
    pub fn grant_passage(&self, dir: &Path) -> Result<()> {
        if self.uid == rustix::process::geteuid().as_raw() || self.can_enter(dir) {
            return Ok(());
        }
        let meta = fs::metadata(dir).map_err(io(format!("cannot read {}", dir.display())))?;
        let mode = meta.mode();
        const USER_OBJ: u16 = 0x01;
        const USER: u16 = 0x02;
        const GROUP_OBJ: u16 = 0x04;
        const MASK: u16 = 0x10;
        const OTHER: u16 = 0x20;
        const UNDEFINED_ID: u32 = u32::MAX;
        let group = ((mode >> 3) & 7) as u16;
        let entries = [
            (USER_OBJ, ((mode >> 6) & 7) as u16, UNDEFINED_ID),
            (USER, 1, self.uid),
            (GROUP_OBJ, group, UNDEFINED_ID),
            (MASK, group | 1, UNDEFINED_ID),
            (OTHER, (mode & 7) as u16, UNDEFINED_ID),
        ];
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        rustix::fs::setxattr(
            dir,
            "system.posix_acl_access",
            &acl,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| {
            Error::Setup(format!(
                "cannot let the database user {} pass through {} with an ACL ({e})\n  hint: allow it yourself (`setfacl -m u:{}:x {}`, or `chmod o+x` if nothing private is inside), or use a file system with ACLs",
                self.name,
                dir.display(),
                self.name,
                dir.display()
            ))
        })
    }

    /// Whether this user may enter `dir`, as the kernel decides (mode bits and ACLs): asked
    /// of a `test -x` run as the user.
    fn can_enter(&self, dir: &Path) -> bool {
        let mut test = std::process::Command::new("test");
        test.arg("-x").arg(dir).current_dir("/");
        if self.uid != rustix::process::geteuid().as_raw() {
            use std::os::unix::process::CommandExt;
            test.uid(self.uid).gid(self.gid);
        }
        test.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Fails with the folder to open up when this user cannot enter every folder on the way
    /// to `dir` (PostgreSQL would fail later with a less helpful message).
    pub(crate) fn check_reaches(&self, dir: &Path) -> Result<()> {
        if self.uid == rustix::process::geteuid().as_raw() || self.can_enter(dir) {
            return Ok(());
        }
        let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
        ancestors.reverse();
        for ancestor in ancestors {
            let Ok(meta) = fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.mode();
            if !self.can_enter(ancestor) {
                return Err(Error::Setup(format!(
                    "databases run as the user {}, which cannot enter {} (mode {:o}), on the way to {}\n  hint: let it through with `setfacl -m u:{}:x {}` (or `chmod o+x {}`: it lists nothing), or keep Slipway's data directory under folders it can enter",
                    self.name,
                    ancestor.display(),
                    mode & 0o7777,
                    dir.display(),
                    self.name,
                    ancestor.display(),
                    ancestor.display()
                )));
            }
        }
        Ok(())
    }
}

/// The first `/etc/passwd` entry that `matches`.
fn find(passwd: &str, matches: impl Fn(&OsUser) -> bool) -> Option<OsUser> {
    passwd
        .lines()
        .filter_map(parse_line)
        .find(|user| matches(user))
}

/// `name:x:uid:gid:...` -> an [`OsUser`].
pub(crate) fn parse_line(line: &str) -> Option<OsUser> {
    let mut fields = line.split(':');
    let name = fields.next()?.to_owned();
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(OsUser { name, uid, gid })
}
