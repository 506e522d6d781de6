#!/usr/bin/env bash
# Instructions per request of each scenario of the `guard` benchmark, counted by callgrind:
# repeatable where times on a shared machine are not.
#
#   scripts/callgrind.sh                      # every scenario: a table of instructions per request
#   scripts/callgrind.sh stack                # the scenarios whose name contains `stack`
#   scripts/callgrind.sh registry             # registry scaling (building a million keys under
#                                             # valgrind takes minutes: left out unless asked for)
#   scripts/callgrind.sh --profile admitted/guard+limiter/generated_key
#                                             # where one scenario's instructions go, by function
#
# Each scenario runs twice, with N and N + 10,000 requests (benches/instructions.rs), and the
# difference divided by 10,000 is the cost of one request: setup and warm-up cancel out.
# "own" subtracts the scenario's baseline (the inner service alone, fed the same requests),
# leaving the layers' work. Needs valgrind (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

FIRST=2000
EXTRA=10000

if ! command -v valgrind >/dev/null 2>&1; then
    echo "installing valgrind" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind) >/dev/null
fi

# The bench profile (optimised, as `cargo bench` builds it); prints the executable's path.
binary=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
if [[ -z "$binary" ]]; then
    cargo bench --bench instructions --no-run >&2
    echo "could not build benches/instructions.rs" >&2
    exit 1
fi

# Instructions executed by `instructions <scenario> <requests>`.
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$binary" "$1" "$2" 2>&1 |
        sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p'
}

if [[ "${1:-}" == "--profile" ]]; then
    scenario=${2:?usage: scripts/callgrind.sh --profile <scenario>}
    out=$(mktemp -d)/callgrind.out
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" "$scenario" 100000 >/dev/null 2>&1
    echo "callgrind output: $out (100,000 requests; open with callgrind_annotate or kcachegrind)"
    callgrind_annotate --inclusive=no "$out" 2>/dev/null | sed -n '1,60p'
    exit 0
fi

filter=${1:-}
declare -A per_request
echo "| scenario | instructions per request | own (minus baseline) |"
echo "|---|---:|---:|"
while read -r name baseline; do
    # The scenarios that match, and the baselines they need.
    if [[ "$name" == registry/* && "$filter" != registry* ]]; then
        continue
    fi
    if [[ -n "$filter" && "$name" != *"$filter"* ]]; then
        # awk reads the whole list: leaving early would close the pipe on the binary, which
        # then panics on its next line of output.
        needed=$("$binary" --list | awk -v b="$name" -v f="$filter" \
            '$2 == b && index($1, f) { found = 1 } END { if (found) print "yes" }')
        [[ -n "$needed" ]] || continue
    fi
    first=$(count "$name" "$FIRST")
    second=$(count "$name" $((FIRST + EXTRA)))
    cost=$(((second - first) / EXTRA))
    per_request[$name]=$cost
    if [[ "$name" == "$baseline" ]]; then
        echo "| $name | $cost | (baseline) |"
    else
        echo "| $name | $cost | $((cost - ${per_request[$baseline]})) |"
    fi
done < <("$binary" --list)
