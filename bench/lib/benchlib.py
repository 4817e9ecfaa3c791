#!/usr/bin/env python3
"""The parsing and arithmetic half of the bench scripts (the bash half starts processes).

Every subcommand reads files or standard input and prints plain text, so the bash scripts
stay free of floating-point arithmetic. Standard library only.

Subcommands:
  wrk                          parse wrk --latency output on stdin -> "rps p50_ms p99_ms errors"
  h2load LOGFILE               parse h2load output on stdin and its --log-file -> same four fields
  h2probe N                    exit 0 if h2load output on stdin says all N requests succeeded
  rss SECONDS PID...           sample VmRSS of PIDs for SECONDS, print the peak of their sum in kB
  wait-http URL HOST SECONDS   poll URL with that Host header until it answers 200
  machine                      one line describing the machine (cores, memory, kernel, CPU model)
  summarize RUNS NOTES PROTO BASELINE...
                               Markdown table of the medians of one protocol's runs
  runs RUNS                    Markdown table of every run (the raw figures behind the medians)
  ratio RUNS PROTO A B         one sentence comparing two targets (used for metrics on/off)

RUNS is a tab-separated file, one run per line:
  target proto round rps p50_ms p99_ms errors rss_kb steal_jiffies total_jiffies
  gap_busy_jiffies gap_total_jiffies
(CPU counters of all cores: steal and total during the run, busy and total during the idle
gap before it.)
NOTES is a tab-separated file of "target proto note" for targets that were not measured.

The control-plane parts written in Python (bench/deploy, bench/scaleup) import this file as
a module for the helpers after `ratio`: building the binaries, a pinned Slipway server with
its own data dir (`Slipway`), the API over its Unix socket, event times, CPU counters and
"median, min, max" cells.
"""

import datetime
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

# A run is flagged (and left out of the medians when unflagged runs exist) when the host
# stole at least this share of the CPU while it ran: with 48 % steal, p99 rose to 30-120 ms
# for every proxy on this machine (see /work/shared/CRATES.md, "Measured").
STEAL_LIMIT_PCT = 2.5
# A run is flagged too when other processes kept the machine this busy during the idle gap
# before it: on 2 cores, one compiler process alone makes it 50 %.
BUSY_LIMIT_PCT = 10.0


def fail(message):
    """Print an error for the calling script's user and exit with status 1."""
    print(f"benchlib: {message}", file=sys.stderr)
    sys.exit(1)


def duration_ms(text):
    """Convert a wrk duration such as "501.00us", "1.20ms" or "2.00s" to milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        fail(f"cannot read the duration {text!r} in wrk's output")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an already sorted list.

    The rank is ceil(pct / 100 * n): with n = 1000 values, p99 is rank 990, the 990th
    smallest value (index 989), and p50 is rank 500 (index 499).
    """
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def parse_wrk(out):
    """Return (rps, p50_ms, p99_ms, errors) from wrk --latency output.

    Errors are non-2xx/3xx answers plus socket errors (connect, read, write, timeout).
    """
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        fail("wrk's output has no Requests/sec or latency distribution:\n" + out)
    if float(rps.group(1)) == 0:
        fail("wrk got no answers:\n" + out)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return float(rps.group(1)), duration_ms(p50.group(1)), duration_ms(p99.group(1)), errors


def parse_h2load(out, log_path):
    """Return (rps, p50_ms, p99_ms, errors) from h2load output and its per-request log.

    h2load prints no percentiles, so they come from the log's third column (the request's
    duration in microseconds). Errors are requests that failed or got a non-2xx status.
    """
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    req = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    if not (rps and req):
        fail("h2load's output has no 'finished in' or 'requests:' line:\n" + out)
    if int(req.group(1)) == 0:
        fail("no request succeeded in h2load's run:\n" + out)
    durations = []
    errors = sum(int(g) for g in req.groups()[1:])
    try:
        with open(log_path, encoding="ascii", errors="replace") as log:
            for line in log:
                fields = line.split("\t")
                if len(fields) < 3:
                    continue
                if not fields[1].startswith("2"):
                    errors += 1
                durations.append(int(fields[2]) / 1000)
    except OSError as e:
        fail(f"cannot read h2load's log {log_path}: {e}")
    durations.sort()
    return float(rps.group(1)), percentile(durations, 50), percentile(durations, 99), errors


def fmt_run(rps, p50, p99, errors):
    return f"{rps:.0f} {p50:.3f} {p99:.3f} {errors}"


def read_rss_kb(pid):
    """VmRSS of one process in kB, or 0 if it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample_rss(seconds, pids):
    """Peak of the summed VmRSS of pids, sampled every 0.25 s for `seconds`."""
    peak = 0
    deadline = time.monotonic() + seconds
    while True:
        peak = max(peak, sum(read_rss_kb(p) for p in pids))
        if time.monotonic() >= deadline:
            return peak
        time.sleep(0.25)


def wait_http(url, host, seconds):
    """Poll until url answers 200 with the given Host header; False after `seconds`."""
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return True, ""
                last = f"status {answer.status}"
        except urllib.error.HTTPError as e:
            last = f"status {e.code}"
        except (OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.1)
    return False, last


def machine():
    """One line: cores, memory, kernel, CPU model."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    uname = os.uname()
    cores = len(os.sched_getaffinity(0))
    # 25165824 kB / 1048576 kB per GiB = 24.0 GiB.
    return f"{cores} cores ({model}), {mem_kb / 1048576:.1f} GiB memory, {uname.sysname} {uname.release}"


def share_pct(part, total):
    """part / total as a percentage, 0 when nothing was counted."""
    return 100 * int(part) / int(total) if int(total) > 0 else 0.0


def load_runs(path):
    """Rows of the RUNS file as dicts, with steal_pct, busy_pct and the flag computed.

    Steal is the share of all CPU time (both cores) the hypervisor took during the run:
    260 steal jiffies out of 2000 total is 13.0 %, far above the 2.5 % limit. Busy is the
    share spent running anything during the idle gap: 300 of 2000 jiffies is 15.0 %.
    """
    runs = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 12:
                    continue
                target, proto, rnd, rps, p50, p99, errors, rss = fields[:8]
                steal_pct = share_pct(fields[8], fields[9])
                busy_pct = share_pct(fields[10], fields[11])
                runs.append(
                    {
                        "target": target,
                        "proto": proto,
                        "round": int(rnd),
                        "rps": float(rps),
                        "p50": float(p50),
                        "p99": float(p99),
                        "errors": int(errors),
                        "rss_kb": int(rss),
                        "steal_pct": steal_pct,
                        "busy_pct": busy_pct,
                        "flagged": steal_pct >= STEAL_LIMIT_PCT or busy_pct >= BUSY_LIMIT_PCT,
                    }
                )
    except OSError:
        pass
    return runs


def load_notes(path):
    notes = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if len(fields) == 3:
                    notes.append(tuple(fields))
    except OSError:
        pass
    return notes


def medians(runs):
    """Medians of one target's runs, over the unflagged runs when there are any.

    Returns (figures, kept, flagged, all_flagged): with rounds of 51000, 49000 (flagged,
    steal 6 %) and 52000 req/s, the median is taken over 51000 and 52000, i.e. 51500.
    """
    clean = [r for r in runs if not r["flagged"]]
    used = clean or runs
    figures = {
        key: statistics.median(r[key] for r in used) for key in ("rps", "p50", "p99", "rss_kb")
    }
    figures["errors"] = sum(r["errors"] for r in runs)
    return figures, len(used), len(runs) - len(clean), not clean


def summarize(runs_path, notes_path, proto, baselines):
    """Markdown table of medians for one protocol, with ratios to each baseline's req/s."""
    runs = [r for r in load_runs(runs_path) if r["proto"] == proto]
    notes = [n for n in load_notes(notes_path) if n[1] == proto]
    order = []
    for r in runs:
        if r["target"] not in order:
            order.append(r["target"])
    table = {t: medians([r for r in runs if r["target"] == t]) for t in order}
    header = "| target | req/s | p50 ms | p99 ms | RSS MiB |"
    rule = "|---|---:|---:|---:|---:|"
    for b in baselines:
        header += f" vs {b} |"
        rule += "---:|"
    header += " runs kept | errors |"
    rule += "---:|---:|"
    lines = [header, rule]
    for t in order:
        fig, kept, flagged, all_flagged = table[t]
        # 4096 kB / 1024 = 4.0 MiB; the backend's own RSS is not counted for "direct".
        rss = f"{fig['rss_kb'] / 1024:.1f}" if fig["rss_kb"] > 0 else "–"
        row = f"| {t} | {fig['rps']:.0f} | {fig['p50']:.3f} | {fig['p99']:.3f} | {rss} |"
        for b in baselines:
            if b in table and table[b][0]["rps"] > 0:
                # 49617 req/s against nginx's 51440 is a ratio of 0.96.
                row += f" {fig['rps'] / table[b][0]['rps']:.2f} |"
            else:
                row += " – |"
        kept_text = f"{kept}" + (f" ({flagged} flagged)" if flagged else "")
        if all_flagged:
            kept_text = f"{kept} (all flagged ⚠)"
        row += f" {kept_text} | {fig['errors']} |"
        lines.append(row)
    span = 5 + len(baselines) + 2
    for target, _, note in notes:
        lines.append(f"| {target} | {note} |" + " |" * (span - 2))
    return "\n".join(lines)


def runs_table(runs_path):
    """Every run, in the order it ran, with its steal and busy shares and flag."""
    lines = [
        "| round | proto | target | req/s | p50 ms | p99 ms | RSS MiB | steal % | busy before % | flag | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in load_runs(runs_path):
        rss = f"{r['rss_kb'] / 1024:.1f}" if r["rss_kb"] > 0 else "–"
        flag = "⚠" if r["flagged"] else ""
        lines.append(
            f"| {r['round']} | {r['proto']} | {r['target']} | {r['rps']:.0f} | {r['p50']:.3f} "
            f"| {r['p99']:.3f} | {rss} | {r['steal_pct']:.1f} | {r['busy_pct']:.1f} | {flag} "
            f"| {r['errors']} |"
        )
    return "\n".join(lines)


def ratio(runs_path, proto, a, b):
    """One sentence: target a's median req/s and latency against target b's."""
    runs = [r for r in load_runs(runs_path) if r["proto"] == proto]
    fa = [r for r in runs if r["target"] == a]
    fb = [r for r in runs if r["target"] == b]
    if not fa or not fb:
        return f"{a} vs {b}: not measured."
    ma, mb = medians(fa)[0], medians(fb)[0]
    if mb["rps"] <= 0:
        return f"{a} vs {b}: {b} served no requests."
    # 52000 req/s against 50000 is +4.0 %; p50 0.950 ms against 0.980 ms is -0.030 ms.
    return (
        f"{a}: {100 * (ma['rps'] / mb['rps'] - 1):+.1f} % req/s against {b}; "
        f"p50 {ma['p50'] - mb['p50']:+.3f} ms, p99 {ma['p99'] - mb['p99']:+.3f} ms."
    )


# === Helpers for the control-plane parts (bench/deploy, bench/scaleup), used as a module ===

# The same pinning as lib/common.sh: the Slipway server on core 0; the load, the CLI and the
# backends on core 1.
PROXY_CORE = 0
LOAD_CORE = 1
# The repository root: this file is bench/lib/benchlib.py.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def exit_on_signals():
    """Turn SIGTERM and SIGHUP into SystemExit (status 143 and 129), so that `finally` blocks
    and context managers stop every process the script started: bench/run's `timeout` stops a
    part with SIGTERM, which would otherwise end Python at once. Ctrl-C already raises
    KeyboardInterrupt."""

    def leave(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


def pin_to_load_core():
    """Run this process, and what it starts without pinning it elsewhere, on the load core."""
    cores = os.sched_getaffinity(0)
    if not {PROXY_CORE, LOAD_CORE} <= cores:
        fail(
            f"the benchmarks pin Slipway to core {PROXY_CORE} and the load to core {LOAD_CORE}, "
            f"but this process may only use cores {sorted(cores)}; hint: run them on a machine "
            "(or VM) with at least 2 cores, outside any taskset"
        )
    os.sched_setaffinity(0, {LOAD_CORE})


def binaries(build):
    """Paths of `slipway` and the bench backend in the release target dir (`$CARGO_TARGET_DIR`,
    else target/), after `cargo build --release` of both unless `build` is false."""
    target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release")
    if build:
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "slipway", "-p", "slipway-bench-backend"],
            cwd=ROOT,
            check=True,
        )
    paths = [os.path.join(target, "slipway"), os.path.join(target, "slipway-bench-backend")]
    for path in paths:
        if not os.access(path, os.X_OK):
            fail(
                f"{path} is missing; hint: run without --no-build, or: "
                "cargo build --release -p slipway -p slipway-bench-backend"
            )
    return paths


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spread(values):
    """(median, min, max) of a non-empty list of numbers: [3, 1, 2, 10] gives (2.5, 1, 10)."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[0], ordered[-1]


def spread_cells(values, digits=1):
    """Markdown cells "median | min | max" with `digits` decimals; "– | – | –" for no values.

    [12.04, 11.5, 30.26] with 1 decimal gives "12.0 | 11.5 | 30.3".
    """
    if not values:
        return "– | – | –"
    return " | ".join(f"{v:.{digits}f}" for v in spread(values))


def event_epoch(ts):
    """Seconds since the Unix epoch of an event's `ts` (UTC, milliseconds):
    "2026-11-24T01:15:32.123Z" is 1795482932.123."""
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def cpu_counters():
    """(steal, busy, total) jiffies of all cores from /proc/stat, as `cpu_counters` in
    lib/common.sh: busy is user + nice + system + irq + softirq."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq
    return steal, busy, busy + idle + iowait + steal


def parse_http_answer(data):
    """(status, body) of a whole HTTP/1.x answer read until the server closed the connection.

    A chunked body is decoded: b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n
    3\\r\\nabc\\r\\n0\\r\\n\\r\\n" has the body b"abc".
    """
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"incomplete HTTP answer: {data[:200]!r}")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    chunked = any(
        line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower()
        for line in lines[1:]
    )
    if chunked:
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    return status, body


def uds_get(sock_path, path, timeout=10):
    """GET `path` from the API on a Unix socket; returns (status, body). It asks in HTTP/1.0,
    so the server closes the connection after the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: slipway\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return parse_http_answer(b"".join(chunks))


class Slipway:
    """A Slipway server for one bench part, as `start_slipway` in lib/common.sh starts it: its
    own data dir under `work`, pinned to PROXY_CORE with one tokio worker, the router and the
    admin listener on free loopback ports. Use it as a context manager: leaving the block
    stops the server (`slipway server stop`, then SIGKILL after 15 s), and its instances
    die with it."""

    def __init__(self, slipway, work):
        self.bin = slipway
        self.data = os.path.join(work, "data")
        self.socket = os.path.join(self.data, "slipway.sock")
        self.log_path = os.path.join(work, "server.log")
        self.port = free_port()
        self.admin = free_port()
        self.proc = None

    def __enter__(self):
        os.makedirs(self.data, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(PROXY_CORE), self.bin, "server", "--data-dir", self.data,
                 "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin}"],
                env=dict(os.environ, TOKIO_WORKER_THREADS="1"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                fail(f"slipway server did not start; the end of its log:\n{self.log_tail()}")
            time.sleep(0.05)
        if os.environ.get("BENCH_PIN_ROUTER_ONLY") == "1":
            self.pin_router_only()
        return self

    def threads(self):
        """(thread id, whether it is one of the router's: named `slipway-router`) of every
        thread the server has now."""
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/comm", encoding="utf-8") as f:
                    name = f.read().strip()
            except OSError:
                continue
            yield int(tid), name == "slipway-router"

    def pin_router_only(self):
        """Leaves only the router's threads (named `slipway-router`) on PROXY_CORE and moves
        every other thread of the server (API, controller, probes, log capture, store) to
        LOAD_CORE; threads they start later inherit that. Set BENCH_PIN_ROUTER_ONLY=1 to
        measure with one core for the router alone, as the data plane would get it in
        production."""
        pinned = {"router": 0, "other": 0}
        for tid, router in self.threads():
            os.sched_setaffinity(tid, {PROXY_CORE if router else LOAD_CORE})
            pinned["router" if router else "other"] += 1
        if pinned["router"] == 0:
            fail("BENCH_PIN_ROUTER_ONLY=1, but the server has no thread named slipway-router (an older build?)")
        self.pinned = pinned

    def __exit__(self, *_exc):
        self.stop()

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def cli(self, *args, timeout=120):
        """Runs `slipway --data-dir DATA ARGS...` and returns the CompletedProcess (text)."""
        return subprocess.run(
            [self.bin, "--data-dir", self.data, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self, app_dir):
        """`slipway up APP_DIR --detach`; exits the script with the CLI's output on failure."""
        done = self.cli("up", app_dir, "--detach")
        if done.returncode != 0:
            fail(f"slipway up {app_dir} failed:\n{done.stdout}{done.stderr}")

    def api(self, path):
        """The JSON answer of GET `path` on the API socket; RuntimeError unless it is a 200."""
        status, body = uds_get(self.socket, path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
        return json.loads(body)

    def stop(self):
        if self.proc is None:
            return
        try:
            subprocess.run(
                [self.bin, "--data-dir", self.data, "server", "stop"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=15,
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def main(argv):
    if len(argv) < 2:
        fail("usage: benchlib.py SUBCOMMAND ... (see the docstring at the top)")
    cmd, args = argv[1], argv[2:]
    if cmd == "wrk":
        print(fmt_run(*parse_wrk(sys.stdin.read())))
    elif cmd == "h2load" and len(args) == 1:
        print(fmt_run(*parse_h2load(sys.stdin.read(), args[0])))
    elif cmd == "h2probe" and len(args) == 1:
        out = sys.stdin.read()
        m = re.search(r"(\d+) succeeded", out)
        sys.exit(0 if m and int(m.group(1)) == int(args[0]) else 1)
    elif cmd == "rss" and len(args) >= 2:
        print(sample_rss(float(args[0]), [int(p) for p in args[1:]]))
    elif cmd == "wait-http" and len(args) == 3:
        ok, last = wait_http(args[0], args[1], float(args[2]))
        if not ok:
            fail(f"{args[0]} (Host: {args[1]}) did not answer 200 within {args[2]} s: {last}")
    elif cmd == "machine":
        print(machine())
    elif cmd == "summarize" and len(args) >= 3:
        print(summarize(args[0], args[1], args[2], args[3:]))
    elif cmd == "runs" and len(args) == 1:
        print(runs_table(args[0]))
    elif cmd == "ratio" and len(args) == 4:
        print(ratio(*args))
    else:
        fail(f"unknown subcommand or wrong arguments: {' '.join(argv[1:])}")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except KeyboardInterrupt:
        # Ctrl-C reaches every process of the run; the calling script reports and cleans up.
        sys.exit(130)
