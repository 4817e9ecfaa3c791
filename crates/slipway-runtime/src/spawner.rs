//! The one thread that starts every child process — instances, and build, test and release
//! commands alike — and how it starts them without copying the server.
//!
//! Linux sends the parent-death signal (`PR_SET_PDEATHSIG`) when the *thread* that started a
//! child exits, not when the process does. A child started on a tokio blocking-pool thread
//! (which exits after ten idle seconds) would be killed for no reason, and one started on a
//! worker ties its life to that worker. This thread is started once and never exits, so the
//! signal fires exactly when the server dies.
//!
//! `fork()` would copy the server's page tables and write-protect every private page, holding
//! the address space's lock for writing while it does: every router thread that touched a
//! page then took a copy-on-write fault or waited for that lock (seen with `perf` under
//! bench/busy). Spawning a helper executable that sets up the child instead (`posix_spawn`
//! of the server's own 39 MB binary) cost ~1.8 ms per start in a second `exec` and its
//! dynamic loading. So the child is made the way `posix_spawn` makes one, with `clone(2)`
//! and `CLONE_VM | CLONE_VFORK`: it runs on a stack of its own inside the server's address
//! space, nothing is copied, and this thread (only this one) is suspended until the child
//! has called `execve` or given up. Between the two the child makes raw system calls only,
//! on data prepared here beforehand ([`child_main`]): default signal dispositions, SIGKILL
//! as its parent-death signal and a check that the server is still its parent, a process
//! group of its own, the cgroups, its standard descriptors, its directory, an empty signal
//! mask, `execve`. What fails is written to memory this thread reads after the child is
//! gone, as the stage and `errno` of the failure.
//!
//! A caller hands a [`Spawn`] over and blocks until the child runs (or failed to); it gets
//! the pid back and owns the child from then on ([`crate::child::Child`]).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;

/// Everything a child needs, prepared by the caller: C strings and open descriptors.
pub(crate) struct Spawn {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: CString,
    /// The child's descriptors 0, 1 and 2.
    stdio: [OwnedFd; 3],
    /// Open `tasks` / `cgroup.procs` files the child writes `0` to.
    cgroups: Vec<OwnedFd>,
}

impl Spawn {
    /// `program` with `argv` (`argv[0]` first; `program` when empty), the server's
    /// environment with `env` added (later entries win), in `workdir`, with `stdio` as its
    /// descriptors 0-2, joining the cgroups whose `procs` files are open in `cgroups`.
    ///
    /// # Errors
    /// `InvalidInput` when a string holds a NUL byte.
    pub(crate) fn new(
        program: &Path,
        argv: &[String],
        env: &[(String, String)],
        workdir: &Path,
        stdio: [OwnedFd; 3],
        cgroups: Vec<OwnedFd>,
    ) -> io::Result<Spawn> {
        let mut argv = argv
            .iter()
            .map(|a| c_string(OsStr::new(a)))
            .collect::<io::Result<Vec<_>>>()?;
        if argv.is_empty() {
            argv.push(c_string(program.as_os_str())?);
        }
        Ok(Spawn {
            program: c_string(program.as_os_str())?,
            argv,
            envp: environment(env)?,
            workdir: c_string(workdir.as_os_str())?,
            stdio,
            cgroups,
        })
    }
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", s.to_string_lossy()),
        )
    })
}

/// The server's environment with `added` on top, as `KEY=VALUE` strings.
fn environment(added: &[(String, String)]) -> io::Result<Vec<CString>> {
    let mut vars: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
        std::env::vars_os().collect();
    for (key, value) in added {
        vars.insert(key.into(), value.into());
    }
    vars.into_iter()
        .map(|(key, value)| {
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            CString::new(pair).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an environment variable contains a NUL byte",
                )
            })
        })
        .collect()
}

type Request = (Spawn, mpsc::SyncSender<io::Result<u32>>);

static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

fn spawner() -> &'static mpsc::Sender<Request> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("slipway-spawner".into())
            .spawn(move || {
                // Signals go to the server's other threads; a child starts with them all
                // blocked, so that no handler of the server runs on its stack, and unblocks
                // them after resetting their dispositions.
                block_all_signals();
                let mut stack = ChildStack::new();
                for (spawn, reply) in rx {
                    let started = match &mut stack {
                        Ok(stack) => start(&spawn, stack),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    drop(spawn);
                    let _ = reply.send(started);
                }
            })
            .expect("cannot start the process spawner thread");
        tx
    })
}

/// Starts `spawn` on the spawner thread and returns the child's pid once its program runs.
/// The caller must reap the child ([`crate::child::Child`] does).
///
/// # Errors
/// Where it failed: `exec`'s own error (such as `NotFound`), or one saying which step of
/// the setup failed.
pub(crate) fn spawn(spawn: Spawn) -> io::Result<u32> {
    slipway_core::plane::assert_control_plane("starting a process");
    let (reply, answer) = mpsc::sync_channel(1);
    spawner()
        .send((spawn, reply))
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?
}

fn block_all_signals() {
    // SAFETY: sigfillset initialises the set; pthread_sigmask changes this thread's mask only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// The stack a child runs on until its `execve`: mapped once, below a guard page.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

const STACK_BYTES: usize = 256 * 1024;

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf only reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = STACK_BYTES + page;
        // SAFETY: a fresh private anonymous mapping, owned by the returned value.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the lowest page of the mapping just made; an overflow faults there.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            let error = io::Error::last_os_error();
            // SAFETY: unmapping what was mapped above.
            unsafe { libc::munmap(base, len) };
            return Err(error);
        }
        Ok(ChildStack { base, len })
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&mut self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

/// Where a child failed, written by the child before it exits.
const STAGE_SIGNALS: i32 = 1;
const STAGE_PARENT: i32 = 2;
const STAGE_GROUP: i32 = 3;
const STAGE_CGROUP: i32 = 4;
const STAGE_STDIO: i32 = 5;
const STAGE_DIRECTORY: i32 = 6;
const STAGE_EXEC: i32 = 7;

/// What [`child_main`] reads: raw pointers into a [`Spawn`] that outlives the child's use
/// of them (the spawner thread is suspended until the child execs or exits).
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    workdir: *const libc::c_char,
    stdio: [libc::c_int; 3],
    cgroups: *const libc::c_int,
    cgroups_len: usize,
    parent: libc::pid_t,
    stage: AtomicI32,
    errno: AtomicI32,
}

fn start(spawn: &Spawn, stack: &mut ChildStack) -> io::Result<u32> {
    let argv = null_terminated(&spawn.argv);
    let envp = null_terminated(&spawn.envp);
    let cgroups: Vec<libc::c_int> = spawn.cgroups.iter().map(AsRawFd::as_raw_fd).collect();
    let args = ChildArgs {
        program: spawn.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        workdir: spawn.workdir.as_ptr(),
        stdio: [
            spawn.stdio[0].as_raw_fd(),
            spawn.stdio[1].as_raw_fd(),
            spawn.stdio[2].as_raw_fd(),
        ],
        cgroups: cgroups.as_ptr(),
        cgroups_len: cgroups.len(),
        parent: rustix::process::getpid().as_raw_pid(),
        stage: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    // SAFETY: the child shares this address space and runs `child_main` on `stack`, which
    // nothing else uses, while this thread is suspended (CLONE_VFORK) until the child has
    // called execve or exited; `args` and everything it points to live until then. The
    // child makes only async-signal-safe calls (see `child_main`).
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&args).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let stage = args.stage.load(Ordering::SeqCst);
    if stage == 0 {
        return Ok(pid.unsigned_abs());
    }
    // The child has exited: reap it before saying why.
    let mut status = 0;
    // SAFETY: waits for the child just made, which nobody else waits for.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Err(stage_error(stage, args.errno.load(Ordering::SeqCst)))
}

/// The C array `execve` takes: pointers to `strings`, then a null pointer.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The error a failed child reported, as the `fork` + `exec` error it replaces.
fn stage_error(stage: i32, errno: i32) -> io::Error {
    let error = io::Error::from_raw_os_error(errno);
    match stage {
        STAGE_EXEC => error,
        STAGE_CGROUP => io::Error::new(
            error.kind(),
            format!("cannot join the instance's cgroup: {error}"),
        ),
        STAGE_PARENT => io::Error::other("the server stopped while the process started"),
        STAGE_DIRECTORY => io::Error::new(
            error.kind(),
            format!("cannot enter the working directory: {error}"),
        ),
        STAGE_SIGNALS => io::Error::other(format!("cannot reset its signals: {error}")),
        STAGE_GROUP => io::Error::other(format!("cannot make its process group: {error}")),
        _ => io::Error::other(format!(
            "cannot set up its standard input and output: {error}"
        )),
    }
}

/// The child between `clone` and `execve`. Only raw system calls through libc, no
/// allocation, no locks, no panics: it shares the server's memory while the server's other
/// threads run.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of `start`, alive and unchanged until this returns
    // or execs; every pointer in it is valid as `start` documents.
    unsafe {
        let args = &*arg.cast::<ChildArgs>();
        let fail = |stage: i32| -> libc::c_int {
            args.errno
                .store(*libc::__errno_location(), Ordering::SeqCst);
            args.stage.store(stage, Ordering::SeqCst);
            libc::_exit(127)
        };
        // Default dispositions for every signal (the child has its own copy of the table):
        // no handler of the server may run here, and what the server ignores (SIGPIPE) is
        // the program's default again. The raw call, since glibc's wrapper refuses the two
        // signals it keeps for itself; a zeroed kernel `sigaction` is SIG_DFL.
        let default = [0_u64; 4];
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL
                && signal != libc::SIGSTOP
                && libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8,
                ) != 0
            {
                return fail(STAGE_SIGNALS);
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return fail(STAGE_PARENT);
        }
        // If the server died before the prctl took effect, the signal will never come.
        if libc::getppid() != args.parent {
            *libc::__errno_location() = libc::ESRCH;
            return fail(STAGE_PARENT);
        }
        // A group of its own, so that a stop reaches the program's children too.
        if libc::setpgid(0, 0) != 0 {
            return fail(STAGE_GROUP);
        }
        for i in 0..args.cgroups_len {
            // "0" is the writer: this process, a single thread until the program starts.
            if libc::write(*args.cgroups.add(i), b"0".as_ptr().cast(), 1) != 1 {
                return fail(STAGE_CGROUP);
            }
        }
        for (target, &source) in (0..).zip(args.stdio.iter()) {
            let done = if source == target {
                // Already in place: only its close-on-exec flag has to go.
                libc::fcntl(source, libc::F_SETFD, 0)
            } else {
                libc::dup2(source, target)
            };
            if done < 0 {
                return fail(STAGE_STDIO);
            }
        }
        if libc::chdir(args.workdir) != 0 {
            return fail(STAGE_DIRECTORY);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
        fail(STAGE_EXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_errors_come_back_as_they_are_and_the_others_say_where() {
        let exec = stage_error(STAGE_EXEC, libc::ENOEXEC);
        assert_eq!(exec.raw_os_error(), Some(libc::ENOEXEC));
        let cgroup = stage_error(STAGE_CGROUP, libc::EACCES);
        assert_eq!(cgroup.kind(), io::ErrorKind::PermissionDenied);
        assert!(cgroup.to_string().contains("cgroup"), "{cgroup}");
        let parent = stage_error(STAGE_PARENT, libc::ESRCH);
        assert!(parent.to_string().contains("server stopped"), "{parent}");
    }

    #[test]
    fn the_environment_is_the_servers_with_the_added_on_top() {
        let env = environment(&[
            ("SLIPWAY_TEST_A".into(), "1".into()),
            ("SLIPWAY_TEST_A".into(), "2".into()),
        ])
        .unwrap();
        let a: Vec<_> = env
            .iter()
            .filter(|e| e.as_bytes().starts_with(b"SLIPWAY_TEST_A="))
            .collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].as_bytes(), b"SLIPWAY_TEST_A=2");
        assert!(environment(&[("B".into(), "x\0y".into())]).is_err());
    }
}
