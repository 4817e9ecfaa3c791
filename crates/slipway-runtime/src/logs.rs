//! Output capture: splits a process's stdout and stderr into lines, writes them to a size-rotated
//! log file with a timestamp and the stream name, keeps the most recent lines in memory for error
//! messages, and reads the files back for `slipway logs`.
//!
//! A log file line is `<RFC 3339 UTC timestamp with milliseconds> <stream> <text>\n`, where the
//! stream is `stdout`, `stderr`, or `slipway` for the runtime's own events about the instance
//! (spawned, exited, restarting, stopping). Lines longer than [`MAX_LINE_BYTES`] are split into
//! several lines (at a UTF-8 character boundary), and a last line without a newline is kept when
//! the stream ends.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Output lines longer than this many bytes are split into several lines.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// How many recent output lines each instance keeps in memory.
pub const RING_LINES: usize = 200;
/// The buffer in front of each log file: lines are written out when it fills and whenever
/// the process has nothing more to say for the moment. It exists only while lines wait in it
/// (see [`LogFile`]).
const LOG_BUFFER: usize = 64 * 1024;

/// How many of the first error-looking lines of each process an instance keeps in memory:
/// the cause of a failed start is often printed long before its last lines (gunicorn prints
/// `Failed to find attribute 'app' in 'mysite.wsgi'.`, then a traceback of 30 lines).
pub(crate) const FIRST_ERROR_LINES: usize = 10;

/// Words that make an output line look like an error, matched ignoring ASCII case: `error`
/// also covers `error:`, `[ERROR]` and Python's `...Error:` exceptions, `failed` gunicorn's
/// `Failed to find attribute` and `App failed to load`, `critical` its `[CRITICAL]` lines,
/// `panicked` Rust's panics.
const ERROR_WORDS: [&str; 7] = [
    "error",
    "exception",
    "traceback",
    "fatal",
    "failed",
    "panicked",
    "critical",
];

/// Whether an output line looks like it reports an error.
fn looks_like_error(line: &str) -> bool {
    let line = line.as_bytes();
    ERROR_WORDS.iter().any(|word| {
        line.windows(word.len())
            .any(|window| window.eq_ignore_ascii_case(word.as_bytes()))
    })
}

/// The output lines that explain a failure: the error-looking lines written before `tail`
/// (`errors`, each with its number among all output lines, oldest first), then `tail`, the
/// last lines, whose first has number `tail_start`. Wherever lines are left out, a line such
/// as `… (37 lines not shown)` says how many. Error lines already in `tail` are not repeated.
pub(crate) fn explaining_lines(
    errors: &[(u64, String)],
    tail: &[String],
    tail_start: u64,
) -> Vec<String> {
    let gap = |n: u64| format!("… ({n} line{} not shown)", if n == 1 { "" } else { "s" });
    let mut out = Vec::new();
    let mut next = None;
    for (number, text) in errors.iter().filter(|(number, _)| *number < tail_start) {
        if let Some(next) = next.filter(|next| number > next) {
            out.push(gap(number - next));
        }
        out.push(text.clone());
        next = Some(number + 1);
    }
    if let Some(next) = next.filter(|next| tail_start > *next) {
        out.push(gap(tail_start - next));
    }
    out.extend(tail.iter().cloned());
    out
}

/// One line of an instance's log file, as read back by [`read_log_lines`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The RFC 3339 UTC timestamp, such as `2026-11-03T12:00:00.123Z`; empty for a line that is
    /// not in the log format.
    pub ts: String,
    /// `stdout`, `stderr` or `slipway`; empty for a line that is not in the log format.
    pub stream: String,
    /// The text of the line without its newline.
    pub text: String,
}

/// Reads an instance's log, oldest line first: the rotated files from the highest number down
/// to `<file>.1`, then the file itself. Missing or unreadable files contribute nothing; bytes
/// that are not UTF-8 are replaced.
pub fn read_log_lines(log_file: &Path) -> Vec<LogLine> {
    slipway_core::plane::assert_control_plane("reading a log file");
    let mut lines = Vec::new();
    for path in rotated_files(log_file)
        .into_iter()
        .chain(std::iter::once(log_file.to_path_buf()))
    {
        let Ok(bytes) = fs::read(&path) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        lines.extend(text.lines().map(parse_line));
    }
    lines
}

/// The last `n` lines of an instance's log, oldest first, read backwards from the end of the
/// file (and of `<file>.1`, `<file>.2` … when it holds fewer): the cost depends on `n`, not
/// on the size of the files.
pub fn read_last_lines(log_file: &Path, n: usize) -> Vec<LogLine> {
    slipway_core::plane::assert_control_plane("reading a log file");
    let mut newest_first = rotated_files(log_file);
    newest_first.reverse();
    let mut lines: VecDeque<String> = VecDeque::new();
    for path in std::iter::once(log_file.to_path_buf()).chain(newest_first) {
        if lines.len() >= n {
            break;
        }
        for line in last_lines_of(&path, n - lines.len()).into_iter().rev() {
            lines.push_front(line);
        }
    }
    lines.iter().map(|l| parse_line(l)).collect()
}

/// The last `n` lines of one file, oldest first (none if it cannot be read).
fn last_lines_of(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    if n == 0 {
        return Vec::new();
    }
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    let mut pos = len;
    // n complete lines need n + 1 newlines before the end (the one that ends the line before
    // them), unless the file starts within what was read.
    while pos > 0 && newlines <= n {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0; (pos - start) as usize];
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_exact(&mut block).is_err() {
            break;
        }
        newlines += block.iter().filter(|&&b| b == b'\n').count();
        blocks.push(block);
        pos = start;
    }
    let bytes: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if pos > 0 && !lines.is_empty() {
        // Starts mid-line.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| (*l).to_owned()).collect()
}

/// Follows log files by byte offset, for `slipway logs --follow`: each [`LogTail::poll`]
/// reads only what was appended since the last one, however large the files are.
///
/// A file seen for the first time is read from its start (an instance that started while
/// following). A file that got shorter was rotated: the rest of its old content is read from
/// `<file>.1` (where rotation moved it) before the new file is read from its start. A line
/// still being written (no newline yet) is held back until it is complete.
#[derive(Debug, Default)]
pub struct LogTail {
    files: std::collections::HashMap<PathBuf, TailState>,
}

#[derive(Debug, Default)]
struct TailState {
    offset: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
}

impl LogTail {
    /// Starts following `files` at their current ends: only lines written from now on are
    /// returned.
    pub fn at_end(files: impl IntoIterator<Item = PathBuf>) -> LogTail {
        let mut tail = LogTail::default();
        for path in files {
            let offset = fs::metadata(&path).map_or(0, |m| m.len());
            tail.files.insert(
                path,
                TailState {
                    offset,
                    partial: Vec::new(),
                },
            );
        }
        tail
    }

    /// The complete lines appended to `files` since the last call, each with its file, in
    /// file order. Files no longer listed are forgotten.
    pub fn poll(&mut self, files: impl IntoIterator<Item = PathBuf>) -> Vec<(PathBuf, LogLine)> {
        slipway_core::plane::assert_control_plane("following a log file");
        let mut out = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for path in files {
            let state = self.files.entry(path.clone()).or_default();
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            if len < state.offset {
                // Rotated: `<file>.1` holds what was written before the rotation.
                let mut rotated = path.clone().into_os_string();
                rotated.push(".1");
                let rest = read_from(Path::new(&rotated), state.offset);
                take_lines(&mut state.partial, &rest, true, &path, &mut out);
                state.offset = 0;
            }
            if len > state.offset {
                let new = read_from(&path, state.offset);
                state.offset += new.len() as u64;
                take_lines(&mut state.partial, &new, false, &path, &mut out);
            }
            listed.insert(path);
        }
        self.files.retain(|path, _| listed.contains(path));
        out
    }
}

/// The bytes of `path` from `offset` to its end (nothing if it cannot be read).
fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_end(&mut bytes);
    }
    bytes
}

/// Appends the complete lines of `partial` + `bytes` to `out`, keeping an unfinished last line
/// in `partial` (or emitting it too when `flush`: its file will not grow any more).
fn take_lines(
    partial: &mut Vec<u8>,
    bytes: &[u8],
    flush: bool,
    path: &Path,
    out: &mut Vec<(PathBuf, LogLine)>,
) {
    partial.extend_from_slice(bytes);
    let complete = if flush {
        partial.len()
    } else {
        match partial.iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None => return,
        }
    };
    let rest = partial.split_off(complete);
    out.extend(
        String::from_utf8_lossy(partial)
            .lines()
            .map(|line| (path.to_path_buf(), parse_line(line))),
    );
    *partial = rest;
}

/// The rotated siblings `<file>.<n>` of a log file, highest (oldest) number first.
fn rotated_files(log_file: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log_file.parent(), log_file.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut numbered: Vec<(u64, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let file_name = entry.file_name();
            let number = file_name.to_str()?.strip_prefix(&prefix)?;
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((number.parse().ok()?, entry.path()))
        })
        .collect();
    numbered.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
    numbered.into_iter().map(|(_, path)| path).collect()
}

/// Deletes the logs of stopped instances in `dir`, one service's log directory, where the log
/// of instance `<id>` is `<id>.log` with its rotated siblings `<id>.log.<n>`. The logs of the
/// `keep` instances written to most recently stay, unless they are older than `max_age`; the
/// logs of instances for which `running` is true are never touched (the caller counts an
/// instance as running from before its log is created). Other files are left alone.
/// Returns how many instances' logs were deleted; a missing directory has none.
pub fn prune_logs(
    dir: &Path,
    running: &dyn Fn(&str) -> bool,
    keep: usize,
    max_age: std::time::Duration,
) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    // Per stopped instance: when it was last written, and its files.
    let mut stopped: std::collections::HashMap<String, (std::time::SystemTime, Vec<PathBuf>)> =
        std::collections::HashMap::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some((id, rest)) = file_name.to_str().and_then(|n| n.split_once(".log")) else {
            continue;
        };
        let rotated = rest
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if id.is_empty() || !(rest.is_empty() || rotated) || running(id) {
            continue;
        }
        // A file deleted meanwhile (by a prune running at the same time) is skipped.
        let modified = match entry.metadata().and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let (last, files) = stopped
            .entry(id.to_owned())
            .or_insert((std::time::UNIX_EPOCH, Vec::new()));
        *last = (*last).max(modified);
        files.push(entry.path());
    }
    let now = std::time::SystemTime::now();
    let mut stopped: Vec<_> = stopped.into_values().collect();
    stopped.sort_by_key(|(last, _)| std::cmp::Reverse(*last));
    let mut deleted = 0;
    for (rank, (last, files)) in stopped.into_iter().enumerate() {
        if rank < keep && now.duration_since(last).unwrap_or_default() <= max_age {
            continue;
        }
        for file in files {
            ignore_not_found(fs::remove_file(file))?;
        }
        deleted += 1;
    }
    Ok(deleted)
}

/// Parses one log file line; a line that is not in the log format becomes text only.
fn parse_line(line: &str) -> LogLine {
    let mut parts = line.splitn(3, ' ');
    if let (Some(ts), Some(stream), Some(text)) = (parts.next(), parts.next(), parts.next())
        && ts.parse::<jiff::Timestamp>().is_ok()
    {
        return LogLine {
            ts: ts.to_string(),
            stream: stream.to_string(),
            text: text.to_string(),
        };
    }
    LogLine {
        ts: String::new(),
        stream: String::new(),
        text: line.to_string(),
    }
}

/// The current time in the log format: RFC 3339, UTC, milliseconds.
fn timestamp() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

/// Where an instance's output goes: the rotated log file and the in-memory ring of recent lines.
/// Shared by the stdout and stderr readers of every process of the instance.
pub(crate) struct Output {
    inner: Mutex<OutputInner>,
}

struct OutputInner {
    writer: LogWriter,
    /// The last [`RING_LINES`] output lines.
    ring: VecDeque<String>,
    /// How many output lines were recorded: the number of the next one.
    recorded: u64,
    /// The first [`FIRST_ERROR_LINES`] error-looking output lines of the current process, with
    /// their numbers.
    first_errors: Vec<(u64, String)>,
    /// How many lines this instance wrote to its log file (output and events).
    logged: u64,
}

impl Output {
    /// Opens (or creates, with its parent directories) the log file for appending.
    pub(crate) fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Output> {
        Ok(Output {
            inner: Mutex::new(OutputInner {
                writer: LogWriter::open(path, max_bytes, keep)?,
                ring: VecDeque::with_capacity(RING_LINES),
                recorded: 0,
                first_errors: Vec::new(),
                logged: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutputInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one line of the process's output.
    pub(crate) fn line(&self, stream: &str, text: &str) {
        let mut inner = self.lock();
        inner.writer.write_line(stream, text);
        inner.logged += 1;
        if inner.ring.len() == RING_LINES {
            inner.ring.pop_front();
        }
        inner.ring.push_back(text.to_string());
        let number = inner.recorded;
        inner.recorded += 1;
        if inner.first_errors.len() < FIRST_ERROR_LINES && looks_like_error(text) {
            inner.first_errors.push((number, text.to_string()));
        }
    }

    /// Records an event of the runtime about this instance (log file only, not the ring),
    /// written out at once.
    pub(crate) fn event(&self, text: &str) {
        let mut inner = self.lock();
        inner.writer.write_line("slipway", text);
        inner.writer.flush();
        inner.logged += 1;
    }

    /// Writes out the lines recorded so far (they are buffered: one write per batch of
    /// output, not per line).
    pub(crate) fn flush(&self) {
        self.lock().writer.flush();
    }

    /// Starts remembering the first error lines of a new process.
    pub(crate) fn begin_process(&self) {
        self.lock().first_errors.clear();
    }

    /// The first error-looking lines of the current process that are older than the last
    /// `n` lines, then the last `n` lines (see [`explaining_lines`]).
    pub(crate) fn explaining_lines(&self, n: usize) -> Vec<String> {
        let inner = self.lock();
        let skip = inner.ring.len().saturating_sub(n);
        let tail: Vec<String> = inner.ring.iter().skip(skip).cloned().collect();
        let tail_start = inner.recorded - tail.len() as u64;
        explaining_lines(&inner.first_errors, &tail, tail_start)
    }

    /// How many lines this instance wrote to its log file, output and events.
    pub(crate) fn logged_lines(&self) -> u64 {
        self.lock().logged
    }

    /// The last `n` output lines, oldest first.
    pub(crate) fn last_lines(&self, n: usize) -> Vec<String> {
        let inner = self.lock();
        let skip = inner.ring.len().saturating_sub(n);
        inner.ring.iter().skip(skip).cloned().collect()
    }
}

/// Appends lines to a log file through a buffer and rotates it by size, keeping `keep` old
/// files.
struct LogWriter {
    path: PathBuf,
    file: Option<LogFile>,
    size: u64,
    max_bytes: u64,
    keep: usize,
    /// Whether a write failure was already reported, so that a full disk is not reported per line.
    warned: bool,
}

impl LogWriter {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<LogWriter> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: Some(LogFile::Idle(file)),
            size,
            max_bytes,
            keep,
            warned: false,
        })
    }

    fn write_line(&mut self, stream: &str, text: &str) {
        let line = format!("{} {stream} {text}\n", timestamp());
        let written = self.try_write(line.as_bytes());
        self.report(written);
    }

    /// Writes out the buffered lines and gives the emptied buffer back.
    fn flush(&mut self) {
        if let Some(LogFile::Buffering(writer)) = &mut self.file {
            let flushed = writer.flush();
            if flushed.is_ok()
                && let Some(LogFile::Buffering(writer)) = self.file.take()
            {
                // Just flushed: nothing is left in the buffer for `into_parts` to hand back.
                self.file = Some(LogFile::Idle(writer.into_parts().0));
            }
            self.report(flushed);
        }
    }

    /// Warns of a write failure once, not per line (a full disk).
    fn report(&mut self, result: io::Result<()>) {
        if let Err(err) = result {
            if !self.warned {
                tracing::warn!(path = %self.path.display(), "cannot write instance log: {err}");
                self.warned = true;
            }
        } else {
            self.warned = false;
        }
    }

    fn try_write(&mut self, line: &[u8]) -> io::Result<()> {
        slipway_core::plane::assert_control_plane("writing a log file");
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        let mut writer = match self.file.take() {
            Some(LogFile::Buffering(writer)) => writer,
            Some(LogFile::Idle(file)) => io::BufWriter::with_capacity(LOG_BUFFER, file),
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                self.size = file.metadata()?.len();
                io::BufWriter::with_capacity(LOG_BUFFER, file)
            }
        };
        let written = writer.write_all(line);
        self.file = Some(LogFile::Buffering(writer));
        written?;
        self.size += len;
        Ok(())
    }

    /// Shifts `<file>.N-1` to `<file>.N` … and the file to `<file>.1`, dropping the oldest.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(LogFile::Buffering(mut writer)) = self.file.take() {
            writer.flush()?;
        }
        if self.keep == 0 {
            ignore_not_found(fs::remove_file(&self.path))?;
        } else {
            for n in (1..self.keep).rev() {
                ignore_not_found(fs::rename(
                    numbered(&self.path, n),
                    numbered(&self.path, n + 1),
                ))?;
            }
            ignore_not_found(fs::rename(&self.path, numbered(&self.path, 1)))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(LogFile::Idle(file));
        Ok(())
    }
}

/// A log file and, while lines wait to be written out, its [`LOG_BUFFER`]. The first line
/// after a flush makes the buffer and the flush that empties it drops it, so an instance holds
/// no buffer between its bursts of output. A buffer kept for the instance's whole life cost
/// 64 KiB each: a deploy of a thousand services held 64-128 MiB of them at once, and the heap
/// kept that room after the instances stopped.
enum LogFile {
    Idle(File),
    Buffering(io::BufWriter<File>),
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn ignore_not_found(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Reads a stream to its end and records every line in `output` under the name `stream`.
pub(crate) async fn pump<R: AsyncRead + Unpin>(reader: R, stream: &str, output: &Output) {
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    let mut unflushed = false;
    loop {
        if unflushed && reader.buffer().is_empty() {
            // All that was read is recorded, and the next read may wait: write it out now,
            // so that `logs` and `logs -f` see it.
            output.flush();
            unflushed = false;
        }
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let room = MAX_LINE_BYTES - line.len();
        match buf.iter().position(|&b| b == b'\n') {
            Some(end) if end <= room => {
                line.extend_from_slice(&buf[..end]);
                reader.consume(end + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                output.line(stream, &String::from_utf8_lossy(&line));
                unflushed = true;
                line.clear();
            }
            _ => {
                let take = buf.len().min(room);
                line.extend_from_slice(&buf[..take]);
                reader.consume(take);
                if line.len() >= MAX_LINE_BYTES {
                    let rest = split_at_char_boundary(&mut line);
                    output.line(stream, &String::from_utf8_lossy(&line));
                    unflushed = true;
                    line = rest;
                }
            }
        }
    }
    if !line.is_empty() {
        output.line(stream, &String::from_utf8_lossy(&line));
    }
    output.flush();
}

/// Cuts an incomplete UTF-8 character off the end of `line` and returns it, so that a long line
/// split into pieces does not break a character in two.
fn split_at_char_boundary(line: &mut Vec<u8>) -> Vec<u8> {
    match std::str::from_utf8(line) {
        Err(err) if err.error_len().is_none() && err.valid_up_to() > 0 => {
            line.split_off(err.valid_up_to())
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_in(dir: &Path, max_bytes: u64, keep: usize) -> (Output, PathBuf) {
        let path = dir.join("logs/nested/app.log");
        (Output::open(&path, max_bytes, keep).unwrap(), path)
    }

    fn texts(lines: &[LogLine], stream: &str) -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.clone())
            .collect()
    }

    #[tokio::test]
    async fn pump_splits_lines_long_lines_and_keeps_a_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let (output, path) = output_in(dir.path(), 1 << 20, 1);
        // One ASCII byte, then two-byte characters: the first split point falls inside one.
        let long = format!("a{}", "é".repeat(MAX_LINE_BYTES));
        let input = format!("first\r\n\nsecond\n{long}\ntail");
        pump(input.as_bytes(), "stdout", &output).await;

        let lines = read_log_lines(&path);
        let got = texts(&lines, "stdout");
        assert_eq!(got[..3], ["first", "", "second"]);
        assert_eq!(got.last().map(String::as_str), Some("tail"));
        let pieces = &got[3..got.len() - 1];
        assert_eq!(pieces.len(), 3, "a 32 KiB line is split into three pieces");
        assert!(pieces.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert!(!pieces.concat().contains('\u{FFFD}'), "no character is cut");
        assert_eq!(pieces.concat(), long);
        let lengths: Vec<usize> = pieces.iter().map(String::len).collect();
        assert_eq!(lengths, [MAX_LINE_BYTES - 1, MAX_LINE_BYTES, 2]);
        assert_eq!(output.last_lines(2), ["é", "tail"]);
    }

    #[tokio::test]
    async fn lines_carry_a_millisecond_utc_timestamp_and_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (output, path) = output_in(dir.path(), 1 << 20, 1);
        pump(&b"to stderr\n"[..], "stderr", &output).await;
        output.event("spawned");

        let raw = fs::read_to_string(&path).unwrap();
        let first = raw.lines().next().unwrap();
        let (ts, rest) = first.split_once(' ').unwrap();
        assert_eq!(rest, "stderr to stderr");
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-11-03T12:00:00.123Z".len(),
            "{ts}"
        );
        ts.parse::<jiff::Timestamp>().unwrap();

        let lines = read_log_lines(&path);
        assert_eq!(texts(&lines, "stderr"), ["to stderr"]);
        assert_eq!(texts(&lines, "slipway"), ["spawned"]);
        assert_eq!(
            output.last_lines(10),
            ["to stderr"],
            "events stay out of the ring"
        );
    }

    #[test]
    fn error_looking_lines() {
        for line in [
            "Failed to find attribute 'app' in 'mysite.wsgi'.",
            "[2026-01-01 00:00:00 +0000] [7] [ERROR] Exception in worker process",
            "Traceback (most recent call last):",
            "django.db.utils.OperationalError: no such table: polls_question",
            "error: could not bind",
            "FATAL:  password authentication failed for user \"app\"",
            "thread 'main' panicked at src/main.rs:3:5:",
            "[CRITICAL] WORKER TIMEOUT (pid:9)",
        ] {
            assert!(looks_like_error(line), "{line}");
        }
        for line in [
            "[INFO] Booting worker with pid: 7",
            "  File \"/app/mysite/wsgi.py\", line 16, in <module>",
            "Listening at: http://127.0.0.1:21345",
            "",
        ] {
            assert!(!looks_like_error(line), "{line}");
        }
    }

    fn owned(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn explaining_lines_put_earlier_errors_before_the_tail_and_count_what_is_left_out() {
        let errors = vec![
            (3, "Failed to find attribute 'app'".to_string()),
            (4, "[ERROR] Worker exited".to_string()),
            (9, "Traceback (most recent call last):".to_string()),
            (40, "HaltServer: App failed to load.".to_string()),
        ];
        let tail = owned(&["  File \"arbiter.py\"", "HaltServer: App failed to load."]);
        assert_eq!(
            explaining_lines(&errors, &tail, 39),
            owned(&[
                "Failed to find attribute 'app'",
                "[ERROR] Worker exited",
                "… (4 lines not shown)",
                "Traceback (most recent call last):",
                "… (29 lines not shown)",
                "  File \"arbiter.py\"",
                "HaltServer: App failed to load.",
            ])
        );
        // An error just before the tail needs no marker; one inside it is not repeated.
        assert_eq!(
            explaining_lines(&errors[..2], &tail, 5),
            owned(&[
                "Failed to find attribute 'app'",
                "[ERROR] Worker exited",
                "  File \"arbiter.py\"",
                "HaltServer: App failed to load.",
            ])
        );
        assert_eq!(explaining_lines(&errors, &tail, 0), tail);
        assert_eq!(explaining_lines(&[], &tail, 39), tail);
        assert_eq!(
            explaining_lines(&errors[..1], &[], 5),
            owned(&["Failed to find attribute 'app'", "… (1 line not shown)"])
        );
    }

    #[test]
    fn output_remembers_the_first_errors_of_each_process() {
        let dir = tempfile::tempdir().unwrap();
        let (output, _) = output_in(dir.path(), 1 << 20, 1);
        output.line("stderr", "error: from an earlier process");
        output.begin_process();
        output.line("stdout", "[INFO] Starting gunicorn");
        output.line("stderr", "Failed to find attribute 'app' in 'mysite.wsgi'.");
        for i in 0..(FIRST_ERROR_LINES + 40) {
            output.line("stderr", &format!("Error {i}"));
        }
        output.line("stderr", "last");
        output.event("pid 7 exited with status 4");
        let lines = output.explaining_lines(2);
        assert_eq!(lines.len(), FIRST_ERROR_LINES + 1 + 2, "{lines:#?}");
        assert_eq!(lines[0], "Failed to find attribute 'app' in 'mysite.wsgi'.");
        assert_eq!(lines[FIRST_ERROR_LINES - 1], "Error 8");
        assert_eq!(lines[FIRST_ERROR_LINES], "… (40 lines not shown)");
        assert_eq!(lines[FIRST_ERROR_LINES + 1..], ["Error 49", "last"]);
        assert_eq!(output.logged_lines(), 1 + 1 + 1 + 50 + 1 + 1);
    }

    #[test]
    fn rotation_keeps_the_newest_files_and_reading_restores_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let (output, path) = output_in(dir.path(), 300, 2);
        for i in 0..100 {
            output.line("stdout", &format!("line {i}"));
        }
        output.flush();
        assert!(path.exists() && numbered(&path, 1).exists() && numbered(&path, 2).exists());
        assert!(
            !numbered(&path, 3).exists(),
            "only two rotated files are kept"
        );
        for p in [&path, &numbered(&path, 1), &numbered(&path, 2)] {
            assert!(fs::metadata(p).unwrap().len() <= 300);
        }

        let numbers: Vec<u32> = read_log_lines(&path)
            .iter()
            .map(|l| l.text.strip_prefix("line ").unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers.last(), Some(&99));
        assert!(numbers.len() > 5);
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    }

    #[test]
    fn rotation_with_keep_zero_only_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let (output, path) = output_in(dir.path(), 100, 0);
        for i in 0..20 {
            output.line("stdout", &format!("line {i}"));
        }
        output.flush();
        assert!(!numbered(&path, 1).exists());
        let lines = read_log_lines(&path);
        assert_eq!(lines.last().unwrap().text, "line 19");
        assert!(lines.len() < 20);
    }

    #[test]
    fn reopening_appends_to_an_existing_log() {
        let dir = tempfile::tempdir().unwrap();
        let (first, path) = output_in(dir.path(), 1 << 20, 1);
        first.line("stdout", "from the first process");
        drop(first);
        let (second, _) = output_in(dir.path(), 1 << 20, 1);
        second.line("stdout", "from the second process");
        second.flush();
        assert_eq!(
            texts(&read_log_lines(&path), "stdout"),
            ["from the first process", "from the second process"]
        );
    }

    #[test]
    fn the_buffer_exists_only_while_lines_wait_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let (output, path) = output_in(dir.path(), 1 << 20, 1);
        let buffering = |o: &Output| matches!(o.lock().writer.file, Some(LogFile::Buffering(_)));
        assert!(!buffering(&output), "no buffer before the first line");
        output.line("stdout", "one");
        output.line("stdout", "two");
        assert!(buffering(&output));
        assert_eq!(
            texts(&read_log_lines(&path), "stdout"),
            Vec::<String>::new()
        );
        output.flush();
        assert!(!buffering(&output), "the flush gives the buffer back");
        assert_eq!(texts(&read_log_lines(&path), "stdout"), ["one", "two"]);
        output.line("stdout", "three");
        output.flush();
        assert_eq!(
            texts(&read_log_lines(&path), "stdout"),
            ["one", "two", "three"]
        );
    }

    #[test]
    fn foreign_lines_are_kept_as_text_and_missing_files_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        assert!(read_log_lines(&path).is_empty());
        fs::write(
            &path,
            "not a log line\n2026-11-03T12:00:00.123Z stdout with  spaces \n",
        )
        .unwrap();
        fs::write(dir.path().join("x.log.old"), "ignored\n").unwrap();
        let lines = read_log_lines(&path);
        assert_eq!(
            lines,
            [
                LogLine {
                    ts: String::new(),
                    stream: String::new(),
                    text: "not a log line".into()
                },
                LogLine {
                    ts: "2026-11-03T12:00:00.123Z".into(),
                    stream: "stdout".into(),
                    text: "with  spaces ".into()
                },
            ]
        );
    }

    #[test]
    fn the_last_lines_come_from_the_end_of_the_file_and_its_rotated_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api-r1-x.log");
        let mut big = String::new();
        for i in 0..50_000 {
            big.push_str(&format!(
                "2026-11-03T12:00:00.000Z stdout line {i} {}\n",
                "x".repeat(40)
            ));
        }
        fs::write(&log, &big).unwrap();
        let last = read_last_lines(&log, 3);
        assert_eq!(
            texts(&last, "stdout"),
            (49_997..50_000)
                .map(|i| format!("line {i} {}", "x".repeat(40)))
                .collect::<Vec<_>>()
        );
        assert_eq!(read_last_lines(&log, 0), vec![]);
        // Too few lines in the file: the rest come from `.1`, then `.2`.
        fs::write(numbered(&log, 2), "2026-11-03T11:00:00.000Z stdout a\n").unwrap();
        fs::write(
            numbered(&log, 1),
            "2026-11-03T11:00:01.000Z stdout b\n2026-11-03T11:00:02.000Z stdout c\n",
        )
        .unwrap();
        fs::write(
            &log,
            "2026-11-03T12:00:00.000Z stdout d\n2026-11-03T12:00:01.000Z stdout e",
        )
        .unwrap();
        assert_eq!(
            texts(&read_last_lines(&log, 4), "stdout"),
            ["b", "c", "d", "e"]
        );
        assert_eq!(
            texts(&read_last_lines(&log, 10), "stdout"),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(read_last_lines(&dir.path().join("missing.log"), 5), vec![]);
    }

    #[test]
    fn a_tail_returns_only_new_complete_lines_and_follows_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("web-r1-1.log");
        let line = |n: u32| format!("2026-11-24T00:00:0{n}.000Z stdout line {n}\n");
        fs::write(&log, line(1)).expect("write");
        let mut tail = LogTail::at_end([log.clone()]);
        assert!(tail.poll([log.clone()]).is_empty());
        // A line in two writes comes out once it is complete.
        let mut file = OpenOptions::new().append(true).open(&log).expect("open");
        file.write_all(b"2026-11-24T00:00:02.000Z stdout li")
            .expect("write");
        assert!(tail.poll([log.clone()]).is_empty());
        file.write_all(b"ne 2\n").expect("write");
        let got = tail.poll([log.clone()]);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].1.ts.as_str(), got[0].1.text.as_str()),
            ("2026-11-24T00:00:02.000Z", "line 2")
        );
        // Rotation: the old file (with one more line) moves to `.1`, a shorter one starts.
        file.write_all(line(3).as_bytes()).expect("write");
        drop(file);
        fs::rename(&log, dir.path().join("web-r1-1.log.1")).expect("rotate");
        fs::write(&log, line(4)).expect("write");
        let texts: Vec<String> = tail
            .poll([log.clone()])
            .into_iter()
            .map(|(_, l)| l.text)
            .collect();
        assert_eq!(texts, vec!["line 3", "line 4"]);
        // A file seen for the first time is read from its start.
        let other = dir.path().join("web-r1-2.log");
        fs::write(&other, line(5)).expect("write");
        let got = tail.poll([log.clone(), other.clone()]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, other);
    }

    #[test]
    fn prune_logs_keeps_running_and_the_newest_stopped_instances() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, age_s: u64| {
            let path = dir.path().join(name);
            let file = File::create(&path).unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(age_s))
                .unwrap();
            path
        };
        // Running: never touched, however old.
        let running = [at("web-r1-a.log", 90_000), at("web-r1-a.log.1", 90_000)];
        // Stopped, newest first: b (its rotated file is older, the newest file counts), c, d.
        let b = [at("web-r2-b.log", 100), at("web-r2-b.log.1", 500)];
        let c = [at("web-r2-c.log", 200)];
        let d = [at("web-r1-d.log", 300), at("web-r1-d.log.2", 400)];
        // Stopped and older than the limit (a day here).
        let e = [at("web-r1-e.log", 100_000)];
        let other = [at("notes.txt", 100_000), at("web-r1-x.logfile", 100_000)];

        let is_running = |id: &str| id == "web-r1-a";
        let day = Duration::from_secs(86_400);
        assert_eq!(prune_logs(dir.path(), &is_running, 2, day).unwrap(), 2);
        let exists = |paths: &[PathBuf]| paths.iter().all(|p| p.exists());
        let gone = |paths: &[PathBuf]| paths.iter().all(|p| !p.exists());
        assert!(exists(&running) && exists(&b) && exists(&c) && exists(&other));
        assert!(gone(&d) && gone(&e));
        // Nothing more to do; keeping none removes every stopped instance's logs.
        assert_eq!(prune_logs(dir.path(), &is_running, 2, day).unwrap(), 0);
        assert_eq!(prune_logs(dir.path(), &is_running, 0, day).unwrap(), 2);
        assert!(exists(&running) && gone(&b) && gone(&c) && exists(&other));
        assert_eq!(
            prune_logs(&dir.path().join("missing"), &is_running, 0, day).unwrap(),
            0
        );
    }
}
