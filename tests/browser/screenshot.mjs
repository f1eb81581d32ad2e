// Not a test: opens the demo page joined in a room (with two other speakers, so the list and the level
// bars have something to show) and saves a PNG for a person to look at.
//
//   node screenshot.mjs [--url http://127.0.0.1:7880] [--out out/demo.png] [--room demo]
//
// Without --url it starts target/debug/chorus (or $CHORUS_BIN) on free loopback ports.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { diagnostics, launchParticipant, makeTempDir, openDemo, pollUntil, snapshot, waitConnected } from './lib/browser.js';
import { startServer } from './lib/server.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const opt = (/** @type {string} */ name, /** @type {string} */ dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1] : dflt;
};
const out = path.resolve(opt('out', path.join(here, 'out', 'demo.png')));
const room = opt('room', 'demo');

const tmp = makeTempDir('chorus-screenshot-');
/** @type {import('./lib/server.js').ChorusServer|null} */
let server = null;
/** @type {import('./lib/browser.js').Participant[]} */
let people = [];
try {
  let url = opt('url', '');
  if (!url) {
    server = await startServer({ workers: 1, slots: 3 });
    url = server.url;
  }
  people = await Promise.all([
    launchParticipant({ name: 'Ada', freq: 440, amplitude: 0.5, tmpDir: tmp.dir }),
    launchParticipant({ name: 'Grace', freq: 660, amplitude: 0.7, tmpDir: tmp.dir }),
    launchParticipant({ name: 'Linus', freq: 550, amplitude: 0.2, tmpDir: tmp.dir }),
  ]);
  await Promise.all(people.map((p) => openDemo(p, url, room)));
  await Promise.all(people.map((p) => waitConnected(p, 20000)));
  const ada = people[0];
  await ada.page.setViewportSize({ width: 900, height: 620 });
  // Mute Linus, so the picture shows a muted participant too.
  await people[2].page.click('#mute-button');
  await pollUntil('speaking levels at Ada', async () => {
    const s = await snapshot(ada);
    const speaking = s.participants.filter((/** @type {any} */ p) => p.speaking && p.level > 0).length;
    const muted = s.participants.some((/** @type {any} */ p) => p.muted);
    return { ok: speaking >= 1 && muted, s };
  }, { timeoutMs: 15000, intervalMs: 250 }).catch((e) => console.error(`warning: ${e.message}`));
  await new Promise((r) => setTimeout(r, 600));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await ada.page.screenshot({ path: out, fullPage: true });
  console.log(`saved ${out}`);
} catch (e) {
  console.error(e);
  console.error(await diagnostics(people, server));
  process.exitCode = 1;
} finally {
  await Promise.all(people.map((p) => p.close()));
  if (server) await server.stop();
  tmp.cleanup();
}
