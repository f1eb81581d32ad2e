// chorus.js used directly from a page (no demo UI): error surfacing, the Room's accessors, mute, leave.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { withDiagnostics as runWithDiagnostics, launchParticipant, makeTempDir } from './lib/browser.js';
import { createToken, startServer } from './lib/server.js';

describe('chorus.js SDK', { timeout: 90000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant} */
  let p;
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => p ? [p] : [], () => server, fn);

  before(async () => {
    server = await startServer({ workers: 1, slots: 3 });
    p = await launchParticipant({ name: 'Sdk', freq: 500, amplitude: 0.3, tmpDir: tmp.dir });
    await p.page.goto(`${server.url}/`, { waitUntil: 'load' });
  });

  after(async () => {
    if (p) await p.close();
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('a bad token is refused with invalid_token', () => withDiagnostics(async () => {
    const r = await p.page.evaluate(async () => {
      const { connect, sameOriginWsUrl } = await import('/chorus.js');
      try {
        await connect(sameOriginWsUrl(), 'not-a-token', { timeoutMs: 5000 });
        return { ok: true };
      } catch (e) {
        const err = /** @type {any} */ (e);
        return { ok: false, name: err.name, code: err.code, fatal: err.fatal, message: err.message };
      }
    });
    assert.equal(r.ok, false);
    assert.equal(r.name, 'ChorusError');
    assert.equal(r.code, 'invalid_token', JSON.stringify(r));
    assert.equal(r.fatal, true);
  }));

  it('a room that differs from the token\'s is refused with room_mismatch', () => withDiagnostics(async () => {
    const r = await p.page.evaluate(async () => {
      const { connect, sameOriginWsUrl } = await import('/chorus.js');
      const { token } = await (await fetch('/api/dev-token?room=alpha&identity=mallory')).json();
      try {
        await connect(sameOriginWsUrl(), token, { room: 'beta', timeoutMs: 5000 });
        return { ok: true };
      } catch (e) {
        const err = /** @type {any} */ (e);
        return { ok: false, code: err.code, message: err.message };
      }
    });
    assert.equal(r.code, 'room_mismatch', JSON.stringify(r));
  }));

  it('connects, exposes slots, mutes and leaves', () => withDiagnostics(async () => {
    const r = await p.page.evaluate(async () => {
      const { connect, sameOriginWsUrl } = await import('/chorus.js');
      const { token } = await (await fetch('/api/dev-token?room=sdk&identity=ada&name=Ada')).json();
      /** @type {string[]} */
      const states = [];
      /** @type {any[]} */
      const errors = [];
      const room = await connect(sameOriginWsUrl(), token, { name: 'Ada Lovelace' });
      room.on('connectionstate', (/** @type {any} */ d) => states.push(d.state));
      room.on('error', (/** @type {any} */ d) => errors.push(d));
      const t0 = performance.now();
      while (room.connectionState !== 'connected' && performance.now() - t0 < 10000) {
        await new Promise((res) => setTimeout(res, 50));
      }
      const connected = room.connectionState;
      const track = await room.publishMicrophone({ echoCancellation: false, noiseSuppression: false, autoGainControl: false });
      const mids = room.pc ? room.pc.getTransceivers().map((t) => [t.mid, t.direction, t.currentDirection]) : [];
      const slots = room.slots.map((s) => ({
        slot: s.slot, mid: s.mid, track: s.track ? s.track.kind : null,
        element: s.element ? s.element.tagName : null, paused: s.element ? s.element.paused : null,
      }));
      /** @type {boolean[]} */
      const mutedEvents = [];
      room.on('participantmuted', (/** @type {any} */ d) => mutedEvents.push(d.muted));
      room.setMuted(true);
      const afterMute = { muted: room.muted, trackEnabled: track.enabled, local: room.localParticipant && room.localParticipant.muted };
      await new Promise((res) => setTimeout(res, 300));
      room.setMuted(false);
      await room.leave();
      return {
        connected, states, errors, mids, slots, afterMute, mutedEvents,
        name: room.localParticipant && room.localParticipant.name,
        remoteTracks: room.remoteStream.getAudioTracks().length,
        final: room.connectionState,
        trackAfterLeave: track.readyState,
      };
    });
    console.log(JSON.stringify(r));
    assert.equal(r.connected, 'connected');
    assert.equal(r.name, 'Ada Lovelace');
    assert.equal(r.mids.length, 4, 'one microphone m-line + 3 slot m-lines');
    assert.deepEqual(r.mids[0].slice(0, 2), ['0', 'sendonly']);
    for (const m of r.mids.slice(1)) assert.equal(m[1], 'recvonly');
    assert.equal(r.slots.length, 3);
    for (const s of r.slots) {
      assert.ok(s.mid, 'slot has a mid');
      assert.equal(s.track, 'audio');
      assert.equal(s.element, 'AUDIO');
      assert.equal(s.paused, false, 'slot <audio> element is playing');
    }
    assert.equal(r.remoteTracks, 3);
    assert.deepEqual(r.afterMute, { muted: true, trackEnabled: false, local: true });
    assert.equal(r.mutedEvents[0], true);
    assert.equal(r.final, 'closed');
    assert.equal(r.states.at(-1), 'closed');
    assert.equal(r.trackAfterLeave, 'ended', 'leave() stops the microphone the SDK opened');
    assert.deepEqual(r.errors, []);
  }));

  it('a can_publish=false token joins as a listener and hears a publisher', () => withDiagnostics(async () => {
    const listenerToken = await createToken({ room: 'listen', identity: 'lis', name: 'Listener', publish: false });
    const r = await p.page.evaluate(async (tok) => {
      const { connect, sameOriginWsUrl } = await import('/chorus.js');
      const { token } = await (await fetch('/api/dev-token?room=listen&identity=pub&name=Pub')).json();
      const pub = await connect(sameOriginWsUrl(), token, {
        microphone: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      const lis = await connect(sameOriginWsUrl(), tok);
      const lp = lis.localParticipant;
      const micLine = lis.pc ? lis.pc.getTransceivers()[0].direction : null;
      /** @type {Record<string, string|null>} */
      const refused = { publish: null, mute: null };
      try { await lis.publishMicrophone(); } catch (e) { refused.publish = /** @type {any} */ (e).code; }
      try { lis.setMuted(true); } catch (e) { refused.mute = /** @type {any} */ (e).code; }
      // Wait for packets of the publisher in one of the listener's slots.
      let inbound = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < 10000) {
        const stats = await lis.pc.getStats();
        inbound = 0;
        stats.forEach((st) => { if (st.type === 'inbound-rtp' && st.kind === 'audio') inbound += st.packetsReceived || 0; });
        if (inbound > 20 && lis.connectionState === 'connected') break;
        await new Promise((res) => setTimeout(res, 100));
      }
      const seenByPub = [...pub.participants.values()].map((x) => ({ name: x.name, canPublish: x.canPublish }));
      const state = lis.connectionState;
      await lis.leave();
      await pub.leave();
      return { canPublish: lp && lp.canPublish, micLine, refused, inbound, state, seenByPub };
    }, listenerToken);
    console.log(JSON.stringify(r));
    assert.equal(r.canPublish, false);
    assert.equal(r.micLine, 'inactive', 'the microphone m-line of a listener is inactive');
    assert.deepEqual(r.refused, { publish: 'forbidden', mute: 'forbidden' });
    assert.equal(r.state, 'connected');
    assert.ok(r.inbound > 20, `listener receives the publisher's audio (${r.inbound} packets)`);
    assert.deepEqual(r.seenByPub, [{ name: 'Listener', canPublish: false }]);
  }));
});
