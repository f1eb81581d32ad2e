#!/usr/bin/env bash
# Listener streams, Chorus and Icecast 2.4 side by side: the same kind of stream (32 kb/s Ogg/Opus in 100 ms
# pages) on both, N listeners on each at once (`chorus-loadtest listen`), each server's CPU and memory over
# the same window, then the ratio (docs/loadtest.md, "Listeners").
#
#   scripts/listen-vs-icecast.sh                     # N=1000, 20 s
#   N=5000 DURATION=30 PAGE_US=20000 scripts/listen-vs-icecast.sh
#   ONLY=chorus N=5000 scripts/listen-vs-icecast.sh   # one target (Icecast's slow rush delays the other's window)
#   WRITE_MS=100 ONLY=chorus scripts/listen-vs-icecast.sh  # Chorus writes every 100 ms page (its default: 400 ms)
#   REMOTE=1 ONLY=chorus N=5000 scripts/listen-vs-icecast.sh  # listeners behind a veth pair (below)
#
# REMOTE=1 (root): the listeners run in a network namespace of their own behind a veth pair whose two ends
# have GRO and threaded NAPI, and the servers listen on the veth address. On loopback the receiving side of
# every listener's TCP segment (IP and TCP input, waking the reader) runs inside the server's own `writev`
# and is charged to the server; a listener on another machine costs the server neither. With threaded NAPI
# the receive path runs in the kernel's `napi/<veth>` threads instead: `napi-listeners` is what the
# listeners' machines would spend, `napi-server` (the ACKs and requests arriving at the server) is the
# server machine's receive path; both are reported apart (`--also`) over the same windows. With both
# targets at once the threads serve both; use ONLY= for a per-target figure.
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
HOST=127.0.0.1
NS="chorus-lst"
IN_NS=()
ALSO=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${REMOTE:-}" ]; then ip netns del "$NS" 2>/dev/null || true; ip link del "chlst0" 2>/dev/null || true; fi
}
trap cleanup EXIT
if [ -n "${REMOTE:-}" ]; then
  command -v ethtool >/dev/null || { echo "REMOTE=1 needs ethtool (Debian ethtool)"; exit 1; }
  HOST=10.78.0.1
  ip netns del "$NS" 2>/dev/null || true; ip link del chlst0 2>/dev/null || true
  ip netns add "$NS"
  ip link add "chlst0" type veth peer name "chlst1"
  ip link set "chlst1" netns "$NS"
  ip addr add "$HOST/24" dev "chlst0"; ip link set "chlst0" up
  ip -n "$NS" addr add 10.78.0.2/24 dev "chlst1"; ip -n "$NS" link set "chlst1" up; ip -n "$NS" link set lo up
  # veth takes its NAPI path only for a packet it may aggregate: GRO on the receiving end, TSO off on the
  # sending one (segments here are below the MSS: TSO changes nothing else).
  ethtool -K "chlst0" gro on tso off >/dev/null; ip netns exec "$NS" ethtool -K "chlst1" gro on tso off >/dev/null
  echo 1 > "/sys/class/net/chlst0/threaded"; ip netns exec "$NS" sh -c "echo 1 > /sys/class/net/chlst1/threaded"
  # A queue on each end, as a NIC has: veth has none by default, and a burst of writes larger than its
  # ring (a pass writes a third of the listeners at once) was dropped, not queued — 30 % of the server's
  # segments in a run of 5,000, each one a retransmission and a listener's gap. With a qdisc, a full ring
  # stops the queue instead (backpressure), as a NIC's driver does.
  tc qdisc replace dev chlst0 root pfifo limit 20000
  ip netns exec "$NS" tc qdisc replace dev chlst1 root pfifo limit 20000
  sleep 0.2
  napi_of() { pgrep -x "napi/$1-.*" | head -1; }
  SERVER_NAPI=$(napi_of "chlst0"); LISTENER_NAPI=$(napi_of "chlst1")
  [ -n "$SERVER_NAPI" ] && [ -n "$LISTENER_NAPI" ] || { echo "no NAPI thread for the veth pair"; exit 1; }
  IN_NS=(ip netns exec "$NS")
  ALSO=(--also "napi-server=$SERVER_NAPI" --also "napi-listeners=$LISTENER_NAPI")
fi

cat > "$OUT/chorus.toml" <<EOF
[http]
listen = "$HOST:$HTTP_PORT"
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
# REMOTE=1: the listener is on the veth address of a namespace only this script reaches.
"$BIN_DIR/chorus" --config "$OUT/chorus.toml" ${REMOTE:+--unsafe-dev-mode-on-network} > "$OUT/chorus.log" 2>&1 &
CHORUS_PID=$!; pids+=("$CHORUS_PID")
for _ in $(seq 100); do curl -fs "http://$HOST:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
"$BIN_DIR/chorus-loadtest" run --url "ws://$HOST:$HTTP_PORT/ws" --mode mix -n 1 --talkers 1 \
  --talk continuous --duration 3600 --join-timeout 100000 --no-floor > "$OUT/talker.log" 2>&1 &
pids+=("$!")
ROOM=""
for _ in $(seq 100); do
  ROOM=$(curl -fs "http://$HOST:$HTTP_PORT/metrics" >/dev/null && \
    "$BIN_DIR/chorus" token create --admin --identity bench | \
    xargs -I{} curl -fs -H "Authorization: Bearer {}" "http://$HOST:$HTTP_PORT/admin/v1/rooms" | \
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
  <listen-socket><port>$ICE_PORT</port><bind-address>$HOST</bind-address></listen-socket>
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
  "icecast://source:bench@$HOST:$ICE_PORT/radio.opus" > "$OUT/ffmpeg.log" 2>&1 &
pids+=("$!")
sleep 3

# ONLY=chorus or ONLY=icecast listens to one of them (both servers still run).
CHORUS_TARGET=1; ICECAST_TARGET=1
[ "${ONLY:-}" = icecast ] && CHORUS_TARGET=""
[ "${ONLY:-}" = chorus ] && ICECAST_TARGET=""
echo "== $N listeners each: chorus /live/$ROOM.opus (pid $CHORUS_PID), icecast /radio.opus (pid $ICECAST_PID)"
"${IN_NS[@]}" "$BIN_DIR/chorus-loadtest" listen -n "$N" --duration "$DURATION" --json "$OUT/listen.json" \
  ${CHORUS_TARGET:+--target "chorus=$HOST:$HTTP_PORT/live/$ROOM.opus@$CHORUS_PID"} \
  ${ICECAST_TARGET:+--target "icecast=$HOST:$ICE_PORT/radio.opus@$ICECAST_PID"} "${ALSO[@]}" | tee "$OUT/summary.txt"
if [ -n "${REMOTE:-}" ]; then
  # Segments the veth pair dropped (a full ring): each one is a retransmission and a listener's gap.
  echo "veth drops: server side tx $(cat /sys/class/net/chlst0/statistics/tx_dropped)," \
    "listener side tx $(ip netns exec "$NS" cat /sys/class/net/chlst1/statistics/tx_dropped)" | tee -a "$OUT/summary.txt"
fi
