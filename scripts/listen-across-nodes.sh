#!/usr/bin/env bash
# Listeners of one room spread over two nodes: node-0 hosts the room (a mixed room at 32 kb/s where one
# chorus-loadtest participant talks continuously), node-1 relays its mount (docs/broadcast.md, "Listeners on
# every node"); a redis-server of its own shares the cluster state. N listeners on each node at once
# (`chorus-loadtest listen`), each node's CPU and memory per listener (docs/loadtest.md).
#   scripts/listen-across-nodes.sh                 # N=1000 on each node, 15 s
#   N=9900 DURATION=20 BIN_DIR=/tmp/bin scripts/listen-across-nodes.sh   # ≈ 20,000 listeners in all
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"; N="${N:-1000}"; DURATION="${DURATION:-15}"
OUT="${OUT:-$ROOT/target/listen-across-nodes}"; mkdir -p "$OUT"; rm -f "$OUT"/*.log
pids=(); cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }; trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"   # the tool holds 2 × N sockets: N ≤ (hard limit − 100) / 2
redis-server --port 26379 --save '' --appendonly no > $OUT/redis.log 2>&1 & pids+=($!)
sleep 0.5
for i in 0 1; do
cat > $OUT/node$i.toml <<EOT
[http]
listen = "127.0.0.1:2788$i"
max_connections = 60000
max_connections_per_ip = 60000
[media]
port_start = 2790$i
workers = 1
dev_lan_candidate = false
[room]
default_mode = "mix"
[room.mix]
bitrate_bps = 32000
[broadcast]
public = true
max_listeners = 60000
[cluster]
redis_url = "redis://127.0.0.1:26379"
node_id = "node-$i"
[log]
filter = "warn"
json = false
EOT
"$BIN_DIR/chorus" --config $OUT/node$i.toml > $OUT/node$i.log 2>&1 & pids+=($!)
eval "PID$i=$!"
done
for p in 27880 27881; do for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done; done
"$BIN_DIR/chorus-loadtest" run --url "ws://127.0.0.1:27880/ws" --mode mix -n 1 --talkers 1 \
  --talk continuous --duration 3600 --join-timeout 100000 --no-floor > $OUT/talker.log 2>&1 & pids+=($!)
ROOM=""
for _ in $(seq 100); do
  ROOM=$("$BIN_DIR/chorus" --config $OUT/node0.toml token create --admin --identity bench 2>/dev/null | \
    xargs -I{} curl -fs -H "Authorization: Bearer {}" "http://127.0.0.1:27880/admin/v1/rooms" | \
    sed -n 's/.*"name":"\([^"]*\)".*/\1/p' | head -1) || true
  [ -n "$ROOM" ] && break; sleep 0.2
done
[ -n "$ROOM" ] || { echo "the talker did not join"; tail $OUT/*.log; exit 1; }
sleep 2
echo "== room $ROOM on node-0 (pid $PID0); relayed by node-1 (pid $PID1); $N listeners on each"
"$BIN_DIR/chorus-loadtest" listen -n "$N" --duration "$DURATION" --json $OUT/listen.json \
  --target "owner=127.0.0.1:27880/live/$ROOM.opus@$PID0" --target "relay=127.0.0.1:27881/live/$ROOM.opus@$PID1"
curl -fs http://127.0.0.1:27881/metrics | grep -E "^chorus_broadcast_(relays_total|listeners)" || true
curl -fs http://127.0.0.1:27880/metrics | grep -E "^chorus_broadcast_listeners" || true
