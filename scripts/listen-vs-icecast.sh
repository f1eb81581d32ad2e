#!/usr/bin/env bash
# Listener streams, Chorus and Icecast 2.4 side by side: the same kind of stream (32 kb/s Ogg/Opus in 100 ms
# pages) on both, N listeners on each at once (`chorus-loadtest listen`), each server's CPU and memory over
# the same window, then the ratio (docs/loadtest.md, "Listeners").
#
#   scripts/listen-vs-icecast.sh                     # N=1000, 20 s
#   N=5000 DURATION=30 PAGE_US=20000 scripts/listen-vs-icecast.sh
#   ONLY=chorus N=5000 scripts/listen-vs-icecast.sh   # one target (Icecast's slow rush delays the other's window)
#   WRITE_MS=100 ONLY=chorus scripts/listen-vs-icecast.sh  # Chorus writes every 100 ms page (its default: 300 ms)
#
# Chorus: a mixed room at 32 kb/s where one chorus-loadtest participant talks continuously; its mount is
# /live/<room>.opus. Icecast (Debian's icecast2): ffmpeg encodes a 660 Hz tone with libopus at 32 kb/s into
# Ogg pages of PAGE_US and streams it to the mount /radio.opus (Icecast's default 64 KB burst on connect).
# Everything on 127.0.0.1; needs root only to run Icecast as nobody. Binaries: BIN_DIR (default: this
# tree's debug build — the figures are then an upper bound for Chorus). Results: $OUT/listen.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="${BIN_DIR:-$ROOT/target/debug}"
OUT="${OUT:-$ROOT/target/listen-vs-icecast}"
N="${N:-1000}"
DURATION="${DURATION:-20}"
PAGE_US="${PAGE_US:-100000}"
HTTP_PORT="${HTTP_PORT:-17880}"
MEDIA_PORT="${MEDIA_PORT:-17900}"
ICE_PORT="${ICE_PORT:-18000}"
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cat > "$OUT/chorus.toml" <<EOF
[http]
listen = "127.0.0.1:$HTTP_PORT"
max_connections = 60000
max_connections_per_ip = 60000
[media]
port_start = $MEDIA_PORT
workers = 1
dev_lan_candidate = false
[room]
default_mode = "mix"
[room.mix]
bitrate_bps = 32000
[broadcast]
public = true
page_ms = $((PAGE_US / 1000))
max_listeners = 60000
${WRITE_MS:+listener_write_ms = $WRITE_MS}
[log]
filter = "warn"
json = false
EOF
"$BIN_DIR/chorus" --config "$OUT/chorus.toml" > "$OUT/chorus.log" 2>&1 &
CHORUS_PID=$!; pids+=("$CHORUS_PID")
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
"$BIN_DIR/chorus-loadtest" run --url "ws://127.0.0.1:$HTTP_PORT/ws" --mode mix -n 1 --talkers 1 \
  --talk continuous --duration 3600 --join-timeout 100000 --no-floor > "$OUT/talker.log" 2>&1 &
pids+=("$!")
ROOM=""
for _ in $(seq 100); do
  ROOM=$(curl -fs "http://127.0.0.1:$HTTP_PORT/metrics" >/dev/null && \
    "$BIN_DIR/chorus" token create --admin --identity bench | \
    xargs -I{} curl -fs -H "Authorization: Bearer {}" "http://127.0.0.1:$HTTP_PORT/admin/v1/rooms" | \
    sed -n 's/.*"name":"\([^"]*\)".*/\1/p' | head -1)
  [ -n "$ROOM" ] && break; sleep 0.2
done
[ -n "$ROOM" ] || { echo "the talker did not join"; exit 1; }

mkdir -p "$OUT/icecast-log"; chown nobody:nogroup "$OUT/icecast-log" 2>/dev/null || true
cat > "$OUT/icecast.xml" <<EOF
<icecast>
  <location>bench</location><admin>bench@localhost</admin>
  <limits>
    <clients>60000</clients><sources>2</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>65535</burst-size>
  </limits>
  <authentication>
    <source-password>bench</source-password><relay-password>bench</relay-password>
    <admin-user>admin</admin-user><admin-password>bench</admin-password>
  </authentication>
  <hostname>localhost</hostname>
  <listen-socket><port>$ICE_PORT</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>1</fileserve>
  <paths>
    <basedir>/usr/share/icecast2</basedir><logdir>$OUT/icecast-log</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot><changeowner><user>nobody</user><group>nogroup</group></changeowner></security>
</icecast>
EOF
ulimit -n "$(ulimit -Hn)"
icecast2 -c "$OUT/icecast.xml" > "$OUT/icecast.out" 2>&1 &
ICECAST_PID=$!; pids+=("$ICECAST_PID")
sleep 1
ffmpeg -nostdin -loglevel error -re -f lavfi -i "sine=frequency=660:sample_rate=48000" -ac 1 \
  -c:a libopus -b:a 32k -frame_duration 20 -page_duration "$PAGE_US" -f ogg -content_type audio/ogg \
  "icecast://source:bench@127.0.0.1:$ICE_PORT/radio.opus" > "$OUT/ffmpeg.log" 2>&1 &
pids+=("$!")
sleep 3

# ONLY=chorus or ONLY=icecast listens to one of them (both servers still run).
CHORUS_TARGET=1; ICECAST_TARGET=1
[ "${ONLY:-}" = icecast ] && CHORUS_TARGET=""
[ "${ONLY:-}" = chorus ] && ICECAST_TARGET=""
echo "== $N listeners each: chorus /live/$ROOM.opus (pid $CHORUS_PID), icecast /radio.opus (pid $ICECAST_PID)"
"$BIN_DIR/chorus-loadtest" listen -n "$N" --duration "$DURATION" --json "$OUT/listen.json" \
  ${CHORUS_TARGET:+--target "chorus=127.0.0.1:$HTTP_PORT/live/$ROOM.opus@$CHORUS_PID"} \
  ${ICECAST_TARGET:+--target "icecast=127.0.0.1:$ICE_PORT/radio.opus@$ICECAST_PID"} | tee "$OUT/summary.txt"
