# shellcheck shell=bash
# The bash half shared by the bench scripts: flags, cleanup, pinning, starting Slipway, running
# wrk and h2load with the idle gap and the CPU-steal reading. Sourced, never run; the caller
# has `cd`'d to the repository root and set `set -euo pipefail`.
#
# Pinning (the same in every part): the proxy under test runs on core 0; wrk, h2load, the
# backend and the RSS sampler run on core 1.

BENCH_LIB=$PWD/bench/lib/benchlib.py
BIN=$PWD/target/release/slipway
BACKEND=$PWD/target/release/slipway-bench-backend
PROXY_CORE=0
LOAD_CORE=1

# Defaults of the shared flags; `--quick` is for checking the scripts, not for figures.
DURATION=10
GAP=15
ROUNDS=3
QUICK=0
BUILD=1
INSTALL=1

# Parses the shared flags; prints usage and exits 2 on an unknown one.
# Usage: bench_flags "$usage_line" "$@"
bench_flags() {
  local usage=$1 duration="" gap="" rounds=""
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --duration) duration=${2:?--duration needs SECONDS}; shift 2 ;;
      --gap) gap=${2:?--gap needs SECONDS}; shift 2 ;;
      --rounds) rounds=${2:?--rounds needs N}; shift 2 ;;
      --quick) QUICK=1; shift ;;
      --no-build) BUILD=0; shift ;;
      --no-install) INSTALL=0; shift ;;
      -h|--help) echo "$usage"; exit 0 ;;
      *) echo "error: unknown flag $1" >&2; echo "$usage" >&2; exit 2 ;;
    esac
  done
  # --quick changes the defaults only: `--quick --rounds 2` runs two short rounds.
  if [ "$QUICK" = 1 ]; then DURATION=3; GAP=2; ROUNDS=1; fi
  DURATION=${duration:-$DURATION}
  GAP=${gap:-$GAP}
  ROUNDS=${rounds:-$ROUNDS}
  for v in "$DURATION" "$GAP" "$ROUNDS"; do
    case "$v" in
      ''|*[!0-9]*) echo "error: --duration, --gap and --rounds take whole numbers, got '$v'" >&2; exit 2 ;;
    esac
  done
  if [ "$DURATION" -lt 1 ] || [ "$ROUNDS" -lt 1 ]; then
    echo "error: --duration and --rounds must be at least 1" >&2
    exit 2
  fi
}

# shellcheck disable=SC2034 # Used by the scripts that source this file.
BENCH_FLAGS_HELP="  --duration S   length of each load run (default 10; --quick: 3)
  --gap S        idle seconds before each run, so the host's CPU steal settles (default 15; --quick: 2)
  --rounds N     interleaved rounds; medians are over rounds (default 3; --quick: 1)
  --quick        short and noisy: checks the script, not the figures
  --no-build     use the binaries already in target/release
  --no-install   do not apt-get install missing tools"

# Processes to stop on exit, by pid; Slipway data dirs to stop with `slipway server stop`.
BENCH_PIDS=()
BENCH_SLIPWAYS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-bench.XXXXXX")

bench_cleanup() {
  local d p
  trap - EXIT INT TERM HUP
  for d in "${BENCH_SLIPWAYS[@]}"; do
    timeout 15 "$BIN" --data-dir "$d" server stop >/dev/null 2>&1 || true
  done
  for p in "${BENCH_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BENCH_PIDS[@]}"; do
    # Give each process 5 s to exit, then SIGKILL it (its workers die with it or are reaped).
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap bench_cleanup EXIT
# On Ctrl-C or kill, exit so that the EXIT trap runs and stops everything started.
trap 'exit 130' INT
trap 'exit 143' TERM HUP

bench_track() { BENCH_PIDS+=("$1"); }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

need_cores() {
  local n
  n=$(nproc)
  if [ "$n" -lt 2 ]; then
    echo "error: the benchmarks pin the proxy to core 0 and the load to core 1, but this machine has $n core(s)" >&2
    echo "hint: run them on a machine (or VM) with at least 2 cores" >&2
    exit 1
  fi
}

# Installs Debian packages whose commands are missing; runs `apt-get update` only if the
# install fails. Usage: ensure_packages "cmd:package" ...
ensure_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$INSTALL" = 0 ]; then
    echo "warning: missing packages (--no-install): ${missing[*]}" >&2
    return 0
  fi
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "installing from Debian's packages: ${missing[*]}" >&2
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log" 2>&1; then
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq >>"$WORK/apt.log" 2>&1 || true
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >>"$WORK/apt.log" 2>&1; then
      echo "error: apt-get install ${missing[*]} failed; its last lines:" >&2
      tail -5 "$WORK/apt.log" >&2
      echo "hint: install them by hand, or pass --no-install to skip what is missing" >&2
      exit 1
    fi
  fi
}

# True if Debian's package index has a candidate version of the package.
debian_has() {
  local cand
  cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

build_binaries() {
  if [ "$BUILD" = 1 ]; then
    cargo build --release -q -p slipway -p slipway-bench-backend
  fi
  for b in "$BIN" "$BACKEND"; do
    if [ ! -x "$b" ]; then
      echo "error: $b is missing" >&2
      echo "hint: run without --no-build, or: cargo build --release -p slipway -p slipway-bench-backend" >&2
      exit 1
    fi
  done
}

# Starts the bench backend on the load core. Sets BACKEND_PORT.
start_backend() {
  BACKEND_PORT=$(free_port)
  taskset -c "$LOAD_CORE" "$BACKEND" "$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
  bench_track $!
  python3 "$BENCH_LIB" wait-http "http://127.0.0.1:$BACKEND_PORT/" localhost 15
}

# Starts a Slipway server pinned to the proxy core (one tokio worker) with the app `bench`
# whose service `echo` runs the bench backend on the load core; waits until
# echo.bench.localhost answers through the router.
# Usage: start_slipway NAME [extra server args...]; sets SLIPWAY_PORT and SLIPWAY_PID.
start_slipway() {
  local name=$1 admin data app
  shift
  data=$WORK/$name/data
  app=$WORK/$name/app
  mkdir -p "$data" "$app"
  SLIPWAY_PORT=$(free_port)
  admin=$(free_port)
  TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CORE" "$BIN" server --data-dir "$data" \
    --listen "127.0.0.1:$SLIPWAY_PORT" --admin "127.0.0.1:$admin" "$@" >"$WORK/$name/server.log" 2>&1 &
  SLIPWAY_PID=$!
  bench_track "$SLIPWAY_PID"
  BENCH_SLIPWAYS+=("$data")
  cat >"$app/slipway.yaml" <<YAML
app: bench
services:
  echo:
    run: ["taskset", "-c", "$LOAD_CORE", "$BACKEND", "\$PORT"]
    health: { ready: { tcp: true, interval: 1s } }
    shutdown: { grace: 1s }
YAML
  for _ in $(seq 100); do [ -S "$data/slipway.sock" ] && break; sleep 0.1; done
  if ! kill -0 "$SLIPWAY_PID" 2>/dev/null; then
    echo "error: slipway server ($name) exited at start; its log:" >&2
    tail -20 "$WORK/$name/server.log" >&2
    exit 1
  fi
  timeout 60 "$BIN" --data-dir "$data" up "$app" --detach >"$WORK/$name/up.log" 2>&1 || {
    echo "error: slipway up ($name) failed:" >&2
    cat "$WORK/$name/up.log" >&2
    exit 1
  }
  python3 "$BENCH_LIB" wait-http "http://127.0.0.1:$SLIPWAY_PORT/" echo.bench.localhost 30
}

# Aggregate CPU counters of all cores from /proc/stat: prints "steal busy total" in jiffies,
# where busy is the time spent running anything (user, nice, system, irq, softirq).
cpu_counters() {
  local _cpu user nice system idle iowait irq softirq steal _rest
  read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
  echo "$steal $((user + nice + system + irq + softirq)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

HOST=echo.bench.localhost

# One measured run: idle gap, then the load (wrk for h1, h2load for h2) on the load core while
# the proxy's RSS is sampled; appends a line to RUNS.
# Usage: measure RUNS TARGET PROTO ROUND PORT PID...   (no PID: RSS is not sampled)
measure() {
  local runs=$1 target=$2 proto=$3 round=$4 port=$5
  shift 5
  local pids=("$@") s0 b0 t0 s1 t1 gb0 gt0 figures rss=0 rss_file="$WORK/rss" sampler=""
  echo "  round $round, $proto, $target: idle ${GAP}s, then ${DURATION}s of load" >&2
  # During the gap everything started here is idle, so CPU time spent then is someone else's
  # (a compiler, say) and likely to go on during the run.
  read -r _ gb0 gt0 < <(cpu_counters)
  sleep "$GAP"
  read -r s0 b0 t0 < <(cpu_counters)
  if [ ${#pids[@]} -gt 0 ]; then
    taskset -c "$LOAD_CORE" python3 "$BENCH_LIB" rss "$DURATION" "${pids[@]}" >"$rss_file" &
    sampler=$!
  fi
  local ok=1
  if [ "$proto" = h1 ] || [ "$proto" = https ] || [ "$proto" = https-new ]; then
    # https: HTTPS keep-alive; https-new: a new connection (and TLS handshake) per request.
    local scheme=http extra=()
    if [ "$proto" != h1 ]; then scheme=https; fi
    if [ "$proto" = https-new ]; then extra=(-H "Connection: close"); fi
    figures=$(timeout $((DURATION + 30)) taskset -c "$LOAD_CORE" \
      wrk -t1 -c50 -d"${DURATION}s" --latency -H "Host: $HOST" "${extra[@]}" "$scheme://127.0.0.1:$port/" |
      python3 "$BENCH_LIB" wrk) || ok=0
  else
    rm -f "$WORK/h2load.log"
    figures=$(timeout $((DURATION + 30)) taskset -c "$LOAD_CORE" \
      h2load -t1 -c50 -m10 -D "$DURATION" --log-file="$WORK/h2load.log" -H ":authority: $HOST" \
      "http://127.0.0.1:$port/" | python3 "$BENCH_LIB" h2load "$WORK/h2load.log") || ok=0
  fi
  read -r s1 _ t1 < <(cpu_counters)
  if [ -n "$sampler" ]; then
    wait "$sampler" || true
    rss=$(cat "$rss_file" 2>/dev/null || echo 0)
  fi
  if [ "$ok" = 0 ]; then
    echo "  warning: the $proto run against $target failed (see above); it is left out" >&2
    return 0
  fi
  local rps p50 p99 errors
  read -r rps p50 p99 errors <<<"$figures"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$proto" "$round" "$rps" "$p50" \
    "$p99" "$errors" "${rss:-0}" $((s1 - s0)) $((t1 - t0)) $((b0 - gb0)) $((t0 - gt0)) >>"$runs"
}

# True if an h2c prior-knowledge client gets 200 answers from the port (200 requests); h2load's
# summary lines are left in $WORK/h2probe.log for the caller's note.
speaks_h2c() {
  timeout 20 taskset -c "$LOAD_CORE" h2load -n 200 -c 2 -m 10 -H ":authority: $HOST" "http://127.0.0.1:$1/" \
    >"$WORK/h2probe.log" 2>&1 || true
  python3 "$BENCH_LIB" h2probe 200 <"$WORK/h2probe.log"
}

# What h2load saw, in one line (for a note when speaks_h2c is false).
h2probe_summary() {
  grep -E '^(status codes|requests):' "$WORK/h2probe.log" | tr '\n' ' ' | sed 's/ *$//' || true
}

# The Markdown bullet list that opens every part's results: machine, date, pinning, load and
# method. Parts append their own bullets right after it.
machine_header() {
  echo "- Machine: $(python3 "$BENCH_LIB" machine)."
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)."
  echo "- Pinning: the proxy under test on core $PROXY_CORE (one worker/thread); wrk, h2load and the backend on core $LOAD_CORE."
  echo "- Load: \`wrk -t1 -c50 -d${DURATION}s --latency\` (HTTP/1.1), \`h2load -t1 -c50 -m10 -D $DURATION\` (h2c)."
  echo "- Method: ${ROUNDS} interleaved round(s), ${GAP} s idle before each run; a run is flagged ⚠ if the host stole ≥ 2.5 % of the CPU"
  echo "  during it, or if other processes kept the machine ≥ 10 % busy during the idle gap before it (both read from /proc/stat);"
  echo "  flagged runs are left out of the medians when unflagged runs exist."
  if [ "$QUICK" = 1 ]; then
    echo "- **Quick run (--quick): short and noisy; the figures check the script, not the software.**"
  fi
}
