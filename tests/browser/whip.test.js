// WHIP and WHEP (docs/broadcast.md, "WHIP and WHEP") with Chromium's own WebRTC and nothing of Chorus in the
// pages: one page publishes its fake microphone (a 523 Hz tone) with a bare RTCPeerConnection and
// fetch(POST /whip/{room}) — what every WHIP client does; another plays the mixed room with
// fetch(POST /whep/{room}) and analyses what it receives. Then DELETE ends both, and the room is empty.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { withDiagnostics as runWithDiagnostics, launchParticipant, makeTempDir } from './lib/browser.js';
import { adminToken, createToken, startServer } from './lib/server.js';

const ROOM = 'stage';
const TONE = 523;
const OTHER = 880;

/**
 * In a page: negotiate over WHIP or WHEP with `token`; returns the resource's Location once ICE connected.
 * A WHEP page keeps an analyser of the received track in `window.whepAnalyser`.
 * @param {{kind: 'whip'|'whep', room: string, token: string}} o
 */
async function negotiate({ kind, room, token }) {
  const pc = new RTCPeerConnection();
  // @ts-ignore: kept for later evaluations
  window.pc = pc;
  if (kind === 'whip') {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' });
  } else {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = (e) => {
      const stream = new MediaStream([e.track]);
      // Chromium routes a remote track into Web Audio only while a media element plays it.
      const el = new Audio();
      el.srcObject = stream;
      el.muted = true;
      el.play();
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 16384;
      ctx.createMediaStreamSource(stream).connect(analyser);
      // @ts-ignore
      window.whepAnalyser = { ctx, analyser, el };
    };
  }
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(`/${kind}/${room}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: pc.localDescription?.sdp,
  });
  if (res.status !== 201) throw new Error(`${kind}: ${res.status} ${await res.text()}`);
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  const t0 = performance.now();
  while (pc.iceConnectionState !== 'connected' && pc.iceConnectionState !== 'completed') {
    if (performance.now() - t0 > 15000) throw new Error(`${kind}: ICE ${pc.iceConnectionState}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return res.headers.get('Location');
}

describe('WHIP publish and WHEP playback with Chromium', { timeout: 120000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  const tmp = makeTempDir();
  /** @type {Record<string, string>} */
  const locations = {};

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    server = await startServer({ workers: 1, extraArgs: ['--room-mode', 'mix'] });
    all = await Promise.all([
      launchParticipant({ name: 'Encoder', freq: TONE, amplitude: 0.3, tmpDir: tmp.dir }),
      launchParticipant({ name: 'Player', freq: OTHER, amplitude: 0.3, tmpDir: tmp.dir }),
    ]);
    for (const p of all) await p.page.goto(`${server.url}/healthz`, { waitUntil: 'load', timeout: 15000 });
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('the encoder publishes over WHIP and the player connects over WHEP', () => withDiagnostics(async () => {
    const pub = await createToken({ room: ROOM, identity: 'encoder', name: 'Encoder' });
    const sub = await createToken({ room: ROOM, identity: 'player', publish: false });
    locations.whip = await all[0].page.evaluate(negotiate, { kind: 'whip', room: ROOM, token: pub });
    locations.whep = await all[1].page.evaluate(negotiate, { kind: 'whep', room: ROOM, token: sub });
    assert.match(locations.whip, /^\/whip\/stage\/[0-9a-f]{32}$/);
    assert.match(locations.whep, /^\/whep\/stage\/[0-9a-f]{32}$/);
  }));

  it('the player hears the encoder\'s tone through the mix', () => withDiagnostics(async () => {
    let last = null;
    for (let i = 0; i < 20; i++) {
      last = await all[1].page.evaluate(async ({ freqs }) => {
        // @ts-ignore
        const { ctx, analyser } = window.whepAnalyser;
        await new Promise((r) => setTimeout(r, 1000));
        const bins = new Float32Array(analyser.frequencyBinCount);
        analyser.getFloatFrequencyData(bins);
        const hz = ctx.sampleRate / analyser.fftSize;
        /** @param {number} f */
        const at = (f) => Math.max(...[-2, -1, 0, 1, 2].map((d) => bins[Math.round(f / hz) + d]));
        return Object.fromEntries(freqs.map((/** @type {number} */ f) => [f, at(f)]));
      }, { freqs: [TONE, OTHER] });
      if (last[TONE] > -45 && last[TONE] - last[OTHER] > 25) break;
    }
    console.log(`WHEP player hears: ${JSON.stringify(last)}`);
    assert.ok(last && last[TONE] > -45, `the tone is loud enough: ${JSON.stringify(last)}`);
    assert.ok(last[TONE] - last[OTHER] > 25, `only the encoder's tone: ${JSON.stringify(last)}`);
  }));

  it('both are participants, and DELETE ends each session', () => withDiagnostics(async () => {
    const admin = await adminToken();
    const list = async () => {
      const r = await fetch(`${server?.url}/admin/v1/rooms/${ROOM}/participants`, {
        headers: { Authorization: `Bearer ${admin}` },
      });
      return r.status === 200 ? (await r.json()).participants.map((/** @type {any} */ p) => p.identity).sort() : [];
    };
    assert.deepEqual(await list(), ['encoder', 'player']);
    for (const kind of ['whip', 'whep']) {
      const r = await fetch(`${server?.url}${locations[kind]}`, { method: 'DELETE' });
      assert.equal(r.status, 200, kind);
    }
    assert.deepEqual(await list(), []);
  }));
});
