# Shared by the benchmark scripts (sourced, not run). Expects `bin` (our
# binary) and `data` (the dataset cache directory) to be set.

# gen M: the dataset of M million events (M*20,000 users over 90 days from
# 2026-01-01, seed 1), generated once; prints its directory.
gen() {
  local m=$1 dir="$data/m$1"
  if [ ! -f "$dir/.complete" ]; then
    echo "generating ${m}M events into $dir" >&2
    "$bin" gen --out "$dir" --users $((m * 20000)) --days 90 --seed 1 --overwrite >&2
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# measure_to OUT CMD...: runs CMD under /usr/bin/time with stdout to OUT;
# prints "seconds peak_mib".
measure_to() {
  local out=$1 log
  shift
  log=$(mktemp)
  /usr/bin/time -v "$@" >"$out" 2>"$log" || { cat "$log" >&2; rm -f "$log"; return 1; }
  local secs kb
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")
  kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  rm -f "$log"
  echo "$secs $((kb / 1024))"
}

# measure CMD...: measure_to with stdout discarded.
measure() { measure_to /dev/null "$@"; }
