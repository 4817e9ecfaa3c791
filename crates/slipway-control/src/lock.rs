//! The data directory's lock: one server per data directory.
//!
//! A server killed with `kill -9` lets go of its lock only when its last thread has exited:
//! each thread must be scheduled to die, and one waiting for the disk (a store commit's
//! `fsync`) dies when the write completes. On a busy machine that takes up to tens of
//! milliseconds after `kill` returns, and a server started in that time (`kill -9 $pid;
//! slipway server`) found the lock held by the killed server. A new server therefore waits,
//! a few seconds at most and saying so, while the holder is exiting; a holder that runs
//! still refuses it at once. It also waits for the previous server to be gone altogether:
//! its listening sockets are closed just after its lock is released.
//!
//! The lock is a POSIX record lock (`fcntl(F_SETLK)`), not a `flock`: a `flock` belongs to
//! the open file description, which a child shares from `fork()` until its `exec()` closes
//! the descriptor (it is opened close-on-exec), so a server killed while its spawner thread
//! was between the two left the lock to that child until it died of its parent-death
//! signal. A record lock belongs to the process: no child ever holds it, and `F_GETLK`
//! names the process that holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a new server waits for an exiting one to let go of the data directory.
pub(crate) const EXIT_WAIT: Duration = Duration::from_secs(5);

/// What a process is doing, as `/proc` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// It runs: the data directory is in use.
    Running,
    /// It is exiting (killed, or past `exit`): it lets go of its lock, then of its sockets,
    /// within milliseconds (more if a thread waits for the disk).
    Exiting,
    /// It is gone, or a zombie whose threads have all exited: it holds nothing any more.
    Finished,
}

/// The `PF_EXITING` flag of `/proc/<pid>/stat`'s `flags` field: the thread is in `exit`.
const PF_EXITING: u64 = 0x4;

/// Classifies a process from its `/proc/<pid>/stat` and `/proc/<pid>/status` texts (`None`:
/// it does not exist). A process is exiting when it is a zombie with threads still exiting,
/// has `PF_EXITING` set, or has a SIGKILL pending (the instant between `kill -9` and its
/// threads' noticing).
pub(crate) fn classify(stat: Option<&str>, status: Option<&str>) -> Holder {
    let Some(stat) = stat else {
        return Holder::Finished;
    };
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|end| stat[end + 1..].split_whitespace().collect())
        .unwrap_or_default();
    // `fields[0]` is field 3 (the state), so field N is `fields[N - 3]`.
    let state = fields.first().and_then(|s| s.chars().next());
    let flags = fields
        .get(6)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    let threads = fields
        .get(17)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(1);
    if matches!(state, Some('Z' | 'X' | 'x')) {
        // A zombie leader counts itself until it is reaped; other threads are still exiting.
        return if threads <= 1 {
            Holder::Finished
        } else {
            Holder::Exiting
        };
    }
    if flags & PF_EXITING != 0 {
        return Holder::Exiting;
    }
    let sigkill = 1u64 << (libc::SIGKILL - 1);
    let kill_pending = status.unwrap_or("").lines().any(|line| {
        let Some((key, mask)) = line.split_once(':') else {
            return false;
        };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & sigkill != 0)
    });
    if kill_pending {
        Holder::Exiting
    } else {
        Holder::Running
    }
}

fn observe(pid: u32) -> Holder {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/{name}")).ok();
    classify(read("stat").as_deref(), read("status").as_deref())
}

/// Says once on stderr that this server waits for the previous one, and how long it has.
struct Waiting {
    since: Option<Instant>,
}

impl Waiting {
    /// Notes a wait for `pid`; false once [`EXIT_WAIT`] has passed.
    fn for_pid(&mut self, pid: Option<u32>, data_dir: &Path) -> bool {
        let since = *self.since.get_or_insert_with(|| {
            eprintln!(
                "the previous slipway server (pid {}) is still exiting and holds the data directory {}; waiting up to {}s for it",
                shown(pid),
                data_dir.display(),
                EXIT_WAIT.as_secs()
            );
            Instant::now()
        });
        since.elapsed() < EXIT_WAIT
    }

    fn done(&self, pid: Option<u32>) {
        if let Some(since) = self.since {
            eprintln!(
                "the previous slipway server (pid {}) has exited ({} ms); starting",
                shown(pid),
                since.elapsed().as_millis()
            );
        }
    }
}

fn shown(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

/// Holds an exclusive lock on `<data_dir>/server.lock` for the server's lifetime (while the
/// returned file is open), so two servers never share one data dir. A previous server that
/// is still exiting is waited for, up to [`EXIT_WAIT`] and saying so on stderr: until it
/// lets go of the lock, then until it has exited altogether (its listening sockets are
/// closed just after its lock is released).
pub(crate) async fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("server.lock");
    // Opened close-on-exec (as std opens every file): no program the server starts keeps it.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut waiting = Waiting { since: None };
    let mut seen_running = 0;
    let mut holder = None;
    loop {
        match rustix::fs::fcntl_lock(
            file.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => break,
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {}
            Err(e) => bail!("cannot lock {}: {e}", path.display()),
        }
        // The kernel names the holder; the pid the previous server wrote is the fallback.
        holder = holder_pid(&file).or_else(|| written_pid(&mut file));
        let state = holder.map_or(Holder::Exiting, observe);
        // Between taking the pending SIGKILL and flagging itself as exiting, a killed process
        // looks like a running one for an instant: only a second look 20 ms later decides.
        if state == Holder::Running {
            seen_running += 1;
            if seen_running < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            bail!(
                "another slipway server (pid {}) is already using the data directory {}\n  hint: talk to it with the slipway CLI, stop it with `slipway server stop`, or pass --data-dir",
                shown(holder),
                data_dir.display()
            );
        }
        if !waiting.for_pid(holder, data_dir) {
            bail!(
                "the previous slipway server (pid {}) still holds the data directory {} {}s after it began to exit\n  hint: see what that process is doing (`ps -o pid,stat,wchan,cmd -p {}`); once it is gone, start the server again",
                shown(holder),
                data_dir.display(),
                EXIT_WAIT.as_secs(),
                shown(holder)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The lock is ours; the server that held it last may still be closing its sockets.
    let previous = written_pid(&mut file).filter(|pid| *pid != std::process::id());
    if let Some(pid) = previous {
        while observe(pid) == Holder::Exiting && waiting.for_pid(Some(pid), data_dir) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    waiting.done(holder.or(previous));
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// The pid of the process holding a conflicting lock on `file`, as the kernel reports it
/// (`F_GETLK`); `None` when the lock is free by now or the holder is in another pid
/// namespace.
fn holder_pid(file: &File) -> Option<u32> {
    // SAFETY: `flock` is plain data; all-zero is a valid value, filled in below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    // SAFETY: F_GETLK reads and writes the `flock` we pass, which lives for the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    if r == -1 || i32::from(lock.l_type) == libc::F_UNLCK {
        return None;
    }
    u32::try_from(lock.l_pid).ok().filter(|pid| *pid > 0)
}

/// The pid the previous server wrote into the lock file.
fn written_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str =
        "4242 (slipway) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 9 0 1000 1 1 1";

    #[test]
    fn a_sleeping_server_runs() {
        let status = "Name:\tslipway\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n";
        assert_eq!(classify(Some(RUNNING), Some(status)), Holder::Running);
        assert_eq!(classify(Some(RUNNING), None), Holder::Running);
    }

    #[test]
    fn a_server_in_exit_is_exiting_until_its_last_thread_is_gone() {
        // 4194560 | PF_EXITING
        let exiting = RUNNING.replace("4194560", "4194564");
        assert_eq!(classify(Some(&exiting), None), Holder::Exiting);
        // A zombie leader whose 8 other threads are still exiting.
        let zombie = RUNNING.replace(") S ", ") Z ");
        assert_eq!(classify(Some(&zombie), None), Holder::Exiting);
        let reapable = zombie.replace(" 20 0 9 0 ", " 20 0 1 0 ");
        assert_eq!(classify(Some(&reapable), None), Holder::Finished);
        assert_eq!(classify(None, None), Holder::Finished);
    }

    #[test]
    fn a_pending_sigkill_means_exiting() {
        let killed = "SigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n";
        assert_eq!(classify(Some(RUNNING), Some(killed)), Holder::Exiting);
        let shared = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\n";
        assert_eq!(classify(Some(RUNNING), Some(shared)), Holder::Exiting);
        // SIGTERM (bit 15) pending is not a kill: the server may handle it and run on.
        let term = "SigPnd:\t0000000000004000\nShdPnd:\t0000000000004000\n";
        assert_eq!(classify(Some(RUNNING), Some(term)), Holder::Running);
    }

    #[test]
    fn odd_command_names_do_not_confuse_the_parser() {
        let odd = RUNNING.replace("(slipway)", "(a) Z (b)");
        assert_eq!(classify(Some(&odd), None), Holder::Running);
    }
}
