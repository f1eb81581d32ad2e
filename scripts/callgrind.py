#!/usr/bin/env python3
"""Instructions per forwarded packet and per mixed participant-tick, counted by valgrind's callgrind.

Instruction counts do not depend on the machine's noise (other processes, frequency scaling), so they
show a change in per-packet cost that wall-clock benchmarks on a shared machine cannot. Each case runs
one row of a media-core benchmark (`CHORUS_BENCH_ONLY`) twice, for S and 2·S seconds of virtual call time,
and divides the difference in instructions spent inside the media core (inclusive cost of its entry
points, so set-up and the simulated clients are excluded) by the difference in work done:

    forward  Ir in MediaCore::handle_datagram_via + handle_timeout, per forwarded RTP packet (the -red cases:
             every client offers RED and the talkers send Chrome's one frame back, CHORUS_BENCH_RED=1)
    mixer    Ir in the benchmark's mixer loop (Mixer::push and Mixer::tick; the 2·S − S difference leaves out
             its set-up), per participant per 20 ms tick
    mixcore  Ir in the whole core of a mixed room (SRTP to every listener), per participant per tick

Usage: scripts/callgrind.py [--seconds S] [--complexity N] [CASE ...]   (cases: see CASES; default all)
--complexity sets every mix encode's libopus complexity, personal and shared (CHORUS_BENCH_COMPLEXITY;
default MixSettings': 5 personal, 8 shared), --shared-complexity then the shared mix's (CHORUS_BENCH_SHARED_COMPLEXITY).
Not a test and not run in CI: it takes a few minutes under valgrind.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (bench, CHORUS_BENCH_ONLY prefix, participants, entry-point patterns, unit[, extra environment])
CASES = {
    "forward-50x3": ("forward", "50,3", 53, ["MediaCore>::handle_datagram_via", "MediaCore>::handle_timeout"], "forwarded packet"),
    "forward-200x3": ("forward", "200,3", 203, ["MediaCore>::handle_datagram_via", "MediaCore>::handle_timeout"], "forwarded packet"),
    "forward-50x3-red": ("forward", "50,3", 53, ["MediaCore>::handle_datagram_via", "MediaCore>::handle_timeout"], "forwarded packet", {"CHORUS_BENCH_RED": "1"}),
    "forward-200x3-red": ("forward", "200,3", 203, ["MediaCore>::handle_datagram_via", "MediaCore>::handle_timeout"], "forwarded packet", {"CHORUS_BENCH_RED": "1"}),
    "mixer-1000x3": ("mix", "mixer,1000,3", 1003, ["mix::mixer_only"], "participant-tick"),
    "mixer-100x15": ("mix", "mixer,100,15", 115, ["mix::mixer_only"], "participant-tick"),
    "mixcore-200x3": ("mix", "core,200,3", 203, ["MediaCore>::handle_datagram_via", "MediaCore>::handle_timeout"], "participant-tick"),
}


def bench_executables():
    out = subprocess.run(
        ["cargo", "bench", "-p", "media-core", "--bench", "forward", "--bench", "mix", "--no-run",
         "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    exes = {}
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            exes[msg["target"]["name"]] = msg["executable"]
    return exes


def inclusive(callgrind_out, patterns):
    """Sum of the inclusive instruction counts of the functions matching `patterns` (outermost entries)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", callgrind_out],
                          check=True, capture_output=True, text=True).stdout
    total = 0
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+[^:\s]+:(.*?)\s+\[", line)
        if m and any(p in m.group(2) for p in patterns):
            total += int(m.group(1).replace(",", ""))
    return total


def run(exe, only, patterns, tmp, complexity, shared_complexity, extra_env):
    out = os.path.join(tmp, "cg.out")
    env = {**os.environ, **extra_env, "CHORUS_BENCH_ONLY": only}
    if complexity is not None:
        env["CHORUS_BENCH_COMPLEXITY"] = str(complexity)
    if shared_complexity is not None:
        env["CHORUS_BENCH_SHARED_COMPLEXITY"] = str(shared_complexity)
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", exe],
        env=env, check=True, capture_output=True, text=True)
    rows = [l.split() for l in proc.stdout.splitlines() if l.strip() and l.split()[0].isdigit()]
    return inclusive(out, patterns), rows[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--complexity", type=int, choices=range(11), default=None)
    parser.add_argument("--shared-complexity", type=int, choices=range(11), default=None)
    parser.add_argument("cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    exes = bench_executables()
    s1, s2 = args.seconds, 2 * args.seconds
    print(f"{'case':<16} {'Ir/unit':>12}  unit   (difference of {s2} s and {s1} s runs, inside the media core)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            bench, prefix, participants, patterns, unit, *extra = CASES[name]
            extra_env = extra[0] if extra else {}
            ir1, row1 = run(exes[bench], f"{prefix},{s1}", patterns, tmp, args.complexity, args.shared_complexity, extra_env)
            ir2, row2 = run(exes[bench], f"{prefix},{s2}", patterns, tmp, args.complexity, args.shared_complexity, extra_env)
            if bench == "forward":
                work = int(row2[3]) - int(row1[3])  # the "forwarded" column
            else:
                work = (s2 - s1) * 50 * participants  # 50 ticks per second
            print(f"{name:<16} {(ir2 - ir1) / max(work, 1):>12,.0f}  per {unit}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
