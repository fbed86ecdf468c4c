#!/usr/bin/env bash
# Our whole `report` process against the DuckDB peer (one SQL script over the
# same Parquet files, ../shared/peer/), run alternately on the same datasets,
# outputs compared number by number. Prints wall seconds and peak RSS of
# every run, then the medians and the ratio (DuckDB time / ours): on a shared
# machine absolute seconds drift, the ratio of alternating runs does not.
#
#   benches/vs_duckdb.sh [SIZES...]     sizes in millions of events, default: 10 50
#
# Environment: RUNS (runs of each, default 3), SF_DATA (dataset cache,
# default ~/.cache/supportfunnel-data), SF_BIN (our binary, default: a
# release build of this checkout), SF_REPORT_ARGS (extra report flags),
# PEER_DIR (default ../shared/peer), PEER_VENV (a virtual environment with
# duckdb and pyarrow; created and filled from PyPI when missing, default
# ~/.cache/peer-venv).
#
# Datasets: `supportfunnel gen` with N*20,000 users over 90 days from
# 2026-01-01, seed 1 (generated once); the period is the last 30 days,
# 2026-03-02..2026-04-01, and the previous 30 before it.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10 50)
runs=${RUNS:-3}
data=${SF_DATA:-$HOME/.cache/supportfunnel-data}
peer=${PEER_DIR:-../shared/peer}
venv=${PEER_VENV:-$HOME/.cache/peer-venv}
from=2026-03-02
to=2026-04-01
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ -f "$peer/peer.py" ] || { echo "no DuckDB peer at $peer (set PEER_DIR)" >&2; exit 1; }

bin=${SF_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --features full --bin supportfunnel >&2
  bin="${CARGO_TARGET_DIR:-target}/release/supportfunnel"
fi
if ! "$venv/bin/python" -c "import duckdb, pyarrow" 2>/dev/null; then
  echo "installing duckdb and pyarrow into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q duckdb pyarrow >&2
fi

# shellcheck source=benches/lib.sh
. benches/lib.sh

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
printf '%-6s %-4s %-14s %10s %10s\n' events run engine wall_s peak_mib
for m in "${sizes[@]}"; do
  dir=$(gen "$m")
  ours_t=() peer_t=() ours_m=() peer_m=()
  for r in $(seq 1 "$runs"); do
    # shellcheck disable=SC2086
    read -r s k < <(measure_to "$work/ours.jsonl" "$bin" report --events "$dir/events" \
      --messages "$dir/messages" --from $from --to $to --format json ${SF_REPORT_ARGS:-})
    ours_t+=("$s") ours_m+=("$k")
    printf '%-6s %-4s %-14s %10s %10s\n' "${m}M" "$r" supportfunnel "$s" "$k"
    read -r s k < <(measure_to "$work/peer.jsonl" "$venv/bin/python" "$peer/peer.py" \
      --events "$dir/events" --messages "$dir/messages" --from $from --to $to --format json)
    peer_t+=("$s") peer_m+=("$k")
    printf '%-6s %-4s %-14s %10s %10s\n' "${m}M" "$r" duckdb "$s" "$k"
    python3 "$peer/compare.py" "$work/peer.jsonl" "$work/ours.jsonl" >&2 ||
      { echo "outputs differ at ${m}M" >&2; exit 1; }
  done
  ot=$(median "${ours_t[@]}") pt=$(median "${peer_t[@]}")
  om=$(printf '%s\n' "${ours_m[@]}" | sort -n | tail -1)
  pm=$(printf '%s\n' "${peer_m[@]}" | sort -n | tail -1)
  ratio=$(awk -v a="$pt" -v b="$ot" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
  summary+=("$(printf '%-6s %14s %14s %14s %14s %8s %6s' "${m}M" "$ot" "$om" "$pt" "$pm" "$ratio" equal)")
done
echo
printf '%-6s %14s %14s %14s %14s %8s %6s\n' events ours_median_s ours_peak_mib duckdb_median_s duckdb_peak_mib ratio output
printf '%s\n' "${summary[@]}"
