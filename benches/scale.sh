#!/usr/bin/env bash
# Times the whole `report` process at several sizes, next to the floor: our
# own engine scanning the columns the report needs. Datasets are generated
# once into a cache directory outside the repository.
#
#   benches/scale.sh [SIZES...]        sizes in millions of events, default: 1 10
#
# Environment: SF_DATA (dataset cache, default ~/.cache/supportfunnel-data),
# SF_BIN (binary, default: a release build of this checkout), SF_REPORT_ARGS
# (extra report flags, e.g. "--memory-limit 2GiB --temp-dir /tmp/spill").
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 10)
data=${SF_DATA:-$HOME/.cache/supportfunnel-data}
target=${CARGO_TARGET_DIR:-target}
bin=${SF_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --features full --bin supportfunnel >&2
  bin="$target/release/supportfunnel"
fi
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

# shellcheck source=benches/lib.sh
. benches/lib.sh

printf '%-8s %10s %10s %10s %8s %12s\n' events rows report_s floor_s ratio peak_rss_mib
for m in "${sizes[@]}"; do
  dir=$(gen "$m")
  args=(--events "$dir/events" --messages "$dir/messages")
  rows=$("$bin" sql "${args[@]}" --format csv "SELECT count(*) FROM events" | tail -1)
  # The floor: the columns the report needs, really scanned. Without the
  # (always true) filter DataFusion answers count/max from Parquet footers.
  read -r fs _ < <(measure "$bin" sql "${args[@]}" --format csv \
    "SELECT count(*), max(ts), max(user_id), max(event_type), max(conversation_id) FROM events WHERE ts IS NOT NULL OR ts IS NULL")
  # shellcheck disable=SC2086
  read -r rs rm < <(measure "$bin" report "${args[@]}" --format json ${SF_REPORT_ARGS:-})
  ratio=$(awk -v a="$rs" -v b="$fs" 'BEGIN {printf "%.1f", (b > 0 ? a / b : 0)}')
  printf '%-8s %10s %10s %10s %8s %12s\n' "${m}M" "$rows" "$rs" "$fs" "$ratio" "$rm"
done
