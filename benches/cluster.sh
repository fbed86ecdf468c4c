#!/usr/bin/env bash
# The report in one process against the same report on a loopback Ballista
# cluster (a scheduler and EXECUTORS executors on this machine), on the same
# dataset, outputs compared. Prints, per run: wall seconds and peak RSS of
# the client and of every cluster process, the peak bytes of shuffle files
# in the executors' work directories and of the report's scratch tables
# (sampled every second), and the rows: a table for docs/CLUSTER.md.
#
#   benches/cluster.sh [SIZE]      size in millions of events, default 50
#
# RUNS (default 1) alternates the two RUNS times on one cluster (this
# machine's speed drifts between runs; the ratio of neighbours does not).
#
# Environment: SF_BIN (default: a release build of this checkout), SF_DATA
# (dataset cache, default ~/.cache/supportfunnel-data), EXECUTORS (default
# 2), TASKS (concurrent tasks per executor, default 1), EXEC_MEMORY (each
# executor's --memory-limit, default 4GiB), PARTITIONS (default 8).
#
# The cluster reads the dataset by its local path (the same on every node
# here: the loopback stand-in for a shared mount) and keeps the report's
# steps under a local scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."

size=${1:-50}
data=${SF_DATA:-$HOME/.cache/supportfunnel-data}
executors=${EXECUTORS:-2}
tasks=${TASKS:-1}
exec_memory=${EXEC_MEMORY:-4GiB}
partitions=${PARTITIONS:-8}
if [ -z "${SF_BIN:-}" ]; then
  cargo build --release --features full --quiet
  bin="${CARGO_TARGET_DIR:-$HOME/.cache/supportfunnel-target}/release/supportfunnel"
else
  bin=$SF_BIN
fi
# shellcheck source=benches/lib.sh
. benches/lib.sh
dir=$(gen "$size")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

from=2026-03-02
to=2026-04-01
report=(report --events "$dir/events" --messages "$dir/messages" --from "$from" --to "$to" --format csv)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sched_port=$(port)
"$bin" scheduler --bind "127.0.0.1:$sched_port" --executor-timeout 30 2>"$work/scheduler.log" &
pids+=($!)
sleep 1
exec_pids=()
for i in $(seq 1 "$executors"); do
  "$bin" executor --scheduler "127.0.0.1:$sched_port" --bind "127.0.0.1:$(port)" --grpc-port "$(port)" \
    --work-dir "$work/executor-$i" --concurrent-tasks "$tasks" --memory-limit "$exec_memory" \
    2>"$work/executor-$i.log" &
  pids+=($!)
  exec_pids+=($!)
done
for i in $(seq 1 "$executors"); do
  until grep -qs "registration succeed" "$work/executor-$i.log"; do sleep 0.2; done
done

# Peak bytes on disk of the shuffle files and of the scratch tables.
sample() {
  local peak_shuffle=0 peak_scratch=0 s c
  while [ -f "$work/sampling" ]; do
    # files come and go while du counts: its complaints are not errors here
    s=$( (du -sb "$work"/executor-* 2>/dev/null || true) | awk '{t+=$1} END {printf "%d\n", t}')
    c=$( (du -sb "$work/scratch" 2>/dev/null || true) | awk '{t+=$1} END {printf "%d\n", t}')
    [ "$s" -gt "$peak_shuffle" ] && peak_shuffle=$s
    [ "${c:-0}" -gt "$peak_scratch" ] && peak_scratch=$c
    echo "$peak_shuffle $peak_scratch" >"$work/peaks"
    sleep 1
  done
}
runs=${RUNS:-1}
hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }
# Peak RSS of the cluster's processes per run: the kernel's high-water mark,
# reset before each run (root only; otherwise it is the peak so far).
reset_hwm() { for p in "${pids[@]}"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
tasks_so_far() { cat "$work"/executor-*.log | grep -c "Execute task" || true; }

echo "| run | one process s | MiB | cluster s | client MiB | scheduler MiB | executors MiB | tasks | peak shuffle MiB | peak scratch MiB | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$runs"); do
  echo "== run $r: one process" >&2
  read -r t1 m1 < <(measure_to "$work/native.csv" "$bin" "${report[@]}")
  echo "== run $r: cluster, $executors executors x $tasks tasks, $exec_memory each, $partitions partitions" >&2
  reset_hwm
  before=$(tasks_so_far)
  touch "$work/sampling"
  echo "0 0" >"$work/peaks"
  sample &
  sampler=$!
  read -r t3 m3 < <(measure_to "$work/cluster.csv" "$bin" "${report[@]}" \
    --cluster "df://127.0.0.1:$sched_port" --scratch "$work/scratch" --target-partitions "$partitions")
  rm -f "$work/sampling"
  wait "$sampler" || true
  read -r shuffle scratch <"$work/peaks"
  cmp -s "$work/native.csv" "$work/cluster.csv" || { echo "cluster report differs" >&2; exit 1; }
  exec_mib=()
  for p in "${exec_pids[@]}"; do exec_mib+=("$(hwm "$p")"); done
  ran=$(( $(tasks_so_far) - before ))
  ratio=$(awk -v a="$t3" -v b="$t1" 'BEGIN {printf "%.2f", a / b}')
  echo "| $r | $t1 | $m1 | $t3 | $m3 | $(hwm "${pids[0]}") | $(IFS=/; echo "${exec_mib[*]}") | $ran | $((shuffle / 1048576)) | $((scratch / 1048576)) | $ratio |"
done
echo
echo "events: ${size}M; ratio = cluster wall / one process wall; reports identical (cmp) in every run"
