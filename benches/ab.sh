#!/usr/bin/env bash
# Two builds of supportfunnel, run alternately on the same dataset: the
# report, a query over `sessions`, and a script of 20 statements (what a
# prompt or a dashboard sends). Prints wall seconds and peak RSS of every
# run, then the medians and the ratio (B / A). On a shared machine absolute
# seconds drift; the ratio of alternating runs does not.
#
#   benches/ab.sh BIN_A BIN_B [EVENTS_DIR MESSAGES_DIR]
#
# Environment: RUNS (runs of each, default 3). The dataset defaults to the
# 10M one of benches/vs_duckdb.sh (~/.cache/supportfunnel-data/10m).
set -euo pipefail
a=${1:?"usage: benches/ab.sh BIN_A BIN_B [EVENTS MESSAGES]"}
b=${2:?"usage: benches/ab.sh BIN_A BIN_B [EVENTS MESSAGES]"}
data=${SF_DATA:-$HOME/.cache/supportfunnel-data}/10m
events=${3:-$data/events}
messages=${4:-$data/messages}
runs=${RUNS:-3}
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

script=$(mktemp)
trap 'rm -f "$script" "$script.time" "$script.err"' EXIT
for i in $(seq 1 20); do
  echo "SELECT count(*) FROM events WHERE event_type = 'article_view' AND ts > TIMESTAMP '2026-02-01' + INTERVAL '$i hours';" >> "$script"
done

# One command line per case, as arguments of a function.
run_case() {
  local bin=$1 name=$2
  case $name in
    report) "$bin" report --events "$events" --messages "$messages" \
              --from 2026-03-02 --to 2026-04-01 --format json ;;
    sessions) "$bin" sql --events "$events" --messages "$messages" \
              "SELECT status, count(*) FROM sessions GROUP BY 1 ORDER BY 1" ;;
    script20) "$bin" sql --events "$events" --messages "$messages" -f "$script" --format csv ;;
  esac
}
export -f run_case
export events messages script
cases=(report sessions script20)

declare -A times
for name in "${cases[@]}"; do
  for r in $(seq 1 "$runs"); do
    for side in A B; do
      bin=$a; [ "$side" = B ] && bin=$b
      /usr/bin/time -o "$script.time" -f "%e %M" bash -c 'run_case "$0" "$1"' "$bin" "$name" \
        > /dev/null 2> "$script.err" \
        || { echo "$name: $bin failed:" >&2; cat "$script.err" >&2; exit 1; }
      read -r secs kib < "$script.time"
      printf '%-9s %s run %d: %6.2f s  %6d MiB\n' "$name" "$side" "$r" "$secs" $((kib / 1024))
      times[$name,$side]+="$secs "
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo
printf '%-9s %8s %8s %8s\n' case A B "B/A"
for name in "${cases[@]}"; do
  ma=$(echo "${times[$name,A]}" | median)
  mb=$(echo "${times[$name,B]}" | median)
  printf '%-9s %8.2f %8.2f %8.2f\n' "$name" "$ma" "$mb" "$(echo "$mb / $ma" | bc -l)"
done
