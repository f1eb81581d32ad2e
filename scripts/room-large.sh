#!/usr/bin/env bash
# One large room on one Chorus (a benchmark, not a CI test): N participants join one forward room at RAMP
# per second, TALKERS of them talk, for DURATION seconds of steady state; the room is split over the
# server's WORKERS media workers by its default `room_shard_participants` (docs/loadtest.md, "A room of
# 2,000 on two cores"). While it runs, the workers' counters are scraped every 2 s, so a worker whose
# counters stop moving (a starved worker) shows.
#
#   scripts/room-large.sh                 # 2,000 participants, 1 talker, 2 workers
#   TALKERS=3 scripts/room-large.sh       # 300,000 datagrams a second out: carried by a 2-core VM whose floor
#                                         # is ~1.4 µs, shed on slower ones (docs/loadtest.md)
#
# Results in $OUT (default target/room/<UTC time>/): loadtest.txt (the tool's report), report.json,
# scrape.txt (every 2 s: trunk packets received and sent, participants per worker, socket yields per
# worker, packets shed), ss.txt (the workers' receive queues halfway), metrics.txt (at the end),
# chorus.log. Environment: N (2000), TALKERS (1), WORKERS (2), DURATION (15), RAMP (100), MEASURE (receivers
# that decrypt, 20), PORT (HTTP, 24980; media PORT+2 on), SKIP_BUILD=1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-2000}"
TALKERS="${TALKERS:-1}"
WORKERS="${WORKERS:-2}"
DURATION="${DURATION:-15}"
RAMP="${RAMP:-100}"
MEASURE="${MEASURE:-20}"
PORT="${PORT:-24980}"
MEDIA_PORT=$((PORT + 2))
OUT="${OUT:-$ROOT/target/room/$(date -u +%Y%m%dT%H%M%SZ)}"

if [ "${SKIP_BUILD:-}" != 1 ]; then
  echo "== building release binaries"
  (cd "$ROOT" && cargo build --release --locked -p chorus-server -p chorus-loadtest)
fi
CHORUS="$ROOT/target/release/chorus"
LT="$ROOT/target/release/chorus-loadtest"
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$CHORUS" --dev-mode true --room-max-participants $((N + 1000)) --http-max-connections-per-ip $((N * 5)) \
  --workers "$WORKERS" --media-tcp-enabled false --http-listen "127.0.0.1:$PORT" \
  --media-port-start "$MEDIA_PORT" > "$OUT/chorus.log" 2>&1 &
SERVER=$!
SCRAPER=""
cleanup() {
  [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null || true
  kill -INT "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do
  curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done

# Every 2 s: seconds since the start, then the counters named in the header.
scrape() {
  local start=$SECONDS m
  echo "# s  trunk_received trunk_sent | participants per worker | socket yields per worker | shed"
  while true; do
    m=$(curl -s -m 1 "127.0.0.1:$PORT/metrics" || true)
    printf '%3d  %s| %s| %s| %s\n' $((SECONDS - start)) \
      "$(grep -E '^chorus_trunk_packets_total\{result="(received|sent)"' <<<"$m" | awk '{printf "%s ", $2}')" \
      "$(grep -E '^chorus_worker_participants' <<<"$m" | awk '{printf "%s ", $2}')" \
      "$(grep -E '^chorus_worker_socket_yields_total' <<<"$m" | awk '{printf "%s ", $2}')" \
      "$(grep -E '^chorus_packets_dropped_total\{reason="overloaded"' <<<"$m" | awk '{print $2}')"
    sleep 2
  done
}
scrape > "$OUT/scrape.txt" &
SCRAPER=$!
(
  sleep $((N / RAMP + DURATION / 2))
  ss -uanm | grep -A1 -E ":($(seq -s '|' "$MEDIA_PORT" $((MEDIA_PORT + WORKERS - 1)))) " > "$OUT/ss.txt" || true
) &

echo "== $N participants, $TALKERS talker(s), $WORKERS workers; results in $OUT"
"$LT" run --url "ws://127.0.0.1:$PORT/ws" -n "$N" --talkers "$TALKERS" --ramp-rate "$RAMP" \
  --duration "$DURATION" --server-pid "$SERVER" --no-floor --measure-receivers "$MEASURE" \
  --json "$OUT/report.json" 2>&1 | tee "$OUT/loadtest.txt" | grep -v '^\['
curl -s "127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"
grep -E '^chorus_(packets_dropped_total\{reason="overloaded"|trunk_packets_total|worker_socket_yields_total|worker_busy_seconds_total)' \
  "$OUT/metrics.txt"
