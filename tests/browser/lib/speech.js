// Speech for browser tests: the espeak-ng passage (with real pauses) for a fake microphone, a recording
// written as a WAV, and its PESQ-WB score (ITU-T P.862.2, scripts/pesq_score.py in the .venv).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/**
 * Write the passage followed by `tailS` seconds of silence (before Chromium's fake microphone loops it).
 * @param {string} dir @param {number} tailS
 * @returns {string} the WAV's path
 */
export function passageWav(dir, tailS) {
  const file = path.join(dir, 'passage.wav');
  execFileSync(path.join(ROOT, 'scripts/speech-passage.sh'), [file, String(tailS)]);
  return file;
}

/**
 * Write mono 16-bit PCM (base64, as the demo's `record` returns it) as a WAV file.
 * @param {string} file @param {string} pcm16 @param {number} sampleRate
 */
export function writePcmWav(file, pcm16, sampleRate) {
  const data = Buffer.from(pcm16, 'base64');
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'ascii');
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8, 'ascii');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36, 'ascii');
  header.writeUInt32LE(data.length, 40);
  fs.writeFileSync(file, Buffer.concat([header, data]));
}

/**
 * PESQ-WB of `degraded` against `reference`, the reference found anywhere in the first `maxDelayS` seconds
 * of the recording and wholly inside it.
 * @param {string} reference @param {string} degraded @param {number} maxDelayS
 * @returns {{mos_lqo: number, delay_ms: number, correlation: number}}
 */
export function pesq(reference, degraded, maxDelayS) {
  return pesqScore([reference, degraded, '--max-delay-s', String(maxDelayS), '--contained']);
}

/**
 * PESQ-WB of every whole loop of `reference` in `degraded` (a recording of a fake microphone that loops the
 * reference back to back), each scored alone; `mos_lqo` is their median.
 * @param {string} reference @param {string} degraded
 * Each loop also says where the listener's playout was over it against the loop's alignment (`playout_ms`,
 * a range, and `first_ms`, its first voiced window): [0, 0] for a steady playout.
 * @returns {{mos_lqo: number, delay_ms: number, correlation: number,
 *   loops: {mos_lqo: number, delay_ms: number, correlation: number, playout_ms: number[]|null,
 *     first_ms: number|null}[]}}
 */
export function pesqLoops(reference, degraded) {
  return pesqScore([reference, degraded, '--loops']);
}

/**
 * One loop of `pesqLoops` in a line: its score, correlation and where the playout was.
 * @param {{mos_lqo: number, correlation: number, playout_ms: number[]|null, first_ms: number|null}} l
 * @returns {string}
 */
export function describeLoop(l) {
  const playout = l.playout_ms ? `, playout ${l.playout_ms[0]}…${l.playout_ms[1]} ms, first ${l.first_ms} ms` : '';
  return `${l.mos_lqo.toFixed(2)} (correlation ${l.correlation.toFixed(2)}${playout})`;
}

/**
 * scripts/pesq_score.py with `args` in the repository's .venv; its JSON.
 * @param {string[]} args
 * @returns {any}
 */
function pesqScore(args) {
  const python = path.join(ROOT, '.venv/bin/python');
  if (!fs.existsSync(python)) throw new Error(`${python} is missing: run scripts/test.sh, which creates .venv with pesq`);
  return JSON.parse(execFileSync(python, [path.join(ROOT, 'scripts/pesq_score.py'), ...args, '--json'],
    { encoding: 'utf8' }));
}

/**
 * A WAV file's duration in seconds (the canonical 44-byte PCM header that `writePcmWav` and sox write).
 * @param {string} file
 * @returns {number}
 */
export function wavSeconds(file) {
  const header = Buffer.alloc(44);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, header, 0, 44, 0);
  } finally {
    fs.closeSync(fd);
  }
  const byteRate = header.readUInt32LE(28);
  return (fs.statSync(file).size - 44) / byteRate;
}

/**
 * What a browser's receive side did with the audio it got over a span (the demo's `inboundAudioStats()`
 * entries at its end, less those at its start, matched by SSRC; the whole call when `start` is empty), in
 * units a reader compares at a glance: packets lost, the shares of samples concealed (all, and silently),
 * milliseconds time-compressed (acceleration) and stretched (deceleration), and the jitter buffer's mean
 * delay and target. Where a low PESQ score came from: losses and concealment near 0 point upstream of the
 * browser; acceleration means the browser's jitter buffer held more than it wanted and compressed speech.
 * @param {any[]} end @param {any[]} [start]
 */
export function receiveSide(end, start = []) {
  return end.filter((x) => x.packetsReceived > 0).map((x) => {
    const s = start.find((y) => y.ssrc === x.ssrc) ?? {};
    const d = (/** @type {string} */ k) => (x[k] ?? 0) - (s[k] ?? 0);
    const samples = d('totalSamplesReceived');
    const emitted = d('jitterBufferEmittedCount');
    return {
      slot: x.slot, packetsReceived: d('packetsReceived'), packetsLost: d('packetsLost'), jitterS: x.jitter,
      concealedShare: samples ? +(d('concealedSamples') / samples).toFixed(4) : null,
      silentConcealedShare: samples ? +(d('silentConcealedSamples') / samples).toFixed(4) : null,
      concealmentEvents: d('concealmentEvents'),
      acceleratedMs: Math.round(d('removedSamplesForAcceleration') / 48),
      deceleratedMs: Math.round(d('insertedSamplesForDeceleration') / 48),
      jitterBufferMs: emitted ? Math.round(1000 * d('jitterBufferDelay') / emitted) : null,
      targetMs: emitted ? Math.round(1000 * d('jitterBufferTargetDelay') / emitted) : null,
    };
  });
}
