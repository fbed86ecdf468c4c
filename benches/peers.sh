#!/usr/bin/env bash
# Our whole `report` process against both peers (../shared/peer/: the DuckDB
# script and the ClickHouse script run in-process by chDB), alternately on
# the same datasets, with no memory limit and under one, outputs compared
# number by number. Prints every run (wall seconds, peak RSS), then one
# table of medians with the ratios peer time / our time: on a shared
# machine absolute seconds drift, the ratio of alternating runs does not.
#
#   benches/peers.sh [SIZES...]     sizes in millions of events, default: 10 50
#
# Environment: RUNS (runs of each, default 3), LIMIT (the memory limit of
# the bounded runs, default 2GiB, given to DuckDB as it is (it reads GiB);
# chDB has no limit flag and runs unbounded only), SF_DATA (dataset cache,
# default ~/.cache/supportfunnel-data), SF_BIN (our binary, default: a
# release build of this checkout), PEER_DIR (default ../shared/peer),
# PEER_VENV (a virtual environment with duckdb, pyarrow and chdb; created
# and filled from PyPI when missing, default ~/.cache/peer-venv).
#
# Datasets as in benches/vs_duckdb.sh: `supportfunnel gen` with N*20,000
# users over 90 days from 2026-01-01, seed 1; the period is the last 30
# days, 2026-03-02..2026-04-01, and the previous 30 before it.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10 50)
runs=${RUNS:-3}
limit=${LIMIT:-2GiB}
data=${SF_DATA:-$HOME/.cache/supportfunnel-data}
peer=${PEER_DIR:-../shared/peer}
venv=${PEER_VENV:-$HOME/.cache/peer-venv}
from=2026-03-02
to=2026-04-01
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ -f "$peer/peer.py" ] && [ -f "$peer/chdb/peer.py" ] ||
  { echo "no peers at $peer (set PEER_DIR)" >&2; exit 1; }

bin=${SF_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --features full --bin supportfunnel >&2
  bin="${CARGO_TARGET_DIR:-target}/release/supportfunnel"
fi
if ! "$venv/bin/python" -c "import duckdb, pyarrow, chdb" 2>/dev/null; then
  echo "installing duckdb, pyarrow and chdb into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q duckdb pyarrow chdb==4.4.0 >&2
fi

# shellcheck source=benches/lib.sh
. benches/lib.sh

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
peak() { printf '%s\n' "$@" | sort -n | tail -1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
printf '%-6s %-4s %-22s %10s %10s\n' events run engine wall_s peak_mib
for m in "${sizes[@]}"; do
  dir=$(gen "$m")
  common=(--events "$dir/events" --messages "$dir/messages" --from $from --to $to --format json)
  declare -A t=() k=()
  for r in $(seq 1 "$runs"); do
    for engine in ours duckdb chdb ours_limit duckdb_limit; do
      case $engine in
        ours) cmd=("$bin" report "${common[@]}") ;;
        ours_limit) cmd=("$bin" report "${common[@]}" --memory-limit "$limit" --temp-dir "$work") ;;
        duckdb) cmd=("$venv/bin/python" "$peer/peer.py" "${common[@]}") ;;
        duckdb_limit) cmd=("$venv/bin/python" "$peer/peer.py" "${common[@]}"
          --memory-limit "$limit" --temp-dir "$work/duckdb-spill") ;;
        chdb) cmd=("$venv/bin/python" "$peer/chdb/peer.py" "${common[@]}") ;;
      esac
      read -r s kb < <(measure_to "$work/$engine.jsonl" "${cmd[@]}")
      t[$engine]+="$s " k[$engine]+="$kb "
      printf '%-6s %-4s %-22s %10s %10s\n' "${m}M" "$r" "$engine" "$s" "$kb"
      python3 "$peer/compare.py" "$work/$engine.jsonl" "$work/ours.jsonl" >&2 ||
        { echo "$engine and ours differ at ${m}M" >&2; exit 1; }
    done
  done
  # shellcheck disable=SC2086
  {
    ot=$(median ${t[ours]}) olt=$(median ${t[ours_limit]})
    dt=$(median ${t[duckdb]}) dlt=$(median ${t[duckdb_limit]}) ct=$(median ${t[chdb]})
    om=$(peak ${k[ours]}) olm=$(peak ${k[ours_limit]})
    dm=$(peak ${k[duckdb]}) dlm=$(peak ${k[duckdb_limit]}) cm=$(peak ${k[chdb]})
  }
  summary+=("$(printf '| %s | none | %s s, %s MiB | %s s, %s MiB (%s×) | %s s, %s MiB (%s×) |' \
    "${m}M" "$ot" "$om" "$dt" "$dm" "$(ratio "$dt" "$ot")" "$ct" "$cm" "$(ratio "$ct" "$ot")")")
  summary+=("$(printf '| %s | %s | %s s, %s MiB | %s s, %s MiB (%s×) | — |' \
    "${m}M" "$limit" "$olt" "$olm" "$dlt" "$dlm" "$(ratio "$dlt" "$olt")")")
  unset t k
done
echo
echo "medians of $runs alternating runs; (N×) = peer time / our time; every output equal"
echo
echo "| events | memory limit | supportfunnel | DuckDB | ClickHouse (chDB) |"
echo "|---|---|---:|---:|---:|"
printf '%s\n' "${summary[@]}"
