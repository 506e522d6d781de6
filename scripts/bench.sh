#!/usr/bin/env bash
# The guard's benchmarks, summarised: runs `cargo bench --bench guard` (any arguments go to
# criterion, e.g. a filter such as `stack`), then prints the medians of the benchmarks it
# ran as a markdown table, with the ratios the README reports.
#
#   scripts/bench.sh                 # everything, about two minutes
#   scripts/bench.sh stack           # the comparison group only
#   SUMMARY_ONLY=1 scripts/bench.sh  # the table of the last run, without running anything
#
# Times on a shared machine are noisy: look at the load (printed with the table) and run
# the comparison twice to see the spread; scripts/callgrind.sh counts instructions, which
# are repeatable.
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target=${target:-target}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -z "${SUMMARY_ONLY:-}" ]]; then
    cargo bench --bench guard -- "$@" >&2
fi

python3 - "$target/criterion" "$load_before" <<'EOF'
import json, os, sys

root, load_before = sys.argv[1], sys.argv[2]
medians = {}
for group in ("admitted", "refused", "registry", "stack", "limiter"):
    for dirpath, dirs, files in sorted(os.walk(os.path.join(root, group))):
        if dirpath.endswith(os.sep + "new") and "estimates.json" in files:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                bench_id = json.load(f)["full_id"]
            with open(os.path.join(dirpath, "estimates.json")) as f:
                median = json.load(f)["median"]
            medians[bench_id] = (
                median["point_estimate"],
                median["confidence_interval"]["lower_bound"],
                median["confidence_interval"]["upper_bound"],
            )

def show(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"

def ratio(a, b):
    return f"{medians[a][0] / medians[b][0]:.2f}×" if a in medians and b in medians else ""

with open("/proc/cpuinfo") as f:
    model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
with open("/proc/loadavg") as f:
    load_after = " ".join(f.read().split()[:3])
print(f"machine: {os.cpu_count()} cores, {model}; load average {load_before} before, {load_after} after\n")
print("| benchmark | median | 95% interval of the median |")
print("|---|---:|---|")
for bench_id, (median, low, high) in medians.items():
    print(f"| {bench_id} | {show(median)} | {show(low)} – {show(high)} |")

rows = [
    ("keygate / (tower-http + tower_governor)", "stack/keygate", "stack/tower-http+tower_governor"),
    ("keygate / (tower-http + tower_governor with headers)", "stack/keygate", "stack/tower-http+tower_governor/headers"),
    ("keygate / no guard", "stack/keygate", "stack/no_guard"),
    ("registry: 1,000,000 keys / 1 key", "registry/1000000", "registry/1"),
    ("registry: 10,000 keys / 1 key", "registry/10000", "registry/1"),
]
rows = [(name, ratio(a, b)) for name, a, b in rows if ratio(a, b)]
if rows:
    print("\n| ratio of medians | |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
own = [
    ("keygate's own (stack/keygate − stack/no_guard)", "stack/keygate", "stack/no_guard"),
    ("the stack's own (tower-http + tower_governor − no guard)", "stack/tower-http+tower_governor", "stack/no_guard"),
    ("admitted path's own (guard+limiter − no guard)", "admitted/guard+limiter/generated_key", "admitted/no_guard"),
]
own = [(n, a, b) for n, a, b in own if a in medians and b in medians]
if own:
    print("\n| cost of the layers alone | median difference |")
    print("|---|---:|")
    for name, a, b in own:
        print(f"| {name} | {show(medians[a][0] - medians[b][0])} |")
EOF
