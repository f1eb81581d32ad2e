// The SDK's types: chorus.js and demo.js type-check (`// @ts-check`, JSDoc) with the pinned TypeScript, and
// chorus.js has a wire-message typedef for every message of docs/protocol.md, both ways. Needs no server and
// no browser. (Its error-code lists are checked against the server's ErrorCode by signaling's unit tests.)
// Also the Room's positional API in Node, on a stand-in socket and mocked timers: what `setPosition` sends
// and when, what it refuses, and the `positions` event.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, mock } from 'node:test';
import { promisify } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const WEB = join(ROOT, 'clients', 'web');
const SDK = readFileSync(join(WEB, 'chorus.js'), 'utf8');
const PROTOCOL_DOC = readFileSync(join(ROOT, 'docs', 'protocol.md'), 'utf8');

/**
 * The `### \`type\`` headings of one `## ...` section of docs/protocol.md.
 * @param {string} section the section's heading text
 * @returns {string[]}
 */
function documentedTypes(section) {
  const start = PROTOCOL_DOC.indexOf(`\n## ${section}\n`);
  assert.notEqual(start, -1, `docs/protocol.md has no "## ${section}" section`);
  const next = PROTOCOL_DOC.indexOf('\n## ', start + 1);
  const text = PROTOCOL_DOC.slice(start, next === -1 ? undefined : next);
  return [...text.matchAll(/^### `([a-z_]+)`$/gm)].map((m) => m[1]);
}

/**
 * The wire `type` of each member of a union typedef of chorus.js (`@typedef {A | B} Name`), through each
 * member's own typedef (`@typedef {object} A` with `@property {'a'} type`).
 * @param {string} union
 * @returns {string[]}
 */
function sdkUnionTypes(union) {
  const m = SDK.match(new RegExp(`@typedef \\{([^}]*)\\} ${union}\\b`));
  assert.ok(m, `chorus.js has no @typedef ${union}`);
  const members = m[1].replace(/\s*\*\s*/g, ' ').split('|').map((s) => s.trim());
  return members.map((member) => {
    const block = SDK.match(new RegExp(`@typedef \\{object\\} ${member}\\n((?: \\* .*\\n)*)`));
    assert.ok(block, `chorus.js has no @typedef {object} ${member}`);
    const type = block[1].match(/@property \{'([a-z_]+)'\} type\b/);
    assert.ok(type, `@typedef ${member} has no literal \`type\` property`);
    return type[1];
  });
}

/**
 * Run the pinned tsc over files of clients/web (one run: demo.js imports chorus.js anyway). `--strict`, as
 * TypeScript 7 has it by default: `npx -p typescript tsc` outside tests/browser fetches the newest one.
 * @param {string[]} files
 */
async function typeCheck(files) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const args = [tsc, '--noEmit', '--allowJs', '--checkJs', '--strict', '--target', 'es2020', '--lib', 'es2020,dom',
    ...files.map((file) => join(WEB, file))];
  try {
    await promisify(execFile)(process.execPath, args, { cwd: ROOT, timeout: 120000 });
  } catch (e) {
    const err = /** @type {{stdout?: string, stderr?: string, message: string}} */ (e);
    assert.fail(`tsc failed:\n${err.stdout || ''}${err.stderr || ''}${err.stdout ? '' : err.message}`);
  }
}

describe('chorus.js types', () => {
  it('chorus.js and demo.js are // @ts-check', () => {
    for (const file of ['chorus.js', 'demo.js']) {
      const first = readFileSync(join(WEB, file), 'utf8').split('\n')[0];
      assert.equal(first, '// @ts-check', file);
    }
  });

  it('ClientMessage has a typedef for every client message of docs/protocol.md', () => {
    assert.deepEqual(sdkUnionTypes('ClientMessage').sort(), documentedTypes('Client → server').sort());
  });

  it('ServerMessage has a typedef for every server message of docs/protocol.md', () => {
    assert.deepEqual(sdkUnionTypes('ServerMessage').sort(), documentedTypes('Server → client').sort());
  });

  it('chorus.js and demo.js type-check with tsc --strict', { timeout: 120000 },
    () => typeCheck(['chorus.js', 'demo.js']));
});

describe('Room positions (Node, a stand-in socket)', () => {
  /**
   * A Room on a stand-in open socket that records what it sends, joined as `PA_me`.
   * @returns {Promise<{room: any, sent: any[]}>}
   */
  async function openRoom() {
    // The constructor makes an (unused) MediaStream; Node has none.
    const g = /** @type {any} */ (globalThis);
    g.MediaStream ??= class {};
    const { Room } = await import('../../clients/web/chorus.js');
    const room = /** @type {any} */ (new Room('ws://127.0.0.1:1/ws', 'token'));
    /** @type {any[]} */
    const sent = [];
    room._ws = { readyState: 1, send: (/** @type {string} */ text) => sent.push(JSON.parse(text)) };
    room.localParticipant = { sid: 'PA_me' };
    return { room, sent };
  }

  it('refuses what is not a finite position with a ChorusError bad_position, sending nothing', async () => {
    const { room, sent } = await openRoom();
    for (const args of [[NaN, 0, 0], [0, Infinity, 0], [0, 0, 0, -Infinity], [2e6, 0, 0], [0, 0, '1']]) {
      assert.throws(() => room.setPosition(...args), (/** @type {any} */ e) =>
        e.name === 'ChorusError' && e.code === 'bad_position', JSON.stringify(args));
    }
    assert.deepEqual(sent, []);
  });

  it('sends the newest position at most every 120 ms, then settles it once', async () => {
    const { room, sent } = await openRoom();
    let now = 1000;
    mock.method(performance, 'now', () => now);
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const advance = (/** @type {number} */ ms) => { now += ms; mock.timers.tick(ms); };
      room.setPosition(1, 2, 0, 90);
      assert.deepEqual(sent, [{ type: 'position', x: 1, y: 2, z: 0, yaw_deg: 90 }], 'the first at once');
      // A game moving every frame (60 Hz) for a second: one message per 120 ms, each the newest.
      for (let frame = 1; frame <= 60; frame++) {
        advance(1000 / 60);
        room.setPosition(1 + frame, 2, 0, 90);
      }
      const xs = sent.map((m) => m.x);
      assert.ok(xs.length >= 8 && xs.length <= 9, JSON.stringify(xs));
      assert.ok(xs.every((x, i) => i === 0 || x > xs[i - 1]), `only ever newer: ${xs}`);
      // Stopped at x = 61: sent at the next slot, then once more a second later, then nothing.
      advance(120);
      assert.equal(sent[sent.length - 1].x, 61);
      const count = sent.length;
      advance(1000);
      assert.equal(sent.length, count + 1, 'one settling repeat');
      advance(5000);
      assert.equal(sent.length, count + 1, 'nothing more');
    } finally {
      mock.timers.reset();
      mock.restoreAll();
    }
  });

  it('sends the talk target and volumes again after a rejoin, for the participants still there', async () => {
    const { room, sent } = await openRoom();
    room.participants = new Map([['PA_a', { sid: 'PA_a' }], ['PA_b', { sid: 'PA_b' }], ['PA_c', { sid: 'PA_c' }]]);
    room.talkTo('whisper', ['PA_a', 'PA_c']);
    room.setVolume('PA_b', -12);
    room.setVolume('PA_c', 8);
    sent.length = 0;
    // Rejoined: PA_c left meanwhile.
    room.participants.delete('PA_c');
    room._restoreTalk();
    assert.deepEqual(sent, [
      { type: 'volume', sid: 'PA_b', volume: -12 },
      { type: 'talk', target: 'whisper', to: ['PA_a'] },
    ]);
    // A whisper whose participants all left goes back to the room: nothing to send.
    room.participants.delete('PA_a');
    sent.length = 0;
    room._restoreTalk();
    assert.deepEqual(sent, [{ type: 'volume', sid: 'PA_b', volume: -12 }]);
    room.talkTo('team');
    sent.length = 0;
    room._restoreTalk();
    assert.deepEqual(sent, [{ type: 'volume', sid: 'PA_b', volume: -12 }, { type: 'talk', target: 'team' }]);
  });

  it('shows each participant\'s team and shout role, absent as null and false', async () => {
    const { room } = await openRoom();
    const base = { identity: 'x', name: 'x', muted: false, can_publish: true, can_subscribe: true };
    await room._handle({ type: 'participant_joined', participant: { ...base, sid: 'PA_a', team: 'blue', shout: true } });
    await room._handle({ type: 'participant_joined', participant: { ...base, sid: 'PA_b' } });
    const a = room.participant('PA_a');
    const b = room.participant('PA_b');
    assert.deepEqual([a.team, a.shout, b.team, b.shout], ['blue', true, null, false]);
  });

  it('turns `positions` into the positions event and Room#positions', async () => {
    const { room } = await openRoom();
    /** @type {any[]} */
    const events = [];
    room.on('positions', (/** @type {any} */ d) => events.push(d.positions));
    await room._handle({ type: 'positions', positions: [
      { sid: 'PA_9a0b1c2d3e4f', x: 14, y: -1.5, z: 0, yaw_deg: 270 },
    ] });
    const expected = [{ sid: 'PA_9a0b1c2d3e4f', x: 14, y: -1.5, z: 0, yawDeg: 270, participant: null }];
    assert.deepEqual(events, [expected]);
    assert.deepEqual(room.positions, expected);
    await room._handle({ type: 'positions', positions: [] });
    assert.deepEqual(room.positions, []);
  });
});
