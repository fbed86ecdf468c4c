#!/usr/bin/env bash
# The report from Python (`supportfunnel.connect(...).report(...)`, the
# package of python/) against the same report from the command line, on the
# same files, alternating, whole processes: wall seconds and peak memory.
# Both write the report as Parquet; the outputs must be equal.
#
#   benches/python.sh [SIZES...]     sizes in millions of events, default: 10
#
# Environment: SF_BIN (the CLI; default: a release build of this checkout),
# SF_PYTHON (a Python with the package installed, e.g. a release wheel:
# `maturin build --release -m python/Cargo.toml` then pip install it;
# default: python3), RUNS (default 3). Datasets as in benches/scale.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SF_DATA:-$HOME/.cache/supportfunnel-data}
bin=${SF_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --features full --bin supportfunnel >&2
  bin="${CARGO_TARGET_DIR:-target}/release/supportfunnel"
fi
py=${SF_PYTHON:-python3}
"$py" -c "import supportfunnel" || { echo "no supportfunnel package in $py" >&2; exit 1; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10)
runs=${RUNS:-3}
from=2026-03-02
to=2026-04-01

# shellcheck source=benches/lib.sh
. benches/lib.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-6s %-4s %-8s %10s %10s\n' events run caller wall_s peak_mib
for m in "${sizes[@]}"; do
  dir=$(gen "$m")
  for r in $(seq 1 "$runs"); do
    read -r s kb < <(measure "$bin" report --events "$dir/events" --messages "$dir/messages" \
      --from $from --to $to --format parquet --output "$work/cli.parquet")
    printf '%-6s %-4s %-8s %10s %10s\n' "${m}M" "$r" cli "$s" "$kb"
    read -r s kb < <(measure "$py" -c "
import sys, pyarrow.parquet as pq, supportfunnel
con = supportfunnel.connect(events=sys.argv[1], messages=sys.argv[2])
pq.write_table(con.report(sys.argv[3], sys.argv[4]), sys.argv[5])
" "$dir/events" "$dir/messages" $from $to "$work/py.parquet")
    printf '%-6s %-4s %-8s %10s %10s\n' "${m}M" "$r" python "$s" "$kb"
    "$py" -c "
import sys, pyarrow.parquet as pq
assert pq.read_table(sys.argv[1]).equals(pq.read_table(sys.argv[2])), 'outputs differ'
" "$work/cli.parquet" "$work/py.parquet"
  done
done
