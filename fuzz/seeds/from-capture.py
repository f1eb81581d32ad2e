#!/usr/bin/env python3
"""Extract fuzz seeds from a loopback capture of a Chromium test and from real speech (see from-capture.sh).

    from-capture.py PCAPNG ARGS_FILE SPEECH_RAW SEEDS_DIR

ARGS_FILE holds the chorus command line(s) of the run (their --http-listen and --media-port-start pick the
server's traffic out of the capture). SPEECH_RAW is 48 kHz mono s16le speech, encoded here with libopus as a
browser does. Inputs of the targets that take `arbitrary` structures are laid out by hand in arbitrary 1.x's
format (integers little-endian, a bool is a byte's low bit, an enum variant a u32 scaled to the variant
count, a Vec a "continue" byte before each element); `cargo fuzz fmt TARGET FILE` shows how one decodes.
"""

import ctypes
import hashlib
import json
import os
import re
import subprocess
import sys

# Keep the committed seeds small.
MAX_DATAGRAMS_PER_KIND = 6
MAX_SPEECH_FRAMES = 60


# --- arbitrary 1.x layout ---------------------------------------------------------------------------
def u8(v):
    return bytes([v & 0xFF])


def u16(v):
    return (v & 0xFFFF).to_bytes(2, "little")


def u32(v):
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def i16(v):
    return u16(v & 0xFFFF)


def i32(v):
    return u32(v & 0xFFFFFFFF)


def boolean(b):
    return b"\x01" if b else b"\x00"


def variant(index, count):
    """The u32 a derived enum reads to pick variant `index` of `count`: (x * count) >> 32 == index."""
    return u32(-(-(index << 32) // count))


def vec(items):
    return b"".join(b"\x01" + item for item in items) + b"\x00"


def vec_u8(data):
    return vec([bytes([b]) for b in data])


def option(item):
    return b"\x00" if item is None else b"\x01" + item


def write(seeds, target, name, data):
    d = os.path.join(seeds, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- the capture ------------------------------------------------------------------------------------
def servers(args_file):
    """(http port, first media port, workers) of every server started in the run."""
    out = []
    for line in open(args_file):
        http = re.search(r"--http-listen \S+:(\d+)", line)
        media = re.search(r"--media-port-start (\d+)", line)
        workers = re.search(r"--workers (\d+)", line)
        if http and media:
            out.append((int(http.group(1)), int(media.group(1)), int(workers.group(1)) if workers else 1))
    return out


def tshark(pcap, display_filter, fields):
    cmd = ["tshark", "-r", pcap, "-Y", display_filter, "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [line.split("\t") for line in res.stdout.splitlines() if line]


def websocket_texts(pcap, http_port):
    """Every WebSocket text message on the server's HTTP port, in capture order (tshark unmasks them)."""
    rows = tshark(pcap, f"tcp.port == {http_port} && websocket.opcode == 1", ["websocket.payload.text"])
    return [row[0] for row in rows]


def udp_to_server(pcap, media_port, workers):
    ports = " || ".join(f"udp.dstport == {media_port + w}" for w in range(workers))
    rows = tshark(pcap, f"({ports})", ["udp.srcport", "udp.payload"])
    return [(int(src), bytes.fromhex(payload.replace(":", ""))) for src, payload in rows if payload]


def kind(datagram):
    """RFC 7983 demultiplexing."""
    b = datagram[0]
    if b < 4:
        return "stun"
    if 20 <= b <= 63:
        return "dtls"
    if 128 <= b <= 191:
        return "rtcp" if 192 <= datagram[1] <= 223 else "srtp"
    return "other"


# --- speech -----------------------------------------------------------------------------------------
def opus_encode_speech(raw_path):
    """20 ms Opus packets of the passage's spoken part: 32 kb/s, in-band FEC, DTX, as Chromium encodes."""
    lib = ctypes.CDLL("libopus.so.0")
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_encode.restype = ctypes.c_int
    lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_int,
                                ctypes.c_char_p, ctypes.c_int]
    lib.opus_encoder_ctl.restype = ctypes.c_int
    err = ctypes.c_int(0)
    enc = lib.opus_encoder_create(48000, 1, 2048, ctypes.byref(err))  # OPUS_APPLICATION_VOIP
    assert err.value == 0 and enc, "opus_encoder_create"
    for ctl, value in ((4002, 32000), (4012, 1), (4014, 10), (4016, 1)):  # bitrate, FEC, loss %, DTX
        assert lib.opus_encoder_ctl(ctypes.c_void_p(enc), ctypes.c_int(ctl), ctypes.c_int(value)) == 0
    pcm = open(raw_path, "rb").read()
    frame = 960
    packets = []
    buf = ctypes.create_string_buffer(1500)
    for at in range(0, len(pcm) // 2 - frame, frame):
        chunk = (ctypes.c_int16 * frame).from_buffer_copy(pcm[at * 2:(at + frame) * 2])
        n = lib.opus_encode(ctypes.c_void_p(enc), chunk, frame, buf, 1500)
        assert n > 0, "opus_encode"
        packets.append(buf.raw[:n])
    return packets


def level(packet):
    """A rough RFC 6464 level for a packet: DTX packets (1-2 bytes) are silence."""
    return 127 if len(packet) <= 2 else 30


def mixer_seed(packets, red):
    """mixer_input: member 0 talks the packets (DTX gaps skipped in time and timestamp), member 1 listens."""
    out = boolean(True) + boolean(True) + u8(40) + u16(160)  # dtx, fec, jitter_min_ms, jitter_max_ms
    ops = [
        variant(0, 9) + u8(0) + boolean(True) + boolean(True) + u16(100) + u32(5000),  # Add
        variant(0, 9) + u8(1) + boolean(False) + boolean(True) + u16(200) + u32(9000),
    ]
    gap = 0
    previous = None
    for p in packets:
        if len(p) <= 2:
            gap += 960
            continue
        redundant = []
        if red and previous is not None and gap == 0:
            redundant = [u16(960) + variant(2, 3) + vec_u8(previous)]
        ops.append(
            variant(3, 9)  # Push
            + u32(20000 + gap * 1000 // 48)  # after_us
            + u8(0)  # id
            + boolean(False)  # new_ssrc
            + i16(0)  # seq_delta
            + i32(gap)  # ts_delta
            + option(u8(level(p)))
            + variant(2, 3) + vec_u8(p)  # Payload::Raw
            + vec(redundant)
        )
        previous = p
        gap = 0
    return out + vec(ops)


def core_rtp_seed(packets, red):
    """core_rtp: clients 0 (forward room) and 2 (mixed room) send the packets, 20 ms apart; DTX gaps skip
    timestamp and time as a browser's sender does."""
    ops = []
    gap = 0
    previous = None
    for p in packets:
        if len(p) <= 2:
            gap += 960
            ops.append(variant(2, 6) + u16(20))  # Step 20 ms
            continue
        for client in (0, 2):
            if red and previous is not None:
                # Payload::Red { blocks: [(960, previous)], primary }
                payload = variant(2, 3) + vec([u16(960) + vec_u8(previous)]) + vec_u8(p)
                pt = variant(1, 3)
            else:
                payload = variant(1, 3) + vec_u8(p)  # Payload::Raw
                pt = variant(0, 3)
            ops.append(
                variant(0, 6)  # Rtp
                + u8(client)
                + pt
                + i16(0)  # seq_delta
                + u32(gap)  # ts_delta
                + boolean(False)  # marker
                + option(u8((-level(p)) & 0xFF))  # audio_level (i8, 0 loud .. -127 silent)
                + option(boolean(level(p) < 127))  # voice_activity
                + payload
            )
        ops.append(variant(2, 6) + u16(20))
        previous = p
        gap = 0
    return vec(ops)


def main():
    pcap, args_file, speech_raw, seeds = sys.argv[1:5]
    srv = servers(args_file)
    if not srv:
        sys.exit(f"no chorus command line in {args_file}")
    messages, offers, datagrams = [], [], {}
    for http_port, media_port, workers in srv:
        for text in websocket_texts(pcap, http_port):
            messages.append(text)
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("type") == "offer" and isinstance(msg.get("sdp"), str):
                offers.append(msg["sdp"])
        for src, d in udp_to_server(pcap, media_port, workers):
            datagrams.setdefault(kind(d), []).append(d)
    print(f"{len(srv)} servers: {len(messages)} WebSocket messages, {len(offers)} offers, "
          + ", ".join(f"{len(v)} {k}" for k, v in sorted(datagrams.items())))

    # signaling_message: each distinct message shape once (numbers and ids vary).
    seen = set()
    for text in messages:
        shape = re.sub(r'"[^"]*"', '""', re.sub(r"[0-9]+", "0", text))[:200]
        if shape in seen:
            continue
        seen.add(shape)
        h = hashlib.sha1(text.encode()).hexdigest()[:10]
        write(seeds, "signaling_message", f"capture-{h}", text.encode())
    # offer_check: (slots, sdp); Chromium's offers have 1 + 3 m-lines.
    for sdp in offers[:4]:
        h = hashlib.sha1(sdp.encode()).hexdigest()[:10]
        write(seeds, "offer_check", f"chromium-{h}", u8(3) + sdp.encode())
    # core_datagram and router_demux: a few datagrams of each kind, in order, from the first client.
    picked = []
    for k in ("stun", "dtls", "srtp", "rtcp"):
        picked += [(k, d) for d in datagrams.get(k, [])[:MAX_DATAGRAMS_PER_KIND]]
    core_ops, router_ops = [], [
        variant(0, 5) + u8(0) + u8(1),  # Add { ufrag srv0, id 1 }
        variant(4, 5) + u16(1) + variant(0, 2) + u8(1) + u8(1),  # Learn { 10.0.0.1 for id 1 }
    ]
    for k, d in picked:
        # Op::Datagram { after_us 20 ms, source Client(false), data }
        core_ops.append(variant(0, 5) + u32(20000) + variant(0, 2) + boolean(False) + vec_u8(d))
        # Op::Datagram { after_ms 20, from Pool(1), stun: false, data }
        router_ops.append(variant(3, 5) + u16(20) + variant(0, 2) + u8(1) + boolean(False) + vec_u8(d))
    for mixed in (False, True):
        # Input { mixed, slots 3, two, ops }
        seed = boolean(mixed) + u8(2) + boolean(True) + vec(core_ops)
        write(seeds, "core_datagram", f"chromium-{'mix' if mixed else 'forward'}", seed)
    write(seeds, "router_demux", "chromium", vec(router_ops))

    packets = opus_encode_speech(speech_raw)
    # The first spoken part: skip the leading silence (DTX) and keep a talk spurt with its end.
    start = next(i for i, p in enumerate(packets) if len(p) > 2)
    speech = packets[start:start + MAX_SPEECH_FRAMES]
    write(seeds, "mixer_input", "speech-opus", mixer_seed(speech, red=False))
    write(seeds, "mixer_input", "speech-red", mixer_seed(speech, red=True))
    write(seeds, "core_rtp", "speech-opus", core_rtp_seed(speech, red=False))
    write(seeds, "core_rtp", "speech-red", core_rtp_seed(speech, red=True))
    # rtp_ext_levels: levels as the mixer writes them (15 talkers), and one talker.
    write(seeds, "rtp_ext_levels", "fifteen",
          vec_u8(bytes(range(10, 25))) + u8(15) + vec(u32(1000 + i) + u8(20 + i) for i in range(15)) + u32(1003))
    write(seeds, "rtp_ext_levels", "one", vec_u8(b"\x1e") + u8(4) + vec([u32(7) + u8(30)]) + u32(7))


if __name__ == "__main__":
    main()
