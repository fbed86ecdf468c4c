#!/usr/bin/env bash
# `report --detail METRIC` against the whole report, on the same files,
# alternating, whole processes: wall seconds, peak memory and the detail's
# rows. A detail runs the report's steps and one listing instead of the
# sections, so it should cost no more than the report.
#
#   benches/detail.sh [SIZE] [METRICS...]   size in millions of events
#                                           (default 10); metrics default:
#                                           people_stopped csat
#                                           articles_resolution_rate
#                                           rows_rejected
#
# Environment: SF_BIN (default: a release build of this checkout), RUNS
# (default 2), SF_DATA. Datasets as in benches/scale.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SF_DATA:-$HOME/.cache/supportfunnel-data}
bin=${SF_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --bin supportfunnel >&2
  bin="${CARGO_TARGET_DIR:-target}/release/supportfunnel"
fi
m=${1:-10}
shift || true
metrics=("$@")
[ ${#metrics[@]} -gt 0 ] || metrics=(people_stopped csat articles_resolution_rate rows_rejected)
runs=${RUNS:-2}
from=2026-03-02
to=2026-04-01

# shellcheck source=benches/lib.sh
. benches/lib.sh

dir=$(gen "$m")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--events "$dir/events" --messages "$dir/messages" --from $from --to $to)
printf '%-6s %-4s %-26s %10s %10s %10s\n' events run what wall_s peak_mib rows
for r in $(seq 1 "$runs"); do
  read -r s kb < <(measure_to "$work/report.json" "$bin" report "${args[@]}" --format json)
  printf '%-6s %-4s %-26s %10s %10s %10s\n' "${m}M" "$r" report "$s" "$kb" "$(wc -l <"$work/report.json")"
  for metric in "${metrics[@]}"; do
    read -r s kb < <(measure_to "$work/detail.csv" "$bin" report "${args[@]}" \
      --detail "$metric" --format csv)
    rows=$(($(wc -l <"$work/detail.csv") - 1))
    printf '%-6s %-4s %-26s %10s %10s %10s\n' "${m}M" "$r" "$metric" "$s" "$kb" "$rows"
  done
done
