#!/usr/bin/env bash
# Chorus and Janus side by side: the same chorus-loadtest workload against both, on this machine, in one go,
# then the ratios (CPU per forwarded packet, mixed participants per core, mixer latency).
#
#   scripts/bench-vs-janus.sh                      # defaults below
#   FWD_N=50 TALKERS=3 DURATION=20 JANUS_MIX_N=30 CHORUS_MIX_N=503 scripts/bench-vs-janus.sh
#
# Janus 1.1.x from Debian only gathers ICE candidates on non-loopback interfaces, so everything runs inside
# a private network namespace made by shared/peers/janus/run_in_netns.sh (a veth carrying 127.0.0.2; nothing
# leaves the machine). Chorus runs in the same namespace on 127.0.0.1. Needs root (unshare -n).
# Results: $OUT/*.json, *.html and summary.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="${PEERS:-$(cd "$ROOT/.." && pwd)/shared/peers}"
OUT="${OUT:-$ROOT/target/bench-vs-janus}"
FWD_N="${FWD_N:-50}"            # forward: participants in one room
TALKERS="${TALKERS:-3}"         # talkers per room (ITU-T P.59 talk model)
DURATION="${DURATION:-20}"      # measured seconds per run, after the ramp
RAMP="${RAMP:-20}"              # joins per second
JANUS_MIX_N="${JANUS_MIX_N:-30}"     # AudioBridge costs ~2 % of a core per participant: keep it small
CHORUS_MIX_N="${CHORUS_MIX_N:-503}"  # 500 listeners + 3 talkers
JANUS_PREBUFFER="${JANUS_PREBUFFER:-}" # empty: Janus' default prebuffering
CHORUS_BIN="${CHORUS_BIN:-}"         # a chorus binary to use instead of this tree's release build
export CHORUS_BIN OUT FWD_N TALKERS DURATION RAMP JANUS_MIX_N CHORUS_MIX_N JANUS_PREBUFFER PEERS

if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  if [ "${SKIP_BUILD:-}" != 1 ]; then
    echo "== building release binaries"
    (cd "$ROOT" && cargo build --release -p chorus-server --bin chorus -p chorus-loadtest --bin chorus-loadtest)
  fi
  command -v janus >/dev/null || "$PEERS/setup.sh"
  mkdir -p "$OUT"
  exec env BENCH_IN_NETNS=1 "$PEERS/janus/run_in_netns.sh" "$0" "$@"
fi

# ---- inside the namespace; run_in_netns.sh has started Janus (WebSocket 127.0.0.1:18188) ----
LT="$ROOT/target/release/chorus-loadtest"
CHORUS="${CHORUS_BIN:-$ROOT/target/release/chorus}"
me=$(readlink /proc/self/ns/net)
JANUS_PID=""
for p in $(pgrep -x janus); do
  if [ "$(readlink /proc/$p/ns/net)" = "$me" ]; then JANUS_PID=$p; break; fi
done
[ -n "$JANUS_PID" ] || { echo "no janus process in this namespace" >&2; exit 1; }

CHORUS_PID=""
start_chorus() {
  "$CHORUS" --http-listen 127.0.0.1:17880 --media-port-start 17882 --workers 1 --dev-mode true \
    --room-max-participants 2000 --http-max-connections-per-ip 10000 "$@" > "$OUT/chorus.log" 2>&1 &
  CHORUS_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/17880) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "chorus did not start, see $OUT/chorus.log" >&2
  exit 1
}
stop_chorus() { kill "$CHORUS_PID" 2>/dev/null || true; wait "$CHORUS_PID" 2>/dev/null || true; CHORUS_PID=""; }
trap 'stop_chorus' EXIT

common=(--any-device --talkers "$TALKERS" --duration "$DURATION" --ramp-rate "$RAMP")
prebuf=()
[ -n "$JANUS_PREBUFFER" ] && prebuf=(--janus-prebuffer "$JANUS_PREBUFFER")

echo "== chorus forward: 1 room x $FWD_N"
start_chorus
"$LT" run --target chorus --url ws://127.0.0.1:17880/ws -n "$FWD_N" --server-pid "$CHORUS_PID" "${common[@]}" \
  --json "$OUT/chorus-forward.json" --html "$OUT/chorus-forward.html" | tee "$OUT/chorus-forward.txt"
stop_chorus

echo "== janus VideoRoom (audio only) forward: 1 room x $FWD_N"
"$LT" run --target janus --url ws://127.0.0.1:18188 -n "$FWD_N" --server-pid "$JANUS_PID" "${common[@]}" \
  --json "$OUT/janus-forward.json" --html "$OUT/janus-forward.html" | tee "$OUT/janus-forward.txt"

mix_args=()
if "$CHORUS" --help | grep -q -- '--room-mode'; then
  echo "== chorus mix: 1 room x $CHORUS_MIX_N"
  start_chorus --room-mode mix
  "$LT" run --target chorus --mode mix --url ws://127.0.0.1:17880/ws -n "$CHORUS_MIX_N" --server-pid "$CHORUS_PID" \
    "${common[@]}" --json "$OUT/chorus-mix.json" --html "$OUT/chorus-mix.html" | tee "$OUT/chorus-mix.txt"
  stop_chorus
  mix_args+=(--chorus-mix "$OUT/chorus-mix.json")
else
  echo "== chorus mix: skipped (this chorus has no --room-mode flag yet)"
fi

echo "== janus AudioBridge mix: 1 room x $JANUS_MIX_N"
"$LT" run --target janus --mode mix --url ws://127.0.0.1:18188 -n "$JANUS_MIX_N" --server-pid "$JANUS_PID" \
  "${common[@]}" "${prebuf[@]}" --json "$OUT/janus-mix.json" --html "$OUT/janus-mix.html" | tee "$OUT/janus-mix.txt"
mix_args+=(--janus-mix "$OUT/janus-mix.json")

echo "== side by side"
"$LT" compare --chorus-forward "$OUT/chorus-forward.json" --janus-forward "$OUT/janus-forward.json" \
  "${mix_args[@]}" | tee "$OUT/summary.txt"
