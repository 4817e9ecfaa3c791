//! The terminal: reading a secret without echo, and running a one-off command attached
//! to it.

use anyhow::{Context, bail};

use slipway_control::dto;

/// Reads a secret's value: from a terminal without echo, otherwise all of stdin (one
/// trailing newline dropped, as `echo` adds it).
pub(crate) fn read_secret_value(name: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::{IsTerminal, Read};
    let mut value = zeroize::Zeroizing::new(String::new());
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("value of {name} (not shown): ");
        let _echo = EchoOff::new();
        stdin.read_line(&mut value)?;
        eprintln!();
    } else {
        stdin
            .lock()
            .read_to_string(&mut value)
            .context("cannot read the secret's value from stdin (it must be UTF-8 text)")?;
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Turns the terminal's echo off until dropped.
pub(crate) struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios that tcgetattr fills.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return EchoOff(None);
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            term.c_lflag |= libc::ECHONL;
            libc::tcsetattr(0, libc::TCSANOW, &term);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}

/// Runs a one-off command's plan with this terminal as its stdin, stdout and stderr, and
/// waits for it. While it runs, Ctrl-C and Ctrl-\\ are the command's to handle (the
/// terminal sends them to both); this process ignores them, as a shell does.
pub(crate) fn run_attached(plan: &dto::RunPlan) -> anyhow::Result<std::process::ExitStatus> {
    let Some((program, args)) = plan.argv.split_first() else {
        bail!("no command to run");
    };
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.workdir)
        .spawn()
        .with_context(|| {
            format!(
                "`{program}` could not start in revision {}'s code ({})",
                plan.revision, plan.workdir
            )
        })?;
    // SAFETY: plain signal-disposition changes; the child was forked before them, so it
    // keeps the default handling.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait();
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    Ok(status?)
}

/// The name of the user running the CLI, for the event log.
pub(crate) fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}
