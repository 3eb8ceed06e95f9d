#!/usr/bin/env bash
# Interleaved A/B of gateway CPU per request: a git revision (A) against the working tree (B).
#
#   tools/bench_ab.sh REV [PAIRS]      e.g. tools/bench_ab.sh HEAD~1 3
#   ONLY=nonstream_c64 SCALE=1 ORDER="B A" tools/bench_ab.sh main
#
# This machine's speed drifts by up to 30 % between runs, so a small change is believed only when
# it wins pairs in both orders (ORDER="B A" runs B first). A is a throwaway git worktree of REV; both
# sides use this checkout's .venv. Prints one line per run: side, scenario, CPU ms per request of
# edge, worker, nats-server and their sum (the `make bench` figure).
set -euo pipefail
rev=${1:?usage: tools/bench_ab.sh REV [PAIRS]}
pairs=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
python="$here/.venv/bin/python"
a_dir=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$a_dir" >/dev/null 2>&1 || true' EXIT
git -C "$here" worktree add --detach --force "$a_dir" "$rev" >/dev/null
for _ in $(seq 1 "$pairs"); do
  for side in ${ORDER:-A B}; do
    dir=$here; [ "$side" = A ] && dir=$a_dir
    (cd "$dir" && BENCH_SCALE=${SCALE:-3} BENCH_ONLY=${ONLY:-nonstream_c1} "$python" -m tools.bench 2>&1 |
      awk -v s="$side" '$2 == "gateway" && NF == 11 {print s, $1, "edge", $9, "worker", $10, "nats", $6, "gateway", $11}')
  done
done
