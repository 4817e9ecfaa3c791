//! Resource limits and usage of native instances, through Linux control groups.
//!
//! Each instance runs in a cgroup of its own, nested under one group per server
//! (`slipway-<tag>`) inside the server's own cgroup, so that limits set on the server's
//! group (a systemd unit's `MemoryMax`, a container's) still bound the instances. The
//! child joins its cgroup before it executes the app by writing `0` to its `tasks` (v1) or
//! `cgroup.procs` (v2) files (between `clone` and `execve`, see `spawner.rs`), so it never runs a single instruction of the app outside its limits.
//!
//! Two layouts exist. cgroup v2 has one tree whose `cgroup.controllers` lists what it can
//! limit; a parent must delegate controllers to its children (`cgroup.subtree_control`)
//! and may not hold processes itself once it does ("no internal processes"), so the server
//! moves itself into a leaf `server` group first. cgroup v1 has one tree per controller
//! (`memory`, `cpu`, `cpuacct`, `pids`, mounted where /proc/self/mountinfo says). Which
//! files get which values is pure ([`limit_files`]) and unit-tested for both layouts; this
//! host has the v1 controllers.
//!
//! Where cgroups cannot be used (no permission, a controller missing), [`Cgroups::setup`]
//! says why, and the server runs instances without limits and says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What one instance may use; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Cpu time in millicores: 500 is half a core.
    pub cpu_millis: Option<u32>,
    /// Memory in bytes (swap included where the kernel accounts it).
    pub memory_bytes: Option<u64>,
    /// Processes and threads at once.
    pub pids: Option<u32>,
}

/// What one instance's cgroup has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use now, in bytes (page cache included, as the kernel charges it).
    pub memory_bytes: u64,
    /// Cpu time used since the cgroup was made, in nanoseconds.
    pub cpu_nanos: u64,
    /// Processes killed by the kernel for want of memory since the cgroup was made.
    pub oom_kills: u64,
    /// Processes and threads now.
    pub pids: u64,
}

/// The cpu period the quota is a share of: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup layout a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The controllers Slipway uses, as v1 names them (v2 has `cpu` for both cpu ones).
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// The files (controller, file name, content) that apply `limits` in `version`, in the
/// order they must be written. A limit left out is written as "no limit", so a cgroup that
/// is reused keeps none of an older value.
pub fn limit_files(version: Version, limits: &Limits) -> Vec<(&'static str, &'static str, String)> {
    let quota = limits
        .cpu_millis
        .map(|millis| u64::from(millis) * CPU_PERIOD_US / 1000);
    match version {
        Version::V2 => vec![
            ("memory", "memory.max", max_or(limits.memory_bytes)),
            // No swap beyond the limit: an instance over it is killed, not slowed to a crawl.
            (
                "memory",
                "memory.swap.max",
                if limits.memory_bytes.is_some() {
                    "0".into()
                } else {
                    "max".into()
                },
            ),
            (
                "cpu",
                "cpu.max",
                format!("{} {CPU_PERIOD_US}", max_or(quota)),
            ),
            ("pids", "pids.max", max_or(limits.pids.map(u64::from))),
        ],
        Version::V1 => {
            // v1 wants -1 for "no limit" in the cpu quota and memory files.
            let memory = limits
                .memory_bytes
                .map_or_else(|| "-1".to_owned(), |b| b.to_string());
            vec![
                ("memory", "memory.limit_in_bytes", memory.clone()),
                // memory + swap, where swap is accounted; equal to the limit: no swap.
                ("memory", "memory.memsw.limit_in_bytes", memory),
                ("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                (
                    "cpu",
                    "cpu.cfs_quota_us",
                    quota.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
                ),
                ("pids", "pids.max", max_or(limits.pids.map(u64::from))),
            ]
        }
    }
}

fn max_or(value: Option<u64>) -> String {
    value.map_or_else(|| "max".to_owned(), |v| v.to_string())
}

/// The usage files of one cgroup, read as [`Usage`]; missing files count as 0.
fn read_usage(version: Version, dir: impl Fn(&str) -> Option<PathBuf>) -> Usage {
    let read = |controller: &str, file: &str| fs::read_to_string(dir(controller)?.join(file)).ok();
    match version {
        Version::V2 => Usage {
            memory_bytes: read("memory", "memory.current")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            cpu_nanos: read("cpu", "cpu.stat")
                .and_then(|t| keyed(&t, "usage_usec"))
                .map_or(0, |us| us * 1000),
            oom_kills: read_oom_kills(version, &dir),
            pids: read("pids", "pids.current")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
        },
        Version::V1 => Usage {
            memory_bytes: read("memory", "memory.usage_in_bytes")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            cpu_nanos: read("cpuacct", "cpuacct.usage")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            oom_kills: read_oom_kills(version, &dir),
            pids: read("pids", "pids.current")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
        },
    }
}

/// The group's count of out-of-memory kills: `oom_kill` in `memory.events` (v2) or
/// `memory.oom_control` (v1); 0 when it cannot be read.
fn read_oom_kills(version: Version, dir: impl Fn(&str) -> Option<PathBuf>) -> u64 {
    let file = match version {
        Version::V2 => "memory.events",
        Version::V1 => "memory.oom_control",
    };
    dir("memory")
        .and_then(|dir| fs::read_to_string(dir.join(file)).ok())
        .and_then(|t| keyed(&t, "oom_kill"))
        .unwrap_or(0)
}

/// The value of `key` in a flat keyed file such as `cpu.stat` (`usage_usec 1234`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

/// Slipway's parent cgroup(s): where the instances' groups are made.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    /// v2: one directory, under key "". v1: one per controller of [`V1_CONTROLLERS`].
    parents: Vec<(&'static str, PathBuf)>,
}

impl Cgroups {
    /// Makes (or reuses) the group `slipway-<tag>` under the server's own cgroup and
    /// checks that it can limit memory, cpu and pids. The error says why not, in words
    /// fit for the user.
    pub fn setup(tag: &str) -> Result<Cgroups, String> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let name = format!("slipway-{tag}");
        if let Some(root) = v2_mount(&mounts) {
            let controllers =
                fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if ["memory", "cpu", "pids"].iter().all(|c| has(c))
                && let Some(path) = own_path(&own, None)
            {
                return setup_v2(&root.join(path.trim_start_matches('/')), &name);
            }
        }
        let mut parents = Vec::new();
        for controller in V1_CONTROLLERS {
            let mount = v1_mount(&mounts, controller).ok_or_else(|| {
                format!("the {controller} cgroup controller is not mounted (neither cgroup v2 with memory, cpu and pids, nor v1)")
            })?;
            let path = own_path(&own, Some(controller))
                .ok_or_else(|| format!("this process is in no {controller} cgroup"))?;
            let parent = mount.join(path.trim_start_matches('/')).join(&name);
            fs::create_dir_all(&parent)
                .map_err(|e| format!("cannot create the cgroup {}: {e}", parent.display()))?;
            parents.push((controller, parent));
        }
        Ok(Cgroups {
            version: Version::V1,
            parents,
        })
    }

    /// Which layout is in use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Makes the cgroup of instance `id` with `limits` (an existing one is reused and its
    /// limits rewritten).
    ///
    /// In v1, an instance without a cpu limit gets no group in the `cpu` hierarchy: it stays
    /// in the server's, scheduled as a plain process beside the machine's others. A cpu
    /// group is a scheduling entity of its own: all instances together would get one
    /// process's share against, say, a busy PostgreSQL, and each wake-up walks two more
    /// levels (measured: the bench backend behind the router, sharing a core with wrk, served
    /// 68k req/s from its own cpu group against 77-82k outside one). Its cpu time is still
    /// counted, by `cpuacct` (where `cpuacct` is mounted with `cpu`, the group it gets there
    /// is a cpu group too, as before). In v2 one tree holds every controller, and the cpu
    /// controller is delegated to all instances alike.
    pub fn create(&self, id: &str, limits: &Limits) -> io::Result<InstanceCgroup> {
        let mut dirs = Vec::new();
        for (controller, parent) in &self.parents {
            if *controller == "cpu" && limits.cpu_millis.is_none() {
                continue;
            }
            let dir = parent.join(id);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            dirs.push((*controller, dir));
        }
        let group = InstanceCgroup {
            version: self.version,
            dirs,
        };
        for (controller, file, value) in limit_files(self.version, limits) {
            let Some(dir) = group.dir(controller) else {
                continue; // v1 without a cpu limit: no cpu group (see above)
            };
            let path = dir.join(file);
            match fs::write(&path, &value) {
                Ok(()) => {}
                // Swap accounting is optional in both layouts.
                Err(e) if file.contains("swap") || file.contains("memsw") => {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::debug!(path = %path.display(), error = %e, "swap limit not set");
                    }
                }
                Err(e) => {
                    group.remove();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot write {value} to {}: {e}", path.display()),
                    ));
                }
            }
        }
        Ok(group)
    }

    /// Removes the groups of instances that no longer have processes (left by a server
    /// that was killed); groups in use stay.
    pub fn remove_empty(&self) {
        for (_, parent) in &self.parents {
            if let Ok(entries) = fs::read_dir(parent) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.file_name() != "server"
                    {
                        let _ = fs::remove_dir(entry.path());
                    }
                }
            }
        }
    }
}

impl Drop for Cgroups {
    /// Removes the parent groups if no instance group is left in them (a server that ends
    /// cleanly leaves nothing behind; one with a process in `server` keeps its group).
    fn drop(&mut self) {
        for (_, parent) in &self.parents {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// cgroup v2: `<own>/slipway-<tag>` with the controllers delegated, the server moved into
/// `<own>/slipway-<tag>/server` first if its own group must stop holding processes.
fn setup_v2(own: &Path, name: &str) -> Result<Cgroups, String> {
    let parent = own.join(name);
    fs::create_dir_all(&parent)
        .map_err(|e| format!("cannot create the cgroup {}: {e}", parent.display()))?;
    let delegate = |dir: &Path| fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
    if delegate(own).is_err() {
        // "No internal processes": move the server into a leaf of its own and try again.
        let leaf = parent.join("server");
        fs::create_dir_all(&leaf)
            .and_then(|()| fs::write(leaf.join("cgroup.procs"), "0"))
            .and_then(|()| delegate(own))
            .map_err(|e| {
                format!(
                    "cannot delegate the memory, cpu and pids controllers to {}: {e}",
                    parent.display()
                )
            })?;
    }
    delegate(&parent).map_err(|e| {
        format!(
            "cannot delegate the memory, cpu and pids controllers under {}: {e}",
            parent.display()
        )
    })?;
    Ok(Cgroups {
        version: Version::V2,
        parents: vec![("", parent)],
    })
}

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mountinfo.
fn v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        before.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The mount point of the cgroup v1 hierarchy that has `controller` among its options.
fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = after.split_whitespace();
        if fields.next()? != "cgroup" {
            return None;
        }
        let options = fields.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        before.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's path in the hierarchy of `controller` (v1), or in the v2 one (`None`),
/// from /proc/self/cgroup (`4:memory:/a/b`, `0::/a/b`).
fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_owned())
    })
}

/// The cgroup of one instance.
#[derive(Debug)]
pub struct InstanceCgroup {
    version: Version,
    dirs: Vec<(&'static str, PathBuf)>,
}

impl InstanceCgroup {
    /// The group's directory in the hierarchy of `controller`, if it has one there.
    fn dir(&self, controller: &str) -> Option<PathBuf> {
        let key = match self.version {
            Version::V2 => "",
            Version::V1 => controller,
        };
        self.dirs
            .iter()
            .find(|(c, _)| *c == key)
            .map(|(_, d)| d.clone())
    }

    /// The file of every hierarchy that the child writes `0` to, to join before its program
    /// runs (see [`crate::process::start`]); each is opened for writing once here, so that a
    /// cgroup the server cannot write is reported before anything starts.
    ///
    /// In v1 that is `tasks`, which moves the writing thread alone: the child is a single
    /// thread then, so the whole process moves, and the kernel skips the global lock that a
    /// write to `cgroup.procs` takes, whose first taking waits for an RCU grace period
    /// (6-19 ms measured on this project's machine, paid by every instance start). v2 has
    /// only `cgroup.procs` for a domain cgroup.
    pub(crate) fn join_files(&self) -> io::Result<Vec<std::os::fd::OwnedFd>> {
        let file = match self.version {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        };
        self.dirs
            .iter()
            .map(|(_, dir)| {
                let path = dir.join(file);
                let open = fs::OpenOptions::new().write(true).open(&path);
                open.map(Into::into).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot join the instance's cgroup ({}): {e}",
                            path.display()
                        ),
                    )
                })
            })
            .collect()
    }

    /// The count of out-of-memory kills in the group (one file read).
    pub(crate) fn oom_kills(&self) -> u64 {
        read_oom_kills(self.version, |controller| self.dir(controller))
    }

    /// What the instance has used.
    pub fn usage(&self) -> Usage {
        read_usage(self.version, |controller| self.dir(controller))
    }

    /// Removes the cgroup; it must have no processes left (a failure is logged, and the
    /// next server start sweeps it).
    pub fn remove(&self) {
        for (_, dir) in &self.dirs {
            if let Err(e) = fs::remove_dir(dir)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::debug!(dir = %dir.display(), error = %e, "cgroup not removed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        cpu_millis: Some(500),
        memory_bytes: Some(64 << 20),
        pids: Some(64),
    };

    #[test]
    fn a_child_joins_through_tasks_in_v1_and_cgroup_procs_in_v2() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["tasks", "cgroup.procs"] {
            fs::write(dir.path().join(file), "").unwrap();
        }
        let group = |version| InstanceCgroup {
            version,
            dirs: vec![("memory", dir.path().to_owned())],
        };
        let opened = |files: Vec<std::os::fd::OwnedFd>| -> Vec<PathBuf> {
            use std::os::fd::AsRawFd;
            let link = |fd: &std::os::fd::OwnedFd| {
                fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
            };
            files.iter().map(link).collect()
        };
        let dir_path = dir.path().canonicalize().unwrap();
        assert_eq!(
            opened(group(Version::V1).join_files().unwrap()),
            [dir_path.join("tasks")]
        );
        assert_eq!(
            opened(group(Version::V2).join_files().unwrap()),
            [dir_path.join("cgroup.procs")]
        );
        fs::remove_file(dir.path().join("tasks")).unwrap();
        assert!(
            group(Version::V1).join_files().is_err(),
            "a file that cannot be opened is reported before anything starts"
        );
    }

    #[test]
    fn v2_files_and_values() {
        assert_eq!(
            limit_files(Version::V2, &LIMITS),
            vec![
                ("memory", "memory.max", "67108864".to_owned()),
                ("memory", "memory.swap.max", "0".to_owned()),
                ("cpu", "cpu.max", "50000 100000".to_owned()),
                ("pids", "pids.max", "64".to_owned()),
            ]
        );
        assert_eq!(
            limit_files(Version::V2, &Limits::default()),
            vec![
                ("memory", "memory.max", "max".to_owned()),
                ("memory", "memory.swap.max", "max".to_owned()),
                ("cpu", "cpu.max", "max 100000".to_owned()),
                ("pids", "pids.max", "max".to_owned()),
            ]
        );
    }

    #[test]
    fn v1_files_and_values() {
        assert_eq!(
            limit_files(Version::V1, &LIMITS),
            vec![
                ("memory", "memory.limit_in_bytes", "67108864".to_owned()),
                (
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    "67108864".to_owned()
                ),
                ("cpu", "cpu.cfs_period_us", "100000".to_owned()),
                ("cpu", "cpu.cfs_quota_us", "50000".to_owned()),
                ("pids", "pids.max", "64".to_owned()),
            ]
        );
        let two_cores = Limits {
            cpu_millis: Some(2000),
            ..Limits::default()
        };
        let files = limit_files(Version::V1, &two_cores);
        assert!(files.contains(&("cpu", "cpu.cfs_quota_us", "200000".to_owned())));
        assert!(files.contains(&("memory", "memory.limit_in_bytes", "-1".to_owned())));
    }

    #[test]
    fn in_v1_only_an_instance_with_a_cpu_limit_gets_a_cpu_group() {
        let root = tempfile::tempdir().unwrap();
        let cgroups = Cgroups {
            version: Version::V1,
            parents: V1_CONTROLLERS
                .iter()
                .map(|c| {
                    let parent = root.path().join(c);
                    fs::create_dir(&parent).unwrap();
                    (*c, parent)
                })
                .collect(),
        };
        let unlimited = cgroups.create("web-r1", &Limits::default()).unwrap();
        assert!(!root.path().join("cpu/web-r1").exists());
        assert_eq!(unlimited.dir("cpu"), None);
        for c in ["memory", "cpuacct", "pids"] {
            assert!(root.path().join(c).join("web-r1").is_dir(), "{c}");
        }
        assert_eq!(
            fs::read_to_string(root.path().join("memory/web-r1/memory.limit_in_bytes")).unwrap(),
            "-1"
        );
        let limited = cgroups.create("web-r2", &LIMITS).unwrap();
        assert_eq!(limited.dir("cpu"), Some(root.path().join("cpu/web-r2")));
        assert_eq!(
            fs::read_to_string(root.path().join("cpu/web-r2/cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
    }

    #[test]
    fn usage_is_read_from_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        let at = |_: &str| Some(dir.path().to_path_buf());
        fs::write(dir.path().join("memory.current"), "1048576\n").unwrap();
        fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(dir.path().join("pids.current"), "3\n").unwrap();
        assert_eq!(
            read_usage(Version::V2, at),
            Usage {
                memory_bytes: 1 << 20,
                cpu_nanos: 2_500_000,
                oom_kills: 1,
                pids: 3
            }
        );
        fs::write(dir.path().join("memory.usage_in_bytes"), "2048\n").unwrap();
        fs::write(dir.path().join("cpuacct.usage"), "123456789\n").unwrap();
        fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(
            read_usage(Version::V1, at),
            Usage {
                memory_bytes: 2048,
                cpu_nanos: 123_456_789,
                oom_kills: 2,
                pids: 3
            }
        );
    }

    #[test]
    fn mounts_and_own_paths_are_found() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";
        assert_eq!(
            v2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            v1_mount(mountinfo, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            v1_mount(mountinfo, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(v1_mount(mountinfo, "pids"), None);
        let own = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(
            own_path(own, Some("memory")).as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(own_path(own, Some("cpuacct")).as_deref(), Some("/"));
        assert_eq!(own_path(own, None).as_deref(), Some("/user.slice"));
    }
}
