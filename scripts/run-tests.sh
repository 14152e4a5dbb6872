#!/usr/bin/env bash
# `make test`: every test, unit and lab, in KVMLAB_TEST_LANES pytest processes (default 2) that share
# the run one lab at a time each (fixtures/lanes.py). Arguments go to every pytest.
# Each lane's lines are prefixed with its number; the exit code is the first failing lane's.
set -uo pipefail
cd "$(dirname "$0")/.."
lanes=${KVMLAB_TEST_LANES:-2}
python=${PYTHON:-.venv/bin/python}
folder=$(mktemp -d /tmp/kvmlab-lanes.XXXXXX)
trap 'rm -rf "$folder"' EXIT

# Ctrl-C and SIGTERM reach the lanes as SIGTERM, which pytest turns into an orderly teardown
# (background jobs of a script ignore SIGINT, so the terminal's Ctrl-C alone would not stop them).
stop_lanes() {
    echo "run-tests: stopping the lanes" >&2
    for pid_file in "$folder"/lane-*.pid; do
        [ -e "$pid_file" ] && kill -TERM "$(cat "$pid_file")" 2>/dev/null
    done
}
trap 'stop_lanes' INT TERM

start=$(date +%s)
# What killed runs left, collected once here rather than by each lane (see fixtures/labs.py).
"$python" -m kvmlab.cli gc || echo "run-tests: kvmlab gc failed (is libvirtd running?); going on" >&2
for lane in $(seq "$lanes"); do
    (
        KVMLAB_LANES_DIR=$folder KVMLAB_LANE=$lane "$python" -m pytest "$@" 2>&1
        echo $? > "$folder/rc-$lane"
    ) | tee "$folder/out-$lane" | sed -u "s/^/[lane $lane] /" &
done
# `wait` returns early when a trapped signal arrives: wait again until every lane has ended.
while [ -n "$(jobs -pr)" ]; do wait; done

rc=0
for lane in $(seq "$lanes"); do
    lane_rc=$(cat "$folder/rc-$lane" 2>/dev/null || echo 1)
    echo "== lane $lane: pytest exit code $lane_rc"
    # Where a reader of a long log looks first: each lane's failures and its pytest result line,
    # repeated here (the lanes' own summaries are thousands of lines apart).
    grep -aE '^(FAILED|ERROR) [^ ]+\.py|^kvmlab lanes: lane [0-9]+ ran' "$folder/out-$lane" 2>/dev/null | cut -c1-400 | sed "s/^/   /"
    grep -aE '^=+ .*(passed|failed|error|no tests ran).* in [0-9.]+s' "$folder/out-$lane" 2>/dev/null | tail -1 | sed "s/^/   /"
    if [ "$rc" = 0 ] && [ "$lane_rc" != 0 ]; then rc=$lane_rc; fi
done
echo "== make test: $lanes lanes, $(( $(date +%s) - start )) s"
exit "$rc"
