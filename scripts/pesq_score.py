#!/usr/bin/env python3
"""Score a degraded speech WAV against its reference with PESQ wide-band (ITU-T P.862.2).

    .venv/bin/python scripts/pesq_score.py REFERENCE.wav DEGRADED.wav [--json] [--max-delay-s S]
        [--contained | --loops]

Both files are mono (or the first channel is used) PCM or float WAV at any rate. They are resampled to 16 kHz
with a polyphase anti-aliasing filter, the degraded signal is aligned to the reference by cross-correlation
(its global delay, e.g. codec + network + jitter-buffer delay, is removed; PESQ itself then aligns each
utterance), cut or zero-padded to the reference's length, and scored. The delay is searched up to 2 s
(--max-delay-s; with --contained only where the whole reference lies inside the recording: e.g. a recording
of a looping fake microphone that holds one whole passage somewhere). Prints the MOS-LQO, or with --json one
JSON object: {"mos_lqo", "delay_ms", "correlation", "reference_s", "degraded_s"}.

With --loops the recording is of a source that loops the reference back to back (a fake microphone playing
the file over and over): every whole loop in it is found and scored on its own, and the MOS-LQO is the
median over the loops (the JSON adds "loops": one {"mos_lqo", "delay_ms", "correlation", "playout_ms",
"first_ms"} per loop). A listener's own playout glitch (a jitter buffer's time compression in one spurt)
then moves the figure only if it recurs, as a server's fault that damages the stream does. "playout_ms" is
the range of where the loop's voiced 0.4-s windows lie against its alignment, "first_ms" the first of them:
a steady playout holds [0, 0]; a jitter buffer that stretches and compresses time widens the range, and a
first spurt played late shows as a large "first_ms".

Exit status: 0 scored, 2 bad input (missing/unreadable file, silence, no correlation), 3 PESQ refused the
signals (e.g. no utterances found). The venv is made by scripts/test.sh (PyPI pesq, numpy, scipy).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

try:
    import numpy as np
    from pesq import PesqError, pesq
    from scipy.io import wavfile
    from scipy.signal import correlate, resample_poly
except ImportError as e:  # pragma: no cover - depends on the environment
    print(
        f"pesq_score: missing Python package ({e}); run scripts/test.sh, which creates .venv "
        "with pesq, numpy and scipy, and run this script with .venv/bin/python",
        file=sys.stderr,
    )
    sys.exit(2)

PESQ_RATE = 16_000
# The longest delay searched for between reference and degraded signal, by default.
MAX_DELAY_S = 2.0


class InputError(Exception):
    """A file is missing, unreadable, empty, silent, or cannot be aligned with the reference."""


class ScoringError(Exception):
    """PESQ refused the aligned signals."""


@dataclass
class Score:
    mos_lqo: float
    delay_ms: float
    correlation: float
    reference_s: float
    degraded_s: float
    loops: list[dict[str, float]] | None = None


def read_mono_16k(path: Path) -> np.ndarray:
    """The file's first channel as float64 in -1..1, resampled to 16 kHz."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        rate, data = wavfile.read(path)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable WAV file ({e})") from e
    if data.ndim == 2:
        data = data[:, 0]
    if data.size == 0:
        raise InputError(f"{path}: no samples")
    if data.dtype == np.int16:
        x = data.astype(np.float64) / 32768.0
    elif data.dtype == np.int32:
        x = data.astype(np.float64) / 2147483648.0
    elif data.dtype == np.uint8:
        x = (data.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.floating):
        x = data.astype(np.float64)
    else:
        raise InputError(f"{path}: unsupported sample type {data.dtype}")
    if rate != PESQ_RATE:
        ratio = Fraction(PESQ_RATE, int(rate))
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    return x


def align(
    reference: np.ndarray,
    degraded: np.ndarray,
    max_delay_s: float = MAX_DELAY_S,
    contained: bool = False,
) -> tuple[np.ndarray, int, float]:
    """The degraded signal shifted by its delay against the reference (found by FFT cross-correlation), cut
    or zero-padded to the reference's length; the delay in samples; the normalised correlation at it."""
    ref_energy = float(np.sqrt(np.sum(reference**2)))
    deg_energy = float(np.sqrt(np.sum(degraded**2)))
    if ref_energy == 0.0:
        raise InputError("the reference is silent")
    if deg_energy == 0.0:
        raise InputError("the degraded signal is silent")
    xc = correlate(degraded, reference, mode="full", method="fft")
    lags = np.arange(-len(reference) + 1, len(degraded))
    max_lag = int(max_delay_s * PESQ_RATE)
    window = (lags >= -max_lag) & (lags <= max_lag)
    if contained:
        # The whole reference lies inside the degraded recording (e.g. one loop of a looping source).
        window &= (lags >= 0) & (lags <= len(degraded) - len(reference))
        if not window.any():
            raise InputError("the degraded recording is shorter than the reference")
    # The largest positive peak: nothing in a call inverts the polarity, and a strong negative lobe of the
    # cross-correlation (speech is nearly periodic) is never the alignment.
    best = int(np.argmax(xc[window]))
    lag = int(lags[window][best])
    correlation = float(xc[window][best]) / (ref_energy * deg_energy)
    if correlation < 0.1:
        raise InputError(
            f"the degraded signal does not resemble the reference (best correlation {correlation:.3f})"
        )
    if lag >= 0:
        shifted = degraded[lag:]
    else:
        shifted = np.concatenate([np.zeros(-lag), degraded])
    out = np.zeros(len(reference))
    n = min(len(reference), len(shifted))
    out[:n] = shifted[:n]
    return out, lag, correlation


def score(
    reference_path: Path,
    degraded_path: Path,
    max_delay_s: float = MAX_DELAY_S,
    contained: bool = False,
) -> Score:
    reference = read_mono_16k(reference_path)
    degraded = read_mono_16k(degraded_path)
    aligned, lag, correlation = align(reference, degraded, max_delay_s, contained)
    try:
        mos = float(pesq(PESQ_RATE, reference, aligned, "wb"))
    except PesqError as e:
        raise ScoringError(f"PESQ refused the signals: {type(e).__name__}: {e}") from e
    return Score(
        mos_lqo=mos,
        delay_ms=1000.0 * lag / PESQ_RATE,
        correlation=correlation,
        reference_s=len(reference) / PESQ_RATE,
        degraded_s=len(degraded) / PESQ_RATE,
    )


# Where a listener's playout moved within a loop: the reference in windows of this length (voiced ones, at
# least a third of the reference's RMS) is found in the recording within this far of the loop's alignment.
PLAYOUT_WINDOW_S = 0.4
PLAYOUT_SEARCH_S = 0.15


def playout_lags(reference: np.ndarray, degraded: np.ndarray, start: int) -> list[float]:
    """For each voiced window of the reference, how much later (ms) than the loop's alignment `start` the
    recording holds it, where the match is clear (normalised correlation at least 0.5). A steady playout
    gives zeros; a jitter buffer that stretches or compresses time moves them (in steps of 10 ms for
    libwebrtc's), and a late first spurt shows as a large first value that falls back."""
    win = int(PLAYOUT_WINDOW_S * PESQ_RATE)
    search = int(PLAYOUT_SEARCH_S * PESQ_RATE)
    floor = float(np.sqrt(np.mean(reference**2))) / 3.0
    lags = []
    for s in range(0, len(reference) - win + 1, win):
        r = reference[s : s + win]
        r_norm = float(np.sqrt(np.sum(r**2)))
        if r_norm / np.sqrt(win) < floor:
            continue
        lo, hi = start + s - search, start + s + win + search
        if lo < 0 or hi > len(degraded):
            continue
        d = degraded[lo:hi]
        xc = correlate(d, r, mode="valid", method="fft")
        energy = np.sqrt(np.maximum(np.convolve(d**2, np.ones(win), mode="valid"), 1e-12))
        c = xc / (r_norm * energy)
        k = int(np.argmax(c))
        if c[k] >= 0.5:
            lags.append(1000.0 * (k - search) / PESQ_RATE)
    return lags


# How far a loop may start from where the previous loop's start and the reference's length put it (the
# sender's and the listener's clocks drift, a jitter buffer adapts), in seconds.
LOOP_SLACK_S = 0.25


def score_loops(reference_path: Path, degraded_path: Path) -> Score:
    """Every whole loop of the reference in the recording scored alone; the median MOS-LQO."""
    reference = read_mono_16k(reference_path)
    degraded = read_mono_16k(degraded_path)
    n = len(reference)
    if len(degraded) < n:
        raise InputError("the degraded recording is shorter than the reference")
    ref_energy = float(np.sqrt(np.sum(reference**2)))
    if ref_energy == 0.0:
        raise InputError("the reference is silent")
    # xc[lag] for lag = 0 ..= len(degraded) - n: the reference against the recording from `lag` on
    xc = correlate(degraded, reference, mode="valid", method="fft")
    first = int(np.argmax(xc))
    slack = int(LOOP_SLACK_S * PESQ_RATE)
    starts = [first]
    for direction in (-1, 1):
        lag = first
        while True:
            guess = lag + direction * n
            if guess < 0 or guess > len(xc) - 1:
                break  # that loop is not whole in the recording
            lo, hi = max(0, guess - slack), min(len(xc) - 1, guess + slack)
            lag = lo + int(np.argmax(xc[lo : hi + 1]))
            starts.append(lag)
    loops = []
    for lag in sorted(starts):
        segment = degraded[lag : lag + n]
        energy = float(np.sqrt(np.sum(segment**2)))
        correlation = float(xc[lag]) / (ref_energy * energy) if energy > 0.0 else 0.0
        if correlation < 0.1:
            raise InputError(
                f"the loop at {lag / PESQ_RATE:.2f} s does not resemble the reference "
                f"(correlation {correlation:.3f})"
            )
        try:
            mos = float(pesq(PESQ_RATE, reference, segment, "wb"))
        except PesqError as e:
            raise ScoringError(f"PESQ refused the loop at {lag / PESQ_RATE:.2f} s: {type(e).__name__}: {e}") from e
        lags = playout_lags(reference, degraded, lag)
        loops.append(
            {
                "mos_lqo": mos,
                "delay_ms": 1000.0 * lag / PESQ_RATE,
                "correlation": correlation,
                # where the listener's playout was, against the loop's alignment, over the loop (ms)
                "playout_ms": [round(min(lags), 1), round(max(lags), 1)] if lags else None,
                "first_ms": round(lags[0], 1) if lags else None,
            }
        )
    best = max(loops, key=lambda x: x["correlation"])
    return Score(
        mos_lqo=float(np.median([x["mos_lqo"] for x in loops])),
        delay_ms=best["delay_ms"],
        correlation=best["correlation"],
        reference_s=n / PESQ_RATE,
        degraded_s=len(degraded) / PESQ_RATE,
        loops=loops,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="the clean speech that was sent")
    parser.add_argument("degraded", type=Path, help="what the listener played")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--max-delay-s", type=float, default=MAX_DELAY_S, help="longest delay searched (seconds)"
    )
    parser.add_argument(
        "--contained",
        action="store_true",
        help="the whole reference lies inside the degraded recording (a looping source recorded long enough)",
    )
    parser.add_argument(
        "--loops",
        action="store_true",
        help="the recording holds the reference looped back to back: score every whole loop, print the median",
    )
    args = parser.parse_args()
    try:
        if args.loops:
            s = score_loops(args.reference, args.degraded)
        else:
            s = score(args.reference, args.degraded, args.max_delay_s, args.contained)
    except InputError as e:
        print(f"pesq_score: {e}", file=sys.stderr)
        return 2
    except ScoringError as e:
        print(f"pesq_score: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps({k: v for k, v in s.__dict__.items() if v is not None}))
    else:
        print(
            f"PESQ-WB MOS-LQO {s.mos_lqo:.3f} (degraded delayed {s.delay_ms:.1f} ms, "
            f"correlation {s.correlation:.3f})"
        )
        for loop in s.loops or []:
            print(
                f"  loop at {loop['delay_ms'] / 1000:.2f} s: MOS-LQO {loop['mos_lqo']:.3f} "
                f"(correlation {loop['correlation']:.3f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
