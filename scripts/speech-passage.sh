#!/usr/bin/env bash
# The speech every speech-quality test sends: an English passage spoken by espeak-ng, with pauses between the
# sentences long enough for a sender's DTX to stop sending (libopus keeps ~200 ms of hangover), normalised to
# -3 dBFS peak, resampled to 48 kHz mono 16-bit, with 0.5 s of silence before and after (plus TAIL_S more).
#   scripts/speech-passage.sh OUT.wav|OUT.raw [TAIL_S]
# Used by media-core/tests/support/speech.rs (Rust tests, benches) and tests/browser (Chromium's fake mic).
set -euo pipefail
out=${1:?usage: speech-passage.sh OUT.wav|OUT.raw [TAIL_S]}
tail_s=${2:-0}
ssml='<speak>The north wind and the sun were disputing which was the stronger. <break time="700ms"/> A traveller came along, wrapped in a warm cloak. <break time="400ms"/> Who would make him take it off? <break time="900ms"/> The sun shone out warmly.</speak>'
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "speech-passage: $tool is missing: run scripts/test.sh, which installs it" >&2; exit 2; }
done
spoken=$(mktemp --suffix=.wav)
trap 'rm -f "$spoken"' EXIT
espeak-ng -v en-us -s 180 -m -w "$spoken" "$ssml"
format=()
[[ $out == *.raw ]] && format=(-t raw)
sox -R "$spoken" "${format[@]}" -e signed-integer -b 16 -c 1 -r 48000 "$out" norm -3 pad 0.5 "$(echo "0.5 + $tail_s" | bc -l)"
