#!/usr/bin/env bash
# End-to-end throughput with and without keygate, in one run, on loopback.
#
#   scripts/load.sh                       # 3 rounds of 10 s per server, 64 connections
#   ROUNDS=5 DURATION=20s CONNECTIONS=128 WORKERS=1 scripts/load.sh
#
# Starts benches/load_server.rs, one axum application served six times:
#
#   plain    the application alone
#   headers  the application alone, sending keygate's two rate-limit headers (a control)
#   stack    behind tower-http's header validation and tower_governor (what users assemble)
#   guarded  behind keygate, set up as the coordinator example sets it up
#   audited  the same, plus the hash-chained JSON-lines audit log, written on the request thread
#   queued   the same, with the log written from a queue by a writer thread, in batches
#
# then loads each in turn with wrk, alternating servers round by round so that a change in the
# machine's load hits all of them alike. Reports, per server, the median of the rounds of
# two measures and their ratios to the plain server:
#
# - requests per second, as wrk sees them;
# - the server's CPU time per request (user + system, from /proc/<pid>/stat), which the
#   other processes of a shared machine disturb much less than throughput: on a server
#   that is CPU-bound, throughput is its inverse.
#
# Fails if any request was not answered 2xx (a 401 or 429 would measure the wrong path).
#
# On a machine with two cores or more, the server is pinned to CPU 0 and wrk to CPU 1, so
# that they do not compete. Installs wrk with apt-get when it is missing. Only loopback
# addresses are loaded, each for DURATION, and the server stops by itself after
# ROUNDS * 6 * DURATION plus a margin even if this script is killed.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null
fi
command -v wrk >/dev/null 2>&1 || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

echo "building the load server (bench profile)" >&2
server=$(cargo bench --bench load_server --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
if [[ -z "$server" ]]; then
    cargo bench --bench load_server --no-run >&2
    echo "could not build benches/load_server.rs" >&2
    exit 1
fi

seconds=${DURATION%s}
servers=(plain headers stack guarded audited queued)
lifetime=$((ROUNDS * ${#servers[@]} * (seconds + 2) + 60))
pin_server=()
pin_client=()
if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null 2>&1; then
    pin_server=(taskset -c 0)
    pin_client=(taskset -c 1)
fi

out=$(mktemp)
"${pin_server[@]}" "$server" --workers "$WORKERS" --seconds "$lifetime" >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do
    [[ -s "$out" ]] && break
    sleep 0.1
done
read -r line <"$out" || { echo "the load server did not start" >&2; exit 1; }
for field in $line; do
    declare "${field%%=*}=${field#*=}"
done

# The server's CPU time so far, in clock ticks (user + system).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# One wrk run against $1: prints requests per second and the server's CPU microseconds per
# request; fails on non-2xx answers or socket errors.
load() {
    local report before after requests
    before=$(cpu_ticks)
    report=$("${pin_client[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" \
        -H "x-api-key: $key" "$1/coordinator/jobs/job-0042")
    after=$(cpu_ticks)
    if grep -qE "Non-2xx|Socket errors" <<<"$report"; then
        echo "$report" >&2
        echo "requests failed against $1" >&2
        exit 1
    fi
    requests=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' <<<"$report")
    awk -v rps="$(sed -n 's/^Requests\/sec: *\([0-9.]*\)$/\1/p' <<<"$report")" \
        -v ticks=$((after - before)) -v hz="$ticks_per_second" -v n="$requests" \
        'BEGIN { printf "%s %.2f\n", rps, ticks / hz * 1e6 / n }'
}

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "warming up" >&2
for name in "${servers[@]}"; do
    DURATION=2s load "${!name}" >/dev/null
done

declare -A runs=() cpu=()
for round in $(seq "$ROUNDS"); do
    for name in "${servers[@]}"; do
        read -r rps us < <(load "${!name}")
        runs[$name]+="$rps "
        cpu[$name]+="$us "
        echo "round $round: $name $rps req/s, $us µs of server CPU per request" >&2
    done
done

base=$(median <<<"${runs[plain]}")
base_cpu=$(median <<<"${cpu[plain]}")
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk: 1 thread, $CONNECTIONS connections, $DURATION per run, $ROUNDS rounds; server: $WORKERS tokio worker(s)${pin_server:+, server on CPU 0 and wrk on CPU 1}"
echo
echo "| server | requests/s (median) | vs plain | server CPU per request (median) | plain's CPU / this CPU |"
echo "|---|---:|---:|---:|---:|"
for name in "${servers[@]}"; do
    med=$(median <<<"${runs[$name]}")
    med_cpu=$(median <<<"${cpu[$name]}")
    awk -v n="$name" -v r="$med" -v b="$base" -v c="$med_cpu" -v bc="$base_cpu" \
        'BEGIN { printf "| %s | %.0f | %.1f%% | %.2f µs | %.1f%% |\n", n, r, 100 * r / b, c, 100 * bc / c }'
done
echo
for name in "${servers[@]}"; do
    echo "$name: requests/s by round: ${runs[$name]}; µs of CPU per request: ${cpu[$name]}"
done
