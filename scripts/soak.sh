#!/usr/bin/env bash
# Soak (a benchmark, not a CI test): Chorus on loopback under churning load for MINUTES (default 30), forward
# and mix rooms side by side, P.59 talkers; then SIGTERM and a check that the drain was clean.
#
#   scripts/soak.sh            # 30 minutes
#   scripts/soak.sh 3          # a 3-minute check of the machinery
#   N=60 ROOMS=6 CHURN=30 scripts/soak.sh 30
#
# Results: $OUT (default target/soak/<UTC time>/): soak.json (report + time series), soak.txt (text report),
# chorus.log, drain.txt. Environment: N (participants, 60), ROOMS (6), TALKERS (3 per room), MODE (both),
# CHURN (leave-and-rejoin events per minute, 30), ABRUPT (share of leavers that just vanish, 0.25),
# SAMPLE (seconds between samples, 10), WARMUP (seconds after the ramp left out of the figures; default 60,
# or a sixth of the run if shorter), WORKERS (server media workers, 1), PORT (HTTP, 27880; media PORT+2),
# SEED (1), SKIP_BUILD=1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MINUTES="${1:-30}"
N="${N:-60}"
ROOMS="${ROOMS:-6}"
TALKERS="${TALKERS:-3}"
MODE="${MODE:-both}"
CHURN="${CHURN:-30}"
ABRUPT="${ABRUPT:-0.25}"
SAMPLE="${SAMPLE:-10}"
WORKERS="${WORKERS:-1}"
PORT="${PORT:-27880}"
SEED="${SEED:-1}"
OUT="${OUT:-$ROOT/target/soak/$(date -u +%Y%m%dT%H%M%SZ)}"
DURATION=$((MINUTES * 60))
if [ -z "${WARMUP:-}" ]; then
  WARMUP=60
  [ $((DURATION / 6)) -lt 60 ] && WARMUP=$((DURATION / 6))
fi

if [ "${SKIP_BUILD:-}" != 1 ]; then
  echo "== building release binaries"
  (cd "$ROOT" && cargo build --release --locked -p chorus-server -p chorus-loadtest)
fi
CHORUS="$ROOT/target/release/chorus"
LT="$ROOT/target/release/chorus-loadtest"
mkdir -p "$OUT"

echo "== starting chorus on 127.0.0.1:$PORT (dev mode, $WORKERS media worker(s)), log $OUT/chorus.log"
"$CHORUS" --http-listen "127.0.0.1:$PORT" --media-port-start $((PORT + 2)) --workers "$WORKERS" \
  --dev-mode true --room-max-participants 100000 --http-max-connections-per-ip 10000 \
  > "$OUT/chorus.log" 2>&1 &
PID=$!
cleanup() { if kill -0 "$PID" 2>/dev/null; then kill -INT "$PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { echo "chorus exited, see $OUT/chorus.log" >&2; exit 1; }
  sleep 0.1
done

echo "== soak: $MINUTES min, $N participants in $ROOMS rooms ($MODE), $TALKERS P.59 talkers/room," \
  "churn $CHURN/min ($ABRUPT abrupt), warm-up $WARMUP s, sample every $SAMPLE s"
status=0
"$LT" soak --url "ws://127.0.0.1:$PORT/ws" --server-pid "$PID" -n "$N" --rooms "$ROOMS" --talkers "$TALKERS" \
  --mode "$MODE" --talk p59 --duration "$DURATION" --warmup-secs "$WARMUP" --churn-per-min "$CHURN" \
  --churn-abrupt "$ABRUPT" --sample-secs "$SAMPLE" --seed "$SEED" --ramp-rate 10 \
  --json "$OUT/soak.json" --text "$OUT/soak.txt" || status=$?

echo "== SIGTERM to chorus (pid $PID): drain"
t0=$(date +%s.%N)
kill -TERM "$PID"
rc=0
for _ in $(seq 1 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
  drain="NOT clean: still running 60 s after SIGTERM (killed)"
  kill -INT "$PID" || true
  wait "$PID" || true
else
  wait "$PID" || rc=$?
  t=$(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc)")
  if [ "$rc" = 0 ] && grep -q "drained: no participants left" "$OUT/chorus.log"; then
    drain="clean: exit 0 after ${t} s, no participants left to close"
  else
    drain="NOT clean: exit code $rc after ${t} s; see the end of $OUT/chorus.log"
  fi
fi
trap - EXIT
echo "drain: $drain" | tee "$OUT/drain.txt"
echo "results in $OUT"
exit "$status"
