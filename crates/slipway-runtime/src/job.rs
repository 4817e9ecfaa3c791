//! One-shot commands — a service's build, test and release commands, and any later job —
//! started exactly like instances (see [`crate::process::start`]: own process group,
//! parent-death signal, started by the spawner thread), their output collected line by line,
//! and bounded by a timeout after which the whole process group is killed.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::process;

/// A command to run to completion.
#[derive(Clone, Debug)]
pub struct Job {
    /// The command line; `argv[0]` is looked up in `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// Variables added to the server's environment.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub workdir: PathBuf,
    /// How long it may run before its process group is killed.
    pub timeout: Duration,
    /// How many of the newest output lines are kept in [`JobOutcome::lines`].
    pub keep_lines: usize,
}

/// How a job ended.
#[derive(Debug)]
pub enum JobEnd {
    /// It exited (successfully or not) or was killed by a signal it did not expect.
    Exited(ExitStatus),
    /// It ran past its timeout and its process group was killed.
    TimedOut,
    /// Its exit status could not be read.
    Lost(io::Error),
}

/// What a job did.
#[derive(Debug)]
pub struct JobOutcome {
    pub end: JobEnd,
    /// Its newest output lines (stdout and stderr interleaved as they came), after `on_line`.
    pub lines: Vec<String>,
    pub elapsed: Duration,
}

impl JobOutcome {
    /// Whether it exited with status 0.
    pub fn succeeded(&self) -> bool {
        matches!(&self.end, JobEnd::Exited(status) if status.success())
    }
}

/// Called with every output line as it comes, before it is kept: it may rewrite the line
/// (mask secrets) and pass it on (to a deploying terminal).
pub type OnLine = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Runs `job` to its end (or its timeout).
///
/// # Errors
/// The command could not be started (not found, not executable, bad working directory, an
/// empty `argv`).
pub async fn run_job(job: Job, on_line: OnLine) -> io::Result<JobOutcome> {
    let Some(program) = job.argv.first().filter(|p| !p.is_empty()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command is empty",
        ));
    };
    let started = Instant::now();
    // Behind the guard when the server has one, so that the whole group dies with it.
    let mut child = match crate::guard::guard_program() {
        Some(guard) => {
            let mut argv = vec![
                "slipway".to_owned(),
                crate::guard::GUARD_ARG.to_owned(),
                program.clone(),
            ];
            argv.extend(job.argv.iter().cloned());
            process::start(guard, &argv, &job.env, &job.workdir, Vec::new())?
        }
        None => process::start(
            Path::new(program),
            &job.argv,
            &job.env,
            &job.workdir,
            Vec::new(),
        )?,
    };
    let pid = child.id();
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    let mut readers = Vec::new();
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        readers.push(tokio::spawn(collect(
            stream,
            lines.clone(),
            job.keep_lines,
            on_line.clone(),
        )));
    }
    let end = match tokio::time::timeout(job.timeout, child.wait()).await {
        Ok(Ok(status)) => JobEnd::Exited(status),
        Ok(Err(e)) => JobEnd::Lost(e),
        Err(_) => {
            process::signal_group(pid, rustix::process::Signal::KILL);
            let _ = child.wait().await;
            JobEnd::TimedOut
        }
    };
    for reader in readers {
        // The group is gone or done, so the pipes close; bound the wait all the same (a
        // daemonised grandchild may hold them open).
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(JobOutcome {
        end,
        lines: lines.into(),
        elapsed: started.elapsed(),
    })
}

/// Reads `stream` line by line into `lines` (the newest `keep`), through `on_line`.
async fn collect(
    stream: impl AsyncRead + Unpin,
    lines: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
    on_line: OnLine,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                on_line(&mut line);
                let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() >= keep {
                    lines.pop_front();
                }
                if keep > 0 {
                    lines.push_back(line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(script: &str, timeout: Duration) -> Job {
        Job {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            workdir: std::env::temp_dir(),
            timeout,
            keep_lines: 3,
        }
    }

    #[tokio::test]
    async fn a_job_reports_its_exit_and_its_newest_lines_through_on_line() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let on_line: OnLine = Arc::new({
            let seen = seen.clone();
            move |line: &mut String| {
                *line = line.replace("hello", "[secret GREETING]");
                seen.lock().unwrap().push(line.clone());
            }
        });
        let out = run_job(
            job(
                "for i in 1 2 3 4; do echo $GREETING $i; done; exit 3",
                Duration::from_secs(10),
            ),
            on_line,
        )
        .await
        .unwrap();
        assert!(matches!(out.end, JobEnd::Exited(s) if s.code() == Some(3)));
        assert!(!out.succeeded());
        assert_eq!(
            out.lines,
            [
                "[secret GREETING] 2",
                "[secret GREETING] 3",
                "[secret GREETING] 4"
            ]
        );
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_job_past_its_timeout_is_killed_with_its_children() {
        let marker = tempfile::tempdir().unwrap();
        let pidfile = marker.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let out = run_job(
            job(&script, Duration::from_millis(500)),
            Arc::new(|_: &mut String| {}),
        )
        .await
        .unwrap();
        assert!(matches!(out.end, JobEnd::TimedOut));
        let child: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::process::is_running(child) {
            assert!(
                Instant::now() < deadline,
                "the job's child {child} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn a_job_that_cannot_start_says_so() {
        let mut missing = job("", Duration::from_secs(1));
        missing.argv = vec!["/nonexistent/slipway-test-program".into()];
        assert!(
            run_job(missing, Arc::new(|_: &mut String| {}))
                .await
                .is_err()
        );
        let mut empty = job("", Duration::from_secs(1));
        empty.argv.clear();
        assert!(run_job(empty, Arc::new(|_: &mut String| {})).await.is_err());
    }
}
