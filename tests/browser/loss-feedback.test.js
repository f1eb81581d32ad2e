// Loss feedback with Chromium's own Opus encoder (docs/architecture.md, "Loss feedback"): in a forwarding
// room only the listener's downlink is bad. In a network namespace of the test's own (lib/netns.js), nftables
// drops 5 % of the media datagrams the server sends. The speaker's Chromium, on a clean uplink, would measure
// no loss and add no in-band FEC; the server's receiver reports tell it the listener's loss instead, and its
// encoder starts protecting every packet, which the server counts
// (`chorus_rtp_fec_packets_received_total`, libopus' `opus_packet_has_lbrr`).
//
// The server's media go through a UDP proxy in the namespace (lib/netns-jitter.js) that delays each
// datagram it sends by 10–50 ms on its own (reordering them), as a jittery downlink does: FEC helps only
// when the packet carrying a lost frame's copy arrives before that frame must play, and on a real lossy
// link it usually does, because its packets also arrive unevenly.
//
// Both pages send plain Opus (`red=0`): RED would protect the listener without any FEC. The speaker's fake
// microphone loops the espeak-ng passage (scripts/speech-passage.sh), so the encoder codes speech, as
// in a call.
//
// 1. On the clean link, before any loss, the speaker's packets carry no FEC.
// 2. Once the listener loses 5 %, most of them do, within 40 s.
// 3. The listener's recording of the passage, made while it loses 5 %, is scored with PESQ-WB against
//    the passage.
//
// For measurements (docs/architecture.md, "Loss feedback"), not the suite: LOSS_FEEDBACK_MAX_PERCENT=0
// runs the same call with the feedback off (then no FEC is asserted), LOSS_FEEDBACK_LOSS_PERCENT changes
// the loss, LOSS_FEEDBACK_DIRECTION=uplink drops the datagrams the server receives instead (the speaker's
// own uplink loses; the listener then loses nothing of its own), LOSS_FEEDBACK_ROOM_MODE=mix makes the
// room a mixed one.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CHROMIUM, inboundAudioStats, launchParticipant, makeTempDir, openDemo, waitConnected,
  withDiagnostics as runWithDiagnostics,
} from './lib/browser.js';
import fs from 'node:fs';
import { createNetns, nftRandomDrop, startJitterProxy, stopProcess } from './lib/netns.js';
import { counterShare, startServer } from './lib/server.js';
import { passageWav, pesq, writePcmWav } from './lib/speech.js';

const ROOM = 'loss-feedback';
/** The server's HTTP port inside the namespace (fixed: Chromium's insecure-origin flag names it). */
const HTTP_PORT = 7881;
/** Seconds of silence after the passage before the fake microphone loops it. */
const TAIL_S = 3;
/** Seconds recorded: at least one whole loop (passage ≈ 12 s + tail) wherever the recording starts. */
const RECORD_S = 32;
/** The share of the server's media datagrams nftables drops (`LOSS_FEEDBACK_LOSS_PERCENT` for measurements). */
const LOSS_PERCENT = Number(process.env.LOSS_FEEDBACK_LOSS_PERCENT ?? 5);
/** The one-way delay the proxy adds to each of the server's datagrams, uniform (ms). */
const JITTER_MS = [10, 50];
/** Where the server binds its media: the proxy in front of it listens on the namespace's address. */
const SERVER_MEDIA_IP = '127.0.0.1';
/** For measurements, not the suite: `LOSS_FEEDBACK_MAX_PERCENT=0` runs the same call without the feedback. */
const MAX_PERCENT = process.env.LOSS_FEEDBACK_MAX_PERCENT;
const FEEDBACK = MAX_PERCENT === undefined || Number(MAX_PERCENT) > 0;
/** For measurements, not the suite: `uplink` drops what the server receives rather than what it sends. */
const UPLINK = process.env.LOSS_FEEDBACK_DIRECTION === 'uplink';
/** For measurements, not the suite: `mix` makes the room a mixed one. */
const ROOM_MODE = process.env.LOSS_FEEDBACK_ROOM_MODE ?? 'forward';

/**
 * @param {number} mediaPort
 * @returns {string[][]} nft commands: drop LOSS_PERCENT % of the server's UDP (what it receives, with `UPLINK`)
 */
const lossRules = (mediaPort) => nftRandomDrop('lossy', UPLINK
  ? ['ip', 'daddr', SERVER_MEDIA_IP, 'udp', 'dport', String(mediaPort)]
  : ['ip', 'saddr', SERVER_MEDIA_IP, 'udp', 'sport', String(mediaPort)], LOSS_PERCENT);

/**
 * The share of the speaker's packets that carried FEC over the next `ms`.
 * @param {import('./lib/netns.js').Netns} ns @param {string} url @param {number} ms
 */
async function fecShare(ns, url, ms) {
  const c = await counterShare(ns, url, 'chorus_rtp_packets_received_total', 'chorus_rtp_fec_packets_received_total', ms);
  return { received: c.total, fec: c.part, share: c.share };
}

describe('loss feedback: a listener losing 5 % gets FEC from Chromium\'s encoder', { timeout: 180000 }, () => {
  /** @type {import('./lib/netns.js').Netns|null} */
  let ns = null;
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('node:child_process').ChildProcess|null} */
  let proxy = null;
  const tmp = makeTempDir('chorus-loss-feedback-');
  let wav = '';
  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    wav = passageWav(tmp.dir, TAIL_S);
    ns = await createNetns({ prefix: 'chorus-lossfb' });
    const config = path.join(tmp.dir, 'chorus.toml');
    fs.writeFileSync(config, MAX_PERCENT === undefined ? '' : `[media]\nloss_feedback_max_percent = ${Number(MAX_PERCENT)}\n`);
    server = await startServer({
      netns: ns,
      httpPort: HTTP_PORT,
      workers: 1,
      slots: 3,
      mediaBindIp: SERVER_MEDIA_IP,
      publicIp: ns.addrA,
      extraArgs: ['--config', config, '--media-tcp-enabled', 'false', '--room-mode', ROOM_MODE],
    });
    proxy = await startJitterProxy(ns, { listenHost: ns.addrA, serverHost: SERVER_MEDIA_IP, port: server.mediaPort,
      minMs: JITTER_MS[0], maxMs: JITTER_MS[1] });
    const inNs = {
      executablePath: ns.wrapper(CHROMIUM, tmp.dir),
      extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${server.url}`],
    };
    const speaker = await launchParticipant({ name: 'Speaker', freq: 0, tmpDir: tmp.dir, wav, ...inNs });
    // The listener's own microphone is silent (a 0-amplitude tone: DTX).
    const listener = await launchParticipant({ name: 'Listener', freq: 440, amplitude: 0, tmpDir: tmp.dir, ...inNs });
    all = [speaker, listener];
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (proxy) await stopProcess(proxy);
    if (server) await server.stop();
    if (ns) await ns.destroy();
    tmp.cleanup();
  });

  it('no FEC on a clean link; FEC once the listener loses; the passage heard through the loss', () => withDiagnostics(async () => {
    const netns = /** @type {import('./lib/netns.js').Netns} */ (ns);
    const srv = /** @type {import('./lib/server.js').ChorusServer} */ (server);
    await Promise.all(all.map((p) => openDemo(p, srv.url, ROOM, { red: '0' })));
    await Promise.all(all.map((p) => waitConnected(p, 30000)));
    const listener = all[1];

    // 1. Clean: Chromium expects no loss and codes no FEC.
    await new Promise((r) => setTimeout(r, 4000));
    const clean = await fecShare(netns, srv.url, 8000);
    console.log(`clean link: ${clean.fec} of ${clean.received} packets carried FEC`);
    assert.ok(clean.received > 150, `the speaker's packets reached the server: ${JSON.stringify(clean)}`);
    assert.ok(clean.share < 0.1, `FEC on a clean link: ${JSON.stringify(clean)}`);

    // 2. The listener's downlink loses LOSS_PERCENT %: its reports reach the server every ~5 s, the
    //    server's reach the speaker every 5 s.
    for (const args of lossRules(srv.mediaPort)) netns.run('nft', args);
    const lossStart = Date.now();
    let lossy = { received: 0, fec: 0, share: 0 };
    while (Date.now() - lossStart < (FEEDBACK ? 40000 : 15000)) {
      lossy = await fecShare(netns, srv.url, 3000);
      if (FEEDBACK && lossy.share >= 0.5) break;
    }
    const tookMs = Date.now() - lossStart;
    console.log(`lossy ${UPLINK ? 'uplink' : 'downlink'} (${ROOM_MODE} room): ${lossy.fec} of ${lossy.received} packets `
      + `carried FEC, ${tookMs} ms after the loss began`);
    if (FEEDBACK) {
      assert.ok(lossy.share >= 0.5, `Chromium added no FEC for its lossy listener within 40 s: ${JSON.stringify(lossy)}`);
    } else {
      assert.ok(lossy.share < 0.1, `FEC without the feedback: ${JSON.stringify(lossy)}`);
    }

    // 3. What the listener hears through the loss.
    const rec = await listener.page.evaluate((ms) => /** @type {any} */ (window).chorusDemo.record(ms), RECORD_S * 1000);
    const received = path.join(tmp.dir, 'received.wav');
    writePcmWav(received, rec.pcm16, rec.sampleRate);
    const dropped = netns.run('nft', ['list', 'table', 'inet', 'lossy']);
    const s = pesq(wav, received, RECORD_S);
    const heard = (await inboundAudioStats(listener)).filter((x) => x.packetsReceived > 0);
    console.log(`listener through ${LOSS_PERCENT} % loss and ${JITTER_MS.join('–')} ms of delay`
      + `${MAX_PERCENT === undefined ? '' : ` (loss_feedback_max_percent ${MAX_PERCENT})`}: PESQ-WB ${s.mos_lqo.toFixed(2)} (correlation `
      + `${s.correlation.toFixed(2)}); receive side ${JSON.stringify(heard.map((x) => ({
        slot: x.slot, packetsReceived: x.packetsReceived, packetsLost: x.packetsLost, jitterS: x.jitter,
        concealedShare: x.totalSamplesReceived ? +(x.concealedSamples / x.totalSamplesReceived).toFixed(4) : null,
      })))}`);
    assert.match(dropped, /counter packets [1-9]/, `nftables dropped datagrams: ${dropped}`);
    const lost = heard.reduce((n, x) => n + (x.packetsLost || 0), 0);
    if (!UPLINK) assert.ok(lost > 0, `the listener lost packets: ${JSON.stringify(heard)}`);
    assert.ok(s.mos_lqo >= 2.5, `PESQ-WB ${s.mos_lqo.toFixed(2)} through ${LOSS_PERCENT} % loss with FEC`);
  }));
});
