// Headless Debian Firefox ESR for the browser tests, driven over Marionette (lib/marionette.js), with a
// temporary profile, a fake microphone playing a sine (media.navigator.audio.fake_frequency) or a real one
// (a PulseAudio source that plays a file), and a private PulseAudio null sink (headless with no audio
// device, an AudioContext stays "suspended").
// Firefox never pairs with a loopback candidate: run it in a network namespace (lib/netns.js) next to a
// server bound to a non-loopback address.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Marionette } from './marionette.js';
import { stopProcess } from './netns.js';

export const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';
export const PULSEAUDIO = process.env.PULSEAUDIO || 'pulseaudio';

/**
 * @typedef {object} Pulse
 * @property {string} server   the PULSE_SERVER value for clients (`unix:SOCKET`)
 * @property {(input: string[], effects?: string[]) => {stop: () => Promise<void>}} play  with `mic`: play
 *   into the microphone (the default source), in real time, what sox makes of `input` with `effects` (e.g.
 *   `['-n']` with `['synth', '600', 'sine', '750']`, or `[wav]` with `['repeat', '9']`), until stopped
 * @property {() => string} tail
 * @property {() => Promise<void>} stop
 */

/**
 * Start a private PulseAudio with one 48 kHz null sink, reachable only on a Unix socket in `dir`. With
 * `mic`, a second null sink whose monitor is the default source: a browser with a real (not fake)
 * microphone records what `play` plays into it.
 * @param {string} dir  an empty directory of the test's own (HOME and runtime dir of the daemon)
 * @param {{mic?: boolean}} [opts]
 * @returns {Promise<Pulse>}
 */
export async function startPulse(dir, opts = {}) {
  fs.mkdirSync(dir, { recursive: true });
  const sock = path.join(dir, 'native');
  /** @type {string[]} */
  const lines = [];
  const proc = spawn(PULSEAUDIO, [
    '-n', '--daemonize=no', '--exit-idle-time=-1', '--use-pid-file=no', '--log-target=stderr',
    // the sinks first: the socket, which the wait below looks for, appears once they exist
    '-L', 'module-null-sink sink_name=chorus_null rate=48000',
    ...(opts.mic ? ['-L', 'module-null-sink sink_name=chorus_mic rate=48000 channels=1'] : []),
    '-L', 'module-always-sink',
    '-L', `module-native-protocol-unix socket=${sock} auth-anonymous=1`,
  ], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOME: dir, XDG_RUNTIME_DIR: dir, XDG_CONFIG_HOME: path.join(dir, '.config') },
  });
  const keep = (/** @type {Buffer} */ d) => {
    for (const l of d.toString('utf8').split('\n')) if (l) lines.push(l);
    if (lines.length > 100) lines.splice(0, lines.length - 100);
  };
  /** @type {NodeJS.ReadableStream} */ (proc.stdout).on('data', keep);
  /** @type {NodeJS.ReadableStream} */ (proc.stderr).on('data', keep);
  const tail = () => lines.join('\n');
  const deadline = Date.now() + 10000;
  while (!fs.existsSync(sock)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      await stopProcess(proc);
      throw new Error(`pulseaudio did not create ${sock}:\n${tail()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const server = `unix:${sock}`;
  if (opts.mic) {
    // What the browser plays goes to chorus_null, never into the microphone.
    for (const args of [['set-default-sink', 'chorus_null'], ['set-default-source', 'chorus_mic.monitor']]) {
      execFileSync('pactl', ['--server', server, ...args], { stdio: 'pipe' });
    }
  }
  /** @param {string[]} input @param {string[]} [effects] */
  const play = (input, effects = []) => {
    if (!opts.mic) throw new Error('startPulse without mic: nothing to play into');
    const raw = ['-t', 'raw', '-r', '48000', '-e', 'signed-integer', '-b', '16', '-c', '1'];
    const source = spawn('sox', ['-q', ...input, ...raw, '-', ...effects], { stdio: ['ignore', 'pipe', 'pipe'] });
    // pacat paces the samples at the sink's clock: the microphone hears them in real time
    const sink = spawn('pacat', ['--server', server, '--device', 'chorus_mic', '--playback', '--raw',
      '--format=s16le', '--rate=48000', '--channels=1'], { stdio: ['pipe', 'ignore', 'pipe'] });
    /** @type {NodeJS.ReadableStream} */ (source.stdout).pipe(/** @type {NodeJS.WritableStream} */ (sink.stdin));
    /** @type {NodeJS.WritableStream} */ (sink.stdin).on('error', () => { /* stopped: the pipe closed */ });
    /** @type {NodeJS.ReadableStream} */ (source.stderr).on('data', keep);
    /** @type {NodeJS.ReadableStream} */ (sink.stderr).on('data', keep);
    return { stop: async () => { await stopProcess(source); await stopProcess(sink); } };
  };
  return { server, play, tail, stop: () => stopProcess(proc) };
}

/**
 * The profile prefs: Marionette on `port`, a fake microphone at `freq` Hz (with `freq` null, the real one:
 * PulseAudio's default source), no permission prompts, real host candidates, autoplay allowed, the page
 * console on stdout, and nothing that talks to the network.
 * @param {{marionettePort: number, freq: number|null, noProxy: string[], secureHosts: string[]}} o
 * @returns {Record<string, string|number|boolean>}
 */
export function firefoxPrefs(o) {
  return {
    'marionette.port': o.marionettePort,
    'media.navigator.streams.fake': o.freq !== null,
    ...(o.freq !== null ? { 'media.navigator.audio.fake_frequency': o.freq } : {}),
    'media.navigator.permission.disabled': true,
    // The page is served from http://198.51.100.1 (not a secure context, unlike localhost): allow
    // getUserMedia there.
    'dom.securecontext.allowlist': o.secureHosts.join(','),
    'media.devices.insecure.enabled': true,
    'media.getusermedia.insecure.enabled': true,
    'media.peerconnection.ice.obfuscate_host_addresses': false,
    'media.autoplay.default': 0,
    'media.autoplay.block-webaudio': false,
    'devtools.console.stdout.content': true,
    // Off the network: every proxied request goes to a closed port, the test's own addresses go direct.
    'network.proxy.type': 1,
    'network.proxy.http': '127.0.0.1',
    'network.proxy.http_port': 9,
    'network.proxy.ssl': '127.0.0.1',
    'network.proxy.ssl_port': 9,
    'network.proxy.no_proxies_on': o.noProxy.join(','),
    'network.proxy.allow_hijacking_localhost': false,
    'network.captive-portal-service.enabled': false,
    'network.connectivity-service.enabled': false,
    'toolkit.telemetry.enabled': false,
    'toolkit.telemetry.unified': false,
    'datareporting.healthreport.uploadEnabled': false,
    'datareporting.policy.dataSubmissionEnabled': false,
    'app.update.auto': false,
    'app.update.disabledForTesting': true,
    'app.normandy.enabled': false,
    'app.shield.optoutstudies.enabled': false,
    'browser.safebrowsing.malware.enabled': false,
    'browser.safebrowsing.phishing.enabled': false,
    'browser.safebrowsing.downloads.enabled': false,
    'browser.safebrowsing.update.enabled': false,
    'extensions.update.enabled': false,
    'extensions.getAddons.cache.enabled': false,
    'browser.shell.checkDefaultBrowser': false,
    'browser.startup.homepage_override.mstone': 'ignore',
    'browser.aboutwelcome.enabled': false,
    'browser.newtabpage.enabled': false,
    'browser.search.update': false,
    'services.settings.server': 'http://127.0.0.1:9/',
    'remote.prefs.recommended': true,
  };
}

/**
 * @typedef {object} FirefoxParticipant
 * @property {string} name
 * @property {number|null} freq  null: the real microphone (PulseAudio's default source)
 * @property {Marionette} m
 * @property {string[]} logs     Firefox's stdout/stderr (page console included), last lines
 * @property {() => Promise<void>} close
 */

/**
 * Launch headless Firefox (optionally inside a network namespace) and open a Marionette session on it.
 * @param {{name: string, freq: number|null, tmpDir: string, pulseServer: string,
 *   netns?: import('./netns.js').Netns, marionettePort?: number, noProxy?: string[]}} o
 * @returns {Promise<FirefoxParticipant>}
 */
export async function launchFirefox(o) {
  const port = o.marionettePort ?? 2828;
  const profile = fs.mkdtempSync(path.join(o.tmpDir, `firefox-${o.name}-`));
  const home = fs.mkdtempSync(path.join(o.tmpDir, `firefox-home-${o.name}-`));
  const prefs = firefoxPrefs({
    marionettePort: port, freq: o.freq,
    noProxy: o.noProxy ?? ['localhost', '127.0.0.1', ...(o.netns ? [o.netns.addrA, o.netns.addrB] : [])],
    secureHosts: o.netns ? [o.netns.addrA, o.netns.addrB] : [],
  });
  fs.writeFileSync(path.join(profile, 'user.js'),
    Object.entries(prefs).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});\n`).join(''));
  const args = ['--marionette', '--headless', '--no-remote', '--profile', profile, 'about:blank'];
  const env = {
    ...process.env, HOME: home, MOZ_HEADLESS: '1', PULSE_SERVER: o.pulseServer,
    MOZ_CRASHREPORTER_DISABLE: '1', MOZ_DISABLE_AUTO_SAFE_MODE: '1',
  };
  const proc = o.netns
    ? o.netns.spawn(FIREFOX, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
    : spawn(FIREFOX, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  /** @type {string[]} */
  const logs = [];
  const keep = (/** @type {Buffer} */ d) => {
    for (const l of d.toString('utf8').split('\n')) if (l.trim()) logs.push(l);
    if (logs.length > 300) logs.splice(0, logs.length - 300);
  };
  /** @type {NodeJS.ReadableStream} */ (proc.stdout).on('data', keep);
  /** @type {NodeJS.ReadableStream} */ (proc.stderr).on('data', keep);
  const close = async () => {
    await stopProcess(proc, 5000);
  };
  try {
    const where = o.netns ? { path: await o.netns.forward('127.0.0.1', port) } : { port };
    const m = await Marionette.connect({ ...where, timeoutMs: 60000 });
    await m.newSession({ acceptInsecureCerts: true });
    return {
      name: o.name, freq: o.freq, m, logs,
      close: async () => { await m.close(); await close(); },
    };
  } catch (e) {
    await close();
    throw new Error(`Firefox did not start: ${/** @type {Error} */ (e).message}\n${logs.slice(-40).join('\n')}`);
  }
}
