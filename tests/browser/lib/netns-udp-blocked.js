// A network namespace of the test's own, with only loopback up and every UDP datagram dropped by nftables
// (inside that namespace only): a network where WebRTC can reach the server over TCP alone. Needs root,
// `ip` (iproute2) and `nft` (nftables).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** nftables rules: UDP dropped on the way out and in; everything else passes. */
const RULES = `
table inet chorus_udp_blocked {
  chain output { type filter hook output priority 0; policy accept; meta l4proto udp counter drop; }
  chain input { type filter hook input priority 0; policy accept; meta l4proto udp counter drop; }
}
`;

/**
 * @typedef {object} UdpBlockedNetns
 * @property {string} name
 * @property {(bin: string, args?: string[]) => string[]} command  argv that runs `bin args` inside the namespace
 * @property {(bin: string, dir: string) => string} wrapper  an executable script in `dir` that runs `bin` inside
 *   the namespace with the arguments it is given (for tools that take an executable path, like playwright)
 * @property {() => string} counters  the drop rules' counters (how much UDP was dropped)
 * @property {() => void} remove
 */

/**
 * Create the namespace.
 * @param {string} name
 * @returns {UdpBlockedNetns}
 */
export function createUdpBlockedNetns(name) {
  const run = (/** @type {string} */ cmd, /** @type {string[]} */ args, input = undefined) =>
    execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  run('ip', ['netns', 'add', name]);
  try {
    run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    run('ip', ['netns', 'exec', name, 'nft', '-f', '-'], RULES);
  } catch (e) {
    try { run('ip', ['netns', 'delete', name]); } catch { /* already gone */ }
    throw e;
  }
  return {
    name,
    command: (bin, args = []) => ['ip', 'netns', 'exec', name, bin, ...args],
    wrapper: (bin, dir) => {
      const file = path.join(dir, `in-${name}-${path.basename(bin)}`);
      fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec '${name}' '${bin}' "$@"\n`, { mode: 0o755 });
      return file;
    },
    counters: () => run('ip', ['netns', 'exec', name, 'nft', 'list', 'table', 'inet', 'chorus_udp_blocked']),
    remove: () => { try { run('ip', ['netns', 'delete', name]); } catch { /* already gone */ } },
  };
}

/** @returns {string|null} why the namespace cannot be made here, or null if it can */
export function netnsUnavailable() {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not root';
  for (const tool of ['ip', 'nft']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed`;
    }
  }
  return null;
}
