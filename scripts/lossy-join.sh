#!/usr/bin/env bash
# Joins over a lossy network (a measurement, not a CI test; root): Chorus and chorus-loadtest run in a
# network namespace of their own whose loopback drops LOSS % of the UDP datagrams (nftables on the output
# hook, which sees every datagram once: LOSS % each way; signaling over TCP is not dropped). Prints, per
# run, how many joined and how long from the WebSocket's opening to media connected (ICE, DTLS, SRTP keys)
# and to the first remote audio. The load tool's participants are str0m peers with the native SDK's
# DTLS configuration (media-core's `client`), so this measures the SDK's joins, not a browser's.
#
#   scripts/lossy-join.sh                 # 20 % loss, 3 runs of 30 joins
#   LOSS=10 RUNS=5 scripts/lossy-join.sh
#   BIN_DIR=/tmp/old scripts/lossy-join.sh   # another build's chorus and chorus-loadtest
#
# Environment: LOSS (percent, 20), RUNS (3), N (participants per run, 30, over 3 rooms of 2 talkers),
# BIN_DIR (default target/release, built unless SKIP_BUILD=1), OUT (default target/lossy-join/<UTC time>/:
# run-<i>.json, the load tool's reports, and each run's server log).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LOSS="${LOSS:-20}"
RUNS="${RUNS:-3}"
N="${N:-30}"
OUT="${OUT:-$ROOT/target/lossy-join/$(date -u +%Y%m%dT%H%M%SZ)}"
if [ -z "${BIN_DIR:-}" ]; then
  BIN_DIR="$ROOT/target/release"
  if [ "${SKIP_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --locked -p chorus-server --bin chorus -p chorus-loadtest --bin chorus-loadtest)
  fi
fi
[ "$(id -u)" = 0 ] || { echo "needs root (a network namespace and nftables)" >&2; exit 2; }
mkdir -p "$OUT"
NS="chjoin$$"
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  sleep 0.3
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" nft -f - <<NFT
table inet lossy {
  chain out {
    type filter hook output priority 0;
    meta l4proto udp numgen random mod 100 < $LOSS counter drop
  }
}
NFT

for run in $(seq "$RUNS"); do
  ip netns exec "$NS" "$BIN_DIR/chorus" --dev-mode true --room-max-participants 1000 \
    --http-max-connections-per-ip 10000 --media-tcp-enabled false > "$OUT/chorus-$run.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    ip netns exec "$NS" curl -fs http://127.0.0.1:7880/healthz >/dev/null && break
    sleep 0.1
  done
  ip netns exec "$NS" "$BIN_DIR/chorus-loadtest" run -n "$N" --rooms 3 --talkers 2 --ramp-rate 10 \
    --duration 2 --join-timeout 20 --no-floor -q --json "$OUT/run-$run.json" > "$OUT/tool-$run.log" 2>&1 || true
  kill "$server"; wait "$server" 2>/dev/null || true
  python3 - "$OUT/run-$run.json" "$run" "$LOSS" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["joins"]
c, a = j["connect_ms"], j["first_audio_ms"]
print(f"{sys.argv[3]} % loss, run {sys.argv[2]}: {j['succeeded']} of {j['attempted']} joined "
      f"({j['failures'] or 'no failures'}); media connected p50 / p95 / max "
      f"{c['p50']:.0f} / {c['p95']:.0f} / {c['max']:.0f} ms; first audio p50 / p95 "
      f"{a['p50']:.0f} / {a['p95']:.0f} ms")
PY
done
echo "datagrams dropped: $(ip netns exec "$NS" nft list ruleset | grep -o 'counter packets [0-9]*')"
echo "reports in $OUT"
