#!/usr/bin/env bash
# Re-make the seeds that come from real traffic (fuzz/README.md):
#   1. run the Chromium RED test (tests/browser/red.test.js: a forward and a mixed room, two Chromium pages
#      each, RED offered and sent) against target/debug/chorus while tshark captures loopback;
#   2. fuzz/seeds/from-capture.py extracts, for that server's ports only, the WebSocket JSON messages both
#      ways (signaling_message), Chromium's SDP offers (offer_check) and the datagrams Chromium sent to the
#      media port — STUN, DTLS, SRTP, SRTCP (core_datagram, router_demux) — and encodes the espeak-ng
#      passage (scripts/speech-passage.sh) with libopus as a browser does (20 ms, 32 kb/s, in-band FEC, DTX)
#      into mixer_input and core_rtp inputs.
# Needs root (tshark on lo), tshark, chromium, node, espeak-ng, sox and libopus.so.0.
#   fuzz/seeds/from-capture.sh [PCAPNG]     (with a PCAPNG and its .args file: extract only)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
    pcap=$1
    args=$1.args
else
    pcap=${PCAP_OUT:-/tmp/fuzz-capture.pcapng}
    args=$pcap.args
    cargo build -q -p chorus-server --bin chorus
    # A wrapper that records the server's command line: its HTTP and media ports select the traffic.
    : >"$args"
    cat >"$work/chorus" <<WRAP
#!/bin/sh
echo "\$@" >>"$args"
exec "$root/target/debug/chorus" "\$@"
WRAP
    chmod +x "$work/chorus"
    tshark -i lo -f 'tcp or udp' -w "$pcap" -q >/dev/null 2>&1 &
    tshark_pid=$!
    sleep 2
    cd tests/browser
    [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error
    CHORUS_BIN="$work/chorus" node --test red.test.js || echo "from-capture: the browser test failed; extracting what was captured" >&2
    cd "$root"
    sleep 1
    kill "$tshark_pid"
    wait "$tshark_pid" || true
fi
scripts/speech-passage.sh "$work/speech.raw"
python3 fuzz/seeds/from-capture.py "$pcap" "$args" "$work/speech.raw" fuzz/seeds
