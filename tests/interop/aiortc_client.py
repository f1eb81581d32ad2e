"""A Chorus client we did not write: aiortc (PyPI), following docs/protocol.md and nothing else.

Joins a room through the signaling WebSocket (`join`, then an offer with one sendrecv microphone m-line
and `room.slots` recvonly slot m-lines, then the `answer`), sends a sine (or, with `--wav`, a WAV file once,
then silence) from an aiortc audio track, records what arrives on every slot for a while, and prints one
JSON object on stdout:

    {"connected": bool, "connection_state": str, "slots": int, "answer": str, "sent_frames": int,
     "tracks": [{"mid": str, "samples": int, "rms": float, "peak_hz": float}, ...], "recorded": str|null}

`peak_hz` is the strongest frequency of the second half of the track (the decoder's start-up skipped),
`rms` its level (full scale 1.0). With `--record-wav`, the loudest track is written there as it would
play: each decoded frame at its RTP time, silence where nothing came (a DTX pause, a lost packet), and
`recorded` names the mid. With `--no-audio-level` the offer sent to the server lists no `ssrc-audio-level`
extension, so aiortc sends its packets without RFC 6464 levels (as WHIP encoders such as OBS do). Run by
tests/tests/interop/mod.rs with the repository's .venv python:

    .venv/bin/python tests/interop/aiortc_client.py --ws ws://127.0.0.1:7880/ws --token T --room R \
        --freq 440 --seconds 4
"""

import argparse
import asyncio
import fractions
import json
import sys
import wave

import numpy as np
import websockets
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms


class ToneTrack(MediaStreamTrack):
    """A sine at `freq_hz`, 20 ms frames of 16-bit mono at 48 kHz, paced by the event loop's clock."""

    kind = "audio"

    def __init__(self, freq_hz: float, amplitude: float):
        super().__init__()
        self.freq_hz = freq_hz
        self.amplitude = amplitude
        self.sent = 0
        self.start = None

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        due = self.start + self.sent * FRAME_SAMPLES / SAMPLE_RATE
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        n = np.arange(self.sent * FRAME_SAMPLES, (self.sent + 1) * FRAME_SAMPLES)
        wave = self.amplitude * np.sin(2 * np.pi * self.freq_hz * n / SAMPLE_RATE)
        pcm = (wave * 32767).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.sent * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.sent += 1
        return frame


class WavTrack(ToneTrack):
    """A 48 kHz mono 16-bit WAV file, played once from the first frame on, then silence."""

    def __init__(self, path: str):
        super().__init__(0.0, 0.0)
        with wave.open(path, "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ValueError(f"{path}: not 48 kHz mono 16-bit")
            self.samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        n = self.sent - 1
        chunk = self.samples[n * FRAME_SAMPLES : (n + 1) * FRAME_SAMPLES]
        pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        pcm[: len(chunk)] = chunk
        out = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


async def record(track: MediaStreamTrack, into: list) -> None:
    """Append every received frame of `track` to `into` as (pts, mono float samples at 48 kHz)."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        pcm = frame.to_ndarray().astype(np.float32) / 32768.0
        channels = len(frame.layout.channels)
        # Packed s16: one row of interleaved samples; planar: one row per channel.
        if pcm.shape[0] == 1 and channels > 1:
            pcm = pcm.reshape(-1, channels).T
        into.append((frame.pts, pcm.mean(axis=0)))


def as_played(frames: list) -> np.ndarray:
    """The frames laid out at their RTP times (48 kHz, from the first one), silence in the gaps."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    first = frames[0][0]
    # RTP time wraps at 2^32; a frame's offset from the first is taken modulo that.
    offsets = [((pts - first) % (1 << 32), pcm) for pts, pcm in frames]
    end = max(o + len(pcm) for o, pcm in offsets)
    out = np.zeros(end, dtype=np.float32)
    for o, pcm in offsets:
        out[o : o + len(pcm)] = pcm
    return out


def write_wav(path: str, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def analyse(frames: list) -> dict:
    samples = np.concatenate([pcm for _, pcm in frames]) if frames else np.zeros(0, dtype=np.float32)
    tail = samples[len(samples) // 2 :]
    rms = float(np.sqrt(np.mean(tail**2))) if len(tail) else 0.0
    peak_hz = 0.0
    if len(tail) >= FRAME_SAMPLES:
        spectrum = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
        freqs = np.fft.rfftfreq(len(tail), 1.0 / SAMPLE_RATE)
        peak_hz = float(freqs[int(np.argmax(spectrum))])
    return {"samples": int(len(samples)), "rms": rms, "peak_hz": peak_hz}


def candidates_via(sdp: str, via: str) -> str:
    """`sdp` with every ICE candidate's address replaced by `via` (host:port): a proxy in between."""
    host, port = via.rsplit(":", 1)
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            fields = line.split(" ")
            fields[4], fields[5] = host, port
            line = " ".join(fields)
        lines.append(line)
    return "\r\n".join(lines)


async def expect(ws, kind: str, timeout: float) -> dict:
    """The next message of type `kind`, skipping room events; an `error` is fatal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - loop.time()))
        msg = json.loads(raw)
        if msg.get("type") == kind:
            return msg
        if msg.get("type") == "error":
            raise RuntimeError(f"server error while waiting for {kind}: {msg}")


async def run(args) -> dict:
    result = {"connected": False, "connection_state": "new", "slots": 0, "answer": "",
              "sent_frames": 0, "tracks": [], "recorded": None}
    async with websockets.connect(args.ws) as ws:
        await ws.send(json.dumps({"type": "join", "protocol": 1, "token": args.token,
                                  "room": args.room, "name": "aiortc"}))
        joined = await expect(ws, "joined", 10)
        slots = int(joined["room"]["slots"])
        result["slots"] = slots

        pc = RTCPeerConnection()
        tone = WavTrack(args.wav) if args.wav else ToneTrack(args.freq, args.amplitude)
        # The microphone: sendrecv (the server answers sendrecv and never sends on it), then the slots.
        pc.addTransceiver(tone, direction="sendrecv")
        for _ in range(slots):
            pc.addTransceiver("audio", direction="recvonly")
        received = {}
        tasks = []

        @pc.on("track")
        def on_track(track):
            transceiver = next((t for t in pc.getTransceivers() if t.receiver.track is track), None)
            mid = transceiver.mid if transceiver else str(len(received))
            received[mid] = []
            tasks.append(asyncio.ensure_future(record(track, received[mid])))

        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state():
            result["connection_state"] = pc.connectionState
            if pc.connectionState == "connected":
                connected.set()

        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        if args.no_audio_level:
            # The answer then lacks it too, and aiortc sends only the extensions both sides listed.
            offer = "".join(l for l in offer.splitlines(keepends=True) if "ssrc-audio-level" not in l)
        await ws.send(json.dumps({"type": "offer", "sdp": offer}))
        answer = await expect(ws, "answer", 10)
        result["answer"] = answer["sdp"]
        sdp = candidates_via(answer["sdp"], args.via) if args.via else answer["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        try:
            await asyncio.wait_for(connected.wait(), args.connect_timeout)
            result["connected"] = True
        except asyncio.TimeoutError:
            pass
        if result["connected"]:
            # Keep the signaling session alive while media flows (the server's idle timeout is 30 s).
            loop = asyncio.get_running_loop()
            end = loop.time() + args.seconds
            while loop.time() < end:
                await ws.send(json.dumps({"type": "ping", "id": 1}))
                await asyncio.sleep(min(1.0, max(0.0, end - loop.time())))
        result["sent_frames"] = tone.sent
        result["tracks"] = [dict(mid=mid, **analyse(list(frames))) for mid, frames in sorted(received.items())]
        if args.record_wav and result["tracks"]:
            loudest = max(result["tracks"], key=lambda t: t["rms"])["mid"]
            write_wav(args.record_wav, as_played(list(received[loudest])))
            result["recorded"] = loudest
        # Leave before closing the peer: once DTLS closes, the server may end the session first.
        try:
            await ws.send(json.dumps({"type": "leave"}))
        except websockets.ConnectionClosed:
            pass
        await pc.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ws", required=True, help="the signaling URL, ws://host:port/ws")
    parser.add_argument("--token", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--freq", type=float, default=440.0, help="the tone sent, Hz")
    parser.add_argument("--amplitude", type=float, default=0.3)
    parser.add_argument("--wav", help="send this 48 kHz mono 16-bit WAV once (then silence) instead of the tone")
    parser.add_argument("--record-wav", help="write the loudest received track here, as it would play")
    parser.add_argument("--via", help="send media to this host:port (a proxy) instead of the answer's candidates")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long to record once connected")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--no-audio-level", action="store_true",
                        help="offer no ssrc-audio-level extension: packets carry no RFC 6464 level")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
