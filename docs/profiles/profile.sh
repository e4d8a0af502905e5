#!/bin/bash
# Profiles of one server process under single POSTs, batch POSTs and a pure drain
# (docs/performance.md).  Needs py-spy (pip install py-spy) and root or ptrace rights.
# Usage: bash docs/profiles/profile.sh [OUT_DIR]   (from the repository root)
# Then:  .venv/bin/python -m harness.stages OUT_DIR/single.txt   (likewise batch, drain)
set -eu
OUT=${1:-/tmp/points-profiles}
HERE=docs/profiles
mkdir -p "$OUT"
export DATA_DIR=$OUT/data PORT=${PORT:-8100}  # logging as a default serve has it
rm -rf "$DATA_DIR"
.venv/bin/python run.py serve > "$OUT/serve.log" 2>&1 &
SERVE=$!
trap 'kill -TERM $SERVE 2>/dev/null; wait $SERVE' EXIT
for _ in $(seq 90); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done
TOKEN=$(cat "$DATA_DIR/admin-token")
DB="postgresql://postgres@127.0.0.1:$(cat "$DATA_DIR/postgres.port")/postgres"
API="http://127.0.0.1:$PORT"
BENCH=(.venv/bin/python run.py bench)
OPTS=(--paths pipelined --target "$API" --token "$TOKEN" --database-url "$DB" --no-baseline
      --out "$OUT/results")
spy() {  # spy NAME SECONDS: sample the server's loop thread at 200 Hz
  .venv/bin/py-spy record --pid "$SERVE" --duration "$2" --rate 200 --format raw \
    --nonblocking --output "$OUT/$1.txt" > /dev/null 2>&1
}
for load in single batch; do
  "${BENCH[@]}" "$HERE/$load.toml" "${OPTS[@]}" > "$OUT/$load.log" 2>&1 &
  LOAD=$!
  sleep 8   # past registration and warm-up
  spy "$load" 15
  wait $LOAD
done
# The drain: pause claiming, queue ~300k points, resume, sample the first seconds.
curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$API/v1/admin/queue/pause" > /dev/null
"${BENCH[@]}" "$HERE/fill.toml" "${OPTS[@]}" > "$OUT/fill.log" 2>&1 || true
curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$API/v1/admin/queue/resume" > /dev/null
spy drain 3
echo "profiles in $OUT: single.txt batch.txt drain.txt"
