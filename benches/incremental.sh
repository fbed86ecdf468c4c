#!/usr/bin/env bash
# One new day appended to DAYS days of history: the job's incremental run
# (with `[state]`) against a full recompute over every file (no state), side
# by side, alternately, RUNS times each; the outputs are compared byte for
# byte. Also times the run that builds the state (`run --full`). Prints a
# table for docs/PERFORMANCE.md.
#
#   benches/incremental.sh [DAYS...]      default: 365 730
#
# Each history is USERS users (default 200,000: about 110,000 events a day,
# 40M events in 365 days) from 2025-01-01, seed 1, generated once into the
# dataset cache with one day more than DAYS (the day that arrives).
# Environment: SF_BIN (default: a release build of this checkout), SF_DATA
# (dataset cache, default ~/.cache/supportfunnel-data), USERS, RUNS
# (default 2), REPORTS (the job's reports, default "daily weekly"; the
# longest one sets how many days of rows the state keeps in full),
# STATE_MEMORY (--memory-limit of the state build, default 6GiB: it
# reads the whole history once).
set -euo pipefail
cd "$(dirname "$0")/.."

data=${SF_DATA:-$HOME/.cache/supportfunnel-data}
users=${USERS:-200000}
runs=${RUNS:-2}
reports=${REPORTS:-daily weekly}
state_memory=${STATE_MEMORY:-6GiB}
if [ -z "${SF_BIN:-}" ]; then
  cargo build --release --features full --quiet
  bin="${CARGO_TARGET_DIR:-$HOME/.cache/supportfunnel-target}/release/supportfunnel"
else
  bin=$SF_BIN
fi
# shellcheck source=benches/lib.sh
. benches/lib.sh

job() { # job FILE IN OUT [STATE]
  {
    printf '[[tables]]\nname = "events"\nuri = "%s/events"\n\n' "$2"
    printf '[[tables]]\nname = "messages"\nuri = "%s/messages"\n\n' "$2"
    printf '[output]\nlocation = "%s/report"\nsessions_location = "%s/sessions"\n\n' "$3" "$3"
    for r in $reports; do
      printf '[[reports]]\nname = "%s"\nperiod = "%s"\nsessions = true\n\n' "$r" "$r"
    done
    if [ -n "${4:-}" ]; then printf '[state]\nlocation = "%s"\n' "$4"; fi
  } >"$1"
}

printf 'reports: %s\n\n| history | events | run | wall s | peak MiB |\n|---|---|---|---|---|\n' "$reports"
for days in "${@:-365 730}"; do
  src="$data/days$days-u$users"
  if [ ! -f "$src/.complete" ]; then
    echo "generating $((days + 1)) days for $users users into $src" >&2
    "$bin" gen --out "$src" --users "$users" --days $((days + 1)) --start 2025-01-01 --seed 1 --overwrite >&2
    touch "$src/.complete"
  fi
  last=$(date -u -d "2025-01-01 + $days days" +%F)
  date=$(date -u -d "$last + 1 day" +%F)
  work=$(mktemp -d -p "$data" work.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  for t in events messages; do
    mkdir -p "$work/in/$t"
    for d in "$src/$t"/date=*; do
      [ "$(basename "$d")" = "date=$last" ] || cp -al "$d" "$work/in/$t/"
    done
  done
  job "$work/inc.toml" "$work/in" "$work/inc" "$work/state"
  job "$work/full.toml" "$work/in" "$work/full"
  events=$("$bin" sql --events "$src/events" --messages "$src/messages" --format csv \
    "SELECT count(*) FROM events" | tail -1)
  # the state as the day before left it
  read -r s m < <(measure_to "$work/build.json" "$bin" run --config "$work/inc.toml" --date "$last" --full --memory-limit "$state_memory")
  printf '| %s days | %s | state build (`run --full`, day %s) | %s | %s |\n' "$days" "$events" "$days" "$s" "$m"
  # Hard links: a state's files are never rewritten in place (new names,
  # state.json replaced by rename), and a copy would have new inodes and
  # times, so local ETags that no longer match: the state's check would
  # (rightly) take it for changed and run in full.
  cp -al "$work/state" "$work/state.before"
  for t in events messages; do cp -al "$src/$t/date=$last" "$work/in/$t/"; done
  for i in $(seq "$runs"); do
    rm -rf "$work/state" && cp -al "$work/state.before" "$work/state"
    read -r s m < <(measure_to "$work/inc.json" "$bin" run --config "$work/inc.toml" --date "$date")
    grep -q '"mode":"incremental"' "$work/inc.json" || { cat "$work/inc.json" >&2; exit 1; }
    printf '| %s days | + 1 day | incremental run %s | %s | %s |\n' "$days" "$i" "$s" "$m"
    read -r s m < <(measure "$bin" run --config "$work/full.toml" --date "$date")
    printf '| %s days | + 1 day | full recompute %s | %s | %s |\n' "$days" "$i" "$s" "$m"
  done
  for r in $reports; do
    for t in report sessions; do
      f="$t/report=$r/report_date=$date/data.parquet"
      cmp "$work/inc/$f" "$work/full/$f" || { echo "outputs differ: $f" >&2; exit 1; }
    done
  done
  rm -rf "$work"
  trap - EXIT
done
echo "outputs identical" >&2
