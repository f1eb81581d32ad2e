// Tiny WAV writer for Chromium's fake microphone (--use-file-for-fake-audio-capture loops the file).
import fs from 'node:fs';

/**
 * Encode a mono 16-bit PCM WAV holding a sine tone.
 * @param {{freq: number, amplitude?: number, seconds?: number, sampleRate?: number}} opts
 *   amplitude is the peak, 0..1 of full scale. With an integer frequency and whole seconds the file holds
 *   a whole number of periods, so it loops without a click.
 * @returns {Buffer}
 */
export function sineWav({ freq, amplitude = 0.5, seconds = 10, sampleRate = 48000 }) {
  const n = Math.round(seconds * sampleRate);
  const dataBytes = n * 2;
  const buf = Buffer.alloc(44 + dataBytes);
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + dataBytes, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * 2, 28); // byte rate
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(dataBytes, 40);
  const a = Math.max(0, Math.min(1, amplitude)) * 32767;
  const w = (2 * Math.PI * freq) / sampleRate;
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(a * Math.sin(w * i)), 44 + i * 2);
  return buf;
}

/**
 * Write a sine WAV to `path`.
 * @param {string} path
 * @param {{freq: number, amplitude?: number, seconds?: number, sampleRate?: number}} opts
 * @returns {string} the path
 */
export function writeSineWav(path, opts) {
  fs.writeFileSync(path, sineWav(opts));
  return path;
}
